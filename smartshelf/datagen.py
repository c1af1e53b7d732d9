"""The deterministic synthetic supermarket: ~1100 shelves in 25 categories, their lots and promotions.

generate_store is pure (one seeded random.Random, no clock); write_store is the only I/O.
"""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from smartshelf.store import (
    REFERENCE_FILES,
    BatchRow,
    DiscountRow,
    StoreData,
    StoreInventoryRow,
    WarehouseInventoryRow,
    columns,
)
from smartshelf.store_csv import csv_text
from smartshelf.tabular import arrow_schema


@dataclass(frozen=True)
class Category:
    """What is typical of a category's items; every draw for a shelf comes from these ranges."""

    name: str
    subcategories: tuple[str, ...]
    perishable: bool
    weights_kg: tuple[float, ...]  # usual pack sizes, ascending: bigger packs cost more
    price_eur: tuple[float, float]
    shelf_life_days: tuple[int, int]  # from receipt to expiry
    batch_sizes: tuple[int, ...]  # units per supplier case
    max_stock: tuple[int, int]  # units the shelf holds


CATEGORIES: tuple[Category, ...] = (
    Category("Dairy", ("Milk", "Yogurt", "Fresh Cheese", "Aged Cheese", "Butter", "Cream"), True,
             (0.125, 0.15, 0.25, 0.5, 1.0), (0.59, 7.9), (7, 21), (12, 24), (24, 72)),
    Category("Bakery", ("Bread", "Rolls", "Pastries", "Cakes", "Flatbreads"), True,
             (0.08, 0.25, 0.4, 0.5, 0.75), (0.49, 6.9), (2, 5), (6, 12, 18), (20, 48)),
    Category("Fruit", ("Apples and Pears", "Citrus", "Bananas", "Berries", "Stone Fruit", "Exotic Fruit"), True,
             (0.25, 0.5, 1.0, 1.5), (0.99, 5.99), (5, 14), (10, 12, 20), (20, 60)),
    Category("Vegetables", ("Leafy Greens", "Root Vegetables", "Tomatoes", "Onions and Garlic", "Peppers",
                            "Mushrooms"), True,
             (0.15, 0.25, 0.5, 1.0), (0.79, 4.49), (4, 12), (10, 12, 20), (20, 60)),
    Category("Meat", ("Beef", "Pork", "Poultry", "Minced Meat", "Sausages"), True,
             (0.3, 0.4, 0.5, 0.8, 1.0), (2.99, 18.9), (3, 8), (6, 8, 12), (16, 40)),
    Category("Fish", ("Fresh Fish", "Shellfish", "Smoked Fish"), True,
             (0.15, 0.2, 0.3, 0.5), (3.49, 24.9), (2, 5), (6, 8), (12, 30)),
    Category("Frozen", ("Frozen Vegetables", "Frozen Fish", "Pizza", "Ice Cream", "Ready Meals"), False,
             (0.3, 0.45, 0.6, 0.75, 1.0), (1.49, 8.99), (180, 540), (12, 24), (20, 60)),
    Category("Beverages", ("Water", "Soft Drinks", "Juices", "Iced Tea", "Energy Drinks"), False,
             (0.25, 0.33, 0.5, 1.0, 1.5, 2.0), (0.29, 3.49), (180, 540), (6, 12, 24), (24, 80)),
    Category("Beer and Wine", ("Lager", "Craft Beer", "Red Wine", "White Wine", "Sparkling Wine"), False,
             (0.33, 0.5, 0.75), (0.89, 19.9), (270, 730), (6, 12, 24), (24, 72)),
    Category("Spirits", ("Gin", "Vodka", "Whisky", "Liqueurs", "Aperitifs"), False,
             (0.7, 1.0), (7.99, 39.9), (600, 730), (6, 12), (12, 36)),
    Category("Coffee and Tea", ("Ground Coffee", "Coffee Beans", "Capsules", "Tea", "Herbal Infusions"), False,
             (0.05, 0.1, 0.25, 0.5, 1.0), (1.29, 12.9), (270, 730), (12, 24), (20, 60)),
    Category("Snacks", ("Crisps", "Crackers", "Nuts", "Popcorn", "Pretzels"), False,
             (0.04, 0.1, 0.15, 0.2, 0.3), (0.69, 4.99), (120, 300), (12, 24, 36), (30, 80)),
    Category("Sweets and Biscuits", ("Chocolate", "Pralines", "Candies", "Chewing Gum", "Biscuits"), False,
             (0.03, 0.1, 0.2, 0.35, 0.5), (0.49, 7.99), (180, 540), (12, 24, 48), (30, 80)),
    Category("Pasta and Rice", ("Dry Pasta", "Egg Pasta", "Rice", "Grains and Couscous"), False,
             (0.25, 0.5, 1.0), (0.59, 4.49), (365, 730), (12, 24, 36), (30, 80)),
    Category("Canned Goods", ("Canned Tomatoes", "Legumes", "Canned Tuna", "Canned Vegetables", "Soups"), False,
             (0.16, 0.24, 0.4, 0.8), (0.49, 4.99), (540, 730), (12, 24, 48), (30, 80)),
    Category("Breakfast", ("Cereals", "Muesli", "Rusks", "Jams and Spreads", "Honey"), False,
             (0.25, 0.375, 0.5, 0.75), (1.19, 6.49), (180, 540), (12, 24), (20, 60)),
    Category("Condiments and Sauces", ("Olive Oil", "Seed Oils", "Vinegar", "Pasta Sauces",
                                       "Ketchup and Mayonnaise", "Spices"), False,
             (0.05, 0.25, 0.5, 0.75, 1.0), (0.79, 11.9), (270, 730), (12, 24), (20, 60)),
    Category("Baking", ("Flour", "Sugar", "Baking Mixes", "Yeast"), False,
             (0.025, 0.5, 1.0), (0.39, 3.99), (180, 540), (12, 24, 36), (30, 80)),
    Category("Health Food", ("Gluten-free", "Organic", "Protein Bars"), False,
             (0.05, 0.2, 0.4, 0.5), (1.49, 7.99), (180, 365), (12, 24), (20, 50)),
    Category("Baby", ("Baby Food", "Infant Milk", "Diapers", "Baby Wipes"), False,
             (0.08, 0.2, 0.8, 1.2), (0.99, 24.9), (270, 730), (6, 12, 24), (20, 48)),
    Category("Pet Food", ("Dry Dog Food", "Wet Dog Food", "Dry Cat Food", "Wet Cat Food", "Pet Treats"), False,
             (0.085, 0.4, 1.5, 3.0), (0.59, 18.9), (365, 730), (6, 12, 24), (20, 60)),
    Category("Household Cleaning", ("Dish Detergents", "Surface Cleaners", "Bleach", "Bathroom Cleaners"), False,
             (0.5, 0.75, 1.0, 1.5), (0.99, 7.49), (540, 730), (6, 12, 24), (20, 60)),
    Category("Laundry", ("Liquid Detergent", "Powder Detergent", "Fabric Softener", "Stain Removers"), False,
             (0.75, 1.0, 1.5, 2.5, 3.0), (1.99, 14.9), (540, 730), (4, 6, 12), (16, 48)),
    Category("Paper Goods", ("Toilet Paper", "Paper Towels", "Tissues", "Napkins"), False,
             (0.1, 0.5, 1.0, 2.0), (0.99, 8.99), (600, 730), (6, 8, 12), (16, 40)),
    Category("Personal Care", ("Shampoo", "Shower Gel", "Toothpaste", "Deodorants", "Soap", "Razors"), False,
             (0.05, 0.075, 0.1, 0.25, 0.4), (0.99, 9.99), (540, 730), (12, 24), (20, 60)),
)

_SHELVES = (1075, 1125)  # total shelf count range
_MIN_SHELVES_PER_SUBCATEGORY = 4
_LOTS_PER_SHELF = ((1, 2, 3), (3, 4, 3))  # choices, weights
_LOW_STOCK_SHARE = 0.08  # shelves caught well below half full
_FORGOTTEN_LOT_SHARE = 0.05  # long-life shelves whose oldest lot is about to expire
_DISCOUNT_SHARE = 0.04
_DISCOUNTS = (0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5)
_PROMOTION_HORIZON_DAYS = 30


def generate_store(seed: int, start_date: date = date(2025, 1, 1)) -> StoreData:
    """The store as it opens on start_date; the same seed gives the same store."""
    rng = random.Random(seed)
    store = StoreData()
    for number, (aisle, category, subcategory) in enumerate(_shelf_plan(rng), start=1):
        shelf_id = f"S{number:04d}"
        shelf, warehouse, batch_size = _inventory(rng, shelf_id, aisle, category, subcategory)
        store.store_inventory.append(shelf)
        store.warehouse_inventory.append(warehouse)
        for lot in _lots(rng, shelf, warehouse.current_stock, category, batch_size, start_date):
            if lot.batch_quantity_store:
                store.store_batches.append(lot.model_copy(update={"location": "in_store"}))
            if lot.batch_quantity_warehouse:
                store.warehouse_batches.append(lot.model_copy(update={"location": "warehouse"}))
        if rng.random() < _DISCOUNT_SHARE:
            store.discounts.append(_discount(rng, shelf_id, start_date))
    return store


def _shelf_plan(rng: random.Random) -> list[tuple[str, Category, str]]:
    """(aisle, category, subcategory) per shelf in aisle order: a few shelves each, the rest spread at random."""
    slots = [(f"A{aisle:02d}", category, sub) for aisle, category in enumerate(CATEGORIES, start=1)
             for sub in category.subcategories]
    extra = rng.randint(*_SHELVES) - _MIN_SHELVES_PER_SUBCATEGORY * len(slots)
    counts = Counter(rng.choices(range(len(slots)), k=extra))
    return [slot for index, slot in enumerate(slots) for _ in range(_MIN_SHELVES_PER_SUBCATEGORY + counts[index])]


def _inventory(
    rng: random.Random, shelf_id: str, aisle: str, category: Category, subcategory: str
) -> tuple[StoreInventoryRow, WarehouseInventoryRow, int]:
    """The shelf row, its warehouse row and the item's supplier case size."""
    size = rng.randrange(len(category.weights_kg))
    low, high = category.price_eur
    price = low + (high - low) * (size + rng.random()) / len(category.weights_kg)
    batch_size = rng.choice(category.batch_sizes)
    maximum = max(rng.randint(*category.max_stock), batch_size)  # one full case fits
    fill = rng.uniform(0.05, 0.5) if rng.random() < _LOW_STOCK_SHARE else rng.uniform(0.5, 1.0)
    item = {
        "shelf_id": shelf_id, "aisle": aisle, "item_weight": category.weights_kg[size],
        "item_category": category.name, "item_subcategory": subcategory,
        "item_price": round(math.floor(price * 10) / 10 + 0.09, 2),  # shelf prices end in 9
    }
    shelf = StoreInventoryRow(
        **item, shelf_weight=round(rng.uniform(6.0, 18.0), 1), item_visibility=round(rng.uniform(0.02, 0.25), 4),
        maximum_stock=maximum, current_stock=max(1, round(maximum * fill)),
    )
    cases = math.ceil(maximum * rng.randint(3, 6) / batch_size)
    # Fresh food mostly goes straight to the shelf; the back room keeps at most a case of it.
    held = rng.choice((0, 0, 1)) if category.perishable else rng.randint(cases // 4, cases * 3 // 4)
    warehouse = WarehouseInventoryRow(
        **item, shelf_weight=round(rng.uniform(15.0, 40.0), 1),
        maximum_stock=cases * batch_size, current_stock=held * batch_size,
    )
    return shelf, warehouse, batch_size


def _lots(
    rng: random.Random, shelf: StoreInventoryRow, warehouse_stock: int, category: Category, batch_size: int,
    start_date: date,
) -> list[BatchRow]:
    """1-3 lots, oldest first, holding the shelf's and the warehouse's stock.

    The shelf holds the oldest units (FIFO), so the lot at the boundary is split between shelf and warehouse.
    """
    total = shelf.current_stock + warehouse_stock
    count = min(rng.choices(*_LOTS_PER_SHELF)[0], total)
    cuts = sorted(rng.sample(range(1, total), count - 1))
    sizes = [end - begin for begin, end in zip([0, *cuts], [*cuts, total])]
    life = rng.randint(*category.shelf_life_days)
    lots: list[BatchRow] = []
    before = 0
    for number, (size, days_left) in enumerate(zip(sizes, _days_left(rng, category, life, count)), start=1):
        on_shelf = max(0, min(size, shelf.current_stock - before))
        before += size
        expiry = start_date + timedelta(days=days_left)
        lots.append(BatchRow(
            shelf_id=shelf.shelf_id, batch_code=f"B{shelf.shelf_id[1:]}-{number}",
            item_category=shelf.item_category, item_subcategory=shelf.item_subcategory,
            standard_batch_size=batch_size, received_date=expiry - timedelta(days=life), expiry_date=expiry,
            batch_quantity_total=size, batch_quantity_store=on_shelf, batch_quantity_warehouse=size - on_shelf,
            location="in_store" if on_shelf else "warehouse",
        ))
    return lots


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


def write_store(store: StoreData, out_dir: Path) -> list[Path]:
    """The five Parquet files in out_dir and the five CSVs in out_dir/db_csv, each replaced atomically.

    The bytes depend only on `store` (fixed writer options, no timestamps), so a seed always gives the same files.
    """
    csv_dir = out_dir / "db_csv"
    csv_dir.mkdir(parents=True, exist_ok=True)
    parquet = [
        _write_atomic(out_dir / f"{t.stem}.parquet", _parquet_bytes(t.model, getattr(store, t.attr))) for t in REFERENCE_FILES
    ]
    csvs = [
        _write_atomic(csv_dir / t.csv_name, csv_text(t.model, getattr(store, t.attr)).encode()) for t in REFERENCE_FILES
    ]
    return [*parquet, *csvs]


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
