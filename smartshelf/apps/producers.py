"""The store's sensors: the world (smartshelf.world) advanced with the simulated clock, its events written to
Redis Streams.

Exactly once into Redis: each tick's events, the world's new state and the tick report are one Redis
transaction (MULTI/EXEC), so a producer killed at any moment resumes from the last tick it wrote, and
writes the next tick's events once. The three sensor kinds (foot traffic, shelf, POS) share one world —
a customer cannot pick from an empty shelf, and pays for the net of what was picked — so they are three
streams written by one process, not three processes that would have to share the world's state.

Bounded: the producers write only while Redis uses less than half of its `maxmemory` (REDIS_MAXMEMORY_MB);
above, they wait for the bridge to drain the streams (it deletes what Kafka has taken), then catch up with the
clock in writes of at most an hour of simulated time (or one tick), each small enough for the headroom left.
Redis evicts nothing.

Before each step the world reads what the loop told it since the last one (staff moves of lots on
shelf_events, daily_discounts: `read_feedback`); how far it has read is part of the state it writes.

The world is built from the settings by `world_of` only (store, SIM_SEED, SIM_SCENARIOS), so whoever rebuilds
it to check the twin (smartshelf.runtime.sim) rebuilds the world the producers run.
"""

from __future__ import annotations

import time
from datetime import timedelta

import redis

from smartshelf import logs
from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.lifecycle import Lifecycle, serve
from smartshelf.errors import SmartShelfError
from smartshelf.ingress import parse_record
from smartshelf.registry import stream_of, topic
from smartshelf.runtime.jobs import load_store
from smartshelf.schemas import DailyDiscount, ShelfEvent
from smartshelf.settings import Settings
from smartshelf.world import Scenario, World, WorldEvents, WorldState, parse_scenarios

NAME = "producers"
WORLD_STATE_KEY = "world:state"
STREAM_FIELD = b"event"  # each stream entry holds one JSON record in this field
WAIT_S = 1.0
ROOM_SHARE = 0.5  # of Redis's maxmemory the producers may fill; the rest is headroom for one tick and the others
ROOM_WAIT_S = 0.2
# of simulated time per write, or a tick if longer: after a wait for room the world catches up with the clock in
# writes this size, each of which must fit the headroom above ROOM_SHARE (a lockstep tick is never cut: the clock
# waits for the producers, so they are never more than one tick behind)
MAX_WRITE_SPAN = timedelta(hours=1)
DEMO_WRITE_EVERY_S = 0.5


def scenarios_of(settings: Settings) -> tuple[Scenario, ...]:
    """SIM_SCENARIOS, read; a bad one is the user's to fix, in one line."""
    try:
        return parse_scenarios(settings.sim_scenarios)
    except ValueError as exc:
        raise SmartShelfError(f"SIM_SCENARIOS={settings.sim_scenarios!r}: {exc}") from exc


def world_of(settings: Settings) -> World:
    """The world of the loaded store, as the settings make it."""
    scenarios, store = scenarios_of(settings), load_store(settings)
    try:
        return World(store, settings.sim_seed, scenarios=scenarios)
    except ValueError as exc:  # scenarios the world cannot tell apart
        raise SmartShelfError(f"SIM_SCENARIOS={settings.sim_scenarios!r}: {exc}") from exc


def load_state(client: redis.Redis) -> WorldState | None:
    raw = client.get(WORLD_STATE_KEY)
    return WorldState.model_validate_json(raw) if raw is not None else None


def write_tick(client: redis.Redis, clock: SimClock, state: WorldState, events: WorldEvents) -> None:
    """The tick's events, the world's state and the tick report, all or nothing."""
    pipe = client.pipeline(transaction=True)
    for topic_name, records in events.by_topic().items():
        stream = stream_of(topic_name)
        for record in records:
            pipe.xadd(stream, {STREAM_FIELD: record.model_dump_json().encode()})
    pipe.set(WORLD_STATE_KEY, state.model_dump_json())
    clock.tick_done(NAME, state.clock, pipe)
    pipe.execute()


FEEDBACK_TOPICS = ("shelf_events", "daily_discounts")


def read_feedback(kafka: KafkaAdapter, state: WorldState) -> WorldState:
    """The world told what the loop published since it last read: staff moves and the days' discounts.
    (Invalid records are skipped here: the state apps report them to dead_letters.)"""
    partitions = [tp for name in FEEDBACK_TOPICS for tp in kafka.partitions_for(name)]
    ends = kafka.end_offsets(partitions)
    start = {tp: state.feedback_offsets.get(f"{tp.topic}:{tp.partition}", 0) for tp in partitions}
    moves, discounts = [], []
    for record in kafka.read(partitions, start, ends):
        parsed = parse_record(topic(record.topic), record.value)
        if isinstance(parsed, ShelfEvent) and parsed.by_staff:
            moves.append(parsed)
        elif isinstance(parsed, DailyDiscount):
            discounts.append(parsed)
    return World.receive(state, moves, discounts, {f"{tp.topic}:{tp.partition}": end for tp, end in ends.items()})


def has_room(client: redis.Redis) -> bool:
    """Whether Redis uses less than ROOM_SHARE of its maxmemory (always, with no cap)."""
    memory = client.info("memory")
    cap = int(memory.get("maxmemory", 0))
    return not cap or int(memory["used_memory"]) < ROOM_SHARE * cap


class Producers:
    def __init__(self, settings: Settings, world: World | None = None) -> None:
        self.waiting_for_room = False  # set while a step found Redis too full to write
        self.redis = redis_client(settings)
        self.clock = SimClock(self.redis)
        self.world = world or world_of(settings)
        self.state = load_state(self.redis)
        self.kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
        self.clock.register_tick_participant(NAME)
        self.write_span = max(MAX_WRITE_SPAN, timedelta(seconds=settings.step_seconds))

    def _start_state(self, timeout_s: float) -> WorldState | None:
        """The world as the store opens, at the clock's first time (SIM_START, or the wall clock's time)."""
        start = self.clock.wait_after(None, timeout_s)
        if start is None:
            return None
        state = self.world.initial_state(start)
        write_tick(self.redis, self.clock, state, WorldEvents())
        return state

    def step(self, timeout_s: float = WAIT_S) -> int:
        """Advance the world to the clock's time once it moves on; returns the events written."""
        if self.state is None:
            self.state = self._start_state(timeout_s)
            return 0
        self.waiting_for_room = not has_room(self.redis)
        if self.waiting_for_room:
            time.sleep(ROOM_WAIT_S)
            return 0
        now = self.clock.wait_after(self.state.clock, timeout_s)
        if now is None:
            return 0
        until = min(now, self.state.clock + self.write_span)
        state, events = self.world.advance(read_feedback(self.kafka, self.state), until)
        write_tick(self.redis, self.clock, state, events)
        self.state = state
        return len(events)


def main(settings: Settings) -> None:
    logger = logs.configure(NAME, settings.log_level)
    life = Lifecycle(NAME, redis_client(settings))
    written = 0
    # demo: at most one world write per DEMO_WRITE_EVERY_S (the events do not depend on how ticks are cut, so
    # coarser steps only add latency; each write carries the world's state, ~150 KB, to Redis's AOF)
    pause_s = DEMO_WRITE_EVERY_S if settings.sim_mode == "demo" else 0.0
    worlds: list[World] = []  # built once (from the store in PostgreSQL): it does not change under a service

    def build() -> Producers:
        if not worlds:
            worlds.append(world_of(settings))
        producers = Producers(settings, worlds[0])
        logs.info(logger, "started", resumed=producers.state is not None)
        return producers

    def step(producers: Producers) -> None:
        nonlocal written
        began = time.monotonic()
        was_waiting = producers.waiting_for_room
        written += producers.step()
        if producers.waiting_for_room and not was_waiting:
            logs.warning(logger, "Redis is half full: waiting for the bridge to drain the streams")
        time.sleep(max(pause_s - (time.monotonic() - began), 0.0))

    producers = serve(life, logger, build, step)
    if producers is not None:
        producers.clock.unregister(NAME)  # stopped on purpose: the lockstep clock must not wait for it
    logs.info(logger, "stopped", events=written)
