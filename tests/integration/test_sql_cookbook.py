"""Every query of docs/sql-cookbook.md runs, as the read-only role, and answers what it says."""

from __future__ import annotations

import re
from datetime import date, datetime
from pathlib import Path

import pytest

from smartshelf.adapters import postgres
from smartshelf.registry import table
from smartshelf.runtime import jobs
from smartshelf.schemas import (
    FIRST_STORE, Alert, PosTransactionItemRow, PosTransactionRow, ShelfBatchState, ShelfState, SupplierOrder,
    WarehouseBatchState,
)
from smartshelf.settings import Settings

COOKBOOK = Path(__file__).resolve().parents[2] / "docs" / "sql-cookbook.md"
DAY = datetime(2025, 1, 1, 9, 0)


def cookbook_queries() -> dict[str, str]:
    text = COOKBOOK.read_text()
    return dict(re.findall(r"^### ([a-z-]+)\n.*?```sql\n(.*?)```", text, flags=re.S | re.M))


SECOND = "store-002"


@pytest.fixture(scope="module")
def db(stack: Settings) -> Settings:
    """A loaded chain of two stores plus a little live state of each, as the mirror would write it: the first
    store's is what the queries answer about (STORE_ID), the second's must not leak into it."""
    for job in jobs.JOBS.values():
        job(stack)
    from smartshelf.datagen import generate_chain, write_chain

    chain = generate_chain(5, 2)
    store = chain[FIRST_STORE]
    write_chain(chain, stack.data_dir / "cookbook")
    jobs.import_store(stack.model_copy(update={"stores": 2}), stack.data_dir / "cookbook" / "db_csv")
    first, second = store.store_inventory[0], store.store_inventory[1]
    states = [
        ShelfState(shelf_id=first.shelf_id, current_stock=0, current_weight=0,
                   last_event_type="pickup", last_event_ts=DAY),
        ShelfState(shelf_id=second.shelf_id, current_stock=second.maximum_stock,
                   current_weight=second.maximum_stock * second.item_weight,
                   last_event_type="putback", last_event_ts=DAY),
    ]
    lots = [ShelfBatchState(shelf_id=b.shelf_id, batch_code=b.batch_code, received_date=b.received_date,
                            expiry_date=b.expiry_date, batch_quantity_store=b.batch_quantity_store,
                            last_update_ts=DAY) for b in store.store_batches]
    wh_lots = [WarehouseBatchState(shelf_id=b.shelf_id, batch_code=b.batch_code, received_date=b.received_date,
                                   expiry_date=b.expiry_date, batch_quantity_warehouse=b.batch_quantity_warehouse,
                                   last_update_ts=DAY) for b in store.warehouse_batches]
    order = SupplierOrder(order_id="O1", plan_id="P1", shelf_id=first.shelf_id, batches=2, quantity=24,
                          ordered_ts=DAY, expected_delivery_ts=datetime(2025, 1, 3, 7), status="open")
    alerts = [Alert(alert_id=f"A{i}", alert_type="out_of_stock", location="store", severity="critical",
                    shelf_id=first.shelf_id, message="empty", ts=DAY) for i in range(2)]
    sale = PosTransactionRow(transaction_id="T1", customer_id="C1", ts=DAY, item_count=1, total=3.0)
    item = PosTransactionItemRow(transaction_id="T1", line_no=1, shelf_id=second.shelf_id, quantity=2,
                                 unit_price=1.5, discount=0.0, line_total=3.0)
    # the other store: its own empty shelf of the same id, an alert, an order and a sale of the same ids
    other = {"store_id": SECOND}
    states.append(states[0].model_copy(update={**other, "shelf_id": second.shelf_id}))
    alerts.append(alerts[0].model_copy(update=other))
    content = {"shelf_state": states, "shelf_batch_state": lots, "wh_batch_state": wh_lots,
               "wh_supplier_orders": [order, order.model_copy(update=other)], "alerts": alerts,
               "pos_transactions": [sale, sale.model_copy(update={**other, "total": 10.0})],
               "pos_transaction_items": [item, item.model_copy(update=other)]}
    with postgres.connect(stack, "app") as conn, conn.cursor() as cur:
        for name, rows in content.items():
            postgres.replace_rows(cur, table(name), rows)
    return stack


def run(settings: Settings, name: str, store_id: str | None = None) -> list[tuple]:
    """A query's rows, of STORE_ID's store or (as the cookbook says) of the store the session sets."""
    with postgres.connect(settings, "reader") as conn, conn.cursor() as cur:
        if store_id is not None:
            cur.execute("SELECT set_config('smartshelf.store_id', %s, false)", (store_id,))
        cur.execute(cookbook_queries()[name])
        return cur.fetchall()


def test_cookbook_lists_the_manager_questions() -> None:
    assert set(cookbook_queries()) == {"stock-below-threshold", "expiring-lots", "open-supplier-orders",
                                       "alert-history", "shelf-alert-timeline", "top-sellers", "kpis-per-hour",
                                       "chain-overview"}


def test_stock_below_threshold_finds_the_empty_shelf_not_the_full_one(db: Settings) -> None:
    rows = run(db, "stock-below-threshold")
    shelves = [r[0] for r in rows]
    assert shelves[0] == "BEVWAT0001" and rows[0][3] == 0  # the store's first two shelves
    assert "BEVWAT0002" not in shelves


def test_expiring_lots_are_within_three_days_and_sorted(db: Settings) -> None:
    rows = run(db, "expiring-lots")
    assert rows, "the generated store has lots expiring in its first days"
    assert all(r[3] <= date(2025, 1, 4) and r[4] > 0 for r in rows)
    assert [r[3] for r in rows] == sorted(r[3] for r in rows)


def test_open_supplier_orders(db: Settings) -> None:
    assert [(r[0], r[1], r[4]) for r in run(db, "open-supplier-orders")] == [("O1", "BEVWAT0001", 24)]


def test_alert_history_and_timeline(db: Settings) -> None:
    assert run(db, "alert-history") == [(date(2025, 1, 1), "store", "out_of_stock", 2, 1)]
    assert len(run(db, "shelf-alert-timeline")) == 2
    assert run(db, "alert-history", SECOND) == [(date(2025, 1, 1), "store", "out_of_stock", 1, 1)]


def test_a_query_takes_the_store_the_session_sets(db: Settings) -> None:
    assert [(r[0], r[1]) for r in run(db, "open-supplier-orders", SECOND)] == [("O1", "BEVWAT0001")]
    assert [r[0] for r in run(db, "stock-below-threshold", SECOND)][:1] == ["BEVWAT0002"]  # its own empty shelf
    assert [(r[0], r[3]) for r in run(db, "top-sellers", SECOND)] == [("BEVWAT0002", 2)]


def test_the_chain_overview_has_a_row_per_store(db: Settings) -> None:
    rows = run(db, "chain-overview")
    assert [(r[0], r[2], r[3], r[4], float(r[5])) for r in rows] == [(FIRST_STORE, 1, 1, 1, 3.0),
                                                                      (SECOND, 1, 1, 1, 10.0)]
    assert all(r[1] > 1000 for r in rows)  # every shelf of each store


def test_top_sellers(db: Settings) -> None:
    rows = run(db, "top-sellers")
    assert [(r[0], r[3]) for r in rows] == [("BEVWAT0002", 2)]


def test_kpis_per_hour_count_the_sale_and_the_stock_outs(db: Settings) -> None:
    hour = DAY.replace(minute=0, second=0, microsecond=0)
    # (hour, transactions, units, revenue, discounted units, stock-outs, wasted, entries, people in store)
    assert run(db, "kpis-per-hour") == [(hour, 1, 2, 3.0, 0, 2, 0, 0, 0)]


def test_shelf_weights_are_checked_against_stock_times_item_weight(db: Settings) -> None:
    from smartshelf.runtime.mirror import shelf_weight_mismatches

    assert shelf_weight_mismatches(db) == []
    with postgres.connect(db, "app") as conn, conn.cursor() as cur:
        cur.execute("UPDATE state.shelf_state SET current_weight = current_weight + 1 "
                    f"WHERE store_id = '{FIRST_STORE}' AND shelf_id = 'BEVWAT0002'")
    try:
        (mismatch,) = shelf_weight_mismatches(db)
        assert mismatch.startswith(f"{FIRST_STORE} BEVWAT0002: weight ")
    finally:
        with postgres.connect(db, "app") as conn, conn.cursor() as cur:
            cur.execute("UPDATE state.shelf_state SET current_weight = current_weight - 1"
                        f" WHERE store_id = '{FIRST_STORE}' AND shelf_id = 'BEVWAT0002'")
