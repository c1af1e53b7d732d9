"""The commit protocol of a streaming app whose state is committed from the driver (smartshelf.streaming.driver_app:
the pulse's alerting), written apart from the app's state and rules:

    load the state (once per start) → batch already committed? → apply → publish → commit

Each event's effect lands exactly once. An app's state and the batch id are committed together, in one Delta
transaction (app id, batch id), after the batch's effects are published and acknowledged:
- a crash before the commit replays the batch from the last committed state, which gives the same effects
  (they depend on the events and simulated time only): a compacted topic takes the same values again, and the
  first batch after a start drops the records of append-only topics that an earlier attempt already published
  (their ids, read back from where the outputs ended at the last commit);
- a batch found committed is skipped whole: its effects were published before its commit;
- dead letters, which carry no id, are sent once per batch by the I/O (smartshelf.streaming.batch.OutputNotes).

No single record stops an app: a record whose application raises is found by applying the batch's records one
by one from the committed state, becomes a dead letter naming the app and the error, and the batch is applied
without it (issue 23). A batch that fails although each of its records alone applies fails as a whole (the
runner restarts the query from its checkpoint).

The I/O is an interface (`CommitIO`): `smartshelf.streaming.batch.BatchIO` against Kafka and Delta, an in-memory
fake in the unit tests (tests/unit/test_commit_protocol.py).
"""

from __future__ import annotations

import os
from collections.abc import Collection
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

import pyarrow as pa
from pydantic import BaseModel

from smartshelf.ingress import dead_letter
from smartshelf.registry import DEAD_LETTERS, topic
from smartshelf.schemas import DeadLetter
from smartshelf.settings import Settings
from smartshelf.streaming.batch import BatchOutput, Received, apply_isolating, first_raising

ModelT = TypeVar("ModelT", bound=BaseModel)

# failure drills (SMARTSHELF_CRASH_POINT): the driver fails once per app that gets records, after publishing a
# batch and before committing it (the runner restarts the query); or dies once per run there, at the first
# batch that published records of an append-only topic (whose replay must not publish them again)
FAIL_AFTER_PUBLISH = "spark.fail_after_publish"
EXIT_AFTER_PUBLISH = "spark.exit_after_publish"


class CommitIO(Protocol):
    """What the protocol and the apps need of the outside world."""

    settings: Settings

    def read_rows(self, path: Path, model: type[ModelT]) -> list[ModelT]: ...

    def applied_batch(self, path: Path, app: str) -> int | None: ...

    def commit(self, path: Path, data: pa.Table, app: str, batch_id: int) -> None:
        """Replace the table's rows with `data` as batch `batch_id` of `app`, in one transaction."""
        ...

    def overwrite(self, path: Path, data: pa.Table) -> None:
        """Replace the table's rows outside any batch (an app's first state, before its first batch)."""
        ...

    def publish(self, output: BatchOutput) -> None:
        """Send and wait until the broker has every record."""
        ...

    def end_offsets(self, topic_names: Collection[str]) -> dict[str, int]: ...

    def published_ids(self, since: dict[str, int]) -> dict[str, set[str]]: ...

    def drill_once(self, name: str) -> bool: ...

    def now(self) -> datetime:
        """The simulated time (dead letters are stamped with it)."""
        ...


class CommittedApp:
    """An app whose state is committed per (app, batch) to one Delta table; `handle` is the protocol, the
    subclasses say what the state is, how it loads, what a batch does to it and what to commit."""

    name: ClassVar[str]
    topics: ClassVar[tuple[str, ...]]
    # the topics whose invalid records this app reports to dead_letters: one app per topic, so a bad record
    # is reported once however many apps read it (tests/unit/test_streaming_apps.py checks the ownership)
    validates: ClassVar[tuple[str, ...]] = ()

    def __init__(self) -> None:
        self.loaded = False
        self.first_batch = True  # the first batch of this start: an earlier attempt may have published it
        self.dirty = False  # the state changed since its last commit

    # --- what each kind of app provides ---------------------------------------------------------------
    def state_path(self, io: CommitIO) -> Path:
        raise NotImplementedError

    def load(self, io: CommitIO) -> None:
        """The state as last committed (or as the store opened)."""
        raise NotImplementedError

    def apply(self, io: CommitIO, received: list[Received]) -> dict[str, list[BaseModel]]:
        """Apply the batch to the state (setting `dirty` if it changed); returns the records to publish."""
        raise NotImplementedError

    def state_rows(self) -> pa.Table:
        """The state as the rows of its table."""
        raise NotImplementedError

    def recorded_ends(self) -> dict[str, int]:
        """Where its append-only outputs ended at the last commit ("topic:partition" -> offset)."""
        return {}

    def record_ends(self, io: CommitIO) -> None:
        """Note where its outputs end now that a batch is published (committed with the state)."""

    def follow(self, received: list[Received]) -> list[Received]:
        """Records that steer the app (its policies), taken before the replay check; returns the rest."""
        return received

    # --- the protocol ---------------------------------------------------------------------------------
    def needs_batch(self, mine: list[Received]) -> bool:
        # the first batch after a start loads the state, whether or not its topics brought records
        return bool(mine) or not self.loaded

    def handle(self, io: CommitIO, batch_id: int, received: list[Received], output: BatchOutput) -> None:
        path = self.state_path(io)
        if not self.loaded:
            self.load(io)
            self.loaded = True
        received = self.follow(received)
        done = io.applied_batch(path, self.name)
        if done is not None and done >= batch_id:
            return  # committed before a crash: its effects were published before its commit
        records = {name: values for name, values in self._apply_isolated(io, received).items() if values}
        if self.first_batch and records and self.recorded_ends():
            records = _not_yet_published(records, io.published_ids(self.recorded_ends()))
        self.first_batch = False
        io.publish(BatchOutput(records))
        if records:
            self.record_ends(io)
        _drill_after_publish(io, self.name, received, records)
        if self.dirty or records:  # nothing changed nor published: a replay would change nothing either
            io.commit(path, self.state_rows(), self.name, batch_id)
            self.dirty = False

    def _apply_isolated(self, io: CommitIO, received: list[Received]) -> dict[str, list[BaseModel]]:
        def first_failing(rest: list[Received]) -> tuple[Received, Exception] | None:
            self.load(io)  # back to the committed state
            return self._first_failing(io, rest)

        records, poisoned = apply_isolating(received, lambda rest: self.apply(io, rest), first_failing, self.name)
        if poisoned:
            letters = [letter_of(io, item, reason) for item, reason in poisoned]
            records = {**records, DEAD_LETTERS: [*records.get(DEAD_LETTERS, []), *letters]}
        return records

    def _first_failing(self, io: CommitIO, received: list[Received]) -> tuple[Received, Exception] | None:
        """The first record whose application, after those before it, raises, with what it raised; the state
        is the committed one again after."""
        try:
            return first_raising(received, lambda item: self.apply(io, [item]))
        finally:
            self.load(io)


def letter_of(io: CommitIO, item: Received, reason: str) -> DeadLetter:
    """The dead letter of a record an app refused or could not apply."""
    return dead_letter(item.topic, item.record.model_dump_json().encode(), reason, io.now(), item.partition,
                       item.offset)


def _drill_after_publish(io: CommitIO, app_name: str, received: list[Received], records: dict[str, list[BaseModel]]
                         ) -> None:
    point = io.settings.crash_point
    if point == FAIL_AFTER_PUBLISH and received and io.drill_once(app_name):
        raise RuntimeError(f"drill: {app_name} fails once between publishing a batch and committing it")
    if point == EXIT_AFTER_PUBLISH and any(topic(name).id_field for name in records) \
            and io.drill_once(EXIT_AFTER_PUBLISH):
        os._exit(137)


def _not_yet_published(records: dict[str, list[BaseModel]], published: dict[str, set[str]]
                       ) -> dict[str, list[BaseModel]]:
    kept = {}
    for name, values in records.items():
        seen = published.get(name)
        kept[name] = values if seen is None else [v for v in values if topic(name).id_of(v) not in seen]
    return {name: values for name, values in kept.items() if values}
