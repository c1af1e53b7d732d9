"""One-shot jobs of the stack: migrate PostgreSQL, create topics, bootstrap Delta, import the store.

`smartshelf up` runs them after the servers are healthy; compose runs each as its own init service.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from smartshelf.adapters import delta, postgres
from smartshelf.adapters.kafka import KafkaAdapter, TopicConfig
from smartshelf.datagen import generate_chain, write_chain
from smartshelf.errors import SmartShelfError
from smartshelf.policies import DEFAULT_POLICY_FILE, ConfigTables, derive_config, load_policy_config
from smartshelf.registry import TOPICS, table
from smartshelf.settings import Settings
from smartshelf.store import REFERENCE_FILES, StoreData, clock_start
from smartshelf.store_csv import chain_csv_dirs, read_chain_csvs


def db_init(settings: Settings) -> list[str]:
    return postgres.migrate(settings)


def kafka_init(settings: Settings) -> list[str]:
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        return adapter.ensure_topics(TopicConfig(
            t.name, t.partitions_for_stores(settings.stores, settings.stores_per_partition), t.compacted, t.config())
            for t in TOPICS)
    finally:
        adapter.close()


def delta_init(settings: Settings) -> list[str]:
    return delta.bootstrap(settings.delta_dir)


DEFAULT_STORE_SEED = 42
CONFIG_TABLES = ("shelf_policies", "wh_policies", "batch_catalog", "shelf_profiles")


def store_init(settings: Settings) -> list[str]:
    """Load the stores unless they are loaded: the CSVs under data/db_csv (one store's, or a chain's: one folder per
    store), generated (seed 42: the one store, or a chain of STORES) if there are none."""
    if store_is_imported(settings):
        return []
    csv_dir = settings.data_dir / "db_csv"
    if not csv_dir.is_dir() or not chain_csv_dirs(csv_dir, settings.store_id):
        write_chain(generate_chain(DEFAULT_STORE_SEED, settings.stores), settings.data_dir)
    summary = import_store(settings, csv_dir)
    return [f"{name}: {count} rows" for name, count in summary.rows.items()]


# in run order: the store import needs the migrated database
JOBS: dict[str, Callable[[Settings], list[str]]] = {
    "db-init": db_init,
    "kafka-init": kafka_init,
    "delta-init": delta_init,
    "store-init": store_init,
}


@dataclass(frozen=True)
class ImportSummary:
    stores: list[str]
    rows: dict[str, int]  # per table, the whole chain's
    seconds: float


def import_store(settings: Settings, csv_dir: Path, policy_file: Path = DEFAULT_POLICY_FILE) -> ImportSummary:
    """Validate every CSV row of every store csv_dir holds (smartshelf.store_csv.read_chain_csvs), then replace
    ref.* (every store's) and config.* (the running stores': STORES) in one transaction: all or nothing."""
    began = time.monotonic()
    chain = read_chain_csvs(csv_dir, settings.store_id)
    missing = [store_id for store_id in settings.running_stores if store_id not in chain]
    if missing:
        what = "STORE_ID is" if settings.stores == 1 else f"STORES={settings.stores} runs"
        raise SmartShelfError(f"{what} {', '.join(missing)}, which {csv_dir} does not hold (its stores: "
                              f"{', '.join(chain)}): set STORE_ID/STORES to stores it holds, or generate a chain "
                              "with `smartshelf data generate --stores N`")
    policies = load_policy_config(policy_file)
    configs = [derive_config(chain[store_id], policies) for store_id in settings.running_stores]
    # the config tables hold the running stores' policies
    contents = {name: [row for config in configs for row in getattr(config, name)] for name in CONFIG_TABLES}
    with postgres.connect(settings, "app") as conn, conn.cursor() as cur:
        # each reference file's StoreData attribute is also its registry table's name
        for file in REFERENCE_FILES:
            postgres.replace_chain_rows(cur, table(file.attr),
                                        {store_id: getattr(store, file.attr) for store_id, store in chain.items()})
        for name, rows in contents.items():
            postgres.replace_rows(cur, table(name), rows)
    ref_rows = {file.attr: sum(len(getattr(store, file.attr)) for store in chain.values()) for file in REFERENCE_FILES}
    return ImportSummary(list(chain), {**ref_rows, **{name: len(rows) for name, rows in contents.items()}},
                         time.monotonic() - began)


def store_is_imported(settings: Settings) -> bool:
    """Whether every store the twin runs is imported (its reference data and its config)."""
    with postgres.connect(settings, "app") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(DISTINCT store_id) FROM config.shelf_profiles WHERE store_id = ANY(%s)",
                    (settings.running_stores,))
        (imported,) = cur.fetchone()
    return int(imported) == len(settings.running_stores)


def load_store(settings: Settings, store_id: str | None = None) -> StoreData:
    """A running store (STORE_ID unless named), back from the ref tables (what the producers start its world
    from)."""
    store_id = store_id or settings.store_id
    with postgres.connect(settings, "app") as conn, conn.cursor() as cur:
        store = StoreData(**{file.attr: postgres.select_rows(cur, table(file.attr), store_id=store_id)
                             for file in REFERENCE_FILES}, store_id=store_id)
    if not store.store_inventory:
        raise SmartShelfError(f"store {store_id} is not loaded: run `smartshelf data import --csv-dir DIR` (or "
                              "`smartshelf up`); `smartshelf data generate --stores N` makes a chain")
    return store


def load_stores(settings: Settings) -> dict[str, StoreData]:
    """Every store the twin runs (STORES), by id, in order."""
    return {store_id: load_store(settings, store_id) for store_id in settings.running_stores}


def with_clock_start(settings: Settings) -> Settings:
    """The settings with SIM_START moved to the loaded store's first day if its data was made later
    (smartshelf.store.clock_start); every service started with them starts the world at the same time."""
    return settings.model_copy(update={"sim_start": clock_start(load_store(settings), settings.sim_start)})


def load_config(settings: Settings, store_id: str | None = None) -> ConfigTables:
    """A running store's (STORE_ID unless named) policies, batch catalog and shelf profiles, back from the config
    tables."""
    with postgres.connect(settings, "app") as conn, conn.cursor() as cur:
        return ConfigTables(**{name: postgres.select_rows(  # type: ignore[arg-type]
            cur, table(name), store_id=store_id or settings.store_id) for name in CONFIG_TABLES})
