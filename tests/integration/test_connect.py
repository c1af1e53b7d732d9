"""The embedded connect worker on the real broker and PostgreSQL: every mirror table equals the latest value per
key of its topic (row by row), insert-only tables hold each record once, bad records go to dead_letters without
blocking their partition, kill -9 of the worker loses and duplicates nothing, and config tables reach their
topics."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date, datetime, timedelta

import pytest
from pydantic import BaseModel

from smartshelf.adapters import postgres
from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.apps.connect_worker import DEAD_LETTERS_MARK
from smartshelf.connect import SINKS, mirror_table, pos_rows
from smartshelf.ingress import Rejection, parse_record
from smartshelf.registry import DEAD_LETTERS, Table, table, topic
from smartshelf.runtime.scratch import make_run_dir
from smartshelf.schemas import (
    Alert, DeadLetter, PosItem, PosTransaction, ShelfBatchState, ShelfState, WarehouseEvent,
)
from smartshelf.settings import REPO_ROOT, Settings
from tests.conftest import initialised_stack, isolated_settings, settings_env

pytestmark = pytest.mark.integration

WORKER = [sys.executable, str(REPO_ROOT / "kafka-components" / "kafka-connect" / "worker.py")]
DAY = datetime(2025, 1, 1, 8, 0)
UPSERT_TOPICS = [s.topic for s in SINKS if s.mode == "upsert"]


@pytest.fixture(scope="module")
def stack() -> Iterator[Settings]:
    run_dir = make_run_dir("smartshelf-connect-")
    try:
        with initialised_stack(isolated_settings(run_dir)) as settings:
            yield settings
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# --- the records ----------------------------------------------------------------------------------
Outgoing = tuple[str, bytes | None, bytes | None]  # topic, key, value


def _record(name: str, value: BaseModel) -> Outgoing:
    return name, topic(name).key_of(value).encode(), value.model_dump_json().encode()


def _state_records(rng: random.Random, count: int, start: int) -> list[Outgoing]:
    """Several versions per key, in an order only the topic knows."""
    out = []
    for i in range(start, start + count):
        shelf = f"S{rng.randrange(40):03d}"
        ts = DAY + timedelta(seconds=i)
        out.append(_record("shelf_state", ShelfState(shelf_id=shelf, current_stock=rng.randrange(100),
                                                     current_weight=rng.random() * 10,
                                                     last_event_type="pickup", last_event_ts=ts)))
        out.append(_record("shelf_batch_state", ShelfBatchState(
            shelf_id=shelf, batch_code=f"B{rng.randrange(3)}", received_date=date(2024, 12, 20),
            expiry_date=date(2025, 1, 20), batch_quantity_store=rng.randrange(50), last_update_ts=ts)))
        out.append(_record("wh_events", WarehouseEvent(
            event_id=f"W{i}", event_type="wh_out", shelf_id=shelf, batch_code="B0", quantity=1 + rng.randrange(9),
            received_date=date(2024, 12, 20), expiry_date=date(2025, 1, 20), reference=f"plan-{i}", ts=ts)))
        if i % 5 == 0:
            out.append(_record("alerts", Alert(alert_id=f"A{i}", alert_type="low_stock", location="store",
                                               severity="warning", shelf_id=shelf, message="low", ts=ts)))
            items = [PosItem(shelf_id=shelf, quantity=1, unit_price=2.0, discount=0.0, line_total=2.0),
                     PosItem(shelf_id="S999", quantity=2, unit_price=1.5, discount=0.1, line_total=2.7)]
            out.append(_record("pos_transactions", PosTransaction(transaction_id=f"T{i}", customer_id="C1", ts=ts,
                                                                  items=items, total=4.7)))
    return out


def _bad_records() -> list[Outgoing]:
    """Each must reach dead_letters with its reason, and must not stop the records after it."""
    good = ShelfState(shelf_id="S001", current_stock=5, current_weight=1.0, last_event_type="pickup",
                      last_event_ts=DAY)
    return [
        ("shelf_state", b"S001", b"{not json"),
        ("shelf_state", b"S001", good.model_copy(update={"current_stock": -3}).model_dump_json().encode()),
        ("shelf_state", b"S002", good.model_dump_json().encode()),  # key is not the value's key
        ("wh_events", b"S001", None),  # a tombstone on an insert-only topic
    ]


def _produce(settings: Settings, records: list[Outgoing]) -> None:
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    producer = adapter.producer()
    for name, key, value in records:
        producer.send(name, key=key, value=value)
    producer.flush()
    producer.close()
    adapter.close()


# --- what the tables must hold --------------------------------------------------------------------
def _expected(settings: Settings, name: str) -> dict[tuple[str, ...], BaseModel]:
    """The latest valid value per key of a compacted topic, tombstones deleting (what a mirror must hold)."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    source = topic(name)
    latest: dict[tuple[str, ...], BaseModel] = {}
    try:
        for record in adapter.read(adapter.partitions_for(name)):
            if record.value is None:
                latest.pop(tuple(record.key.decode().split("|")), None)
                continue
            parsed = parse_record(source, record.value)
            if isinstance(parsed, Rejection) or source.key_of(parsed).encode() != record.key:
                continue
            latest[tuple(str(getattr(parsed, f)) for f in source.key)] = parsed
    finally:
        adapter.close()
    return latest


def _rows(settings: Settings, target: Table) -> dict[tuple[str, ...], BaseModel]:
    with postgres.connect(settings) as conn, conn.cursor() as cur:
        rows = postgres.select_rows(cur, target)
    return {tuple(str(getattr(r, f)) for f in target.key): r for r in rows}


def _wait_caught_up(settings: Settings, worker: subprocess.Popen[bytes], timeout_s: float = 120) -> None:
    """Until every sink's committed offsets reach the ends of its topic, and those ends stay put (the
    dead-letters sink reads what the other sinks send)."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    partitions = [tp for s in SINKS for tp in adapter.partitions_for(s.topic)]
    deadline = time.monotonic() + timeout_s
    try:
        ends = adapter.end_offsets(partitions)
        while time.monotonic() < deadline:
            assert worker.poll() is None, f"the worker exited with {worker.returncode}"
            with postgres.connect(settings) as conn, conn.cursor() as cur:
                cur.execute("SELECT topic, kafka_partition, next_offset FROM ops.connect_offsets "
                            "WHERE connector <> %s", (DEAD_LETTERS_MARK,))
                committed = {(t, p): o for t, p, o in cur.fetchall()}
            if all(committed.get((tp.topic, tp.partition), 0) >= end for tp, end in ends.items()):
                now = adapter.end_offsets(partitions)
                if now == ends:
                    return
                ends = now
            time.sleep(0.3)
    finally:
        adapter.close()
    raise AssertionError(f"the worker did not catch up in {timeout_s}s: ends {ends}")


def _start(settings: Settings, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(WORKER, env={**settings_env(settings), **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)


def _stop(worker: subprocess.Popen[bytes]) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)


def _dead_letters(settings: Settings) -> list[DeadLetter]:
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        return [DeadLetter.model_validate_json(r.value) for r in adapter.read(adapter.partitions_for(DEAD_LETTERS))]
    finally:
        adapter.close()


def _valid(settings: Settings, name: str) -> list[BaseModel]:
    """Every valid record of a topic, in order."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        parsed = [parse_record(topic(name), r.value) for r in adapter.read(adapter.partitions_for(name))]
    finally:
        adapter.close()
    return [p for p in parsed if not isinstance(p, Rejection)]


def _assert_mirrors(settings: Settings) -> None:
    for name in UPSERT_TOPICS:
        expected, actual = _expected(settings, name), _rows(settings, mirror_table(name))
        assert actual.keys() == expected.keys(), name
        for key, value in expected.items():
            assert actual[key] == value, f"{name} {key}: {actual[key]} != {value}"
    # insert-only: each valid record once (the first of a repeated id)
    for name in ("wh_events", "alerts"):
        first: dict[tuple[str, ...], BaseModel] = {}
        for record in _valid(settings, name):
            first.setdefault((topic(name).id_of(record),), record)
        assert _rows(settings, mirror_table(name)) == first, name
    sales = _valid(settings, "pos_transactions")
    assert sales
    for target in (table("pos_transactions"), table("pos_transaction_items")):
        wanted = {tuple(str(getattr(row, f)) for f in target.key): row
                  for sale in sales for t, row in pos_rows(sale) if t is target}  # type: ignore[arg-type]
        assert _rows(settings, target) == wanted, target.name


def _assert_letters_once(settings: Settings) -> None:
    letters = [d for d in _dead_letters(settings) if d.source in {s.topic for s in SINKS}]
    origins = Counter((d.source, d.source_partition, d.source_offset) for d in letters)
    assert origins and max(origins.values()) == 1, f"dead letters sent twice: {origins.most_common(3)}"
    with postgres.connect(settings) as conn, conn.cursor() as cur:
        assert postgres.count_rows(cur, table("dead_letters")) == len(_dead_letters(settings))


def test_mirror_equals_topics_and_bad_records_go_to_dead_letters(stack: Settings) -> None:
    rng = random.Random(5)
    _produce(stack, _state_records(rng, 400, 0) + _bad_records() + _state_records(rng, 200, 400))
    worker = _start(stack)
    try:
        _wait_caught_up(stack, worker)
        assert ("S001",) in _rows(stack, table("shelf_state"))
        # a tombstone deletes its row; a repeated event id is an upstream bug, reported and not written twice
        duplicate = _record("wh_events", WarehouseEvent(
            event_id="W3", event_type="wh_out", shelf_id="S001", batch_code="B0", quantity=1,
            received_date=date(2024, 12, 20), expiry_date=date(2025, 1, 20), ts=DAY))
        _produce(stack, [("shelf_state", b"S001", None), duplicate])
        _wait_caught_up(stack, worker)
    finally:
        _stop(worker)
    _assert_mirrors(stack)
    assert ("S001",) not in _rows(stack, table("shelf_state"))
    reasons = [d.reason for d in _dead_letters(stack)]
    assert any(r.startswith("not JSON") for r in reasons)
    assert any("current_stock" in r for r in reasons)
    assert any("is not the value's key" in r for r in reasons)
    assert any("tombstone on wh_events" in r for r in reasons)
    assert any(r.startswith("duplicate event_id W3") for r in reasons)
    _assert_letters_once(stack)


def test_kill_minus_9_loses_and_duplicates_nothing(stack: Settings) -> None:
    rng = random.Random(9)
    worker = _start(stack, SMARTSHELF_CRASH_POINT="connect.before_commit")
    try:
        _produce(stack, _state_records(rng, 300, 10_000) + _bad_records())
        assert worker.wait(timeout=60) == 137, "the drill did not fire"  # rows and letters out, not committed
        worker = _start(stack)
        for round_no in range(4):
            _produce(stack, _state_records(rng, 600, 20_000 + round_no * 1000) + _bad_records())
            time.sleep(rng.uniform(0.3, 2.0))
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
            worker = _start(stack)
        _wait_caught_up(stack, worker)
    finally:
        _stop(worker)
    _assert_mirrors(stack)
    _assert_letters_once(stack)


def test_config_tables_reach_their_topics(stack: Settings) -> None:
    worker = _start(stack)
    try:
        with postgres.connect(stack) as conn, conn.cursor() as cur:
            cur.execute("UPDATE config.shelf_profiles SET item_price = 99.5 WHERE shelf_id = "
                        "(SELECT min(shelf_id) FROM config.shelf_profiles) RETURNING shelf_id")
            (shelf_id,) = cur.fetchone()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            latest = _expected(stack, "shelf_profiles")
            if (shelf_id,) in latest and latest[(shelf_id,)].item_price == 99.5:  # type: ignore[attr-defined]
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the changed shelf profile did not reach its topic in 30 s")
        with postgres.connect(stack) as conn, conn.cursor() as cur:
            profiles = postgres.select_rows(cur, table("shelf_profiles"))
            catalog = postgres.count_rows(cur, table("batch_catalog"))
        assert {(p.shelf_id,): p for p in profiles} == latest  # type: ignore[attr-defined]
        assert len(_expected(stack, "batch_catalog")) == catalog
    finally:
        _stop(worker)
