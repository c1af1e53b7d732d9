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


def start_query(spark: SparkSession, settings: Settings, app: StreamingApp) -> StreamingQuery:
    io = BatchIO(settings, app.name)
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
    queries = [start_query(spark, settings, app) for app in apps]
    status_path = settings.run_dir / STATUS_FILE
    try:
        while not life.stopping:
            life.beat()
            status_path.write_text(json.dumps({q.name: {"active": q.isActive, **q.status} for q in queries}))
            failed = [q for q in queries if not q.isActive]
            if failed:
                raise SmartShelfError(f"spark query {failed[0].name} stopped: {failed[0].exception()}")
            time.sleep(1.0)
    finally:
        for query in queries:
            query.stop()
        if life.stopping:  # a clean stop: the lockstep clock must not wait for these apps (a crash keeps them)
            clock = SimClock(redis_client(settings))
            for app in apps:
                clock.unregister(app.name)
        spark.stop()
        logs.info(logger, "stopped", queries=len(queries))
