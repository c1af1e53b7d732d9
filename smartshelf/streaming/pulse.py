"""The pulse query (smartshelf.pulse in Spark): the sensors' events as signals, summed by Spark's own window
operators on event time, with a watermark; a query of its own, reading its topics once per batch.

Two window operators chained in the query: 1-minute tumbling windows, then 5-minute windows sliding every
minute over them. Spark keeps the open windows in its state store (RocksDB, checkpointed) and hands a window to
the batch once the watermark has passed its end (append mode), so each window is emitted once, with every event
that was not late. The batch (`PulseApp`) publishes each minute with the sliding window it ends, scores the
sliding windows against earlier days (smartshelf.pulse.evaluate) and raises the anomaly and shrinkage alerts.
Its state (the history by hour) is a driver app's (smartshelf.streaming.driver_app): committed per (app, batch)
to Delta; a replay's windows and alerts are recognised by their ids.

The watermark is the newest event time seen minus `watermark_delay`; the clock's own ticks (clock_ticks) count
as events, so windows close at night too. Rows dropped as late are counted from the query's progress
(`LateCounter`), per batch, once.

What the batch sees is a few dozen closed windows per simulated minute and store (the store and its categories;
shelves with activity), so the driver-side scoring is small whatever the event rate: the per-event work is Spark's.
A chain's stores are windowed side by side (the store is a grouping column) and each is scored against its own
history (smartshelf.pulse.evaluate_chain).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta

from pydantic import BaseModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.streaming import StreamingQuery
from redis import Redis

from smartshelf import loop, pulse
from smartshelf.adapters.redis_clock import SimClock
from smartshelf.adapters.spark import checkpoint_dir, kafka_options
from smartshelf.registry import CLOCK_TICKS
from smartshelf.schemas import FIRST_STORE, ClockTick, FootTrafficEvent, PosTransaction, PulseWindow, ShelfEvent
from smartshelf.settings import Settings
from smartshelf.store import StoreData
from smartshelf.streaming.batch import BatchIO, BatchOutput, Received
from smartshelf.streaming.commit import CommitIO
from smartshelf.streaming.driver_app import DriverApp
from smartshelf.tabular import arrow_schema

SOURCES = ("foot_traffic", "pos_transactions", "shelf_events", CLOCK_TICKS)
DECIMAL = "decimal(24,3)"  # sums of decimals do not depend on their order, unlike sums of doubles
TICK = "tick"  # a clock tick's signal: it moves the watermark, and its windows are dropped
LATE_KEY = "pulse:late"  # Redis hash: per query, rows dropped as late and the last batch counted
DEMO_LAG_WALL_S = 30  # at demo speed, how far (wall seconds) a sensor topic may lag another without loss


def watermark_delay(settings: Settings) -> timedelta:
    """How far behind the newest event time a window closes. In fast mode a whole tick's events come at once,
    in any order across topics, so the delay covers a step; at demo speed the clock does not wait for the
    bridge, so it covers DEMO_LAG_WALL_S of wall time too (5 simulated minutes at TIME_MULTIPLIER=10)."""
    delay = timedelta(minutes=settings.pulse_watermark_minutes, seconds=settings.step_seconds)
    if settings.sim_mode == "demo":
        delay += timedelta(seconds=DEMO_LAG_WALL_S * settings.time_multiplier)
    return delay


def rules(settings: Settings) -> pulse.PulseRules:
    return pulse.PulseRules(z_threshold=settings.pulse_z_threshold,
                            min_history_days=settings.pulse_min_history_days,
                            history_days=settings.pulse_history_days,
                            shrinkage_min_units=settings.shrinkage_min_units,
                            min_deviation=settings.pulse_min_deviation)


def item_facts(store: StoreData) -> dict[str, pulse.ItemFacts]:
    return {row.shelf_id: pulse.ItemFacts(row.item_category, row.item_weight) for row in store.store_inventory}


def _event(topic_name: str, model: type[BaseModel]) -> Column:
    """The record as its schema's struct when it comes from `topic_name`, else null; a record that does not
    parse is null too (the twin's apps report it as a dead letter)."""
    schema = from_arrow_schema(arrow_schema(model))
    return F.when(F.col("topic") == topic_name, F.from_json(F.col("json"), schema, {"mode": "PERMISSIVE"}))


def _signal(metric: Column | str, subject: Column | str, value: Column) -> Column:
    return F.struct((F.lit(metric) if isinstance(metric, str) else metric).alias("metric"),
                    (F.lit(subject) if isinstance(subject, str) else subject).alias("subject"),
                    value.cast(DECIMAL).alias("value"))


def _moves(parsed: DataFrame) -> DataFrame:
    """Each record's moves, before the item is known: (ts, kind, shelf_id, metric, quantity, amount, by
    customer), one row per till line or scale reading, one per visit or tick."""
    move = "struct<kind:string,shelf_id:string,metric:string,quantity:decimal(24,3),amount:decimal(24,3),customer:boolean>"
    visit = F.array(F.struct(F.lit("visit").alias("kind"), F.lit(None).cast("string").alias("shelf_id"),
                             F.when(F.col("ft.event_type") == "entry", "entries").otherwise("exits").alias("metric"),
                             F.lit(1).cast(DECIMAL).alias("quantity"), F.lit(0).cast(DECIMAL).alias("amount"),
                             F.lit(True).alias("customer")).cast(move))
    lines = F.transform("pos.items", lambda line: F.struct(
        F.lit("line").alias("kind"), line["shelf_id"].alias("shelf_id"), F.lit(None).cast("string").alias("metric"),
        line["quantity"].cast(DECIMAL).alias("quantity"), line["line_total"].cast(DECIMAL).alias("amount"),
        F.lit(True).alias("customer")).cast(move))
    reading = F.array(F.struct(F.lit("scale").alias("kind"), F.col("se.shelf_id").alias("shelf_id"),
                               F.lit(None).cast("string").alias("metric"), F.lit(0).cast(DECIMAL).alias("quantity"),
                               F.col("se.weight_change").cast(DECIMAL).alias("amount"),
                               F.col("se.customer_id").isNotNull().alias("customer")).cast(move))
    tick = F.array(F.struct(F.lit(TICK).alias("kind"), F.lit(None).cast("string").alias("shelf_id"),
                            F.lit(TICK).alias("metric"), F.lit(0).cast(DECIMAL).alias("quantity"),
                            F.lit(0).cast(DECIMAL).alias("amount"), F.lit(False).alias("customer")).cast(move))
    moves = (F.when(F.col("ft").isNotNull(), visit)
             .when(F.col("pos").isNotNull(), lines)
             .when((F.col("se").isNotNull()) & (F.col("se.event_type") == "weight_change"), reading)
             .when(F.col("tick").isNotNull(), tick))
    ts = F.coalesce("ft.ts", "pos.ts", "se.ts", "tick.ts").cast("timestamp")
    store = F.coalesce("ft.store_id", "pos.store_id", "se.store_id", F.lit(FIRST_STORE))  # a tick's: none matters
    return parsed.select(ts.alias("ts"), store.alias("store"), F.explode(moves).alias("m")).select("ts", "store", "m.*")


def signals(spark: SparkSession, settings: Settings, stores: Mapping[str, StoreData]) -> DataFrame:
    """(store, metric, subject, ts, value) rows of smartshelf.pulse.signals_of, computed by Spark from one read of the
    topics, with the watermark set; and the clock's ticks (metric TICK): they move the watermark, and
    `windows_of` drops their windows (a filter in the query would be pushed below the watermark by Spark's
    optimizer, and not move it)."""
    source = spark.readStream.format("kafka").options(**kafka_options(settings, list(SOURCES))).load()
    items = spark.createDataFrame([(store_id, shelf, facts.category, facts.item_weight)
                                   for store_id, store in sorted(stores.items())
                                   for shelf, facts in sorted(item_facts(store).items())],
                                  "store string, shelf_id string, category string, item_weight long")
    parsed = source.select("topic", F.col("value").cast("string").alias("json")).select(
        _event("foot_traffic", FootTrafficEvent).alias("ft"), _event("pos_transactions", PosTransaction).alias("pos"),
        _event("shelf_events", ShelfEvent).alias("se"), _event(CLOCK_TICKS, ClockTick).alias("tick"))
    moves = _moves(parsed).join(F.broadcast(items), ["store", "shelf_id"], "left")
    kind, quantity, amount = F.col("kind"), F.col("quantity"), F.col("amount")
    mine = F.col("store").isin(sorted(stores))  # the running stores' (the bridge refuses other stores' records)
    known = F.col("category").isNotNull() & mine  # a till line or a reading of a shelf the store lists
    signal_list = (
        F.when((kind == TICK) | ((kind == "visit") & mine), F.array(_signal(F.col("metric"), pulse.STORE, quantity)))
        .when((kind == "line") & known, F.array(
            _signal("units_sold", pulse.STORE, quantity), _signal("units_sold", F.col("category"), quantity),
            _signal("revenue", F.col("category"), amount),
            _signal("units_paid", F.col("shelf_id"), quantity)))
        .when((kind == "scale") & known & F.col("customer"), F.array(
            _signal("weight_changes", F.col("category"), amount),
            _signal("units_taken", F.col("shelf_id"), -amount / F.col("item_weight"))))
        .when((kind == "scale") & known, F.array(_signal("weight_changes", F.col("category"), amount))))
    delay = watermark_delay(settings)
    return (moves.select("ts", "store", F.explode(signal_list).alias("s")).select("ts", "store", "s.*")
            .withWatermark("ts", f"{int(delay.total_seconds())} seconds"))


def windowed(frame: DataFrame) -> DataFrame:
    """Spark's window operators, chained in one query: the signals' sum and count per 1-minute tumbling window,
    store, metric and subject; then the 1-minute windows' per 5-minute window sliding every minute, each carrying its
    minutes. A minute is published with the sliding window it ends (`minutes_of`), so each once."""
    minute = (frame.groupBy(F.window("ts", f"{pulse.TUMBLING_MINUTES} minutes").alias("w"), "store", "metric",
                            "subject")
              .agg(F.sum("value").alias("value"), F.count(F.lit(1)).alias("events")))
    sliding = F.window(F.window_time("w"), f"{pulse.SLIDING_MINUTES} minutes", f"{pulse.SLIDE_MINUTES} minutes")
    return (minute.groupBy(sliding.alias("s"), "store", "metric", "subject")
            .agg(F.sum("value").alias("value"), F.sum("events").alias("events"),
                 F.collect_list(F.struct(F.col("w.start").alias("start"), F.col("value").cast("double").alias("value"),
                                         F.col("events").alias("events"))).alias("minutes"))
            .select("store", "metric", "subject", F.col("s.start").alias("window_start"),
                    F.col("s.end").alias("window_end"), F.col("value").cast("double").alias("value"), "events",
                    "minutes"))


def windows_of(rows: list[dict[str, object]]) -> tuple[list[PulseWindow], list[PulseWindow]]:
    """A batch's closed sliding windows (a few dozen per simulated minute and store, on the driver), and the
    minutes they end; without the clock's."""
    minutes, sliding = [], []
    for row in rows:
        if row["metric"] == TICK:
            continue
        end = row["window_end"]
        of = {"store_id": row["store"], "metric": row["metric"], "subject": row["subject"], "window_end": end}
        for minute in row["minutes"]:  # type: ignore[attr-defined]
            if minute["start"] + timedelta(minutes=pulse.TUMBLING_MINUTES) == end:
                minutes.append(PulseWindow.model_validate({
                    **of, "width_minutes": pulse.TUMBLING_MINUTES, "window_start": minute["start"],
                    "value": minute["value"], "events": minute["events"]}))
        sliding.append(PulseWindow.model_validate({
            **of, "width_minutes": pulse.SLIDING_MINUTES, "window_start": row["window_start"],
            "value": row["value"], "events": row["events"]}))
    return minutes, sliding


class PulseApp(DriverApp[pulse.ChainPulseState]):
    """The pulse of every running store: its 1-minute windows published as they are; its 5-minute windows scored
    against the store's own history, published, and their anomaly and shrinkage alerts raised."""

    name = "pulse"
    topics = ()
    outputs = ("alerts", "pulse_windows")
    state_model = pulse.ChainPulseState

    def __init__(self, categories: Mapping[str, Sequence[str]]) -> None:
        super().__init__()
        self.categories = {store_id: sorted(names) for store_id, names in categories.items()}
        self.minutes: list[PulseWindow] = []

    def handle_windows(self, io: BatchIO, batch_id: int, rows: list[dict[str, object]]) -> None:
        self.minutes, sliding = windows_of(rows)
        received = [Received("pulse_windows", 0, number, window) for number, window in enumerate(sliding)]
        self.handle(io, batch_id, received, BatchOutput())  # a driver app publishes its effects itself

    def apply_events(self, state: pulse.ChainPulseState, received: list[Received], io: CommitIO) -> loop.Effects:
        windows = [item.record for item in received]
        published, alerts = pulse.evaluate_chain(state, windows, self.categories,  # type: ignore[arg-type]
                                                 rules(io.settings))
        minutes = [w for w in self.minutes if w.metric not in pulse.SHELF_METRICS and w.store_id in self.categories]
        return loop.Effects({"pulse_windows": [*minutes, *published], "alerts": alerts})


PULSE_APPS = (PulseApp.name,)


def pulse_app(stores: Mapping[str, StoreData]) -> PulseApp:
    return PulseApp({store_id: sorted({facts.category for facts in item_facts(store).values()})
                     for store_id, store in stores.items()})


def start_pulse(spark: SparkSession, settings: Settings, app: PulseApp, stores: Mapping[str, StoreData],
                io: BatchIO) -> StreamingQuery:
    """The pulse of the running stores as a query of its own, in append mode: each window once, when the
    watermark has passed it."""
    frame = windowed(signals(spark, settings, stores))

    def each_batch(batch: DataFrame, batch_id: int) -> None:
        io.begin(batch_id)
        app.handle_windows(io, batch_id, batch.toArrow().to_pylist())

    return (frame.writeStream.queryName(app.name).outputMode("append").foreachBatch(each_batch)
            .option("checkpointLocation", str(checkpoint_dir(settings, app.name)))
            .trigger(processingTime=f"{settings.pulse_trigger_ms} milliseconds").start())


class LateCounter:
    """Rows the pulse query dropped as late, from its progress reports: counted once per batch (the batch ids
    survive restarts in the checkpoint), kept in Redis for `smartshelf sim`'s summary."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def update(self, name: str, query: StreamingQuery) -> None:
        """Count the batches finished since the last count (called every second by the runner: the recent
        reports, up to a hundred, are converted only when a batch has finished)."""
        newest = query.lastProgress
        counted = int(self.redis.hget(LATE_KEY, f"{name}:batch") or -1)
        if newest is None or newest.batchId <= counted:
            return
        fresh = [p for p in query.recentProgress if p.batchId > counted]
        if fresh:
            dropped = sum(op.numRowsDroppedByWatermark for p in fresh for op in p.stateOperators)
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(LATE_KEY, name, dropped).hset(LATE_KEY, f"{name}:batch", max(p.batchId for p in fresh))
                pipe.execute()

    def dropped(self) -> dict[str, int]:
        return {name: int(self.redis.hget(LATE_KEY, name) or 0) for name in PULSE_APPS}


def report_read(clock: SimClock, name: str, query: StreamingQuery) -> None:
    """Tell the clock how far a pulse query has read (its last finished batch): it is no lockstep participant,
    but what reads its output waits for it (smartshelf.runtime.sim.wait_for_pulse)."""
    progress = query.lastProgress
    if progress is None:
        return
    ends = [source.endOffset for source in progress.sources if source.endOffset]
    positions = {(topic_name, int(partition)): int(offset)
                 for end in ends for topic_name, partitions in (json.loads(end) if isinstance(end, str) else end).items()
                 for partition, offset in partitions.items()}
    clock.offsets_done(name, positions)
