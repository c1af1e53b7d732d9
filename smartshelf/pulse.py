"""The store's pulse: what the sensors saw per event-time window, and the alerts it raises. Pure.

Signals. Each sensor event is one or more signals (metric, subject, time, value), `signals_of`:
- a foot-traffic entry or exit counts 1 for the store (`entries`, `exits`);
- a till line counts its units for the store and for its item's category (`units_sold`), its revenue for the
  category (`revenue`), and its units as paid for its shelf (`units_paid`);
- a scale reading counts its grams for its item's category (`weight_changes`) and, when a customer moved the
  items, the units it shows taken from its shelf (`units_taken`: minus the grams over the item's weight, so a
  putback counts negative).
Spark sums them per window with its own window operators (smartshelf.streaming.pulse): 1-minute tumbling and
5-minute sliding every minute, on event time. `window_sums` is the same sum in Python, the tests' reference.
Values are summed as decimals (3 places), so a window's value does not depend on the order of the sum.

Alerts (`evaluate`), on closed 5-minute windows taken in order of window end, so what is raised does not depend
on how the windows came in batches:
- anomaly: the store's entries and units sold (a rise or a fall) and each category's units sold (a fall: it
  stopped selling), as a z-score against the windows of the same hour of the day on earlier days (at least
  `min_history_days` of them; the last `history_days` kept), and at least `min_deviation` people or units away
  from that level. Sales come in baskets, so a small count has heavy tails: a z-score alone raised ~30 false
  alerts a day on the generated store, and a category's rises a dozen (`WATCHED`). A category with no sale in
  a window the store was open counts 0;
- shrinkage: a shelf whose customers took (by its scale) at least `shrinkage_min_units` more units than the
  till was paid for, within one window: a theft, or a sale not scanned. Sales lag the pickups by a visit
  (~14 minutes), so a single customer can reach a few units; the default threshold sits above what a normal day
  reaches (tests/unit/test_scenarios.py).
Both are raised on the edge: once when a subject turns anomalous, again only after a window back to normal
(for an anomaly, |z| under half the threshold).

A chain (`evaluate_chain`): each store's windows are scored against that store's own history and categories only,
so what a store raises does not depend on the other stores running beside it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import NamedTuple

from pydantic import BaseModel, Field

from smartshelf.schemas import Alert, FootTrafficEvent, PosTransaction, PulseMetric, PulseWindow, ShelfEvent

TUMBLING_MINUTES = 1
SLIDING_MINUTES = 5
SLIDE_MINUTES = 1
STORE = "store"
# the metrics whose subject is a shelf: they feed the shrinkage rule and are not published (one window per active
# shelf and minute would outweigh everything else)
SHELF_METRICS = frozenset({"units_taken", "units_paid"})
PULSE_ALERT_TYPES = ("anomaly", "shrinkage")


class Watched(NamedTuple):
    """A metric scored for anomalies, for the store or for each category, and in which directions."""

    metric: str
    per_category: bool
    above: bool  # a rise is an anomaly as well as a fall (else a fall only)


# A category's sales rise in baskets (one customer taking five of an item is z +4.5 where 0.5 is usual): on a
# 3-day run a rise per category raised 45 alerts on the third day, a dozen of them unrelated to anything
# injected, so a category is watched for a fall only (it stopped selling); the store's sales for both
WATCHED = (Watched("entries", False, True), Watched("units_sold", False, True), Watched("units_sold", True, False))
PLACES = Decimal("0.001")


class ItemFacts(NamedTuple):
    category: str
    item_weight: int


class Signal(NamedTuple):
    metric: PulseMetric
    subject: str
    ts: datetime
    value: Decimal


def signals_of(event: BaseModel, items: Mapping[str, ItemFacts]) -> list[Signal]:
    """The signals of one sensor event; an event about a shelf the store does not list gives none."""
    if isinstance(event, FootTrafficEvent):
        return [Signal("entries" if event.event_type == "entry" else "exits", STORE, event.ts, Decimal(1))]
    if isinstance(event, PosTransaction):
        found = []
        for line in event.items:
            if line.shelf_id in items:
                category = items[line.shelf_id].category
                found += [Signal("units_sold", STORE, event.ts, Decimal(line.quantity)),
                          Signal("units_sold", category, event.ts, Decimal(line.quantity)),
                          Signal("revenue", category, event.ts, _decimal(line.line_total)),
                          Signal("units_paid", line.shelf_id, event.ts, Decimal(line.quantity))]
        return found
    if isinstance(event, ShelfEvent) and event.event_type == "weight_change" and event.shelf_id in items:
        facts = items[event.shelf_id]
        grams = _decimal(event.weight_change)
        found = [Signal("weight_changes", facts.category, event.ts, grams)]
        if not event.by_staff:  # staff moves are restocks and removals, accounted for by their own records
            found.append(Signal("units_taken", event.shelf_id, event.ts, _decimal(-grams / facts.item_weight)))
        return found
    return []


def _decimal(value: float | Decimal) -> Decimal:
    return Decimal(str(value)).quantize(PLACES)


def window_starts(ts: datetime, width: timedelta, slide: timedelta) -> list[datetime]:
    """The starts of the windows [start, start + width) that hold `ts`, starts on multiples of `slide` since
    the epoch (Spark's `window`)."""
    epoch = datetime(1970, 1, 1)
    last = epoch + (ts - epoch) // slide * slide
    starts = []
    start = last
    while start > ts - width:
        starts.append(start)
        start -= slide
    return sorted(starts)


def window_sums(signals: Iterable[Signal], width_minutes: int, slide_minutes: int) -> list[PulseWindow]:
    """Every window's sum and count of signals, as Spark's grouped window aggregate gives them."""
    width, slide = timedelta(minutes=width_minutes), timedelta(minutes=slide_minutes)
    sums: dict[tuple[datetime, str, str], tuple[Decimal, int]] = {}
    for signal in signals:
        for start in window_starts(signal.ts, width, slide):
            key = (start, signal.metric, signal.subject)
            total, count = sums.get(key, (Decimal(0), 0))
            sums[key] = (total + signal.value, count + 1)
    return [PulseWindow(width_minutes=width_minutes, metric=metric, subject=subject,  # type: ignore[arg-type]
                        window_start=start, window_end=start + width, value=float(total), events=count)
            for (start, metric, subject), (total, count) in sorted(sums.items())]


@dataclass(frozen=True)
class PulseRules:
    z_threshold: float = 4.0
    min_history_days: int = 2
    history_days: int = 14
    shrinkage_min_units: int = 10
    min_deviation: float = 10.0


class PulseState(BaseModel):
    """What the alerting remembers between batches (smartshelf.streaming.pulse commits it per batch)."""

    # "metric|subject|hour" -> day (ISO) -> [windows, sum, sum of squares]
    history: dict[str, dict[str, list[float]]] = Field(default_factory=dict)
    anomalous: list[str] = Field(default_factory=list)  # "metric|subject" whose last window was anomalous
    shrinking: list[str] = Field(default_factory=list)  # shelves whose last window showed shrinkage


class ChainPulseState(BaseModel):
    """Each store's PulseState, by store id."""

    stores: dict[str, PulseState] = Field(default_factory=dict)


class Baseline(NamedTuple):
    days: int
    mean: float
    spread: float


def baseline(state: PulseState, metric: str, subject: str, at: datetime) -> Baseline | None:
    """The level of windows whose last minute fell in `at`'s hour on days before `at`'s, or None. The
    spread is at least the square root of the mean: these are counts, and a few days of history can
    underestimate their noise."""
    per_day = state.history.get(_history_key(metric, subject, at.hour), {})
    earlier = [stats for day, stats in per_day.items() if date.fromisoformat(day) < at.date()]
    count = sum(s[0] for s in earlier)
    if not count:
        return None
    mean = sum(s[1] for s in earlier) / count
    variance = max(sum(s[2] for s in earlier) / count - mean * mean, 0.0)
    return Baseline(len(earlier), mean, math.sqrt(max(variance, mean, 1.0)))


def _last_minute(window: PulseWindow) -> datetime:
    """The window's last minute: its hour is the window's hour of the day. The store's closing (every customer
    leaves and pays at once) then falls in the windows of one hour, every day alike."""
    return window.window_end - timedelta(minutes=SLIDE_MINUTES)


def _history_key(metric: str, subject: str, hour: int) -> str:
    return f"{metric}|{subject}|{hour:02d}"


def _remember(state: PulseState, window: PulseWindow, rules: PulseRules) -> None:
    last_minute = _last_minute(window)
    per_day = state.history.setdefault(_history_key(window.metric, window.subject, last_minute.hour), {})
    day = last_minute.date().isoformat()
    n, total, squares = per_day.get(day, [0.0, 0.0, 0.0])
    per_day[day] = [n + 1, total + window.value, squares + window.value * window.value]
    oldest = (last_minute.date() - timedelta(days=rules.history_days)).isoformat()
    for old in [d for d in per_day if d < oldest]:
        del per_day[old]


def evaluate(state: PulseState, windows: Sequence[PulseWindow], categories: Sequence[str], rules: PulseRules
             ) -> tuple[list[PulseWindow], list[Alert]]:
    """Score the closed sliding windows (any order; taken by window end) and raise the alerts; returns the
    windows to publish (store and category windows, anomaly metrics with their expected level and z-score)
    and the alerts. Updates `state`."""
    published: list[PulseWindow] = []
    alerts: list[Alert] = []
    by_end: dict[datetime, list[PulseWindow]] = {}
    for window in windows:
        by_end.setdefault(window.window_end, []).append(window)
    for end in sorted(by_end):
        group = _zero_filled(by_end[end], categories)
        for window in group:
            if window.metric in SHELF_METRICS:
                continue
            watched = _watched(window)
            if watched is not None:
                window, alert = _score(state, window, watched, rules)
                alerts += [alert] if alert else []
                _remember(state, window, rules)
            published.append(window)
        alerts += _shrinkage(state, group, rules)
    return published, alerts


def evaluate_chain(state: ChainPulseState, windows: Sequence[PulseWindow], categories: Mapping[str, Sequence[str]],
                   rules: PulseRules) -> tuple[list[PulseWindow], list[Alert]]:
    """`evaluate` for each store's windows (`categories`: each store's), with its own state; the alerts say their
    store. A window of a store not in `categories` is not scored (the twin does not run it)."""
    by_store: dict[str, list[PulseWindow]] = {}
    for window in windows:
        if window.store_id in categories:
            by_store.setdefault(window.store_id, []).append(window)
    published: list[PulseWindow] = []
    alerts: list[Alert] = []
    for store_id in sorted(by_store):
        scored, raised = evaluate(state.stores.setdefault(store_id, PulseState()), by_store[store_id],
                                  categories[store_id], rules)
        published += [window.model_copy(update={"store_id": store_id}) for window in scored]
        alerts += [alert.model_copy(update={"store_id": store_id}) for alert in raised]
    return published, alerts


def _watched(window: PulseWindow) -> Watched | None:
    return next((w for w in WATCHED if w.metric == window.metric and w.per_category == (window.subject != STORE)),
                None)


def _zero_filled(group: list[PulseWindow], categories: Sequence[str]) -> list[PulseWindow]:
    """The windows ending together, with a 0 for every watched metric and subject that had no signal."""
    sample = group[0]
    have = {(w.metric, w.subject) for w in group}
    missing = [PulseWindow(width_minutes=sample.width_minutes, metric=watched.metric, subject=subject,  # type: ignore[arg-type]
                           window_start=sample.window_start, window_end=sample.window_end, value=0.0, events=0)
               for watched in WATCHED for subject in (categories if watched.per_category else [STORE])
               if (watched.metric, subject) not in have]
    return sorted([*group, *missing], key=lambda w: (w.metric, w.subject))


def _score(state: PulseState, window: PulseWindow, watched: Watched, rules: PulseRules
           ) -> tuple[PulseWindow, Alert | None]:
    level = baseline(state, window.metric, window.subject, _last_minute(window))
    if level is None or level.days < rules.min_history_days:
        return window, None
    z = round((window.value - level.mean) / level.spread, 3)
    scored = window.model_copy(update={"expected": round(level.mean, 3), "z_score": z})
    key = f"{window.metric}|{window.subject}"
    was = key in state.anomalous
    # hysteresis: an anomaly ends only once |z| is back under half the threshold, so a spike that wavers
    # around the threshold is one alert
    departure = abs(z) if watched.above else -z  # a fall only, where only a fall is watched
    anomalous = departure >= rules.z_threshold / 2 if was else \
        departure >= rules.z_threshold and abs(window.value - level.mean) >= rules.min_deviation
    state.anomalous = sorted((set(state.anomalous) | {key}) if anomalous else (set(state.anomalous) - {key}))
    if not anomalous or was:
        return scored, None
    direction = "above" if z > 0 else "below"
    what = {"entries": "entries", "units_sold": "units sold"}[window.metric]
    what = what if window.subject == STORE else f"{window.subject} {what}"
    return scored, Alert(
        alert_id=f"anomaly|{key}|{window.window_end.isoformat()}", alert_type="anomaly", location="store",
        severity="critical" if abs(z) >= 2 * rules.z_threshold else "warning", metric=window.metric,
        subject=window.subject, value=window.value, threshold=round(level.mean, 3), ts=window.window_end,
        message=(f"{what} {window.value:g} in the 5 minutes to {window.window_end:%H:%M}, {direction} the "
                 f"{level.mean:.1f} expected at this hour (z {z:+.1f} over {level.days} earlier days)"))


def _shrinkage(state: PulseState, group: list[PulseWindow], rules: PulseRules) -> list[Alert]:
    taken = {w.subject: w.value for w in group if w.metric == "units_taken"}
    paid = {w.subject: w.value for w in group if w.metric == "units_paid"}
    unexplained = {shelf: units - paid.get(shelf, 0.0) for shelf, units in taken.items()}
    now = sorted(shelf for shelf, units in unexplained.items() if units >= rules.shrinkage_min_units)
    new = [shelf for shelf in now if shelf not in state.shrinking]
    state.shrinking = now
    end = group[0].window_end
    return [Alert(alert_id=f"shrinkage|{shelf}|{end.isoformat()}", alert_type="shrinkage", location="store",
                  severity="critical" if unexplained[shelf] >= 2 * rules.shrinkage_min_units else "warning",
                  shelf_id=shelf, metric="units_taken", subject=shelf, value=unexplained[shelf],
                  threshold=float(rules.shrinkage_min_units), ts=end,
                  message=(f"shelf {shelf}: customers took {unexplained[shelf]:g} units more than the till was "
                           f"paid for in the 5 minutes to {end:%H:%M}"))
            for shelf in new]
