"""The one Kafka client adapter, over confluent-kafka (librdkafka). Every Python component talks to the broker
(Apache Kafka) through it; `smartshelf bench broker` measured it 6-11x faster than kafka-python, with the same
guarantees (docs/architecture.md, "Kafka client").

Consumers here are `assign()`ed and never commit: each caller stores its offsets with its effects (a Spark
checkpoint, a PostgreSQL row, the lockstep clock's Redis hash), which is what makes its effects exactly once;
a committed group offset would be a second, unsynchronised copy of the same fact. librdkafka insists on a
`group.id`, which `assign()` never joins.

Producers are idempotent (acks=all, at most 5 requests in flight, retried until `delivery.timeout.ms`; the broker
drops a retried batch it already has), which also keeps each partition's records in the order they were sent.
They partition with `murmur2_random`, the Java client's hash (Spark's too), so a key lands in the same partition
whichever client sent it; librdkafka's default hashes with CRC32.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, ClusterMetadata, NewTopic

from smartshelf.errors import SmartShelfError, Unavailable

# librdkafka logs to stderr (syslog levels): critical only. Connection failures it would log are retried, and the
# calls that give up raise with the reason; the lines would otherwise fill service logs and the CLI's terminal
CLIENT_DEFAULTS: dict[str, object] = {"log_level": 2}

PRODUCER_DEFAULTS: dict[str, object] = {
    **CLIENT_DEFAULTS,
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 20,
    "batch.size": 262_144,  # bytes per partition batch
    "partitioner": "murmur2_random",
    "queue.buffering.max.kbytes": 65_536,  # librdkafka's default is 1 GiB per producer
}

CONSUMER_DEFAULTS: dict[str, object] = {
    **CLIENT_DEFAULTS,
    "group.id": "smartshelf-assign-only",
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    # an offset below the log start (retention deleted it) reads from the start, not from the end
    "auto.offset.reset": "earliest",
    "check.crcs": True,
    # read() waits for the high watermark, which an open transaction would keep a read_committed consumer
    # (librdkafka's default) from reaching
    "isolation.level": "read_uncommitted",
    "queued.max.messages.kbytes": 32_768,  # prefetch; librdkafka's default is 64 MiB per consumer
}

DeliveryReport = Callable[[KafkaError | None, Message], None]

BATCH = 5000  # records per consume() call
LATEST = -1  # ListOffsets' "latest" timestamp: the high watermark
EARLIEST = -2  # ListOffsets' "earliest": the log start offset (past what retention deleted)


@dataclass(frozen=True)
class TopicConfig:
    name: str
    partitions: int
    compacted: bool
    config: Mapping[str, str] = field(default_factory=dict)  # topic-level settings (they win over `compacted`)


class Partition(NamedTuple):
    topic: str
    partition: int


class Delivered(NamedTuple):
    """Where the broker put a produced record."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Record:
    """A consumed record; `value` None for a tombstone, `timestamp` in epoch milliseconds."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes
    timestamp_ms: int | None = None
    headers: tuple[tuple[str, bytes], ...] = ()


def _record(message: Message) -> Record | None:
    """The consumed record; None for an event that is not one (librdkafka reports a broker it lost this way, and
    reconnects by itself: a read that cannot go on ends by its timeout). A fatal error raises."""
    error = message.error()
    if error is not None:
        if error.fatal():
            raise Unavailable(f"kafka: reading failed: {error}")
        return None
    return Record(message.topic() or "", message.partition() or 0, message.offset() or 0, message.key(),
                  message.value(), message.timestamp()[1],
                  tuple((k, v or b"") for k, v in message.headers() or ()))


_NO_SUCH_TOPIC = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC)


def _metadata(client: AdminClient | Consumer, topic: str | None, timeout_s: float) -> ClusterMetadata:
    """The cluster's metadata (of one topic, or all); a broker that does not answer is Unavailable, which the
    services wait out (smartshelf.apps.lifecycle.serve)."""
    try:
        return client.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        raise Unavailable(f"kafka: no metadata{f' of {topic}' if topic else ''}: {exc.args[0]}") from exc


def broker_answers(bootstrap: str, timeout_s: float = 3.0) -> None:
    """Raise unless the broker answers a metadata request."""
    admin = AdminClient({"bootstrap.servers": bootstrap, **CLIENT_DEFAULTS,
                         "socket.connection.setup.timeout.ms": int(timeout_s * 1000)})
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise Unavailable(f"kafka at {bootstrap} does not answer: {exc.args[0]}") from exc


class Publisher:
    """An idempotent producer. `send` queues; `flush` waits and raises if the broker did not take a record."""

    def __init__(self, producer: Producer) -> None:
        self._producer = producer
        self._failures: list[str] = []

    def _failed(self, error: KafkaError | None, _: Message) -> None:
        if error is not None:
            self._failures.append(str(error))

    def send(self, topic: str, key: bytes | None, value: bytes | None, timestamp_ms: int | None = None,
             headers: tuple[tuple[str, bytes], ...] = (), on_delivery: DeliveryReport | None = None) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, timestamp=timestamp_ms or 0,
                                       headers=list(headers) or None, on_delivery=on_delivery or self._failed)
                return
            except BufferError:  # the local queue is full: serve delivery reports until there is room
                self._producer.poll(0.05)

    def poll(self, timeout_s: float = 0.0) -> None:
        """Serve the delivery reports that have arrived (flush serves them all)."""
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float = 60.0) -> None:
        left = self._producer.flush(timeout_s)
        failures, self._failures = self._failures, []
        if failures or left:
            raise Unavailable(f"kafka: {len(failures)} records not taken by the broker, {left} still queued "
                                  f"after {timeout_s}s (first failure: {failures[:1]})")

    def send_and_wait(self, records: Iterable[Outgoing], timeout_s: float = 60.0) -> list[Delivered]:
        """Send every record and wait until the broker has taken each; where each went, in the order given."""
        delivered: list[Delivered | None] = []

        def report(index: int) -> DeliveryReport:
            def on_delivery(error: KafkaError | None, message: Message) -> None:
                if error is not None:
                    self._failures.append(str(error))
                else:
                    delivered[index] = Delivered(message.topic() or "", message.partition() or 0,
                                                 message.offset() or 0)
            return on_delivery

        for index, r in enumerate(records):
            delivered.append(None)
            self.send(r.topic, r.key, r.value, r.timestamp_ms, r.headers, on_delivery=report(index))
        self.flush(timeout_s)
        return [d for d in delivered if d is not None]

    def close(self) -> None:
        self._producer.flush(10)


class PartitionConsumer:
    """An `assign()`ed consumer that never commits."""

    def __init__(self, consumer: Consumer, batch: int = BATCH) -> None:
        self._consumer = consumer
        self._batch = batch

    def assign(self, starts: Mapping[Partition, int]) -> None:
        self._consumer.assign([TopicPartition(tp.topic, tp.partition, offset) for tp, offset in starts.items()])

    def poll(self, timeout_s: float) -> dict[Partition, list[Record]]:
        """The records one fetch brought, by partition, in offset order."""
        polled: dict[Partition, list[Record]] = {}
        for message in self._consumer.consume(num_messages=self._batch, timeout=timeout_s):
            record = _record(message)
            if record is None:
                continue
            polled.setdefault(Partition(record.topic, record.partition), []).append(record)
        return polled

    def close(self) -> None:
        self._consumer.close()


class KafkaAdapter:
    """Topics, producers, consumers and offsets for one bootstrap address."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._probe: Consumer | None = None

    # --- topics -----------------------------------------------------------------------------
    def _admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.bootstrap, **CLIENT_DEFAULTS})

    def ensure_topics(self, topics: Iterable[TopicConfig], timeout_s: float = 30.0) -> list[str]:
        """Create the missing topics and wait until the broker's metadata shows them; returns the names created.
        Idempotent."""
        admin = self._admin()
        existing = set(_metadata(admin, None, timeout_s).topics)
        missing = [NewTopic(t.name, t.partitions, 1,
                            config={"cleanup.policy": "compact" if t.compacted else "delete", **t.config})
                   for t in topics if t.name not in existing]
        if not missing:
            return []
        created = []
        for name, future in admin.create_topics(missing, request_timeout=timeout_s).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise SmartShelfError(f"kafka: creating topic '{name}' failed: {exc.args[0]}") from exc
                continue
            created.append(name)
        self._wait_visible(admin, [t.topic for t in missing], timeout_s)
        return created

    @staticmethod
    def _wait_visible(admin: AdminClient, names: list[str], timeout_s: float) -> None:
        """The controller has created a topic before the broker serves its metadata: wait for the latter."""
        deadline = time.monotonic() + timeout_s
        while True:
            listed = _metadata(admin, None, timeout_s).topics
            hidden = [n for n in names if n not in listed or listed[n].error is not None or not listed[n].partitions]
            if not hidden:
                return
            if time.monotonic() > deadline:
                raise SmartShelfError(f"kafka: topics {hidden} created but not served after {timeout_s}s")
            time.sleep(0.05)

    def list_topics(self, timeout_s: float = 10.0) -> set[str]:
        return set(_metadata(self._admin(), None, timeout_s).topics)

    def partitions_for(self, topic: str, timeout_s: float = 10.0) -> list[Partition]:
        metadata = _metadata(self._probe_consumer(), topic, timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None and metadata.error.code() in _NO_SUCH_TOPIC:
            raise SmartShelfError(f"topic '{topic}' does not exist on {self.bootstrap}")
        if metadata.error is not None or not metadata.partitions:  # a broker just started: no leader yet
            raise Unavailable(f"kafka: topic '{topic}' is not served yet: {metadata.error}")
        return [Partition(topic, p) for p in sorted(metadata.partitions)]

    # --- clients ----------------------------------------------------------------------------
    def producer(self, **overrides: object) -> Publisher:
        """An idempotent producer with the adapter's settings; `overrides` use librdkafka's names."""
        return Publisher(Producer({"bootstrap.servers": self.bootstrap, **PRODUCER_DEFAULTS, **overrides}))

    def consumer(self, batch: int = BATCH) -> PartitionConsumer:
        """An unassigned consumer: `assign()` it start offsets yourself."""
        return PartitionConsumer(self.raw_consumer(), batch)

    def raw_consumer(self) -> Consumer:
        """librdkafka's consumer with the adapter's settings, for a caller that drives it itself (the live feed)."""
        return Consumer({"bootstrap.servers": self.bootstrap, **CONSUMER_DEFAULTS})

    def _probe_consumer(self) -> Consumer:
        """For metadata and offsets only."""
        if self._probe is None:
            self._probe = self.raw_consumer()
        return self._probe

    # --- offsets ----------------------------------------------------------------------------
    def end_offsets(self, partitions: list[Partition], timeout_s: float = 10.0) -> dict[Partition, int]:
        """The high watermark of each partition, asked of the broker in one ListOffsets round, not cached."""
        return self._list_offsets(partitions, LATEST, "end", timeout_s)

    def start_offsets(self, partitions: list[Partition], timeout_s: float = 10.0) -> dict[Partition, int]:
        """Each partition's first offset still held: above 0 once retention has deleted older records."""
        return self._list_offsets(partitions, EARLIEST, "start", timeout_s)

    def _list_offsets(self, partitions: list[Partition], which: int, what: str, timeout_s: float
                      ) -> dict[Partition, int]:
        if not partitions:
            return {}
        try:
            found = self._probe_consumer().offsets_for_times(
                [TopicPartition(tp.topic, tp.partition, which) for tp in partitions], timeout=timeout_s)
        except KafkaException as exc:
            raise Unavailable(f"kafka: {what} offsets of {sorted(partitions)} failed: {exc.args[0]}") from exc
        offsets = {}
        for tp in found:
            if tp.error is not None:
                raise Unavailable(f"kafka: {what} offset of {tp.topic}:{tp.partition} failed: {tp.error}")
            offsets[Partition(tp.topic, tp.partition)] = tp.offset
        return offsets

    def committed_offsets(self, group: str, partitions: list[Partition], timeout_s: float = 10.0
                          ) -> dict[Partition, int]:
        """The next offset a consumer group will read per partition (0 where it has committed none)."""
        if not partitions:
            return {}
        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group,
                             "enable.auto.commit": False})
        try:
            found = consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in partitions],
                                       timeout=timeout_s)
        except KafkaException as exc:
            raise Unavailable(f"kafka: offsets of group {group} failed: {exc.args[0]}") from exc
        finally:
            consumer.close()
        return {Partition(tp.topic, tp.partition): max(tp.offset, 0) for tp in found}

    def read(self, partitions: list[Partition], start: Mapping[Partition, int] | None = None,
             end: Mapping[Partition, int] | None = None, timeout_s: float = 30.0) -> Iterator[Record]:
        """Every record from `start` (default: beginning) up to `end` (default: the current end); Unavailable if
        no record comes for `timeout_s` (a long topic takes as long as it takes: a 21-day run's 1.7M windows
        took minutes)."""
        end = end if end is not None else self.end_offsets(partitions)
        start = start or {tp: 0 for tp in partitions}
        remaining = {tp: end[tp] for tp in partitions if start[tp] < end[tp]}
        if not remaining:
            return
        position = {tp: start[tp] for tp in remaining}
        consumer = self.raw_consumer()
        try:
            consumer.assign([TopicPartition(tp.topic, tp.partition, start[tp]) for tp in remaining])
            deadline = time.monotonic() + timeout_s
            while remaining:
                if time.monotonic() > deadline:
                    raise Unavailable(f"kafka: reading {sorted(remaining)}: no record in {timeout_s}s")
                # consume() returns early only once it has num_messages: ask for no more than are left (an upper
                # bound where a compacted log has gaps)
                left = sum(stop - position[tp] for tp, stop in remaining.items())
                for message in consumer.consume(num_messages=min(BATCH, left), timeout=0.5):
                    record = _record(message)
                    if record is None:
                        continue
                    tp = Partition(record.topic, record.partition)
                    stop = remaining.get(tp)
                    if stop is None:
                        continue  # this partition is done: a record produced after `end`
                    position[tp] = record.offset + 1
                    if record.offset < stop:
                        deadline = time.monotonic() + timeout_s
                        yield record
                    if record.offset + 1 >= stop:
                        del remaining[tp]
                        consumer.pause([TopicPartition(*tp)])
        finally:
            consumer.close()

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None
