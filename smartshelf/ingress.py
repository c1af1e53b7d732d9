"""Validation at ingress: a raw payload either becomes a record of its topic's schema or a dead letter.

Pure functions (no I/O): the redis→kafka bridge, and later the Spark apps and the connect worker, call them
on every record they take in, so invalid input is rejected in one way everywhere, with a reason a person can act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ValidationError

from smartshelf.registry import Topic
from smartshelf.schemas import DeadLetter

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
        return topic.schema.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        # the bytes are parsed once, here; only a rejected payload is parsed again, for the JSON error's words
        if any(error["type"] == "json_invalid" for error in exc.errors(include_url=False, include_input=False)):
            return Rejection(f"not JSON: {_json_error(raw) or _describe(exc)}")
        return Rejection(f"invalid {topic.name} record: {_describe(exc)}")


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
