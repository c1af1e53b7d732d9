"""The keyed query: the state apps of smartshelf.streaming.keyed in one streaming query whose state lives in
Spark's state store (RocksDB), grouped by shelf (the Kafka key, or each shelf a till's transaction sells from)
hashed into KEYED_BUCKETS buckets, so the work and the state spread over the executors of a cluster like any
keyed aggregation.

    Kafka ─► one row per shelf of a record ─► groupBy(bucket of the shelf)
          ─► transformWithState (KeyedStateProcessor: keyed.apply_bucket, each shelf's records applied to that
             shelf's state; the store's opening state is the initial state of each bucket)
          ─► foreachBatch on the driver: the changed keys to their compacted topics, the letters to dead_letters,
             how far each app has read to the lockstep clock

Only what a sink must see reaches the driver: the changed keys and the letters of a batch, not its records nor the
state. Exactly once: the state and the offsets are committed together by Spark's checkpoint; a batch that fails
before its commit is run again from the state before it and gives the same values, which the compacted topics take
again (the letters its earlier attempt published are not sent again: batch.LetterNotes). The first batch (batch 0,
also when run again) publishes every key's opening state before its changes, so every shelf, lot and warehouse item
is in its topic, and so in PostgreSQL and the lake, from the first minute. The Delta tables of these states
(`cleansed/*`) are the lake sink's merges of their topics: written in proportion to what changed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle, StreamingQuery

from smartshelf.adapters.kafka import Outgoing
from smartshelf.adapters.spark import checkpoint_dir, kafka_options
from smartshelf.errors import SmartShelfError
from smartshelf.ingress import dead_letter
from smartshelf.registry import DEAD_LETTERS
from smartshelf.schemas import ShelfState
from smartshelf.settings import Settings
from smartshelf.store import StoreData, clock_start
from smartshelf.streaming.apps import RiskScoring, ShelfAggregator
from smartshelf.streaming.batch import BatchIO, outgoing_record
from smartshelf.streaming.commit import FAIL_AFTER_PUBLISH
from smartshelf.streaming.keyed import STATE, GroupTexts, KeyedApp, KeyedRecord, apply_bucket, bucket_of

# the processor's rows: keyed.OutputRow
OUTPUT_SCHEMA = ("app string, kind string, topic string, `partition` int, `offset` long, key string, value binary, "
                 "reason string")
OUTPUT_COLUMNS = [field.strip().split(" ")[0].strip("`") for field in OUTPUT_SCHEMA.split(",")]
STATE_SCHEMA = "value string"
SPREAD_SCHEMA = "items array<struct<shelf_id: string>>"  # what names a spread record's shelves (keyed.shelves_named)
INITIAL_SCHEMA = "bucket long, value string"
# failure drill (SMARTSHELF_CRASH_POINT): the driver dies once per run after publishing a batch's outputs, before
# Spark commits the batch (FAIL_AFTER_PUBLISH of smartshelf.streaming.commit applies here too)
EXIT_AFTER_PUBLISH_KEYED = "spark.keyed_exit_after_publish"


class KeyedStateProcessor(StatefulProcessor):
    """One bucket of shelves' state in every keyed app, as one value of the state store: {shelf: {app: {state key:
    value JSON}}}, read once and written once per batch that changes it (each state store access is a round trip
    between the Python worker and the JVM: per bucket, not per shelf)."""

    def __init__(self, apps: list[KeyedApp]) -> None:
        self.apps = apps

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.state = handle.getValueState("groups", STATE_SCHEMA)

    def handleInputRows(self, key: Any, rows: Iterator[Row], timerValues: Any) -> Iterator[Row]:
        stored = self.state.get()
        groups = json.loads(stored[0]) if stored else {}
        changed, out = apply_bucket(self.apps, groups, ((r.group_key, KeyedRecord(r.topic, r.partition, r.offset,
                                                                                  r.value, r.reports)) for r in rows))
        if changed:
            self.state.update((json.dumps(groups, sort_keys=True),))
        yield from (Row(**dict(zip(OUTPUT_COLUMNS, row, strict=True))) for row in out)

    def handleInitialState(self, key: Any, initialState: Row, timerValues: Any) -> None:
        self.state.update((initialState.value,))

    def close(self) -> None:
        pass


def opening_rows(apps: list[KeyedApp], store: StoreData, start: datetime) -> list[tuple[str, str, str, str]]:
    """(app, group, state key, value JSON) of every key as the store opened."""
    return [(app.name, app.group_of(value), app.key_of(value), value.model_dump_json())
            for app in apps for value in app.initial(store, start)]


def initial_buckets(opening: list[tuple[str, str, str, str]], buckets: int) -> list[tuple[int, str]]:
    """The opening state as the processor keeps it: (bucket, {group: {app: {state key: value JSON}}} as JSON)."""
    stored: dict[int, dict[str, GroupTexts]] = {}
    for app_name, group, state_key, value in opening:
        stored.setdefault(bucket_of(group, buckets), {}).setdefault(group, {}).setdefault(app_name, {})[
            state_key] = value
    return [(bucket, json.dumps(groups, sort_keys=True)) for bucket, groups in sorted(stored.items())]


def batch_ends(checkpoint: Path, batch_id: int) -> dict[tuple[str, int], int]:
    """Where batch `batch_id` ends in each (topic, partition): Spark writes a batch's offsets to its checkpoint's
    offset log before running it (line 1 the version, line 2 the batch's metadata, then one line per source)."""
    lines = (checkpoint / "offsets" / str(batch_id)).read_text().splitlines()
    return {(name, int(partition)): int(offset) for line in lines[2:] if line.strip()
            for name, partitions in json.loads(line).items() for partition, offset in partitions.items()}


def keep_buckets(checkpoint: Path, buckets: int) -> None:
    """Record the bucket count of a new checkpoint beside it; refuse another count for an existing one (its state
    is stored by bucket: other buckets would find other shelves' state)."""
    marker = checkpoint.with_name(f"{checkpoint.name}.buckets")
    if marker.exists():
        kept = int(marker.read_text())
        if kept != buckets:
            raise SmartShelfError(f"KEYED_BUCKETS={buckets}, but the checkpoint {checkpoint} keeps its state in "
                                  f"{kept} buckets: set KEYED_BUCKETS={kept}, or start a new run dir")
    elif (checkpoint / "commits").is_dir() and any((checkpoint / "commits").iterdir()):
        raise SmartShelfError(f"the checkpoint {checkpoint} was made before its state was bucketed: start a new run "
                              f"dir (`smartshelf down` and remove {checkpoint.parents[1]})")
    else:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{buckets}\n")


def start_keyed(spark: SparkSession, settings: Settings, name: str, apps: list[KeyedApp], io: BatchIO,
                store: StoreData) -> StreamingQuery:
    """The keyed apps `apps` as one query named `name`."""
    start = clock_start(store, settings.sim_start)
    for app in apps:
        app.sim_start = settings.sim_start
        io.clock.register_offset_participant(app.name, app.topics)
    opening = opening_rows(apps, store, start)
    checkpoint = checkpoint_dir(settings, name)
    keep_buckets(checkpoint, settings.keyed_buckets)
    by_name = {app.name: app for app in apps}

    risk = RiskScoring(settings) if ShelfAggregator.name in by_name else None

    def each_batch(frame: DataFrame, batch_id: int) -> None:
        io.begin(batch_id)
        rows = sorted(frame.toArrow().to_pylist(), key=_publish_order)
        outgoing = [Outgoing(by_name[a].state_topic().name, key.encode(), value.encode())
                    for a, _, key, value in opening] if batch_id == 0 else []
        outgoing += [Outgoing(row["topic"], row["key"].encode(), row["value"])
                     for row in rows if row["kind"] == STATE]
        now = io.now()
        letters = [dead_letter(row["topic"], row["value"], row["reason"], now, row["partition"], row["offset"])
                   for row in rows if row["kind"] != STATE]
        outgoing += [outgoing_record(DEAD_LETTERS, letter) for letter in io.letters.unsent(letters)]
        io.producer.send_and_wait(outgoing)
        if risk is not None:
            shelves = [ShelfState.model_validate_json(row["value"]) for row in rows
                       if row["kind"] == STATE and row["app"] == ShelfAggregator.name]
            io.producer.send_and_wait(outgoing_record("shelf_risk", score)
                                      for score in risk.scores(shelves, lambda: every_shelf(io)))
        _drill_after_publish(io, name, bool(rows))
        ends = batch_ends(checkpoint, batch_id)
        for app in apps:
            io.clock.offsets_done(app.name, {tp: end for tp, end in ends.items() if tp[0] in app.topics})

    return (keyed_frame(spark, settings, apps, opening).writeStream.queryName(name).outputMode("append")
            .foreachBatch(each_batch).option("checkpointLocation", str(checkpoint))
            .trigger(processingTime=f"{settings.spark_trigger_ms} milliseconds").start())


def keyed_frame(spark: SparkSession, settings: Settings, apps: list[KeyedApp],
                opening: list[tuple[str, str, str, str]]) -> DataFrame:
    """The apps' topics through the processor, grouped by the bucket of their shelf: a record's Kafka key, or each
    shelf a spread record names (only the first shelf's group reports it if it is invalid)."""
    topics = sorted({t for app in apps for t in app.topics})
    spread = sorted({t for app in apps for t in app.spread})
    source = spark.readStream.format("kafka").options(**kafka_options(settings, topics)).load()
    kafka_key = F.coalesce(F.col("key").cast("string"), F.lit(""))
    lines = F.from_json(F.col("value").cast("string"), SPREAD_SCHEMA)["items"]
    # a spread record goes to each shelf it names (distinct, sorted: keyed.shelves_named); one whose shelves cannot
    # be read goes to its Kafka key's group, which reports it as invalid
    named = F.when(F.col("topic").isin(spread), F.array_sort(F.array_distinct(F.transform(
        lines, lambda line: line["shelf_id"])))).otherwise(F.array(kafka_key))
    records = source.select("topic", "partition", "offset", "value", kafka_key.alias("kafka_key"),
                            F.posexplode_outer(named).alias("line", "shelf"))
    group_key = F.coalesce(F.col("shelf"), F.col("kafka_key"))
    bucket = F.pmod(F.crc32(group_key.cast("binary")), F.lit(settings.keyed_buckets))  # = keyed.bucket_of
    grouped = (records.select(bucket.alias("bucket"), group_key.alias("group_key"), "topic", "partition", "offset",
                              "value", F.coalesce(F.col("line") == 0, F.lit(True)).alias("reports"))
               .groupBy("bucket"))
    opening_buckets = initial_buckets(opening, settings.keyed_buckets)
    initial = spark.createDataFrame(opening_buckets, INITIAL_SCHEMA).groupBy("bucket")
    return grouped.transformWithState(KeyedStateProcessor(apps), OUTPUT_SCHEMA, "Append", "None",
                                      initialState=initial)


def _drill_after_publish(io: BatchIO, name: str, published: bool) -> None:
    point = io.settings.crash_point
    if point == FAIL_AFTER_PUBLISH and published and io.drill_once(name):
        raise RuntimeError(f"drill: {name} fails once between publishing a batch and Spark's commit of it")
    if point == EXIT_AFTER_PUBLISH_KEYED and published and io.drill_once(EXIT_AFTER_PUBLISH_KEYED):
        os._exit(137)


def every_shelf(io: BatchIO) -> list[ShelfState]:
    """Every shelf's latest state, from its compacted topic."""
    latest = {record.key: record.value for record in io.kafka.read(io.kafka.partitions_for("shelf_state"))}
    return [ShelfState.model_validate_json(value) for value in latest.values() if value is not None]


def _publish_order(row: dict[str, Any]) -> tuple[str, str, str, int, int]:
    # a deterministic order: a batch's outputs come from its groups in whatever order their tasks ended
    return row["kind"], row["topic"], row["key"] or "", row["partition"] or 0, row["offset"] or 0
