"""The event feed's fan-out: one source per topic set, bounded queues, slow clients dropped, same order for all.

Sources are test doubles driven by calling their deliver callback (from the loop's thread or another one); the
Kafka source runs against a fake consumer. No servers.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError

from smartshelf.adapters.kafka import Partition
from smartshelf.api import feed
from smartshelf.api.feed import (
    SHUTDOWN_CLOSE_CODE, SLOW_CLIENT_CLOSE_CODE, UNSUBSCRIBED_CLOSE_CODE, Dropped, FeedEvent, FeedHub,
    KafkaFeedSource, Subscription, feed_event,
)
from smartshelf.errors import SmartShelfError
from smartshelf.schemas import PosItem, PosTransaction, ShelfState
from tests.unit.fake_kafka import FakeMessage

NOW = datetime(2025, 1, 1, 9, 30)
SHELF = frozenset({"shelf_events"})
ALERTS = frozenset({"alerts"})
WAIT_S = 2.0


# --- helpers ----------------------------------------------------------------------------------
Deliver = feed.Delivery


class FakeSource:
    """Records its start and stop calls; the test delivers batches through `deliver`."""

    def __init__(self, topics: frozenset[str], deliver: Deliver, start_delay_s: float,
                 start_gate: threading.Event | None, start_error: Exception | None) -> None:
        self.topics = topics
        self.deliver = deliver
        self.undecodable = 0
        self.starts = 0
        self.stops = 0
        self._start_delay_s = start_delay_s
        self._start_gate = start_gate
        self._start_error = start_error

    def start(self) -> None:
        self.starts += 1
        time.sleep(self._start_delay_s)  # widens the window in which concurrent subscribers arrive
        if self._start_gate is not None:
            self._start_gate.wait(WAIT_S)
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        self.stops += 1


class Sources:
    """A source factory that keeps every source it made."""

    def __init__(self, start_delay_s: float = 0.0, start_gate: threading.Event | None = None,
                 start_errors: list[Exception] | None = None) -> None:
        self.made: list[FakeSource] = []
        self._start_delay_s = start_delay_s
        self._start_gate = start_gate
        self._start_errors = list(start_errors or [])

    def __call__(self, topics: frozenset[str], deliver: Deliver) -> FakeSource:
        error = self._start_errors.pop(0) if self._start_errors else None
        source = FakeSource(topics, deliver, self._start_delay_s, self._start_gate, error)
        self.made.append(source)
        return source


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 10))


def event(offset: int, shelf_id: str | None = "S0001", topic: str = "shelf_events") -> FeedEvent:
    record = {"event_id": f"e{offset}"} | ({} if shelf_id is None else {"shelf_id": shelf_id})
    made = feed_event(topic, 0, offset, None if shelf_id is None else shelf_id.encode(), json.dumps(record).encode())
    assert made is not None
    return made


async def take(subscription: Subscription, count: int) -> list[FeedEvent]:
    return [await asyncio.wait_for(subscription.next(), WAIT_S) for _ in range(count)]


async def nothing_queued(subscription: Subscription) -> bool:
    try:
        await asyncio.wait_for(subscription.next(), 0.05)
    except TimeoutError:
        return True
    return False


async def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def raises_dropped(next_event: Awaitable[FeedEvent]) -> Dropped:
    with pytest.raises(Dropped) as caught:
        await asyncio.wait_for(next_event, WAIT_S)
    return caught.value


# --- feed_event -------------------------------------------------------------------------------
def test_feed_event_embeds_the_record_and_extracts_shelf_id() -> None:
    state = ShelfState(shelf_id="S0007", current_stock=5, current_weight=7.5, last_event_type="pickup",
                       last_event_ts=NOW)
    raw = state.model_dump_json()
    made = feed_event("shelf_state", 1, 42, b"S0007", raw.encode())
    assert made is not None
    assert (made.topic, made.partition, made.offset, made.shelf_id) == ("shelf_state", 1, 42, "S0007")
    assert json.loads(made.text) == {"type": "event", "topic": "shelf_state", "partition": 1, "offset": 42,
                                     "key": "S0007", "value": json.loads(raw)}
    assert made.text.endswith(f',"value":{raw}}}')  # the record's own text, not a re-encoding


def test_feed_event_without_a_shelf_id_or_key() -> None:
    basket = PosTransaction(transaction_id="tx-1", customer_id="C1", ts=NOW, total=2.98, items=[
        PosItem(shelf_id="S0001", quantity=2, unit_price=1.49, discount=0.0, line_total=2.98)])
    made = feed_event("pos_transactions", 0, 3, None, basket.model_dump_json().encode())
    assert made is not None and made.shelf_id is None  # only a top-level shelf_id counts
    assert json.loads(made.text)["key"] is None
    numeric = feed_event("alerts", 0, 0, b"k", b'{"shelf_id": 7}')
    assert numeric is not None and numeric.shelf_id is None


@pytest.mark.parametrize("value", [b"not json", b"[1, 2]", b'"S0001"', b"3", b"null", b"\xff\xfe",
                                   b'{"current_weight": NaN}', b""])
def test_feed_event_refuses_what_is_not_a_json_object(value: bytes) -> None:
    assert feed_event("shelf_events", 0, 0, b"S0001", value) is None


# --- the hub ----------------------------------------------------------------------------------
def test_concurrent_first_subscribers_share_one_source_and_see_the_same_sequence() -> None:
    async def scenario() -> None:
        sources = Sources(start_delay_s=0.05)
        hub = FeedHub(sources, queue_size=100)
        subscriptions = await asyncio.gather(*(hub.subscribe(SHELF) for _ in range(50)))
        assert len(sources.made) == 1 and sources.made[0].starts == 1
        assert hub.stats()["subscribers"] == 50 and hub.stats()["sources"] == 1
        deliver = sources.made[0].deliver
        deliver([event(0), event(1, "S0002")])
        deliver([event(2, None)])
        deliver([event(3), event(4), event(5, "S0003")])
        received = [[e.offset for e in await take(s, 6)] for s in subscriptions]
        assert received == [[0, 1, 2, 3, 4, 5]] * 50
        assert hub.stats()["events"] == 6 and hub.stats()["delivered"] == 300
        await hub.close()

    run(scenario)


def test_the_shelf_id_filter() -> None:
    async def scenario() -> None:
        sources = Sources()
        hub = FeedHub(sources, queue_size=100)
        everything = await hub.subscribe(SHELF)
        one_shelf = await hub.subscribe(SHELF, shelf_id="S0002")
        sources.made[0].deliver([event(0, "S0001"), event(1, "S0002"), event(2, None), event(3, "S0002")])
        assert [e.offset for e in await take(everything, 4)] == [0, 1, 2, 3]
        assert [e.offset for e in await take(one_shelf, 2)] == [1, 3]
        assert await nothing_queued(one_shelf)
        await hub.close()

    run(scenario)


def test_the_store_id_filter_keeps_the_store_s_records_and_those_of_no_store() -> None:
    def of_store(offset: int, store_id: str | None) -> FeedEvent:
        record = {"event_id": f"e{offset}", "shelf_id": "S0001"} | ({} if store_id is None else {"store_id": store_id})
        made = feed_event("shelf_events", 0, offset, None, json.dumps(record).encode())
        assert made is not None and made.store_id == store_id
        return made

    async def scenario() -> None:
        sources = Sources()
        hub = FeedHub(sources, queue_size=100)
        second = await hub.subscribe(SHELF, store_id="store-002")
        second_shelf = await hub.subscribe(SHELF, shelf_id="S0001", store_id="store-002")
        sources.made[0].deliver([of_store(0, "store-001"), of_store(1, "store-002"), of_store(2, None),
                                 of_store(3, "store-001")])
        assert [e.offset for e in await take(second, 2)] == [1, 2]  # a record of no store is the whole twin's
        assert [e.offset for e in await take(second_shelf, 2)] == [1, 2]
        assert await nothing_queued(second) and await nothing_queued(second_shelf)
        await hub.close()

    run(scenario)


def test_a_slow_subscriber_is_dropped_and_the_others_get_every_event() -> None:
    async def scenario() -> None:
        sources = Sources()
        hub = FeedHub(sources, queue_size=3)
        fast = await hub.subscribe(SHELF)
        slow = await hub.subscribe(SHELF)
        received = []
        for offset in range(10):
            sources.made[0].deliver([event(offset)])
            received += await take(fast, 1)
        assert [e.offset for e in received] == list(range(10))
        reason = "client fell behind: 3 events queued (API_WS_QUEUE)"
        assert slow.dropped_reason == reason
        dropped = await raises_dropped(slow.next())  # events it had queued are not handed out any more
        assert (dropped.reason, dropped.code) == (reason, SLOW_CLIENT_CLOSE_CODE)
        assert str(dropped) == reason
        stats = hub.stats()
        assert (stats["subscribers"], stats["dropped_clients"], stats["sources"]) == (1, 1, 1)
        assert fast.dropped_reason is None
        hub.unsubscribe(slow)  # what the app does on the way out: harmless, the reason stays
        assert slow.dropped_reason == reason
        await hub.close()

    run(scenario)


def test_a_waiting_next_raises_dropped_when_its_queue_overflows() -> None:
    async def scenario() -> None:
        sources = Sources()
        hub = FeedHub(sources, queue_size=2)
        subscription = await hub.subscribe(SHELF)
        waiting = asyncio.create_task(subscription.next())
        await asyncio.sleep(0.01)
        sources.made[0].deliver([event(0), event(1), event(2)])  # woken by the first, dropped by the third
        dropped = await raises_dropped(waiting)
        assert dropped.code == SLOW_CLIENT_CLOSE_CODE
        await eventually(lambda: sources.made[0].stops == 1)  # it was the last subscriber
        await hub.close()

    run(scenario)


def test_the_last_unsubscribe_stops_the_source_and_a_new_subscribe_starts_a_fresh_one() -> None:
    async def scenario() -> None:
        sources = Sources()
        hub = FeedHub(sources, queue_size=10)
        first = await hub.subscribe(SHELF)
        second = await hub.subscribe(SHELF)
        waiting = asyncio.create_task(first.next())
        await asyncio.sleep(0.01)
        hub.unsubscribe(first)
        dropped = await raises_dropped(waiting)
        assert (dropped.reason, dropped.code) == ("unsubscribed", UNSUBSCRIBED_CLOSE_CODE)
        await asyncio.sleep(0.01)
        assert sources.made[0].stops == 0
        hub.unsubscribe(second)
        hub.unsubscribe(second)
        await eventually(lambda: sources.made[0].stops == 1)
        assert hub.stats()["sources"] == 0 and hub.stats()["subscribers"] == 0

        third = await hub.subscribe(SHELF)
        assert len(sources.made) == 2 and sources.made[1].starts == 1
        sources.made[0].deliver([event(0)])  # late, from the stopped source: ignored
        sources.made[1].deliver([event(1)])
        assert [e.offset for e in await take(third, 1)] == [1]
        assert await nothing_queued(third)
        await hub.close()

    run(scenario)


def test_different_topic_sets_get_different_sources() -> None:
    async def scenario() -> None:
        sources = Sources()
        hub = FeedHub(sources, queue_size=10)
        alerts = await hub.subscribe(ALERTS)
        both = await hub.subscribe(ALERTS | SHELF)
        again = await hub.subscribe(frozenset({"shelf_events", "alerts"}))  # the same set, built otherwise
        assert [source.topics for source in sources.made] == [ALERTS, ALERTS | SHELF]
        sources.made[1].deliver([event(0), event(1, topic="alerts")])
        assert [e.offset for e in await take(both, 2)] == [e.offset for e in await take(again, 2)] == [0, 1]
        assert await nothing_queued(alerts)
        assert hub.stats()["sources"] == 2
        await hub.close()
        assert [source.stops for source in sources.made] == [1, 1]

    run(scenario)


def test_batches_delivered_from_a_foreign_thread_arrive_in_order() -> None:
    async def scenario() -> None:
        sources = Sources()
        hub = FeedHub(sources, queue_size=1000)
        subscriptions = [await hub.subscribe(SHELF) for _ in range(3)]
        deliver = sources.made[0].deliver
        producer = threading.Thread(target=lambda: [deliver([event(2 * i), event(2 * i + 1)]) for i in range(200)])
        producer.start()
        received = [[e.offset for e in await take(s, 400)] for s in subscriptions]
        producer.join()
        assert received == [list(range(400))] * 3
        await hub.close()

    run(scenario)


def test_a_failed_start_reaches_the_subscriber_and_the_next_one_tries_again() -> None:
    async def scenario() -> None:
        sources = Sources(start_errors=[SmartShelfError("event feed: topic 'nope' does not exist")])
        hub = FeedHub(sources, queue_size=10)
        with pytest.raises(SmartShelfError, match="does not exist"):
            await hub.subscribe(SHELF)
        assert hub.stats()["subscribers"] == 0 and hub.stats()["sources"] == 0
        subscription = await hub.subscribe(SHELF)
        assert len(sources.made) == 2 and hub.stats()["sources"] == 1
        sources.made[1].deliver([event(0)])
        assert [e.offset for e in await take(subscription, 1)] == [0]
        await hub.close()

    run(scenario)


def test_a_source_whose_subscribers_all_left_while_it_started_is_stopped() -> None:
    async def scenario() -> None:
        gate = threading.Event()
        sources = Sources(start_gate=gate)
        hub = FeedHub(sources, queue_size=10)
        subscribing = asyncio.create_task(hub.subscribe(SHELF))
        await eventually(lambda: len(sources.made) == 1 and sources.made[0].starts == 1)
        subscribing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await subscribing
        assert hub.stats()["subscribers"] == 0
        gate.set()
        await eventually(lambda: sources.made[0].stops == 1)
        assert hub.stats()["sources"] == 0
        await hub.close()

    run(scenario)


def test_close_wakes_every_subscriber_and_stops_every_source() -> None:
    async def scenario() -> None:
        sources = Sources()
        hub = FeedHub(sources, queue_size=10)
        subscriptions = [await hub.subscribe(SHELF), await hub.subscribe(ALERTS)]
        waiting = [asyncio.create_task(s.next()) for s in subscriptions]
        await asyncio.sleep(0.01)
        await hub.close()
        for task in waiting:
            assert (await raises_dropped(task)).code == SHUTDOWN_CLOSE_CODE
        assert [source.stops for source in sources.made] == [1, 1]
        assert hub.stats()["sources"] == 0 and hub.stats()["subscribers"] == 0

    run(scenario)


# --- the Kafka source, against a fake consumer ------------------------------------------------
class FakeConsumer:
    """Topics with their partitions; consume() hands out what the test put in `incoming` (a list of messages,
    or an exception to raise)."""

    def __init__(self, partitions: dict[str, int]) -> None:
        self.partitions = partitions
        self.assigned: list[tuple[str, int, int]] = []
        self.incoming: queue.Queue[list[FakeMessage] | Exception] = queue.Queue()
        self.closed = False

    def list_topics(self, topic: str, timeout: float) -> SimpleNamespace:
        count = self.partitions.get(topic)
        metadata = (SimpleNamespace(error=KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART), partitions={})
                    if count is None else SimpleNamespace(error=None, partitions=dict.fromkeys(range(count))))
        return SimpleNamespace(topics={topic: metadata})

    def assign(self, partitions: list[Any]) -> None:
        self.assigned = sorted((tp.topic, tp.partition, tp.offset) for tp in partitions)

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        try:
            item = self.incoming.get(timeout=timeout)
        except queue.Empty:
            return []
        if isinstance(item, Exception):
            raise item
        return item

    def close(self) -> None:
        self.closed = True


class FakeAdapter:
    def __init__(self, consumer: FakeConsumer) -> None:
        self._consumer = consumer
        self.closed = False

    def raw_consumer(self) -> FakeConsumer:
        return self._consumer

    def end_offsets(self, partitions: list[Partition], timeout_s: float) -> dict[Partition, int]:
        return {tp: 100 + tp.partition for tp in partitions}

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def consumer(monkeypatch: pytest.MonkeyPatch) -> FakeConsumer:
    fake = FakeConsumer({"shelf_events": 2, "alerts": 1})
    monkeypatch.setattr(feed, "KafkaAdapter", lambda bootstrap: FakeAdapter(fake))
    monkeypatch.setattr(feed, "RETRY_AFTER_S", 0.01)
    return fake


class Collector:
    """A Delivery that keeps the batches and gives the source `room` events at a time."""

    def __init__(self, room: int = 500) -> None:
        self.batches: queue.Queue[list[FeedEvent]] = queue.Queue()
        self.rooms = room
        self.asked = 0

    def __call__(self, batch: list[FeedEvent]) -> None:
        self.batches.put(batch)

    def room(self) -> int:
        self.asked += 1
        return self.rooms


def test_the_kafka_source_starts_at_the_end_and_delivers_what_decodes(consumer: FakeConsumer) -> None:
    collector = Collector()
    batches = collector.batches
    source = KafkaFeedSource("kafka:9092", ALERTS | SHELF, collector)
    source.start()
    try:
        assert consumer.assigned == [("alerts", 0, 100), ("shelf_events", 0, 100), ("shelf_events", 1, 101)]
        consumer.incoming.put(RuntimeError("broker hiccup"))  # logged; the thread goes on
        consumer.incoming.put([
            FakeMessage("shelf_events", 0, 100, b'{"shelf_id": "S0001"}'),
            FakeMessage("shelf_events", 0, 101, b"not json"),
            FakeMessage("shelf_events", 1, 101, None),  # a tombstone
            FakeMessage("alerts", 0, 0, None, error=KafkaError(KafkaError._TRANSPORT)),
            FakeMessage("alerts", 0, 100, b'{"alert_id": "a1"}'),
        ])
        batch = batches.get(timeout=WAIT_S)
        assert [(e.topic, e.offset, e.shelf_id) for e in batch] == [("shelf_events", 100, "S0001"),
                                                                     ("alerts", 100, None)]
        assert source.undecodable == 1
    finally:
        source.stop()
    assert consumer.closed and batches.empty()


def test_the_kafka_source_refuses_a_topic_that_does_not_exist(consumer: FakeConsumer) -> None:
    source = KafkaFeedSource("kafka:9092", frozenset({"alerts", "nope"}), Collector())
    with pytest.raises(SmartShelfError, match="topic 'nope' does not exist on kafka at kafka:9092"):
        source.start()
    assert consumer.closed and consumer.assigned == []
    source.stop()  # nothing to stop: harmless


def test_the_kafka_source_reads_nothing_while_the_fastest_client_has_no_room(consumer: FakeConsumer) -> None:
    collector = Collector(room=0)
    source = KafkaFeedSource("kafka:9092", ALERTS, collector)
    source.start()
    try:
        consumer.incoming.put([FakeMessage("alerts", 0, 100, b'{"alert_id": "a1"}')])
        deadline = time.monotonic() + WAIT_S
        while collector.asked < 5:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert collector.batches.empty() and not consumer.incoming.empty()  # waited, did not consume
        collector.rooms = 500
        assert [e.offset for e in collector.batches.get(timeout=WAIT_S)] == [100]
    finally:
        source.stop()


def test_room_is_half_a_queue_less_the_fastest_unfiltered_backlog() -> None:
    rooms: list[int] = []

    async def scenario() -> None:
        sources = Sources()
        hub = FeedHub(sources, queue_size=10)
        slow, fast = await hub.subscribe(SHELF), await hub.subscribe(SHELF)
        filtered = await hub.subscribe(SHELF, shelf_id="S0009")  # gets nothing: not counted
        deliver = sources.made[0].deliver
        rooms.append(deliver.room())  # type: ignore[attr-defined]
        deliver([event(i) for i in range(4)])
        rooms.append(deliver.room())  # type: ignore[attr-defined]
        await take(fast, 3)
        rooms.append(deliver.room())  # type: ignore[attr-defined]
        for subscription in (slow, fast, filtered):
            hub.unsubscribe(subscription)
        await hub.close()

    run(scenario)
    assert rooms == [5, 1, 4]
