"""The state apps whose state is keyed and lives in Spark's state store (smartshelf.streaming.keyed_query): what
one key's group of records does to that key's state, as a pure function of the state and the records.

A group is the records of one shelf for one app in one micro-batch: of the Kafka key, or, for a topic an app
*spreads* (a till's transaction names several shelves), of each shelf its record names, narrowed to that shelf's
lines (`shelves_named`, `narrowed`). The state store keeps the groups by bucket (`bucket_of`: a stable hash of the
group, so several shelves share one stored value): each store access is a round trip between Spark's Python worker
and the JVM, and per shelf they cost more than the rules themselves. Each record is validated with the bridge's
rules; a valid one is applied by the app's rule in the app's order (`KeyedApp.ordered`: within a key, the order its
partition holds them in, which is the order the world produced them). Invariants:
- a key's state changes only by its own records, so the groups of a batch can be applied anywhere, in any
  order, and give the same state as applying the batch in one place;
- no record is lost silently: an invalid record (of a topic the app validates; a spread one by the group of
  its first shelf only), a record the rules refuse, a record whose key is not the key its fields name, and a
  record whose rule raises each become a letter with the reason, and the state stays as it was before that
  record;
- the result depends on the state and the records only, so a replayed batch gives the same values;
- a group's bucket depends on the group and the bucket count only (the count is fixed for a run's checkpoint).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar

from pydantic import BaseModel

from smartshelf import rules
from smartshelf.ingress import Rejection, parse_record
from smartshelf.registry import Topic, table, topic
from smartshelf.schemas import PosTransaction
from smartshelf.store import StoreData
from smartshelf.streaming.batch import Received

Step = tuple[str, BaseModel | None, str | None]  # (key, its new value or None if refused, problem or None)
Changes = tuple[dict[str, BaseModel], list[str]]  # (the new values by state key, the problems)
STATE, LETTER = "state", "letter"  # the kinds of output row
# (app, kind, topic, partition, offset, key, value, reason): a changed key's value (topic: the state topic), or a
# letter (topic, partition, offset, value: the record as it came)
OutputRow = tuple[str, str, str, int | None, int | None, str, bytes | None, str | None]
GroupTexts = dict[str, dict[str, str]]  # one group's state: {app: {state key: value JSON}}


@dataclass(frozen=True)
class KeyedRecord:
    """A Kafka record as a group holds it."""

    topic: str
    partition: int
    offset: int
    value: bytes | None
    reports: bool = True  # whether this group reports the record if it is invalid (one group per record)


@dataclass
class KeyResult:
    """What one group did: the new values of the state keys it changed (in key order), and the records it could
    not apply with the reason (→ dead_letters)."""

    changed: list[BaseModel] = field(default_factory=list)
    letters: list[tuple[KeyedRecord, str]] = field(default_factory=list)


class KeyedApp:
    """A state app whose events each change one state key by a rule; the state keys of one Kafka key (one shelf)
    are that group's state in Spark's state store."""

    name: ClassVar[str]
    topics: ClassVar[tuple[str, ...]]
    # the topics whose invalid records this app reports to dead_letters: one app per topic, so a bad record
    # is reported once however many apps read it (tests/unit/test_streaming_apps.py checks the ownership)
    validates: ClassVar[tuple[str, ...]] = ()
    # the topics whose records go to the group of each shelf they name (`shelves_named`), narrowed to it
    spread: ClassVar[tuple[str, ...]] = ()
    state_table: ClassVar[str]  # registry table name; the table's topic is the compacted output
    initial_field: ClassVar[str]  # the rules.InitialStates field the state starts from
    sim_start = datetime.min  # set from the settings when the query starts (a shelf the store adds starts then)

    @classmethod
    def state_topic(cls) -> Topic:
        name = table(cls.state_table).topic
        assert name is not None
        return topic(name)

    @classmethod
    def key_of(cls, value: BaseModel) -> str:
        """The state key of a value: what its compacted topic is keyed by within its store (the group's state is
        one store's)."""
        return cls.state_topic().local_key_of(value)

    @classmethod
    def group_of(cls, value: BaseModel) -> str:
        """The group a state value belongs to: its shelf (in its store's buckets)."""
        return str(getattr(value, "shelf_id"))

    def initial(self, store: StoreData, start: datetime) -> list[BaseModel]:
        """The state as the store opened."""
        return list(getattr(rules.initial_states(store, start), self.initial_field))

    def ordered(self, received: list[Received]) -> list[Received]:
        return received  # each partition's records in offset order

    def apply(self, state: dict[str, BaseModel], event: BaseModel) -> Changes:
        """What one event changes in the group's state (read, not changed), and the problems to report; an app
        whose event changes at most one key writes `step` instead."""
        key, after, problem = self.step(state, event)
        return ({} if after is None else {key: after}), ([problem] if problem else [])

    def step(self, state: dict[str, BaseModel], event: BaseModel) -> Step:
        raise NotImplementedError


def shelves_named(described: Topic, record: BaseModel) -> list[str]:
    """The groups a record goes to: its lines' shelves (distinct, sorted: the query's order) for a transaction,
    else its key within its store."""
    if isinstance(record, PosTransaction):
        return sorted({line.shelf_id for line in record.items})
    return [described.local_key_of(record)]


def narrowed(record: BaseModel, group: str) -> BaseModel:
    """A spread record as one group sees it: a transaction's lines of that shelf only."""
    if isinstance(record, PosTransaction):
        return record.model_copy(update={"items": [line for line in record.items if line.shelf_id == group]})
    return record


def apply_to_key(app: KeyedApp, group: str, state: dict[str, BaseModel], records: list[KeyedRecord]) -> KeyResult:
    """Apply one group's records to its state (changed in place); see the module's invariants."""
    result, received = KeyResult(), []
    for record in sorted(records, key=lambda r: (r.topic, r.partition, r.offset)):
        described, spread = topic(record.topic), record.topic in app.spread
        parsed = parse_record(described, record.value)
        reported = record.topic in app.validates and record.reports
        if isinstance(parsed, Rejection):
            if reported:
                result.letters.append((record, parsed.reason))
            continue
        named = shelves_named(described, parsed) if spread else [described.local_key_of(parsed)]
        if group not in named:
            if reported:
                result.letters.append((record, f"record key '{group}' is not the key its fields name "
                                               f"('{', '.join(named)}')"))
            continue
        event = narrowed(parsed, group) if spread else parsed
        received.append(Received(record.topic, record.partition, record.offset, event))
    touched: set[str] = set()
    as_sent = {(r.topic, r.partition, r.offset): r for r in records}  # a letter carries the record as it came
    for item in app.ordered(received):
        origin = as_sent[(item.topic, item.partition, item.offset)]
        try:
            changes, problems = app.apply(state, item.record)
        except Exception as error:  # noqa: BLE001 - any failure of a rule on a record: the record, not the app
            result.letters.append((origin, f"{app.name} could not apply it: {type(error).__name__}: {error}"))
            continue
        state.update(changes)
        touched.update(changes)
        result.letters += [(origin, problem) for problem in problems]
    result.changed = [state[key] for key in sorted(touched)]
    return result


def apply_group(apps: list[KeyedApp], group: str, texts: GroupTexts, records: list[KeyedRecord]
                ) -> tuple[GroupTexts, list[OutputRow]]:
    """Each app's records of one group applied to its state ({app: {state key: value JSON}}, changed in place):
    the state, and the output rows (the changed keys' values, then the letters)."""
    out: list[OutputRow] = []
    for app in apps:
        mine = [r for r in records if r.topic in app.topics]
        if not mine:
            continue
        model, values = app.state_topic().schema, texts.setdefault(app.name, {})
        result = apply_to_key(app, group, {k: model.model_validate_json(v) for k, v in values.items()}, mine)
        for value in result.changed:
            state_key, text = app.key_of(value), value.model_dump_json()
            values[state_key] = text
            out.append((app.name, STATE, app.state_topic().name, None, None, app.state_topic().key_of(value),
                        text.encode(), None))
        out += [(app.name, LETTER, r.topic, r.partition, r.offset, group, r.value, reason)
                for r, reason in result.letters]
    return texts, out


def bucket_of(group: str, buckets: int) -> int:
    """The state store key of a group: the CRC-32 of its UTF-8 bytes modulo the bucket count (Spark's `crc32` of
    the same bytes is the same number, so the query buckets its records as the opening state is bucketed)."""
    return zlib.crc32(group.encode()) % buckets


def apply_bucket(apps: list[KeyedApp], groups: dict[str, GroupTexts], records: Iterable[tuple[str, KeyedRecord]]
                 ) -> tuple[bool, list[OutputRow]]:
    """One bucket's records, each group's applied by `apply_group` to that group's state in `groups` (changed in
    place): whether any state changed, and the output rows."""
    by_group: dict[str, list[KeyedRecord]] = {}
    for group, record in records:
        by_group.setdefault(group, []).append(record)
    changed, out = False, []
    for group in sorted(by_group):
        texts, rows = apply_group(apps, group, _copied(groups.get(group, {})), by_group[group])
        if any(row[1] == STATE for row in rows):
            groups[group], changed = texts, True
        out += rows
    return changed, out


def _copied(texts: GroupTexts) -> GroupTexts:
    return {app: dict(values) for app, values in texts.items()}
