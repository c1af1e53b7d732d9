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
from smartshelf.datagen import generate_chain, generate_store, write_chain, write_store
from smartshelf.errors import SmartShelfError
from smartshelf.registry import TABLES, TOPICS, table
from smartshelf.runtime import jobs
from smartshelf.settings import Settings
from smartshelf.store import REFERENCE_FILES, StoreData
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
    assert result.stderr.startswith("error: /nonexistent is not a folder")
    assert "Traceback" not in result.stderr


def _store_rows(settings: Settings, name: str) -> dict[str, list[tuple]]:
    """A chain table's rows per store, each store's in key order."""
    t = table(name)
    with postgres.connect(settings, "reader") as conn, conn.cursor() as cur:
        cur.execute(f"SELECT store_id, {', '.join(t.schema.model_fields)} FROM {t.pg} "
                    f"ORDER BY {', '.join(t.pg_key)}")
        rows: dict[str, list[tuple]] = {}
        for store_id, *values in cur.fetchall():
            rows.setdefault(store_id, []).append(tuple(values))
    return rows


def test_a_chains_import_holds_every_store_and_the_stack_runs_the_one_of_store_id(
        loaded: tuple, scratch_dir: Path) -> None:
    settings, store, csv_dir = loaded
    chain = generate_chain(SEED, 3)
    write_chain(chain, scratch_dir / "chain")
    try:
        summary = jobs.import_store(settings, scratch_dir / "chain" / "db_csv")
        assert summary.stores == ["store-001", "store-002", "store-003"]
        for name in ("store_inventory", "warehouse_inventory", "store_batches", "warehouse_batches", "discounts"):
            assert _store_rows(settings, name) == {
                store_id: _as_rows(name, getattr(data, name)) for store_id, data in chain.items()
                if getattr(data, name)}, name
        assert summary.rows["store_inventory"] == sum(len(data.store_inventory) for data in chain.values())
        # the policies and the stack's store are STORE_ID's; another STORE_ID loads its own store
        assert len(_pg_rows(settings, "shelf_policies")) == len(chain["store-001"].store_inventory)
        for store_id in ("store-001", "store-003"):
            loaded_store = jobs.load_store(settings.model_copy(update={"store_id": store_id}))
            for file in REFERENCE_FILES:
                assert _as_rows(file.attr, getattr(loaded_store, file.attr)) == _as_rows(
                    file.attr, getattr(chain[store_id], file.attr)), (store_id, file.attr)
        # the view's fallback reads the running store's snapshot: one row per shelf, its stock
        with postgres.connect(settings, "reader") as conn, conn.cursor() as cur:
            cur.execute("SELECT shelf_id, current_stock FROM state.v_shelf_stock ORDER BY shelf_id")
            view = cur.fetchall()
        live = {row[0] for row in _pg_rows(settings, "shelf_state")}
        first = {row.shelf_id: row.current_stock for row in chain["store-001"].store_inventory}
        assert [shelf for shelf, _ in view] == sorted(first)
        assert {shelf: stock for shelf, stock in view if shelf not in live} == {
            shelf: stock for shelf, stock in first.items() if shelf not in live}
        elsewhere = settings.model_copy(update={"store_id": "store-009"})
        with pytest.raises(SmartShelfError, match=r"STORE_ID is store-009, which .* does not hold \(its stores: "
                                                  r"store-001, store-002, store-003\)"):
            jobs.import_store(elsewhere, scratch_dir / "chain" / "db_csv")
        assert set(_store_rows(settings, "store_inventory")) == set(chain)  # nothing changed
        # a chain of three stores running: the config of each (store-init imports again until every one is there)
        running_three = settings.model_copy(update={"stores": 3})
        assert not jobs.store_is_imported(running_three)
        jobs.import_store(running_three, scratch_dir / "chain" / "db_csv")
        assert jobs.store_is_imported(running_three)
        assert len(_pg_rows(settings, "shelf_policies")) == sum(len(data.store_inventory) for data in chain.values())
    finally:
        jobs.import_store(settings, csv_dir)
    assert _pg_rows(settings, "store_inventory") == _as_rows("store_inventory", store.store_inventory)
