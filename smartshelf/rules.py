"""The twin's state transitions: pure functions from (state, event) to the next state.

The Spark state apps (shelf-aggregator, batch-state-updater, wh-aggregator, wh-batch-state-updater) are thin
shells over these; `smartshelf check` compares what they build with the world (smartshelf.world), so the
rules here must say exactly what the store does: lots leave earliest expiry first (ties by batch code), and
stock never goes below zero without the anomaly being reported. No state goes past its schema's bounds: an event
that would take it there is refused (`Refused`), so every state can be stored and read back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from smartshelf.registry import topic
from smartshelf.schemas import (MAX_QUANTITY, MAX_WEIGHT, PosTransaction, ShelfBatchState, ShelfEvent, ShelfProfile,
                                ShelfState, WarehouseBatchState, WarehouseEvent, WarehouseState)
from smartshelf.store import StoreData


@dataclass(frozen=True)
class Shortfall:
    """An event asked for more than the state holds: the state stops at zero, the rest is reported."""

    key: str
    missing: int


@dataclass(frozen=True)
class Refused:
    """An event the state cannot take: it would carry a count or weight past its schema's bound. The state stays
    as it was; the reason goes to dead_letters."""

    reason: str


def _over_maximum(what: str, key: str, after: int) -> Refused | None:
    if after <= MAX_QUANTITY:
        return None
    return Refused(f"{what} would take {key} to {after} items, over the maximum of {MAX_QUANTITY}")


class InitialStates(NamedTuple):
    shelves: list[ShelfState]
    warehouse: list[WarehouseState]
    shelf_lots: list[ShelfBatchState]
    wh_lots: list[WarehouseBatchState]


def initial_states(store: StoreData, at: datetime) -> InitialStates:
    """The twin's state as the store opens: what the reference data says is on shelves and in the warehouse."""
    store_id = store.store_id
    shelves = [ShelfState(store_id=store_id, shelf_id=r.shelf_id, current_stock=r.current_stock,
                          current_weight=r.current_stock * r.item_weight,
                          last_event_type="initial", last_event_ts=at) for r in store.store_inventory]
    warehouse = [WarehouseState(store_id=store_id, shelf_id=r.shelf_id, wh_current_stock=r.current_stock,
                                last_event_type="initial", last_event_ts=at) for r in store.warehouse_inventory]
    shelf_lots = [ShelfBatchState(store_id=store_id, shelf_id=b.shelf_id, batch_code=b.batch_code,
                                  received_date=b.received_date, expiry_date=b.expiry_date,
                                  batch_quantity_store=b.batch_quantity_store, last_update_ts=at)
                  for b in store.store_batches if b.batch_quantity_store > 0]
    wh_lots = [WarehouseBatchState(store_id=store_id, shelf_id=b.shelf_id, batch_code=b.batch_code,
                                   received_date=b.received_date, expiry_date=b.expiry_date,
                                   batch_quantity_warehouse=b.batch_quantity_warehouse, last_update_ts=at)
               for b in store.warehouse_batches if b.batch_quantity_warehouse > 0]
    return InitialStates(shelves, warehouse, shelf_lots, wh_lots)


def apply_shelf_event(state: ShelfState, event: ShelfEvent) -> tuple[ShelfState, Shortfall | Refused | None]:
    """pickup/putback move the count; weight_change is the scale's reading and moves the weight."""
    stock, weight, shortfall = state.current_stock, state.current_weight, None
    if event.event_type == "pickup":
        if event.quantity > stock:
            shortfall = Shortfall(event.shelf_id, event.quantity - stock)
        stock = max(stock - event.quantity, 0)
    elif event.event_type == "putback":
        stock += event.quantity
        if refused := _over_maximum(f"putback of {event.quantity}", f"shelf {event.shelf_id}", stock):
            return state, refused
    else:
        weight = round(weight + event.weight_change, 3)
        if abs(weight) > MAX_WEIGHT:
            return state, Refused(f"weight_change of {event.weight_change} would take shelf {event.shelf_id}'s "
                                  f"weight to {weight}, beyond ±{MAX_WEIGHT}")
    return state.model_copy(update={"current_stock": stock, "current_weight": weight,
                                    "last_event_type": event.event_type, "last_event_ts": event.ts}), shortfall


def fifo_order(lots: Sequence[ShelfBatchState]) -> list[ShelfBatchState]:
    return sorted(lots, key=lambda lot: (lot.expiry_date, lot.batch_code))


def sell_from_lots(lots: Sequence[ShelfBatchState], quantity: int, ts: datetime
                   ) -> tuple[list[ShelfBatchState], Shortfall | None]:
    """A shelf's lots after `quantity` items are sold: earliest expiry first. Returns only the lots changed.

    Without a shortfall, the lots' quantities after a set of sales do not depend on the order of the sales, but
    which lot each sale took, and so the lots' times, do: the twin takes sales in the world's order (one
    partition).
    """
    changed, left = [], quantity
    for lot in fifo_order(lots):
        if left == 0:
            break
        taken = min(lot.batch_quantity_store, left)
        if taken:
            # the latest sale's time, whatever order sales from different partitions arrive in
            changed.append(lot.model_copy(update={"batch_quantity_store": lot.batch_quantity_store - taken,
                                                  "last_update_ts": max(lot.last_update_ts, ts)}))
            left -= taken
    shortfall = Shortfall(lots[0].shelf_id if lots else "?", left) if left else None
    return changed, shortfall


def apply_sale(lots_by_shelf: dict[str, list[ShelfBatchState]], sale: PosTransaction
               ) -> tuple[list[ShelfBatchState], list[Shortfall]]:
    """Every line of a transaction taken from its shelf's lots; `lots_by_shelf` is updated in place."""
    changed_all, shortfalls = [], []
    for item in sale.items:
        lots = lots_by_shelf.get(item.shelf_id, [])
        changed, shortfall = sell_from_lots(lots, item.quantity, sale.ts)
        if shortfall is not None:
            shortfalls.append(Shortfall(item.shelf_id, shortfall.missing))
        by_code = {lot.batch_code: lot for lot in changed}
        lots_by_shelf[item.shelf_id] = [by_code.get(lot.batch_code, lot) for lot in lots]
        changed_all.extend(changed)
    return changed_all, shortfalls


def apply_wh_event(state: WarehouseState, event: WarehouseEvent) -> tuple[WarehouseState, Shortfall | Refused | None]:
    """wh_in adds (a supplier delivery); wh_out (to a shelf) and wh_removal (expired) take away."""
    stock, shortfall = state.wh_current_stock, None
    if event.event_type == "wh_in":
        stock += event.quantity
        if refused := _over_maximum(f"wh_in of {event.quantity}", f"the warehouse of {event.shelf_id}", stock):
            return state, refused
    else:
        if event.quantity > stock:
            shortfall = Shortfall(event.shelf_id, event.quantity - stock)
        stock = max(stock - event.quantity, 0)
    return state.model_copy(update={"wh_current_stock": stock, "last_event_type": event.event_type,
                                    "last_event_ts": event.ts}), shortfall


def apply_wh_batch_event(lot: WarehouseBatchState | None, event: WarehouseEvent
                         ) -> tuple[WarehouseBatchState, Shortfall | Refused | None]:
    """The lot a warehouse event names: created by wh_in, reduced by wh_out and wh_removal."""
    if lot is None:
        lot = WarehouseBatchState(store_id=event.store_id, shelf_id=event.shelf_id, batch_code=event.batch_code,
                                  received_date=event.received_date, expiry_date=event.expiry_date,
                                  batch_quantity_warehouse=0, last_update_ts=event.ts)
    quantity, shortfall = lot.batch_quantity_warehouse, None
    if event.event_type == "wh_in":
        quantity += event.quantity
        if refused := _over_maximum(f"wh_in of {event.quantity}", f"lot {event.shelf_id}|{event.batch_code}",
                                    quantity):
            return lot, refused
    else:
        if event.quantity > quantity:
            shortfall = Shortfall(topic("wh_batch_state").key_of(event), event.quantity - quantity)
        quantity = max(quantity - event.quantity, 0)
    return lot.model_copy(update={"batch_quantity_warehouse": quantity, "last_update_ts": event.ts}), shortfall


def receive_on_shelf(lots_by_shelf: dict[str, list[ShelfBatchState]], refill: ShelfEvent
                     ) -> ShelfBatchState | Refused:
    """A refill (a staff putback naming its lot) adds the lot's items to the shelf's lots when they reach the
    shelf: the shelf's lots count what is on the shelf and in customers' carts (paid at the exit), as the
    world's do, and a sale never takes a lot still on its way. `lots_by_shelf` is updated in place; returns
    the lot after the refill, or why it was refused (the lots unchanged)."""
    # ingress (smartshelf.ingress.broken_rule) rejects a staff move that does not name its lot and dates
    assert refill.by_staff and refill.event_type == "putback" and refill.batch_code is not None
    assert refill.received_date is not None and refill.expiry_date is not None
    lots = lots_by_shelf.get(refill.shelf_id, [])
    current = next((lot for lot in lots if lot.batch_code == refill.batch_code), None)
    held = 0 if current is None else current.batch_quantity_store
    if refused := _over_maximum(f"refill of {refill.quantity}", f"lot {refill.shelf_id}|{refill.batch_code}",
                                held + refill.quantity):
        return refused
    if current is None:
        after = ShelfBatchState(store_id=refill.store_id, shelf_id=refill.shelf_id, batch_code=refill.batch_code,
                                received_date=refill.received_date, expiry_date=refill.expiry_date,
                                batch_quantity_store=refill.quantity, last_update_ts=refill.ts)
        lots_by_shelf.setdefault(refill.shelf_id, []).append(after)
    else:
        after = current.model_copy(update={"batch_quantity_store": current.batch_quantity_store + refill.quantity,
                                           "last_update_ts": max(current.last_update_ts, refill.ts)})
        lots[lots.index(current)] = after
    return after


def remove_from_shelf_lot(lots_by_shelf: dict[str, list[ShelfBatchState]], removal: ShelfEvent
                          ) -> tuple[ShelfBatchState | None, Shortfall | None]:
    """Staff take a lot's items off the shelf (a staff pickup naming the lot: expired). `lots_by_shelf` is updated
    in place; returns the lot after it (None if the shelf holds no such lot) and any shortfall."""
    # ingress (smartshelf.ingress.broken_rule) rejects a staff move that does not name its lot
    assert removal.by_staff and removal.event_type == "pickup" and removal.batch_code is not None
    lots = lots_by_shelf.get(removal.shelf_id, [])
    current = next((lot for lot in lots if lot.batch_code == removal.batch_code), None)
    if current is None:
        return None, Shortfall(topic("shelf_batch_state").key_of(removal), removal.quantity)
    taken = min(current.batch_quantity_store, removal.quantity)
    after = current.model_copy(update={"batch_quantity_store": current.batch_quantity_store - taken,
                                       "last_update_ts": max(current.last_update_ts, removal.ts)})
    lots[lots.index(current)] = after
    shortfall = Shortfall(topic("shelf_batch_state").key_of(after), removal.quantity - taken) \
        if taken < removal.quantity else None
    return after, shortfall


def shelf_from_profile(profile: ShelfProfile, at: datetime) -> ShelfState:
    """A shelf the twin learns of from its profile (a new shelf in config.shelf_profiles): empty."""
    return ShelfState(store_id=profile.store_id, shelf_id=profile.shelf_id, current_stock=0, current_weight=0,
                      last_event_type="profile", last_event_ts=at)
