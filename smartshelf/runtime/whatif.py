"""The supplier-policy what-if on scratch stacks: one fast run to day N (same seed), its stack stopped cleanly and
kept as a snapshot; then from that snapshot, M more simulated days under each SUPPLIER_POLICY, compared by what
each did to the store (smartshelf.ml.whatif).

A snapshot is the stopped stack's whole run dir (brokers' logs, PostgreSQL, Redis, Spark checkpoints, the lake,
the models) with the settings it ran with. An arm puts it back at the same path and runs on the same ports, so
every server, checkpoint and table finds itself where it was, and resumes: the clock from its time, the producers
from the world's state in Redis, the Spark apps from their checkpoints. The forecasting service joins the
lockstep in an arm, so each day's forecast is published before the clock moves past RUN_HOUR.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Literal

from smartshelf import clock as c
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.inference import NAME as INFERENCE
from smartshelf.errors import SmartShelfError
from smartshelf.ml.whatif import PolicyOutcome, Window, outcome
from smartshelf.runtime import jobs, supervisor
from smartshelf.runtime.scratch import exit_on_term
from smartshelf.runtime.sim import SERVICES, Progress, _rows, _wait_for_participants, drive, run_sim, summarise
from smartshelf.schemas import ShelfEvent, SupplierOrder, WarehouseEvent
from smartshelf.settings import Settings
from smartshelf.store import clock_start

SETTINGS_FILE, SUMMARY_FILE, RUN = "settings.json", "summary.json", "run"
Policy = Literal["rules", "ml"]


def keep(settings: Settings, snapshot: Path) -> None:
    """Stop the stack (every process, cleanly) and copy its run dir into `snapshot`, owners and all (PostgreSQL
    refuses a data dir its user does not own)."""
    supervisor.stop(settings)
    shutil.rmtree(snapshot, ignore_errors=True)
    snapshot.mkdir(parents=True)
    _copy(settings.run_dir, snapshot / RUN)
    (snapshot / SETTINGS_FILE).write_text(json.dumps(settings.as_env(), indent=1, sort_keys=True))


def _copy(source: Path, target: Path) -> None:
    done = subprocess.run(["cp", "-a", str(source), str(target)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SmartShelfError(f"could not copy {source} to {target}: {done.stderr.strip()}")


def base_run(base: Settings, days: int, step_seconds: int, snapshot: Path,
             train: Callable[[Settings], dict[str, object]], on_progress: Progress = lambda now, end: None
             ) -> dict[str, object]:
    """A fast run of `days` days, `train` on its lake, then the stopped stack kept in `snapshot`; the run's
    summary (with what `train` returned) is kept there too and returned."""
    def train_and_keep(settings: Settings) -> dict[str, object]:
        trained = train(settings)
        keep(settings, snapshot)
        return trained

    summary = run_sim(base.model_copy(update={"step_seconds": step_seconds, "supplier_policy": "rules"}), days,
                      base.sim_seed, None, fast=True, on_progress=on_progress, after=train_and_keep)
    (snapshot / SUMMARY_FILE).write_text(json.dumps(summary, indent=1, default=str))
    return summary


def snapshot_settings(snapshot: Path) -> Settings:
    path = snapshot / SETTINGS_FILE
    if not path.is_file():
        raise SmartShelfError(f"{snapshot} is not a what-if snapshot: no {SETTINGS_FILE}")
    return Settings(**json.loads(path.read_text()))


def run_arm(snapshot: Path, days: int, policy: Policy, prepare: Callable[[Settings], dict[str, object]] | None = None,
            on_progress: Progress = lambda now, end: None) -> dict[str, object]:
    """`days` more simulated days from the snapshot under `policy`: the run's summary and the policy's outcome
    over those days. `prepare` runs on the resumed servers before the services start (what it returns is the
    result's "prepared"): the ml arm trains its model there, with this version's code, so that the forecast due
    when the arm resumes already uses it. The snapshot is left as it was."""
    kept = snapshot_settings(snapshot)
    settings = kept.model_copy(update={"sim_days": kept.sim_days + days, "supplier_policy": policy})
    began = time.monotonic()
    if settings.run_dir.exists():
        raise SmartShelfError(f"{settings.run_dir} exists: another arm of this snapshot is running, or one was "
                              f"killed (remove it)")
    _copy(snapshot / RUN, settings.run_dir)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, exit_on_term) if in_main else None  # so `finally` stops the stack
    try:
        supervisor.start(settings)
        redis_client(settings).delete(c.SIM_DONE)  # the clock finished at day N; it runs on to the new end
        prepared = prepare(settings) if prepare else {}
        supervisor.start(settings, (*SERVICES, INFERENCE))
        _wait_for_participants(settings, SimClock(redis_client(settings)), also=(INFERENCE,))
        end = drive(settings, (*SERVICES, INFERENCE), on_progress)
        summary = summarise(settings, time.monotonic() - began)
        window = Window(end - timedelta(days=days), end)
        return {**summary, "policy": policy, "window": [window.start.isoformat(), window.end.isoformat()],
                "outcome": asdict(policy_outcome(settings, window)), "prepared": prepared}
    finally:
        supervisor.stop(settings)
        shutil.rmtree(settings.run_dir, ignore_errors=True)
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def policy_outcome(settings: Settings, window: Window) -> PolicyOutcome:
    """What the run's supplier policy did in `window`, from the lake (settled: summarise waited for it)."""
    store = jobs.load_store(settings)
    return outcome(store, clock_start(store, settings.sim_start), _rows(settings, "raw_shelf_events", ShelfEvent),
                   _rows(settings, "raw_wh_events", WarehouseEvent),
                   _rows(settings, "wh_supplier_orders", SupplierOrder), window)
