"""Kafka Connect: the connectors that mirror topics into PostgreSQL and the config tables into topics, and what
each record does to its table. Pure: no I/O.

The connector configs (JSON, as Connect's REST API takes them) are generated from the registry into
kafka-components/kafka-connect/ by `smartshelf data connect`; a test keeps the files equal to what this module
gives. Compose registers them with a JVM Connect worker running the Confluent JDBC connector; the embedded
connect worker (smartshelf.apps.connect_worker) reads the same files and does what they say. Two connectors
need more than the JDBC sink can do (nested POS baskets, dead letters keyed by where they sit); their class
names are ours and only our worker runs them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Literal, get_origin

from pydantic import BaseModel

from smartshelf.errors import SmartShelfError
from smartshelf.ingress import Rejection, parse_record
from smartshelf.registry import DEAD_LETTERS, KEY_SEPARATOR, TABLES, Table, Topic, table, topic
from smartshelf.schemas import DeadLetter, DeadLetterRow, PosTransaction, PosTransactionItemRow, PosTransactionRow
from smartshelf.settings import REPO_ROOT
from smartshelf.tabular import unwrap_optional

CONFIG_DIR = REPO_ROOT / "kafka-components" / "kafka-connect"

JDBC_SINK = "io.confluent.connect.jdbc.JdbcSinkConnector"
JDBC_SOURCE = "io.confluent.connect.jdbc.JdbcSourceConnector"
POS_SINK = "smartshelf.connect.PosTransactionsSink"  # one basket → a transaction row and its item rows
DEAD_LETTERS_SINK = "smartshelf.connect.DeadLettersSink"  # dead letters keyed by where they sit in the topic
SMARTSHELF_CLASSES = (POS_SINK, DEAD_LETTERS_SINK)

STRING_CONVERTER = "org.apache.kafka.connect.storage.StringConverter"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
FROM_JSON = "com.github.jcustenborder.kafka.connect.json.FromJson$Value"
VALUE_TO_KEY = "org.apache.kafka.connect.transforms.ValueToKey"
EXTRACT_KEY_FIELD = "org.apache.kafka.connect.transforms.ExtractField$Key"
DROP_FIELD = "org.apache.kafka.connect.transforms.ReplaceField$Value"
DATE_TO_STRING = "org.apache.kafka.connect.transforms.TimestampConverter$Value"
IS_TOMBSTONE = "org.apache.kafka.connect.transforms.predicates.RecordIsTombstone"

SINK_BATCH_SIZE = 3000
SOURCE_POLL_MS = 1000
# a source poll reads rows changed up to this long ago: a transaction that commits later than that is missed
# (the JDBC source connector's own trade-off; the config tables change rarely, in short transactions)
SOURCE_DELAY_MS = 1000

# Connect reads these from the worker's environment (EnvVarConfigProvider); our worker from its Settings
CONNECTION = {
    "connection.url": "jdbc:postgresql://${env:POSTGRES_HOST}:${env:POSTGRES_PORT}/${env:POSTGRES_DB}",
    "connection.user": "${env:POSTGRES_APP_USER}",
    "connection.password": "${env:POSTGRES_APP_PASSWORD}",
}
DEAD_LETTER_QUEUE = {
    "errors.tolerance": "all",
    "errors.deadletterqueue.topic.name": DEAD_LETTERS,
    "errors.deadletterqueue.context.headers.enable": "true",
}


# --- the connectors ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SinkDeclaration:
    topic: str
    mode: Literal["upsert", "insert", "pos", "dead_letters"]

    @property
    def name(self) -> str:
        return f"pg-{self.topic.replace('_', '-')}-sink"


# upsert: compacted topics, the latest value per key; insert: append-only topics, each record once
SINKS: tuple[SinkDeclaration, ...] = (
    *(SinkDeclaration(name, "upsert") for name in (
        "shelf_state", "wh_state", "shelf_batch_state", "wh_batch_state", "daily_discounts",
        "shelf_restock_plan", "wh_supplier_plan", "wh_supplier_orders")),
    SinkDeclaration("wh_events", "insert"),
    SinkDeclaration("foot_traffic", "insert"),  # people in the store per hour (the API's KPIs)
    SinkDeclaration("wh_supplier_receipts", "insert"),
    SinkDeclaration("alerts", "insert"),
    SinkDeclaration("pulse_windows", "insert"),
    SinkDeclaration("pos_transactions", "pos"),
    SinkDeclaration(DEAD_LETTERS, "dead_letters"),
)
SOURCE_TABLES = tuple(t.name for t in TABLES if t.sourced)  # config tables polled into their compacted topics


def source_name(table_name: str) -> str:
    return f"pg-{table_name.replace('_', '-')}-source"


def mirror_table(topic_name: str) -> Table:
    """The PostgreSQL table that mirrors a topic (one per topic)."""
    found = [t for t in TABLES if t.topic == topic_name and t.pg is not None]
    if len(found) != 1:
        raise SmartShelfError(f"topic '{topic_name}' has {len(found)} PostgreSQL mirror tables in the registry")
    return found[0]


def json_schema(model: type[BaseModel]) -> dict[str, object]:
    """The flat JSON schema FromJson needs to turn a record into a Connect struct (types the JDBC sink maps)."""
    properties: dict[str, object] = {}
    required = []
    for name, info in model.model_fields.items():
        inner, nullable = unwrap_optional(info.annotation)
        if get_origin(inner) is Literal or inner is str:
            spec: dict[str, str] = {"type": "string"}
        elif inner is bool:
            spec = {"type": "boolean"}
        elif inner is int:
            spec = {"type": "integer"}
        elif inner is float:
            spec = {"type": "number"}
        elif inner is datetime:
            spec = {"type": "string", "format": "date-time"}
        elif inner is date:
            spec = {"type": "string", "format": "date"}
        else:
            raise TypeError(f"{model.__name__}.{name}: no flat JSON type for {inner!r}")
        properties[name] = spec
        if not nullable:
            required.append(name)
    return {"type": "object", "properties": properties, "required": required}


def _sink_config(declaration: SinkDeclaration) -> dict[str, str]:
    if declaration.mode == "pos":
        tables = [table("pos_transactions"), table("pos_transaction_items")]
        return {"connector.class": POS_SINK, "tasks.max": "1", "topics": declaration.topic,
                "table.name.format": ",".join(str(t.pg) for t in tables), **CONNECTION,
                "batch.size": str(SINK_BATCH_SIZE)}
    if declaration.mode == "dead_letters":
        return {"connector.class": DEAD_LETTERS_SINK, "tasks.max": "1", "topics": declaration.topic,
                "table.name.format": str(table("dead_letters").pg), **CONNECTION,
                "batch.size": str(SINK_BATCH_SIZE)}
    target = mirror_table(declaration.topic)
    model = topic(declaration.topic).schema
    config = {
        "connector.class": JDBC_SINK, "tasks.max": "1", "topics": declaration.topic,
        **CONNECTION,
        "table.name.format": str(target.pg),
        "insert.mode": declaration.mode,
        "auto.create": "false", "auto.evolve": "false",
        "batch.size": str(SINK_BATCH_SIZE),
        "key.converter": STRING_CONVERTER, "value.converter": STRING_CONVERTER,
        # our topics carry schemaless JSON; the JDBC sink needs a struct, which FromJson builds from the schema
        "transforms.fromJson.type": FROM_JSON,
        "transforms.fromJson.json.schema.location": "Inline",
        "transforms.fromJson.json.schema.inline": json.dumps(json_schema(model), separators=(",", ":")),
        "transforms.fromJson.predicate": "isTombstone",
        "transforms.fromJson.negate": "true",
        "predicates": "isTombstone",
        "predicates.isTombstone.type": IS_TOMBSTONE,
        **DEAD_LETTER_QUEUE,
    }
    if declaration.mode == "upsert":
        # the primary key is the record key; a tombstone (null value) deletes the row
        config.update({
            "pk.mode": "record_key", "pk.fields": ",".join(target.key), "delete.enabled": "true",
            "transforms": "fromJson,keyFromValue",
            "transforms.keyFromValue.type": VALUE_TO_KEY,
            "transforms.keyFromValue.fields": ",".join(target.key),
            "transforms.keyFromValue.predicate": "isTombstone",
            "transforms.keyFromValue.negate": "true",
        })
    else:
        config.update({"pk.mode": "record_value", "pk.fields": ",".join(target.key), "delete.enabled": "false",
                       "transforms": "fromJson"})
    return config


def source_query(source: Table, change_column: str) -> str:
    names = ", ".join((*source.schema.model_fields, change_column))
    return f"SELECT {names} FROM {source.pg}"


def _source_config(table_name: str) -> dict[str, str]:
    source = table(table_name)
    assert source.topic is not None and source.change_column is not None, f"{table_name} is not a source table"
    key = topic(source.topic).key
    dates = [n for n, info in source.schema.model_fields.items() if unwrap_optional(info.annotation)[0] is date]
    transforms = ["dropChangeColumn", "keyFromValue", *(["keyField"] if len(key) == 1 else []),
                  *(f"dateToString_{n}" for n in dates)]
    config = {
        "connector.class": JDBC_SOURCE, "tasks.max": "1", **CONNECTION,
        "mode": "timestamp", "timestamp.column.name": source.change_column,
        "timestamp.delay.interval.ms": str(SOURCE_DELAY_MS), "poll.interval.ms": str(SOURCE_POLL_MS),
        "query": source_query(source, source.change_column),
        "topic.prefix": source.topic,  # with `query`, the prefix is the whole topic name
        "key.converter": STRING_CONVERTER, "value.converter": JSON_CONVERTER,
        "value.converter.schemas.enable": "false",
        "transforms": ",".join(transforms),
        "transforms.dropChangeColumn.type": DROP_FIELD,
        "transforms.dropChangeColumn.exclude": source.change_column,
        "transforms.keyFromValue.type": VALUE_TO_KEY,
        "transforms.keyFromValue.fields": ",".join(key),
    }
    if len(key) == 1:
        config.update({"transforms.keyField.type": EXTRACT_KEY_FIELD, "transforms.keyField.field": key[0]})
    for name in dates:
        config.update({f"transforms.dateToString_{name}.type": DATE_TO_STRING,
                       f"transforms.dateToString_{name}.field": name,
                       f"transforms.dateToString_{name}.target.type": "string",
                       f"transforms.dateToString_{name}.format": "yyyy-MM-dd"})
    return config


def connector_configs() -> dict[str, dict[str, object]]:
    """Every connector, as Connect's REST API takes it: {"name": ..., "config": {...}}, by file name."""
    documents: dict[str, dict[str, object]] = {}
    for declaration in SINKS:
        documents[f"{declaration.name}.json"] = {"name": declaration.name, "config": _sink_config(declaration)}
    for table_name in SOURCE_TABLES:
        name = source_name(table_name)
        documents[f"{name}.json"] = {"name": name, "config": _source_config(table_name)}
    return documents


def render(document: dict[str, object]) -> str:
    return json.dumps(document, indent=2) + "\n"


def write_configs(directory: Path = CONFIG_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for file_name, document in connector_configs().items():
        path = directory / file_name
        path.write_text(render(document))
        written.append(path)
    return written


# --- reading a config: what our worker does --------------------------------------------------------
# keys that tell a JVM worker how to turn our JSON into Connect structs and back; our worker reads the JSON
# with the topic's schema (smartshelf.ingress) instead, so it only checks they are there
_REPRESENTATION_KEY = re.compile(r"^(key|value)\.converter(\..+)?$|^transforms(\..+)?$|^predicates(\..+)?$")
_COMMON_KEYS = {"connector.class", "tasks.max", "batch.size", *CONNECTION}
_SINK_KEYS = {*_COMMON_KEYS, "topics", "table.name.format", "insert.mode", "pk.mode", "pk.fields",
              "delete.enabled", "auto.create", "auto.evolve", *DEAD_LETTER_QUEUE}
_SOURCE_KEYS = {*_COMMON_KEYS, "mode", "timestamp.column.name", "timestamp.delay.interval.ms",
                "poll.interval.ms", "query", "topic.prefix"}
_QUERY = re.compile(r"^SELECT\s+(?P<columns>[a-z_][a-z0-9_]*(\s*,\s*[a-z_][a-z0-9_]*)*)\s+FROM\s+"
                    r"(?P<table>[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*)$", re.IGNORECASE)


@dataclass(frozen=True)
class SinkSpec:
    name: str
    mode: Literal["upsert", "insert", "pos", "dead_letters"]
    topic: Topic
    tables: tuple[Table, ...]  # the table written (POS: transactions, then items)
    batch_size: int
    delete_enabled: bool = False
    dead_letter_topic: str | None = None

    @property
    def connector_class(self) -> str:
        return {"pos": POS_SINK, "dead_letters": DEAD_LETTERS_SINK}.get(self.mode, JDBC_SINK)


@dataclass(frozen=True)
class SourceSpec:
    name: str
    table: Table
    topic: Topic
    change_column: str
    poll_interval_ms: int
    delay_ms: int


def _fail(name: str, problem: str) -> SmartShelfError:
    return SmartShelfError(f"connector {name}: {problem}")


def _int(name: str, config: dict[str, str], key: str, default: int) -> int:
    raw = config.get(key, str(default))
    if not raw.isdigit() or int(raw) <= 0:
        raise _fail(name, f"{key} must be a positive integer, got '{raw}'")
    return int(raw)


def _pg_table(name: str, qualified: str) -> Table:
    found = [t for t in TABLES if t.pg == qualified]
    if not found:
        raise _fail(name, f"table '{qualified}' is not a table of the registry")
    return found[0]


def _check_keys(name: str, config: dict[str, str], allowed: set[str]) -> None:
    unknown = sorted(k for k in config if k not in allowed and not _REPRESENTATION_KEY.match(k))
    if unknown:
        raise _fail(name, f"settings the embedded worker does not know: {', '.join(unknown)}")


def parse_connector(document: object) -> SinkSpec | SourceSpec:
    """What a connector config says, checked against the registry; a clear error for anything else."""
    if not isinstance(document, dict) or not isinstance(document.get("name"), str) \
            or not isinstance(document.get("config"), dict):
        raise SmartShelfError('a connector config must be {"name": "...", "config": {...}}')
    name: str = document["name"]
    config = document["config"]
    if not all(isinstance(v, str) for v in config.values()):
        raise _fail(name, "every config value must be a string, as Connect's REST API takes them")
    kind = config.get("connector.class")
    if kind == JDBC_SOURCE:
        return _parse_source(name, config)
    if kind in (JDBC_SINK, *SMARTSHELF_CLASSES):
        return _parse_sink(name, config)
    raise _fail(name, f"unknown connector.class '{kind}'")


def _parse_sink(name: str, config: dict[str, str]) -> SinkSpec:
    _check_keys(name, config, _SINK_KEYS)
    topic_names = [t.strip() for t in config.get("topics", "").split(",") if t.strip()]
    if len(topic_names) != 1:
        raise _fail(name, f"topics must name one topic, got '{config.get('topics', '')}'")
    try:
        source = topic(topic_names[0])
    except KeyError:
        raise _fail(name, f"unknown topic '{topic_names[0]}'") from None
    tables = tuple(_pg_table(name, t.strip()) for t in config.get("table.name.format", "").split(",") if t.strip())
    batch_size = _int(name, config, "batch.size", SINK_BATCH_SIZE)
    kind = config["connector.class"]
    if kind == POS_SINK:
        if tables != (table("pos_transactions"), table("pos_transaction_items")) or source.schema is not PosTransaction:
            raise _fail(name, "the POS sink reads pos_transactions into ops.pos_transactions, ops.pos_transaction_items")
        return SinkSpec(name, "pos", source, tables, batch_size)
    if kind == DEAD_LETTERS_SINK:
        if tables != (table("dead_letters"),) or source.schema is not DeadLetter:
            raise _fail(name, "the dead-letters sink reads dead_letters into ops.dead_letters")
        return SinkSpec(name, "dead_letters", source, tables, batch_size)
    if len(tables) != 1:
        raise _fail(name, "table.name.format must name one table (schema.table)")
    target = tables[0]
    if target.schema is not source.schema:
        raise _fail(name, f"{target.pg} holds {target.schema.__name__}, topic {source.name} {source.schema.__name__}")
    mode = config.get("insert.mode", "insert")
    pk_mode = config.get("pk.mode")
    pk_fields = tuple(f.strip() for f in config.get("pk.fields", "").split(","))
    delete_enabled = config.get("delete.enabled", "false") == "true"
    if mode not in ("insert", "upsert"):
        raise _fail(name, f"insert.mode must be insert or upsert, got '{mode}'")
    if pk_fields != target.key:
        raise _fail(name, f"pk.fields must be the primary key of {target.pg} ({','.join(target.key)})")
    if mode == "upsert" and pk_mode != "record_key":
        raise _fail(name, "an upsert sink takes its primary key from the record key (pk.mode=record_key)")
    if mode == "insert" and pk_mode != "record_value":
        raise _fail(name, "an insert sink takes its primary key from the value (pk.mode=record_value)")
    if delete_enabled and mode != "upsert":
        raise _fail(name, "delete.enabled needs insert.mode=upsert")
    if config.get("auto.create", "false") != "false" or config.get("auto.evolve", "false") != "false":
        raise _fail(name, "tables come from the migrations: auto.create and auto.evolve must be false")
    tolerance = config.get("errors.tolerance", "none")
    dead_letter_topic = config.get("errors.deadletterqueue.topic.name")
    if tolerance != "all" or dead_letter_topic != DEAD_LETTERS:
        raise _fail(name, f"bad records must go to {DEAD_LETTERS}: set errors.tolerance=all and "
                          f"errors.deadletterqueue.topic.name={DEAD_LETTERS}")
    return SinkSpec(name, mode, source, tables, batch_size, delete_enabled, dead_letter_topic)  # type: ignore[arg-type]


def _parse_source(name: str, config: dict[str, str]) -> SourceSpec:
    _check_keys(name, config, _SOURCE_KEYS)
    if config.get("mode") != "timestamp":
        raise _fail(name, f"mode must be timestamp, got '{config.get('mode')}'")
    query = _QUERY.match(config.get("query", "").strip())
    if query is None:
        raise _fail(name, "query must be 'SELECT <columns> FROM <schema.table>' (the worker adds its WHERE)")
    source = _pg_table(name, query["table"])
    change_column = config.get("timestamp.column.name", "")
    if source.change_column is None or change_column != source.change_column:
        raise _fail(name, f"{source.pg} is tracked by its '{source.change_column}' column, not '{change_column}'")
    columns = tuple(c.strip() for c in query["columns"].split(","))
    if columns != (*source.schema.model_fields, change_column):
        raise _fail(name, f"query must select the columns of {source.pg} and {change_column}")
    target = config.get("topic.prefix", "")
    if target != source.topic:
        raise _fail(name, f"{source.pg} is sourced to topic '{source.topic}', not '{target}'")
    return SourceSpec(name, source, topic(target), change_column, _int(name, config, "poll.interval.ms",
                      SOURCE_POLL_MS), _int(name, config, "timestamp.delay.interval.ms", SOURCE_DELAY_MS))


def load_connectors(directory: Path = CONFIG_DIR) -> list[SinkSpec | SourceSpec]:
    files = sorted(directory.glob("*.json"))
    if not files:
        raise SmartShelfError(f"no connector configs (*.json) in {directory}")
    specs = []
    for path in files:
        try:
            document = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SmartShelfError(f"{path}: not JSON: {exc}") from exc
        try:
            specs.append(parse_connector(document))
        except SmartShelfError as exc:
            raise SmartShelfError(f"{path.name}: {exc}") from exc
    # one connector per topic: a sink on a sourced topic would write the table whose changes the source
    # publishes, and so on, forever
    topics = [s.topic.name for s in specs]
    doubled = sorted({t for t in topics if topics.count(t) > 1})
    if doubled:
        raise SmartShelfError(f"more than one connector reads or writes {', '.join(doubled)}")
    return specs


# --- what a record does -------------------------------------------------------------------------
@dataclass(frozen=True)
class SinkRecord:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: datetime


@dataclass(frozen=True)
class Rows:
    """Rows to write for one record: upserted or inserted, by the sink's mode."""

    rows: tuple[tuple[Table, BaseModel], ...]


@dataclass(frozen=True)
class Delete:
    table: Table
    key: tuple[str, ...]


Action = Rows | Delete | Rejection


def record_action(spec: SinkSpec, record: SinkRecord) -> Action:
    """What one record does to the sink's table(s), or why it cannot be written."""
    if spec.mode == "dead_letters":
        return _dead_letter_rows(spec, record)
    if record.value is None:
        if spec.mode != "upsert" or not spec.delete_enabled:
            return Rejection(f"tombstone on {spec.topic.name}, whose sink only inserts")
        if record.key is None:
            return Rejection("tombstone without a key")
        parts = tuple(record.key.decode("utf-8", errors="replace").split(KEY_SEPARATOR))
        target = spec.tables[0]
        if len(parts) != len(target.key) or not all(parts):
            return Rejection(f"tombstone key '{record.key!r}' is not {KEY_SEPARATOR.join(target.key)}")
        return Delete(target, parts)
    parsed = parse_record(spec.topic, record.value)
    if isinstance(parsed, Rejection):
        return parsed
    if _holds_nul(parsed.model_dump()):
        return Rejection("a text field holds a NUL character, which PostgreSQL text cannot store")
    if spec.mode == "pos":
        assert isinstance(parsed, PosTransaction)
        return Rows(pos_rows(parsed))
    if spec.mode == "upsert":
        expected = spec.topic.key_of(parsed)
        if record.key is None or record.key.decode("utf-8", errors="replace") != expected:
            return Rejection(f"record key {record.key!r} is not the value's key '{expected}'")
    return Rows(((spec.tables[0], parsed),))


def pos_rows(sale: PosTransaction) -> tuple[tuple[Table, BaseModel], ...]:
    """A basket as its transaction row and one item row per line, numbered from 1."""
    header = PosTransactionRow(transaction_id=sale.transaction_id, customer_id=sale.customer_id, ts=sale.ts,
                               item_count=len(sale.items), total=sale.total)
    lines = [PosTransactionItemRow(**item.model_dump(), transaction_id=sale.transaction_id, line_no=number)
             for number, item in enumerate(sale.items, start=1)]
    return ((table("pos_transactions"), header), *((table("pos_transaction_items"), line) for line in lines))


NUL = "\x00"


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return NUL in value
    if isinstance(value, dict):
        return any(_holds_nul(v) for v in value.values())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _storable(text: str) -> str:
    """Text PostgreSQL can store: NUL characters escaped, as the bytes they were."""
    return text.replace(NUL, "\\x00")


def dead_letter_id(partition: int, offset: int) -> str:
    return f"{DEAD_LETTERS}:{partition}:{offset}"


def _dead_letter_rows(spec: SinkSpec, record: SinkRecord) -> Action:
    parsed = parse_record(spec.topic, record.value)
    if isinstance(parsed, DeadLetter):
        row = DeadLetterRow(dead_letter_id=dead_letter_id(record.partition, record.offset),
                            **{**parsed.model_dump(), "raw": _storable(parsed.raw),
                               "reason": _storable(parsed.reason), "source": _storable(parsed.source)})
    else:
        # a dead letter that is not one is still kept, as itself: sending it back to dead_letters would loop
        reason = parsed.reason if isinstance(parsed, Rejection) else "not a dead letter"
        row = DeadLetterRow(dead_letter_id=dead_letter_id(record.partition, record.offset), source=DEAD_LETTERS,
                            source_partition=record.partition, source_offset=record.offset,
                            reason=f"unreadable dead letter: {reason}",
                            raw=_storable((record.value or b"").decode("utf-8", errors="backslashreplace")),
                            ts=record.timestamp)
    return Rows(((spec.tables[0], row),))


@dataclass
class TableWrites:
    """One table's writes for a batch, by primary key, in arrival order: the last action per key wins
    (upsert sinks); an insert sink keeps the first and reports the rest as duplicates."""

    table: Table
    upserts: dict[tuple[str, ...], BaseModel] = field(default_factory=dict)
    deletes: set[tuple[str, ...]] = field(default_factory=set)
    sources: dict[tuple[str, ...], SinkRecord] = field(default_factory=dict)  # the record each row came from


def plan_writes(spec: SinkSpec, actions: Iterable[tuple[SinkRecord, Action]]
                ) -> tuple[list[TableWrites], list[tuple[SinkRecord, str]]]:
    """A batch's writes per table (in the sink's table order) and the records to dead-letter, with why."""
    writes = {t.name: TableWrites(t) for t in spec.tables}
    rejected: list[tuple[SinkRecord, str]] = []
    for record, action in actions:
        if isinstance(action, Rejection):
            rejected.append((record, action.reason))
        elif isinstance(action, Delete):
            pending = writes[action.table.name]
            pending.upserts.pop(action.key, None)
            pending.deletes.add(action.key)
        else:
            duplicate = _duplicate_in_batch(spec, writes, action)
            if duplicate is not None:
                rejected.append((record, duplicate))
                continue
            for target, row in action.rows:
                key = tuple(str(getattr(row, f)) for f in target.key)
                pending = writes[target.name]
                pending.deletes.discard(key)
                pending.upserts[key] = row
                pending.sources[key] = record
    return list(writes.values()), rejected


def _duplicate_in_batch(spec: SinkSpec, writes: dict[str, TableWrites], action: Rows) -> str | None:
    if spec.mode == "upsert":
        return None
    target, row = action.rows[0]
    key = tuple(str(getattr(row, f)) for f in target.key)
    if key in writes[target.name].upserts:
        return f"duplicate {','.join(target.key)} {KEY_SEPARATOR.join(key)} in {target.pg}"
    return None
