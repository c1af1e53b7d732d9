"""The simulation through the real stack: a fast simulated day of the closed loop (the shared `fast_day`, Spark in
local mode) whose twin matches the world and conserves stock, and that gives the same digest (and the same pulse
windows) when run again with the same seed on a Spark standalone cluster through `smartshelf chaos`'s faults (every
component killed -9 in turn, one paused); `smartshelf sim`'s bad arguments. Both days take bad sensor records
(`smartshelf fuzz`'s), each refused once."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path

import pytest

from smartshelf.runtime.chaos import ALL_SERVICES, KILLED, PAUSED, Injector, verdict
from smartshelf.runtime.fuzz import CATEGORIES, Fuzzer
from smartshelf.runtime.sim import run_sim
from smartshelf.settings import Settings
from smartshelf.streaming.commit import EXIT_AFTER_PUBLISH
from tests.integration.conftest import FAST_DAY_FUZZ, FAST_DAY_SEED, FAST_DAY_STEP_SECONDS

pytestmark = pytest.mark.integration

SMARTSHELF = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "smartshelf")
ARTEFACTS = Path(__file__).resolve().parents[2] / "test-artefacts" / "sim"


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


def test_on_a_cluster_through_every_fault_the_outcome_is_the_same(fast_day: dict[str, object]) -> None:
    """`smartshelf chaos` on the same day, run on a Spark standalone cluster (a master and two workers, one core
    each): the broker, PostgreSQL, Redis, the Spark driver (its JVM and Python workers), Kafka Connect, the
    bridge, the producers, the clock and a cluster worker (with its executor) are each killed -9 at a seeded
    moment and started again, the bridge is paused, and a loop app's drill dies once between publishing a batch's
    events and committing it (the replay must not publish them again); the local day's bad records are sent in
    too. The outcome must be the undisturbed local run's: digest, counts, pulse windows, no event lost or twice,
    PostgreSQL = topics."""
    base = Settings().model_copy(update={"step_seconds": FAST_DAY_STEP_SECONDS, "spark_workers": 2,
                                         "crash_point": EXIT_AFTER_PUBLISH})
    injector = Injector(FAST_DAY_SEED, 1, killed=(*KILLED, "spark-worker-2"), paused=PAUSED)
    fuzzer = Fuzzer(FAST_DAY_FUZZ, FAST_DAY_SEED)  # the same bad records as the local day's

    def faults_and_fuzz(settings: Settings, now: datetime | None) -> None:
        injector(settings, now)
        fuzzer(settings, now)

    summary = run_sim(base, 1, FAST_DAY_SEED, None, fast=True, during=faults_and_fuzz, may_die=ALL_SERVICES,
                      after=lambda settings: {**_executors_run(settings), **fuzzer.after(settings)})
    result = verdict(fast_day, summary, injector)
    print(f"wall: local {fast_day['wall_s']} s, cluster with faults {summary['wall_s']} s; "
          f"executors {summary['executors']}")
    ARTEFACTS.mkdir(parents=True, exist_ok=True)  # the fault table, kept for the README (not asserted)
    (ARTEFACTS / "chaos.json").write_text(json.dumps({**result, "fuzz": summary["fuzz"]}, indent=2) + "\n")
    assert [fault["component"] for fault in injector.done] == [*KILLED, "spark-worker-2", PAUSED], injector.done
    executors = summary["executors"]
    assert isinstance(executors, dict) and set(executors) == {"spark-worker-1", "spark-worker-2"}, executors
    assert all(executors.values()), f"a worker ran no executor: {executors}"
    assert result["ok"], json.dumps({**{k: v for k, v in result.items() if k != "faults"},  # in full: not cut
                                     "fuzz": summary["fuzz"]}, default=str)
    assert summary["fuzz"]["letters"]["exactly_once"], summary["fuzz"]  # type: ignore[index]


def test_bad_arguments_get_one_line() -> None:
    missing = _sim("--csv-dir", "/nonexistent/store")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: --csv-dir /nonexistent/store: not a folder"
    zero = _sim("--days", "0")
    assert zero.returncode == 2 and "Traceback" not in zero.stderr
