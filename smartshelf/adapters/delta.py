"""Delta Lake from the driver (delta-rs): the lake layout bootstrapped from the registry's schemas, the apps'
durable state committed once per (app, batch), and reads for whatever runs no Spark (dashboard, checks).

The lake layers that mirror topics (raw, ops, analytics) are written inside Spark by delta-spark
(smartshelf.adapters.spark_delta). The state commits stay here, on the lockstep's critical path: a delta-rs
commit takes ~20 ms, a delta-spark one ~0.6-1 s on this machine (docs/architecture.md, "Delta through Spark")."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, TableFeatures, Transaction, write_deltalake
from pydantic import BaseModel

from smartshelf.registry import APP_STATE_DIR, TABLES, Table
from smartshelf.tabular import arrow_schema

ModelT = TypeVar("ModelT", bound=BaseModel)


def table_path(delta_dir: Path, table: Table) -> Path:
    assert table.delta is not None
    return delta_dir / table.delta


def bootstrap(delta_dir: Path) -> list[str]:
    """Create every registry Delta table that does not exist yet, empty; returns those created."""
    created = []
    for table in TABLES:
        if table.delta is None:
            continue
        path = table_path(delta_dir, table)
        if DeltaTable.is_deltatable(str(path)):
            continue
        path.mkdir(parents=True, exist_ok=True)
        created_table = DeltaTable.create(str(path), schema=arrow_schema(table.schema), mode="ignore", name=table.name)
        # delta-rs lists only timestampNtz among the writer features; delta-spark counts NOT NULL columns as
        # invariants and refuses a table whose protocol does not name that feature too
        created_table.alter.add_feature(TableFeatures.Invariants, allow_protocol_versions_increase=True)
        created.append(table.delta)
    return created


def app_state_path(delta_dir: Path, app_name: str) -> Path:
    """The Delta table holding one loop app's state."""
    return delta_dir / APP_STATE_DIR / app_name


def to_arrow(model: type[BaseModel], rows: Sequence[BaseModel]) -> pa.Table:
    return pa.Table.from_pylist([row.model_dump() for row in rows], schema=arrow_schema(model))


def applied_batch(path: Path, app_id: str) -> int | None:
    """The last batch of `app_id` committed to the table (Delta transaction identifiers), None if none (or if
    there is no table yet)."""
    if not DeltaTable.is_deltatable(str(path)):
        return None
    return DeltaTable(str(path)).transaction_version(app_id)


def write_batch(path: Path, data: pa.Table, app_id: str, batch_id: int,
                mode: Literal["append", "overwrite"] = "append") -> bool:
    """Commit `data` as batch `batch_id` of `app_id`, once: a replayed batch is skipped. True if written."""
    done = applied_batch(path, app_id)
    if done is not None and done >= batch_id:
        return False
    write_deltalake(str(path), data, mode=mode,
                    commit_properties=CommitProperties(app_transactions=[Transaction(app_id, batch_id)]))
    return True


def overwrite(path: Path, data: pa.Table) -> None:
    """Replace the table's rows, outside any app's batch sequence (no transaction id)."""
    write_deltalake(str(path), data, mode="overwrite")


def read_rows(path: Path, model: type[ModelT]) -> list[ModelT]:
    """Every row of the table (none if there is no table yet)."""
    if not DeltaTable.is_deltatable(str(path)):
        return []
    return [model.model_validate(row) for row in DeltaTable(str(path)).to_pyarrow_table().to_pylist()]
