"""Poison records (issue 23): records a sender can produce that used to stop the pipeline — an exception in a rule,
a state that could not be stored or read back, a value that overflows Arrow or PostgreSQL, a missing policy row,
an event far from the clock. Each must become a rejection with a reason, or a documented fallback, instead.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from typing import Any

import annotated_types as at
import pytest
from pydantic import BaseModel, ValidationError

from smartshelf import schemas
from smartshelf.adapters import delta
from smartshelf.apps.bridge import refuse_repeats, to_delivery
from smartshelf.apps.producers import STREAM_FIELD
from smartshelf.datagen import generate_store
from smartshelf.ingress import EventWindow, Rejection, parse_record, unknown_place
from smartshelf.loop import (Effects, StoreConfig, Watch, near_expiry_discounts, place_order, refills_due,
                             remove_expired, take_delivery_or_removal, watch_shelf, watch_warehouse)
from smartshelf.policies import derive_config, load_policy_config, warehouse_capacity
from smartshelf.registry import DEAD_LETTERS, stream_of, topic
from smartshelf.rules import Refused, apply_shelf_event, apply_wh_batch_event, apply_wh_event, receive_on_shelf
from smartshelf.schemas import (FIRST_STORE, MAX_QUANTITY, MAX_WEIGHT, DeadLetter, PosItem, PosTransaction, ShelfBatchState,
                                ShelfEvent, ShelfState, WarehouseBatchState, WarehouseEvent, WarehouseState, WarehouseSupplierPlan)
from smartshelf.store import StoreInventoryRow
from smartshelf.streaming.apps import BatchStateUpdater, ShelfAggregator, WarehouseAggregator
from smartshelf.tabular import unwrap_optional
from smartshelf.world import World

T0 = datetime(2026, 1, 19, 9)
RECEIVED, EXPIRY = date(2026, 1, 10), date(2026, 3, 1)
SHELF_EVENTS = topic("shelf_events")


def encode(value: object) -> bytes:
    return json.dumps(value, default=str).encode()


def staff_putback(**changes: Any) -> dict[str, Any]:
    """A refill as the shelf-refill-bridge publishes it; a value of `...` drops the field."""
    record = {"event_id": "rf-1-m", "event_type": "putback", "shelf_id": "S1", "quantity": 5,
              "weight_change": 2500.0, "batch_code": "B1", "received_date": RECEIVED, "expiry_date": EXPIRY,
              "ts": T0, **changes}
    return {k: v for k, v in record.items() if v is not ...}


def rejected(name: str, value: dict[str, Any]) -> str:
    result = parse_record(topic(name), encode(value))
    assert isinstance(result, Rejection), f"accepted: {result!r}"
    return result.reason


# --- 1. a staff move that does not name its lot and dates ---------------------------------------------
@pytest.mark.parametrize("missing", [("received_date", "expiry_date"), ("batch_code",), ("expiry_date",)])
@pytest.mark.parametrize("kind", ["putback", "pickup"])
def test_a_staff_move_without_its_lot_or_dates_is_rejected_at_ingress(kind: str, missing: tuple[str, ...]) -> None:
    reason = rejected("shelf_events", staff_putback(event_type=kind, **{name: ... for name in missing}))
    assert f"staff {kind}" in reason and all(name in reason for name in missing)


def test_a_staff_move_naming_its_lot_and_dates_and_a_customers_move_without_them_are_accepted() -> None:
    assert isinstance(parse_record(SHELF_EVENTS, encode(staff_putback())), ShelfEvent)
    customer = staff_putback(customer_id="C1", batch_code=..., received_date=..., expiry_date=...)
    assert isinstance(parse_record(SHELF_EVENTS, encode(customer)), ShelfEvent)


def test_the_world_ignores_a_staff_putback_without_dates_and_takes_the_valid_one() -> None:
    store = generate_store(42)
    world = World(store, 42)
    shelf_id = store.store_inventory[0].shelf_id
    state = world.initial_state(T0.replace(hour=6))
    poison = ShelfEvent(**staff_putback(shelf_id=shelf_id, batch_code="BX", received_date=..., expiry_date=...,
                                        ts=T0.replace(hour=6, minute=30)))
    valid = ShelfEvent(**staff_putback(shelf_id=shelf_id, batch_code="BY", ts=T0.replace(hour=6, minute=30)))
    after, _ = world.advance(World.receive(state, [poison, valid], [], {}), T0.replace(hour=7))
    assert after.shelf_stock[shelf_id] == state.shelf_stock[shelf_id] + valid.quantity
    assert "BX" not in {lot.batch_code for lot in after.shelf_lots[shelf_id]}


# --- 2. weights and stocks stay finite and within bounds -----------------------------------------------
def shelf_state(stock: int = 10, weight: float = 5000.0) -> ShelfState:
    return ShelfState(shelf_id="S1", current_stock=stock, current_weight=weight, last_event_type="initial",
                      last_event_ts=T0)


def reading(change: float) -> ShelfEvent:
    return ShelfEvent(event_id="w", event_type="weight_change", shelf_id="S1", quantity=0, weight_change=change,
                      customer_id="C1", ts=T0)


@pytest.mark.parametrize("change", [1.7e308, -1.7e308, MAX_WEIGHT + 1])
def test_a_scale_reading_beyond_any_shelf_is_rejected_at_ingress(change: float) -> None:
    value = reading(0).model_dump(mode="json") | {"weight_change": change}
    assert "weight_change" in rejected("shelf_events", value)


def test_readings_that_would_take_the_weight_past_its_bound_are_refused_and_the_state_stays_loadable() -> None:
    state, problem = apply_shelf_event(shelf_state(weight=0), reading(MAX_WEIGHT))
    assert problem is None and state.current_weight == MAX_WEIGHT
    after, problem = apply_shelf_event(state, reading(MAX_WEIGHT))
    assert isinstance(problem, Refused) and "weight" in problem.reason
    assert after == state and ShelfState.model_validate(after.model_dump()) == after  # as reloaded from Delta


def putback(quantity: int) -> ShelfEvent:
    return ShelfEvent(**staff_putback(quantity=quantity, customer_id="C1"))


def test_putbacks_that_would_take_the_stock_past_the_maximum_are_refused() -> None:
    state, problem = apply_shelf_event(shelf_state(stock=0), putback(MAX_QUANTITY))
    assert problem is None and state.current_stock == MAX_QUANTITY
    after, problem = apply_shelf_event(state, putback(1))
    assert isinstance(problem, Refused) and str(MAX_QUANTITY) in problem.reason
    assert after == state and ShelfState.model_validate(after.model_dump()) == after


def wh_in(quantity: int) -> WarehouseEvent:
    return WarehouseEvent(event_id="wi", event_type="wh_in", shelf_id="S1", batch_code="B1", quantity=quantity,
                          received_date=RECEIVED, expiry_date=EXPIRY, ts=T0)


def test_deliveries_that_would_take_the_warehouse_or_a_lot_past_the_maximum_are_refused() -> None:
    full = WarehouseState(shelf_id="S1", wh_current_stock=MAX_QUANTITY, last_event_type="wh_in", last_event_ts=T0)
    after, problem = apply_wh_event(full, wh_in(1))
    assert isinstance(problem, Refused) and after == full
    lot = WarehouseBatchState(shelf_id="S1", batch_code="B1", received_date=RECEIVED, expiry_date=EXPIRY,
                              batch_quantity_warehouse=MAX_QUANTITY, last_update_ts=T0)
    lot_after, problem = apply_wh_batch_event(lot, wh_in(1))
    assert isinstance(problem, Refused) and lot_after == lot
    assert apply_wh_batch_event(lot.model_copy(update={"batch_quantity_warehouse": 1}), wh_in(1))[1] is None
    # the restock manager's view of the warehouse refuses it the same way
    lots = {"S1|B1": lot}
    take_delivery_or_removal(lots, wh_in(1))
    assert lots == {"S1|B1": lot}


def test_a_refill_that_would_take_a_lot_past_the_maximum_is_refused_and_the_lots_stay() -> None:
    lot = ShelfBatchState(shelf_id="S1", batch_code="B1", received_date=RECEIVED, expiry_date=EXPIRY,
                          batch_quantity_store=MAX_QUANTITY, last_update_ts=T0)
    lots = {"S1": [lot]}
    result = receive_on_shelf(lots, ShelfEvent(**staff_putback(quantity=1)))
    assert isinstance(result, Refused) and lots == {"S1": [lot]}
    assert receive_on_shelf({}, ShelfEvent(**staff_putback(quantity=MAX_QUANTITY))) == lot.model_copy(
        update={"batch_quantity_store": MAX_QUANTITY})


def test_the_state_apps_report_a_refused_event_and_keep_the_state() -> None:
    key, after, problem = ShelfAggregator().step({"S1": shelf_state(stock=MAX_QUANTITY)}, putback(1))
    assert (key, after) == ("S1", None) and problem and "maximum" in problem
    full = WarehouseState(shelf_id="S1", wh_current_stock=MAX_QUANTITY, last_event_type="wh_in", last_event_ts=T0)
    key, after, problem = WarehouseAggregator().step({"S1": full}, wh_in(1))
    assert (key, after) == ("S1", None) and problem and "maximum" in problem
    lot = ShelfBatchState(shelf_id="S1", batch_code="B1", received_date=RECEIVED, expiry_date=EXPIRY,
                          batch_quantity_store=MAX_QUANTITY, last_update_ts=T0)
    state: dict[str, BaseModel] = {"S1|B1": lot}
    changes, problems = BatchStateUpdater().apply(state, ShelfEvent(**staff_putback(quantity=1)))
    assert changes == {} and state == {"S1|B1": lot}
    assert ["maximum" in reason for reason in problems] == [True]


# --- 3. store-sized bounds in every schema -------------------------------------------------------------
def test_ten_to_the_twenty_batches_is_rejected_before_arrow_or_postgresql_see_it() -> None:
    plan = {"plan_id": "sp-1", "shelf_id": "S1", "batches_to_order": 10**20, "quantity": 5, "status": "planned",
            "expected_delivery_date": "2026-01-21", "created_ts": "2026-01-19T09:00:00",
            "updated_ts": "2026-01-19T09:00:00"}
    assert "batches_to_order" in rejected("wh_supplier_plan", plan)
    at_bound = parse_record(topic("wh_supplier_plan"), encode(plan | {"batches_to_order": MAX_QUANTITY}))
    assert isinstance(at_bound, WarehouseSupplierPlan)
    assert delta.to_arrow(WarehouseSupplierPlan, [at_bound]).num_rows == 1


@pytest.mark.parametrize(("name", "value", "field"), [
    ("pos_transactions", {"transaction_id": "t", "customer_id": "C1", "ts": "2026-01-19T09:00:00", "total": 1.0,
                          "items": [{"shelf_id": "S1", "quantity": 1, "unit_price": 1e300, "discount": 0.0,
                                     "line_total": 1.0}]}, "unit_price"),
    ("pos_transactions", {"transaction_id": "t", "customer_id": "C1", "ts": "2026-01-19T09:00:00", "total": 1e300,
                          "items": [{"shelf_id": "S1", "quantity": 1, "unit_price": 1.0, "discount": 0.0,
                                     "line_total": 1.0}]}, "total"),
    ("wh_policies", {"shelf_id": "S1", "reorder_point": 1, "order_up_to": 2, "lead_time_days": 10**7,
                     "delivery_hour": 7}, "lead_time_days"),
    ("shelf_policies", {"shelf_id": "S1", "low_stock_threshold_pct": 0.2, "restock_target_pct": 0.9,
                        "near_expiry_days": 10**7, "near_expiry_discount": 0.2}, "near_expiry_days"),
    ("shelf_profiles", {"shelf_id": "S1", "aisle": 1, "item_category": "C", "item_subcategory": "S",
                        "item_weight": 10**12, "shelf_weight": 10**12, "maximum_stock": 1, "item_price": 1.0},
     "item_weight"),
])
def test_values_beyond_a_store_are_rejected(name: str, value: dict[str, Any], field: str) -> None:
    assert field in rejected(name, value)


def test_a_store_file_beyond_the_bounds_is_refused_at_import() -> None:
    with pytest.raises(ValidationError, match="item_weight"):
        StoreInventoryRow(shelf_id="S1", aisle=1, item_weight=10**6, shelf_weight=10**6, item_category="C",
                          item_subcategory="S", item_visibility=0.1, maximum_stock=1, current_stock=1, item_price=1.0)


# fields the system derives itself from bounded inputs, or takes from Kafka, which bounds them to an int64
UNBOUNDED = {
    ("Alert", "value"), ("Alert", "threshold"), ("DeadLetter", "source_partition"), ("DeadLetter", "source_offset"),
    ("DeadLetterRow", "source_partition"), ("DeadLetterRow", "source_offset"), ("DeadLetterRow", "letter_partition"),
    ("DeadLetterRow", "letter_offset"), ("ShelfDailyFeatures", "days_to_next_delivery"),
    ("ShelfDailyFeatures", "shelf_fill_ratio"), ("ShelfDailyFeatures", "wh_fill_ratio"),
    ("ShelfDailyFeatures", "days_to_earliest_expiry"), *(("MlModel", name) for name in (
        "mae_model", "rmse_model", "mae_last7", "rmse_last7", "mae_model_batches", "mae_last7_batches",
        "mae_rule_batches", "metric_value")), ("MlPrediction", "predicted_sales_next_7d"),
    ("PulseWindow", "expected"), ("PulseWindow", "z_score"),  # derived by the pulse engine from bounded windows
}


def _records() -> Iterator[type[schemas.Record]]:
    pending: list[type[schemas.Record]] = [schemas.Record]
    while pending:
        for sub in pending.pop().__subclasses__():
            pending.append(sub)
            if sub.__module__ == schemas.__name__:
                yield sub


def _bounds(info: Any) -> tuple[float | None, float | None]:
    """(lower, upper) bound of a field, None where it has none."""
    lower = [c.ge if isinstance(c, at.Ge) else c.gt for c in info.metadata if isinstance(c, at.Ge | at.Gt)]
    upper = [c.le if isinstance(c, at.Le) else c.lt for c in info.metadata if isinstance(c, at.Le | at.Lt)]
    return max(lower, default=None), min(upper, default=None)


def test_every_number_a_sender_can_set_has_a_store_sized_bound() -> None:
    unbounded, too_large = [], []
    for model in _records():
        for name, info in model.model_fields.items():
            inner, _ = unwrap_optional(info.annotation)
            if inner not in (int, float) or (model.__name__, name) in UNBOUNDED:
                continue
            lower, upper = _bounds(info)
            if lower is None or upper is None:
                unbounded.append(f"{model.__name__}.{name}")
            elif max(-lower, upper) >= 2**53:  # within an int64, and exact as a float
                too_large.append(f"{model.__name__}.{name}")
    assert unbounded == [] and too_large == []


# --- 4. a missing policy row falls back to the category's default --------------------------------------
class _Captured(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def warnings() -> Iterator[_Captured]:
    logger, handler = logging.getLogger("smartshelf.loop"), _Captured()
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


@pytest.fixture(scope="module")
def store_and_tables() -> tuple:
    store = generate_store(42)
    return store, derive_config(store, load_policy_config())


def real_config(store_and_tables: tuple) -> StoreConfig:
    store, tables = store_and_tables
    return StoreConfig.from_tables(tables, warehouse_capacity(store))


def _refrigerated(config: StoreConfig) -> str:
    """A shelf whose category overrides the defaults (conf/policies.yaml), so the fallback must look it up."""
    return next(s for s, p in sorted(config.profiles.items()) if p.item_category == "REFRIGERATED")


def test_a_missing_shelf_policy_row_falls_back_to_its_categorys_default_with_one_warning(
        store_and_tables: tuple, warnings: _Captured) -> None:
    config = real_config(store_and_tables)
    shelf_id = _refrigerated(config)
    row = config.shelf_policies.pop(shelf_id)
    empty = ShelfState(shelf_id=shelf_id, current_stock=0, current_weight=0, last_event_type="pickup",
                       last_event_ts=T0)
    effects = Effects()
    watch = watch_shelf(Watch(), empty, config, effects)
    assert watch.level == "out" and watch.open_plan is not None and len(effects.records["shelf_restock_plan"]) == 1
    assert config.shelf_policy(shelf_id) == row  # the row was the category's default; near_expiry_days 3
    assert row.near_expiry_days == 3
    assert [r.getMessage() for r in warnings.records] == [
        "no shelf policy row: the default policy of its category applies"]
    fields = warnings.records[0].fields  # type: ignore[attr-defined]
    assert fields == {"shelf_id": shelf_id, "category": "REFRIGERATED"}


def test_a_missing_warehouse_policy_row_falls_back_to_the_default_scaled_to_the_warehouse(
        store_and_tables: tuple, warnings: _Captured) -> None:
    config = real_config(store_and_tables)
    shelf_id = _refrigerated(config)
    row = config.wh_policies.pop(shelf_id)
    empty = WarehouseState(shelf_id=shelf_id, wh_current_stock=0, last_event_type="wh_out", last_event_ts=T0)
    effects = Effects()
    watch = watch_warehouse(Watch(), empty, config, effects)
    assert watch.open_plan is not None and config.wh_policies[shelf_id] == row
    plan = effects.records["wh_supplier_plan"][0]
    assert isinstance(plan, WarehouseSupplierPlan)
    assert place_order(plan, config, Effects()).expected_delivery_ts.hour == row.delivery_hour
    assert len(warnings.records) == 1


def test_without_the_warehouses_capacity_the_default_is_the_import_default_for_an_unknown_capacity(
        store_and_tables: tuple, warnings: _Captured) -> None:
    _, tables = store_and_tables
    config = StoreConfig.from_tables(tables)
    shelf_id = _refrigerated(config)
    del config.wh_policies[shelf_id]
    policy = config.wh_policy(shelf_id)
    assert (policy.reorder_point, policy.order_up_to, policy.lead_time_days) == (0, 1, 1)


def test_near_expiry_discounts_go_on_with_the_default_when_the_row_is_missing(
        store_and_tables: tuple, warnings: _Captured) -> None:
    config = real_config(store_and_tables)
    shelf_id = _refrigerated(config)
    del config.shelf_policies[shelf_id]
    lot = ShelfBatchState(shelf_id=shelf_id, batch_code="B1", received_date=RECEIVED, expiry_date=T0.date(),
                          batch_quantity_store=3, last_update_ts=T0)
    effects = Effects()
    near_expiry_discounts([lot], T0.date(), T0, config, effects)
    assert [d.discount for d in effects.records["daily_discounts"]] == [0.3]  # type: ignore[attr-defined]


# --- a move or lot of a shelf the loop has no profile of -------------------------------------------------
def test_a_refill_for_a_shelf_without_a_profile_is_a_dead_letter(store_and_tables: tuple) -> None:
    config = real_config(store_and_tables)
    move = WarehouseEvent(event_id="wo-x", event_type="wh_out", shelf_id="NOSUCH0001", batch_code="B1", quantity=2,
                          received_date=RECEIVED, expiry_date=EXPIRY, reference="rp-x", ts=T0)
    effects = Effects()
    assert refills_due([move], T0 + timedelta(hours=1), timedelta(minutes=30), config, effects) == []
    assert set(effects.records) == {DEAD_LETTERS}
    letter = effects.records[DEAD_LETTERS][0]
    assert isinstance(letter, DeadLetter) and letter.source == "wh_events" and "NOSUCH0001" in letter.reason
    assert WarehouseEvent.model_validate_json(letter.raw) == move


def test_an_expired_lot_of_a_shelf_without_a_profile_is_a_dead_letter(store_and_tables: tuple) -> None:
    config = real_config(store_and_tables)
    lot = ShelfBatchState(shelf_id="NOSUCH0001", batch_code="B1", received_date=RECEIVED, expiry_date=RECEIVED,
                          batch_quantity_store=3, last_update_ts=T0)
    effects = Effects()
    remove_expired([lot], [], T0.date(), T0, config, effects)
    assert set(effects.records) == {DEAD_LETTERS}
    assert "has no profile" in effects.records[DEAD_LETTERS][0].reason  # type: ignore[attr-defined]


# --- 5. event time within a window of the simulated clock ----------------------------------------------
WINDOW = EventWindow(ahead=timedelta(minutes=60), behind=timedelta(days=7))


@pytest.mark.parametrize(("ts", "word"), [(T0 + timedelta(days=365), "ahead"), (T0 + timedelta(minutes=61), "ahead"),
                                          (T0 - timedelta(days=7, seconds=1), "behind")])
def test_an_event_outside_the_window_is_refused_with_the_reason(ts: datetime, word: str) -> None:
    refusal = WINDOW.check(ts, T0)
    assert isinstance(refusal, Rejection)
    assert word in refusal.reason and ts.isoformat() in refusal.reason and T0.isoformat() in refusal.reason


@pytest.mark.parametrize("ts", [T0, T0 + timedelta(minutes=60), T0 - timedelta(days=7), T0 - timedelta(hours=1)])
def test_an_event_inside_the_window_is_taken(ts: datetime) -> None:
    assert WINDOW.check(ts, T0) is None


def pickup_fields(ts: datetime) -> dict[bytes, bytes]:
    event = ShelfEvent(event_id="se-1-m", event_type="pickup", shelf_id="S1", quantity=1, weight_change=-500,
                       customer_id="C1", ts=ts)
    return {STREAM_FIELD: event.model_dump_json().encode()}


def test_the_bridge_sends_an_event_a_year_ahead_to_dead_letters() -> None:
    stream = stream_of("shelf_events")
    ahead = to_delivery(stream, b"1-0", pickup_fields(T0 + timedelta(days=365)), T0, WINDOW)
    assert ahead.topic == DEAD_LETTERS and ahead.dedup_id == f"{stream}/1-0"
    assert "ahead of the simulated clock" in DeadLetter.model_validate_json(ahead.value).reason
    assert to_delivery(stream, b"2-0", pickup_fields(T0), T0, WINDOW).topic == "shelf_events"
    # no clock yet: no window to check against
    assert to_delivery(stream, b"3-0", pickup_fields(T0 + timedelta(days=365)), T0).topic == "shelf_events"


def test_the_bridge_refuses_events_of_shelves_the_store_does_not_have() -> None:
    stream = stream_of("shelf_events")
    unknown = to_delivery(stream, b"1-0", pickup_fields(T0), T0, WINDOW, shelves={FIRST_STORE: {"S2"}})
    assert unknown.topic == DEAD_LETTERS
    assert DeadLetter.model_validate_json(unknown.value).reason == "unknown shelf S1"
    assert to_delivery(stream, b"2-0", pickup_fields(T0), T0, WINDOW, shelves={FIRST_STORE: {"S1"}}).topic \
        == "shelf_events"
    # a store the twin does not run
    other = to_delivery(stream, b"3-0", pickup_fields(T0), T0, WINDOW, shelves={"store-002": {"S1"}})
    assert DeadLetter.model_validate_json(other.value).reason == "unknown store store-001 (the twin runs store-002)"
    basket = PosTransaction(transaction_id="t1", customer_id="C1", ts=T0, total=2.0, items=[
        PosItem(shelf_id=shelf_id, quantity=1, unit_price=1.0, discount=0.0, line_total=1.0)
        for shelf_id in ("S1", "X9")])
    refusal = unknown_place(basket, {FIRST_STORE: {"S1"}})
    assert isinstance(refusal, Rejection) and refusal.reason == "unknown shelf X9"


def test_the_bridge_refuses_an_event_id_received_before_or_earlier_in_the_batch() -> None:
    stream = stream_of("shelf_events")
    first, again = (to_delivery(stream, entry, pickup_fields(T0), T0, WINDOW) for entry in (b"1-0", b"2-0"))
    checked = refuse_repeats([first, again], set(), T0)
    assert checked[0] == first and checked[1].topic == DEAD_LETTERS
    letter = DeadLetter.model_validate_json(checked[1].value)
    assert letter.reason == "event id store-001|se-1-m was already received" and '"se-1-m"' in letter.raw
    assert checked[1].dedup_id == f"{stream}/2-0"  # a dead letter's own id: a crash's replay skips it once sent
    later = refuse_repeats([first], {"store-001|se-1-m"}, T0)
    assert later[0].topic == DEAD_LETTERS
