"""The run's checks as pure functions: digest, conservation ledger, twin-vs-world differences."""

from __future__ import annotations

from datetime import datetime

from smartshelf.invariants import StockLedger, differences, state_digest
from smartshelf.schemas import ShelfState

T = datetime(2025, 1, 1, 9)


def _shelf(shelf_id: str, stock: int) -> ShelfState:
    return ShelfState(shelf_id=shelf_id, current_stock=stock, current_weight=1.0, last_event_type="pickup",
                      last_event_ts=T)


def test_the_digest_depends_on_the_rows_not_on_their_order() -> None:
    rows = [_shelf("S1", 3), _shelf("S2", 5)]
    assert state_digest({"shelf_state": rows}) == state_digest({"shelf_state": rows[::-1]})
    assert state_digest({"shelf_state": rows}) != state_digest({"shelf_state": [_shelf("S1", 3), _shelf("S2", 4)]})
    # the same rows under another table are another state
    assert state_digest({"shelf_state": rows}) != state_digest({"wh_state": rows})


def test_a_ledger_that_balances_has_no_problem() -> None:
    ledger = StockLedger(initial={"S1": 10, "S2": 4}, received={"S1": 6}, on_shelf={"S1": 3, "S2": 1},
                         in_warehouse={"S1": 5}, in_transit={"S1": 2}, in_carts={"S2": 1}, sold={"S1": 4, "S2": 2},
                         removed={"S1": 2})
    assert ledger.problems() == []


def test_a_unit_gone_missing_or_made_up_is_reported_per_item() -> None:
    ledger = StockLedger(initial={"S1": 10, "S2": 4}, on_shelf={"S1": 9, "S2": 4, "S3": 1})
    assert ledger.problems() == ["S1: initial+received 10 != shelf 9", "S3: initial+received 0 != shelf 1"]
    assert StockLedger(initial={"S1": 0}, on_shelf={"S1": -1}, sold={"S1": 1}).problems() == [
        "S1: initial+received 0 != shelf -1 + sold 1"]


def test_differences_name_the_keys_and_count_the_rest() -> None:
    twin = {f"S{i}": i for i in range(10)}
    world = {**twin, "S1": 0, "S2": 0, "S3": 0}
    assert differences("stock", twin, world, limit=2) == [
        "stock S1: twin 1, world 0", "stock S2: twin 2, world 0", "stock: 1 more keys differ"]
    assert differences("stock", twin, dict(twin)) == []
