"""The redis→kafka bridge: sensor events from Redis Streams to Kafka, each exactly once.

At-least-once delivery plus dedup:
- entries are read with a consumer group and acknowledged (XACK, then deleted) only after the broker has
  acknowledged every record of the batch (acks=all, an idempotent producer: in order, no retry duplicated);
- each Kafka record carries a `dedup_id` header (the event's id; for a dead letter, its stream entry);
- the Kafka end offsets at the last acknowledgement are checkpointed in Redis in the same transaction as
  the XACK. After a crash, the records written since that checkpoint are read back and their ids skipped
  when the unacknowledged entries are delivered again.
Every entry is validated against its topic's schema, its shelves against the store's, and its event time against
the simulated clock's now (within MAX_EVENT_AHEAD_MINUTES / MAX_EVENT_LATE_MINUTES); and an event whose id was
already received (a sensor sending twice) is refused. Refused entries go to `dead_letters` with the reason and
the raw payload, and are counted in `bridge:stats`. The ids received are kept in Redis (`bridge:seen`, scored by
event time) for as long as the window accepts their time, and added in the transaction of the XACK.
"""

from __future__ import annotations

import os
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta


from smartshelf import logs
from smartshelf.adapters.kafka import KafkaAdapter, Outgoing, Partition
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.apps.lifecycle import Lifecycle, serve
from smartshelf.apps.producers import NAME as PRODUCERS, STREAM_FIELD
from smartshelf.ingress import EventWindow, Rejection, dead_letter, parse_record, unknown_place
from smartshelf.registry import DEAD_LETTERS, SENSOR_TOPICS, stream_of, topic, topic_of_stream
from smartshelf.runtime.jobs import load_stores
from smartshelf.settings import Settings

NAME = "bridge"
GROUP = "bridge"
CHECKPOINT_KEY = "bridge:kafka_offsets"  # "topic:partition" -> end offset at the last acknowledgement
STATS_KEY = "bridge:stats"
SEEN_KEY = "bridge:seen"  # sorted set: event id -> its event time (epoch s), while the window accepts that time
DEDUP_HEADER = "dedup_id"
BATCH = 5000
OUTPUT_TOPICS = (*SENSOR_TOPICS, DEAD_LETTERS)


@dataclass(frozen=True)
class Delivery:
    stream: str
    entry_id: bytes
    topic: str
    key: bytes
    value: bytes
    dedup_id: str
    timestamp_ms: int


def _epoch_ms(ts: datetime) -> int:
    # simulated times are naive store-local times; they are written as if UTC so they stay what they say
    return int(ts.replace(tzinfo=UTC).timestamp() * 1000)


def to_delivery(stream: str, entry_id: bytes, fields: dict[bytes, bytes], now: datetime,
                window: EventWindow | None = None, shelves: Mapping[str, Collection[str]] | None = None) -> Delivery:
    """What to send to Kafka for one stream entry: its validated record, or its dead letter. `now` is the
    simulated clock's; without a window (no clock yet) event times are not checked, without `shelves` (each running
    store's) stores and shelf ids are not."""
    source = topic_of_stream(stream)
    raw = fields.get(STREAM_FIELD)
    parsed = parse_record(source, raw) if raw is not None else Rejection(
        f"stream entry has no '{STREAM_FIELD.decode()}' field (fields: {sorted(f.decode() for f in fields)})")
    if shelves is not None and not isinstance(parsed, Rejection):
        parsed = unknown_place(parsed, shelves) or parsed
    if window is not None and not isinstance(parsed, Rejection):
        parsed = window.check(parsed.ts, now) or parsed  # type: ignore[attr-defined]
    if isinstance(parsed, Rejection):
        return _refused(stream, entry_id, raw, parsed.reason, now)
    return Delivery(stream, entry_id, source.name, source.key_of(parsed).encode(), parsed.model_dump_json().encode(),
                    source.id_of(parsed), _epoch_ms(parsed.ts))  # type: ignore[attr-defined]


def _refused(stream: str, entry_id: bytes, raw: bytes | None, reason: str, now: datetime) -> Delivery:
    letter = dead_letter(stream, raw, reason, now)
    return Delivery(stream, entry_id, DEAD_LETTERS, topic(DEAD_LETTERS).key_of(letter).encode(),
                    letter.model_dump_json().encode(), f"{stream}/{entry_id.decode()}", _epoch_ms(now))


def refuse_repeats(deliveries: list[Delivery], received: Collection[str], now: datetime) -> list[Delivery]:
    """The deliveries with each event whose id was `received` before, or earlier in the batch, refused."""
    seen, checked = set(received), []
    for delivery in deliveries:
        if delivery.topic != DEAD_LETTERS:
            if delivery.dedup_id in seen:
                delivery = _refused(delivery.stream, delivery.entry_id, delivery.value,
                                    f"event id {delivery.dedup_id} was already received", now)
            seen.add(delivery.dedup_id)
        checked.append(delivery)
    return checked


class Bridge:
    def __init__(self, settings: Settings) -> None:
        self.redis = redis_client(settings)
        self.clock = SimClock(self.redis)
        self.crash_point = settings.crash_point
        self.window = EventWindow(timedelta(minutes=settings.max_event_ahead_minutes),
                                  timedelta(minutes=settings.max_event_late_minutes))
        self.shelves = {store_id: frozenset(row.shelf_id for row in store.store_inventory)
                        for store_id, store in load_stores(settings).items()}
        self.kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
        self.producer = self.kafka.producer()
        self.streams = [stream_of(name) for name in SENSOR_TOPICS]
        for stream in self.streams:
            if not any(g["name"].decode() == GROUP for g in self._groups(stream)):
                self.redis.xgroup_create(stream, GROUP, id="0", mkstream=True)
        self.clock.register_tick_participant(NAME)
        self.already_in_kafka = self._ids_since_checkpoint()
        self._pending_first = True  # after a restart, unacknowledged entries come before new ones
        self._drained = False

    def _groups(self, stream: str) -> list[dict[str, object]]:
        return self.redis.xinfo_groups(stream) if self.redis.exists(stream) else []

    def _ids_since_checkpoint(self) -> set[str]:
        """dedup ids of the records written after the last acknowledgement (those a crash may repeat)."""
        checkpoint = {k.decode(): int(v) for k, v in self.redis.hgetall(CHECKPOINT_KEY).items()}
        partitions = [tp for name in OUTPUT_TOPICS for tp in self.kafka.partitions_for(name)]
        start = {tp: checkpoint.get(f"{tp.topic}:{tp.partition}", 0) for tp in partitions}
        seen = set()
        for record in self.kafka.read(partitions, start=start):
            for key, value in record.headers:
                if key == DEDUP_HEADER:
                    seen.add(value.decode())
        return seen

    def step(self, block_ms: int = 200) -> int:
        """Deliver one batch; returns the entries handled (0 when the streams are drained)."""
        world_tick = self.clock.last_tick_done(PRODUCERS)  # read before the streams: see below
        start = "0" if self._pending_first else ">"
        # block only when the last read found the streams drained: right after a batch, more is likely waiting,
        # and an immediate empty answer lets the tick be reported without a blocking wait
        replies = self.redis.xreadgroup(GROUP, NAME, {s: start for s in self.streams}, count=BATCH,
                                        block=block_ms if self._drained and not self._pending_first else None)
        entries = [(stream.decode(), entry_id, fields) for stream, items in replies for entry_id, fields in items
                   if fields]  # pending entries deleted before their XACK show up empty
        if not entries and self._pending_first:
            self._pending_first = False  # nothing left over from before a restart: on to new entries
            return self.step(block_ms)
        self._drained = not entries
        if not entries:
            # the streams are drained, and they held every entry of `world_tick` when we read them
            if world_tick is not None:
                self.clock.tick_done(NAME, world_tick)
            return 0
        clock_now = self.clock.now_or_none()
        now, window = (clock_now, self.window) if clock_now is not None else (datetime(1970, 1, 1), None)
        deliveries = [to_delivery(stream, entry_id, fields, now, window, self.shelves)
                      for stream, entry_id, fields in entries]
        deliveries = refuse_repeats(deliveries, self._received(deliveries), now)
        ends = self._send([d for d in deliveries if d.dedup_id not in self.already_in_kafka])
        if self.crash_point == "bridge.after_send":  # drill: sent, not acknowledged
            os._exit(137)
        self._acknowledge(deliveries, ends, clock_now)
        return len(deliveries)

    def _received(self, deliveries: list[Delivery]) -> set[str]:
        """Which of the batch's event ids were received in an earlier batch."""
        ids = [d.dedup_id for d in deliveries if d.topic != DEAD_LETTERS]
        scores = self.redis.zmscore(SEEN_KEY, ids) if ids else []
        return {event_id for event_id, score in zip(ids, scores) if score is not None}

    def _send(self, deliveries: list[Delivery]) -> dict[Partition, int]:
        """The end offset per partition of what was sent; raises if the broker did not take it all, and then
        nothing is acknowledged."""
        ends: dict[Partition, int] = {}
        outgoing = (Outgoing(d.topic, d.key, d.value, d.timestamp_ms, ((DEDUP_HEADER, d.dedup_id.encode()),))
                    for d in deliveries)
        for metadata in self.producer.send_and_wait(outgoing):
            tp = Partition(metadata.topic, metadata.partition)
            ends[tp] = max(ends.get(tp, 0), metadata.offset + 1)
        return ends

    def _acknowledge(self, deliveries: list[Delivery], ends: dict[Partition, int], now: datetime | None) -> None:
        pipe = self.redis.pipeline(transaction=True)
        by_stream: dict[str, list[bytes]] = {}
        for d in deliveries:
            by_stream.setdefault(d.stream, []).append(d.entry_id)
        for stream, ids in by_stream.items():
            pipe.xack(stream, GROUP, *ids)
            pipe.xdel(stream, *ids)
        received = {d.dedup_id: d.timestamp_ms / 1000 for d in deliveries if d.topic != DEAD_LETTERS}
        if received:
            pipe.zadd(SEEN_KEY, received)
        if now is not None:  # an id is kept while the window accepts its event's time
            pipe.zremrangebyscore(SEEN_KEY, "-inf", _epoch_ms(now - self.window.behind) / 1000)
        if ends:
            pipe.hset(CHECKPOINT_KEY, mapping={f"{tp.topic}:{tp.partition}": end for tp, end in ends.items()})
        for d in deliveries:
            pipe.hincrby(STATS_KEY, f"dead_letters:{d.stream}" if d.topic == DEAD_LETTERS else f"delivered:{d.topic}")
        skipped = sum(1 for d in deliveries if d.dedup_id in self.already_in_kafka)
        if skipped:
            pipe.hincrby(STATS_KEY, "duplicates_skipped", skipped)
        pipe.execute()
        self.already_in_kafka.clear()  # everything up to here is acknowledged: it will not come again

    def close(self) -> None:
        self.producer.close()
        self.kafka.close()


def stats(settings: Settings) -> dict[str, int]:
    client = redis_client(settings)
    return {k.decode(): int(v) for k, v in client.hgetall(STATS_KEY).items()}


def main(settings: Settings) -> None:
    logger = logs.configure(NAME, settings.log_level)
    life = Lifecycle(NAME, redis_client(settings))
    delivered = 0
    began = time.monotonic()

    def build() -> Bridge:
        bridge = Bridge(settings)
        logs.info(logger, "started", already_in_kafka=len(bridge.already_in_kafka))
        return bridge

    def step(bridge: Bridge) -> None:
        nonlocal delivered
        delivered += bridge.step()

    bridge = serve(life, logger, build, step)
    if bridge is not None:
        bridge.close()
        bridge.clock.unregister(NAME)  # stopped on purpose: the lockstep clock must not wait for it
    logs.info(logger, "stopped", entries=delivered, seconds=round(time.monotonic() - began, 1))
