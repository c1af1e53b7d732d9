"""kill -9 of the Spark driver at arbitrary moments of a running stream: after a restart, the state tables,
the compacted topics and the raw tables hold each event's effect exactly once, as an uninterrupted run
would (its result is what the rules give for the same events: test_spark_apps checks that equality)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel

from smartshelf import rules
from smartshelf.adapters import delta
from smartshelf.adapters.spark import checkpoint_dir
from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.registry import DEAD_LETTERS, table, topic
from smartshelf.runtime import jobs
from smartshelf.runtime.scratch import make_run_dir
from smartshelf.schemas import ShelfBatchState, ShelfState
from smartshelf.settings import REPO_ROOT, Settings
from smartshelf.streaming.apps import STATE_APPS
from smartshelf.streaming.commit import FAIL_AFTER_PUBLISH
from smartshelf.streaming.runner import KEYED_QUERY
from smartshelf.world import World, WorldEvents
from tests.conftest import initialised_stack, isolated_settings, latest_in_topic, settings_env, values_in_topic

pytestmark = pytest.mark.integration

# the state apps (the closed loop's apps would restock shelves and change the lots this test expects)
RUNNER = [sys.executable, str(REPO_ROOT / "spark-apps" / "runner" / "app.py"), *STATE_APPS]


@pytest.fixture(scope="module")
def stack() -> Iterator[Settings]:
    run_dir = make_run_dir("smartshelf-spark-kill-")
    try:
        # small triggers: many batches, so a kill lands between, inside and around them (not smaller: the lake
        # sink also merges the keyed apps' state topics, and each of its triggers costs a few delta-spark commits)
        with initialised_stack(isolated_settings(run_dir, max_offsets_per_trigger=1000)) as settings:
            yield settings
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _world_events(settings: Settings, hours: int) -> WorldEvents:
    world = World(jobs.load_store(settings), 11)
    _, events = world.advance(world.initial_state(settings.sim_start), settings.sim_start + timedelta(hours=hours))
    return events


def _produce(settings: Settings, events: WorldEvents) -> None:
    _send(settings, [(name, topic(name).key_of(record).encode(), record.model_dump_json().encode())
                     for name, records in events.by_topic().items() for record in records])


def _send(settings: Settings, records: list[tuple[str, bytes, bytes]]) -> None:
    """(topic, key, value) records, in order."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    producer = adapter.producer()
    for name, key, value in records:
        producer.send(name, key=key, value=value)
    producer.flush()
    producer.close()
    adapter.close()


def _expected(settings: Settings, events: WorldEvents) -> tuple[dict[str, ShelfState], dict[str, ShelfBatchState]]:
    initial = rules.initial_states(jobs.load_store(settings), settings.sim_start)
    shelves = {s.shelf_id: s for s in initial.shelves}
    for event in events.shelf_events:
        shelves[event.shelf_id], shortfall = rules.apply_shelf_event(shelves[event.shelf_id], event)
        assert shortfall is None
    lots_by_shelf: dict[str, list[ShelfBatchState]] = {}
    for lot in initial.shelf_lots:
        lots_by_shelf.setdefault(lot.shelf_id, []).append(lot)
    for sale in events.pos_transactions:
        _, shortfalls = rules.apply_sale(lots_by_shelf, sale)
        assert not shortfalls
    lots = {topic("shelf_batch_state").local_key_of(lot): lot for group in lots_by_shelf.values() for lot in group}
    return shelves, lots


def _rows(settings: Settings, table_name: str) -> list[BaseModel]:
    return list(delta.read_rows(delta.table_path(settings.delta_dir, table(table_name)), table(table_name).schema))


def _keyed(settings: Settings, table_name: str) -> dict[str, BaseModel]:
    key_of = topic(table(table_name).topic or "").local_key_of  # one store: its keys within the store
    return {key_of(row): row for row in _rows(settings, table_name)}


def _caught_up(settings: Settings, events: WorldEvents, shelves: dict[str, ShelfState],
               lots: dict[str, ShelfBatchState]) -> bool:
    raw_counts = {"raw_shelf_events": len(events.shelf_events), "raw_pos_transactions": len(events.pos_transactions),
                  "raw_foot_traffic": len(events.foot_traffic)}
    return (all(len(_rows(settings, name)) >= count for name, count in raw_counts.items())
            and _keyed(settings, "shelf_state") == shelves and _keyed(settings, "shelf_batch_state") == lots)


def _behind(settings: Settings, events: WorldEvents) -> str:
    """What the lake and the states hold against what is expected, for a failure's message."""
    shelves, lots = _expected(settings, events)
    def differing(found: dict[str, BaseModel], expected: dict[str, ShelfState] | dict[str, ShelfBatchState]) -> int:
        return sum(1 for key, value in found.items() if expected.get(key) != value)

    return (f"raw shelf events {len(_rows(settings, 'raw_shelf_events'))}/{len(events.shelf_events)}, shelves "
            f"differing in Delta {differing(_keyed(settings, 'shelf_state'), shelves)}, on the topic "
            f"{differing(latest_in_topic(settings, 'shelf_state'), shelves)}, lots differing in Delta "
            f"{differing(_keyed(settings, 'shelf_batch_state'), lots)}")


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    # a session of its own: the kill takes the driver, its JVM and its Python workers at once, as a crash would
    return subprocess.Popen(RUNNER, env=settings_env(settings), stdout=subprocess.DEVNULL,
                            stderr=log.open("ab"), start_new_session=True)


def _applied_batches(settings: Settings) -> int:
    """The batches the keyed query (shelf-aggregator's) has committed."""
    commits = checkpoint_dir(settings, KEYED_QUERY) / "commits"
    return sum(1 for path in commits.iterdir() if path.name.isdigit()) if commits.is_dir() else 0


def test_kill_9_mid_stream_loses_and_repeats_nothing(stack: Settings) -> None:
    settings = stack
    events = _world_events(settings, hours=7)  # from the store's opening at 08:00
    assert len(events.shelf_events) > 2000
    _produce(settings, events)
    shelves, lots = _expected(settings, events)
    log = settings.run_dir / "spark-kill.log"
    moments = random.Random(5)

    for kill in range(2):
        driver = _start(settings, log)
        # wait for some progress, then kill at a moment that falls anywhere in a trigger
        reached = _applied_batches(settings) + 2
        deadline = time.monotonic() + 240
        while _applied_batches(settings) < reached:
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"kill {kill}: no progress\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        time.sleep(moments.uniform(0.0, 1.5))
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
        assert not _caught_up(settings, events, shelves, lots), "the kill came after the end: make the input longer"

    driver = _start(settings, log)
    try:
        deadline = time.monotonic() + 420
        while not _caught_up(settings, events, shelves, lots):
            assert driver.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the restarted driver did not catch up: {_behind(settings, events)}"
            time.sleep(1)
        time.sleep(3)  # anything still to come would be a duplicate
    finally:
        os.killpg(driver.pid, signal.SIGTERM)
        driver.wait(timeout=120)

    for name, records in (("raw_shelf_events", events.shelf_events), ("raw_pos_transactions", events.pos_transactions),
                          ("raw_foot_traffic", events.foot_traffic)):
        ids = sorted(getattr(row, "event_id", None) or getattr(row, "transaction_id") for row in _rows(settings, name))
        expected_ids = sorted(getattr(r, "event_id", None) or getattr(r, "transaction_id") for r in records)
        assert ids == expected_ids, f"{name}: {len(ids)} rows for {len(expected_ids)} events"
    assert _keyed(settings, "shelf_state") == shelves
    assert _keyed(settings, "shelf_batch_state") == lots
    # the compacted topics: every key's latest value is the final state (keys untouched keep no record)
    for topic_name, final in (("shelf_state", shelves), ("shelf_batch_state", lots)):
        latest = latest_in_topic(settings, topic_name)
        assert latest and all(final[key] == value for key, value in latest.items()), topic_name
    assert not latest_in_topic(settings, "dead_letters")


def test_a_failed_query_restarts_from_its_last_commit_without_applying_twice(scratch_dir: Path) -> None:
    """Each state query that gets records fails once after applying and publishing a batch and before committing
    it: the runner restarts the query from its last commit (the state apps' state from Spark's state store), so the
    replayed batch counts once, and the dead letters it published (of records sent first, so in the batch that
    fails) are not sent again."""
    with initialised_stack(isolated_settings(scratch_dir, max_offsets_per_trigger=1000,
                                             crash_point=FAIL_AFTER_PUBLISH)) as settings:
        events = _world_events(settings, hours=3)  # enough for every state app to get records
        bad = [f"not a shelf event {n}" for n in range(3)]
        _send(settings, [("shelf_events", b"S0001", text.encode()) for text in bad])
        _produce(settings, events)
        shelves, lots = _expected(settings, events)
        log = settings.run_dir / "spark-drill.log"
        driver = _start(settings, log)
        try:
            deadline = time.monotonic() + 420
            while not _caught_up(settings, events, shelves, lots):
                assert driver.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"not caught up: {_behind(settings, events)}"
                time.sleep(1)
        finally:
            os.killpg(driver.pid, signal.SIGTERM)
            driver.wait(timeout=120)
        drilled = sorted(path.name for path in settings.run_dir.glob("drill-*"))
        # what gets records here (the sensors' events; no wh_events): the keyed query (shelf-aggregator and
        # batch-state-updater); the shared query's loop apps publish nothing from these events
        drills = [KEYED_QUERY]
        assert drilled == sorted(f"drill-{name}" for name in drills)
        assert log.read_text().count("restarting it from its checkpoint") == len(drills)
        assert len(_rows(settings, "raw_shelf_events")) == len(events.shelf_events)
        letters = values_in_topic(settings, DEAD_LETTERS)
        assert sorted(letter.raw for letter in letters) == bad  # type: ignore[attr-defined]  # each once
