"""The topic and table registry: the one place that names every topic, table and Delta path.

Topics carry a value schema (smartshelf.schemas) and a key; tables say where a schema is stored
(PostgreSQL `schema.table`, Delta `layer/name`) and its primary key. Everything else — kafka-init,
the generated SQL, the Delta bootstrap, Spark schemas, the connector configs — reads from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from pydantic import BaseModel

from smartshelf import schemas as s
from smartshelf import store

KEY_SEPARATOR = "|"
# the column that says which store of a chain a per-store table's row belongs to (the first part of its key)
STORE_COLUMN = "store_id"
# a sourced table's last-change time (UTC, set by a trigger on every insert and update): not a model field
CHANGE_COLUMN = "updated_at"


@dataclass(frozen=True)
class Topic:
    name: str
    schema: type[BaseModel]
    key: tuple[str, ...]  # fields whose values, joined by KEY_SEPARATOR, form the record key
    compacted: bool
    partitions: int = 1
    id_field: str | None = None  # the field that names one event (append-only topics): the dedup key
    # an append-only topic keeps at most this much per partition (the oldest segments go first); by size, not
    # time: records carry simulated event times, which time-based retention would take for long expired
    retention_mb: int = 1024

    def partitions_for_stores(self, stores: int, stores_per_partition: int) -> int:
        """Its partitions for a chain of `stores`: a store's topic gets one per `stores_per_partition` stores (at
        least its own count), so the work spreads as the chain grows; records stay keyed by store first, so one
        store's (one shelf's, one till's) stay in order in one partition. A topic of no store keeps its count."""
        if not self.per_store:
            return self.partitions
        return max(self.partitions, -(-stores // stores_per_partition))

    def config(self) -> dict[str, str]:
        """The topic-level settings kafka-init creates it with."""
        if self.compacted:
            return {"cleanup.policy": "compact"}
        return {"cleanup.policy": "delete", "retention.bytes": str(self.retention_mb << 20)}

    @property
    def per_store(self) -> bool:
        """Whether its records are a store's: their key starts with the store (STORE_COLUMN)."""
        return self.key[0] == STORE_COLUMN

    def id_of(self, value: BaseModel) -> str:
        """What names one event of the topic: its id, within its store (ids are unique per store)."""
        assert self.id_field is not None, f"{self.name} records have no id field"
        own = str(getattr(value, self.id_field))
        return f"{getattr(value, STORE_COLUMN)}{KEY_SEPARATOR}{own}" if self.per_store else own

    def key_of(self, value: object) -> str:
        """The record key: the key fields of a record (or of anything that has them), joined."""
        return KEY_SEPARATOR.join(_key_part(getattr(value, field)) for field in self.key)

    def local_key_of(self, value: object) -> str:
        """The record key within its store: the key fields but the store, joined."""
        return KEY_SEPARATOR.join(_key_part(getattr(value, field)) for field in self.key if field != STORE_COLUMN)

    def key_in_store(self, store_id: str, local_key: str) -> str:
        """The record key of a store's record whose key within the store is `local_key`."""
        return f"{store_id}{KEY_SEPARATOR}{local_key}" if self.per_store else local_key


def _key_part(value: object) -> str:
    return value.isoformat() if isinstance(value, (date, datetime)) else str(value)


@dataclass(frozen=True)
class Table:
    name: str  # unique short name
    schema: type[BaseModel]
    key: tuple[str, ...]  # primary key
    pg: str | None = None  # "schema.table" in PostgreSQL
    delta: str | None = None  # "layer/name" under the Delta root
    topic: str | None = None  # the topic this table mirrors
    sourced: bool = False  # its changes reach its topic through the source connector (smartshelf.connect)
    # its rows are a chain's but its model has no STORE_COLUMN (the reference files are one store's each: the store
    # is their folder): the table adds the column, which leads the primary key; the other models of a store's
    # records have the field, first in their key
    per_store: bool = False

    @property
    def has_store_column(self) -> bool:
        """Whether its rows say which store they are (its own column or its model's field)."""
        return self.per_store or STORE_COLUMN in self.schema.model_fields

    @property
    def pg_key(self) -> tuple[str, ...]:
        """The PostgreSQL primary key."""
        return (STORE_COLUMN, *self.key) if self.per_store else self.key


TOPICS: tuple[Topic, ...] = (
    # append-only event streams; the busy ones get two partitions (two cores), keyed so order holds per shelf
    Topic("foot_traffic", s.FootTrafficEvent, ("store_id", "customer_id"), compacted=False, partitions=2,
          id_field="event_id"),
    Topic("shelf_events", s.ShelfEvent, ("store_id", "shelf_id"), compacted=False, partitions=2, id_field="event_id"),
    # keyed by store: sales of a shelf come from many customers and share its lots, and which lot a sale takes
    # depends on the sales before it, so the twin must see a store's in the world's order, whatever the batches
    Topic("pos_transactions", s.PosTransaction, ("store_id",), compacted=False, partitions=1,
          id_field="transaction_id"),
    Topic("wh_events", s.WarehouseEvent, ("store_id", "shelf_id"), compacted=False, id_field="event_id"),
    # keyed by id: store and category alerts (anomalies) name no shelf
    Topic("alerts", s.Alert, ("store_id", "alert_id"), compacted=False, id_field="alert_id"),
    Topic("dead_letters", s.DeadLetter, ("source",), compacted=False, retention_mb=256),
    Topic("clock_ticks", s.ClockTick, ("tick_id",), compacted=False, id_field="tick_id", retention_mb=16),
    Topic("wh_supplier_receipts", s.SupplierReceipt, ("store_id", "shelf_id"), compacted=False, id_field="receipt_id"),
    # the store's pulse (smartshelf.pulse): each event-time window once, when it closes
    Topic("pulse_windows", s.PulseWindow, ("store_id", "window_id"), compacted=False, id_field="window_id",
          retention_mb=256),
    # compacted state and metadata: the latest value per key is the truth
    Topic("shelf_state", s.ShelfState, ("store_id", "shelf_id"), compacted=True),
    Topic("wh_state", s.WarehouseState, ("store_id", "shelf_id"), compacted=True),
    Topic("shelf_risk", s.ShelfRisk, ("store_id", "shelf_id"), compacted=True),  # once a restock-risk model is trained
    Topic("shelf_batch_state", s.ShelfBatchState, ("store_id", "shelf_id", "batch_code"), compacted=True),
    Topic("wh_batch_state", s.WarehouseBatchState, ("store_id", "shelf_id", "batch_code"), compacted=True),
    Topic("daily_discounts", s.DailyDiscount, ("store_id", "shelf_id", "discount_date"), compacted=True),
    Topic("shelf_restock_plan", s.ShelfRestockPlan, ("store_id", "plan_id"), compacted=True),
    Topic("wh_supplier_plan", s.WarehouseSupplierPlan, ("store_id", "plan_id"), compacted=True),
    Topic("wh_supplier_orders", s.SupplierOrder, ("store_id", "order_id"), compacted=True),  # open, then received
    Topic("shelf_policies", s.ShelfPolicy, ("store_id", "shelf_id"), compacted=True),
    Topic("wh_policies", s.WarehousePolicy, ("store_id", "shelf_id"), compacted=True),
    Topic("batch_catalog", s.BatchCatalogEntry, ("store_id", "shelf_id", "batch_code"), compacted=True),
    Topic("shelf_profiles", s.ShelfProfile, ("store_id", "shelf_id"), compacted=True),
)

TABLES: tuple[Table, ...] = (
    # ref: the snapshot of each store of the chain, imported from CSV
    Table("store_inventory", store.StoreInventoryRow, ("shelf_id",), pg="ref.store_inventory", per_store=True),
    Table("warehouse_inventory", store.WarehouseInventoryRow, ("shelf_id",), pg="ref.warehouse_inventory",
          per_store=True),
    Table("store_batches", store.BatchRow, ("shelf_id", "batch_code"), pg="ref.store_batches", per_store=True),
    Table("warehouse_batches", store.BatchRow, ("shelf_id", "batch_code"), pg="ref.warehouse_batches",
          per_store=True),
    Table("discounts", store.DiscountRow, ("shelf_id", "start_date"), pg="ref.discounts", per_store=True),
    # config: policies and metadata (sourced to their compacted topics)
    Table("shelf_policies", s.ShelfPolicy, ("store_id", "shelf_id"), pg="config.shelf_policies", topic="shelf_policies",
          sourced=True),
    Table("wh_policies", s.WarehousePolicy, ("store_id", "shelf_id"), pg="config.wh_policies", topic="wh_policies",
          sourced=True),
    Table("batch_catalog", s.BatchCatalogEntry, ("store_id", "shelf_id", "batch_code"), pg="config.batch_catalog",
          topic="batch_catalog", sourced=True),
    Table("shelf_profiles", s.ShelfProfile, ("store_id", "shelf_id"), pg="config.shelf_profiles",
          topic="shelf_profiles", sourced=True),
    # raw: the event streams as they arrived
    Table("raw_foot_traffic", s.FootTrafficEvent, ("store_id", "event_id"), pg="ops.foot_traffic",
          delta="raw/foot_traffic", topic="foot_traffic"),
    Table("raw_shelf_events", s.ShelfEvent, ("store_id", "event_id"), delta="raw/shelf_events", topic="shelf_events"),
    Table("raw_pos_transactions", s.PosTransaction, ("store_id", "transaction_id"), delta="raw/pos_transactions",
          topic="pos_transactions"),
    Table("raw_wh_events", s.WarehouseEvent, ("store_id", "event_id"), pg="ops.wh_events", delta="raw/wh_events",
          topic="wh_events"),
    # state: mirrors of the compacted state topics
    Table("shelf_state", s.ShelfState, ("store_id", "shelf_id"), pg="state.shelf_state", delta="cleansed/shelf_state",
          topic="shelf_state"),
    Table("wh_state", s.WarehouseState, ("store_id", "shelf_id"), pg="state.wh_state", delta="cleansed/wh_state",
          topic="wh_state"),
    # a score, not state: no lake copy (the model and the shelf state give it again)
    Table("shelf_risk", s.ShelfRisk, ("store_id", "shelf_id"), pg="state.shelf_risk", topic="shelf_risk"),
    Table("shelf_batch_state", s.ShelfBatchState, ("store_id", "shelf_id", "batch_code"), pg="state.shelf_batch_state",
          delta="cleansed/shelf_batch_state", topic="shelf_batch_state"),
    Table("wh_batch_state", s.WarehouseBatchState, ("store_id", "shelf_id", "batch_code"), pg="state.wh_batch_state",
          delta="cleansed/wh_batch_state", topic="wh_batch_state"),
    # ops: alerts, plans, orders, sales
    Table("alerts", s.Alert, ("store_id", "alert_id"), pg="ops.alerts", delta="ops/alerts", topic="alerts"),
    Table("shelf_restock_plan", s.ShelfRestockPlan, ("store_id", "plan_id"), pg="ops.shelf_restock_plan",
          delta="ops/shelf_restock_plan", topic="shelf_restock_plan"),
    Table("wh_supplier_plan", s.WarehouseSupplierPlan, ("store_id", "plan_id"), pg="ops.wh_supplier_plan",
          delta="ops/wh_supplier_plan", topic="wh_supplier_plan"),
    Table("wh_supplier_orders", s.SupplierOrder, ("store_id", "order_id"), pg="ops.wh_supplier_orders",
          delta="ops/wh_supplier_orders", topic="wh_supplier_orders"),
    Table("wh_supplier_receipts", s.SupplierReceipt, ("store_id", "receipt_id"), pg="ops.wh_supplier_receipts",
          delta="ops/wh_supplier_receipts", topic="wh_supplier_receipts"),
    Table("pos_transactions", s.PosTransactionRow, ("store_id", "transaction_id"), pg="ops.pos_transactions"),
    Table("pos_transaction_items", s.PosTransactionItemRow, ("store_id", "transaction_id", "line_no"),
          pg="ops.pos_transaction_items"),
    # the loop apps' own state: one Delta table per app, under APP_STATE_DIR (delta.app_state_path)
    Table("app_state", s.AppStateRow, ("app",)),
    Table("dead_letters", s.DeadLetterRow, ("letter_partition", "letter_offset"), pg="ops.dead_letters"),
    # analytics
    Table("daily_discounts", s.DailyDiscount, ("store_id", "shelf_id", "discount_date"), pg="analytics.daily_discounts",
          delta="analytics/daily_discounts", topic="daily_discounts"),
    Table("shelf_daily_features", s.ShelfDailyFeatures, ("store_id", "shelf_id", "feature_date"),
          pg="analytics.shelf_daily_features"),
    Table("ml_models", s.MlModel, ("model_name", "model_version"), pg="analytics.ml_models"),
    Table("pulse_windows", s.PulseWindow, ("store_id", "window_id"), pg="analytics.pulse_windows",
          delta="analytics/pulse_windows", topic="pulse_windows"),
    Table("ml_predictions_log", s.MlPrediction,
          ("store_id", "model_name", "model_version", "shelf_id", "prediction_date"),
          pg="analytics.ml_predictions_log"),
)

# The store's sensors: the producers write these to Redis Streams, the redis→kafka bridge moves them to Kafka.
SENSOR_TOPICS = ("foot_traffic", "shelf_events", "pos_transactions")
STREAM_PREFIX = "stream:"
DEAD_LETTERS = "dead_letters"
CLOCK_TICKS = "clock_ticks"
APP_STATE_DIR = "apps"

TOPICS_BY_NAME = {topic.name: topic for topic in TOPICS}
TABLES_BY_NAME = {table.name: table for table in TABLES}


def topic(name: str) -> Topic:
    return TOPICS_BY_NAME[name]


def table(name: str) -> Table:
    return TABLES_BY_NAME[name]


def stream_of(topic_name: str) -> str:
    """The Redis Stream that buffers a sensor topic before Kafka."""
    assert topic_name in SENSOR_TOPICS, f"{topic_name} is not a sensor topic"
    return f"{STREAM_PREFIX}{topic_name}"


def topic_of_stream(stream: str) -> Topic:
    return topic(stream.removeprefix(STREAM_PREFIX))
