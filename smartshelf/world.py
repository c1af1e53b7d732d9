"""The physical store — the *world* the sensors observe. Pure and deterministic.

Customers arrive (foot traffic), pick items from shelves and sometimes put them back (shelf events: each
move is a pickup/putback, followed by the weight_change the shelf's scale reads), and pay at the till for
what they still hold when they leave (POS transaction at the day's prices and discounts). The twin (the
Spark apps) knows the store only through these events; `smartshelf check` compares the two.

Scenarios (SIM_SCENARIOS, `parse_scenarios`) inject happenings at a simulated time: a *rush* (RUSH_CUSTOMERS
ordinary customers entering within RUSH_MINUTES) or a *theft* (a thief takes THEFT_UNITS from the most-stocked
shelf and leaves without paying: the units go to `WorldState.unpaid`, so shelf + carts + sold + unpaid is still
the opening stock plus what staff moved). Their customers come out of the same arrivals as everyone else's;
without scenarios the world's events are exactly those of a world that knows none.

Determinism: every random draw comes from a generator seeded by (seed, what is drawn, whose): arrivals per
(day, hour), a rush's entries per its time, a customer's visit per customer, each action per (customer, action
number); a thief draws nothing (the most-stocked shelf as they enter, ties by shelf_id). The events do not
depend on how the clock's ticks cut time: `advance(state, t)` produces the events in (state.clock, t], and
any sequence of ticks reaching t gives the same events in the same order.
"""

from __future__ import annotations

import zlib
from bisect import bisect_right
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from itertools import accumulate
from typing import Literal, cast, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from smartshelf.ingress import broken_rule
from smartshelf.schemas import DailyDiscount, FootTrafficEvent, PosItem, PosTransaction, ShelfEvent
from smartshelf.store import StoreData

ScenarioKind = Literal["rush", "theft"]
SCENARIO_KINDS: tuple[ScenarioKind, ...] = get_args(ScenarioKind)
# a bare kind (`smartshelf sim --scenario rush`) happens at this hour of the day it is given
SCENARIO_HOURS: dict[ScenarioKind, int] = {"rush": 11, "theft": 15}
RUSH_CUSTOMERS = 150
RUSH_MINUTES = 10
THEFT_UNITS = 12
THEFT_PICKUP_UNITS = 3  # at most per pickup, one pickup a minute
THEFT_MINUTES = 5  # from entering to leaving
THEFT_PICKUPS = -(-THEFT_UNITS // THEFT_PICKUP_UNITS)
assert THEFT_PICKUPS < THEFT_MINUTES, "the thief picks everything before leaving"


class Scenario(BaseModel):
    """A happening injected into the world at a simulated time (naive UTC, like every time here)."""

    model_config = ConfigDict(frozen=True)

    kind: ScenarioKind
    at: datetime

    @field_validator("at")
    @classmethod
    def _naive_utc(cls, at: datetime) -> datetime:
        return at if at.tzinfo is None else at.astimezone(timezone.utc).replace(tzinfo=None)

    def __str__(self) -> str:
        """The setting's form, which `parse_scenarios` reads back."""
        whole_minute = self.at.second == 0 and self.at.microsecond == 0
        return f"{self.kind}@{self.at.isoformat(timespec='minutes' if whole_minute else 'auto')}"


def parse_scenarios(text: str, default_day: date | None = None) -> tuple[Scenario, ...]:
    """SIM_SCENARIOS: "kind@time" parts, comma-separated ("rush@2025-01-03T11:00,theft@2025-01-03T15:00"; "" for
    none). With `default_day`, a bare kind happens at its SCENARIO_HOURS on that day (the CLI's last day)."""
    scenarios = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        kind, has_time, when = (s.strip() for s in part.partition("@"))
        if kind not in SCENARIO_KINDS:
            raise ValueError(f"scenario {part!r}: unknown kind {kind!r} (known: {', '.join(SCENARIO_KINDS)})")
        known = cast(ScenarioKind, kind)
        if has_time:
            try:
                at = datetime.fromisoformat(when)
            except ValueError:
                raise ValueError(f"scenario {part!r}: bad time {when!r} (expected e.g. {kind}@2025-01-03T11:00)"
                                 ) from None
        elif default_day is not None:
            at = datetime.combine(default_day, time(SCENARIO_HOURS[known]))
        else:
            raise ValueError(f"scenario {part!r}: no time (expected kind@time, e.g. {kind}@2025-01-03T11:00)")
        scenarios.append(Scenario(kind=known, at=at))
    return tuple(scenarios)


def format_scenarios(scenarios: Sequence[Scenario]) -> str:
    """The SIM_SCENARIOS setting that `parse_scenarios` reads as `scenarios`."""
    return ",".join(str(s) for s in scenarios)


class WorldConfig(BaseModel):
    """How customers behave. Defaults give ~1500 visits on an ordinary weekday."""

    model_config = ConfigDict(frozen=True)

    customers_per_day: float = Field(1500.0, gt=0)
    open_hour: int = Field(8, ge=0, le=23)
    close_hour: int = Field(21, ge=1, le=24)
    # relative arrival rate per opening hour (08..20): a late-morning and an after-work peak
    hourly_weights: tuple[float, ...] = (0.5, 0.7, 0.9, 1.1, 1.2, 1.0, 0.8, 0.8, 1.0, 1.3, 1.4, 1.2, 0.7)
    weekday_factors: tuple[float, ...] = (0.9, 0.9, 0.95, 1.0, 1.15, 1.35, 0.75)  # Monday..Sunday
    median_visit_minutes: float = Field(14.0, gt=0)
    visit_sigma: float = Field(0.5, ge=0)
    min_visit_minutes: int = Field(3, ge=1)
    max_visit_minutes: int = Field(60, ge=1)
    mean_actions: float = Field(6.0, gt=0)  # shelf actions per visit besides the first
    putback_probability: float = Field(0.1, ge=0, le=1)
    quantity_weights: tuple[float, ...] = (0.72, 0.2, 0.08)  # P(take 1), P(take 2), P(take 3)

    @model_validator(mode="after")
    def _one_weight_per_opening_hour(self) -> WorldConfig:
        hours = self.close_hour - self.open_hour
        if hours <= 0 or len(self.hourly_weights) != hours:
            raise ValueError(f"hourly_weights needs one weight per opening hour ({self.open_hour}..{self.close_hour}:"
                             f" {max(hours, 0)}), got {len(self.hourly_weights)}")
        if len(self.weekday_factors) != 7:
            raise ValueError(f"weekday_factors needs 7 values (Monday..Sunday), got {len(self.weekday_factors)}")
        return self

    def arrivals_expected(self, day: date, hour: int) -> float:
        if not self.open_hour <= hour < self.close_hour:
            return 0.0
        weights = self.hourly_weights
        share = weights[hour - self.open_hour] / sum(weights)
        return self.customers_per_day * self.weekday_factors[day.weekday()] * share


class Lot(BaseModel):
    batch_code: str
    received_date: date
    expiry_date: date
    quantity: int = Field(ge=0)


class Customer(BaseModel):
    customer_id: str
    entered: datetime
    leaves: datetime
    action_times: list[datetime]
    actions_done: int = 0
    cart: dict[str, int] = Field(default_factory=dict)  # shelf_id -> items held (picked minus put back)
    thief: bool = False  # a theft scenario's: takes from the shelf in the cart, leaves without paying


class WorldState(BaseModel):
    """Everything the world remembers between ticks; serialised with each tick's events (exactly once)."""

    clock: datetime  # events up to and including this time have been produced
    shelf_stock: dict[str, int]
    shelf_lots: dict[str, list[Lot]]  # per shelf, the lots on it, earliest expiry first
    customers: dict[str, Customer] = Field(default_factory=dict)  # in the store now
    sold: dict[str, int] = Field(default_factory=dict)
    # shelf_id -> units that left the store unpaid (thefts); their lots keep them: the twin takes units off lots
    # only at the till, and the check compares the twin's lots with these
    unpaid: dict[str, int] = Field(default_factory=dict)
    empty_shelf_misses: int = 0  # a customer wanted an item whose shelf was empty
    # what the store's staff and back office tell the world (World.receive): moves of lots to and off shelves
    # not yet made, the day's near-expiry discounts ("shelf_id|date" -> discount), and how far the world has
    # read those topics ("topic:partition" -> next offset), saved with the state so each is taken once
    staff_moves: list[ShelfEvent] = Field(default_factory=list)
    daily_discounts: dict[str, float] = Field(default_factory=dict)
    feedback_offsets: dict[str, int] = Field(default_factory=dict)


@dataclass(frozen=True)
class Item:
    shelf_id: str
    item_weight: int
    item_price: float


@dataclass
class WorldEvents:
    foot_traffic: list[FootTrafficEvent] = field(default_factory=list)
    shelf_events: list[ShelfEvent] = field(default_factory=list)
    pos_transactions: list[PosTransaction] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.foot_traffic) + len(self.shelf_events) + len(self.pos_transactions)

    def by_topic(self) -> dict[str, list[FootTrafficEvent] | list[ShelfEvent] | list[PosTransaction]]:
        """The events under their sensor topic's name (each field is named after its topic)."""
        return {"foot_traffic": self.foot_traffic, "shelf_events": self.shelf_events,
                "pos_transactions": self.pos_transactions}


def _rng(seed: int, *parts: str | int) -> np.random.Generator:
    words = [seed] + [p if isinstance(p, int) else zlib.crc32(p.encode()) for p in parts]
    return np.random.default_rng(words)


def _copy_for_update(state: WorldState) -> WorldState:
    """A copy that `advance` may change without touching `state`: containers are copied, and the few
    objects changed in place (customers) too; a shelf's lots are copied when changed (_sell_fifo, _staff)."""
    return state.model_copy(update={
        "shelf_stock": dict(state.shelf_stock), "shelf_lots": dict(state.shelf_lots), "sold": dict(state.sold),
        "unpaid": dict(state.unpaid),
        "customers": {cid: c.model_copy(deep=True) for cid, c in state.customers.items()},
        "staff_moves": list(state.staff_moves),
    })


def discount_key(shelf_id: str, day: date) -> str:
    return f"{shelf_id}|{day.isoformat()}"


def _fifo(lots: Sequence[Lot]) -> list[Lot]:
    return sorted(lots, key=lambda lot: (lot.expiry_date, lot.batch_code))


class World:
    """The store's fixed facts (items, popularity, promotions) and the rules that move its state."""

    def __init__(self, store: StoreData, seed: int, config: WorldConfig | None = None,
                 scenarios: Sequence[Scenario] = ()) -> None:
        self.seed, self.store_id = seed, store.store_id
        self.config = config or WorldConfig()
        self.items = {row.shelf_id: Item(row.shelf_id, row.item_weight, row.item_price)
                      for row in sorted(store.store_inventory, key=lambda r: r.shelf_id)}
        self._shelf_ids = list(self.items)
        # a visible item is picked more often; every item keeps some chance
        popularity = [0.02 + row.item_visibility for row in sorted(store.store_inventory, key=lambda r: r.shelf_id)]
        self._cumulative = list(accumulate(popularity))
        self._promotions = store.discounts
        self._initial = store
        self._arrivals_memo: dict[tuple[date, int], list[Customer]] = {}
        self.scenarios = tuple(dict.fromkeys(scenarios))  # a scenario given twice happens once
        self._injected = self._injected_arrivals()

    def initial_state(self, start: datetime) -> WorldState:
        lots: dict[str, list[Lot]] = {shelf_id: [] for shelf_id in self.items}
        for row in self._initial.store_batches:
            if row.batch_quantity_store > 0:
                lots[row.shelf_id].append(Lot(batch_code=row.batch_code, received_date=row.received_date,
                                              expiry_date=row.expiry_date, quantity=row.batch_quantity_store))
        return WorldState(
            clock=start,
            shelf_stock={row.shelf_id: row.current_stock for row in self._initial.store_inventory},
            shelf_lots={shelf_id: _fifo(shelf_lots) for shelf_id, shelf_lots in lots.items()},
        )

    def discount(self, state: WorldState, shelf_id: str, day: date) -> float:
        """The till's discount: the store's promotion or the day's near-expiry discount, whichever is larger."""
        promotion = max((p.discount for p in self._promotions
                         if p.shelf_id == shelf_id and p.start_date <= day <= p.end_date), default=0.0)
        return max(promotion, state.daily_discounts.get(discount_key(shelf_id, day), 0.0))

    @staticmethod
    def receive(state: WorldState, moves: Sequence[ShelfEvent], discounts: Sequence[DailyDiscount],
                offsets: dict[str, int]) -> WorldState:
        """The world told what staff do (lots carried to or off shelves: staff pickups and putbacks; the scale's
        readings are the sensors' business) and the discounts of the day. Moves happen at their time, or at
        once if that has passed (`advance`). A move that does not name its lot and dates is no move the staff
        can make (ingress rejects it; the twin's apps report it), so the world ignores it."""
        staff = [m for m in moves if m.by_staff and m.event_type != "weight_change" and broken_rule(m) is None]
        return state.model_copy(update={
            "staff_moves": [*state.staff_moves, *staff],
            "daily_discounts": {**state.daily_discounts,
                                **{discount_key(d.shelf_id, d.discount_date): d.discount for d in discounts}},
            "feedback_offsets": {**state.feedback_offsets, **offsets},
        })

    # --- arrivals -----------------------------------------------------------------------------
    def arrivals(self, day: date, hour: int) -> list[Customer]:
        """The customers entering in one opening hour, in order of arrival."""
        expected = self.config.arrivals_expected(day, hour)
        if expected == 0:
            return []
        rng = _rng(self.seed, "arrivals", day.toordinal(), hour)
        count = int(rng.poisson(expected))
        # an hour's arrivals fall in (hour, hour + 1h), like the clock's windows: none is lost at the run's start
        seconds = np.sort(rng.integers(1, 3600, size=count))
        hour_start = datetime.combine(day, datetime.min.time()) + timedelta(hours=hour)
        closing = self._closing(day)
        return [self._visit(f"C{day:%Y%m%d}{hour:02d}{n:03d}", hour_start + timedelta(seconds=int(s)), closing)
                for n, s in enumerate(seconds)]

    def _closing(self, day: date) -> datetime:
        return datetime.combine(day, datetime.min.time()) + timedelta(hours=self.config.close_hour)

    def _arrivals_cached(self, day: date, hour: int) -> list[Customer]:
        key = (day, hour)
        if key not in self._arrivals_memo:
            if len(self._arrivals_memo) > 48:  # a tick spans few hours; keep the memo small
                self._arrivals_memo.clear()
            self._arrivals_memo[key] = sorted([*self.arrivals(day, hour), *self._injected.get(key, [])],
                                              key=lambda c: c.entered)
        return self._arrivals_memo[key]

    # --- scenarios ----------------------------------------------------------------------------
    def _injected_arrivals(self) -> dict[tuple[date, int], list[Customer]]:
        """The scenarios' customers by the (day, hour) they enter, to join that hour's arrivals."""
        customers = [c for s in self.scenarios
                     for c in (self._rush(s.at) if s.kind == "rush" else [self._thief(s.at)])]
        repeated = sorted(cid for cid, n in Counter(c.customer_id for c in customers).items() if n > 1)
        if repeated:  # ids carry the scenario's minute
            raise ValueError(f"two scenarios of a kind in one minute (customer {repeated[0]}): give them minutes "
                             f"apart")
        by_hour: defaultdict[tuple[date, int], list[Customer]] = defaultdict(list)
        for customer in customers:
            by_hour[customer.entered.date(), customer.entered.hour].append(customer)
        return dict(by_hour)

    def _rush(self, at: datetime) -> list[Customer]:
        """RUSH_CUSTOMERS ordinary customers entering in (at, at + RUSH_MINUTES]; none once the store closed."""
        rng = _rng(self.seed, "rush", at.isoformat())
        seconds = np.sort(rng.integers(1, RUSH_MINUTES * 60 + 1, size=RUSH_CUSTOMERS))
        customers = []
        for n, s in enumerate(seconds):
            entered = at + timedelta(seconds=int(s))
            closing = self._closing(entered.date())
            if entered < closing:
                customers.append(self._visit(f"R{at:%Y%m%d%H%M}{n:03d}", entered, closing))
        return customers

    @staticmethod
    def _thief(at: datetime) -> Customer:
        """Enters at `at`, picks once a minute from the next minute on, leaves THEFT_MINUTES after entering."""
        return Customer(customer_id=f"T{at:%Y%m%d%H%M}", entered=at, leaves=at + timedelta(minutes=THEFT_MINUTES),
                        action_times=[at + timedelta(minutes=n) for n in range(1, THEFT_PICKUPS + 1)], thief=True)

    def _most_stocked(self, state: WorldState) -> str:
        return min(self._shelf_ids, key=lambda shelf_id: (-state.shelf_stock.get(shelf_id, 0), shelf_id))

    def _visit(self, customer_id: str, entered: datetime, closing: datetime) -> Customer:
        cfg = self.config
        rng = _rng(self.seed, "visit", customer_id)
        minutes = float(np.clip(rng.lognormal(np.log(cfg.median_visit_minutes), cfg.visit_sigma),
                                cfg.min_visit_minutes, cfg.max_visit_minutes))
        leaves = min(entered + timedelta(seconds=round(minutes * 60)), closing)
        span = int((leaves - entered).total_seconds())
        actions = 1 + int(rng.poisson(cfg.mean_actions))
        offsets = np.sort(rng.integers(1, max(span, 2), size=actions)) if span > 1 else np.array([], dtype=int)
        return Customer(customer_id=customer_id, entered=entered, leaves=leaves,
                        action_times=[entered + timedelta(seconds=int(o)) for o in offsets])

    def _arrivals_between(self, after: datetime, until: datetime) -> list[Customer]:
        hour = after.replace(minute=0, second=0, microsecond=0)
        found = []
        while hour <= until:
            found.extend(c.model_copy(deep=True) for c in self._arrivals_cached(hour.date(), hour.hour)
                         if after < c.entered <= until)
            hour += timedelta(hours=1)
        return found

    # --- the step -----------------------------------------------------------------------------
    def advance(self, state: WorldState, until: datetime) -> tuple[WorldState, WorldEvents]:
        """The world at `until` and the events that happened in (state.clock, until]."""
        if until < state.clock:
            raise ValueError(f"the world is at {state.clock}, it cannot go back to {until}")
        state = _copy_for_update(state)
        events = WorldEvents()
        # what happens in the window, in time order; staff, then entries, actions and exits at the same second;
        # staff moves whose time has passed happen first
        happenings: list[tuple[datetime, int, str, int]] = []
        due = sorted((m for m in state.staff_moves if m.ts <= until), key=lambda m: (m.ts, m.event_id))
        state.staff_moves = [m for m in state.staff_moves if m.ts > until]
        for number, move in enumerate(due):
            happenings.append((max(move.ts, state.clock), -1, move.event_id, number))
        for customer in self._arrivals_between(state.clock, until):
            state.customers[customer.customer_id] = customer
            happenings.append((customer.entered, 0, customer.customer_id, -1))
        for customer in state.customers.values():
            for number in range(customer.actions_done, len(customer.action_times)):
                if customer.action_times[number] <= until:
                    happenings.append((customer.action_times[number], 1, customer.customer_id, number))
            if state.clock < customer.leaves <= until:
                happenings.append((customer.leaves, 2, customer.customer_id, -1))
        for ts, kind, customer_id, number in sorted(happenings):
            if kind == -1:
                self._staff(state, due[number])
                continue
            customer = state.customers[customer_id]
            if kind == 0:
                events.foot_traffic.append(FootTrafficEvent(
                    store_id=self.store_id, event_id=f"ft-{customer_id}-in", event_type="entry",
                    customer_id=customer_id, ts=ts))
                if customer.thief:  # the shelf they came for: the most stocked as they enter
                    customer.cart[self._most_stocked(state)] = 0
            elif kind == 1:
                events.shelf_events.extend(self._act(state, customer, number, ts))
            else:
                events.foot_traffic.append(FootTrafficEvent(
                    store_id=self.store_id, event_id=f"ft-{customer_id}-out", event_type="exit",
                    customer_id=customer_id, ts=ts))
                if customer.thief:
                    _leave_unpaid(state, customer)
                else:
                    transaction = self._checkout(state, customer, ts)
                    if transaction is not None:
                        events.pos_transactions.append(transaction)
                del state.customers[customer_id]
        state.clock = until
        return state, events

    def _act(self, state: WorldState, customer: Customer, number: int, ts: datetime) -> list[ShelfEvent]:
        customer.actions_done = number + 1
        if customer.thief:
            return self._steal(state, customer, number, ts)
        rng = _rng(self.seed, "action", customer.customer_id, number)
        held = sorted(shelf for shelf, count in customer.cart.items() if count > 0)
        if held and rng.random() < self.config.putback_probability:
            shelf_id = held[int(rng.integers(0, len(held)))]
            quantity = int(rng.integers(1, customer.cart[shelf_id] + 1))
            customer.cart[shelf_id] -= quantity
            state.shelf_stock[shelf_id] += quantity
            return self._move("putback", customer.customer_id, number, shelf_id, quantity, ts)
        shelf_id = self._shelf_ids[bisect_right(self._cumulative, rng.random() * self._cumulative[-1])]
        weights = self.config.quantity_weights
        wanted = 1 + int(rng.choice(len(weights), p=np.asarray(weights) / sum(weights)))
        quantity = min(wanted, state.shelf_stock[shelf_id])
        if quantity == 0:  # nothing to take: the customer walks on
            state.empty_shelf_misses += 1
            return []
        state.shelf_stock[shelf_id] -= quantity
        customer.cart[shelf_id] = customer.cart.get(shelf_id, 0) + quantity
        return self._move("pickup", customer.customer_id, number, shelf_id, quantity, ts)

    def _steal(self, state: WorldState, customer: Customer, number: int, ts: datetime) -> list[ShelfEvent]:
        """A thief's pickup: up to THEFT_PICKUP_UNITS from the shelf they came for, THEFT_UNITS in all."""
        shelf_id = next(iter(customer.cart))
        quantity = min(THEFT_PICKUP_UNITS, THEFT_UNITS - customer.cart[shelf_id], state.shelf_stock[shelf_id])
        if quantity <= 0:
            return []
        state.shelf_stock[shelf_id] -= quantity
        customer.cart[shelf_id] += quantity
        return self._move("pickup", customer.customer_id, number, shelf_id, quantity, ts)

    def _move(self, kind: str, customer_id: str, number: int, shelf_id: str, quantity: int,
              ts: datetime) -> list[ShelfEvent]:
        """The customer's move and the scale's reading of it."""
        sign = -1 if kind == "pickup" else 1
        delta = round(sign * quantity * self.items[shelf_id].item_weight, 3)
        base = f"se-{customer_id}-{number:02d}"
        return [
            ShelfEvent(store_id=self.store_id, event_id=f"{base}-m", event_type=kind, shelf_id=shelf_id,
                       quantity=quantity, weight_change=delta, customer_id=customer_id, ts=ts),
            ShelfEvent(store_id=self.store_id, event_id=f"{base}-w", event_type="weight_change", shelf_id=shelf_id,
                       quantity=quantity, weight_change=delta, customer_id=customer_id, ts=ts),
        ]

    def _checkout(self, state: WorldState, customer: Customer, ts: datetime) -> PosTransaction | None:
        items = []
        for shelf_id in sorted(customer.cart):
            quantity = customer.cart[shelf_id]
            if quantity <= 0:
                continue
            price = self.items[shelf_id].item_price
            discount = self.discount(state, shelf_id, ts.date())
            items.append(PosItem(shelf_id=shelf_id, quantity=quantity, unit_price=price, discount=discount,
                                 line_total=round(quantity * price * (1 - discount), 2)))
            self._sell_fifo(state, shelf_id, quantity)
        if not items:
            return None
        return PosTransaction(store_id=self.store_id, transaction_id=f"tx-{customer.customer_id}",
                              customer_id=customer.customer_id,
                              ts=ts, items=items, total=round(sum(i.line_total for i in items), 2))

    def _sell_fifo(self, state: WorldState, shelf_id: str, quantity: int) -> None:
        """Sold items leave the lots earliest expiry first (what the twin assumes at the till)."""
        state.sold[shelf_id] = state.sold.get(shelf_id, 0) + quantity
        state.shelf_lots[shelf_id] = [lot.model_copy() for lot in state.shelf_lots[shelf_id]]
        for lot in state.shelf_lots[shelf_id]:
            taken = min(lot.quantity, quantity)
            lot.quantity -= taken
            quantity -= taken
            if quantity == 0:
                break
        state.shelf_lots[shelf_id] = [lot for lot in state.shelf_lots[shelf_id] if lot.quantity > 0]

    def _staff(self, state: WorldState, move: ShelfEvent) -> None:
        """Staff put a lot on its shelf (a refill) or take its items off (a removal)."""
        # `receive` takes only moves that name their lot and dates
        assert move.batch_code is not None and move.received_date is not None and move.expiry_date is not None
        lots = [lot.model_copy() for lot in state.shelf_lots.get(move.shelf_id, [])]
        current = next((lot for lot in lots if lot.batch_code == move.batch_code), None)
        if move.event_type == "putback":
            state.shelf_stock[move.shelf_id] = state.shelf_stock.get(move.shelf_id, 0) + move.quantity
            if current is None:
                lots.append(Lot(batch_code=move.batch_code, received_date=move.received_date,
                                expiry_date=move.expiry_date, quantity=move.quantity))
            else:
                current.quantity += move.quantity
        elif current is not None:
            taken = min(current.quantity, move.quantity, state.shelf_stock.get(move.shelf_id, 0))
            current.quantity -= taken
            state.shelf_stock[move.shelf_id] -= taken
        state.shelf_lots[move.shelf_id] = _fifo([lot for lot in lots if lot.quantity > 0])


def _leave_unpaid(state: WorldState, customer: Customer) -> None:
    """What a leaving customer holds and does not pay for (lots keep it: see WorldState.unpaid)."""
    for shelf_id, quantity in customer.cart.items():
        if quantity > 0:
            state.unpaid[shelf_id] = state.unpaid.get(shelf_id, 0) + quantity
