"""The keyed query: the state apps of smartshelf.streaming.keyed in one streaming query whose state lives in
Spark's state store (RocksDB), grouped by (app, Kafka key), so the work and the state spread over the executors
of a cluster like any keyed aggregation.

    Kafka ─► each record once per app that reads its topic ─► groupBy(app, key)
          ─► transformWithStateInPandas (KeyedStateProcessor: keyed.apply_to_key per group; the store's opening
             state is the initial state of each key)
          ─► foreachBatch on the driver: the changed keys to their compacted topics, the letters to dead_letters,
             how far each app has read to the lockstep clock

Only what a sink must see reaches the driver: the changed keys and the letters of a batch, not its records nor
the state. Exactly once: the state and the offsets are committed together by Spark's checkpoint; a batch that
fails before its commit is run again from the state before it and gives the same values, which the compacted
topics take again (dead letters carry no id: at least once, as everywhere). The first batch (batch 0, also when
run again) publishes every key's opening state before its changes, so every shelf, lot and warehouse item is in
its topic, and so in PostgreSQL and the lake, from the first minute. The Delta tables of these states
(`cleansed/*`) are the lake sink's merges of their topics: written in proportion to what changed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import BaseModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle, StreamingQuery

from smartshelf.adapters.kafka import Outgoing
from smartshelf.adapters.spark import kafka_options
from smartshelf.ingress import dead_letter
from smartshelf.registry import DEAD_LETTERS, topic
from smartshelf.schemas import ShelfState
from smartshelf.settings import Settings
from smartshelf.store import StoreData, clock_start
from smartshelf.streaming.apps import RiskScoring, ShelfAggregator
from smartshelf.streaming.batch import BatchIO
from smartshelf.streaming.commit import FAIL_AFTER_PUBLISH
from smartshelf.streaming.keyed import KeyedApp, KeyedRecord, apply_to_key

OUTPUT_SCHEMA = ("app string, kind string, topic string, `partition` int, `offset` long, key string, value binary, "
                 "reason string")
STATE, LETTER = "state", "letter"  # the kinds of output row
# failure drill (SMARTSHELF_CRASH_POINT): the driver dies once per run after publishing a batch's outputs, before
# Spark commits the batch (FAIL_AFTER_PUBLISH of smartshelf.streaming.commit applies here too)
EXIT_AFTER_PUBLISH_KEYED = "spark.keyed_exit_after_publish"
INITIAL_SCHEMA = "app string, group_key string, state_key string, value string"


class KeyedStateProcessor(StatefulProcessor):
    """One group's state: the JSON of each of its state keys, in a MapState of the state store."""

    def __init__(self, apps: list[KeyedApp]) -> None:
        self.apps = {app.name: app for app in apps}

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.values = handle.getMapState("values", "state_key string", "value string")

    def handleInputRows(self, key: Any, rows: Iterator[pd.DataFrame], timerValues: Any) -> Iterator[pd.DataFrame]:
        app_name, group = key
        app = self.apps[app_name]
        model = table_model(app)
        state = {k: model.model_validate_json(v) for (k,), (v,) in self.values.iterator()}
        records = [KeyedRecord(r.topic, int(r.partition), int(r.offset), r.value)
                   for frame in rows for r in frame.itertuples(index=False)]
        result = apply_to_key(app, group, state, records)
        out = []
        for value in result.changed:
            state_key, text = app.key_of(value), value.model_dump_json()
            self.values.updateValue((state_key,), (text,))
            out.append((app_name, STATE, app.state_topic().name, None, None, state_key, text.encode(), None))
        out += [(app_name, LETTER, r.topic, r.partition, r.offset, group, r.value, reason)
                for r, reason in result.letters]
        if out:
            yield pd.DataFrame(out, columns=["app", "kind", "topic", "partition", "offset", "key", "value", "reason"])

    def handleInitialState(self, key: Any, initialState: pd.DataFrame, timerValues: Any) -> None:
        for row in initialState.itertuples(index=False):
            self.values.updateValue((row.state_key,), (row.value,))

    def close(self) -> None:
        pass


def table_model(app: KeyedApp) -> type[BaseModel]:
    return app.state_topic().schema


def opening_rows(apps: list[KeyedApp], store: StoreData, start: datetime) -> list[tuple[str, str, str, str]]:
    """(app, group, state key, value JSON) of every key as the store opened."""
    return [(app.name, app.group_of(value), app.key_of(value), value.model_dump_json())
            for app in apps for value in app.initial(store, start)]


def checkpoint_dir(settings: Settings, name: str) -> Path:
    return settings.run_dir / "checkpoints" / name


def batch_ends(checkpoint: Path, batch_id: int) -> dict[tuple[str, int], int]:
    """Where batch `batch_id` ends in each (topic, partition): Spark writes a batch's offsets to its checkpoint's
    offset log before running it (line 1 the version, line 2 the batch's metadata, then one line per source)."""
    lines = (checkpoint / "offsets" / str(batch_id)).read_text().splitlines()
    return {(name, int(partition)): int(offset) for line in lines[2:] if line.strip()
            for name, partitions in json.loads(line).items() for partition, offset in partitions.items()}


def start_keyed(spark: SparkSession, settings: Settings, name: str, apps: list[KeyedApp], io: BatchIO,
                store: StoreData) -> StreamingQuery:
    """The keyed apps `apps` as one query named `name`."""
    start = clock_start(store, settings.sim_start)
    for app in apps:
        app.sim_start = settings.sim_start
        io.clock.register_offset_participant(app.name, app.topics)
    opening = opening_rows(apps, store, start)
    checkpoint = checkpoint_dir(settings, name)
    by_name = {app.name: app for app in apps}

    risk = RiskScoring(settings) if ShelfAggregator.name in by_name else None

    def each_batch(frame: DataFrame, batch_id: int) -> None:
        rows = sorted(frame.toArrow().to_pylist(), key=_publish_order)
        outgoing = [Outgoing(by_name[a].state_topic().name, key.encode(), value.encode())
                    for a, _, key, value in opening] if batch_id == 0 else []
        now = io.now()
        for row in rows:
            if row["kind"] == STATE:
                outgoing.append(Outgoing(row["topic"], row["key"].encode(), row["value"]))
            else:
                letter = dead_letter(row["topic"], row["value"], row["reason"], now, row["partition"], row["offset"])
                outgoing.append(_outgoing(DEAD_LETTERS, letter))
        io.producer.send_and_wait(outgoing)
        if risk is not None:
            shelves = [ShelfState.model_validate_json(row["value"]) for row in rows
                       if row["kind"] == STATE and row["app"] == ShelfAggregator.name]
            io.producer.send_and_wait(_outgoing("shelf_risk", score)
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
    """The apps' topics, each record once per app that reads it, through the processor grouped by (app, key)."""
    topics = sorted({t for app in apps for t in app.topics})
    readers = F.create_map(*[part for t in topics for part in
                             (F.lit(t), F.array(*[F.lit(app.name) for app in apps if t in app.topics]))])
    source = spark.readStream.format("kafka").options(**kafka_options(settings, topics)).load()
    grouped = (source.select(F.explode(readers[F.col("topic")]).alias("app"),
                             F.coalesce(F.col("key").cast("string"), F.lit("")).alias("group_key"),
                             "topic", "partition", "offset", "value")
               .groupBy("app", "group_key"))
    initial = spark.createDataFrame(opening, INITIAL_SCHEMA).groupBy("app", "group_key")
    return grouped.transformWithStateInPandas(KeyedStateProcessor(apps), OUTPUT_SCHEMA, "Append", "None",
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


def _outgoing(topic_name: str, value: BaseModel) -> Outgoing:
    return Outgoing(topic_name, topic(topic_name).key_of(value).encode(), value.model_dump_json().encode())


def _publish_order(row: dict[str, Any]) -> tuple[str, str, str, int, int]:
    # a deterministic order: a batch's outputs come from its groups in whatever order their tasks ended
    return row["kind"], row["topic"], row["key"] or "", row["partition"] or 0, row["offset"] or 0
