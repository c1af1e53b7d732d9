"""Connect: the committed connector configs are the generated ones, they parse back into the specs the registry
implies, a config the worker would misread is refused by name, and each record does the right thing to its table.

A sink that writes the wrong row, drops a delete or loses a dead letter corrupts the PostgreSQL mirror silently,
so every branch of what a record does is tried here, without a broker or a database.
"""

from __future__ import annotations

import copy
import json
from datetime import date, datetime
from pathlib import Path

import pytest

from smartshelf import connect
from smartshelf.connect import (
    SINKS, SOURCE_TABLES, Action, Delete, Rows, SinkRecord, SinkSpec, SourceSpec, TableWrites, connector_configs,
    json_schema, load_connectors, mirror_table, parse_connector, plan_writes, record_action, render,
)
from smartshelf.errors import SmartShelfError
from smartshelf.ingress import Rejection
from smartshelf.registry import DEAD_LETTERS, TABLES, table, topic
from smartshelf.schemas import (
    DeadLetter, DeadLetterRow, PosItem, PosTransaction, PosTransactionItemRow, PosTransactionRow, ShelfBatchState,
    ShelfState, WarehouseEvent,
)
from smartshelf.tabular import unwrap_optional

NOW = datetime(2025, 1, 1, 9, 30)
STATE = ShelfState(shelf_id="S0001", current_stock=5, current_weight=7.5, last_event_type="pickup",
                   last_event_ts=NOW)
LOT = ShelfBatchState(shelf_id="S0001", batch_code="B1", received_date=date(2025, 1, 1),
                      expiry_date=date(2025, 1, 9), batch_quantity_store=3, last_update_ts=NOW)
WH_OUT = WarehouseEvent(event_id="we-1", event_type="wh_out", shelf_id="S0001", batch_code="B1", quantity=4,
                        received_date=date(2025, 1, 1), expiry_date=date(2025, 1, 9), ts=NOW)
BASKET = PosTransaction(transaction_id="tx-1", customer_id="C1", ts=NOW, total=5.47, items=[
    PosItem(shelf_id="S0001", quantity=2, unit_price=1.49, discount=0.0, line_total=2.98),
    PosItem(shelf_id="S0002", quantity=1, unit_price=2.99, discount=0.1, line_total=2.49),
])
LETTER = DeadLetter(source="shelf_events", source_partition=1, source_offset=7, reason="not JSON", raw="{oops",
                    ts=NOW)


# --- helpers ----------------------------------------------------------------------------------
def sink_file(topic_name: str) -> str:
    return f"pg-{topic_name.replace('_', '-')}-sink.json"


def sink(topic_name: str) -> SinkSpec:
    spec = parse_connector(connector_configs()[sink_file(topic_name)])
    assert isinstance(spec, SinkSpec)
    return spec


def record(topic_name: str, value: bytes | None, key: bytes | None = None, offset: int = 0) -> SinkRecord:
    return SinkRecord(topic_name, partition=0, offset=offset, key=key, value=value, timestamp=NOW)


def state_record(state: ShelfState, offset: int = 0) -> SinkRecord:
    return record("shelf_state", state.model_dump_json().encode(), topic("shelf_state").key_of(state).encode(),
                  offset)


def action(topic_name: str, value: bytes | None, key: bytes | None = None) -> Action:
    return record_action(sink(topic_name), record(topic_name, value, key))


def rejected(result: Action) -> str:
    assert isinstance(result, Rejection), f"accepted: {result!r}"
    return result.reason


def plan(spec: SinkSpec, records: list[SinkRecord]) -> tuple[list[TableWrites], list[tuple[SinkRecord, str]]]:
    return plan_writes(spec, [(r, record_action(spec, r)) for r in records])


def broken(file_name: str, changes: dict[str, object]) -> dict[str, object]:
    """A generated config with some keys changed; a value of None drops the key."""
    document = copy.deepcopy(connector_configs()[file_name])
    config = document["config"]
    assert isinstance(config, dict)
    for key, value in changes.items():
        if value is None:
            config.pop(key)
        else:
            config[key] = value
    return document


def write_files(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


# --- the committed configs --------------------------------------------------------------------
def test_committed_configs_are_generated_from_the_registry() -> None:
    expected = {name: render(document) for name, document in connector_configs().items()}
    committed = {path.name: path.read_text() for path in connect.CONFIG_DIR.glob("*.json")}
    assert committed == expected, "run `smartshelf data connect` and commit kafka-components/kafka-connect/"


def test_the_command_that_regenerates_the_configs_exists() -> None:
    from smartshelf.cli import data_app

    assert "connect" in [command.name for command in data_app.registered_commands]


def test_committed_configs_load_as_one_sink_per_topic_and_one_source_per_table() -> None:
    specs = load_connectors()
    sinks = {s.topic.name: s for s in specs if isinstance(s, SinkSpec)}
    sources = {s.table.name: s for s in specs if isinstance(s, SourceSpec)}
    assert len(specs) == len(SINKS) + len(SOURCE_TABLES)
    assert {name: s.mode for name, s in sinks.items()} == {d.topic: d.mode for d in SINKS}
    for declaration in SINKS:
        spec = sinks[declaration.topic]
        assert spec.name == declaration.name
        if declaration.mode in ("upsert", "insert"):
            assert spec.tables == (mirror_table(declaration.topic),)
            assert spec.delete_enabled == (declaration.mode == "upsert")
            assert spec.dead_letter_topic == DEAD_LETTERS
    assert sinks["pos_transactions"].tables == (table("pos_transactions"), table("pos_transaction_items"))
    assert sinks[DEAD_LETTERS].tables == (table("dead_letters"),)
    assert set(sources) == set(SOURCE_TABLES)
    for name, source in sources.items():
        assert source.topic.name == table(name).topic
        assert source.change_column == "updated_at"
        assert source.name == f"pg-{name.replace('_', '-')}-source"


def test_no_topic_is_both_sunk_and_sourced() -> None:
    sunk = {d.topic for d in SINKS}
    sourced = {table(name).topic for name in SOURCE_TABLES}
    assert not sunk & sourced, "a topic both sunk into and sourced from its table: two writers of one fact"
    for name in SOURCE_TABLES:
        assert table(name).sourced and table(name).pg is not None, name


MIRRORED = sorted({t.topic for t in TABLES if t.pg is not None and t.topic is not None})


@pytest.mark.parametrize("topic_name", MIRRORED)
def test_a_topic_with_a_postgres_mirror_has_a_connector(topic_name: str) -> None:
    sunk = {d.topic for d in SINKS}
    sourced = {table(name).topic for name in SOURCE_TABLES}
    assert topic_name in sunk | sourced


# PostgreSQL tables that mirror no topic, and who writes them: nothing else may be declared and left empty
WRITTEN_DIRECTLY = {
    "ref.store_inventory", "ref.warehouse_inventory", "ref.store_batches", "ref.warehouse_batches",
    "ref.discounts",  # `smartshelf data import`
    "ops.pos_transactions", "ops.pos_transaction_items",  # the POS sink, from each basket
    "ops.dead_letters",  # the dead-letters sink
    "ops.connect_offsets", "ops.connect_source_offsets",  # the connect worker, with the rows they account for
    "analytics.shelf_daily_features", "analytics.ml_models", "analytics.ml_predictions_log",  # ML: not built yet
}


def test_every_postgres_table_without_a_topic_has_a_known_writer() -> None:
    assert {t.pg for t in TABLES if t.pg is not None and t.topic is None} == WRITTEN_DIRECTLY


def test_mirror_table_needs_exactly_one_postgres_table() -> None:
    assert mirror_table("wh_events") == table("raw_wh_events")
    with pytest.raises(SmartShelfError, match="clock_ticks.*0 PostgreSQL mirror tables"):
        mirror_table("clock_ticks")


# --- the inline JSON schema of the JDBC sinks -------------------------------------------------
@pytest.mark.parametrize("declaration", [d for d in SINKS if d.mode in ("upsert", "insert")], ids=lambda d: d.topic)
def test_jdbc_sink_schema_is_the_topic_model(declaration: connect.SinkDeclaration) -> None:
    config = connector_configs()[f"{declaration.name}.json"]["config"]
    assert isinstance(config, dict)
    model = topic(declaration.topic).schema
    inline = json.loads(config["transforms.fromJson.json.schema.inline"])
    assert inline == json_schema(model)
    assert list(inline["properties"]) == list(model.model_fields)
    optional = {name for name, info in model.model_fields.items() if unwrap_optional(info.annotation)[1]}
    assert set(inline["required"]) == set(model.model_fields) - optional


def test_json_schema_maps_types_and_optional_fields() -> None:
    schema = json_schema(WarehouseEvent)
    properties = schema["properties"]
    assert isinstance(properties, dict)
    assert properties["event_type"] == {"type": "string"}  # a Literal
    assert properties["quantity"] == {"type": "integer"}
    assert properties["received_date"] == {"type": "string", "format": "date"}
    assert properties["ts"] == {"type": "string", "format": "date-time"}
    assert "reference" in properties and "reference" not in schema["required"]  # type: ignore[operator]
    assert json_schema(ShelfState)["properties"]["current_weight"] == {"type": "number"}  # type: ignore[index]
    with pytest.raises(TypeError, match="PosTransaction.items"):
        json_schema(PosTransaction)  # nested: why the POS sink is ours


# --- configs the worker refuses ---------------------------------------------------------------
SHELF_SINK = sink_file("shelf_state")
EVENTS_SINK = sink_file("wh_events")
PROFILES_SOURCE = "pg-shelf-profiles-source.json"
PROFILES_QUERY = connector_configs()[PROFILES_SOURCE]["config"]["query"]  # type: ignore[index]


@pytest.mark.parametrize(("file_name", "changes", "problem"), [
    (SHELF_SINK, {"connector.class": "com.example.Sink"}, "unknown connector.class 'com.example.Sink'"),
    (SHELF_SINK, {"connector.class": None}, "unknown connector.class"),
    (SHELF_SINK, {"foo.bar": "1"}, "does not know: foo.bar"),
    (SHELF_SINK, {"topics": "shelf_state,wh_state"}, "topics must name one topic, got 'shelf_state,wh_state'"),
    (SHELF_SINK, {"topics": "nope"}, "unknown topic 'nope'"),
    (SHELF_SINK, {"table.name.format": "state.nope"}, "table 'state.nope' is not a table of the registry"),
    (SHELF_SINK, {"table.name.format": "state.wh_state"}, "state.wh_state holds WarehouseState"),
    (SHELF_SINK, {"pk.fields": "shelf_id,last_event_ts"}, "pk.fields must be the primary key of state.shelf_state"),
    (SHELF_SINK, {"pk.mode": "record_value"}, "pk.mode=record_key"),
    (SHELF_SINK, {"insert.mode": "update"}, "insert.mode must be insert or upsert, got 'update'"),
    (SHELF_SINK, {"auto.create": "true"}, "auto.create and auto.evolve must be false"),
    (SHELF_SINK, {"batch.size": "0"}, "batch.size must be a positive integer"),
    (SHELF_SINK, {"errors.tolerance": None}, "errors.tolerance=all"),
    (SHELF_SINK, {"errors.deadletterqueue.topic.name": "alerts"}, "errors.deadletterqueue.topic.name=dead_letters"),
    (EVENTS_SINK, {"delete.enabled": "true"}, "delete.enabled needs insert.mode=upsert"),
    (EVENTS_SINK, {"pk.mode": "record_key"}, "pk.mode=record_value"),
    (sink_file("pos_transactions"), {"table.name.format": "ops.pos_transactions"}, "the POS sink reads"),
    (sink_file(DEAD_LETTERS), {"topics": "alerts"}, "the dead-letters sink reads"),
    (PROFILES_SOURCE, {"mode": "incrementing"}, "mode must be timestamp, got 'incrementing'"),
    (PROFILES_SOURCE, {"timestamp.column.name": "changed_at"}, "not 'changed_at'"),
    (PROFILES_SOURCE, {"query": PROFILES_QUERY.replace("aisle, ", "")}, "query must select the columns"),
    (PROFILES_SOURCE, {"query": PROFILES_QUERY + " WHERE aisle = 'A1'"}, "query must be 'SELECT <columns> FROM"),
    (PROFILES_SOURCE, {"topic.prefix": "shelf_policies"}, "sourced to topic 'shelf_profiles', not 'shelf_policies'"),
    (PROFILES_SOURCE, {"incrementing.column.name": "id"}, "does not know: incrementing.column.name"),
    (PROFILES_SOURCE, {"poll.interval.ms": 1000}, "every config value must be a string"),
])
def test_parse_connector_refuses_a_bad_config_naming_connector_and_problem(
        file_name: str, changes: dict[str, object], problem: str) -> None:
    document = broken(file_name, changes)
    with pytest.raises(SmartShelfError) as error:
        parse_connector(document)
    assert str(error.value).startswith(f"connector {document['name']}: ")
    assert problem in str(error.value)


@pytest.mark.parametrize("document", [
    {"config": {}}, {"name": "pg-x-sink"}, {"name": 1, "config": {}}, {"name": "pg-x-sink", "config": "x"}, [],
])
def test_parse_connector_refuses_a_document_without_name_and_config(document: object) -> None:
    with pytest.raises(SmartShelfError, match='must be {"name": "...", "config": {...}}'):
        parse_connector(document)


# --- loading a folder of configs --------------------------------------------------------------
def test_load_connectors_needs_config_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("not a config")
    with pytest.raises(SmartShelfError, match="no connector configs"):
        load_connectors(tmp_path)


@pytest.mark.parametrize("content", [
    b'{"name": "pg-x-sink", "config": ',
    b'\xff\xfe{}',
], ids=["truncated", "not-utf8"])
def test_load_connectors_names_the_file_that_is_not_json(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "pg-broken-sink.json").write_bytes(content)
    with pytest.raises(SmartShelfError, match="pg-broken-sink.json: not JSON"):
        load_connectors(tmp_path)


def test_load_connectors_names_the_file_of_a_bad_config(tmp_path: Path) -> None:
    write_files(tmp_path, {SHELF_SINK: render(broken(SHELF_SINK, {"auto.create": "true"}))})
    with pytest.raises(SmartShelfError, match=f"^{SHELF_SINK}: connector pg-shelf-state-sink: tables come from"):
        load_connectors(tmp_path)


def test_load_connectors_refuses_two_sinks_for_one_topic(tmp_path: Path) -> None:
    twin = {"name": "pg-shelf-state-sink-2", "config": connector_configs()[SHELF_SINK]["config"]}
    write_files(tmp_path, {SHELF_SINK: render(connector_configs()[SHELF_SINK]), "twin.json": render(twin)})
    with pytest.raises(SmartShelfError, match="more than one connector reads or writes shelf_state"):
        load_connectors(tmp_path)


# --- what a record does: upsert sinks ---------------------------------------------------------
def test_a_valid_state_record_is_its_row() -> None:
    assert record_action(sink("shelf_state"), state_record(STATE)) == Rows(((table("shelf_state"), STATE),))


def test_a_record_whose_key_is_not_its_values_key_is_rejected() -> None:
    reason = rejected(action("shelf_state", STATE.model_dump_json().encode(), b"S0002"))
    assert "S0001" in reason and "S0002" in reason
    rejected(action("shelf_state", STATE.model_dump_json().encode(), None))


@pytest.mark.parametrize(("value", "problem"), [
    (b'{"shelf_id": "S0001", ', "not JSON"),
    (json.dumps({**STATE.model_dump(mode="json"), "current_stock": -1}).encode(), "current_stock"),
    (json.dumps({**STATE.model_dump(mode="json"), "colour": "red"}).encode(), "colour"),
    (json.dumps({**STATE.model_dump(mode="json"), "current_stock": "5"}).encode(), "current_stock"),
])
def test_a_record_that_is_not_a_valid_value_is_rejected(value: bytes, problem: str) -> None:
    assert problem in rejected(action("shelf_state", value, b"S0001"))


def test_a_tombstone_deletes_the_row_of_its_key() -> None:
    assert action("shelf_state", None, b"S0001") == Delete(table("shelf_state"), ("S0001",))
    assert action("shelf_batch_state", None, b"S0001|B1") == Delete(table("shelf_batch_state"), ("S0001", "B1"))


@pytest.mark.parametrize("key", [b"S0001", b"S0001|", b"S0001|B1|x", None])
def test_a_tombstone_without_a_whole_key_is_rejected(key: bytes | None) -> None:
    rejected(action("shelf_batch_state", None, key))


def test_a_tombstone_is_rejected_when_the_sink_does_not_delete() -> None:
    spec = parse_connector(broken(SHELF_SINK, {"delete.enabled": "false"}))
    assert isinstance(spec, SinkSpec) and not spec.delete_enabled
    rejected(record_action(spec, record("shelf_state", None, b"S0001")))


# --- what a record does: insert, POS and dead-letter sinks ------------------------------------
def test_an_insert_sink_inserts_a_valid_event_and_rejects_a_tombstone() -> None:
    assert action("wh_events", WH_OUT.model_dump_json().encode()) == Rows(((table("raw_wh_events"), WH_OUT),))
    assert "tombstone" in rejected(action("wh_events", None, b"S0001"))


def test_a_basket_is_its_transaction_row_and_numbered_item_rows() -> None:
    result = action("pos_transactions", BASKET.model_dump_json().encode(), b"C1")
    assert isinstance(result, Rows)
    assert result.rows == (
        (table("pos_transactions"), PosTransactionRow(transaction_id="tx-1", customer_id="C1", ts=NOW, item_count=2,
                                                      total=5.47)),
        *((table("pos_transaction_items"), PosTransactionItemRow(**item.model_dump(), transaction_id="tx-1",
                                                                 line_no=number))
          for number, item in enumerate(BASKET.items, start=1)),
    )
    assert [row.line_no for _, row in result.rows[1:]] == [1, 2]  # type: ignore[attr-defined]
    assert "tombstone" in rejected(action("pos_transactions", None, b"C1"))


def test_a_dead_letter_is_kept_under_where_it_sits() -> None:
    result = record_action(sink(DEAD_LETTERS), record(DEAD_LETTERS, LETTER.model_dump_json().encode(), offset=42))
    row = DeadLetterRow(dead_letter_id="dead_letters:0:42", **LETTER.model_dump())
    assert result == Rows(((table("dead_letters"), row),))


@pytest.mark.parametrize(("value", "raw"), [(b"\xff\xfe not json", "\\xff\\xfe not json"), (None, "")])
def test_an_unreadable_dead_letter_is_still_kept(value: bytes | None, raw: str) -> None:
    result = record_action(sink(DEAD_LETTERS), record(DEAD_LETTERS, value, offset=42))
    assert isinstance(result, Rows)
    ((target, row),) = result.rows
    assert target == table("dead_letters") and isinstance(row, DeadLetterRow)
    assert row.reason.startswith("unreadable dead letter")
    assert (row.dead_letter_id, row.source, row.source_partition, row.source_offset, row.raw, row.ts) == (
        "dead_letters:0:42", DEAD_LETTERS, 0, 42, raw, NOW)


# --- a batch's writes ---------------------------------------------------------------------------
def test_the_last_value_of_a_key_in_a_batch_wins() -> None:
    later = STATE.model_copy(update={"current_stock": 3})
    (writes,), rejections = plan(sink("shelf_state"), [state_record(STATE, 0), state_record(later, 1)])
    assert writes.table == table("shelf_state")
    assert writes.upserts == {("S0001",): later} and writes.deletes == set()
    assert rejections == []


def test_a_tombstone_after_a_value_deletes_and_a_value_after_a_tombstone_upserts() -> None:
    tombstone = record("shelf_state", None, b"S0001", offset=1)
    (writes,), _ = plan(sink("shelf_state"), [state_record(STATE, 0), tombstone])
    assert writes.upserts == {} and writes.deletes == {("S0001",)}
    (writes,), _ = plan(sink("shelf_state"), [tombstone, state_record(STATE, 2)])
    assert writes.upserts == {("S0001",): STATE} and writes.deletes == set()


def test_a_composite_key_delete_cancels_the_upsert_of_its_row() -> None:
    value = record("shelf_batch_state", LOT.model_dump_json().encode(), b"S0001|B1", offset=0)
    (writes,), _ = plan(sink("shelf_batch_state"), [value, record("shelf_batch_state", None, b"S0001|B1", 1)])
    assert writes.upserts == {} and writes.deletes == {("S0001", "B1")}


def test_rejected_records_come_back_with_their_reasons() -> None:
    bad = record("shelf_state", STATE.model_dump_json().encode(), b"S0002", offset=1)
    (writes,), rejections = plan(sink("shelf_state"), [state_record(STATE, 0), bad])
    assert writes.upserts == {("S0001",): STATE}
    assert [(r, "is not the value's key" in reason) for r, reason in rejections] == [(bad, True)]


def test_an_insert_sink_keeps_the_first_of_two_events_with_one_id() -> None:
    again = WH_OUT.model_copy(update={"quantity": 9})
    first, second = (record("wh_events", e.model_dump_json().encode(), offset=n) for n, e in enumerate((WH_OUT, again)))
    (writes,), rejections = plan(sink("wh_events"), [first, second])
    assert writes.upserts == {("we-1",): WH_OUT}
    ((rejected_record, reason),) = rejections
    assert rejected_record == second and "duplicate" in reason and "we-1" in reason


def test_a_basket_writes_both_pos_tables_once() -> None:
    raw = BASKET.model_dump_json().encode()
    spec = sink("pos_transactions")
    (header, items), rejections = plan(spec, [record("pos_transactions", raw, b"C1", n) for n in (0, 1)])
    assert (header.table, items.table) == (table("pos_transactions"), table("pos_transaction_items"))
    assert list(header.upserts) == [("tx-1",)]
    assert list(items.upserts) == [("tx-1", "1"), ("tx-1", "2")]
    assert [reason for _, reason in rejections] == ["duplicate transaction_id tx-1 in ops.pos_transactions"]


def test_a_source_and_a_sink_on_one_topic_are_refused(tmp_path: Path) -> None:
    documents = connector_configs()
    sink = json.loads(render(documents["pg-shelf-state-sink.json"]))
    sink["name"] = "pg-shelf-profiles-sink"
    sink["config"]["topics"] = "shelf_profiles"
    sink["config"]["table.name.format"] = "config.shelf_profiles"
    sink["config"]["pk.fields"] = "shelf_id"
    for name in ("pg-shelf-profiles-source.json",):
        (tmp_path / name).write_text(render(documents[name]))
    (tmp_path / "pg-shelf-profiles-sink.json").write_text(json.dumps(sink))
    with pytest.raises(SmartShelfError, match="more than one connector reads or writes shelf_profiles"):
        load_connectors(tmp_path)


def test_text_with_a_nul_character_is_refused_and_a_dead_letter_holding_one_is_kept() -> None:
    specs = {s.topic.name: s for s in load_connectors() if isinstance(s, SinkSpec)}
    state = ShelfState(shelf_id="S\x001", current_stock=1, current_weight=1.0, last_event_type="pickup",
                       last_event_ts=datetime(2025, 1, 1, 8))
    action = record_action(specs["shelf_state"], SinkRecord("shelf_state", 0, 1, "S\x001".encode(),
                                                            state.model_dump_json().encode(), state.last_event_ts))
    assert isinstance(action, Rejection) and "NUL" in action.reason
    letter = DeadLetter(source="shelf_state", reason="bad", raw="a\x00b", ts=datetime(2025, 1, 1, 8))
    kept = record_action(specs[DEAD_LETTERS], SinkRecord(DEAD_LETTERS, 0, 7, b"shelf_state",
                                                         letter.model_dump_json().encode(), letter.ts))
    assert isinstance(kept, Rows)
    (_, row), = kept.rows
    assert row.raw == "a\\x00b"  # type: ignore[attr-defined]
