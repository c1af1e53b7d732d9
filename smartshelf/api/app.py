"""The live API (FastAPI on uvicorn): read-only REST over the PostgreSQL mirror, as the reader role, and a WebSocket
feed of the live topics from Kafka (smartshelf.api.feed).

Every REST answer is `{"data": ..., "meta": {"query_ms", "sim_time", "store_id", ...}}`. While PostgreSQL cannot be
reached or no store is loaded, answers are 503 with a one-line `detail`; a bad parameter is 422 naming the field and
the reason; an unknown shelf 404. `/health` is 200 while the broker, PostgreSQL and Redis answer, else 503, and
reports the simulated clock. The API writes nothing anywhere.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Literal

import psycopg2
import psycopg2.errors
import psycopg2.extras
import psycopg2.pool
import redis
from fastapi import Depends, FastAPI, HTTPException, Query, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import JSONResponse, Response
from redis.backoff import NoBackoff
from redis.retry import Retry

from smartshelf.adapters.kafka import broker_answers
from smartshelf.adapters.redis_clock import SimClock
from smartshelf.api import queries
from smartshelf.api.feed import FeedHub, KafkaFeedSource, SourceFactory, Subscription
from smartshelf.api.queries import (
    AlertLocation, AlertSeverity, AlertType, OrderStatus, Page, RestockStatus, SupplierPlanStatus,
)
from smartshelf.apps.lifecycle import HEARTBEAT_STALE_S, heartbeat_age
from smartshelf.errors import SmartShelfError, first_line
from smartshelf.loop import Level
from smartshelf.registry import TOPICS_BY_NAME
from smartshelf.schemas import LocalTime
from smartshelf.settings import Settings

# what /ws/events sends without a `topics` parameter: the store's live events and the alerts they raise
DEFAULT_FEED_TOPICS = ("foot_traffic", "shelf_events", "pos_transactions", "wh_events", "alerts")
HEALTH_TIMEOUT_S = 2.0
STATEMENT_TIMEOUT_MS = 10_000  # no answer holds one of the few connections longer
# on SIGTERM, open requests and feed clients get this long (then are cut), within the supervisor's stop timeout
GRACEFUL_SHUTDOWN_S = 5
SOCKET_SEND_BUFFER = 128 * 1024  # bytes (the kernel doubles it): ~700 feed events (see listening_socket)
MAX_PAGE = 1000
MAX_KPI_HOURS = 24 * 92
MAX_KPI_DAYS = 3 * 366
DEFAULT_KPI_HOURS = 24
DEFAULT_KPI_DAYS = 14
POLICY_VIOLATION = 1008  # RFC 6455 close code for a request the server will not serve
TRY_AGAIN_LATER = 1013  # the feed cannot subscribe now (broker down, topic missing)

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")]


class DataNotReady(SmartShelfError):
    """The data an answer needs is not there yet (503)."""


class Database:
    """A bounded pool of reader-role connections; callers wait for a free one instead of failing. Every query gets
    the store asked for (`%(store_id)s`), which picks its rows of every per-store table."""

    def __init__(self, settings: Settings) -> None:
        self.dsn = settings.postgres_dsn_for("reader")
        self.size = settings.api_db_pool
        self._free = threading.BoundedSemaphore(self.size)
        self._pool: psycopg2.pool.ThreadedConnectionPool | None = None
        self._lock = threading.Lock()
        self.loaded: set[str] = set()  # the stores found loaded (a store once loaded stays so)

    def _get_pool(self) -> psycopg2.pool.ThreadedConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = psycopg2.pool.ThreadedConnectionPool(
                    0, self.size, self.dsn, connect_timeout=3, options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}")
            return self._pool

    @contextmanager
    def cursor(self) -> Iterator[psycopg2.extras.RealDictCursor]:
        with self._free:
            pool = self._get_pool()
            try:
                conn = pool.getconn()
            except psycopg2.OperationalError as exc:
                raise DataNotReady(f"PostgreSQL is not reachable: {first_line(exc)}") from exc
            broken = False
            try:
                if not conn.autocommit:  # a new connection (set once: it costs a round trip)
                    conn.set_session(readonly=True, autocommit=True)
                with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
                    yield cur
            except (psycopg2.OperationalError, psycopg2.InterfaceError) as exc:
                broken = True
                raise DataNotReady(f"PostgreSQL is not reachable: {first_line(exc)}") from exc
            except psycopg2.errors.QueryCanceled as exc:
                raise DataNotReady(f"the query took longer than {STATEMENT_TIMEOUT_MS} ms; try a narrower "
                                   f"filter or a smaller page") from exc
            except psycopg2.errors.UndefinedTable as exc:
                raise DataNotReady(f"the database has no tables yet (db-init creates them): "
                                   f"{first_line(exc)}") from exc
            finally:
                pool.putconn(conn, close=broken or conn.closed != 0)

    def rows(self, store_id: str, *batch: queries.Query) -> tuple[list[list[dict[str, object]]], float]:
        """Each query's rows of the store, and the milliseconds they took; 503 until that store is loaded."""
        began = time.perf_counter()
        with self.cursor() as cur:
            if store_id not in self.loaded:
                cur.execute(queries.STORE_LOADED.text, {"store_id": store_id})
                row = cur.fetchone()
                if not (row and row["loaded"]):
                    raise DataNotReady(f"store {store_id} is not loaded yet (store-init imports the running stores; "
                                       "see `smartshelf data`)")
                self.loaded.add(store_id)
            results = []
            for query in batch:
                cur.execute(query.text, {**query.params, "store_id": store_id})
                results.append(cur.fetchall())
        return results, (time.perf_counter() - began) * 1000

    def ping(self) -> None:
        with self.cursor() as cur:
            cur.execute("SELECT 1")

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.closeall()
                self._pool = None


def _sim_time(clock: SimClock) -> datetime | None:
    try:
        return clock.now_or_none()
    except redis.RedisError:
        return None


def _answer(data_json: str, query_ms: float, sim_time: datetime | None, store_id: str | None,
            **meta: object) -> Response:
    """`{"data", "meta"}` around data that is JSON text already (PostgreSQL's `queries.as_json`); `store_id`: the
    store the data is of (None: the chain's)."""
    meta_json = json.dumps({"query_ms": round(query_ms, 3), "sim_time": sim_time.isoformat() if sim_time else None,
                            "store_id": store_id, **meta}, default=_json_default)
    return Response(f'{{"data":{data_json},"meta":{meta_json}}}', media_type="application/json")


def _json_default(value: object) -> object:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _page_answer(found: list[list[dict[str, object]]], query_ms: float, sim_time: datetime | None,
                 store_id: str, page: Page) -> Response:
    (rows,), (total,) = found
    return _answer(str(rows["rows"]), query_ms, sim_time, store_id, count=rows["count"], total=total["total"],
                   limit=page.limit, offset=page.offset)


def _bad_parameter(field: str, message: str) -> HTTPException:
    """A 422 shaped like FastAPI's own validation errors."""
    return HTTPException(422, detail=[{"loc": ["query", field], "msg": message, "type": "value_error"}])


def kpi_window(period: Literal["hourly", "daily"], since: datetime | None, until: datetime | None,
               now: datetime | None) -> tuple[datetime, datetime]:
    """[since, until) of a KPI request: by default the last day of hours, or the last two weeks of days, up to the
    simulated now (all recorded time without a clock); a window too long to answer at once is a 422."""
    step, default, longest = ((timedelta(hours=1), DEFAULT_KPI_HOURS, MAX_KPI_HOURS) if period == "hourly"
                              else (timedelta(days=1), DEFAULT_KPI_DAYS, MAX_KPI_DAYS))
    if until is None:
        until = _period_start(now, period) + step if now is not None else datetime(9999, 1, 1)
    if since is None:
        since = until - default * step if now is not None else datetime(1, 1, 1)
    if since >= until:
        raise _bad_parameter("until", "must be after since")
    if now is not None and (until - since) > longest * step:
        unit = "hours" if period == "hourly" else "days"
        raise _bad_parameter("since", f"the window is at most {longest} {unit}")
    return since, until


def _period_start(t: datetime, period: Literal["hourly", "daily"]) -> datetime:
    hour = t.replace(minute=0, second=0, microsecond=0)
    return hour if period == "hourly" else hour.replace(hour=0)


def unknown_store(store_id: str, settings: Settings) -> str:
    return f"unknown store_id '{store_id}' (this twin runs {', '.join(settings.running_stores)})"


def parse_topics(topics: str | None) -> frozenset[str]:
    """The `topics` of a feed request: comma-separated registry topics (default DEFAULT_FEED_TOPICS)."""
    if topics is None:
        return frozenset(DEFAULT_FEED_TOPICS)
    names = frozenset(name.strip() for name in topics.split(",") if name.strip())
    unknown = sorted(names - TOPICS_BY_NAME.keys())
    if not names or unknown:
        raise ValueError(f"unknown topics {unknown} (known: {', '.join(sorted(TOPICS_BY_NAME))})" if unknown
                         else "names no topic")
    return names


def health_report(settings: Settings, database: Database, client: redis.Redis) -> tuple[bool, dict[str, object]]:
    """Each dependency's state; healthy while the broker, PostgreSQL and Redis answer. The clock is reported
    (running, paused, stopped, not started) but a stopped clock leaves the data readable, so it does not count."""
    checks: dict[str, Callable[[], object]] = {
        "broker": lambda: broker_answers(settings.kafka_bootstrap_servers, HEALTH_TIMEOUT_S),
        "postgres": database.ping,
        "redis": lambda: client.ping(),
    }
    report: dict[str, object] = {}
    for name, check in checks.items():
        try:
            check()
            report[name] = {"state": "up"}
        except Exception as exc:  # any failure to answer is "down", with its reason
            report[name] = {"state": "down", "error": first_line(exc)}
    report["clock"] = _clock_state(client) if report["redis"] == {"state": "up"} else {"state": "unknown"}
    healthy = all(report[name] == {"state": "up"} for name in checks)
    return healthy, report


def _clock_state(client: redis.Redis) -> dict[str, object]:
    clock = SimClock(client)
    now = clock.now_or_none()
    age = heartbeat_age(client, "clock")
    state = ("not started" if now is None else "paused" if clock.paused() else
             "running" if age is not None and age <= HEARTBEAT_STALE_S else "stopped")
    return {"state": state, "sim_time": now.isoformat() if now else None}


def create_app(settings: Settings, source_factory: SourceFactory | None = None) -> FastAPI:
    database = Database(settings)
    # a request must not wait out Redis's default retries and backoff: it answers without the time instead
    client = redis.Redis(host=settings.redis_host, port=settings.redis_port, socket_connect_timeout=1,
                         socket_timeout=2, retry=Retry(NoBackoff(), 0))
    clock = SimClock(client)
    hub = FeedHub(source_factory or (lambda topics, deliver: KafkaFeedSource(
        settings.kafka_bootstrap_servers, topics, deliver)), settings.api_ws_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await hub.close()
        database.close()

    app = FastAPI(title="Smart Shelf live API", version="1", lifespan=lifespan,
                  description="Read-only REST over the twin's PostgreSQL mirror and a WebSocket feed of its topics.")
    app.state.hub = hub

    @app.exception_handler(DataNotReady)
    async def not_ready(request: Request, exc: DataNotReady) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503)

    def store_of(store_id: Annotated[str | None, Query(
            description="a store the twin runs (STORES); STORE_ID's when not given")] = None) -> str:
        if store_id is None:
            return settings.store_id
        if store_id not in settings.running_stores:
            raise _bad_parameter("store_id", unknown_store(store_id, settings))
        return store_id

    picked_store = Depends(store_of)  # as a default: the alias of an Annotated type would be a local name

    def read(store: str, *batch: queries.Query) -> tuple[list[list[dict[str, object]]], float, datetime | None]:
        results, query_ms = database.rows(store, *batch)
        return results, query_ms, _sim_time(clock)

    def page_of(store: str, query: queries.PageQuery, page: Page) -> Response:
        found, query_ms, now = read(store, query.rows, query.total)
        return _page_answer(found, query_ms, now, store, page)

    @app.get("/health", summary="Each dependency's state: 200 while the broker, PostgreSQL and Redis answer")
    async def health() -> JSONResponse:
        healthy, report = await asyncio.to_thread(health_report, settings, database, client)
        return JSONResponse({"status": "ok" if healthy else "unavailable", "dependencies": report,
                             "feed": hub.stats()}, status_code=200 if healthy else 503)

    @app.get("/stores", summary="The stores of this twin (STORES), each with its size and current fill")
    def stores() -> Response:
        found, query_ms = [], 0.0
        for store_id in settings.running_stores:
            (summary,), store_ms = database.rows(store_id, queries.store_summary())
            found.append({"store_id": store_id, **summary[0]})
            query_ms += store_ms
        return _answer(json.dumps(found, default=_json_default), query_ms, _sim_time(clock), None, count=len(found))

    @app.get("/shelves", summary="Shelves with their live stock and level (ok, low, out), filtered and paged")
    def shelves(category: str | None = None, subcategory: str | None = None,
                aisle: Annotated[int | None, Query(ge=0)] = None,
                level: Annotated[Level | None, Query(description="ok, low (at or below the threshold) or out")] = None,
                limit: Limit = 100, offset: Offset = 0, store: str = picked_store) -> Response:
        page = Page(limit, offset)
        return page_of(store, queries.shelves(page, category, subcategory, aisle, level), page)

    @app.get("/shelves/{shelf_id}", summary="One shelf: its state, its lots and its recent alerts, moves and sales")
    def shelf(shelf_id: str, store: str = picked_store) -> Response:
        (found, lots, alerts, moves, sales), query_ms, now = read(
            store, queries.shelf(shelf_id), queries.shelf_lots(shelf_id), queries.shelf_recent(shelf_id, "alerts"),
            queries.shelf_recent(shelf_id, "warehouse_moves"), queries.shelf_recent(shelf_id, "sales"))
        if found[0]["count"] == 0:
            raise HTTPException(404, detail=f"no shelf '{shelf_id}' in store {store}")
        parts = {name: json.loads(str(result[0]["rows"])) for name, result in (
            ("lots", lots), ("recent_alerts", alerts), ("recent_warehouse_moves", moves), ("recent_sales", sales))}
        shelf_row = json.loads(str(found[0]["rows"]))[0]
        return _answer(json.dumps({**shelf_row, **parts}), query_ms, now, store)

    @app.get("/warehouse/items", summary="Warehouse stock per item with its reorder policy and level")
    def warehouse_items(category: str | None = None, subcategory: str | None = None,
                        aisle: Annotated[int | None, Query(ge=0)] = None,
                        level: Annotated[Level | None, Query(description="ok, low (at or below the reorder point) "
                                                                         "or out")] = None,
                        limit: Limit = 100, offset: Offset = 0, store: str = picked_store) -> Response:
        page = Page(limit, offset)
        return page_of(store, queries.warehouse_items(page, category, subcategory, aisle, level), page)

    @app.get("/alerts", summary="Alerts, newest first, by type, severity, location, shelf and time [since, until)")
    def alerts(alert_type: AlertType | None = None, severity: AlertSeverity | None = None,
               location: AlertLocation | None = None, shelf_id: str | None = None, since: LocalTime | None = None,
               until: LocalTime | None = None, limit: Limit = 100, offset: Offset = 0,
               store: str = picked_store) -> Response:
        if since is not None and until is not None and since >= until:
            raise _bad_parameter("until", "must be after since")
        page = Page(limit, offset)
        return page_of(store, queries.alerts(page, alert_type, severity, location, shelf_id, since, until), page)

    @app.get("/plans/supplier", summary="Supplier plans (the reorder rule's and the forecast's), newest first")
    def supplier_plans(status: SupplierPlanStatus | None = None, shelf_id: str | None = None, limit: Limit = 100,
                       offset: Offset = 0, store: str = picked_store) -> Response:
        page = Page(limit, offset)
        return page_of(store, queries.supplier_plans(page, status, shelf_id), page)

    @app.get("/plans/restock", summary="Shelf restock plans (warehouse → shelf), newest first")
    def restock_plans(status: RestockStatus | None = None, shelf_id: str | None = None, limit: Limit = 100,
                      offset: Offset = 0, store: str = picked_store) -> Response:
        page = Page(limit, offset)
        return page_of(store, queries.restock_plans(page, status, shelf_id), page)

    @app.get("/orders", summary="Supplier orders, newest first")
    def supplier_orders(status: OrderStatus | None = None, shelf_id: str | None = None, limit: Limit = 100,
                        offset: Offset = 0, store: str = picked_store) -> Response:
        page = Page(limit, offset)
        return page_of(store, queries.supplier_orders(page, status, shelf_id), page)

    @app.get("/kpis/{period}", summary="Store KPIs per simulated hour or day: sales, stock-outs, people, "
                                       "discounts, waste (and the day's fill rate)")
    def kpis(period: Literal["hourly", "daily"], since: LocalTime | None = None, until: LocalTime | None = None,
             store: str = picked_store) -> Response:
        window = kpi_window(period, since, until, _sim_time(clock))
        ((rows,),), query_ms, now = read(store, queries.kpis(period, *window))
        return _answer(str(rows["rows"]), query_ms, now, store, count=rows["count"], since=window[0].isoformat(),
                       until=window[1].isoformat())

    @app.websocket("/ws/events")
    async def events(websocket: WebSocket, topics: str | None = None, shelf_id: str | None = None,
                     store_id: str | None = None) -> None:
        try:
            wanted = parse_topics(topics)
            if store_id is not None and store_id not in settings.running_stores:
                raise ValueError(unknown_store(store_id, settings))
        except ValueError as exc:
            await _refuse(websocket, str(exc))
            return
        await websocket.accept()
        await _serve_feed(websocket, hub, wanted, shelf_id, store_id)

    return app



async def _refuse(websocket: WebSocket, reason: str) -> None:
    """A bad feed request: HTTP 422 with the reason where the server can answer a handshake with a response,
    else accepted and closed at once with 1008 and the reason."""
    body = {"detail": [{"loc": ["query"], "msg": reason, "type": "value_error"}]}
    if "websocket.http.response" in websocket.scope.get("extensions", {}):
        await websocket.send_denial_response(JSONResponse(body, status_code=422))
        return
    await websocket.accept()
    await websocket.close(POLICY_VIOLATION, reason[:120])


async def _serve_feed(websocket: WebSocket, hub: FeedHub, topics: frozenset[str], shelf_id: str | None,
                      store_id: str | None) -> None:
    """Subscribe, say so, then send each event until the client leaves or is dropped (too slow: closed with
    SLOW_CLIENT_CLOSE_CODE and the reason; the server going away: 1001)."""
    try:
        subscription = await hub.subscribe(topics, shelf_id, store_id)
    except SmartShelfError as exc:  # the broker is down or lacks a topic
        await websocket.close(TRY_AGAIN_LATER, first_line(exc)[:120])
        return
    watcher = asyncio.create_task(subscription.dropped())
    workers: tuple[asyncio.Task[None], ...] = ()
    try:
        await websocket.send_json({"type": "subscribed", "topics": sorted(topics), "shelf_id": shelf_id,
                                   "store_id": store_id})
        workers = (asyncio.create_task(_send_events(websocket, subscription)),
                   asyncio.create_task(_until_client_leaves(websocket)))
        await asyncio.wait({watcher, *workers}, return_when=asyncio.FIRST_COMPLETED)
        for task in workers:
            task.cancel()
        if subscription.dropped_reason is not None:
            dropped = await watcher
            try:
                # the close frame goes after what the socket still holds; a client that does not read it within
                # the server's close timeout (10 s) is cut off (uvicorn's websockets protocol aborts the connection)
                await websocket.close(dropped.code, dropped.reason[:120])
            except (RuntimeError, WebSocketDisconnect):
                pass  # it left meanwhile
    except WebSocketDisconnect:
        pass
    finally:
        for task in (watcher, *workers):
            task.cancel()
        hub.unsubscribe(subscription)


async def _send_events(websocket: WebSocket, subscription: Subscription) -> None:
    while True:
        event = await subscription.next()  # Dropped ends it; `dropped()` beside it says why
        await websocket.send_text(event.text)


async def _until_client_leaves(websocket: WebSocket) -> None:
    """Read (and ignore) what the client sends, so its disconnect is seen even when no event flows."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


def listening_socket(host: str, port: int) -> socket.socket:
    """The API's socket. Its send buffer is fixed (accepted connections inherit it) instead of growing to 4 MiB per
    client: a feed client's backlog must sit in its queue, where the hub sees it, not in the kernel, where ~12k
    events per client would hide it (pacing by the fastest client and dropping the slow ones depend on it)."""
    # IPPROTO_TCP named, not 0: asyncio sets TCP_NODELAY on accepted connections only when the socket says TCP,
    # and without it a small answer waited ~40 ms for the client's delayed ACK (Nagle), 52 ms instead of 15 ms
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_SEND_BUFFER)
    sock.bind((host, port))
    return sock


def main(settings: Settings) -> None:
    import uvicorn

    # the websockets protocol implementation: its close gives up on a client that does not read and aborts the
    # connection, so a stalled client's socket is not kept open behind a full buffer; no per-message deflate:
    # compressing every event once per client would cost the fan-out its CPU
    config = uvicorn.Config(create_app(settings), log_level="warning", access_log=False, ws="websockets",
                            ws_per_message_deflate=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    uvicorn.Server(config).run(sockets=[listening_socket(settings.api_host, settings.api_port)])
