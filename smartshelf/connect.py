"""Kafka Connect: the connectors that mirror topics into PostgreSQL, the worker that runs them, and what each
mirror table must hold. Pure: no I/O.

The connector configs (JSON, as Connect's REST API takes them) are generated from the registry into
kafka-components/kafka-connect/ by `smartshelf data connect`; a test keeps the files equal to what this module
gives. Apache Kafka Connect (distributed mode) runs the sinks with Debezium's JDBC sink connector, embedded and in
compose alike; `connect-init` (or, embedded, the connect server once it answers) registers them over REST.

Our topics carry plain JSON. The JDBC sink needs Connect structs, which Kafka's JsonConverter builds from a
schema given in the config (`schema.content`, generated here from the topic's pydantic model), so no schema
travels with the records. Every sink upserts by a key, so a record written again after a crash (Connect commits
offsets after the rows) rewrites the same row: nothing is lost or written twice. Records the converter cannot
read go to `dead_letters` with Connect's error headers (reason, topic, partition, offset).

Two mirrors need more than a row per record, and take it from PostgreSQL instead of code of ours in Connect:
- POS baskets: the sink inserts each basket as JSON into ops.pos_basket_intake, whose trigger writes the
  transaction row and its numbered item rows (ON CONFLICT DO NOTHING) and keeps nothing itself (smartshelf.tabular);
- dead letters: keyed by where each letter sits in `dead_letters` (Connect's InsertField adds partition and
  offset), so a replay rewrites the same rows.

The config tables reach their compacted topics through Debezium's PostgreSQL source connector: logical decoding
(pgoutput) of a publication of those tables, a snapshot at its first start, then every insert and update.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Literal, get_origin

from pydantic import BaseModel

from smartshelf.errors import SmartShelfError
from smartshelf.registry import CHANGE_COLUMN, DEAD_LETTERS, TABLES, Table, table, topic
from smartshelf.schemas import DeadLetter, DeadLetterRow, PosTransaction, PosTransactionItemRow, PosTransactionRow
from smartshelf.settings import REPO_ROOT, Settings
from smartshelf.tabular import POS_INTAKE_COLUMN, POS_INTAKE_TABLE, PUBLICATION, unwrap_optional

CONFIG_DIR = REPO_ROOT / "kafka-components" / "kafka-connect"

JDBC_SINK = "io.debezium.connector.jdbc.JdbcSinkConnector"
STRING_CONVERTER = "org.apache.kafka.connect.storage.StringConverter"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
HOIST_KEY = "org.apache.kafka.connect.transforms.HoistField$Key"
HOIST_VALUE = "org.apache.kafka.connect.transforms.HoistField$Value"
INSERT_FIELD = "org.apache.kafka.connect.transforms.InsertField$Value"
ENV_PROVIDER = "org.apache.kafka.common.config.provider.EnvVarConfigProvider"

GROUP_ID = "smartshelf-connect"
INTERNAL_TOPICS = {"config": "_connect_configs", "offset": "_connect_offsets", "status": "_connect_status"}
SINK_BATCH_SIZE = 3000
OFFSET_FLUSH_MS = 1000  # how often Connect commits what the sinks have written
# PostgreSQL restarting (or briefly away) is retried this long before the task fails and the watchdog steps in
FLUSH_RETRIES, FLUSH_RETRY_DELAY_MS = 60, 1000

# Connect reads these from its environment (EnvVarConfigProvider). stringtype=unspecified: timestamps and dates
# travel as the ISO strings our JSON holds, and PostgreSQL casts them to the column's type
CONNECTION = {
    "connection.url": "jdbc:postgresql://${env:POSTGRES_HOST}:${env:POSTGRES_PORT}/${env:POSTGRES_DB}"
                      "?stringtype=unspecified",
    "connection.username": "${env:POSTGRES_APP_USER}",
    "connection.password": "${env:POSTGRES_APP_PASSWORD}",
}
DEAD_LETTER_QUEUE = {
    "errors.tolerance": "all",
    "errors.deadletterqueue.topic.name": DEAD_LETTERS,
    "errors.deadletterqueue.context.headers.enable": "true",
    "errors.deadletterqueue.topic.replication.factor": "1",
}


# --- the connectors ----------------------------------------------------------------------------
SinkMode = Literal["upsert", "insert", "pos", "dead_letters"]


@dataclass(frozen=True)
class SinkDeclaration:
    topic: str
    mode: SinkMode

    @property
    def name(self) -> str:
        return f"pg-{self.topic.replace('_', '-')}-sink"

    @property
    def deletes(self) -> bool:
        """Whether a tombstone deletes its row: an upsert sink whose table's key is one field, the record key (a
        store's tables are keyed by several fields, whose joined string key the sink cannot split)."""
        return self.mode == "upsert" and len(self.tables[0].key) == 1

    @property
    def tables(self) -> tuple[Table, ...]:
        """The tables this sink fills, in the order a reader compares them."""
        if self.mode == "pos":
            return table("pos_transactions"), table("pos_transaction_items")
        if self.mode == "dead_letters":
            return (table("dead_letters"),)
        return (mirror_table(self.topic),)


# upsert: compacted topics, the latest value per key; insert: append-only topics, each record once (by its id)
SINKS: tuple[SinkDeclaration, ...] = (
    *(SinkDeclaration(name, "upsert") for name in (
        "shelf_state", "wh_state", "shelf_risk", "shelf_batch_state", "wh_batch_state", "daily_discounts",
        "shelf_restock_plan", "wh_supplier_plan", "wh_supplier_orders")),
    SinkDeclaration("wh_events", "insert"),
    SinkDeclaration("foot_traffic", "insert"),  # people in the store per hour (the API's KPIs)
    SinkDeclaration("wh_supplier_receipts", "insert"),
    SinkDeclaration("alerts", "insert"),
    SinkDeclaration("pulse_windows", "insert"),
    SinkDeclaration("pos_transactions", "pos"),
    SinkDeclaration(DEAD_LETTERS, "dead_letters"),
)


def sink(topic_name: str) -> SinkDeclaration:
    found = [s for s in SINKS if s.topic == topic_name]
    if not found:
        raise SmartShelfError(f"no sink connector reads topic '{topic_name}'")
    return found[0]


def mirror_table(topic_name: str) -> Table:
    """The PostgreSQL table that mirrors a topic (one per topic)."""
    found = [t for t in TABLES if t.topic == topic_name and t.pg is not None]
    if len(found) != 1:
        raise SmartShelfError(f"topic '{topic_name}' has {len(found)} PostgreSQL mirror tables in the registry")
    return found[0]


def connect_schema(model: type[BaseModel], name: str | None = None) -> dict[str, object]:
    """The Connect schema (JsonConverter's JSON form) of a flat model: the struct the JDBC sink writes.

    Times and dates stay strings (PostgreSQL casts them: CONNECTION's stringtype); fields the schema does not
    name are ignored by the converter."""
    fields: list[dict[str, object]] = []
    for field_name, info in model.model_fields.items():
        inner, nullable = unwrap_optional(info.annotation)
        if get_origin(inner) is Literal or inner in (str, datetime, date):
            kind = "string"
        elif inner is bool:
            kind = "boolean"
        elif inner is int:
            kind = "int64"
        elif inner is float:
            kind = "double"
        else:
            raise TypeError(f"{model.__name__}.{field_name}: no flat Connect type for {inner!r}")
        fields.append({"field": field_name, "type": kind, "optional": nullable})
    return {"type": "struct", "name": name or model.__name__, "optional": False, "fields": fields}


def _compact(document: object) -> str:
    return json.dumps(document, separators=(",", ":"))


def _base(declaration: SinkDeclaration, target: str) -> dict[str, str]:
    return {
        "connector.class": JDBC_SINK, "tasks.max": "1", "topics": declaration.topic, **CONNECTION,
        "collection.name.format": target,
        "schema.evolution": "none",  # tables come from the migrations
        "batch.size": str(SINK_BATCH_SIZE),
        # one task writes through one connection at a time: c3p0's defaults (5 to 32 per sink) would hold 75 idle
        # PostgreSQL backends for the 15 sinks
        "connection.pool.min_size": "1", "connection.pool.max_size": "2", "connection.pool.acquire_increment": "1",
        "flush.max.retries": str(FLUSH_RETRIES), "flush.retry.delay.ms": str(FLUSH_RETRY_DELAY_MS),
        "key.converter": STRING_CONVERTER,
    }


def _json_value(model: type[BaseModel]) -> dict[str, str]:
    return {"value.converter": JSON_CONVERTER, "value.converter.schemas.enable": "true",
            "value.converter.schema.content": _compact(connect_schema(model))}


def _sink_config(declaration: SinkDeclaration) -> dict[str, str]:
    if declaration.mode == "pos":
        return _pos_config(declaration)
    if declaration.mode == "dead_letters":
        return _dead_letters_config(declaration)
    (target,) = declaration.tables
    config = {**_base(declaration, str(target.pg)), **_json_value(topic(declaration.topic).schema),
              "insert.mode": "upsert", "use.reduction.buffer": "true", **DEAD_LETTER_QUEUE}
    if declaration.deletes:
        # the record key is the row's key, also for a tombstone, which deletes the row; Debezium wants the key
        # as a struct, so the string key becomes the one field of one
        config.update({"primary.key.mode": "record_key", "primary.key.fields": target.key[0],
                       "delete.enabled": "true", "transforms": "keyStruct",
                       "transforms.keyStruct.type": HOIST_KEY, "transforms.keyStruct.field": target.key[0]})
    else:
        # the key's fields from the value: append-only topics by their id (a replay rewrites the same row), and
        # compacted topics keyed by several fields, whose joined string key the sink cannot split (none of them
        # is ever deleted: nothing publishes their tombstones)
        config.update({"primary.key.mode": "record_value", "primary.key.fields": ",".join(target.key),
                       "delete.enabled": "false"})
    return config


def _pos_config(declaration: SinkDeclaration) -> dict[str, str]:
    # the basket as text into the intake table's one jsonb column; its trigger writes the two POS tables
    return {**_base(declaration, POS_INTAKE_TABLE), "value.converter": STRING_CONVERTER,
            "insert.mode": "insert", "primary.key.mode": "none", "delete.enabled": "false",
            "transforms": "basket", "transforms.basket.type": HOIST_VALUE,
            "transforms.basket.field": POS_INTAKE_COLUMN, **DEAD_LETTER_QUEUE}


def _dead_letters_config(declaration: SinkDeclaration) -> dict[str, str]:
    (target,) = declaration.tables
    # a letter this sink cannot read (Connect's own dead letters carry the failed record as it was, their reason
    # in headers) is logged and skipped: sending it to dead_letters again would loop
    return {**_base(declaration, str(target.pg)), **_json_value(DeadLetter),
            "insert.mode": "upsert", "primary.key.mode": "record_value",
            "primary.key.fields": ",".join(target.key), "delete.enabled": "false",
            "transforms": "whereItSits", "transforms.whereItSits.type": INSERT_FIELD,
            "transforms.whereItSits.partition.field": "letter_partition",
            "transforms.whereItSits.offset.field": "letter_offset",
            "errors.tolerance": "all", "errors.log.enable": "true"}


def connector_configs() -> dict[str, dict[str, object]]:
    """Every connector, as Connect's REST API takes it: {"name": ..., "config": {...}}, by file name."""
    documents: dict[str, dict[str, object]] = {f"{d.name}.json": {"name": d.name, "config": _sink_config(d)}
                                               for d in SINKS}
    documents[f"{SOURCE_NAME}.json"] = {"name": SOURCE_NAME, "config": _source_config()}
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


def load_configs(directory: Path = CONFIG_DIR) -> dict[str, dict[str, str]]:
    """The committed connector configs by connector name; a clear error for a file that is not one."""
    files = sorted(directory.glob("*.json"))
    if not files:
        raise SmartShelfError(f"no connector configs (*.json) in {directory}")
    configs: dict[str, dict[str, str]] = {}
    for path in files:
        try:
            document = json.loads(path.read_bytes())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SmartShelfError(f"{path}: not JSON: {exc}") from exc
        if not isinstance(document, dict) or not isinstance(document.get("name"), str) \
                or not isinstance(document.get("config"), dict) \
                or not all(isinstance(v, str) for v in document["config"].values()):
            raise SmartShelfError(f'{path.name}: a connector config must be {{"name": "...", "config": '
                                  f'{{"key": "string", ...}}}}')
        configs[document["name"]] = document["config"]
    return configs


# --- the worker -----------------------------------------------------------------------------------
def worker_properties(settings: Settings) -> dict[str, str]:
    """Connect's distributed-mode worker config: its state in the broker's internal topics, REST on 127.0.0.1
    (compose: on CONNECT_HOST), every plugin on the classpath."""
    host = settings.connect_host
    return {
        "bootstrap.servers": settings.kafka_bootstrap_servers,
        "group.id": GROUP_ID,
        **{f"{kind}.storage.topic": name for kind, name in INTERNAL_TOPICS.items()},
        **{f"{kind}.storage.replication.factor": "1" for kind in INTERNAL_TOPICS},
        "offset.storage.partitions": "1", "status.storage.partitions": "1",
        "key.converter": STRING_CONVERTER, "value.converter": STRING_CONVERTER,
        "listeners": f"http://{host}:{settings.connect_port}", "rest.advertised.host.name": host,
        "plugin.discovery": "only_scan",
        "offset.flush.interval.ms": str(OFFSET_FLUSH_MS),
        "consumer.max.poll.records": str(SINK_BATCH_SIZE),
        "config.providers": "env", "config.providers.env.class": ENV_PROVIDER,
    }


def sink_group(declaration: SinkDeclaration) -> str:
    """The consumer group whose committed offsets say how far a sink has written (Connect's naming)."""
    return f"connect-{declaration.name}"


# --- what the mirror must hold ----------------------------------------------------------------------
def pos_rows(sale: PosTransaction) -> tuple[tuple[Table, BaseModel], ...]:
    """A basket as its transaction row and one item row per line, numbered from 1 (what the intake trigger
    writes)."""
    header = PosTransactionRow(store_id=sale.store_id, transaction_id=sale.transaction_id,
                               customer_id=sale.customer_id, ts=sale.ts, item_count=len(sale.items), total=sale.total)
    lines = [PosTransactionItemRow(**item.model_dump(), store_id=sale.store_id, transaction_id=sale.transaction_id,
                                   line_no=number) for number, item in enumerate(sale.items, start=1)]
    return ((table("pos_transactions"), header), *((table("pos_transaction_items"), line) for line in lines))


def dead_letter_row(letter: DeadLetter, partition: int, offset: int) -> DeadLetterRow:
    return DeadLetterRow(**letter.model_dump(), letter_partition=partition, letter_offset=offset)


# --- the config tables → their topics: Debezium's PostgreSQL source ------------------------------------
PG_SOURCE = "io.debezium.connector.postgresql.PostgresConnector"
SOURCE_NAME = "pg-config-source"
SLOT = "smartshelf_config"
SOURCE_PREFIX = "smartshelf"  # Debezium names a table's topic <prefix>.<schema>.<table>; a router renames it
HEARTBEAT_MS = 10_000  # lets the slot move on while only other tables change (else it keeps their WAL)
# what each heartbeat writes to the WAL: a logical decoding message, which reaches the slot whatever the
# publication holds, so the slot confirms the WAL up to it (with HEARTBEAT_MS alone a fast run's slot stood still
# until PostgreSQL invalidated it past max_slot_wal_keep_size and the source stopped; docs/architecture.md);
# the source skips the message itself (message.prefix.exclude.list)
HEARTBEAT_MESSAGE = "smartshelf_heartbeat"
HEARTBEAT_QUERY = f"SELECT pg_logical_emit_message(false, '{HEARTBEAT_MESSAGE}', now()::text)"
EXTRACT_NEW_STATE = "io.debezium.transforms.ExtractNewRecordState"
REGEX_ROUTER = "org.apache.kafka.connect.transforms.RegexRouter"
EXTRACT_KEY_FIELD = "org.apache.kafka.connect.transforms.ExtractField$Key"
DROP_FIELD = "org.apache.kafka.connect.transforms.ReplaceField$Value"
DATE_TO_STRING = "org.apache.kafka.connect.transforms.TimestampConverter$Value"
TOPIC_MATCHES = "org.apache.kafka.connect.transforms.predicates.TopicNameMatches"


def sourced_tables() -> list[Table]:
    return [t for t in TABLES if t.sourced]


def _source_config() -> dict[str, str]:
    """One connector for every config table: a snapshot at its first start, then each change as the row's new
    value, keyed and shaped as the topic's other records (the change column dropped, dates as ISO strings)."""
    tables = sourced_tables()
    transforms = ["newState", "topicName", "dropChangeColumn"]
    config = {
        "connector.class": PG_SOURCE, "tasks.max": "1", "plugin.name": "pgoutput",
        "database.hostname": "${env:POSTGRES_HOST}", "database.port": "${env:POSTGRES_PORT}",
        "database.user": "${env:POSTGRES_APP_USER}", "database.password": "${env:POSTGRES_APP_PASSWORD}",
        "database.dbname": "${env:POSTGRES_DB}",
        "topic.prefix": SOURCE_PREFIX, "table.include.list": ",".join(str(t.pg) for t in tables),
        "publication.name": PUBLICATION, "publication.autocreate.mode": "disabled", "slot.name": SLOT,
        "snapshot.mode": "initial", "decimal.handling.mode": "double", "time.precision.mode": "connect",
        "tombstones.on.delete": "false", "heartbeat.interval.ms": str(HEARTBEAT_MS),
        "heartbeat.action.query": HEARTBEAT_QUERY, "message.prefix.exclude.list": HEARTBEAT_MESSAGE,
        # the heartbeat topic is Connect's to create (the broker creates none): one compacted partition
        "topic.creation.default.replication.factor": "1", "topic.creation.default.partitions": "1",
        "topic.creation.default.cleanup.policy": "compact",
        "key.converter": STRING_CONVERTER, "value.converter": JSON_CONVERTER,
        "value.converter.schemas.enable": "false",
        # a deleted row is dropped, as a TRUNCATE is (the store import replaces the tables): its topic keeps the
        # last value, which the apps read as the row's
        "transforms.newState.type": EXTRACT_NEW_STATE, "transforms.newState.delete.tombstone.handling.mode": "drop",
        "transforms.topicName.type": REGEX_ROUTER,
        "transforms.topicName.regex": rf"{SOURCE_PREFIX}\.[a-z_]+\.([a-z_]+)",
        "transforms.topicName.replacement": "$1",
        "transforms.dropChangeColumn.type": DROP_FIELD, "transforms.dropChangeColumn.exclude": CHANGE_COLUMN,
    }
    for source in tables:
        assert source.topic is not None
        key = topic(source.topic).key
        predicate = f"is_{source.topic}"
        config.update({f"predicates.{predicate}.type": TOPIC_MATCHES, f"predicates.{predicate}.pattern": source.topic})
        if len(key) == 1:  # Debezium keys by the primary key's struct; our single-field keys are the bare value
            name = f"key_{source.topic}"
            transforms.append(name)
            config.update({f"transforms.{name}.type": EXTRACT_KEY_FIELD, f"transforms.{name}.field": key[0],
                           f"transforms.{name}.predicate": predicate})
        for field_name, info in source.schema.model_fields.items():
            if unwrap_optional(info.annotation)[0] is date:
                name = f"date_{source.topic}_{field_name}"
                transforms.append(name)
                config.update({f"transforms.{name}.type": DATE_TO_STRING, f"transforms.{name}.field": field_name,
                               f"transforms.{name}.target.type": "string",
                               f"transforms.{name}.format": "yyyy-MM-dd", f"transforms.{name}.predicate": predicate})
    config["transforms"] = ",".join(transforms)
    config["predicates"] = ",".join(f"is_{t.topic}" for t in tables)
    return config
