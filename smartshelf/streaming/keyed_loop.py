"""The closed loop's apps — the shelf and warehouse alert engines, the restock manager, the refill bridge, the supplier
manager, the daily discount manager and the removal scheduler — whose rules decide about one shelf at a time, with
their state in Spark's state store, in the keyed query beside the state apps (smartshelf.streaming.keyed_query).

Each bucket of the keyed query (keyed.bucket_of of a shelf) keeps a *view* per app of the bucket's shelves: their
stock and watches (the alert engines), or their lots with stock and the day of the last daily run (the discount
manager, the removal scheduler), and the policies that came for them. A record goes to its shelf's bucket (its Kafka
key, the first part of a lot's, or the shelf a plan names); a clock tick goes to every bucket, and so does a supplier
plan (a copy, not acted on, outside its shelf's bucket: whether the supplier manager orders the rule's plans depends
on whether the store has seen a forecast plan). The app's
rule runs over each bucket's view with that bucket's records, in simulated-time order (a tick last at its time), as
the driver ran it over the whole store. Invariants:
- each decision (an alert, a plan, an order, a discount, a removal) is about one shelf, and every bucket sees every
  tick and every supplier plan, so the buckets' decisions together are the whole store's, whatever the bucket count;
- a lot without stock leaves the view (no rule acts on it; a later record with stock brings it back), so a view holds
  what is on the shelves and in the warehouse, not every lot ever;
- no record is lost silently: an invalid record of a topic the app validates (a tick by bucket 0 only), a record
  whose group is not the shelf it names, and a record whose rule raises each become a letter with the reason; the
  view stays as it was before that record;
- the outputs depend on the view and the records only: a batch run again gives the same records, which the keyed
  query does not publish twice (batch.OutputNotes: alerts and events are append-only topics with ids; plans and
  discounts are compacted).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from typing import Any, ClassVar, Self, get_origin

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from smartshelf import loop, rules
from smartshelf.ingress import Rejection, parse_record
from smartshelf.registry import KEY_SEPARATOR, STORE_COLUMN, topic
from smartshelf.schemas import (FIRST_STORE, ClockTick, ShelfBatchState, ShelfEvent, ShelfPolicy, ShelfRestockPlan,
                                ShelfState, SupplierOrder, WarehouseBatchState, WarehouseEvent, WarehousePolicy,
                                WarehouseState, WarehouseSupplierPlan)
from smartshelf.settings import Settings
from smartshelf.store import StoreData
from smartshelf.streaming.batch import Received, apply_isolating, first_raising, time_order
from smartshelf.streaming.keyed import LETTER, KeyedRecord, OutputRow, bucket_of

Letter = tuple[str, KeyedRecord, str]  # (group, the record as it came, reason)
RECORD = "record"  # the kind of output row of a record an app publishes (keyed.OutputRow)
NO_CONFIG = loop.StoreConfig({}, {}, {}, {}, {})


class BucketView(BaseModel):
    """What every app's view keeps besides its own state: the policies that came for the bucket's shelves."""

    shelf_policies: dict[str, ShelfPolicy] = Field(default_factory=dict)
    wh_policies: dict[str, WarehousePolicy] = Field(default_factory=dict)

    def follow(self, record: BaseModel) -> None:
        """A record the view keeps: a policy (the apps' views keep more)."""
        if isinstance(record, ShelfPolicy):
            self.shelf_policies[record.shelf_id] = record
        elif isinstance(record, WarehousePolicy):
            self.wh_policies[record.shelf_id] = record

    def shelf_ids(self) -> set[str]:
        """The shelves the view holds something of (each in one bucket): the first part of its by-shelf keys."""
        return {key.split(KEY_SEPARATOR)[0] for name, info in type(self).model_fields.items() if _is_by_shelf(info)
                for key in getattr(self, name)}

    def part(self, shelf_ids: set[str]) -> Self:
        """The view of those shelves only."""
        return self.model_validate({name: {k: v for k, v in getattr(self, name).items()
                                           if k.split(KEY_SEPARATOR)[0] in shelf_ids}
                                    for name, info in type(self).model_fields.items() if _is_by_shelf(info)} |
                                   {name: getattr(self, name) for name, info in type(self).model_fields.items()
                                    if not _is_by_shelf(info)})


def _is_by_shelf(info: FieldInfo) -> bool:
    """A field whose dict is keyed by shelf (or by shelf and more: a lot)."""
    return get_origin(info.annotation) is dict


class LotsView(BucketView):
    """The discount manager's and the removal scheduler's: the shelves' lots with stock, the last daily run."""

    shelf_lots: dict[str, ShelfBatchState] = Field(default_factory=dict)
    wh_lots: dict[str, WarehouseBatchState] = Field(default_factory=dict)
    last_run: date | None = None

    def follow(self, record: BaseModel) -> None:
        """A lot's latest value (a lot without stock leaves the view), or a policy."""
        if isinstance(record, ShelfBatchState):
            _keep(self.shelf_lots, loop.lot_key(record), record, record.batch_quantity_store)
        elif isinstance(record, WarehouseBatchState):
            _keep(self.wh_lots, loop.lot_key(record), record, record.batch_quantity_warehouse)
        else:
            super().follow(record)


def _keep(lots: dict[str, BaseModel], key: str, lot: BaseModel, quantity: int) -> None:
    if quantity > 0:
        lots[key] = lot
    else:
        lots.pop(key, None)


class WatchView(BucketView):
    """The alert engines': each shelf's (or warehouse slot's) stock as its rule follows it, and its watch."""

    shelves: dict[str, ShelfState] = Field(default_factory=dict)
    warehouse: dict[str, WarehouseState] = Field(default_factory=dict)
    watches: dict[str, loop.Watch] = Field(default_factory=dict)


def split(view: BucketView, buckets: int) -> dict[int, BucketView]:
    """A whole store's view as the buckets keep it (each shelf's part in its bucket)."""
    by_bucket: dict[int, set[str]] = {}
    for shelf_id in view.shelf_ids():
        by_bucket.setdefault(bucket_of(shelf_id, buckets), set()).add(shelf_id)
    return {bucket: view.part(shelf_ids) for bucket, shelf_ids in sorted(by_bucket.items())}


class KeyedLoopApp:
    """A loop app whose rule runs over one bucket's view at a time (see the module's invariants)."""

    name: ClassVar[str]
    topics: ClassVar[tuple[str, ...]]
    # the topics whose invalid records this app reports to dead_letters (one app per topic, as for every app)
    validates: ClassVar[tuple[str, ...]] = ()
    policies: ClassVar[tuple[str, ...]] = ()  # the policy topics it follows (also in `topics`)
    broadcast: ClassVar[tuple[str, ...]] = ("clock_ticks",)  # the topics whose records reach every bucket
    outputs: ClassVar[tuple[str, ...]]
    view_model: ClassVar[type[BucketView]]
    # set when the query starts (`start`, once per store): each store's policies and profiles as loaded then, the
    # daily run's hour, how long a restock takes from the warehouse to its shelf, whose supplier plans are ordered
    configs: dict[str, loop.StoreConfig] = {}
    ops_hour = 0
    refill_delay = timedelta(0)
    supplier_policy: loop.SupplierPolicy = "rules"

    def start(self, config: loop.StoreConfig, settings: Settings, store_id: str = FIRST_STORE) -> None:
        self.configs = {**self.configs, store_id: config}
        self.ops_hour = settings.store_ops_hour
        self.refill_delay = timedelta(minutes=settings.refill_delay_minutes)
        self.supplier_policy = settings.supplier_policy

    def config_of(self, store_id: str) -> loop.StoreConfig:
        """A store's policies and profiles as the query started (none for a store it was not started with: its
        records are letters, as those of a shelf without a profile are)."""
        return self.configs.get(store_id) or NO_CONFIG

    def initial(self, store: StoreData, start: datetime) -> BucketView:
        """The whole store's view as it opened."""
        raise NotImplementedError

    def apply_events(self, view: Any, received: list[Received], config: loop.StoreConfig) -> loop.Effects:
        """The bucket's records but policies, in simulated-time order, applied to its view (changed in place)."""
        raise NotImplementedError

    def apply(self, view: BucketView, received: list[Received], store_id: str = FIRST_STORE) -> loop.Effects:
        """A bucket's records applied to its view (changed in place): its policies first, as they apply from the
        batch they arrive in, then the rest in simulated-time order; returns what to publish."""
        for item in received:
            if item.topic in self.policies:
                view.follow(item.record)
        others = sorted((r for r in received if r.topic not in self.policies), key=time_order)
        return self.apply_events(view, others, _with_policies(self.config_of(store_id), view))


def _with_policies(config: loop.StoreConfig, view: BucketView) -> loop.StoreConfig:
    if not view.shelf_policies and not view.wh_policies:
        return config
    return dataclasses.replace(config, shelf_policies={**config.shelf_policies, **view.shelf_policies},
                               wh_policies={**config.wh_policies, **view.wh_policies})


class DailyLotsApp(KeyedLoopApp):
    """An app that follows the lots and acts once a day at STORE_OPS_HOUR, on the clock."""

    view_model = LotsView
    warehouse = False  # whether its view keeps the warehouse's lots too

    def initial(self, store: StoreData, start: datetime) -> LotsView:
        opened, view = rules.initial_states(store, start), LotsView()
        for lot in [*opened.shelf_lots, *(opened.wh_lots if self.warehouse else [])]:
            view.follow(lot)
        return view

    def daily_run(self, view: LotsView, day: date, at: datetime, config: loop.StoreConfig,
                  effects: loop.Effects) -> None:
        raise NotImplementedError

    def apply_events(self, view: LotsView, received: list[Received], config: loop.StoreConfig) -> loop.Effects:
        effects = loop.Effects()
        for item in received:
            if isinstance(item.record, ClockTick):
                day = loop.daily_run_due(view.last_run, item.record.ts, self.ops_hour)
                if day is not None:
                    self.daily_run(view, day, datetime.combine(day, time(self.ops_hour)), config, effects)
                    view.last_run = day
            else:
                view.follow(item.record)
        return effects


class DailyDiscountManager(DailyLotsApp):
    """shelf_batch_state + the clock → daily_discounts for shelves holding near-expiry lots, at STORE_OPS_HOUR;
    a near_expiry alert per lot. The world's tills apply the day's discounts."""

    name = "daily-discount-manager"
    validates = ("shelf_batch_state",)
    policies = ("shelf_policies",)  # near-expiry days and discount
    topics = ("shelf_batch_state", "clock_ticks", *policies)
    outputs = ("alerts", "daily_discounts")

    def daily_run(self, view: LotsView, day: date, at: datetime, config: loop.StoreConfig,
                  effects: loop.Effects) -> None:
        loop.near_expiry_discounts(view.shelf_lots.values(), day, at, config, effects)


class RemovalScheduler(DailyLotsApp):
    """shelf_batch_state + wh_batch_state + the clock → at STORE_OPS_HOUR, expired lots leave the shelves (staff
    pickups on shelf_events) and the warehouse (wh_removal on wh_events), each with an `expired` alert."""

    name = "removal-scheduler"
    validates = ("wh_batch_state",)
    topics = ("shelf_batch_state", "wh_batch_state", "clock_ticks")
    outputs = ("alerts", "shelf_events", "wh_events")
    warehouse = True

    def daily_run(self, view: LotsView, day: date, at: datetime, config: loop.StoreConfig,
                  effects: loop.Effects) -> None:
        loop.remove_expired(view.shelf_lots.values(), view.wh_lots.values(), day, at, config, effects)


class ShelfAlertEngine(KeyedLoopApp):
    """Shelf stock → alerts (low stock, out of stock) + shelf_restock_plan; follows its plans to delivery, and
    on the clock retries the shelves whose plan was cancelled (the warehouse had nothing) the day before.

    It follows the shelves' stock from shelf_events with the shelf-aggregator's own rule rather than reading
    the shelf_state topic: that topic carries one value per shelf and micro-batch, so which intermediate
    levels an engine would see, and when it would plan, would depend on how batches fell (runs of the same
    seed differed so). A plan is keyed by its id: it goes to the bucket of the shelf its fields name."""

    name = "shelf-alert-engine"
    validates = ("shelf_restock_plan", "shelf_policies")
    policies = ("shelf_policies",)
    topics = ("shelf_events", "shelf_restock_plan", "clock_ticks", *policies)
    outputs = ("alerts", "shelf_restock_plan")
    view_model = WatchView

    def initial(self, store: StoreData, start: datetime) -> WatchView:
        return WatchView(shelves={s.shelf_id: s for s in rules.initial_states(store, start).shelves})

    def apply_events(self, view: WatchView, received: list[Received], config: loop.StoreConfig) -> loop.Effects:
        effects = loop.Effects()
        for item in received:
            record = item.record
            if isinstance(record, ShelfEvent) and record.shelf_id in view.shelves \
                    and record.shelf_id in config.profiles:
                shelf, problem = rules.apply_shelf_event(view.shelves[record.shelf_id], record)
                if isinstance(problem, rules.Refused):
                    continue  # shelf-aggregator refuses it too, and reports it
                view.shelves[record.shelf_id] = shelf
                watch = loop.watch_shelf(view.watches.get(record.shelf_id, loop.Watch()), shelf, config, effects)
                if record.by_staff and record.event_type == "putback":
                    watch = loop.refill_arrived(watch, record.shelf_id, record.quantity, record.ts, config, effects)
                view.watches[record.shelf_id] = watch
            elif isinstance(record, ShelfRestockPlan) and record.shelf_id in view.watches:
                view.watches[record.shelf_id] = loop.follow_shelf_plan(view.watches[record.shelf_id], record,
                                                                       config, effects)
            elif isinstance(record, ClockTick):
                loop.retry_restocks(view.watches, record.ts, config, effects)
        return effects


class WarehouseAlertEngine(KeyedLoopApp):
    """Warehouse stock → alerts (reorder point, out of stock) + wh_supplier_plan; a plan closes when its
    delivery arrives. Follows the stock from wh_events with wh-aggregator's rule (as shelf-alert-engine)."""

    name = "wh-alert-engine"
    validates = ("wh_policies",)
    policies = ("wh_policies",)
    topics = ("wh_events", *policies)
    outputs = ("alerts", "wh_supplier_plan")
    view_model = WatchView

    def initial(self, store: StoreData, start: datetime) -> WatchView:
        return WatchView(warehouse={w.shelf_id: w for w in rules.initial_states(store, start).warehouse})

    def apply_events(self, view: WatchView, received: list[Received], config: loop.StoreConfig) -> loop.Effects:
        effects = loop.Effects()
        for item in received:
            record = item.record
            if isinstance(record, WarehouseEvent) and record.shelf_id in view.warehouse \
                    and record.shelf_id in config.profiles:
                stock, problem = rules.apply_wh_event(view.warehouse[record.shelf_id], record)
                if isinstance(problem, rules.Refused):
                    continue  # wh-aggregator refuses it too, and reports it
                view.warehouse[record.shelf_id] = stock
                watch = loop.watch_warehouse(view.watches.get(record.shelf_id, loop.Watch()), stock, config,
                                             effects)
                view.watches[record.shelf_id] = loop.delivery_arrived(watch, record, config, effects)
        return effects


class PickView(BucketView):
    """The restock manager's: the warehouse lots of the bucket's shelves, the plans picked (per shelf)."""

    lots: dict[str, WarehouseBatchState] = Field(default_factory=dict)
    applied: dict[str, loop.AppliedCommands] = Field(default_factory=dict)


class ShelfRestockManager(KeyedLoopApp):
    """shelf_restock_plan (planned) → wh_events (wh_out), the shelf's warehouse lots picked FIFO by expiry. A plan
    is keyed by its id: it goes to the bucket of the shelf it names, where that shelf's lots are."""

    name = "shelf-restock-manager"
    topics = ("shelf_restock_plan", "wh_events")
    outputs = ("wh_events", "shelf_restock_plan")
    view_model = PickView

    def initial(self, store: StoreData, start: datetime) -> PickView:
        return PickView(lots={loop.lot_key(lot): lot for lot in rules.initial_states(store, start).wh_lots})

    def apply_events(self, view: PickView, received: list[Received], config: loop.StoreConfig) -> loop.Effects:
        effects = loop.Effects()
        for item in received:
            record = item.record
            if isinstance(record, WarehouseEvent):
                loop.take_delivery_or_removal(view.lots, record)
            elif isinstance(record, ShelfRestockPlan) and record.status == "planned" and _first_time(
                    view.applied, record.shelf_id, record.plan_id, record.created_ts):
                loop.restock(view.lots, record, effects)
        return effects


class RefillView(BucketView):
    """The refill bridge's: the picks on their way to the bucket's shelves, the picks taken (per shelf)."""

    on_the_way: dict[str, WarehouseEvent] = Field(default_factory=dict)  # by shelf and event id
    applied: dict[str, loop.AppliedCommands] = Field(default_factory=dict)


class ShelfRefillBridge(KeyedLoopApp):
    """wh_events (wh_out) → shelf_events (staff putback + weight_change) once REFILL_DELAY_MINUTES of simulated
    time have passed (on the clock's watermark); the plan is then delivered."""

    name = "shelf-refill-bridge"
    validates = ("clock_ticks",)
    topics = ("wh_events", "clock_ticks")
    outputs = ("shelf_events", "shelf_restock_plan")
    view_model = RefillView

    def initial(self, store: StoreData, start: datetime) -> RefillView:
        return RefillView()

    def apply_events(self, view: RefillView, received: list[Received], config: loop.StoreConfig) -> loop.Effects:
        effects = loop.Effects()
        for item in received:
            record = item.record
            if isinstance(record, WarehouseEvent) and record.event_type == "wh_out" \
                    and _first_time(view.applied, record.shelf_id, record.event_id, record.ts):
                view.on_the_way[f"{record.shelf_id}{KEY_SEPARATOR}{record.event_id}"] = record
            elif isinstance(record, ClockTick):
                still = loop.refills_due(list(view.on_the_way.values()), record.ts, self.refill_delay, config,
                                         effects)
                view.on_the_way = {f"{move.shelf_id}{KEY_SEPARATOR}{move.event_id}": move for move in still}
        return effects


class SupplierView(BucketView):
    """The supplier manager's: the orders open for the bucket's shelves and their plans, the plans taken (per shelf),
    and whether any forecast plan has come to the store (every bucket sees every supplier plan: a broadcast)."""

    orders: dict[str, dict[str, SupplierOrder]] = Field(default_factory=dict)  # by shelf, then order id
    plans: dict[str, dict[str, WarehouseSupplierPlan]] = Field(default_factory=dict)  # by shelf, then plan id
    applied: dict[str, loop.AppliedCommands] = Field(default_factory=dict)
    forecasts_seen: bool = False  # under SUPPLIER_POLICY=ml the rule's plans stop once a forecast plan has come


class WarehouseSupplierManager(KeyedLoopApp):
    """wh_supplier_plan (planned) → supplier orders (the rule's or the forecast's plans, SUPPLIER_POLICY,
    smartshelf.loop.orders_plan; under ml a rule plan not ordered is cancelled); on the clock, deliveries at their
    lead time and hour → wh_events (wh_in, a new lot), receipts.

    Whether a rule plan is ordered under ml depends on the whole store (has any forecast plan come before it?), so
    the supplier plans are broadcast like the ticks: each bucket notes the forecast plans of every shelf, in
    simulated-time order among its own records, and orders and delivers its own shelves' plans only."""

    name = "wh-supplier-manager"
    validates = ("wh_supplier_plan",)
    policies = ("wh_policies",)  # the delivery hour
    topics = ("wh_supplier_plan", "clock_ticks", *policies)
    broadcast = ("clock_ticks", "wh_supplier_plan")
    outputs = ("wh_events", "wh_supplier_plan", "wh_supplier_orders", "wh_supplier_receipts")
    view_model = SupplierView

    def initial(self, store: StoreData, start: datetime) -> SupplierView:
        return SupplierView()

    def apply_events(self, view: SupplierView, received: list[Received], config: loop.StoreConfig) -> loop.Effects:
        effects = loop.Effects()
        for item in received:
            record = item.record
            if isinstance(record, WarehouseSupplierPlan) and record.status == "planned":
                view.forecasts_seen |= record.plan_id.startswith(loop.FORECAST_PLAN_PREFIX)
                if not item.copy and _first_time(view.applied, record.shelf_id, record.plan_id, record.created_ts):
                    self._order(view, record, config, effects)
            elif isinstance(record, ClockTick):
                for shelf_id in sorted(view.orders):
                    loop.deliveries_due(view.orders[shelf_id], view.plans[shelf_id], record.ts, config, effects)
                view.orders = {shelf_id: open_ for shelf_id, open_ in view.orders.items() if open_}
                view.plans = {shelf_id: open_ for shelf_id, open_ in view.plans.items() if open_}
        return effects

    def _order(self, view: SupplierView, plan: WarehouseSupplierPlan, config: loop.StoreConfig,
               effects: loop.Effects) -> None:
        if not loop.orders_plan(plan, self.supplier_policy, view.forecasts_seen):
            if self.supplier_policy == "ml":  # under rules a forecast plan stays, to be read
                effects.publish("wh_supplier_plan", plan.model_copy(update={"status": "cancelled"}))
            return
        order = loop.place_order(plan, config, effects)
        view.orders.setdefault(plan.shelf_id, {})[order.order_id] = order
        view.plans.setdefault(plan.shelf_id, {})[plan.plan_id] = plan


def _first_time(applied: dict[str, loop.AppliedCommands], shelf_id: str, command_id: str, ts: datetime) -> bool:
    """Whether a shelf's command is new (loop.AppliedCommands, one memory per shelf: a shelf's commands are in one
    bucket, so what is skipped does not depend on the bucket count)."""
    return applied.setdefault(shelf_id, loop.AppliedCommands()).first_time(command_id, ts)


KEYED_LOOP_APP_CLASSES: tuple[type[KeyedLoopApp], ...] = (ShelfAlertEngine, WarehouseAlertEngine,
                                                          ShelfRestockManager, ShelfRefillBridge,
                                                          WarehouseSupplierManager, DailyDiscountManager,
                                                          RemovalScheduler)


def opening_views(apps: list[KeyedLoopApp], store: StoreData, start: datetime, buckets: int
                  ) -> dict[int, dict[str, str]]:
    """bucket -> {app: its view JSON} as the store opened (a bucket without shelves starts from an empty view)."""
    views: dict[int, dict[str, str]] = {}
    for app in apps:
        for bucket, view in split(app.initial(store, start), buckets).items():
            views.setdefault(bucket, {})[app.name] = view.model_dump_json()
    return views


def apply_views(apps: list[KeyedLoopApp], views: dict[str, str], records: Iterable[tuple[str, KeyedRecord]],
                store_id: str = FIRST_STORE) -> tuple[bool, list[OutputRow]]:
    """One bucket's records (group, record) applied by each app to its view in `views` ({app: view JSON}, changed
    in place): whether any view changed, and the output rows (the records to publish, each the bucket's store's,
    then the letters)."""
    ordered = sorted(records, key=lambda pair: (pair[1].topic, pair[1].partition, pair[1].offset))
    as_sent = {(r.topic, r.partition, r.offset): (g, r) for g, r in ordered}  # a letter carries what came
    changed, out = False, []
    for app in apps:
        received, letters = _received(app, [(g, r) for g, r in ordered if r.topic in app.topics])
        if not received and not letters:
            continue
        stored = views.get(app.name) or app.view_model().model_dump_json()
        view, effects, failed = _apply_isolated(app, stored, received, store_id)
        text = view.model_dump_json()
        if text != stored:
            views[app.name], changed = text, True
        out += [(app.name, RECORD, name, None, None, topic(name).key_of(value), value.model_dump_json().encode(), None)
                for name, values in effects.records.items() for value in (_of_store(v, store_id) for v in values)]
        letters += [(*as_sent[(item.topic, item.partition, item.offset)], reason) for item, reason in failed]
        out += [(app.name, LETTER, r.topic, r.partition, r.offset, group, r.value, reason)
                for group, r, reason in letters]
    return changed, out


def _received(app: KeyedLoopApp, records: list[tuple[str, KeyedRecord]]) -> tuple[list[Received], list[Letter]]:
    """The records an app can apply, and the letters of those it cannot (invalid or mis-keyed)."""
    received: list[Received] = []
    letters: list[Letter] = []
    for group, record in records:
        parsed = parse_record(topic(record.topic), record.value)
        reported = record.topic in app.validates and record.reports
        if isinstance(parsed, Rejection):
            if reported:
                letters.append((group, record, parsed.reason))
        elif record.topic not in app.broadcast and getattr(parsed, "shelf_id", group) != group:
            if reported:
                letters.append((group, record, f"record key '{group}' is not the shelf its fields name "
                                               f"('{getattr(parsed, 'shelf_id')}')"))
        else:  # a broadcast record that names a shelf comes without its group to the other shelves' buckets
            copy = record.topic in app.broadcast and not group and bool(getattr(parsed, "shelf_id", ""))
            received.append(Received(record.topic, record.partition, record.offset, parsed, copy))
    return received, letters


def _of_store(record: BaseModel, store_id: str) -> BaseModel:
    """A record a bucket's app made, as its store's: the loop's rules decide about a shelf and build its records
    without knowing the store, which is the bucket's."""
    if STORE_COLUMN in type(record).model_fields and getattr(record, STORE_COLUMN) != store_id:
        return record.model_copy(update={STORE_COLUMN: store_id})
    return record


def _apply_isolated(app: KeyedLoopApp, stored: str, received: list[Received], store_id: str
                    ) -> tuple[BucketView, loop.Effects, list[tuple[Received, str]]]:
    """The records applied to the stored view; a record whose application raises is found by applying them one by
    one, is returned with the reason, and the rest are applied without it (batch.apply_isolating)."""
    def attempt(rest: list[Received]) -> tuple[BucketView, loop.Effects]:
        view = app.view_model.model_validate_json(stored)
        return view, app.apply(view, rest, store_id)

    (view, effects), poisoned = apply_isolating(
        received, attempt, lambda rest: _first_failing(app.view_model.model_validate_json(stored), app, rest, store_id),
        app.name)
    return view, effects, poisoned


def _first_failing(view: BucketView, app: KeyedLoopApp, received: list[Received], store_id: str
                   ) -> tuple[Received, Exception] | None:
    """The first record whose application, after those before it in the order `apply` takes them, raises."""
    ordered = [item for item in received if item.topic in app.policies] + sorted(
        (item for item in received if item.topic not in app.policies), key=time_order)
    return first_raising(ordered, lambda item: app.apply(view, [item], store_id))
