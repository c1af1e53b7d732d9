"""The loop apps whose state is a view per bucket of the keyed query (smartshelf.streaming.keyed_loop): over a whole
store's lots and days, and over days of the closed loop (alerts, restocks, refills, supplier orders and deliveries,
under either supplier policy), the buckets' records are the whole store's together, whatever the bucket count; every
app's opening view is split by shelf without loss; a lot without stock leaves the view; a policy applies from its batch;
invalid, mis-keyed and raising records are letters and the rest is applied; the daily run happens once a day."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, datetime, timedelta
from typing import get_origin

import pytest
from pydantic import BaseModel

from smartshelf import loop
from smartshelf.datagen import generate_store
from smartshelf.policies import derive_config, load_policy_config, warehouse_capacity
from smartshelf.schemas import (FIRST_STORE, Alert, ClockTick, ShelfBatchState, ShelfEvent, ShelfPolicy, ShelfRestockPlan,
                                WarehouseBatchState, WarehouseEvent, WarehouseSupplierPlan)
from smartshelf.settings import Settings
from smartshelf.streaming.batch import Received
from smartshelf.streaming.keyed import LETTER, KeyedRecord, OutputRow, bucket_of
from smartshelf.registry import KEY_SEPARATOR, topic
from smartshelf.streaming.keyed_loop import (KEYED_LOOP_APP_CLASSES, RECORD, DailyDiscountManager, KeyedLoopApp,
                                             LotsView, RemovalScheduler, ShelfAlertEngine, ShelfRefillBridge,
                                             ShelfRestockManager, WarehouseAlertEngine, WarehouseSupplierManager,
                                             apply_views, opening_views)

T0 = datetime(2025, 1, 1)
STORE = generate_store(42)
SHELF, OTHER = STORE.store_inventory[0].shelf_id, STORE.store_inventory[1].shelf_id
CONFIG = loop.StoreConfig.from_tables(derive_config(STORE, load_policy_config()), warehouse_capacity(STORE))


def _apps() -> list[KeyedLoopApp]:
    apps: list[KeyedLoopApp] = [DailyDiscountManager(), RemovalScheduler()]
    for app in apps:
        app.configs, app.ops_hour = {FIRST_STORE: CONFIG}, 6
    return apps


def tick(at: datetime, offset: int) -> KeyedRecord:
    return KeyedRecord("clock_ticks", 0, offset, ClockTick(tick_id=f"t{offset}", ts=at).model_dump_json().encode())


def lot_record(lot: BaseModel, offset: int, topic_name: str = "shelf_batch_state") -> tuple[str, KeyedRecord]:
    return getattr(lot, "shelf_id"), KeyedRecord(topic_name, 0, offset, lot.model_dump_json().encode())


def _days(seed: int) -> list[list[tuple[str, KeyedRecord]]]:
    """Three days of batches: lots changing stock (some to none), then a tick each hour ("" is a tick's group)."""
    rng, opened = random.Random(seed), opening_views(_apps(), STORE, T0, 1)[0]
    lots = [*LotsView.model_validate_json(opened[RemovalScheduler.name]).shelf_lots.values()]
    wh_lots = [*LotsView.model_validate_json(opened[RemovalScheduler.name]).wh_lots.values()]
    batches, offset = [], 0
    for hour in range(72):
        at, batch = T0 + timedelta(hours=hour), []
        for lot in rng.sample(lots, 5):
            offset += 1
            changed = lot.model_copy(update={"batch_quantity_store": rng.choice([0, 1, 5]), "last_update_ts": at})
            batch.append(lot_record(changed, offset))
        for wh_lot in rng.sample(wh_lots, 2):
            offset += 1
            batch.append(lot_record(wh_lot.model_copy(update={"last_update_ts": at}), offset, "wh_batch_state"))
        offset += 1
        batches.append([*batch, ("", tick(at, offset))])
    return batches


def _run(buckets: int, batches: list[list[tuple[str, KeyedRecord]]]) -> list[OutputRow]:
    apps, views = _apps(), opening_views(_apps(), STORE, T0, buckets)
    out: list[OutputRow] = []
    for batch in batches:
        for bucket in range(buckets):
            mine = [(g, r) for g, r in batch if not g or bucket_of(g, buckets) == bucket]  # a tick: every bucket
            out += apply_views(apps, views.setdefault(bucket, {}), mine)[1]
    return out


@pytest.mark.parametrize("buckets", [4, 64])
def test_the_buckets_publish_together_what_the_whole_store_publishes(buckets: int) -> None:
    batches = _days(1)
    whole = _run(1, batches)
    assert Counter(row[1] for row in whole) == Counter({RECORD: len(whole)})  # only records, no letters
    topics = Counter(row[2] for row in whole)
    assert topics["daily_discounts"] and topics["shelf_events"] and topics["wh_events"], topics  # every rule acted
    assert Counter(whole) == Counter(_run(buckets, batches))


@pytest.mark.parametrize("app_class", KEYED_LOOP_APP_CLASSES, ids=lambda app_class: app_class.name)
def test_every_apps_opening_view_is_split_by_shelf_over_the_buckets(app_class: type[KeyedLoopApp]) -> None:
    app = app_class()
    whole = app.initial(STORE, T0)
    parts = {bucket: app.view_model.model_validate_json(apps[app.name])
             for bucket, apps in opening_views([app], STORE, T0, 8).items()}
    for name, info in type(whole).model_fields.items():
        if get_origin(info.annotation) is dict:  # every shelf's entries, each in its shelf's bucket, none lost
            entries = {key: value for part in parts.values() for key, value in getattr(part, name).items()}
            assert entries == getattr(whole, name), name
            assert all(bucket_of(key.split(KEY_SEPARATOR)[0], 8) == bucket
                       for bucket, part in parts.items() for key in getattr(part, name)), name
    assert whole.shelf_ids() == {shelf_id for part in parts.values() for shelf_id in part.shelf_ids()}
    if app_class in (ShelfAlertEngine, WarehouseAlertEngine, ShelfRestockManager, RemovalScheduler):
        assert whole.shelf_ids(), app.name  # the store's shelves, stock or lots, are in the view from the start


def test_the_discount_managers_view_keeps_shelf_lots_only() -> None:
    views = opening_views(_apps(), STORE, T0, 8)
    assert all(bucket_of(lot.shelf_id, 8) == bucket for bucket, apps in views.items()
               for lot in LotsView.model_validate_json(apps[DailyDiscountManager.name]).shelf_lots.values())
    assert not any(part.wh_lots for part in (LotsView.model_validate_json(apps[DailyDiscountManager.name])
                                             for apps in views.values()))


def _lot(quantity: int, expiry: date, code: str = "L1", shelf_id: str = "") -> ShelfBatchState:
    return ShelfBatchState(shelf_id=shelf_id or SHELF, batch_code=code, received_date=date(2024, 12, 20),
                           expiry_date=expiry, batch_quantity_store=quantity, last_update_ts=T0)


def _view(views: dict[str, str], app: KeyedLoopApp) -> LotsView:
    return LotsView.model_validate_json(views[app.name])


def test_a_lot_without_stock_leaves_the_view_and_comes_back_with_stock() -> None:
    app, views = RemovalScheduler(), {}
    apply_views([app], views, [lot_record(_lot(3, date(2025, 1, 9)), 1)])
    assert list(_view(views, app).shelf_lots) == [f"{SHELF}|L1"]
    apply_views([app], views, [lot_record(_lot(0, date(2025, 1, 9)), 2)])
    assert _view(views, app).shelf_lots == {}
    apply_views([app], views, [lot_record(_lot(2, date(2025, 1, 9)), 3)])
    assert _view(views, app).shelf_lots[f"{SHELF}|L1"].batch_quantity_store == 2


def test_the_daily_run_happens_once_a_day_at_the_ops_hour() -> None:
    app = _apps()[1]
    views = {app.name: LotsView(shelf_lots={f"{SHELF}|L1": _lot(3, date(2025, 1, 1))}).model_dump_json()}
    early = apply_views([app], views, [("", tick(datetime(2025, 1, 2, 5), 1))])[1]
    due = apply_views([app], views, [("", tick(datetime(2025, 1, 2, 6), 2))])[1]
    again = apply_views([app], views, [("", tick(datetime(2025, 1, 2, 7), 3))])[1]
    assert early == [] and again == [] and {row[2] for row in due} == {"shelf_events", "alerts"}
    assert _view(views, app).last_run == date(2025, 1, 2)


def test_a_policy_applies_from_the_batch_it_arrives_in() -> None:
    app = _apps()[0]
    views: dict[str, str] = {}
    near = _lot(3, date(2025, 1, 12))  # 10 days left: outside the default near-expiry window
    policy = CONFIG.shelf_policy(near.shelf_id).model_copy(update={"near_expiry_days": 10, "near_expiry_discount": 0.5})
    out = apply_views([app], views, [lot_record(near, 1), (near.shelf_id, KeyedRecord(
        "shelf_policies", 0, 1, policy.model_dump_json().encode())), ("", tick(datetime(2025, 1, 2, 6), 2))])[1]
    discounts = [row for row in out if row[2] == "daily_discounts"]
    assert len(discounts) == 1 and b'"discount":0.5' in (discounts[0][6] or b"")
    assert _view(views, app).shelf_policies == {near.shelf_id: ShelfPolicy.model_validate(policy.model_dump())}


def test_invalid_and_miskeyed_records_are_letters_of_the_validating_app_only() -> None:
    removal, discount = _apps()[1], _apps()[0]
    garbage = KeyedRecord("wh_batch_state", 0, 4, b"not json")
    quiet = KeyedRecord("wh_batch_state", 0, 5, b"not json", reports=False)  # another bucket reports it
    wrong = (OTHER, lot_record(_lot(1, date(2025, 2, 1)), 6)[1])  # keyed by another shelf
    out = apply_views([removal, discount], {}, [(SHELF, garbage), (SHELF, quiet), wrong])[1]
    letters = [(row[0], row[4], row[7]) for row in out if row[1] == LETTER]
    assert [(app, offset) for app, offset, _ in letters] == [(removal.name, 4), (discount.name, 6)]
    assert "is not the shelf its fields name" in (letters[1][2] or "")


class FailingRemoval(RemovalScheduler):
    """Raises on one shelf's lots: a bug in a rule, met by one record."""

    def apply(self, view: LotsView, received: list[Received], store_id: str = FIRST_STORE) -> loop.Effects:
        if any(getattr(item.record, "batch_code", "") == "BAD" for item in received):
            raise ValueError("cannot follow lot BAD")
        return super().apply(view, received, store_id)


def test_a_record_whose_rule_raises_is_a_letter_and_the_rest_are_applied() -> None:
    app = FailingRemoval()
    app.configs, app.ops_hour = {FIRST_STORE: CONFIG}, 6
    views = {app.name: LotsView(shelf_lots={f"{SHELF}|L1": _lot(3, date(2025, 1, 1))}).model_dump_json()}
    bad = lot_record(_lot(1, date(2025, 1, 1), "BAD", "SCAFFALE-0666"), 7)
    out = apply_views([app], views, [bad, ("", tick(datetime(2025, 1, 2, 6), 8))])[1]
    assert [(row[1], row[4]) for row in out if row[1] == LETTER] == [(LETTER, 7)]
    assert "could not apply it: ValueError: cannot follow lot BAD" in str([row[7] for row in out])
    assert {row[2] for row in out if row[1] == RECORD} == {"shelf_events", "alerts"}  # L1 removed all the same
    assert "SCAFFALE-0666|BAD" not in _view(views, app).shelf_lots


def test_a_ticks_letters_come_from_the_validating_bucket_only() -> None:
    app = _apps()[1]
    assert "clock_ticks" not in app.validates  # the refill bridge reports the clock's invalid ticks
    assert apply_views([app], {}, [("", KeyedRecord("clock_ticks", 0, 1, b"{}"))])[1] == []


def test_warehouse_lots_without_stock_leave_the_removals_view() -> None:
    app, views = RemovalScheduler(), {}
    wh = WarehouseBatchState(shelf_id=SHELF, batch_code="W1", received_date=date(2024, 12, 20),
                             expiry_date=date(2025, 1, 9), batch_quantity_warehouse=0, last_update_ts=T0)
    apply_views([app], views, [lot_record(wh.model_copy(update={"batch_quantity_warehouse": 4}), 1, "wh_batch_state")])
    assert list(_view(views, app).wh_lots) == [f"{SHELF}|W1"]
    apply_views([app], views, [lot_record(wh, 2, "wh_batch_state")])
    assert _view(views, app).wh_lots == {}


def _watch_apps(policy: str = "rules") -> list[KeyedLoopApp]:
    apps: list[KeyedLoopApp] = [ShelfAlertEngine(), WarehouseAlertEngine(), ShelfRestockManager(), ShelfRefillBridge(),
                                WarehouseSupplierManager()]
    settings = Settings(_env_file=None, STORE_OPS_HOUR=6, REFILL_DELAY_MINUTES=30,  # type: ignore[call-arg]
                        SUPPLIER_POLICY=policy)
    for app in apps:
        app.start(CONFIG, settings)
    return apps


def _feedback(rows: list[OutputRow]) -> list[tuple[str, BaseModel]]:
    """What the batch's records bring about in the next one (in key order, so the same records give the same
    inputs): its plans, orders, warehouse moves and refills go round the loop."""
    return [(row[2], topic(row[2]).schema.model_validate_json(row[6] or b""))
            for row in sorted((r for r in rows if r[2] != "alerts"), key=lambda r: (r[2], r[5], r[6] or b""))]


def _bucket_records(batch: list[tuple[str, KeyedRecord]], bucket: int, buckets: int, broadcast: set[str]
                    ) -> list[tuple[str, KeyedRecord]]:
    """A bucket's records as the keyed query groups them: its shelves' records, and every broadcast record, with its
    shelf as the group in that shelf's bucket only ("" is a tick's group)."""
    return [(group if bucket_of(group, buckets) == bucket else "", record) for group, record in batch
            if record.topic in broadcast or bucket_of(group, buckets) == bucket]


def _watch_days(buckets: int, policy: str = "rules") -> list[OutputRow]:
    """Two and a half days of customers emptying shelves and the warehouse picking, hour by hour, the loop answering
    (the supplier delivers two days after an order); on the first day at 04:00 a forecast plan for one shelf."""
    rng, apps = random.Random(3), _watch_apps(policy)
    broadcast = {name for app in apps for name in app.broadcast}
    views = opening_views(apps, STORE, T0, buckets)
    shelves = [shelf.shelf_id for shelf in STORE.store_inventory[:40]]
    lots = {lot.shelf_id: lot for lot in STORE.warehouse_batches if lot.shelf_id in shelves}
    out: list[OutputRow] = []
    answers: list[tuple[str, BaseModel]] = []
    offset = 0
    for hour in range(60):
        at = T0 + timedelta(hours=hour)
        values = list(answers)
        for n, shelf_id in enumerate(rng.sample(shelves, 12)):
            quantity = rng.randint(2, 8)
            values.append(("shelf_events", ShelfEvent(
                event_id=f"c{hour}-{n}", event_type="pickup", shelf_id=shelf_id, quantity=quantity,
                weight_change=-quantity * CONFIG.profiles[shelf_id].item_weight, customer_id="C1", ts=at)))
        for n, lot in enumerate(rng.sample(sorted(lots.values(), key=lambda lot: lot.shelf_id), 4)):
            values.append(("wh_events", WarehouseEvent(
                event_id=f"o{hour}-{n}", event_type="wh_out", shelf_id=lot.shelf_id, batch_code=lot.batch_code,
                quantity=rng.randint(1, 6), received_date=lot.received_date, expiry_date=lot.expiry_date, ts=at)))
        if hour == 4:
            values.append(("wh_supplier_plan", WarehouseSupplierPlan(
                plan_id=f"{loop.FORECAST_PLAN_PREFIX}{shelves[0]}-20250101", shelf_id=shelves[0], batches_to_order=1,
                quantity=10, status="planned", expected_delivery_date=date(2025, 1, 2), created_ts=at,
                updated_ts=at)))
        batch: list[tuple[str, KeyedRecord]] = []
        for name, value in values:
            offset += 1
            batch.append((getattr(value, "shelf_id"), KeyedRecord(name, 0, offset, value.model_dump_json().encode())))
        offset += 1
        batch.append(("", tick(at, offset)))
        rows: list[OutputRow] = []
        for bucket in range(buckets):
            rows += apply_views(apps, views.setdefault(bucket, {}), _bucket_records(batch, bucket, buckets,
                                                                                    broadcast))[1]
        out += rows
        answers = _feedback(rows)
    return out


def _statuses(rows: list[OutputRow], name: str) -> Counter[str]:
    return Counter(topic(name).schema.model_validate_json(row[6] or b"").status for row in rows if row[2] == name)


@pytest.mark.parametrize("buckets", [7, 64])
def test_the_loops_apps_in_buckets_do_what_they_do_over_the_whole_store(buckets: int) -> None:
    whole = _watch_days(1)
    records = Counter(row[2] for row in whole)
    alerts = Counter(Alert.model_validate_json(row[6] or b"").alert_type for row in whole if row[2] == "alerts")
    assert {row[1] for row in whole} == {RECORD}, [row for row in whole if row[1] != RECORD][:3]
    assert records["wh_events"] and records["shelf_events"] and records["wh_supplier_receipts"], records
    restocks, supplies = _statuses(whole, "shelf_restock_plan"), _statuses(whole, "wh_supplier_plan")
    assert restocks["planned"] and restocks["picked"] and restocks["delivered"], restocks  # the loop went round
    assert supplies["ordered"] and supplies["received"] and not supplies["cancelled"], supplies
    assert alerts["low_stock"] and alerts["out_of_stock"] and alerts["wh_reorder"], alerts
    assert Counter(whole) == Counter(_watch_days(buckets))


@pytest.mark.parametrize("buckets", [7, 64])
def test_under_the_ml_policy_a_forecast_plan_for_one_shelf_stops_the_rules_plans_in_every_bucket(buckets: int) -> None:
    whole = _watch_days(1, "ml")
    supplies = _statuses(whole, "wh_supplier_plan")
    forecast = [row for row in whole if row[2] == "wh_supplier_orders" and loop.FORECAST_PLAN_PREFIX in (row[5] or "")]
    assert forecast and supplies["cancelled"] > 1 and supplies["ordered"], supplies  # rules' plans before 04:00 ordered
    assert Counter(whole) == Counter(_watch_days(buckets, "ml"))


def test_a_restock_plan_goes_to_the_bucket_of_the_shelf_it_names() -> None:
    engine = _watch_apps()[0]
    plan = ShelfRestockPlan(plan_id="rp-x", shelf_id=SHELF, quantity=3, status="cancelled", created_ts=T0,
                            updated_ts=T0)
    record = KeyedRecord("shelf_restock_plan", 0, 1, plan.model_dump_json().encode())
    assert apply_views([engine], {}, [(SHELF, record)])[1] == []  # no open plan there: nothing to follow
    letters = apply_views([engine], {}, [("rp-x", record)])[1]  # grouped by its Kafka key: not its shelf's bucket
    assert [(row[1], row[4]) for row in letters] == [(LETTER, 1)]
