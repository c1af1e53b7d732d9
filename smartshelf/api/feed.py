"""The fan-out core of the WebSocket event feed: live Kafka records to any number of clients.

Invariants:
- one source (one Kafka consumer) per topic set, however many clients subscribe to it: the first subscriber of a
  set starts it (concurrent first subscribers share that one start), the last one leaving stops it;
- every subscriber has a bounded queue (API_WS_QUEUE). Publishing never waits: a subscriber whose queue is full is
  dropped at once (its `next()` raises `Dropped`, and the app closes it with `SLOW_CLIENT_CLOSE_CODE`), so a slow
  client never slows the others;
- a source reads at the pace of the set's fastest client: it reads only while that client has less than half a
  queue waiting (`Delivery.room`). So a burst (a backlog, a fast simulation) is spread out instead of dropping
  everyone, and a client is dropped only when it is more than half a queue behind the fastest one. A client
  with a shelf_id filter is not counted when unfiltered ones are there: its queue says nothing of its pace;
- all subscribers of a topic set see its events in the order the source delivered them, each event encoded to
  JSON once, not once per client.

The hub lives on the asyncio event loop; a source delivers batches from its own thread and the hub hands them to
the loop thread-safely. `KafkaFeedSource`, bound to the broker's address, is the production source
(smartshelf.api.app).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from smartshelf import logs
from smartshelf.adapters.kafka import KafkaAdapter, Partition
from smartshelf.errors import SmartShelfError

SLOW_CLIENT_CLOSE_CODE = 1013  # "try again later"; the reason says how many events were queued
UNSUBSCRIBED_CLOSE_CODE = 1000  # normal closure
SHUTDOWN_CLOSE_CODE = 1001  # "going away"

POLL_BATCH = 500  # records per consume() call
POLL_TIMEOUT_S = 0.2  # consume() waits this long for a full batch: the feed's worst-case added latency
METADATA_TIMEOUT_S = 10.0
RETRY_AFTER_S = 1.0
PACE_WAIT_S = 0.005  # while the fastest client catches up
HANDOVER_TIMEOUT_S = 5.0

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedEvent:
    topic: str
    partition: int
    offset: int
    shelf_id: str | None  # the record's shelf_id field if it has one (for the shelf_id filter)
    text: str  # the JSON text sent to every client
    store_id: str | None = None  # the record's store_id field if it has one (for the store_id filter)


def feed_event(topic: str, partition: int, offset: int, key: bytes | None, value: bytes) -> FeedEvent | None:
    """The event a client receives for one record: the JSON object {"type": "event", "topic", "partition",
    "offset", "key", "value"}, where "value" is the record's own JSON text, embedded as it is.

    Pure. None for a value that is not a JSON object (never raises); the caller counts it as undecodable."""
    try:
        value_text = value.decode("utf-8")
        record = json.loads(value_text, parse_constant=_reject_constant)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        return None
    if not isinstance(record, dict):
        return None
    shelf_id, store_id = record.get("shelf_id"), record.get("store_id")
    envelope = json.dumps({"type": "event", "topic": topic, "partition": partition, "offset": offset,
                           "key": None if key is None else key.decode("utf-8", errors="replace")},
                          separators=(",", ":"))
    # splice the value in rather than re-encode the parsed record: its text is already valid JSON
    text = f'{envelope[:-1]},"value":{value_text}}}'
    return FeedEvent(topic, partition, offset, shelf_id if isinstance(shelf_id, str) else None, text,
                     store_id if isinstance(store_id, str) else None)


def _reject_constant(name: str) -> object:
    # json.loads accepts NaN and Infinity, which are not JSON: a browser's JSON.parse would fail on the event
    raise ValueError(f"{name} is not JSON")


class Dropped(Exception):
    """Raised by `Subscription.next()` once the subscriber was dropped; `reason` is one line that fits a WebSocket
    close frame, `code` the close code to send."""

    def __init__(self, reason: str, code: int = SLOW_CLIENT_CLOSE_CODE) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class Subscription:
    """One client's view of a topic set: the events matching its shelf_id filter (None: all) and its store_id filter
    (None: all; a record that names no store, a clock tick or a dead letter, is the whole twin's), in order."""

    def __init__(self, topics: frozenset[str], shelf_id: str | None, queue_size: int,
                 store_id: str | None = None) -> None:
        self.topics = topics
        self.shelf_id = shelf_id
        self.store_id = store_id
        # a drop empties the queue and puts its Dropped in: that ends a next() that is waiting
        self._queue: asyncio.Queue[FeedEvent | Dropped] = asyncio.Queue(maxsize=queue_size)
        self._dropped: Dropped | None = None
        self._dropped_event = asyncio.Event()

    async def dropped(self) -> Dropped:
        """Waits until the subscriber is dropped: a sender stalled on a client's full socket never reaches
        `next()` again, so whoever serves the client watches this beside it."""
        await self._dropped_event.wait()
        assert self._dropped is not None
        return self._dropped

    @property
    def dropped_reason(self) -> str | None:
        return None if self._dropped is None else self._dropped.reason

    async def next(self) -> FeedEvent:
        """The next event; raises `Dropped` once the subscriber was dropped (events still queued are discarded:
        the client is about to be closed)."""
        item = self._dropped if self._dropped is not None else await self._queue.get()
        if isinstance(item, Dropped):
            raise Dropped(item.reason, item.code)
        return item

    @property
    def backlog(self) -> int:
        """Events queued and not yet taken."""
        return self._queue.qsize()

    def _wants(self, event: FeedEvent) -> bool:
        return ((self.shelf_id is None or event.shelf_id == self.shelf_id)
                and (self.store_id is None or event.store_id in (None, self.store_id)))

    def _offer(self, event: FeedEvent) -> bool:
        """Queue the event without waiting; False if the queue is full."""
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            return False
        return True

    def _drop(self, reason: str, code: int) -> None:
        if self._dropped is not None:
            return
        self._dropped = Dropped(reason, code)
        self._dropped_event.set()
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(self._dropped)


class FeedSource(Protocol):
    """What delivers the events of one topic set, in batches, from its own thread."""

    @property
    def undecodable(self) -> int:
        """Records skipped so far because `feed_event` returned None."""
        ...

    def start(self) -> None:
        """Returns once positioned: every record produced after start() returns is delivered. Blocking. If it
        raises, nothing is left running."""
        ...

    def stop(self) -> None:
        """Stops delivering and releases the source's resources. Blocking."""
        ...


class Delivery(Protocol):
    """How a source hands over its batches (from its own thread; returns once the subscribers have them)."""

    def __call__(self, batch: list[FeedEvent]) -> None: ...

    def room(self) -> int:
        """How many events the source may read now: half a queue less the fastest client's backlog."""
        ...


SourceFactory = Callable[[frozenset[str], Delivery], FeedSource]


@dataclass(eq=False)
class _Feed:
    """The subscribers and the source of one topic set."""

    topics: frozenset[str]
    subscribers: dict[Subscription, None] = field(default_factory=dict)  # an ordered set
    source: FeedSource | None = None  # started and not yet told to stop
    starting: asyncio.Task[None] | None = None
    # bumped at every start and stop, so a batch still on its way from a stopped source is ignored
    generation: int = 0


class FeedHub:
    """Subscriptions to topic sets, one source per set, fanned out to bounded per-subscriber queues.

    Use it from one event loop: `subscribe`, `unsubscribe` and `close` are called on the loop's thread."""

    def __init__(self, source_factory: SourceFactory, queue_size: int) -> None:
        self._source_factory = source_factory
        self._queue_size = queue_size
        # one entry per topic set ever asked for (the app accepts only the registry's topics, so they are few);
        # an entry is never replaced, so concurrent subscribers of a set always meet on the same one
        self._feeds: dict[frozenset[str], _Feed] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._events = 0
        self._delivered = 0
        self._dropped_clients = 0
        self._retired_undecodable = 0  # counted by sources already stopped

    async def subscribe(self, topics: frozenset[str], shelf_id: str | None = None,
                        store_id: str | None = None) -> Subscription:
        """A subscription to the live events of `topics`, from now on. Starts the set's source if it is the first
        (raises what the source's start raises, e.g. `SmartShelfError` for a topic that does not exist)."""
        feed = self._feeds.setdefault(topics, _Feed(topics))
        subscription = Subscription(topics, shelf_id, self._queue_size, store_id)
        # subscribed before the source starts: what it delivers once positioned reaches this subscriber too
        feed.subscribers[subscription] = None
        if feed.source is None and feed.starting is None:
            feed.starting = asyncio.create_task(self._start(feed))
        if feed.starting is not None:
            try:
                # shielded: a subscriber that gives up does not cancel the start the others wait for
                await asyncio.shield(feed.starting)
            except BaseException:
                self.unsubscribe(subscription)
                raise
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """Leave (idempotent); a `next()` still waiting raises `Dropped`. The last subscriber of a set leaving
        stops its source, in a thread."""
        subscription._drop("unsubscribed", UNSUBSCRIBED_CLOSE_CODE)
        self._leave(self._feeds[subscription.topics], subscription)

    def stats(self) -> dict[str, int]:
        feeds = self._feeds.values()
        return {
            "subscribers": sum(len(feed.subscribers) for feed in feeds),
            "sources": sum(feed.source is not None for feed in feeds),
            "events": self._events,  # received from the sources
            "delivered": self._delivered,  # queued for subscribers: one per event and subscriber
            "dropped_clients": self._dropped_clients,
            "undecodable": self._retired_undecodable + sum(feed.source.undecodable for feed in feeds
                                                           if feed.source is not None),
        }

    async def close(self) -> None:
        """Drop every subscriber (their `next()` raises `Dropped` with `SHUTDOWN_CLOSE_CODE`) and stop every
        source, including one still starting."""
        for feed in self._feeds.values():
            for subscription in tuple(feed.subscribers):
                subscription._drop("server shutting down", SHUTDOWN_CLOSE_CODE)
                self._leave(feed, subscription)
        # a start still running stops its source when it ends, as nobody is subscribed any more
        await asyncio.gather(*(feed.starting for feed in self._feeds.values() if feed.starting is not None),
                             return_exceptions=True)
        await asyncio.gather(*self._stopping)

    async def _start(self, feed: _Feed) -> None:
        feed.generation += 1
        source = self._source_factory(feed.topics, self._deliverer(feed, feed.generation))
        try:
            await asyncio.to_thread(source.start)
        finally:
            feed.starting = None
        feed.source = source
        if not feed.subscribers:  # every subscriber left while it started
            self._stop(feed)

    def _deliverer(self, feed: _Feed, generation: int) -> Delivery:
        return _Delivery(self, feed, generation, asyncio.get_running_loop())

    def _room(self, feed: _Feed) -> int:
        subscribers = tuple(feed.subscribers)  # one C-level copy: safe while the loop thread changes the dict
        paced_by = [s for s in subscribers if s.shelf_id is None] or list(subscribers)
        return self._queue_size // 2 - min((s.backlog for s in paced_by), default=0)

    def _publish(self, feed: _Feed, generation: int, batch: list[FeedEvent]) -> None:
        if generation != feed.generation:
            return
        self._events += len(batch)
        for subscription in tuple(feed.subscribers):
            self._fan_out(feed, subscription, batch)

    def _fan_out(self, feed: _Feed, subscription: Subscription, batch: list[FeedEvent]) -> None:
        for event in batch:
            if not subscription._wants(event):
                continue
            if not subscription._offer(event):
                reason = f"client fell behind: {self._queue_size} events queued (API_WS_QUEUE)"
                subscription._drop(reason, SLOW_CLIENT_CLOSE_CODE)
                self._dropped_clients += 1
                self._leave(feed, subscription)
                return
            self._delivered += 1

    def _leave(self, feed: _Feed, subscription: Subscription) -> None:
        feed.subscribers.pop(subscription, None)
        if not feed.subscribers:
            self._stop(feed)

    def _stop(self, feed: _Feed) -> None:
        """Stop the feed's source, if it has one, in a thread."""
        source = feed.source
        if source is None:
            return
        feed.source = None
        feed.generation += 1
        task = asyncio.get_running_loop().create_task(self._stop_source(source, feed.topics))
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    async def _stop_source(self, source: FeedSource, topics: frozenset[str]) -> None:
        try:
            await asyncio.to_thread(source.stop)
        except Exception as exc:  # the others must still stop: log it rather than fail close()
            logs.error(_LOG, "event feed: stopping a source failed", topics=",".join(sorted(topics)),
                       error=repr(exc))
        self._retired_undecodable += source.undecodable


class _Delivery:
    """A source's handle on the hub: batches go to the loop, and the source's thread waits until they are queued
    (so `room()` sees them)."""

    def __init__(self, hub: FeedHub, feed: _Feed, generation: int, loop: asyncio.AbstractEventLoop) -> None:
        self._hub, self._feed, self._generation, self._loop = hub, feed, generation, loop

    def __call__(self, batch: list[FeedEvent]) -> None:
        if self._loop.is_closed():
            return
        if _on_loop_thread(self._loop):
            self._hub._publish(self._feed, self._generation, batch)
            return
        done = concurrent.futures.Future[None]()

        def publish() -> None:
            try:
                self._hub._publish(self._feed, self._generation, batch)
            finally:
                done.set_result(None)

        self._loop.call_soon_threadsafe(publish)
        try:
            done.result(timeout=HANDOVER_TIMEOUT_S)
        except concurrent.futures.TimeoutError:
            pass  # the loop is busy or shutting down: the batch is queued for it, go on

    def room(self) -> int:
        return self._hub._room(self._feed)


def _on_loop_thread(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class KafkaFeedSource:
    """The records produced to `topics` from start() on, read by one confluent-kafka consumer in a daemon thread.

    The consumer is assigned every partition at its end offset and never commits: a feed is live, not a replay."""

    def __init__(self, bootstrap: str, topics: frozenset[str], deliver: Delivery) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.undecodable = 0
        self._deliver = deliver
        self._stopping = threading.Event()
        self._consumer: Consumer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        adapter = KafkaAdapter(self.bootstrap)
        consumer = adapter.raw_consumer()
        try:
            self._assign_at_end(adapter, consumer)
        except BaseException:
            consumer.close()
            raise
        finally:
            adapter.close()
        self._consumer = consumer
        self._thread = threading.Thread(target=self._run, args=(consumer,), daemon=True,
                                        name=f"feed:{','.join(sorted(self.topics))}")
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        if self._consumer is not None:
            self._consumer.close()
        self._thread = self._consumer = None

    def _assign_at_end(self, adapter: KafkaAdapter, consumer: Consumer) -> None:
        try:
            ends = adapter.end_offsets(self._partitions(consumer), timeout_s=METADATA_TIMEOUT_S)
            consumer.assign([TopicPartition(tp.topic, tp.partition, offset) for tp, offset in ends.items()])
        except KafkaException as exc:
            raise SmartShelfError(f"event feed: cannot read {sorted(self.topics)} from kafka at {self.bootstrap}: "
                                  f"{exc}") from exc

    def _partitions(self, consumer: Consumer) -> list[Partition]:
        partitions: list[Partition] = []
        for topic in sorted(self.topics):
            metadata = consumer.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
            error: KafkaError | None = None if metadata is None else metadata.error
            if metadata is None or (error is not None and error.code() in (KafkaError.UNKNOWN_TOPIC_OR_PART,
                                                                           KafkaError._UNKNOWN_TOPIC)):
                raise SmartShelfError(f"event feed: topic {topic!r} does not exist on kafka at {self.bootstrap}")
            if error is not None:
                raise SmartShelfError(f"event feed: topic {topic!r} on kafka at {self.bootstrap}: {error}")
            partitions += [Partition(topic, partition) for partition in sorted(metadata.partitions)]
        return partitions

    def _run(self, consumer: Consumer) -> None:
        while not self._stopping.is_set():
            try:
                self._poll(consumer)
            except Exception as exc:  # the feed must outlive a bad batch or a broker hiccup: log, wait, go on
                logs.error(_LOG, "event feed: consuming failed, retrying", topics=",".join(sorted(self.topics)),
                           error=repr(exc))
                self._stopping.wait(RETRY_AFTER_S)

    def _poll(self, consumer: Consumer) -> None:
        room = min(POLL_BATCH, self._deliver.room())
        if room <= 0:  # even the fastest client has half a queue to send: let it catch up
            self._stopping.wait(PACE_WAIT_S)
            return
        batch = [event for message in consumer.consume(num_messages=room, timeout=POLL_TIMEOUT_S)
                 if (event := self._event(message)) is not None]
        if batch:
            self._deliver(batch)

    def _event(self, message: Message) -> FeedEvent | None:
        error = message.error()
        if error is not None:
            logs.warning(_LOG, "event feed: kafka reported an error", topic=message.topic(), error=str(error))
            return None
        value = message.value()
        if value is None:  # a compacted topic's tombstone: no record to show
            return None
        event = feed_event(message.topic() or "", message.partition() or 0, message.offset() or 0, message.key(),
                           value)
        if event is None:
            self.undecodable += 1
        return event
