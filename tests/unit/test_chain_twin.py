"""A chain of stores in one twin (issue 22), without servers: every record of a store says so and is keyed by it; the
keyed loop's buckets are a store's (store, bucket), so two stores with the same shelf ids run side by side as each
runs alone, and what a store's bucket publishes is that store's; a store's world stamps its events; a store's topics
are partitioned by the chain's size; the settings refuse a STORE_ID outside the stores they run."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from smartshelf import loop
from smartshelf.datagen import generate_store
from smartshelf.policies import derive_config, load_policy_config, warehouse_capacity
from smartshelf.registry import STORE_COLUMN, TOPICS, topic
from smartshelf.schemas import FIRST_STORE, ShelfEvent
from smartshelf.settings import Settings
from smartshelf.store import StoreData
from smartshelf.streaming.keyed import KeyedRecord, OutputRow, bucket_of
from smartshelf.streaming.keyed_loop import (RECORD, DailyDiscountManager, KeyedLoopApp, LotsView, RemovalScheduler,
                                             apply_views, opening_views)
from smartshelf.world import World

T0 = datetime(2025, 1, 1)
SECOND = "store-002"
ONE = generate_store(42)
TWIN = dataclasses.replace(ONE, store_id=SECOND)  # the same shelves, lots and ids: the worst case for keys


def _apps(stores: list[StoreData]) -> list[KeyedLoopApp]:
    apps: list[KeyedLoopApp] = [DailyDiscountManager(), RemovalScheduler()]
    settings = Settings(STORE_OPS_HOUR=6)
    for app in apps:
        for store in stores:
            config = loop.StoreConfig.from_tables(derive_config(store, load_policy_config()), warehouse_capacity(store))
            app.start(config, settings, store.store_id)
    return apps


def _lot_batches(store: StoreData) -> list[list[tuple[str, KeyedRecord]]]:
    """Three days of a store's shelf lots changing stock (some to none), with a tick each hour ("" is a tick's
    group): near-expiry discounts and removals of expired lots follow."""
    opened = opening_views(_apps([store]), store, T0, 1)[0]
    lots = sorted(LotsView.model_validate_json(opened[RemovalScheduler.name]).shelf_lots.values(),
                  key=lambda lot: (lot.shelf_id, lot.batch_code))
    rng, batches, offset = random.Random(5), [], 0
    for hour in range(72):
        at, batch = T0 + timedelta(hours=hour), []
        for lot in rng.sample(lots, 5):
            offset += 1
            changed = lot.model_copy(update={"batch_quantity_store": rng.choice([0, 1, 5]), "last_update_ts": at})
            record = KeyedRecord("shelf_batch_state", 0, offset, changed.model_dump_json().encode())
            batch.append((lot.shelf_id, record))
        offset += 1
        tick = f'{{"tick_id":"t{offset}","ts":"{at.isoformat()}"}}'.encode()
        batches.append([*batch, ("", KeyedRecord("clock_ticks", 0, offset, tick))])
    return batches


def _run(stores: list[StoreData], buckets: int) -> dict[str, list[OutputRow]]:
    """Each store's batches through its own buckets, (store, bucket) as the keyed query groups them; a tick goes to
    every store's buckets. Returns the output rows by the store whose bucket gave them."""
    apps = _apps(stores)
    views = {(store.store_id, bucket): views for store in stores
             for bucket, views in opening_views(apps, store, T0, buckets).items()}
    out: dict[str, list[OutputRow]] = {store.store_id: [] for store in stores}
    for store in stores:
        for batch in _lot_batches(store):
            for bucket in range(buckets):
                mine = [(g, r) for g, r in batch if not g or bucket_of(g, buckets) == bucket]
                out[store.store_id] += apply_views(apps, views.setdefault((store.store_id, bucket), {}), mine,
                                                   store.store_id)[1]
    return out


def _as_store(row: OutputRow, store_id: str) -> tuple[str, str, str, str]:
    """An output row as another store's bucket would give it: the record's store and key are that store's."""
    app, kind, name, _, _, key, value, _ = row
    assert value is not None
    record = topic(name).schema.model_validate_json(value)
    moved = record.model_copy(update={STORE_COLUMN: store_id})
    return app, kind, topic(name).key_of(moved), moved.model_dump_json()


@pytest.mark.parametrize("buckets", [1, 8])
def test_two_stores_with_the_same_shelves_run_side_by_side_as_each_runs_alone(buckets: int) -> None:
    alone = _run([ONE], buckets)[FIRST_STORE]
    chain = _run([ONE, TWIN], buckets)
    assert Counter(row[1] for row in alone) == Counter({RECORD: len(alone)})  # records only, no letters
    assert Counter(row[2] for row in alone)["shelf_events"] and Counter(row[2] for row in alone)["alerts"]
    assert Counter(chain[FIRST_STORE]) == Counter(alone)  # the other store changes nothing of the first
    # the second store did what the first did, as its own: every record and key names it
    assert Counter(_as_store(row, SECOND) for row in chain[SECOND]) == Counter(_as_store(row, SECOND) for row in alone)
    for row in chain[SECOND]:
        assert row[5].startswith(f"{SECOND}|")
        assert row[6] is not None
        assert topic(row[2]).schema.model_validate_json(row[6]).store_id == SECOND  # type: ignore[attr-defined]


def test_a_stores_world_stamps_its_events_and_its_seed_makes_them() -> None:
    day = T0 + timedelta(hours=12)
    first, first_events = World(ONE, 42).advance(World(ONE, 42).initial_state(T0), day)
    second, second_events = World(TWIN, 42).advance(World(TWIN, 42).initial_state(T0), day)
    assert len(first_events) > 100 and first == second  # the same store and seed: the same world
    for theirs, mine in zip(first_events.by_topic().values(), second_events.by_topic().values(), strict=True):
        assert {e.store_id for e in theirs} == {FIRST_STORE} and {e.store_id for e in mine} == {SECOND}
        assert [e.model_copy(update={STORE_COLUMN: SECOND}) for e in theirs] == mine


def test_a_stores_topics_get_a_partition_per_few_stores_and_the_others_keep_theirs() -> None:
    shelf_events, ticks, tills = topic("shelf_events"), topic("clock_ticks"), topic("pos_transactions")
    assert shelf_events.partitions_for_stores(1, 4) == shelf_events.partitions == 2
    assert shelf_events.partitions_for_stores(8, 4) == 2 and shelf_events.partitions_for_stores(9, 4) == 3
    assert tills.partitions_for_stores(1, 4) == 1 and tills.partitions_for_stores(500, 4) == 125
    assert ticks.partitions_for_stores(500, 4) == ticks.partitions  # a tick is every store's: one order for all
    assert tills.key == (STORE_COLUMN,)  # a store's sales stay in the till's order, in one partition
    assert all(t.partitions_for_stores(1, 4) == t.partitions for t in TOPICS)  # one store: as before


def test_a_record_of_a_store_is_keyed_and_named_by_it() -> None:
    event = ShelfEvent(store_id=SECOND, event_id="e1", event_type="pickup", shelf_id="S1", quantity=1,
                       weight_change=-5.0, customer_id="C1", ts=T0)
    assert topic("shelf_events").key_of(event) == f"{SECOND}|S1" and topic("shelf_events").id_of(event) == \
        f"{SECOND}|e1"
    assert topic("shelf_events").local_key_of(event) == "S1"
    assert ShelfEvent.model_validate_json(event.model_dump_json(exclude={"store_id"})).store_id == FIRST_STORE
    with pytest.raises(ValidationError):
        ShelfEvent.model_validate({**event.model_dump(), "store_id": "Store 2"})


def test_the_settings_run_store_id_alone_or_the_first_stores_of_a_chain() -> None:
    assert Settings().running_stores == [FIRST_STORE]
    assert Settings(STORE_ID=SECOND).running_stores == [SECOND]
    assert Settings(STORES=3, STORE_ID=SECOND).running_stores == [FIRST_STORE, SECOND, "store-003"]
    with pytest.raises(ValidationError, match="STORE_ID store-009 is not among the 3 stores"):
        Settings(STORES=3, STORE_ID="store-009")


def test_the_keyed_processor_carries_no_store_s_config_each_worker_loads_its_own(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Spark pickles the processor into the query's command, and sends a command over 1 MB as a broadcast variable
    that transformWithState's driver-side runner cannot read (a chain of four stores did not start): the configs
    stay out of it, written beside the checkpoint, and a worker loads a store's on its first loop records."""
    from pyspark import cloudpickle

    from smartshelf.streaming.keyed_query import KeyedStateProcessor, opening_config, write_opening_configs

    chain = [dataclasses.replace(ONE, store_id=f"store-00{n}") for n in range(1, 5)]
    sizes = []
    for stores in (chain[:1], chain):
        apps = _apps(stores)
        configs = write_opening_configs(tmp_path / "keyed", apps[0].configs)
        sizes.append(len(cloudpickle.dumps(KeyedStateProcessor([], apps, configs))))
        assert all(app.configs for app in apps)  # the driver's apps keep theirs
    assert sizes[0] == sizes[1] < 100_000, sizes  # (with the configs: 0.43 MB a store)
    first = opening_config(configs, "store-003")
    assert first == _apps(chain)[0].config_of("store-003") and opening_config(configs, "store-003") is first
    configs = write_opening_configs(tmp_path / "keyed", {"store-003": loop.StoreConfig({}, {}, {}, {}, {})})
    assert opening_config(configs, "store-003").profiles == {}  # written anew at a start: read anew


def test_the_scale_chart_plots_wall_time_against_stores() -> None:
    from smartshelf.bench import scale_chart

    chart = scale_chart([{"stores": 1, "wall_s": 360.4}, {"stores": 2, "wall_s": 401.0}, {"stores": 4, "wall_s": 600}])
    assert chart.startswith("xychart-beta\n")
    assert 'x-axis "stores" [1, 2, 4]' in chart and "bar [360, 401, 600]" in chart and "0 --> 661" in chart


def test_the_500_store_estimate_is_the_runs_growth_per_store_over_a_real_day() -> None:
    """Runs that grow exactly linearly: the estimate's per-store-day figures are the slopes, the fixed part the
    intercept, the real-time rates the slopes times the stores over a day's seconds."""
    from smartshelf.bench import DAY_S, chain_estimate

    def run(stores: int) -> dict[str, object]:
        return {"stores": stores, "events": 25_000 * stores,
                "topic_records": {"shelf_events": 20_000 * stores, "alerts": 700 * stores, "clock_ticks": 25},
                "postgres_rows": {"ops.pos_transactions": 1_500 * stores, "ops.pos_transaction_items": 8_500 * stores},
                "cpu_s": {"spark": 400.0 + 40.0 * stores, "kafka": 45.0 + 2.0 * stores}}

    estimate = chain_estimate([run(1), run(2), run(4), run(8)], stores=500)
    assert estimate["per_store_day"] == {"events": 25_000, "topic_records": 20_700, "postgres_writes": 700 + 10_000,
                                         "cpu_s": {"kafka": 2.0, "spark": 40.0}}
    assert estimate["per_run_whatever_the_stores_cpu_s"] == {"kafka": 45.0, "spark": 400.0}
    real_time = estimate["real_time"]
    assert real_time["events_per_s"] == round(25_000 * 500 / DAY_S, 2)  # type: ignore[index]
    assert real_time["postgres_writes_per_s"] == round(10_700 * 500 / DAY_S, 2)  # type: ignore[index]
    assert real_time["cores_for_the_stores_work"]["spark"] == round(40 * 500 / DAY_S, 2)  # type: ignore[index]
    assert list(real_time["busiest_topics_records_per_s"])[:2] == ["shelf_events", "alerts"]  # type: ignore[index]


def test_the_tick_cost_is_measured_per_store_and_per_group() -> None:
    from smartshelf.bench import tick_cost

    found = tick_cost(buckets=(4, 1), ticks=2)
    assert list(found) == ["4_buckets", "1_buckets"]
    assert all(cost["ms_per_store_tick"] > 0 for cost in found.values())
    assert found["4_buckets"]["ms_per_group"] < found["4_buckets"]["ms_per_store_tick"]


def test_a_process_trees_cpu_time_counts_its_descendants_but_those_apart() -> None:
    import os
    import subprocess
    import sys
    import time

    from smartshelf.runtime import supervisor

    burner = subprocess.Popen([sys.executable, "-c", "import time\nend = time.process_time() + 0.5\n"
                               "while time.process_time() < end: pass\ntime.sleep(30)"])
    try:
        deadline = time.monotonic() + 20
        while supervisor.cpu_s(burner.pid) < 0.45 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert supervisor.cpu_s(burner.pid) >= 0.45
        # the tree counts the running child, unless it is apart
        with_child, without = supervisor.cpu_s(os.getpid()), supervisor.cpu_s(os.getpid(), frozenset({burner.pid}))
        assert with_child - without >= 0.4
    finally:
        burner.kill()
        burner.wait()
