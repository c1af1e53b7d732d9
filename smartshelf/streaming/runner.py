"""Start any subset of the streaming apps as separate queries, each with its own checkpoint, in one
SparkSession; stop them cleanly on SIGTERM."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from smartshelf import logs
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.adapters.spark import kafka_options, spark_session
from smartshelf.apps.lifecycle import Lifecycle
from smartshelf.errors import SmartShelfError
from smartshelf.settings import Settings
from smartshelf.streaming.apps import StreamingApp, all_apps
from smartshelf.streaming.batch import BatchIO, SourceRecord, source_records

STATUS_FILE = "spark_queries.json"


MAX_RESTARTS = 3  # per query and run: a query that keeps failing stops the service, with its error


def start_query(spark: SparkSession, settings: Settings, app: StreamingApp, io: BatchIO | None = None
                ) -> StreamingQuery:
    io = io or BatchIO(settings, app.name)
    io.clock.register_offset_participant(app.name, app.topics)

    def each_batch(frame: DataFrame, batch_id: int) -> None:
        records = source_records(frame.select(*SourceRecord._fields).toArrow())
        received, output = io.decode(records, io.now(), app.validates)
        app.handle(io, batch_id, received, output)
        io.publish(output)
        io.report_progress(records)

    source = (spark.readStream.format(settings.kafka_format)
              .options(**kafka_options(settings, list(app.topics))).load())
    return (source.writeStream.queryName(app.name).foreachBatch(each_batch)
            .option("checkpointLocation", str(settings.run_dir / "checkpoints" / app.name))
            .trigger(processingTime="1 second").start())


def select_apps(names: Iterable[str] | None) -> list[StreamingApp]:
    apps = all_apps()
    if names is None:
        return list(apps.values())
    unknown = sorted(set(names) - set(apps))
    if unknown:
        raise SmartShelfError(f"unknown spark app(s) {', '.join(unknown)} (known: {', '.join(apps)})")
    return [apps[name] for name in names]


def run(settings: Settings, names: Iterable[str] | None = None) -> None:
    logger = logs.configure("spark", settings.log_level)
    apps = select_apps(names)
    life = Lifecycle("spark", redis_client(settings))
    spark = spark_session(settings)
    ios = {app.name: BatchIO(settings, app.name) for app in apps}
    queries = {app.name: start_query(spark, settings, app, ios[app.name]) for app in apps}
    restarts = dict.fromkeys(queries, 0)
    status_path = settings.run_dir / STATUS_FILE
    try:
        while not life.stopping:
            life.beat()
            status_path.write_text(json.dumps({name: {"active": q.isActive, **q.status}
                                               for name, q in queries.items()}))
            for name, query in queries.items():
                if query.isActive:
                    continue
                if restarts[name] == MAX_RESTARTS:
                    raise SmartShelfError(f"spark query {name} stopped {MAX_RESTARTS + 1} times: {query.exception()}")
                restarts[name] += 1
                logs.warning(logger, "query failed, restarting it from its checkpoint", query=name,
                             restart=restarts[name], error=str(query.exception())[:2000])
                # a new app object: its state reloads from its last Delta commit, never from a half-applied batch
                queries[name] = start_query(spark, settings, select_apps([name])[0], ios[name])
            time.sleep(1.0)
    finally:
        for query in queries.values():
            query.stop()
        for io in ios.values():
            io.close()
        if life.stopping:  # a clean stop: the lockstep clock must not wait for these apps (a crash keeps them)
            clock = SimClock(redis_client(settings))
            for app in apps:
                clock.unregister(app.name)
        spark.stop()
        logs.info(logger, "stopped", queries=len(queries))
