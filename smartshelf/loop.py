"""The closed loop's decisions, as pure functions over small states: stock alerts and restock plans, FIFO
picking in the warehouse, refills after a delay, supplier orders and deliveries, near-expiry discounts and
removals of expired lots. The loop apps (smartshelf.streaming.keyed_loop) are thin shells over these.

Every output is a function of the events and of simulated time only: ids are built from what they describe,
and time-of-day actions run on the clock's watermark (ClockTick), so the same run gives the same outputs.
No record stops a decision: a shelf whose policy row is missing gets its category's default policy (with a
warning), and a move or lot of a shelf with no profile becomes a dead letter with the reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from smartshelf import logs
from smartshelf.ingress import dead_letter
from smartshelf.policies import ConfigTables, PolicyConfig, load_policy_config, shelf_policy_of, wh_policy_of
from smartshelf.registry import DEAD_LETTERS, topic
from smartshelf.rules import apply_wh_batch_event
from smartshelf.schemas import (Alert, DailyDiscount, ShelfBatchState, ShelfEvent, ShelfPolicy, ShelfProfile,
                                ShelfRestockPlan, ShelfState, SupplierOrder, SupplierReceipt, WarehouseBatchState,
                                WarehouseEvent, WarehousePolicy, WarehouseState, WarehouseSupplierPlan)

Level = Literal["ok", "low", "out"]
_RANK = {"ok": 0, "low": 1, "out": 2}
_LOG = logging.getLogger(__name__)


def _stamp(ts: datetime) -> str:
    return f"{ts:%Y%m%d%H%M%S}"


def lot_key(lot: ShelfBatchState | WarehouseBatchState | WarehouseEvent) -> str:
    """A lot's key within its store (shelf|batch): the loop's states are a store's."""
    return topic("wh_batch_state").local_key_of(lot)


@dataclass(frozen=True)
class StoreConfig:
    """What the loop knows of each shelf: its policies, its profile, its lots' standard size and shelf life."""

    shelf_policies: dict[str, ShelfPolicy]
    wh_policies: dict[str, WarehousePolicy]
    profiles: dict[str, ShelfProfile]
    batch_size: dict[str, int]
    shelf_life_days: dict[str, int]
    # what a missing policy row falls back to: the default policy of the item's category ("" if unknown) from
    # `defaults` (conf/policies.yaml if None), the warehouse's scaled to its capacity (0 if unknown, as at import)
    categories: dict[str, str] = field(default_factory=dict)
    wh_capacity: Mapping[str, int] = field(default_factory=dict)
    defaults: PolicyConfig | None = None

    @classmethod
    def from_tables(cls, tables: ConfigTables, wh_capacity: Mapping[str, int] | None = None) -> StoreConfig:
        batch_size: dict[str, int] = {}
        life: dict[str, int] = {}
        categories: dict[str, str] = {}
        for entry in tables.batch_catalog:
            batch_size[entry.shelf_id] = max(batch_size.get(entry.shelf_id, 1), entry.standard_batch_size)
            days = (entry.expiry_date - entry.received_date).days
            life[entry.shelf_id] = max(life.get(entry.shelf_id, 1), days)
            categories[entry.shelf_id] = entry.item_category
        categories.update({p.shelf_id: p.item_category for p in tables.shelf_profiles})
        return cls({p.shelf_id: p for p in tables.shelf_policies}, {p.shelf_id: p for p in tables.wh_policies},
                   {p.shelf_id: p for p in tables.shelf_profiles}, batch_size, life, categories, wh_capacity or {})

    def shelf_policy(self, shelf_id: str) -> ShelfPolicy:
        """The shelf's policy; without a row, its category's default, kept (and logged) once."""
        policy = self.shelf_policies.get(shelf_id)
        if policy is None:
            category = self.categories.get(shelf_id, "")
            policy = self.shelf_policies[shelf_id] = shelf_policy_of(shelf_id, category, self._defaults())
            logs.warning(_LOG, "no shelf policy row: the default policy of its category applies",
                         shelf_id=shelf_id, category=category)
        return policy

    def wh_policy(self, shelf_id: str) -> WarehousePolicy:
        """The item's warehouse policy; without a row, its category's default, kept (and logged) once."""
        policy = self.wh_policies.get(shelf_id)
        if policy is None:
            category, capacity = self.categories.get(shelf_id, ""), self.wh_capacity.get(shelf_id, 0)
            policy = self.wh_policies[shelf_id] = wh_policy_of(shelf_id, category, capacity, self._defaults())
            logs.warning(_LOG, "no warehouse policy row: the default policy of its category applies",
                         shelf_id=shelf_id, category=category, capacity=capacity)
        return policy

    def _defaults(self) -> PolicyConfig:
        return self.defaults or load_policy_config()


def follow_policies(config: StoreConfig, records: Iterable[BaseModel]) -> None:
    """Policies changed in PostgreSQL (config.*, sourced to their compacted topics) apply from now on."""
    for record in records:
        if isinstance(record, ShelfPolicy):
            config.shelf_policies[record.shelf_id] = record
        elif isinstance(record, WarehousePolicy):
            config.wh_policies[record.shelf_id] = record


class Watch(BaseModel):
    """One shelf's (or warehouse slot's) alert level and its open plan, if any."""

    model_config = ConfigDict(frozen=True)

    level: Level = "ok"
    stock: int = 0  # as last seen
    open_plan: str | None = None
    blocked_until: date | None = None  # its last plan was cancelled (nothing to send): no new plan before
    refilled: int = 0  # units of the open plan seen arriving on the shelf
    delivered: int | None = None  # units the open plan delivered, once its delivery is known


COMMAND_MEMORY = timedelta(days=3)  # how long an applied command's id is kept, in simulated time


class AppliedCommands(BaseModel):
    """The ids of the commands (restock and supplier plans, warehouse picks) a consumer has applied, so that
    each acts once: a command can arrive again — a replayed batch upstream publishes a compacted topic's
    values again, the inference service repeats a day's plans after a crash — and its id, built from what it
    describes, is the same. Ids are kept COMMAND_MEMORY of simulated time after their command's own time (a
    repeat comes within minutes); a command older than that before the newest one seen is taken for a repeat
    too, so forgetting an id never lets its command act twice."""

    ids: dict[str, datetime] = Field(default_factory=dict)
    newest: datetime | None = None

    def first_time(self, command_id: str, ts: datetime) -> bool:
        """Whether the command is new (it is then remembered as applied)."""
        if command_id in self.ids or (self.newest is not None and ts < self.newest - COMMAND_MEMORY):
            logs.info(_LOG, "skipped a command already applied", command=command_id, at=ts.isoformat())
            return False
        self.ids[command_id] = ts
        if self.newest is None or ts > self.newest:
            self.newest = ts
            horizon = ts - COMMAND_MEMORY
            self.ids = {known: at for known, at in self.ids.items() if at >= horizon}
        return True


@dataclass
class Effects:
    """What a step decided: records to publish (topic -> values); the lake sink writes them to Delta."""

    records: dict[str, list[BaseModel]] = field(default_factory=dict)

    def publish(self, topic_name: str, *values: BaseModel) -> None:
        self.records.setdefault(topic_name, []).extend(values)


def _alert(kind: str, location: Literal["store", "warehouse"], severity: Literal["info", "warning", "critical"],
           shelf_id: str, ts: datetime, message: str, value: float | None = None, threshold: float | None = None,
           batch_code: str | None = None) -> Alert:
    suffix = f"-{batch_code}" if batch_code else ""
    return Alert(alert_id=f"{kind}-{location}-{shelf_id}{suffix}-{_stamp(ts)}", alert_type=kind,  # type: ignore[arg-type]
                 location=location, severity=severity, shelf_id=shelf_id, batch_code=batch_code, message=message,
                 value=value, threshold=threshold, ts=ts)


# --- shelf-alert-engine ------------------------------------------------------------------------------
def shelf_level(stock: int, policy: ShelfPolicy, profile: ShelfProfile) -> Level:
    if stock == 0:
        return "out"
    return "low" if stock <= policy.low_stock_threshold_pct * profile.maximum_stock else "ok"


def watch_shelf(watch: Watch, state: ShelfState, config: StoreConfig, effects: Effects) -> Watch:
    """A shelf's new stock: an alert when it falls to a worse level, a restock plan unless one is open."""
    policy, profile = config.shelf_policy(state.shelf_id), config.profiles[state.shelf_id]
    level, ts = shelf_level(state.current_stock, policy, profile), state.last_event_ts
    threshold = policy.low_stock_threshold_pct * profile.maximum_stock
    if _RANK[level] > _RANK[watch.level]:  # alert when it gets worse
        kind, severity = ("out_of_stock", "critical") if level == "out" else ("low_stock", "warning")
        effects.publish("alerts", _alert(kind, "store", severity, state.shelf_id, ts,
                                         f"{state.current_stock} left of {profile.maximum_stock}",
                                         state.current_stock, threshold))
    return _plan_restock(watch.model_copy(update={"level": level, "stock": state.current_stock}), state.shelf_id,
                         ts, config, effects)


def _plan_restock(watch: Watch, shelf_id: str, ts: datetime, config: StoreConfig, effects: Effects) -> Watch:
    """A restock plan up to the shelf's target, if it is low, has no open plan and is not blocked."""
    policy, profile = config.shelf_policy(shelf_id), config.profiles[shelf_id]
    wanted = math.ceil(policy.restock_target_pct * profile.maximum_stock) - watch.stock
    blocked = watch.blocked_until is not None and ts.date() < watch.blocked_until
    if watch.level == "ok" or watch.open_plan is not None or blocked or wanted <= 0:
        return watch
    plan = ShelfRestockPlan(plan_id=f"rp-{shelf_id}-{_stamp(ts)}", shelf_id=shelf_id, quantity=wanted,
                            status="planned", created_ts=ts, updated_ts=ts)
    effects.publish("shelf_restock_plan", plan)
    return watch.model_copy(update={"open_plan": plan.plan_id, "blocked_until": None})


def retry_restocks(watches: dict[str, Watch], ts: datetime, config: StoreConfig, effects: Effects) -> None:
    """On the clock: shelves still low whose cancelled plan blocked them until now get a new plan (an empty
    shelf sees no events, so it would otherwise wait for one forever)."""
    for shelf_id in sorted(watches):
        watch = watches[shelf_id]
        if watch.blocked_until is not None and ts.date() >= watch.blocked_until:
            watches[shelf_id] = _plan_restock(watch, shelf_id, ts, config, effects)


def follow_shelf_plan(watch: Watch, plan: ShelfRestockPlan, config: StoreConfig, effects: Effects) -> Watch:
    """The open plan's progress: cancelled (the warehouse had nothing) closes it and blocks new plans until the
    next day; delivered closes it once its units have been seen on the shelf (`refill_arrived`), in whichever
    order the two arrive, so the next plan does not depend on how micro-batches fell."""
    if plan.plan_id != watch.open_plan:
        return watch
    if plan.status == "cancelled":
        return watch.model_copy(update={"open_plan": None, "refilled": 0, "delivered": None,
                                        "blocked_until": plan.updated_ts.date() + timedelta(days=1)})
    if plan.status == "delivered":
        return _close_if_delivered(watch.model_copy(update={"delivered": plan.quantity}), plan.shelf_id,
                                   plan.updated_ts, config, effects)
    return watch


def refill_arrived(watch: Watch, shelf_id: str, quantity: int, ts: datetime, config: StoreConfig,
                   effects: Effects) -> Watch:
    """A refill (a staff putback) reached the shelf: units of the open plan."""
    if watch.open_plan is None:
        return watch
    return _close_if_delivered(watch.model_copy(update={"refilled": watch.refilled + quantity}), shelf_id, ts,
                               config, effects)


def _close_if_delivered(watch: Watch, shelf_id: str, ts: datetime, config: StoreConfig, effects: Effects) -> Watch:
    if watch.delivered is None or watch.refilled < watch.delivered:
        return watch
    closed = watch.model_copy(update={"open_plan": None, "refilled": 0, "delivered": None})
    return _plan_restock(closed, shelf_id, ts, config, effects)  # still low after the refill: the next plan


# --- wh-alert-engine -----------------------------------------------------------------------------------
def warehouse_level(stock: int, policy: WarehousePolicy) -> Level:
    if stock == 0:
        return "out"
    return "low" if stock <= policy.reorder_point else "ok"


def watch_warehouse(watch: Watch, state: WarehouseState, config: StoreConfig, effects: Effects) -> Watch:
    """An item's warehouse stock: an alert at the reorder point or at zero, a supplier plan unless one is open."""
    policy = config.wh_policy(state.shelf_id)
    level, ts = warehouse_level(state.wh_current_stock, policy), state.last_event_ts
    if _RANK[level] > _RANK[watch.level]:
        kind, severity = ("wh_out_of_stock", "critical") if level == "out" else ("wh_reorder", "warning")
        effects.publish("alerts", _alert(kind, "warehouse", severity, state.shelf_id, ts,
                                         f"{state.wh_current_stock} in the warehouse, reorder point "
                                         f"{policy.reorder_point}", state.wh_current_stock, policy.reorder_point))
    return _plan_supply(watch.model_copy(update={"level": level, "stock": state.wh_current_stock}), state.shelf_id,
                        ts, config, effects)


def _plan_supply(watch: Watch, shelf_id: str, ts: datetime, config: StoreConfig, effects: Effects) -> Watch:
    policy = config.wh_policy(shelf_id)
    wanted = policy.order_up_to - watch.stock
    if watch.level == "ok" or watch.open_plan is not None or wanted <= 0:
        return watch
    size = config.batch_size.get(shelf_id, 1)
    batches = math.ceil(wanted / size)
    plan = WarehouseSupplierPlan(
        plan_id=f"sp-{shelf_id}-{_stamp(ts)}", shelf_id=shelf_id, batches_to_order=batches,
        quantity=batches * size, status="planned",
        expected_delivery_date=ts.date() + timedelta(days=max(policy.lead_time_days, 1)),
        created_ts=ts, updated_ts=ts)
    effects.publish("wh_supplier_plan", plan)
    return watch.model_copy(update={"open_plan": plan.plan_id})


def order_id(plan_id: str) -> str:
    return f"so-{plan_id}"


def delivery_arrived(watch: Watch, delivery: WarehouseEvent, config: StoreConfig, effects: Effects) -> Watch:
    """The open plan's order arrived (its wh_in, after the stock it brings is counted): the plan closes, and a
    warehouse still low orders again. Taken from the delivery itself, not from the plan's status record, so
    it is in the same stream, in the same order, as the stock."""
    if watch.open_plan is None or delivery.event_type != "wh_in" or delivery.reference != order_id(watch.open_plan):
        return watch
    return _plan_supply(watch.model_copy(update={"open_plan": None}), delivery.shelf_id, delivery.ts, config, effects)


# --- shelf-restock-manager -----------------------------------------------------------------------------
def pick_fifo(lots: Iterable[WarehouseBatchState], quantity: int, on: date) -> list[tuple[WarehouseBatchState, int]]:
    """Lots to send and how many of each: earliest expiry first (ties by code), never an expired lot, never
    more than a lot holds."""
    picks, left = [], quantity
    for lot in sorted(lots, key=lambda lot: (lot.expiry_date, lot.batch_code)):
        if left == 0:
            break
        if lot.expiry_date < on or lot.batch_quantity_warehouse == 0:
            continue
        taken = min(lot.batch_quantity_warehouse, left)
        picks.append((lot, taken))
        left -= taken
    return picks


def restock(lots: dict[str, WarehouseBatchState], plan: ShelfRestockPlan, effects: Effects) -> None:
    """A planned restock picked from the warehouse (`lots` is updated): wh_out per lot, or the plan cancelled."""
    shelf_lots = [lot for lot in lots.values() if lot.shelf_id == plan.shelf_id]
    picks = pick_fifo(shelf_lots, plan.quantity, plan.created_ts.date())
    for lot, taken in picks:
        effects.publish("wh_events", WarehouseEvent(
            event_id=f"wo-{plan.plan_id}-{lot.batch_code}", event_type="wh_out", shelf_id=lot.shelf_id,
            batch_code=lot.batch_code, quantity=taken, received_date=lot.received_date,
            expiry_date=lot.expiry_date, reference=plan.plan_id, ts=plan.created_ts))
        lots[lot_key(lot)] = lot.model_copy(update={
            "batch_quantity_warehouse": lot.batch_quantity_warehouse - taken, "last_update_ts": plan.created_ts})
    picked = sum(taken for _, taken in picks)
    update = {"status": "picked", "quantity": picked} if picked else {"status": "cancelled"}
    effects.publish("shelf_restock_plan", plan.model_copy(update=update))


def take_delivery_or_removal(lots: dict[str, WarehouseBatchState], event: WarehouseEvent) -> None:
    """The restock manager's view of the warehouse follows deliveries and removals (its own picks it has
    already taken off); a delivery the lot cannot take is refused, as wh-batch-state-updater refuses it."""
    if event.event_type == "wh_out":
        return
    key = lot_key(event)
    current = lots.get(key)
    if event.event_type == "wh_in":
        lots[key], _ = apply_wh_batch_event(current, event)  # a refused delivery leaves the lot as it was
    elif current is not None:
        lots[key] = current.model_copy(update={
            "batch_quantity_warehouse": max(current.batch_quantity_warehouse - event.quantity, 0),
            "last_update_ts": event.ts})


# --- shelf-refill-bridge -------------------------------------------------------------------------------
def staff_move(kind: Literal["pickup", "putback"], event_id: str, shelf_id: str, batch_code: str, quantity: int,
               received_date: date, expiry_date: date, item_weight: int, ts: datetime) -> list[ShelfEvent]:
    """Staff carrying a lot to (putback) or off (pickup) a shelf, and the scale's reading of it."""
    delta = round((1 if kind == "putback" else -1) * quantity * item_weight, 3)
    common = {"shelf_id": shelf_id, "quantity": quantity, "weight_change": delta, "batch_code": batch_code,
              "received_date": received_date, "expiry_date": expiry_date, "ts": ts}
    return [ShelfEvent(event_id=f"{event_id}-m", event_type=kind, **common),  # type: ignore[arg-type]
            ShelfEvent(event_id=f"{event_id}-w", event_type="weight_change", **common)]  # type: ignore[arg-type]


def _no_profile(source: str, record: WarehouseEvent | ShelfBatchState, what: str, at: datetime,
                effects: Effects) -> None:
    """A record of a shelf the loop has no profile of (so no item weight for the scale): a dead letter."""
    effects.publish(DEAD_LETTERS, dead_letter(source, record.model_dump_json().encode(),
                                              f"shelf {record.shelf_id} has no profile: {what}", at))


def refills_due(pending: list[WarehouseEvent], watermark: datetime, delay: timedelta, config: StoreConfig,
                effects: Effects) -> list[WarehouseEvent]:
    """The restocks that have reached their shelf by `watermark` put on it; returns those still on their way."""
    still, delivered = [], {}
    for move in sorted(pending, key=lambda m: (m.ts, m.event_id)):
        due = move.ts + delay
        if due > watermark:
            still.append(move)
            continue
        if move.shelf_id not in config.profiles:
            _no_profile("wh_events", move, "not refilled", due, effects)
            continue
        effects.publish("shelf_events", *staff_move(
            "putback", f"rf-{move.event_id}", move.shelf_id, move.batch_code, move.quantity, move.received_date,
            move.expiry_date, config.profiles[move.shelf_id].item_weight, due))
        if move.reference:
            quantity, _ = delivered.get(move.reference, (0, move))
            delivered[move.reference] = (quantity + move.quantity, move)
    for plan_id, (quantity, move) in sorted(delivered.items()):
        effects.publish("shelf_restock_plan", ShelfRestockPlan(
            plan_id=plan_id, shelf_id=move.shelf_id, quantity=quantity, status="delivered", created_ts=move.ts,
            updated_ts=move.ts + delay))
    return still


# --- wh-supplier-manager -------------------------------------------------------------------------------
SupplierPolicy = Literal["rules", "ml"]
FORECAST_PLAN_PREFIX = "ml-"  # the plans the replenishment model's forecast makes (smartshelf.ml.predict)


def orders_plan(plan: WarehouseSupplierPlan, policy: SupplierPolicy, forecasts_seen: bool) -> bool:
    """Whether the supplier manager orders a pending plan: under `rules` the rule's own plans; under `ml` the
    forecast's, and the rule's until the first forecast has come (no model yet: the rule goes on)."""
    from_forecast = plan.plan_id.startswith(FORECAST_PLAN_PREFIX)
    if policy == "rules":
        return not from_forecast
    return from_forecast or not forecasts_seen


def place_order(plan: WarehouseSupplierPlan, config: StoreConfig, effects: Effects) -> SupplierOrder:
    delivery_hour = config.wh_policy(plan.shelf_id).delivery_hour
    order = SupplierOrder(order_id=order_id(plan.plan_id), plan_id=plan.plan_id, shelf_id=plan.shelf_id,
                          batches=plan.batches_to_order, quantity=plan.quantity, ordered_ts=plan.created_ts,
                          expected_delivery_ts=datetime.combine(plan.expected_delivery_date, time(delivery_hour)),
                          status="open")
    effects.publish("wh_supplier_orders", order)
    effects.publish("wh_supplier_plan", plan.model_copy(update={"status": "ordered", "updated_ts": plan.created_ts}))
    return order


def deliveries_due(orders: dict[str, SupplierOrder], plans: dict[str, WarehouseSupplierPlan], watermark: datetime,
                   config: StoreConfig, effects: Effects) -> None:
    """Orders whose delivery time has come arrive: a new lot in the warehouse (wh_in), a receipt, the order and
    plan closed. `orders` and `plans` lose them."""
    for order in sorted(orders.values(), key=lambda o: (o.expected_delivery_ts, o.order_id)):
        if order.expected_delivery_ts > watermark:
            continue
        at = order.expected_delivery_ts
        batch_code = f"S{_stamp(order.ordered_ts)}"
        expiry = at.date() + timedelta(days=config.shelf_life_days.get(order.shelf_id, 30))
        effects.publish("wh_events", WarehouseEvent(
            event_id=f"wi-{order.order_id}", event_type="wh_in", shelf_id=order.shelf_id, batch_code=batch_code,
            quantity=order.quantity, received_date=at.date(), expiry_date=expiry, reference=order.order_id, ts=at))
        receipt = SupplierReceipt(receipt_id=f"sr-{order.order_id}", order_id=order.order_id, shelf_id=order.shelf_id,
                                  batch_code=batch_code, quantity=order.quantity, received_ts=at, expiry_date=expiry)
        effects.publish("wh_supplier_receipts", receipt)
        received = order.model_copy(update={"status": "received"})
        effects.publish("wh_supplier_orders", received)
        plan = plans.pop(order.plan_id)
        effects.publish("wh_supplier_plan", plan.model_copy(update={"status": "received", "updated_ts": at}))
        del orders[order.order_id]


# --- daily-discount-manager and removal-scheduler ------------------------------------------------------
def daily_run_due(last_run: date | None, watermark: datetime, hour: int) -> date | None:
    """The day whose daily run the watermark has reached and that has not run yet, if any."""
    day = watermark.date()
    if watermark >= datetime.combine(day, time(hour)) and (last_run is None or last_run < day):
        return day
    return None


def near_expiry_discounts(lots: Iterable[ShelfBatchState], day: date, at: datetime, config: StoreConfig,
                          effects: Effects) -> None:
    """A shelf holding a lot within its near-expiry window is discounted for the day; each such lot alerts."""
    discounted: set[str] = set()
    for lot in sorted(lots, key=lambda lot: (lot.shelf_id, lot.expiry_date, lot.batch_code)):
        policy = config.shelf_policy(lot.shelf_id)
        days_left = (lot.expiry_date - day).days
        if lot.batch_quantity_store == 0 or not 0 <= days_left <= policy.near_expiry_days:
            continue
        effects.publish("alerts", _alert("near_expiry", "store", "info", lot.shelf_id, at,
                                         f"lot {lot.batch_code} expires in {days_left} day(s)", days_left,
                                         policy.near_expiry_days, lot.batch_code))
        if lot.shelf_id not in discounted:
            discounted.add(lot.shelf_id)
            discount = DailyDiscount(shelf_id=lot.shelf_id, discount_date=day, discount=policy.near_expiry_discount,
                                     reason="near_expiry")
            effects.publish("daily_discounts", discount)


def remove_expired(shelf_lots: Iterable[ShelfBatchState], wh_lots: Iterable[WarehouseBatchState], day: date,
                   at: datetime, config: StoreConfig, effects: Effects) -> None:
    """Lots past their expiry date leave the shelf (staff pickups) and the warehouse (wh_removal), with alerts."""
    for lot in sorted(shelf_lots, key=lot_key):
        if lot.expiry_date >= day or lot.batch_quantity_store == 0:
            continue
        if lot.shelf_id not in config.profiles:
            _no_profile("shelf_batch_state", lot, "expired lot not removed", at, effects)
            continue
        effects.publish("shelf_events", *staff_move(
            "pickup", f"rm-{lot.shelf_id}-{lot.batch_code}", lot.shelf_id, lot.batch_code,
            lot.batch_quantity_store, lot.received_date, lot.expiry_date,
            config.profiles[lot.shelf_id].item_weight, at))
        effects.publish("alerts", _alert("expired", "store", "critical", lot.shelf_id, at,
                                         f"{lot.batch_quantity_store} expired items of lot {lot.batch_code} "
                                         f"removed from the shelf", lot.batch_quantity_store,
                                         batch_code=lot.batch_code))
    for wh_lot in sorted(wh_lots, key=lot_key):
        if wh_lot.expiry_date < day and wh_lot.batch_quantity_warehouse > 0:
            effects.publish("wh_events", WarehouseEvent(
                event_id=f"wr-{wh_lot.shelf_id}-{wh_lot.batch_code}", event_type="wh_removal",
                shelf_id=wh_lot.shelf_id, batch_code=wh_lot.batch_code, quantity=wh_lot.batch_quantity_warehouse,
                received_date=wh_lot.received_date, expiry_date=wh_lot.expiry_date, ts=at))
            effects.publish("alerts", _alert("expired", "warehouse", "critical", wh_lot.shelf_id, at,
                                             f"{wh_lot.batch_quantity_warehouse} expired items of lot "
                                             f"{wh_lot.batch_code} removed from the warehouse",
                                             wh_lot.batch_quantity_warehouse, batch_code=wh_lot.batch_code))
