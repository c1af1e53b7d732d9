"""Store data, PostgreSQL schemas, topics and Delta layout against the real servers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import psycopg2
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType
from deltalake import DeltaTable

from smartshelf.adapters import postgres
from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.datagen import generate_store, write_store
from smartshelf.errors import SmartShelfError
from smartshelf.registry import TABLES, TOPICS, table
from smartshelf.runtime import jobs
from smartshelf.settings import Settings
from smartshelf.store import StoreData
from smartshelf.tabular import arrow_schema
from tests.conftest import settings_env

SMARTSHELF = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "smartshelf")
SEED = 11


@pytest.fixture(scope="module")
def loaded(stack: Settings) -> tuple[Settings, StoreData, Path]:
    """The stack migrated, with topics and Delta tables, and a generated store imported."""
    for job in jobs.JOBS.values():
        job(stack)
    store = generate_store(SEED)
    write_store(store, stack.data_dir)
    jobs.import_store(stack, stack.data_dir / "db_csv")
    return stack, store, stack.data_dir / "db_csv"


def _pg_rows(settings: Settings, name: str, role: str = "reader") -> list[tuple]:
    t = table(name)
    names = ", ".join(t.schema.model_fields)
    with postgres.connect(settings, role) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT {names} FROM {t.pg} ORDER BY {', '.join(t.key)}")
        return cur.fetchall()


def _as_rows(name: str, models: list) -> list[tuple]:
    t = table(name)
    rows = [tuple(getattr(m, f) for f in t.schema.model_fields) for m in models]
    key_index = [list(t.schema.model_fields).index(k) for k in t.key]
    return sorted(rows, key=lambda r: tuple(r[i] for i in key_index))


def test_migrations_are_idempotent(loaded: tuple) -> None:
    settings, _, _ = loaded
    assert postgres.migrate(settings) == [p.name for p in postgres.migration_files()]
    assert _pg_rows(settings, "store_inventory")  # a second migration keeps the data


def test_every_sql_table_matches_its_model(loaded: tuple) -> None:
    settings, _, _ = loaded
    with postgres.connect(settings, "admin") as conn, conn.cursor() as cur:
        assert postgres.outdated_tables(cur) == []


def test_a_table_of_an_older_version_stops_the_migration_with_what_to_do(loaded: tuple) -> None:
    settings, _, _ = loaded
    with postgres.connect(settings, "admin") as conn, conn.cursor() as cur:
        cur.execute("ALTER TABLE ops.dead_letters ADD COLUMN weight_kg double precision")
    columns = len(table("dead_letters").schema.model_fields)
    try:
        with pytest.raises(SmartShelfError, match=rf"older Smart Shelf \(ops.dead_letters: {columns + 1} columns,"
                                                  rf" expected {columns}\): stop the stack .* delete run/"):
            postgres.migrate(settings)
    finally:
        with postgres.connect(settings, "admin") as conn, conn.cursor() as cur:
            cur.execute("ALTER TABLE ops.dead_letters DROP COLUMN weight_kg")
    with postgres.connect(settings, "admin") as conn, conn.cursor() as cur:
        assert postgres.outdated_tables(cur) == []


def test_every_delta_table_matches_its_model(loaded: tuple) -> None:
    settings, _, _ = loaded
    for t in TABLES:
        if t.delta is None:
            continue
        delta_table = DeltaTable(str(settings.delta_dir / t.delta))
        actual = {f.name: (str(f.type), f.nullable) for f in delta_table.schema().fields}
        expected = arrow_schema(t.schema)
        assert list(actual) == expected.names, t.delta
        assert [n for n in expected.names if actual[n][1] != expected.field(n).nullable] == [], t.delta
    assert jobs.delta_init(settings) == []  # idempotent


def test_every_registry_topic_exists_with_its_settings(loaded: tuple) -> None:
    settings, _, _ = loaded
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        assert {t.name for t in TOPICS} <= adapter.list_topics()
        for t in TOPICS:
            assert len(adapter.partitions_for(t.name)) == t.partitions, t.name
    finally:
        adapter.close()
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap_servers})
    described = admin.describe_configs([ConfigResource(ResourceType.TOPIC, t.name) for t in TOPICS])
    for resource, future in described.items():
        actual = {name: entry.value for name, entry in future.result().items()}
        expected = next(t for t in TOPICS if t.name == resource.name).config()
        assert {name: actual[name] for name in expected} == expected, resource.name
    assert jobs.kafka_init(settings) == []  # idempotent


def test_import_round_trip_gives_the_generated_store(loaded: tuple) -> None:
    settings, store, _ = loaded
    for name in ("store_inventory", "warehouse_inventory", "store_batches", "warehouse_batches", "discounts"):
        assert _pg_rows(settings, name) == _as_rows(name, getattr(store, name)), name
    assert len(_pg_rows(settings, "shelf_policies")) == len(store.store_inventory)


def test_bad_csv_is_rejected_and_nothing_changes(loaded: tuple, scratch_dir: Path) -> None:
    settings, _, csv_dir = loaded
    before = _pg_rows(settings, "store_batches")
    bad = scratch_dir / "bad"
    shutil.copytree(csv_dir, bad)
    lines = (bad / "store_batches.csv").read_text().splitlines()
    fields = lines[5].split(",")
    fields[6] = "2025-02-30"  # expiry_date: no such day
    lines[5] = ",".join(fields)
    (bad / "store_batches.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(SmartShelfError, match=r"store_batches.csv line 6, column expiry_date"):
        jobs.import_store(settings, bad)
    assert _pg_rows(settings, "store_batches") == before


def test_reader_role_cannot_write(loaded: tuple) -> None:
    settings, _, _ = loaded
    with pytest.raises(psycopg2.errors.InsufficientPrivilege):
        with postgres.connect(settings, "reader") as conn, conn.cursor() as cur:
            cur.execute("DELETE FROM ref.store_inventory")


def test_cli_import_of_a_missing_folder_is_one_clear_line(loaded: tuple) -> None:
    settings, _, _ = loaded
    result = subprocess.run([SMARTSHELF, "data", "import", "--csv-dir", "/nonexistent"],
                            env=settings_env(settings), capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.startswith("error: missing store_inventory_final.csv in /nonexistent")
    assert "Traceback" not in result.stderr
