"""Clock, producers and redis→kafka bridge as real processes on real servers.

A fast-mode run of one simulated day writes the same bytes to Kafka every time, equal to what the world
model produces in memory; killing the bridge (mid-batch, or with -9 at any moment) changes nothing.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import redis

from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps import bridge as bridge_app
from smartshelf.apps.producers import STREAM_FIELD, load_states
from smartshelf.datagen import generate_store
from smartshelf.registry import DEAD_LETTERS, SENSOR_TOPICS, stream_of
from smartshelf.runtime import jobs, supervisor
from smartshelf.runtime.scratch import make_run_dir
from smartshelf.settings import Settings
from smartshelf.schemas import FIRST_STORE
from smartshelf.world import World, WorldState
from tests.conftest import initialised_stack, isolated_settings

SEED = 7
SERVICES = ["producers", "bridge", "clock"]
Record = tuple[str, int, int, bytes | None, bytes, int, tuple[tuple[str, bytes], ...]]


def _fast_day(run_dir: Path, seed: int = SEED) -> Settings:
    return isolated_settings(run_dir, use_simulated_time=True, sim_mode="fast", step_seconds=3600, sim_days=1,
                             sim_seed=seed)


def _contents(settings: Settings) -> list[Record]:
    """Every record of the sensor topics and dead_letters, in (topic, partition, offset) order: where it sits
    and all its bytes."""
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        partitions = [tp for name in (*SENSOR_TOPICS, DEAD_LETTERS) for tp in kafka.partitions_for(name)]
        return sorted((r.topic, r.partition, r.offset, r.key, r.value, r.timestamp, tuple(r.headers))
                      for r in kafka.read(partitions))
    finally:
        kafka.close()


def _world(client: redis.Redis) -> WorldState | None:
    """The one store's world as the producers last wrote it."""
    states = load_states(client, [FIRST_STORE])
    return None if states is None else states[FIRST_STORE]


def _wait_done(settings: Settings, timeout_s: float = 240.0) -> None:
    clock = SimClock(redis_client(settings))
    deadline = time.monotonic() + timeout_s
    while not clock.done():
        assert time.monotonic() < deadline, f"the run did not finish: clock at {clock.now_or_none()}"
        time.sleep(0.2)


def _wait_dead(settings: Settings, name: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while any(row.name == name and row.running for row in supervisor.status(settings)):
        assert time.monotonic() < deadline, f"{name} did not die"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def reference() -> Iterator[list[Record]]:
    """An uninterrupted fast run of one simulated day."""
    run_dir = make_run_dir("smartshelf-producers-")
    try:
        with initialised_stack(_fast_day(run_dir)) as settings:
            supervisor.start(settings, SERVICES)
            _wait_done(settings)
            yield _contents(settings)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def fresh_stack(scratch_dir: Path) -> Iterator[Settings]:
    with initialised_stack(_fast_day(scratch_dir)) as settings:
        yield settings


def test_kafka_holds_exactly_the_worlds_events(reference: list[Record]) -> None:
    start = datetime(2025, 1, 1, 8)
    world = World(generate_store(jobs.DEFAULT_STORE_SEED), SEED)
    _, events = world.advance(world.initial_state(start), start + timedelta(days=1))
    expected = {name: sorted(e.model_dump_json().encode() for e in records)
                for name, records in events.by_topic().items()}
    for name in SENSOR_TOPICS:
        assert sorted(r[4] for r in reference if r[0] == name) == expected[name], name
    assert not [r for r in reference if r[0] == DEAD_LETTERS]
    assert len(events) > 10_000


def test_same_seed_gives_byte_identical_topics(reference: list[Record], fresh_stack: Settings) -> None:
    supervisor.start(fresh_stack, SERVICES)
    _wait_done(fresh_stack)
    assert _contents(fresh_stack) == reference


def test_bridge_dying_between_send_and_ack_neither_loses_nor_duplicates(
        reference: list[Record], fresh_stack: Settings) -> None:
    supervisor.start(fresh_stack, ["producers"])
    supervisor.start(fresh_stack.model_copy(update={"crash_point": "bridge.after_send"}), ["bridge"])
    supervisor.start(fresh_stack, ["clock"])
    _wait_dead(fresh_stack, "bridge")
    sent_but_unacknowledged = len(_contents(fresh_stack))
    assert sent_but_unacknowledged > 0
    supervisor.start(fresh_stack, ["bridge"])
    _wait_done(fresh_stack)
    assert _contents(fresh_stack) == reference
    assert bridge_app.stats(fresh_stack)["duplicates_skipped"] == sent_but_unacknowledged


def test_bridge_killed_with_sigkill_mid_run_neither_loses_nor_duplicates(
        reference: list[Record], fresh_stack: Settings) -> None:
    supervisor.start(fresh_stack, SERVICES)
    deadline = time.monotonic() + 120
    while sum(bridge_app.stats(fresh_stack).values()) < 5000:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    supervisor.kill_hard(fresh_stack, "bridge")
    supervisor.start(fresh_stack, ["bridge"])
    _wait_done(fresh_stack)
    assert _contents(fresh_stack) == reference


def test_redis_killed_mid_run_the_producers_and_the_bridge_wait_and_lose_nothing(
        reference: list[Record], fresh_stack: Settings) -> None:
    """Redis (the streams, the clock, the world's state) killed -9 mid-run and started again 12 s later (longer
    than redis-py's own few retries): the producers, the bridge and the clock are the same processes after it
    (they waited and rebuilt their state from Redis and Kafka), and the topics are byte for byte the
    uninterrupted run's."""
    supervisor.start(fresh_stack, SERVICES)
    serving = {row.name: row.pid for row in supervisor.status(fresh_stack) if row.name in SERVICES}
    deadline = time.monotonic() + 120
    while sum(bridge_app.stats(fresh_stack).values()) < 5000:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    supervisor.kill_hard(fresh_stack, "redis")
    time.sleep(12)
    supervisor.start(fresh_stack, ["redis"])
    _wait_done(fresh_stack)
    after = {row.name: row.pid for row in supervisor.status(fresh_stack) if row.running}
    assert {name: after.get(name) for name in serving} == serving, "a service died"
    assert _contents(fresh_stack) == reference
    log = (fresh_stack.run_dir / "logs" / "bridge.log").read_text()
    assert "a server is unavailable" in log, log[-2000:]


MALFORMED: dict[str, bytes] = {
    "not JSON": b"{this is not json",
    "invalid UTF-8": b"\xff\xfe\x00garbage",
    "wrong type": b'{"event_id":"x1","event_type":"pickup","shelf_id":"S1","quantity":"two",'
                  b'"weight_change":-1.0,"customer_id":"C1","ts":"2025-01-01T09:00:00"}',
    "missing field": b'{"event_id":"x2","event_type":"pickup","quantity":1,"weight_change":-1.0,'
                     b'"ts":"2025-01-01T09:00:00"}',
    "negative quantity": b'{"event_id":"x3","event_type":"pickup","shelf_id":"S1","quantity":-3,'
                         b'"weight_change":3.0,"customer_id":"C1","ts":"2025-01-01T09:00:00"}',
    "huge quantity": b'{"event_id":"x4","event_type":"pickup","shelf_id":"S1","quantity":99999999999,'
                     b'"weight_change":-1.0,"customer_id":"C1","ts":"2025-01-01T09:00:00"}',
    "huge payload": b'{"event_id":"' + b"x" * 200_000 + b'"}',
}
VALID = (b'{"event_id":"ok-1","event_type":"pickup","shelf_id":"%s","quantity":1,"weight_change":-0.5,'
         b'"customer_id":"C1","batch_code":null,"ts":"2025-01-01T09:00:00"}'
         % generate_store(jobs.DEFAULT_STORE_SEED).store_inventory[0].shelf_id.encode())  # a shelf of the store


def test_malformed_payloads_end_in_dead_letters_and_the_flow_goes_on(fresh_stack: Settings) -> None:
    client = redis_client(fresh_stack)
    stream = stream_of("shelf_events")
    for payload in MALFORMED.values():
        client.xadd(stream, {STREAM_FIELD: payload})
    client.xadd(stream, {b"unexpected": b"field"})
    client.xadd(stream, {STREAM_FIELD: VALID})
    bridge = bridge_app.Bridge(fresh_stack)
    try:
        while bridge.step(block_ms=50):
            pass
    finally:
        bridge.close()

    records = _contents(fresh_stack)
    letters = [r for r in records if r[0] == DEAD_LETTERS]
    assert len(letters) == len(MALFORMED) + 1
    reasons = [bridge_app.topic(DEAD_LETTERS).schema.model_validate_json(r[4]).reason for r in letters]
    assert "not JSON" in reasons[0] and "not JSON" in reasons[1]
    assert "quantity" in reasons[2] and "shelf_id" in reasons[3]
    assert "greater than or equal to 0" in reasons[4] and "less than or equal to" in reasons[5]
    assert "exceeds" in reasons[6] and "truncated" in reasons[6]
    assert "no 'event' field" in reasons[7]
    assert [r[4] for r in records if r[0] == "shelf_events"] == [
        bridge_app.topic("shelf_events").schema.model_validate_json(VALID).model_dump_json().encode()]
    stats = bridge_app.stats(fresh_stack)
    assert stats[f"dead_letters:{stream}"] == len(MALFORMED) + 1
    assert stats["delivered:shelf_events"] == 1


def test_a_capped_redis_makes_the_producers_wait_for_the_bridge_and_loses_nothing(scratch_dir: Path) -> None:
    """Redis capped at 16 MB and no bridge yet: the clock runs two simulated days at a fast demo pace, and the
    producers stop writing at half the cap instead of filling Redis. Once the bridge runs, the streams drain,
    the producers go on, and Kafka holds exactly the world's events up to where the producers got, each once."""
    settings = isolated_settings(scratch_dir, use_simulated_time=True, sim_mode="demo", time_multiplier=20_000,
                                 step_seconds=60, sim_days=2, sim_seed=SEED, redis_maxmemory_mb=16)
    with initialised_stack(settings) as settings:
        client, cap = redis_client(settings), 16 << 20
        supervisor.start(settings, ["clock", "producers"])
        log = settings.run_dir / "logs" / "producers.log"
        deadline, peak = time.monotonic() + 120, 0
        while "waiting for the bridge" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the producers never waited for room"
            peak = max(peak, int(client.info("memory")["used_memory"]))
            time.sleep(0.1)
        for _ in range(20):  # a while longer: they stay put
            peak = max(peak, int(client.info("memory")["used_memory"]))
            time.sleep(0.1)
        assert peak < 0.75 * cap, f"Redis reached {peak} B of {cap}"
        waited_at = _world(client)
        assert waited_at is not None and waited_at.clock < settings.sim_start + timedelta(days=2)

        _wait_done(settings)  # the clock at its end: the producers have the most to catch up, in bounded writes
        supervisor.start(settings, ["bridge"])
        deadline = time.monotonic() + 120
        while (state := _world(client)) is None or state.clock < SimClock(client).now():
            assert time.monotonic() < deadline, (f"the producers got to {state and state.clock}, the clock to"
                                                 f" {SimClock(client).now()}:\n{log.read_text()[-2000:]}")
            time.sleep(0.2)
        world = World(generate_store(jobs.DEFAULT_STORE_SEED), SEED)
        _, events = world.advance(world.initial_state(settings.sim_start), state.clock)
        expected = sorted(e.model_dump_json().encode() for records in events.by_topic().values() for e in records)
        deadline = time.monotonic() + 120
        while len(found := [r for r in _contents(settings) if r[0] in SENSOR_TOPICS]) < len(expected):
            assert time.monotonic() < deadline, f"{len(found)} of {len(expected)} events in Kafka"
            time.sleep(0.5)
        assert sorted(r[4] for r in found) == expected
        assert state.clock > waited_at.clock
