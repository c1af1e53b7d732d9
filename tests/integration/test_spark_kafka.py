"""Spark's own Kafka connector and delta-spark, from the jars the bootstrap resolved, in the session the apps use,
against the real broker: a streaming read with a checkpoint (a restarted query reads only what is new, at most
maxOffsetsPerTrigger a batch), and the lake's Delta writes (an append once per (writer, batch), a merge by key)
readable by delta-rs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession

from smartshelf.adapters import delta
from smartshelf.adapters.kafka import KafkaAdapter, TopicConfig
from smartshelf.adapters.spark import kafka_options, spark_session
from smartshelf.adapters.spark_delta import SparkDelta
from smartshelf.registry import table
from smartshelf.schemas import Alert, ShelfRestockPlan
from smartshelf.settings import Settings

TOPIC = "spark_source_test"


@pytest.fixture(scope="module")
def spark(stack: Settings) -> Iterator[SparkSession]:
    session = spark_session(stack, "test-spark-kafka")
    yield session
    session.stop()


def _produce(stack: Settings, first: int, count: int) -> None:
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    adapter.ensure_topics([TopicConfig(TOPIC, 2, compacted=False)])
    producer = adapter.producer()
    for i in range(first, first + count):
        producer.send(TOPIC, key=f"k{i % 7}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()
    adapter.close()


def test_sparks_kafka_source_streams_from_its_checkpoint(spark: SparkSession, stack: Settings,
                                                         scratch_dir: Path) -> None:
    _produce(stack, 0, 1000)
    seen: list[str] = []
    sizes: list[int] = []

    def collect(frame: DataFrame, batch_id: int) -> None:
        values = [bytes(r.value).decode() for r in frame.select("value").collect()]
        sizes.append(len(values))
        seen.extend(values)

    def run() -> None:
        options = {**kafka_options(stack, [TOPIC]), "startingOffsets": "earliest", "maxOffsetsPerTrigger": "300"}
        query = (spark.readStream.format("kafka").options(**options).load()
                 .writeStream.foreachBatch(collect).option("checkpointLocation", str(scratch_dir / "ckpt")).start())
        query.processAllAvailable()
        query.stop()

    run()
    assert sorted(seen) == sorted(f"v{i}" for i in range(1000))
    assert max(sizes) <= 300
    seen.clear()
    _produce(stack, 1000, 50)
    run()
    assert sorted(seen) == sorted(f"v{i}" for i in range(1000, 1050))


def _alert(n: int) -> Alert:
    return Alert(alert_id=f"a{n}", alert_type="low_stock", location="store", severity="warning", shelf_id=f"S{n}",
                 message="low", value=1, threshold=2, ts=datetime(2025, 1, 1, 9, n))


def test_the_lake_writes_once_per_batch_and_merges_by_key(spark: SparkSession, scratch_dir: Path) -> None:
    delta.bootstrap(scratch_dir)  # the tables as delta-init creates them, with delta-rs
    lake = SparkDelta(spark)
    alerts = delta.table_path(scratch_dir, table("alerts"))
    first, second = [_alert(n) for n in range(3)], [_alert(n) for n in range(3, 5)]
    assert lake.append_batch(alerts, delta.to_arrow(Alert, first), "lake-sink", 0)
    lake.flush()
    # a replay of batch 0 (a crash before Spark committed it) appends nothing; batch 1 appends
    assert not lake.append_batch(alerts, delta.to_arrow(Alert, first), "lake-sink", 0)
    assert lake.append_batch(alerts, delta.to_arrow(Alert, second), "lake-sink", 1)
    lake.flush()
    assert sorted(a.alert_id for a in delta.read_rows(alerts, Alert)) == [f"a{n}" for n in range(5)]
    assert delta.read_rows(alerts, Alert)[0].ts.tzinfo is None  # local simulated times stay local

    plans = delta.table_path(scratch_dir, table("shelf_restock_plan"))
    at = datetime(2025, 1, 1, 9)

    def plan(plan_id: str, status: str) -> ShelfRestockPlan:
        return ShelfRestockPlan(plan_id=plan_id, shelf_id="S1", quantity=4, status=status, created_ts=at,
                                updated_ts=at)

    lake.upsert(plans, delta.to_arrow(ShelfRestockPlan, [plan("p1", "planned"), plan("p2", "planned"),
                                                          plan("p1", "picked")]), ("plan_id",))
    lake.flush()
    lake.upsert(plans, delta.to_arrow(ShelfRestockPlan, [plan("p2", "cancelled")]), ("plan_id",))
    lake.flush()
    assert {p.plan_id: p.status for p in delta.read_rows(plans, ShelfRestockPlan)} == {"p1": "picked",
                                                                                        "p2": "cancelled"}
    assert len(delta.read_rows(plans, ShelfRestockPlan)) == 2
