"""The twin's rules against the world: applied to a day of the world's events, they rebuild exactly the
world's shelf stock and lots. Plus the edge cases the world never produces (shortfalls)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from smartshelf.datagen import generate_store
from smartshelf.rules import (Shortfall, apply_sale, apply_shelf_event, apply_wh_batch_event, apply_wh_event,
                              initial_states, receive_on_shelf, sell_from_lots, shelf_from_profile)
from smartshelf.schemas import ShelfBatchState, ShelfEvent, ShelfProfile, WarehouseEvent
from smartshelf.world import World

START = datetime(2025, 1, 1, 8)


@pytest.fixture(scope="module")
def day() -> tuple:
    store = generate_store(42)
    world = World(store, 42)
    final, events = world.advance(world.initial_state(START), START + timedelta(hours=10))
    return store, final, events


def test_shelf_rules_rebuild_the_worlds_shelf_stock(day: tuple) -> None:
    store, final, events = day
    shelves = {s.shelf_id: s for s in initial_states(store, START)[0]}
    for event in events.shelf_events:
        shelves[event.shelf_id], shortfall = apply_shelf_event(shelves[event.shelf_id], event)
        assert shortfall is None
    assert {k: s.current_stock for k, s in shelves.items()} == final.shelf_stock
    weights = {r.shelf_id: r for r in store.store_inventory}
    for shelf_id, state in shelves.items():  # the scale agrees with the count
        row = weights[shelf_id]
        assert state.current_weight == state.current_stock * row.item_weight


def test_sales_rebuild_the_worlds_lots_fifo(day: tuple) -> None:
    store, final, events = day
    lots: dict[str, list[ShelfBatchState]] = {}
    for lot in initial_states(store, START)[2]:
        lots.setdefault(lot.shelf_id, []).append(lot)
    for sale in events.pos_transactions:
        _, shortfalls = apply_sale(lots, sale)
        assert shortfalls == []
    twin = {(s, lot.batch_code): lot.batch_quantity_store for s, ls in lots.items() for lot in ls
            if lot.batch_quantity_store > 0}
    world = {(s, lot.batch_code): lot.quantity for s, ls in final.shelf_lots.items() for lot in ls}
    assert twin == world
    assert sum(i.quantity for t in events.pos_transactions for i in t.items) == sum(final.sold.values()) > 1000


def _lot(code: str, expiry: date, quantity: int) -> ShelfBatchState:
    return ShelfBatchState(shelf_id="S1", batch_code=code, received_date=date(2024, 12, 1), expiry_date=expiry,
                           batch_quantity_store=quantity, last_update_ts=START)


def test_sale_takes_the_earliest_expiry_first_and_reports_a_shortfall() -> None:
    lots = [_lot("B", date(2025, 1, 9), 5), _lot("A", date(2025, 1, 20), 5), _lot("C", date(2025, 1, 9), 2)]
    changed, shortfall = sell_from_lots(lots, 8, START)
    assert [(lot.batch_code, lot.batch_quantity_store) for lot in changed] == [("B", 0), ("C", 0), ("A", 4)]
    assert shortfall is None
    _, shortfall = sell_from_lots(lots, 13, START)
    assert shortfall == Shortfall("S1", 1)


def test_pickup_beyond_stock_stops_at_zero_and_says_so() -> None:
    state = initial_states(generate_store(1), START)[0][0]
    event = ShelfEvent(event_id="e", event_type="pickup", shelf_id=state.shelf_id,
                       quantity=state.current_stock + 2, weight_change=-1.0, ts=START)
    after, shortfall = apply_shelf_event(state, event)
    assert after.current_stock == 0 and shortfall == Shortfall(state.shelf_id, 2)


def test_warehouse_in_out_and_removal() -> None:
    store = generate_store(1)
    wh = initial_states(store, START)[1][0]
    def move(kind: str, quantity: int) -> WarehouseEvent:
        return WarehouseEvent(event_id=kind, event_type=kind, shelf_id=wh.shelf_id, batch_code="NEW",
                              quantity=quantity, received_date=date(2025, 1, 1), expiry_date=date(2025, 2, 1),
                              ts=START)
    after, _ = apply_wh_event(wh, move("wh_in", 10))
    assert after.wh_current_stock == wh.wh_current_stock + 10
    after, shortfall = apply_wh_event(after, move("wh_out", after.wh_current_stock + 1))
    assert after.wh_current_stock == 0 and shortfall is not None
    lot, _ = apply_wh_batch_event(None, move("wh_in", 10))
    lot, _ = apply_wh_batch_event(lot, move("wh_removal", 4))
    assert lot.batch_quantity_warehouse == 6 and lot.expiry_date == date(2025, 2, 1)


def _restock(shelf_id: str, batch_code: str, quantity: int, expiry: date, minute: int) -> ShelfEvent:
    """A refill reaching the shelf: the staff's putback naming its lot."""
    return ShelfEvent(event_id=f"r{minute}", event_type="putback", shelf_id=shelf_id, batch_code=batch_code,
                      quantity=quantity, weight_change=quantity * 0.5, received_date=date(2025, 1, 1),
                      expiry_date=expiry, ts=START + timedelta(minutes=minute))


def test_a_restock_adds_its_lot_to_the_shelf_and_sales_then_take_the_earliest_expiry() -> None:
    old = ShelfBatchState(shelf_id="S1", batch_code="B1", received_date=date(2024, 12, 1),
                          expiry_date=date(2025, 2, 1), batch_quantity_store=2, last_update_ts=START)
    lots = {"S1": [old]}
    new_lot = receive_on_shelf(lots, _restock("S1", "B2", 5, date(2025, 1, 20), 1))
    assert new_lot.batch_quantity_store == 5 and new_lot.expiry_date == date(2025, 1, 20)
    again = receive_on_shelf(lots, _restock("S1", "B2", 3, date(2025, 1, 20), 2))
    assert again.batch_quantity_store == 8 and again.last_update_ts == START + timedelta(minutes=2)
    assert [lot.batch_code for lot in lots["S1"]] == ["B1", "B2"]
    fresh_shelf = receive_on_shelf(lots, _restock("S9", "B7", 4, date(2025, 3, 1), 3))
    assert lots["S9"] == [fresh_shelf]
    # the restocked lot expires first, so a sale takes it before the older lot
    changed, shortfall = sell_from_lots(lots["S1"], 9, START + timedelta(minutes=5))
    assert shortfall is None
    assert {(lot.batch_code, lot.batch_quantity_store) for lot in changed} == {("B2", 0), ("B1", 1)}


def test_a_profile_makes_an_empty_shelf_weighing_nothing() -> None:
    profile = ShelfProfile(shelf_id="S-NEW", aisle=1, item_category="REFRIGERATED", item_subcategory="Fresh Milk",
                           item_weight=1000, shelf_weight=40_000, maximum_stock=40, item_price=1.2)
    shelf = shelf_from_profile(profile, START)
    assert (shelf.shelf_id, shelf.current_stock, shelf.current_weight, shelf.last_event_type) == (
        "S-NEW", 0, 0, "profile")
