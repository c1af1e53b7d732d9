"""The embedded platform against real servers: broker, PostgreSQL, Redis, their restarts and failures."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest
import redis
from confluent_kafka import KafkaError, Message

from smartshelf.adapters.kafka import KafkaAdapter, Outgoing, TopicConfig
from smartshelf.errors import SmartShelfError
from smartshelf.runtime import supervisor
from smartshelf.settings import Settings
from tests.conftest import isolated_settings, settings_env

SMARTSHELF = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "smartshelf")


def _produce(adapter: KafkaAdapter, topic: str, count: int, start: int = 0) -> None:
    producer = adapter.producer()
    for i in range(start, start + count):
        producer.send(topic, key=f"k{i % 97}".encode(), value=f"message-{i}".encode())
    producer.flush()
    producer.close()


def _read_values(adapter: KafkaAdapter, topic: str) -> list[bytes]:
    return [record.value for record in adapter.read(adapter.partitions_for(topic))]


def _new_topic(adapter: KafkaAdapter, partitions: int = 3) -> str:
    name = f"t_{uuid.uuid4().hex[:8]}"
    assert adapter.ensure_topics([TopicConfig(name, partitions, compacted=False)]) == [name]
    return name


def test_every_server_is_healthy(stack: Settings) -> None:
    rows = supervisor.status(stack)
    assert [r.name for r in rows] == ["kafka", "postgres", "redis"]
    assert all(r.healthy for r in rows), rows
    assert all(r.rss_mb and r.rss_mb > 1 for r in rows)


def test_broker_round_trip_of_10k_messages(stack: Settings) -> None:
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    topic = _new_topic(adapter)
    _produce(adapter, topic, 10_000)
    ends = adapter.end_offsets(adapter.partitions_for(topic))
    assert sum(ends.values()) == 10_000
    values = _read_values(adapter, topic)
    assert sorted(values) == sorted(f"message-{i}".encode() for i in range(10_000))
    assert adapter.ensure_topics([TopicConfig(topic, 3, compacted=False)]) == []  # idempotent
    adapter.close()


def test_end_offsets_stay_right_when_asked_again_and_again(stack: Settings) -> None:
    """The lockstep clock asks one adapter for end offsets over and over, with empty partitions among them: the
    adapter's one reused metadata consumer must answer the current high watermarks every time."""
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    busy, empty = _new_topic(adapter, partitions=2), f"c_{uuid.uuid4().hex[:8]}"
    adapter.ensure_topics([TopicConfig(empty, 1, compacted=True)])
    partitions = adapter.partitions_for(busy) + adapter.partitions_for(empty)
    produced = 0
    for count in (0, 0, 100, 0, 0, 1, 0, 2_500, 0):
        _produce(adapter, busy, count, start=produced)
        produced += count
        ends = adapter.end_offsets(partitions)
        assert (sum(e for tp, e in ends.items() if tp.topic == busy), ends[partitions[-1]]) == (produced, 0)
    adapter.close()


def test_broker_kill_9_and_restart_loses_nothing(stack: Settings) -> None:
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    topic = _new_topic(adapter)
    _produce(adapter, topic, 5_000)
    adapter.close()

    supervisor.kill_hard(stack, "kafka")
    assert not next(r for r in supervisor.status(stack) if r.name == "kafka").running
    supervisor.start(stack, ["kafka"])

    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    _produce(adapter, topic, 1_000, start=5_000)
    values = _read_values(adapter, topic)
    assert sorted(values) == sorted(f"message-{i}".encode() for i in range(6_000))
    adapter.close()


def test_broker_kill_9_while_producing_loses_nothing_acknowledged(stack: Settings) -> None:
    """A producer (acks=all, idempotent) sends from a thread while the broker is killed with -9 and restarted:
    every record whose send was acknowledged is in the log afterwards, once. Kafka acknowledges once the record
    is in the page cache, which a killed process leaves intact."""
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    topic = _new_topic(adapter)
    acked: list[bytes] = []
    failed: list[KafkaError] = []
    lock = threading.Lock()
    stop = threading.Event()

    def report(error: KafkaError | None, message: Message) -> None:
        with lock:
            if error is None:
                acked.append(message.value() or b"")
            else:
                failed.append(error)

    def produce() -> None:
        producer = adapter.producer(**{"request.timeout.ms": 5_000, "delivery.timeout.ms": 60_000,
                                       "reconnect.backoff.max.ms": 500})
        i = 0
        try:
            while not stop.is_set():
                for _ in range(100):  # ~10k records/s at most: load, without an unbounded backlog
                    producer.send(topic, f"k{i % 97}".encode(), f"message-{i}".encode(), on_delivery=report)
                    i += 1
                producer.poll()
                time.sleep(0.01)
            producer.flush(90)
        finally:
            producer.close()

    def acked_count() -> int:
        with lock:
            return len(acked)

    def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while not predicate():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    producer_thread = threading.Thread(target=produce, name="kill9-producer")
    producer_thread.start()
    try:
        wait_for(lambda: acked_count() >= 3_000, "3,000 acknowledged records before the kill")
        supervisor.kill_hard(stack, "kafka")
        acked_before_kill = acked_count()
        assert not next(r for r in supervisor.status(stack) if r.name == "kafka").running
        time.sleep(1)  # the producer keeps sending into a dead broker
        supervisor.start(stack, ["kafka"])
        wait_for(lambda: acked_count() >= acked_before_kill + 3_000, "3,000 more acknowledged after the restart")
    finally:
        stop.set()
        producer_thread.join(timeout=120)
    assert not producer_thread.is_alive()

    values = _read_values(adapter, topic)
    adapter.close()
    with lock:
        acknowledged = list(acked)
    missing = set(acknowledged) - set(values)
    assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged records lost, e.g. {sorted(missing)[:3]}"
    assert len(values) == len(set(values)), "the idempotent producer wrote duplicates across the restart"
    assert acked_before_kill >= 3_000 and len(acknowledged) >= acked_before_kill + 3_000, failed[:3]


def test_compacted_topics_are_compacted(stack: Settings) -> None:
    """Many updates to a few keys, on a topic whose segments roll every 100 ms and whose log is cleanable at once:
    the log cleaner leaves only the latest value of each key in the segments it has cleaned."""
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    topic = f"c_{uuid.uuid4().hex[:8]}"
    adapter.ensure_topics([TopicConfig(topic, 1, compacted=True, config={
        "segment.ms": "100",
        "segment.bytes": str(1 << 20),  # the smallest Kafka 4 accepts; segment.ms is what rolls here
        "min.cleanable.dirty.ratio": "0.01",
        "min.compaction.lag.ms": "0",
        "delete.retention.ms": "100",
    })])
    keys, updates = 20, 200
    producer = adapter.producer()
    for update in range(updates):
        for key in range(keys):
            producer.send(topic, f"key-{key}".encode(), f"key-{key}:{update}".encode())
        if update % 20 == 19:
            producer.flush()
            time.sleep(0.15)  # the next record starts a new segment
    producer.flush()
    written = keys * updates
    latest = {f"key-{key}".encode(): f"key-{key}:{updates - 1}".encode() for key in range(keys)}

    # the active segment is never cleaned: keep a tick flowing on its own key, so the updates' segments roll and
    # become cleanable; the cleaner looks again every log.cleaner.backoff.ms (15 s by default)
    deadline, ticks = time.monotonic() + 90, 0
    while True:
        producer.send_and_wait([Outgoing(topic, b"tick", b"%d" % ticks)], timeout_s=30)
        ticks += 1
        records = list(adapter.read(adapter.partitions_for(topic)))
        updates_left = [(r.key, r.value) for r in records if r.key != b"tick"]
        if len(updates_left) == keys or time.monotonic() > deadline:
            break
        time.sleep(1)
    producer.close()
    adapter.close()
    assert len(updates_left) == keys, f"{len(updates_left)} of {written} updates still in the log after 90 s"
    assert dict(updates_left) == latest
    assert len(records) < written // 10
    assert records[-1].value == b"%d" % (ticks - 1)


def test_postgres_round_trip_and_kill_9(stack: Settings) -> None:
    def connect():  # type: ignore[no-untyped-def]
        return psycopg2.connect(stack.postgres_dsn)

    with connect() as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE IF NOT EXISTS platform_probe (id int PRIMARY KEY, note text)")
        cur.execute("INSERT INTO platform_probe VALUES (1, 'before kill') ON CONFLICT (id) DO NOTHING")
    supervisor.kill_hard(stack, "postgres")
    supervisor.start(stack, ["postgres"])
    with connect() as conn, conn.cursor() as cur:
        cur.execute("SELECT note FROM platform_probe WHERE id = 1")
        assert cur.fetchone() == ("before kill",)


def test_redis_round_trip_and_kill_9(stack: Settings) -> None:
    client = redis.Redis(host="127.0.0.1", port=stack.redis_port)
    client.xadd("platform_probe", {"n": "1"})
    client.set("sim:now", "2025-01-01T08:00:00")
    supervisor.kill_hard(stack, "redis")
    supervisor.start(stack, ["redis"])
    client = redis.Redis(host="127.0.0.1", port=stack.redis_port)
    assert client.get("sim:now") == b"2025-01-01T08:00:00"
    assert client.xlen("platform_probe") == 1


def test_whole_stack_restart_keeps_topics_and_messages(stack: Settings) -> None:
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    topic = _new_topic(adapter, partitions=1)
    _produce(adapter, topic, 100)
    adapter.close()
    assert supervisor.stop(stack) == ["redis", "postgres", "kafka"]
    supervisor.start(stack)
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    assert topic in adapter.list_topics()
    assert len(_read_values(adapter, topic)) == 100
    adapter.close()


def test_port_in_use_is_one_clear_error(stack: Settings, scratch_dir: Path) -> None:
    clashing = isolated_settings(scratch_dir, redis_port=stack.redis_port)
    with pytest.raises(SmartShelfError, match=f"redis: port {stack.redis_port} .* already in use"):
        supervisor.start(clashing, ["redis"])


def test_cli_status_and_bad_arguments(stack: Settings) -> None:
    env = settings_env(stack)
    ok = subprocess.run([SMARTSHELF, "status", "--json"], env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert '"healthy": true' in ok.stdout

    bad = subprocess.run([SMARTSHELF, "up", "no-such-server"], env=env, capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("error: unknown server 'no-such-server'")
    assert "Traceback" not in bad.stderr
