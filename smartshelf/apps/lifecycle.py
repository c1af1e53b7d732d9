"""What every long-running service shares: a stop flag set by SIGTERM/SIGINT, and a heartbeat in Redis
that the supervisor's health probe reads (`smartshelf status`)."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

import redis

HEARTBEAT_KEY = "svc:heartbeat"  # hash: service name -> wall time of its last beat
HEARTBEAT_EVERY_S = 1.0
HEARTBEAT_STALE_S = 15.0


class Lifecycle:
    def __init__(self, name: str, client: redis.Redis) -> None:
        self.name = name
        self.redis = client
        self.stopping = False
        self._last_beat = 0.0
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)

    def _stop(self, signum: int, frame: FrameType | None) -> None:
        self.stopping = True

    def beat(self) -> None:
        now = time.time()
        if now - self._last_beat >= HEARTBEAT_EVERY_S:
            self.redis.hset(HEARTBEAT_KEY, self.name, f"{now:.3f}")
            self._last_beat = now


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
