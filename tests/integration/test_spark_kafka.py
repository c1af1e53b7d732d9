"""Our Kafka data source inside real Spark, against the real broker: batch reads, streaming with a
checkpoint (a restarted query reads only what is new), maxOffsetsPerTrigger."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pyspark.sql import DataFrame, SparkSession

from smartshelf.adapters.kafka import KafkaAdapter, TopicConfig
from smartshelf.adapters.spark import kafka_options, spark_session
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
        producer.send(TOPIC, key=f"k{i % 7}".encode(), value=f"v{i}".encode(), timestamp_ms=1735718400000 + i)
    producer.flush()
    producer.close()
    adapter.close()


def test_source_reads_topics_with_sparks_kafka_schema(spark: SparkSession, stack: Settings,
                                                     scratch_dir: Path) -> None:
    _produce(stack, 0, 1000)
    batch = spark.read.format(stack.kafka_format).options(**kafka_options(stack, [TOPIC])).load()
    assert [(f.name, f.dataType.simpleString()) for f in batch.schema.fields] == [
        ("key", "binary"), ("value", "binary"), ("topic", "string"), ("partition", "int"), ("offset", "bigint"),
        ("timestamp", "timestamp"), ("timestampType", "int")]
    rows = batch.collect()
    assert sorted(bytes(r.value).decode() for r in rows) == sorted(f"v{i}" for i in range(1000))
    assert {r.partition for r in rows} == {0, 1}
    by_partition: dict[int, list[int]] = {}
    for row in rows:
        by_partition.setdefault(row.partition, []).append(row.offset)
    assert all(offsets == list(range(len(offsets))) for offsets in by_partition.values())

    # streaming: every record once per trigger of at most 300, and a restart from the checkpoint reads only new ones
    seen: list[str] = []
    sizes: list[int] = []

    def collect(frame: DataFrame, batch_id: int) -> None:
        values = [bytes(r.value).decode() for r in frame.select("value").collect()]
        sizes.append(len(values))
        seen.extend(values)

    def run() -> None:
        options = {**kafka_options(stack, [TOPIC]), "startingOffsets": "earliest", "maxOffsetsPerTrigger": "300"}
        query = (spark.readStream.format(stack.kafka_format).options(**options).load()
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
