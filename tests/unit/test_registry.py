"""The registry is the one definition: topics, tables, generated SQL and Arrow schemas agree with it."""

from __future__ import annotations

from datetime import date, datetime

import pyarrow as pa

from smartshelf import schemas
from smartshelf.adapters.postgres import GENERATED_TABLES_FILE, MIGRATIONS_DIR
from smartshelf.registry import TABLES, TOPICS, TOPICS_BY_NAME, topic
from smartshelf.tabular import arrow_schema, create_table_sql, tables_sql

SEED_TOPICS_APPEND = {"shelf_events", "pos_transactions", "foot_traffic", "wh_events", "alerts"}
SEED_TOPICS_COMPACTED = {
    "shelf_state", "wh_state", "shelf_batch_state", "wh_batch_state", "daily_discounts", "shelf_restock_plan",
    "wh_supplier_plan", "shelf_policies", "wh_policies", "batch_catalog", "shelf_profiles",
}


def test_topics_are_the_reference_ones_plus_ours() -> None:
    # ours: dead letters, the clock's watermark for the apps that act at a time of day, the supplier orders
    # and receipts, so that PostgreSQL mirrors them like the other ops tables, the pulse's windows, and the
    # shelves' restock risk
    assert {t.name for t in TOPICS if not t.compacted} == SEED_TOPICS_APPEND | {"dead_letters", "clock_ticks",
                                                                                "wh_supplier_receipts", "pulse_windows"}
    assert {t.name for t in TOPICS if t.compacted} == SEED_TOPICS_COMPACTED | {"wh_supplier_orders", "shelf_risk"}
    assert len(TOPICS_BY_NAME) == len(TOPICS)


def test_keys_are_fields_of_their_schema() -> None:
    for t in TOPICS:
        assert set(t.key) <= set(t.schema.model_fields), t.name
    for table in TABLES:
        assert set(table.key) <= set(table.schema.model_fields), table.name


def test_table_that_mirrors_a_topic_holds_its_schema() -> None:
    for table in TABLES:
        if table.topic is not None:
            assert TOPICS_BY_NAME[table.topic].schema is table.schema, table.name


def test_table_names_and_locations_are_unique() -> None:
    for attribute in ("name", "pg", "delta"):
        values = [getattr(t, attribute) for t in TABLES if getattr(t, attribute) is not None]
        assert len(values) == len(set(values)), attribute


def test_key_joins_fields_in_order() -> None:
    state = schemas.ShelfBatchState(
        shelf_id="S0001", batch_code="B7", received_date=date(2025, 1, 1), expiry_date=date(2025, 1, 9),
        batch_quantity_store=3, last_update_ts=datetime(2025, 1, 2, 9),
    )
    assert topic("shelf_batch_state").key_of(state) == "store-001|S0001|B7"  # a record without a store: the first's
    assert topic("shelf_batch_state").local_key_of(state) == "S0001|B7"
    discount = schemas.DailyDiscount(store_id="store-002", shelf_id="S0002", discount_date=date(2025, 1, 3),
                                     discount=0.2, reason="near_expiry")
    assert topic("daily_discounts").key_of(discount) == "store-002|S0002|2025-01-03"


def test_every_record_of_a_store_is_keyed_and_named_within_its_store() -> None:
    for named in TOPICS:
        assert named.per_store == ("store_id" in named.schema.model_fields), named.name
    for described in TABLES:
        if "store_id" in described.schema.model_fields:
            assert described.key[0] == "store_id" and described.has_store_column, described.name
    alert = schemas.Alert(store_id="store-002", alert_id="a1", alert_type="low_stock", location="store",
                          severity="info", message="m", ts=datetime(2025, 1, 2))
    assert topic("alerts").id_of(alert) == "store-002|a1"
    assert topic("clock_ticks").id_of(schemas.ClockTick(tick_id="t1", ts=datetime(2025, 1, 2))) == "t1"


def test_committed_sql_is_generated_from_the_registry() -> None:
    committed = (MIGRATIONS_DIR / GENERATED_TABLES_FILE).read_text()
    assert committed == tables_sql(), "run `smartshelf data sql` and commit postgresql/02_tables.sql"


def test_generated_sql_carries_types_constraints_and_key() -> None:
    ddl = create_table_sql(next(t for t in TABLES if t.name == "alerts"))
    assert ddl.startswith("CREATE TABLE IF NOT EXISTS ops.alerts (")
    assert "    ts timestamp NOT NULL" in ddl
    assert "    batch_code text," in ddl  # optional field: nullable
    assert "CHECK (location IN ('store', 'warehouse'))" in ddl
    assert "    store_id text NOT NULL," in ddl
    assert ddl.rstrip().endswith("PRIMARY KEY (store_id, alert_id)\n);".rstrip())


def test_arrow_schema_follows_the_model() -> None:
    schema = arrow_schema(schemas.PosTransaction)
    assert schema.names == list(schemas.PosTransaction.model_fields)
    assert schema.field("ts").type == pa.timestamp("us")
    assert schema.field("items").type.value_type.names == list(schemas.PosItem.model_fields)
    assert not schema.field("total").nullable
    assert arrow_schema(schemas.ShelfEvent).field("customer_id").nullable


def test_append_only_topics_are_bounded_by_size_and_state_topics_are_compacted() -> None:
    for t in TOPICS:
        config = t.config()
        if t.compacted:
            assert config == {"cleanup.policy": "compact"}, t.name
        else:
            assert config["cleanup.policy"] == "delete" and int(config["retention.bytes"]) >= 16 << 20, t.name
    assert topic("clock_ticks").config()["retention.bytes"] == str(16 << 20)
