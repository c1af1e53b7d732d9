"""Injected scenarios: a rush at the entrance and a theft, each at a simulated time, deterministic and as cut-
independent as every other happening of the world; without them the world is exactly the world it was.

The pulse's shrinkage alert (units a shelf's scale saw customers take minus units paid at the till, in a sliding
5-minute window, >= SHRINKAGE_MIN_UNITS) must stay silent on an ordinary day and fire on a theft: pinned here on
the world's own events.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import Result
from typer.testing import CliRunner

from smartshelf.datagen import generate_store
from smartshelf.errors import SmartShelfError
from smartshelf.invariants import StockLedger
from smartshelf.rules import apply_sale, apply_shelf_event, initial_states
from smartshelf.runtime.sim import Moves, Twin, ledger
from smartshelf.schemas import ShelfBatchState
from smartshelf.settings import Settings
from smartshelf.store import StoreData
from smartshelf.world import (RUSH_CUSTOMERS, RUSH_MINUTES, THEFT_UNITS, Scenario, World, WorldConfig, WorldEvents,
                              WorldState, format_scenarios, parse_scenarios)
from tests.unit.test_world import as_json, every, in_carts, moves, run, shelf, signed, tiny_store

SEED = 42  # the sim's default seed, of the store and of the world
DAY = datetime(2025, 1, 1)  # a Wednesday
RUSH_AT = datetime(2025, 1, 1, 11)
THEFT_AT = datetime(2025, 1, 1, 15)
WINDOW = timedelta(minutes=5)
SHRINKAGE_MIN_UNITS = Settings.model_fields["shrinkage_min_units"].default


# --- helpers ----------------------------------------------------------------------------------
def a_day(world: World, step: timedelta = timedelta(hours=1)) -> tuple[WorldState, WorldState, WorldEvents]:
    """The calendar day DAY, midnight to midnight: (initial state, final state, events)."""
    initial = world.initial_state(DAY)
    final, events = run(world, initial, every(DAY, DAY + timedelta(days=1), step))
    return initial, final, events


def of(events: WorldEvents, customer_id: str) -> WorldEvents:
    return WorldEvents([e for e in events.foot_traffic if e.customer_id == customer_id],
                       [e for e in events.shelf_events if e.customer_id == customer_id],
                       [t for t in events.pos_transactions if t.customer_id == customer_id])


def stolen_from(final: WorldState) -> str:
    """The one shelf a theft took units from."""
    (shelf_id,) = final.unpaid
    return shelf_id


def largest_shrinkage(store: StoreData, events: WorldEvents) -> tuple[int, str, datetime]:
    """The most units any shelf's scale saw customers take beyond what the till was paid for that shelf, in a
    5-minute window starting on any minute: (units, shelf, window start)."""
    weight = {row.shelf_id: row.item_weight for row in store.store_inventory}
    net: defaultdict[str, Counter[datetime]] = defaultdict(Counter)  # shelf -> minute -> taken - paid
    for e in events.shelf_events:
        if e.event_type == "weight_change" and e.customer_id is not None and not e.by_staff:
            net[e.shelf_id][e.ts.replace(second=0)] += round(-e.weight_change / weight[e.shelf_id])
    for tx in events.pos_transactions:
        for item in tx.items:
            net[item.shelf_id][tx.ts.replace(second=0)] -= item.quantity
    largest = (0, "", DAY)
    for shelf_id, minutes in net.items():
        # a largest window starts on a minute that adds units (or a later start would be larger)
        for start in (m for m, units in minutes.items() if units > 0):
            units = sum(minutes[start + timedelta(minutes=k)] for k in range(5))
            largest = max(largest, (units, shelf_id, start))
    return largest


# --- fixtures ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def store() -> StoreData:
    return generate_store(SEED)


@pytest.fixture(scope="module")
def ordinary_day(store: StoreData) -> tuple[WorldState, WorldState, WorldEvents]:
    return a_day(World(store, SEED))


@pytest.fixture(scope="module")
def theft_day(store: StoreData) -> tuple[WorldState, WorldState, WorldEvents]:
    return a_day(World(store, SEED, scenarios=[Scenario(kind="theft", at=THEFT_AT)]))


# --- parsing ----------------------------------------------------------------------------------
def test_parse_scenarios_reads_the_setting_and_writes_it_back() -> None:
    text = "rush@2025-01-03T11:00, theft@2025-01-03T15:00"
    scenarios = parse_scenarios(text)
    assert scenarios == (Scenario(kind="rush", at=datetime(2025, 1, 3, 11)),
                         Scenario(kind="theft", at=datetime(2025, 1, 3, 15)))
    assert format_scenarios(scenarios) == "rush@2025-01-03T11:00,theft@2025-01-03T15:00"
    assert parse_scenarios(format_scenarios(scenarios)) == scenarios
    assert parse_scenarios("") == parse_scenarios("  ") == ()
    # a time with seconds or a zone: kept to the second, as naive UTC
    assert parse_scenarios("theft@2025-01-03T15:00:30+01:00") == (
        Scenario(kind="theft", at=datetime(2025, 1, 3, 14, 0, 30)),)
    assert str(Scenario(kind="rush", at=datetime(2025, 1, 3, 11, 0, 30))) == "rush@2025-01-03T11:00:30"
    assert Scenario(kind="rush", at=datetime(2025, 1, 3, 11, tzinfo=timezone.utc)).at == datetime(2025, 1, 3, 11)


def test_a_bare_kind_happens_at_its_default_hour_on_the_day_given() -> None:
    day = datetime(2025, 1, 7).date()
    assert parse_scenarios("rush,theft,rush@2025-01-02T09:30", default_day=day) == (
        Scenario(kind="rush", at=datetime(2025, 1, 7, 11)), Scenario(kind="theft", at=datetime(2025, 1, 7, 15)),
        Scenario(kind="rush", at=datetime(2025, 1, 2, 9, 30)))


@pytest.mark.parametrize(("text", "message"), [
    ("heist@2025-01-03T11:00", "scenario 'heist@2025-01-03T11:00': unknown kind 'heist' (known: rush, theft)"),
    ("rush@2025-01-03T11:00,theft@tomorrow", "scenario 'theft@tomorrow': bad time 'tomorrow' (expected e.g. "
                                             "theft@2025-01-03T11:00)"),
    ("rush@2025-13-03T11:00", "scenario 'rush@2025-13-03T11:00': bad time '2025-13-03T11:00'"),
    ("rush", "scenario 'rush': no time (expected kind@time, e.g. rush@2025-01-03T11:00)"),
    ("@2025-01-03T11:00", "scenario '@2025-01-03T11:00': unknown kind ''"),
])
def test_a_bad_scenario_is_named_in_one_line(text: str, message: str) -> None:
    with pytest.raises(ValueError) as raised:
        parse_scenarios(text)
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_two_scenarios_of_a_kind_in_one_minute_are_refused(store: StoreData) -> None:
    """Their customers would share ids; the same scenario given twice is one."""
    twice = Scenario(kind="theft", at=THEFT_AT)
    assert World(store, SEED, scenarios=[twice, twice]).scenarios == (twice,)
    with pytest.raises(ValueError, match="two scenarios of a kind in one minute"):
        World(store, SEED, scenarios=[twice, Scenario(kind="theft", at=THEFT_AT + timedelta(seconds=30))])


# --- without scenarios, nothing changes -------------------------------------------------------
def test_no_scenario_and_a_scenario_on_another_day_leave_the_day_as_it_was(
        store: StoreData, ordinary_day: tuple[WorldState, WorldState, WorldEvents]) -> None:
    _, final, events = ordinary_day
    next_day = [Scenario(kind="rush", at=RUSH_AT + timedelta(days=1)),
                Scenario(kind="theft", at=THEFT_AT + timedelta(days=1))]
    for scenarios in ((), next_day):
        _, again, again_events = a_day(World(store, SEED, scenarios=scenarios), step=timedelta(days=1))
        assert as_json(again_events) == as_json(events)
        assert again.model_dump() == final.model_dump()
    assert final.unpaid == {}


def test_before_a_scenario_the_day_is_as_it_was(store: StoreData,
                                                 ordinary_day: tuple[WorldState, WorldState, WorldEvents]) -> None:
    _, _, events = ordinary_day
    world = World(store, SEED, scenarios=[Scenario(kind="rush", at=RUSH_AT), Scenario(kind="theft", at=THEFT_AT)])
    _, before = world.advance(world.initial_state(DAY), RUSH_AT)
    assert as_json(before) == as_json(WorldEvents(*(
        [e for e in stream if e.ts <= RUSH_AT]
        for stream in (events.foot_traffic, events.shelf_events, events.pos_transactions))))


# --- rush -------------------------------------------------------------------------------------
def rush_window(store: StoreData, step: timedelta) -> tuple[WorldState, WorldEvents]:
    world = World(store, SEED, scenarios=[Scenario(kind="rush", at=RUSH_AT)])
    start, end = RUSH_AT - timedelta(hours=1), RUSH_AT + timedelta(hours=2)
    final, events = run(world, world.initial_state(start), every(start, end, step))
    return final, events


def test_a_rush_brings_its_customers_within_minutes(store: StoreData) -> None:
    final, events = rush_window(store, timedelta(hours=1))
    entries = {e.customer_id: e.ts for e in events.foot_traffic if e.event_type == "entry"}
    rush = {cid: ts for cid, ts in entries.items() if cid is not None and cid.startswith("R")}
    assert len(rush) == RUSH_CUSTOMERS
    assert all(RUSH_AT < ts <= RUSH_AT + timedelta(minutes=RUSH_MINUTES) for ts in rush.values())
    assert len(set(rush.values())) > RUSH_CUSTOMERS / 2  # spread, not one crowd on one second
    # the usual customers still come, and the rush's are ordinary customers: they pick, put back, pay
    assert len(entries) - len(rush) > 200
    moved = Counter(e.event_type for e in events.shelf_events if e.customer_id in rush)
    assert moved["pickup"] > RUSH_CUSTOMERS and moved["putback"] > 0
    assert moved["weight_change"] == moved["pickup"] + moved["putback"]
    paid = {t.customer_id for t in events.pos_transactions}
    left = {e.customer_id for e in events.foot_traffic if e.event_type == "exit"}
    assert len(paid & set(rush)) > RUSH_CUSTOMERS * 0.9
    assert paid & set(rush) <= left
    assert final.unpaid == {}


def test_a_rush_is_the_same_whatever_the_ticks(store: StoreData) -> None:
    final, events = rush_window(store, timedelta(hours=1))
    ticked, ticked_events = rush_window(store, timedelta(minutes=7))
    assert as_json(ticked_events) == as_json(events)
    assert ticked.model_dump() == final.model_dump()


def test_a_rush_is_drawn_from_the_seed(store: StoreData) -> None:
    def rush_entries(seed: int) -> list[datetime]:
        world = World(store, seed, scenarios=[Scenario(kind="rush", at=RUSH_AT)])
        _, events = world.advance(world.initial_state(RUSH_AT), RUSH_AT + timedelta(minutes=RUSH_MINUTES))
        return [e.ts for e in events.foot_traffic
                if e.event_type == "entry" and e.customer_id is not None and e.customer_id.startswith("R")]

    other = rush_entries(SEED + 1)
    assert rush_entries(SEED) == rush_entries(SEED) != other
    assert len(other) == RUSH_CUSTOMERS


def test_a_rush_after_closing_time_brings_no_one() -> None:
    store = tiny_store([shelf("A", 500)])
    world = World(store, SEED, WorldConfig(customers_per_day=50),
                  scenarios=[Scenario(kind="rush", at=datetime(2025, 1, 1, 20, 55))])
    _, events = world.advance(world.initial_state(DAY), DAY + timedelta(days=1))
    rush = [e for e in events.foot_traffic if e.customer_id is not None and e.customer_id.startswith("R")]
    entries = [e for e in rush if e.event_type == "entry"]
    assert 0 < len(entries) < RUSH_CUSTOMERS  # only those entering before 21:00
    assert all(e.ts <= datetime(2025, 1, 1, 21) for e in rush)


# --- theft ------------------------------------------------------------------------------------
THIEF = f"T{THEFT_AT:%Y%m%d%H%M}"


def test_a_thief_takes_twelve_units_from_the_most_stocked_shelf_and_pays_nothing(
        store: StoreData, ordinary_day: tuple[WorldState, WorldState, WorldEvents],
        theft_day: tuple[WorldState, WorldState, WorldEvents]) -> None:
    _, final, events = theft_day
    initial, _, ordinary_events = ordinary_day  # until the thief enters, the day is the ordinary day
    stock = dict(initial.shelf_stock)
    for move in moves(ordinary_events):
        if move.ts < THEFT_AT:
            stock[move.shelf_id] -= signed(move)
    target = min(stock, key=lambda shelf_id: (-stock[shelf_id], shelf_id))

    thief = of(events, THIEF)
    assert [(e.event_type, e.ts) for e in thief.foot_traffic] == [
        ("entry", THEFT_AT), ("exit", THEFT_AT + timedelta(minutes=5))]
    assert thief.pos_transactions == []
    pickups = [e for e in thief.shelf_events if e.event_type == "pickup"]
    readings = [e for e in thief.shelf_events if e.event_type == "weight_change"]
    assert [e.quantity for e in pickups] == [3, 3, 3, 3] and sum(e.quantity for e in pickups) == THEFT_UNITS
    assert {e.shelf_id for e in thief.shelf_events} == {target}
    assert [e.ts for e in pickups] == [THEFT_AT + timedelta(minutes=n) for n in range(1, 5)]
    weight = next(r.item_weight for r in store.store_inventory if r.shelf_id == target)
    assert [(e.ts, e.weight_change) for e in readings] == [(e.ts, -3 * weight) for e in pickups]
    assert final.unpaid == {target: THEFT_UNITS}
    assert final.customers == {}


def test_the_theft_is_the_same_whatever_the_ticks(store: StoreData) -> None:
    start, end = THEFT_AT - timedelta(hours=1), THEFT_AT + timedelta(hours=1)
    results = []
    for step in (timedelta(hours=1), timedelta(minutes=7, seconds=13), timedelta(minutes=1)):
        world = World(store, SEED, scenarios=[Scenario(kind="theft", at=THEFT_AT)])
        final, events = run(world, world.initial_state(start), every(start, end, step))
        results.append((as_json(events), final.model_dump()))
    assert results[0] == results[1] == results[2]
    assert sum(results[0][1]["unpaid"].values()) == THEFT_UNITS


def test_a_theft_loses_no_unit(theft_day: tuple[WorldState, WorldState, WorldEvents]) -> None:
    """Per shelf: opening stock == shelf + sold + carts + unpaid; the lots keep the stolen units (as the twin's
    do: it takes units off lots only at the till)."""
    initial, final, _ = theft_day
    held = in_carts(final)
    for shelf_id, opening in initial.shelf_stock.items():
        unpaid = final.unpaid.get(shelf_id, 0)
        assert final.shelf_stock[shelf_id] + final.sold.get(shelf_id, 0) + held[shelf_id] + unpaid == opening
        assert sum(lot.quantity for lot in final.shelf_lots[shelf_id]) == (
            final.shelf_stock[shelf_id] + held[shelf_id] + unpaid)


def test_the_ledger_places_the_stolen_units_and_the_twins_lots_match_the_worlds(
        store: StoreData, theft_day: tuple[WorldState, WorldState, WorldEvents]) -> None:
    """The twin's rules applied to the theft day's events, as the Spark apps apply them; then the sim's ledger."""
    _, final, events = theft_day
    start = initial_states(store, DAY)
    shelves = {s.shelf_id: s for s in start.shelves}
    for event in events.shelf_events:
        shelves[event.shelf_id], _ = apply_shelf_event(shelves[event.shelf_id], event)
    lots: dict[str, list[ShelfBatchState]] = {}
    for lot in start.shelf_lots:
        lots.setdefault(lot.shelf_id, []).append(lot)
    for sale in events.pos_transactions:
        apply_sale(lots, sale)
    twin = Twin(list(shelves.values()), [lot for shelf_lots in lots.values() for lot in shelf_lots],
                start.warehouse, start.wh_lots)
    assert {s.shelf_id: s.current_stock for s in twin.shelves} == final.shelf_stock
    assert {(lot.shelf_id, lot.batch_code): lot.batch_quantity_store for lot in twin.shelf_lots
            if lot.batch_quantity_store} == {(shelf_id, lot.batch_code): lot.quantity
                                             for shelf_id, shelf_lots in final.shelf_lots.items() for lot in shelf_lots}
    books = ledger(store, twin, final, events.pos_transactions, Moves([], []))
    assert books.unpaid == {stolen_from(final): THEFT_UNITS}
    assert books.problems() == []
    forgotten = ledger(store, twin, final.model_copy(update={"unpaid": {}}), events.pos_transactions, Moves([], []))
    assert [problem.split(":")[0] for problem in forgotten.problems()] == [stolen_from(final)]


def test_a_thief_takes_what_there_is() -> None:
    """Shelves of 5 units (a tie: the first shelf_id), no other customer: 3 + 2 units, then nothing."""
    store = tiny_store([shelf("B", 5), shelf("A", 5), shelf("C", 4)])
    world = World(store, SEED, WorldConfig(customers_per_day=0.001), scenarios=[Scenario(kind="theft", at=THEFT_AT)])
    final, events = world.advance(world.initial_state(DAY), DAY + timedelta(days=1))
    assert [(e.event_type, e.shelf_id, e.quantity) for e in events.shelf_events] == [
        ("pickup", "A", 3), ("weight_change", "A", 3), ("pickup", "A", 2), ("weight_change", "A", 2)]
    assert final.unpaid == {"A": 5} and final.shelf_stock == {"A": 0, "B": 5, "C": 4}
    assert events.pos_transactions == [] and len(events.foot_traffic) == 2


def test_stock_ledger_counts_what_left_unpaid() -> None:
    books = StockLedger(initial={"S1": 20}, on_shelf={"S1": 5}, sold={"S1": 3}, unpaid={"S1": 12})
    assert books.problems() == []
    assert StockLedger(initial={"S1": 20}, on_shelf={"S1": 5}, unpaid={"S1": 12}).problems() == [
        "S1: initial+received 20 != shelf 5 + left unpaid 12"]


# --- what the pulse's shrinkage alert will see ------------------------------------------------
def test_an_ordinary_day_shows_no_shrinkage_and_a_theft_day_does(
        store: StoreData, ordinary_day: tuple[WorldState, WorldState, WorldEvents],
        theft_day: tuple[WorldState, WorldState, WorldEvents]) -> None:
    ordinary, _, _ = largest_shrinkage(store, ordinary_day[2])
    units, shelf_id, start = largest_shrinkage(store, theft_day[2])
    assert ordinary < SHRINKAGE_MIN_UNITS
    assert units >= SHRINKAGE_MIN_UNITS
    assert shelf_id == stolen_from(theft_day[1])
    assert THEFT_AT - WINDOW < start <= THEFT_AT + timedelta(minutes=4)


# --- the CLI ----------------------------------------------------------------------------------
@pytest.fixture
def sim_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[dict[str, object]]]:
    """`smartshelf sim` with run_sim recorded instead of run: nothing starts."""
    import smartshelf.runtime.sim as sim
    from smartshelf.settings import get_settings

    calls: list[dict[str, object]] = []

    def fake_run_sim(base: Settings, days: int, *args: object, **kwargs: object) -> dict[str, object]:
        calls.append({"base": base, "days": days, **kwargs})
        return {"checks_ok": True}

    monkeypatch.setattr(sim, "run_sim", fake_run_sim)
    monkeypatch.delenv("SIM_SCENARIOS", raising=False)
    get_settings.cache_clear()
    yield calls
    get_settings.cache_clear()


def invoke(*args: str) -> Result:
    from smartshelf.cli import app

    return CliRunner().invoke(app, ["sim", *args])


def test_sim_passes_its_scenarios_to_the_run(sim_calls: list[dict[str, object]]) -> None:
    result = invoke("--days", "3", "--scenario", "rush", "--scenario", "theft@2025-01-02T16:30")
    assert result.exit_code == 0, result.output
    assert sim_calls[0]["days"] == 3 and sim_calls[0]["scenarios"] == ["rush", "theft@2025-01-02T16:30"]


@pytest.mark.parametrize(("args", "env", "message"), [
    (["--scenario", "heist"], "", "--scenario: scenario 'heist': unknown kind 'heist' (known: rush, theft)"),
    (["--scenario", "rush@noon"], "", "--scenario: scenario 'rush@noon': bad time 'noon'"),
    ([], "theft@later", "SIM_SCENARIOS='theft@later': scenario 'theft@later': bad time 'later'"),
])
def test_sim_refuses_a_bad_scenario_in_one_line_before_starting(
        sim_calls: list[dict[str, object]], monkeypatch: pytest.MonkeyPatch, args: list[str], env: str,
        message: str) -> None:
    if env:
        monkeypatch.setenv("SIM_SCENARIOS", env)
    result = invoke(*args)
    error = result.exception
    assert isinstance(error, SmartShelfError) and str(error).startswith(message), error
    assert "\n" not in str(error)
    assert sim_calls == []
