"""The running dashboard seen from outside, as a user sees it: the stack's dashboard service, headless Chromium
(the Debian package, driven by Playwright), and the time from an alert being produced to the map counting it.
Used by the browser test and `smartshelf bench dashboard`."""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

from playwright.sync_api import Page, sync_playwright

from smartshelf.adapters import postgres
from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.errors import SmartShelfError
from smartshelf.registry import table, topic
from smartshelf.runtime import supervisor
from smartshelf.settings import Settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
OPEN_PANEL = '[role="tabpanel"]:visible'
ALERTS_RAISED = "Alerts raised"  # the Map Live metric counting every row of ops.alerts
MAP_DRAWN = "Simulated time"  # the Map Live view's first metric: the view has been drawn
ALERTS = "alerts"


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    """The stack's dashboard service, as `smartshelf up` runs it; yields its URL once healthy; stopped after."""
    supervisor.start(settings, ["dashboard"])
    try:
        yield f"http://127.0.0.1:{settings.dashboard_port}"
    finally:
        supervisor.stop(settings, ["dashboard"])


@contextmanager
def browser_page(width: int = 1500, height: int = 1000) -> Iterator[Page]:
    """A page of a headless system Chromium (Playwright downloads no browser of its own here)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()


def load(page: Page, url: str, timeout_s: float = 60.0) -> float:
    """Open the dashboard and wait for the map's first metric: returns the seconds its first render took."""
    began = time.monotonic()
    page.goto(url)
    page.locator(OPEN_PANEL).get_by_text(MAP_DRAWN).first.wait_for(timeout=timeout_s * 1000)
    return time.monotonic() - began


def metric(panel_text: str, label: str) -> str | None:
    """The value a view shows under a metric's label, None if the label is not on it."""
    found = re.search(rf"{re.escape(label)}\s*\n+\s*(\S[^\n]*)", panel_text)
    return None if found is None else found.group(1).strip()


class AlertFeed:
    """The alerts topic from its end now on: the wall time each new alert was produced (its record's Kafka
    timestamp, set by the app's producer when it sent it), in the order they are read."""

    def __init__(self, settings: Settings) -> None:
        self.kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
        partitions = self.kafka.partitions_for(topic(ALERTS).name)
        ends = self.kafka.end_offsets(partitions)  # where the alerts end now: those after are timed
        self.seen = sum(ends.values())  # every alert so far (none is sent twice)
        self.consumer = self.kafka.consumer()
        self.consumer.assign(ends)

    def poll(self, timeout_s: float) -> list[tuple[int, float]]:
        """(how many alerts exist once this one does, when it was produced) for the alerts read now."""
        found = []
        for records in self.consumer.poll(timeout_s).values():
            for record in records:
                self.seen += 1
                found.append((self.seen, record.timestamp / 1000))
        return found

    def close(self) -> None:
        self.consumer.close()
        self.kafka.close()


class AlertTiming(NamedTuple):
    """Seconds from an alert's production to its row in PostgreSQL (the mirror) and to the map counting it."""

    to_postgres_s: float
    to_map_s: float


def alert_latencies(page: Page, settings: Settings, count: int, timeout_s: float) -> list[AlertTiming]:
    """For each of the next `count` alerts: from its production to ops.alerts holding it, and to the open Map
    Live view counting it (its "Alerts raised" metric reaching the alert's ordinal), on the page's own refresh:
    the page is not reloaded. Both are polled every ~0.1 s."""
    feed = AlertFeed(settings)
    pending: deque[tuple[int, float]] = deque()  # produced, not yet on the map
    in_postgres: dict[int, float] = {}  # ordinal -> when its row was seen
    timings: list[AlertTiming] = []
    deadline = time.monotonic() + timeout_s
    try:
        with postgres.connect(settings, "reader") as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                while len(timings) < count:
                    pending.extend(feed.poll(0.1))
                    rows = postgres.count_rows(cur, table(ALERTS))
                    rows_at = time.time()
                    for ordinal, _ in pending:
                        if ordinal <= rows:
                            in_postgres.setdefault(ordinal, rows_at)
                    shown = metric(page.locator(OPEN_PANEL).inner_text(), ALERTS_RAISED)
                    shown_at = time.time()
                    while pending and shown is not None and shown.isdigit() and int(shown) >= pending[0][0]:
                        ordinal, produced = pending.popleft()
                        timings.append(AlertTiming(in_postgres.get(ordinal, shown_at) - produced, shown_at - produced))
                    if time.monotonic() > deadline:
                        raise SmartShelfError(f"{len(timings)} of {count} new alerts shown on the map in "
                                              f"{timeout_s:.0f}s (map shows {shown!r} raised, {rows} rows in "
                                              f"PostgreSQL, {len(pending)} produced and not shown)")
    finally:
        feed.close()
    return timings[:count]
