"""What every long-running service shares: a stop flag set by SIGTERM/SIGINT, a heartbeat in Redis that the
supervisor's health probe reads (`smartshelf status`), every thread's stack written to its log on SIGUSR1 (what
a hung service was doing: the watchdog and `sim` ask before they give up on one), and `serve`, the loop that
outlives transient faults.

Transient faults (Kafka, PostgreSQL or Redis not answering for a while) do not end a service served by `serve`:
it drops its service object, waits with a capped exponential backoff with jitter (beating its heartbeat when it
can), and builds the object again from what is durable — the same recovery as after a kill -9, which every such
service is tested for, without losing the process. Any other error ends the process, with its message."""

from __future__ import annotations

import faulthandler
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TypeVar

import psycopg2
import redis
import tenacity

from smartshelf import logs
from smartshelf.errors import Unavailable, first_line

HEARTBEAT_KEY = "svc:heartbeat"  # hash: service name -> wall time of its last beat
HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_STALE_S = 15.0
STACKS_SIGNAL = signal.SIGUSR1
# what waiting may fix: a server down, restarting or slow; psycopg2's OperationalError covers a lost connection
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    Unavailable, redis.ConnectionError, redis.TimeoutError, psycopg2.OperationalError, psycopg2.InterfaceError)
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0

Service = TypeVar("Service")


class Lifecycle:
    def __init__(self, name: str, client: redis.Redis) -> None:
        self.name = name
        self.redis = client
        self.stopping = False
        self._last_beat = 0.0
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        faulthandler.register(STACKS_SIGNAL, all_threads=True)  # to stderr: the service's log

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def beat(self) -> None:
        now = time.time()
        if now - self._last_beat >= HEARTBEAT_EVERY_S:
            self.redis.hset(HEARTBEAT_KEY, self.name, f"{now:.3f}")
            self._last_beat = now


    def pause(self, seconds: float) -> None:
        """Sleep, beating meanwhile when Redis answers; wake early when asked to stop."""
        deadline = time.monotonic() + seconds
        while not self.stopping and (left := deadline - time.monotonic()) > 0:
            try:
                self.beat()
            except redis.RedisError:
                pass  # Redis may be the server that is down
            time.sleep(min(left, HEARTBEAT_EVERY_S / 2))

    @contextmanager
    def beating(self) -> Iterator[None]:
        """Beat from a background thread meanwhile: for a long start-up (a SparkSession and its queries take
        10-30 s on a busy machine) that would otherwise look dead, or alive by a killed predecessor's beat."""
        done = threading.Event()

        def beat_until_done() -> None:
            while not done.wait(HEARTBEAT_EVERY_S / 2):
                self.beat()

        self.beat()
        thread = threading.Thread(target=beat_until_done, name=f"{self.name}-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()


def heartbeat_age(client: redis.Redis, name: str) -> float | None:
    """Seconds since the service last beat, None if it never did."""
    value = client.hget(HEARTBEAT_KEY, name)
    return time.time() - float(value) if value is not None else None


def serve(life: Lifecycle, logger: logging.Logger, build: Callable[[], Service],
          step: Callable[[Service], object]) -> Service | None:
    """Call `step` on the service `build` makes, beating before each step, until asked to stop; a transient error
    (TRANSIENT_ERRORS) in either drops the service and builds it again after a backoff. Returns the last service
    built (None if stopped before one was)."""
    built: list[Service] = []

    def one_step() -> None:
        try:
            if not built:
                built.append(build())
            life.beat()
            step(built[0])
        except TRANSIENT_ERRORS:
            built.clear()
            raise

    def report(state: tenacity.RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logs.warning(logger, "a server is unavailable: building the service again after a pause",
                     attempt=state.attempt_number, error=first_line(error)[:300] if error else "")

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(TRANSIENT_ERRORS),
        wait=tenacity.wait_random_exponential(multiplier=BACKOFF_FIRST_S, max=BACKOFF_MAX_S),
        stop=lambda state: life.stopping, sleep=life.pause, before_sleep=report, reraise=True)
    while not life.stopping:
        try:
            retrying(one_step)
        except TRANSIENT_ERRORS:
            if not life.stopping:
                raise
    return built[0] if built else None
