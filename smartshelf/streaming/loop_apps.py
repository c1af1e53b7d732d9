"""The closed loop's streaming app that runs on the driver: the supplier manager, a thin shell over smartshelf.loop.
(The loop's other apps, whose rules decide about one shelf at a time, keep their state in Spark's state store:
smartshelf.streaming.keyed_loop. The supplier manager's rule is store-wide: under SUPPLIER_POLICY=ml the rule's
plans stop once any forecast plan has come.)

Unlike the state apps, it publishes events to append-only topics (alerts, wh_events, shelf_events), which a
replayed batch must not duplicate. A loop app on the driver therefore keeps its whole state, and where its output topics
ended after its last batch, in one Delta table of its own (delta/apps/<app>), committed per (app, batch id) by
the commit protocol (smartshelf.streaming.commit), whose first batch after a start skips the records an earlier
attempt already published (their ids, read back from the recorded ends). So each decision is published exactly
once; the lake sink writes the published records to Delta.

A command — a supplier plan, like a planned restock or a warehouse pick on its way to a shelf — acts once even when
it arrives again: plans live in compacted topics, whose values a replayed batch upstream publishes again (the
protocol's skip covers append-only topics only), and the inference service may repeat a day's plans after a
crash. Their consumers keep the ids they have applied (smartshelf.loop.AppliedCommands) in their state.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import ClassVar, Generic, TypeVar

import pyarrow as pa
from pydantic import BaseModel, Field

from smartshelf import loop
from smartshelf.adapters import delta
from smartshelf.policies import warehouse_capacity
from smartshelf.registry import topic
from smartshelf.schemas import AppStateRow, ClockTick, SupplierOrder, WarehouseSupplierPlan
from smartshelf.streaming.batch import Received
from smartshelf.streaming.commit import CommitIO, CommittedApp

StateT = TypeVar("StateT", bound=BaseModel)


class LoopApp(CommittedApp, Generic[StateT]):
    outputs: ClassVar[tuple[str, ...]]  # the topics it publishes to
    policies: ClassVar[tuple[str, ...]] = ()  # the policy topics it follows (also in `topics`)
    state_model: ClassVar[type[BaseModel]]

    def __init__(self) -> None:
        super().__init__()
        self.state: StateT | None = None
        self.config: loop.StoreConfig | None = None
        self.output_ends: dict[str, int] = {}
        self.committed_state = ""  # the state's JSON as last committed
        self.state_json = ""  # the state's JSON after the batch being handled

    def initial(self, io: CommitIO) -> StateT:
        """The state before the first batch ever."""
        return self.state_model()  # type: ignore[return-value]

    def apply_events(self, state: StateT, received: list[Received], config: loop.StoreConfig,
                     io: CommitIO) -> loop.Effects:
        raise NotImplementedError

    def state_path(self, io: CommitIO) -> Path:
        return delta.app_state_path(io.settings.delta_dir, self.name)

    def load(self, io: CommitIO) -> None:
        from smartshelf.runtime.jobs import load_config, load_store

        # the warehouse's capacities scale the default policy of an item whose policy row is missing
        self.config = loop.StoreConfig.from_tables(load_config(io.settings),
                                                   warehouse_capacity(load_store(io.settings)))
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

    def follow(self, received: list[Received]) -> list[Received]:
        # a changed policy applies from the batch it arrives in (a restart loads the latest ones: load)
        assert self.config is not None
        loop.follow_policies(self.config, [r.record for r in received if r.topic in self.policies])
        return [r for r in received if r.topic not in self.policies]

    def apply(self, io: CommitIO, received: list[Received]) -> dict[str, list[BaseModel]]:
        assert self.state is not None and self.config is not None
        effects = self.apply_events(self.state, sorted(received, key=time_order), self.config, io)
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


def time_order(item: Received) -> tuple[datetime, int, str, int, int]:
    """Events by simulated time; at the same time a clock tick last (it says everything up to then is in)."""
    record = item.record
    ts = getattr(record, "ts", None) or getattr(record, "updated_ts", None) or getattr(record, "last_event_ts", None) \
        or getattr(record, "window_end", None) or getattr(record, "last_update_ts")
    return ts, isinstance(record, ClockTick), item.topic, item.partition, item.offset


# --- the apps ------------------------------------------------------------------------------------------
class SupplierState(BaseModel):
    orders: dict[str, SupplierOrder] = Field(default_factory=dict)
    plans: dict[str, WarehouseSupplierPlan] = Field(default_factory=dict)
    forecasts_seen: bool = False  # a forecast plan has come: under SUPPLIER_POLICY=ml the rule's plans stop
    applied: loop.AppliedCommands = Field(default_factory=loop.AppliedCommands)  # plans ordered or cancelled


class WarehouseSupplierManager(LoopApp[SupplierState]):
    """wh_supplier_plan (planned) → supplier orders (the rule's or the forecast's plans, SUPPLIER_POLICY,
    smartshelf.loop.orders_plan; under ml a rule plan not ordered is cancelled); on the clock, deliveries at their
    lead time and hour → wh_events (wh_in, a new lot), receipts. Orders and receipts go to their topics (mirrored
    to PostgreSQL) and to Delta ops/wh_supplier_orders and ops/wh_supplier_receipts."""

    name = "wh-supplier-manager"
    validates = ("wh_supplier_plan",)
    policies = ("wh_policies",)  # the delivery hour
    topics = ("wh_supplier_plan", "clock_ticks", *policies)
    outputs = ("wh_events", "wh_supplier_plan", "wh_supplier_orders", "wh_supplier_receipts")
    state_model = SupplierState

    def apply_events(self, state: SupplierState, received: list[Received], config: loop.StoreConfig,
                     io: CommitIO) -> loop.Effects:
        effects = loop.Effects()
        for item in received:
            record = item.record
            if isinstance(record, WarehouseSupplierPlan) and record.status == "planned" \
                    and state.applied.first_time(record.plan_id, record.created_ts):
                state.forecasts_seen |= record.plan_id.startswith(loop.FORECAST_PLAN_PREFIX)
                if not loop.orders_plan(record, io.settings.supplier_policy, state.forecasts_seen):
                    if io.settings.supplier_policy == "ml":  # under rules a forecast plan stays, to be read
                        effects.publish("wh_supplier_plan", record.model_copy(update={"status": "cancelled"}))
                    continue
                order = loop.place_order(record, config, effects)
                state.orders[order.order_id] = order
                state.plans[record.plan_id] = record
            elif isinstance(record, ClockTick):
                loop.deliveries_due(state.orders, state.plans, record.ts, config, effects)
        return effects


def loop_apps() -> list[LoopApp[BaseModel]]:
    return [WarehouseSupplierManager()]  # type: ignore[list-item]
