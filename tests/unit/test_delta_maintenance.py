"""Delta maintenance (smartshelf.adapters.delta.maintain) on local tables: the files of a table written every
batch stay bounded, while its rows, its writers' transaction ids and the recent versions readers may hold
are kept."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest
from deltalake import DeltaTable

from smartshelf.adapters import delta
from smartshelf.registry import table
from smartshelf.schemas import ShelfState

EVERY = 20


def _rows(batch: int, count: int = 50) -> list[ShelfState]:
    return [ShelfState(shelf_id=f"S{n}", current_stock=batch + n, current_weight=1.0, last_event_type="pickup",
                       last_event_ts=datetime(2025, 1, 1, 9)) for n in range(count)]


def _files(path: Path) -> tuple[int, int]:
    """(data files, log files) on disk."""
    data = [f for f in path.glob("*.parquet")]
    log = [f for f in (path / "_delta_log").iterdir() if f.suffix == ".json"]
    return len(data), len(log)


@pytest.fixture
def state_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setitem(delta.RETENTION, "delta.logRetentionDuration", "interval 1 second")
    delta.bootstrap(tmp_path)
    return delta.table_path(tmp_path, table("shelf_state"))


def test_a_table_overwritten_every_batch_keeps_its_rows_and_ids_and_bounded_files(state_table: Path) -> None:
    maintenance = delta.Maintenance(EVERY)
    passes = []
    for batch in range(4 * EVERY + 5):
        delta.write_batch(state_table, delta.to_arrow(ShelfState, _rows(batch)), "shelf-aggregator", batch,
                          mode="overwrite")
        if batch == EVERY:
            time.sleep(1.2)  # the log entries before the next checkpoint pass the retention
        passes.append(maintenance.committed(state_table))
    assert [n for n, done in enumerate(passes) if done] == [EVERY - 1, 2 * EVERY - 1, 3 * EVERY - 1, 4 * EVERY - 1]
    assert all(done.files_deleted > 0 for done in passes if done)
    assert delta.read_rows(state_table, ShelfState) == _rows(4 * EVERY + 4)
    assert delta.applied_batch(state_table, "shelf-aggregator") == 4 * EVERY + 4  # replays still recognised
    data_files, log_files = _files(state_table)
    # without maintenance: 85 data files and 86 log entries; with it, the kept versions' and those since the pass
    assert data_files <= delta.KEEP_VERSIONS + 1 + 5, data_files
    assert log_files < 4 * EVERY, log_files


def test_a_reader_of_a_recent_version_still_finds_its_files(state_table: Path) -> None:
    for batch in range(EVERY):
        delta.write_batch(state_table, delta.to_arrow(ShelfState, _rows(batch)), "app", batch, mode="overwrite")
    reader = DeltaTable(str(state_table))  # a snapshot loaded just before the writer's maintenance
    for batch in range(EVERY, EVERY + delta.KEEP_VERSIONS - 1):
        delta.write_batch(state_table, delta.to_arrow(ShelfState, _rows(batch)), "app", batch, mode="overwrite")
    delta.maintain(state_table)
    rows = reader.to_pyarrow_table().to_pylist()
    assert [ShelfState.model_validate(row) for row in rows] == _rows(EVERY - 1)


def test_many_small_appends_are_compacted(state_table: Path) -> None:
    for batch in range(EVERY):
        delta.write_batch(state_table, delta.to_arrow(ShelfState, _rows(batch, 1)), "app", batch)
    done = delta.maintain(state_table)
    assert done.files_compacted == EVERY
    assert len(DeltaTable(str(state_table)).file_uris()) == 1
    assert sorted(row.current_stock for row in delta.read_rows(state_table, ShelfState)) == list(range(EVERY))


def test_the_checksums_hadoop_wrote_beside_deleted_files_go_with_them(state_table: Path) -> None:
    for batch in range(EVERY):
        delta.write_batch(state_table, delta.to_arrow(ShelfState, _rows(batch)), "app", batch, mode="overwrite")
        for data_file in state_table.glob("*.parquet"):  # as delta-spark's writes leave them
            data_file.with_name(f".{data_file.name}.crc").touch()
    delta.maintain(state_table)
    kept = {f.name for f in state_table.glob("*.parquet")}
    assert {f.name for f in state_table.glob(".*.crc")} == {f".{name}.crc" for name in kept}
    assert len(kept) < EVERY


def test_maintenance_after_another_writers_checkpoint_and_log_cleanup(state_table: Path) -> None:
    """delta-spark checkpoints a table it writes every 10 commits and drops the log entries before that past the
    retention; the versions before such a checkpoint cannot be loaded any more, so they cannot be kept either
    (a demo run's lake sink failed on this: "No files in log segment")."""
    for batch in range(15):
        delta.write_batch(state_table, delta.to_arrow(ShelfState, _rows(batch)), "app", batch, mode="overwrite")
    time.sleep(1.2)
    other_writer = DeltaTable(str(state_table))
    other_writer.create_checkpoint()
    other_writer.cleanup_metadata()
    for batch in range(15, 18):
        delta.write_batch(state_table, delta.to_arrow(ShelfState, _rows(batch)), "app", batch, mode="overwrite")
    assert delta.maintain(state_table).files_deleted > 0
    assert delta.read_rows(state_table, ShelfState) == _rows(17)
