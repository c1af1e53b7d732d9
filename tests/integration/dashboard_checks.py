"""The dashboard's checks in a real browser (headless system Chromium, Playwright), made while a simulated day
runs on (the integration tests' shared fast day, tests/integration/conftest.py): from 12:00 simulated the stack's
dashboard service is started; every view is loaded and screenshotted, the map must show zones with alerts and
the state and alert tables rows; and new alerts must reach the map on its own refresh (the time from their
production is recorded; `smartshelf bench dashboard` measures it at demo speed).

Screenshots: test-artefacts/dashboard/<view>.png."""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from datetime import timedelta

from playwright.sync_api import Page
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from smartshelf.dashboard import ENTRIES_5_MIN, PULSE_HEADING, VIEW_TABLES
from smartshelf.runtime.dashboard_probe import (ALERTS_RAISED, MAP_DRAWN, OPEN_PANEL, alert_latencies, browser_page,
                                                 load, metric, served)
from smartshelf.settings import REPO_ROOT, Settings

ARTEFACTS = REPO_ROOT / "test-artefacts" / "dashboard"
VIEWS = list(VIEW_TABLES)
CHECK_FROM = timedelta(hours=4)  # 12:00 on a run that starts at 08:00: busy for hours, and open for hours more
LOAD_TIMEOUT_S = 60.0
PULSE_TIMEOUT_S = 180.0  # its first windows come with the 12:00 tick, as the check begins: a tick or two
NEW_ALERTS = 3  # timed from their production to the map counting them (recorded, not asserted: bench dashboard)
NEW_ALERTS_TIMEOUT_S = 180.0
# text each view shows once drawn (a tab is drawn by the rerun its click starts: lazy tabs)
DRAWN_WHEN_SHOWING = {"Map Live": MAP_DRAWN, "States": "Shelf state", "Supplier Plan": "Supplier plans",
                      "Alerts": "Active only", "Pulse": PULSE_HEADING, "Debug/Config": "Settings in force",
                      "ML": "No model yet"}


def open_view(page: Page, view: str) -> str:
    """Select a tab, wait until the app is not running a script, and return the tab's text."""
    page.get_by_role("tab", name=view, exact=True).click()
    panel = page.locator(OPEN_PANEL)
    panel.get_by_text(DRAWN_WHEN_SHOWING[view]).first.wait_for(timeout=LOAD_TIMEOUT_S * 1000)
    if view == "Map Live":  # Plotly draws after the page: wait for the zones' rectangles
        panel.locator(".js-plotly-plot .shapelayer path").first.wait_for(state="attached")
    text = settled_text(page)
    page.screenshot(path=ARTEFACTS / f"{slug(view)}.png", full_page=True)
    return text


def settled_text(page: Page) -> str:
    """The open panel's text once no script runs. While one runs (the 2-s refresh too) the toolbar shows "Stop"
    and the page mixes the new run's elements with the last run's further down; on a loaded machine the next
    refresh can start before the last one ends: then take the page as it is."""
    try:
        page.get_by_role("button", name="Stop", exact=True).wait_for(state="hidden", timeout=30_000)
    except PlaywrightTimeout:
        pass
    page.wait_for_timeout(1500)  # let the data grids draw and a rerun's faded elements settle
    return page.locator(OPEN_PANEL).inner_text()


def view_when(page: Page, view: str, ready: Callable[[str], bool], timeout_s: float) -> str:
    """A view's text once `ready` holds for it (one run's text), or its last text at the deadline. The day moves
    on while the browser looks: Map Live's window (alerts of the last 120 simulated minutes) can be empty just
    after a 2-h tick, before the pipeline has turned that tick's events into alerts; the pulse's first windows
    close in the tick that passes their watermark, and reach PostgreSQL through Kafka Connect a few seconds
    later, the 1-minute and 5-minute ones not necessarily in the same write."""
    text, deadline = open_view(page, view), time.monotonic() + timeout_s
    while not ready(text) and time.monotonic() < deadline:
        page.wait_for_timeout(2000)  # the views refresh themselves every 2 s
        text = settled_text(page)
    page.screenshot(path=ARTEFACTS / f"{slug(view)}.png", full_page=True)
    return text


def shows_pulse_kpis(pulse_text: str) -> bool:
    """The Pulse view shows the newest ended 5-minute window's figures ("–" while there is none)."""
    return re.fullmatch(r"\d+", metric(pulse_text, ENTRIES_5_MIN) or "") is not None


def lists_alert_zones(map_text: str) -> bool:
    """The metric counts zones with alerts and the list under the map names them with their severity."""
    return (int(shown_metric(map_text, "Zones with alerts")) > 0
            and re.search(r"Zones with alerts: \w.* \((warning|critical|info)\)", map_text) is not None)


# the views whose data the moving day may not have brought yet when first opened: what to wait for, how long
WAIT_FOR: dict[str, tuple[Callable[[str], bool], float]] = {"Map Live": (lists_alert_zones, LOAD_TIMEOUT_S),
                                                            "Pulse": (shows_pulse_kpis, PULSE_TIMEOUT_S)}


def slug(view: str) -> str:
    return re.sub(r"[^a-z]+", "-", view.lower()).strip("-")


def shown_metric(panel_text: str, label: str) -> str:
    value = metric(panel_text, label)
    assert value is not None, f"no metric {label!r} in:\n{panel_text[:2000]}"
    return value


def rows_after(panel_text: str, heading: str) -> int:
    """The row count the app prints under a table's heading ("N rows")."""
    found = re.search(rf"{re.escape(heading)}\s*\n+\s*(\d+) rows", panel_text)
    assert found, f"no row count under {heading!r} in:\n{panel_text[:2000]}"
    return int(found.group(1))


def row_count(panel_text: str) -> int | None:
    """The count the app prints above a view's only table ("N rows"), None if there is none."""
    found = re.search(r"(\d+) rows", panel_text)
    return None if found is None else int(found.group(1))


def check_dashboard(settings: Settings) -> dict[str, object]:
    """Every view checked and screenshotted; returns the timings measured."""
    shutil.rmtree(ARTEFACTS, ignore_errors=True)
    ARTEFACTS.mkdir(parents=True)
    with served(settings) as url, browser_page() as page:
        first_render_s = load(page, url, LOAD_TIMEOUT_S)
        # in the tabs' order: ML, the last, draws no chart (checked below)
        texts = {view: view_when(page, view, *WAIT_FOR[view]) if view in WAIT_FOR else open_view(page, view)
                 for view in VIEWS}
        live = texts["Map Live"]
        assert lists_alert_zones(live), live[:2000]
        assert int(shown_metric(live, "Active store alerts")) > 0
        assert int(shown_metric(live, ALERTS_RAISED)) > 0
        assert re.match(r"2025-01-0[12] \d\d:00", shown_metric(live, "Simulated time"))  # 12:00 or later
        assert int(shown_metric(live, "People in store")) >= 0
        for heading in ("Shelf state", "Warehouse state", "Shelf lots", "Warehouse lots"):
            assert rows_after(texts["States"], heading) > 0, heading
        assert (row_count(texts["Alerts"]) or 0) > 0, texts["Alerts"][:2000]
        assert shows_pulse_kpis(texts["Pulse"]), texts["Pulse"][:2000]  # the pulse's windows have reached PostgreSQL
        assert "PASSWORD" not in texts["Debug/Config"] and settings.postgres_password not in texts["Debug/Config"]
        assert "No model yet" in texts["ML"]

        assert page.locator(".js-plotly-plot").count() == 0  # lazy tabs: the map is not drawn behind ML
        open_view(page, "Map Live")
        assert page.locator(".js-plotly-plot").count() == 1
        latencies = alert_latencies(page, settings, NEW_ALERTS, NEW_ALERTS_TIMEOUT_S)
    return {"first_render_s": round(first_render_s, 1),
            "alert_produced_to": [{"postgres_s": round(timing.to_postgres_s, 2), "map_s": round(timing.to_map_s, 2)}
                                  for timing in latencies]}


