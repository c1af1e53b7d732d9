"""What every app's foreachBatch shares: decoding and validating the batch, dead letters, the lake's delta-spark
writes, publishing to topics, and reporting progress to the lockstep clock.

The lake sink and the pulse's alerting process on the driver, in Python, over the collected batch (the twin's apps
run in the executors, smartshelf.streaming.keyed_query, and only their outputs reach the driver). Spark provides the streaming engine: offsets per partition in the
checkpoint, triggers, restart from the last committed batch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import NamedTuple, Protocol, TypeVar

import pyarrow as pa
from pydantic import BaseModel
from pyspark.sql import SparkSession

from smartshelf.adapters import delta
from smartshelf.adapters.kafka import KafkaAdapter, Outgoing
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.adapters.spark import checkpoint_dir
from smartshelf.adapters.spark_delta import SparkDelta
from smartshelf.ingress import Rejection, dead_letter, letter_id, parse_record
from smartshelf.registry import DEAD_LETTERS, topic
from smartshelf.schemas import ClockTick, DeadLetter
from smartshelf.settings import Settings

ModelT = TypeVar("ModelT", bound=BaseModel)
ResultT = TypeVar("ResultT")


class SourceRecord(NamedTuple):
    """What an app needs of a Kafka record: where it comes from, and its bytes."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


def source_records(batch: pa.Table) -> list[SourceRecord]:
    """The rows of a micro-batch collected as Arrow (far cheaper than Row objects)."""
    columns = [batch.column(name).to_pylist() for name in SourceRecord._fields]
    return [SourceRecord(*row) for row in zip(*columns, strict=True)]


@dataclass(frozen=True)
class Received:
    topic: str
    partition: int
    offset: int
    record: BaseModel
    # a broadcast record's copy in a bucket other than its shelf's (smartshelf.streaming.keyed_loop): it tells the
    # bucket's app what the store has seen; the app acts on it in the shelf's bucket only
    copy: bool = False


def time_order(item: Received) -> tuple[datetime, int, str, int, int]:
    """Events by simulated time; at the same time a clock tick last (it says everything up to then is in)."""
    record = item.record
    ts = getattr(record, "ts", None) or getattr(record, "updated_ts", None) or getattr(record, "last_event_ts", None) \
        or getattr(record, "window_end", None) or getattr(record, "last_update_ts")
    return ts, isinstance(record, ClockTick), item.topic, item.partition, item.offset


@dataclass
class BatchOutput:
    """Records to publish once the batch's Delta commits are done: topic -> values."""

    records: dict[str, list[BaseModel]] = field(default_factory=dict)

    def add(self, topic_name: str, values: Iterable[BaseModel]) -> None:
        self.records.setdefault(topic_name, []).extend(values)


def apply_isolating(received: list[Received], attempt: Callable[[list[Received]], ResultT],
                    first_failing: Callable[[list[Received]], tuple[Received, Exception] | None], app_name: str
                    ) -> tuple[ResultT, list[tuple[Received, str]]]:
    """`attempt` over the records; if it raises, the record `first_failing` names is left out with the reason, and so
    on until the rest applies: no single record stops an app (it raises only when no record alone fails). Each
    callable starts from the state as it was before the batch."""
    poisoned: list[tuple[Received, str]] = []
    while True:
        rest = [item for item in received if not any(item is bad for bad, _ in poisoned)]
        try:
            return attempt(rest), poisoned
        except Exception:  # noqa: BLE001 - any failure of a rule on a record
            culprit = first_failing(rest)
            if culprit is None:
                raise
            item, error = culprit
            poisoned.append((item, f"{app_name} could not apply it: {type(error).__name__}: {error}"))


def first_raising(items: Iterable[Received], apply_one: Callable[[Received], object]
                  ) -> tuple[Received, Exception] | None:
    """The first record whose application (after those before it) raises, with what it raised."""
    for item in items:
        try:
            apply_one(item)
        except Exception as error:  # noqa: BLE001 - the culprit, whatever it raised
            return item, error
    return None


def outgoing_record(topic_name: str, value: BaseModel) -> Outgoing:
    """A record to send to a topic, keyed as the registry says."""
    return Outgoing(topic_name, topic(topic_name).key_of(value).encode(), value.model_dump_json().encode())


def record_id(topic_name: str, value: BaseModel) -> str:
    """What names a record of an append-only topic: its id field, or for a dead letter `letter_id`."""
    if isinstance(value, DeadLetter):
        return letter_id(value)
    return topic(topic_name).id_of(value)


class PublishedTopics(Protocol):
    def end_offsets(self, topic_names: Collection[str]) -> dict[str, int]: ...

    def published_ids(self, since: dict[str, int]) -> dict[str, set[str]]: ...


class OutputNotes:
    """A query's records of the `watched` topics published once per batch, though Spark runs a batch again when its
    earlier attempt died after publishing and before Spark's commit: dead letters (they carry no id, so the topic
    cannot tell) and the append-only outputs of the apps whose state Spark commits (smartshelf.streaming.keyed_loop).
    Before a batch's first watched record goes out, where each watched topic ends is noted in `folder` (a file named
    by the batch id); an attempt that finds its batch's note reads back what was published since and sends only the
    records not among them (`record_id`). Spark starts a batch after committing the one before, so older notes go."""

    def __init__(self, folder: Path, topics: PublishedTopics, watched: Collection[str] = (DEAD_LETTERS,)) -> None:
        self.folder, self.topics, self.watched = folder, topics, sorted(watched)
        self.batch_id: int | None = None
        self.noted = False  # this attempt has found or written its batch's note
        self.sent_before: dict[str, set[str]] = {}  # per topic, the records an earlier attempt at this batch published

    def begin(self, batch_id: int) -> None:
        """An attempt at batch `batch_id` starts (each foreachBatch call is one)."""
        self.batch_id, self.noted, self.sent_before = batch_id, False, {}
        if self.folder.is_dir():
            for note in self.folder.iterdir():
                if not note.name.isdigit() or int(note.name) < batch_id:
                    note.unlink()

    def unsent(self, topic_name: str, values: Sequence[BaseModel]) -> list[BaseModel]:
        """The records of a topic to send now: all of them, but the watched ones an earlier attempt at this batch
        sent."""
        if not values or self.batch_id is None or topic_name not in self.watched:
            return list(values)
        if not self.noted:
            note = self.folder / str(self.batch_id)
            if note.exists():
                self.sent_before = self.topics.published_ids(json.loads(note.read_text()))
            else:
                self.folder.mkdir(parents=True, exist_ok=True)
                written = note.with_name(f"{note.name}.new")
                written.write_text(json.dumps(self.topics.end_offsets(self.watched)))
                os.replace(written, note)  # a note is whole or absent
            self.noted = True
        sent = self.sent_before.get(topic_name, set())
        return [value for value in values if record_id(topic_name, value) not in sent]


def output_notes_dir(settings: Settings, query_name: str) -> Path:
    checkpoint = checkpoint_dir(settings, query_name)
    return checkpoint.with_name(f"{checkpoint.name}.sent")


class BatchIO:
    """The connections an app keeps across batches (driver side)."""

    def __init__(self, settings: Settings, app_name: str, spark: SparkSession) -> None:
        self.settings = settings
        self.app_name = app_name
        self.lake = SparkDelta(spark)  # the lake sink's delta-spark writes, committed at the end of a batch
        self.kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
        self.producer = self.kafka.producer()
        self.clock = SimClock(redis_client(settings))
        self.maintenance = delta.Maintenance(settings.delta_maintain_every)
        self.notes = OutputNotes(output_notes_dir(settings, app_name), self)

    def begin(self, batch_id: int) -> None:
        """A foreachBatch call of the query starts: an attempt at batch `batch_id`."""
        self.notes.begin(batch_id)

    def decode(self, rows: list[SourceRecord], batch_time: datetime, validates: Collection[str]
               ) -> tuple[list[Received], BatchOutput]:
        """Valid records in (topic, partition, offset) order; invalid ones of the `validates` topics as dead
        letters to publish (another app reports those of the other topics)."""
        received, output = [], BatchOutput()
        for row in sorted(rows):
            raw = row.value
            parsed = parse_record(topic(row.topic), raw)
            if isinstance(parsed, Rejection):
                if row.topic in validates:
                        output.add(DEAD_LETTERS, [dead_letter(row.topic, raw, parsed.reason, batch_time, row.partition,
                                                          row.offset)])
            else:
                received.append(Received(row.topic, row.partition, row.offset, parsed))
        return received, output

    def read_rows(self, path: Path, model: type[ModelT]) -> list[ModelT]:
        return delta.read_rows(path, model)

    def applied_batch(self, path: Path, app: str) -> int | None:
        return delta.applied_batch(path, app)

    def commit(self, path: Path, data: pa.Table, app: str, batch_id: int) -> None:
        """The app's state as batch `batch_id`, in one Delta transaction; the table maintained now and then."""
        delta.write_batch(path, data, app, batch_id, mode="overwrite")
        self.maintenance.committed(path)

    def overwrite(self, path: Path, data: pa.Table) -> None:
        delta.overwrite(path, data)

    def publish(self, output: BatchOutput) -> None:
        """Send and wait for the broker: state topics are compacted (a replayed batch republishes the same
        values), append-only outputs carry deterministic ids (a replay's duplicates are recognisable), dead
        letters go once per batch (`OutputNotes`)."""
        records = {name: self.notes.unsent(name, values) for name, values in output.records.items()}
        self.producer.send_and_wait(outgoing_record(topic_name, value)
                                    for topic_name, values in records.items() for value in values)

    def end_offsets(self, topic_names: Collection[str]) -> dict[str, int]:
        """"topic:partition" -> end offset, for the given topics."""
        partitions = [tp for name in sorted(topic_names) for tp in self.kafka.partitions_for(name)]
        return {f"{tp.topic}:{tp.partition}": end for tp, end in self.kafka.end_offsets(partitions).items()}

    def published_ids(self, since: dict[str, int]) -> dict[str, set[str]]:
        """The ids of the records on each topic's partitions from the given offsets to their end: what an earlier
        attempt at a batch may already have published (topic -> ids)."""
        found: dict[str, set[str]] = {}
        for name in sorted({field.rsplit(":", 1)[0] for field in since}):
            described = topic(name)
            partitions = self.kafka.partitions_for(name)
            start = {tp: since.get(f"{name}:{tp.partition}", 0) for tp in partitions}
            ids = found.setdefault(name, set())
            for record in self.kafka.read(partitions, start):
                parsed = parse_record(described, record.value)
                if not isinstance(parsed, Rejection):  # e.g. Kafka Connect's letters: another schema
                    ids.add(record_id(name, parsed))
        return found

    def report_progress(self, rows: list[SourceRecord], app_name: str | None = None) -> None:
        """Tell the lockstep clock how far this app (or the named one of a shared query) has read."""
        positions: dict[tuple[str, int], int] = {}
        for row in rows:
            key = (row.topic, row.partition)
            positions[key] = max(positions.get(key, 0), row.offset + 1)
        self.clock.offsets_done(app_name or self.app_name, positions)

    def drill_once(self, name: str) -> bool:
        """True the first time a failure drill named `name` reaches its point in this run dir (a marker file),
        False after: a drill fails once, then lets the run go on."""
        marker = self.settings.run_dir / f"drill-{name}"
        if marker.exists():
            return False
        marker.touch()
        return True

    def now(self) -> datetime:
        return self.clock.now_or_none() or self.settings.sim_start

    def close(self) -> None:
        self.producer.close()
        self.kafka.close()
