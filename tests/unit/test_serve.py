"""`serve`, the loop of every long-running service: a transient fault rebuilds the service after a pause, any
other error ends it. Redis is replaced by a stand-in that only takes heartbeats (no server here)."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator

import pytest
import redis

from smartshelf.apps import lifecycle
from smartshelf.apps.lifecycle import Lifecycle, serve
from smartshelf.errors import SmartShelfError, Unavailable


class Heartbeats:
    def __init__(self) -> None:
        self.beats = 0

    def hset(self, key: str, field: str, value: str) -> None:
        self.beats += 1


@pytest.fixture(autouse=True)
def short_backoff_and_own_signals(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tiny pauses; and pytest's signal handlers back after each test (a Lifecycle installs its own)."""
    monkeypatch.setattr(lifecycle, "BACKOFF_FIRST_S", 0.001)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_a_transient_fault_rebuilds_the_service_and_the_loop_goes_on() -> None:
    life = Lifecycle("test", Heartbeats())  # type: ignore[arg-type]
    built: list[list[int]] = []
    faults = [redis.ConnectionError("Redis went away"), Unavailable("kafka: reading did not finish in 30s")]

    def build() -> list[int]:
        built.append([])
        return built[-1]

    def step(service: list[int]) -> None:
        service.append(1)
        if len(service) == 2 and faults:
            raise faults.pop(0)
        if sum(map(len, built)) >= 8:
            life.stopping = True

    last = serve(life, logging.getLogger("test"), build, step)
    assert [len(s) for s in built] == [2, 2, 4]  # two faults, each on a service's second step
    assert last is built[-1]


def test_an_error_retrying_cannot_fix_ends_the_service() -> None:
    life = Lifecycle("test", Heartbeats())  # type: ignore[arg-type]
    builds = []

    def step(service: object) -> None:
        raise SmartShelfError("topic 'x' does not exist")

    with pytest.raises(SmartShelfError, match="does not exist"):
        serve(life, logging.getLogger("test"), lambda: builds.append(1), step)
    assert builds == [1]


def test_a_fault_while_stopping_ends_the_loop_quietly() -> None:
    life = Lifecycle("test", Heartbeats())  # type: ignore[arg-type]

    def step(service: object) -> None:
        life.stopping = True
        raise redis.ConnectionError("Redis went away")

    assert serve(life, logging.getLogger("test"), lambda: "service", step) is None
