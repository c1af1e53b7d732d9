"""The store's reference data: one row model per file, the StoreData bundle, and the rules across files.

Each model's field order is the column order of its CSV and Parquet file, so the header has one definition. The
format is the reference project's (its data/create_db.py): weights in integer grams (or ml) per item, a shelf's
`shelf_weight` is the full shelf (item_weight × maximum_stock), aisles are numbers, `location` is `in-store` or
`warehouse`, and a lot is in exactly one of the two lot files (never split between shelf and warehouse).
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Annotated, Literal, NamedTuple, Self, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, model_validator
from pydantic_core import PydanticCustomError

from smartshelf.schemas import (FIRST_STORE, MAX_AISLE, MAX_ITEM_WEIGHT, MAX_PRICE, MAX_QUANTITY, MAX_WEIGHT,
                                STORE_ID_PATTERN)

_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def _iso_date(value: object) -> object:
    """Text dates must be YYYY-MM-DD: pydantic alone would also read '1700006400' as a Unix time."""
    if isinstance(value, str) and not _ISO_DATE.fullmatch(value):
        raise PydanticCustomError("date_format", "Input should be a date in YYYY-MM-DD format")
    return value


Text = Annotated[str, StringConstraints(min_length=1)]
# the topics' store-sized bounds (smartshelf.schemas), so a file the twin could not hold is refused line by line
Price = Annotated[float, Field(gt=0, le=MAX_PRICE)]
Count = Annotated[int, Field(ge=0, le=MAX_QUANTITY)]
PositiveCount = Annotated[int, Field(gt=0, le=MAX_QUANTITY)]
Aisle = Annotated[int, Field(ge=0, le=MAX_AISLE)]
ItemWeight = Annotated[int, Field(gt=0, le=MAX_ITEM_WEIGHT)]
ShelfWeight = Annotated[int, Field(gt=0, le=MAX_WEIGHT)]
IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Location = Literal["in-store", "warehouse"]
IN_STORE: Location = "in-store"


class _Row(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _check_stock(row: StoreInventoryRow | WarehouseInventoryRow) -> None:
    if row.current_stock > row.maximum_stock:
        raise PydanticCustomError(
            "stock_over_maximum",
            "current_stock ({current}) exceeds maximum_stock ({maximum})",
            {"current": row.current_stock, "maximum": row.maximum_stock},
        )
    # A weight in another unit or the empty shelf's weight (older formats) would load with the wrong meaning.
    if row.shelf_weight != row.item_weight * row.maximum_stock:
        raise PydanticCustomError(
            "shelf_weight",
            "shelf_weight ({shelf}) must be the full shelf's weight, item_weight × maximum_stock"
            " ({item} × {maximum} = {full})",
            {"shelf": row.shelf_weight, "item": row.item_weight, "maximum": row.maximum_stock,
             "full": row.item_weight * row.maximum_stock},
        )


class StoreInventoryRow(_Row):
    """One shelf on the sales floor; it holds one item (shelf_id is the item's key everywhere)."""

    shelf_id: Text
    aisle: Aisle
    item_weight: ItemWeight  # grams (or ml) per item
    shelf_weight: ShelfWeight  # the full shelf, item_weight × maximum_stock
    item_category: Text
    item_subcategory: Text
    item_visibility: Annotated[float, Field(ge=0, le=1)]
    maximum_stock: PositiveCount
    current_stock: Count
    item_price: Price  # EUR

    @model_validator(mode="after")
    def _stock_fits(self) -> Self:
        _check_stock(self)
        return self


class WarehouseInventoryRow(_Row):
    """The back-room stock of a shelf's item."""

    shelf_id: Text
    aisle: Aisle
    item_weight: ItemWeight
    shelf_weight: ShelfWeight  # item_weight × maximum_stock
    item_category: Text
    item_subcategory: Text
    maximum_stock: PositiveCount
    current_stock: Count
    item_price: Price

    @model_validator(mode="after")
    def _stock_fits(self) -> Self:
        _check_stock(self)
        return self


class BatchRow(_Row):
    """A lot of a shelf's item, all of it on the shelf (`in-store`) or all in the warehouse."""

    shelf_id: Text
    batch_code: Text
    item_category: Text
    item_subcategory: Text
    standard_batch_size: PositiveCount
    received_date: IsoDate
    expiry_date: IsoDate
    batch_quantity_total: Count
    batch_quantity_store: Count
    batch_quantity_warehouse: Count
    location: Location

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.expiry_date <= self.received_date:
            raise PydanticCustomError(
                "expiry_before_receipt",
                "expiry_date ({expiry}) must be after received_date ({received})",
                {"expiry": self.expiry_date.isoformat(), "received": self.received_date.isoformat()},
            )
        if self.batch_quantity_total != self.batch_quantity_store + self.batch_quantity_warehouse:
            raise PydanticCustomError(
                "batch_total",
                "batch_quantity_total ({total}) must equal batch_quantity_store + batch_quantity_warehouse"
                " ({store} + {warehouse})",
                {
                    "total": self.batch_quantity_total,
                    "store": self.batch_quantity_store,
                    "warehouse": self.batch_quantity_warehouse,
                },
            )
        return self


class DiscountRow(_Row):
    """A scheduled promotional discount (fraction of the price) on a shelf's item, both dates included."""

    shelf_id: Text
    discount: Annotated[float, Field(gt=0, lt=1)]
    start_date: IsoDate
    end_date: IsoDate

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end_date < self.start_date:
            raise PydanticCustomError(
                "discount_window",
                "end_date ({end}) is before start_date ({start})",
                {"end": self.end_date.isoformat(), "start": self.start_date.isoformat()},
            )
        return self


Row = StoreInventoryRow | WarehouseInventoryRow | BatchRow | DiscountRow
_Stock = TypeVar("_Stock", StoreInventoryRow, WarehouseInventoryRow)


@dataclass(frozen=True)
class StoreData:
    """A store's starting state, as the five reference files hold it, and which store of the chain it is."""

    store_inventory: list[StoreInventoryRow] = field(default_factory=list)
    warehouse_inventory: list[WarehouseInventoryRow] = field(default_factory=list)
    store_batches: list[BatchRow] = field(default_factory=list)
    warehouse_batches: list[BatchRow] = field(default_factory=list)
    discounts: list[DiscountRow] = field(default_factory=list)
    store_id: str = FIRST_STORE


class ReferenceFile(NamedTuple):
    """One reference file: the StoreData attribute it fills, its file name stem and its row model."""

    attr: str
    stem: str
    model: type[_Row]
    required: bool  # a reader may do without the optional one (no discounts)

    @property
    def csv_name(self) -> str:
        return f"{self.stem}.csv"


REFERENCE_FILES = (
    ReferenceFile("store_inventory", "store_inventory_final", StoreInventoryRow, True),
    ReferenceFile("warehouse_inventory", "warehouse_inventory_final", WarehouseInventoryRow, True),
    ReferenceFile("store_batches", "store_batches", BatchRow, True),
    ReferenceFile("warehouse_batches", "warehouse_batches", BatchRow, True),
    ReferenceFile("discounts", "all_discounts", DiscountRow, False),
)
STORE_INVENTORY, WAREHOUSE_INVENTORY, STORE_BATCHES, WAREHOUSE_BATCHES, DISCOUNTS = (t.csv_name for t in REFERENCE_FILES)


def columns(model: type[BaseModel]) -> tuple[str, ...]:
    """The file columns of a row model, in order."""
    return tuple(model.model_fields)


class Problem(NamedTuple):
    """A broken rule, pinned to a row (0-based index into its StoreData list) and, if one, a column."""

    file: str
    row: int
    column: str | None
    message: str

    def render(self, where: str) -> str:
        """`where` names the row the reader's way: 'row 3' for data, 'line 4' for a CSV file."""
        column = f", column {self.column}" if self.column else ""
        return f"{self.file} {where}{column}: {self.message}"


_STOCKED_ITEM = ("aisle", "item_weight", "item_price")  # also in warehouse_inventory_final


def check_consistency(store: StoreData) -> list[str]:
    """The rules across rows and files that `store` breaks, readably; empty when it is consistent."""
    return [p.render(f"row {p.row + 1}") for p in consistency_problems(store)]


def consistency_problems(store: StoreData) -> list[Problem]:
    """check_consistency's findings, most fundamental first, pinned to rows so a reader can name lines."""
    problems: list[Problem] = []
    shelves = _unique_shelves(STORE_INVENTORY, store.store_inventory, problems)
    warehouse = _unique_shelves(WAREHOUSE_INVENTORY, store.warehouse_inventory, problems)
    problems += _unknown_shelves(store, shelves, warehouse)
    item = ("item_category", "item_subcategory")
    problems += _item_mismatches(WAREHOUSE_INVENTORY, store.warehouse_inventory, shelves, item + _STOCKED_ITEM)
    problems += _item_mismatches(STORE_BATCHES, store.store_batches, shelves, item)
    problems += _item_mismatches(WAREHOUSE_BATCHES, store.warehouse_batches, shelves, item)
    in_store = _unique_lots(STORE_BATCHES, store.store_batches, problems)
    _unique_lots(WAREHOUSE_BATCHES, store.warehouse_batches, problems)
    problems += _misplaced_lots(STORE_BATCHES, store.store_batches, IN_STORE)
    problems += _misplaced_lots(WAREHOUSE_BATCHES, store.warehouse_batches, "warehouse")
    problems += _lots_in_both_files(store.warehouse_batches, in_store)
    problems += _stock_mismatches(STORE_INVENTORY, store.store_inventory, STORE_BATCHES, store.store_batches)
    problems += _stock_mismatches(
        WAREHOUSE_INVENTORY, store.warehouse_inventory, WAREHOUSE_BATCHES, store.warehouse_batches
    )
    problems += _repeated_discounts(store.discounts)
    return problems


def _unique_shelves(name: str, rows: Sequence[_Stock], problems: list[Problem]) -> dict[str, _Stock]:
    """Rows by shelf_id (first wins); a repeated shelf_id is a problem."""
    by_shelf: dict[str, _Stock] = {}
    for index, row in enumerate(rows):
        if row.shelf_id in by_shelf:
            problems.append(Problem(name, index, "shelf_id", f"duplicate shelf_id {row.shelf_id!r}"))
        else:
            by_shelf[row.shelf_id] = row
    return by_shelf


def _unknown_shelves(
    store: StoreData, shelves: dict[str, StoreInventoryRow], warehouse: dict[str, WarehouseInventoryRow]
) -> list[Problem]:
    problems: list[Problem] = []
    referring: tuple[tuple[str, Sequence[Row]], ...] = (
        (WAREHOUSE_INVENTORY, store.warehouse_inventory),
        (STORE_BATCHES, store.store_batches),
        (WAREHOUSE_BATCHES, store.warehouse_batches),
        (DISCOUNTS, store.discounts),
    )
    for name, rows in referring:
        for index, row in enumerate(rows):
            if row.shelf_id not in shelves:
                problems.append(
                    Problem(name, index, "shelf_id", f"shelf_id {row.shelf_id!r} is not in {STORE_INVENTORY}")
                )
    # A lot in the warehouse needs the warehouse row whose current_stock it adds up to.
    for index, lot in enumerate(store.warehouse_batches):
        if lot.shelf_id in shelves and lot.shelf_id not in warehouse:
            message = f"shelf_id {lot.shelf_id!r} is not in {WAREHOUSE_INVENTORY}"
            problems.append(Problem(WAREHOUSE_BATCHES, index, "shelf_id", message))
    return problems


def _item_mismatches(
    name: str, rows: Sequence[Row], shelves: dict[str, StoreInventoryRow], fields: tuple[str, ...]
) -> list[Problem]:
    """Every file describes a shelf's item as store_inventory_final does."""
    problems: list[Problem] = []
    for index, row in enumerate(rows):
        shelf = shelves.get(row.shelf_id)
        for column in fields if shelf else ():
            ours, theirs = getattr(row, column), getattr(shelf, column)
            if ours != theirs:
                problems.append(Problem(name, index, column, f"{ours!r} differs from {STORE_INVENTORY} ({theirs!r})"))
    return problems


def _unique_lots(name: str, lots: Sequence[BatchRow], problems: list[Problem]) -> dict[tuple[str, str], BatchRow]:
    """Lots by (shelf_id, batch_code) (first wins); a lot listed twice in one file is a problem."""
    by_key: dict[tuple[str, str], BatchRow] = {}
    for index, lot in enumerate(lots):
        key = (lot.shelf_id, lot.batch_code)
        if key in by_key:
            problems.append(
                Problem(name, index, "batch_code", f"duplicate batch_code {lot.batch_code!r} for shelf {lot.shelf_id}")
            )
        else:
            by_key[key] = lot
    return by_key


def _misplaced_lots(name: str, lots: Sequence[BatchRow], location: Location) -> list[Problem]:
    """A file lists the lots of its place, each wholly there: its units all in that place, none elsewhere."""
    here, there = ("store", "warehouse") if location == IN_STORE else ("warehouse", "store")
    problems: list[Problem] = []
    for index, lot in enumerate(lots):
        if lot.location != location:
            problems.append(Problem(name, index, "location", f"must be {location!r} in {name}, not {lot.location!r}"))
        if getattr(lot, f"batch_quantity_{here}") == 0:
            problems.append(
                Problem(name, index, f"batch_quantity_{here}", f"must be > 0: {name} lists only lots with units there")
            )
        if getattr(lot, f"batch_quantity_{there}") != 0:
            problems.append(
                Problem(name, index, f"batch_quantity_{there}",
                        f"must be 0: a lot in the {here} has no units in the {there} (lots are never split)")
            )
    return problems


def _lots_in_both_files(warehouse_lots: Sequence[BatchRow], in_store: dict[tuple[str, str], BatchRow]) -> list[Problem]:
    """A lot is on the shelf or in the warehouse, so its code appears in one lot file only."""
    return [
        Problem(WAREHOUSE_BATCHES, index, "batch_code",
                f"lot {lot.batch_code} of shelf {lot.shelf_id} is also in {STORE_BATCHES}: a lot is in one place")
        for index, lot in enumerate(warehouse_lots) if (lot.shelf_id, lot.batch_code) in in_store
    ]


def _stock_mismatches(
    name: str,
    rows: Sequence[StoreInventoryRow | WarehouseInventoryRow],
    lots_name: str,
    lots: Sequence[BatchRow],
) -> list[Problem]:
    """A place's current_stock of a shelf's item is the sum of that place's part of the shelf's lots."""
    place = "store" if lots_name == STORE_BATCHES else "warehouse"
    held: defaultdict[str, int] = defaultdict(int)
    for lot in lots:
        held[lot.shelf_id] += getattr(lot, f"batch_quantity_{place}")
    return [
        Problem(
            name, index, "current_stock",
            f"{row.current_stock} but shelf {row.shelf_id}'s lots in {lots_name}"
            f" hold {held[row.shelf_id]} (sum of batch_quantity_{place})",
        )
        for index, row in enumerate(rows)
        if row.current_stock != held[row.shelf_id]
    ]


def _repeated_discounts(discounts: Sequence[DiscountRow]) -> list[Problem]:
    """(shelf_id, start_date) names a promotion, as in the database's key."""
    seen: set[tuple[str, date]] = set()
    problems: list[Problem] = []
    for index, row in enumerate(discounts):
        key = (row.shelf_id, row.start_date)
        if key in seen:
            problems.append(
                Problem(DISCOUNTS, index, "start_date",
                        f"shelf {row.shelf_id} already has a discount starting {row.start_date.isoformat()}")
            )
        seen.add(key)
    return problems



# --- a chain of stores ---------------------------------------------------------------------------------------
MAX_STORES = 999
_STORE_ID = re.compile(STORE_ID_PATTERN)


def chain_store_ids(stores: int) -> list[str]:
    """The ids of a generated chain's stores, in order: store-001, store-002, …"""
    if not 1 <= stores <= MAX_STORES:
        raise ValueError(f"a chain has 1 to {MAX_STORES} stores, not {stores}")
    return [f"store-{number:03d}" for number in range(1, stores + 1)]


def store_seed(seed: int, store_id: str) -> int:
    """A chain store's own seed: the chain's for its first store (a one-store chain is the one store of that seed),
    one derived from both for the others."""
    if store_id == FIRST_STORE:
        return seed
    return int.from_bytes(hashlib.sha256(f"{seed}/{store_id}".encode()).digest()[:8], "big")


def is_store_id(text: str) -> bool:
    return _STORE_ID.fullmatch(text) is not None


def clock_start(store: StoreData, configured: datetime) -> datetime:
    """When the store's simulated clock starts: SIM_START, unless the data was made later (lots counted from the
    day it was made), then SIM_START's time of day on the day the newest lot was received, so no lot the store
    holds arrives after the clock starts."""
    received = [lot.received_date for lot in (*store.store_batches, *store.warehouse_batches)]
    newest = max(received, default=configured.date())
    return configured if newest <= configured.date() else datetime.combine(newest, configured.time())
