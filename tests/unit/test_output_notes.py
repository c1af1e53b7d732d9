"""Dead letters and append-only records once per batch although Spark may run a batch twice
(smartshelf.streaming.batch.OutputNotes), against in-memory topics."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from smartshelf.ingress import dead_letter, letter_id
from smartshelf.registry import DEAD_LETTERS
from smartshelf.schemas import Alert, DailyDiscount, DeadLetter
from smartshelf.streaming.batch import OutputNotes, record_id

NOW = datetime(2025, 1, 1, 10, 0)


class Topics:
    """Topics as lists (one partition each)."""

    def __init__(self) -> None:
        self.records: dict[str, list[BaseModel]] = {}

    def end_offsets(self, topic_names: Collection[str]) -> dict[str, int]:
        return {f"{name}:0": len(self.records.get(name, [])) for name in topic_names}

    def published_ids(self, since: dict[str, int]) -> dict[str, set[str]]:
        return {field.rsplit(":", 1)[0]: {record_id(field.rsplit(":", 1)[0], value) for value in
                                           self.records.get(field.rsplit(":", 1)[0], [])[start:]}
                for field, start in since.items()}

    def send(self, values: list[BaseModel], name: str = DEAD_LETTERS) -> None:
        self.records.setdefault(name, []).extend(values)

    def letters(self) -> list[BaseModel]:
        return self.records.get(DEAD_LETTERS, [])


def _letter(offset: int, reason: str = "unknown shelf 'X'") -> DeadLetter:
    return dead_letter("shelf_events", b'{"shelf_id": "X"}', reason, NOW, 0, offset)


def test_a_batch_run_again_sends_only_the_letters_its_first_attempt_did_not(tmp_path: Path) -> None:
    topic = Topics()
    topic.send([_letter(1)])  # an earlier batch's letter
    first = OutputNotes(tmp_path, topic)
    first.begin(7)
    letters: list[BaseModel] = [_letter(10), _letter(11), _letter(11, "sold 2 more than its lots hold")]
    topic.send(first.unsent(DEAD_LETTERS, letters)[:2])  # the attempt dies while sending: two of three went out
    again = OutputNotes(tmp_path, topic)  # the driver started again
    again.begin(7)
    later = _letter(12)
    assert again.unsent(DEAD_LETTERS, [*letters, later]) == [letters[2], later]
    topic.send([letters[2], later])
    assert [letter_id(r) for r in topic.letters() if isinstance(r, DeadLetter)].count(letter_id(_letter(11))) == 1


def test_an_attempt_that_died_before_sending_sends_every_letter(tmp_path: Path) -> None:
    topic = Topics()
    notes = OutputNotes(tmp_path, topic)
    notes.begin(3)
    letters: list[BaseModel] = [_letter(5)]
    notes.unsent(DEAD_LETTERS, letters)  # noted, then killed before sending
    notes.begin(3)  # the same process runs the batch again (a failed query restarted)
    assert notes.unsent(DEAD_LETTERS, letters) == letters
    topic.send(letters)
    notes.begin(3)
    assert notes.unsent(DEAD_LETTERS, letters) == []


def test_a_letter_the_same_record_had_in_an_earlier_batch_is_sent(tmp_path: Path) -> None:
    topic = Topics()
    notes = OutputNotes(tmp_path, topic)
    notes.begin(1)
    topic.send(notes.unsent(DEAD_LETTERS, [_letter(5)]))
    notes.begin(2)  # a new batch: nothing of it was sent before, whatever the topic holds
    assert notes.unsent(DEAD_LETTERS, [_letter(6)]) == [_letter(6)]


def test_batches_without_letters_note_nothing_and_one_note_is_kept(tmp_path: Path) -> None:
    notes = OutputNotes(tmp_path, Topics())
    notes.begin(1)
    assert notes.unsent(DEAD_LETTERS, []) == []
    assert not any(tmp_path.iterdir())
    for batch_id in (2, 3):
        notes.begin(batch_id)
        notes.unsent(DEAD_LETTERS, [_letter(batch_id)])
    (tmp_path / "3.new").write_text("{}")  # a note half written when the driver died
    notes.begin(4)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    notes.unsent(DEAD_LETTERS, [_letter(4)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4"]


def _alert(n: int) -> Alert:
    return Alert(alert_id=f"expired-store-S{n}", alert_type="expired", location="store", severity="critical",
                 shelf_id=f"S{n}", message="expired", ts=NOW)


def test_the_watched_append_only_records_go_once_and_the_others_every_time(tmp_path: Path) -> None:
    topics = Topics()
    alerts: list[BaseModel] = [_alert(1), _alert(2)]
    discount: list[BaseModel] = [DailyDiscount(shelf_id="S1", discount_date=NOW.date(), discount=0.2,
                                               reason="near_expiry")]
    notes = OutputNotes(tmp_path, topics, {DEAD_LETTERS, "alerts"})
    notes.begin(5)
    topics.send(notes.unsent("alerts", alerts)[:1], "alerts")  # died after sending one of the two alerts
    notes.begin(5)
    assert notes.unsent("alerts", alerts) == alerts[1:]
    assert notes.unsent(DEAD_LETTERS, [_letter(1)]) == [_letter(1)]  # the note covers every watched topic
    assert notes.unsent("daily_discounts", discount) == discount  # compacted: sending it again changes nothing
