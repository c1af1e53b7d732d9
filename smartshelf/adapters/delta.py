"""Delta Lake outside Spark (delta-rs): the lake layout bootstrapped from the registry's schemas, and reads.

The streaming apps write through delta-spark inside their Spark session (smartshelf.adapters.spark_delta); the
dashboard, the checks and the init job, which run no Spark, use this module on the same tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
from deltalake import DeltaTable, TableFeatures
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


def read_rows(path: Path, model: type[ModelT]) -> list[ModelT]:
    """Every row of the table (none if there is no table yet)."""
    if not DeltaTable.is_deltatable(str(path)):
        return []
    return [model.model_validate(row) for row in DeltaTable(str(path)).to_pyarrow_table().to_pylist()]
