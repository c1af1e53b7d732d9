"""The commit protocol (smartshelf.streaming.commit) over an in-memory fake of Kafka and Delta: a batch is
published then committed; a batch found committed is skipped; a crash between publish and commit is replayed
without duplicating append-only records; the first batch ever publishes every key's opening state; a batch
that changes and publishes nothing commits nothing; a record whose application raises is a dead letter and the
batch goes on without it. Run through a real state app (batch-state-updater) and a small
app of append-only records."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pytest
from pydantic import BaseModel

from smartshelf import rules
from smartshelf.datagen import generate_store
from smartshelf.registry import DEAD_LETTERS, topic
from smartshelf.runtime import jobs
from smartshelf.schemas import Alert, DeadLetter, PosItem, PosTransaction, ShelfBatchState, ShelfEvent, ShelfState
from smartshelf.settings import Settings
from smartshelf.store import StoreData
from smartshelf.streaming.apps import BatchStateUpdater
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
def store(monkeypatch: pytest.MonkeyPatch) -> StoreData:
    generated = generate_store(7)
    monkeypatch.setattr(jobs, "load_store", lambda settings: generated)
    return generated


@pytest.fixture
def io(tmp_path: Path) -> FakeIO:
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return FakeIO(settings.model_copy(update={"delta_dir": tmp_path, "run_dir": tmp_path}))


def _pickups(shelves: list[ShelfState], first: int = 0) -> list[Received]:
    return [Received("shelf_events", 0, first + n, ShelfEvent(
        event_id=f"e{first + n}", event_type="pickup", shelf_id=shelf.shelf_id, quantity=1, weight_change=-1.0,
        customer_id="C1", ts=T0 + timedelta(seconds=n))) for n, shelf in enumerate(shelves)]


def _sales(lots: list[ShelfBatchState], first: int = 0) -> list[Received]:
    """One unit sold from each lot's shelf."""
    return [Received("pos_transactions", 0, first + n, PosTransaction(
        transaction_id=f"t{first + n}", customer_id="C1", ts=T0 + timedelta(seconds=n), total=1.0,
        items=[PosItem(shelf_id=lot.shelf_id, quantity=1, unit_price=1.0, discount=0.0, line_total=1.0)]))
        for n, lot in enumerate(lots)]


def _lots_of_distinct_shelves(store: StoreData, io: FakeIO, count: int) -> list[ShelfBatchState]:
    lots = {lot.shelf_id: lot for lot in rules.initial_states(store, io.settings.sim_start).shelf_lots
            if lot.batch_quantity_store > 0}
    return list(lots.values())[:count]


def test_the_first_batch_ever_publishes_every_keys_opening_state_then_only_changes(store: StoreData, io: FakeIO
                                                                                   ) -> None:
    app, lots = BatchStateUpdater(), rules.initial_states(store, io.settings.sim_start).shelf_lots
    assert app.needs_batch([])  # not loaded yet: handed the first batch even without records
    app.handle(io, 0, [], BatchOutput())
    key = topic("shelf_batch_state").key_of
    assert {key(lot) for lot in io.topics["shelf_batch_state"]} == {key(lot) for lot in lots}
    assert io.applied_batch(app.state_path(io), app.name) == 0 and not app.needs_batch([])
    app.handle(io, 1, _sales(_lots_of_distinct_shelves(store, io, 3)), BatchOutput())
    assert len(io.topics["shelf_batch_state"]) == len(lots) + 3  # the three lots the batch sold from


def test_a_batch_found_committed_is_skipped_whole(store: StoreData, io: FakeIO) -> None:
    sold = _lots_of_distinct_shelves(store, io, 5)
    BatchStateUpdater().handle(io, 0, _sales(sold), BatchOutput())
    published, state = len(io.topics["shelf_batch_state"]), io.tables[BatchStateUpdater().state_path(io)]
    restarted = BatchStateUpdater()  # Spark hands the batch again after a crash before its checkpoint
    restarted.handle(io, 0, _sales(sold), BatchOutput())
    assert len(io.topics["shelf_batch_state"]) == published and io.tables[restarted.state_path(io)] == state
    after = restarted.state[topic("shelf_batch_state").key_of(sold[0])]
    assert isinstance(after, ShelfBatchState) and after.batch_quantity_store == sold[0].batch_quantity_store - 1


def test_refused_events_are_dead_letters_and_their_batch_is_committed(store: StoreData, io: FakeIO) -> None:
    ghost = Received("pos_transactions", 0, 7, PosTransaction(
        transaction_id="g", customer_id="C1", ts=T0, total=1.0,
        items=[PosItem(shelf_id="NOPE", quantity=1, unit_price=1.0, discount=0.0, line_total=1.0)]))
    app = BatchStateUpdater()
    app.handle(io, 0, [], BatchOutput())
    app.handle(io, 1, [ghost], BatchOutput())
    letters = io.topics[DEAD_LETTERS]
    assert [(letter.source_offset, letter.reason) for letter in letters if isinstance(letter, DeadLetter)] == [
        (7, "sold 1 more of shelf NOPE than its lots hold")]
    assert io.applied_batch(app.state_path(io), app.name) == 1  # a replay does not report it again
    BatchStateUpdater().handle(io, 1, [ghost], BatchOutput())
    assert len(io.topics[DEAD_LETTERS]) == 1


def test_a_crash_between_publish_and_commit_publishes_nothing_twice(io: FakeIO) -> None:
    shelves = [ShelfState(shelf_id=f"S{n}", current_stock=5, current_weight=5.0, last_event_type="init",
                          last_event_ts=T0) for n in range(4)]
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
    shelves = [ShelfState(shelf_id=f"S{n}", current_stock=5, current_weight=5.0, last_event_type="init",
                          last_event_ts=T0) for n in range(5)]
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
