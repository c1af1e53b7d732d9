"""Delta Lake from the driver (delta-rs): the lake layout bootstrapped from the registry's schemas, the apps'
durable state committed once per (app, batch), reads for whatever runs no Spark (dashboard, checks), and the
maintenance that keeps each table's files bounded however long the store runs.

The lake layers that mirror topics (raw, ops, analytics) are written inside Spark by delta-spark
(smartshelf.adapters.spark_delta). The state commits stay here, on the lockstep's critical path: a delta-rs
commit takes ~20 ms, a delta-spark one ~0.6-1 s on this machine (docs/architecture.md, "Delta through Spark")."""

from __future__ import annotations

import json

from collections.abc import Sequence
from dataclasses import dataclass, field
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
        created_table = DeltaTable.create(str(path), schema=arrow_schema(table.schema), mode="ignore", name=table.name,
                                          configuration=dict(RETENTION))
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


# how long a table keeps the log entries before its last checkpoint (Delta's default is 30 days): readers start
# from the checkpoint, so the older entries are needed only to travel back in time, which nothing here does
RETENTION = {"delta.logRetentionDuration": "interval 1 minute"}
# the versions whose files a vacuum keeps besides the latest: a reader that loaded one of them moments ago still
# finds its files (a table is committed at most once per batch, so 10 versions are at least 10 batches old)
KEEP_VERSIONS = 10


@dataclass(frozen=True)
class Maintained:
    files_compacted: int
    files_deleted: int


def maintain(path: Path) -> Maintained:
    """Bound a table's files: many small files compacted into few, the data files that no recent version reads
    deleted, a checkpoint of the log written and the log entries before it past the retention dropped. Rows and
    the writers' transaction ids (`applied_batch`) are unchanged. Only the table's writer may call it, between
    two of its commits (Delta's optimistic commits would make a concurrent writer retry or fail)."""
    table = DeltaTable(str(path))
    if not RETENTION.items() <= dict(table.metadata().configuration).items():
        table.alter.set_table_properties(RETENTION)
    compacted = table.optimize.compact()
    version = table.version()
    # only versions still loadable can be kept: those from the last checkpoint on (delta-spark checkpoints a table
    # it writes every 10 commits and then drops the log entries before it past the retention, as we do below)
    oldest = max(version - KEEP_VERSIONS, last_checkpoint(path))
    deleted = table.vacuum(retention_hours=0, dry_run=False, enforce_retention_duration=False,
                           keep_versions=list(range(oldest, version + 1)))
    for name in deleted:  # the checksum Hadoop's file system wrote beside a file delta-spark wrote
        (path / name).with_name(f".{Path(name).name}.crc").unlink(missing_ok=True)
    table.create_checkpoint()
    table.cleanup_metadata()
    return Maintained(int(compacted.get("numFilesRemoved", 0)), len(deleted))


def last_checkpoint(path: Path) -> int:
    """The version of the table's last checkpoint (0 if none): the oldest version a reader can still load once the
    log entries before it are gone."""
    pointer = path / "_delta_log" / "_last_checkpoint"
    return int(json.loads(pointer.read_text())["version"]) if pointer.exists() else 0


@dataclass
class Maintenance:
    """A writer's commits counted per table: every `every`-th commit of a table is followed by `maintain`, so
    the files of a table stay bounded by its commits since the last pass, not by all its commits ever."""

    every: int
    commits: dict[Path, int] = field(default_factory=dict)

    def committed(self, path: Path) -> Maintained | None:
        self.commits[path] = self.commits.get(path, 0) + 1
        return maintain(path) if self.commits[path] % self.every == 0 else None
