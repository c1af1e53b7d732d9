"""Daily features of every shelf, replayed from what happened: the store's initial state plus a run's records.

Invariant (no look-ahead): every value of the row of day D is computed from the reference data, the policies and
the records stamped before D ends (the midnight after D): events by their `ts`, a supplier order from its
`ordered_ts`, its receipt from its `received_ts`, a daily discount on its `discount_date`. Changing any record
stamped later leaves the row unchanged, except its two targets (sales_next_7d, batches_to_order), which only
use the HORIZON_DAYS days after D and stay None until all of them are complete.

Stock, warehouse stock and lots are replayed with the twin's own transitions (smartshelf.rules: pickups and
putbacks, wh_in / wh_out / wh_removal, sales taken from lots earliest expiry first, refills and removals of
lots), so a row reports what the twin held at the end of its day, and the FIFO rule has one definition.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from smartshelf.loop import StoreConfig
from smartshelf.policies import ConfigTables
from smartshelf.rules import (apply_sale, apply_shelf_event, apply_wh_batch_event, apply_wh_event, initial_states,
                              receive_on_shelf, remove_from_shelf_lot, shelf_from_profile)
from smartshelf.schemas import (Alert, DailyDiscount, FootTrafficEvent, PosTransaction, ShelfBatchState,
                                ShelfDailyFeatures, ShelfEvent, ShelfProfile, ShelfState, SupplierOrder,
                                SupplierReceipt, WarehouseBatchState, WarehouseEvent, WarehouseState)
from smartshelf.store import DiscountRow, StoreData

HORIZON_DAYS = 7  # the targets look this many days ahead: a week, whatever its weekday pattern
EXPIRY_WINDOW_DAYS = 7  # qty_expiring_next_7d
RATE_DAYS = 14  # sales_per_day: the longest sales window the features have
ONE_DAY = timedelta(days=1)

StockRecord = PosTransaction | ShelfEvent | WarehouseEvent


@dataclass(frozen=True)
class RunRecords:
    """A run's records as the lake holds them, one field per topic. A compacted topic may hold several versions
    of a record (an order open, then received): any of them will do, only fields that never change are read."""

    pos_transactions: Sequence[PosTransaction] = ()
    foot_traffic: Sequence[FootTrafficEvent] = ()
    shelf_events: Sequence[ShelfEvent] = ()
    wh_events: Sequence[WarehouseEvent] = ()
    alerts: Sequence[Alert] = ()
    wh_supplier_orders: Sequence[SupplierOrder] = ()
    wh_supplier_receipts: Sequence[SupplierReceipt] = ()
    daily_discounts: Sequence[DailyDiscount] = ()


def daily_features(store: StoreData, tables: ConfigTables, start: datetime, records: RunRecords,
                   until: datetime) -> list[ShelfDailyFeatures]:
    """One row per shelf (of the profiles in `tables`) per simulated day that is complete by `until` (the
    clock's watermark: every record stamped before it is in `records`), from the clock's first day, in
    (feature_date, shelf_id) order, with the targets filled in where the days after are complete too."""
    days = completed_days(start, until)
    context = _Context.of(store, tables, records)
    tally = _Tally.of(records)
    replay = _Replay.start(store, context.config.profiles.values(), start)
    timeline = iter(_timeline(records))
    pending = next(timeline, None)
    rows = []
    for day in days:
        end = end_of(day)
        while pending is not None and pending.ts < end:
            replay.apply(pending)
            pending = next(timeline, None)
        open_orders = context.open_orders(end)
        rows.extend(_row(context, tally, replay, open_orders, shelf_id, day, days[0])
                    for shelf_id in context.shelf_ids)
    return fill_targets(rows)


def completed_days(start: datetime, until: datetime) -> list[date]:
    """The days from the clock's first day whose end `until` has reached."""
    days, day = [], start.date()
    while end_of(day) <= until:
        days.append(day)
        day += ONE_DAY
    return days


def end_of(day: date) -> datetime:
    return datetime.combine(day + ONE_DAY, time())


def available_units(row: ShelfDailyFeatures) -> int:
    """What the shelf's item has at the end of the day without a new order: shelf, warehouse and on order."""
    return row.shelf_stock + row.wh_stock + row.open_order_qty


def batches_needed(units: float, available: int, batch_size: int) -> int:
    """Whole supplier batches needed for `units` beyond what is `available`: the target's rule, applied the same
    way to a forecast."""
    return math.ceil(max(0.0, units - available) / batch_size)


def fill_targets(rows: Sequence[ShelfDailyFeatures]) -> list[ShelfDailyFeatures]:
    """`rows` with their targets from the rows of the next HORIZON_DAYS days of the same shelf: known when all of
    those days are among `rows` (complete days only), None otherwise."""
    sold = {(row.shelf_id, row.feature_date): row.sales_qty for row in rows}
    filled = []
    for row in rows:
        window = [sold.get((row.shelf_id, row.feature_date + k * ONE_DAY)) for k in range(1, HORIZON_DAYS + 1)]
        known = [units for units in window if units is not None]
        if len(known) < HORIZON_DAYS:
            filled.append(row.model_copy(update={"sales_next_7d": None, "batches_to_order": None}))
            continue
        total = sum(known)
        batches = batches_needed(total, available_units(row), row.standard_batch_size)
        filled.append(row.model_copy(update={"sales_next_7d": total, "batches_to_order": batches}))
    return filled


# --- what the run did, per day ------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tally:
    """Per-day counts of the run's records, by the day of their time stamp."""

    sales: Counter[tuple[str, date]]  # (shelf, day) -> units sold at the till
    entries: Counter[date]
    alerts: Counter[tuple[str, date]]
    expired: Counter[tuple[str, date]]  # units removed as expired, from the shelf and from the warehouse

    @classmethod
    def of(cls, records: RunRecords) -> _Tally:
        sales: Counter[tuple[str, date]] = Counter()
        for sale in records.pos_transactions:
            for item in sale.items:
                sales[item.shelf_id, sale.ts.date()] += item.quantity
        entries = Counter(e.ts.date() for e in records.foot_traffic if e.event_type == "entry")
        alerts = Counter((a.shelf_id, a.ts.date()) for a in records.alerts)
        expired: Counter[tuple[str, date]] = Counter()
        for move in records.wh_events:
            if move.event_type == "wh_removal":
                expired[move.shelf_id, move.ts.date()] += move.quantity
        for event in records.shelf_events:
            if _is_removal(event):
                expired[event.shelf_id, event.ts.date()] += event.quantity
        return cls(sales, entries, alerts, expired)

    def sold_between(self, shelf_id: str, first: date, last: date, run_first: date) -> int | None:
        """Units sold from `first` to `last` (both included); None if the window starts before the run did."""
        return None if first < run_first else self._sold(shelf_id, first, last)

    def rate(self, shelf_id: str, day: date, run_first: date) -> tuple[float, int]:
        """Mean units sold per day over the last RATE_DAYS days up to `day` that the run has, and how many."""
        first = max(run_first, day - (RATE_DAYS - 1) * ONE_DAY)
        days = (day - first).days + 1
        return self._sold(shelf_id, first, day) / days, days

    def _sold(self, shelf_id: str, first: date, last: date) -> int:
        return sum(self.sales[shelf_id, first + k * ONE_DAY] for k in range((last - first).days + 1))


def _is_removal(event: ShelfEvent) -> bool:
    """Staff taking a lot off a shelf: the loop does that only to remove an expired lot."""
    return event.by_staff and event.event_type == "pickup" and event.batch_code is not None


def _is_refill(event: ShelfEvent) -> bool:
    return event.by_staff and event.event_type == "putback" and event.batch_code is not None


# --- the store's fixed facts --------------------------------------------------------------------------
@dataclass(frozen=True)
class _Context:
    config: StoreConfig
    shelf_ids: list[str]
    wh_capacity: dict[str, int]
    promotions: dict[str, list[DiscountRow]]  # by shelf
    daily_discounts: dict[tuple[str, date], float]
    orders: list[SupplierOrder]
    received: dict[str, datetime]  # order id -> when its receipt came

    @classmethod
    def of(cls, store: StoreData, tables: ConfigTables, records: RunRecords) -> _Context:
        config = StoreConfig.from_tables(tables)
        received: dict[str, datetime] = {}
        for receipt in records.wh_supplier_receipts:
            received[receipt.order_id] = min(receipt.received_ts, received.get(receipt.order_id, receipt.received_ts))
        return cls(
            config=config,
            shelf_ids=sorted(config.profiles),
            wh_capacity={row.shelf_id: row.maximum_stock for row in store.warehouse_inventory},
            promotions=_by_shelf(store.discounts),
            daily_discounts={(d.shelf_id, d.discount_date): d.discount for d in records.daily_discounts},
            orders=list({order.order_id: order for order in records.wh_supplier_orders}.values()),
            received=received,
        )

    def open_orders(self, at: datetime) -> dict[str, list[SupplierOrder]]:
        """Per shelf, the supplier orders placed before `at` whose receipt had not come by then."""
        open_by_shelf: dict[str, list[SupplierOrder]] = {}
        for order in self.orders:
            received = self.received.get(order.order_id)
            if order.ordered_ts < at and (received is None or received >= at):
                open_by_shelf.setdefault(order.shelf_id, []).append(order)
        return open_by_shelf

    def discount(self, shelf_id: str, day: date) -> float:
        """The till's discount (as smartshelf.world charges it): the promotion or the day's near-expiry discount,
        whichever is larger."""
        promotion = max((p.discount for p in self.promotions.get(shelf_id, [])
                         if p.start_date <= day <= p.end_date), default=0.0)
        return max(promotion, self.daily_discounts.get((shelf_id, day), 0.0))


def _by_shelf(promotions: Iterable[DiscountRow]) -> dict[str, list[DiscountRow]]:
    grouped: dict[str, list[DiscountRow]] = {}
    for promotion in promotions:
        grouped.setdefault(promotion.shelf_id, []).append(promotion)
    return grouped


# --- the replay of stock and lots ---------------------------------------------------------------------
@dataclass
class _Replay:
    """The twin's state, moved forward record by record."""

    shelves: dict[str, ShelfState]
    warehouse: dict[str, WarehouseState]
    shelf_lots: dict[str, list[ShelfBatchState]]
    wh_lots: dict[str, dict[str, WarehouseBatchState]]  # shelf -> batch code -> lot

    @classmethod
    def start(cls, store: StoreData, profiles: Iterable[ShelfProfile], at: datetime) -> _Replay:
        initial = initial_states(store, at)
        shelves = {state.shelf_id: state for state in initial.shelves}
        warehouse = {state.shelf_id: state for state in initial.warehouse}
        for profile in profiles:  # a shelf only the profiles know starts empty, as in the twin
            shelves.setdefault(profile.shelf_id, shelf_from_profile(profile, at))
            warehouse.setdefault(profile.shelf_id, WarehouseState(shelf_id=profile.shelf_id, wh_current_stock=0,
                                                                  last_event_type="initial", last_event_ts=at))
        shelf_lots: dict[str, list[ShelfBatchState]] = {}
        for lot in initial.shelf_lots:
            shelf_lots.setdefault(lot.shelf_id, []).append(lot)
        wh_lots: dict[str, dict[str, WarehouseBatchState]] = {}
        for wh_lot in initial.wh_lots:
            wh_lots.setdefault(wh_lot.shelf_id, {})[wh_lot.batch_code] = wh_lot
        return cls(shelves, warehouse, shelf_lots, wh_lots)

    def apply(self, record: StockRecord) -> None:
        """Shortfalls (more taken than held) stop at zero, as in the twin; the replay does not report them."""
        if isinstance(record, PosTransaction):
            apply_sale(self.shelf_lots, record)
        elif isinstance(record, WarehouseEvent):
            if record.shelf_id in self.warehouse:
                self.warehouse[record.shelf_id] = apply_wh_event(self.warehouse[record.shelf_id], record)[0]
            lots = self.wh_lots.setdefault(record.shelf_id, {})
            lots[record.batch_code] = apply_wh_batch_event(lots.get(record.batch_code), record)[0]
        elif record.shelf_id in self.shelves:
            self.shelves[record.shelf_id] = apply_shelf_event(self.shelves[record.shelf_id], record)[0]
            if _is_refill(record):
                receive_on_shelf(self.shelf_lots, record)
            elif _is_removal(record):
                remove_from_shelf_lot(self.shelf_lots, record)

    def lots_held(self, shelf_id: str) -> list[tuple[date, int]]:
        """(expiry date, units) of every lot of the item with units, on the shelf (and in carts) and in the
        warehouse."""
        on_shelf = [(lot.expiry_date, lot.batch_quantity_store) for lot in self.shelf_lots.get(shelf_id, [])]
        in_warehouse = [(lot.expiry_date, lot.batch_quantity_warehouse)
                        for lot in self.wh_lots.get(shelf_id, {}).values()]
        return [(expiry, units) for expiry, units in on_shelf + in_warehouse if units > 0]


def _timeline(records: RunRecords) -> list[StockRecord]:
    """The records that move stock or lots, in time order. At the same second staff and the warehouse act first,
    then customers, then the till, as in the world (smartshelf.world)."""
    moves: list[tuple[datetime, int, int, StockRecord]] = []
    for number, event in enumerate(records.shelf_events):
        if event.event_type != "weight_change":  # the scale's reading moves no item
            moves.append((event.ts, 0 if event.by_staff else 1, number, event))
    moves.extend((move.ts, 0, number, move) for number, move in enumerate(records.wh_events))
    moves.extend((sale.ts, 2, number, sale) for number, sale in enumerate(records.pos_transactions))
    return [record for *_, record in sorted(moves, key=lambda move: move[:3])]


# --- one row ------------------------------------------------------------------------------------------
def _row(context: _Context, tally: _Tally, replay: _Replay, open_orders: dict[str, list[SupplierOrder]],
         shelf_id: str, day: date, run_first: date) -> ShelfDailyFeatures:
    config = context.config
    profile, shelf_policy, wh_policy = (config.profiles[shelf_id], config.shelf_policies[shelf_id],
                                        config.wh_policies[shelf_id])
    shelf_stock = replay.shelves[shelf_id].current_stock
    wh_stock = replay.warehouse[shelf_id].wh_current_stock
    wh_capacity = context.wh_capacity.get(shelf_id, 0)
    orders = open_orders.get(shelf_id, [])
    lots = replay.lots_held(shelf_id)
    horizon = day + EXPIRY_WINDOW_DAYS * ONE_DAY
    sales_per_day, rate_days = tally.rate(shelf_id, day, run_first)
    return ShelfDailyFeatures(
        shelf_id=shelf_id, feature_date=day, item_category=profile.item_category,
        item_subcategory=profile.item_subcategory,
        day_of_week=day.weekday(), is_weekend=day.weekday() >= 5,
        # an overdue order (its receipt not in the records yet) is due now
        days_to_next_delivery=min((max(0, (o.expected_delivery_ts.date() - day).days) for o in orders),
                                  default=None),
        item_price=profile.item_price, discount=context.discount(shelf_id, day),
        people_count=tally.entries[day], sales_qty=tally.sales[shelf_id, day],
        sales_last_1d=tally.sold_between(shelf_id, day - ONE_DAY, day - ONE_DAY, run_first),
        sales_last_7d=tally.sold_between(shelf_id, day - 6 * ONE_DAY, day, run_first),
        sales_last_14d=tally.sold_between(shelf_id, day - 13 * ONE_DAY, day, run_first),
        sales_per_day=sales_per_day, sales_rate_days=rate_days,
        shelf_capacity=profile.maximum_stock, shelf_stock=shelf_stock,
        shelf_fill_ratio=shelf_stock / profile.maximum_stock,
        low_stock_threshold_pct=shelf_policy.low_stock_threshold_pct, alerts_today=tally.alerts[shelf_id, day],
        wh_stock=wh_stock, wh_fill_ratio=wh_stock / wh_capacity if wh_capacity else 0.0,
        reorder_point=wh_policy.reorder_point, order_up_to=wh_policy.order_up_to,
        open_order_qty=sum(o.quantity for o in orders), expired_units=tally.expired[shelf_id, day],
        standard_batch_size=config.batch_size.get(shelf_id, 1),
        days_to_earliest_expiry=min(((expiry - day).days for expiry, _ in lots), default=None),
        qty_expiring_next_7d=sum(units for expiry, units in lots if expiry <= horizon),
    )
