"""What the loop tells the world: staff carrying lots to and off shelves (World.receive, applied by advance at
their time, or at once when that has passed) and the day's near-expiry discounts charged at the till."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest

from smartshelf.loop import staff_move
from smartshelf.schemas import DailyDiscount, ShelfEvent
from smartshelf.store import BatchRow, DiscountRow, StoreData, StoreInventoryRow, check_consistency
from smartshelf.world import Lot, World, WorldConfig, WorldState, discount_key

SEED = 7
NIGHT = datetime(2025, 1, 10)  # the store opens at 8: no customer before then
DAWN = datetime(2025, 1, 10, 6)
RECEIVED = date(2025, 1, 5)


# --- helpers ----------------------------------------------------------------------------------
def shelf(shelf_id: str, stock: int, *, visibility: float = 0.3, price: float = 2.0) -> StoreInventoryRow:
    return StoreInventoryRow(
        shelf_id=shelf_id, aisle=1, item_weight=500, shelf_weight=500_000, item_category="REFRIGERATED",
        item_subcategory="Fresh Milk", item_visibility=visibility, maximum_stock=1000, current_stock=stock,
        item_price=price,
    )


def batch(shelf_id: str, code: str, quantity: int, expiry: date) -> BatchRow:
    return BatchRow(
        shelf_id=shelf_id, batch_code=code, item_category="REFRIGERATED", item_subcategory="Fresh Milk",
        standard_batch_size=max(quantity, 1), received_date=RECEIVED, expiry_date=expiry,
        batch_quantity_total=quantity, batch_quantity_store=quantity, batch_quantity_warehouse=0,
        location="in-store",
    )


def tiny_store(shelves: list[StoreInventoryRow], lots: list[BatchRow],
               discounts: list[DiscountRow] | None = None) -> StoreData:
    store = StoreData(store_inventory=shelves, store_batches=lots, discounts=discounts or [])
    assert check_consistency(store) == []
    return store


def two_shelves() -> tuple[World, WorldState]:
    """A: 10 items in lot A1 (expiring 20 Jan); B: empty. At midnight."""
    store = tiny_store([shelf("A", 10), shelf("B", 0)], [batch("A", "A1", 10, date(2025, 1, 20))])
    world = World(store, SEED)
    return world, world.initial_state(NIGHT)


def move(kind: str, shelf_id: str, code: str, quantity: int, ts: datetime, *,
         expiry: date = date(2025, 1, 25)) -> list[ShelfEvent]:
    """A staff move as the loop publishes it: the move and the scale's reading."""
    return staff_move(kind, f"x-{kind}-{shelf_id}-{code}-{ts:%H%M%S}", shelf_id, code,  # type: ignore[arg-type]
                      quantity, RECEIVED, expiry, 0.5, ts)


def customer_move(kind: str, shelf_id: str, ts: datetime) -> list[ShelfEvent]:
    common = {"shelf_id": shelf_id, "quantity": 1, "weight_change": -500, "customer_id": "C1", "ts": ts}
    return [ShelfEvent(event_id=f"c-{kind}-m", event_type=kind, **common),  # type: ignore[arg-type]
            ShelfEvent(event_id=f"c-{kind}-w", event_type="weight_change", **common)]  # type: ignore[arg-type]


def told(state: WorldState, *moves: list[ShelfEvent]) -> WorldState:
    return World.receive(state, [event for pair in moves for event in pair], [], {})


def near_expiry(shelf_id: str, day: date, discount: float) -> DailyDiscount:
    return DailyDiscount(shelf_id=shelf_id, discount_date=day, discount=discount, reason="near_expiry")


def lots_of(state: WorldState, shelf_id: str) -> list[tuple[str, int]]:
    return [(lot.batch_code, lot.quantity) for lot in state.shelf_lots[shelf_id]]


# --- receive ----------------------------------------------------------------------------------
def test_receive_keeps_only_staff_pickups_and_putbacks() -> None:
    _, state = two_shelves()
    putback, pickup = move("putback", "B", "N", 5, DAWN), move("pickup", "A", "A1", 2, DAWN)
    state = told(state, putback, pickup, customer_move("pickup", "A", DAWN), customer_move("putback", "A", DAWN))
    assert state.staff_moves == [putback[0], pickup[0]]
    assert [m.event_type for m in state.staff_moves] == ["putback", "pickup"]


def test_receive_adds_to_the_moves_still_pending() -> None:
    _, state = two_shelves()
    first, second = move("putback", "B", "N", 5, DAWN), move("putback", "B", "M", 3, DAWN)
    state = told(told(state, first), second)
    assert state.staff_moves == [first[0], second[0]]


def test_receive_merges_the_days_discounts_and_the_offsets() -> None:
    _, state = two_shelves()
    day, next_day = date(2025, 1, 10), date(2025, 1, 11)
    state = World.receive(state, [], [near_expiry("A", day, 0.1), near_expiry("B", day, 0.2)],
                          {"daily_discounts:0": 2, "shelf_events:0": 5})
    state = World.receive(state, [], [near_expiry("A", day, 0.3), near_expiry("A", next_day, 0.4)],
                          {"daily_discounts:0": 4, "shelf_events:1": 1})
    assert state.daily_discounts == {"A|2025-01-10": 0.3, "B|2025-01-10": 0.2, "A|2025-01-11": 0.4}
    assert discount_key("A", next_day) == "A|2025-01-11"
    assert state.feedback_offsets == {"daily_discounts:0": 4, "shelf_events:0": 5, "shelf_events:1": 1}


def test_receive_leaves_its_input_state_alone() -> None:
    _, state = two_shelves()
    before = state.model_dump_json()
    World.receive(state, move("putback", "B", "N", 5, DAWN),
                  [near_expiry("A", DAWN.date(), 0.1)],
                  {"shelf_events:0": 2})
    assert state.model_dump_json() == before


def test_world_state_with_feedback_round_trips_through_json() -> None:
    _, state = two_shelves()
    state = World.receive(state, move("putback", "B", "N", 5, DAWN),
                          [near_expiry("A", DAWN.date(), 0.1)],
                          {"shelf_events:0": 2})
    assert WorldState.model_validate_json(state.model_dump_json()) == state


# --- staff moves in advance -------------------------------------------------------------------
def test_a_staff_putback_adds_stock_and_a_new_lot_with_its_dates() -> None:
    world, state = two_shelves()
    state, events = world.advance(told(state, move("putback", "B", "N", 24, datetime(2025, 1, 10, 3))), DAWN)
    assert state.shelf_stock == {"A": 10, "B": 24}
    assert state.shelf_lots["B"] == [Lot(batch_code="N", received_date=RECEIVED, expiry_date=date(2025, 1, 25),
                                         quantity=24)]
    assert state.staff_moves == [] and len(events) == 0  # the world emits no event for it: the loop did


def test_a_putback_of_a_lot_on_the_shelf_adds_to_that_lot() -> None:
    world, state = two_shelves()
    state, _ = world.advance(told(state, move("putback", "A", "A1", 6, datetime(2025, 1, 10, 3),
                                              expiry=date(2025, 1, 20))), DAWN)
    assert state.shelf_stock["A"] == 16 and lots_of(state, "A") == [("A1", 16)]


def test_putbacks_keep_the_lots_in_fifo_order() -> None:
    world, state = two_shelves()
    at = datetime(2025, 1, 10, 3)
    state = told(state, move("putback", "A", "A9", 1, at, expiry=date(2025, 1, 25)),
                 move("putback", "A", "A0", 2, at, expiry=date(2025, 1, 15)),
                 move("putback", "A", "A2", 3, at + timedelta(minutes=1), expiry=date(2025, 1, 20)))
    state, _ = world.advance(state, DAWN)
    assert lots_of(state, "A") == [("A0", 2), ("A1", 10), ("A2", 3), ("A9", 1)]
    assert state.shelf_stock["A"] == 16


def test_a_staff_removal_takes_items_off_that_lot_only() -> None:
    world, state = two_shelves()
    state, _ = world.advance(told(state, move("putback", "A", "A2", 5, datetime(2025, 1, 10, 1))), DAWN)
    state, _ = world.advance(told(state, move("pickup", "A", "A1", 4, datetime(2025, 1, 10, 6, 30))),
                             datetime(2025, 1, 10, 7))
    assert state.shelf_stock["A"] == 11 and lots_of(state, "A") == [("A1", 6), ("A2", 5)]


def test_a_removal_of_a_whole_lot_drops_it_from_the_shelf() -> None:
    world, state = two_shelves()
    state, _ = world.advance(told(state, move("pickup", "A", "A1", 10, datetime(2025, 1, 10, 3))), DAWN)
    assert state.shelf_stock["A"] == 0 and state.shelf_lots["A"] == []


def test_a_removal_never_takes_more_than_the_lot_holds() -> None:
    world, state = two_shelves()
    state, _ = world.advance(told(state, move("putback", "A", "A2", 5, datetime(2025, 1, 10, 1)),
                                  move("pickup", "A", "A1", 50, datetime(2025, 1, 10, 3))), DAWN)
    assert state.shelf_stock["A"] == 5 and lots_of(state, "A") == [("A2", 5)]


def test_a_removal_never_takes_the_stock_below_zero() -> None:
    world, state = two_shelves()
    state = state.model_copy(update={"shelf_stock": {"A": 3, "B": 0}})  # 7 of A1's items are in carts
    state, _ = world.advance(told(state, move("pickup", "A", "A1", 10, datetime(2025, 1, 10, 3))), DAWN)
    assert state.shelf_stock["A"] == 0 and lots_of(state, "A") == [("A1", 7)]


def test_a_removal_of_a_lot_not_on_the_shelf_changes_nothing() -> None:
    world, state = two_shelves()
    state, _ = world.advance(told(state, move("pickup", "A", "ZZ", 4, datetime(2025, 1, 10, 3))), DAWN)
    assert state.shelf_stock["A"] == 10 and lots_of(state, "A") == [("A1", 10)] and state.staff_moves == []


def test_moves_whose_time_has_passed_happen_at_once() -> None:
    world, state = two_shelves()
    state, _ = world.advance(state, DAWN)
    state = told(state, move("putback", "B", "N", 8, datetime(2025, 1, 10, 2)),
                 move("pickup", "A", "A1", 4, datetime(2025, 1, 10, 5)))
    state, _ = world.advance(state, DAWN)  # not even a second later
    assert state.shelf_stock == {"A": 6, "B": 8} and state.staff_moves == []
    assert lots_of(state, "A") == [("A1", 6)] and lots_of(state, "B") == [("N", 8)]


def test_moves_in_the_future_wait_in_the_state() -> None:
    world, state = two_shelves()
    later = move("putback", "B", "N", 8, datetime(2025, 1, 10, 6, 0, 1))
    state, _ = world.advance(told(state, later), DAWN)
    assert state.staff_moves == [later[0]] and state.shelf_stock["B"] == 0 and state.shelf_lots["B"] == []
    state, _ = world.advance(state, datetime(2025, 1, 10, 6, 0, 1))
    assert state.staff_moves == [] and state.shelf_stock["B"] == 8


def test_advance_with_staff_moves_leaves_its_input_state_alone() -> None:
    world, state = two_shelves()
    state = told(state, move("putback", "A", "A1", 5, datetime(2025, 1, 10, 3)),
                 move("pickup", "A", "A1", 2, datetime(2025, 1, 10, 4)),
                 move("putback", "B", "N", 5, datetime(2025, 1, 10, 9)))
    before = state.model_dump_json()
    world.advance(state, datetime(2025, 1, 10, 5))
    assert state.model_dump_json() == before


@pytest.fixture(scope="module")
def refilled_day() -> tuple[World, WorldState]:
    """Shelf E, the only visible one, is empty until staff bring 300 items at noon."""
    store = tiny_store([shelf("A", 500, visibility=0.0), shelf("E", 0, visibility=1.0)],
                       [batch("A", "A1", 500, date(2025, 2, 1))])
    world = World(store, SEED, WorldConfig(customers_per_day=300, mean_actions=2))
    return world, told(world.initial_state(NIGHT), move("putback", "E", "E1", 300, datetime(2025, 1, 10, 12)))


def test_customers_find_a_refill_from_its_time_on(refilled_day: tuple[World, WorldState]) -> None:
    world, state = refilled_day
    final, events = world.advance(state, NIGHT + timedelta(days=1))
    picks = [e for e in events.shelf_events if e.shelf_id == "E" and e.event_type == "pickup"]
    assert picks and min(e.ts for e in picks) > datetime(2025, 1, 10, 12)
    assert final.empty_shelf_misses > 0  # the morning's customers found it empty
    assert final.shelf_stock["E"] + final.sold.get("E", 0) == 300


def test_staff_moves_do_not_depend_on_how_ticks_cut_time(refilled_day: tuple[World, WorldState]) -> None:
    world, state = refilled_day
    whole, whole_events = world.advance(state, NIGHT + timedelta(days=1))
    stepped, stepped_events = state, []
    for hour in range(1, 25):
        stepped, events = world.advance(stepped, NIGHT + timedelta(hours=hour))
        stepped_events.extend(events.shelf_events)
    assert stepped_events == whole_events.shelf_events
    assert stepped.shelf_stock == whole.shelf_stock and stepped.shelf_lots == whole.shelf_lots


# --- the day's discounts at the till ----------------------------------------------------------
def discounted_store() -> StoreData:
    shelves = [shelf(s, 900, price=p) for s, p in (("A", 1.0), ("B", 3.0), ("C", 2.5), ("D", 4.0))]
    lots = [batch(s.shelf_id, f"{s.shelf_id}1", 900, date(2025, 3, 1)) for s in shelves]
    promotions = [DiscountRow(shelf_id="A", discount=0.25, start_date=date(2025, 1, 1), end_date=date(2025, 1, 31)),
                  DiscountRow(shelf_id="D", discount=0.2, start_date=date(2025, 1, 10), end_date=date(2025, 1, 10))]
    return tiny_store(shelves, lots, promotions)


DAY1, DAY2 = date(2025, 1, 10), date(2025, 1, 11)
DAILY = [near_expiry("A", DAY1, 0.1), near_expiry("B", DAY1, 0.4), near_expiry("C", DAY2, 0.3),
         near_expiry("D", DAY1, 0.5)]


def test_the_tills_discount_is_the_days_discount_on_that_date_only() -> None:
    world = World(discounted_store(), SEED)
    state = World.receive(world.initial_state(NIGHT), [], DAILY, {})
    assert world.discount(state, "B", DAY1) == 0.4
    assert world.discount(state, "B", DAY2) == 0.0
    assert world.discount(state, "C", DAY1) == 0.0
    assert world.discount(state, "C", DAY2) == 0.3
    assert world.discount(world.initial_state(NIGHT), "B", DAY1) == 0.0  # a state not told of it


def test_the_tills_discount_is_the_larger_of_promotion_and_days_discount() -> None:
    world = World(discounted_store(), SEED)
    state = World.receive(world.initial_state(NIGHT), [], DAILY, {})
    assert world.discount(state, "A", DAY1) == 0.25  # the promotion beats 0.1
    assert world.discount(state, "A", DAY2) == 0.25
    assert world.discount(state, "D", DAY1) == 0.5  # the day's discount beats the promotion's 0.2
    assert world.discount(state, "D", DAY2) == 0.0


def test_checkout_charges_the_days_discount_on_that_date_only() -> None:
    world = World(discounted_store(), SEED, WorldConfig(customers_per_day=200, mean_actions=3, putback_probability=0))
    state = World.receive(world.initial_state(NIGHT), [], DAILY, {})
    _, events = world.advance(state, NIGHT + timedelta(days=2))
    charged: dict[tuple[date, str], set[float]] = {}
    for tx in events.pos_transactions:
        for item in tx.items:
            charged.setdefault((tx.ts.date(), item.shelf_id), set()).add(item.discount)
            assert item.line_total == round(item.quantity * item.unit_price * (1 - item.discount), 2)
    assert charged == {(DAY1, "A"): {0.25}, (DAY2, "A"): {0.25}, (DAY1, "B"): {0.4}, (DAY2, "B"): {0.0},
                       (DAY1, "C"): {0.0}, (DAY2, "C"): {0.3}, (DAY1, "D"): {0.5}, (DAY2, "D"): {0.0}}
