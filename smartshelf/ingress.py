"""Validation at ingress: a raw payload either becomes a record of its topic's schema or a dead letter.

Pure functions (no I/O): the redis→kafka bridge, the Spark apps and the producers' feedback reader call them
on every record they take in, so invalid input is rejected in one way everywhere, with a reason a person can act on.
A record that parses can be applied: its values are within the schemas' bounds and it keeps the rules across
fields the state rules rely on (`broken_rule`), so those rules never meet input they cannot take.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import BaseModel, ValidationError

from smartshelf.registry import Topic
from smartshelf.schemas import DeadLetter, PosTransaction, ShelfEvent

MAX_PAYLOAD_BYTES = 64 * 1024  # an event is a few hundred bytes; a basket of 100 lines is ~10 KiB
MAX_RAW_IN_DEAD_LETTER = 16 * 1024


@dataclass(frozen=True)
class Rejection:
    reason: str


def parse_record(topic: Topic, raw: bytes | None) -> BaseModel | Rejection:
    """The record `raw` holds, validated against the topic's schema (strict types), or why it is not one."""
    if raw is None:
        return Rejection("no payload")
    if len(raw) > MAX_PAYLOAD_BYTES:
        return Rejection(f"payload of {len(raw)} bytes exceeds the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        # strict: "5" is not a quantity and 1.5 is not a count; ISO date strings are still dates in JSON
        record = topic.schema.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        # the bytes are parsed once, here; only a rejected payload is parsed again, for the JSON error's words
        if any(error["type"] == "json_invalid" for error in exc.errors(include_url=False, include_input=False)):
            return Rejection(f"not JSON: {_json_error(raw) or _describe(exc)}")
        return Rejection(f"invalid {topic.name} record: {_describe(exc)}")
    broken = broken_rule(record)
    return record if broken is None else Rejection(f"invalid {topic.name} record: {broken}")


_LOT_FIELDS = ("batch_code", "received_date", "expiry_date")


def broken_rule(record: BaseModel) -> str | None:
    """The rule across fields a record of its schema breaks, or None. A staff move (a refill or a removal: a
    pickup or putback without a customer) carries a lot to or off a shelf, so it names the lot and its dates:
    the twin's lots (smartshelf.rules) and the world's (smartshelf.world) are kept from them."""
    if isinstance(record, ShelfEvent) and record.by_staff and record.event_type != "weight_change":
        missing = [name for name in _LOT_FIELDS if getattr(record, name) is None]
        if missing:
            return f"a staff {record.event_type} names its lot and dates; missing {', '.join(missing)}"
    return None


def unknown_place(record: BaseModel, shelves_by_store: Mapping[str, Collection[str]]) -> Rejection | None:
    """Why a sensor record of a store the twin does not run, or naming a shelf its store does not have, is refused,
    or None: such a sensor is misconfigured, and its events would reach the raw tables and the POS mirror
    unaccounted for."""
    store_id = getattr(record, "store_id", None)
    if store_id is not None and store_id not in shelves_by_store:
        return Rejection(f"unknown store {store_id} (the twin runs {', '.join(list(shelves_by_store)[:3])}"
                         f"{' …' if len(shelves_by_store) > 3 else ''})")
    shelves = shelves_by_store.get(store_id or "", ())
    if isinstance(record, ShelfEvent):
        named = [record.shelf_id]
    elif isinstance(record, PosTransaction):
        named = [item.shelf_id for item in record.items]
    else:
        return None
    unknown = sorted({shelf_id for shelf_id in named if shelf_id not in shelves})
    return Rejection(f"unknown shelf {', '.join(unknown[:3])}{' …' if len(unknown) > 3 else ''}") if unknown else None


@dataclass(frozen=True)
class EventWindow:
    """How far an event's time may be from the simulated clock's now (MAX_EVENT_AHEAD_MINUTES,
    MAX_EVENT_LATE_MINUTES). An event from the future would act only when its time comes (a restock planned for
    it blocks the shelf until then); one from further back than any backlog is a sender's clock gone wrong."""

    ahead: timedelta
    behind: timedelta

    def check(self, ts: datetime, now: datetime) -> Rejection | None:
        """Why an event at `ts` is refused when the clock says `now`, or None."""
        if ts > now + self.ahead:
            return Rejection(f"event time {ts.isoformat()} is {ts - now} ahead of the simulated clock "
                             f"({now.isoformat()}); at most {self.ahead} is accepted")
        if ts < now - self.behind:
            return Rejection(f"event time {ts.isoformat()} is {now - ts} behind the simulated clock "
                             f"({now.isoformat()}); at most {self.behind} is accepted")
        return None


def _json_error(raw: bytes) -> str | None:
    try:
        json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return str(exc)
    return None


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_input=False):
        where = ".".join(str(part) for part in error["loc"]) or "(record)"
        problems.append(f"{where}: {error['msg']}")
    more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
    return "; ".join(problems[:3]) + more


def letter_id(letter: DeadLetter) -> str:
    """What names a dead letter of a Kafka record (letters have no id field): the record's place and the reason,
    which a replayed batch gives again (its time may differ)."""
    return f"{letter.source}:{letter.source_partition}:{letter.source_offset}:{letter.reason}"


def dead_letter(source: str, raw: bytes | None, reason: str, ts: datetime,
                partition: int | None = None, offset: int | None = None) -> DeadLetter:
    """The dead letter of a rejected payload; very large payloads keep their head and say so."""
    data = raw or b""
    if len(data) > MAX_RAW_IN_DEAD_LETTER:
        reason = f"{reason} [raw truncated to {MAX_RAW_IN_DEAD_LETTER} of {len(data)} bytes]"
        data = data[:MAX_RAW_IN_DEAD_LETTER]
    return DeadLetter(
        source=source, source_partition=partition, source_offset=offset, reason=reason,
        raw=data.decode("utf-8", errors="backslashreplace"), ts=ts,
    )
