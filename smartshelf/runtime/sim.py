"""`smartshelf sim`: a headless run of the twin to completion through the real stack, on a scratch stack of its
own (free ports, temp run dir), so a run never depends on what an earlier one left behind and the same seed
gives the same digest. It returns the summary the CLI prints as its last line (DESIGN.md, command contract)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import NamedTuple, TypeVar

from pydantic import BaseModel

from smartshelf import rules
from smartshelf.adapters import delta
from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.clock_service import Lockstep, offset_lags
from smartshelf.apps.producers import NAME as PRODUCERS
from smartshelf.apps.producers import States, Worlds, load_states, read_feedback, scenarios_of, worlds_of
from smartshelf import clock as c
from smartshelf.clock import ClockMode
from smartshelf.datagen import generate_chain, write_chain
from smartshelf.errors import SmartShelfError
from smartshelf.invariants import StockLedger, differences, state_digest
from smartshelf.pulse import PULSE_ALERT_TYPES
from smartshelf.registry import DEAD_LETTERS, SENSOR_TOPICS, STORE_COLUMN, TOPICS, table, topic
from smartshelf.runtime import jobs, mirror, supervisor
from smartshelf.runtime.scratch import scratch_stack
from smartshelf.schemas import (FIRST_STORE, Alert, DailyDiscount, PosTransaction, ShelfBatchState, ShelfEvent,
                                ShelfState,
                                PulseWindow, SupplierOrder, SupplierReceipt, WarehouseBatchState, WarehouseEvent,
                                WarehouseState)
from smartshelf.settings import Settings
from smartshelf.store import StoreData, clock_start
from smartshelf.world import Scenario, WorldState, format_scenarios, parse_scenarios

# the services of a run; the clock starts once all of them have joined the lockstep
SERVICES = ("spark", "connect", "producers", "bridge")
JOIN_TIMEOUT_S = 300.0
SETTLE_TIMEOUT_S = 300.0
POLL_S = 0.5
REPORT_EVERY_S = 5.0  # how often wait_settled tells its `on_wait` who is behind

Progress = Callable[[datetime | None, datetime], None]
ModelT = TypeVar("ModelT", bound=BaseModel)


class ShelfLotKey(NamedTuple):
    """The key fields of a shelf lot, for the world's lots (which do not carry their store and shelf)."""

    store_id: str
    shelf_id: str
    batch_code: str


def _participants_expected() -> set[str]:
    from smartshelf.apps.bridge import NAME as BRIDGE
    from smartshelf.streaming.apps import all_apps
    from smartshelf.streaming.runner import LAKE_SINK

    return {PRODUCERS, BRIDGE, *all_apps()} - {LAKE_SINK}


class NotSettled(SmartShelfError):
    """The pipeline did not catch up in the time given (`smartshelf check` exits 2 on it)."""


def wait_for_lake(settings: Settings, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until the lake sink has written what its topics hold now (the clock does not wait for it)."""
    from smartshelf.streaming.apps import lake_tables
    from smartshelf.streaming.runner import LAKE_SINK

    _wait_for_reader(settings, LAKE_SINK, sorted(lake_tables()), timeout_s)


def wait_for_pulse(settings: Settings, timeout_s: float = SETTLE_TIMEOUT_S) -> None:
    """Wait until the pulse queries have read what the sensors' topics and the clock's hold now (their windows
    and alerts are published with the batch)."""
    from smartshelf.streaming.pulse import PULSE_APPS, SOURCES

    for name in PULSE_APPS:
        _wait_for_reader(settings, name, list(SOURCES), timeout_s)


def _wait_for_reader(settings: Settings, name: str, topic_names: list[str], timeout_s: float) -> None:
    """Wait until a query the clock does not wait for has read its topics up to their ends now."""
    topics = {name: topic_names}
    clock = SimClock(redis_client(settings))
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    deadline = time.monotonic() + timeout_s
    try:
        ends = Lockstep(clock, kafka, lambda behind: None).ends(set(topic_names))
        while lags := offset_lags({name: clock.positions(name)}, topics, ends):
            if time.monotonic() > deadline:
                raise NotSettled(f"{name} did not catch up with its topics in {timeout_s:.3g}s: {lags[0]}")
            time.sleep(POLL_S / 5)
    finally:
        kafka.close()


def _check_services(settings: Settings, names: tuple[str, ...]) -> None:
    for row in supervisor.status(settings):
        if row.name in names and not row.healthy:
            server = next(s for s in supervisor.select(settings, [row.name]) if s.name == row.name)
            if server.beats and row.pid is not None:  # alive but silent: what it is doing goes to its log
                supervisor.dump_stacks(settings, row.name)
            raise SmartShelfError(f"sim: service {row.name} is {row.problem or 'down'}; its log ends:\n"
                                  f"{supervisor.log_tail(server)}")


def _wait_for_participants(settings: Settings, clock: SimClock, also: tuple[str, ...] = ()) -> None:
    """Until every service of a run, and `also`, has joined the lockstep."""
    expected = _participants_expected() | set(also)
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    while not expected <= set(clock.participants()):
        _check_services(settings, (*SERVICES, *also))
        if time.monotonic() > deadline:
            missing = ", ".join(sorted(expected - set(clock.participants())))
            raise SmartShelfError(f"sim: {missing} did not join the clock in {JOIN_TIMEOUT_S:.0f}s")
        time.sleep(POLL_S)


def _rows(settings: Settings, name: str, model: type[ModelT]) -> list[ModelT]:
    assert table(name).schema is model, f"{name} holds {table(name).schema.__name__}"
    return delta.read_rows(delta.table_path(settings.delta_dir, table(name)), model)


@dataclass(frozen=True)
class Twin:
    """The state tables the Spark apps built."""

    shelves: list[ShelfState]
    shelf_lots: list[ShelfBatchState]
    warehouse: list[WarehouseState]
    wh_lots: list[WarehouseBatchState]

    @classmethod
    def read(cls, settings: Settings) -> Twin:
        """The state tables, every store's."""
        return cls(_rows(settings, "shelf_state", ShelfState), _rows(settings, "shelf_batch_state", ShelfBatchState),
                   _rows(settings, "wh_state", WarehouseState), _rows(settings, "wh_batch_state", WarehouseBatchState))

    def of_store(self, settings: Settings, store: StoreData) -> Twin:
        """One store's rows; a table no batch has written yet holds the state as the store opened (the state
        query publishes it with its first batch, smartshelf.streaming.keyed_query)."""
        initial = rules.initial_states(store, clock_start(store, settings.sim_start))
        return Twin(*(_of(store.store_id, rows) or list(opened) for rows, opened in (
            (self.shelves, initial.shelves), (self.shelf_lots, initial.shelf_lots), (self.warehouse, initial.warehouse),
            (self.wh_lots, initial.wh_lots))))

    def tables(self) -> dict[str, list[BaseModel]]:
        return {"shelf_state": [*self.shelves], "shelf_batch_state": [*self.shelf_lots],
                "wh_state": [*self.warehouse], "wh_batch_state": [*self.wh_lots]}


def topic_counts(settings: Settings, names: tuple[str, ...]) -> dict[str, int]:
    """The records each topic holds (the sum of its partitions' end offsets)."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        ends = adapter.end_offsets([tp for name in names for tp in adapter.partitions_for(name)])
    finally:
        adapter.close()
    return {name: sum(end for tp, end in ends.items() if tp.topic == name) for name in names}


def repeated_ids(settings: Settings) -> dict[str, int]:
    """Per topic of events (a topic with an id field), how many records repeat an id already in it; empty when
    every event is there once."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    repeats: dict[str, int] = {}
    try:
        for named in TOPICS:
            if named.id_field is None:
                continue
            seen: set[tuple[str, str]] = set()
            for record in adapter.read(adapter.partitions_for(named.name)):
                if record.value is None:
                    continue
                value = json.loads(record.value)  # ids are unique within a store
                event_id = (value.get(STORE_COLUMN, FIRST_STORE), value.get(named.id_field))
                if event_id in seen:
                    repeats[named.name] = repeats.get(named.name, 0) + 1
                seen.add(event_id)
    finally:
        adapter.close()
    return repeats


def _of(store_id: str, rows: Sequence[ModelT]) -> list[ModelT]:
    return [row for row in rows if getattr(row, STORE_COLUMN) == store_id]


class Moves(NamedTuple):
    """The loop's moves of stock, from the raw tables: the warehouse's, and the staff's on shelves."""

    warehouse: list[WarehouseEvent]
    staff: list[ShelfEvent]

    @classmethod
    def read(cls, settings: Settings) -> Moves:
        staff = [e for e in _rows(settings, "raw_shelf_events", ShelfEvent) if e.by_staff]
        return cls(_rows(settings, "raw_wh_events", WarehouseEvent), staff)

    def of_store(self, store_id: str) -> Moves:
        return Moves(_of(store_id, self.warehouse), _of(store_id, self.staff))

    def units(self, kind: str) -> Counter[str]:
        units: Counter[str] = Counter()
        for move in [*self.warehouse, *self.staff]:
            if move.event_type == kind:
                units[move.shelf_id] += move.quantity
        return units

    def in_transit(self) -> Counter[str]:
        """Restocks that left the warehouse and have not reached their shelf yet."""
        transit = self.units("wh_out")
        transit.subtract(self.units("putback"))
        return +transit


def ledger(store: StoreData, twin: Twin, world: WorldState, sales: list[PosTransaction], moves: Moves
           ) -> StockLedger:
    """Each item's units by place: shelves and warehouse as the twin holds them, carts and what left unpaid as the
    world does."""
    initial: Counter[str] = Counter()
    for row in [*store.store_inventory, *store.warehouse_inventory]:
        initial[row.shelf_id] += row.current_stock
    sold: Counter[str] = Counter()
    for sale in sales:
        for item in sale.items:
            sold[item.shelf_id] += item.quantity
    in_carts: Counter[str] = Counter()
    for customer in world.customers.values():
        in_carts.update(customer.cart)
    removed = moves.units("wh_removal")
    removed.update(moves.units("pickup"))  # staff pickups are removals of expired lots
    return StockLedger(
        initial=initial,
        received=moves.units("wh_in"),
        on_shelf={s.shelf_id: s.current_stock for s in twin.shelves},
        in_warehouse={w.shelf_id: w.wh_current_stock for w in twin.warehouse},
        in_transit=moves.in_transit(),
        in_carts=in_carts, sold=sold, removed=removed, unpaid=dict(world.unpaid),
    )


def worlds_as_told(settings: Settings, worlds: Worlds, states: States) -> States:
    """Each store's world with what the loop told it after its last step (the last refills and removals) carried
    out."""
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        told = read_feedback(kafka, states)
    finally:
        kafka.close()
    return {store_id: worlds[store_id].advance(state, state.clock)[0] for store_id, state in told.items()}


@dataclass(frozen=True)
class Checks:
    """The invariants of a settled twin's store (DESIGN.md): stock conserved per item, the twin equal to the world,
    no expired lot left on a shelf after the day's removals."""

    conservation_problems: list[str]
    twin_world_differences: list[str]
    expired_on_shelves: list[str]
    # what the summary reports besides
    twin: Twin
    world: WorldState
    sales: list[PosTransaction]
    moves: Moves

    @property
    def ok(self) -> bool:
        return not (self.conservation_problems or self.twin_world_differences or self.expired_on_shelves)

    def as_json(self) -> dict[str, object]:
        return {"ok": self.ok, "conservation_ok": not self.conservation_problems,
                "conservation_problems": self.conservation_problems[:5],
                "twin_matches_world": not self.twin_world_differences,
                "twin_world_differences": self.twin_world_differences,
                "expired_lots_on_shelves": len(self.expired_on_shelves),
                "expired_lot_examples": self.expired_on_shelves[:5]}


@dataclass(frozen=True)
class ChainChecks:
    """The invariants of every store the twin runs, each on its own (a store's records only)."""

    stores: dict[str, Checks]

    @property
    def ok(self) -> bool:
        return all(checks.ok for checks in self.stores.values())

    def as_json(self) -> dict[str, object]:
        """The stores' checks together (each problem named with its store when there are several)."""
        named = (lambda store_id, text: f"{store_id} {text}") if len(self.stores) > 1 else (lambda _, text: text)
        each = {store_id: checks.as_json() for store_id, checks in self.stores.items()}
        found = {key: [named(store_id, text) for store_id, checks in self.stores.items()
                       for text in getattr(checks, key)] for key in (
            "conservation_problems", "twin_world_differences", "expired_on_shelves")}
        return {"ok": self.ok, "conservation_ok": not found["conservation_problems"],
                "conservation_problems": found["conservation_problems"][:5],
                "twin_matches_world": not found["twin_world_differences"],
                "twin_world_differences": found["twin_world_differences"][:10],
                "expired_lots_on_shelves": len(found["expired_on_shelves"]),
                "expired_lot_examples": found["expired_on_shelves"][:5],
                **({"store_checks_ok": {store_id: result["ok"] for store_id, result in each.items()}}
                   if len(each) > 1 else {})}

    def tables(self) -> dict[str, list[BaseModel]]:
        """The state tables of every store: what the chain's digest is of."""
        merged: dict[str, list[BaseModel]] = {}
        for checks in self.stores.values():
            for name, rows in checks.twin.tables().items():
                merged.setdefault(name, []).extend(rows)
        return merged


def check(settings: Settings, watermark: datetime | None = None) -> ChainChecks:
    """The invariants now, store by store; `watermark` is the last clock tick whose consequences (removals at
    STORE_OPS_HOUR) the pipeline has acted on, by default the worlds' time (a settled pipeline)."""
    stores = jobs.load_stores(settings)
    last = load_states(redis_client(settings), list(stores))
    if last is None:
        raise SmartShelfError("check: the producers have written no world state yet")
    worlds = worlds_as_told(settings, worlds_of(settings, stores), last)
    wait_for_lake(settings)  # the sales and the moves are read from the lake
    twin = Twin.read(settings)
    sales = _rows(settings, "raw_pos_transactions", PosTransaction)
    moves = Moves.read(settings)
    return ChainChecks({store_id: check_store(settings, store, twin.of_store(settings, store), worlds[store_id],
                                              _of(store_id, sales), moves.of_store(store_id), watermark)
                        for store_id, store in stores.items()})


def check_store(settings: Settings, store: StoreData, twin: Twin, world: WorldState, sales: list[PosTransaction],
                moves: Moves, watermark: datetime | None) -> Checks:
    """One store's invariants, from its rows and its world."""
    problems = ledger(store, twin, world, sales, moves).problems()
    lot_key = topic("shelf_batch_state").key_of
    twin_lots = {lot_key(lot): lot.batch_quantity_store for lot in twin.shelf_lots if lot.batch_quantity_store}
    world_lots = {lot_key(ShelfLotKey(store.store_id, shelf_id, lot.batch_code)): lot.quantity
                  for shelf_id, lots in world.shelf_lots.items() for lot in lots if lot.quantity}
    item_weight = {row.shelf_id: row.item_weight for row in store.store_inventory}
    disagreements = [
        *differences("shelf stock", {s.shelf_id: s.current_stock for s in twin.shelves}, world.shelf_stock),
        *differences("shelf lot", twin_lots, world_lots),
        # the scale's readings add up to what the shelf holds, in the data's unit
        *differences("shelf weight", {s.shelf_id: s.current_weight for s in twin.shelves},
                     {s.shelf_id: s.current_stock * item_weight.get(s.shelf_id, 0) for s in twin.shelves}),
    ]
    # removals run at STORE_OPS_HOUR, on the clock's watermark: from then on, no lot past its date is on a shelf
    acted = watermark or world.clock
    today = acted.date() if acted.hour >= settings.store_ops_hour else acted.date() - timedelta(days=1)
    expired = [f"{lot_key(lot)} expired {lot.expiry_date}, {lot.batch_quantity_store} left"
               for lot in twin.shelf_lots if lot.batch_quantity_store and lot.expiry_date < today]
    return Checks(problems, disagreements, expired, twin, world, sales, moves)


def delta_footprint(settings: Settings) -> dict[str, float]:
    """What the lake takes on disk: files and MB, in all and per simulated day (bounded by the tables'
    maintenance, smartshelf.adapters.delta.maintain)."""
    files = [path for path in settings.delta_dir.rglob("*") if path.is_file()]
    megabytes = sum(path.stat().st_size for path in files) / 2**20
    days = max(settings.sim_days, 1)
    return {"files": len(files), "mb": round(megabytes, 1), "files_per_day": round(len(files) / days),
            "mb_per_day": round(megabytes / days, 1)}


def summarise(settings: Settings, wall_s: float) -> dict[str, object]:
    wait_for_pulse(settings)  # before the lake's wait: then the lake holds the pulse's windows and alerts too
    checks = check(settings)
    mirror.wait_caught_up(settings)
    mirror_differences = mirror.differences(settings)
    weight_mismatches = mirror.shelf_weight_mismatches(settings)
    repeated = repeated_ids(settings)
    moves = Moves([m for c in checks.stores.values() for m in c.moves.warehouse],
                  [m for c in checks.stores.values() for m in c.moves.staff])
    worlds = [c.world for c in checks.stores.values()]
    counts = topic_counts(settings, (*SENSOR_TOPICS, DEAD_LETTERS))
    alerts = _rows(settings, "alerts", Alert)
    orders = _rows(settings, "wh_supplier_orders", SupplierOrder)
    kinds = Counter(m.event_type for m in [*moves.warehouse, *moves.staff])
    return {
        "sim_start": settings.sim_start.isoformat(),
        "days": settings.sim_days,
        "seed": settings.sim_seed,
        "mode": settings.sim_mode,
        "events": sum(counts[name] for name in SENSOR_TOPICS),
        "events_by_topic": {name: counts[name] for name in SENSOR_TOPICS},
        "stores": len(checks.stores),
        "sales": sum(len(c.sales) for c in checks.stores.values()),
        "alerts": len(alerts),
        "alerts_by_type": dict(sorted(Counter(a.alert_type for a in alerts).items())),
        "restocks": kinds["wh_out"],
        "refills": kinds["putback"],
        "supplier_orders": len({o.order_id for o in orders}),
        "supplier_receipts": len(_rows(settings, "wh_supplier_receipts", SupplierReceipt)),
        "discounts": len(_rows(settings, "daily_discounts", DailyDiscount)),
        "removals": {"shelf": kinds["pickup"], "warehouse": kinds["wh_removal"]},
        "dead_letters": counts[DEAD_LETTERS],
        "repeated_ids": repeated,
        "empty_shelf_misses": sum(world.empty_shelf_misses for world in worlds),
        "scenarios": [str(s) for s in scenarios_of(settings)],
        "units_left_unpaid": sum(sum(world.unpaid.values()) for world in worlds),
        "pulse": pulse_summary(settings, alerts),
        # the chain's: of every store's state (one store: that store's)
        "digest": state_digest(checks.tables()),
        **({"store_digests": {store_id: state_digest(c.twin.tables()) for store_id, c in checks.stores.items()}}
           if len(checks.stores) > 1 else {}),
        **{k: v for k, v in checks.as_json().items() if k != "ok"},
        "postgres_mirror_ok": not mirror_differences,
        "postgres_mirror_differences": mirror_differences[:5],
        "postgres_rows": mirror.row_counts(settings),
        "postgres_shelf_weights_ok": not weight_mismatches,
        "postgres_shelf_weight_mismatches": weight_mismatches,
        "checks_ok": checks.ok and not mirror_differences and not weight_mismatches and not repeated,
        "delta": delta_footprint(settings),
        "wall_s": round(wall_s, 1),
    }


def pulse_summary(settings: Settings, alerts: list[Alert]) -> dict[str, object]:
    """The pulse's windows and alerts (a digest of both: same seed, same pulse), the rows dropped as late, and
    for each injected scenario the first alert of its kind at or after it, in simulated minutes."""
    from smartshelf.streaming.pulse import LateCounter

    windows = _rows(settings, "pulse_windows", PulseWindow)
    raised = sorted((a for a in alerts if a.alert_type in PULSE_ALERT_TYPES), key=lambda a: (a.ts, a.alert_id))
    return {
        "windows": dict(sorted(Counter(f"{w.width_minutes}min" for w in windows).items())),
        "alerts": [f"{a.ts:%Y-%m-%d %H:%M} {a.alert_type} {a.subject}: {a.message}" for a in raised],
        "late_dropped": LateCounter(redis_client(settings)).dropped(),
        "digest": state_digest({"pulse_windows": windows, "pulse_alerts": raised}),
        "scenario_alerts": scenario_alerts(scenarios_of(settings), raised),
    }


SHOWN_BY = {"rush": ("anomaly", "entries"), "theft": ("shrinkage", "units_taken")}  # scenario -> the alert


def scenario_alerts(scenarios: Sequence[Scenario], alerts: Sequence[Alert]) -> list[dict[str, object]]:
    """Each scenario with the first alert that shows it (its kind and metric, at or after it): the simulated
    minutes from the scenario's first event to the end of the window that raised it."""
    found = []
    for scenario in scenarios:
        kind, metric = SHOWN_BY[scenario.kind]
        first = next((a for a in alerts if (a.alert_type, a.metric) == (kind, metric) and a.ts >= scenario.at), None)
        found.append({"scenario": str(scenario), "alert": None if first is None else first.alert_id,
                      "minutes_to_alert": None if first is None else (first.ts - scenario.at).total_seconds() / 60})
    return found


CHECKER = "checker"


class TickChecker:
    """Checks the invariants at every tick of a fast run: a lockstep participant, so the clock waits for it;
    it checks once everyone else has caught up with the tick, then reports the tick done."""

    def __init__(self, settings: Settings, clock: SimClock) -> None:
        self.settings, self.clock = settings, clock
        self.kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
        self.lockstep = Lockstep(clock, self.kafka, lambda behind: None)
        self.failures: list[str] = []
        self.ticks = 0
        clock.register_tick_participant(CHECKER)

    def poll(self) -> None:
        now = self.clock.now_or_none()
        done = self.clock.last_tick_done(CHECKER)
        if now is None or (done is not None and done >= now):
            return
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        if not self.lockstep.settle(now, lambda: time.monotonic() > deadline, besides=CHECKER):
            raise SmartShelfError(f"sim: the pipeline did not catch up with {now} in {SETTLE_TIMEOUT_S:.0f}s")
        # the checker runs in the tick's first settle, before the clock publishes the tick's watermark: what is
        # due at `now` (the day's removals at STORE_OPS_HOUR) happens after this check, so it checks up to the
        # previous watermark
        checks = check(self.settings, watermark=now - timedelta(seconds=self.settings.step_seconds))
        self.ticks += 1
        if not checks.ok:
            self.failures.append(f"{now}: {json.dumps(checks.as_json())}")
        self.clock.tick_done(CHECKER, now)

    def close(self) -> None:
        self.clock.unregister(CHECKER)
        self.kafka.close()


def run_sim(base: Settings, days: int, seed: int, csv_dir: Path | None, fast: bool,
            on_progress: Progress = lambda now, end: None,
            during: Callable[[Settings, datetime | None], None] = lambda settings, now: None,
            check_every_tick: bool = False, may_die: tuple[str, ...] = (),
            after: Callable[[Settings], dict[str, object]] | None = None,
            scenarios: Sequence[str] = (), stores: int = 1) -> dict[str, object]:
    """`during` is called with the clock's time while the run goes on (failure tests kill services there, and
    restart those of `may_die`, which the run then does not take for broken when it finds them down);
    `check_every_tick` (fast mode) checks the invariants at every settled tick, not only at the end; `after`
    works on the finished stack before it goes (the ML benchmark trains on its lake), its result joins the
    summary. `scenarios` ("kind" or "kind@time", smartshelf.world.parse_scenarios), if any, replace SIM_SCENARIOS;
    a bare kind happens at its default hour on the run's last day. `stores` > 1 runs a chain (the first `stores`
    stores of a generated chain, or of `csv_dir`), one world per store on the one clock."""
    began = time.monotonic()
    with scratch_stack(base, prefix="smartshelf-sim-") as (scratch, _):
        settings = scratch.model_copy(update={
            "use_simulated_time": True, "sim_mode": ClockMode.FAST if fast else ClockMode.DEMO, "sim_days": days,
            "sim_seed": seed, "stores": stores})
        for name in ("db-init", "kafka-init", "delta-init"):
            jobs.JOBS[name](settings)
        if csv_dir is None:
            write_chain(generate_chain(seed, stores), settings.data_dir)
            csv_dir = settings.data_dir / "db_csv"
        jobs.import_store(settings, csv_dir)
        settings = jobs.with_clock_start(settings)
        if scenarios:
            last_day = (settings.sim_start + timedelta(days=days - 1)).date()
            settings = settings.model_copy(update={
                "sim_scenarios": format_scenarios(parse_scenarios(",".join(scenarios), default_day=last_day))})

        supervisor.start(settings, SERVICES)
        clock = SimClock(redis_client(settings))
        _wait_for_participants(settings, clock)
        checker = TickChecker(settings, clock) if check_every_tick and fast else None
        drive(settings, SERVICES, on_progress, during, may_die, checker)
        summary = summarise(settings, time.monotonic() - began)
        if checker is not None:
            summary["ticks_checked"] = checker.ticks
            summary["tick_check_failures"] = checker.failures[:5]
            summary["checks_ok"] = summary["checks_ok"] and not checker.failures
        return {**summary, **(after(settings) if after is not None else {})}


def drive(settings: Settings, services: Sequence[str], on_progress: Progress,
          during: Callable[[Settings, datetime | None], None] = lambda settings, now: None,
          may_die: tuple[str, ...] = (), checker: TickChecker | None = None) -> datetime:
    """Start the clock (the services running and in the lockstep) and watch the run until the clock is done at
    SIM_DAYS: every service of `services` but `may_die` must stay up. Then wait for the pipeline to settle there
    (in demo mode the clock does not wait for it); returns that end."""
    clock = SimClock(redis_client(settings))
    end = settings.sim_start + timedelta(days=settings.sim_days)
    supervisor.start(settings, ["clock"])
    try:
        while not clock.done():
            during(settings, clock.now_or_none())
            _check_services(settings, tuple(n for n in (*services, "clock") if n not in may_die))
            on_progress(clock.now_or_none(), end)
            if checker is not None:
                checker.poll()
            time.sleep(POLL_S if checker is None else 0.05)
    finally:
        if checker is not None:
            checker.close()
    wait_settled(settings, end)
    return end


def wait_settled(settings: Settings, at: datetime | None = None, timeout_s: float = SETTLE_TIMEOUT_S,
                 on_wait: Callable[[list[str]], None] = lambda behind: None) -> None:
    """Wait until every participant has caught up with the clock's time (or `at`) and the pipeline is quiet;
    `on_wait` hears who is behind every REPORT_EVERY_S. Every service must have joined the lockstep (on a stack
    still starting, an app not yet there would look settled). The tick is fixed when it starts: on a clock that
    moves on (demo speed), pause the clock first (`smartshelf check`)."""
    clock = SimClock(redis_client(settings))
    tick = at or clock.now()
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    deadline = time.monotonic() + timeout_s
    lockstep = Lockstep(clock, kafka, on_wait, REPORT_EVERY_S, frozenset(_participants_expected()))
    try:
        settled = lockstep.settle(tick, lambda: time.monotonic() > deadline)
    finally:
        kafka.close()
    if not settled:
        raise NotSettled(f"the pipeline did not catch up with {c.encode_time(tick)} in {timeout_s:.3g}s; "
                         f"behind: {'; '.join(lockstep.behind)}")
