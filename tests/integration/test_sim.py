"""The simulation through the real stack: a fast simulated day of the closed loop (the shared `fast_day`, Spark in
local mode) whose twin matches the world and conserves stock, and that gives the same digest (and the same pulse
windows) when run again with the same seed on a Spark standalone cluster with the Spark driver (-9, with its JVM
and workers) and a cluster worker killed in the middle; `smartshelf sim`'s bad arguments. The local day also
takes bad sensor records (`smartshelf fuzz`'s), each refused once."""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from smartshelf.runtime import supervisor
from smartshelf.runtime.fuzz import CATEGORIES
from smartshelf.runtime.sim import run_sim
from smartshelf.settings import Settings
from smartshelf.streaming.commit import EXIT_AFTER_PUBLISH
from tests.integration.conftest import FAST_DAY_FUZZ, FAST_DAY_SEED, FAST_DAY_STEP_SECONDS

pytestmark = pytest.mark.integration

SMARTSHELF = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "smartshelf")


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SMARTSHELF, "sim", *args], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "SMARTSHELF_LOG_LEVEL": "WARNING"})


def test_a_fast_day_closes_the_loop_and_the_twin_matches_the_world(fast_day: dict[str, object]) -> None:
    summary = fast_day
    print("fast day:", {key: summary[key] for key in ("wall_s", "delta")})
    assert summary["checks_ok"] and summary["conservation_ok"] and summary["twin_matches_world"], summary
    assert summary["postgres_mirror_ok"], summary
    tables = summary["postgres_rows"]
    assert isinstance(tables, dict)  # every ops table a store manager queries is filled, the orders among them
    assert tables["ops.wh_supplier_orders"] == summary["supplier_orders"] > 0, tables
    assert tables["ops.wh_supplier_receipts"] == summary["supplier_receipts"] > 0, tables
    assert tables["ops.alerts"] == summary["alerts"] and tables["ops.pos_transactions"] == summary["sales"], tables
    assert summary["expired_lots_on_shelves"] == 0
    assert summary["ticks_checked"] == 13 and summary["tick_check_failures"] == []  # the start and 12 ticks of 2 h
    assert summary["events"] > 10_000 and summary["sales"] > 500  # type: ignore[operator]
    # every bad record sent in is a dead letter once, with its reason, and nothing restarted; the twin still
    # equals the world, which never saw them
    fuzz = summary["fuzz"]
    assert isinstance(fuzz, dict) and fuzz["sent"] == FAST_DAY_FUZZ == summary["dead_letters"], fuzz
    assert fuzz["letters"]["exactly_once"], fuzz["letters"]
    assert set(fuzz["by_category"]) == set(CATEGORIES), fuzz["by_category"]
    assert fuzz["restarted"] == [] and fuzz["query_failures"] == 0, fuzz
    assert set(summary) >= {"events", "alerts", "restocks", "supplier_orders", "dead_letters", "digest",
                            "conservation_ok"}
    # the loop turned: low shelves restocked from the warehouse and refilled, the warehouse reordered, and
    # near-expiry lots discounted
    assert summary["restocks"] > 50 and summary["refills"] > 50 and summary["supplier_orders"] > 10, summary  # type: ignore[operator]
    assert summary["alerts_by_type"]["low_stock"] > 0 and summary["discounts"] > 0, summary  # type: ignore[index,operator]
    # the pulse's windows closed through the day, none of its events came too late for them
    pulse = summary["pulse"]
    assert isinstance(pulse, dict) and pulse["windows"]["1min"] > 500 and pulse["windows"]["5min"] > 500, pulse
    assert pulse["late_dropped"] == {"pulse": 0}, pulse


def _executors_run(settings: Settings) -> dict[str, object]:
    """Where the cluster's workers ran executors: worker -> its executors' folders (app-*/<executor id>)."""
    return {"executors": {worker.name: sorted(str(p.relative_to(worker)) for p in worker.glob("work/app-*/*"))
                          for worker in sorted(settings.run_dir.glob("spark-worker-*"))}}


def test_on_a_cluster_with_the_driver_and_a_worker_killed_mid_run_the_digest_is_the_same(
        fast_day: dict[str, object]) -> None:
    """The same day on a Spark standalone cluster (a master and two workers, one core each), crashed three ways:
    a loop app's drill dies once between publishing a batch's events and committing it (the replay must not
    publish them again); a kill -9 from 13:00 of the driver, its JVM and its Python workers; a kill -9 from
    15:00 of a worker with its executor. Each is started again; the result must be the uninterrupted local run's.
    Kafka Connect is killed -9 from 15:00 and restarted: PostgreSQL must still equal the topics. (The full
    fault set of `smartshelf chaos`, with the broker, PostgreSQL, Redis, the bridge, the producers and the clock
    killed too, left one shelf event twice on 2026-12-02: issue 23, open; its faults join this test once fixed.)"""
    kills: dict[str, datetime] = {}
    restarts: list[datetime | None] = []
    start = Settings().sim_start
    kill_at = {"spark": timedelta(hours=5), "spark-worker-2": timedelta(hours=7), "connect": timedelta(hours=7)}

    def crash_and_restart(settings: Settings, now: datetime | None) -> None:
        for name, after in kill_at.items():
            if name not in kills and now is not None and now >= start + after:
                supervisor.kill_hard(settings, name)
                kills[name] = now
        running = {row.name for row in supervisor.status(settings) if row.running}
        if "spark" not in running:
            restarts.append(now)
        if down := [name for name in ("spark-worker-2", "spark", "connect") if name not in running]:
            supervisor.start(settings, down)

    base = Settings().model_copy(update={"step_seconds": FAST_DAY_STEP_SECONDS, "spark_workers": 2,
                                         "crash_point": EXIT_AFTER_PUBLISH})
    summary = run_sim(base, 1, FAST_DAY_SEED, None, fast=True, during=crash_and_restart,
                      may_die=("spark", "spark-worker-2", "connect"), after=_executors_run)
    print(f"wall: local {fast_day['wall_s']} s, cluster {summary['wall_s']} s; executors {summary['executors']}")
    assert set(kills) == set(kill_at) and len(restarts) == 2, (kills, restarts)
    executors = summary["executors"]
    assert isinstance(executors, dict) and set(executors) == {"spark-worker-1", "spark-worker-2"}, executors
    assert all(executors.values()), f"a worker ran no executor: {executors}"
    assert summary["checks_ok"] and summary["postgres_mirror_ok"], summary
    for field in ("digest", "events", "sales", "alerts", "restocks", "refills", "supplier_orders", "discounts",
                  "removals"):
        assert summary[field] == fast_day[field], field
    assert summary["dead_letters"] == fast_day["dead_letters"] - FAST_DAY_FUZZ == 0  # the local day's are the fuzz's
    assert summary["pulse"]["digest"] == fast_day["pulse"]["digest"]  # type: ignore[index]  # same windows, once


def test_bad_arguments_get_one_line() -> None:
    missing = _sim("--csv-dir", "/nonexistent/store")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: --csv-dir /nonexistent/store: not a folder"
    zero = _sim("--days", "0")
    assert zero.returncode == 2 and "Traceback" not in zero.stderr
