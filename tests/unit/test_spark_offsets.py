"""maxOffsetsPerTrigger: how a trigger's budget is shared across partitions; which task reads which
partitions' ranges (pure)."""

from __future__ import annotations

import pytest

from smartshelf.adapters.spark_kafka import FORMAT, KafkaDataSource, PartitionRange, limit_offsets, read_tasks
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


START = {"big": {"0": 100, "1": 0}, "small": {"0": 5}}
END = {"big": {"0": 1100, "1": 900}, "small": {"0": 205, "1": 0}, "empty": {"0": 0}}


def test_without_a_task_count_each_partition_is_a_task_as_in_sparks_source() -> None:
    tasks = read_tasks("b:1", START, END)
    assert [task.ranges for task in tasks] == [
        (PartitionRange("big", 0, 100, 1100),), (PartitionRange("big", 1, 0, 900),),
        (PartitionRange("small", 0, 5, 205),)]


def test_ranges_are_shared_among_the_tasks_by_size_each_read_once() -> None:
    tasks = read_tasks("b:1", START, END, 2)
    assert [sum(r.size for r in task.ranges) for task in tasks] == [1000, 1100]
    read = sorted(r for task in tasks for r in task.ranges)
    assert read == sorted(r for task in read_tasks("b:1", START, END) for r in task.ranges)
    assert read_tasks("b:1", START, END, 2) == tasks  # the same offsets give the same tasks
    assert len(read_tasks("b:1", START, END, 8)) == 3  # never a task with nothing to read
    assert read_tasks("b:1", END, END, 2) == []


@pytest.mark.parametrize("given", ["0", "two", "-1"])
def test_a_read_task_count_that_is_not_a_positive_number_is_refused(given: str) -> None:
    source = KafkaDataSource({"kafka.bootstrap.servers": "b:1", "subscribe": "t", "readTasks": given})
    with pytest.raises(ValueError, match="readTasks"):
        source.streamReader(source.schema())
