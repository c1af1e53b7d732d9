"""The simulated clock service: advances `sim:now` from SIM_START by STEP_SECONDS up to SIM_DAYS later.

Before each step the clock publishes its watermark (ClockTick on clock_ticks): everything up to the current
time is in. Apps that act at a time of day act on it. In fast mode the watermark comes once the pipeline has
settled the tick, and the pipeline settles its consequences before the clock moves on.

demo: one step every STEP_SECONDS / TIME_MULTIPLIER wall seconds.
fast: lockstep. Before the next tick, every tick participant must have finished the current one, and every
offset participant must have read its topics up to their end offsets; as a participant may write to a topic
another one reads, this is repeated until the end offsets no longer move (the pipeline is quiet).
With USE_SIMULATED_TIME=0 the clock follows the wall clock instead (store-local time, one step per second).

In every mode the clock does not move while someone holds a pause (`smartshelf check`, SimClock.pause); after
one, demo pacing starts again from the time it resumed: it does not race to make up the paused wall time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from smartshelf import clock as c
from smartshelf import logs
from smartshelf.adapters.kafka import KafkaAdapter, Outgoing, Partition
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.lifecycle import Lifecycle, serve
from smartshelf.registry import CLOCK_TICKS, topic
from smartshelf.schemas import ClockTick
from smartshelf.settings import Settings

NAME = "clock"
POLL_S = 0.02
REPORT_STUCK_EVERY_S = 30.0
PAUSED_POLL_S = 0.1


def tick_lags(done: Mapping[str, datetime | None], tick: datetime) -> list[str]:
    """Each tick participant behind `tick` (c.behind_ticks), with the last tick it finished."""
    return [f"{name} at {c.encode_time(last)}" if (last := done[name]) is not None else f"{name} (no tick yet)"
            for name in c.behind_ticks(done, tick)]


def offset_lags(positions: Mapping[str, Mapping[str, int]], topics: Mapping[str, list[str]],
                ends: Mapping[str, int]) -> list[str]:
    """Each offset participant short of its topics' ends (c.behind_offsets), with how many records it has
    left to read and on which topics."""
    lags = []
    for name in c.behind_offsets(positions, topics, ends):
        left: dict[str, int] = {}
        for field, end in ends.items():
            name_of_topic = field.rsplit(":", 1)[0]
            if name_of_topic in topics[name] and (n := end - positions.get(name, {}).get(field, 0)) > 0:
                left[name_of_topic] = left.get(name_of_topic, 0) + n
        lags.append(f"{name} {sum(left.values())} records behind on {','.join(sorted(left))}")
    return lags


def next_step_due(due: float, step_s: float, resumed_at: float | None) -> float:
    """When the next demo step is due (monotonic seconds): one step after this one was due, so a slow step is
    made up; after a pause, one step after the clock resumed, so the paused wall time is not."""
    return (resumed_at if resumed_at is not None else due) + step_s


class Lockstep:
    """Waits until the pipeline has fully caught up with a tick."""

    def __init__(self, clock: SimClock, kafka: KafkaAdapter, on_wait: Callable[[list[str]], None],
                 report_every_s: float = REPORT_STUCK_EVERY_S, expected: frozenset[str] = frozenset()) -> None:
        """`on_wait` hears who is behind (tick_lags, offset_lags) every `report_every_s` while it waits;
        `expected` participants count as behind until they have joined (a stack still starting is not settled)."""
        self.clock = clock
        self.kafka = kafka
        self.on_wait = on_wait
        self.report_every_s = report_every_s
        self.expected = expected
        self.behind: list[str] = []  # who was behind at the last look
        self._partitions: dict[str, list[Partition]] = {}

    def ends(self, topics: set[str]) -> dict[str, int]:
        """"topic:partition" -> end offset, for every partition of these topics."""
        partitions = []
        for name in sorted(topics):
            if name not in self._partitions:
                self._partitions[name] = self.kafka.partitions_for(name)
            partitions.extend(self._partitions[name])
        return {c.partition_field(tp.topic, tp.partition): end for tp, end in self.kafka.end_offsets(partitions).items()}

    def lagging(self, tick: datetime, besides: str | None = None) -> list[str]:
        """Who (but `besides`) has not caught up with `tick`, and by how much; [] once the pipeline is quiet."""
        registered = self.clock.participants()
        if missing := sorted(self.expected - set(registered)):
            return [f"{name} (not joined yet)" for name in missing]
        participants = {n: p for n, p in registered.items() if n != besides}
        ticks_done = self.clock.ticks_done()
        lags = tick_lags({n: ticks_done.get(n) for n, p in participants.items() if p["kind"] == "tick"}, tick)
        if lags:
            return lags
        readers = {n: list(p["topics"]) for n, p in participants.items() if p["kind"] == "offsets"}  # type: ignore[call-overload]
        if not readers:
            return []
        topics = {t for read in readers.values() for t in read}
        ends = self.ends(topics)
        lags = offset_lags({n: self.clock.positions(n) for n in readers}, readers, ends)
        if not lags and self.ends(topics) != ends:
            return ["nobody, but new records arrived meanwhile"]
        return lags

    def settle(self, tick: datetime, stopping: Callable[[], bool], besides: str | None = None) -> bool:
        """True once everyone (but `besides`) has caught up with `tick`; False if asked to stop first (then
        `behind` says who was not there yet: it looks at least once)."""
        last_report = time.monotonic()
        while True:
            self.behind = self.lagging(tick, besides)
            if not self.behind:
                return True
            if stopping():
                return False
            if time.monotonic() - last_report > self.report_every_s:
                self.on_wait(self.behind)
                last_report = time.monotonic()
            time.sleep(POLL_S)


class Watermark:
    """Publishes the clock's watermark; in fast mode it waits for the pipeline before and after."""

    def __init__(self, kafka: KafkaAdapter, lockstep: Lockstep | None) -> None:
        self.producer = kafka.producer()
        self.lockstep = lockstep
        # a clock killed between publishing a tick and moving on starts again at that tick: publish it once
        self.last_published = last_tick(kafka)

    def publish(self, now: datetime, stopping: Callable[[], bool]) -> bool:
        """False if asked to stop first."""
        if self.lockstep is not None and not self.lockstep.settle(now, stopping):
            return False
        if self.last_published is None or now > self.last_published:
            tick = ClockTick(tick_id=f"tick-{c.encode_time(now)}", ts=now)
            self.producer.send_and_wait([Outgoing(CLOCK_TICKS, topic(CLOCK_TICKS).key_of(tick).encode(),
                                                tick.model_dump_json().encode())])
            self.last_published = now
        return self.lockstep is None or self.lockstep.settle(now, stopping)


def last_tick(kafka: KafkaAdapter) -> datetime | None:
    """The time of the last tick on clock_ticks, if any."""
    partitions = kafka.partitions_for(CLOCK_TICKS)
    ends = {tp: end for tp, end in kafka.end_offsets(partitions).items() if end > 0}
    ticks = [ClockTick.model_validate_json(record.value).ts
             for record in kafka.read(list(ends), start={tp: end - 1 for tp, end in ends.items()}, end=ends)
             if record.value is not None]
    return max(ticks, default=None)


def wall_clock_now(step_seconds: int) -> datetime:
    now = datetime.now().replace(microsecond=0)  # the one wall-clock read: USE_SIMULATED_TIME=0
    return now - timedelta(seconds=now.second % step_seconds)


def run(settings: Settings, life: Lifecycle, clock: SimClock, logger: logging.Logger) -> None:
    """Move the clock from where Redis says it is to its end, then stay up until stopped."""
    step = timedelta(seconds=settings.step_seconds)
    if not settings.use_simulated_time:
        while not life.stopping:
            life.beat()
            clock.set(wall_clock_now(settings.step_seconds))  # refused while paused; then on to the wall time
            time.sleep(1.0)
        return
    def stopping() -> bool:
        life.beat()
        return life.stopping

    plan = c.ClockPlan(settings.sim_start, step, settings.sim_days)
    now = clock.start(plan.start, plan.end)
    logs.info(logger, "started", mode=settings.sim_mode, now=c.encode_time(now), end=c.encode_time(plan.end))
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    lockstep = None
    if settings.sim_mode == c.ClockMode.FAST:
        lockstep = Lockstep(clock, kafka, lambda behind: logs.warning(logger, "waiting", behind=",".join(behind)))
    watermark = Watermark(kafka, lockstep)
    wall_step_s = settings.step_seconds / settings.time_multiplier
    next_wall = time.monotonic() + wall_step_s
    for tick in plan.ticks_after(now):
        if lockstep is None:
            while time.monotonic() < next_wall:
                if life.stopping:
                    return
                life.beat()
                time.sleep(min(POLL_S * 5, max(next_wall - time.monotonic(), 0)))
        if not watermark.publish(now, stopping):
            return
        life.beat()
        resumed_at = None
        while not clock.set(tick):  # paused: the check that holds it needs the time to stand still
            if stopping():
                return
            time.sleep(PAUSED_POLL_S)
            resumed_at = time.monotonic()
        next_wall = next_step_due(next_wall, wall_step_s, resumed_at)
        now = tick
    if watermark.publish(now, stopping):
        clock.finish()
        logs.info(logger, "finished", now=c.encode_time(now))
    while not life.stopping:  # stay up (healthy) until stopped, so `smartshelf status` does not see a crash
        life.beat()
        time.sleep(0.5)


def main(settings: Settings) -> None:
    from smartshelf.runtime.jobs import with_clock_start

    logger = logs.configure(NAME, settings.log_level)
    client = redis_client(settings)
    life = Lifecycle(NAME, client)

    def build() -> tuple[Settings, SimClock]:
        # a store whose data was made after SIM_START opens on its data's first day (smartshelf.store.clock_start)
        return (with_clock_start(settings) if settings.use_simulated_time else settings), SimClock(client)

    # after a transient fault, `run` starts again from the time Redis holds, as a restarted clock does
    serve(life, logger, build, lambda built: run(built[0], life, built[1], logger))
