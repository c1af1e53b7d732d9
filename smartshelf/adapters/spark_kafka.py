"""Kafka for Spark without the JVM connector: a PySpark 4 Python Data Source named `smartshelf_kafka`
(stream and batch reader, stream and batch writer).

No Maven here, so no spark-sql-kafka jar (docs/architecture.md). This source returns exactly Spark's Kafka
schema (key, value, topic, partition, offset, timestamp, timestampType) and takes Spark's option names
(`subscribe`, `kafka.bootstrap.servers`, `startingOffsets`, `endingOffsets`, `maxOffsetsPerTrigger`), so an
app reads `spark.readStream.format(settings.kafka_format)` and compose can switch to the JVM `kafka` format.
One option is ours: `readTasks`, how many Spark tasks read a micro-batch (see `read_tasks`).

Offsets are Spark's JSON form, {"topic": {"partition": offset}}, kept in the query's checkpoint; the true
end offsets come from smartshelf.adapters.kafka (Tansu's ListOffsets under-reports them).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
from kafka.consumer.fetcher import ConsumerRecord
from pyspark.sql import Row
from pyspark.sql.datasource import (DataSource, DataSourceReader, DataSourceStreamReader, DataSourceStreamWriter,
                                    DataSourceWriter, InputPartition, WriterCommitMessage)
from pyspark.sql.streaming.datasource import ReadAllAvailable, ReadLimit, ReadMaxRows
from pyspark.sql.types import (BinaryType, IntegerType, LongType, StringType, StructField, StructType,
                               TimestampType)

FORMAT = "smartshelf_kafka"
READ_TIMEOUT_S = 60.0
# ours, not Spark's: at most this many tasks read a micro-batch; without it, a task per Kafka partition as in Spark
READ_TASKS_OPTION = "readTasks"

KAFKA_SCHEMA = StructType([
    StructField("key", BinaryType()), StructField("value", BinaryType()), StructField("topic", StringType()),
    StructField("partition", IntegerType()), StructField("offset", LongType()),
    StructField("timestamp", TimestampType()), StructField("timestampType", IntegerType()),
])

ARROW_SCHEMA = pa.schema([
    ("key", pa.binary()), ("value", pa.binary()), ("topic", pa.string()), ("partition", pa.int32()),
    ("offset", pa.int64()), ("timestamp", pa.timestamp("us", tz="UTC")), ("timestampType", pa.int32()),
])

Offsets = dict[str, dict[str, int]]  # topic -> partition (as text, JSON keys) -> offset


@dataclass(frozen=True, order=True)
class PartitionRange:
    """The records [start, end) of one Kafka partition."""

    topic: str
    partition: int
    start: int
    end: int

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class ReadTask(InputPartition):
    """The ranges one Spark task reads with one consumer."""

    bootstrap: str
    ranges: tuple[PartitionRange, ...]


def _options(options: dict[str, str]) -> tuple[str, list[str], dict[str, str]]:
    """(bootstrap servers, topics, all options with lower-cased keys, as Spark passes them)."""
    lowered = {k.lower(): v for k, v in options.items()}
    bootstrap = lowered.get("kafka.bootstrap.servers")
    topics = [t.strip() for t in lowered.get("subscribe", "").split(",") if t.strip()]
    if not bootstrap or not topics:
        raise ValueError(f"{FORMAT}: options 'kafka.bootstrap.servers' and 'subscribe' are required")
    return bootstrap, topics, lowered


def _read_tasks(lowered: dict[str, str]) -> int | None:
    given = lowered.get(READ_TASKS_OPTION.lower())
    if given is None:
        return None
    if not given.isdigit() or int(given) < 1:
        raise ValueError(f"{FORMAT}: option '{READ_TASKS_OPTION}' must be a positive whole number, got {given!r}")
    return int(given)


def _end_offsets(bootstrap: str, topics: list[str]) -> Offsets:
    from smartshelf.adapters.kafka import KafkaAdapter

    adapter = KafkaAdapter(bootstrap)
    try:
        partitions = [tp for topic in topics for tp in adapter.partitions_for(topic)]
        ends = adapter.end_offsets(partitions)
    finally:
        adapter.close()
    result: Offsets = {topic: {} for topic in topics}
    for tp, end in ends.items():
        result[tp.topic][str(tp.partition)] = end
    return result


def _resolve(spec: str, bootstrap: str, topics: list[str], which: str) -> Offsets:
    """Spark's startingOffsets/endingOffsets: 'earliest', 'latest' or JSON {"topic": {"0": 23}} (-2/-1 too)."""
    ends = _end_offsets(bootstrap, topics)
    if spec == "earliest":
        return {t: {p: 0 for p in parts} for t, parts in ends.items()}
    if spec == "latest":
        return ends
    try:
        given = json.loads(spec)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{FORMAT}: {which} must be earliest, latest or JSON, got {spec!r}") from exc
    resolved: Offsets = {}
    for topic, parts in ends.items():
        resolved[topic] = {}
        for partition, end in parts.items():
            wanted = int(given.get(topic, {}).get(partition, -2 if which == "startingOffsets" else -1))
            resolved[topic][partition] = 0 if wanted == -2 else end if wanted == -1 else min(wanted, end)
    return resolved


def limit_offsets(start: Offsets, latest: Offsets, max_rows: int) -> Offsets:
    """At most `max_rows` records past `start`, shared across partitions in proportion to their backlog."""
    backlog = {(t, p): latest[t][p] - start.get(t, {}).get(p, 0) for t in latest for p in latest[t]}
    total = sum(backlog.values())
    if total <= max_rows:
        return latest
    end: Offsets = {t: dict(start.get(t, {})) for t in latest}
    granted = 0
    for (t, p), waiting in sorted(backlog.items()):
        share = waiting * max_rows // total
        end[t][p] = start.get(t, {}).get(p, 0) + share
        granted += share
    for (t, p), waiting in sorted(backlog.items()):  # hand out what rounding left, in a fixed order
        if granted >= max_rows:
            break
        if end[t][p] < latest[t][p]:
            end[t][p] += 1
            granted += 1
    return end


def read_tasks(bootstrap: str, start: Offsets, end: Offsets, tasks: int | None = None) -> list[ReadTask]:
    """The partitions' ranges between the offsets, shared among at most `tasks` Spark tasks (None: one per
    range, as Spark's Kafka source) with about the same number of records each (largest range first to the
    task with the fewest). A task of a Python source costs ~0.1 s of its own in Spark (measured,
    docs/architecture.md), so the embedded session asks for one per core."""
    ranges = [PartitionRange(t, int(p), start.get(t, {}).get(p, 0), e)
              for t in sorted(end) for p, e in sorted(end[t].items(), key=lambda kv: int(kv[0]))
              if start.get(t, {}).get(p, 0) < e]
    shares: list[list[PartitionRange]] = [[] for _ in range(min(tasks or len(ranges), len(ranges)))]
    for part in sorted(ranges, key=lambda r: (-r.size, r)):
        min(shares, key=lambda share: sum(r.size for r in share)).append(part)
    return [ReadTask(bootstrap, tuple(sorted(share))) for share in shares]


def read_task(task: ReadTask) -> Iterator[pa.RecordBatch]:
    """Every record of the task's ranges, as Arrow batches of KAFKA_SCHEMA (one per poll): Spark takes Arrow
    from a Python source without converting row by row."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=task.bootstrap, enable_auto_commit=False, group_id=None,
                             max_poll_records=5000)
    try:
        ends = {TopicPartition(r.topic, r.partition): r.end for r in task.ranges}
        consumer.assign(list(ends))
        for part in task.ranges:
            consumer.seek(TopicPartition(part.topic, part.partition), part.start)
        waiting = {tp for tp, end in ends.items() if consumer.position(tp) < end}
        deadline = time.monotonic() + READ_TIMEOUT_S
        while waiting:
            if time.monotonic() > deadline:
                behind = ", ".join(f"{tp.topic}[{tp.partition}] at {consumer.position(tp)} of {ends[tp]}"
                                   for tp in sorted(waiting))
                raise TimeoutError(f"{FORMAT}: not read in {READ_TIMEOUT_S:.0f}s: {behind}")
            records = [r for tp, polled in consumer.poll(timeout_ms=500).items() for r in polled if r.offset < ends[tp]]
            done = {tp for tp in waiting if consumer.position(tp) >= ends[tp]}
            consumer.pause(*done)  # fetch no further than the range's end
            waiting -= done
            if records:
                yield _arrow_batch(records)
    finally:
        consumer.close()


def _arrow_batch(records: list[ConsumerRecord]) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([
        pa.array([r.key for r in records], pa.binary()),
        pa.array([r.value for r in records], pa.binary()),
        pa.array([r.topic for r in records], pa.string()),
        pa.array([r.partition for r in records], pa.int32()),
        pa.array([r.offset for r in records], pa.int64()),
        pa.array([r.timestamp * 1000 for r in records], pa.timestamp("us", tz="UTC")),
        pa.array([r.timestamp_type for r in records], pa.int32()),
    ], schema=ARROW_SCHEMA)


class KafkaStreamReader(DataSourceStreamReader):
    def __init__(self, options: dict[str, str]) -> None:
        self.bootstrap, self.topics, lowered = _options(options)
        self.starting = lowered.get("startingoffsets", "latest")  # Spark's default for streams
        self.tasks = _read_tasks(lowered)
        max_offsets = lowered.get("maxoffsetspertrigger")
        self.max_offsets = int(max_offsets) if max_offsets else None

    def initialOffset(self) -> dict:
        return _resolve(self.starting, self.bootstrap, self.topics, "startingOffsets")

    def getDefaultReadLimit(self) -> ReadLimit:
        return ReadMaxRows(self.max_offsets) if self.max_offsets else ReadAllAvailable()

    def latestOffset(self, start: dict, limit: ReadLimit) -> dict:
        latest = _end_offsets(self.bootstrap, self.topics)
        if isinstance(limit, ReadMaxRows):
            return limit_offsets(start, latest, limit.max_rows)
        return latest

    def partitions(self, start: dict, end: dict) -> Sequence[InputPartition]:
        return read_tasks(self.bootstrap, start, end, self.tasks)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, ReadTask)
        return read_task(partition)


class KafkaBatchReader(DataSourceReader):
    def __init__(self, options: dict[str, str]) -> None:
        self.bootstrap, self.topics, lowered = _options(options)
        self.start = _resolve(lowered.get("startingoffsets", "earliest"), self.bootstrap, self.topics,
                              "startingOffsets")
        self.end = _resolve(lowered.get("endingoffsets", "latest"), self.bootstrap, self.topics, "endingOffsets")
        self.tasks = _read_tasks(lowered)

    def partitions(self) -> Sequence[InputPartition]:
        return read_tasks(self.bootstrap, self.start, self.end, self.tasks)

    def read(self, partition: InputPartition) -> Iterator[pa.RecordBatch]:
        assert isinstance(partition, ReadTask)
        return read_task(partition)


@dataclass(frozen=True)
class SentCount(WriterCommitMessage):
    records: int


class KafkaWriter(DataSourceWriter):
    """Spark's Kafka sink: rows with `value` (string or binary) and optional `key`, to the `topic` option or
    each row's `topic` column. At least once, as Spark's own Kafka sink: a task retried sends again."""

    def __init__(self, options: dict[str, str], schema: StructType) -> None:
        lowered = {k.lower(): v for k, v in options.items()}
        self.bootstrap = lowered.get("kafka.bootstrap.servers", "")
        self.topic = lowered.get("topic")
        columns = set(schema.fieldNames())
        if not self.bootstrap:
            raise ValueError(f"{FORMAT}: option 'kafka.bootstrap.servers' is required")
        if "value" not in columns:
            raise ValueError(f"{FORMAT}: the data to write needs a 'value' column (has {sorted(columns)})")
        if self.topic is None and "topic" not in columns:
            raise ValueError(f"{FORMAT}: set option 'topic' or give the data a 'topic' column")
        self.has_key = "key" in columns

    def write(self, iterator: Iterator[Row]) -> WriterCommitMessage:
        from smartshelf.adapters.kafka import KafkaAdapter, Outgoing, send_and_wait

        adapter = KafkaAdapter(self.bootstrap)
        producer = adapter.producer()
        try:
            sent = send_and_wait(producer, (
                Outgoing(self.topic or row["topic"], _bytes(row["key"]) if self.has_key else None, _bytes(row["value"]))
                for row in iterator))
        finally:
            producer.close()
            adapter.close()
        return SentCount(len(sent))


class KafkaStreamWriter(KafkaWriter, DataSourceStreamWriter):
    def commit(self, messages: list[WriterCommitMessage | None], batchId: int) -> None:
        """Nothing to do: every task's records are acknowledged by the broker before it reports."""

    def abort(self, messages: list[WriterCommitMessage | None], batchId: int) -> None:
        """Nothing to undo: Kafka has no transactions here (Tansu), so sent records stay (at least once)."""


def _bytes(value: object) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray):
        return bytes(value)
    return str(value).encode()


class KafkaDataSource(DataSource):
    @classmethod
    def name(cls) -> str:
        return FORMAT

    def schema(self) -> StructType:
        return KAFKA_SCHEMA

    def reader(self, schema: StructType) -> DataSourceReader:
        return KafkaBatchReader(dict(self.options))

    def streamReader(self, schema: StructType) -> DataSourceStreamReader:
        return KafkaStreamReader(dict(self.options))

    def writer(self, schema: StructType, overwrite: bool) -> DataSourceWriter:
        return KafkaWriter(dict(self.options), schema)

    def streamWriter(self, schema: StructType, overwrite: bool) -> DataSourceStreamWriter:
        return KafkaStreamWriter(dict(self.options), schema)
