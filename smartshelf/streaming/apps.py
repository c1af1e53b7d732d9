"""The streaming apps: each names its input topics and what a batch of them does.

The keyed state apps (shelf-aggregator, wh-aggregator, wh-batch-state-updater) keep their state per shelf in
Spark's state store: their rules run per key in the executors (smartshelf.streaming.keyed,
smartshelf.streaming.keyed_query). batch-state-updater, whose sales take lots across a basket in the order of
the tills, still keeps its state in memory on the driver, loaded from its Delta table at start (or the store's
opening state, published whole with the first batch), and follows the commit protocol of
smartshelf.streaming.commit: a batch's changed keys and its refused events are published, then the state is
committed with the batch id. The lake sink mirrors the topics to the Delta lake, the keyed apps' state topics
among them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Protocol

import pyarrow as pa
from pydantic import BaseModel

from smartshelf import rules
from smartshelf.adapters import delta
from smartshelf.errors import SmartShelfError
from smartshelf.registry import DEAD_LETTERS, TABLES, Table, table, topic
from smartshelf.schemas import (PosTransaction, ShelfBatchState, ShelfEvent, ShelfProfile, ShelfRisk, ShelfState,
                                WarehouseBatchState, WarehouseEvent, WarehouseState)
from smartshelf.settings import Settings
from smartshelf.store import StoreData, clock_start
from smartshelf.streaming.batch import BatchIO, BatchOutput, Received
from smartshelf.streaming.commit import CommitIO, CommittedApp, letter_of
from smartshelf.streaming.keyed import KeyedApp, Step
from smartshelf.streaming.loop_apps import loop_apps

if TYPE_CHECKING:
    from smartshelf.ml.risk import RiskScorer, ShelfFacts

log = logging.getLogger(__name__)


class StreamingApp(Protocol):
    name: str
    topics: tuple[str, ...]
    # the topics whose invalid records this app reports to dead_letters: one app per topic, so a bad record
    # is reported once however many apps read it (tests/unit/test_streaming_apps.py checks the ownership)
    validates: tuple[str, ...]

    def handle(self, io: BatchIO, batch_id: int, received: list[Received], output: BatchOutput) -> None: ...

    def needs_batch(self, mine: list[Received]) -> bool:
        """Whether to hand it a batch that holds `mine` of its topics' records (none, maybe)."""
        ...


def _delta_path(io: CommitIO, table_name: str) -> Path:
    return delta.table_path(io.settings.delta_dir, table(table_name))


class LakeSink:
    """The lake layers that mirror topics, written by delta-spark in a query of their own (the runner's lake
    query): each append-only topic's valid records appended to its Delta table once per batch, each compacted
    topic's merged by key (its table holds the latest value per key, as the topic does once compacted)."""

    name = "lake-sink"

    def __init__(self, validates: tuple[str, ...]) -> None:
        self.tables = lake_tables()
        self.topics = tuple(sorted(self.tables))
        self.validates = validates

    def needs_batch(self, mine: list[Received]) -> bool:
        return bool(mine)

    def handle(self, io: BatchIO, batch_id: int, received: list[Received], output: BatchOutput) -> None:
        by_topic: dict[str, list[BaseModel]] = {}
        for item in received:
            by_topic.setdefault(item.topic, []).append(item.record)
        for topic_name, records in sorted(by_topic.items()):
            described = self.tables[topic_name]
            path, data = _delta_path(io, described.name), delta.to_arrow(described.schema, records)
            if topic(topic_name).compacted:
                io.lake.upsert(path, data, described.key)
            else:
                io.lake.append_batch(path, data, self.name, batch_id)


Problem = tuple[Received, str]  # an event the state could not take as it is, and why (→ dead_letters)


class StateApp(CommittedApp):
    """A keyed state (one registry table, one compacted topic) updated by the events of a batch: the table holds
    the whole state, committed per batch; the topic gets the keys a batch changed (every key, the first time)."""

    state_table: ClassVar[str]  # registry table name; the table's topic is the compacted output
    initial_field: ClassVar[str]  # the rules.InitialStates field the state starts from

    def __init__(self) -> None:
        super().__init__()
        self.state: dict[str, BaseModel] = {}
        self.sim_start = datetime.min  # set with the state, from the settings
        self.opening = False  # the state is the store's opening one, not yet committed nor published

    def initial(self, store: StoreData, start: datetime) -> list[BaseModel]:
        """The state as the store opened."""
        return list(getattr(rules.initial_states(store, start), self.initial_field))

    def apply_events(self, state: dict[str, BaseModel], received: list[Received]
                     ) -> tuple[set[str], list[Problem]]:
        """Apply the batch's events in order; returns the keys changed and the events refused."""
        raise NotImplementedError

    def _key(self, value: BaseModel) -> str:
        return topic(self._topic()).key_of(value)

    def _topic(self) -> str:
        name = table(self.state_table).topic
        assert name is not None
        return name

    def state_path(self, io: CommitIO) -> Path:
        return _delta_path(io, self.state_table)

    def load(self, io: CommitIO) -> None:
        rows: list[BaseModel] = list(io.read_rows(self.state_path(io), table(self.state_table).schema))
        if not rows:  # the first batch ever: the state as the store opened
            from smartshelf.runtime.jobs import load_store

            store = load_store(io.settings)
            rows = self.initial(store, clock_start(store, io.settings.sim_start))
            self.opening = True
        self.state, self.sim_start = {self._key(row): row for row in rows}, io.settings.sim_start

    def apply(self, io: CommitIO, received: list[Received]) -> dict[str, list[BaseModel]]:
        touched, problems = self.apply_events(self.state, received)
        if self.opening:  # every key is published once from the start, not only those events touch
            touched, self.opening = set(self.state), False
        self.dirty = bool(touched)
        return {self._topic(): [self.state[k] for k in sorted(touched) if k in self.state],
                DEAD_LETTERS: [letter_of(io, item, reason) for item, reason in problems]}

    def state_rows(self) -> pa.Table:
        return delta.to_arrow(table(self.state_table).schema, [self.state[k] for k in sorted(self.state)])


class ShelfAggregator(KeyedApp):
    """shelf_events → shelf_state (compacted topic; Delta cleansed/shelf_state through the lake sink), keyed by
    shelf in Spark's state store (smartshelf.streaming.keyed_query)."""

    name = "shelf-aggregator"
    topics = ("shelf_events", "shelf_profiles")
    validates = topics
    state_table = "shelf_state"
    initial_field = "shelves"

    def ordered(self, received: list[Received]) -> list[Received]:
        # reference data first: a batch's events may concern a shelf its profiles add
        return sorted(received, key=lambda item: item.topic != "shelf_profiles")

    def step(self, state: dict[str, BaseModel], event: BaseModel) -> Step:
        if isinstance(event, ShelfProfile):  # a shelf the store adds; a known shelf's state stays as measured
            known = event.shelf_id in state
            return event.shelf_id, None if known else rules.shelf_from_profile(event, self.sim_start), None
        assert isinstance(event, ShelfEvent)
        current = state.get(event.shelf_id)
        if not isinstance(current, ShelfState):
            return event.shelf_id, None, f"unknown shelf '{event.shelf_id}'"
        after, problem = rules.apply_shelf_event(current, event)
        if isinstance(problem, rules.Refused):
            return event.shelf_id, None, problem.reason
        return event.shelf_id, after, problem and (
            f"pickup of {event.quantity} exceeds the stock by {problem.missing}; stock set to 0")


class RiskScoring:
    """The restock risk of the shelves whose state changed (every shelf's when a new model version comes), by the
    newest model version under ARTIFACT_DIR/RISK_MODEL_NAME, looked for at each batch (one stat while there is
    none; XGBoost is imported only once there is one). The risk is a score of the state, not state: a replay
    scores the same state the same way."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.scorer: RiskScorer | None = None
        self.facts: dict[str, ShelfFacts] = {}
        self.refused: Path | None = None  # a version that could not be read, warned about once

    def scores(self, changed: list[ShelfState], every_shelf: Callable[[], list[ShelfState]]) -> list[ShelfRisk]:
        folder = self.settings.artifact_dir / self.settings.risk_model_name
        if not folder.is_dir():
            return []
        newer = self._newer(folder)
        if self.scorer is None:
            return []
        shelves = every_shelf() if newer else changed
        if any(shelf.shelf_id not in self.facts for shelf in shelves):
            self._learn_shelves()
        try:
            return list(self.scorer.score(shelves, self.facts))
        except Exception as error:  # noqa: BLE001 - a score that fails must not stop the shelves' states
            log.warning("restock risk: model %s could not score: %s", self.scorer.model_version, error)
            return []

    def _newer(self, folder: Path) -> bool:
        """Load the newest version if it is not the one in use; whether one was loaded."""
        from smartshelf.ml.artifacts import newest_model_path
        from smartshelf.ml.risk import RiskScorer

        newest = newest_model_path(folder.parent, folder.name)
        if newest is None or newest == self.refused or (
                self.scorer is not None and self.scorer.model_version == int(newest.name)):
            return False
        try:
            self.scorer = RiskScorer.load(newest)
        except SmartShelfError as error:
            log.warning("restock risk: %s", error)
            self.refused = newest
            return False
        if not self.facts:
            self._learn_shelves()
        return True

    def _learn_shelves(self) -> None:
        """The facts of the store's shelves and of those it added since (their profiles)."""
        from smartshelf.ml.risk import shelf_facts
        from smartshelf.runtime.jobs import load_config, load_store

        self.facts = shelf_facts(load_store(self.settings), load_config(self.settings).shelf_profiles)


class BatchStateUpdater(StateApp):
    """pos_transactions → shelf_batch_state: sold items leave the shelf's lots earliest expiry first. It also
    keeps the store's mirror of the batches on shelves from the staff's moves on shelf_events: a refill (staff
    putback naming its lot) adds the lot's items, a removal (staff pickup naming an expired lot) takes them
    off. One app writes the shelf lots, so each change lands once (docs/architecture.md)."""

    name = "batch-state-updater"
    topics = ("pos_transactions", "shelf_events")
    validates = ("pos_transactions",)
    state_table = "shelf_batch_state"
    initial_field = "shelf_lots"

    def apply_events(self, state: dict[str, BaseModel], received: list[Received]
                     ) -> tuple[set[str], list[Problem]]:
        lots_by_shelf: dict[str, list[ShelfBatchState]] = {}
        for lot in state.values():
            assert isinstance(lot, ShelfBatchState)
            lots_by_shelf.setdefault(lot.shelf_id, []).append(lot)
        touched, problems = set(), []
        # sales in their partition's order (the world's), the staff's moves among them by time
        for item in sorted(received, key=_time_order):
            event = item.record
            if isinstance(event, ShelfEvent):
                if not (event.by_staff and event.batch_code is not None) or event.event_type == "weight_change":
                    continue  # customers' moves change the shelf, not the lots (paid at the exit)
                if event.event_type == "putback":
                    received_lot = rules.receive_on_shelf(lots_by_shelf, event)
                    if isinstance(received_lot, rules.Refused):
                        problems.append((item, received_lot.reason))
                        continue
                    lot: ShelfBatchState | None = received_lot
                    shortfall = None
                else:
                    lot, shortfall = rules.remove_from_shelf_lot(lots_by_shelf, event)
                if lot is not None:
                    state[self._key(lot)] = lot
                    touched.add(self._key(lot))
                if shortfall is not None:
                    problems.append((item, f"removal of {shortfall.missing} more than lot {shortfall.key} holds"))
                continue
            assert isinstance(event, PosTransaction)
            changed, shortfalls = rules.apply_sale(lots_by_shelf, event)
            for changed_lot in changed:
                key = self._key(changed_lot)
                state[key] = changed_lot
                touched.add(key)
            for sale_shortfall in shortfalls:
                problems.append((item, f"sold {sale_shortfall.missing} more of shelf {sale_shortfall.key} than its "
                                       f"lots hold"))
        return touched, problems


class WarehouseAggregator(KeyedApp):
    """wh_events → wh_state (compacted topic; Delta cleansed/wh_state through the lake sink), keyed by shelf."""

    name = "wh-aggregator"
    topics = ("wh_events",)
    validates = topics
    state_table = "wh_state"
    initial_field = "warehouse"

    def step(self, state: dict[str, BaseModel], event: BaseModel) -> Step:
        assert isinstance(event, WarehouseEvent)
        current = state.get(event.shelf_id)
        if not isinstance(current, WarehouseState):
            return event.shelf_id, None, f"unknown shelf '{event.shelf_id}'"
        after, problem = rules.apply_wh_event(current, event)
        if isinstance(problem, rules.Refused):
            return event.shelf_id, None, problem.reason
        return event.shelf_id, after, problem and (
            f"{event.event_type} of {event.quantity} exceeds the warehouse stock by {problem.missing}; "
            f"stock set to 0")


class WarehouseBatchStateUpdater(KeyedApp):
    """wh_events → wh_batch_state: lots created by deliveries, reduced by restocks and removals; a shelf's lots
    are its group's state."""

    name = "wh-batch-state-updater"
    topics = ("wh_events",)
    validates = ()  # wh-aggregator reports wh_events' invalid records
    state_table = "wh_batch_state"
    initial_field = "wh_lots"

    def step(self, state: dict[str, BaseModel], event: BaseModel) -> Step:
        assert isinstance(event, WarehouseEvent)
        key = self.key_of(event)  # an event names its lot by the state's key fields (shelf_id, batch_code)
        current = state.get(key)
        assert current is None or isinstance(current, WarehouseBatchState)
        if current is None and event.event_type != "wh_in":
            return key, None, f"{event.event_type} from unknown lot {key}"
        after, problem = rules.apply_wh_batch_event(current, event)
        if isinstance(problem, rules.Refused):
            return key, None, problem.reason
        return key, after, problem and (
            f"{event.event_type} of {event.quantity} exceeds lot {key} by {problem.missing}; set to 0")


def _time_order(item: Received) -> tuple[datetime, str, int, int]:
    assert isinstance(item.record, (PosTransaction, ShelfEvent))
    return item.record.ts, item.topic, item.partition, item.offset


KEYED_APP_CLASSES: tuple[type[KeyedApp], ...] = (ShelfAggregator, WarehouseAggregator, WarehouseBatchStateUpdater)
DRIVER_STATE_APP_CLASSES: tuple[type[StateApp], ...] = (BatchStateUpdater,)


def lake_tables() -> dict[str, Table]:
    """Topic -> the Delta table the lake sink mirrors it to: every Delta table of a topic but those of the state
    apps that keep their state on the driver, each that app's durable state (committed per batch by it)."""
    state_tables = {cls.state_table for cls in DRIVER_STATE_APP_CLASSES}
    return {t.topic: t for t in TABLES if t.delta is not None and t.topic is not None and t.name not in state_tables}


# the apps that keep the twin's state from the sensors' and the warehouse's events, and the lake sink that
# writes their raw events (issue 6's set, benchmarked)
STATE_APPS = ("lake-sink", "shelf-aggregator", "batch-state-updater", "wh-aggregator", "wh-batch-state-updater")


def all_apps() -> dict[str, StreamingApp | KeyedApp]:
    twin: list[StreamingApp | KeyedApp] = [*(cls() for cls in KEYED_APP_CLASSES),
                                          *(cls() for cls in DRIVER_STATE_APP_CLASSES), *loop_apps()]
    validated = {name for app in twin for name in app.validates}
    # the lake reports the invalid records of the topics no twin app validates
    unvalidated = tuple(name for name in sorted(lake_tables()) if name not in validated)
    apps: list[StreamingApp | KeyedApp] = [*twin, LakeSink(unvalidated)]
    return {app.name: app for app in apps}
