"""The pulse's pure core (smartshelf.pulse): signals per event, window sums as Spark's window operator gives
them, and the alerts of the scored windows — none on quiet days, one per rush or theft, whatever the batching."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from smartshelf import pulse
from smartshelf.pulse import ItemFacts, PulseRules, PulseState, Signal, signals_of, window_starts, window_sums
from smartshelf.schemas import Alert, FootTrafficEvent, PosItem, PosTransaction, PulseWindow, ShelfEvent
from smartshelf.world import World, parse_scenarios
from smartshelf.datagen import generate_store

ITEMS = {"S1": ItemFacts("Dairy", 250), "S2": ItemFacts("Bakery", 400)}
T = datetime(2025, 1, 1, 10, 0, 30)


def test_each_event_gives_its_signals() -> None:
    entry = FootTrafficEvent(event_id="e", event_type="entry", customer_id="c", ts=T)
    basket = PosTransaction(transaction_id="t", customer_id="c", ts=T, total=7.5, items=[
        PosItem(shelf_id="S1", quantity=3, unit_price=2.5, discount=0, line_total=7.5),
        PosItem(shelf_id="unknown", quantity=1, unit_price=1, discount=0, line_total=1)])
    taken = ShelfEvent(event_id="w", event_type="weight_change", shelf_id="S2", quantity=2, weight_change=-800,
                       customer_id="c", ts=T)
    refill = taken.model_copy(update={"customer_id": None, "weight_change": 4000})
    pickup = taken.model_copy(update={"event_type": "pickup"})
    assert [s[:2] + (float(s.value),) for s in signals_of(entry, ITEMS)] == [("entries", "store", 1.0)]
    assert [s[:2] + (float(s.value),) for s in signals_of(basket, ITEMS)] == [
        ("units_sold", "store", 3.0), ("units_sold", "Dairy", 3.0), ("revenue", "Dairy", 7.5), ("units_paid", "S1", 3.0)]
    assert [s[:2] + (float(s.value),) for s in signals_of(taken, ITEMS)] == [
        ("weight_changes", "Bakery", -800.0), ("units_taken", "S2", 2.0)]
    assert [s.metric for s in signals_of(refill, ITEMS)] == ["weight_changes"]  # staff moves are accounted for
    assert signals_of(pickup, ITEMS) == []  # the scale's reading counts, not the move it follows


@pytest.mark.parametrize(("ts", "width", "slide", "starts"), [
    (datetime(2025, 1, 1, 10, 0, 30), 1, 1, ["10:00"]),
    (datetime(2025, 1, 1, 10, 2, 0), 5, 1, ["09:58", "09:59", "10:00", "10:01", "10:02"]),
    (datetime(2025, 1, 1, 10, 2, 59), 5, 1, ["09:58", "09:59", "10:00", "10:01", "10:02"]),
])
def test_window_starts_are_sparks(ts: datetime, width: int, slide: int, starts: list[str]) -> None:
    found = window_starts(ts, timedelta(minutes=width), timedelta(minutes=slide))
    assert [f"{s:%H:%M}" for s in found] == starts


def test_window_sums_count_each_signal_in_every_window_that_holds_it() -> None:
    signals = [Signal("entries", "store", T + timedelta(minutes=m), pulse.Decimal(1)) for m in range(3)]
    minute = window_sums(signals, 1, 1)
    assert [(w.window_start.minute, w.value, w.events) for w in minute] == [(0, 1, 1), (1, 1, 1), (2, 1, 1)]
    sliding = {w.window_start: w.value for w in window_sums(signals, 5, 1)}
    assert sliding[datetime(2025, 1, 1, 10, 0)] == 3 and sliding[datetime(2025, 1, 1, 9, 56)] == 1


def _entries_window(end: datetime, value: float) -> PulseWindow:
    return PulseWindow(width_minutes=5, metric="entries", subject="store", window_start=end - timedelta(minutes=5),
                       window_end=end, value=value, events=int(value))


def _days_of_entries(levels: list[list[float]]) -> list[PulseWindow]:
    """5-minute entry windows ending 10:01..10:59, one list of values per day."""
    return [_entries_window(datetime(2025, 1, 1 + day, 10, 1) + timedelta(minutes=n), value)
            for day, values in enumerate(levels) for n, value in enumerate(values)]


QUIET = [10.0 + (n * 7) % 5 for n in range(59)]
RULES = PulseRules(z_threshold=4, min_history_days=2)


def test_no_anomaly_without_enough_history_and_none_on_quiet_days() -> None:
    spike_on_day_two = [*QUIET[:30], 60.0, *QUIET[31:]]
    _, alerts = pulse.evaluate(PulseState(), _days_of_entries([QUIET, spike_on_day_two, QUIET]), [], RULES)
    assert alerts == []  # day two has one day of history; day three is quiet


def test_a_spike_raises_one_alert_on_its_rising_edge() -> None:
    rush = [*QUIET[:30], 40.0, 60.0, 55.0, *QUIET[33:]]
    scored, alerts = pulse.evaluate(PulseState(), _days_of_entries([QUIET, QUIET, rush]), [], RULES)
    assert [(a.alert_type, a.metric, a.subject, a.ts) for a in alerts] == [
        ("anomaly", "entries", "store", datetime(2025, 1, 3, 10, 31))]
    assert alerts[0].severity == "critical" and alerts[0].threshold == pytest.approx(11.9, abs=0.1)
    day_three = [w for w in scored if w.window_end.day == 3 and w.metric == "entries"]
    assert all(w.z_score is not None and w.expected is not None for w in day_three)
    assert [w for w in scored if w.window_end.day == 1][0].z_score is None


def test_a_category_that_stops_selling_is_scored_at_zero() -> None:
    def sold(day: int, n: int, value: float) -> PulseWindow:
        end = datetime(2025, 1, 1 + day, 10, 1) + timedelta(minutes=n)
        return PulseWindow(width_minutes=5, metric="units_sold", subject="Dairy", window_start=end - timedelta(
            minutes=5), window_end=end, value=value, events=1)

    # a busy category on two days; on the third it sells until 10:20 and then never again (no window at all)
    windows = [sold(day, n, 30.0 + n % 3) for day in range(2) for n in range(59)] + [sold(2, n, 31.0) for n in range(20)]
    entries = _days_of_entries([QUIET, QUIET, QUIET])  # the store is open: its windows close every minute
    _, alerts = pulse.evaluate(PulseState(), [*windows, *entries], ["Bakery", "Dairy"], RULES)
    assert [(a.metric, a.subject, a.value, a.ts) for a in alerts] == [
        ("units_sold", "Dairy", 0.0, datetime(2025, 1, 3, 10, 21))]
    assert "below" in alerts[0].message


def test_the_alerts_do_not_depend_on_how_windows_are_batched() -> None:
    rush = [*QUIET[:30], 40.0, 60.0, 55.0, *QUIET[33:], ]
    windows = _days_of_entries([QUIET, QUIET, rush])
    whole = pulse.evaluate(PulseState(), windows, ["Dairy"], RULES)
    state, parts = PulseState(), ([], [])
    for first in range(0, len(windows), 17):  # batches of 17, in reverse order inside each batch
        published, alerts = pulse.evaluate(state, list(reversed(windows[first:first + 17])), ["Dairy"], RULES)
        parts[0].extend(published)
        parts[1].extend(alerts)
    assert parts == whole


def test_each_store_of_a_chain_is_scored_against_its_own_history_alone() -> None:
    """A rush in store-002 on day three, over the same quiet days as store-001's: store-002 raises it, store-001
    raises exactly what it raises alone, and a store the twin does not run is not scored."""
    rush = [*QUIET[:30], 40.0, 60.0, 55.0, *QUIET[33:]]

    def of(store_id: str, windows: list[PulseWindow]) -> list[PulseWindow]:
        return [window.model_copy(update={"store_id": store_id}) for window in windows]

    first, second = of("store-001", _days_of_entries([QUIET, QUIET, QUIET])), of("store-002", _days_of_entries(
        [QUIET, QUIET, rush]))
    alone = pulse.evaluate(PulseState(), first, ["Dairy"], RULES)
    state = pulse.ChainPulseState()
    categories = {"store-001": ["Dairy"], "store-002": ["Dairy"]}
    published, alerts = pulse.evaluate_chain(state, [*second, *first, *of("store-009", first)], categories, RULES)
    assert [(a.store_id, a.metric, a.ts) for a in alerts] == [("store-002", "entries", datetime(2025, 1, 3, 10, 31))]
    assert [w for w in published if w.store_id == "store-001"] == alone[0]
    assert sorted(state.stores) == sorted(categories)
    assert len([w for w in published if w.store_id == "store-002"]) == len(alone[0])
    day_three = {store_id: state.stores[store_id].history["entries|store|10"]["2025-01-03"] for store_id in categories}
    assert day_three["store-002"][1] == day_three["store-001"][1] + sum(rush) - sum(QUIET)  # each its own history


def _shelf(metric: str, shelf: str, end: datetime, value: float) -> PulseWindow:
    return PulseWindow(width_minutes=5, metric=metric, subject=shelf, window_start=end - timedelta(minutes=5),  # type: ignore[arg-type]
                       window_end=end, value=value, events=1)


def test_shrinkage_is_units_taken_beyond_units_paid_once_per_episode() -> None:
    end = datetime(2025, 1, 1, 15, 5)
    windows = [_shelf("units_taken", "S1", end, 12), _shelf("units_paid", "S1", end, 3),  # 9 unexplained
               _shelf("units_taken", "S2", end + timedelta(minutes=1), 12),
               _shelf("units_taken", "S2", end + timedelta(minutes=2), 12),  # the same episode
               _shelf("units_taken", "S1", end + timedelta(minutes=3), 3),
               _shelf("units_taken", "S2", end + timedelta(minutes=4), 2),  # back to normal
               _shelf("units_taken", "S2", end + timedelta(minutes=5), 25)]  # a new episode
    published, alerts = pulse.evaluate(PulseState(), windows, [], PulseRules(shrinkage_min_units=10))
    assert [(a.shelf_id, a.value, a.severity, a.ts.minute) for a in alerts] == [
        ("S2", 12, "warning", 6), ("S2", 25, "critical", 10)]
    assert not [w for w in published if w.metric in ("units_taken", "units_paid")]  # shelf windows stay inside


def test_history_keeps_the_last_days_only() -> None:
    state = PulseState()
    days = [[10.0] * 3 for _ in range(20)]
    pulse.evaluate(state, _days_of_entries(days), [], PulseRules(history_days=5))
    assert sorted(state.history) == ["entries|store|10", "units_sold|store|10"]  # the hour of the last minute
    assert sorted(state.history["entries|store|10"]) == [f"2025-01-{day:02d}" for day in range(15, 21)]


def test_a_simulated_rush_day_raises_the_rush_and_quiet_days_raise_nothing() -> None:
    """The world's own three days through the reference windows: the injected rush is the only anomaly."""
    store = generate_store(42)
    rush_at = datetime(2025, 1, 3, 11)
    world = World(store, 42, scenarios=parse_scenarios(f"rush@{rush_at.isoformat()}"))
    state = world.initial_state(datetime(2025, 1, 1, 8))
    items = {row.shelf_id: ItemFacts(row.item_category, row.item_weight) for row in store.store_inventory}
    signals = []
    for day in range(3):
        state, events = world.advance(state, datetime(2025, 1, 2 + day, 0))
        signals += [s for records in events.by_topic().values() for e in records for s in signals_of(e, items)]
    categories = sorted({f.category for f in items.values()})
    _, alerts = pulse.evaluate(PulseState(), window_sums(signals, 5, 1), categories, PulseRules())
    anomalies = [(a.metric, a.subject) for a in alerts if a.alert_type == "anomaly"]
    assert ("entries", "store") in anomalies
    rush_alert = next(a for a in alerts if a.metric == "entries")
    assert rush_at < rush_alert.ts <= rush_at + timedelta(minutes=5)
    assert all(a.ts.date() == rush_at.date() and a.ts >= rush_at for a in alerts), [a.message for a in alerts]


def test_each_scenario_is_matched_with_the_first_alert_that_shows_it() -> None:
    from smartshelf.runtime.sim import scenario_alerts

    at = datetime(2025, 1, 3, 11)
    entries = Alert(alert_id="a", alert_type="anomaly", location="store", severity="warning", metric="entries",
                          subject="store", message="m", ts=at + timedelta(minutes=2))
    early = entries.model_copy(update={"alert_id": "early", "ts": at - timedelta(minutes=1)})
    theft = entries.model_copy(update={"alert_id": "t", "alert_type": "shrinkage", "metric": "units_taken",
                                       "ts": at + timedelta(hours=4, minutes=5)})
    found = scenario_alerts(parse_scenarios("rush@2025-01-03T11:00,theft@2025-01-03T15:00"), [early, entries, theft])
    assert found == [{"scenario": "rush@2025-01-03T11:00", "alert": "a", "minutes_to_alert": 2.0},
                     {"scenario": "theft@2025-01-03T15:00", "alert": "t", "minutes_to_alert": 5.0}]
    assert scenario_alerts(parse_scenarios("theft@2025-01-03T16:00"), [theft])[0]["alert"] is None


def test_a_window_closes_a_tick_late_in_fast_mode_and_30_wall_seconds_later_at_demo_speed() -> None:
    from smartshelf.settings import Settings
    from smartshelf.streaming.pulse import watermark_delay

    fast = Settings(_env_file=None).model_copy(update={"sim_mode": "fast", "step_seconds": 3600})  # type: ignore[call-arg]
    demo = Settings(_env_file=None).model_copy(update={"sim_mode": "demo", "step_seconds": 1, "time_multiplier": 10})  # type: ignore[call-arg]
    assert watermark_delay(fast) == timedelta(hours=1, minutes=2)
    assert watermark_delay(demo) == timedelta(minutes=7, seconds=1)
