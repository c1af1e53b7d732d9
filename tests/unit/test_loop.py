"""The closed loop's decisions (smartshelf.loop), pure: alerts and plans from stock, FIFO picks in the warehouse,
refills after their delay, supplier orders and deliveries, the daily discounts and removals, and determinism."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import pytest

from smartshelf.datagen import generate_store
from smartshelf.loop import (FORECAST_PLAN_PREFIX, Effects, StoreConfig, Watch, daily_run_due, deliveries_due, delivery_arrived,
                             follow_policies, follow_shelf_plan, lot_key, refill_arrived, order_id,
                             near_expiry_discounts, pick_fifo, place_order, refills_due, remove_expired, restock,
                             orders_plan, retry_restocks,
                             shelf_level, take_delivery_or_removal, watch_shelf, watch_warehouse)
from smartshelf.policies import ConfigTables, derive_config, load_policy_config
from smartshelf.schemas import (Alert, BatchCatalogEntry, DailyDiscount, ShelfBatchState, ShelfPolicy, ShelfProfile,
                                ShelfRestockPlan, ShelfState, SupplierOrder, WarehouseBatchState, WarehouseEvent,
                                WarehousePolicy, WarehouseState, WarehouseSupplierPlan)

T0 = datetime(2025, 1, 10, 10, 30)
DAY = T0.date()
DELAY = timedelta(minutes=20)


# --- helpers ----------------------------------------------------------------------------------
def config(*shelf_ids: str, maximum: int = 100, low: float = 0.25, target: float = 0.9, near_days: int = 3,
           near_discount: float = 0.3, reorder: int = 30, up_to: int = 90, lead: int = 2, hour: int = 7,
           batch: int = 12, life: int = 10, weight: int = 500) -> StoreConfig:
    ids = shelf_ids or ("S1",)
    return StoreConfig(
        shelf_policies={s: ShelfPolicy(shelf_id=s, low_stock_threshold_pct=low, restock_target_pct=target,
                                       near_expiry_days=near_days, near_expiry_discount=near_discount) for s in ids},
        wh_policies={s: WarehousePolicy(shelf_id=s, reorder_point=reorder, order_up_to=up_to, lead_time_days=lead,
                                        delivery_hour=hour) for s in ids},
        profiles={s: ShelfProfile(shelf_id=s, aisle=1, item_category="REFRIGERATED", item_subcategory="Fresh Milk",
                                  item_weight=weight, shelf_weight=weight * maximum, maximum_stock=maximum, item_price=1.99)
                  for s in ids},
        batch_size={s: batch for s in ids}, shelf_life_days={s: life for s in ids})


CONFIG = config("S1", "S2")


def wh_lot(code: str, quantity: int, expiry: date, shelf_id: str = "S1") -> WarehouseBatchState:
    return WarehouseBatchState(shelf_id=shelf_id, batch_code=code, received_date=date(2025, 1, 1), expiry_date=expiry,
                               batch_quantity_warehouse=quantity, last_update_ts=datetime(2025, 1, 1))


def shelf_lot(code: str, quantity: int, expiry: date, shelf_id: str = "S1") -> ShelfBatchState:
    return ShelfBatchState(shelf_id=shelf_id, batch_code=code, received_date=date(2025, 1, 1), expiry_date=expiry,
                           batch_quantity_store=quantity, last_update_ts=datetime(2025, 1, 1))


def by_key(*lots: WarehouseBatchState) -> dict[str, WarehouseBatchState]:
    return {lot_key(lot): lot for lot in lots}


def shelf_state(stock: int, ts: datetime = T0, shelf_id: str = "S1") -> ShelfState:
    return ShelfState(shelf_id=shelf_id, current_stock=stock, current_weight=stock * 500,
                      last_event_type="pickup", last_event_ts=ts)


def wh_state(stock: int, ts: datetime = T0, shelf_id: str = "S1") -> WarehouseState:
    return WarehouseState(shelf_id=shelf_id, wh_current_stock=stock, last_event_type="wh_out", last_event_ts=ts)


def restock_plan(quantity: int, ts: datetime = T0, shelf_id: str = "S1") -> ShelfRestockPlan:
    return ShelfRestockPlan(plan_id=f"rp-{shelf_id}-{ts:%Y%m%d%H%M%S}", shelf_id=shelf_id, quantity=quantity,
                            status="planned", created_ts=ts, updated_ts=ts)


def wh_out(code: str, quantity: int, ts: datetime = T0, reference: str | None = "rp-1",
           shelf_id: str = "S1") -> WarehouseEvent:
    return WarehouseEvent(event_id=f"wo-{reference}-{code}", event_type="wh_out", shelf_id=shelf_id,
                          batch_code=code, quantity=quantity, received_date=date(2025, 1, 2),
                          expiry_date=date(2025, 1, 20), reference=reference, ts=ts)


def supplier_plan(batches: int = 5, size: int = 12, delivery: date = date(2025, 1, 12), ts: datetime = T0,
                  shelf_id: str = "S1") -> WarehouseSupplierPlan:
    return WarehouseSupplierPlan(plan_id=f"sp-{shelf_id}-{ts:%Y%m%d%H%M%S}", shelf_id=shelf_id,
                                 batches_to_order=batches, quantity=batches * size, status="planned",
                                 expected_delivery_date=delivery, created_ts=ts, updated_ts=ts)


def out(effects: Effects, topic_name: str) -> list:
    return effects.records.get(topic_name, [])


def alerts(effects: Effects) -> list[Alert]:
    return out(effects, "alerts")


def picked(picks: list[tuple[WarehouseBatchState, int]]) -> list[tuple[str, int]]:
    return [(lot.batch_code, taken) for lot, taken in picks]


# --- pick_fifo --------------------------------------------------------------------------------
def test_pick_fifo_takes_the_earliest_expiry_first_ties_by_code() -> None:
    lots = [wh_lot("C", 5, date(2025, 1, 15)), wh_lot("B", 5, date(2025, 1, 20)), wh_lot("A", 5, date(2025, 1, 20)),
            wh_lot("D", 5, date(2025, 1, 12))]
    assert picked(pick_fifo(lots, 17, DAY)) == [("D", 5), ("C", 5), ("A", 5), ("B", 2)]


def test_pick_fifo_stops_when_the_quantity_is_reached() -> None:
    lots = [wh_lot("A", 10, date(2025, 1, 15)), wh_lot("B", 10, date(2025, 1, 16))]
    assert picked(pick_fifo(lots, 4, DAY)) == [("A", 4)]


def test_pick_fifo_skips_expired_lots_but_not_those_expiring_that_day() -> None:
    lots = [wh_lot("OLD", 10, DAY - timedelta(days=1)), wh_lot("TODAY", 3, DAY), wh_lot("NEW", 10, date(2025, 2, 1))]
    assert picked(pick_fifo(lots, 8, DAY)) == [("TODAY", 3), ("NEW", 5)]


def test_pick_fifo_skips_empty_lots() -> None:
    lots = [wh_lot("EMPTY", 0, date(2025, 1, 11)), wh_lot("FULL", 6, date(2025, 1, 12))]
    assert picked(pick_fifo(lots, 4, DAY)) == [("FULL", 4)]


def test_pick_fifo_never_takes_more_than_a_lot_holds() -> None:
    lots = [wh_lot("A", 3, date(2025, 1, 11)), wh_lot("B", 4, date(2025, 1, 12)), wh_lot("C", 50, date(2025, 1, 13))]
    picks = pick_fifo(lots, 20, DAY)
    assert all(taken <= lot.batch_quantity_warehouse for lot, taken in picks)
    assert picked(picks) == [("A", 3), ("B", 4), ("C", 13)]


def test_pick_fifo_is_partial_when_the_warehouse_has_less() -> None:
    lots = [wh_lot("A", 3, date(2025, 1, 11)), wh_lot("B", 4, date(2025, 1, 12)), wh_lot("X", 9, date(2025, 1, 1))]
    assert picked(pick_fifo(lots, 20, DAY)) == [("A", 3), ("B", 4)]


def test_pick_fifo_from_nothing_picks_nothing() -> None:
    assert pick_fifo([], 5, DAY) == []
    assert pick_fifo([wh_lot("A", 0, date(2025, 2, 1))], 5, DAY) == []


# --- restock ----------------------------------------------------------------------------------
def test_restock_publishes_a_wh_out_per_picked_lot() -> None:
    lots = by_key(wh_lot("A", 3, date(2025, 1, 11)), wh_lot("B", 10, date(2025, 1, 12)))
    plan = restock_plan(7)
    effects = Effects()
    restock(lots, plan, effects)
    events = out(effects, "wh_events")
    assert [(e.event_type, e.batch_code, e.quantity) for e in events] == [("wh_out", "A", 3), ("wh_out", "B", 4)]
    assert all(e.reference == plan.plan_id and e.ts == plan.created_ts and e.shelf_id == "S1" for e in events)
    assert [e.expiry_date for e in events] == [date(2025, 1, 11), date(2025, 1, 12)]
    assert len({e.event_id for e in events}) == 2


def test_restock_takes_the_picks_off_the_lots() -> None:
    lots = by_key(wh_lot("A", 3, date(2025, 1, 11)), wh_lot("B", 10, date(2025, 1, 12)),
                  wh_lot("A", 8, date(2025, 1, 11), shelf_id="S2"))
    restock(lots, restock_plan(7), Effects())
    assert {k: lot.batch_quantity_warehouse for k, lot in lots.items()} == {"S1|A": 0, "S1|B": 6, "S2|A": 8}
    assert lots["S1|B"].last_update_ts == T0


def test_restock_republishes_the_plan_picked_with_the_picked_quantity() -> None:
    lots = by_key(wh_lot("A", 3, date(2025, 1, 11)), wh_lot("B", 2, date(2025, 1, 12)))
    plan = restock_plan(40)
    effects = Effects()
    restock(lots, plan, effects)
    assert out(effects, "shelf_restock_plan") == [plan.model_copy(update={"status": "picked", "quantity": 5})]


def test_restock_cancels_the_plan_when_nothing_can_be_picked() -> None:
    lots = by_key(wh_lot("OLD", 10, DAY - timedelta(days=1)), wh_lot("EMPTY", 0, date(2025, 2, 1)),
                  wh_lot("OTHER", 10, date(2025, 2, 1), shelf_id="S2"))
    before = dict(lots)
    plan = restock_plan(5)
    effects = Effects()
    restock(lots, plan, effects)
    assert out(effects, "wh_events") == []
    [republished] = out(effects, "shelf_restock_plan")
    assert republished.plan_id == plan.plan_id and republished.status == "cancelled"
    assert lots == before


def test_restock_never_picks_more_than_the_warehouse_holds() -> None:
    lots = by_key(wh_lot("A", 6, date(2025, 1, 11)), wh_lot("B", 5, date(2025, 1, 12)))
    effects = Effects()
    for n in range(4):
        restock(lots, restock_plan(4, ts=T0 + timedelta(minutes=n)), effects)
    assert sum(e.quantity for e in out(effects, "wh_events")) == 11
    assert [p.status for p in out(effects, "shelf_restock_plan")] == ["picked", "picked", "picked", "cancelled"]
    assert [p.quantity for p in out(effects, "shelf_restock_plan")][:3] == [4, 4, 3]
    assert all(lot.batch_quantity_warehouse == 0 for lot in lots.values())


def test_the_restock_managers_lots_follow_deliveries_and_removals_not_wh_out() -> None:
    lots = by_key(wh_lot("A", 6, date(2025, 1, 11)))
    take_delivery_or_removal(lots, wh_out("A", 4))
    assert lots["S1|A"].batch_quantity_warehouse == 6  # its own picks are already off
    take_delivery_or_removal(lots, WarehouseEvent(
        event_id="wi-1", event_type="wh_in", shelf_id="S1", batch_code="N", quantity=24,
        received_date=DAY, expiry_date=date(2025, 1, 30), reference="so-1", ts=T0))
    take_delivery_or_removal(lots, WarehouseEvent(
        event_id="wr-1", event_type="wh_removal", shelf_id="S1", batch_code="A", quantity=9,
        received_date=date(2025, 1, 1), expiry_date=date(2025, 1, 11), ts=T0))
    assert {k: lot.batch_quantity_warehouse for k, lot in lots.items()} == {"S1|A": 0, "S1|N": 24}
    assert lots["S1|N"].expiry_date == date(2025, 1, 30)


# --- watch_shelf ------------------------------------------------------------------------------
def test_shelf_level_boundaries() -> None:
    policy, profile = CONFIG.shelf_policies["S1"], CONFIG.profiles["S1"]  # threshold 25 of 100
    assert [shelf_level(n, policy, profile) for n in (0, 1, 25, 26, 100)] == ["out", "low", "low", "ok", "ok"]


def test_shelf_ok_to_low_alerts_low_stock_as_a_warning() -> None:
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(20), CONFIG, effects)
    [alert] = alerts(effects)
    assert (alert.alert_type, alert.severity, alert.location, alert.shelf_id) == ("low_stock", "warning", "store", "S1")
    assert (alert.value, alert.threshold, alert.ts) == (20, 25, T0)
    assert watch.level == "low"


def test_a_changed_policy_applies_to_what_comes_after_it() -> None:
    cfg = config("S1", "S2", low=0.25)
    assert watch_shelf(Watch(), shelf_state(40), cfg, Effects()).level == "ok"
    stricter = cfg.shelf_policies["S1"].model_copy(update={"low_stock_threshold_pct": 0.5})
    later = cfg.wh_policies["S2"].model_copy(update={"delivery_hour": 11})
    follow_policies(cfg, [stricter, later, shelf_state(3)])  # what is not a policy is not its business
    effects = Effects()
    assert watch_shelf(Watch(), shelf_state(40), cfg, effects).level == "low"
    assert [a.alert_type for a in out(effects, "alerts")] == ["low_stock"]
    assert watch_shelf(Watch(), shelf_state(40, shelf_id="S2"), cfg, Effects()).level == "ok"  # S2's unchanged
    assert cfg.wh_policies["S2"].delivery_hour == 11 and cfg.wh_policies["S1"].delivery_hour == 7


def test_shelf_low_to_out_alerts_out_of_stock_as_critical() -> None:
    effects = Effects()
    watch = watch_shelf(Watch(level="low", open_plan="rp-x"), shelf_state(0), CONFIG, effects)
    assert [(a.alert_type, a.severity) for a in alerts(effects)] == [("out_of_stock", "critical")]
    assert watch.level == "out"


def test_shelf_ok_to_out_alerts_out_of_stock_only() -> None:
    effects = Effects()
    watch_shelf(Watch(), shelf_state(0), CONFIG, effects)
    assert [a.alert_type for a in alerts(effects)] == ["out_of_stock"]


def test_shelf_out_to_low_does_not_alert() -> None:
    effects = Effects()
    watch = watch_shelf(Watch(level="out", open_plan="rp-x"), shelf_state(10), CONFIG, effects)
    assert alerts(effects) == [] and watch.level == "low"


def test_shelf_staying_low_does_not_alert_again() -> None:
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(20), CONFIG, effects)
    watch = watch_shelf(watch, shelf_state(18, ts=T0 + timedelta(minutes=1)), CONFIG, effects)
    assert len(alerts(effects)) == 1 and watch.level == "low"


def test_shelf_back_to_ok_then_low_alerts_again() -> None:
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(20), CONFIG, effects)
    watch = watch_shelf(watch, shelf_state(80, ts=T0 + timedelta(hours=1)), CONFIG, effects)
    assert watch.level == "ok"
    watch_shelf(watch, shelf_state(20, ts=T0 + timedelta(hours=2)), CONFIG, effects)
    assert [a.alert_type for a in alerts(effects)] == ["low_stock", "low_stock"]
    assert len({a.alert_id for a in alerts(effects)}) == 2


def test_shelf_ok_neither_alerts_nor_plans() -> None:
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(26), CONFIG, effects)
    assert effects.records == {} and watch == Watch(stock=26)


def test_shelf_low_plans_a_restock_up_to_the_target() -> None:
    cfg = config(maximum=7, target=0.9)  # ceil(6.3) = 7
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(1), cfg, effects)
    [plan] = out(effects, "shelf_restock_plan")
    assert plan.quantity == math.ceil(0.9 * 7) - 1 == 6
    assert (plan.status, plan.shelf_id, plan.created_ts, plan.updated_ts) == ("planned", "S1", T0, T0)
    assert watch.open_plan == plan.plan_id


def test_shelf_out_plans_a_restock_of_the_whole_target() -> None:
    effects = Effects()
    watch_shelf(Watch(), shelf_state(0), CONFIG, effects)
    assert [p.quantity for p in out(effects, "shelf_restock_plan")] == [90]


def status(watch: Watch, kind: str, ts: datetime, quantity: int = 1, effects: Effects | None = None,
           plan_id: str | None = None) -> Watch:
    """The open plan (or `plan_id`) as the restock manager or refill bridge republishes it."""
    plan = ShelfRestockPlan(plan_id=plan_id or watch.open_plan or "", shelf_id="S1", quantity=quantity,
                            status=kind, created_ts=T0, updated_ts=ts)  # type: ignore[arg-type]
    return follow_shelf_plan(watch, plan, CONFIG, effects or Effects())


def test_no_second_restock_plan_while_one_is_open() -> None:
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(20), CONFIG, effects)
    watch = watch_shelf(watch, shelf_state(0, ts=T0 + timedelta(minutes=5)), CONFIG, effects)
    watch = status(watch, "picked", T0 + timedelta(minutes=6))
    watch_shelf(watch, shelf_state(0, ts=T0 + timedelta(minutes=7)), CONFIG, effects)
    assert len(out(effects, "shelf_restock_plan")) == 1


def test_follow_plan_ignores_other_plans() -> None:
    watch = Watch(level="low", open_plan="rp-1")
    assert status(watch, "delivered", T0, plan_id="rp-0") == watch
    assert status(watch, "cancelled", T0, plan_id="rp-0") == watch


def test_a_delivered_plan_rearms_the_watch_once_its_units_are_on_the_shelf() -> None:
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(20), CONFIG, effects)
    due = T0 + timedelta(minutes=30)
    watch = status(watch, "delivered", due, quantity=70, effects=effects)
    assert watch.open_plan is not None  # the refill is not on the shelf yet
    watch = watch_shelf(watch, shelf_state(90, ts=due), CONFIG, effects)  # the refill's putback, then its units
    watch = refill_arrived(watch, "S1", 70, due, CONFIG, effects)
    assert watch.open_plan is None and len(out(effects, "shelf_restock_plan")) == 1
    watch = watch_shelf(watch, shelf_state(15, ts=T0 + timedelta(minutes=40)), CONFIG, effects)
    plans = out(effects, "shelf_restock_plan")
    assert len(plans) == 2 and plans[1].quantity == 75 and watch.open_plan == plans[1].plan_id


def _after_partial_refill(delivered_first: bool) -> tuple[Watch, list[ShelfRestockPlan]]:
    """A plan of 70 that delivered 2 (the warehouse had little): the shelf is still low after it."""
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(20), CONFIG, effects)
    due = T0 + timedelta(minutes=30)
    if delivered_first:
        watch = status(watch, "delivered", due, quantity=2, effects=effects)
    watch = watch_shelf(watch, shelf_state(22, ts=due), CONFIG, effects)
    watch = refill_arrived(watch, "S1", 2, due, CONFIG, effects)
    if not delivered_first:
        watch = status(watch, "delivered", due, quantity=2, effects=effects)
    return watch, out(effects, "shelf_restock_plan")


def test_the_next_plan_does_not_depend_on_whether_delivery_or_refill_is_seen_first() -> None:
    first, plans_first = _after_partial_refill(delivered_first=True)
    second, plans_second = _after_partial_refill(delivered_first=False)
    assert first == second and plans_first == plans_second
    assert len(plans_first) == 2 and plans_first[1].created_ts == T0 + timedelta(minutes=30)


def test_a_cancelled_plan_blocks_new_plans_until_the_next_day() -> None:
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(20), CONFIG, effects)
    watch = status(watch, "cancelled", T0)
    assert watch.open_plan is None and watch.blocked_until == DAY + timedelta(days=1)
    watch = watch_shelf(watch, shelf_state(0, ts=datetime(2025, 1, 10, 23, 59, 59)), CONFIG, effects)
    assert len(out(effects, "shelf_restock_plan")) == 1 and watch.open_plan is None
    assert [a.alert_type for a in alerts(effects)] == ["low_stock", "out_of_stock"]  # alerts are not blocked
    watch = watch_shelf(watch, shelf_state(0, ts=datetime(2025, 1, 11, 0, 0, 1)), CONFIG, effects)
    plans = out(effects, "shelf_restock_plan")
    assert len(plans) == 2 and plans[1].created_ts.date() == date(2025, 1, 11)
    assert watch.open_plan == plans[1].plan_id and watch.blocked_until is None


def test_a_shelf_blocked_by_a_cancelled_plan_gets_a_new_plan_on_the_clock_the_next_day() -> None:
    """An empty shelf sees no events: the clock retries it once its block has passed."""
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(0), CONFIG, effects)
    watches = {"S1": status(watch, "cancelled", T0)}
    retry_restocks(watches, datetime(2025, 1, 10, 23, 0), CONFIG, effects)
    assert len(out(effects, "shelf_restock_plan")) == 1 and watches["S1"].open_plan is None
    retry_restocks(watches, datetime(2025, 1, 11, 6, 0), CONFIG, effects)
    [_, plan] = out(effects, "shelf_restock_plan")
    assert plan.created_ts == datetime(2025, 1, 11, 6, 0) and plan.quantity == out(effects, "shelf_restock_plan")[0].quantity
    assert watches["S1"].open_plan == plan.plan_id
    retry_restocks(watches, datetime(2025, 1, 11, 7, 0), CONFIG, effects)  # open now: no second plan
    assert len(out(effects, "shelf_restock_plan")) == 2


# --- watch_warehouse --------------------------------------------------------------------------
def test_warehouse_at_its_reorder_point_alerts_wh_reorder() -> None:
    effects = Effects()
    watch = watch_warehouse(Watch(), wh_state(30), CONFIG, effects)
    [alert] = alerts(effects)
    assert (alert.alert_type, alert.severity, alert.location) == ("wh_reorder", "warning", "warehouse")
    assert (alert.value, alert.threshold) == (30, 30)
    assert watch.level == "low"


def test_warehouse_above_its_reorder_point_does_nothing() -> None:
    effects = Effects()
    assert watch_warehouse(Watch(), wh_state(31), CONFIG, effects) == Watch(stock=31)
    assert effects.records == {}


def test_warehouse_empty_alerts_wh_out_of_stock() -> None:
    effects = Effects()
    watch = watch_warehouse(Watch(level="low", open_plan="sp-x"), wh_state(0), CONFIG, effects)
    assert [(a.alert_type, a.severity) for a in alerts(effects)] == [("wh_out_of_stock", "critical")]
    assert watch.level == "out" and out(effects, "wh_supplier_plan") == []


def test_supplier_plan_orders_whole_batches_up_to_the_target() -> None:
    effects = Effects()
    watch = watch_warehouse(Watch(), wh_state(25), config(up_to=90, batch=12, lead=2), effects)
    [plan] = out(effects, "wh_supplier_plan")
    assert plan.batches_to_order == math.ceil((90 - 25) / 12) == 6
    assert plan.quantity == 72
    assert plan.expected_delivery_date == DAY + timedelta(days=2)
    assert (plan.status, plan.created_ts, plan.updated_ts) == ("planned", T0, T0)
    assert watch.open_plan == plan.plan_id


def test_supplier_plan_of_an_exact_number_of_batches() -> None:
    effects = Effects()
    watch_warehouse(Watch(), wh_state(30), config(up_to=90, batch=12), effects)
    assert [(p.batches_to_order, p.quantity) for p in out(effects, "wh_supplier_plan")] == [(5, 60)]


def test_supplier_plan_with_no_lead_time_is_delivered_the_next_day() -> None:
    effects = Effects()
    watch_warehouse(Watch(), wh_state(0), config(lead=0), effects)
    assert [p.expected_delivery_date for p in out(effects, "wh_supplier_plan")] == [DAY + timedelta(days=1)]


def test_one_supplier_plan_at_a_time() -> None:
    effects = Effects()
    watch = watch_warehouse(Watch(), wh_state(20), CONFIG, effects)
    watch = watch_warehouse(watch, wh_state(0, ts=T0 + timedelta(hours=1)), CONFIG, effects)
    watch = watch_warehouse(watch, wh_state(0, ts=T0 + timedelta(hours=2)), CONFIG, effects)
    assert len(out(effects, "wh_supplier_plan")) == 1
    [plan] = out(effects, "wh_supplier_plan")
    arrival = WarehouseEvent(event_id="wi-x", event_type="wh_in", shelf_id="S1", batch_code="N", quantity=10,
                             received_date=DAY, expiry_date=DAY + timedelta(days=9),
                             reference=order_id(plan.plan_id), ts=T0 + timedelta(days=2))
    other = arrival.model_copy(update={"reference": "so-another"})
    watch = watch_warehouse(watch, wh_state(10, ts=arrival.ts), CONFIG, effects)
    assert delivery_arrived(watch, other, CONFIG, effects) == watch  # not its order
    watch = delivery_arrived(watch, arrival, CONFIG, effects)
    # the delivery of 10 left it below its reorder point: the next plan, at the delivery's time
    plans = out(effects, "wh_supplier_plan")
    assert len(plans) == 2 and plans[1].created_ts == arrival.ts and watch.open_plan == plans[1].plan_id


# --- refills_due ------------------------------------------------------------------------------
def test_a_refill_waits_for_its_delay() -> None:
    move = wh_out("A", 5)
    effects = Effects()
    assert refills_due([move], T0 + DELAY - timedelta(seconds=1), DELAY, CONFIG, effects) == [move]
    assert effects.records == {}


def test_a_refill_is_a_staff_putback_and_its_scale_reading() -> None:
    move = wh_out("A", 5)
    effects = Effects()
    assert refills_due([move], T0 + DELAY, DELAY, config(weight=400), effects) == []
    putback, weight = out(effects, "shelf_events")
    assert (putback.event_type, weight.event_type) == ("putback", "weight_change")
    for event in (putback, weight):
        assert event.customer_id is None and event.by_staff
        assert (event.shelf_id, event.batch_code, event.quantity) == ("S1", "A", 5)
        assert (event.received_date, event.expiry_date) == (move.received_date, move.expiry_date)
        assert event.ts == T0 + DELAY
        assert event.weight_change == 2000
    assert putback.event_id != weight.event_id


def test_a_refilled_plan_is_delivered_with_the_summed_quantity() -> None:
    moves = [wh_out("A", 3, reference="rp-1"), wh_out("B", 4, reference="rp-1"),
             wh_out("C", 9, ts=T0 + timedelta(minutes=1), reference="rp-2")]
    effects = Effects()
    refills_due(moves, T0 + timedelta(hours=1), DELAY, CONFIG, effects)
    plans = out(effects, "shelf_restock_plan")
    assert [(p.plan_id, p.status, p.quantity) for p in plans] == [("rp-1", "delivered", 7), ("rp-2", "delivered", 9)]
    assert plans[0].created_ts == T0 and plans[0].updated_ts == T0 + DELAY
    assert len(out(effects, "shelf_events")) == 6


def test_refills_return_those_still_on_their_way() -> None:
    early, late = wh_out("A", 3, reference="rp-1"), wh_out("B", 4, ts=T0 + timedelta(minutes=30), reference="rp-2")
    effects = Effects()
    assert refills_due([late, early], T0 + DELAY, DELAY, CONFIG, effects) == [late]
    assert {e.batch_code for e in out(effects, "shelf_events")} == {"A"}
    assert [p.plan_id for p in out(effects, "shelf_restock_plan")] == ["rp-1"]


def test_a_refill_without_a_plan_delivers_no_plan() -> None:
    effects = Effects()
    refills_due([wh_out("A", 3, reference=None)], T0 + DELAY, DELAY, CONFIG, effects)
    assert len(out(effects, "shelf_events")) == 2 and out(effects, "shelf_restock_plan") == []


# --- place_order / deliveries_due -------------------------------------------------------------
def test_an_order_is_expected_on_the_plans_date_at_the_delivery_hour() -> None:
    plan = supplier_plan(delivery=date(2025, 1, 12))
    effects = Effects()
    order = place_order(plan, config(hour=6), effects)
    assert order.expected_delivery_ts == datetime(2025, 1, 12, 6)
    assert (order.plan_id, order.shelf_id, order.batches, order.quantity, order.ordered_ts, order.status) == \
        (plan.plan_id, "S1", 5, 60, T0, "open")
    assert out(effects, "wh_supplier_orders") == [order]
    assert out(effects, "wh_supplier_plan") == [plan.model_copy(update={"status": "ordered"})]


def ordered(plan: WarehouseSupplierPlan, cfg: StoreConfig = CONFIG
            ) -> tuple[dict[str, SupplierOrder], dict[str, WarehouseSupplierPlan]]:
    order = place_order(plan, cfg, Effects())
    return {order.order_id: order}, {plan.plan_id: plan}


def test_nothing_is_delivered_before_its_time() -> None:
    orders, plans = ordered(supplier_plan(delivery=date(2025, 1, 12)))
    before = dict(orders), dict(plans)
    effects = Effects()
    deliveries_due(orders, plans, datetime(2025, 1, 12, 6, 59, 59), CONFIG, effects)
    assert effects.records == {}
    assert (orders, plans) == before


@pytest.mark.parametrize("watermark", [datetime(2025, 1, 12, 7), datetime(2025, 1, 13, 9)])
def test_a_delivery_arrives_at_its_time(watermark: datetime) -> None:
    plan = supplier_plan(delivery=date(2025, 1, 12))
    cfg = config(life=8)
    orders, plans = ordered(plan, cfg)
    [order] = orders.values()
    at = datetime(2025, 1, 12, 7)
    effects = Effects()
    deliveries_due(orders, plans, watermark, cfg, effects)
    [wh_in] = out(effects, "wh_events")
    assert (wh_in.event_type, wh_in.shelf_id, wh_in.quantity, wh_in.reference, wh_in.ts) == \
        ("wh_in", "S1", 60, order.order_id, at)
    assert (wh_in.received_date, wh_in.expiry_date) == (date(2025, 1, 12), date(2025, 1, 20))
    [receipt] = out(effects, "wh_supplier_receipts")
    assert (receipt.order_id, receipt.batch_code, receipt.quantity, receipt.received_ts, receipt.expiry_date) == \
        (order.order_id, wh_in.batch_code, 60, at, date(2025, 1, 20))
    assert out(effects, "wh_supplier_orders") == [
        order.model_copy(update={"status": "received"})]
    assert out(effects, "wh_supplier_plan") == [plan.model_copy(update={"status": "received", "updated_ts": at})]
    assert orders == {} and plans == {}


def test_deliveries_come_in_time_order_and_only_once() -> None:
    first = supplier_plan(delivery=date(2025, 1, 11), shelf_id="S2")
    second = supplier_plan(delivery=date(2025, 1, 12))
    third = supplier_plan(delivery=date(2025, 1, 20), ts=T0 + timedelta(minutes=1))
    orders: dict[str, SupplierOrder] = {}
    plans: dict[str, WarehouseSupplierPlan] = {}
    for plan in (second, third, first):
        more_orders, more_plans = ordered(plan)
        orders.update(more_orders)
        plans.update(more_plans)
    effects = Effects()
    deliveries_due(orders, plans, datetime(2025, 1, 15), CONFIG, effects)
    deliveries_due(orders, plans, datetime(2025, 1, 16), CONFIG, effects)
    assert [e.shelf_id for e in out(effects, "wh_events")] == ["S2", "S1"]
    assert list(plans) == [third.plan_id] and len(orders) == 1


# --- daily runs -------------------------------------------------------------------------------
def test_daily_run_is_due_once_a_day_at_or_after_its_hour() -> None:
    assert daily_run_due(None, datetime(2025, 1, 10, 6, 59, 59), 7) is None
    assert daily_run_due(None, datetime(2025, 1, 10, 7), 7) == date(2025, 1, 10)
    assert daily_run_due(None, datetime(2025, 1, 10, 23), 7) == date(2025, 1, 10)
    assert daily_run_due(date(2025, 1, 10), datetime(2025, 1, 10, 23), 7) is None
    assert daily_run_due(date(2025, 1, 10), datetime(2025, 1, 11, 6), 7) is None
    assert daily_run_due(date(2025, 1, 10), datetime(2025, 1, 11, 7, 0, 1), 7) == date(2025, 1, 11)
    assert daily_run_due(date(2025, 1, 8), datetime(2025, 1, 10, 8), 7) == date(2025, 1, 10)


def test_near_expiry_discounts_each_shelf_once_a_day_and_alerts_each_lot() -> None:
    at = datetime.combine(DAY, datetime.min.time()).replace(hour=7)
    lots = [shelf_lot("A", 5, DAY + timedelta(days=1)), shelf_lot("B", 5, DAY + timedelta(days=2)),
            shelf_lot("C", 5, DAY, shelf_id="S2")]
    effects = Effects()
    near_expiry_discounts(lots, DAY, at, config("S1", "S2", near_days=3, near_discount=0.3), effects)
    expected = [DailyDiscount(shelf_id=s, discount_date=DAY, discount=0.3, reason="near_expiry") for s in ("S1", "S2")]
    assert out(effects, "daily_discounts") == expected
    assert [(a.alert_type, a.shelf_id, a.batch_code, a.value, a.ts) for a in alerts(effects)] == [
        ("near_expiry", "S1", "A", 1, at), ("near_expiry", "S1", "B", 2, at), ("near_expiry", "S2", "C", 0, at)]
    assert len({a.alert_id for a in alerts(effects)}) == 3


@pytest.mark.parametrize(("days_left", "quantity", "discounted"), [
    (0, 1, True), (3, 1, True), (4, 1, False), (-1, 1, False), (2, 0, False)])
def test_near_expiry_window_is_0_to_near_expiry_days_with_items(days_left: int, quantity: int,
                                                                discounted: bool) -> None:
    effects = Effects()
    near_expiry_discounts([shelf_lot("A", quantity, DAY + timedelta(days=days_left))], DAY, T0,
                          config(near_days=3), effects)
    assert bool(out(effects, "daily_discounts")) is discounted
    assert len(alerts(effects)) == (1 if discounted else 0)


def test_expired_shelf_lots_are_picked_up_by_staff() -> None:
    at = datetime(2025, 1, 10, 7)
    lot = shelf_lot("OLD", 6, DAY - timedelta(days=1))
    effects = Effects()
    remove_expired([lot], [], DAY, at, config(weight=250), effects)
    pickup, weight = out(effects, "shelf_events")
    assert (pickup.event_type, weight.event_type) == ("pickup", "weight_change")
    for event in (pickup, weight):
        assert (event.shelf_id, event.batch_code, event.quantity, event.ts, event.customer_id) == \
            ("S1", "OLD", 6, at, None)
        assert (event.received_date, event.expiry_date) == (lot.received_date, lot.expiry_date)
        assert event.weight_change == -1500
    [alert] = alerts(effects)
    assert (alert.alert_type, alert.location, alert.severity, alert.batch_code, alert.value) == \
        ("expired", "store", "critical", "OLD", 6)
    assert out(effects, "wh_events") == []


def test_expired_warehouse_lots_are_removed() -> None:
    at = datetime(2025, 1, 10, 7)
    lot = wh_lot("OLD", 9, DAY - timedelta(days=3), shelf_id="S2")
    effects = Effects()
    remove_expired([], [lot], DAY, at, CONFIG, effects)
    [removal] = out(effects, "wh_events")
    assert (removal.event_type, removal.shelf_id, removal.batch_code, removal.quantity, removal.ts) == \
        ("wh_removal", "S2", "OLD", 9, at)
    assert (removal.received_date, removal.expiry_date) == (lot.received_date, lot.expiry_date)
    [alert] = alerts(effects)
    assert (alert.alert_type, alert.location, alert.severity, alert.value) == ("expired", "warehouse", "critical", 9)
    assert out(effects, "shelf_events") == []


def test_unexpired_and_empty_lots_are_not_removed() -> None:
    effects = Effects()
    remove_expired([shelf_lot("TODAY", 5, DAY), shelf_lot("GONE", 0, DAY - timedelta(days=1))],
                   [wh_lot("TODAY", 5, DAY), wh_lot("GONE", 0, DAY - timedelta(days=1)),
                    wh_lot("LATER", 5, date(2025, 3, 1))], DAY, T0, CONFIG, effects)
    assert effects.records == {}


# --- determinism ------------------------------------------------------------------------------
def everything(cfg: StoreConfig) -> Effects:
    """A bit of every step over the same inputs."""
    effects = Effects()
    watch = watch_shelf(Watch(), shelf_state(3), cfg, effects)
    lots = by_key(wh_lot("B", 5, date(2025, 1, 20)), wh_lot("A", 5, date(2025, 1, 20)),
                  wh_lot("OLD", 4, date(2025, 1, 1)))
    restock(lots, restock_plan(12), effects)
    refills_due(list(out(effects, "wh_events")), T0 + timedelta(hours=1), DELAY, cfg, effects)
    watch_warehouse(Watch(), wh_state(2), cfg, effects)
    plan = out(effects, "wh_supplier_plan")[0]
    order = place_order(plan, cfg, effects)
    deliveries_due({order.order_id: order}, {plan.plan_id: plan}, datetime(2025, 2, 1), cfg, effects)
    day = daily_run_due(None, datetime(2025, 1, 11, 8), 7)
    assert day is not None and watch.open_plan is not None
    near_expiry_discounts([shelf_lot("N", 3, date(2025, 1, 12)), shelf_lot("X", 3, date(2025, 1, 5))], day, T0, cfg,
                          effects)
    remove_expired([shelf_lot("X", 3, date(2025, 1, 5))], lots.values(), day, T0, cfg, effects)
    return effects


def ids(effects: Effects) -> list[str]:
    found = []
    for values in effects.records.values():
        for value in values:
            for name in ("alert_id", "plan_id", "event_id", "order_id", "receipt_id"):
                if hasattr(value, name):
                    found.append(getattr(value, name))
                    break
    return found


def dumped(effects: Effects) -> dict[str, list[str]]:
    return {name: [v.model_dump_json() for v in values] for name, values in effects.records.items()}


def test_the_same_inputs_give_the_same_effects_ids_included() -> None:
    first, second = everything(CONFIG), everything(config("S1", "S2"))
    assert first == second
    assert dumped(first) == dumped(second)
    assert ids(first) == ids(second) and len(ids(first)) > 15
    assert set(first.records) == {"alerts", "shelf_restock_plan", "wh_events", "shelf_events", "wh_supplier_plan",
                                  "daily_discounts", "wh_supplier_orders", "wh_supplier_receipts"}


def test_record_ids_are_unique_within_their_topic() -> None:
    effects = everything(CONFIG)
    for name in ("alerts", "wh_events", "shelf_events"):
        values = out(effects, name)
        keys = [getattr(v, "alert_id", None) or getattr(v, "event_id") for v in values]
        assert len(keys) == len(set(keys)), name


# --- the store's config -----------------------------------------------------------------------
def test_config_from_tables_keeps_the_largest_batch_size_and_shelf_life() -> None:
    def entry(code: str, size: int, days: int) -> BatchCatalogEntry:
        return BatchCatalogEntry(shelf_id="S1", batch_code=code, item_category="Dairy", item_subcategory="Milk",
                                 standard_batch_size=size, received_date=DAY, expiry_date=DAY + timedelta(days=days))
    cfg = CONFIG
    tables = ConfigTables(list(cfg.shelf_policies.values()), list(cfg.wh_policies.values()),
                          [entry("A", 12, 5), entry("B", 24, 3), entry("C", 6, 9)], list(cfg.profiles.values()))
    built = StoreConfig.from_tables(tables)
    assert built.batch_size == {"S1": 24} and built.shelf_life_days == {"S1": 9}
    assert built.shelf_policies == cfg.shelf_policies and built.profiles == cfg.profiles
    assert built.wh_policies == cfg.wh_policies


@pytest.fixture(scope="module")
def real_config() -> StoreConfig:
    return StoreConfig.from_tables(derive_config(generate_store(42), load_policy_config()))


def test_the_reference_store_config_covers_every_shelf(real_config: StoreConfig) -> None:
    shelves = set(real_config.profiles)
    assert len(shelves) > 100
    assert set(real_config.shelf_policies) == set(real_config.wh_policies) == shelves
    assert set(real_config.batch_size) == set(real_config.shelf_life_days) == shelves
    assert all(size >= 1 for size in real_config.batch_size.values())


def test_every_empty_shelf_of_the_reference_store_plans_a_restock_to_its_target(real_config: StoreConfig) -> None:
    for shelf_id, profile in real_config.profiles.items():
        effects = Effects()
        watch = watch_shelf(Watch(), shelf_state(0, shelf_id=shelf_id), real_config, effects)
        [plan] = out(effects, "shelf_restock_plan")
        target = real_config.shelf_policies[shelf_id].restock_target_pct
        assert plan.quantity == math.ceil(target * profile.maximum_stock)
        assert 0 < plan.quantity <= profile.maximum_stock and watch.level == "out"


def test_every_empty_warehouse_of_the_reference_store_orders_whole_batches(real_config: StoreConfig) -> None:
    for shelf_id, policy in real_config.wh_policies.items():
        effects = Effects()
        watch_warehouse(Watch(), wh_state(0, shelf_id=shelf_id), real_config, effects)
        [plan] = out(effects, "wh_supplier_plan")
        size = real_config.batch_size[shelf_id]
        assert plan.quantity == plan.batches_to_order * size
        assert policy.order_up_to <= plan.quantity < policy.order_up_to + size
        assert plan.expected_delivery_date == DAY + timedelta(days=max(policy.lead_time_days, 1))


# --- whose plans become orders (SUPPLIER_POLICY) --------------------------------------------------------
def _plan(plan_id: str) -> WarehouseSupplierPlan:
    return WarehouseSupplierPlan(plan_id=plan_id, shelf_id="S1", batches_to_order=1, quantity=12, status="planned",
                                 expected_delivery_date=date(2025, 1, 3), created_ts=T0, updated_ts=T0)


def test_rules_order_the_rules_plans_and_leave_the_forecasts_to_be_read() -> None:
    rule, forecast = _plan("sp-S1-20250101080000"), _plan(f"{FORECAST_PLAN_PREFIX}S1-20250101")
    assert orders_plan(rule, "rules", forecasts_seen=False) and orders_plan(rule, "rules", forecasts_seen=True)
    assert not orders_plan(forecast, "rules", forecasts_seen=True)


def test_ml_orders_the_forecasts_and_the_rules_plans_only_until_a_forecast_came() -> None:
    rule, forecast = _plan("sp-S1-20250101080000"), _plan(f"{FORECAST_PLAN_PREFIX}S1-20250101")
    assert orders_plan(rule, "ml", forecasts_seen=False)  # no model yet: the rule goes on
    assert not orders_plan(rule, "ml", forecasts_seen=True)
    assert orders_plan(forecast, "ml", forecasts_seen=True)
