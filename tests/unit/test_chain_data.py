"""A chain's reference data: generated per store, written one folder per store, read back, and the registry's
per-store tables (issue 22). No server: the PostgreSQL side is in tests/integration/test_data.py."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smartshelf.adapters.postgres import MIGRATIONS_DIR, STORE_SETTING
from smartshelf.datagen import generate_chain, generate_store, write_chain
from smartshelf.errors import SmartShelfError
from smartshelf.registry import STORE_COLUMN, TABLES, table
from smartshelf.settings import Settings
from smartshelf.schemas import FIRST_STORE
from smartshelf.store import MAX_STORES, REFERENCE_FILES, STORE_INVENTORY, chain_store_ids, is_store_id, store_seed
from smartshelf.store_csv import chain_csv_dirs, read_chain_csvs, read_store_csvs
from smartshelf.tabular import create_table_sql, table_columns

SEED = 3


@pytest.fixture(scope="module")
def chain() -> dict:
    return generate_chain(SEED, 3)


def test_chain_store_ids_are_numbered_from_the_one_store_default() -> None:
    assert chain_store_ids(3) == ["store-001", "store-002", "store-003"]
    assert chain_store_ids(1) == [FIRST_STORE] == [Settings().store_id]
    for stores in (0, MAX_STORES + 1):
        with pytest.raises(ValueError, match="1 to 999 stores"):
            chain_store_ids(stores)
    assert all(is_store_id(store_id) for store_id in chain_store_ids(MAX_STORES))
    assert not any(is_store_id(text) for text in ("", "Store-1", ".hidden", "a/b", "a|b", "x" * 64))


def test_a_stores_data_depends_on_the_seed_and_its_id_not_on_the_chains_size(chain: dict) -> None:
    assert chain["store-001"] == generate_store(SEED)  # a one-store chain is the one store of the seed
    assert generate_chain(SEED, 5)["store-003"] == chain["store-003"]
    assert generate_chain(SEED, 3) == chain
    assert generate_chain(SEED + 1, 3)["store-002"] != chain["store-002"]
    seeds = {store_seed(SEED, store_id) for store_id in chain_store_ids(50)}
    assert len(seeds) == 50
    # stores differ from one another; each is a whole, consistent store
    assert chain["store-002"].store_inventory != chain["store-003"].store_inventory
    assert all(len(store.store_inventory) > 1000 for store in chain.values())


def test_a_chain_is_written_one_folder_per_store_and_read_back(chain: dict, tmp_path: Path) -> None:
    paths = write_chain(chain, tmp_path)
    assert len(paths) == 3 * 2 * len(REFERENCE_FILES)
    csv_dir = tmp_path / "db_csv"
    assert chain_csv_dirs(csv_dir, single_store="ignored") == {store_id: csv_dir / store_id for store_id in chain}
    assert read_chain_csvs(csv_dir, "ignored") == chain
    assert sorted(path.name for path in (tmp_path / "store-002").glob("*.parquet")) == sorted(
        f"{file.stem}.parquet" for file in REFERENCE_FILES)


def test_one_store_keeps_the_one_store_layout_and_takes_the_running_stores_id(chain: dict, tmp_path: Path) -> None:
    write_chain({FIRST_STORE: chain[FIRST_STORE]}, tmp_path)
    assert (tmp_path / "db_csv" / STORE_INVENTORY).is_file()
    assert read_chain_csvs(tmp_path / "db_csv", "store-042") == {
        "store-042": dataclasses.replace(chain[FIRST_STORE], store_id="store-042")}


def test_a_folder_of_the_other_layout_or_of_other_stores_is_refused(chain: dict, tmp_path: Path) -> None:
    write_chain(chain, tmp_path)
    with pytest.raises(SmartShelfError, match=r"holds the folders of stores store-001, store-002, store-003, which "
                                              r"this store would not replace"):
        write_chain({FIRST_STORE: chain[FIRST_STORE]}, tmp_path)
    with pytest.raises(SmartShelfError, match=r"holds the folders of stores store-003, which this chain would not"):
        write_chain(generate_chain(SEED, 2), tmp_path)
    single = tmp_path / "single"
    write_chain({FIRST_STORE: chain[FIRST_STORE]}, single)
    with pytest.raises(SmartShelfError, match=r"holds one store's reference files, which this chain would not"):
        write_chain(chain, single)


def test_reading_a_chain_names_the_store_and_the_layout_problems(chain: dict, tmp_path: Path) -> None:
    write_chain(chain, tmp_path)
    csv_dir = tmp_path / "db_csv"
    (csv_dir / "store-002" / "store_batches.csv").unlink()
    with pytest.raises(SmartShelfError, match=r"^store store-002 \(.*store-002\): missing store_batches.csv"):
        read_chain_csvs(csv_dir, FIRST_STORE)
    shutil.copy(csv_dir / "store-001" / STORE_INVENTORY, csv_dir / STORE_INVENTORY)
    with pytest.raises(SmartShelfError, match=r"holds one store's store_inventory_final.csv and store folders"):
        read_chain_csvs(csv_dir, FIRST_STORE)
    (csv_dir / STORE_INVENTORY).unlink()
    shutil.move(csv_dir / "store-003", csv_dir / "Store 3")
    with pytest.raises(SmartShelfError, match=r"Store 3: a store's folder is named by its id"):
        read_chain_csvs(csv_dir, FIRST_STORE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SmartShelfError, match=r"no store in .*empty: expected store_inventory_final.csv"):
        read_chain_csvs(tmp_path / "empty", FIRST_STORE)
    with pytest.raises(SmartShelfError, match=r"nowhere is not a folder"):
        read_chain_csvs(tmp_path / "nowhere", FIRST_STORE)
    # one store's own problems read as before, without a store name
    with pytest.raises(SmartShelfError, match=r"^missing store_batches.csv"):
        read_store_csvs(csv_dir / "store-002")


def test_the_reference_tables_and_only_they_are_keyed_by_store_first() -> None:
    per_store = {t.name for t in TABLES if t.per_store}
    assert per_store == {file.attr for file in REFERENCE_FILES}
    inventory = table("store_inventory")
    assert inventory.pg_key == (STORE_COLUMN, "shelf_id") and inventory.key == ("shelf_id",)
    assert table_columns(inventory)[0] == (STORE_COLUMN, "text", False)
    assert STORE_COLUMN not in inventory.schema.model_fields  # the CSV format stays the reference project's
    ddl = create_table_sql(inventory)
    assert f"    {STORE_COLUMN} text NOT NULL,\n" in ddl and f"PRIMARY KEY ({STORE_COLUMN}, shelf_id)" in ddl
    assert table("alerts").pg_key == table("alerts").key


def test_the_views_pick_the_running_stores_rows_by_the_setting_db_init_sets() -> None:
    views = (MIGRATIONS_DIR / "04_views.sql").read_text()
    reads = re.findall(r"current_setting\('([^']+)'", views)
    assert reads and set(reads) == {STORE_SETTING}


def test_cli_generates_a_chain_and_refuses_a_bad_store_count_in_one_line(tmp_path: Path) -> None:
    cli = [str(Path(sys.executable).with_name("smartshelf"))]
    done = subprocess.run([*cli, "data", "generate", "--seed", str(SEED), "--stores", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "generated chain of 2 stores (seed 3)" in done.stdout
    assert read_chain_csvs(tmp_path / "db_csv", FIRST_STORE) == generate_chain(SEED, 2)
    refused = subprocess.run([*cli, "data", "generate", "--stores", "0", "--out", str(tmp_path / "x")],
                             capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: --stores must be 1 to 999, not 0"
