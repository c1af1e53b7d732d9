"""The commit protocol (smartshelf.streaming.commit) over an in-memory fake of Kafka and Delta: a batch is
published then committed; a batch found committed is skipped; a crash between publish and commit is replayed
without duplicating append-only records; a batch
that changes and publishes nothing commits nothing; a record whose application raises is a dead letter and the
batch goes on without it. Run through a small app of append-only records (the closed loop's apps follow the
protocol; the state apps keep their state in Spark's state store, smartshelf.streaming.keyed_query)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pytest
from pydantic import BaseModel

from smartshelf.registry import DEAD_LETTERS, topic
from smartshelf.schemas import Alert, DeadLetter, ShelfEvent, ShelfState
from smartshelf.settings import Settings
from smartshelf.streaming.batch import BatchOutput, Received
from smartshelf.streaming.commit import CommitIO, CommittedApp

ModelT = TypeVar("ModelT", bound=BaseModel)
T0 = datetime(2025, 1, 1, 9)


class Crash(Exception):
    """The driver dying at a commit."""


class FakeIO:
    """Topics as lists (one partition each), Delta tables as their rows and transaction ids."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topics: dict[str, list[BaseModel]] = defaultdict(list)
        self.tables: dict[Path, pa.Table] = {}
        self.transactions: dict[Path, dict[str, int]] = defaultdict(dict)
        self.commits = 0
        self.crash_at_commit = False

    def read_rows(self, path: Path, model: type[ModelT]) -> list[ModelT]:
        data = self.tables.get(path)
        return [] if data is None else [model.model_validate(row) for row in data.to_pylist()]

    def applied_batch(self, path: Path, app: str) -> int | None:
        return self.transactions[path].get(app)

    def commit(self, path: Path, data: pa.Table, app: str, batch_id: int) -> None:
        if self.crash_at_commit:
            raise Crash
        self.tables[path], self.transactions[path][app] = data, batch_id
        self.commits += 1

    def overwrite(self, path: Path, data: pa.Table) -> None:
        self.tables[path] = data

    def publish(self, output: BatchOutput) -> None:
        for name, values in output.records.items():
            self.topics[name].extend(values)

    def end_offsets(self, topic_names: Collection[str]) -> dict[str, int]:
        return {f"{name}:0": len(self.topics[name]) for name in topic_names}

    def published_ids(self, since: dict[str, int]) -> dict[str, set[str]]:
        found: dict[str, set[str]] = {}
        for field, offset in since.items():
            name = field.rsplit(":", 1)[0]
            found[name] = {topic(name).id_of(value) for value in self.topics[name][offset:]}
        return found

    def drill_once(self, name: str) -> bool:
        return False

    def now(self) -> datetime:
        return T0


class AlertPerEvent(CommittedApp):
    """An app of append-only records: one alert per shelf event (its id from the event's), and a count."""

    name = "alert-per-event"
    topics = ("shelf_events",)
    outputs = ("alerts",)

    def __init__(self) -> None:
        super().__init__()
        self.count = 0
        self.ends: dict[str, int] = {}

    def state_path(self, io: CommitIO) -> Path:
        return Path("apps") / self.name

    def load(self, io: CommitIO) -> None:
        rows = io.read_rows(self.state_path(io), Counted)
        self.count, self.ends = (rows[0].count, rows[0].ends) if rows else (0, io.end_offsets(self.outputs))

    def apply(self, io: CommitIO, received: list[Received]) -> dict[str, list[BaseModel]]:
        for item in received:
            if _event_id(item).startswith("poison"):
                raise ValueError(f"cannot take {_event_id(item)}")
        self.count += len(received)
        self.dirty = bool(received)
        return {"alerts": [Alert(alert_id=f"a-{_event_id(item)}", alert_type="low_stock", location="store",
                                 severity="info", message="m", ts=T0) for item in received]}

    def state_rows(self) -> pa.Table:
        return pa.Table.from_pylist([Counted(count=self.count, ends=self.ends).model_dump()])

    def recorded_ends(self) -> dict[str, int]:
        return self.ends

    def record_ends(self, io: CommitIO) -> None:
        self.ends = io.end_offsets(self.outputs)


def _event_id(item: Received) -> str:
    assert isinstance(item.record, ShelfEvent)
    return item.record.event_id


def _ids(alerts: list[BaseModel]) -> list[str]:
    return [alert.alert_id for alert in alerts if isinstance(alert, Alert)]


class Counted(BaseModel):
    count: int
    ends: dict[str, int]


@pytest.fixture
def io(tmp_path: Path) -> FakeIO:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return FakeIO(settings.model_copy(update={"delta_dir": tmp_path, "run_dir": tmp_path}))


def _shelves(count: int) -> list[ShelfState]:
    return [ShelfState(shelf_id=f"S{n}", current_stock=5, current_weight=5.0, last_event_type="init",
                       last_event_ts=T0) for n in range(count)]


def _pickups(shelves: list[ShelfState], first: int = 0) -> list[Received]:
    return [Received("shelf_events", 0, first + n, ShelfEvent(
        event_id=f"e{first + n}", event_type="pickup", shelf_id=shelf.shelf_id, quantity=1, weight_change=-1.0,
        customer_id="C1", ts=T0 + timedelta(seconds=n))) for n, shelf in enumerate(shelves)]


def test_a_batch_found_committed_is_skipped_whole(io: FakeIO) -> None:
    shelves = _shelves(5)
    AlertPerEvent().handle(io, 0, _pickups(shelves), BatchOutput())
    published, state = len(io.topics["alerts"]), io.tables[AlertPerEvent().state_path(io)]
    restarted = AlertPerEvent()  # Spark hands the batch again after a crash before its checkpoint
    restarted.handle(io, 0, _pickups(shelves), BatchOutput())
    assert len(io.topics["alerts"]) == published == 5 and io.tables[restarted.state_path(io)] == state
    assert restarted.count == 5


def test_a_dead_letter_is_committed_with_its_batch_and_not_reported_again(io: FakeIO) -> None:
    shelves = _shelves(2)
    poison = Received("shelf_events", 0, 7, _pickups(shelves)[0].record.model_copy(update={"event_id": "poison-7"}))
    app = AlertPerEvent()
    app.handle(io, 0, _pickups(shelves), BatchOutput())
    app.handle(io, 1, [poison], BatchOutput())
    letters = io.topics[DEAD_LETTERS]
    assert [(letter.source_offset, letter.reason) for letter in letters if isinstance(letter, DeadLetter)] == [
        (7, "alert-per-event could not apply it: ValueError: cannot take poison-7")]
    assert io.applied_batch(app.state_path(io), app.name) == 1  # a replay does not report it again
    AlertPerEvent().handle(io, 1, [poison], BatchOutput())
    assert len(io.topics[DEAD_LETTERS]) == 1


def test_a_crash_between_publish_and_commit_publishes_nothing_twice(io: FakeIO) -> None:
    shelves = _shelves(4)
    AlertPerEvent().handle(io, 0, _pickups(shelves[:2]), BatchOutput())
    io.crash_at_commit = True
    with pytest.raises(Crash):
        AlertPerEvent().handle(io, 1, _pickups(shelves, first=2), BatchOutput())
    assert len(io.topics["alerts"]) == 6  # published, not committed
    io.crash_at_commit = False
    restarted = AlertPerEvent()
    restarted.handle(io, 1, _pickups(shelves, first=2), BatchOutput())  # the replay, from the last commit
    assert sorted(_ids(io.topics["alerts"])) == sorted(f"a-e{n}" for n in range(6))
    assert restarted.count == 6  # the replayed batch counted once, from the committed state
    restarted.handle(io, 2, _pickups(shelves[:1], first=6), BatchOutput())  # later batches are not filtered
    assert len(io.topics["alerts"]) == 7


def test_a_batch_that_changes_and_publishes_nothing_commits_nothing(io: FakeIO) -> None:
    app = AlertPerEvent()
    app.handle(io, 0, [], BatchOutput())
    assert io.commits == 0 and io.applied_batch(app.state_path(io), app.name) is None


def test_a_record_that_raises_is_a_dead_letter_and_the_rest_of_the_batch_is_applied(io: FakeIO) -> None:
    shelves = _shelves(5)
    batch = _pickups(shelves)
    poison = Received("shelf_events", 0, 99, batch[2].record.model_copy(update={"event_id": "poison-1"}))
    app = AlertPerEvent()
    app.handle(io, 0, [*batch[:2], poison, *batch[2:]], BatchOutput())
    assert sorted(_ids(io.topics["alerts"])) == sorted(f"a-e{n}" for n in range(5))
    letters = io.topics[DEAD_LETTERS]
    assert len(letters) == 1 and isinstance(letters[0], DeadLetter)
    assert (letters[0].source, letters[0].source_offset) == ("shelf_events", 99)
    assert letters[0].reason == "alert-per-event could not apply it: ValueError: cannot take poison-1"
    assert app.count == 5 and io.applied_batch(app.state_path(io), app.name) == 0
    app.handle(io, 1, _pickups(shelves[:1], first=5), BatchOutput())  # the app goes on
    assert app.count == 6 and len(io.topics["alerts"]) == 6
