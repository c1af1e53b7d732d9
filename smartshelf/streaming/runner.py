"""Start any subset of the streaming apps in one SparkSession: the twin's apps as one keyed query (their state in
Spark's state store, smartshelf.streaming.keyed_query) and the lake sink as another (the default), or one query per
app (SPARK_QUERY_PER_APP=1), each query with its own checkpoint; and the pulse's windowed query
(smartshelf.streaming.pulse); stop them cleanly on SIGTERM.

Why few queries: with the closed loop's 13 apps on 2 cores, 13 queries did not even start (Spark's Python workers
timed out connecting back) and each query costs ~215 MiB of Python processes (docs/architecture.md, "One query or
one per app").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from smartshelf import logs
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.adapters.spark import checkpoint_dir, kafka_options, spark_session
from smartshelf.apps.lifecycle import TRANSIENT_ERRORS, Lifecycle
from smartshelf.errors import SmartShelfError, first_line
from smartshelf.settings import Settings
from smartshelf.store import StoreData
from smartshelf.streaming.apps import LakeSink, StreamingApp, all_apps
from smartshelf.streaming.batch import BatchIO, SourceRecord, source_records
from smartshelf.streaming.keyed import KeyedApp
from smartshelf.streaming.keyed_loop import KeyedLoopApp
from smartshelf.streaming.keyed_query import start_keyed
from smartshelf.streaming.pulse import PULSE_APPS, LateCounter, pulse_app, report_read, start_pulse

STATUS_FILE = "spark_queries.json"


MAX_RESTARTS = 3  # per app of a query, within QUERY_FAILURES_WINDOW_S: a query that keeps failing stops the service
QUERY_FAILURES_WINDOW_S = 600.0
RESTART_PAUSE_S = (1.0, 30.0)  # a failed query is started again after 1 s, doubling with each recent failure


@dataclass
class Failures:
    """When a query failed lately: its restarts back off, and too many within the window end the service (a
    broker or Redis restarting fails a query now and then; a record that always fails it is a bug to report)."""

    times: list[float] = field(default_factory=list)

    def recent(self, now: float) -> int:
        self.times = [t for t in self.times if now - t < QUERY_FAILURES_WINDOW_S]
        return len(self.times)

    @property
    def count(self) -> int:
        return len(self.times)

    def add(self, now: float) -> float:
        """Record a failure; returns how long to wait before the restart."""
        self.times.append(now)
        first, cap = RESTART_PAUSE_S
        return min(cap, first * 2 ** (len(self.times) - 1))


KEYED_QUERY = "smartshelf-keyed"
App = StreamingApp | KeyedApp | KeyedLoopApp
KEYED = (KeyedApp, KeyedLoopApp)  # the apps whose state lives in Spark's state store: the keyed query's
# the app that runs as a query of its own and that the lockstep clock does not wait for: its delta-spark commits
# (~0.6-1 s each) would lengthen every tick; what reads the lake waits for it instead (smartshelf.runtime.sim)
LAKE_SINK = LakeSink.name


def start_query(spark: SparkSession, settings: Settings, app: App, io: BatchIO | None = None,
                stores: Mapping[str, StoreData] | None = None) -> StreamingQuery:
    """One app as its own query."""
    return start_apps(spark, settings, app.name, [app], io, stores)


def start_apps(spark: SparkSession, settings: Settings, name: str, apps: list[App], io: BatchIO | None = None,
               stores: Mapping[str, StoreData] | None = None) -> StreamingQuery:
    """A query group of query_groups: keyed apps as the keyed query (it needs the running stores' opening states,
    loaded if not given), the others as a shared query."""
    io = io or BatchIO(settings, name, spark)
    keyed = [app for app in apps if isinstance(app, KEYED)]
    if keyed:
        assert len(keyed) == len(apps), f"{name} mixes keyed and other apps"
        return start_keyed(spark, settings, name, keyed, io, stores or _load_stores(settings))
    return start_group(spark, settings, name, [app for app in apps if not isinstance(app, KEYED)], io)


def _load_stores(settings: Settings) -> dict[str, StoreData]:
    from smartshelf.runtime.jobs import load_stores

    return load_stores(settings)


def start_group(spark: SparkSession, settings: Settings, name: str, apps: list[StreamingApp],
                io: BatchIO | None = None) -> StreamingQuery:
    """A query reading the topics of all `apps`, each batch handed to every app (its topics' records)."""
    io = io or BatchIO(settings, name, spark)
    topics = sorted({t for app in apps for t in app.topics})
    validates = {t for app in apps for t in app.validates}
    for app in apps:  # the lockstep clock follows each app of the twin by name; what reads the lake waits for it
        if app.name != LAKE_SINK:
            io.clock.register_offset_participant(app.name, app.topics)

    def each_batch(frame: DataFrame, batch_id: int) -> None:
        io.begin(batch_id)
        records = source_records(frame.select(*SourceRecord._fields).toArrow())
        received, output = io.decode(records, io.now(), validates)
        for app in apps:
            mine = [r for r in received if r.topic in app.topics]
            if app.needs_batch(mine):
                app.handle(io, batch_id, mine, output)
        for path in io.lake.flush():
            io.maintenance.committed(path)
        io.publish(output)
        for app in apps:
            io.report_progress([r for r in records if r.topic in app.topics], app.name)

    source = spark.readStream.format("kafka").options(**kafka_options(settings, topics)).load()
    return (source.writeStream.queryName(name).foreachBatch(each_batch)
            .option("checkpointLocation", str(checkpoint_dir(settings, name)))
            .trigger(processingTime=f"{settings.spark_trigger_ms} milliseconds").start())


def select_apps(names: Iterable[str] | None) -> list[App]:
    apps = all_apps()
    if names is None:
        return list(apps.values())
    unknown = sorted(set(names) - set(apps))
    if unknown:
        raise SmartShelfError(f"unknown spark app(s) {', '.join(unknown)} (known: {', '.join(apps)})")
    return [apps[name] for name in names]


def query_groups(settings: Settings, apps: list[App]) -> dict[str, list[str]]:
    """Query name -> the names of the apps it runs: the keyed apps (every app of the twin) share the keyed query, the
    lake sink has its own (its delta-spark commits then overlap the twin's next batch instead of lengthening it)."""
    if settings.spark_query_per_app or len(apps) == 1:
        return {app.name: [app.name] for app in apps}
    keyed = [app.name for app in apps if isinstance(app, KEYED)]
    return {**({KEYED_QUERY: keyed} if keyed else {}), **{app.name: [app.name] for app in apps if app.name not in keyed}}


def run(settings: Settings, names: Iterable[str] | None = None) -> None:
    """Run the named apps (all by default), the twin's and the pulse's, until SIGTERM."""
    logger = logs.configure("spark", settings.log_level)
    wanted = None if names is None else list(names)
    pulse_names = list(PULSE_APPS) if wanted is None else [name for name in wanted if name in PULSE_APPS]
    apps = select_apps(None if wanted is None else [name for name in wanted if name not in PULSE_APPS])
    life = Lifecycle("spark", redis_client(settings))
    groups = {**query_groups(settings, apps), **{name: [name] for name in pulse_names}}
    with life.beating():
        spark = spark_session(settings)
        ios = {name: BatchIO(settings, name, spark) for name in groups}
        stores = _load_stores(settings) if pulse_names or any(isinstance(app, KEYED) for app in apps) else None
        starters = {name: _twin_starter(spark, settings, name, groups[name], ios[name], stores) for name in groups
                    if name not in pulse_names}
        if pulse_names:
            assert stores is not None
            starters |= {name: _pulse_starter(spark, settings, stores, ios[name])
                         for name in pulse_names}
        queries = {name: start() for name, start in starters.items()}
    late = LateCounter(redis_client(settings))
    clock = SimClock(redis_client(settings))
    failures = {name: Failures() for name in queries}
    status_path = settings.run_dir / STATUS_FILE
    try:
        while not life.stopping:
            try:
                life.beat()
                for name in pulse_names:
                    late.update(name, queries[name])
                    report_read(clock, name, queries[name])
            except TRANSIENT_ERRORS as error:  # Redis restarting: the queries go on meanwhile
                logs.warning(logger, "cannot report to Redis", error=first_line(error)[:300])
            status_path.write_text(json.dumps({name: {"active": q.isActive, **q.status}
                                               for name, q in queries.items()}))
            for name, query in queries.items():
                if query.isActive:
                    continue
                failed = failures[name]
                if failed.recent(time.monotonic()) >= MAX_RESTARTS * len(groups[name]):
                    raise SmartShelfError(f"spark query {name} failed {failed.count} times in "
                                          f"{QUERY_FAILURES_WINDOW_S:.0f}s: {query.exception()}")
                pause_s = failed.add(time.monotonic())
                logs.warning(logger, "query failed, restarting it from its checkpoint", query=name,
                             failures=failed.count, after_s=round(pause_s, 1), error=str(query.exception())[:2000])
                life.pause(pause_s)
                with life.beating():
                    queries[name] = starters[name]()
            time.sleep(1.0)
    finally:
        for query in queries.values():
            query.stop()
        for io in ios.values():
            io.close()
        if life.stopping:  # a clean stop: the lockstep clock must not wait for these apps (a crash keeps them)
            for app in apps:
                clock.unregister(app.name)
        spark.stop()
        logs.info(logger, "stopped", queries=len(queries))


def _twin_starter(spark: SparkSession, settings: Settings, name: str, members: list[str], io: BatchIO,
                  stores: Mapping[str, StoreData] | None) -> Callable[[], StreamingQuery]:
    # new app objects each start: their state reloads from their last commit, never from a half-applied batch
    return lambda: start_apps(spark, settings, name, select_apps(members), io, stores)


def _pulse_starter(spark: SparkSession, settings: Settings, stores: Mapping[str, StoreData], io: BatchIO
                   ) -> Callable[[], StreamingQuery]:
    # a new app object each start: its state reloads from its last Delta commit
    return lambda: start_pulse(spark, settings, pulse_app(stores), stores, io)
