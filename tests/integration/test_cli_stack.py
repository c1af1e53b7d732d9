"""The `make up` path end to end through the CLI, on its own scratch run directory."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from smartshelf.adapters import postgres
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.bridge import stats as bridge_stats
from smartshelf.errors import SmartShelfError
from smartshelf.registry import TOPICS, table
from smartshelf.runtime import supervisor
from smartshelf.runtime.scratch import make_run_dir
from smartshelf.settings import Settings
from tests.conftest import isolated_settings, settings_env

SMARTSHELF = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "smartshelf")


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SMARTSHELF, *args], env=env, capture_output=True, text=True, timeout=300)


def _wait_for_events(settings: Settings, timeout_s: float = 60.0) -> None:
    """The demo runs: the clock moves and sensor events reach Kafka."""
    deadline = time.monotonic() + timeout_s
    while sum(v for k, v in bridge_stats(settings).items() if k.startswith("delivered:")) == 0:
        assert time.monotonic() < deadline, "no sensor event reached Kafka"
        time.sleep(0.2)
    assert SimClock(redis_client(settings)).now() > settings.sim_start


def _state_rows(settings: Settings) -> dict[str, int]:
    with postgres.connect(settings, "reader") as conn, conn.cursor() as cur:
        counts = {}
        for name in ("shelf_state", "wh_state"):
            cur.execute(f"SELECT count(*) FROM {table(name).pg}")
            counts[name] = cur.fetchone()[0]
    return counts


def _wait_restarted(settings: Settings, name: str, killed_pid: int, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        row = next((r for r in supervisor.status(settings) if r.name == name), None)
        if row is not None and row.healthy and row.pid != killed_pid:
            return
        assert time.monotonic() < deadline, f"{name} was not restarted: {row}"
        time.sleep(0.5)


def test_up_status_down_up_keeps_the_store_and_topics() -> None:
    run_dir = make_run_dir("smartshelf-cli-")
    settings = isolated_settings(run_dir, use_simulated_time=True, time_multiplier=600, watchdog_hung_after_s=20)
    env = settings_env(settings)
    try:
        first = _cli(env, "up")
        started = time.monotonic()
        assert first.returncode == 0, first.stderr
        assert "store-init: 9" in first.stdout and f"kafka-init: {len(TOPICS)}" in first.stdout

        status = _cli(env, "status", "--json")
        assert status.returncode == 0, status.stderr
        rows = json.loads(status.stdout)
        assert all(row["healthy"] for row in rows)
        assert {"producers", "bridge", "clock", "spark", "api", "mlflow", "watchdog", "watchdog-standby"} <= {
            row["name"] for row in rows}
        _wait_for_events(settings)
        stores = httpx.get(f"http://127.0.0.1:{settings.api_port}/stores", timeout=30)  # the live API is up
        assert stores.status_code == 200 and stores.json()["data"][0]["shelves"] > 1000, stores.text
        experiments = httpx.get(f"http://127.0.0.1:{settings.mlflow_port}/api/2.0/mlflow/experiments/search",
                                params={"max_results": 10}, timeout=30)  # the MLflow UI's API over its store
        assert experiments.status_code == 200 and "experiments" in experiments.json(), experiments.text
        # every shelf and warehouse item reaches PostgreSQL with the pipeline's first batch (its opening state),
        # not only those an event has touched
        shelves, deadline = stores.json()["data"][0]["shelves"], time.monotonic() + 120
        while (counts := _state_rows(settings)) != {"shelf_state": shelves, "wh_state": shelves}:
            assert time.monotonic() < deadline, f"{counts} after 120 s, {shelves} shelves"
            time.sleep(1)
        print(f"every shelf's state in PostgreSQL {time.monotonic() - started:.0f} s after `up` returned")

        # a crashed service is started again by the watchdog, and the clock goes on from where it was
        killed = supervisor.kill_hard(settings, "clock")
        stopped_at = SimClock(redis_client(settings)).now()
        _wait_restarted(settings, "clock", killed)
        deadline = time.monotonic() + 60
        while SimClock(redis_client(settings)).now() <= stopped_at:
            assert time.monotonic() < deadline, "the restarted clock does not move"
            time.sleep(0.2)

        # a stopped service (SIGSTOP: alive, its heartbeat frozen) is killed and started again by the watchdog
        frozen = next(row.pid for row in supervisor.status(settings) if row.name == "bridge")
        assert frozen is not None
        os.kill(frozen, signal.SIGSTOP)
        _wait_restarted(settings, "bridge", frozen, timeout_s=20 + 60)

        # the watchdog and its standby restart each other
        _wait_restarted(settings, "watchdog", supervisor.kill_hard(settings, "watchdog"))
        _wait_restarted(settings, "watchdog-standby", supervisor.kill_hard(settings, "watchdog-standby"))

        assert _cli(env, "down").returncode == 0
        assert _cli(env, "status").returncode == 1  # down is not healthy

        second = _cli(env, "up")
        assert second.returncode == 0, second.stderr
        assert "store-init: 0" in second.stdout  # the store loaded before is still there
        assert "kafka-init: 0" in second.stdout  # and so are the topics
        with postgres.connect(settings, "reader") as conn, conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM ref.store_inventory")
            assert cur.fetchone()[0] > 1000
    finally:
        _cli(env, "down")
        shutil.rmtree(run_dir, ignore_errors=True)


def test_server_that_fails_to_start_names_itself_and_shows_its_log(scratch_dir: Path) -> None:
    settings = isolated_settings(scratch_dir)
    supervisor.start(settings, ["postgres"])
    supervisor.stop(settings)
    (settings.run_dir / "postgres" / "PG_VERSION").write_text("99\n")  # a cluster this server cannot read
    with pytest.raises(SmartShelfError) as failure:
        supervisor.start(settings, ["postgres"])
    message = str(failure.value)
    assert message.startswith("postgres exited during start-up; last lines of")
    assert "incompatible" in message
