"""The value schema of every topic: one pydantic model each, the single definition from which the Kafka
JSON, the PostgreSQL mirror tables and the Delta tables are derived or checked (tests/unit/test_schemas.py).

Times are simulated-clock times, UTC, stored naive; a time that comes with an offset is converted to UTC.
Quantities are item counts; weights are in the store data's unit (grams or ml per item, smartshelf.store).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, GetPydanticSchema, field_validator, model_validator
from pydantic_core import core_schema

# --- domain bounds --------------------------------------------------------------------------------
# Store-sized limits: far above what a supermarket holds, sells or sets, far below what overflows a PostgreSQL
# bigint, an Arrow int64 or a float. A value beyond them is a faulty or hostile sender's, so it is rejected where
# the record comes in (smartshelf.ingress) instead of failing the Spark query, the Delta write or the PostgreSQL
# sink; the state rules (smartshelf.rules) refuse an event that would take a state past them, so every state
# can be written and read back. What the system derives itself from bounded inputs (alert values, Kafka offsets,
# ML metrics, day differences of dates) has no bound of its own.
MAX_QUANTITY = 1_000_000  # items of one kind in one move, lot, order, shelf or warehouse (a warehouse holds hundreds)
MAX_ITEM_WEIGHT = 100_000  # grams (or ml) per item: 100 kg, heavier than anything one shelf slot carries
MAX_WEIGHT = MAX_QUANTITY * MAX_ITEM_WEIGHT  # a scale's reading or a shelf's weight: the most items, each the heaviest
MAX_PRICE = 100_000.0  # one item's price, in the store's currency
MAX_AMOUNT = 1_000_000_000_000.0  # a till's line or basket: ten lines of the most items at the highest price
MAX_COUNT = 1_000_000_000  # counts that are not items: visitors, alerts, rows, lines of a basket
MAX_DAYS = 3_650  # lead times and near-expiry windows: ten years (a date this far out still fits a date)
MAX_AISLE = 10_000  # aisle numbers: a hypermarket has under a hundred
MAX_MODEL_VERSION = 999_912_312_359  # YYYYMMDDHHMM: 9999-12-31 23:59


def _as_utc_naive(value: datetime) -> datetime:
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


# The simulated clock's times: naive UTC. Sensors that send an offset ("2026-01-19T08:00:00+00:00") are read as the
# same instant in UTC. Parsed by pydantic-core; the Python step only looks at the zone.
LocalTime = Annotated[datetime, GetPydanticSchema(lambda _type, _handler: core_schema.no_info_after_validator_function(
    _as_utc_naive, core_schema.datetime_schema()))]
# Item counts: bounded, so an absurd value from a sensor is rejected at ingress, not summed into state.
Quantity = Annotated[int, Field(le=MAX_QUANTITY)]
# Whole batches of at least one item each: never more than the items they hold.
Batches = Annotated[int, Field(le=MAX_QUANTITY)]
Weight = Annotated[float, Field(ge=-MAX_WEIGHT, le=MAX_WEIGHT)]  # signed: a scale reads what left as negative
Price = Annotated[float, Field(le=MAX_PRICE)]
Amount = Annotated[float, Field(le=MAX_AMOUNT)]
Count = Annotated[int, Field(le=MAX_COUNT)]
Days = Annotated[int, Field(le=MAX_DAYS)]


NUL = "\x00"

# --- the chain's stores -----------------------------------------------------------------------------
FIRST_STORE = "store-001"  # the one store of a one-store twin, and the first of a generated chain
# a store id names a folder of reference files and leads every per-store key: short, lower case, no separators
STORE_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
# Which store of the chain a record is about. A record that does not say is the first store's, so the one-store
# format (and a one-store sensor) stays valid; records of the other stores always say.
StoreId = Annotated[str, Field(pattern=STORE_ID_PATTERN)]


class Record(BaseModel):
    """Base of every topic value: strict about unknown fields, so bad input is rejected, not ignored; no text
    holds a NUL character, which PostgreSQL text cannot store (the mirror's sink would fail on it)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: object) -> object:
        if isinstance(value, str) and NUL in value:
            raise ValueError("text holds a NUL character")
        return value


# --- append-only event streams ------------------------------------------------------------------
class FootTrafficEvent(Record):
    store_id: StoreId = FIRST_STORE
    event_id: str
    event_type: Literal["entry", "exit"]
    customer_id: str
    ts: LocalTime


class ShelfEvent(Record):
    store_id: StoreId = FIRST_STORE
    event_id: str
    event_type: Literal["pickup", "putback", "weight_change"]
    shelf_id: str
    quantity: Quantity = Field(ge=0)
    weight_change: Weight  # signed: what the shelf's scale saw, in the item weight's unit
    customer_id: str | None = None  # None for staff (refill, removal)
    batch_code: str | None = None  # staff moves name the lot they carry,
    received_date: date | None = None  # and its dates (a refill brings a lot the shelf may not have held yet)
    expiry_date: date | None = None
    ts: LocalTime

    @property
    def by_staff(self) -> bool:
        return self.customer_id is None


class PosItem(Record):
    shelf_id: str
    quantity: Quantity = Field(gt=0)
    unit_price: Price = Field(ge=0)
    discount: float = Field(ge=0, lt=1)
    line_total: Amount = Field(ge=0)


class PosTransaction(Record):
    store_id: StoreId = FIRST_STORE
    transaction_id: str
    customer_id: str
    ts: LocalTime
    items: list[PosItem] = Field(min_length=1)
    total: Amount = Field(ge=0)


class WarehouseEvent(Record):
    store_id: StoreId = FIRST_STORE
    event_id: str
    event_type: Literal["wh_in", "wh_out", "wh_removal"]
    shelf_id: str
    batch_code: str
    quantity: Quantity = Field(gt=0)
    received_date: date
    expiry_date: date
    reference: str | None = None  # the restock plan or supplier order that caused the move
    ts: LocalTime


class Alert(Record):
    store_id: StoreId = FIRST_STORE
    alert_id: str
    alert_type: Literal["low_stock", "out_of_stock", "near_expiry", "expired", "wh_reorder", "wh_out_of_stock",
                        "anomaly", "shrinkage"]
    location: Literal["store", "warehouse"]
    severity: Literal["info", "warning", "critical"]
    shelf_id: str | None = None  # None for an alert about the store or a category (anomaly)
    metric: str | None = None  # an anomaly's pulse metric and what it measures (smartshelf.pulse)
    subject: str | None = None
    batch_code: str | None = None
    message: str
    value: float | None = None
    threshold: float | None = None
    ts: LocalTime


PulseMetric = Literal["entries", "exits", "units_sold", "revenue", "weight_changes", "units_taken", "units_paid"]


class PulseWindow(Record):
    """One event-time window of one pulse metric (smartshelf.pulse): 1-minute tumbling or 5-minute sliding.
    `subject` is "store", an item category, or (shelf metrics, never published) a shelf. A sliding window of an
    anomaly metric carries the level expected from earlier days at that hour, and its z-score, once there is
    enough history."""

    store_id: StoreId = FIRST_STORE
    window_id: str = ""  # width|metric|subject|start (`pulse_window_id`), filled in when not given
    width_minutes: int = Field(ge=1, le=60)
    metric: PulseMetric
    subject: str
    window_start: LocalTime
    window_end: LocalTime
    value: Amount = Field(ge=-MAX_AMOUNT)
    events: Count = Field(ge=0)
    expected: float | None = None
    z_score: float | None = None

    @model_validator(mode="after")
    def _named(self) -> PulseWindow:
        """The id follows from the window; a record whose id says another window is refused."""
        named = pulse_window_id(self.width_minutes, self.metric, self.subject, self.window_start)
        if not self.window_id:
            object.__setattr__(self, "window_id", named)  # frozen: set once, while validating
        elif self.window_id != named:
            raise ValueError(f"window_id {self.window_id!r} names another window than {named!r}")
        return self


def pulse_window_id(width_minutes: int, metric: str, subject: str, window_start: datetime) -> str:
    return f"{width_minutes}|{metric}|{subject}|{window_start.isoformat()}"


class ClockTick(Record):
    """The clock's watermark: every event up to `ts` has been produced and the pipeline has taken it. Apps that
    act at a time of day (deliveries, discounts, removals, refills after a delay) act on these, so what they do
    depends on simulated time only, never on when a trigger ran."""

    tick_id: str
    ts: LocalTime


class DeadLetter(Record):
    source: str  # topic, Redis stream or file the record came from
    source_partition: int | None = None
    source_offset: int | None = None
    reason: str
    raw: str  # the payload as received (undecodable bytes and NUL characters escaped)
    ts: LocalTime

    @field_validator("source", "reason", "raw", mode="before")
    @classmethod
    def _escape_nul(cls, value: object) -> object:
        """A dead letter keeps what came in, so a NUL in it is escaped (as the byte it was), not refused."""
        return value.replace(NUL, "\\x00") if isinstance(value, str) else value


# --- compacted state topics (latest value per key) --------------------------------------------
class ShelfState(Record):
    store_id: StoreId = FIRST_STORE
    shelf_id: str
    current_stock: Quantity = Field(ge=0)
    current_weight: Weight  # current_stock × item_weight, in the item weight's unit
    last_event_type: str
    last_event_ts: LocalTime


class ShelfRisk(Record):
    """The restock-risk model's probability that the shelf runs empty before its next refill (smartshelf.ml.risk),
    scored by the shelf aggregator at the shelf's last event."""

    store_id: StoreId = FIRST_STORE
    shelf_id: str
    restock_risk: float = Field(ge=0, le=1)
    model_version: int = Field(ge=1, le=MAX_MODEL_VERSION)
    scored_ts: LocalTime


class WarehouseState(Record):
    store_id: StoreId = FIRST_STORE
    shelf_id: str
    wh_current_stock: Quantity = Field(ge=0)
    last_event_type: str
    last_event_ts: LocalTime


class ShelfBatchState(Record):
    store_id: StoreId = FIRST_STORE
    shelf_id: str
    batch_code: str
    received_date: date
    expiry_date: date
    batch_quantity_store: Quantity = Field(ge=0)
    last_update_ts: LocalTime


class WarehouseBatchState(Record):
    store_id: StoreId = FIRST_STORE
    shelf_id: str
    batch_code: str
    received_date: date
    expiry_date: date
    batch_quantity_warehouse: Quantity = Field(ge=0)
    last_update_ts: LocalTime


class DailyDiscount(Record):
    store_id: StoreId = FIRST_STORE
    shelf_id: str
    discount_date: date
    discount: float = Field(gt=0, lt=1)
    reason: Literal["near_expiry", "promotion"]


class ShelfRestockPlan(Record):
    store_id: StoreId = FIRST_STORE
    plan_id: str
    shelf_id: str
    quantity: Quantity = Field(gt=0)
    status: Literal["planned", "picked", "delivered", "cancelled"]
    created_ts: LocalTime
    updated_ts: LocalTime


class WarehouseSupplierPlan(Record):
    store_id: StoreId = FIRST_STORE
    plan_id: str
    shelf_id: str
    batches_to_order: Batches = Field(gt=0)
    quantity: Quantity = Field(gt=0)
    status: Literal["planned", "ordered", "received", "cancelled"]
    expected_delivery_date: date
    created_ts: LocalTime
    updated_ts: LocalTime


class ShelfPolicy(Record):
    store_id: StoreId = FIRST_STORE
    shelf_id: str
    low_stock_threshold_pct: float = Field(gt=0, lt=1)
    restock_target_pct: float = Field(gt=0, le=1)
    near_expiry_days: Days = Field(ge=0)
    near_expiry_discount: float = Field(gt=0, lt=1)


class WarehousePolicy(Record):
    store_id: StoreId = FIRST_STORE
    shelf_id: str
    reorder_point: Quantity = Field(ge=0)
    order_up_to: Quantity = Field(gt=0)
    lead_time_days: Days = Field(ge=0)
    delivery_hour: int = Field(ge=0, le=23)


class BatchCatalogEntry(Record):
    store_id: StoreId = FIRST_STORE
    shelf_id: str
    batch_code: str
    item_category: str
    item_subcategory: str
    standard_batch_size: Quantity = Field(gt=0)
    received_date: date
    expiry_date: date


class ShelfProfile(Record):
    store_id: StoreId = FIRST_STORE
    shelf_id: str
    aisle: int = Field(ge=0, le=MAX_AISLE)
    item_category: str
    item_subcategory: str
    item_weight: int = Field(gt=0, le=MAX_ITEM_WEIGHT)  # grams (or ml) per item
    shelf_weight: int = Field(gt=0, le=MAX_WEIGHT)  # the full shelf
    maximum_stock: Quantity = Field(gt=0)
    item_price: Price = Field(gt=0)


# --- supplier orders and receipts -----------------------------------------------------------------
class SupplierOrder(Record):
    store_id: StoreId = FIRST_STORE
    order_id: str
    plan_id: str
    shelf_id: str
    batches: Batches = Field(gt=0)
    quantity: Quantity = Field(gt=0)
    ordered_ts: LocalTime
    expected_delivery_ts: LocalTime
    status: Literal["open", "received"]


class SupplierReceipt(Record):
    store_id: StoreId = FIRST_STORE
    receipt_id: str
    order_id: str
    shelf_id: str
    batch_code: str
    quantity: Quantity = Field(gt=0)
    received_ts: LocalTime
    expiry_date: date


class AppStateRow(Record):
    """A loop app's whole state (JSON) as of a batch, with where its output topics ended after that batch."""

    app: str
    state: str
    output_ends: str  # JSON {"topic:partition": end offset}


class PosTransactionRow(Record):
    """ops.pos_transactions: a PosTransaction without its items (they go to PosTransactionItemRow)."""

    store_id: StoreId = FIRST_STORE
    transaction_id: str
    customer_id: str
    ts: LocalTime
    item_count: Count = Field(gt=0)
    total: Amount = Field(ge=0)


class PosTransactionItemRow(PosItem):
    """ops.pos_transaction_items: one PosItem of a transaction, numbered from 1."""

    store_id: StoreId = FIRST_STORE
    transaction_id: str
    line_no: Count = Field(ge=1)


class DeadLetterRow(DeadLetter):
    """ops.dead_letters: a dead letter under where it sits in the dead_letters topic."""

    letter_partition: int = Field(ge=0)
    letter_offset: int = Field(ge=0)


class ShelfDailyFeatures(Record):
    """One shelf's simulated day, as known at its end: the input of the replenishment model (smartshelf.ml).

    Every value comes from records stamped before the day ends, except the two targets, which count the
    HORIZON_DAYS days after it and stay None until those days are over. A window reaching before the run's
    first day is unknown (None), not a smaller sum.
    """

    store_id: StoreId = FIRST_STORE
    shelf_id: str
    feature_date: date
    item_category: str
    item_subcategory: str
    # calendar
    day_of_week: int = Field(ge=0, le=6)  # Monday 0
    is_weekend: bool
    days_to_next_delivery: int | None = Field(None, ge=0)  # the earliest open supplier order's; None: none open
    # price
    item_price: Price = Field(gt=0)
    discount: float = Field(ge=0, lt=1)  # the till's: the promotion or the near-expiry discount, the larger
    # demand
    people_count: Count = Field(ge=0)  # customers who entered the store that day
    sales_qty: Quantity = Field(ge=0)
    sales_last_1d: int | None = Field(None, ge=0, le=MAX_QUANTITY)  # yesterday
    sales_last_7d: int | None = Field(None, ge=0, le=MAX_QUANTITY)  # the 7 days ending with this one
    sales_last_14d: int | None = Field(None, ge=0, le=MAX_QUANTITY)
    # the demand rate from the run's first day on, where the windows above are still unknown: mean units sold per
    # day over the last days the run has (up to 14, this one included), and how many days that is
    sales_per_day: float = Field(ge=0, le=MAX_QUANTITY)
    sales_rate_days: Days = Field(ge=1)
    # shelf
    shelf_capacity: Quantity = Field(gt=0)
    shelf_stock: Quantity = Field(ge=0)
    shelf_fill_ratio: float = Field(ge=0)
    low_stock_threshold_pct: float = Field(gt=0, lt=1)
    alerts_today: Count = Field(ge=0)  # store and warehouse alerts about the shelf's item
    # warehouse
    wh_stock: Quantity = Field(ge=0)
    wh_fill_ratio: float = Field(ge=0)
    reorder_point: Quantity = Field(ge=0)
    order_up_to: Quantity = Field(gt=0)  # with reorder_point, what the rule-based supplier manager orders
    open_order_qty: Quantity = Field(ge=0)  # ordered from the supplier, not yet received
    expired_units: Quantity = Field(ge=0)  # expired units removed that day, from the shelf and the warehouse
    # lots
    standard_batch_size: Quantity = Field(gt=0)
    days_to_earliest_expiry: int | None = None  # over the lots held; negative: an expired lot not yet removed
    qty_expiring_next_7d: Quantity = Field(ge=0)
    # targets, known in hindsight
    sales_next_7d: int | None = Field(None, ge=0, le=MAX_QUANTITY)
    # whole batches the next 7 days' sales needed beyond stock
    batches_to_order: int | None = Field(None, ge=0, le=MAX_QUANTITY)


class MlModel(Record):
    """A trained model: where its file is, what it was trained on, and how it did on held-out days against the
    baselines (last-7-day sales; the rule-based order-up-to policy, in batches only)."""

    model_name: str
    model_version: int = Field(ge=1, le=MAX_MODEL_VERSION)  # the simulated time of training, YYYYMMDDHHMM
    trained_ts: LocalTime
    data_start: date
    data_end: date
    train_rows: Count = Field(ge=0)
    holdout_rows: Count = Field(ge=0)
    feature_hash: str
    params: str  # JSON
    mae_model: float = Field(ge=0)
    rmse_model: float = Field(ge=0)
    mae_last7: float = Field(ge=0)
    rmse_last7: float = Field(ge=0)
    mae_model_batches: float = Field(ge=0)
    mae_last7_batches: float = Field(ge=0)
    mae_rule_batches: float = Field(ge=0)
    metric_name: str  # the headline metric the dashboard's ML tab shows
    metric_value: float
    artifact_path: str
    is_active: bool


class MlPrediction(Record):
    store_id: StoreId = FIRST_STORE
    model_name: str
    model_version: int = Field(ge=1, le=MAX_MODEL_VERSION)
    shelf_id: str
    prediction_date: date
    feature_date: date  # the day whose features the forecast read
    predicted_sales_next_7d: float = Field(ge=0)
    batches_to_order: Batches = Field(ge=0)
    predicted_ts: LocalTime
