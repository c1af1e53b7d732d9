"""The deterministic synthetic supermarket: ~1100 shelves in the reference's 29 categories, their lots and promotions,
in the reference data's format (smartshelf.store); a chain of them, each store from a seed of its own.

generate_store and generate_chain are pure (seeded random.Random, no clock); write_store and write_chain are the only
I/O. A chain store's data depends on the chain's seed and its own id only, never on how many stores the chain has.
"""

from __future__ import annotations

import itertools
import math
import os
import random
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from smartshelf.errors import SmartShelfError
from smartshelf.schemas import FIRST_STORE
from smartshelf.store import (
    IN_STORE,
    REFERENCE_FILES,
    BatchRow,
    DiscountRow,
    StoreData,
    StoreInventoryRow,
    WarehouseInventoryRow,
    chain_store_ids,
    columns,
    store_seed,
)
from smartshelf.store_csv import chain_csv_dirs, csv_text
from smartshelf.tabular import arrow_schema


@dataclass(frozen=True)
class Category:
    """What is typical of a category's items; every draw for a shelf comes from these ranges."""

    name: str  # upper case, as in the reference data
    aisle: int
    subcategories: tuple[str, ...]
    perishable: bool
    weights_g: tuple[int, ...]  # usual pack sizes in grams (or ml), ascending: bigger packs cost more
    price_eur: tuple[float, float]
    shelf_life_days: tuple[int, int]  # from receipt to expiry
    batch_sizes: tuple[int, ...]  # units per supplier case
    max_stock: tuple[int, int]  # units the shelf holds


# The reference project's 29 categories, aisle by aisle.
CATEGORIES: tuple[Category, ...] = (
    Category("BEVERAGES", 1, ("Water", "Cola Soft Drinks", "Fruit-based Soft Drinks", "Iced Tea", "Energy Drinks",
                              "Juices"), False,
             (250, 330, 500, 1000, 1500, 2000), (0.29, 3.49), (180, 540), (6, 12, 24), (24, 80)),
    Category("SPIRITS AND APERITIFS", 2, ("Alcoholic Aperitifs", "Liqueurs", "Grappa", "Whisky", "Gin", "Vodka"),
             False, (500, 700, 1000), (7.99, 39.9), (600, 730), (6, 12), (12, 36)),
    Category("BEERS", 3, ("Standard", "Premium", "Imported", "Non-alcoholic"), False,
             (330, 500, 660), (0.89, 4.99), (180, 365), (6, 12, 24), (24, 72)),
    Category("WINES", 4, ("Red Wines", "White Wines", "Rosé Wines", "Sparkling Wines", "Brick Wines"), False,
             (750, 1000, 1500), (1.99, 29.9), (270, 730), (6, 12), (12, 36)),
    Category("LONG-LIFE DAIRY", 5, ("Long-life Milk", "Plant-based Drinks", "Cream and Béchamel"), False,
             (200, 500, 1000), (0.79, 3.49), (90, 180), (6, 12, 24), (24, 72)),
    Category("HOUSEHOLD GOODS", 6, ("Paper Towels", "Napkins", "Freezer Bags", "Baking Paper"), False,
             (50, 150, 300, 600), (0.99, 5.99), (600, 730), (6, 12, 24), (20, 60)),
    Category("BATH AND PERSONAL CARE", 7, ("Shampoos", "Bath and Shower Gels", "Toothpastes", "Deodorants",
                                           "Toilet Paper", "Bar Soaps"), False,
             (50, 100, 250, 400, 1000), (0.99, 9.99), (540, 730), (12, 24), (20, 60)),
    Category("LAUNDRY PRODUCTS", 8, ("Liquid Detergent", "Powder Detergent", "Fabric Softener", "Stain Removers"),
             False, (750, 1000, 1500, 2500, 3000), (1.99, 14.9), (540, 730), (4, 6, 12), (16, 48)),
    Category("HOUSE CLEANING PRODUCTS", 9, ("Dish Detergents", "Surface Cleaners", "Bleach", "Bathroom Cleaners"),
             False, (500, 750, 1000, 1500), (0.99, 7.49), (540, 730), (6, 12, 24), (20, 60)),
    Category("BABY PRODUCTS", 10, ("Baby Food", "Infant Milk", "Diapers", "Baby Wipes"), False,
             (80, 200, 800, 1200), (0.99, 24.9), (270, 730), (6, 12, 24), (20, 48)),
    Category("SWEETS AND BREAKFAST", 11, ("Chocolate", "Biscuits", "Cereals", "Jams and Spreads", "Candies"), False,
             (30, 100, 200, 375, 500), (0.49, 7.99), (180, 540), (12, 24, 48), (30, 80)),
    Category("PASTA AND RICE", 12, ("Dry Pasta", "Egg Pasta", "Rice", "Grains and Couscous"), False,
             (250, 500, 1000), (0.59, 4.49), (365, 730), (12, 24, 36), (30, 80)),
    Category("FLOURS AND SUGAR", 13, ("Flour", "Sugar", "Baking Mixes", "Yeast"), False,
             (25, 500, 1000), (0.39, 3.99), (180, 540), (12, 24, 36), (30, 80)),
    Category("HOT BEVERAGES", 14, ("Ground Coffee", "Coffee Beans", "Capsules", "Tea", "Herbal Infusions"), False,
             (50, 100, 250, 500, 1000), (1.29, 12.9), (270, 730), (12, 24), (20, 60)),
    Category("SAUCES", 15, ("Ketchup", "Mayonnaise", "Mustard", "Dressings"), False,
             (150, 250, 500), (0.79, 3.99), (180, 365), (12, 24), (20, 60)),
    Category("PASTA SAUCES", 16, ("Tomato Sauces", "Pesto", "Ready Sauces"), False,
             (130, 190, 400, 700), (0.89, 4.49), (270, 540), (12, 24), (20, 60)),
    Category("SPICES", 17, ("Salt", "Pepper", "Herbs", "Spice Mixes"), False,
             (25, 50, 100, 1000), (0.49, 4.99), (365, 730), (12, 24), (20, 50)),
    Category("VINEGAR AND OIL", 18, ("Olive Oil", "Seed Oils", "Vinegar", "Balsamic Vinegar"), False,
             (250, 500, 750, 1000), (0.99, 11.9), (270, 730), (6, 12), (16, 48)),
    Category("SAVORY SNACKS", 19, ("Crisps", "Crackers", "Nuts", "Popcorn", "Pretzels"), False,
             (40, 100, 150, 200, 300), (0.69, 4.99), (120, 300), (12, 24, 36), (30, 80)),
    Category("PET PRODUCTS", 20, ("Dry Dog Food", "Wet Dog Food", "Dry Cat Food", "Wet Cat Food", "Pet Treats"),
             False, (85, 400, 1500, 3000), (0.59, 18.9), (365, 730), (6, 12, 24), (20, 60)),
    Category("CANNED GOODS", 21, ("Canned Tomatoes", "Legumes", "Tuna in Oil", "Canned Vegetables", "Soups"), False,
             (160, 240, 400, 800), (0.49, 4.99), (540, 730), (12, 24, 48), (30, 80)),
    Category("LONG-LIFE FRUIT", 22, ("Fruit in Syrup", "Fruit Purees", "Dried Fruit"), False,
             (100, 200, 400, 800), (0.99, 4.99), (180, 540), (12, 24), (20, 50)),
    Category("GLUTEN FREE", 23, ("Gluten-free Pasta", "Gluten-free Bread", "Gluten-free Biscuits"), False,
             (200, 300, 400, 500), (1.49, 6.99), (180, 365), (12, 24), (16, 40)),
    Category("BREAD AND BREADSTICKS", 24, ("Fresh Bread", "Rolls", "Breadsticks", "Rusks", "Flatbreads"), True,
             (80, 250, 400, 500, 750), (0.49, 4.9), (2, 5), (6, 12, 18), (20, 48)),
    Category("FRUITS AND VEGETABLES", 25, ("Apples and Pears", "Citrus", "Bananas", "Berries", "Leafy Greens",
                                           "Tomatoes", "Root Vegetables"), True,
             (150, 250, 500, 1000, 1500), (0.79, 5.99), (4, 14), (10, 12, 20), (20, 60)),
    Category("REFRIGERATED", 26, ("Yogurt", "Fresh Milk", "Eggs", "Fresh Pasta", "Butter and Margarine",
                                  "Cheese and Cured Meats"), True,
             (125, 150, 250, 500, 1000), (0.59, 7.9), (7, 21), (12, 24), (24, 72)),
    Category("FROZEN", 27, ("Frozen Vegetables", "Frozen Fish", "Pizzas", "Ice Creams", "Frozen Ready Meals"), False,
             (300, 450, 600, 750, 1000), (1.49, 8.99), (180, 540), (12, 24), (20, 60)),
    Category("MEAT", 28, ("Beef", "Pork", "Chicken", "Sausages and Burgers", "Cold Cuts"), True,
             (300, 400, 500, 800, 1000), (2.99, 18.9), (3, 8), (6, 8, 12), (16, 40)),
    Category("FISH", 29, ("Fresh Fish", "Shellfish", "Smoked Salmon"), True,
             (150, 200, 300, 500), (3.49, 24.9), (2, 5), (6, 8), (12, 30)),
)

_SHELVES = (1075, 1125)  # total shelf count range
_MIN_SHELVES_PER_SUBCATEGORY = 4
_LOTS_PER_PLACE = (1, 1, 2)  # lots on the shelf, and in the warehouse when it holds any: mostly one
_LOW_STOCK_SHARE = 0.08  # shelves caught well below half full
_FORGOTTEN_LOT_SHARE = 0.05  # long-life shelves whose oldest lot is about to expire
_DISCOUNT_SHARE = 0.04
_DISCOUNTS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
_PROMOTION_HORIZON_DAYS = 30


def generate_store(seed: int, start_date: date = date(2025, 1, 1), store_id: str = FIRST_STORE) -> StoreData:
    """The store as it opens on start_date; the same seed gives the same store."""
    rng = random.Random(seed)
    store = StoreData(store_id=store_id)
    numbers: Counter[str] = Counter()  # per shelf-id prefix, so two subcategories sharing one never collide
    lot_codes = (f"B{number:07d}" for number in itertools.count(1))  # one counter across both lot files
    for category, subcategory in _shelf_plan(rng):
        prefix = _prefix(category.name) + _prefix(subcategory)
        numbers[prefix] += 1
        shelf_id = f"{prefix}{numbers[prefix]:04d}"
        shelf, warehouse, batch_size = _inventory(rng, shelf_id, category, subcategory)
        store.store_inventory.append(shelf)
        store.warehouse_inventory.append(warehouse)
        for lot in _lots(rng, shelf, warehouse.current_stock, category, batch_size, start_date, lot_codes):
            (store.store_batches if lot.location == IN_STORE else store.warehouse_batches).append(lot)
        if rng.random() < _DISCOUNT_SHARE:
            store.discounts.append(_discount(rng, shelf_id, start_date))
    return store


def generate_chain(seed: int, stores: int, start_date: date = date(2025, 1, 1)) -> dict[str, StoreData]:
    """The chain's stores by id, in order (smartshelf.store.chain_store_ids)."""
    return {store_id: generate_store(store_seed(seed, store_id), start_date, store_id)
            for store_id in chain_store_ids(stores)}


def _prefix(name: str) -> str:
    """The reference's shelf-id part for a category or subcategory: its first three letters, upper case."""
    return name.replace(" ", "")[:3].upper()


def _shelf_plan(rng: random.Random) -> list[tuple[Category, str]]:
    """(category, subcategory) per shelf in aisle order: a few shelves each, the rest spread at random."""
    slots = [(category, sub) for category in CATEGORIES for sub in category.subcategories]
    extra = rng.randint(*_SHELVES) - _MIN_SHELVES_PER_SUBCATEGORY * len(slots)
    counts = Counter(rng.choices(range(len(slots)), k=extra))
    return [slot for index, slot in enumerate(slots) for _ in range(_MIN_SHELVES_PER_SUBCATEGORY + counts[index])]


def _inventory(
    rng: random.Random, shelf_id: str, category: Category, subcategory: str
) -> tuple[StoreInventoryRow, WarehouseInventoryRow, int]:
    """The shelf row, its warehouse row and the item's supplier case size."""
    size = rng.randrange(len(category.weights_g))
    low, high = category.price_eur
    price = low + (high - low) * (size + rng.random()) / len(category.weights_g)
    batch_size = rng.choice(category.batch_sizes)
    maximum = max(rng.randint(*category.max_stock), batch_size)  # one full case fits
    fill = rng.uniform(0.05, 0.5) if rng.random() < _LOW_STOCK_SHARE else rng.uniform(0.5, 1.0)
    weight = category.weights_g[size]
    item = {
        "shelf_id": shelf_id, "aisle": category.aisle, "item_weight": weight,
        "item_category": category.name, "item_subcategory": subcategory,
        "item_price": round(math.floor(price * 10) / 10 + 0.09, 2),  # shelf prices end in 9
    }
    shelf = StoreInventoryRow(
        **item, shelf_weight=weight * maximum, item_visibility=round(rng.uniform(0.02, 0.25), 4),
        maximum_stock=maximum, current_stock=max(1, round(maximum * fill)),
    )
    cases = math.ceil(maximum * rng.randint(3, 6) / batch_size)
    # Fresh food mostly goes straight to the shelf; the back room keeps at most a case of it.
    held = rng.choice((0, 0, 1)) if category.perishable else rng.randint(cases // 4, cases * 3 // 4)
    warehouse = WarehouseInventoryRow(
        **item, shelf_weight=weight * cases * batch_size,
        maximum_stock=cases * batch_size, current_stock=held * batch_size,
    )
    return shelf, warehouse, batch_size


def _lots(
    rng: random.Random, shelf: StoreInventoryRow, warehouse_stock: int, category: Category, batch_size: int,
    start_date: date, codes: Iterator[str],
) -> list[BatchRow]:
    """1-2 lots on the shelf holding its stock, then 0-2 lots of whole cases in the warehouse, oldest first.

    The shelf holds the oldest lots (FIFO by expiry); a lot is in one place only, as in the reference data.
    """
    on_shelf = _split(rng, shelf.current_stock, rng.choice(_LOTS_PER_PLACE), 1)
    in_warehouse = _split(rng, warehouse_stock // batch_size, rng.choice(_LOTS_PER_PLACE), batch_size)
    places = [IN_STORE] * len(on_shelf) + ["warehouse"] * len(in_warehouse)
    life = rng.randint(*category.shelf_life_days)
    lots: list[BatchRow] = []
    for size, place, days_left in zip([*on_shelf, *in_warehouse], places, _days_left(rng, category, life, len(places))):
        expiry = start_date + timedelta(days=days_left)
        lots.append(BatchRow(
            shelf_id=shelf.shelf_id, batch_code=next(codes),
            item_category=shelf.item_category, item_subcategory=shelf.item_subcategory,
            standard_batch_size=batch_size, received_date=expiry - timedelta(days=life), expiry_date=expiry,
            batch_quantity_total=size, batch_quantity_store=size if place == IN_STORE else 0,
            batch_quantity_warehouse=0 if place == IN_STORE else size, location=place,
        ))
    return lots


def _split(rng: random.Random, units: int, parts: int, unit_size: int) -> list[int]:
    """`units` × unit_size cut at random into at most `parts` non-empty lots (none when there are no units)."""
    count = min(parts, units)
    cuts = sorted(rng.sample(range(1, units), count - 1)) if count else []
    return [(end - begin) * unit_size for begin, end in zip([0, *cuts], [*cuts, units])] if count else []


def _days_left(rng: random.Random, category: Category, life: int, count: int) -> list[int]:
    """Days from start_date to each lot's expiry, oldest lot first: older lots were received, and expire, earlier.

    Every lot was received by start_date (days left <= life) and is still good on it (>= 1 day left).
    """
    max_age, gaps = ((2, (1, 2)) if category.perishable else (30, (7, 45)))
    newest = life - rng.randint(0, min(max_age, life - 1))
    days = [newest]
    for _ in range(count - 1):
        days.append(max(1, days[-1] - rng.randint(*gaps)))
    days.reverse()
    # A forgotten lot at the back: without it long-life items would never reach near-expiry in a week-long run.
    if not category.perishable and rng.random() < _FORGOTTEN_LOT_SHARE:
        days[0] = min(days[0], rng.randint(1, 7))
    return days


def _discount(rng: random.Random, shelf_id: str, start_date: date) -> DiscountRow:
    """A promotion of 3-7 days that ends within the first _PROMOTION_HORIZON_DAYS."""
    length = rng.randint(3, 7)
    first = start_date + timedelta(days=rng.randint(0, _PROMOTION_HORIZON_DAYS - length))
    return DiscountRow(
        shelf_id=shelf_id, discount=rng.choice(_DISCOUNTS),
        start_date=first, end_date=first + timedelta(days=length - 1),
    )


def write_store(store: StoreData, out_dir: Path, csv_dir: Path | None = None) -> list[Path]:
    """The five Parquet files in out_dir and the five CSVs in csv_dir (out_dir/db_csv), each replaced atomically.

    The bytes depend only on `store` (fixed writer options, no timestamps), so a seed always gives the same files.
    """
    csv_dir = csv_dir or out_dir / "db_csv"
    for folder in (out_dir, csv_dir):
        folder.mkdir(parents=True, exist_ok=True)
    parquet = [
        _write_atomic(out_dir / f"{t.stem}.parquet", _parquet_bytes(t.model, getattr(store, t.attr))) for t in REFERENCE_FILES
    ]
    csvs = [
        _write_atomic(csv_dir / t.csv_name, csv_text(t.model, getattr(store, t.attr)).encode()) for t in REFERENCE_FILES
    ]
    return [*parquet, *csvs]


def write_chain(chain: Mapping[str, StoreData], out_dir: Path) -> list[Path]:
    """One store as write_store writes it; a chain's stores each in their own folders: Parquet in out_dir/<id>/,
    CSVs in out_dir/db_csv/<id>/ (one folder of reference files per store, what `data import` reads).

    Refuses a db_csv folder that holds the other layout or stores this chain does not have: `data import` would
    take them for the chain's.
    """
    csv_dir = out_dir / "db_csv"
    present = chain_csv_dirs(csv_dir, single_store="") if csv_dir.is_dir() else {}
    one_store = len(chain) == 1
    stray = sorted(set(present) - ({""} if one_store else set(chain)))
    if stray:
        held = "one store's reference files" if stray == [""] else f"the folders of stores {', '.join(stray)}"
        raise SmartShelfError(f"{csv_dir} holds {held}, which this {'store' if one_store else 'chain'} would not "
                              "replace: delete them or write elsewhere (--out)")
    if one_store:
        return write_store(next(iter(chain.values())), out_dir)
    return [path for store_id, store in chain.items()
            for path in write_store(store, out_dir / store_id, csv_dir / store_id)]


def _parquet_bytes(model: type[BaseModel], rows: list[BaseModel]) -> bytes:
    table = pa.table({name: [getattr(row, name) for row in rows] for name in columns(model)},
                     schema=arrow_schema(model))
    sink = pa.BufferOutputStream()
    # Every option pinned, so a pyarrow default changing cannot change the bytes between runs.
    pq.write_table(table, sink, version="2.6", compression="zstd", compression_level=3, use_dictionary=True,
                   write_statistics=True, data_page_version="1.0", store_schema=True, write_page_index=False)
    return sink.getvalue().to_pybytes()


def _write_atomic(path: Path, data: bytes) -> Path:
    """Readers see the old file or the new one, never half of it."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_bytes(data)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path
