"""The live API without servers: its SQL builders, KPI windows, feed parameters, and the 422s FastAPI gives for
bad parameters before any data source is touched."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from smartshelf.api import queries
from smartshelf.api.app import DEFAULT_FEED_TOPICS, create_app, kpi_window, parse_topics
from smartshelf.api.queries import Page
from smartshelf.registry import TOPICS_BY_NAME
from smartshelf.settings import Settings

NOW = datetime(2025, 1, 3, 10, 25)


def test_filters_travel_as_parameters_and_an_absent_filter_adds_no_condition() -> None:
    query = queries.shelves(Page(50, 100), category="DAIRY'; DROP TABLE x; --", level="low")
    assert "DROP" not in query.rows.text and "DROP" not in query.total.text
    assert query.rows.params == {"category": "DAIRY'; DROP TABLE x; --", "level": "low", "limit": 50, "offset": 100}
    assert query.total.params == {"category": "DAIRY'; DROP TABLE x; --", "level": "low"}
    assert "item_subcategory =" not in query.rows.text and "aisle =" not in query.rows.text
    bare = queries.alerts(Page(10, 0))
    # the running store's rows only, and no other condition
    assert bare.total.text.count("WHERE") == 1 and "store_id = %(store_id)s" in bare.total.text
    assert set(bare.rows.params) == {"limit", "offset"}


def test_rows_are_turned_into_json_by_postgres_in_the_query_order() -> None:
    query = queries.as_json(queries.Query("SELECT 1 AS x ORDER BY x", {"a": 1}))
    assert query.text.startswith("SELECT coalesce(json_agg(q), '[]')::text AS rows, count(*) AS count FROM (")
    assert query.params == {"a": 1}


def test_alert_filters_are_a_half_open_time_window() -> None:
    since, until = NOW - timedelta(hours=1), NOW
    query = queries.alerts(Page(10, 0), alert_type="out_of_stock", since=since, until=until)
    assert "ts >= %(since)s" in query.rows.text and "ts < %(until)s" in query.total.text
    assert query.rows.params["since"] == since and query.total.params["until"] == until


def test_the_parameter_types_are_the_schemas_literals() -> None:
    from typing import get_args

    from smartshelf.schemas import Alert, SupplierOrder

    assert get_args(queries.AlertType) == get_args(Alert.model_fields["alert_type"].annotation)
    assert get_args(queries.OrderStatus) == get_args(SupplierOrder.model_fields["status"].annotation)
    assert queries.LEVELS == ("ok", "low", "out")


def test_kpi_windows_default_to_the_last_day_of_hours_or_two_weeks_of_days() -> None:
    assert kpi_window("hourly", None, None, NOW) == (datetime(2025, 1, 2, 11), datetime(2025, 1, 3, 11))
    assert kpi_window("daily", None, None, NOW) == (datetime(2024, 12, 21), datetime(2025, 1, 4))
    since = datetime(2025, 1, 3, 6)
    assert kpi_window("hourly", since, None, NOW) == (since, datetime(2025, 1, 3, 11))
    first, last = kpi_window("hourly", None, None, None)  # no clock: everything recorded
    assert first.year == 1 and last.year == 9999


def test_kpi_windows_that_are_empty_or_too_long_are_refused() -> None:
    from fastapi import HTTPException

    with pytest.raises(HTTPException) as backwards:
        kpi_window("hourly", NOW, NOW - timedelta(hours=1), NOW)
    assert backwards.value.status_code == 422 and backwards.value.detail[0]["loc"] == ["query", "until"]
    with pytest.raises(HTTPException) as too_long:
        kpi_window("hourly", NOW - timedelta(days=400), NOW, NOW)
    assert "at most" in too_long.value.detail[0]["msg"]


def test_feed_topics_are_registry_topics() -> None:
    assert parse_topics(None) == frozenset(DEFAULT_FEED_TOPICS) and set(DEFAULT_FEED_TOPICS) <= TOPICS_BY_NAME.keys()
    assert parse_topics(" alerts, shelf_events ,") == {"alerts", "shelf_events"}
    with pytest.raises(ValueError, match=r"unknown topics \['nope'\]"):
        parse_topics("alerts,nope")
    with pytest.raises(ValueError, match="names no topic"):
        parse_topics(" , ")


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    # nothing listens on these ports: a 422 must come before any data source is asked
    settings = Settings(_env_file=None, SMARTSHELF_RUN_DIR=tmp_path, POSTGRES_PORT=1, REDIS_PORT=1,  # type: ignore[call-arg]
                        KAFKA_PORT=1)
    return TestClient(create_app(settings, source_factory=lambda topics, deliver: None))  # type: ignore[arg-type,return-value]


@pytest.mark.parametrize(("path", "field", "words"), [
    ("/shelves?level=empty", "level", "'ok', 'low' or 'out'"),
    ("/shelves?limit=5000", "limit", "less than or equal to 1000"),
    ("/shelves?aisle=-1", "aisle", "greater than or equal to 0"),
    ("/alerts?alert_type=fire", "alert_type", "low_stock"),
    ("/alerts?since=not-a-time", "since", "datetime"),
    ("/plans/supplier?status=lost", "status", "planned"),
    ("/kpis/hourly?until=2025-01-01T00:00:00&since=2025-01-02T00:00:00", "until", "after since"),
    ("/shelves?store_id=store-002", "store_id", "unknown store_id 'store-002' (this twin runs store-001)"),
    ("/alerts?store_id=nowhere", "store_id", "unknown store_id 'nowhere'"),
])
def test_bad_parameters_are_422_naming_the_field_and_the_reason(client: TestClient, path: str, field: str,
                                                                words: str) -> None:
    answer = client.get(path)
    assert answer.status_code == 422, answer.text
    (error,) = answer.json()["detail"]
    assert error["loc"] == ["query", field] and words in error["msg"], error


def test_an_unknown_kpi_period_is_422(client: TestClient) -> None:
    answer = client.get("/kpis/weekly")
    assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["path", "period"]


def test_reads_are_503_with_one_line_while_postgres_cannot_be_reached(client: TestClient) -> None:
    answer = client.get("/shelves")
    assert answer.status_code == 503
    assert answer.json()["detail"].startswith("PostgreSQL is not reachable") and "\n" not in answer.json()["detail"]


def test_the_openapi_document_lists_every_resource(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/health", "/stores", "/shelves", "/shelves/{shelf_id}", "/warehouse/items", "/alerts",
            "/plans/supplier", "/plans/restock", "/orders", "/kpis/{period}"} <= paths.keys()
    assert client.get("/docs").status_code == 200


def test_the_listening_socket_gives_connections_without_nagle_and_a_fixed_send_buffer() -> None:
    import asyncio
    import socket

    from smartshelf.api.app import SOCKET_SEND_BUFFER, listening_socket

    async def accepted_options() -> tuple[int, int]:
        sock = listening_socket("127.0.0.1", 0)
        seen: list[tuple[int, int]] = []

        class Record(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                seen.append((conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
                             conn.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)))

        server = await asyncio.get_running_loop().create_server(Record, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        while not seen:
            await asyncio.sleep(0.01)
        writer.close()
        server.close()
        return seen[0]

    nodelay, send_buffer = asyncio.run(accepted_options())
    assert nodelay == 1 and send_buffer == 2 * SOCKET_SEND_BUFFER  # Linux doubles what it is given
