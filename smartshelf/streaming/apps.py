"""The streaming apps: each names its input topics and handles one validated batch.

State apps keep their state in memory on the driver and commit it, whole, to their Delta table in the
batch's Delta transaction (app id, batch id). That commit is the state's durable point: after a crash Spark
replays the last uncommitted batch; if its Delta commit had happened, the state already holds it and only
its outputs are published again (same values, compacted topics), else it is applied now. So every event's
effect lands exactly once. (The compacted topics are mirrors here: Tansu has no Kafka transactions to make
a topic write atomic with anything else, while a Delta commit is atomic with its transaction id.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import ClassVar, Protocol

from smartshelf import rules
from smartshelf.adapters import delta
from smartshelf.registry import DEAD_LETTERS, table
from smartshelf.schemas import ShelfEvent, ShelfState
from smartshelf.streaming.batch import BatchIO, BatchOutput, Received


class StreamingApp(Protocol):
    name: str
    topics: tuple[str, ...]

    def handle(self, io: BatchIO, batch_id: int, received: list[Received], output: BatchOutput) -> None: ...


def _delta_path(io: BatchIO, table_name: str) -> Path:
    return delta.table_path(io.settings.delta_dir, table(table_name))


class RawSink:
    """An event stream, as it arrived (validated), appended to its raw Delta table once per batch."""

    def __init__(self, name: str, topic_name: str, table_name: str) -> None:
        self.name = name
        self.topics = (topic_name,)
        self.table_name = table_name

    def handle(self, io: BatchIO, batch_id: int, received: list[Received], output: BatchOutput) -> None:
        schema = table(self.table_name).schema
        delta.write_batch(_delta_path(io, self.table_name), delta.to_arrow(schema, [r.record for r in received]),
                          self.name, batch_id)


class ShelfAggregator:
    """shelf_events → shelf_state (Delta cleansed/shelf_state, compacted topic), raw/shelf_events."""

    name: ClassVar[str] = "shelf-aggregator"
    topics: ClassVar[tuple[str, ...]] = ("shelf_events",)

    def __init__(self) -> None:
        self.state: dict[str, ShelfState] | None = None
        self.raw = RawSink(f"{self.name}:raw", "shelf_events", "raw_shelf_events")

    def _load(self, io: BatchIO) -> dict[str, ShelfState]:
        rows = delta.read_rows(_delta_path(io, "shelf_state"), ShelfState)
        if not rows:  # the first batch ever: the shelves as the store opened
            from smartshelf.runtime.jobs import load_store

            rows = rules.initial_states(load_store(io.settings), io.settings.sim_start)[0]
        return {row.shelf_id: row for row in rows}

    def handle(self, io: BatchIO, batch_id: int, received: list[Received], output: BatchOutput) -> None:
        self.raw.handle(io, batch_id, received, output)
        path = _delta_path(io, "shelf_state")
        if self.state is None:
            self.state = self._load(io)
        events = [r.record for r in received if isinstance(r.record, ShelfEvent)]
        touched = sorted({e.shelf_id for e in events if e.shelf_id in self.state})
        applied = delta.applied_batch(path, self.name)
        if applied is None or applied < batch_id:
            for item in received:
                event = item.record
                assert isinstance(event, ShelfEvent)
                if event.shelf_id not in self.state:
                    output.add(DEAD_LETTERS, [_letter(io, item, f"unknown shelf '{event.shelf_id}'")])
                    continue
                self.state[event.shelf_id], shortfall = rules.apply_shelf_event(self.state[event.shelf_id], event)
                if shortfall is not None:
                    output.add(DEAD_LETTERS, [_letter(io, item, f"pickup of {event.quantity} exceeds the stock "
                                                                f"by {shortfall.missing}; stock set to 0")])
            rows = [self.state[k] for k in sorted(self.state)]
            delta.write_batch(path, delta.to_arrow(ShelfState, rows), self.name, batch_id, mode="overwrite")
            if io.settings.crash_point == "spark.after_delta":  # drill: committed, not published
                os._exit(137)
        output.add("shelf_state", [self.state[k] for k in touched])


def _letter(io: BatchIO, item: Received, reason: str):  # type: ignore[no-untyped-def]
    from smartshelf.ingress import dead_letter

    return dead_letter(item.topic, item.record.model_dump_json().encode(), reason, io.now(), item.partition,
                       item.offset)


def all_apps() -> dict[str, StreamingApp]:
    apps: list[StreamingApp] = [
        RawSink("foot-traffic-raw-sink", "foot_traffic", "raw_foot_traffic"),
        ShelfAggregator(),
    ]
    return {app.name: app for app in apps}
