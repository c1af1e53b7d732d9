"""The pulse queries (smartshelf.pulse in Spark): the sensors' events as signals, summed by Spark's own window
operators on event time, with a watermark; each a query of its own.

- `pulse-windows`: 1-minute tumbling windows → the `pulse_windows` topic (compacted: a replayed batch publishes
  the same values again).
- `pulse-anomalies`: 5-minute windows sliding every minute → scored against earlier days, anomaly and
  shrinkage alerts (smartshelf.pulse.evaluate), windows and alerts published. Its state (the history by hour)
  is a loop app's: committed per (app, batch) to Delta, and a replay's alerts are recognised by their ids.

Spark keeps the open windows in its state store (RocksDB, checkpointed) and hands a window to the batch once
the watermark has passed its end (append mode); a window is therefore emitted once, with every event that was
not late. The watermark is the newest event time seen, minus PULSE_WATERMARK_MINUTES and one clock step: the
clock's own ticks (clock_ticks) count as events, so windows close at night too. Rows dropped as late are
counted from the queries' progress (`LateCounter`), per batch, once.

What the batch sees is a handful of closed windows per simulated minute (store and categories; shelves with
activity), so the driver-side scoring is small whatever the event rate: the per-event work is Spark's.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from pydantic import BaseModel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.streaming import StreamingQuery
from redis import Redis

from smartshelf import loop, pulse
from smartshelf.adapters.spark import kafka_options
from smartshelf.registry import CLOCK_TICKS
from smartshelf.schemas import ClockTick, FootTrafficEvent, PosTransaction, PulseWindow, ShelfEvent
from smartshelf.settings import Settings
from smartshelf.store import StoreData
from smartshelf.streaming.batch import BatchIO, BatchOutput, Received
from smartshelf.streaming.loop_apps import LoopApp
from smartshelf.tabular import arrow_schema

SOURCES = ("foot_traffic", "pos_transactions", "shelf_events", CLOCK_TICKS)
DECIMAL = "decimal(24,3)"  # sums of decimals do not depend on their order, unlike sums of doubles
TICK = "tick"  # a clock tick's signal: it moves the watermark, and its windows are dropped
LATE_KEY = "pulse:late"  # Redis hash: per query, rows dropped as late and the last batch counted


def watermark_delay(settings: Settings) -> timedelta:
    """How far behind the newest event time a window closes: in fast mode a whole tick's events come at once,
    in any order across topics, so the delay covers a step."""
    return timedelta(minutes=settings.pulse_watermark_minutes, seconds=settings.step_seconds)


def rules(settings: Settings) -> pulse.PulseRules:
    return pulse.PulseRules(z_threshold=settings.pulse_z_threshold,
                            min_history_days=settings.pulse_min_history_days,
                            history_days=settings.pulse_history_days,
                            shrinkage_min_units=settings.shrinkage_min_units)


def item_facts(store: StoreData) -> dict[str, pulse.ItemFacts]:
    return {row.shelf_id: pulse.ItemFacts(row.item_category, row.item_weight) for row in store.store_inventory}


def _parsed(source: DataFrame, topic_name: str, model: type[BaseModel]) -> DataFrame:
    """A topic's records as their schema's columns; records that do not parse are left out (the twin's apps
    report them as dead letters)."""
    schema = from_arrow_schema(arrow_schema(model))
    event = F.from_json(F.col("value").cast("string"), schema, {"mode": "PERMISSIVE"}).alias("e")
    return source.where(F.col("topic") == topic_name).select(event).where(F.col("e.ts").isNotNull()).select("e.*")


def _signal(metric: Column | str, subject: Column | str, value: Column) -> Column:
    return F.struct((F.lit(metric) if isinstance(metric, str) else metric).alias("metric"),
                    (F.lit(subject) if isinstance(subject, str) else subject).alias("subject"),
                    value.cast(DECIMAL).alias("value"))


def signals(spark: SparkSession, settings: Settings, store: StoreData) -> DataFrame:
    """(metric, subject, ts, value) rows of smartshelf.pulse.signals_of, computed by Spark, with the watermark
    set, and the clock's ticks (metric TICK): they move the watermark, and `windows_of` drops their windows (a
    filter in the query would be pushed below the watermark by Spark's optimizer, and not move it)."""
    source = spark.readStream.format("kafka").options(**kafka_options(settings, list(SOURCES))).load()
    items = spark.createDataFrame([(shelf, facts.category, facts.item_weight)
                                   for shelf, facts in sorted(item_facts(store).items())],
                                  "shelf_id string, category string, item_weight long")
    visits = _parsed(source, "foot_traffic", FootTrafficEvent).select(
        "ts", F.array(_signal(F.when(F.col("event_type") == "entry", "entries").otherwise("exits"), pulse.STORE,
                              F.lit(1))).alias("s"))
    lines = _parsed(source, "pos_transactions", PosTransaction).select(
        "ts", F.explode("items").alias("line")).select("ts", "line.*").join(F.broadcast(items), "shelf_id")
    sales = lines.select("ts", F.array(
        _signal("units_sold", F.col("category"), F.col("quantity")),
        _signal("revenue", F.col("category"), F.col("line_total")),
        _signal("units_paid", F.col("shelf_id"), F.col("quantity"))).alias("s"))
    readings = (_parsed(source, "shelf_events", ShelfEvent).where(F.col("event_type") == "weight_change")
                .join(F.broadcast(items), "shelf_id"))
    grams = F.col("weight_change").cast(DECIMAL)
    scale = readings.select("ts", F.array_compact(F.array(
        _signal("weight_changes", F.col("category"), grams),
        F.when(F.col("customer_id").isNotNull(),
               _signal("units_taken", F.col("shelf_id"), -grams / F.col("item_weight"))))).alias("s"))
    ticks = _parsed(source, CLOCK_TICKS, ClockTick).select("ts", F.array(_signal(TICK, "", F.lit(0))).alias("s"))
    delay = watermark_delay(settings)
    return (visits.unionByName(sales).unionByName(scale).unionByName(ticks)
            # event time must be a TIMESTAMP (the session's zone is UTC, as the clock's times are)
            .select(F.col("ts").cast("timestamp").alias("ts"), F.explode("s").alias("s")).select("ts", "s.*")
            .withWatermark("ts", f"{int(delay.total_seconds())} seconds"))


def windowed(frame: DataFrame, width_minutes: int, slide_minutes: int) -> DataFrame:
    """The signals' sum and count per event-time window, metric and subject: PulseWindow's columns."""
    window = F.window("ts", f"{width_minutes} minutes", f"{slide_minutes} minutes")
    return (frame.groupBy(window.alias("w"), "metric", "subject")
            .agg(F.sum("value").alias("value"), F.count(F.lit(1)).alias("events"))
            .select(F.lit(width_minutes).alias("width_minutes"), "metric", "subject",
                    F.col("w.start").alias("window_start"), F.col("w.end").alias("window_end"),
                    F.col("value").cast("double").alias("value"), "events"))


def windows_of(frame: DataFrame) -> list[PulseWindow]:
    """A batch of closed windows, on the driver (a few per simulated minute), without the clock's."""
    return [PulseWindow(**row) for row in frame.toArrow().to_pylist() if row["metric"] != TICK]


class PulseWindows:
    """1-minute tumbling windows → pulse_windows."""

    name = "pulse-windows"
    width_minutes, slide_minutes = pulse.TUMBLING_MINUTES, pulse.TUMBLING_MINUTES

    def handle_windows(self, io: BatchIO, batch_id: int, windows: list[PulseWindow]) -> None:
        published = [w for w in windows if pulse.SUBJECT_OF[w.metric] != "shelf"]
        io.publish(BatchOutput({"pulse_windows": published}))


class PulseAnomalies(LoopApp[pulse.PulseState]):
    """5-minute sliding windows → scored windows (pulse_windows) and anomaly / shrinkage alerts."""

    name = "pulse-anomalies"
    topics = ()
    outputs = ("alerts", "pulse_windows")
    state_model = pulse.PulseState
    width_minutes, slide_minutes = pulse.SLIDING_MINUTES, pulse.SLIDE_MINUTES

    def __init__(self, categories: Sequence[str]) -> None:
        super().__init__()
        self.categories = sorted(categories)

    def handle_windows(self, io: BatchIO, batch_id: int, windows: list[PulseWindow]) -> None:
        received = [Received("pulse_windows", 0, number, window) for number, window in enumerate(windows)]
        self.handle(io, batch_id, received, BatchOutput())  # a loop app publishes its effects itself

    def apply(self, state: pulse.PulseState, received: list[Received], config: loop.StoreConfig, io: BatchIO
              ) -> loop.Effects:
        windows = [item.record for item in received]
        published, alerts = pulse.evaluate(state, windows, self.categories, rules(io.settings))  # type: ignore[arg-type]
        return loop.Effects({"pulse_windows": list(published), "alerts": list(alerts)})


PulseApp = PulseWindows | PulseAnomalies
PULSE_APPS = (PulseWindows.name, PulseAnomalies.name)


def pulse_app(name: str, store: StoreData) -> PulseApp:
    if name == PulseWindows.name:
        return PulseWindows()
    return PulseAnomalies(sorted({facts.category for facts in item_facts(store).values()}))


def start_pulse(spark: SparkSession, settings: Settings, app: PulseApp, store: StoreData, io: BatchIO
                ) -> StreamingQuery:
    """One pulse app as its own query, in append mode: each window once, when the watermark has passed it."""
    frame = windowed(signals(spark, settings, store), app.width_minutes, app.slide_minutes)

    def each_batch(batch: DataFrame, batch_id: int) -> None:
        app.handle_windows(io, batch_id, windows_of(batch))

    return (frame.writeStream.queryName(app.name).outputMode("append").foreachBatch(each_batch)
            .option("checkpointLocation", str(settings.run_dir / "checkpoints" / app.name))
            .trigger(processingTime=f"{settings.pulse_trigger_ms} milliseconds").start())


class LateCounter:
    """Rows the pulse queries dropped as late, from their progress reports: counted once per batch (the batch
    ids survive restarts in the checkpoint), kept in Redis for the dashboard and `smartshelf status`."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def update(self, name: str, query: StreamingQuery) -> None:
        counted = int(self.redis.hget(LATE_KEY, f"{name}:batch") or -1)
        fresh = [p for p in query.recentProgress if p.batchId > counted]
        if fresh:
            dropped = sum(op.numRowsDroppedByWatermark for p in fresh for op in p.stateOperators)
            with self.redis.pipeline(transaction=True) as pipe:
                pipe.hincrby(LATE_KEY, name, dropped).hset(LATE_KEY, f"{name}:batch", max(p.batchId for p in fresh))
                pipe.execute()

    def dropped(self) -> dict[str, int]:
        return {name: int(self.redis.hget(LATE_KEY, name) or 0) for name in PULSE_APPS}
