"""The synthetic store: deterministic, at reference scale, in the reference data's format, consistent, and eventful
within a week."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from smartshelf.datagen import CATEGORIES, generate_store, write_store
from smartshelf.store import REFERENCE_FILES, BatchRow, StoreData, check_consistency, columns

START = date(2025, 1, 1)
REPO = Path(__file__).resolve().parents[2]
PERISHABLE = {c.name for c in CATEGORIES if c.perishable}


@pytest.fixture(scope="module")
def store() -> StoreData:
    return generate_store(42)


def lots_by_shelf(store: StoreData) -> dict[str, list[BatchRow]]:
    """Each shelf's lots, on the shelf and in the warehouse, oldest first."""
    by_shelf: defaultdict[str, list[BatchRow]] = defaultdict(list)
    for lot in [*store.store_batches, *store.warehouse_batches]:
        by_shelf[lot.shelf_id].append(lot)
    return {shelf: sorted(found, key=lambda lot: lot.batch_code) for shelf, found in by_shelf.items()}


def file_bytes(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path: Path) -> None:
    first = write_store(generate_store(42), tmp_path / "a")
    write_store(generate_store(42), tmp_path / "b")
    files = file_bytes(tmp_path / "a")
    assert files == file_bytes(tmp_path / "b")
    names = {f"{t.stem}.parquet" for t in REFERENCE_FILES} | {f"db_csv/{t.stem}.csv" for t in REFERENCE_FILES}
    assert set(files) == names  # and no temp file left behind
    assert sorted(str(p.relative_to(tmp_path / "a")) for p in first) == sorted(names)


def test_different_seeds_differ(store: StoreData) -> None:
    assert generate_store(43) != store


def test_reference_scale(store: StoreData) -> None:
    assert 1050 <= len(store.store_inventory) <= 1150
    subcategories: defaultdict[str, set[str]] = defaultdict(set)
    aisles: defaultdict[str, set[int]] = defaultdict(set)
    for row in store.store_inventory:
        subcategories[row.item_category].add(row.item_subcategory)
        aisles[row.item_category].add(row.aisle)
    assert len(subcategories) == 29 and all(name == name.upper() for name in subcategories)
    assert all(3 <= len(subs) <= 7 for subs in subcategories.values())
    assert all(len(found) == 1 for found in aisles.values())
    assert sorted(a for found in aisles.values() for a in found) == list(range(1, 30))


def test_ids_follow_the_reference_format(store: StoreData) -> None:
    """shelf_id: 3 letters of the category, 3 of the subcategory, a number; batch_code: one counter over both
    lot files."""
    ids = [row.shelf_id for row in store.store_inventory]
    assert len(set(ids)) == len(ids)
    for row in store.store_inventory:
        prefix = row.item_category.replace(" ", "")[:3] + row.item_subcategory.replace(" ", "")[:3].upper()
        assert re.fullmatch(re.escape(prefix) + r"\d{4}", row.shelf_id), row.shelf_id
    codes = [lot.batch_code for lot in [*store.store_batches, *store.warehouse_batches]]
    assert sorted(codes) == [f"B{n:07d}" for n in range(1, len(codes) + 1)]


def test_weights_are_grams_and_a_full_shelf(store: StoreData) -> None:
    for row in [*store.store_inventory, *store.warehouse_inventory]:
        assert isinstance(row.item_weight, int) and 25 <= row.item_weight <= 3000
        assert row.shelf_weight == row.item_weight * row.maximum_stock


def test_every_shelf_has_one_to_four_lots(store: StoreData) -> None:
    lots = lots_by_shelf(store)
    assert set(lots) == {row.shelf_id for row in store.store_inventory}
    assert Counter(len(found) for found in lots.values()).keys() == {1, 2, 3, 4}


def test_generated_store_is_consistent(store: StoreData) -> None:
    assert check_consistency(store) == []


def test_lots_are_in_one_place_and_the_warehouse_holds_whole_cases(store: StoreData) -> None:
    assert all(lot.location == "in-store" and lot.batch_quantity_total == lot.batch_quantity_store
               for lot in store.store_batches)
    assert all(lot.location == "warehouse" and lot.batch_quantity_total == lot.batch_quantity_warehouse
               and lot.batch_quantity_total % lot.standard_batch_size == 0 for lot in store.warehouse_batches)


def test_stock_levels_are_realistic(store: StoreData) -> None:
    fills = [row.current_stock / row.maximum_stock for row in store.store_inventory]
    assert sum(fill >= 0.5 for fill in fills) / len(fills) > 0.85
    shelves = {row.shelf_id: row for row in store.store_inventory}
    for row in store.warehouse_inventory:
        assert row.maximum_stock >= 3 * shelves[row.shelf_id].maximum_stock


def test_expiry_dates(store: StoreData) -> None:
    lots = [lot for found in lots_by_shelf(store).values() for lot in found]
    week = START + timedelta(days=7)
    assert 0.02 <= sum(lot.expiry_date <= week for lot in lots) / len(lots) <= 0.5
    assert any(lot.expiry_date <= week for lot in lots if lot.item_category not in PERISHABLE)
    for lot in lots:
        assert lot.received_date <= START < lot.expiry_date
        horizon = 21 if lot.item_category in PERISHABLE else 730
        assert lot.expiry_date <= START + timedelta(days=horizon)


def test_older_lots_expire_first_and_the_shelf_holds_the_oldest(store: StoreData) -> None:
    for found in lots_by_shelf(store).values():
        assert [lot.location for lot in found] == sorted(lot.location for lot in found)  # in-store < warehouse
        assert [lot.received_date for lot in found] == sorted(lot.received_date for lot in found)
        assert [lot.expiry_date for lot in found] == sorted(lot.expiry_date for lot in found)


def test_discounts_are_few_and_within_the_first_month(store: StoreData) -> None:
    assert 0.01 <= len(store.discounts) / len(store.store_inventory) <= 0.1
    for discount in store.discounts:
        assert START <= discount.start_date <= discount.end_date < START + timedelta(days=30)


def test_start_date_moves_the_dates() -> None:
    later = generate_store(42, start_date=date(2026, 3, 1))
    assert all(lot.received_date <= date(2026, 3, 1) < lot.expiry_date for lot in later.store_batches)
    assert check_consistency(later) == []


def test_parquet_files_hold_the_rows(store: StoreData, tmp_path: Path) -> None:
    write_store(store, tmp_path)
    for table in REFERENCE_FILES:
        read = pq.read_table(tmp_path / f"{table.stem}.parquet")
        assert tuple(read.column_names) == columns(table.model)
        rows = [table.model.model_validate(record) for record in read.to_pylist()]
        assert rows == getattr(store, table.attr)


def test_create_db_script(tmp_path: Path) -> None:
    script = REPO / "data" / "create_db.py"
    subprocess.run([sys.executable, str(script), "--seed", "7", "--out", str(tmp_path / "script")],
                   check=True, capture_output=True)
    write_store(generate_store(7), tmp_path / "direct")
    assert file_bytes(tmp_path / "script") == file_bytes(tmp_path / "direct")


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**32 - 1))
def test_any_seed_gives_a_consistent_store(seed: int) -> None:
    store = generate_store(seed)
    assert check_consistency(store) == []
    assert 1050 <= len(store.store_inventory) <= 1150
    assert all(1 <= len(found) <= 4 for found in lots_by_shelf(store).values())
