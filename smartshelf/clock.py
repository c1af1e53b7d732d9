"""The simulated clock: its Redis keys, its tick plan and the lockstep rule. Pure; the Redis side is
smartshelf.adapters.redis_clock and the service that advances it is simulated_time/clock.py.

Every component takes "now" from `sim:now`; nothing reads wall time for business logic. In *demo* mode the
clock advances STEP_SECONDS every STEP_SECONDS / TIME_MULTIPLIER wall seconds. In *fast* mode it advances as
soon as every registered participant has caught up with the current tick, so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

SIM_NOW = "sim:now"  # ISO timestamp of the current tick
SIM_TODAY = "sim:today"  # ISO date of the current tick
SIM_END = "sim:end"  # ISO timestamp at which the run ends
SIM_DONE = "sim:done"  # set once the clock has reached the end
# participants of the lockstep: name -> JSON {"kind": "tick"} or {"kind": "offsets", "topics": [...]}
SIM_PARTICIPANTS = "sim:participants"
SIM_TICKS = "sim:ticks"  # tick participants: name -> ISO time of the last tick they finished
SIM_OFFSETS_PREFIX = "sim:offsets:"  # offset participants: hash "topic:partition" -> next offset to read


class ClockMode(StrEnum):
    DEMO = "demo"
    FAST = "fast"


def encode_time(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def decode_time(text: str | bytes) -> datetime:
    return datetime.fromisoformat(text.decode() if isinstance(text, bytes) else text)


@dataclass(frozen=True)
class ClockPlan:
    start: datetime
    step: timedelta
    days: int

    @property
    def end(self) -> datetime:
        return self.start + timedelta(days=self.days)

    def ticks_after(self, now: datetime) -> Iterator[datetime]:
        """The ticks after `now` up to and including the end; the last one lands exactly on the end."""
        t = now
        while t < self.end:
            t = min(t + self.step, self.end)
            yield t


def today(now: datetime) -> date:
    return now.date()


def offsets_key(name: str) -> str:
    return f"{SIM_OFFSETS_PREFIX}{name}"


def partition_field(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


def behind_ticks(done: Mapping[str, datetime | None], tick: datetime) -> list[str]:
    """Tick participants that have not finished `tick`."""
    return sorted(name for name, last in done.items() if last is None or last < tick)


def behind_offsets(positions: Mapping[str, Mapping[str, int]], topics: Mapping[str, list[str]],
                   ends: Mapping[str, int]) -> list[str]:
    """Offset participants whose position is short of the end offset of a partition of a topic they read.

    positions: participant -> {"topic:partition": next offset}; topics: participant -> topics it reads;
    ends: "topic:partition" -> end offset.
    """
    behind = []
    for name, read_topics in topics.items():
        position = positions.get(name, {})
        for field, end in ends.items():
            if field.rsplit(":", 1)[0] in read_topics and position.get(field, 0) < end:
                behind.append(name)
                break
    return sorted(behind)
