"""confluent-kafka (librdkafka) clients configured like `smartshelf.adapters.kafka.KafkaAdapter`'s kafka-python ones.

Used by `smartshelf bench broker` to measure the two client libraries side by side; no component uses it (yet).
The settings give the same guarantees as the kafka-python adapter:

- producers are idempotent (`enable.idempotence`: acks=all, at most 5 requests in flight, retries until
  `delivery.timeout.ms`; the broker drops a retried batch it already has), with the adapter's linger and batch
  size, and every record's delivery report is checked (the counterpart of kafka-python's futures);
- the partitioner is `murmur2_random`, the Java client's (and kafka-python's, and Spark's) hash, so a key lands in
  the same partition whichever client sent it (librdkafka's default, `consistent_random`, hashes with CRC32);
- consumers are `assign()`ed and never commit (librdkafka insists on a `group.id`, which is never joined by
  `assign()`); record CRCs are checked, as kafka-python does by default (librdkafka does not by default); the
  isolation level is kafka-python's `read_uncommitted` (librdkafka defaults to `read_committed`).

Partitions are `(topic, partition)` tuples, so kafka-python's `TopicPartition` (a named tuple) can be passed in.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from smartshelf.errors import SmartShelfError

Partition = tuple[str, int]  # (topic, partition)
Record = tuple[str, bytes | None, bytes]  # (topic, key, value)

PRODUCER_DEFAULTS: dict[str, object] = {
    "acks": "all",
    "enable.idempotence": True,
    "linger.ms": 20,  # as KafkaAdapter.producer
    "batch.size": 262_144,  # as KafkaAdapter.producer (bytes per partition batch)
    "partitioner": "murmur2_random",  # the Java client's partitioner: same key, same partition
}

CONSUMER_DEFAULTS: dict[str, object] = {
    "group.id": "smartshelf-assign-only",  # required by librdkafka; assign() never joins it
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "check.crcs": True,  # kafka-python's check_crcs=True
    # kafka-python's isolation level: read() waits for the high watermark, which an open transaction would keep
    # a read_committed consumer (librdkafka's default) from reaching
    "isolation.level": "read_uncommitted",
}

BATCH = 5000  # records per consume() call, as KafkaAdapter's max_poll_records


class ConfluentAdapter:
    """Producers, consumers and end offsets over confluent-kafka, for one bootstrap address."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._probe: Consumer | None = None

    def producer(self, **overrides: object) -> Producer:
        """An idempotent producer with the adapter's settings; `overrides` use librdkafka's names."""
        return Producer({"bootstrap.servers": self.bootstrap, **PRODUCER_DEFAULTS, **overrides})

    def consumer(self, **overrides: object) -> Consumer:
        """An unassigned consumer that never commits: call `assign()` with start offsets yourself."""
        return Consumer({"bootstrap.servers": self.bootstrap, **CONSUMER_DEFAULTS, **overrides})

    def end_offsets(self, partitions: Iterable[Partition], timeout_s: float = 10.0) -> dict[Partition, int]:
        """The high watermark of each partition, asked of the broker (ListOffsets), not cached."""
        if self._probe is None:
            self._probe = self.consumer()
        ends: dict[Partition, int] = {}
        for topic, partition in partitions:
            _, high = self._probe.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s,
                                                        cached=False)
            ends[(topic, partition)] = high
        return ends

    def read(self, partitions: list[Partition], start: dict[Partition, int] | None = None,
             end: dict[Partition, int] | None = None, timeout_s: float = 30.0) -> Iterator[Message]:
        """Every record from `start` (default: beginning) up to `end` (default: the current end)."""
        end = end if end is not None else self.end_offsets(partitions)
        start = start or {tp: 0 for tp in partitions}
        remaining = {tp: end[tp] for tp in partitions if start[tp] < end[tp]}
        if not remaining:
            return
        position = {tp: start[tp] for tp in remaining}
        consumer = self.consumer()
        try:
            consumer.assign([TopicPartition(topic, partition, start[(topic, partition)])
                             for topic, partition in remaining])
            deadline = time.monotonic() + timeout_s
            while remaining:
                if time.monotonic() > deadline:
                    raise SmartShelfError(f"kafka: reading {sorted(remaining)} did not finish in {timeout_s}s")
                # consume() returns early only once it has num_messages: ask for no more than are left (an upper
                # bound where a compacted log has gaps)
                left = sum(stop - position[tp] for tp, stop in remaining.items())
                for message in consumer.consume(num_messages=min(BATCH, left), timeout=0.5):
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            continue
                        raise SmartShelfError(f"kafka: reading failed: {error}")
                    tp = (message.topic() or "", message.partition() or 0)
                    offset = message.offset() or 0
                    stop = remaining.get(tp)
                    if stop is None:
                        continue  # this partition is done: a record produced after `end`
                    position[tp] = offset + 1
                    if offset < stop:
                        yield message
                    if offset + 1 >= stop:
                        del remaining[tp]
                        consumer.pause([TopicPartition(*tp)])
        finally:
            consumer.close()

    def close(self) -> None:
        if self._probe is not None:
            self._probe.close()
            self._probe = None


def produce_all(producer: Producer, records: Iterable[Record], timeout_s: float = 60.0) -> int:
    """Produce every record and wait until the broker has acknowledged each; raises if one was not.
    Returns the number acknowledged."""
    acknowledged = 0
    failures: list[str] = []

    def report(error: KafkaError | None, message: Message) -> None:
        nonlocal acknowledged
        if error is None:
            acknowledged += 1
        else:
            failures.append(str(error))

    sent = 0
    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key, on_delivery=report)
                break
            except BufferError:  # the local queue is full: serve delivery reports until there is room
                producer.poll(0.05)
        sent += 1
    left = producer.flush(timeout_s)
    if failures or left or acknowledged != sent:
        raise SmartShelfError(f"kafka: {acknowledged} of {sent} records acknowledged "
                              f"({left} still queued; first failure: {failures[:1]})")
    return acknowledged
