"""Load on a running live API, for `smartshelf bench api`: REST latencies under N concurrent requests, and the
WebSocket feed's fan-out rate to N clients (optionally beside a client that stalls and must be dropped)."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed


async def rest_latencies(url: str, concurrency: int, requests: int) -> tuple[list[float], float]:
    """Seconds each of `requests` GETs of `url` took with `concurrency` in flight at once, and the wall time."""
    latencies: list[float] = []
    remaining = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=120) as client:

        async def worker() -> None:
            for _ in remaining:
                began = time.perf_counter()
                answer = await client.get(url)
                latencies.append(time.perf_counter() - began)
                if answer.status_code != 200:
                    raise RuntimeError(f"{url} answered {answer.status_code}: {answer.text[:200]}")

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - began


@dataclass(frozen=True)
class FanOut:
    events: int
    clients: int
    wall_s: float  # from the first event sent to the last client having every event
    per_client_events_s: float
    deliveries_s: float  # events × clients per second
    stalled_dropped: bool | None  # None without a stalled client
    stalled_close: str | None


async def _subscribe(url: str, **options: object) -> ClientConnection:
    client = await connect(url, max_size=None, **options)  # type: ignore[arg-type]
    hello = json.loads(await client.recv())
    if hello.get("type") != "subscribed":
        raise RuntimeError(f"the feed did not subscribe: {hello}")
    return client


async def _count(client: ClientConnection, events: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        for _ in range(events):
            await client.recv()


async def fan_out(port: int, query: str, clients: int, events: int, publish: Callable[[], object],
                  stalled: bool = False, timeout_s: float = 300.0) -> FanOut:
    """Subscribe `clients` readers (and a client that reads nothing until the server drops it, if `stalled`) to
    the feed of the API on 127.0.0.1:`port` with `query`, run `publish` (it sends `events` records) while they
    read, and time until every reader has every record."""
    url = f"ws://127.0.0.1:{port}/ws/events?{query}"
    outcome: asyncio.Task[tuple[bool, str | None]] | None = None
    if stalled:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a small window: its backlog stays server-side
        # no pings of its own: a client that reads nothing would time them out itself
        stalled_client = await _subscribe(url, sock=sock, max_queue=1, ping_interval=None)
        outcome = asyncio.create_task(_stalled_outcome(port, stalled_client, sock, timeout_s))
    readers = [await _subscribe(url) for _ in range(clients)]
    began = time.perf_counter()
    counting = [asyncio.create_task(_count(reader, events, timeout_s)) for reader in readers]
    await asyncio.to_thread(publish)
    await asyncio.gather(*counting)
    wall_s = time.perf_counter() - began
    for reader in readers:
        await reader.close()
    dropped, close = (None, None) if outcome is None else await outcome
    return FanOut(events=events, clients=clients, wall_s=wall_s, per_client_events_s=events / wall_s,
                  deliveries_s=events * clients / wall_s, stalled_dropped=dropped, stalled_close=close)


async def _stalled_outcome(port: int, client: ClientConnection, sock: socket.socket,
                           timeout_s: float) -> tuple[bool, str | None]:
    """Once the API counts a dropped client, read what this one was sent up to its close frame: the code and
    reason it was closed with (None if it was cut off without one)."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as api:
        deadline = time.monotonic() + timeout_s
        while (await api.get("/health")).json()["feed"]["dropped_clients"] < 1:
            if time.monotonic() > deadline:
                await client.close()
                return False, None
            await asyncio.sleep(0.2)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    try:
        async with asyncio.timeout(60):
            while True:
                await client.recv()
    except ConnectionClosed as closed:
        return True, f"{closed.rcvd.code} {closed.rcvd.reason}" if closed.rcvd else None
