"""The inference service: once per simulated day, at RUN_HOUR, the newest registered model forecasts every shelf
from the day that ended at midnight (smartshelf.runtime.ml_jobs.predict_day): predictions into
analytics.ml_predictions_log, pending plans onto wh_supplier_plan (ordered when SUPPLIER_POLICY=ml).

Idempotent per simulated day: the day it last ran is kept in Redis, and what a run writes depends only on that
day's scheduled time and the model (upserted rows, plan ids per shelf and day), so a restart the same day writes
nothing twice. Each run has a process of its own (`run_apart`). Without a model, or with one it cannot read, it
says so once a day and the rule's plans go on.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from datetime import date, datetime
from datetime import time as clock_time

import redis

from smartshelf import logs
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.lifecycle import Lifecycle
from smartshelf.clock import ClockMode
from smartshelf.errors import SmartShelfError
from smartshelf.loop import daily_run_due
from smartshelf.settings import Settings

NAME = "inference"
LAST_DAY_KEY = "ml:inference:last_day"
POLL_S = 1.0
LOCKSTEP_POLL_S = 0.02  # in lockstep every tick waits for this service: look often
LAKE_TIMEOUT_S = 120.0


def last_day(client: redis.Redis) -> date | None:
    value = client.get(LAST_DAY_KEY)
    return date.fromisoformat(value.decode()) if value else None


def run_for(settings: Settings, day: date) -> str:
    """The forecast scheduled on `day` (at RUN_HOUR); what it did, in a few words."""
    from smartshelf.runtime import ml_jobs
    from smartshelf.runtime.sim import wait_for_lake

    at = datetime.combine(day, clock_time(settings.run_hour))
    try:
        wait_for_lake(settings, LAKE_TIMEOUT_S)  # the lake sink is not in the clock's lockstep
        result = ml_jobs.predict_day(settings, ml_jobs.build_features(settings, at), at)
    except SmartShelfError as exc:
        return f"no forecast, the rule's plans go on: {exc}"
    return f"{len(result.predictions)} predictions, {len(result.plans)} plans"


def run_apart(settings: Settings, day: date) -> str:
    """`run_for` in a process of its own: XGBoost, pandas and the lake reader (~250 MiB) are loaded for the run
    and given back after it, instead of staying resident all day in a service that works a few seconds a day."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            return pool.submit(run_for, settings, day).result()
        except BrokenProcessPool:
            return "no forecast, the rule's plans go on: the forecasting process died"


def poll(settings: Settings, client: redis.Redis, clock: SimClock, forecast: Callable[[Settings, date], str],
         in_lockstep: bool) -> str | None:
    """One look at the clock: the day's forecast if it is due (what it did, in a few words); in lockstep, then
    the tick reported done, so the clock waits for the forecast's plans and for those who read them."""
    now = clock.now_or_none()
    day = daily_run_due(last_day(client), now, settings.run_hour) if now is not None else None
    outcome = None
    if day is not None:
        outcome = forecast(settings, day)
        client.set(LAST_DAY_KEY, day.isoformat())
    if in_lockstep and now is not None and _behind(clock.last_tick_done(NAME), now):
        clock.tick_done(NAME, now)
    return None if day is None else f"{day.isoformat()}: {outcome}"


def _behind(done: datetime | None, now: datetime) -> bool:
    return done is None or done < now


def main(settings: Settings) -> None:
    logger = logs.configure(NAME, settings.log_level)
    client = redis_client(settings)
    life, clock = Lifecycle(NAME, client), SimClock(client)
    in_lockstep = settings.use_simulated_time and settings.sim_mode == ClockMode.FAST
    if in_lockstep:  # the clock waits for each tick's forecast, if one is due, before it moves on
        clock.register_tick_participant(NAME)
    logs.info(logger, "started", run_hour=settings.run_hour, model=settings.model_name, lockstep=in_lockstep)

    def forecast(settings: Settings, day: date) -> str:
        with life.beating():  # features and a forecast take seconds; the supervisor must not think it dead
            return run_apart(settings, day)

    try:
        while not life.stopping:
            life.beat()
            done = poll(settings, client, clock, forecast, in_lockstep)
            if done is not None:
                logs.warning(logger, "forecast", outcome=done)
            time.sleep(LOCKSTEP_POLL_S if in_lockstep else POLL_S)
    finally:
        if in_lockstep and life.stopping:
            clock.unregister(NAME)  # stopped on purpose: the lockstep clock must not wait for it
