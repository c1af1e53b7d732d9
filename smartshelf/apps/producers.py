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

A chain runs one world per store (STORES), all on the one clock: each tick advances every store's world to the
same time, and their events, states and the tick report are one transaction. A store's world draws from its own
seed (the chain's seed for the first store, smartshelf.store.store_seed), so it does not depend on how many
stores run beside it.

The worlds are built from the settings by `worlds_of` only (the stores, SIM_SEED, SIM_SCENARIOS), so whoever
rebuilds them to check the twin (smartshelf.runtime.sim) rebuilds the worlds the producers run.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import datetime, timedelta

import redis

from smartshelf import logs
from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.lifecycle import Lifecycle, serve
from smartshelf.errors import SmartShelfError
from smartshelf.ingress import parse_record
from smartshelf.registry import stream_of, topic
from smartshelf.runtime.jobs import load_stores
from smartshelf.schemas import DailyDiscount, ShelfEvent
from smartshelf.settings import Settings
from smartshelf.store import StoreData, store_seed
from smartshelf.world import Scenario, World, WorldEvents, WorldState, parse_scenarios

NAME = "producers"
WORLD_STATE_KEY = "world:state:"  # + the store id: each store's world
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


Worlds = dict[str, World]  # by store id, in the running stores' order
States = dict[str, WorldState]


def world_of(settings: Settings, store: StoreData, scenarios: tuple[Scenario, ...]) -> World:
    """A store's world, as the settings make it."""
    try:
        return World(store, store_seed(settings.sim_seed, store.store_id), scenarios=scenarios)
    except ValueError as exc:  # scenarios the world cannot tell apart
        raise SmartShelfError(f"SIM_SCENARIOS={settings.sim_scenarios!r}: {exc}") from exc


def worlds_of(settings: Settings, stores: Mapping[str, StoreData] | None = None) -> Worlds:
    """The world of each running store (loaded from PostgreSQL unless given), as the settings make it."""
    scenarios = scenarios_of(settings)
    return {store_id: world_of(settings, store, scenarios)
            for store_id, store in (stores if stores is not None else load_stores(settings)).items()}


def load_states(client: redis.Redis, store_ids: list[str]) -> States | None:
    """Each store's world as last written, or None before the first write."""
    raw = client.mget([f"{WORLD_STATE_KEY}{store_id}" for store_id in store_ids])
    if any(value is None for value in raw):
        return None
    return {store_id: WorldState.model_validate_json(value) for store_id, value in zip(store_ids, raw, strict=True)}


def write_tick(client: redis.Redis, clock: SimClock, states: States, events: dict[str, WorldEvents]) -> None:
    """The tick's events, every store's world state and the tick report, all or nothing."""
    pipe = client.pipeline(transaction=True)
    for store_events in events.values():
        for topic_name, records in store_events.by_topic().items():
            stream = stream_of(topic_name)
            for record in records:
                pipe.xadd(stream, {STREAM_FIELD: record.model_dump_json().encode()})
    for store_id, state in states.items():
        pipe.set(f"{WORLD_STATE_KEY}{store_id}", state.model_dump_json())
    clock.tick_done(NAME, _clock_of(states), pipe)
    pipe.execute()


def _clock_of(states: States) -> datetime:
    """The worlds' time: they advance together."""
    (clock,) = {state.clock for state in states.values()}
    return clock


FEEDBACK_TOPICS = ("shelf_events", "daily_discounts")


def read_feedback(kafka: KafkaAdapter, states: States) -> States:
    """Each store's world told what the loop published for it since they last read (together): staff moves and the
    days' discounts. (Invalid records are skipped here: the state apps report them to dead_letters; so are records
    of stores that do not run.)"""
    partitions = [tp for name in FEEDBACK_TOPICS for tp in kafka.partitions_for(name)]
    ends = kafka.end_offsets(partitions)
    read_to = next(iter(states.values())).feedback_offsets
    start = {tp: read_to.get(f"{tp.topic}:{tp.partition}", 0) for tp in partitions}
    moves: dict[str, list[ShelfEvent]] = {store_id: [] for store_id in states}
    discounts: dict[str, list[DailyDiscount]] = {store_id: [] for store_id in states}
    for record in kafka.read(partitions, start, ends):
        parsed = parse_record(topic(record.topic), record.value)
        if isinstance(parsed, ShelfEvent) and parsed.by_staff and parsed.store_id in moves:
            moves[parsed.store_id].append(parsed)
        elif isinstance(parsed, DailyDiscount) and parsed.store_id in discounts:
            discounts[parsed.store_id].append(parsed)
    offsets = {f"{tp.topic}:{tp.partition}": end for tp, end in ends.items()}
    return {store_id: World.receive(state, moves[store_id], discounts[store_id], offsets)
            for store_id, state in states.items()}


def has_room(client: redis.Redis) -> bool:
    """Whether Redis uses less than ROOM_SHARE of its maxmemory (always, with no cap)."""
    memory = client.info("memory")
    cap = int(memory.get("maxmemory", 0))
    return not cap or int(memory["used_memory"]) < ROOM_SHARE * cap


class Producers:
    def __init__(self, settings: Settings, worlds: Worlds | None = None) -> None:
        self.waiting_for_room = False  # set while a step found Redis too full to write
        self.redis = redis_client(settings)
        self.clock = SimClock(self.redis)
        self.worlds = worlds or worlds_of(settings)
        self.states = load_states(self.redis, list(self.worlds))
        self.kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
        self.clock.register_tick_participant(NAME)
        self.write_span = max(MAX_WRITE_SPAN, timedelta(seconds=settings.step_seconds))

    def _start_states(self, timeout_s: float) -> States | None:
        """The worlds as the stores open, at the clock's first time (SIM_START, or the wall clock's time)."""
        start = self.clock.wait_after(None, timeout_s)
        if start is None:
            return None
        states = {store_id: world.initial_state(start) for store_id, world in self.worlds.items()}
        write_tick(self.redis, self.clock, states, {})
        return states

    def step(self, timeout_s: float = WAIT_S) -> int:
        """Advance every world to the clock's time once it moves on; returns the events written."""
        if self.states is None:
            self.states = self._start_states(timeout_s)
            return 0
        self.waiting_for_room = not has_room(self.redis)
        if self.waiting_for_room:
            time.sleep(ROOM_WAIT_S)
            return 0
        at = _clock_of(self.states)
        now = self.clock.wait_after(at, timeout_s)
        if now is None:
            return 0
        until = min(now, at + self.write_span)
        told = read_feedback(self.kafka, self.states)
        advanced = {store_id: self.worlds[store_id].advance(state, until) for store_id, state in told.items()}
        states = {store_id: state for store_id, (state, _) in advanced.items()}
        events = {store_id: store_events for store_id, (_, store_events) in advanced.items()}
        write_tick(self.redis, self.clock, states, events)
        self.states = states
        return sum(len(store_events) for store_events in events.values())


def main(settings: Settings) -> None:
    logger = logs.configure(NAME, settings.log_level)
    life = Lifecycle(NAME, redis_client(settings))
    written = 0
    # demo: at most one world write per DEMO_WRITE_EVERY_S (the events do not depend on how ticks are cut, so
    # coarser steps only add latency; each write carries the world's state, ~150 KB, to Redis's AOF)
    pause_s = DEMO_WRITE_EVERY_S if settings.sim_mode == "demo" else 0.0
    built: list[Worlds] = []  # built once (from the stores in PostgreSQL): they do not change under a service

    def build() -> Producers:
        if not built:
            built.append(worlds_of(settings))
        producers = Producers(settings, built[0])
        logs.info(logger, "started", resumed=producers.states is not None, stores=len(built[0]))
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
