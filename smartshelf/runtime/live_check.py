"""`smartshelf check` on a running stack: the simulated clock paused at a tick, the pipeline waited for up to that
tick, the invariants checked against it, the clock resumed.

The pause (`sim:pause`) always carries a TTL of the timeout plus PAUSE_MARGIN_S, so a check that is killed can
never stop the store for good; a check that outlasts its pause reports itself void (NotSettled) rather than
compare a twin and a world that moved on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import redis

from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.clock import encode_time
from smartshelf.errors import SmartShelfError
from smartshelf.runtime import mirror, supervisor
from smartshelf.runtime.sim import NotSettled, check, wait_for_lake, wait_settled
from smartshelf.settings import Settings

PAUSE_MARGIN_S = 30.0  # a check's pause outlives its timeout by this much: time to read and compare

Say = Callable[[str], None]


def wait_for_pipeline(settings: Settings, tick: datetime, timeout_s: float, say: Say) -> bool:
    """Wait until the apps, the lake and the PostgreSQL mirror (if Kafka Connect runs) have caught up with
    the paused clock at `tick`; raises NotSettled after `timeout_s`. True if the mirror runs."""
    deadline = time.monotonic() + timeout_s

    def left() -> float:
        return max(deadline - time.monotonic(), 0.0)

    say(f"check: clock paused at {encode_time(tick)}; waiting up to {timeout_s:g}s for the pipeline")
    wait_settled(settings, tick, timeout_s, lambda behind: say(f"check: waiting for {'; '.join(behind)}"))
    wait_for_lake(settings, left())
    mirrored = any(s.name == "connect" and s.healthy for s in supervisor.status(settings))
    if mirrored:
        try:
            mirror.wait_caught_up(settings, left())
        except SmartShelfError as exc:  # the one thing it raises: not caught up in time
            raise NotSettled(str(exc)) from exc
    return mirrored


def compare(settings: Settings, tick: datetime, mirrored: bool) -> dict[str, object]:
    """The invariants of the settled twin, and PostgreSQL against the topics if `mirrored`, as JSON."""
    # removals run on the clock's watermark, which lags its time by a step until it moves on
    checks = check(settings, watermark=tick - timedelta(seconds=settings.step_seconds))
    result = checks.as_json()
    if not mirrored:
        return {**result, "postgres_mirror_ok": None}  # Kafka Connect is not running: nothing to compare
    differences = mirror.differences(settings)
    weights = mirror.shelf_weight_mismatches(settings)
    return {**result, "ok": checks.ok and not differences and not weights, "postgres_mirror_ok": not differences,
            "postgres_mirror_differences": differences[:5], "postgres_shelf_weights_ok": not weights,
            "postgres_shelf_weight_mismatches": weights}


def live_check(settings: Settings, timeout_s: float, say: Say) -> dict[str, object]:
    """Pause, wait, compare, resume: the check's JSON, with the tick checked (`at`) and its wall time. Raises
    NotSettled if the pipeline did not catch up in time, SmartShelfError if there is no clock to pause."""
    began = time.monotonic()
    clock = SimClock(redis_client(settings))
    try:
        clock.now()  # one clear line, and no pause left behind, when there is no clock to pause
    except redis.ConnectionError as exc:
        raise SmartShelfError(f"cannot reach Redis at {settings.redis_host}:{settings.redis_port}: is the stack "
                              f"up (smartshelf up)?") from exc
    holder = f"smartshelf-check-{os.getpid()}"
    ttl_s = timeout_s + PAUSE_MARGIN_S
    clock.pause(holder, ttl_s)
    try:
        tick = clock.now()
        mirrored = wait_for_pipeline(settings, tick, timeout_s, say)
        clock.pause(holder, ttl_s)  # renewed for the comparisons, which take a while on a long-running store
        result = compare(settings, tick, mirrored)
        if clock.now() != tick:
            raise NotSettled(f"the check outlasted its pause ({ttl_s:g}s) and the clock moved on: its result is void")
    finally:
        clock.resume(holder)
    return {**result, "at": encode_time(tick), "check_s": round(time.monotonic() - began, 1)}
