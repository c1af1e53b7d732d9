"""KafkaAdapter.read's time limit is on a stall, not on the whole read: a long topic read at a steady pace
finishes, one that stops delivering is one clear error. A fake consumer on a fake clock; no broker."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from smartshelf.adapters import kafka
from smartshelf.adapters.kafka import KafkaAdapter, Partition
from smartshelf.errors import Unavailable
from tests.unit.fake_kafka import FakeMessage

TOPIC = Partition("pulse_windows", 0)
STEP_S = 20.0  # fake seconds per consume() call: less than the limit, far more in total


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


class _Consumer:
    """Delivers one record per consume() call, STEP_S fake seconds apart, and none from `stall_at` on."""

    def __init__(self, clock: _Clock, stall_at: int) -> None:
        self.clock, self.stall_at, self.next = clock, stall_at, 0

    def assign(self, partitions: Any) -> None:
        pass

    def pause(self, partitions: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self.clock.now += STEP_S
        if self.next >= self.stall_at:
            return []
        self.next += 1
        return [FakeMessage(TOPIC.topic, TOPIC.partition, self.next - 1, b"v")]


def _read(monkeypatch: pytest.MonkeyPatch, records: int, stall_at: int) -> list[int]:
    clock = _Clock()
    monkeypatch.setattr(kafka, "time", SimpleNamespace(monotonic=clock.monotonic))
    adapter = KafkaAdapter("127.0.0.1:1")
    monkeypatch.setattr(adapter, "raw_consumer", lambda: _Consumer(clock, stall_at))
    return [r.offset for r in adapter.read([TOPIC], end={TOPIC: records}, timeout_s=30.0)]


def test_a_steady_read_longer_than_the_limit_finishes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert _read(monkeypatch, records=50, stall_at=50) == list(range(50))  # 1,000 fake seconds in all


def test_a_read_that_stalls_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(Unavailable, match=r"pulse_windows.*no record in 30.0s"):
        _read(monkeypatch, records=50, stall_at=10)
