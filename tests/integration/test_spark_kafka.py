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

    # one task reading both partitions with one consumer reads the same records
    one_task = spark.read.format(stack.kafka_format).options(**{**kafka_options(stack, [TOPIC]), "readTasks": "1"}).load()
    assert one_task.rdd.getNumPartitions() == 1
    assert sorted((r.partition, r.offset, bytes(r.value)) for r in one_task.collect()) == sorted(
        (r.partition, r.offset, bytes(r.value)) for r in rows)

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


def _values(stack: Settings, topic: str) -> list[tuple[bytes | None, bytes]]:
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    records = [(r.key, r.value) for r in adapter.read(adapter.partitions_for(topic))]
    adapter.close()
    return records


def test_sink_writes_batches_and_streams_as_sparks_kafka_sink(spark: SparkSession, stack: Settings,
                                                              scratch_dir: Path) -> None:
    adapter = KafkaAdapter(stack.kafka_bootstrap_servers)
    adapter.ensure_topics([TopicConfig("sink_a", 2, compacted=False), TopicConfig("sink_b", 1, compacted=False),
                           TopicConfig("sink_stream", 2, compacted=False)])
    adapter.close()
    connection = {"kafka.bootstrap.servers": stack.kafka_bootstrap_servers}

    # batch: a topic per row, string values, a null key
    rows = [("sink_a" if i % 2 else "sink_b", f"k{i}" if i % 5 else None, f"w{i}") for i in range(200)]
    spark.createDataFrame(rows, "topic string, key string, value string").write.format(
        stack.kafka_format).options(**connection).mode("append").save()
    for name, first in (("sink_a", 1), ("sink_b", 0)):
        assert sorted(_values(stack, name), key=lambda kv: kv[1]) == sorted(
            (((f"k{i}".encode() if i % 5 else None), f"w{i}".encode()) for i in range(first, 200, 2)),
            key=lambda kv: kv[1])

    # stream: our source → our sink with the `topic` option, binary values carried through
    query = (spark.readStream.format(stack.kafka_format)
             .options(**{**kafka_options(stack, [TOPIC]), "startingOffsets": "earliest"}).load()
             .select("key", "value").writeStream.format(stack.kafka_format)
             .options(**connection, topic="sink_stream")
             .option("checkpointLocation", str(scratch_dir / "sink-ckpt")).start())
    query.processAllAvailable()
    query.stop()
    assert sorted(v for _, v in _values(stack, "sink_stream")) == sorted(v for _, v in _values(stack, TOPIC))

    with pytest.raises(Exception, match="needs a 'value' column"):
        spark.createDataFrame([("x",)], "other string").write.format(stack.kafka_format).options(
            **connection, topic="sink_a").mode("append").save()
