"""Delta Lake writes from inside Spark (delta-spark): each commit carries the writing app's transaction id, so
a batch that Spark replays after a crash is written once.

Delta keeps, per table, the last `txnVersion` committed under each `txnAppId`; a write whose version is not
newer is skipped by Delta itself. The apps use (app name, Spark batch id). Reading a table outside Spark (the
dashboard, checks, tests) goes through delta-rs (smartshelf.adapters.delta), which reads the same log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pyarrow as pa
from pyspark.sql import SparkSession
from pyspark.sql.pandas.types import from_arrow_schema

from smartshelf.adapters.delta import applied_batch


class SparkDelta:
    """Writes Arrow tables the apps built to Delta through the session's delta-spark."""

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark

    def write_batch(self, path: Path, data: pa.Table, app_id: str, batch_id: int,
                    mode: Literal["append", "overwrite"] = "append") -> bool:
        """Commit `data` as batch `batch_id` of `app_id`, once: a replayed batch is skipped. True if written."""
        done = applied_batch(path, app_id)
        if done is not None and done >= batch_id:
            return False  # also Delta's own rule; checked here to spare the Spark job
        self._writer(data, mode).option("txnAppId", app_id).option("txnVersion", batch_id).save(str(path))
        return True

    def overwrite(self, path: Path, data: pa.Table) -> None:
        """Replace the table's rows, outside any app's batch sequence (no transaction id)."""
        self._writer(data, "overwrite").save(str(path))

    def _writer(self, data: pa.Table, mode: str):  # type: ignore[no-untyped-def]
        # the registry's times are local (naive): TIMESTAMP_NTZ, as in the tables delta-init created
        schema = from_arrow_schema(data.schema, prefer_timestamp_ntz=True)
        return self.spark.createDataFrame(data, schema=schema).write.format("delta").mode(mode)
