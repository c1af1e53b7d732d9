"""Delta Lake adapter (delta-rs): the lake layout bootstrapped from the registry's schemas."""

from __future__ import annotations

from pathlib import Path

from deltalake import DeltaTable

from smartshelf.registry import TABLES, Table
from smartshelf.tabular import arrow_schema


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
        DeltaTable.create(str(path), schema=arrow_schema(table.schema), mode="ignore", name=table.name)
        created.append(table.delta)
    return created
