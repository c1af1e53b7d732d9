"""`smartshelf check` on a running demo-speed stack (the `make up` path: clock at TIME_MULTIPLIER=10, sensors,
bridge, the Spark apps, Kafka Connect): it pauses the clock, answers within its timeout, and the clock
moves on afterwards at its pace; a pause nobody lifts expires; a pipeline that cannot settle gives exit code 2
and one line naming who is behind; no stack gives one clear line."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.bridge import stats as bridge_stats
from smartshelf.clock import decode_time
from smartshelf.errors import SmartShelfError
from smartshelf.runtime import supervisor
from smartshelf.runtime.live_check import PAUSE_MARGIN_S
from smartshelf.runtime.scratch import make_run_dir
from smartshelf.runtime.sim import SERVICES, _participants_expected
from smartshelf.settings import Settings
from tests.conftest import initialised_stack, isolated_settings, settings_env

pytestmark = pytest.mark.integration

SMARTSHELF = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "smartshelf")
MULTIPLIER = 10  # the reference demo speed (`make up`), at STEP_SECONDS=1
LAGGARD = "test-laggard"  # a participant that never reports a tick: the pipeline can never settle
KILLED = "test-killed-check"  # a pause holder that never resumes


def _check(settings: Settings, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    run = subprocess.run([SMARTSHELF, "check", *args], env=settings_env(settings), capture_output=True, text=True,
                         timeout=300)
    return run, time.monotonic() - began


def _wait_running(settings: Settings, timeout_s: float = 300.0) -> None:
    """Every service has joined the clock and sensor events reach Kafka."""
    clock = SimClock(redis_client(settings))
    deadline = time.monotonic() + timeout_s
    while not (_participants_expected() <= set(clock.participants())
               and sum(v for k, v in bridge_stats(settings).items() if k.startswith("delivered:")) > 0):
        assert time.monotonic() < deadline, f"the demo did not get going: {sorted(clock.participants())}"
        time.sleep(0.5)


def _moves_after(clock: SimClock, t: datetime, timeout_s: float = 30.0) -> bool:
    return clock.wait_after(t, timeout_s) is not None


@pytest.fixture(scope="module")
def demo() -> Iterator[Settings]:
    run_dir = make_run_dir("smartshelf-live-check-")
    settings = isolated_settings(run_dir, use_simulated_time=True, sim_mode="demo", time_multiplier=MULTIPLIER)
    try:
        with initialised_stack(settings):
            supervisor.start(settings, [*SERVICES, "clock"])
            _wait_running(settings)
            yield settings
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def test_check_pauses_the_demo_answers_within_its_timeout_and_resumes(demo: Settings) -> None:
    clock = SimClock(redis_client(demo))
    time.sleep(5)  # the store at work a little: customers in the store, events in flight
    before = clock.now()
    run, wall_s = _check(demo, "--timeout", "60")
    returned = time.monotonic()
    assert run.returncode == 0, run.stderr + run.stdout
    result = json.loads(run.stdout)
    assert result["ok"] is True and result["twin_matches_world"] and result["conservation_ok"], result
    assert result["postgres_mirror_ok"] is True, result
    # the timeout bounds the wait for the pipeline; reading and comparing come after it, within the pause's
    # margin (the clock is never held longer than timeout + margin: the pause's TTL). A busy machine took 63 s.
    assert result["check_s"] < 60 + PAUSE_MARGIN_S and wall_s < 60 + PAUSE_MARGIN_S + 15, (  # +: the CLI's start-up
        result["check_s"], wall_s)
    print(f"live check: {result['check_s']} s inside the command, {wall_s:.1f} s wall")
    at = decode_time(result["at"])
    assert at >= before
    assert "clock paused at" in run.stderr and "Traceback" not in run.stderr
    assert clock.paused() is None
    assert _moves_after(clock, at), "the clock did not move again after the check"
    # at demo pace from the resume on (+1 s: the CLI's exit after it): it does not make up the paused time, which
    # would put it check_s * MULTIPLIER simulated seconds ahead in a burst
    time.sleep(1)
    since_resume_s = time.monotonic() - returned + 1
    assert (clock.now() - at).total_seconds() <= since_resume_s * MULTIPLIER * 1.2, result["check_s"]


def test_a_pause_holds_the_clock_still_and_expires_by_itself(demo: Settings) -> None:
    """A check killed while it holds the clock (no resume) stops the store only until its pause expires."""
    clock = SimClock(redis_client(demo))
    clock.pause(KILLED, ttl_s=3)
    held = clock.now()
    time.sleep(1)
    assert clock.now() == held  # at demo pace it would have moved 10 simulated seconds
    clock.resume("someone-else")  # only the holder lifts a pause
    assert clock.paused() == KILLED
    with pytest.raises(SmartShelfError, match=f"already paused by {KILLED}"):
        clock.pause("another-check", ttl_s=5)
    assert _moves_after(clock, held, timeout_s=10), "the pause did not expire"
    assert clock.paused() is None


def test_a_pipeline_that_cannot_settle_exits_2_naming_who_is_behind(demo: Settings) -> None:
    clock = SimClock(redis_client(demo))
    clock.register_tick_participant(LAGGARD)
    try:
        run, wall_s = _check(demo, "--timeout", "6")
    finally:
        clock.unregister(LAGGARD)
    assert run.returncode == 2, run.stderr + run.stdout
    assert run.stdout == "" and "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert lines[-1].startswith("not settled: the pipeline did not catch up with "), lines
    assert f"in 6s; behind: {LAGGARD} (no tick yet)" in lines[-1], lines  # the whole line: no wrapping
    assert f"check: waiting for {LAGGARD} (no tick yet)" in run.stderr  # the progress, every few seconds
    assert wall_s < 6 + 15
    assert clock.paused() is None
    assert _moves_after(clock, clock.now()), "the clock did not move again after the failed check"


def test_without_a_stack_or_a_clock_a_check_says_so_in_one_line(scratch_dir: Path) -> None:
    settings = isolated_settings(scratch_dir)  # on free ports: nothing listens there yet
    nothing = _check(settings)[0]
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == (f"error: cannot reach Redis at 127.0.0.1:{settings.redis_port}: is the stack "
                                      f"up (smartshelf up)?")
    try:
        supervisor.start(settings, ["redis"])
        no_clock = _check(settings)[0]
        assert no_clock.returncode == 1
        assert no_clock.stderr.strip() == "error: the simulated clock is not running (no 'sim:now' in Redis)"
        assert SimClock(redis_client(settings)).paused() is None  # and it left no pause behind
    finally:
        supervisor.stop(settings)
