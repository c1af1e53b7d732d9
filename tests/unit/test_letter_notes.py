"""Dead letters once per batch although Spark may run a batch twice (smartshelf.streaming.batch.LetterNotes),
against an in-memory dead_letters topic."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from pathlib import Path

from pydantic import BaseModel

from smartshelf.ingress import dead_letter, letter_id
from smartshelf.registry import DEAD_LETTERS
from smartshelf.schemas import DeadLetter
from smartshelf.streaming.batch import LetterNotes

NOW = datetime(2025, 1, 1, 10, 0)


class LetterTopic:
    """dead_letters as a list (one partition)."""

    def __init__(self) -> None:
        self.records: list[DeadLetter] = []

    def end_offsets(self, topic_names: Collection[str]) -> dict[str, int]:
        assert list(topic_names) == [DEAD_LETTERS]
        return {f"{DEAD_LETTERS}:0": len(self.records)}

    def published_ids(self, since: dict[str, int]) -> dict[str, set[str]]:
        return {DEAD_LETTERS: {letter_id(r) for r in self.records[since[f"{DEAD_LETTERS}:0"]:]}}

    def send(self, letters: list[BaseModel]) -> None:
        self.records += [letter for letter in letters if isinstance(letter, DeadLetter)]


def _letter(offset: int, reason: str = "unknown shelf 'X'") -> DeadLetter:
    return dead_letter("shelf_events", b'{"shelf_id": "X"}', reason, NOW, 0, offset)


def test_a_batch_run_again_sends_only_the_letters_its_first_attempt_did_not(tmp_path: Path) -> None:
    topic = LetterTopic()
    topic.send([_letter(1)])  # an earlier batch's letter
    first = LetterNotes(tmp_path, topic)
    first.begin(7)
    letters: list[BaseModel] = [_letter(10), _letter(11), _letter(11, "sold 2 more than its lots hold")]
    topic.send(first.unsent(letters)[:2])  # the attempt dies while sending: two of three went out
    again = LetterNotes(tmp_path, topic)  # the driver started again
    again.begin(7)
    later = _letter(12)
    assert again.unsent([*letters, later]) == [letters[2], later]
    topic.send([letters[2], later])
    assert [letter_id(r) for r in topic.records].count(letter_id(_letter(11))) == 1


def test_an_attempt_that_died_before_sending_sends_every_letter(tmp_path: Path) -> None:
    topic = LetterTopic()
    notes = LetterNotes(tmp_path, topic)
    notes.begin(3)
    letters: list[BaseModel] = [_letter(5)]
    notes.unsent(letters)  # noted, then killed before sending
    notes.begin(3)  # the same process runs the batch again (a failed query restarted)
    assert notes.unsent(letters) == letters
    topic.send(letters)
    notes.begin(3)
    assert notes.unsent(letters) == []


def test_a_letter_the_same_record_had_in_an_earlier_batch_is_sent(tmp_path: Path) -> None:
    topic = LetterTopic()
    notes = LetterNotes(tmp_path, topic)
    notes.begin(1)
    topic.send(notes.unsent([_letter(5)]))
    notes.begin(2)  # a new batch: nothing of it was sent before, whatever the topic holds
    assert notes.unsent([_letter(6)]) == [_letter(6)]


def test_batches_without_letters_note_nothing_and_one_note_is_kept(tmp_path: Path) -> None:
    notes = LetterNotes(tmp_path, LetterTopic())
    notes.begin(1)
    assert notes.unsent([]) == []
    assert not any(tmp_path.iterdir())
    for batch_id in (2, 3):
        notes.begin(batch_id)
        notes.unsent([_letter(batch_id)])
    (tmp_path / "3.new").write_text("{}")  # a note half written when the driver died
    notes.begin(4)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    notes.unsent([_letter(4)])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["4"]
