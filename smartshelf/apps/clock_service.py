"""The simulated clock service: advances `sim:now` from SIM_START by STEP_SECONDS up to SIM_DAYS later.

Before each step the clock publishes its watermark (ClockTick on clock_ticks): everything up to the current
time is in. Apps that act at a time of day act on it. In fast mode the watermark comes once the pipeline has
settled the tick, and the pipeline settles its consequences before the clock moves on.

demo: one step every STEP_SECONDS / TIME_MULTIPLIER wall seconds.
fast: lockstep. Before the next tick, every tick participant must have finished the current one, and every
offset participant must have read its topics up to their end offsets; as a participant may write to a topic
another one reads, this is repeated until the end offsets no longer move (the pipeline is quiet).
With USE_SIMULATED_TIME=0 the clock follows the wall clock instead (store-local time, one step per second).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta

from kafka import TopicPartition

from smartshelf import clock as c
from smartshelf import logs
from smartshelf.adapters.kafka import KafkaAdapter, Outgoing, send_and_wait
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.lifecycle import Lifecycle
from smartshelf.registry import CLOCK_TICKS, topic
from smartshelf.schemas import ClockTick
from smartshelf.settings import Settings

NAME = "clock"
POLL_S = 0.02
REPORT_STUCK_EVERY_S = 30.0


class Lockstep:
    """Waits until the pipeline has fully caught up with a tick."""

    def __init__(self, clock: SimClock, kafka: KafkaAdapter, on_wait: Callable[[list[str]], None]) -> None:
        self.clock = clock
        self.kafka = kafka
        self.on_wait = on_wait
        self._partitions: dict[str, list[TopicPartition]] = {}

    def ends(self, topics: set[str]) -> dict[str, int]:
        """"topic:partition" -> end offset, for every partition of these topics."""
        partitions = []
        for name in sorted(topics):
            if name not in self._partitions:
                self._partitions[name] = self.kafka.partitions_for(name)
            partitions.extend(self._partitions[name])
        return {c.partition_field(tp.topic, tp.partition): end for tp, end in self.kafka.end_offsets(partitions).items()}

    def settle(self, tick: datetime, stopping: Callable[[], bool], besides: str | None = None) -> bool:
        """True once everyone (but `besides`) has caught up with `tick`; False if asked to stop first."""
        last_report = time.monotonic()
        while not stopping():
            participants = {n: p for n, p in self.clock.participants().items() if n != besides}
            ticks_done = self.clock.ticks_done()
            behind = c.behind_ticks({n: ticks_done.get(n) for n, p in participants.items() if p["kind"] == "tick"}, tick)
            if not behind:
                readers = {n: list(p["topics"]) for n, p in participants.items() if p["kind"] == "offsets"}  # type: ignore[call-overload]
                if not readers:
                    return True
                topics = {t for read in readers.values() for t in read}
                ends = self.ends(topics)
                positions = {n: self.clock.positions(n) for n in readers}
                behind = c.behind_offsets(positions, readers, ends)
                if not behind and self.ends(topics) == ends:  # and nobody wrote more meanwhile
                    return True
            if time.monotonic() - last_report > REPORT_STUCK_EVERY_S:
                self.on_wait(behind)
                last_report = time.monotonic()
            time.sleep(POLL_S)
        return False


class Watermark:
    """Publishes the clock's watermark; in fast mode it waits for the pipeline before and after."""

    def __init__(self, kafka: KafkaAdapter, lockstep: Lockstep | None) -> None:
        self.producer = kafka.producer()
        self.lockstep = lockstep

    def publish(self, now: datetime, stopping: Callable[[], bool]) -> bool:
        """False if asked to stop first."""
        if self.lockstep is not None and not self.lockstep.settle(now, stopping):
            return False
        tick = ClockTick(tick_id=f"tick-{c.encode_time(now)}", ts=now)
        send_and_wait(self.producer, [Outgoing(CLOCK_TICKS, topic(CLOCK_TICKS).key_of(tick).encode(),
                                               tick.model_dump_json().encode())])
        return self.lockstep is None or self.lockstep.settle(now, stopping)


def wall_clock_now(step_seconds: int) -> datetime:
    now = datetime.now().replace(microsecond=0)  # the one wall-clock read: USE_SIMULATED_TIME=0
    return now - timedelta(seconds=now.second % step_seconds)


def run(settings: Settings, life: Lifecycle, clock: SimClock) -> None:
    logger = logs.configure(NAME, settings.log_level)
    step = timedelta(seconds=settings.step_seconds)
    if not settings.use_simulated_time:
        while not life.stopping:
            life.beat()
            clock.set(wall_clock_now(settings.step_seconds))
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
            next_wall += wall_step_s
        if not watermark.publish(now, stopping):
            return
        life.beat()
        clock.set(tick)
        now = tick
    if watermark.publish(now, stopping):
        clock.finish()
        logs.info(logger, "finished", now=c.encode_time(now))
    while not life.stopping:  # stay up (healthy) until stopped, so `smartshelf status` does not see a crash
        life.beat()
        time.sleep(0.5)


def main(settings: Settings) -> None:
    client = redis_client(settings)
    run(settings, Lifecycle(NAME, client), SimClock(client))
