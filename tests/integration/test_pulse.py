"""The pulse queries on real Spark and Kafka: a scripted stream of three days gives exactly the windows and the
alerts the pure reference computes (smartshelf.pulse) — nothing on the quiet days, one anomaly for a rush at
the entrance and one shrinkage alert for a shelf emptied without payment on the third; a second store of the
chain, streamed beside it with the rush but no theft, gets its own windows and its own alerts, each as the
reference computes them for that store alone; an event inside the watermark is counted, one behind it is dropped
and counted as dropped."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from pydantic import BaseModel
from pyspark.sql import SparkSession

from smartshelf import pulse
from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.adapters.redis_clock import redis_client
from smartshelf.ingress import Rejection, parse_record
from smartshelf.registry import CLOCK_TICKS, topic
from smartshelf.runtime import jobs
from smartshelf.runtime.scratch import make_run_dir
from smartshelf.schemas import (Alert, ClockTick, FootTrafficEvent, PosItem, PosTransaction, PulseWindow, ShelfEvent,
                                pulse_window_id)
from smartshelf.settings import Settings
from smartshelf.store import StoreData
from smartshelf.streaming.batch import BatchIO
from smartshelf.streaming.pulse import (PULSE_APPS, LateCounter, item_facts, pulse_app, rules, start_pulse,
                                        watermark_delay)
from tests.conftest import initialised_stack, isolated_settings

DAY1 = datetime(2025, 1, 1)
RUSH = DAY1 + timedelta(days=2, hours=11)  # the third day, 11:00: 20 more people a minute for 5 minutes
THEFT = DAY1 + timedelta(days=2, hours=11, minutes=30)  # 12 units off one shelf, never paid for
END = DAY1 + timedelta(days=2, hours=13)  # the last clock tick: every window before ~12:58 closes
SECOND = "store-002"  # the chain's second store: store-001's shelves and script, without the theft


@pytest.fixture(scope="module")
def pulse_stack() -> Iterator[Settings]:
    run_dir = make_run_dir("smartshelf-pulse-")
    try:
        with initialised_stack(isolated_settings(run_dir)) as settings:
            yield settings
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def spark(pulse_stack: Settings) -> Iterator[SparkSession]:
    from smartshelf.adapters.spark import spark_session

    session = spark_session(pulse_stack, "test-pulse")
    yield session
    session.stop()


def _shelves(store: StoreData) -> tuple[str, str]:
    """Two shelves of different categories, the first with the most stock (the thief's)."""
    rows = sorted(store.store_inventory, key=lambda r: (-r.current_stock, r.shelf_id))
    first = rows[0]
    second = next(r for r in rows if r.item_category != first.item_category)
    return first.shelf_id, second.shelf_id


def _entries(at: datetime) -> int:
    """People entering in the minute from `at`: 2-4, and 20 more in the rush's five minutes."""
    quiet = 2 + (at.minute * 7 + at.day) % 3
    return quiet + (20 if RUSH <= at < RUSH + timedelta(minutes=5) else 0)


def _script(store: StoreData) -> list[BaseModel]:
    """Two quiet hours (10:00-12:00) on three days; on the third a rush and a theft; a clock tick each hour."""
    shelf_a, shelf_b = _shelves(store)
    weight = {row.shelf_id: row.item_weight for row in store.store_inventory}
    price = {row.shelf_id: row.item_price for row in store.store_inventory}
    events: list[BaseModel] = []
    for day in range(3):
        for minute in range(120):
            at = DAY1 + timedelta(days=day, hours=10, minutes=minute)
            entries = _entries(at)
            for n in range(entries):
                customer = f"c{day}-{minute:03d}-{n:02d}"
                events.append(FootTrafficEvent(event_id=f"ft-{customer}-in", event_type="entry", customer_id=customer,
                                               ts=at + timedelta(seconds=n)))
            shelf = shelf_a if minute % 2 else shelf_b
            customer = f"b{day}-{minute:03d}"
            events += [
                ShelfEvent(event_id=f"se-{customer}-w", event_type="weight_change", shelf_id=shelf, quantity=1,
                           weight_change=-weight[shelf], customer_id=customer, ts=at + timedelta(seconds=20)),
                PosTransaction(transaction_id=f"tx-{customer}", customer_id=customer, ts=at + timedelta(seconds=40),
                               items=[PosItem(shelf_id=shelf, quantity=1, unit_price=price[shelf], discount=0,
                                              line_total=price[shelf])], total=price[shelf])]
        events.append(ClockTick(tick_id=f"tick-{day}", ts=DAY1 + timedelta(days=day, hours=12)))
    for n in range(4):  # the thief: 3 units at a time, a minute apart, and no till
        events.append(ShelfEvent(event_id=f"se-thief-{n}-w", event_type="weight_change", shelf_id=shelf_a, quantity=3,
                                 weight_change=-3 * weight[shelf_a], customer_id="thief",
                                 ts=THEFT + timedelta(minutes=n)))
    events.append(ClockTick(tick_id="tick-end", ts=END))
    return events


def _alert_key(alert: BaseModel) -> tuple[str, str]:
    assert isinstance(alert, Alert)
    return alert.store_id, alert.alert_id


TOPIC_OF = {FootTrafficEvent: "foot_traffic", ShelfEvent: "shelf_events", PosTransaction: "pos_transactions",
            ClockTick: CLOCK_TICKS}


def _send(settings: Settings, events: list[BaseModel]) -> None:
    producer = KafkaAdapter(settings.kafka_bootstrap_servers).producer()
    for event in events:
        name = TOPIC_OF[type(event)]
        producer.send(name, key=topic(name).key_of(event).encode(), value=event.model_dump_json().encode())
    producer.flush()
    producer.close()


def _read(settings: Settings, name: str) -> list[BaseModel]:
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        described = topic(name)
        records = [parse_record(described, r.value) for r in kafka.read(kafka.partitions_for(name))]
    finally:
        kafka.close()
    refused = [r for r in records if isinstance(r, Rejection)]
    assert not refused, refused[:3]
    return records  # type: ignore[return-value]


def _windows(settings: Settings) -> dict[tuple[str, str], PulseWindow]:
    """pulse_windows by store and id; each window is published once."""
    windows = [w for w in _read(settings, "pulse_windows") if isinstance(w, PulseWindow)]
    by_id = {(w.store_id, w.window_id): w for w in windows}
    assert len(by_id) == len(windows), "a window published twice"
    return by_id


def _chain(store: StoreData) -> dict[str, StoreData]:
    return {store.store_id: store, SECOND: replace(store, store_id=SECOND)}


def _second_stores(events: list[BaseModel]) -> list[BaseModel]:
    """The second store's events: the script's, stamped with its store, but the thief's (ticks are every store's)."""
    return [event.model_copy(update={"store_id": SECOND}) for event in events
            if not isinstance(event, ClockTick) and getattr(event, "customer_id", None) != "thief"]


def _run(spark: SparkSession, settings: Settings, store: StoreData, last_tick: datetime) -> None:
    """Both pulse queries until everything sent is processed, and the batch that closes the windows the last
    tick's watermark passed (Spark runs it after the data, as a batch of no data) is done."""
    watermark = (last_tick - watermark_delay(settings)).isoformat(timespec="milliseconds") + "Z"
    for name in PULSE_APPS:
        query = start_pulse(spark, settings, pulse_app(_chain(store)), _chain(store), BatchIO(settings, name, spark))
        try:
            query.processAllAvailable()
            deadline = time.monotonic() + 60
            while not any(p.eventTime.get("watermark") == watermark for p in query.recentProgress):
                assert time.monotonic() < deadline, (f"{name}: no batch ran with the watermark {watermark}: "
                                                     f"{[p.eventTime for p in query.recentProgress]}")
                time.sleep(0.5)
        finally:
            query.stop()
        assert query.exception() is None
        LateCounter(redis_client(settings)).update(name, query)


def _reference(store: StoreData, events: list[BaseModel], settings: Settings
               ) -> tuple[dict[tuple[str, str], PulseWindow], list[Alert]]:
    """What smartshelf.pulse says for the windows closed by the last tick, of one store run alone."""
    items = item_facts(store)
    signals = [s for event in events for s in pulse.signals_of(event, items)]
    closed_before = END - watermark_delay(settings)
    minute = [w for w in pulse.window_sums(signals, 1, 1) if w.window_end <= closed_before]
    sliding = [w for w in pulse.window_sums(signals, 5, 1) if w.window_end <= closed_before]
    categories = sorted({facts.category for facts in items.values()})
    scored, alerts = pulse.evaluate(pulse.PulseState(), sliding, categories, rules(settings))
    published = [w for w in minute if w.metric not in pulse.SHELF_METRICS] + scored
    mine = {"store_id": store.store_id}
    return ({(store.store_id, w.window_id): w.model_copy(update=mine) for w in published},
            [alert.model_copy(update=mine) for alert in alerts])


def test_a_scripted_stream_gives_the_reference_windows_and_exactly_its_alerts(spark: SparkSession,
                                                                                pulse_stack: Settings) -> None:
    store = jobs.load_store(pulse_stack)
    events = _script(store)
    second = _second_stores(events)
    _send(pulse_stack, [*events, *second])
    _run(spark, pulse_stack, store, END)

    windows, alerts = _windows(pulse_stack), _read(pulse_stack, "alerts")
    expected_windows, expected_alerts = _reference(store, events, pulse_stack)
    second_windows, second_alerts = _reference(_chain(store)[SECOND], second, pulse_stack)
    assert windows == expected_windows | second_windows
    assert sorted(alerts, key=_alert_key) == sorted([*expected_alerts, *second_alerts], key=_alert_key)
    # by hand: nothing on the quiet days; the rush and the theft, each once, within minutes; the second store's rush
    kinds = sorted((a.store_id, a.alert_type, a.metric, a.subject) for a in alerts)  # type: ignore[attr-defined]
    shelf_a, _ = _shelves(store)
    assert kinds == [(store.store_id, "anomaly", "entries", "store"),
                     (store.store_id, "shrinkage", "units_taken", shelf_a), (SECOND, "anomaly", "entries", "store")]
    rush_alert = next(a for a in alerts if a.alert_type == "anomaly")  # type: ignore[attr-defined]
    theft_alert = next(a for a in alerts if a.alert_type == "shrinkage")  # type: ignore[attr-defined]
    assert RUSH < rush_alert.ts <= RUSH + timedelta(minutes=5)
    assert THEFT < theft_alert.ts <= THEFT + timedelta(minutes=5)
    assert theft_alert.value >= rules(pulse_stack).shrinkage_min_units
    # the minute windows carry every entry: the rush's minutes hold 20 more
    rush_minute = windows[(store.store_id, pulse_window_id(1, "entries", "store", RUSH))]
    assert rush_minute.value == _entries(RUSH) > 20


def test_an_event_inside_the_watermark_is_counted_one_behind_it_is_dropped_and_counted(
        spark: SparkSession, pulse_stack: Settings) -> None:
    store = jobs.load_store(pulse_stack)
    late = LateCounter(redis_client(pulse_stack))
    dropped_before = late.dropped()
    inside = END - timedelta(seconds=30)  # its window [12:59, 13:00) is still open
    behind = RUSH + timedelta(seconds=30)  # its windows closed long ago
    _send(pulse_stack, [
        FootTrafficEvent(event_id="ft-late-in", event_type="entry", customer_id="late", ts=inside),
        FootTrafficEvent(event_id="ft-very-late-in", event_type="entry", customer_id="very-late", ts=behind),
        ClockTick(tick_id="tick-after", ts=END + timedelta(hours=1))])
    _run(spark, pulse_stack, store, END + timedelta(hours=1))

    windows = _windows(pulse_stack)
    counted = windows[(store.store_id, pulse_window_id(1, "entries", "store", inside.replace(second=0)))]
    assert (counted.value, counted.events) == (1, 1)
    rush_minute = windows[(store.store_id, pulse_window_id(1, "entries", "store", RUSH))]
    assert rush_minute.value == _entries(RUSH)  # unchanged: the late entry did not reach it
    assert late.dropped()["pulse"] - dropped_before["pulse"] == 1
