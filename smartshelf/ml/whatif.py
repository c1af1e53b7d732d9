"""What a supplier policy did to the store over a window of simulated time, read from a run's records: the hours
shelves stood empty, the units removed because they expired, the units ordered from the supplier.

Invariants:
- A pure function of the run's records: the same records give the same outcome, so two runs that start from one
  state and differ only in their supplier policy differ in their outcome only by what the policy did.
- A shelf's stock over time is the twin's own (rules.apply_shelf_event replayed from the store's opening state):
  an empty shelf counts from the event that emptied it to the one that refilled it, clipped to the window, day
  and night alike (an empty shelf at closing is still empty at opening).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from smartshelf.rules import Refused, apply_shelf_event, initial_states
from smartshelf.schemas import ShelfEvent, SupplierOrder, WarehouseEvent
from smartshelf.store import StoreData


@dataclass(frozen=True)
class Window:
    """[start, end) of simulated time."""

    start: datetime
    end: datetime

    def __contains__(self, at: datetime) -> bool:
        return self.start <= at < self.end

    def overlap_hours(self, start: datetime, end: datetime) -> float:
        seconds = (min(end, self.end) - max(start, self.start)).total_seconds()
        return max(seconds, 0.0) / 3600


@dataclass(frozen=True)
class PolicyOutcome:
    stockout_hours: float  # shelf-hours at zero stock
    shelves_emptied: int  # shelves that stood empty at some time in the window
    units_expired: int  # removed from shelves (staff pickups of expired lots) and from the warehouse
    units_ordered: int
    orders: int


def stockout_hours(store: StoreData, opened: datetime, events: Iterable[ShelfEvent], window: Window
                   ) -> dict[str, float]:
    """Per shelf that stood empty in the window, its hours at zero stock there; `events` are all the run's shelf
    events from `opened` on (the stock is replayed from the opening state)."""
    states = {state.shelf_id: state for state in initial_states(store, opened).shelves}
    empty_since = {shelf_id: opened for shelf_id, state in states.items() if state.current_stock == 0}
    hours: dict[str, float] = {}
    for event in sorted((e for e in events if e.shelf_id in states and e.ts < window.end), key=lambda e: e.ts):
        after, problem = apply_shelf_event(states[event.shelf_id], event)
        if isinstance(problem, Refused):
            continue
        states[event.shelf_id] = after
        if after.current_stock == 0:
            empty_since.setdefault(event.shelf_id, event.ts)
        elif (since := empty_since.pop(event.shelf_id, None)) is not None:
            _add(hours, event.shelf_id, window.overlap_hours(since, event.ts))
    for shelf_id, since in empty_since.items():
        _add(hours, shelf_id, window.overlap_hours(since, window.end))
    return hours


def _add(hours: dict[str, float], shelf_id: str, more: float) -> None:
    if more > 0:
        hours[shelf_id] = hours.get(shelf_id, 0.0) + more


def outcome(store: StoreData, opened: datetime, shelf_events: Iterable[ShelfEvent],
            wh_events: Iterable[WarehouseEvent], orders: Iterable[SupplierOrder], window: Window) -> PolicyOutcome:
    shelf_events = list(shelf_events)
    empty = stockout_hours(store, opened, shelf_events, window)
    expired = sum(e.quantity for e in shelf_events if e.by_staff and e.event_type == "pickup" and e.ts in window)
    expired += sum(e.quantity for e in wh_events if e.event_type == "wh_removal" and e.ts in window)
    placed = [order for order in orders if order.ordered_ts in window]
    return PolicyOutcome(stockout_hours=round(sum(empty.values()), 2), shelves_emptied=len(empty),
                         units_expired=expired, units_ordered=sum(o.quantity for o in placed), orders=len(placed))
