"""`smartshelf fuzz`'s records, pure: drawn the same for the same seed, every category in equal parts, each
record bad by construction — the bridge's own checks (schema, shelves, event-time window, repeats) refuse every
one — and each findable by its marker."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

import pytest

from smartshelf.apps.bridge import refuse_repeats, to_delivery
from smartshelf.apps.producers import STREAM_FIELD
from smartshelf.ingress import EventWindow
from smartshelf.registry import DEAD_LETTERS, stream_of
from smartshelf.runtime.fuzz import CATEGORIES, BadRecord, draw_records
from smartshelf.schemas import DeadLetter, ShelfEvent

NOW = datetime(2025, 1, 6, 12)
WINDOW = (timedelta(minutes=60), timedelta(days=7))
SHELF = "S1"
SENT = [ShelfEvent(event_id=f"se-{n}", event_type="pickup", shelf_id=SHELF, quantity=1, weight_change=-500.0,
                   customer_id="C1", ts=NOW - timedelta(hours=3, minutes=n)) for n in range(50)]
REPEATABLE = [("shelf_events", event.model_dump_json().encode(), event.event_id) for event in SENT]


@pytest.fixture(scope="module")
def records() -> list[BadRecord]:
    return draw_records(240, 3, NOW, WINDOW, SHELF, REPEATABLE)


def test_the_same_seed_draws_the_same_records(records: list[BadRecord]) -> None:
    assert draw_records(240, 3, NOW, WINDOW, SHELF, REPEATABLE) == records
    assert draw_records(240, 4, NOW, WINDOW, SHELF, REPEATABLE) != records


def test_every_category_in_equal_parts_with_unique_markers(records: list[BadRecord]) -> None:
    assert len(records) == 240
    assert Counter(r.category for r in records) == dict.fromkeys(CATEGORIES, 40)
    assert [r.number for r in records] == list(range(240))
    fresh = [r.marker for r in records if r.category != "repeats"]
    assert len(set(fresh)) == len(fresh)
    assert {r.marker for r in records if r.category == "repeats"} <= {event.event_id for event in SENT}


@pytest.mark.parametrize("tick_later", [timedelta(0), timedelta(hours=2)])
def test_the_bridge_refuses_every_record_with_its_marker_in_the_dead_letter(records: list[BadRecord],
                                                                            tick_later: timedelta) -> None:
    """Also when the bridge takes them a tick after they were sent (a far time is still outside the window)."""
    now, window = NOW + tick_later, EventWindow(*WINDOW)
    deliveries = [to_delivery(stream_of(r.topic), f"{n}-0".encode(), {STREAM_FIELD: r.payload}, now, window, {SHELF})
                  for n, r in enumerate(records)]
    checked = refuse_repeats(deliveries, {event.event_id for event in SENT}, now)
    assert all(d.topic == DEAD_LETTERS for d in checked), [r for r, d in zip(records, checked)
                                                            if d.topic != DEAD_LETTERS][:3]
    for record, delivery in zip(records, checked):
        letter = DeadLetter.model_validate_json(delivery.value)
        assert record.token in letter.raw and letter.reason
