"""Reading the store CSVs: the reference project's format read as it is, a faithful round trip, and every bad file
rejected naming its file, line and column."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable
from datetime import date, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smartshelf.datagen import generate_store, write_store
from smartshelf.dashboard import load_layout, plan_zones
from smartshelf.errors import SmartShelfError
from smartshelf.policies import derive_config, load_policy_config
from smartshelf.rules import initial_states
from smartshelf.store import REFERENCE_FILES, StoreData, check_consistency, clock_start, columns
from smartshelf.store_csv import csv_text, read_store_csvs

Rows = list[list[str]]
REPO = Path(__file__).resolve().parents[2]
REFERENCE_FIXTURE = REPO / "tests" / "fixtures" / "reference_csv"


@pytest.fixture(scope="module")
def store() -> StoreData:
    return generate_store(42)


@pytest.fixture
def csv_dir(store: StoreData, tmp_path: Path) -> Path:
    for table in REFERENCE_FILES:
        (tmp_path / table.csv_name).write_text(csv_text(table.model, getattr(store, table.attr)))
    return tmp_path


def edit(csv_dir: Path, name: str, change: Callable[[Rows], None]) -> None:
    """Rewrite one CSV after `change` edits its rows (rows[0] is the header, rows[i] is line i + 1)."""
    path = csv_dir / name
    with path.open(newline="") as handle:
        rows = list(csv.reader(handle))
    change(rows)
    with path.open("w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def set_cell(line: int, column: str, value: str) -> Callable[[Rows], None]:
    def change(rows: Rows) -> None:
        rows[line - 1][rows[0].index(column)] = value
    return change


def first_line(csv_dir: Path) -> str:
    with pytest.raises(SmartShelfError) as caught:
        read_store_csvs(csv_dir)
    return str(caught.value).splitlines()[0]


def line_of(csv_dir: Path, name: str, wanted: Callable[[dict[str, str]], bool]) -> int:
    """The line number of the first data row that `wanted` accepts."""
    with (csv_dir / name).open(newline="") as handle:
        return next(i for i, row in enumerate(csv.DictReader(handle), start=2) if wanted(row))


def test_round_trip(store: StoreData, tmp_path: Path) -> None:
    write_store(store, tmp_path)
    assert read_store_csvs(tmp_path / "db_csv") == store


def test_discounts_are_optional(store: StoreData, csv_dir: Path) -> None:
    (csv_dir / "all_discounts.csv").unlink()
    assert read_store_csvs(csv_dir) == dataclasses.replace(store, discounts=[])


def test_missing_file(csv_dir: Path) -> None:
    (csv_dir / "warehouse_batches.csv").unlink()
    assert first_line(csv_dir) == f"missing warehouse_batches.csv in {csv_dir}"


def test_wrong_type(csv_dir: Path) -> None:
    edit(csv_dir, "store_inventory_final.csv", set_cell(4, "maximum_stock", "many"))
    assert first_line(csv_dir) == (
        "store_inventory_final.csv line 4, column maximum_stock: "
        "Input should be a valid integer, unable to parse string as an integer (got 'many')"
    )


def test_bad_date(csv_dir: Path) -> None:
    edit(csv_dir, "store_batches.csv", set_cell(17, "expiry_date", "2025-13-01"))
    message = first_line(csv_dir)
    assert message.startswith("store_batches.csv line 17, column expiry_date: Input should be a valid date")
    assert message.endswith("(got '2025-13-01')")


def test_date_must_be_iso(csv_dir: Path) -> None:
    edit(csv_dir, "all_discounts.csv", set_cell(2, "start_date", "01/02/2025"))
    assert first_line(csv_dir) == (
        "all_discounts.csv line 2, column start_date: Input should be a date in YYYY-MM-DD format (got '01/02/2025')"
    )


def test_missing_column(csv_dir: Path) -> None:
    edit(csv_dir, "warehouse_inventory_final.csv", lambda rows: [row.pop() for row in rows])
    assert first_line(csv_dir) == (
        "warehouse_inventory_final.csv line 1: wrong header (missing column(s) item_price); expected exactly "
        "shelf_id,aisle,item_weight,shelf_weight,item_category,item_subcategory,maximum_stock,current_stock,item_price"
    )


def test_extra_column(csv_dir: Path) -> None:
    edit(csv_dir, "store_inventory_final.csv", lambda rows: [row.append("x") for row in rows])
    edit(csv_dir, "store_inventory_final.csv", set_cell(1, "x", "notes"))
    message = first_line(csv_dir)
    assert message.startswith("store_inventory_final.csv line 1: wrong header (unexpected column(s) notes)")
    assert ",".join(columns(REFERENCE_FILES[0].model)) in message


def test_reordered_columns(csv_dir: Path) -> None:
    edit(csv_dir, "all_discounts.csv", lambda rows: [row.reverse() for row in rows])
    assert "all_discounts.csv line 1: wrong header (got end_date,start_date,discount,shelf_id)" in first_line(csv_dir)


def test_empty_required_value(csv_dir: Path) -> None:
    edit(csv_dir, "store_batches.csv", set_cell(5, "batch_code", ""))
    assert first_line(csv_dir) == "store_batches.csv line 5, column batch_code: value is required but empty"


def test_negative_quantity(csv_dir: Path) -> None:
    edit(csv_dir, "warehouse_inventory_final.csv", set_cell(3, "current_stock", "-3"))
    assert first_line(csv_dir) == (
        "warehouse_inventory_final.csv line 3, column current_stock: "
        "Input should be greater than or equal to 0 (got '-3')"
    )


def test_rule_across_columns(csv_dir: Path) -> None:
    edit(csv_dir, "store_batches.csv", set_cell(2, "batch_quantity_total", "999"))
    assert first_line(csv_dir).startswith(
        "store_batches.csv line 2: "
        "batch_quantity_total (999) must equal batch_quantity_store + batch_quantity_warehouse"
    )


def test_wrong_number_of_values(csv_dir: Path) -> None:
    edit(csv_dir, "store_batches.csv", lambda rows: rows[6].pop())
    assert first_line(csv_dir) == "store_batches.csv line 7: expected 11 values, got 10"


def test_empty_file(csv_dir: Path) -> None:
    (csv_dir / "all_discounts.csv").write_text("")
    assert first_line(csv_dir) == (
        "all_discounts.csv is empty; its first line must be the header shelf_id,discount,start_date,end_date"
    )


def test_all_problems_are_counted_and_listed(csv_dir: Path) -> None:
    edit(csv_dir, "store_inventory_final.csv", set_cell(2, "item_price", "free"))
    edit(csv_dir, "store_batches.csv", set_cell(3, "location", "shelf"))
    edit(csv_dir, "warehouse_batches.csv", set_cell(4, "received_date", ""))
    with pytest.raises(SmartShelfError) as caught:
        read_store_csvs(csv_dir)
    lines = str(caught.value).splitlines()
    assert lines[0].startswith("store_inventory_final.csv line 2, column item_price:")
    assert lines[0].endswith("(and 2 more problems)")
    assert lines[1].startswith("  store_batches.csv line 3, column location: Input should be 'in-store' or 'warehouse'")
    assert lines[2] == "  warehouse_batches.csv line 4, column received_date: value is required but empty"


def test_stock_not_matching_lots(csv_dir: Path) -> None:
    line = line_of(csv_dir, "store_inventory_final.csv", lambda row: row["current_stock"] != row["maximum_stock"])
    def add_one(rows: Rows) -> None:
        rows[line - 1][8] = str(int(rows[line - 1][8]) + 1)  # column 8: current_stock

    edit(csv_dir, "store_inventory_final.csv", add_one)
    message = first_line(csv_dir)
    assert message.startswith(f"store_inventory_final.csv line {line}, column current_stock: ")
    assert "(sum of batch_quantity_store)" in message
    assert "more problem" not in message


def test_unknown_shelf_in_batches(csv_dir: Path) -> None:
    line = 2
    edit(csv_dir, "store_batches.csv", set_cell(line, "shelf_id", "S9999"))
    # The lot's real shelf now misses its units: the second problem.
    assert first_line(csv_dir) == (
        f"store_batches.csv line {line}, column shelf_id: shelf_id 'S9999' is not in store_inventory_final.csv"
        " (and 1 more problem)"
    )


def test_a_lot_is_in_one_place_only(csv_dir: Path) -> None:
    with (csv_dir / "store_batches.csv").open(newline="") as handle:
        first = next(csv.DictReader(handle))
    line = line_of(csv_dir, "warehouse_batches.csv", lambda row: row["shelf_id"] == first["shelf_id"])
    edit(csv_dir, "warehouse_batches.csv", set_cell(line, "batch_code", first["batch_code"]))
    assert first_line(csv_dir).startswith(
        f"warehouse_batches.csv line {line}, column batch_code: lot {first['batch_code']} of shelf"
        f" {first['shelf_id']} is also in store_batches.csv: a lot is in one place")


def test_a_lot_is_never_split_between_shelf_and_warehouse(csv_dir: Path) -> None:
    def split(rows: Rows) -> None:  # one unit of the lot on line 2 said to be in the warehouse as well
        header = rows[0]
        total, warehouse = header.index("batch_quantity_total"), header.index("batch_quantity_warehouse")
        rows[1][total] = str(int(rows[1][total]) + 1)
        rows[1][warehouse] = "1"

    edit(csv_dir, "store_batches.csv", split)
    assert first_line(csv_dir).startswith(
        "store_batches.csv line 2, column batch_quantity_warehouse: must be 0: a lot in the store has no units in the"
        " warehouse (lots are never split)")


def test_shelf_weight_is_the_full_shelf_in_the_item_weights_unit(csv_dir: Path) -> None:
    edit(csv_dir, "store_inventory_final.csv", set_cell(3, "shelf_weight", "12.5"))  # an empty shelf's kg
    assert first_line(csv_dir).startswith("store_inventory_final.csv line 3, column shelf_weight: Input should be a"
                                          " valid integer")
    edit(csv_dir, "store_inventory_final.csv", set_cell(3, "shelf_weight", "1"))
    assert first_line(csv_dir).startswith("store_inventory_final.csv line 3: shelf_weight (1) must be the full"
                                          " shelf's weight, item_weight × maximum_stock")


def test_item_weight_is_whole_grams(csv_dir: Path) -> None:
    edit(csv_dir, "warehouse_inventory_final.csv", set_cell(2, "item_weight", "0.5"))  # kilograms
    assert first_line(csv_dir).startswith("warehouse_inventory_final.csv line 2, column item_weight: Input should be"
                                          " a valid integer")


# --- the reference project's own format -------------------------------------------------------------
@pytest.fixture(scope="module")
def reference() -> StoreData:
    return read_store_csvs(REFERENCE_FIXTURE)


def test_the_reference_format_is_read_as_it_is(reference: StoreData) -> None:
    shelves = {row.shelf_id: row for row in reference.store_inventory}
    assert len(shelves) == 7 and len(reference.store_batches) == 12 and len(reference.warehouse_batches) == 5
    water = shelves["BEVWAT0001"]
    assert (water.aisle, water.item_weight, water.shelf_weight, water.item_category, water.item_subcategory) == (
        1, 1500, 60_000, "BEVERAGES", "Water")
    assert {lot.location for lot in reference.store_batches} == {"in-store"}
    assert {lot.location for lot in reference.warehouse_batches} == {"warehouse"}
    assert reference.discounts == []  # no all_discounts.csv
    assert check_consistency(reference) == []


def test_the_twin_weighs_a_shelf_as_stock_times_item_weight_in_the_datas_unit(reference: StoreData) -> None:
    weight = {row.shelf_id: row.item_weight for row in reference.store_inventory}
    shelves = initial_states(reference, datetime(2026, 1, 19, 8)).shelves
    assert {s.shelf_id: s.current_weight for s in shelves} == {
        s.shelf_id: s.current_stock * weight[s.shelf_id] for s in shelves}
    assert next(s for s in shelves if s.shelf_id == "BEVWAT0001").current_weight == 31 * 1500


def test_data_made_after_sim_start_starts_the_clock_on_its_newest_lots_day(reference: StoreData) -> None:
    configured = datetime(2025, 1, 1, 8)
    assert clock_start(reference, configured) == datetime(2026, 1, 19, 8)
    assert clock_start(reference, datetime(2026, 3, 1, 9)) == datetime(2026, 3, 1, 9)  # later SIM_START kept
    assert max(lot.received_date for lot in reference.store_batches) == date(2026, 1, 19)


def test_an_unknown_category_gets_the_default_policy_and_a_zone_of_its_own(reference: StoreData) -> None:
    policy = load_policy_config()
    assert "FLOWERS AND PLANTS" not in policy.categories
    config = derive_config(reference, policy)
    flowers = next(p for p in config.shelf_policies if p.shelf_id == "FLOCUT0001")
    assert flowers.model_dump(exclude={"store_id", "shelf_id"}) == policy.shelf.model_dump()
    yogurt = next(p for p in config.shelf_policies if p.shelf_id == "REFYOG0001")
    assert yogurt.near_expiry_days == policy.categories["REFRIGERATED"].shelf["near_expiry_days"]
    zones = plan_zones(load_layout(REPO / "dashboard" / "store_layout.yaml"),
                       {row.item_category for row in reference.store_inventory})
    assert "FLOWERS AND PLANTS" in {zone.category for zone in zones}


def test_check_consistency_names_rows(store: StoreData) -> None:
    shelf = store.store_inventory[0]
    broken = dataclasses.replace(
        store,
        store_inventory=[*store.store_inventory, shelf],
        warehouse_inventory=[store.warehouse_inventory[0].model_copy(update={"item_price": 0.01}),
                             *store.warehouse_inventory[1:]],
    )
    assert check_consistency(broken) == [
        f"store_inventory_final.csv row {len(broken.store_inventory)}, column shelf_id:"
        f" duplicate shelf_id {shelf.shelf_id!r}",
        f"warehouse_inventory_final.csv row 1, column item_price: 0.01 differs from store_inventory_final.csv"
        f" ({shelf.item_price!r})",
    ]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.sampled_from([t.csv_name for t in REFERENCE_FILES]),
    line=st.integers(min_value=1, max_value=30),
    column=st.integers(min_value=0, max_value=10),
    value=st.text(st.characters(codec="utf-8"), max_size=12),
)
def test_any_edited_cell_is_rejected_or_still_consistent(
    csv_dir: Path, name: str, line: int, column: int, value: str
) -> None:
    """The reader never crashes and never hands back data that breaks a rule."""
    original = (csv_dir / name).read_bytes()
    try:
        edit(csv_dir, name, lambda rows: rows[min(line, len(rows)) - 1].__setitem__(column % len(rows[0]), value))
        try:
            store = read_store_csvs(csv_dir)
        except SmartShelfError:
            return
        assert check_consistency(store) == []
    finally:
        (csv_dir / name).write_bytes(original)


def test_repeated_discount_start(csv_dir: Path) -> None:
    edit(csv_dir, "all_discounts.csv", lambda rows: rows.append(list(rows[1])))
    with (csv_dir / "all_discounts.csv").open() as handle:
        line = len(handle.readlines())
    assert first_line(csv_dir).startswith(f"all_discounts.csv line {line}, column start_date: shelf ")
