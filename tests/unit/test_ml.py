"""Demand forecasting (smartshelf.ml), pure: daily features replayed from a run's records (hand-checked, and equal
to the simulated world's), no look-ahead in features or training splits, deterministic training that beats the
last-7-day sales on a weekly series, model files that load whole or fail with one clear line, and forecasts that
give the same predictions and plan ids when run again."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from datetime import date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pytest

from smartshelf.datagen import generate_store
from smartshelf.errors import SmartShelfError
from smartshelf.loop import staff_move
from smartshelf.ml.artifacts import (COLUMNS_FILE, MODEL_FILE, load_model, model_version, newest_model_path,
                                     save_model)
from smartshelf.ml.features import (HORIZON_DAYS, RunRecords, batches_needed, daily_features, end_of,
                                    fill_targets)
from smartshelf.ml.predict import forecast, plan_id
from smartshelf.ml.train import (FEATURE_COLUMNS, TrainResult, predict_units, rule_batches, time_series_folds,
                                 train)
from smartshelf.policies import ConfigTables, derive_config, load_policy_config
from smartshelf.schemas import (Alert, DailyDiscount, FootTrafficEvent, PosItem, PosTransaction,
                                ShelfDailyFeatures, ShelfEvent, SupplierOrder, SupplierReceipt, WarehouseEvent)
from smartshelf.settings import Settings
from smartshelf.store import BatchRow, DiscountRow, StoreData, StoreInventoryRow, WarehouseInventoryRow
from smartshelf.world import World, WorldConfig, WorldEvents

MONDAY = datetime(2025, 1, 6, 8)  # the clock starts at opening time on a Monday
RECEIVED = date(2025, 1, 1)
TARGETS = ("sales_next_7d", "batches_to_order")


# --- helpers ----------------------------------------------------------------------------------
def day(n: int) -> date:
    return MONDAY.date() + timedelta(days=n)


def at(n: int, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day(n), time(hour, minute))


def shelf_row(shelf_id: str, category: str, maximum: int, stock: int) -> StoreInventoryRow:
    return StoreInventoryRow(shelf_id=shelf_id, aisle=1, item_weight=500, shelf_weight=500 * maximum,
                             item_category=category, item_subcategory="Water", item_visibility=0.3,
                             maximum_stock=maximum, current_stock=stock, item_price=1.5)


def wh_row(shelf_id: str, category: str, maximum: int, stock: int) -> WarehouseInventoryRow:
    return WarehouseInventoryRow(shelf_id=shelf_id, aisle=1, item_weight=500, shelf_weight=500 * maximum,
                                 item_category=category, item_subcategory="Water", maximum_stock=maximum,
                                 current_stock=stock, item_price=1.5)


def lot(shelf_id: str, code: str, category: str, quantity: int, expiry: date, *, in_store: bool,
        batch_size: int = 12) -> BatchRow:
    return BatchRow(shelf_id=shelf_id, batch_code=code, item_category=category, item_subcategory="Water",
                    standard_batch_size=batch_size, received_date=RECEIVED, expiry_date=expiry,
                    batch_quantity_total=quantity, batch_quantity_store=quantity if in_store else 0,
                    batch_quantity_warehouse=0 if in_store else quantity,
                    location="in-store" if in_store else "warehouse")


def tables_of(store: StoreData) -> ConfigTables:
    return derive_config(store, load_policy_config())


def sale(transaction_id: str, shelf_id: str, quantity: int, ts: datetime) -> PosTransaction:
    item = PosItem(shelf_id=shelf_id, quantity=quantity, unit_price=1.5, discount=0, line_total=quantity * 1.5)
    return PosTransaction(transaction_id=transaction_id, customer_id=f"c-{transaction_id}", ts=ts, items=[item],
                          total=item.line_total)


def pickup(event_id: str, shelf_id: str, quantity: int, ts: datetime) -> ShelfEvent:
    return ShelfEvent(event_id=event_id, event_type="pickup", shelf_id=shelf_id, quantity=quantity,
                      weight_change=-500.0 * quantity, customer_id=f"c-{event_id}", ts=ts)


def wh_move(kind: str, shelf_id: str, code: str, quantity: int, expiry: date, ts: datetime) -> WarehouseEvent:
    return WarehouseEvent(event_id=f"{kind}-{shelf_id}-{code}-{ts:%d%H}", event_type=kind,  # type: ignore[arg-type]
                          shelf_id=shelf_id, batch_code=code, quantity=quantity, received_date=RECEIVED,
                          expiry_date=expiry, ts=ts)


def alert(shelf_id: str, kind: str, ts: datetime) -> Alert:
    return Alert(alert_id=f"{kind}-{shelf_id}-{ts:%d%H}", alert_type=kind, location="store",  # type: ignore[arg-type]
                 severity="warning", shelf_id=shelf_id, message="m", ts=ts)


def by_key(rows: list[ShelfDailyFeatures]) -> dict[tuple[str, date], ShelfDailyFeatures]:
    return {(row.shelf_id, row.feature_date): row for row in rows}


def without_targets(row: ShelfDailyFeatures) -> dict[str, object]:
    return row.model_dump(exclude=set(TARGETS))


# --- the hand-checked store -------------------------------------------------------------------
# Shelf A (BEVERAGES: reorder point 30, order up to 90, lead time 2 days): 20 on the shelf in lot A1 (expires
# 20 Jan); 35 in the warehouse, W1 30 (1 Feb) and W2 5 (8 Jan). Shelf B: 10 in lot B1 (9 Jan), nothing behind.
# Day n is 6 Jan + n; the run covers days 0..9.
A1_EXPIRY, W1_EXPIRY, W2_EXPIRY, B1_EXPIRY, S1_EXPIRY = (date(2025, 1, 20), date(2025, 2, 1), date(2025, 1, 8),
                                                         date(2025, 1, 9), date(2025, 2, 28))
HAND_DAYS = 10


def a_sales(n: int) -> int:
    """Shelf A sells 1, 2, 3, 1, 2, 3, ... on days 0, 1, 2, ..."""
    return n % 3 + 1


@pytest.fixture(scope="module")
def hand_store() -> StoreData:
    return StoreData(
        store_inventory=[shelf_row("A", "BEVERAGES", 50, 20), shelf_row("B", "BEVERAGES", 40, 10)],
        warehouse_inventory=[wh_row("A", "BEVERAGES", 100, 35), wh_row("B", "BEVERAGES", 80, 0)],
        store_batches=[lot("A", "A1", "BEVERAGES", 20, A1_EXPIRY, in_store=True),
                       lot("B", "B1", "BEVERAGES", 10, B1_EXPIRY, in_store=True, batch_size=6)],
        warehouse_batches=[lot("A", "W1", "BEVERAGES", 30, W1_EXPIRY, in_store=False),
                           lot("A", "W2", "BEVERAGES", 5, W2_EXPIRY, in_store=False)],
        discounts=[DiscountRow(shelf_id="A", discount=0.1, start_date=day(7), end_date=day(8))],
    )


def hand_records() -> RunRecords:
    sales = [sale(f"t{n}", "A", a_sales(n), at(n, 10, 30)) for n in range(HAND_DAYS)]
    pickups = [pickup(f"p{n}", "A", a_sales(n), at(n, 10)) for n in range(HAND_DAYS)]
    refill = staff_move("putback", "rf-1", "A", "W1", 10, RECEIVED, W1_EXPIRY, 500, at(1, 9, 30))
    removal = staff_move("pickup", "rm-B1", "B", "B1", 10, RECEIVED, B1_EXPIRY, 500, at(4, 6))
    order = SupplierOrder(order_id="so-1", plan_id="sp-1", shelf_id="A", batches=2, quantity=24,
                          ordered_ts=at(3, 12), expected_delivery_ts=at(5, 7), status="received")
    return RunRecords(
        pos_transactions=sales,
        foot_traffic=[FootTrafficEvent(event_id=f"ft{n}-{kind}", event_type=kind, customer_id=f"c{n}",
                                       ts=at(n // 3, 9 + n % 3))
                      for n in range(5) for kind in ("entry", "exit")],  # 3 customers on day 0, 2 on day 1
        shelf_events=pickups + refill + removal,
        wh_events=[wh_move("wh_out", "A", "W1", 10, W1_EXPIRY, at(1, 9)),
                   wh_move("wh_removal", "A", "W2", 5, W2_EXPIRY, at(3, 6)),
                   wh_move("wh_in", "A", "S1", 24, S1_EXPIRY, at(5, 7))],
        alerts=[alert("A", "low_stock", at(1, 11)), alert("A", "wh_reorder", at(1, 12)),
                alert("B", "expired", at(4, 6))],
        wh_supplier_orders=[order.model_copy(update={"status": "open"}), order],  # both versions, as the lake may
        wh_supplier_receipts=[SupplierReceipt(receipt_id="sr-1", order_id="so-1", shelf_id="A", batch_code="S1",
                                              quantity=24, received_ts=at(5, 7), expiry_date=S1_EXPIRY)],
        daily_discounts=[DailyDiscount(shelf_id="A", discount_date=day(6), discount=0.2, reason="near_expiry"),
                         DailyDiscount(shelf_id="B", discount_date=day(2), discount=0.3, reason="near_expiry")],
    )


@pytest.fixture(scope="module")
def hand_rows(hand_store: StoreData) -> dict[tuple[str, date], ShelfDailyFeatures]:
    rows = daily_features(hand_store, tables_of(hand_store), MONDAY, hand_records(), end_of(day(HAND_DAYS - 1)))
    assert [(r.feature_date, r.shelf_id) for r in rows] == [(day(n), s) for n in range(HAND_DAYS) for s in "AB"]
    return by_key(rows)


def test_features_count_the_days_sales_people_alerts_and_discounts(
        hand_rows: dict[tuple[str, date], ShelfDailyFeatures]) -> None:
    a0, a1, a7 = hand_rows["A", day(0)], hand_rows["A", day(1)], hand_rows["A", day(7)]
    assert (a0.day_of_week, a0.is_weekend, hand_rows["A", day(5)].is_weekend) == (0, False, True)
    assert (a0.sales_qty, a0.sales_last_1d, a0.sales_last_7d, a0.sales_last_14d) == (1, None, None, None)
    assert (a1.sales_qty, a1.sales_last_1d) == (2, 1)
    # day 7: sold 2; yesterday 1; days 1..7 sold 2+3+1+2+3+1+2; 14 days would reach before the run
    assert (a7.sales_qty, a7.sales_last_1d, a7.sales_last_7d, a7.sales_last_14d) == (2, 1, 14, None)
    assert hand_rows["A", day(6)].sales_last_7d == sum(a_sales(n) for n in range(7))
    # the rate over the days the run has: day 0 alone, then days 0..7 (15 units in 8 days)
    assert [(r.sales_per_day, r.sales_rate_days) for r in (a0, a7)] == [(1.0, 1), (15 / 8, 8)]
    assert [hand_rows["B", day(n)].people_count for n in range(3)] == [3, 2, 0]  # entries only, shared by shelves
    assert (a1.alerts_today, a0.alerts_today, hand_rows["B", day(4)].alerts_today) == (2, 0, 1)
    # the till's discount: the day's near-expiry discount or the promotion (days 7 and 8)
    assert [hand_rows["A", day(n)].discount for n in range(5, 10)] == [0.0, 0.2, 0.1, 0.1, 0.0]
    assert hand_rows["B", day(2)].discount == 0.3
    assert (a0.item_category, a0.item_price, a0.standard_batch_size, hand_rows["B", day(0)].standard_batch_size) \
        == ("BEVERAGES", 1.5, 12, 6)


def test_features_replay_shelf_warehouse_orders_and_lots(
        hand_rows: dict[tuple[str, date], ShelfDailyFeatures]) -> None:
    a = [hand_rows["A", day(n)] for n in range(HAND_DAYS)]
    # 20 on the shelf, less each day's pickups, plus the refill of 10 on day 1
    assert [r.shelf_stock for r in a] == [19, 27, 24, 23, 21, 18, 17, 15, 12, 11]
    assert (a[0].shelf_capacity, a[0].shelf_fill_ratio, a[0].low_stock_threshold_pct) == (50, 19 / 50, 0.25)
    # 35; 10 out to the shelf on day 1; W2's 5 removed on day 3; the order's 24 in on day 5
    assert [r.wh_stock for r in a] == [35, 25, 25, 20, 20, 44, 44, 44, 44, 44]
    assert (a[0].wh_fill_ratio, a[0].reorder_point, a[0].order_up_to) == (0.35, 30, 90)
    assert [r.expired_units for r in a] == [0, 0, 0, 5, 0, 0, 0, 0, 0, 0]
    assert hand_rows["B", day(4)].expired_units == 10 and hand_rows["B", day(4)].shelf_stock == 0
    # the order placed on day 3 is open until its receipt on day 5 at 07:00
    assert [r.open_order_qty for r in a[2:7]] == [0, 24, 24, 0, 0]
    assert [r.days_to_next_delivery for r in a[2:7]] == [None, 2, 1, None, None]
    # lots: W2 (8 Jan) is the earliest until removed, then A1 (20 Jan), which sales empty first (FIFO)
    assert [r.days_to_earliest_expiry for r in a[:4]] == [2, 1, 0, 11]
    assert [r.qty_expiring_next_7d for r in a[:4]] == [5, 5, 5, 0]
    sold_by_day7 = sum(a_sales(n) for n in range(8))
    assert a[7].qty_expiring_next_7d == 20 - sold_by_day7  # A1's remainder expires on day 14 = day 7 + 7
    b = [hand_rows["B", day(n)] for n in range(HAND_DAYS)]
    assert [r.days_to_earliest_expiry for r in b[:5]] == [3, 2, 1, 0, None]  # B1 removed on day 4: no lot left
    assert b[0].qty_expiring_next_7d == 10 and b[0].wh_fill_ratio == 0.0


def test_targets_come_from_the_next_seven_days_and_are_none_until_they_are_over(
        hand_rows: dict[tuple[str, date], ShelfDailyFeatures]) -> None:
    a = [hand_rows["A", day(n)] for n in range(HAND_DAYS)]
    known = HAND_DAYS - HORIZON_DAYS  # days 0..2 have 7 complete days after them
    assert [r.sales_next_7d for r in a] == [sum(a_sales(k) for k in range(n + 1, n + 8)) for n in range(known)] \
        + [None] * HORIZON_DAYS
    assert [r.batches_to_order for r in a[known:]] == [None] * HORIZON_DAYS
    assert [r.batches_to_order for r in a[:known]] == [0, 0, 0]  # 14 sold vs 54 on hand: nothing to order
    # batches: the units beyond shelf + warehouse + on order, in whole standard batches
    row = a[0].model_copy(update={"shelf_stock": 3, "wh_stock": 2, "open_order_qty": 0})
    assert fill_targets([row, *a[1:]])[0].batches_to_order == 1  # 14 - 5 = 9 units: one batch of 12
    assert (batches_needed(13, 5, 4), batches_needed(13, 13, 4), batches_needed(13.2, 13, 4)) == (2, 0, 1)


def test_only_completed_days_get_rows(hand_store: StoreData) -> None:
    tables, records = tables_of(hand_store), hand_records()
    assert daily_features(hand_store, tables, MONDAY, records, at(0, 23, 59)) == []
    rows = daily_features(hand_store, tables, MONDAY, records, at(3, 12))
    assert sorted({r.feature_date for r in rows}) == [day(0), day(1), day(2)]
    assert all(r.sales_next_7d is None for r in rows)


# --- the simulated world ----------------------------------------------------------------------
WORLD_DAYS = 4


@pytest.fixture(scope="module")
def world_run() -> tuple[StoreData, RunRecords, dict[str, int], dict[str, list[tuple[date, int]]]]:
    """Every tenth shelf of the generated store, a few days of customers (no loop): the records, and the
    world's final shelf stock and lots."""
    full = generate_store(42)
    keep = {row.shelf_id for row in full.store_inventory[::10]}
    store = StoreData(
        store_inventory=[r for r in full.store_inventory if r.shelf_id in keep],
        warehouse_inventory=[r for r in full.warehouse_inventory if r.shelf_id in keep],
        store_batches=[r for r in full.store_batches if r.shelf_id in keep],
        warehouse_batches=[r for r in full.warehouse_batches if r.shelf_id in keep],
        discounts=[r for r in full.discounts if r.shelf_id in keep])
    world = World(store, 7, WorldConfig(customers_per_day=300))
    state, events, tick = world.initial_state(MONDAY), WorldEvents(), MONDAY
    end = end_of(day(WORLD_DAYS - 1))
    while tick < end:
        tick = min(tick + timedelta(hours=2), end)
        state, new = world.advance(state, tick)
        events.foot_traffic += new.foot_traffic
        events.shelf_events += new.shelf_events
        events.pos_transactions += new.pos_transactions
    lots = {shelf_id: [(l.expiry_date, l.quantity) for l in shelf_lots] for shelf_id, shelf_lots in
            state.shelf_lots.items()}
    records = RunRecords(pos_transactions=events.pos_transactions, foot_traffic=events.foot_traffic,
                         shelf_events=events.shelf_events)
    return store, records, state.shelf_stock, lots


def test_features_replay_what_the_world_did(world_run) -> None:  # type: ignore[no-untyped-def]
    store, records, stock, lots = world_run
    rows = daily_features(store, tables_of(store), MONDAY, records, end_of(day(WORLD_DAYS - 1)))
    assert len(rows) == WORLD_DAYS * len(store.store_inventory)
    sold: Counter[str] = Counter()
    for transaction in records.pos_transactions:
        for item in transaction.items:
            sold[item.shelf_id] += item.quantity
    totals: Counter[str] = Counter()
    for row in rows:
        totals[row.shelf_id] += row.sales_qty
    assert totals == sold and sum(sold.values()) > 1000
    assert 0 in stock.values()  # some shelves ran empty: the replay stops at zero as the world does
    last = [row for row in rows if row.feature_date == day(WORLD_DAYS - 1)]
    assert {row.shelf_id: row.shelf_stock for row in last} == stock
    horizon = day(WORLD_DAYS - 1) + timedelta(days=7)
    warehouse = [(b.shelf_id, b.expiry_date, b.batch_quantity_warehouse) for b in store.warehouse_batches]
    for row in last:  # the shelf's lots as the world sold them (FIFO), and the untouched warehouse lots
        held = lots[row.shelf_id] + [(expiry, units) for shelf_id, expiry, units in warehouse
                                     if shelf_id == row.shelf_id]
        assert row.qty_expiring_next_7d == sum(units for expiry, units in held if expiry <= horizon), row.shelf_id
    entries = sum(1 for e in records.foot_traffic if e.event_type == "entry")
    assert sum(row.people_count for row in rows if row.shelf_id == last[0].shelf_id) == entries


# --- no look-ahead ----------------------------------------------------------------------------
def rewrite_after(records: RunRecords, cut: datetime) -> RunRecords:
    """Every record stamped at or after `cut` dropped, and others put in its place: a big sale, a removal, an
    alert, an order, a late receipt of an order placed before the cut, discounts."""
    before = RunRecords(
        pos_transactions=[r for r in records.pos_transactions if r.ts < cut],
        foot_traffic=[r for r in records.foot_traffic if r.ts < cut],
        shelf_events=[r for r in records.shelf_events if r.ts < cut],
        wh_events=[r for r in records.wh_events if r.ts < cut],
        alerts=[r for r in records.alerts if r.ts < cut],
        wh_supplier_orders=[r for r in records.wh_supplier_orders if r.ordered_ts < cut],
        wh_supplier_receipts=[r for r in records.wh_supplier_receipts if r.received_ts < cut],
        daily_discounts=[r for r in records.daily_discounts if r.discount_date < cut.date()],
    )
    later = cut + timedelta(hours=30)
    return replace(
        before,
        pos_transactions=[*before.pos_transactions, sale("late", "A", 500, later)],
        foot_traffic=[*before.foot_traffic, FootTrafficEvent(event_id="late", event_type="entry", customer_id="x",
                                                             ts=later)],
        shelf_events=[*before.shelf_events, pickup("late", "A", 7, later)],
        wh_events=[*before.wh_events, wh_move("wh_removal", "A", "W1", 9, W1_EXPIRY, cut)],
        alerts=[*before.alerts, alert("A", "out_of_stock", cut)],
        wh_supplier_orders=[*before.wh_supplier_orders, SupplierOrder(
            order_id="late", plan_id="late", shelf_id="A", batches=9, quantity=108, ordered_ts=cut,
            expected_delivery_ts=later, status="open")],
        wh_supplier_receipts=[*before.wh_supplier_receipts, SupplierReceipt(
            receipt_id="late", order_id="so-1", shelf_id="A", batch_code="S1", quantity=24, received_ts=later,
            expiry_date=S1_EXPIRY)],
        daily_discounts=[*before.daily_discounts, DailyDiscount(shelf_id="A", discount_date=cut.date(),
                                                                discount=0.5, reason="promotion")],
    )


@pytest.mark.parametrize("last_kept", [2, 4])
def test_no_feature_of_a_day_changes_when_later_records_do(hand_store: StoreData, last_kept: int) -> None:
    tables, until = tables_of(hand_store), end_of(day(HAND_DAYS - 1))
    original = by_key(daily_features(hand_store, tables, MONDAY, hand_records(), until))
    cut = end_of(day(last_kept))
    changed = by_key(daily_features(hand_store, tables, MONDAY, rewrite_after(hand_records(), cut), until))
    for key, row in original.items():
        if key[1] <= day(last_kept):
            assert without_targets(changed[key]) == without_targets(row), key
    # the targets may look ahead, and do: the late sale of 500 counts for the days before it
    assert changed["A", day(2)].sales_next_7d != original["A", day(2)].sales_next_7d
    assert any(without_targets(changed[key]) != without_targets(row) for key, row in original.items()
               if key[1] > day(last_kept))  # the rewrite is visible where it may be


def test_world_features_of_a_day_ignore_later_records(world_run) -> None:  # type: ignore[no-untyped-def]
    store, records, _, _ = world_run
    tables, until, cut = tables_of(store), end_of(day(WORLD_DAYS - 1)), end_of(day(1))
    original = daily_features(store, tables, MONDAY, records, until)
    truncated = RunRecords(pos_transactions=[r for r in records.pos_transactions if r.ts < cut],
                           foot_traffic=[r for r in records.foot_traffic if r.ts < cut],
                           shelf_events=[r for r in records.shelf_events if r.ts < cut])
    changed = by_key(daily_features(store, tables, MONDAY, truncated, until))
    kept = [row for row in original if row.feature_date <= day(1)]
    assert kept and all(without_targets(changed[row.shelf_id, row.feature_date]) == without_targets(row)
                        for row in kept)


def test_folds_train_only_on_days_a_horizon_before_the_days_they_score() -> None:
    dates = [day(n) for n in range(40)]
    folds = time_series_folds(dates, 3, min_train_days=4)
    assert len(folds) == 3
    for fold in folds:
        assert max(fold.train) + timedelta(days=HORIZON_DAYS) <= min(fold.score)
        assert len(fold.train) >= 4
    for earlier, later in zip(folds, folds[1:]):
        assert set(earlier.train) < set(later.train)  # expanding
        assert max(earlier.score) < min(later.score)
    scored = [d for fold in folds for d in fold.score]
    assert scored == sorted(scored) and scored[-1] == dates[-1]
    assert time_series_folds(dates[:5], 3) == []  # no day has a day a horizon before it: no fold
    assert all(max(f.train) < min(f.score) for f in time_series_folds(dates, 5, gap_days=1))


# --- training ---------------------------------------------------------------------------------
WEEKLY = (0.8, 0.8, 0.9, 1.0, 1.3, 1.7, 0.5)  # Monday..Sunday
WEEKLY_SHELVES, WEEKLY_DAYS = 24, 84


def weekly_store() -> StoreData:
    shelves, warehouse, lots = [], [], []
    for n in range(WEEKLY_SHELVES):
        shelf_id, category = f"S{n:03d}", ("BEVERAGES", "SNACKS")[n % 2]
        shelves.append(shelf_row(shelf_id, category, 60, 30))
        warehouse.append(wh_row(shelf_id, category, 200, 40))
        lots += [lot(shelf_id, f"{shelf_id}-s", category, 30, date(2026, 1, 1), in_store=True),
                 lot(shelf_id, f"{shelf_id}-w", category, 40, date(2026, 1, 1), in_store=False)]
    return StoreData(store_inventory=shelves, warehouse_inventory=warehouse,
                     store_batches=[b for b in lots if b.location == "in-store"],
                     warehouse_batches=[b for b in lots if b.location == "warehouse"])


def weekly_sales(seed: int) -> list[PosTransaction]:
    """Each shelf sells at its own level (3 to 23 a day) times the weekday's factor, Poisson noise."""
    rng = np.random.default_rng(seed)
    sales = []
    for n in range(WEEKLY_DAYS):
        for shelf in range(WEEKLY_SHELVES):
            quantity = int(rng.poisson((3 + 4 * (shelf % 6)) * WEEKLY[day(n).weekday()]))
            if quantity:
                sales.append(sale(f"t{n}-{shelf}", f"S{shelf:03d}", quantity, at(n, 12)))
    return sales


@pytest.fixture(scope="module")
def weekly_rows() -> list[ShelfDailyFeatures]:
    store = weekly_store()
    records = RunRecords(pos_transactions=weekly_sales(seed=1))
    return daily_features(store, tables_of(store), MONDAY, records, end_of(day(WEEKLY_DAYS - 1)))


@pytest.fixture(scope="module")
def trained(weekly_rows: list[ShelfDailyFeatures]) -> TrainResult:
    return train(weekly_rows)


def test_the_model_beats_the_last_7_days_on_a_weekly_series(trained: TrainResult) -> None:
    m = trained.metrics
    assert m.mae_model < 0.9 * m.mae_last7 and m.rmse_model < m.rmse_last7
    assert m.mae_model_batches <= m.mae_last7_batches
    assert m.mae_rule_batches > 0  # compared, in batches (the rule orders up to 90 whatever the demand)
    assert len(trained.cv_mae) == 3
    # targets for days 0..76; 70..76 held out; trained on the days d with d + 7 <= 70: 0..63
    assert (trained.train_rows, trained.holdout_rows) == (64 * WEEKLY_SHELVES, 7 * WEEKLY_SHELVES)
    assert (trained.data_start, trained.data_end) == (day(0), day(76))
    assert trained.params["num_boost_round"] == trained.best_iteration + 1 and trained.params["nthread"] == 2


def test_a_short_run_trains_from_the_demand_rate(weekly_rows: list[ShelfDailyFeatures]) -> None:
    """21 days: 5 training days, none with a 7-day window. Trees alone were 2.5 times worse than the last-7-day
    mean there (20.4 vs 8.0 units); started from the demand rate, the model is close to it."""
    short = train(fill_targets([row for row in weekly_rows if row.feature_date < day(21)]), holdout_days=3)
    assert short.train_rows == 5 * WEEKLY_SHELVES
    assert short.metrics.mae_model < 1.1 * short.metrics.mae_last7


def test_training_is_deterministic(weekly_rows: list[ShelfDailyFeatures], trained: TrainResult) -> None:
    again = train(weekly_rows)
    assert again.metrics == trained.metrics and again.cv_mae == trained.cv_mae
    assert bytes(again.booster.save_raw("json")) == bytes(trained.booster.save_raw("json"))


def test_held_out_days_and_the_gap_before_them_are_never_trained_on(weekly_rows: list[ShelfDailyFeatures],
                                                                     trained: TrainResult) -> None:
    """Targets of the held-out days, and of the days whose targets reach into them, changed: the same model."""
    first_held_out = trained.data_end - timedelta(days=6)
    poisoned = [row.model_copy(update={"sales_next_7d": 10_000})
                if row.sales_next_7d is not None and row.feature_date > first_held_out - timedelta(days=HORIZON_DAYS)
                else row for row in weekly_rows]
    again = train(poisoned)
    assert bytes(again.booster.save_raw("json")) == bytes(trained.booster.save_raw("json"))
    assert again.metrics.mae_model > 1000  # while the held-out score sees them


def test_too_few_days_to_train_is_one_clear_error(weekly_rows: list[ShelfDailyFeatures]) -> None:
    short = fill_targets([row for row in weekly_rows if row.feature_date < day(20)])
    with pytest.raises(SmartShelfError,
                       match=r"too few days to train: 13 days with a known target.*\(24 simulated days\)$"):
        train(short)


def test_rule_baseline_orders_up_to_only_at_the_reorder_point_without_an_open_order(
        weekly_rows: list[ShelfDailyFeatures]) -> None:
    row = weekly_rows[0]  # reorder point 60, order up to 180, batches of 12
    assert rule_batches(row.model_copy(update={"wh_stock": 61})) == 0
    assert rule_batches(row.model_copy(update={"wh_stock": 60})) == 10
    assert rule_batches(row.model_copy(update={"wh_stock": 0, "open_order_qty": 12})) == 0


# --- artifacts --------------------------------------------------------------------------------
VERSION = model_version(datetime(2025, 3, 31, 6, 30))


def test_save_and_load_round_trip(trained: TrainResult, weekly_rows: list[ShelfDailyFeatures],
                                  tmp_path: Path) -> None:
    row = save_model(trained, tmp_path, "demand", VERSION)
    assert VERSION == 202503310630 and row.trained_ts == datetime(2025, 3, 31, 6, 30)
    assert row.artifact_path == str(tmp_path / "demand" / str(VERSION)) and row.is_active
    assert (row.mae_model, row.mae_rule_batches, row.feature_hash) == (
        trained.metrics.mae_model, trained.metrics.mae_rule_batches, trained.feature_hash)
    assert (row.data_start, row.data_end, row.train_rows, row.holdout_rows) == (
        trained.data_start, trained.data_end, trained.train_rows, trained.holdout_rows)
    assert json.loads(row.params)["num_boost_round"] == trained.best_iteration + 1
    columns = json.loads((tmp_path / "demand" / str(VERSION) / COLUMNS_FILE).read_text())
    assert [c["name"] for c in columns["columns"]] == [c.name for c in FEATURE_COLUMNS]
    loaded = load_model(Path(row.artifact_path))
    assert (loaded.model_name, loaded.model_version) == ("demand", VERSION)
    np.testing.assert_array_equal(predict_units(loaded.booster, weekly_rows),
                                  predict_units(trained.booster, weekly_rows))
    save_model(trained, tmp_path, "demand", VERSION + 1)
    assert newest_model_path(tmp_path, "demand") == tmp_path / "demand" / str(VERSION + 1)
    assert newest_model_path(tmp_path, "other") is None


@pytest.fixture
def saved(trained: TrainResult, tmp_path: Path) -> Path:
    return Path(save_model(trained, tmp_path, "demand", VERSION).artifact_path)


def test_a_missing_model_is_one_clear_error(saved: Path, tmp_path: Path) -> None:
    with pytest.raises(SmartShelfError, match=r"^no model at .*nowhere: model.json is missing"):
        load_model(tmp_path / "nowhere")
    (saved / MODEL_FILE).unlink()
    with pytest.raises(SmartShelfError, match=r"model.json is missing"):
        load_model(saved)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_model_file_is_one_clear_error(saved: Path, damage: str) -> None:
    model = saved / MODEL_FILE
    model.write_bytes(model.read_bytes()[:200] if damage == "truncated" else b"\x00not a model")
    with pytest.raises(SmartShelfError, match=r"^model file .*model.json is corrupt \(XGBoost cannot read it\)") as e:
        load_model(saved)
    assert "\n" not in str(e.value)


def test_corrupt_or_other_feature_columns_are_one_clear_error(saved: Path) -> None:
    columns_file = saved / COLUMNS_FILE
    columns = json.loads(columns_file.read_text())
    columns["columns"] = columns["columns"][:-1]
    columns_file.write_text(json.dumps(columns))
    with pytest.raises(SmartShelfError, match=r"was trained on other feature columns .*: train a new model$"):
        load_model(saved)
    columns_file.write_text("{not json")
    with pytest.raises(SmartShelfError, match=r"^feature columns file .* is corrupt"):
        load_model(saved)


def test_model_names_and_versions_are_checked(trained: TrainResult, tmp_path: Path) -> None:
    with pytest.raises(SmartShelfError, match="model name"):
        save_model(trained, tmp_path, "../escape", VERSION)
    with pytest.raises(SmartShelfError, match="YYYYMMDDHHMM"):
        save_model(trained, tmp_path, "demand", 7)


# --- inference --------------------------------------------------------------------------------
def test_forecast_is_idempotent_and_plans_only_what_is_needed(saved: Path, weekly_rows: list[ShelfDailyFeatures]
                                                              ) -> None:
    store = weekly_store()
    tables = tables_of(store)
    last_day = max(row.feature_date for row in weekly_rows)
    rows = [row for row in weekly_rows if row.feature_date == last_day]
    run_at = at(WEEKLY_DAYS, 6)  # the day after, before opening
    first = forecast(load_model(saved), rows, tables, run_at)
    again = forecast(load_model(saved), list(reversed(rows)), tables, run_at)  # a restart, rows in another order
    assert again == first
    assert [p.shelf_id for p in first.predictions] == sorted(row.shelf_id for row in rows)
    needing = {p.shelf_id: p.batches_to_order for p in first.predictions if p.batches_to_order > 0}
    assert needing and len(needing) < len(rows)  # big sellers need batches, the small ones do not
    assert {plan.shelf_id: plan.batches_to_order for plan in first.plans} == needing
    for plan in first.plans:
        assert plan.plan_id == plan_id(plan.shelf_id, run_at.date()) == f"ml-{plan.shelf_id}-{run_at:%Y%m%d}"
        assert plan.status == "planned" and plan.quantity == plan.batches_to_order * 12
        assert plan.expected_delivery_date == run_at.date() + timedelta(days=2)  # BEVERAGES and SNACKS: 2 days
        assert plan.created_ts == plan.updated_ts == run_at
    prediction = first.predictions[0]
    assert (prediction.model_version, prediction.prediction_date, prediction.feature_date) == (
        VERSION, run_at.date(), last_day)


def test_forecast_reads_one_finished_day(saved: Path, weekly_rows: list[ShelfDailyFeatures]) -> None:
    tables = tables_of(weekly_store())
    model = load_model(saved)
    with pytest.raises(SmartShelfError, match="features of one day, got 2"):
        forecast(model, [weekly_rows[0], weekly_rows[-1]], tables, at(WEEKLY_DAYS, 6))
    with pytest.raises(SmartShelfError, match="not complete"):
        forecast(model, [weekly_rows[-1]], tables, at(WEEKLY_DAYS - 1, 22))
    assert forecast(model, [], tables, at(WEEKLY_DAYS, 6)).predictions == []


class _FakeRedis:
    """The two calls the inference service makes on Redis itself."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self.values.get(key)

    def set(self, key: str, value: str) -> None:
        self.values[key] = value.encode()


class _FakeClock:
    def __init__(self) -> None:
        self.now: datetime | None = None
        self.done: dict[str, datetime] = {}

    def now_or_none(self) -> datetime | None:
        return self.now

    def last_tick_done(self, name: str) -> datetime | None:
        return self.done.get(name)

    def tick_done(self, name: str, t: datetime) -> None:
        self.done[name] = t


@pytest.mark.parametrize("in_lockstep", [True, False])
def test_the_inference_service_forecasts_once_a_day_then_reports_the_tick(in_lockstep: bool) -> None:
    from smartshelf.apps.inference import NAME, poll

    client, clock = _FakeRedis(), _FakeClock()
    ran: list[tuple[date, dict[str, datetime]]] = []

    def forecast(settings: Settings, day: date) -> str:
        ran.append((day, dict(clock.done)))  # what the clock had heard from the service when it forecast
        return "3 plans"

    settings = Settings().model_copy(update={"run_hour": 6})

    def look(t: datetime | None) -> str | None:
        clock.now = t
        return poll(settings, client, clock, forecast, in_lockstep)  # type: ignore[arg-type]

    assert look(None) is None and clock.done == {}
    assert look(datetime(2025, 1, 22, 4)) is None  # before RUN_HOUR
    assert look(datetime(2025, 1, 22, 6)) == "2025-01-22: 3 plans"
    assert look(datetime(2025, 1, 22, 8)) is None  # once a day, however many ticks
    assert look(datetime(2025, 1, 23, 6)) == "2025-01-23: 3 plans"
    assert [day for day, _ in ran] == [date(2025, 1, 22), date(2025, 1, 23)]
    if in_lockstep:  # the tick is reported only after its forecast: the clock cannot move past RUN_HOUR without it
        assert ran[0][1] == {NAME: datetime(2025, 1, 22, 4)}
        assert clock.done == {NAME: datetime(2025, 1, 23, 6)}
    else:
        assert clock.done == {}
