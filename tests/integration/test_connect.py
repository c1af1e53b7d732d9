"""Kafka Connect (Debezium's JDBC sink) on the real broker and PostgreSQL: every mirror table equals the latest
value per key of its topic, row by row (a store's keys are several fields: a tombstone deletes nothing, and nothing
publishes one), append-only tables hold each record once, POS baskets
become their two tables, records the converter cannot read go to dead_letters with Connect's reason headers without
blocking their partition, kill -9 of the worker loses and duplicates nothing, and the config tables reach their
topics through Debezium's PostgreSQL source."""

from __future__ import annotations

import json
import random
import shutil
import time
from collections.abc import Iterator
from datetime import date, datetime, timedelta

import pytest
from pydantic import BaseModel

from smartshelf.adapters import postgres
from smartshelf.adapters.kafka import KafkaAdapter, Record
from smartshelf.connect import SINKS, mirror_table, pos_rows
from smartshelf.ingress import Rejection, parse_record
from smartshelf.registry import DEAD_LETTERS, KEY_SEPARATOR, Table, table, topic
from smartshelf.runtime import mirror, supervisor
from smartshelf.runtime.scratch import make_run_dir
from smartshelf.schemas import (
    FIRST_STORE, Alert, DeadLetter, PosItem, PosTransaction, ShelfBatchState, ShelfState, WarehouseEvent,
)
from smartshelf.settings import Settings
from tests.conftest import initialised_stack, isolated_settings

pytestmark = pytest.mark.integration

DAY = datetime(2025, 1, 1, 8, 0)
UPSERT_TOPICS = [s.topic for s in SINKS if s.mode == "upsert"]
CATCH_UP_S = 180


@pytest.fixture(scope="module")
def stack() -> Iterator[Settings]:
    run_dir = make_run_dir("smartshelf-connect-")
    try:
        with initialised_stack(isolated_settings(run_dir)) as settings:
            supervisor.start(settings, ["connect"])
            yield settings
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


# --- the records ----------------------------------------------------------------------------------
Outgoing = tuple[str, bytes | None, bytes | None]  # topic, key, value


def _record(name: str, value: BaseModel) -> Outgoing:
    return name, topic(name).key_of(value).encode(), value.model_dump_json().encode()


def _records(rng: random.Random, count: int, start: int) -> list[Outgoing]:
    """Several versions per key, in an order only the topic knows; events, alerts and baskets."""
    out = []
    for i in range(start, start + count):
        shelf = f"S{rng.randrange(40):03d}"
        ts = DAY + timedelta(seconds=i, microseconds=rng.randrange(1_000_000))
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


def _unreadable_records() -> list[Outgoing]:
    """Records Connect's converter cannot read: each must reach dead_letters with its reason, and must not stop
    the records after it."""
    good = ShelfState(shelf_id="S001", current_stock=5, current_weight=1.0, last_event_type="pickup",
                      last_event_ts=DAY).model_dump()
    return [
        ("shelf_state", b"S001", b"{not json"),
        ("shelf_state", b"S001", _json({**good, "last_event_type": None})),
        ("shelf_state", b"S001", _json({k: v for k, v in good.items() if k != "current_weight"})),
        ("wh_events", b"S001", b"\xff\xfe"),
    ]


def _json(value: dict[str, object]) -> bytes:
    return json.dumps(value, default=str).encode()


def _produce(settings: Settings, records: list[Outgoing]) -> None:
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    producer = adapter.producer()
    for name, key, value in records:
        producer.send(name, key=key, value=value)
    producer.flush()
    producer.close()
    adapter.close()


# --- what the tables must hold --------------------------------------------------------------------
def _read(settings: Settings, name: str) -> list[Record]:
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        return list(adapter.read(adapter.partitions_for(name)))
    finally:
        adapter.close()


def _valid(settings: Settings, name: str) -> list[BaseModel]:
    parsed = [parse_record(topic(name), r.value) for r in _read(settings, name) if r.value is not None]
    return [p for p in parsed if not isinstance(p, Rejection)]


def _latest(settings: Settings, name: str) -> dict[tuple[str, ...], BaseModel]:
    """The latest valid value per key of a compacted topic, tombstones deleting where its sink deletes."""
    latest: dict[tuple[str, ...], BaseModel] = {}
    deletes = any(s.topic == name and s.deletes for s in SINKS)
    for record in _read(settings, name):
        assert record.key is not None
        if record.value is None:
            if deletes:
                latest.pop(tuple(record.key.decode().split(KEY_SEPARATOR)), None)
            continue
        parsed = parse_record(topic(name), record.value)
        if not isinstance(parsed, Rejection):
            latest[tuple(str(getattr(parsed, f)) for f in topic(name).key)] = parsed
    return latest


def _rows(settings: Settings, target: Table) -> dict[tuple[str, ...], BaseModel]:
    with postgres.connect(settings) as conn, conn.cursor() as cur:
        rows = postgres.select_rows(cur, target)
    return {tuple(str(getattr(r, f)) for f in target.key): r for r in rows}


def _assert_mirrors(settings: Settings) -> None:
    for name in UPSERT_TOPICS:
        expected, actual = _latest(settings, name), _rows(settings, mirror_table(name))
        assert actual.keys() == expected.keys(), name
        for key, value in expected.items():
            assert actual[key] == value, f"{name} {key}: {actual[key]} != {value}"
    for name in ("wh_events", "alerts"):
        target = mirror_table(name)
        by_id = {tuple(str(getattr(r, f)) for f in target.key): r for r in _valid(settings, name)}
        assert _rows(settings, target) == by_id, name
    sales = _valid(settings, "pos_transactions")
    assert sales
    for target in (table("pos_transactions"), table("pos_transaction_items")):
        wanted = {tuple(str(getattr(row, f)) for f in target.key): row
                  for sale in sales for t, row in pos_rows(sale) if t is target}  # type: ignore[arg-type]
        assert _rows(settings, target) == wanted, target.name
    assert mirror.differences(settings) == []


def _connect_letters(settings: Settings) -> list[Record]:
    """Connect's own dead letters: the failed record as it was, with the reason in headers."""
    return [r for r in _read(settings, DEAD_LETTERS) if any(k == "__connect.errors.topic" for k, _ in r.headers)]


def _ours(settings: Settings) -> list[DeadLetter]:
    return [p for p in _valid(settings, DEAD_LETTERS) if isinstance(p, DeadLetter)]


# --- the tests ------------------------------------------------------------------------------------------
def test_mirror_equals_topics_and_unreadable_records_go_to_dead_letters(stack: Settings) -> None:
    rng = random.Random(5)
    letter = DeadLetter(source="shelf_events", reason="not JSON", raw="{oops\x00", ts=DAY)  # NUL: escaped
    _produce(stack, _records(rng, 400, 0) + _unreadable_records() + _records(rng, 200, 400)
             + [(DEAD_LETTERS, b"shelf_events", letter.model_dump_json().encode())])
    mirror.wait_caught_up(stack, CATCH_UP_S)
    shelf = (FIRST_STORE, "S001")
    assert shelf in _rows(stack, table("shelf_state"))
    _produce(stack, [("shelf_state", "|".join(shelf).encode(), None)])  # a tombstone: the sink deletes nothing
    mirror.wait_caught_up(stack, CATCH_UP_S)
    _assert_mirrors(stack)
    assert shelf in _rows(stack, table("shelf_state"))
    failed = _connect_letters(stack)
    assert sorted(dict(r.headers)["__connect.errors.topic"].decode() for r in failed) == \
        ["shelf_state"] * 3 + ["wh_events"]
    assert all(dict(r.headers).get("__connect.errors.exception.message") for r in failed)
    assert [row.raw for row in _rows(stack, table("dead_letters")).values()] == ["{oops\\x00"]
    assert supervisor.status(stack) and all(s.healthy for s in supervisor.status(stack) if s.name == "connect")


def test_kill_minus_9_loses_and_duplicates_nothing(stack: Settings) -> None:
    rng = random.Random(9)
    for round_no in range(3):
        _produce(stack, _records(rng, 600, 20_000 + round_no * 1000))
        time.sleep(rng.uniform(0.5, 3.0))
        supervisor.kill_hard(stack, "connect")
        supervisor.start(stack, ["connect"])
    mirror.wait_caught_up(stack, CATCH_UP_S)
    _assert_mirrors(stack)


def test_config_tables_reach_their_topics(stack: Settings) -> None:
    """The source's snapshot holds every row (the connect server waited for it), then a change arrives."""
    with postgres.connect(stack) as conn, conn.cursor() as cur:
        catalog = postgres.count_rows(cur, table("batch_catalog"))
        assert catalog > 0 and len(_latest(stack, "batch_catalog")) == catalog
        cur.execute("UPDATE config.shelf_profiles SET item_price = 99.5 WHERE shelf_id = "
                    "(SELECT min(shelf_id) FROM config.shelf_profiles) RETURNING shelf_id")
        (shelf_id,) = cur.fetchone()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        latest = _latest(stack, "shelf_profiles")
        found = latest.get((FIRST_STORE, shelf_id))
        if found is not None and found.item_price == 99.5:  # type: ignore[attr-defined]
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the changed shelf profile did not reach its topic in 60 s")
    with postgres.connect(stack) as conn, conn.cursor() as cur:
        profiles = postgres.select_rows(cur, table("shelf_profiles"))
    assert {(p.store_id, p.shelf_id): p for p in profiles} == latest  # type: ignore[attr-defined]
    keys = {r.key for r in _read(stack, "shelf_profiles")}  # Debezium's key struct of the primary key, as text
    assert keys == {f"Struct{{store_id={p.store_id},shelf_id={p.shelf_id}}}".encode()  # type: ignore[attr-defined]
                    for p in profiles}
