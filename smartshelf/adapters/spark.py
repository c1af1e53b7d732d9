"""The SparkSession of the embedded runtime: small, with the JVM parts the pyspark wheel lacks — Spark's own Kafka
source and sink and delta-spark — from the jars Maven resolved (conf/jvm/pom.xml, profile `spark`). No jar is
downloaded at run time: on a standalone cluster the driver serves them to the executors (`spark.jars`).

The master is local threads by default, or a standalone cluster (settings.spark_master_url): the same apps, the
same checkpoints and tables, their tasks run by executors on the cluster's workers."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from pyspark.sql import SparkSession

from smartshelf.errors import SmartShelfError
from smartshelf.settings import Settings

CORES = 2  # the embedded session's local cores (this machine has 2), and the shuffle partitions
EXECUTOR_CORES = 1  # on a standalone cluster: one executor per worker, one core each (SPARK_WORKERS workers)
EXECUTOR_HEAP_SHARE = 0.6  # of a worker's memory; the rest is the executor's off-heap (RocksDB, Netty, metaspace)
JVM_PROFILE = "spark"
SCRATCH = "spark-scratch"  # under the run dir: one folder per driver process


def spark_jars(settings: Settings) -> list[str]:
    """The Kafka connector's and delta-spark's jars with what they need beyond pyspark's own."""
    jars = sorted(str(path) for path in (settings.jvm_dir / JVM_PROFILE).glob("*.jar"))
    if not any("spark-sql-kafka" in jar for jar in jars) or not any("delta-spark" in jar for jar in jars):
        raise SmartShelfError(f"Spark's Kafka connector or delta-spark is missing from {settings.jvm_dir / JVM_PROFILE}"
                              " (Maven, conf/jvm/pom.xml); run `make up`")
    return jars


def scratch_dir(settings: Settings) -> Path:
    """This driver's scratch space (Spark's local dir and the JVM's temp dir) under the run dir: Spark deletes
    its files on a clean stop only, so a driver killed -9 leaves ~35 MB behind, which the next driver sweeps
    (`sweep_scratch`) instead of letting them pile up in /tmp."""
    return settings.run_dir / SCRATCH / str(os.getpid())


def checkpoint_dir(settings: Settings, query_name: str) -> Path:
    """Where a streaming query keeps its checkpoint (offsets, commits, state) under the run dir."""
    return settings.run_dir / "checkpoints" / query_name


def sweep_scratch(root: Path, alive: Callable[[int], bool]) -> list[Path]:
    """Remove the scratch dirs under `root` of drivers no longer running; returns them."""
    swept = []
    for path in sorted(root.glob("*")) if root.is_dir() else []:
        if not (path.name.isdigit() and alive(int(path.name))):
            shutil.rmtree(path, ignore_errors=True)
            swept.append(path)
    return swept


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_if_scratch_elsewhere(active: SparkSession | None, scratch: Path) -> None:
    """A process's session made for another run dir keeps its scratch there, which goes when that run dir does
    (a shuffle then fails on a missing block dir): getOrCreate would hand it back, so stop it first."""
    if active is not None and active.sparkContext.getConf().get("spark.local.dir") != str(scratch):
        active.stop()


def spark_session(settings: Settings, app_name: str = "smartshelf") -> SparkSession:
    # Python workers must connect back over loopback and run the venv's interpreter (DESIGN.md, Spark notes)
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    sweep_scratch(settings.run_dir / SCRATCH, _pid_alive)
    scratch = scratch_dir(settings)
    _stop_if_scratch_elsewhere(SparkSession.getActiveSession(), scratch)
    (scratch / "tmp").mkdir(parents=True, exist_ok=True)
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    builder = SparkSession.builder.master(settings.spark_master_url).appName(app_name)
    if not settings.spark_master_url.startswith("local"):
        builder = (builder.config("spark.executor.cores", str(EXECUTOR_CORES))
                   .config("spark.executor.memory",
                           f"{int(settings.spark_worker_memory_mb * EXECUTOR_HEAP_SHARE)}m")
                   .config("spark.pyspark.python", sys.executable))
    spark = (
        builder
        .config("spark.jars", ",".join(spark_jars(settings)))
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.local.dir", str(scratch))
        .config("spark.driver.extraJavaOptions", f"-Djava.io.tmpdir={scratch / 'tmp'}")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", str(CORES))
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "1g")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        # Delta rebuilds a table's snapshot with a shuffle of 50 partitions by default: 50 tasks per commit on
        # 2 cores for tables of a few thousand rows (a commit took ~4 s instead of ~1 s; docs/architecture.md)
        .config("spark.databricks.delta.snapshotPartitions", "1")
        .config("spark.databricks.delta.stateReconstructionValidation.enabled", "false")
        # per commit: no checksum file and no operation metrics (~0.3 s of a ~1 s commit, measured)
        .config("spark.databricks.delta.writeChecksumFile.enabled", "false")
        .config("spark.databricks.delta.history.metricsEnabled", "false")
        # no Hadoop checksum files (.<file>.crc) beside Delta's log entries, which delta-rs maintenance deletes
        # (smartshelf.adapters.delta.maintain); the data files keep theirs (RocksDB's state store needs the
        # checksummed FileSystem), which the maintenance deletes with them
        .config("spark.hadoop.fs.AbstractFileSystem.file.impl", "org.apache.hadoop.fs.local.RawLocalFs")
        .config("spark.sql.streaming.stateStore.providerClass",
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
        # a batch's state commit writes the changes it made (a changelog), not a snapshot of the store: writes in
        # proportion to change; snapshots are taken in the background now and then
        .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def kafka_options(settings: Settings, topics: list[str]) -> dict[str, str]:
    """Spark's Kafka source options for our topics."""
    options = {"kafka.bootstrap.servers": settings.kafka_bootstrap_servers, "subscribe": ",".join(topics),
               "startingOffsets": settings.starting_offsets,
               # a compacted topic has gaps in its offsets, and a topic's retention may delete records that a
               # stopped query had not read yet: neither is a reason to stop the pipeline (the lockstep checks
               # catch a real loss)
               "failOnDataLoss": "false"}
    if settings.max_offsets_per_trigger:
        options["maxOffsetsPerTrigger"] = str(settings.max_offsets_per_trigger)
    return options


__all__ = ["checkpoint_dir", "kafka_options", "scratch_dir", "spark_session", "sweep_scratch"]
