"""The SparkSession of the embedded runtime: local, small, with our Kafka data source registered."""

from __future__ import annotations

import os
import sys

from pyspark.sql import SparkSession

from smartshelf.adapters.spark_kafka import FORMAT, READ_TASKS_OPTION, KafkaDataSource
from smartshelf.settings import Settings


CORES = 2  # the embedded session's local cores (this machine has 2)


def spark_session(settings: Settings, app_name: str = "smartshelf") -> SparkSession:
    # Python workers must connect back over loopback and run the venv's interpreter (DESIGN.md, Spark notes)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    spark = (
        SparkSession.builder.master(f"local[{CORES}]").appName(app_name)
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.streaming.stateStore.providerClass",
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.dataSource.register(KafkaDataSource)
    return spark


def kafka_options(settings: Settings, topics: list[str]) -> dict[str, str]:
    """Spark's Kafka options for our topics, valid for the JVM `kafka` format as for ours."""
    options = {"kafka.bootstrap.servers": settings.kafka_bootstrap_servers, "subscribe": ",".join(topics),
               "startingOffsets": settings.starting_offsets}
    if settings.kafka_format == FORMAT:  # a task per core, not per Kafka partition (spark_kafka.read_tasks)
        options[READ_TASKS_OPTION] = str(CORES)
    if settings.max_offsets_per_trigger:
        options["maxOffsetsPerTrigger"] = str(settings.max_offsets_per_trigger)
    return options


__all__ = ["FORMAT", "kafka_options", "spark_session"]
