"""`smartshelf fuzz`: bad sensor input sent into a running twin, and proof that each bad record is refused once,
with its reason, and that nothing else changes (issue 23).

The records are drawn by Hypothesis strategies built on the sensor schemas (smartshelf.schemas): malformed bytes,
wrong types in any field, extreme and non-finite numbers, shelves the store does not have, event times far ahead
of or behind the simulated clock, and repeats of events the sensors already sent (earlier in the day, so also out
of order). They enter where the sensors' events do — the Redis streams, the pipeline's input, in chunks across the
day — and each carries a marker (`"fuzz-NNNNNNN"`, or for a repeat the repeated event's id) by which its dead
letter is found. Every record is bad by construction, never by luck: a record that validation would take is a
valid event and would rightly change the twin (a late, in-window event is such a record, and is not sent).

The verdict (`verdict`): every bad record in `dead_letters` exactly once with a reason; no service restarted and
no Spark query failed; the run's digest and every count the same as an undisturbed run's but the dead letters,
which are more by exactly the records sent; every check ok.
"""

from __future__ import annotations

import json
import math
import string
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import hypothesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from pydantic import BaseModel

from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.adapters.redis_clock import redis_client
from smartshelf.apps.bridge import DEDUP_HEADER
from smartshelf.apps.lifecycle import TRANSIENT_ERRORS
from smartshelf.apps.producers import STREAM_FIELD
from smartshelf.registry import DEAD_LETTERS, SENSOR_TOPICS, stream_of, topic
from smartshelf.runtime import supervisor
from smartshelf.runtime.chaos import SAME as CHAOS_SAME
from smartshelf.schemas import DeadLetter, FootTrafficEvent, PosItem, PosTransaction, ShelfEvent
from smartshelf.settings import Settings

if TYPE_CHECKING:
    from smartshelf.runtime.sim import Progress  # sim imports the whole runtime: only for the type

CATEGORIES = ("malformed_bytes", "wrong_types", "extreme_numbers", "unknown_shelves", "far_times", "repeats")
CHUNKS = 6  # the records go in over this many ticks
FIRST_CHUNK_HOUR = 9  # from when the store is busy
SAMPLE_SHELF = "FUZZ-SHELF"  # a shelf id no store has (store shelves are ids like PASEGG0005)
MARGIN = timedelta(days=2)  # far times are this much past the window at least: a tick later they are still refused



@dataclass(frozen=True)
class BadRecord:
    number: int
    topic: str  # the sensor topic whose stream it enters
    category: str
    payload: bytes
    marker: str  # what its dead letter's raw holds, quoted

    @property
    def token(self) -> str:
        return json.dumps(self.marker)


def _template(name: str, marker: str, now: datetime, shelf_id: str) -> dict[str, object]:
    """A valid record of the topic, as JSON-ready values, whose id is the marker."""
    if name == "foot_traffic":
        record: BaseModel = FootTrafficEvent(event_id=marker, event_type="entry", customer_id="C-fuzz", ts=now)
    elif name == "shelf_events":
        record = ShelfEvent(event_id=marker, event_type="pickup", shelf_id=shelf_id, quantity=1,
                            weight_change=-500.0, customer_id="C-fuzz", ts=now)
    else:
        record = PosTransaction(transaction_id=marker, customer_id="C-fuzz", ts=now, total=1.0, items=[
            PosItem(shelf_id=shelf_id, quantity=1, unit_price=1.0, discount=0.0, line_total=1.0)])
    return json.loads(record.model_dump_json())


_WRONG_VALUES = st.one_of(st.text(max_size=8), st.booleans(), st.none(), st.lists(st.integers(), max_size=3),
                          st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
                          st.floats(allow_nan=False, allow_infinity=False))
_EXTREME_NUMBERS = st.one_of(st.sampled_from([math.inf, -math.inf, math.nan, 1.7e308, -1.7e308, 10**20, 2**63,
                                              -(2**63) - 1]),
                             st.integers(min_value=10**7), st.integers(max_value=-1))


def _dumps(values: dict[str, object]) -> bytes:
    return json.dumps(values, default=str).encode()  # non-finite floats as NaN/Infinity: not JSON to the schema


@st.composite
def bad_record(draw: st.DrawFn, category: str, number: int, now: datetime, window: tuple[timedelta, timedelta],
               shelf_id: str, repeatable: Sequence[tuple[str, bytes, str]]) -> BadRecord:
    """One bad record of `category`; `repeatable` holds (topic, payload, id) of events the sensors sent earlier."""
    marker = f"fuzz-{number:07d}"
    name = draw(st.sampled_from(SENSOR_TOPICS))
    values = _template(name, marker, now, shelf_id)
    id_field = topic(name).id_field
    if category == "malformed_bytes":
        junk = draw(st.binary(max_size=64))
        return BadRecord(number, name, category, json.dumps(marker).encode() + b":" + junk, marker)
    if category == "wrong_types":
        field_name = draw(st.sampled_from(sorted(set(values) - {id_field})))
        values[field_name] = draw(_WRONG_VALUES.filter(lambda v: _refused(name, values, field_name, v)))
    elif category == "extreme_numbers":  # beyond the store-sized bounds, or not finite
        name = draw(st.sampled_from(["shelf_events", "pos_transactions"]))
        values = _template(name, marker, now, shelf_id)
        field_name = draw(st.sampled_from(["quantity", "weight_change"] if name == "shelf_events" else ["total"]))
        values[field_name] = draw(_EXTREME_NUMBERS.filter(lambda v: _refused(name, values, field_name, v)))
    elif category == "unknown_shelves":
        name = draw(st.sampled_from(["shelf_events", "pos_transactions"]))
        suffix = draw(st.text(alphabet=string.ascii_uppercase + string.digits, min_size=1, max_size=12))
        values = _template(name, marker, now, f"{SAMPLE_SHELF}-{suffix}")
    elif category == "far_times":
        ahead, behind = window
        extra = timedelta(minutes=draw(st.integers(min_value=0, max_value=10 * 365 * 24 * 60)))
        values["ts"] = (now + ahead + MARGIN + extra if draw(st.booleans()) else now - behind - MARGIN - extra
                        ).isoformat()
    else:
        name, payload, event_id = draw(st.sampled_from(list(repeatable)))
        return BadRecord(number, name, category, payload, event_id)
    return BadRecord(number, name, category, _dumps(values), marker)


def _refused(name: str, values: dict[str, object], field_name: str, value: object) -> bool:
    """Whether `value` in `field_name` makes the record invalid to its schema (a drawn string may well be a valid
    customer id, a drawn number a valid weight: such draws are not bad records, and are drawn again)."""
    from smartshelf.ingress import Rejection, parse_record

    return isinstance(parse_record(topic(name), _dumps({**values, field_name: value})), Rejection)


def draw_records(count: int, seed: int, now: datetime, window: tuple[timedelta, timedelta], shelf_id: str,
                 repeatable: Sequence[tuple[str, bytes, str]], first_number: int = 0) -> list[BadRecord]:
    """`count` bad records drawn by Hypothesis, as many of each category (in turn: a drawn category would be the
    first of the list far more often), the same for the same arguments."""
    kinds = CATEGORIES if repeatable else CATEGORIES[:-1]
    by_kind = {kind: _draw_kind(kind, len(range(index, count, len(kinds))), seed, now, window, shelf_id,
                                repeatable, first_number + index, len(kinds))
               for index, kind in enumerate(kinds)}
    return sorted((record for records in by_kind.values() for record in records), key=lambda r: r.number)


def _draw_kind(kind: str, count: int, seed: int, now: datetime, window: tuple[timedelta, timedelta],
               shelf_id: str, repeatable: Sequence[tuple[str, bytes, str]], first_number: int,
               step: int) -> list[BadRecord]:
    drawn: list[BadRecord] = []
    if count == 0:
        return drawn

    @hypothesis.settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
                         suppress_health_check=list(HealthCheck))
    @hypothesis.given(st.data())
    def collect(data: st.DataObject) -> None:
        if len(drawn) < count:  # the number is a value only: each draw's shape depends on the choices alone
            number = first_number + len(drawn) * step
            drawn.append(data.draw(bad_record(kind, number, now, window, shelf_id, repeatable)))

    attempts = 0
    while len(drawn) < count and attempts < 10:  # Hypothesis may stop short of max_examples
        hypothesis.seed(seed + attempts)(collect)()
        attempts += 1
    return drawn


def _sensor_events(settings: Settings, limit: int) -> list[tuple[str, bytes, str]]:
    """Events the sensors sent so far — those the bridge wrote (its dedup header), not the loop's refills and
    removals on the same topic, whose ids the ingress never saw — from the first `limit` of each partition:
    (topic, payload, id)."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    found: list[tuple[str, bytes, str]] = []
    try:
        for name in SENSOR_TOPICS:
            partitions = adapter.partitions_for(name)
            ends = adapter.end_offsets(partitions)
            last = {tp: min(end, limit) for tp, end in ends.items()}
            for record in adapter.read(partitions, end=last):
                if record.value is not None and any(key == DEDUP_HEADER for key, _ in record.headers):
                    # the id as the payload holds it: the marker its dead letter's raw text is searched for
                    event = topic(name).schema.model_validate_json(record.value)
                    found.append((name, record.value, str(getattr(event, str(topic(name).id_field)))))
    finally:
        adapter.close()
    return found


@dataclass
class Fuzzer:
    """Sends the bad records in CHUNKS chunks, one per tick from FIRST_CHUNK_HOUR, from a run's poll loop
    (run_sim's `during`), and notes the services' pids to find restarts (`after`)."""

    count: int
    seed: int
    sent: list[BadRecord] = field(default_factory=list)
    pids: dict[str, int] = field(default_factory=dict)
    chunks: list[datetime] = field(default_factory=list)  # when each chunk went in

    def __call__(self, settings: Settings, now: datetime | None) -> None:
        if not self.pids:
            self.pids = _pids(settings)
        if now is None or len(self.chunks) >= CHUNKS or now.hour < FIRST_CHUNK_HOUR or now in self.chunks:
            return
        size = min(self.count - len(self.sent), math.ceil(self.count / CHUNKS))
        window = (timedelta(minutes=settings.max_event_ahead_minutes),
                  timedelta(minutes=settings.max_event_late_minutes))
        from smartshelf.runtime.jobs import load_store

        try:  # a server may be down (`smartshelf chaos` alongside): the chunk goes in at a later poll
            shelf_id = load_store(settings).store_inventory[0].shelf_id
            repeatable = _sensor_events(settings, 2000)
        except TRANSIENT_ERRORS:
            return
        records = draw_records(size, self.seed + len(self.sent), now, window, shelf_id, repeatable,
                               first_number=len(self.sent))
        pipe = redis_client(settings).pipeline(transaction=True)  # all of a chunk or none
        for record in records:
            pipe.xadd(stream_of(record.topic), {STREAM_FIELD: record.payload})
        try:
            pipe.execute()
        except TRANSIENT_ERRORS:
            return
        self.chunks.append(now)
        self.sent.extend(records)

    def after(self, settings: Settings) -> dict[str, object]:
        """What the finished run shows of the records (on the stack, before it goes)."""
        restarted = sorted(name for name, pid in _pids(settings).items() if self.pids.get(name) != pid)
        spark_log = settings.run_dir / "logs" / "spark.log"
        query_failures = spark_log.read_text(errors="replace").count("query failed") if spark_log.exists() else 0
        return {"fuzz": {"sent": len(self.sent), "chunks_at": [at.isoformat() for at in self.chunks],
                         "by_category": dict(sorted(Counter(r.category for r in self.sent
                                                                                     ).items())),
                         "letters": _letters_per_record(settings, self.sent), "restarted": restarted,
                         "query_failures": query_failures}}


def _pids(settings: Settings) -> dict[str, int]:
    return {row.name: row.pid for row in supervisor.status(settings) if row.running and row.pid is not None}


def _letters_per_record(settings: Settings, records: Sequence[BadRecord]) -> dict[str, object]:
    """How many dead letters (with a reason) hold each record's marker: {exactly_once, missing, repeated, ...}."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    letters: list[DeadLetter] = []
    try:
        for record in adapter.read(adapter.partitions_for(DEAD_LETTERS)):
            if record.value is not None:
                letters.append(DeadLetter.model_validate_json(record.value))
    finally:
        adapter.close()
    tokens = Counter(r.token for r in records)
    found: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    for letter in letters:
        for token in tokens:
            if token in letter.raw and letter.reason:
                found[token] += 1
                reasons[letter.reason.split(":")[0][:60]] += 1
    missing = [t for t in tokens if found[t] == 0]
    twice = [t for t in tokens if found[t] > tokens[t]]
    return {"exactly_once": not missing and not twice, "missing": len(missing), "more_than_once": len(twice),
            "missing_examples": missing[:5], "more_than_once_examples": twice[:5],
            "reasons": dict(reasons.most_common(12))}


# a fuzzed run differs from the undisturbed one in its dead letters only
SAME = tuple(name for name in CHAOS_SAME if name != "dead_letters")


def verdict(reference: dict[str, object], fuzzed: dict[str, object]) -> dict[str, object]:
    report = fuzzed.get("fuzz")
    assert isinstance(report, dict)
    letters = report["letters"]
    differing = [name for name in SAME if fuzzed.get(name) != reference.get(name)]
    extra_letters = int(fuzzed.get("dead_letters", 0)) - int(reference.get("dead_letters", 0))  # type: ignore[call-overload]
    ok = (letters["exactly_once"] and not report["restarted"] and report["query_failures"] == 0 and not differing
          and extra_letters == report["sent"] and bool(fuzzed.get("checks_ok")))
    return {"ok": ok, **report, "dead_letters_added": extra_letters, "differing": differing,
            "same_digest": fuzzed.get("digest") == reference.get("digest"), "digest": fuzzed.get("digest"),
            "checks_ok": fuzzed.get("checks_ok"), "wall_s": fuzzed.get("wall_s"),
            "reference_wall_s": reference.get("wall_s")}


def run_fuzz(base: Settings, count: int, seed: int, days: int = 1, on_progress: Progress = lambda now, end: None,
             reference: dict[str, object] | None = None) -> dict[str, object]:
    """An undisturbed fast run of `seed` (unless its summary is given), then the same run with `count` bad
    records sent in; the verdict of the two."""
    from smartshelf.runtime.sim import run_sim

    if reference is None:
        reference = run_sim(base, days, seed, None, fast=True, on_progress=on_progress)
    fuzzer = Fuzzer(count, seed)
    fuzzed = run_sim(base, days, seed, None, fast=True, on_progress=on_progress, during=fuzzer, after=fuzzer.after)
    return verdict(reference, fuzzed)
