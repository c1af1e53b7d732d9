"""Connect: the committed connector configs are the generated ones; each sink writes the mirror table of its topic
with the topic's schema and the key the table is upserted by; the worker's config keeps its state in the broker;
what a mirror must hold (POS rows, dead-letter rows) and the SQL that splits baskets are derived from the models.

A sink written with the wrong schema or key corrupts the PostgreSQL mirror silently (Connect would upsert the
wrong row), so every sink's config is checked against the registry here, without a broker or a database.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime
from pathlib import Path

import pytest

from smartshelf import connect
from smartshelf.connect import (
    SINKS, connect_schema, connector_configs, dead_letter_row, load_configs, mirror_table, pos_rows, render, sink,
    sourced_tables, worker_properties,
)
from smartshelf.errors import SmartShelfError
from smartshelf.registry import DEAD_LETTERS, STORE_COLUMN, TABLES, TOPICS, table, topic
from smartshelf.schemas import (
    DeadLetter, PosItem, PosTransaction, PosTransactionItemRow, PosTransactionRow, ShelfState, WarehouseEvent,
)
from smartshelf.settings import Settings
from smartshelf.tabular import POS_INTAKE_TABLE, pos_intake_sql, tables_sql, unwrap_optional

NOW = datetime(2025, 1, 1, 9, 30)
BASKET = PosTransaction(transaction_id="tx-1", customer_id="C1", ts=NOW, total=5.47, items=[
    PosItem(shelf_id="S0001", quantity=2, unit_price=1.49, discount=0.0, line_total=2.98),
    PosItem(shelf_id="S0002", quantity=1, unit_price=2.99, discount=0.1, line_total=2.49),
])


def config_of(topic_name: str) -> dict[str, str]:
    config = connector_configs()[f"{sink(topic_name).name}.json"]["config"]
    assert isinstance(config, dict)
    return config


# --- the committed configs --------------------------------------------------------------------
def test_committed_configs_are_generated_from_the_registry() -> None:
    expected = {name: render(document) for name, document in connector_configs().items()}
    committed = {path.name: path.read_text() for path in connect.CONFIG_DIR.glob("*.json")}
    assert committed == expected, "run `smartshelf data connect` and commit kafka-components/kafka-connect/"


def test_the_command_that_regenerates_the_configs_exists() -> None:
    from smartshelf.cli import data_app

    assert "connect" in [command.name for command in data_app.registered_commands]


def test_committed_configs_load_as_one_sink_per_topic_and_one_source() -> None:
    configs = load_configs()
    sinks = {name: c for name, c in configs.items() if c["connector.class"] == connect.JDBC_SINK}
    assert set(sinks) == {d.name for d in SINKS}
    assert sorted(c["topics"] for c in sinks.values()) == sorted(d.topic for d in SINKS)
    assert set(configs) - set(sinks) == {connect.SOURCE_NAME}
    assert configs[connect.SOURCE_NAME]["connector.class"] == connect.PG_SOURCE


def test_load_configs_names_the_file_that_is_not_a_config(tmp_path: Path) -> None:
    with pytest.raises(SmartShelfError, match="no connector configs"):
        load_configs(tmp_path)
    (tmp_path / "a.json").write_bytes(b"{oops")
    with pytest.raises(SmartShelfError, match="a.json: not JSON"):
        load_configs(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"name": "x", "config": {"tasks.max": 1}}))
    with pytest.raises(SmartShelfError, match="a.json: a connector config must be"):
        load_configs(tmp_path)


def test_no_topic_is_both_sunk_and_sourced() -> None:
    sunk = {d.topic for d in SINKS}
    sourced = {t.topic for t in sourced_tables()}
    assert not sunk & sourced, "a topic both sunk into and sourced from its table: two writers of one fact"
    assert all(t.pg is not None and t.topic is not None for t in sourced_tables())


MIRRORED = sorted({t.topic for t in TABLES if t.pg is not None and t.topic is not None})


@pytest.mark.parametrize("topic_name", MIRRORED)
def test_a_topic_with_a_postgres_mirror_has_a_connector(topic_name: str) -> None:
    sunk = {d.topic for d in SINKS}
    sourced = {t.topic for t in sourced_tables()}
    assert topic_name in sunk | sourced


# PostgreSQL tables that mirror no topic, and who writes them: nothing else may be declared and left empty
WRITTEN_DIRECTLY = {
    "ref.store_inventory", "ref.warehouse_inventory", "ref.store_batches", "ref.warehouse_batches",
    "ref.discounts",  # `smartshelf data import`
    "ops.pos_transactions", "ops.pos_transaction_items",  # the POS sink's intake trigger, from each basket
    "ops.dead_letters",  # the dead-letters sink
    "analytics.shelf_daily_features", "analytics.ml_models", "analytics.ml_predictions_log",  # ML jobs
}


def test_every_postgres_table_without_a_topic_has_a_known_writer() -> None:
    assert {t.pg for t in TABLES if t.pg is not None and t.topic is None} == WRITTEN_DIRECTLY


def test_mirror_table_needs_exactly_one_postgres_table() -> None:
    assert mirror_table("wh_events") == table("raw_wh_events")
    with pytest.raises(SmartShelfError, match="clock_ticks.*0 PostgreSQL mirror tables"):
        mirror_table("clock_ticks")
    with pytest.raises(SmartShelfError, match="no sink connector reads topic 'clock_ticks'"):
        sink("clock_ticks")


# --- what each sink writes --------------------------------------------------------------------
ROW_SINKS = [d for d in SINKS if d.mode in ("upsert", "insert")]


@pytest.mark.parametrize("declaration", ROW_SINKS, ids=lambda d: d.topic)
def test_a_row_sink_reads_its_topic_with_the_topic_model_into_its_mirror(declaration: connect.SinkDeclaration) -> None:
    config = config_of(declaration.topic)
    model = topic(declaration.topic).schema
    schema = json.loads(config["value.converter.schema.content"])
    assert schema == connect_schema(model)
    assert [f["field"] for f in schema["fields"]] == list(model.model_fields) == \
        list(mirror_table(declaration.topic).schema.model_fields)
    assert config["collection.name.format"] == mirror_table(declaration.topic).pg
    assert (config["insert.mode"], config["schema.evolution"]) == ("upsert", "none")
    assert config["errors.tolerance"] == "all" and config["errors.deadletterqueue.topic.name"] == DEAD_LETTERS


@pytest.mark.parametrize("declaration", ROW_SINKS, ids=lambda d: d.topic)
def test_a_row_sink_upserts_by_the_mirror_tables_primary_key(declaration: connect.SinkDeclaration) -> None:
    config = config_of(declaration.topic)
    target = mirror_table(declaration.topic)
    assert config["primary.key.fields"].split(",") == list(target.key)
    if declaration.mode == "upsert" and len(target.key) == 1:
        # the record key (the topic's key, one field) is the row's key: a tombstone deletes the row
        assert topic(declaration.topic).key == target.key
        assert (config["primary.key.mode"], config["delete.enabled"]) == ("record_key", "true")
        assert config["transforms.keyStruct.field"] == target.key[0]
    else:
        assert (config["primary.key.mode"], config["delete.enabled"]) == ("record_value", "false")
    if declaration.mode == "insert":
        # a replayed event rewrites its own row (ids are unique within a store)
        own = topic(declaration.topic)
        assert target.key == ((STORE_COLUMN,) if own.per_store else ()) + (own.id_field,)


def test_connect_schema_maps_types_and_optional_fields() -> None:
    fields = {f["field"]: f for f in connect_schema(WarehouseEvent)["fields"]}  # type: ignore[attr-defined]
    assert fields["event_type"] == {"field": "event_type", "type": "string", "optional": False}  # a Literal
    assert fields["quantity"]["type"] == "int64"
    assert fields["received_date"]["type"] == fields["ts"]["type"] == "string"  # PostgreSQL casts them
    assert fields["reference"]["optional"] is True
    assert {f["field"]: f for f in connect_schema(ShelfState)["fields"]}["current_weight"]["type"] == "double"  # type: ignore[attr-defined]
    optional = {n for n, i in WarehouseEvent.model_fields.items() if unwrap_optional(i.annotation)[1]}
    assert {n for n, f in fields.items() if f["optional"]} == optional
    with pytest.raises(TypeError, match="PosTransaction.items"):
        connect_schema(PosTransaction)  # nested: why baskets go through the intake table


def test_the_pos_sink_sends_baskets_whole_to_the_intake_table() -> None:
    config = config_of("pos_transactions")
    assert config["collection.name.format"] == POS_INTAKE_TABLE
    assert config["value.converter"] == connect.STRING_CONVERTER
    assert (config["insert.mode"], config["primary.key.mode"]) == ("insert", "none")
    assert config["transforms.basket.field"] in pos_intake_sql()


def test_the_intake_trigger_writes_every_column_of_both_pos_tables() -> None:
    ddl = pos_intake_sql()
    assert ddl in tables_sql()
    for model, target in ((PosTransactionRow, "ops.pos_transactions"), (PosTransactionItemRow,
                                                                           "ops.pos_transaction_items")):
        insert = next(line for line in ddl.splitlines() if line.strip().startswith(f"INSERT INTO {target} "))
        assert sorted(insert.split("(", 1)[1].rstrip(")").split(", ")) == sorted(model.model_fields)
    assert "RETURN NULL" in ddl  # the intake keeps nothing
    assert ddl.count("ON CONFLICT DO NOTHING") == 2  # a replayed basket writes nothing twice


def test_the_dead_letters_sink_keys_each_letter_by_where_it_sits() -> None:
    config = config_of(DEAD_LETTERS)
    assert json.loads(config["value.converter.schema.content"]) == connect_schema(DeadLetter)
    assert config["primary.key.fields"].split(",") == list(table("dead_letters").key)
    assert (config["transforms.whereItSits.partition.field"], config["transforms.whereItSits.offset.field"]) == \
        table("dead_letters").key
    # a letter it cannot read is skipped and logged: sending it to dead_letters again would loop
    assert "errors.deadletterqueue.topic.name" not in config and config["errors.log.enable"] == "true"


# --- the source ---------------------------------------------------------------------------------
def test_the_source_reads_every_config_table_into_its_topic_shaped_as_its_model() -> None:
    config = connector_configs()[f"{connect.SOURCE_NAME}.json"]["config"]
    assert isinstance(config, dict)
    assert config["table.include.list"].split(",") == [t.pg for t in sourced_tables()]
    assert config["publication.name"] in tables_sql() and config["publication.autocreate.mode"] == "disabled"
    router = re.compile(config["transforms.topicName.regex"])
    for source in sourced_tables():
        debezium_topic = f"{connect.SOURCE_PREFIX}.{source.pg}"
        java_replacement = config["transforms.topicName.replacement"]  # $1 in Java is \1 in Python
        assert router.fullmatch(debezium_topic) and router.sub(java_replacement.replace("$", "\\"),
                                                               debezium_topic) == source.topic
    transforms = config["transforms"].split(",")
    assert transforms[:3] == ["newState", "topicName", "dropChangeColumn"]  # the topic named before predicates
    assert config["transforms.dropChangeColumn.exclude"] == "updated_at"
    batch_catalog = topic("batch_catalog")
    dates = [f for f in batch_catalog.schema.model_fields if f.endswith("_date")]
    assert {t for t in transforms if t.startswith("date_")} == {f"date_batch_catalog_{f}" for f in dates}
    for source in sourced_tables():
        if len(topic(str(source.topic)).key) == 1:
            assert config[f"transforms.key_{source.topic}.field"] == topic(str(source.topic)).key[0]
            assert config[f"predicates.is_{source.topic}.pattern"] == source.topic


# --- the worker ---------------------------------------------------------------------------------
def test_the_worker_keeps_its_state_in_the_broker_and_listens_where_the_settings_say() -> None:
    settings = Settings(_env_file=None, KAFKA_PORT=19092, CONNECT_PORT=18083)  # type: ignore[call-arg]
    properties = worker_properties(settings)
    assert properties["bootstrap.servers"] == "127.0.0.1:19092"
    assert properties["listeners"] == "http://127.0.0.1:18083"
    assert {properties[f"{k}.storage.topic"] for k in ("config", "offset", "status")} == \
        set(connect.INTERNAL_TOPICS.values())
    assert not set(connect.INTERNAL_TOPICS.values()) & {t.name for t in TOPICS}
    assert properties["config.providers.env.class"] == connect.ENV_PROVIDER
    assert all(isinstance(v, str) for v in properties.values())


# --- what the mirror must hold ---------------------------------------------------------------------
def test_a_basket_is_its_transaction_row_and_numbered_item_rows() -> None:
    rows = pos_rows(BASKET)
    assert [(t.name, r) for t, r in rows] == [
        ("pos_transactions", PosTransactionRow(transaction_id="tx-1", customer_id="C1", ts=NOW, item_count=2,
                                               total=5.47)),
        ("pos_transaction_items", PosTransactionItemRow(**BASKET.items[0].model_dump(), transaction_id="tx-1",
                                                        line_no=1)),
        ("pos_transaction_items", PosTransactionItemRow(**BASKET.items[1].model_dump(), transaction_id="tx-1",
                                                        line_no=2)),
    ]


def test_a_dead_letter_row_is_the_letter_under_where_it_sits_with_nul_escaped() -> None:
    letter = DeadLetter(source="shelf_state", source_partition=1, source_offset=7, reason="bad\x00",
                        raw="a\x00b", ts=NOW)
    assert (letter.raw, letter.reason) == ("a\\x00b", "bad\\x00")  # PostgreSQL text holds no NUL
    row = dead_letter_row(letter, 0, 42)
    assert (row.letter_partition, row.letter_offset, row.raw, row.source_offset) == (0, 42, "a\\x00b", 7)


def test_text_with_a_nul_character_is_refused_in_every_record() -> None:
    with pytest.raises(ValueError, match="NUL"):
        ShelfState(shelf_id="S\x001", current_stock=1, current_weight=1.0, last_event_type="pickup",
                   last_event_ts=NOW)
    with pytest.raises(ValueError, match="NUL"):
        PosItem(shelf_id="S\x00", quantity=1, unit_price=1.0, discount=0.0, line_total=1.0)
    assert WarehouseEvent(event_id="e", event_type="wh_in", shelf_id="S1", batch_code="B", quantity=1,
                          received_date=date(2025, 1, 1), expiry_date=date(2025, 1, 9), ts=NOW).shelf_id == "S1"
