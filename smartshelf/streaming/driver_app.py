"""A streaming app whose whole state lives on the driver, committed from there: the pulse's alerting
(smartshelf.streaming.pulse), whose z-scores compare each window with the same hour of earlier days over the whole
store. (The twin's apps keep their state in Spark's state store: smartshelf.streaming.keyed_query.)

It publishes to append-only topics (alerts, pulse_windows), which a replayed batch must not duplicate. So it keeps
its whole state, and where its output topics ended after its last batch, in one Delta table of its own
(delta/apps/<app>), committed per (app, batch id) by the commit protocol (smartshelf.streaming.commit), whose first
batch after a start skips the records an earlier attempt already published (their ids, read back from the
recorded ends). So each of its records is published exactly once; the lake sink writes them to Delta.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

import pyarrow as pa
from pydantic import BaseModel

from smartshelf import loop
from smartshelf.adapters import delta
from smartshelf.registry import topic
from smartshelf.schemas import AppStateRow
from smartshelf.streaming.batch import Received, time_order
from smartshelf.streaming.commit import CommitIO, CommittedApp

StateT = TypeVar("StateT", bound=BaseModel)


class DriverApp(CommittedApp, Generic[StateT]):
    outputs: ClassVar[tuple[str, ...]]  # the topics it publishes to
    state_model: ClassVar[type[BaseModel]]

    def __init__(self) -> None:
        super().__init__()
        self.state: StateT | None = None
        self.output_ends: dict[str, int] = {}
        self.committed_state = ""  # the state's JSON as last committed
        self.state_json = ""  # the state's JSON after the batch being handled

    def initial(self, io: CommitIO) -> StateT:
        """The state before the first batch ever."""
        return self.state_model()  # type: ignore[return-value]

    def apply_events(self, state: StateT, received: list[Received], io: CommitIO) -> loop.Effects:
        raise NotImplementedError

    def state_path(self, io: CommitIO) -> Path:
        return delta.app_state_path(io.settings.delta_dir, self.name)

    def load(self, io: CommitIO) -> None:
        path = self.state_path(io)
        rows = io.read_rows(path, AppStateRow)
        if not rows:
            # the first start ever: record where the outputs end before anything is published, so that a
            # crash in the very first batch is deduplicated like any other
            first = AppStateRow(app=self.name, state=self.initial(io).model_dump_json(),
                                output_ends=json.dumps(io.end_offsets(self.outputs)))
            io.overwrite(path, delta.to_arrow(AppStateRow, [first]))
            rows = [first]
        self.state = self.state_model.model_validate_json(rows[0].state)  # type: ignore[assignment]
        self.committed_state = rows[0].state
        self.output_ends = json.loads(rows[0].output_ends)

    def apply(self, io: CommitIO, received: list[Received]) -> dict[str, list[BaseModel]]:
        assert self.state is not None
        effects = self.apply_events(self.state, sorted(received, key=time_order), io)
        self.state_json = self.state.model_dump_json()
        self.dirty = self.state_json != self.committed_state
        return effects.records

    def recorded_ends(self) -> dict[str, int]:
        return {field: end for field, end in self.output_ends.items() if topic(field.rsplit(":", 1)[0]).id_field}

    def record_ends(self, io: CommitIO) -> None:
        self.output_ends = io.end_offsets(self.outputs)

    def state_rows(self) -> pa.Table:
        # asked for only to be committed: what the next batch's state is compared with
        self.committed_state = self.state_json
        return delta.to_arrow(AppStateRow, [AppStateRow(app=self.name, state=self.committed_state,
                                                        output_ends=json.dumps(self.output_ends))])
