"""The keyed query: the state apps of smartshelf.streaming.keyed and the loop apps of smartshelf.streaming.keyed_loop
in one streaming query whose state lives in Spark's state store (RocksDB), grouped by shelf (the Kafka key or its
first part, or each shelf a till's transaction sells from) hashed into KEYED_BUCKETS buckets, so the work and the
state spread over the executors of a cluster like any keyed aggregation. A clock tick goes to every bucket.

    Kafka ─► one row per shelf of a record (per bucket of a tick) ─► groupBy(bucket of the shelf)
          ─► transformWithState (KeyedStateProcessor: keyed.apply_bucket, each shelf's records applied to that
             shelf's state; keyed_loop.apply_views, each loop app's rule over the bucket's view; the store's opening
             state is the initial state of each bucket)
          ─► foreachBatch on the driver: the changed keys to their compacted topics, the loop apps' records to
             theirs, the letters to dead_letters, how far each app has read to the lockstep clock

Only what a sink must see reaches the driver: the changed keys, the loop apps' records and the letters of a batch,
not its records nor the state. Exactly once: the state and the offsets are committed together by Spark's checkpoint;
a batch that fails before its commit is run again from the state before it and gives the same values, which the
compacted topics take again (the letters and append-only records its earlier attempt published are not sent again:
batch.OutputNotes). The first batch (batch 0, also when run again) publishes every state app's opening state before
its changes, so every shelf, lot and warehouse item is in its topic, and so in PostgreSQL and the lake, from the
first minute. The Delta tables of these states
(`cleansed/*`) are the lake sink's merges of their topics: written in proportion to what changed.

The loop apps' opening configs (each store's policies and profiles, ~430 KB pickled a store) do not travel in the
processor, which Spark pickles into the query's command: they are written beside the checkpoint (storage the
executors reach, as they reach the checkpoint) and each Python worker loads a store's once, when a bucket of that
store first has loop records (`opening_config`). In the command, a chain's configs made it grow by a store's each
store, and Spark sends a command over 1 MB as a broadcast variable, which the driver-side runner of
transformWithState cannot read: a chain of two stores sat at the edge, four did not start.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pyspark.sql import DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle, StreamingQuery

from smartshelf import loop
from smartshelf.adapters.kafka import Outgoing
from smartshelf.adapters.spark import checkpoint_dir, kafka_options
from smartshelf.errors import SmartShelfError
from smartshelf.ingress import dead_letter
from smartshelf.registry import DEAD_LETTERS, KEY_SEPARATOR, STORE_COLUMN, TABLES, topic
from smartshelf.policies import warehouse_capacity
from smartshelf.schemas import FIRST_STORE, ShelfState
from smartshelf.settings import Settings
from smartshelf.store import StoreData, clock_start
from smartshelf.streaming.apps import RiskScoring, ShelfAggregator
from smartshelf.streaming.batch import BatchIO, OutputNotes, outgoing_record, output_notes_dir, record_id
from smartshelf.streaming.commit import FAIL_AFTER_PUBLISH
from smartshelf.streaming.keyed import (LETTER, STATE, GroupTexts, KeyedApp, KeyedRecord, OutputRow, apply_bucket,
                                        bucket_of)
from smartshelf.streaming.keyed_loop import RECORD, KeyedLoopApp, apply_views, opening_views

# the processor's rows: keyed.OutputRow
OUTPUT_SCHEMA = ("app string, kind string, topic string, `partition` int, `offset` long, key string, value binary, "
                 "reason string")
OUTPUT_COLUMNS = [field.strip().split(" ")[0].strip("`") for field in OUTPUT_SCHEMA.split(",")]
STATE_SCHEMA = "value string"
SPREAD_SCHEMA = "items array<struct<shelf_id: string>>"  # what names a spread record's shelves (keyed.shelves_named)
INITIAL_SCHEMA = "store string, bucket long, value string, views string"
Opening = tuple[str, str, str, str, str]  # (app, store, group, state key, value JSON) of a key as its store opened
# failure drill (SMARTSHELF_CRASH_POINT): the driver dies once per run after publishing a batch's outputs, before
# Spark commits the batch (FAIL_AFTER_PUBLISH of smartshelf.streaming.commit applies here too)
EXIT_AFTER_PUBLISH_KEYED = "spark.keyed_exit_after_publish"


class KeyedStateProcessor(StatefulProcessor):
    """One bucket of one store's shelves (the grouping key: store, bucket), as two values of the state store: the
    keyed apps' {shelf: {app: {state key: value JSON}}}, and the loop apps' {app: view JSON}; each read once and
    written once per batch that changes it (each state store access is a round trip between the Python worker and
    the JVM: per bucket, not per shelf)."""

    def __init__(self, apps: list[KeyedApp], loop_apps: list[KeyedLoopApp], configs: OpeningConfigs) -> None:
        self.apps, self.loop_apps = apps, [_without_configs(app) for app in loop_apps]
        self.configs = configs  # where each store's opening config is, and which writing of them
        self.app_topics = {t for app in apps for t in app.topics}
        self.loop_topics = {t for app in loop_apps for t in app.topics}

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.state = handle.getValueState("groups", STATE_SCHEMA)
        self.views = handle.getValueState("views", STATE_SCHEMA)

    def handleInputRows(self, key: Any, rows: Iterator[Row], timerValues: Any) -> Iterator[Row]:
        records = [(r.group_key, KeyedRecord(r.topic, r.partition, r.offset, r.value, r.reports)) for r in rows]
        out = _through(self.state, lambda groups, mine: apply_bucket(self.apps, groups, mine),
                       [(group, record) for group, record in records if record.topic in self.app_topics])
        store_id = key[0]
        loop_records = [(group, record) for group, record in records if record.topic in self.loop_topics]
        if loop_records:
            config = opening_config(self.configs, store_id)
            for app in self.loop_apps:
                if app.configs.get(store_id) is not config:
                    app.configs = {**app.configs, store_id: config}
        out += _through(self.views, lambda views, mine: apply_views(self.loop_apps, views, mine, store_id),
                        loop_records)
        yield from (Row(**dict(zip(OUTPUT_COLUMNS, row, strict=True))) for row in out)

    def handleInitialState(self, key: Any, initialState: Row, timerValues: Any) -> None:
        if initialState.value is not None:
            self.state.update((initialState.value,))
        if initialState.views is not None:
            self.views.update((initialState.views,))

    def close(self) -> None:
        pass


def _without_configs(app: KeyedLoopApp) -> KeyedLoopApp:
    bare = copy.copy(app)
    bare.configs = {}
    return bare


CONFIGS_SUFFIX = ".configs"


@dataclass(frozen=True)
class OpeningConfigs:
    """Where the driver wrote each store's opening config, and when (a worker that read an earlier writing, in a
    query started before, reads them anew)."""

    folder: str
    written_ns: int


# per Python worker: a config file -> (the writing it was read from, config)
_LOADED: dict[str, tuple[int, loop.StoreConfig]] = {}


def write_opening_configs(checkpoint: Path, configs: Mapping[str, loop.StoreConfig]) -> OpeningConfigs:
    """Each store's opening config in a folder beside the checkpoint, one file a store, each replaced whole (the
    driver writes them at every start, before the query runs)."""
    folder = checkpoint.with_name(checkpoint.name + CONFIGS_SUFFIX)
    folder.mkdir(parents=True, exist_ok=True)
    for store_id, config in configs.items():
        partial = folder / f".{store_id}.partial"
        partial.write_bytes(pickle.dumps(config))
        partial.replace(folder / f"{store_id}.pickle")
    return OpeningConfigs(str(folder), time.time_ns())


def opening_config(configs: OpeningConfigs, store_id: str) -> loop.StoreConfig:
    """A store's opening config, read once per Python worker and writing (our own file, pickled by the driver as
    Spark pickles the query's command); no file system call once read."""
    path = f"{configs.folder}/{store_id}.pickle"
    loaded = _LOADED.get(path)
    if loaded is None or loaded[0] != configs.written_ns:
        loaded = _LOADED[path] = (configs.written_ns, pickle.loads(Path(path).read_bytes()))
    return loaded[1]


def _through(state: Any, apply: Callable[[dict[str, Any], list[tuple[str, KeyedRecord]]], tuple[bool, list[OutputRow]]],
             records: list[tuple[str, KeyedRecord]]) -> list[OutputRow]:
    """Records applied to one state value of the bucket (JSON), read only if there are records and written only if
    they changed it; returns the output rows."""
    if not records:
        return []
    stored = state.get()
    value = json.loads(stored[0]) if stored else {}
    changed, out = apply(value, records)
    if changed:
        state.update((json.dumps(value, sort_keys=True),))
    return out


def opening_rows(apps: list[KeyedApp], stores: Mapping[str, StoreData], start: datetime) -> list[Opening]:
    """(app, store, group, state key, value JSON) of every key as each store opened."""
    return [(app.name, store_id, app.group_of(value), app.key_of(value), value.model_dump_json())
            for store_id, store in stores.items() for app in apps for value in app.initial(store, start)]


StoreBucket = tuple[str, int]  # the state store's grouping key: a store and a bucket of its shelves


def initial_buckets(opening: list[Opening], buckets: int, views: dict[StoreBucket, dict[str, str]] | None = None
                    ) -> list[tuple[str, int, str | None, str | None]]:
    """The opening state as the processor keeps it: (store, bucket, {group: {app: {state key: value JSON}}} as JSON,
    the loop apps' {app: view JSON} as JSON), None where a bucket starts without one of them."""
    stored: dict[StoreBucket, dict[str, GroupTexts]] = {}
    for app_name, store_id, group, state_key, value in opening:
        stored.setdefault((store_id, bucket_of(group, buckets)), {}).setdefault(group, {}).setdefault(
            app_name, {})[state_key] = value
    views = views or {}
    return [(*where, json.dumps(stored[where], sort_keys=True) if where in stored else None,
             json.dumps(views[where], sort_keys=True) if where in views else None)
            for where in sorted({*stored, *views})]


def chain_views(apps: list[KeyedLoopApp], stores: Mapping[str, StoreData], start: datetime, buckets: int
                ) -> dict[StoreBucket, dict[str, str]]:
    """(store, bucket) -> {app: its view JSON} as each store opened (keyed_loop.opening_views of each store)."""
    return {(store_id, bucket): views for store_id, store in stores.items()
            for bucket, views in opening_views(apps, store, start, buckets).items()}


def batch_ends(checkpoint: Path, batch_id: int) -> dict[tuple[str, int], int]:
    """Where batch `batch_id` ends in each (topic, partition): Spark writes a batch's offsets to its checkpoint's
    offset log before running it (line 1 the version, line 2 the batch's metadata, then one line per source)."""
    lines = (checkpoint / "offsets" / str(batch_id)).read_text().splitlines()
    return {(name, int(partition)): int(offset) for line in lines[2:] if line.strip()
            for name, partitions in json.loads(line).items() for partition, offset in partitions.items()}


def keep_layout(checkpoint: Path, buckets: int, apps: list[str], stores: list[str]) -> None:
    """Record the bucket count, the apps and the stores of a new checkpoint beside it; refuse another count, other
    apps or other stores for an existing one (its state is stored by store and bucket: other buckets would find
    other shelves' state; an app or a store it did not start with would start without its opening state, which
    Spark applies in a query's first batch only)."""
    marker = checkpoint.with_name(f"{checkpoint.name}.buckets")
    if marker.exists():
        kept, *layout = marker.read_text().splitlines()
        if int(kept) != buckets:
            raise SmartShelfError(f"KEYED_BUCKETS={buckets}, but the checkpoint {checkpoint} keeps its state in "
                                  f"{kept} buckets: set KEYED_BUCKETS={kept}, or start a new run dir")
        kept_apps, kept_stores = (layout + ["", ""])[:2]
        if kept_apps != ",".join(apps):
            started = f"the apps {kept_apps}" if kept_apps else "the apps of an earlier version"
            raise SmartShelfError(f"the checkpoint {checkpoint} keeps the state of {started}, not of "
                                  f"{','.join(apps)}: start a new run dir (`smartshelf down` and remove "
                                  f"{checkpoint.parents[1]}), or run the apps it started with")
        if kept_stores != ",".join(stores):
            started = f"the stores {kept_stores}" if kept_stores else "one store of an earlier version"
            raise SmartShelfError(f"the checkpoint {checkpoint} keeps the state of {started}, not of "
                                  f"{','.join(stores)}: start a new run dir (`smartshelf down` and remove "
                                  f"{checkpoint.parents[1]}), or run the stores it started with (STORES, STORE_ID)")
    elif (checkpoint / "commits").is_dir() and any((checkpoint / "commits").iterdir()):
        raise SmartShelfError(f"the checkpoint {checkpoint} was made before its state was bucketed: start a new run "
                              f"dir (`smartshelf down` and remove {checkpoint.parents[1]})")
    else:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{buckets}\n{','.join(apps)}\n{','.join(stores)}\n")


def start_keyed(spark: SparkSession, settings: Settings, name: str, apps: list[KeyedApp | KeyedLoopApp],
                io: BatchIO, stores: Mapping[str, StoreData]) -> StreamingQuery:
    """The keyed apps and keyed loop apps `apps` as one query named `name`, over the stores the twin runs."""
    start = clock_start(stores[settings.store_id], settings.sim_start)
    state_apps = [app for app in apps if isinstance(app, KeyedApp)]
    loop_apps = [app for app in apps if isinstance(app, KeyedLoopApp)]
    for app in apps:
        io.clock.register_offset_participant(app.name, app.topics)
    for state_app in state_apps:
        state_app.sim_start = settings.sim_start
    configs = {store_id: loop_config(settings, store) for store_id, store in stores.items()} if loop_apps else {}
    for store_id, config in configs.items():
        for loop_app in loop_apps:
            loop_app.start(config, settings, store_id)
    opening = opening_rows(state_apps, stores, start)
    checkpoint = checkpoint_dir(settings, name)
    keep_layout(checkpoint, settings.keyed_buckets, [app.name for app in apps], list(stores))
    opening_configs = write_opening_configs(checkpoint, configs)
    by_name = {app.name: app for app in state_apps}
    # what a batch run again must not publish twice: the letters, and the loop apps' append-only records
    io.notes = OutputNotes(output_notes_dir(settings, name), io, {DEAD_LETTERS, *(
        output for app in loop_apps for output in app.outputs if not topic(output).compacted)})

    risk = RiskScoring(settings) if ShelfAggregator.name in by_name else None

    def each_batch(frame: DataFrame, batch_id: int) -> None:
        io.begin(batch_id)
        rows = sorted(frame.toArrow().to_pylist(), key=_publish_order)
        outgoing = [Outgoing((state := by_name[a].state_topic()).name, state.key_in_store(store_id, key).encode(),
                             value.encode()) for a, store_id, _, key, value in opening] if batch_id == 0 else []
        outgoing += [Outgoing(row["topic"], row["key"].encode(), row["value"]) for row in rows if row["kind"] == STATE]
        outgoing += [outgoing_record(name, value) for name, values in _unsent(io, rows).items() for value in values]
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

    frame = keyed_frame(spark, settings, state_apps, loop_apps, opening,
                        chain_views(loop_apps, stores, start, settings.keyed_buckets), opening_configs)
    return (frame.writeStream.queryName(name).outputMode("append")
            .foreachBatch(each_batch).option("checkpointLocation", str(checkpoint))
            .trigger(processingTime=f"{settings.spark_trigger_ms} milliseconds").start())


def loop_config(settings: Settings, store: StoreData) -> loop.StoreConfig:
    """A store's policies and profiles as the loop apps start with them (the policies that come later are in their
    views)."""
    from smartshelf.runtime.jobs import load_config

    # the warehouse's capacities scale the default policy of an item whose policy row is missing
    return loop.StoreConfig.from_tables(load_config(settings, store.store_id), warehouse_capacity(store))


def _unsent(io: BatchIO, rows: list[dict[str, Any]]) -> dict[str, list[BaseModel]]:
    """A batch's loop app records and letters (one per record and reason: a tick reaches every bucket), topic by
    topic, without what an earlier attempt at the batch sent (OutputNotes)."""
    now = io.now()
    records: dict[str, list[BaseModel]] = {}
    letters: dict[str, BaseModel] = {}
    for row in rows:
        if row["kind"] == LETTER:
            letter = dead_letter(row["topic"], row["value"], row["reason"], now, row["partition"], row["offset"])
            letters.setdefault(record_id(DEAD_LETTERS, letter), letter)
        elif row["kind"] == RECORD:
            value = topic(row["topic"]).schema.model_validate_json(row["value"])
            if row["topic"] == DEAD_LETTERS:  # a rule's own letter (e.g. an expired lot of a shelf without profile)
                letters.setdefault(record_id(DEAD_LETTERS, value), value)
            else:
                records.setdefault(row["topic"], []).append(value)
    records[DEAD_LETTERS] = list(letters.values())
    return {name: kept for name, values in records.items() if (kept := io.notes.unsent(name, values))}


def keyed_frame(spark: SparkSession, settings: Settings, apps: list[KeyedApp], loop_apps: list[KeyedLoopApp],
                opening: list[Opening], views: dict[StoreBucket, dict[str, str]], configs: OpeningConfigs
                ) -> DataFrame:
    """The apps' topics through the processor, grouped by store (the one a record's value names) and the bucket of
    their shelf: the second part of a record's Kafka key (store|shelf, and more for a lot), the shelf its value
    names for a topic keyed otherwise (a plan, by its id; a config row, by the source connector's struct), or each
    shelf a spread record names (only the first shelf's group reports it if it is invalid); a broadcast record to
    every bucket of its store, or of every store for a record of none (a tick), the first of them reporting it, with
    its shelf as its group in that shelf's bucket and none in the others."""
    topics = sorted({t for app in [*apps, *loop_apps] for t in app.topics})
    spread = sorted({t for app in apps for t in app.spread})
    broadcast = sorted({t for app in loop_apps for t in app.broadcast})
    sourced = {t.topic for t in TABLES if t.sourced}
    by_shelf = [t for t in topics if topic(t).key[1:2] == ("shelf_id",) and t not in sourced]
    by_value = [t for t in topics
                if t not in by_shelf and t not in spread and "shelf_id" in topic(t).schema.model_fields]
    of_store = [t for t in topics if topic(t).per_store]
    source = spark.readStream.format("kafka").options(**kafka_options(settings, topics)).load()
    kafka_key = F.coalesce(F.col("key").cast("string"), F.lit(""))
    text = F.col("value").cast("string")
    lines = F.from_json(text, SPREAD_SCHEMA)["items"]
    # a record's store is the one its value names (the first if it names none, as its schema reads it); a record
    # of no store (a tick) is every running store's
    named_store = F.coalesce(F.get_json_object(text, f"$.{STORE_COLUMN}"), F.lit(FIRST_STORE))
    stores = F.when(F.col("topic").isin(of_store), F.array(named_store)) \
        .otherwise(F.array(*[F.lit(store_id) for store_id in settings.running_stores]))
    # a spread record goes to each shelf it names (distinct, sorted: keyed.shelves_named); one whose shelves cannot
    # be read goes to its Kafka key's group, which reports it as invalid
    named_shelf = F.get_json_object(text, "$.shelf_id")
    is_broadcast = F.col("topic").isin(broadcast)
    shelf_key = F.when(F.col("topic").isin(by_shelf), F.substring_index(F.substring_index(
        kafka_key, KEY_SEPARATOR, 2), KEY_SEPARATOR, -1)) \
        .when(F.col("topic").isin(by_value) & named_shelf.isNotNull(), named_shelf) \
        .when(is_broadcast, F.lit("")).otherwise(kafka_key)
    named = F.when(F.col("topic").isin(spread), F.array_sort(F.array_distinct(F.transform(
        lines, lambda line: line["shelf_id"])))).otherwise(F.array(shelf_key))
    records = source.select("topic", "partition", "offset", "value", kafka_key.alias("kafka_key"),
                            F.posexplode_outer(named).alias("line", "shelf"), stores.alias("stores"))
    group_key = F.coalesce(F.col("shelf"), F.col("kafka_key"))
    own_bucket = F.pmod(F.crc32(group_key.cast("binary")), F.lit(settings.keyed_buckets))  # = keyed.bucket_of
    every_bucket = F.sequence(F.lit(0), F.lit(settings.keyed_buckets - 1)).cast("array<long>")
    by_store = records.select(F.posexplode(F.col("stores")).alias("store_no", "store"), group_key.alias("group_key"),
                              own_bucket.alias("own_bucket"), "topic", "partition", "offset", "value", "line")
    by_bucket = by_store.select(F.explode(F.when(is_broadcast, every_bucket).otherwise(F.array(F.col("own_bucket"))))
                                .alias("bucket"), "*")
    # a broadcast record keeps its shelf as its group in that shelf's bucket only (keyed_loop: a copy elsewhere)
    copied_group = F.when(is_broadcast & (F.col("bucket") != F.col("own_bucket")), F.lit("")) \
        .otherwise(F.col("group_key"))
    reports = F.when(is_broadcast, (F.col("bucket") == 0) & (F.col("store_no") == 0)) \
        .otherwise(F.coalesce(F.col("line") == 0, F.lit(True)))
    grouped = by_bucket.select("store", "bucket", copied_group.alias("group_key"), "topic", "partition", "offset",
                               "value", reports.alias("reports")).groupBy("store", "bucket")
    initial = spark.createDataFrame(initial_buckets(opening, settings.keyed_buckets, views),
                                    INITIAL_SCHEMA).groupBy("store", "bucket")
    return grouped.transformWithState(KeyedStateProcessor(apps, loop_apps, configs), OUTPUT_SCHEMA, "Append", "None",
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
