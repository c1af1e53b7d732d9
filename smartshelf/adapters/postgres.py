"""PostgreSQL adapter: roles and migrations, and atomic loads of registry tables."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg2
import psycopg2.extensions
from psycopg2 import sql
from psycopg2.extras import execute_values
from pydantic import BaseModel

from smartshelf.errors import SmartShelfError, Unavailable
from smartshelf.registry import STORE_COLUMN, TABLES, Table
from smartshelf.settings import REPO_ROOT, Settings
from smartshelf.tabular import table_columns, tables_sql

MIGRATIONS_DIR = REPO_ROOT / "postgresql"
GENERATED_TABLES_FILE = "02_tables.sql"
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_MIGRATION_LOCK = 4_242_001  # advisory lock id: concurrent `up`s migrate one at a time
# the running store (STORE_ID), a setting of the database every session starts with: the views (04_views.sql) and
# a user's SQL pick its rows of the chain's reference tables with current_setting('smartshelf.store_id')
STORE_SETTING = "smartshelf.store_id"


# every connection: a dead peer is noticed within ~1 min (TCP keepalives), and no statement runs longer than a
# minute (the longest of ours, a day's features, takes seconds), so a stuck call fails and is retried
CONNECTION_OPTIONS: dict[str, object] = {
    "connect_timeout": 5, "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
    "options": "-c statement_timeout=60000",
}


def open_connection(settings: Settings, role: str = "app") -> psycopg2.extensions.connection:
    """A plain connection as `role`, with the project's timeouts and keepalives."""
    return psycopg2.connect(settings.postgres_dsn_for(role), **CONNECTION_OPTIONS)


@contextmanager
def connect(settings: Settings, role: str = "app") -> Iterator[psycopg2.extensions.connection]:
    """A connection as `role` (admin, app, reader); commits on success, rolls back on error."""
    try:
        conn = open_connection(settings, role)
    except psycopg2.OperationalError as exc:
        first_line = str(exc).strip().splitlines()[0]
        raise Unavailable(
            f"cannot connect to PostgreSQL at {settings.postgres_host}:{settings.postgres_port} "
            f"as {role}: {first_line}"
        ) from exc
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def migration_files() -> list[Path]:
    return sorted(MIGRATIONS_DIR.glob("[0-9][0-9]_*.sql"))


def _ensure_role(cur: psycopg2.extensions.cursor, name: str, password: str) -> None:
    if not _ROLE_NAME.match(name):
        raise SmartShelfError(f"invalid PostgreSQL role name '{name}' (use lower-case letters, digits, _)")
    cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
    verb = "ALTER" if cur.fetchone() else "CREATE"
    cur.execute(sql.SQL(verb + " ROLE {} LOGIN PASSWORD %s").format(sql.Identifier(name)), (password,))


def migrate(settings: Settings) -> list[str]:
    """Create the roles, set the running store, and apply every numbered SQL file, in one transaction; returns the
    files applied.

    Every file is idempotent, so all are applied each time; schema_migrations records what ran.
    """
    applied = []
    with connect(settings, "admin") as conn, conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        _ensure_role(cur, settings.postgres_app_user, settings.postgres_app_password)
        _ensure_role(cur, settings.postgres_reader_user, settings.postgres_reader_password)
        # Debezium's source connects as the app role and reads a replication slot
        cur.execute(sql.SQL("ALTER ROLE {} REPLICATION").format(sql.Identifier(settings.postgres_app_user)))
        cur.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
            sql.Identifier(settings.postgres_db), sql.SQL(STORE_SETTING), sql.Literal(settings.store_id)))
        outdated = outdated_tables(cur)
        if outdated:
            raise SmartShelfError(
                f"the database holds tables of an older Smart Shelf ({'; '.join(outdated[:3])}): stop the stack"
                " (smartshelf down), delete run/, delta/ and data/db_csv/, and start again")
        for path in migration_files():
            text = path.read_text()
            statement = text.replace(":app_role", f'"{settings.postgres_app_user}"').replace(
                ":reader_role", f'"{settings.postgres_reader_user}"'
            )
            try:
                cur.execute(statement)
            except psycopg2.Error as exc:
                raise SmartShelfError(f"migration {path.name} failed: {str(exc).strip().splitlines()[0]}") from exc
            cur.execute(
                "INSERT INTO public.schema_migrations (filename, sha256) VALUES (%s, %s) "
                "ON CONFLICT (filename) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = now()",
                (path.name, hashlib.sha256(text.encode()).hexdigest()),
            )
            applied.append(path.name)
    return applied


def outdated_tables(cur: psycopg2.extensions.cursor) -> list[str]:
    """The registry's tables that exist with other columns than their model's (CREATE TABLE IF NOT EXISTS would
    keep them as they are), each with what differs first."""
    found = []
    for table in TABLES:
        if table.pg is None:
            continue
        schema_name, table_name = table.pg.split(".")
        cur.execute(
            "SELECT column_name, data_type, is_nullable = 'YES' FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema_name, table_name),
        )
        actual = [(name, dtype.replace("timestamp without time zone", "timestamp"), nullable)
                  for name, dtype, nullable in cur.fetchall()]
        expected = table_columns(table)
        if actual and actual != expected:
            first = next((f"{a[0]} {a[1]}, expected {e[0]} {e[1]}" for a, e in zip(actual, expected) if a != e),
                         f"{len(actual)} columns, expected {len(expected)}")
            found.append(f"{table.pg}: {first}")
    return found


def write_generated_tables_sql() -> Path:
    path = MIGRATIONS_DIR / GENERATED_TABLES_FILE
    path.write_text(tables_sql())
    return path


def replace_rows(cur: psycopg2.extensions.cursor, table: Table, rows: Sequence[BaseModel]) -> None:
    """Replace a table's whole content with `rows` (inside the caller's transaction)."""
    cur.execute(sql.SQL("TRUNCATE {}").format(_identifier(table)))
    insert_rows(cur, table, rows)


def replace_chain_rows(cur: psycopg2.extensions.cursor, table: Table,
                       rows_by_store: Mapping[str, Sequence[BaseModel]]) -> None:
    """Replace a per-store table's whole content with each store's rows (inside the caller's transaction)."""
    cur.execute(sql.SQL("TRUNCATE {}").format(_identifier(table)))
    for store_id, rows in rows_by_store.items():
        insert_rows(cur, table, rows, store_id)


def insert_rows(cur: psycopg2.extensions.cursor, table: Table, rows: Iterable[BaseModel],
                store_id: str | None = None) -> None:
    """Insert the rows; a per-store table's rows are `store_id`'s (and only its rows take one)."""
    if table.per_store != (store_id is not None):
        raise ValueError(f"{table.pg}: a store id goes with the rows of a per-store table, and only with them")
    names = list(table.schema.model_fields)
    store_column, store_value = ((STORE_COLUMN,), (store_id,)) if store_id is not None else ((), ())
    query = sql.SQL("INSERT INTO {} ({}) VALUES %s").format(
        _identifier(table), sql.SQL(", ").join(map(sql.Identifier, [*store_column, *names]))
    )
    values = [(*store_value, *(getattr(row, name) for name in names)) for row in rows]
    if values:
        execute_values(cur, query.as_string(cur), values, page_size=2000)


def _identifier(table: Table) -> sql.Identifier:
    assert table.pg is not None, f"{table.name} has no PostgreSQL table"
    schema_name, table_name = table.pg.split(".")
    return sql.Identifier(schema_name, table_name)


def upsert_rows(cur: psycopg2.extensions.cursor, table: Table, rows: Sequence[BaseModel]) -> None:
    """Insert the rows, replacing those whose key is there already (inside the caller's transaction)."""
    assert not table.per_store, f"{table.pg}: a chain's table is replaced whole (replace_chain_rows)"
    names = list(table.schema.model_fields)
    updates = [n for n in names if n not in table.key]
    query = sql.SQL("INSERT INTO {} ({}) VALUES %s ON CONFLICT ({}) DO UPDATE SET {}").format(
        _identifier(table), sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(map(sql.Identifier, table.key)),
        sql.SQL(", ").join(sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in updates))
    values = [tuple(getattr(row, name) for name in names) for row in rows]
    if values:
        execute_values(cur, query.as_string(cur), values, page_size=1000)


def count_rows(cur: psycopg2.extensions.cursor, table: Table) -> int:
    """A table's rows (of a per-store table: the whole chain's)."""
    cur.execute(sql.SQL("SELECT count(*) FROM {}").format(_identifier(table)))
    (count,) = cur.fetchone()
    return int(count)


def select_rows(cur: psycopg2.extensions.cursor, table: Table, order_by: Sequence[str] | None = None,
                store_id: str | None = None) -> list[BaseModel]:
    """Every row of a table (of a per-store table: `store_id`'s rows; of another table with a store column, those of
    `store_id` if named) as its model, ordered by the primary key (or `order_by`)."""
    if (table.per_store and store_id is None) or (store_id is not None and not table.has_store_column):
        raise ValueError(f"{table.pg}: rows of a per-store table are selected by store, and only rows that have one")
    names = list(table.schema.model_fields)
    where = sql.SQL(" WHERE {} = %s").format(sql.Identifier(STORE_COLUMN)) if store_id is not None else sql.SQL("")
    query = sql.SQL("SELECT {} FROM {}{} ORDER BY {}").format(
        sql.SQL(", ").join(map(sql.Identifier, names)), _identifier(table), where,
        sql.SQL(", ").join(map(sql.Identifier, order_by or table.key)),
    )
    cur.execute(query, (store_id,) if store_id is not None else None)
    return [table.schema.model_validate(dict(zip(names, row, strict=True))) for row in cur.fetchall()]
