"""Integration fixtures: one real stack for the session, and one fast simulated day shared by the tests that need
a whole day run (the sim's, and the dashboard's browser check made while that day runs on)."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from datetime import datetime

import pytest

from smartshelf.runtime import supervisor
from smartshelf.runtime.fuzz import Fuzzer
from smartshelf.runtime.scratch import make_run_dir
from smartshelf.runtime.sim import run_sim
from smartshelf.settings import Settings
from tests.conftest import isolated_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """One real embedded stack (Apache Kafka, PostgreSQL, Redis) on free ports for the whole test session."""
    run_dir = make_run_dir("smartshelf-stack-")
    settings = isolated_settings(run_dir)
    try:
        supervisor.start(settings)
        yield settings
    finally:
        supervisor.stop(settings)
        shutil.rmtree(run_dir, ignore_errors=True)


FAST_DAY_SEED = 7
FAST_DAY_STEP_SECONDS = 7200  # 2-h ticks: half the lockstep's settles and checks of 1-h ticks, for the suite's time
FAST_DAY_FUZZ = 1200  # bad sensor records sent into the day (smartshelf.runtime.fuzz), in chunks from 09:00


@pytest.fixture(scope="session")
def fast_day() -> dict[str, object]:
    """The summary of a fast simulated day (seed 7, 2-h ticks, the invariants checked at every tick) into which
    FAST_DAY_FUZZ bad sensor records are sent (their report under "fuzz"), with under "dashboard" what the
    browser check started at 12:00 found (its timings, or the error it raised: that fails the browser test
    only). One day for all three: each alone would cost the suite 3-5 minutes more. The check runs in a thread of
    its own while the day goes on (the per-tick checker, polled by the run's loop, holds the clock until it has
    checked a tick: a check inside the loop would stop the day it watches)."""
    from tests.integration.dashboard_checks import CHECK_FROM, check_dashboard

    found: dict[str, object] = {}
    checks: list[threading.Thread] = []

    def check(settings: Settings, now: datetime) -> None:
        try:
            found["dashboard"] = {**check_dashboard(settings), "checked_at": now.isoformat()}
        except Exception as error:  # noqa: BLE001 - reported by the browser test, not by every user of the day
            found["dashboard"] = error

    fuzzer = Fuzzer(FAST_DAY_FUZZ, FAST_DAY_SEED)

    def at_noon(settings: Settings, now: datetime | None) -> None:
        fuzzer(settings, now)
        if not checks and now is not None and now >= settings.sim_start + CHECK_FROM:
            checks.append(threading.Thread(target=check, args=(settings, now), daemon=True))
            checks[0].start()

    def checked(settings: Settings) -> dict[str, object]:
        for thread in checks:  # on the finished stack, before it goes
            thread.join()
        return fuzzer.after(settings)

    base = isolated_settings(make_run_dir("smartshelf-day-"), step_seconds=FAST_DAY_STEP_SECONDS)
    try:
        summary = run_sim(base, 1, FAST_DAY_SEED, None, fast=True, during=at_noon, check_every_tick=True,
                          after=checked)
    finally:
        shutil.rmtree(base.run_dir, ignore_errors=True)
    return {**summary, **found}
