"""The dashboard's core: the store's floor plan, which alerts are active, the zones' colours, a chain's store tiles
and the data the dashboard reads. `dashboard/app.py` is the Streamlit shell over it.

Reads: PostgreSQL as the read-only role (Kafka Connect's mirror), Delta (delta-rs) for what PostgreSQL has
no copy of (the raw shelf events' weight changes), Redis for the simulated clock and the people in the store.
Tables and columns come from the registry and its models, never from copies here. A view shows one store, the one
its read names (a twin running a chain lets the dashboard pick among its stores); of a table whose rows say their
store it reads that store's rows only. The Chain view reads its tables once for all the running stores.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Literal, Protocol, Self

import pandas as pd
import plotly.graph_objects as go
import psycopg2
import pyarrow as pa
import pyarrow.compute as pc
import redis
import yaml
from deltalake import DeltaTable
from deltalake.exceptions import DeltaError
from psycopg2 import sql
from pydantic import BaseModel, ConfigDict, Field, model_validator

from smartshelf.adapters import delta, postgres
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.producers import load_states
from smartshelf.datagen import CATEGORIES
from smartshelf.errors import SmartShelfError, first_line
from smartshelf.loop import FORECAST_PLAN_PREFIX
from smartshelf.pulse import PULSE_ALERT_TYPES, SLIDING_MINUTES, STORE, TUMBLING_MINUTES
from smartshelf.registry import STORE_COLUMN, table
from smartshelf.settings import Settings

# An alert is *active* when it is the latest alert of its kind (ALERT_KEY) and was raised within the last
# ACTIVE_ALERT_MINUTES simulated minutes before the clock's now: the loop raises an alert when a level gets
# worse and never clears it, so recency is what says it still matters.
ACTIVE_ALERT_MINUTES = 120
# an alert's kind: its type and what it is about, a shelf or (an anomaly, no shelf) a pulse metric and its subject
ALERT_KEY = ["shelf_id", "alert_type", "metric", "subject"]
# weight_change events (customers and staff at a shelf) within this many simulated minutes count as activity
ACTIVITY_MINUTES = 60
# the newest rows read of the append-only tables that grow all day
MAX_ALERT_ROWS = 5000
MAX_DEAD_LETTER_ROWS = 200
MAX_ML_ROWS = 60_000  # ~8 weeks of daily rows of a 1,100-shelf store: the ML tab sums them per day
# The Pulse tab shows the last PULSE_HOURS simulated hours of the store's pulse. Each simulated minute the pulse app
# writes a 1-minute and a 5-minute window of entries, exits and units sold (the store) and of units sold, revenue
# and weight changes (each category): 2 × (3 + 3 × 29) = 180 rows when the generator's 29 categories all sell, so
# the bound reads those hours (32,400 rows) and no more; when fewer categories sell the rows reach further back.
PULSE_HOURS = 3
MAX_PULSE_ROWS = PULSE_HOURS * 60 * 2 * (3 + 3 * len(CATEGORIES))

Severity = Literal["none", "info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("none", "info", "warning", "critical")  # least to most urgent
SEVERITY_COLOURS: dict[Severity, str] = {"none": "#2e7d32", "info": "#1e88e5", "warning": "#f9a825",
                                         "critical": "#c62828"}

# the PostgreSQL mirror tables the dashboard shows (registry names), with how many of the newest rows to read
PG_TABLES: dict[str, int | None] = {
    "store_inventory": None, "shelf_state": None, "shelf_risk": None, "wh_state": None, "shelf_batch_state": None,
    "wh_batch_state": None, "alerts": MAX_ALERT_ROWS, "shelf_restock_plan": None, "wh_supplier_plan": None,
    "shelf_policies": None, "wh_policies": None, "dead_letters": MAX_DEAD_LETTER_ROWS, "ml_models": None,
    "wh_supplier_orders": None, "wh_supplier_receipts": None,
    "ml_predictions_log": MAX_ML_ROWS, "shelf_daily_features": MAX_ML_ROWS, "pulse_windows": MAX_PULSE_ROWS,
}
# the time column by which the newest rows of a capped table are chosen
NEWEST_BY = {"alerts": "ts", "dead_letters": "ts", "ml_predictions_log": "feature_date",
             "shelf_daily_features": "feature_date", "pulse_windows": "window_start"}
SHELF_EVENTS = "raw_shelf_events"
# the Pulse tab's label and texts (a browser test waits for PULSE_HEADING and reads the metrics by their labels)
PULSE_VIEW = "Pulse"
PULSE_HEADING = "Store pulse"
ENTRIES_5_MIN = "Entries (5 min)"
EXITS_5_MIN = "Exits (5 min)"
UNITS_SOLD_5_MIN = "Units sold (5 min)"
REVENUE_5_MIN = "Revenue (5 min)"
ANOMALIES_TODAY = "Anomalies today"
SHRINKAGE_TODAY = "Shrinkage alerts today"
NO_PULSE = "No pulse yet: analytics.pulse_windows is empty."
# What each view reads (registry names; SHELF_EVENTS is the last ACTIVITY_MINUTES of weight changes). A refresh
# reads and draws the open view only: when every refresh drew all six views, a new alert took 6.6 s to show on a
# loaded machine (docs/architecture.md, "The dashboard"). Every view reads the store's inventory: it says whether
# a store is loaded at all.
VIEW_TABLES: dict[str, tuple[str, ...]] = {
    "Map Live": ("store_inventory", "shelf_state", "shelf_risk", "alerts", SHELF_EVENTS),
    "States": ("store_inventory", "shelf_state", "wh_state", "shelf_batch_state", "wh_batch_state"),
    "Supplier Plan": ("store_inventory", "wh_supplier_plan", "shelf_restock_plan", "wh_supplier_orders",
                      "wh_supplier_receipts"),
    "Alerts": ("store_inventory", "alerts"),
    PULSE_VIEW: ("store_inventory", "pulse_windows", "alerts"),
    "Debug/Config": ("store_inventory", "shelf_policies", "wh_policies", "dead_letters"),
    "ML": ("store_inventory", "ml_models", "ml_predictions_log", "shelf_daily_features", "wh_supplier_plan"),
}


class DataUnavailable(SmartShelfError):
    """A data source (PostgreSQL, Redis, Delta) could not be read; the message is one line."""


# --- the floor plan -----------------------------------------------------------------------------------
class Zone(BaseModel):
    """The floor area of one item category; bounds normalized to [0, 1], y from the entrance to the back wall."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: str
    x0: float = Field(ge=0, le=1)
    y0: float = Field(ge=0, le=1)
    x1: float = Field(ge=0, le=1)
    y1: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _positive_area(self) -> Self:
        if not (self.x0 < self.x1 and self.y0 < self.y1):
            raise ValueError(f"zone {self.category}: needs x0 < x1 and y0 < y1")
        return self

    def overlaps(self, other: Zone) -> bool:
        """True if the two zones share area (touching edges do not count)."""
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2


class StoreLayout(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    zones: list[Zone] = Field(min_length=1)

    @model_validator(mode="after")
    def _one_zone_per_category_no_overlap(self) -> Self:
        names = [zone.category for zone in self.zones]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"more than one zone for {', '.join(duplicates)}")
        overlapping = overlapping_zones(self.zones)
        if overlapping:
            raise ValueError("zones overlap: " + ", ".join(f"{a} / {b}" for a, b in overlapping))
        return self


def overlapping_zones(zones: Sequence[Zone]) -> list[tuple[str, str]]:
    return [(a.category, b.category) for i, a in enumerate(zones) for b in zones[i + 1:] if a.overlaps(b)]


def missing_categories(zones: Iterable[Zone], categories: Iterable[str]) -> list[str]:
    """The categories that have no zone on the plan."""
    placed = {zone.category for zone in zones}
    return [name for name in categories if name not in placed]


_NEW_ZONE_COLUMNS = 5
_NEW_ZONE_ROW_HEIGHT = 0.12  # of the plan's depth
_NEW_ZONE_GAP = 0.008


def plan_zones(zones: Sequence[Zone], categories: Iterable[str]) -> list[Zone]:
    """The plan for a store with these categories: the layout's zones, and for each category the layout lacks a
    zone of its own, in rows along the entrance; the layout's zones move back (scaled in depth) to make room, so
    no two zones ever overlap."""
    new = sorted(set(missing_categories(zones, categories)))
    if not new:
        return list(zones)
    rows = math.ceil(len(new) / _NEW_ZONE_COLUMNS)
    band = min(0.5, rows * _NEW_ZONE_ROW_HEIGHT)
    back = [zone.model_copy(update={"y0": band + zone.y0 * (1 - band), "y1": band + zone.y1 * (1 - band)})
            for zone in zones]
    width, height = 1 / _NEW_ZONE_COLUMNS, band / rows
    placed = [
        Zone(category=name, x0=column * width + _NEW_ZONE_GAP, x1=(column + 1) * width - _NEW_ZONE_GAP,
             y0=row * height + _NEW_ZONE_GAP, y1=(row + 1) * height - _NEW_ZONE_GAP)
        for index, name in enumerate(new) for row, column in [divmod(index, _NEW_ZONE_COLUMNS)]
    ]
    return [*back, *placed]


def load_layout(path: Path) -> list[Zone]:
    """The zones of a layout YAML file (`zones: [{category, x0, y0, x1, y1}, ...]`), validated."""
    return StoreLayout.model_validate(yaml.safe_load(path.read_text())).zones


# --- frames -------------------------------------------------------------------------------------------
def columns_of(name: str) -> list[str]:
    """The columns of a registry table: its model's fields."""
    return list(table(name).schema.model_fields)


def empty_frame(name: str) -> pd.DataFrame:
    return pd.DataFrame(columns=columns_of(name))


@dataclass(frozen=True)
class Snapshot:
    """Everything one render of the dashboard shows, read at one moment."""

    now: datetime | None  # the simulated clock; None when it is not running
    people_in_store: int | None  # None when the producers have written no world state yet
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)  # by registry table name
    alerts_raised: int | None = None  # every row of ops.alerts (the frame holds the newest only); None: not read

    def frame(self, name: str) -> pd.DataFrame:
        """A table's rows; none (with its columns) if it was not read."""
        found = self.frames.get(name)
        return found if found is not None else empty_frame(name)

    @property
    def has_store(self) -> bool:
        return not self.frame("store_inventory").empty

    def reference_time(self) -> datetime | None:
        """The clock's now; when the clock is stopped, the newest alert's time (a finished run stays readable)."""
        if self.now is not None:
            return self.now
        alerts = self.frame("alerts")
        return None if alerts.empty else pd.Timestamp(alerts["ts"].max()).to_pydatetime()


class DataSource(Protocol):
    def snapshot(self, tables: Collection[str], store_id: str) -> Snapshot: ...

    def chain_snapshot(self, store_ids: Sequence[str]) -> Snapshot: ...


class LiveSource:
    """The running stack's data, as the settings locate it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def snapshot(self, tables: Collection[str], store_id: str) -> Snapshot:
        """The clock, the people in the store `store_id` and the given tables (registry names, see VIEW_TABLES):
        of a table whose rows say their store, that store's rows."""
        unknown = set(tables) - {*PG_TABLES, SHELF_EVENTS}
        assert not unknown, f"the dashboard does not read {sorted(unknown)}"
        now, people = self._clock_and_people(store_id)
        frames, alerts_raised = self._postgres([name for name in PG_TABLES if name in tables], store_id)
        if now is not None and SHELF_EVENTS in tables:
            frames[SHELF_EVENTS] = self._weight_changes(now, store_id)
        return Snapshot(now=now, people_in_store=people, frames=frames, alerts_raised=alerts_raised)

    def chain_snapshot(self, store_ids: Sequence[str]) -> Snapshot:
        """What the Chain view's tiles show of these stores (chain_tiles), one query per table for all of them:
        the clock, the shelves' stock and, with a clock, the alerts that can be active at its now and the
        transactions of its day so far (the tiles need no older rows)."""
        with self._redis() as client:
            now = SimClock(client).now_or_none()
        with self._reader() as cur:
            frames = {"shelf_state": _select_stores(cur, "shelf_state", store_ids)}
            if now is not None:
                frames["alerts"] = _select_stores(cur, "alerts", store_ids,
                                                  (now - timedelta(minutes=ACTIVE_ALERT_MINUTES), now))
                frames["pos_transactions"] = _select_stores(cur, "pos_transactions", store_ids,
                                                            (datetime.combine(now.date(), time()), now))
        return Snapshot(now=now, people_in_store=None, frames=frames)

    @contextmanager
    def _redis(self) -> Iterator[redis.Redis]:
        """A Redis client; a failed read is DataUnavailable."""
        client = redis_client(self.settings)
        try:
            yield client
        except redis.RedisError as exc:
            raise DataUnavailable(f"cannot read Redis at {self.settings.redis_host}:{self.settings.redis_port}: "
                                  f"{first_line(exc)}") from exc
        finally:
            client.close()

    def _clock_and_people(self, store_id: str) -> tuple[datetime | None, int | None]:
        with self._redis() as client:
            now = SimClock(client).now_or_none()
            # people in the store: the producers' world state (the customers inside now), one read; the raw
            # foot_traffic Delta table would need every entry and exit of the run summed
            worlds = load_states(client, [store_id])
        return now, None if worlds is None else len(worlds[store_id].customers)

    @contextmanager
    def _reader(self) -> Iterator[psycopg2.extensions.cursor]:
        """A PostgreSQL cursor as the read-only role; a failed query is DataUnavailable."""
        try:
            with postgres.connect(self.settings, "reader") as conn, conn.cursor() as cur:
                yield cur
        except psycopg2.Error as exc:
            raise DataUnavailable(f"PostgreSQL query failed: {first_line(exc)}") from exc
        except SmartShelfError as exc:
            raise DataUnavailable(str(exc)) from exc

    def _postgres(self, names: list[str], store_id: str) -> tuple[dict[str, pd.DataFrame], int | None]:
        with self._reader() as cur:
            frames = {name: _select(cur, name, PG_TABLES[name], store_id) for name in names}
            return frames, _count_rows(cur, "alerts", store_id) if "alerts" in names else None

    def _weight_changes(self, now: datetime, store_id: str) -> pd.DataFrame:
        delta_dir = self.settings.delta_dir
        try:
            return weight_changes_since(delta_dir, now - timedelta(minutes=ACTIVITY_MINUTES), store_id)
        except (OSError, DeltaError) as exc:
            raise DataUnavailable(f"cannot read Delta under {delta_dir}: {first_line(exc)}") from exc


def open_source(settings: Settings) -> DataSource:
    """Where the app gets its data (a test replaces this to show the views seeded data)."""
    return LiveSource(settings)


def _pg_table(name: str) -> sql.Identifier:
    source = table(name)
    assert source.pg is not None, f"{name} has no PostgreSQL table"
    return sql.Identifier(*source.pg.split("."))


def _select_columns(name: str) -> sql.Composed:
    """SELECT of a table's columns (its model's fields)."""
    return sql.SQL("SELECT {} FROM {}").format(sql.SQL(", ").join(map(sql.Identifier, columns_of(name))),
                                              _pg_table(name))


def _select(cur: psycopg2.extensions.cursor, name: str, limit: int | None, store_id: str) -> pd.DataFrame:
    """A table's rows (of a table whose rows say their store: `store_id`'s), the newest `limit` if there is one."""
    query = _select_columns(name)
    if table(name).has_store_column:
        query += sql.SQL(" WHERE {} = {}").format(sql.Identifier(STORE_COLUMN), sql.Literal(store_id))
    if limit is not None:
        query += sql.SQL(" ORDER BY {} DESC LIMIT {}").format(sql.Identifier(NEWEST_BY[name]), sql.Literal(limit))
    cur.execute(query)
    return pd.DataFrame(cur.fetchall(), columns=columns_of(name))


def _select_stores(cur: psycopg2.extensions.cursor, name: str, store_ids: Sequence[str],
                   between: tuple[datetime, datetime] | None = None) -> pd.DataFrame:
    """A table's rows of all these stores in one query (of those whose `ts` is `between` two times, if given); its
    model has the store column, so each row says whose it is."""
    assert STORE_COLUMN in columns_of(name), f"{name}'s rows do not say their store"
    query = _select_columns(name) + sql.SQL(" WHERE {} = ANY({})").format(sql.Identifier(STORE_COLUMN),
                                                                          sql.Literal(list(store_ids)))
    if between is not None:
        query += sql.SQL(" AND ts BETWEEN {} AND {}").format(*map(sql.Literal, between))
    cur.execute(query)
    return pd.DataFrame(cur.fetchall(), columns=columns_of(name))


def _count_rows(cur: psycopg2.extensions.cursor, name: str, store_id: str) -> int:
    """All of one store's rows of a table (a frame of a capped table holds the newest only)."""
    cur.execute(sql.SQL("SELECT count(*) FROM {} WHERE {} = {}").format(
        _pg_table(name), sql.Identifier(STORE_COLUMN), sql.Literal(store_id)))
    (count,) = cur.fetchone()
    return int(count)


def weight_changes_since(delta_dir: Path, since: datetime, store_id: str) -> pd.DataFrame:
    """A store's weight_change shelf events from `since` on (raw Delta table, filtered there, not in Python)."""
    path = delta.table_path(delta_dir, table(SHELF_EVENTS))
    if not DeltaTable.is_deltatable(str(path)):
        return empty_frame(SHELF_EVENTS)
    recent = ((pc.field(STORE_COLUMN) == store_id) & (pc.field("event_type") == "weight_change")
              & (pc.field("ts") >= pa.scalar(since, pa.timestamp("us"))))
    return DeltaTable(str(path)).to_pandas(filters=recent, columns=columns_of(SHELF_EVENTS))


# --- shaping ------------------------------------------------------------------------------------------
def active_alerts(alerts: pd.DataFrame, now: datetime | None, minutes: int = ACTIVE_ALERT_MINUTES) -> pd.DataFrame:
    """The active alerts (see ACTIVE_ALERT_MINUTES), newest first; none without a clock."""
    if now is None or alerts.empty:
        return alerts.iloc[0:0]
    ts = pd.to_datetime(alerts["ts"])
    recent = alerts[(ts > now - timedelta(minutes=minutes)) & (ts <= now)]
    latest = recent.sort_values("ts").drop_duplicates(ALERT_KEY, keep="last")
    return latest.sort_values("ts", ascending=False).reset_index(drop=True)


def with_items(frame: pd.DataFrame, inventory: pd.DataFrame) -> pd.DataFrame:
    """`frame` with each shelf's aisle, category and subcategory in front of its columns."""
    items = inventory[["shelf_id", "aisle", "item_category", "item_subcategory"]]
    # alerts that name no shelf can leave the column all NaN (float), which pandas will not merge with text
    keyed = frame.astype({"shelf_id": object})
    return items.merge(keyed, on="shelf_id", how="right")[[*items.columns, *frame.columns.drop("shelf_id")]]


def alerts_with_items(alerts: pd.DataFrame, inventory: pd.DataFrame) -> pd.DataFrame:
    """`with_items` for alerts: an alert that names no shelf but a category (an anomaly of its pulse) takes that
    category, so filtering by category finds it."""
    joined = with_items(alerts, inventory)
    of_category = joined["shelf_id"].isna() & joined["subject"].isin(inventory["item_category"])
    return joined.assign(item_category=joined["item_category"].mask(of_category, joined["subject"]))


def worst(severities: Iterable[str]) -> Severity:
    ranked = [SEVERITIES.index(s) for s in severities if s in SEVERITIES]
    return SEVERITIES[max(ranked, default=0)]


def zone_status(alerts: pd.DataFrame, inventory: pd.DataFrame, now: datetime | None) -> dict[str, Severity]:
    """Each category's worst active *store* alert of a shelf ("none" if it has none), for every category of the
    store; an alert that names no shelf (an anomaly of the store or a category) colours no zone."""
    status: dict[str, Severity] = {category: "none" for category in inventory["item_category"].unique()}
    store = active_alerts(alerts, now)
    store = store[(store["location"] == "store") & store["shelf_id"].notna()]
    categorised = with_items(store, inventory)
    for category, rows in categorised.groupby("item_category"):
        status[str(category)] = worst(rows["severity"])
    return status


def zone_activity(shelf_events: pd.DataFrame, inventory: pd.DataFrame) -> dict[str, int]:
    """weight_change events per category (categories without any are left out)."""
    changes = shelf_events[shelf_events["event_type"] == "weight_change"]
    counts = with_items(changes, inventory).groupby("item_category").size()
    return {str(category): int(count) for category, count in counts.items()}


def active_counts(alerts: pd.DataFrame, now: datetime | None) -> dict[str, int]:
    """Active alerts per location (store, warehouse)."""
    locations = active_alerts(alerts, now)["location"]
    return {location: int((locations == location).sum()) for location in ("store", "warehouse")}


def select_rows(frame: pd.DataFrame, filters: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """The rows whose value in each filtered column is one of those chosen (an empty choice keeps all)."""
    keep = pd.Series(True, index=frame.index)
    for column, chosen in filters.items():
        if chosen:
            keep &= frame[column].isin(chosen)
    return frame[keep]


def zone_shelves(inventory: pd.DataFrame, shelf_state: pd.DataFrame, category: str,
                 shelf_risk: pd.DataFrame | None = None) -> pd.DataFrame:
    """A category's shelves with their live stock (empty until a shelf's first event reached the state) and,
    once a risk model scores them, their restock risk, riskiest first."""
    shelves = inventory.loc[inventory["item_category"] == category,
                            ["shelf_id", "aisle", "item_subcategory", "maximum_stock"]]
    live = shelf_state[["shelf_id", "current_stock", "last_event_type", "last_event_ts"]]
    shelves = shelves.merge(live, on="shelf_id", how="left")
    if shelf_risk is not None and not shelf_risk.empty:
        shelves = shelves.merge(shelf_risk[["shelf_id", "restock_risk"]], on="shelf_id", how="left") \
            .sort_values("restock_risk", ascending=False, kind="stable")
    return shelves.reset_index(drop=True)


def zone_risk(shelf_risk: pd.DataFrame, inventory: pd.DataFrame) -> dict[str, float]:
    """Each category's highest restock risk (none before a risk model scores its shelves)."""
    if shelf_risk.empty:
        return {}
    scored = with_items(shelf_risk, inventory)
    return {str(category): float(risk) for category, risk in scored.groupby("item_category")["restock_risk"].max()
            .items()}


def latest_orders(orders: pd.DataFrame) -> pd.DataFrame:
    """Each supplier order's latest row (an order is written open, then received; PostgreSQL keeps the latest, the
    append-only Delta table both)."""
    status_rank = orders["status"].map({"open": 0, "received": 1})
    return (orders.assign(_rank=status_rank).sort_values("_rank").drop_duplicates("order_id", keep="last")
            .drop(columns="_rank").reset_index(drop=True))


def open_orders(orders: pd.DataFrame) -> pd.DataFrame:
    """The supplier orders not received yet, soonest delivery first."""
    latest = latest_orders(orders)
    return latest[latest["status"] == "open"].sort_values("expected_delivery_ts").reset_index(drop=True)


def next_deliveries(orders: pd.DataFrame, now: datetime | None, days: int = 2) -> pd.DataFrame:
    """Open orders due within `days` simulated days after now (or overdue), soonest first."""
    pending = open_orders(orders)
    if now is None:
        return pending
    return pending[pd.to_datetime(pending["expected_delivery_ts"]) <= now + timedelta(days=days)]


# the held-out errors of each model next to its baselines' (smartshelf.ml.train.HoldoutMetrics)
MODEL_ERRORS = {"mae_model": "model", "mae_last7": "last-7-day sales", "mae_model_batches": "model",
                "mae_last7_batches": "last-7-day sales", "mae_rule_batches": "order-up-to rule"}


def model_errors(models: pd.DataFrame) -> pd.DataFrame:
    """Per model version, newest first: held-out MAE in units (model, last-7-day sales) and in batches to order
    (model, last-7-day sales, the rule)."""
    columns = {name: f"{'batches' if name.endswith('_batches') else 'units'}: {who}"
               for name, who in MODEL_ERRORS.items()}
    shown = models.sort_values("model_version", ascending=False)[["model_name", "model_version", *columns]]
    return shown.rename(columns=columns).reset_index(drop=True)


def predicted_vs_actual(predictions: pd.DataFrame, features: pd.DataFrame) -> pd.DataFrame:
    """Per feature day: units the forecasts expected over the next 7 days, summed over shelves, next to what
    was sold (NaN until those 7 days are over)."""
    if predictions.empty:
        return pd.DataFrame(columns=["feature_date", "predicted_units", "actual_units"])
    latest = predictions.sort_values("model_version").drop_duplicates(["shelf_id", "feature_date"], keep="last")
    joined = latest.merge(features[["shelf_id", "feature_date", "sales_next_7d"]], on=["shelf_id", "feature_date"],
                          how="left")
    per_day = joined.groupby("feature_date").agg(predicted_units=("predicted_sales_next_7d", "sum"),
                                                 actual_units=("sales_next_7d", lambda s: s.sum(min_count=len(s))))
    return per_day.reset_index()


def forecast_plans(plans: pd.DataFrame) -> pd.DataFrame:
    """The forecast's supplier plans (smartshelf.loop.FORECAST_PLAN_PREFIX), newest first."""
    mine = plans[plans["plan_id"].str.startswith(FORECAST_PLAN_PREFIX)]
    return mine.sort_values(["created_ts", "shelf_id"], ascending=[False, True]).reset_index(drop=True)


# --- the Pulse tab -------------------------------------------------------------------------------------
MINUTE_WINDOW, FIVE_MINUTE_WINDOW = TUMBLING_MINUTES, SLIDING_MINUTES  # PulseWindow.width_minutes
ANOMALY_LIST_ROWS = 100
# the anomaly list's columns, from the alerts' ("about" is made here: the shelf, or the metric and its subject)
ANOMALY_COLUMNS = {"ts": "time", "alert_type": "type", "severity": "severity", "about": "about",
                   "value": "observed", "threshold": "expected / threshold", "message": "message"}


@dataclass(frozen=True)
class PulseKpis:
    """The store's pulse in one 5-minute window: the store's entries, exits and units sold, the categories'
    revenue summed (0: no event in it)."""

    window_start: datetime
    window_end: datetime
    entries: float
    exits: float
    units_sold: float
    revenue: float


def pulse_rows(frame: pd.DataFrame, width_minutes: int, metric: str | None = None) -> pd.DataFrame:
    """The windows of one width (and one metric, if given)."""
    keep = frame["width_minutes"] == width_minutes
    if metric is not None:
        keep &= frame["metric"] == metric
    return frame[keep]


def pulse_kpis(frame: pd.DataFrame, now: datetime | None) -> PulseKpis | None:
    """The newest 5-minute window that ended by now (the newest of all without a clock); None while there is none.
    A metric without a row in that window had no event in it; revenue is summed over the categories."""
    windows = pulse_rows(frame, FIVE_MINUTE_WINDOW)
    ends = pd.to_datetime(windows["window_end"])
    if now is not None:
        windows, ends = windows[ends <= now], ends[ends <= now]
    if windows.empty:
        return None
    newest = windows[ends == ends.max()]
    # units sold has a window for the store besides its categories': the store's is the total
    newest = newest[(newest["metric"] != "units_sold") | (newest["subject"] == STORE)]
    totals = newest.groupby("metric")["value"].sum()
    return PulseKpis(window_start=pd.Timestamp(newest["window_start"].min()).to_pydatetime(),
                     window_end=pd.Timestamp(ends.max()).to_pydatetime(),
                     **{metric: float(totals.get(metric, 0.0)) for metric in ("entries", "exits", "units_sold",
                                                                              "revenue")})


def pulse_alerts_today(alerts: pd.DataFrame, now: datetime | None) -> dict[str, int]:
    """Anomaly and shrinkage alerts raised on now's simulated day up to now (of the alerts read); none without a
    clock."""
    if now is None or alerts.empty:
        return dict.fromkeys(PULSE_ALERT_TYPES, 0)
    ts = pd.to_datetime(alerts["ts"])
    types = alerts.loc[(ts.dt.normalize() == pd.Timestamp(now).normalize()) & (ts <= now), "alert_type"]
    return {kind: int((types == kind).sum()) for kind in PULSE_ALERT_TYPES}


def units_sold_per_minute(frame: pd.DataFrame) -> pd.DataFrame:
    """The 1-minute windows of units sold per category, their start as a timestamp."""
    sold = pulse_rows(frame, MINUTE_WINDOW, "units_sold")
    sold = sold[sold["subject"] != STORE]
    return sold.assign(window_start=pd.to_datetime(sold["window_start"]))


def by_category(rows: pd.DataFrame, index: str) -> pd.DataFrame:
    """`rows`' values summed per `index` value (rows) and category (columns, by name); 0 where none."""
    wide = rows.pivot_table(index=index, columns="subject", values="value", aggfunc="sum", fill_value=0.0)
    return wide.rename_axis(columns=None).sort_index(axis="columns").astype(float)


def category_series(frame: pd.DataFrame, hours: int = PULSE_HOURS) -> pd.DataFrame:
    """Units sold per minute (rows, every minute) and category (columns) over the `hours` up to the newest 1-minute
    window; a minute without a window of a category sold none of it."""
    sold = units_sold_per_minute(frame)
    if sold.empty:
        return pd.DataFrame(index=pd.DatetimeIndex([], name="minute"))
    start = sold["window_start"]
    recent = sold[start > start.max() - timedelta(hours=hours)].rename(columns={"window_start": "minute"})
    wide = by_category(recent, "minute")
    minutes = pd.date_range(wide.index.min(), wide.index.max(), freq="min", name="minute")
    return wide.reindex(minutes, fill_value=0.0)


def hour_category_heatmap(frame: pd.DataFrame) -> pd.DataFrame:
    """Units sold per simulated hour of the day (rows, every hour from the first to the last) and category
    (columns): the 1-minute windows of the newest window's day summed per hour. Only the windows read count, so the
    first hour may be partial."""
    sold = units_sold_per_minute(frame)
    if sold.empty:
        return pd.DataFrame(index=pd.Index([], name="hour", dtype="int64"))
    start = sold["window_start"]
    today = sold[start.dt.normalize() == start.max().normalize()]
    wide = by_category(today.assign(hour=today["window_start"].dt.hour), "hour")
    return wide.reindex(pd.RangeIndex(wide.index.min(), wide.index.max() + 1, name="hour"), fill_value=0.0)


def heatmap_figure(heatmap: pd.DataFrame) -> go.Figure:
    """The hour × category heatmap: hours across, one row per category."""
    figure = go.Figure(go.Heatmap(
        z=heatmap.T.to_numpy(), x=[f"{hour:02d}:00" for hour in heatmap.index], y=list(heatmap.columns),
        colorscale="Blues", colorbar={"title": "units"},
        hovertemplate="%{y}, %{x}: %{z:.0f} units<extra></extra>"))
    figure.update_xaxes(type="category")
    figure.update_yaxes(type="category", autorange="reversed")
    figure.update_layout(height=120 + 22 * len(heatmap.columns), margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return figure


def alert_about(shelf_id: object, metric: object, subject: object) -> str:
    """What an alert is about: its shelf, or its metric and the subject measured."""
    if isinstance(shelf_id, str):
        return f"shelf {shelf_id}"
    return " · ".join(part for part in (metric, subject) if isinstance(part, str))


def anomaly_list(alerts: pd.DataFrame, rows: int = ANOMALY_LIST_ROWS) -> pd.DataFrame:
    """The newest anomaly and shrinkage alerts, newest first: when, type, severity, what about, the value observed
    and the level expected (an anomaly) or the threshold passed (shrinkage), and the message."""
    found = alerts[alerts["alert_type"].isin(PULSE_ALERT_TYPES)].sort_values("ts", ascending=False).head(rows)
    about = [alert_about(*row) for row in found[["shelf_id", "metric", "subject"]].itertuples(index=False)]
    return found.assign(about=about)[list(ANOMALY_COLUMNS)].rename(columns=ANOMALY_COLUMNS).reset_index(drop=True)


# --- the Chain view ------------------------------------------------------------------------------------
CHAIN_VIEW = "Chain"  # shown when the twin runs more than one store (Settings.running_stores)
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class StoreTile:
    """One running store at the clock's now: its worst active alert, its shelves out of stock, its sales today."""

    store_id: str
    worst_severity: Severity  # "none": no active alert
    worst_alert: str | None  # that alert's type and what it is about
    stock_outs: int  # shelves whose live state has no unit left
    sales_today: float | None  # the transactions' totals of now's simulated day up to now; None without a clock


def worst_active_alert(alerts: pd.DataFrame, now: datetime | None) -> tuple[Severity, str | None]:
    """Of one store's active alerts, the most severe (the newest of the as severe): its severity, and its type and
    what it is about; ("none", None) while none is active."""
    active = active_alerts(alerts, now)
    if active.empty:
        return "none", None
    alert = active.loc[active["severity"].map(SEVERITY_RANK).idxmax()]  # newest first: idxmax takes the newest
    about = alert_about(alert["shelf_id"], alert["metric"], alert["subject"])
    return alert["severity"], f"{alert['alert_type']} · {about}"


def stock_outs(shelf_state: pd.DataFrame) -> dict[str, int]:
    """Per store, its shelves whose current stock is 0 (stores with none left out)."""
    empty = shelf_state[shelf_state["current_stock"] == 0]
    return {str(store): int(count) for store, count in empty.groupby(STORE_COLUMN).size().items()}


def sales_today(transactions: pd.DataFrame, now: datetime) -> dict[str, float]:
    """Per store, the totals of its transactions on now's simulated day up to now (stores with none left out)."""
    ts = pd.to_datetime(transactions["ts"])
    today = transactions[(ts.dt.normalize() == pd.Timestamp(now).normalize()) & (ts <= now)]
    return {str(store): float(total) for store, total in today.groupby(STORE_COLUMN)["total"].sum().items()}


def chain_tiles(store_ids: Sequence[str], shelf_state: pd.DataFrame, alerts: pd.DataFrame,
                transactions: pd.DataFrame, now: datetime | None) -> list[StoreTile]:
    """A tile per store, in the order given, from the rows of all of them (each frame has the store column)."""
    empty_shelves = stock_outs(shelf_state)
    sales: dict[str, float] = {} if now is None else sales_today(transactions, now)
    tiles: list[StoreTile] = []
    for store_id in store_ids:
        severity, alert = worst_active_alert(alerts[alerts[STORE_COLUMN] == store_id], now)
        tiles.append(StoreTile(store_id=store_id, worst_severity=severity, worst_alert=alert,
                               stock_outs=empty_shelves.get(store_id, 0),
                               sales_today=None if now is None else sales.get(store_id, 0.0)))
    return tiles


def settings_in_force(settings: Settings) -> pd.DataFrame:
    """The settings as (env var, value) rows, passwords left out."""
    rows = [(name, value) for name, value in sorted(settings.as_env().items()) if "PASSWORD" not in name]
    return pd.DataFrame(rows, columns=["setting", "value"])


# --- the map ------------------------------------------------------------------------------------------
def layout_figure(zones: Sequence[Zone], status: dict[str, Severity], activity: dict[str, int],
                  risk: Mapping[str, float] | None = None) -> go.Figure:
    """The floor plan: one rectangle per zone coloured by its worst active alert, a thick dark border where
    shelves saw weight changes recently, its shelves' highest restock risk once scored; hovering a zone's centre
    tells its state."""
    figure = go.Figure()
    risk = risk or {}
    for zone in zones:
        severity = status.get(zone.category, "none")
        moves = activity.get(zone.category, 0)
        risk_text = f"<br>risk ≤ {risk[zone.category]:.0%}" if zone.category in risk else ""
        figure.add_shape(type="rect", name=zone.category, x0=zone.x0, y0=zone.y0, x1=zone.x1, y1=zone.y1,
                         fillcolor=SEVERITY_COLOURS[severity], opacity=0.75, layer="below",
                         line={"color": "#111111" if moves else "#ffffff", "width": 4 if moves else 1})
        figure.add_annotation(x=zone.centre[0], y=zone.centre[1], showarrow=False,
                              text=f"<b>{zone.category}</b><br>{severity}" + (f" · {moves} moves" if moves else "")
                              + risk_text,
                              font={"size": 11, "color": "#ffffff" if severity != "warning" else "#111111"})
    figure.add_trace(go.Scatter(
        x=[zone.centre[0] for zone in zones], y=[zone.centre[1] for zone in zones], mode="markers",
        marker={"size": 1, "opacity": 0}, showlegend=False, hoverinfo="text",
        hovertext=[f"{zone.category}: {status.get(zone.category, 'none')}, "
                   f"{activity.get(zone.category, 0)} weight changes" for zone in zones]))
    for severity in SEVERITIES:  # legend entries for the colours
        figure.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=severity,
                                    marker={"size": 12, "symbol": "square", "color": SEVERITY_COLOURS[severity]}))
    figure.update_xaxes(range=[0, 1], visible=False)
    figure.update_yaxes(range=[0, 1], visible=False)
    figure.update_layout(height=560, margin={"l": 10, "r": 10, "t": 10, "b": 10}, plot_bgcolor="#f4f4f4",
                         legend={"orientation": "h", "title": "active store alerts"})
    return figure
