"""The streaming apps: each names its input topics and what a batch of them does.

The state apps (shelf-aggregator, batch-state-updater, wh-aggregator, wh-batch-state-updater) keep their state
per shelf in Spark's state store: their rules run per key in the executors (smartshelf.streaming.keyed,
smartshelf.streaming.keyed_query). The lake sink mirrors the topics to the Delta lake, the state apps' state
topics among them (their cleansed tables). The closed loop's apps whose rule decides about one shelf at a time
keep theirs in the state store too (smartshelf.streaming.keyed_loop), the supplier manager among them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pydantic import BaseModel

from smartshelf import rules
from smartshelf.adapters import delta
from smartshelf.errors import SmartShelfError
from smartshelf.registry import TABLES, Table, table, topic
from smartshelf.schemas import (PosTransaction, ShelfBatchState, ShelfEvent, ShelfProfile, ShelfRisk, ShelfState,
                                WarehouseBatchState, WarehouseEvent, WarehouseState)
from smartshelf.settings import Settings
from smartshelf.streaming.batch import BatchIO, BatchOutput, Received
from smartshelf.streaming.commit import CommitIO
from smartshelf.streaming.keyed import Changes, KeyedApp, Step
from smartshelf.streaming.keyed_loop import KEYED_LOOP_APP_CLASSES, KeyedLoopApp

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
    scores the same state the same way. The model is the chain's (its features are the shelf's, not the store's):
    each store's shelves are scored with their own store's facts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.scorer: RiskScorer | None = None
        self.facts: dict[str, dict[str, ShelfFacts]] = {}  # by store, then shelf
        self.refused: Path | None = None  # a version that could not be read, warned about once

    def scores(self, changed: list[ShelfState], every_shelf: Callable[[], list[ShelfState]]) -> list[ShelfRisk]:
        folder = self.settings.artifact_dir / self.settings.risk_model_name
        if not folder.is_dir():
            return []
        newer = self._newer(folder)
        if self.scorer is None:
            return []
        by_store: dict[str, list[ShelfState]] = {}
        for shelf in every_shelf() if newer else changed:
            by_store.setdefault(shelf.store_id, []).append(shelf)
        for store_id, shelves in by_store.items():
            if any(shelf.shelf_id not in self.facts.get(store_id, {}) for shelf in shelves):
                self._learn_shelves(store_id)
        try:
            return [risk for store_id, shelves in sorted(by_store.items())
                    for risk in self.scorer.score(shelves, self.facts[store_id])]
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
        return True

    def _learn_shelves(self, store_id: str) -> None:
        """The facts of a store's shelves and of those it added since (their profiles)."""
        from smartshelf.ml.risk import shelf_facts
        from smartshelf.runtime.jobs import load_config, load_store

        self.facts[store_id] = shelf_facts(load_store(self.settings, store_id),
                                           load_config(self.settings, store_id).shelf_profiles)


class BatchStateUpdater(KeyedApp):
    """pos_transactions → shelf_batch_state: sold items leave the shelf's lots earliest expiry first. It also
    keeps the store's mirror of the batches on shelves from the staff's moves on shelf_events: a refill (staff
    putback naming its lot) adds the lot's items, a removal (staff pickup naming an expired lot) takes them
    off. One app writes the shelf lots, so each change lands once (docs/architecture.md). A shelf's lots are
    its group's state; a transaction goes to each shelf it sells from, with that shelf's lines (a shelf's lots
    change only by its own lines, so per shelf is the same as across the basket)."""

    name = "batch-state-updater"
    topics = ("pos_transactions", "shelf_events")
    validates = ("pos_transactions",)
    spread = ("pos_transactions",)
    state_table = "shelf_batch_state"
    initial_field = "shelf_lots"

    def ordered(self, received: list[Received]) -> list[Received]:
        # sales in their partition's order (the world's), the staff's moves among them by time
        return sorted(received, key=_time_order)

    def apply(self, state: dict[str, BaseModel], event: BaseModel) -> Changes:
        lots_by_shelf: dict[str, list[ShelfBatchState]] = {}
        for lot in state.values():
            assert isinstance(lot, ShelfBatchState)
            lots_by_shelf.setdefault(lot.shelf_id, []).append(lot)
        if isinstance(event, PosTransaction):
            changed, shortfalls = rules.apply_sale(lots_by_shelf, event)
            return ({self.key_of(lot): lot for lot in changed},
                    [f"sold {short.missing} more of shelf {short.key} than its lots hold" for short in shortfalls])
        assert isinstance(event, ShelfEvent)
        if not (event.by_staff and event.batch_code is not None) or event.event_type == "weight_change":
            return {}, []  # customers' moves change the shelf, not the lots (paid at the exit)
        if event.event_type == "putback":
            received_lot = rules.receive_on_shelf(lots_by_shelf, event)
            if isinstance(received_lot, rules.Refused):
                return {}, [received_lot.reason]
            return {self.key_of(received_lot): received_lot}, []
        lot, shortfall = rules.remove_from_shelf_lot(lots_by_shelf, event)
        return ({} if lot is None else {self.key_of(lot): lot}), (
            [] if shortfall is None else [f"removal of {shortfall.missing} more than lot {shortfall.key} holds"])


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


KEYED_APP_CLASSES: tuple[type[KeyedApp], ...] = (ShelfAggregator, BatchStateUpdater, WarehouseAggregator,
                                                 WarehouseBatchStateUpdater)


def lake_tables() -> dict[str, Table]:
    """Topic -> the Delta table the lake sink mirrors it to: every Delta table of a topic."""
    return {t.topic: t for t in TABLES if t.delta is not None and t.topic is not None}


# the apps that keep the twin's state from the sensors' and the warehouse's events, and the lake sink that
# writes their raw events (issue 6's set, benchmarked)
STATE_APPS = ("lake-sink", "shelf-aggregator", "batch-state-updater", "wh-aggregator", "wh-batch-state-updater")


def all_apps() -> dict[str, StreamingApp | KeyedApp | KeyedLoopApp]:
    twin: list[StreamingApp | KeyedApp | KeyedLoopApp] = [*(cls() for cls in KEYED_APP_CLASSES),
                                                          *(cls() for cls in KEYED_LOOP_APP_CLASSES)]
    validated = {name for app in twin for name in app.validates}
    # the lake reports the invalid records of the topics no twin app validates
    unvalidated = tuple(name for name in sorted(lake_tables()) if name not in validated)
    apps: list[StreamingApp | KeyedApp | KeyedLoopApp] = [*twin, LakeSink(unvalidated)]
    return {app.name: app for app in apps}
