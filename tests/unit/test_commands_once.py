"""Commands act once (issue 23): a planned restock, a supplier plan or a warehouse pick that arrives again — as a
replayed batch upstream republishes a compacted topic's values — is skipped by its consumer, across batches and
across a restart (the ids are part of the committed state), and the memory of applied ids stays bounded."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from pydantic import BaseModel

from smartshelf.loop import COMMAND_MEMORY, AppliedCommands, lot_key
from smartshelf.schemas import ClockTick, WarehouseEvent
from smartshelf.settings import Settings
from smartshelf.streaming.batch import Received
from smartshelf.streaming.keyed_loop import (PickView, RefillView, ShelfRefillBridge, ShelfRestockManager, SupplierView,
                                             WarehouseSupplierManager)
from tests.unit.test_loop import T0, config, restock_plan, supplier_plan, wh_lot, wh_out

CONFIG = config("S1")


def _received(topic_name: str, *records: BaseModel) -> list[Received]:
    return [Received(topic_name, 0, offset, record) for offset, record in enumerate(records)]


def _tick(ts: datetime) -> Received:
    return Received("clock_ticks", 0, 0, ClockTick(tick_id=f"t-{ts:%Y%m%d%H%M}", ts=ts))


def test_an_id_is_new_once() -> None:
    applied = AppliedCommands()
    assert applied.first_time("rp-S1-1", T0)
    assert not applied.first_time("rp-S1-1", T0)
    assert applied.first_time("rp-S1-2", T0)


def test_ids_are_forgotten_after_the_memory_and_older_commands_are_taken_for_repeats() -> None:
    applied = AppliedCommands()
    assert applied.first_time("old", T0)
    later = T0 + COMMAND_MEMORY + timedelta(minutes=1)
    assert applied.first_time("new", later)
    assert set(applied.ids) == {"new"}  # bounded
    assert not applied.first_time("old", T0)  # forgotten, yet still not applied again


def test_the_memory_survives_a_restart() -> None:
    applied = AppliedCommands()
    applied.first_time("rp-S1-1", T0)
    restored = AppliedCommands.model_validate_json(applied.model_dump_json())
    assert not restored.first_time("rp-S1-1", T0)


def test_a_restock_plan_that_comes_again_is_picked_once() -> None:
    app, plan = ShelfRestockManager(), restock_plan(20)
    lot = wh_lot("B1", 100, date(2025, 1, 30))
    state = PickView(lots={lot_key(lot): lot})
    first = app.apply_events(state, _received("shelf_restock_plan", plan), CONFIG)
    # the same plan again, in a later batch and after the view went through Spark's state store
    state = PickView.model_validate_json(state.model_dump_json())
    again = app.apply_events(state, _received("shelf_restock_plan", plan, plan), CONFIG)
    assert [e.quantity for e in first.records["wh_events"]] == [20]
    assert again.records == {}
    assert state.lots[lot_key(lot)].batch_quantity_warehouse == 80


def test_a_supplier_plan_that_comes_again_after_its_delivery_is_not_ordered_again() -> None:
    app, plan = WarehouseSupplierManager(), supplier_plan(delivery=date(2025, 1, 12))
    view = SupplierView()
    ordered = app.apply_events(view, _received("wh_supplier_plan", plan), CONFIG)
    delivered = app.apply_events(view, [_tick(datetime(2025, 1, 12, 9))], CONFIG)
    view = SupplierView.model_validate_json(view.model_dump_json())  # through Spark's state store
    again = app.apply_events(view, [*_received("wh_supplier_plan", plan), _tick(datetime(2025, 1, 20, 9))], CONFIG)
    assert len(ordered.records["wh_supplier_orders"]) == 1
    assert [e.event_type for e in delivered.records["wh_events"] if isinstance(e, WarehouseEvent)] == ["wh_in"]
    assert again.records == {}
    assert view.orders == {} and view.plans == {}  # a delivered order leaves the view


def test_a_pick_that_comes_again_is_refilled_once() -> None:
    app, move = ShelfRefillBridge(), wh_out("B1", 12, reference="rp-S1-1")
    app.start(CONFIG, Settings(_env_file=None, REFILL_DELAY_MINUTES=30))  # type: ignore[call-arg]
    state = RefillView()
    app.apply_events(state, _received("wh_events", move, move), CONFIG)
    refilled = app.apply_events(state, [*_received("wh_events", move), _tick(T0 + timedelta(hours=1))], CONFIG)
    putbacks = [e for e in refilled.records["shelf_events"] if getattr(e, "event_type", "") == "putback"]
    assert [p.quantity for p in putbacks] == [12]
    assert [p.quantity for p in refilled.records["shelf_restock_plan"]] == [12]
