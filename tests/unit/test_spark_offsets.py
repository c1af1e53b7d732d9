"""maxOffsetsPerTrigger: how a trigger's budget is shared across partitions (pure)."""

from __future__ import annotations

from smartshelf.adapters.spark_kafka import FORMAT, limit_offsets
from smartshelf.settings import Settings


def test_whole_backlog_when_it_fits() -> None:
    latest = {"t": {"0": 10, "1": 5}}
    assert limit_offsets({"t": {"0": 2, "1": 0}}, latest, 100) == latest


def test_budget_is_respected_and_shared_by_backlog() -> None:
    start = {"t": {"0": 0, "1": 0}}
    end = limit_offsets(start, {"t": {"0": 900, "1": 100}}, 100)
    assert end["t"]["0"] + end["t"]["1"] == 100
    assert end["t"]["0"] == 90 and end["t"]["1"] == 10


def test_rounding_leftovers_are_handed_out_without_passing_the_end() -> None:
    start = {"a": {"0": 0}, "b": {"0": 0}, "c": {"0": 0}}
    latest = {"a": {"0": 1}, "b": {"0": 1}, "c": {"0": 1}}
    end = limit_offsets(start, latest, 2)
    assert sum(end[t]["0"] for t in end) == 2
    assert all(end[t]["0"] <= 1 for t in end)


def test_default_format_is_ours() -> None:
    assert Settings(_env_file=None).kafka_format == FORMAT  # type: ignore[call-arg]
