"""Ingress validation: a sensor payload becomes its topic's record, or a Rejection a person can act on.

Whatever slips through here is summed into the twin's state, so every way a payload can be wrong is tried,
and each rejection must say what is wrong (the field, or why it is not JSON at all).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, get_args

import pytest

from smartshelf import schemas
from smartshelf.ingress import MAX_PAYLOAD_BYTES, MAX_RAW_IN_DEAD_LETTER, Rejection, dead_letter, parse_record
from smartshelf.registry import topic
from smartshelf.schemas import MAX_QUANTITY, DeadLetter, PosTransaction, ShelfEvent
from smartshelf.tabular import unwrap_optional

SHELF_EVENTS = topic("shelf_events")
POS = topic("pos_transactions")
NOW = datetime(2025, 1, 1, 9, 30)

PICKUP: dict[str, Any] = {
    "event_id": "se-C1-00-m", "event_type": "pickup", "shelf_id": "S0001", "quantity": 2,
    "weight_change": -1.5, "customer_id": "C1", "ts": "2025-01-01T08:15:00",
}
BASKET: dict[str, Any] = {
    "transaction_id": "tx-C1", "customer_id": "C1", "ts": "2025-01-01T08:30:00", "total": 2.98,
    "items": [{"shelf_id": "S0001", "quantity": 2, "unit_price": 1.49, "discount": 0.0, "line_total": 2.98}],
}


# --- helpers ----------------------------------------------------------------------------------
def encode(value: object) -> bytes:
    return json.dumps(value).encode()


def pickup(**changes: Any) -> bytes:
    """The valid pickup with some fields changed; a value of `...` drops the field."""
    record = {**PICKUP, **changes}
    return encode({k: v for k, v in record.items() if v is not ...})


def rejected(raw: bytes | None, topic_=SHELF_EVENTS) -> str:
    """The reason `raw` is rejected (fails the test if it is accepted)."""
    result = parse_record(topic_, raw)
    assert isinstance(result, Rejection), f"accepted: {result!r}"
    assert result.reason
    return result.reason


# --- accepted ---------------------------------------------------------------------------------
def test_a_valid_shelf_event_parses_to_the_model() -> None:
    record = parse_record(SHELF_EVENTS, pickup())
    assert record == ShelfEvent(event_id="se-C1-00-m", event_type="pickup", shelf_id="S0001", quantity=2,
                                weight_change=-1.5, customer_id="C1", ts=datetime(2025, 1, 1, 8, 15))


def test_optional_fields_may_be_left_out_and_an_integer_weight_is_a_weight() -> None:
    """Strictness must not reject what a scale legitimately sends: `0` kg, no customer and no lot for a reading
    during staff work (the staff's own moves name their lot: tests/unit/test_poison_records.py)."""
    record = parse_record(SHELF_EVENTS, pickup(event_type="weight_change", customer_id=..., weight_change=0))
    assert isinstance(record, ShelfEvent)
    assert record.customer_id is None and record.batch_code is None and record.weight_change == 0.0


def test_a_valid_basket_parses_to_the_model() -> None:
    record = parse_record(POS, encode(BASKET))
    assert isinstance(record, PosTransaction)
    assert [(i.shelf_id, i.quantity) for i in record.items] == [("S0001", 2)]


def test_the_model_round_trips_through_its_own_json() -> None:
    """What the bridge writes to Kafka (model_dump_json) must pass ingress again downstream."""
    record = parse_record(SHELF_EVENTS, pickup())
    assert isinstance(record, ShelfEvent)
    assert parse_record(SHELF_EVENTS, record.model_dump_json().encode()) == record


def test_a_payload_exactly_at_the_size_limit_is_accepted() -> None:
    raw = pickup()
    padded = raw + b" " * (MAX_PAYLOAD_BYTES - len(raw))  # whitespace is valid JSON padding
    assert len(padded) == MAX_PAYLOAD_BYTES
    assert isinstance(parse_record(SHELF_EVENTS, padded), ShelfEvent)


# --- not a record at all ----------------------------------------------------------------------
def test_no_payload() -> None:
    assert "no payload" in rejected(None)


@pytest.mark.parametrize("raw", [b"", b"pickup 2 S0001", b'{"event_id": "e1",', b'{"a": 1} trailing'],
                         ids=["empty", "text", "truncated", "trailing"])
def test_bytes_that_are_not_json(raw: bytes) -> None:
    assert rejected(raw).startswith("not JSON")


@pytest.mark.parametrize("raw", [b'{"event_id": "\xff"}', b'{"event_id": "caf\xc3"}'], ids=["0xff", "cut-char"])
def test_invalid_utf8_is_not_json(raw: bytes) -> None:
    reason = rejected(raw)
    assert reason.startswith("not JSON") and "utf-8" in reason


@pytest.mark.parametrize("raw", [b"[]", b"5", b"null", b'"pickup"', encode([PICKUP])],
                         ids=["list", "number", "null", "string", "list-of-record"])
def test_json_that_is_not_an_object(raw: bytes) -> None:
    reason = rejected(raw)
    assert "shelf_events" in reason and "object" in reason


def test_a_payload_over_the_size_limit_is_rejected_before_parsing() -> None:
    raw = pickup()
    padded = raw + b" " * (MAX_PAYLOAD_BYTES + 1 - len(raw))
    reason = rejected(padded)
    assert str(MAX_PAYLOAD_BYTES + 1) in reason and "limit" in reason


# --- wrong fields -----------------------------------------------------------------------------
def test_missing_field_is_named() -> None:
    reason = rejected(pickup(shelf_id=...))
    assert "shelf_id" in reason and "required" in reason.lower()


def test_extra_field_is_named() -> None:
    reason = rejected(pickup(price=1.99))
    assert "price" in reason and "extra" in reason.lower()


def test_many_problems_are_summarised() -> None:
    """An empty object misses six fields: the reason names the first ones and counts the rest."""
    reason = rejected(b"{}")
    assert "event_id" in reason and "(+3 more)" in reason


@pytest.mark.parametrize(("field", "value"), [
    ("quantity", "5"),  # a string is not a count, even if it reads as one
    ("quantity", 1.5),
    ("quantity", 2.0),  # nor is a float that happens to be whole
    ("quantity", True),
    ("quantity", None),
    ("weight_change", "-1.5"),
    ("event_id", 17),
    ("ts", 1735719300),  # epoch seconds: lax mode would take it, ingress must not
    ("ts", "yesterday"),
])
def test_wrong_types_are_rejected_and_named(field: str, value: object) -> None:
    reason = rejected(pickup(**{field: value}))
    assert reason.startswith("invalid shelf_events record") and field in reason


@pytest.mark.parametrize("quantity", [-1, MAX_QUANTITY + 1, 10**30])
def test_quantity_out_of_range(quantity: int) -> None:
    assert "quantity" in rejected(pickup(quantity=quantity))


def test_quantity_at_the_maximum_is_accepted() -> None:
    assert isinstance(parse_record(SHELF_EVENTS, pickup(quantity=MAX_QUANTITY)), ShelfEvent)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_weight(literal: str) -> None:
    raw = pickup(weight_change=0).replace(b'"weight_change": 0', f'"weight_change": {literal}'.encode())
    assert literal.encode() in raw  # the JSON really carries the non-standard literal
    reason = rejected(raw)
    assert "weight_change" in reason and "finite" in reason


@pytest.mark.parametrize("event_type", ["steal", "PICKUP", "", "restock"])
def test_unknown_event_type(event_type: str) -> None:
    reason = rejected(pickup(event_type=event_type))
    assert "event_type" in reason and "pickup" in reason  # says what would have been valid


def test_basket_without_items() -> None:
    reason = rejected(encode({**BASKET, "items": []}), POS)
    assert reason.startswith("invalid pos_transactions record") and "items" in reason


def test_basket_with_a_bad_line_names_the_line() -> None:
    bad_line = {**BASKET["items"][0], "quantity": 0}
    reason = rejected(encode({**BASKET, "items": [BASKET["items"][0], bad_line]}), POS)
    assert "items.1.quantity" in reason


def test_schema_is_the_topics_not_another() -> None:
    """A valid basket on the shelf_events topic is wrong data on that topic."""
    reason = rejected(encode(BASKET), SHELF_EVENTS)
    assert "shelf_events" in reason


def test_a_time_with_an_offset_is_the_same_instant_in_naive_utc() -> None:
    """Times are naive UTC simulated times (schemas.py): an aware datetime in the pipeline would fail every
    comparison with the naive clock, so an offset is applied at ingress and dropped."""
    for sent in ("2025-01-01T09:15:00+01:00", "2025-01-01T08:15:00+00:00", "2025-01-01T08:15:00Z"):
        event = parse_record(SHELF_EVENTS, pickup(ts=sent))
        assert isinstance(event, ShelfEvent), f"rejected: {event!r}"
        assert event.ts == datetime(2025, 1, 1, 8, 15) and event.ts.tzinfo is None


def _records(base: type[schemas.Record]) -> list[type[schemas.Record]]:
    return [model for sub in base.__subclasses__() for model in (sub, *_records(sub))]


def test_every_time_of_every_record_is_a_store_local_time() -> None:
    """Only LocalTime turns an offset into naive UTC: a field declared as a plain datetime would let an aware time
    in."""
    (naive,) = get_args(schemas.LocalTime)[1:]
    for model in _records(schemas.Record):
        for name, info in model.model_fields.items():
            if unwrap_optional(info.annotation)[0] is datetime:
                assert naive in info.metadata, f"{model.__name__}.{name} is a datetime, not a LocalTime"


# --- dead letters -----------------------------------------------------------------------------
def test_dead_letter_keeps_the_raw_text_and_where_it_came_from() -> None:
    raw = b'{"quantity": "5"}'
    letter = dead_letter("stream:shelf_events", raw, "quantity: Input should be a valid integer", NOW,
                         partition=1, offset=42)
    assert letter == DeadLetter(source="stream:shelf_events", source_partition=1, source_offset=42,
                                reason="quantity: Input should be a valid integer", raw='{"quantity": "5"}', ts=NOW)


def test_dead_letter_of_no_payload_is_empty() -> None:
    letter = dead_letter("stream:foot_traffic", None, "no payload", NOW)
    assert letter.raw == "" and letter.source_partition is None and letter.source_offset is None


def test_dead_letter_escapes_undecodable_bytes_and_keeps_the_rest() -> None:
    letter = dead_letter("stream:shelf_events", b'{"id": "caf\xc3\xa9 \xff"}', "bad", NOW)
    assert letter.raw == '{"id": "café \\xff"}'
    # and the dead letter itself is a valid dead_letters record
    assert parse_record(topic("dead_letters"), letter.model_dump_json().encode()) == letter


def test_dead_letter_of_a_huge_payload_keeps_its_head_and_says_so() -> None:
    raw = b"{" + b"x" * (MAX_PAYLOAD_BYTES * 2)
    letter = dead_letter("stream:shelf_events", raw, "payload too large", NOW)
    assert letter.raw == raw[:MAX_RAW_IN_DEAD_LETTER].decode()
    assert letter.reason.startswith("payload too large")
    assert "truncated" in letter.reason
    assert str(len(raw)) in letter.reason and str(MAX_RAW_IN_DEAD_LETTER) in letter.reason


def test_dead_letter_at_the_truncation_limit_is_kept_whole() -> None:
    raw = b"y" * MAX_RAW_IN_DEAD_LETTER
    letter = dead_letter("stream:shelf_events", raw, "bad", NOW)
    assert letter.raw == raw.decode() and letter.reason == "bad"
