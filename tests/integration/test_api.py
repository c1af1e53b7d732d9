"""The live API against a real stack (Apache Kafka, PostgreSQL, Redis, Kafka Connect, the API as its own
process): REST answers with meta and the alert engines' levels, 422s that name the field, records published to
Kafka reach 50 WebSocket clients identically and PostgreSQL's REST view, a stalled client is dropped while the
others get everything, and /health follows PostgreSQL going down and coming back."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import httpx
import pytest
from pydantic import BaseModel
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from smartshelf.adapters import postgres
from smartshelf.adapters.kafka import KafkaAdapter, Outgoing
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.api.feed import SLOW_CLIENT_CLOSE_CODE
from smartshelf.datagen import generate_chain
from smartshelf.loop import StoreConfig, shelf_level, warehouse_level
from smartshelf.registry import table, topic
from smartshelf.runtime import jobs, supervisor
from smartshelf.runtime.scratch import make_run_dir
from smartshelf.schemas import (
    Alert, FootTrafficEvent, PosItem, PosTransaction, PosTransactionItemRow, PosTransactionRow, ShelfBatchState,
    ShelfEvent, ShelfRestockPlan, ShelfState, SupplierOrder, WarehouseBatchState, WarehouseEvent, WarehouseState,
    WarehouseSupplierPlan,
)
from smartshelf.settings import Settings
from tests.conftest import initialised_stack, isolated_settings

pytestmark = pytest.mark.integration

SIM_NOW = datetime(2025, 1, 1, 10, 30)
CLIENTS = 50
WS_QUEUE = 1000  # API_WS_QUEUE: a stalled client overflows after ~2,000 events (queue and socket buffers)


@pytest.fixture(scope="module")
def api() -> Iterator[Settings]:
    run_dir = make_run_dir("smartshelf-api-")
    settings = isolated_settings(run_dir, api_ws_queue=WS_QUEUE, stores=2)  # a chain of two: STORE_ID is the first
    try:
        with initialised_stack(settings):
            SimClock(redis_client(settings)).set(SIM_NOW)
            supervisor.start(settings, ["connect", "api"])
            yield settings
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _url(settings: Settings, path: str, scheme: str = "http") -> str:
    return f"{scheme}://127.0.0.1:{settings.api_port}{path}"


def _get(settings: Settings, path: str, **params: object) -> httpx.Response:
    return httpx.get(_url(settings, path), params=params, timeout=30)


def _alerts(count: int, prefix: str) -> list[Alert]:
    return [Alert(alert_id=f"{prefix}-{i:05d}", alert_type="low_stock", location="store", severity="warning",
                  shelf_id=f"TEST{i % 7:04d}", message=f"test alert {i}", value=float(i), threshold=10.0,
                  ts=SIM_NOW + timedelta(seconds=i)) for i in range(count)]


def _publish(settings: Settings, records: Sequence[BaseModel], topic_name: str) -> None:
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    producer = kafka.producer()
    try:
        producer.send_and_wait([Outgoing(topic_name, topic(topic_name).key_of(r).encode(),
                                         r.model_dump_json().encode()) for r in records])
    finally:
        producer.close()
        kafka.close()


async def _subscribed(settings: Settings, query: str, **options: object) -> ClientConnection:
    client = await connect(_url(settings, f"/ws/events?{query}", "ws"), **options)  # type: ignore[arg-type]
    hello = json.loads(await client.recv())
    assert hello["type"] == "subscribed", hello
    return client


async def _receive(client: ClientConnection, count: int, timeout_s: float = 60.0) -> list[dict[str, object]]:
    events = []
    async with asyncio.timeout(timeout_s):
        while len(events) < count:
            events.append(json.loads(await client.recv()))
    return events


# --- REST -----------------------------------------------------------------------------------------------
def test_shelves_page_through_the_store_with_the_alert_engines_levels(api: Settings) -> None:
    config = StoreConfig.from_tables(jobs.load_config(api))
    seen: dict[str, dict[str, object]] = {}
    offset = 0
    while True:
        answer = _get(api, "/shelves", limit=400, offset=offset)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["meta"]["query_ms"] > 0 and body["meta"]["sim_time"] == SIM_NOW.isoformat()
        assert body["meta"]["total"] == len(config.profiles)
        ids = [row["shelf_id"] for row in body["data"]]
        assert ids == sorted(ids) and body["meta"]["count"] == len(ids)  # the query's order, kept by json_agg
        seen.update({row["shelf_id"]: row for row in body["data"]})
        offset += 400
        if offset >= body["meta"]["total"]:
            break
    assert seen.keys() == config.profiles.keys()
    for shelf_id, row in seen.items():
        assert row["level"] == shelf_level(row["current_stock"], config.shelf_policies[shelf_id],
                                           config.profiles[shelf_id]), shelf_id

    low = _get(api, "/shelves", level="low", limit=1000).json()
    assert {r["shelf_id"] for r in low["data"]} == {s for s, r in seen.items() if r["level"] == "low"}
    category = next(iter(seen.values()))["item_category"]
    in_category = _get(api, "/shelves", category=category, limit=1000).json()["data"]
    assert in_category and {r["shelf_id"] for r in in_category} == {
        s for s, r in seen.items() if r["item_category"] == category}

    items = _get(api, "/warehouse/items", limit=1000, offset=0).json()
    for row in items["data"]:
        assert row["level"] == warehouse_level(row["wh_current_stock"], config.wh_policies[row["shelf_id"]])


def test_a_shelf_has_its_lots_and_an_unknown_shelf_is_404(api: Settings) -> None:
    shelf_id = _get(api, "/shelves", limit=1).json()["data"][0]["shelf_id"]
    answer = _get(api, f"/shelves/{shelf_id}")
    assert answer.status_code == 200, answer.text
    body = answer.json()["data"]
    assert body["shelf_id"] == shelf_id and isinstance(body["lots"], list)
    assert {"recent_alerts", "recent_warehouse_moves", "recent_sales"} <= body.keys()
    missing = _get(api, "/shelves/NOSUCHSHELF")
    assert missing.status_code == 404 and "NOSUCHSHELF" in missing.json()["detail"]
    store = _get(api, "/stores").json()
    assert store["data"][0]["store_id"] == api.store_id and store["data"][0]["shelves"] == len(
        StoreConfig.from_tables(jobs.load_config(api)).profiles)


def test_of_a_chain_the_api_answers_for_store_id_and_by_default_for_the_first(api: Settings) -> None:
    # the stack runs seed 42's chain of two (store-init imported both): STORE_ID is its first store
    chain = generate_chain(jobs.DEFAULT_STORE_SEED, 2)
    own = {row.shelf_id for row in chain["store-001"].store_inventory}
    second = {row.shelf_id for row in chain["store-002"].store_inventory}
    elsewhere = sorted(second - own)
    assert _get(api, "/shelves", limit=1).json()["meta"]["total"] == len(own)
    assert _get(api, "/warehouse/items", limit=1).json()["meta"]["total"] == len(own)
    assert _get(api, f"/shelves/{elsewhere[0]}").status_code == 404
    assert _get(api, "/shelves", limit=1, store_id="store-002").json()["meta"]["total"] == len(second)
    assert _get(api, "/warehouse/items", limit=1, store_id="store-002").json()["meta"]["total"] == len(second)
    found = _get(api, f"/shelves/{elsewhere[0]}", store_id="store-002").json()
    assert found["meta"]["store_id"] == "store-002" and found["data"]["shelf_id"] == elsewhere[0]
    stores = _get(api, "/stores").json()
    assert [(row["store_id"], row["shelves"]) for row in stores["data"]] == [
        ("store-001", len(own)), ("store-002", len(second))] and stores["meta"]["store_id"] is None


def test_of_a_chain_the_api_reads_only_its_stores_state_and_events(api: Settings) -> None:
    # another store's rows for one of this store's shelves, and a sale of each store with the same transaction id
    other, ts = "store-002", datetime(2024, 12, 1, 12)  # a day no other test reads
    day, expiry = ts.date(), ts.date() + timedelta(days=30)
    ids = [{row["shelf_id"] for row in _get(api, "/shelves", limit=1000, store_id=store_id).json()["data"]}
           for store_id in (api.store_id, other)]
    shelf_id = min(ids[0] & ids[1])  # a shelf id both stores have
    shelf_before = _get(api, f"/shelves/{shelf_id}").json()["data"]

    def lists() -> list[object]:
        """The shelves' and warehouse items' totals, the shelf's category's rows of both, and the store's summary."""
        category = shelf_before["item_category"]
        return [_get(api, "/shelves", limit=1).json()["meta"]["total"],
                _get(api, "/warehouse/items", limit=1).json()["meta"]["total"],
                _get(api, "/shelves", category=category, limit=1000).json()["data"],
                _get(api, "/warehouse/items", category=category, limit=1000).json()["data"],
                _get(api, "/stores").json()["data"][0]]

    lists_before = lists()
    rows = {
        "shelf_state": [ShelfState(store_id=other, shelf_id=shelf_id, current_stock=0, current_weight=0.0,
                                   last_event_type="pickup", last_event_ts=ts)],
        "wh_state": [WarehouseState(store_id=other, shelf_id=shelf_id, wh_current_stock=0, last_event_type="wh_out",
                                    last_event_ts=ts)],
        "shelf_batch_state": [ShelfBatchState(store_id=other, shelf_id=shelf_id, batch_code="CHAIN-B1",
                                              received_date=day, expiry_date=expiry, batch_quantity_store=5,
                                              last_update_ts=ts)],
        "wh_batch_state": [WarehouseBatchState(store_id=other, shelf_id=shelf_id, batch_code="CHAIN-B1",
                                               received_date=day, expiry_date=expiry, batch_quantity_warehouse=5,
                                               last_update_ts=ts)],
        "alerts": [Alert(store_id=other, alert_id="chain-a1", alert_type="low_stock", location="store",
                         severity="warning", shelf_id=shelf_id, message="another store's", ts=ts)],
        "raw_wh_events": [WarehouseEvent(store_id=other, event_id="chain-w1", event_type="wh_in", shelf_id=shelf_id,
                                         batch_code="CHAIN-B1", quantity=5, received_date=day, expiry_date=expiry,
                                         ts=ts)],
        "pos_transactions": [PosTransactionRow(store_id=store_id, transaction_id="chain-t1", customer_id="chain-c1",
                                               ts=ts + timedelta(hours=hours), item_count=1, total=2.0)
                             for store_id, hours in ((api.store_id, 0), (other, 1))],
        "pos_transaction_items": [PosTransactionItemRow(store_id=store_id, transaction_id="chain-t1", line_no=1,
                                                        shelf_id=shelf_id, quantity=quantity, unit_price=2.0,
                                                        discount=0.0, line_total=2.0 * quantity)
                                  for store_id, quantity in ((api.store_id, 1), (other, 2))],
        "wh_supplier_plan": [WarehouseSupplierPlan(store_id=other, plan_id="chain-p1", shelf_id=shelf_id,
                                                   batches_to_order=1, quantity=10, status="planned",
                                                   expected_delivery_date=day, created_ts=ts, updated_ts=ts)],
        "shelf_restock_plan": [ShelfRestockPlan(store_id=other, plan_id="chain-r1", shelf_id=shelf_id, quantity=1,
                                                status="planned", created_ts=ts, updated_ts=ts)],
        "wh_supplier_orders": [SupplierOrder(store_id=other, order_id="chain-o1", plan_id="chain-p1",
                                             shelf_id=shelf_id, batches=1, quantity=10, ordered_ts=ts,
                                             expected_delivery_ts=ts, status="open")],
    }
    with postgres.connect(api, "app") as conn, conn.cursor() as cur:
        for name, records in rows.items():
            postgres.insert_rows(cur, table(name), records)
    try:
        shelf = _get(api, f"/shelves/{shelf_id}").json()["data"]
        assert {k: shelf[k] for k in shelf_before if not k.startswith("recent_")} == {
            k: v for k, v in shelf_before.items() if not k.startswith("recent_")}  # its stock, level and lots
        assert "chain-a1" not in {r["alert_id"] for r in shelf["recent_alerts"]}
        assert "chain-w1" not in {r["event_id"] for r in shelf["recent_warehouse_moves"]}
        (sale,) = [r for r in shelf["recent_sales"] if r["transaction_id"] == "chain-t1"]
        assert (sale["store_id"], sale["ts"], sale["quantity"]) == (api.store_id, ts.isoformat(), 1)
        assert lists() == lists_before
        for path, id_column in (("/alerts", "alert_id"), ("/plans/supplier", "plan_id"),
                                ("/plans/restock", "plan_id"), ("/orders", "order_id")):
            found = _get(api, path, shelf_id=shelf_id, limit=1000).json()["data"]
            assert {r["store_id"] for r in found} <= {api.store_id}, path
            assert not {r[id_column] for r in found} & {"chain-a1", "chain-p1", "chain-r1", "chain-o1"}, path
            theirs = _get(api, path, shelf_id=shelf_id, limit=1000, store_id=other).json()["data"]
            assert {r["store_id"] for r in theirs} == {other}, path  # asked for, the other store's rows
        theirs = _get(api, f"/shelves/{shelf_id}", store_id=other).json()["data"]
        assert theirs["current_stock"] == 0 and [(lot["location"], lot["batch_code"]) for lot in theirs["lots"]] == [
            ("store", "CHAIN-B1"), ("warehouse", "CHAIN-B1")]
        (sale,) = [r for r in theirs["recent_sales"] if r["transaction_id"] == "chain-t1"]
        assert (sale["store_id"], sale["quantity"]) == (other, 2)
    finally:
        with postgres.connect(api, "app") as conn, conn.cursor() as cur:
            for name in rows:
                cur.execute(f"DELETE FROM {table(name).pg} WHERE store_id = %s", (other,))
            for name in ("pos_transactions", "pos_transaction_items"):
                cur.execute(f"DELETE FROM {table(name).pg} WHERE transaction_id = 'chain-t1'")


@pytest.mark.parametrize(("path", "params", "field"), [
    ("/shelves", {"level": "empty"}, "level"),
    ("/shelves", {"limit": 0}, "limit"),
    ("/alerts", {"severity": "loud"}, "severity"),
    ("/alerts", {"since": "2025-01-02T00:00:00", "until": "2025-01-01T00:00:00"}, "until"),
    ("/alerts", {"since": "yesterday"}, "since"),
    ("/kpis/hourly", {"since": "2025-01-01T00:00:00", "until": "2026-01-01T00:00:00"}, "since"),
    ("/orders", {"status": "lost"}, "status"),
])
def test_bad_parameters_are_422_naming_the_field(api: Settings, path: str, params: dict[str, object],
                                                 field: str) -> None:
    answer = _get(api, path, **params)
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["query", field] and error["msg"], error


def test_a_bad_feed_request_is_refused_with_422_and_the_reason(api: Settings) -> None:
    async def attempt(query: str) -> InvalidStatus:
        with pytest.raises(InvalidStatus) as refused:
            await connect(_url(api, f"/ws/events?{query}", "ws"))
        return refused.value

    for query, words in (("topics=alerts,nope", "unknown topics ['nope']"), ("store_id=elsewhere", "elsewhere")):
        refused = asyncio.run(attempt(query))
        assert refused.response.status_code == 422
        assert words in refused.response.body.decode()


def test_kpis_count_what_was_sold_who_came_in_and_what_was_thrown_away(api: Settings) -> None:
    nine = datetime(2025, 1, 1, 9)
    baskets = [PosTransaction(transaction_id=f"kpi-t{n}", customer_id=f"kpi-c{n}", ts=nine + timedelta(minutes=10 * n),
                              items=[PosItem(shelf_id="KPI0001", quantity=n, unit_price=2.0, discount=discount,
                                             line_total=round(n * 2.0 * (1 - discount), 2))
                                     for discount in (0.0, 0.25)], total=round(n * 2.0 * 1.75, 2))
               for n in (1, 2, 3)]
    people = [FootTrafficEvent(event_id=f"kpi-f{n}", event_type="entry" if n < 5 or n == 7 else "exit",
                               customer_id=f"kpi-c{n}", ts=nine + timedelta(minutes=5 * n)) for n in range(8)]
    thrown = [Alert(alert_id=f"kpi-a{n}", alert_type=kind, location="store", severity="critical",
                    shelf_id="KPI0001", message="kpi", value=value, ts=nine + timedelta(minutes=n))
              for n, (kind, value) in enumerate((("out_of_stock", 0.0), ("out_of_stock", 0.0), ("expired", 7.0)))]
    _publish(api, baskets, "pos_transactions")
    _publish(api, people, "foot_traffic")
    _publish(api, thrown, "alerts")

    def hour_nine() -> dict[str, object]:
        rows = _get(api, "/kpis/hourly", since=nine.isoformat(), until=(nine + timedelta(hours=1)).isoformat())
        assert rows.status_code == 200, rows.text
        return rows.json()["data"][0] if rows.json()["data"] else {}

    deadline = time.monotonic() + 60
    while not ((row := hour_nine()) and row["transactions"] == 3 and row["entries"] + row["exits"] == 8
               and row["wasted_units"] == 7):
        assert time.monotonic() < deadline, f"the mirror did not catch up: {row}"
        time.sleep(0.5)
    assert row["hour"] == nine.isoformat()
    assert row["units_sold"] == 2 * (1 + 2 + 3) and row["discounted_units"] == 1 + 2 + 3
    assert row["revenue"] == pytest.approx(sum(b.total for b in baskets))
    assert row["discount_amount"] == pytest.approx(sum(n * 2.0 * 0.25 for n in (1, 2, 3)))
    assert (row["stock_outs"], row["entries"], row["exits"], row["people_in_store"]) == (2, 6, 2, 4)
    (day,) = _get(api, "/kpis/daily", since="2025-01-01T00:00:00", until="2025-01-02T00:00:00").json()["data"]
    assert day["day"] == "2025-01-01" and day["transactions"] == 3 and day["wasted_units"] == 7


# --- the feed -------------------------------------------------------------------------------------------
def test_fifty_clients_receive_the_same_events_in_order_and_rest_sees_them(api: Settings) -> None:
    published = _alerts(200, "fifty")

    async def scenario() -> list[list[dict[str, object]]]:
        clients = await asyncio.gather(*(_subscribed(api, "topics=alerts") for _ in range(CLIENTS)))
        shelf_client = await _subscribed(api, "topics=alerts&shelf_id=TEST0003")
        health = _get(api, "/health").json()
        assert health["feed"]["sources"] == 1 and health["feed"]["subscribers"] == CLIENTS + 1, health
        receiving = [asyncio.create_task(_receive(c, len(published))) for c in clients]
        await asyncio.to_thread(_publish, api, published, "alerts")
        received = await asyncio.gather(*receiving)
        only_shelf = await _receive(shelf_client, sum(1 for a in published if a.shelf_id == "TEST0003"))
        assert {e["value"]["shelf_id"] for e in only_shelf} == {"TEST0003"}  # type: ignore[index]
        for client in (*clients, shelf_client):
            await client.close()
        return received

    received = asyncio.run(scenario())
    expected = [a.alert_id for a in published]  # one partition: the order they were sent in
    for events in received:
        assert [e["value"]["alert_id"] for e in events] == expected  # type: ignore[index]
    assert len({json.dumps(events) for events in received}) == 1  # identical, offsets included

    deadline = time.monotonic() + 60
    while (total := _get(api, "/alerts", since=SIM_NOW.isoformat(), shelf_id="TEST0001", limit=5)
           .json()["meta"]["total"]) < sum(1 for a in published if a.shelf_id == "TEST0001"):
        assert time.monotonic() < deadline, f"the mirror did not catch up: {total}"
        time.sleep(0.5)
    page = _get(api, "/alerts", shelf_id="TEST0001", limit=5).json()
    assert [r["alert_id"] for r in page["data"]] == sorted(
        (a.alert_id for a in published if a.shelf_id == "TEST0001"), reverse=True)[:5]  # newest first


def _publish_paced(settings: Settings, records: Sequence[BaseModel], topic_name: str, per_second: int) -> None:
    """At a store's pace, not as one burst: a burst far faster than the clients read is spread out by the feed, but
    the readers would then differ by what their kernels buffer, and that is not what this test is about."""
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    producer = kafka.producer()
    chunk = per_second // 10
    began = time.monotonic()
    try:
        for start in range(0, len(records), chunk):
            producer.send_and_wait([Outgoing(topic_name, topic(topic_name).key_of(r).encode(),
                                             r.model_dump_json().encode()) for r in records[start:start + chunk]])
            time.sleep(max(0.0, began + (start + chunk) / per_second - time.monotonic()))
    finally:
        producer.close()
        kafka.close()


def test_a_stalled_client_is_dropped_and_the_others_get_every_event(api: Settings) -> None:
    events = [ShelfEvent(event_id=f"stall-{i:06d}", event_type="pickup", shelf_id=f"TEST{i % 5:04d}", quantity=1,
                         weight_change=-100.0, customer_id="c1", ts=SIM_NOW) for i in range(3 * WS_QUEUE)]

    stalled_socket = socket.create_connection(("127.0.0.1", api.api_port))
    stalled_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: its backlog is ours

    async def scenario() -> tuple[int | None, str | None, list[int]]:
        # no pings of its own: a client that reads nothing cannot see their answers
        stalled = await _subscribed(api, "topics=shelf_events", sock=stalled_socket, max_queue=1, ping_interval=None)
        readers = [await _subscribed(api, "topics=shelf_events") for _ in range(3)]
        closed = asyncio.create_task(_close_once_dropped(stalled))
        # the readers read while the records come, as live clients do (not reading would make them stalled too)
        receiving = [asyncio.create_task(_receive(reader, len(events), 120)) for reader in readers]
        await asyncio.to_thread(_publish_paced, api, events, "shelf_events", 300)
        counts = [len(got) for got in await asyncio.gather(*receiving)]
        code, reason = await closed
        for reader in readers:
            await reader.close()
        return code, reason, counts

    async def _close_once_dropped(stalled: ClientConnection) -> tuple[int | None, str | None]:
        """Read nothing until the server has dropped the client, then read fast up to its close frame."""
        async with asyncio.timeout(120):
            while (await asyncio.to_thread(_get, api, "/health")).json()["feed"]["dropped_clients"] < 1:
                await asyncio.sleep(0.2)
            stalled_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            try:
                while True:
                    await stalled.recv()
            except ConnectionClosed as closed:
                return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, None)

    code, reason, counts = asyncio.run(scenario())
    assert counts == [len(events)] * 3
    assert code == SLOW_CLIENT_CLOSE_CODE and reason is not None and "fell behind" in reason, (code, reason)


# --- health (last: it stops PostgreSQL) ---------------------------------------------------------------
def test_health_is_503_while_postgres_is_down_and_200_when_it_is_back(api: Settings) -> None:
    healthy = _get(api, "/health")
    assert healthy.status_code == 200, healthy.text
    assert healthy.json()["dependencies"]["clock"]["sim_time"] == SIM_NOW.isoformat()
    supervisor.stop(api, ["postgres"])
    try:
        down = _get(api, "/health")
        assert down.status_code == 503 and down.json()["dependencies"]["postgres"]["state"] == "down", down.text
        unavailable = _get(api, "/shelves")
        assert unavailable.status_code == 503 and "PostgreSQL" in unavailable.json()["detail"]
    finally:
        supervisor.start(api, ["postgres"])
    deadline = time.monotonic() + 30
    while (answer := _get(api, "/health")).status_code != 200:
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.5)
    assert _get(api, "/shelves", limit=1).status_code == 200
