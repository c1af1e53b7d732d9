"""The embedded platform against real servers: broker, PostgreSQL, Redis, their restarts and failures."""

from __future__ import annotations

import subprocess
import threading
import urllib.request
import uuid
from pathlib import Path

import psycopg2
import pytest
import redis

from smartshelf.adapters.kafka import KafkaAdapter, TopicConfig
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
    assert [r.name for r in rows] == ["s3", "kafka", "postgres", "redis"]
    assert all(r.healthy for r in rows), rows
    assert all(r.rss_mb and r.rss_mb > 1 for r in rows)


def test_broker_round_trip_of_10k_messages(stack: Settings) -> None:
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    topic = _new_topic(adapter)
    _produce(adapter, topic, 10_000)
    ends = adapter.end_offsets(adapter.partitions_for(topic))
    assert sum(ends.values()) == 10_000  # the corrected high watermark, not Tansu's under-reported one
    values = _read_values(adapter, topic)
    assert sorted(values) == sorted(f"message-{i}".encode() for i in range(10_000))
    assert adapter.ensure_topics([TopicConfig(topic, 3, compacted=False)]) == []  # idempotent
    adapter.close()


def test_a_partition_of_more_than_1000_stored_batches_stays_readable(stack: Settings) -> None:
    """Tansu stores each produced batch as an S3 object and lists them to fetch; a listing of more than 1,000
    objects needs a continuation token, which s3rver could not make under OpenSSL 3 (HTTP 500: fetches failed)."""
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    topic = _new_topic(adapter, partitions=1)
    producer = adapter.producer(linger_ms=0)
    for i in range(1_050):  # one batch each
        producer.send(topic, value=f"message-{i}".encode()).get(timeout=30)
    producer.close()
    partition = adapter.partitions_for(topic)
    tail = [r.value for r in adapter.read(partition, start={partition[0]: 1_040}, timeout_s=30)]
    assert tail == [f"message-{i}".encode() for i in range(1_040, 1_050)]
    assert len(_read_values(adapter, topic)) == 1_050
    adapter.close()


def _s3(stack: Settings, method: str, key: str, body: bytes | None = None) -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{stack.s3_port}/tansu/{key}", data=body, method=method)
    with urllib.request.urlopen(request, timeout=30) as answer:
        return bytes(answer.read())


def test_an_s3_object_read_while_it_is_rewritten_is_read_whole(stack: Settings) -> None:
    """Tansu rewrites each partition's watermark object in place and reads it on every produce. s3rver wrote an
    object in place, so a read racing a write got an empty or partial object (Tansu: "EOF while parsing a value",
    a refused produce)."""
    key = f"race/{uuid.uuid4().hex[:8]}.json"
    versions = [b'{"v": %d, "pad": "%s"}' % (i, b"x" * (i * 997 % 60_000)) for i in range(40)]
    _s3(stack, "PUT", key, versions[0])
    torn: list[bytes] = []
    writing = threading.Event()
    writing.set()

    def read_until_written() -> None:
        while writing.is_set():
            body = _s3(stack, "GET", key)
            if body not in versions:
                torn.append(body)

    readers = [threading.Thread(target=read_until_written) for _ in range(4)]
    for reader in readers:
        reader.start()
    for _ in range(5):
        for version in versions:
            _s3(stack, "PUT", key, version)
    writing.clear()
    for reader in readers:
        reader.join()
    assert not torn, f"{len(torn)} torn reads, e.g. {torn[0][:80]!r} ({len(torn[0])} bytes)"
    assert _s3(stack, "GET", key) == versions[-1]


def test_end_offsets_stay_right_when_asked_again_and_again(stack: Settings) -> None:
    """The lockstep and the Spark source ask one adapter for end offsets over and over, with empty partitions
    among them (a reused probe consumer once answered stale values, then none at all)."""
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
    assert supervisor.stop(stack) == ["redis", "postgres", "kafka", "s3"]
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
