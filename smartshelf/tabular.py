"""Derive table definitions from the pydantic models: PostgreSQL DDL and Arrow (Delta) schemas.

The models in smartshelf.schemas / smartshelf.store are the only definition of a record's columns; the SQL
in postgresql/02_tables.sql is generated from here (and a test keeps the committed file equal to it).
"""

from __future__ import annotations

import types
from datetime import date, datetime
from typing import Literal, Union, get_args, get_origin

import annotated_types as at
import pyarrow as pa
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from smartshelf.registry import CHANGE_COLUMN, STORE_COLUMN, TABLES, Table, table


def unwrap_optional(annotation: object) -> tuple[object, bool]:
    """(inner type, nullable) for `X | None`."""
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _sql_type(annotation: object) -> str:
    if get_origin(annotation) is Literal:
        return "text"
    mapping: dict[object, str] = {
        str: "text", int: "bigint", float: "double precision", bool: "boolean", date: "date",
        datetime: "timestamp",
    }
    if annotation in mapping:
        return mapping[annotation]
    if get_origin(annotation) is list:
        return "jsonb"
    raise TypeError(f"no SQL type for {annotation!r}")


def _checks(column: str, annotation: object, info: FieldInfo) -> list[str]:
    checks = []
    if get_origin(annotation) is Literal:
        allowed = ", ".join(f"'{v}'" for v in get_args(annotation))
        checks.append(f"{column} IN ({allowed})")
    bounds = {at.Gt: ("gt", ">"), at.Ge: ("ge", ">="), at.Lt: ("lt", "<"), at.Le: ("le", "<=")}
    for constraint in info.metadata:
        for kind, (attribute, operator) in bounds.items():
            if isinstance(constraint, kind):
                checks.append(f"{column} {operator} {getattr(constraint, attribute)}")
        if isinstance(constraint, at.MinLen) and annotation is str and constraint.min_length > 0:
            checks.append(f"length({column}) >= {constraint.min_length}")
    return checks


def columns(model: type[BaseModel]) -> list[tuple[str, str, bool]]:
    """(name, SQL type, nullable) per field, in field order."""
    result = []
    for name, info in model.model_fields.items():
        inner, nullable = unwrap_optional(info.annotation)
        result.append((name, _sql_type(inner), nullable))
    return result


def table_columns(table: Table) -> list[tuple[str, str, bool]]:
    """(name, SQL type, nullable) of a table's columns: a per-store table's store, its model's, and a sourced
    table's change column."""
    return (([(STORE_COLUMN, "text", False)] if table.per_store else []) + columns(table.schema)
            + ([(CHANGE_COLUMN, "timestamp", False)] if table.sourced else []))


def create_table_sql(table: Table) -> str:
    assert table.pg is not None
    lines = []
    checks: list[str] = []
    if table.per_store:
        lines.append(f"    {STORE_COLUMN} text NOT NULL")
    for name, info in table.schema.model_fields.items():
        inner, nullable = unwrap_optional(info.annotation)
        lines.append(f"    {name} {_sql_type(inner)}{'' if nullable else ' NOT NULL'}")
        checks.extend(_checks(name, inner, info))
    lines.extend(f"    CHECK ({check})" for check in checks)
    lines.append(f"    PRIMARY KEY ({', '.join(table.pg_key)})")
    ddl = f"CREATE TABLE IF NOT EXISTS {table.pg} (\n" + ",\n".join(lines) + "\n);\n"
    if table.sourced:
        trigger = f"{table.pg.split('.')[1]}_{CHANGE_COLUMN}"
        ddl += (
            f"ALTER TABLE {table.pg} ADD COLUMN IF NOT EXISTS {CHANGE_COLUMN} timestamp NOT NULL\n"
            f"    DEFAULT (clock_timestamp() AT TIME ZONE 'UTC');\n"
            f"CREATE INDEX IF NOT EXISTS {trigger}_idx ON {table.pg} ({CHANGE_COLUMN});\n"
            f"CREATE OR REPLACE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table.pg}\n"
            f"    FOR EACH ROW EXECUTE FUNCTION public.touch_{CHANGE_COLUMN}();\n"
        )
    return ddl


def tables_sql() -> str:
    header = (
        "-- GENERATED from smartshelf/registry.py by `smartshelf data sql`: do not edit by hand.\n"
        "-- One table per registry entry that names a PostgreSQL table; columns come from its pydantic model.\n"
        f"-- Tables polled by a source connector also get {CHANGE_COLUMN}, the UTC time of a row's last change.\n\n"
        f"CREATE OR REPLACE FUNCTION public.touch_{CHANGE_COLUMN}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n    NEW.{CHANGE_COLUMN} := clock_timestamp() AT TIME ZONE 'UTC';\n    RETURN NEW;\nEND $$;\n\n"
    )
    return (header + "\n".join(create_table_sql(t) for t in TABLES if t.pg is not None) + "\n" + pos_intake_sql()
            + "\n" + publication_sql())


# the sourced tables' changes, read by Debezium's source connector (smartshelf.connect)
PUBLICATION = "smartshelf_config"


def publication_sql() -> str:
    names = ", ".join(str(t.pg) for t in TABLES if t.sourced)
    return (
        f"DO $$\nBEGIN\n"
        f"    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = '{PUBLICATION}') THEN\n"
        f"        CREATE PUBLICATION {PUBLICATION};\n"
        f"    END IF;\n"
        f"END $$;\n"
        f"ALTER PUBLICATION {PUBLICATION} SET TABLE {names};\n"
    )


# POS baskets reach PostgreSQL as JSON in this table's one column (the POS sink connector, smartshelf.connect);
# its trigger writes the transaction row and the numbered item rows, and keeps nothing itself
POS_INTAKE_TABLE = "ops.pos_basket_intake"
POS_INTAKE_COLUMN = "basket"


def pos_intake_sql() -> str:
    transactions, items = table("pos_transactions"), table("pos_transaction_items")
    assert transactions.pg is not None and items.pg is not None
    header = [(n, t) for n, t, _ in columns(transactions.schema) if n != "item_count"]
    lines = [(n, t) for n, t, _ in columns(items.schema) if n not in (STORE_COLUMN, "transaction_id", "line_no")]
    basket = f"NEW.{POS_INTAKE_COLUMN}"
    function = f"{POS_INTAKE_TABLE}_split"
    return (
        f"CREATE TABLE IF NOT EXISTS {POS_INTAKE_TABLE} ({POS_INTAKE_COLUMN} jsonb NOT NULL);\n"
        f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        f"BEGIN\n"
        f"    INSERT INTO {transactions.pg} ({', '.join(n for n, _ in header)}, item_count)\n"
        f"    SELECT {', '.join('b.' + n for n, _ in header)}, jsonb_array_length({basket}->'items')\n"
        f"    FROM jsonb_to_record({basket}) AS b({', '.join(f'{n} {t}' for n, t in header)})\n"
        f"    ON CONFLICT DO NOTHING;\n"
        f"    INSERT INTO {items.pg} ({', '.join(n for n, _ in lines)}, {STORE_COLUMN}, transaction_id, line_no)\n"
        f"    SELECT {', '.join('i.' + n for n, _ in lines)}, {basket}->>'{STORE_COLUMN}', {basket}->>'transaction_id',"
        f" i.line_no\n"
        f"    FROM ROWS FROM (jsonb_to_recordset({basket}->'items') AS ({', '.join(f'{n} {t}' for n, t in lines)}))\n"
        f"        WITH ORDINALITY AS i({', '.join(n for n, _ in lines)}, line_no)\n"
        f"    ON CONFLICT DO NOTHING;\n"
        f"    RETURN NULL;\n"
        f"END $$;\n"
        f"CREATE OR REPLACE TRIGGER pos_basket_intake_split BEFORE INSERT ON {POS_INTAKE_TABLE}\n"
        f"    FOR EACH ROW EXECUTE FUNCTION {function}();\n"
    )


def _arrow_type(annotation: object) -> pa.DataType:
    if get_origin(annotation) is Literal:
        return pa.string()
    mapping: dict[object, pa.DataType] = {
        str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_(), date: pa.date32(),
        datetime: pa.timestamp("us"),
    }
    if annotation in mapping:
        return mapping[annotation]
    if get_origin(annotation) is list:
        (item,) = get_args(annotation)
        return pa.list_(_arrow_type(item))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(arrow_schema(annotation))
    raise TypeError(f"no Arrow type for {annotation!r}")


def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    fields = []
    for name, info in model.model_fields.items():
        inner, nullable = unwrap_optional(info.annotation)
        fields.append(pa.field(name, _arrow_type(inner), nullable=nullable))
    return pa.schema(fields)
