"""The closed loop's apps whose rule decides about one shelf at a time — the daily discount manager and the removal
scheduler — with their state in Spark's state store, in the keyed query beside the state apps
(smartshelf.streaming.keyed_query), instead of one state row committed by the driver.

Each bucket of the keyed query (keyed.bucket_of of a shelf) keeps a *view* per app: the lots with stock of the
bucket's shelves, the policies that came for them, and the day of its last daily run. A lot's record goes to its
shelf's bucket (the first part of its Kafka key); a clock tick goes to every bucket. The app's rule runs over each
bucket's view with that bucket's records, in simulated-time order (a tick last at its time), as the driver ran it
over the whole store. Invariants:
- each decision (a discount, an alert, a removal) is about one shelf's lots, and every bucket sees every tick, so the
  buckets' decisions together are the whole store's, whatever the bucket count;
- a lot without stock leaves the view (no rule acts on it; a later record with stock brings it back), so a view holds
  what is on the shelves and in the warehouse, not every lot ever;
- no record is lost silently: an invalid record of a topic the app validates (a tick by bucket 0 only), a lot whose
  Kafka key is not its shelf's, and a record whose rule raises each become a letter with the reason; the view stays
  as it was before that record;
- the outputs depend on the view and the records only: a batch run again gives the same records, which the keyed
  query does not publish twice (batch.OutputNotes: alerts and events are append-only topics with ids).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import date, datetime, time
from typing import ClassVar

from pydantic import BaseModel, Field

from smartshelf import loop, rules
from smartshelf.ingress import Rejection, parse_record
from smartshelf.registry import topic
from smartshelf.schemas import ClockTick, ShelfBatchState, ShelfPolicy, WarehouseBatchState, WarehousePolicy
from smartshelf.store import StoreData
from smartshelf.streaming.batch import Received
from smartshelf.streaming.keyed import LETTER, KeyedRecord, OutputRow, bucket_of
from smartshelf.streaming.loop_apps import time_order

Letter = tuple[str, KeyedRecord, str]  # (group, the record as it came, reason)
RECORD = "record"  # the kind of output row of a record an app publishes (keyed.OutputRow)


class LotsView(BaseModel):
    """One bucket's view of an app: its shelves' lots with stock, the policies that came for them, the last run."""

    shelf_lots: dict[str, ShelfBatchState] = Field(default_factory=dict)
    wh_lots: dict[str, WarehouseBatchState] = Field(default_factory=dict)
    shelf_policies: dict[str, ShelfPolicy] = Field(default_factory=dict)
    wh_policies: dict[str, WarehousePolicy] = Field(default_factory=dict)
    last_run: date | None = None


def follow(view: LotsView, record: BaseModel) -> None:
    """A lot's or a policy's latest value; a lot without stock leaves the view."""
    if isinstance(record, ShelfBatchState):
        _keep(view.shelf_lots, loop.lot_key(record), record, record.batch_quantity_store)
    elif isinstance(record, WarehouseBatchState):
        _keep(view.wh_lots, loop.lot_key(record), record, record.batch_quantity_warehouse)
    elif isinstance(record, ShelfPolicy):
        view.shelf_policies[record.shelf_id] = record
    elif isinstance(record, WarehousePolicy):
        view.wh_policies[record.shelf_id] = record


def _keep(lots: dict[str, BaseModel], key: str, lot: BaseModel, quantity: int) -> None:
    if quantity > 0:
        lots[key] = lot
    else:
        lots.pop(key, None)


def split(view: LotsView, buckets: int) -> dict[int, LotsView]:
    """A whole store's view as the buckets keep it (each lot in its shelf's bucket)."""
    parts: dict[int, LotsView] = {}
    for lot in view.shelf_lots.values():
        follow(parts.setdefault(bucket_of(lot.shelf_id, buckets), LotsView()), lot)
    for wh_lot in view.wh_lots.values():
        follow(parts.setdefault(bucket_of(wh_lot.shelf_id, buckets), LotsView()), wh_lot)
    return parts


class KeyedLoopApp:
    """A loop app whose rule runs over one bucket's view at a time (see the module's invariants)."""

    name: ClassVar[str]
    topics: ClassVar[tuple[str, ...]]
    # the topics whose invalid records this app reports to dead_letters (one app per topic, as for every app)
    validates: ClassVar[tuple[str, ...]] = ()
    policies: ClassVar[tuple[str, ...]] = ()  # the policy topics it follows (also in `topics`)
    broadcast: ClassVar[tuple[str, ...]] = ("clock_ticks",)  # the topics whose records reach every bucket
    outputs: ClassVar[tuple[str, ...]]
    # set when the query starts: the store's policies and profiles as loaded then, the daily run's hour
    config = loop.StoreConfig({}, {}, {}, {}, {})
    ops_hour = 0

    def initial(self, store: StoreData, start: datetime) -> LotsView:
        """The whole store's view as it opened."""
        raise NotImplementedError

    def daily_run(self, view: LotsView, day: date, at: datetime, config: loop.StoreConfig,
                  effects: loop.Effects) -> None:
        raise NotImplementedError

    def apply(self, view: LotsView, received: list[Received]) -> loop.Effects:
        """The bucket's records applied to its view (changed in place): its policies first, as they apply from
        the batch they arrive in, then the rest in simulated-time order; returns what to publish."""
        for item in received:
            if item.topic in self.policies:
                follow(view, item.record)
        config = _with_policies(self.config, view)
        effects = loop.Effects()
        for item in sorted((r for r in received if r.topic not in self.policies), key=time_order):
            if isinstance(item.record, ClockTick):
                day = loop.daily_run_due(view.last_run, item.record.ts, self.ops_hour)
                if day is not None:
                    self.daily_run(view, day, datetime.combine(day, time(self.ops_hour)), config, effects)
                    view.last_run = day
            else:
                follow(view, item.record)
        return effects


def _with_policies(config: loop.StoreConfig, view: LotsView) -> loop.StoreConfig:
    if not view.shelf_policies and not view.wh_policies:
        return config
    return dataclasses.replace(config, shelf_policies={**config.shelf_policies, **view.shelf_policies},
                               wh_policies={**config.wh_policies, **view.wh_policies})


def _initial_lots(store: StoreData, start: datetime, warehouse: bool) -> LotsView:
    opened, view = rules.initial_states(store, start), LotsView()
    for lot in [*opened.shelf_lots, *(opened.wh_lots if warehouse else [])]:
        follow(view, lot)
    return view


class DailyDiscountManager(KeyedLoopApp):
    """shelf_batch_state + the clock → daily_discounts for shelves holding near-expiry lots, at STORE_OPS_HOUR;
    a near_expiry alert per lot. The world's tills apply the day's discounts."""

    name = "daily-discount-manager"
    validates = ("shelf_batch_state",)
    policies = ("shelf_policies",)  # near-expiry days and discount
    topics = ("shelf_batch_state", "clock_ticks", *policies)
    outputs = ("alerts", "daily_discounts")

    def initial(self, store: StoreData, start: datetime) -> LotsView:
        return _initial_lots(store, start, warehouse=False)

    def daily_run(self, view: LotsView, day: date, at: datetime, config: loop.StoreConfig,
                  effects: loop.Effects) -> None:
        loop.near_expiry_discounts(view.shelf_lots.values(), day, at, config, effects)


class RemovalScheduler(KeyedLoopApp):
    """shelf_batch_state + wh_batch_state + the clock → at STORE_OPS_HOUR, expired lots leave the shelves (staff
    pickups on shelf_events) and the warehouse (wh_removal on wh_events), each with an `expired` alert."""

    name = "removal-scheduler"
    validates = ("wh_batch_state",)
    topics = ("shelf_batch_state", "wh_batch_state", "clock_ticks")
    outputs = ("alerts", "shelf_events", "wh_events")

    def initial(self, store: StoreData, start: datetime) -> LotsView:
        return _initial_lots(store, start, warehouse=True)

    def daily_run(self, view: LotsView, day: date, at: datetime, config: loop.StoreConfig,
                  effects: loop.Effects) -> None:
        loop.remove_expired(view.shelf_lots.values(), view.wh_lots.values(), day, at, config, effects)


KEYED_LOOP_APP_CLASSES: tuple[type[KeyedLoopApp], ...] = (DailyDiscountManager, RemovalScheduler)


def opening_views(apps: list[KeyedLoopApp], store: StoreData, start: datetime, buckets: int
                  ) -> dict[int, dict[str, str]]:
    """bucket -> {app: its view JSON} as the store opened (buckets without lots start from an empty view)."""
    views: dict[int, dict[str, str]] = {}
    for app in apps:
        for bucket, view in split(app.initial(store, start), buckets).items():
            views.setdefault(bucket, {})[app.name] = view.model_dump_json()
    return views


def apply_views(apps: list[KeyedLoopApp], views: dict[str, str], records: Iterable[tuple[str, KeyedRecord]]
                ) -> tuple[bool, list[OutputRow]]:
    """One bucket's records (group, record) applied by each app to its view in `views` ({app: view JSON}, changed
    in place): whether any view changed, and the output rows (the records to publish, then the letters)."""
    ordered = sorted(records, key=lambda pair: (pair[1].topic, pair[1].partition, pair[1].offset))
    as_sent = {(r.topic, r.partition, r.offset): (g, r) for g, r in ordered}  # a letter carries what came
    changed, out = False, []
    for app in apps:
        received, letters = _received(app, [(g, r) for g, r in ordered if r.topic in app.topics])
        if not received and not letters:
            continue
        stored = views.get(app.name, LotsView().model_dump_json())
        view, effects, failed = _apply_isolated(app, stored, received)
        text = view.model_dump_json()
        if text != stored:
            views[app.name], changed = text, True
        out += [(app.name, RECORD, name, None, None, topic(name).key_of(value), value.model_dump_json().encode(), None)
                for name, values in effects.records.items() for value in values]
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
        else:
            received.append(Received(record.topic, record.partition, record.offset, parsed))
    return received, letters


def _apply_isolated(app: KeyedLoopApp, stored: str, received: list[Received]
                    ) -> tuple[LotsView, loop.Effects, list[tuple[Received, str]]]:
    """The records applied to the stored view; a record whose application raises is found by applying them one by
    one, is returned with the reason, and the rest are applied without it."""
    poisoned: list[tuple[Received, str]] = []
    while True:
        rest = [item for item in received if not any(item is bad for bad, _ in poisoned)]
        view = LotsView.model_validate_json(stored)
        try:
            return view, app.apply(view, rest), poisoned
        except Exception:  # noqa: BLE001 - any failure of a rule on a record
            culprit = _first_failing(LotsView.model_validate_json(stored), app, rest)
            if culprit is None:
                raise
            item, error = culprit
            poisoned.append((item, f"{app.name} could not apply it: {type(error).__name__}: {error}"))


def _first_failing(view: LotsView, app: KeyedLoopApp, received: list[Received]) -> tuple[Received, Exception] | None:
    """The first record whose application, after those before it in the order `apply` takes them, raises."""
    ordered = [item for item in received if item.topic in app.policies] + sorted(
        (item for item in received if item.topic not in app.policies), key=time_order)
    for item in ordered:
        try:
            app.apply(view, [item])
        except Exception as error:  # noqa: BLE001 - the culprit, whatever it raised
            return item, error
    return None
