"""A supplier policy's outcome over a window (smartshelf.ml.whatif), pure: empty-shelf hours replayed from the
opening stock and clipped to the window, expired units from removals on shelves and in the warehouse, orders
placed in the window; and the what-if snapshot's settings come back as they were saved."""

from __future__ import annotations

import json

from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from smartshelf.errors import SmartShelfError
from smartshelf.ml.whatif import Window, outcome, stockout_hours
from smartshelf.runtime.whatif import SETTINGS_FILE, snapshot_settings
from smartshelf.schemas import SupplierOrder, WarehouseEvent
from smartshelf.settings import Settings
from smartshelf.store import StoreData
from tests.unit.test_ml import shelf_row
from tests.unit.test_risk import move

OPENED = datetime(2025, 1, 6)
WINDOW = Window(datetime(2025, 1, 7), datetime(2025, 1, 8))


@pytest.fixture
def store() -> StoreData:
    """A holds 5 of 10, B 8 of 10, C nothing from the start."""
    return StoreData(store_inventory=[shelf_row("A", "BEVERAGES", 10, 5), shelf_row("B", "BEVERAGES", 10, 8),
                                      shelf_row("C", "BEVERAGES", 10, 0)])


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return OPENED + timedelta(days=day, hours=hour, minutes=minute)


def test_empty_hours_run_from_the_emptying_to_the_refill_clipped_to_the_window(store: StoreData) -> None:
    events = [move("A", "pickup", 5, at(0, 20)),  # A empty from the day before the window ...
              move("A", "putback", 10, at(1, 3), staff=True),  # ... to 03:00 in it: 3 h
              move("B", "pickup", 8, at(1, 10)),  # B empty from 10:00 ...
              move("B", "putback", 4, at(1, 12, 30), staff=True),  # ... to 12:30: 2.5 h
              move("B", "pickup", 4, at(1, 22))]  # and from 22:00 to the window's end: 2 h
    hours = stockout_hours(store, OPENED, events, WINDOW)
    assert hours == {"A": 3.0, "B": 4.5, "C": 24.0}  # C was never refilled


def test_events_after_the_window_and_refused_ones_change_nothing(store: StoreData) -> None:
    inside = [move("B", "pickup", 8, at(1, 10))]
    later = [move("B", "putback", 8, at(1, 23), staff=True), move("B", "putback", 8, at(2, 1), staff=True)]
    big = 600_000
    refused_in_between = [move("C", "putback", big, at(1, 5), staff=True),
                          move("C", "putback", big, at(1, 6), staff=True),  # past MAX_QUANTITY: refused
                          move("C", "pickup", big, at(1, 7))]  # so this one empties C again
    assert stockout_hours(store, OPENED, inside + later[1:], WINDOW) == {"B": 14.0, "C": 24.0}
    assert stockout_hours(store, OPENED, inside + later[:1] + refused_in_between, WINDOW) == {"B": 13.0, "C": 22.0}


def test_outcome_counts_expired_removals_and_orders_placed_in_the_window(store: StoreData) -> None:
    def wh(kind: str, quantity: int, ts: datetime) -> WarehouseEvent:
        return WarehouseEvent(event_id=f"{kind}-{ts:%d%H}", event_type=kind, shelf_id="A",  # type: ignore[arg-type]
                              batch_code="L1", quantity=quantity, received_date=date(2025, 1, 1),
                              expiry_date=date(2025, 1, 7), ts=ts)

    def order(n: int, quantity: int, ts: datetime) -> SupplierOrder:
        return SupplierOrder(order_id=f"o{n}", plan_id=f"p{n}", shelf_id="A", batches=1, quantity=quantity,
                             ordered_ts=ts, expected_delivery_ts=ts + timedelta(days=2), status="open")

    shelf_events = [move("A", "pickup", 2, at(1, 7), staff=True),  # a removal of an expired lot
                    move("A", "pickup", 1, at(1, 9)),  # a customer's: not a removal
                    move("A", "pickup", 1, at(0, 7), staff=True)]  # before the window
    wh_events = [wh("wh_removal", 6, at(1, 7)), wh("wh_out", 5, at(1, 8)), wh("wh_removal", 9, at(2, 7))]
    orders = [order(1, 24, at(0, 23)), order(2, 12, at(1, 6)), order(3, 36, at(1, 18))]
    result = outcome(store, OPENED, shelf_events, wh_events, orders, WINDOW)
    assert (result.units_expired, result.units_ordered, result.orders) == (8, 48, 2)
    assert result.shelves_emptied == 1 and result.stockout_hours == 24.0  # C only: A kept 2 of its 5


def test_snapshot_settings_come_back_as_saved(tmp_path: Path) -> None:
    saved = Settings().model_copy(update={"run_dir": tmp_path / "run", "kafka_port": 23456, "sim_days": 21,
                                          "supplier_policy": "ml"})
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(saved.as_env()))
    back = snapshot_settings(tmp_path)
    assert (back.run_dir, back.kafka_port, back.sim_days, back.supplier_policy) == (
        tmp_path / "run", 23456, 21, "ml")
    with pytest.raises(SmartShelfError, match="not a what-if snapshot"):
        snapshot_settings(tmp_path / "elsewhere")
