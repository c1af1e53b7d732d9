"""Benchmarks. Each runs on its own scratch stack (free ports, temp run dir) so it neither disturbs nor
depends on a running stack, and reports numbers measured side by side in the same run.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from smartshelf.adapters.kafka import PRODUCER_DEFAULTS, KafkaAdapter, Outgoing, Partition, TopicConfig
from smartshelf.apps.producers import worlds_of
from smartshelf.registry import TOPICS, topic
from smartshelf.runtime import jobs, supervisor
from smartshelf.runtime.scratch import scratch_stack
from smartshelf.schemas import FIRST_STORE
from smartshelf.settings import Settings
from smartshelf.world import WorldEvents


def _payload(i: int) -> bytes:
    # the size of a typical shelf event
    return json.dumps({
        "event_id": f"e{i:09d}", "event_type": "pickup", "shelf_id": f"S{i % 1100:04d}", "quantity": 1,
        "weight_change": -500, "customer_id": f"C{i % 5000:05d}", "batch_code": None,
        "ts": "2025-01-01T09:00:00",
    }).encode()


WARM_UP_TOPIC = "bench_warm_up"  # each producer's first record goes here: its start-up is timed apart


@dataclass(frozen=True)
class _Measured:
    msgs_per_s: float
    cpu_us_per_msg: float  # this process's CPU time, the client's threads included
    start_s: float  # producer: created → first record acknowledged; consumer: created → first record read


def _produce(adapter: KafkaAdapter, name: str, records: list[tuple[bytes, bytes]]) -> _Measured:
    """The steady produce rate of the adapter's producer, every record acknowledged."""
    began = time.monotonic()
    producer = adapter.producer()
    producer.send_and_wait([Outgoing(WARM_UP_TOPIC, b"warm-up", b"{}")])
    start_s = time.monotonic() - began
    wall, cpu = time.monotonic(), time.process_time()
    for key, value in records:
        producer.send(name, key, value)
    producer.flush()
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    producer.close()
    return _Measured(len(records) / wall, cpu / len(records) * 1e6, start_s)


def _consume(adapter: KafkaAdapter, partitions: list[Partition]) -> tuple[int, int, _Measured]:
    """(records, value bytes, rate) of a whole read of these partitions; the rate runs from the first record read
    to the last (the consumer's start-up is reported apart)."""
    began, cpu = time.monotonic(), time.process_time()
    first, count, size = began, 0, 0
    for record in adapter.read(partitions):
        if not count:
            first = time.monotonic()
        count += 1
        size += len(record.value or b"")
    wall, cpu = time.monotonic() - first, time.process_time() - cpu
    return count, size, _Measured(count / wall, cpu / max(count, 1) * 1e6, first - began)


def _print_broker_table(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"raw broker rates, {result['messages']:,} × {result['message_bytes']} B, "
                        f"median of {result['rounds']}",
                  caption=f"{result['client']} {result['client_version']}: acks=all, idempotent, linger 20 ms, "
                          "256 KiB batches, murmur2; start-up apart")
    for column in ("", "msgs/s", "CPU µs/msg", "start, s"):
        table.add_column(column, justify="right")
    for row in ("produce", "consume"):
        table.add_row(row, f"{result[f'{row}_msgs_per_s']:,}", str(result[f"{row}_cpu_us_per_msg"]),
                      str(result[f"{row}_start_s"]))
    Console().print(table)


def bench_broker(base: Settings, messages: int = 100_000, rounds: int = 3) -> dict[str, object]:
    """Raw broker produce and consume rates of the adapter's client (confluent-kafka) with the components'
    producer guarantees; plus the stack's cold start time and idle memory.

    Each round produces the records once after a warm-up record, then reads them all back; the figures are the
    medians over the rounds."""
    import statistics

    import confluent_kafka

    load_before = os.getloadavg()[0]
    began = time.monotonic()
    with scratch_stack(base, prefix="smartshelf-bench-") as (settings, start_times):
        stack_start_s = time.monotonic() - began
        idle = {row.name: {"rss_mb": row.rss_mb, "pss_mb": row.pss_mb} for row in supervisor.status(settings)}
        init_began = time.monotonic()
        for job in jobs.JOBS.values():
            job(settings)
        init_s = time.monotonic() - init_began

        kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
        name = "bench_produce"
        kafka.ensure_topics([TopicConfig(n, 2, compacted=False) for n in (name, WARM_UP_TOPIC)])
        records = [(f"S{i % 1100:04d}".encode(), _payload(i)) for i in range(messages)]
        produced = [_produce(kafka, name, records) for _ in range(rounds)]
        partitions = kafka.partitions_for(name)
        expected = (messages * rounds, rounds * sum(len(value) for _, value in records))
        consumed = []
        for _ in range(rounds):
            count, size, read = _consume(kafka, partitions)
            if (count, size) != expected:
                raise AssertionError(f"bench: read {count} records ({size} B), expected {expected}")
            consumed.append(read)
        kafka.close()
    load_after = os.getloadavg()[0]

    def median(measured: list[_Measured], field: str) -> float:
        return statistics.median(getattr(m, field) for m in measured)

    result: dict[str, Any] = {
        "benchmark": "broker",
        "messages": messages,
        "message_bytes": len(records[0][1]),
        "rounds": rounds,
        "client": "confluent-kafka",
        "client_version": confluent_kafka.__version__,
        "librdkafka": confluent_kafka.libversion()[0],
        "producer_config": PRODUCER_DEFAULTS,
        "produce_msgs_per_s": round(median(produced, "msgs_per_s")),
        "produce_rounds_msgs_per_s": [round(m.msgs_per_s) for m in produced],
        "produce_cpu_us_per_msg": round(median(produced, "cpu_us_per_msg"), 1),
        "produce_start_s": round(median(produced, "start_s"), 3),
        "consume_msgs_per_s": round(median(consumed, "msgs_per_s")),
        "consume_rounds_msgs_per_s": [round(m.msgs_per_s) for m in consumed],
        "consume_cpu_us_per_msg": round(median(consumed, "cpu_us_per_msg"), 1),
        "consume_start_s": round(median(consumed, "start_s"), 3),
        "consume_to_produce_ratio": round(median(consumed, "msgs_per_s") / median(produced, "msgs_per_s"), 2),
        "load_avg_1m": {"before": round(load_before, 2), "after": round(load_after, 2), "cores": os.cpu_count()},
        "stack_cold_start_s": round(stack_start_s, 2),
        "server_start_s": {n: round(s, 2) for n, s in start_times.items()},
        "init_jobs_s": round(init_s, 2),
        "idle_memory_mb": idle,
        "idle_rss_total_mb": round(sum(v["rss_mb"] or 0 for v in idle.values()), 1),
        "idle_pss_total_mb": round(sum(v["pss_mb"] or 0 for v in idle.values()), 1),
        "note": "produce: a started producer (its first record acknowledged, timed apart as produce_start_s) from "
                "the first send to every record acknowledged, each delivery report checked; consume: a whole read "
                "of the records produced (rounds × messages) by an assign()ed consumer with CRC checks, from the "
                f"first record read to the last; medians of {rounds} rounds; CPU: this process's CPU time (the "
                "client's threads included) per message; the broker shares the machine's cores with the client",
    }
    _print_broker_table(result)
    return result


SensorRecord = tuple[str, bytes, bytes]  # topic, key, value


def _sensor_records(events: WorldEvents) -> list[SensorRecord]:
    """The world's events as the bridge sends them: under their topic, with the registry's record key."""
    return [(name, topic(name).key_of(event).encode(), event.model_dump_json().encode())
            for name, records in events.by_topic().items() for event in records]


def _raw_produce_rate(adapter: KafkaAdapter, records: list[SensorRecord]) -> float:
    """Messages/s for plain produce of these records, with the bridge's producer settings."""
    adapter.ensure_topics([TopicConfig("bench_raw", 2, compacted=False)])
    producer = adapter.producer()
    began = time.monotonic()
    for _, key, value in records:
        producer.send("bench_raw", key=key, value=value)
    producer.flush()
    seconds = time.monotonic() - began
    producer.close()
    return len(records) / seconds


def _bridge_backlog_rate(settings: Settings, records: list[SensorRecord]) -> float:
    """Events/s the bridge validates and delivers when the streams hold a backlog (the same events again)."""
    from smartshelf.adapters.redis_clock import redis_client
    from smartshelf.apps.bridge import SEEN_KEY, Bridge
    from smartshelf.apps.producers import STREAM_FIELD
    from smartshelf.registry import stream_of

    client = redis_client(settings)
    client.delete(SEEN_KEY)  # the same events again: as new to the bridge as the first time, not repeats
    pipe = client.pipeline(transaction=False)
    for name, _, value in records:
        pipe.xadd(stream_of(name), {STREAM_FIELD: value})
    pipe.execute()
    bridge = Bridge(settings)
    began = time.monotonic()
    delivered = 0
    while delivered < len(records):
        delivered += bridge.step(block_ms=100)
    seconds = time.monotonic() - began
    bridge.close()
    return delivered / seconds


def bench_producers(base: Settings, days: int = 1, step_seconds: int = 900) -> dict[str, object]:
    """Sensor events generated by the world, and delivered into Kafka by producers + bridge in fast mode,
    next to the raw broker produce rate of the same records measured in the same run."""
    from smartshelf.adapters.redis_clock import SimClock, redis_client
    from smartshelf.apps.bridge import stats
    from smartshelf.clock import ClockPlan

    with scratch_stack(base, prefix="smartshelf-bench-") as (scratch, _):
        settings = scratch.model_copy(update={
            "use_simulated_time": True, "sim_mode": "fast", "step_seconds": step_seconds, "sim_days": days})
        for job in jobs.JOBS.values():
            job(settings)

        world = worlds_of(settings)[settings.store_id]
        state = world.initial_state(settings.sim_start)
        records: list[SensorRecord] = []
        began = time.monotonic()
        for tick in ClockPlan(settings.sim_start, timedelta(seconds=step_seconds), days).ticks_after(state.clock):
            state, events = world.advance(state, tick)
            records.extend(_sensor_records(events))
        generate_s = time.monotonic() - began

        service_start = supervisor.start(settings, ["producers", "bridge"])
        began = time.monotonic()
        supervisor.start(settings, ["clock"])
        clock = SimClock(redis_client(settings))
        while not clock.done():
            time.sleep(0.05)
        pipeline_s = time.monotonic() - began
        delivered = sum(v for k, v in stats(settings).items() if k.startswith("delivered:"))
        if delivered != len(records):
            raise AssertionError(f"bench: {delivered} events delivered, the world made {len(records)}")
        worker_memory = {row.name: row.pss_mb for row in supervisor.status(settings) if row.port is None}

        supervisor.stop(settings, ["clock", "bridge", "producers"])
        bridge_rate = _bridge_backlog_rate(settings, records)
        adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
        raw_rate = _raw_produce_rate(adapter, records)
        adapter.close()

    delivered_rate = delivered / pipeline_s
    return {
        "benchmark": "producers",
        "simulated_days": days,
        "step_seconds": step_seconds,
        "events": delivered,
        "generated_events_per_s": round(len(records) / generate_s),
        "lockstep_delivered_events_per_s": round(delivered_rate),
        "bridge_backlog_events_per_s": round(bridge_rate),
        "raw_broker_produce_msgs_per_s": round(raw_rate),
        "bridge_to_raw_ratio": round(bridge_rate / raw_rate, 2),
        "simulated_day_wall_s": round(pipeline_s / days, 1),
        "service_start_s": {name: round(s, 2) for name, s in service_start.items()},
        "service_pss_mb": worker_memory,
    }


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(q * len(ordered)), len(ordered) - 1)] if ordered else 0.0


def _busy_seconds(progress: list[dict[str, Any]]) -> float:
    """Wall time covered by at least one of these triggers (they overlap across queries)."""
    spans = sorted((datetime.fromisoformat(p["timestamp"]).timestamp(),
                    datetime.fromisoformat(p["timestamp"]).timestamp() + p["durationMs"]["triggerExecution"] / 1000)
                   for p in progress)
    covered, reach = 0.0, float("-inf")
    for begin, end in spans:
        covered += max(0.0, end - max(begin, reach))
        reach = max(reach, end)
    return covered


def _produce_records(settings: Settings, records: list[SensorRecord]) -> None:
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    producer = adapter.producer()
    for name, key, value in records:
        producer.send(name, key=key, value=value)
    producer.flush()
    producer.close()
    adapter.close()


def _raw_consume_rate(settings: Settings, start: dict[Partition, int]) -> tuple[int, float]:
    """(records, msgs/s) for a plain read of the sensor topics from `start` to their end."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    began = time.monotonic()
    consumed = sum(1 for _ in adapter.read(list(start), start=start))
    seconds = time.monotonic() - began
    adapter.close()
    return consumed, consumed / seconds


def bench_spark(base: Settings, warm_days: int = 1, cold_days: int = 1, max_offsets: int | None = None
                ) -> dict[str, object]:
    """Events/s through Kafka source → validation → state → Delta + compacted topics with every state app
    running in one SparkSession (the state apps in the keyed query, the lake sink in its own, as the runner runs
    them),
    next to the raw consume rate of the same records in the same run.

    Day 1 is caught up from cold (session and query start-up included, reported apart). The queries are
    then stopped, the next `warm_days` are produced as a backlog, read once raw, and the queries restarted in the
    same session: the warm rate is that backlog over the time from restart to caught up."""
    from smartshelf.adapters.spark import spark_session
    from smartshelf.registry import SENSOR_TOPICS
    from smartshelf.streaming.apps import STATE_APPS
    from smartshelf.streaming.runner import query_groups, select_apps, start_apps

    with scratch_stack(base, prefix="smartshelf-bench-") as (settings, _):
        settings = settings.model_copy(update={"max_offsets_per_trigger": max_offsets})
        for job in jobs.JOBS.values():
            job(settings)
        world = worlds_of(settings)[settings.store_id]
        state, cold_events = world.advance(world.initial_state(settings.sim_start),
                                           settings.sim_start + timedelta(days=cold_days))
        _, warm_events = world.advance(state, state.clock + timedelta(days=warm_days))
        _produce_records(settings, _sensor_records(cold_events))

        spark = spark_session(settings, "bench-spark")
        began = time.monotonic()
        groups = query_groups(settings, select_apps(STATE_APPS))  # as the runner does: the twin's and the lake's
        queries = [start_apps(spark, settings, name, select_apps(apps)) for name, apps in groups.items()]
        for query in queries:
            query.processAllAvailable()
        cold_s = time.monotonic() - began
        for query in queries:
            query.stop()

        adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
        partitions = [tp for name in SENSOR_TOPICS for tp in adapter.partitions_for(name)]
        backlog_start = adapter.end_offsets(partitions)
        adapter.close()
        _produce_records(settings, _sensor_records(warm_events))
        consumed, raw_consume_rate = _raw_consume_rate(settings, backlog_start)
        if consumed != len(warm_events):
            raise AssertionError(f"bench: read {consumed} records raw, produced {len(warm_events)}")

        began = time.monotonic()
        queries = [start_apps(spark, settings, name, select_apps(apps)) for name, apps in groups.items()]
        for query in queries:
            query.processAllAvailable()
        warm_s = time.monotonic() - began
        busy = [p for q in queries for p in q.recentProgress if p["numInputRows"] > 0]
        durations = [float(p["durationMs"]["triggerExecution"]) / 1000 for p in busy]
        by_query = {q.name: _trigger_parts([p for p in q.recentProgress if p["numInputRows"] > 0]) for q in queries}
        rows = supervisor.status(settings)
        rss, pss = supervisor.memory_mb(os.getpid(), frozenset(row.pid for row in rows if row.pid is not None))
        stack_rss = sum(row.rss_mb or 0 for row in rows)
        for query in queries:
            query.stop()
        spark.stop()

    rate = len(warm_events) / warm_s
    return {
        "benchmark": "spark",
        "apps": len(STATE_APPS),
        "queries": len(queries),
        "max_offsets_per_trigger": max_offsets,
        "cold_events": len(cold_events),
        "cold_catch_up_s": round(cold_s, 1),
        "warm_events": len(warm_events),
        "pipeline_events_per_s": round(rate),
        "raw_consume_msgs_per_s": round(raw_consume_rate),
        "pipeline_to_raw_ratio": round(rate / raw_consume_rate, 2),
        "busy_events_per_s": round(sum(p["numInputRows"] for p in busy) / _busy_seconds(busy)),
        "trigger_s_p50": round(_percentile(durations, 0.5), 2),
        "trigger_s_p99": round(_percentile(durations, 0.99), 2),
        "triggers_by_query": by_query,
        "driver_tree_rss_mb": round(rss), "driver_tree_pss_mb": round(pss),
        "stack_rss_mb": round(rss + stack_rss),
        "note": "pipeline rate: from the restart of the queries to caught up; busy rate: over the time at "
                "least one query was in a trigger with data (start-up excluded); triggers of the warm run only",
    }


def _trigger_parts(progress: list[Any]) -> dict[str, float]:
    """A query's busy triggers: their count, the median trigger, and the median of each of its parts (Spark's
    durationMs; addBatch is the batch itself, foreachBatch included) and of its state store commits."""
    parts: dict[str, list[float]] = {}
    for report in progress:
        for name, ms in report["durationMs"].items():
            parts.setdefault(name, []).append(float(ms) / 1000)
        for operator in report["stateOperators"]:
            parts.setdefault("stateCommit", []).append(float(operator["commitTimeMs"]) / 1000)
            parts.setdefault("stateUpdates", []).append(float(operator["allUpdatesTimeMs"]) / 1000)
    return {"triggers": len(progress), **{name: round(_percentile(values, 0.5), 2) for name, values in parts.items()}}


def bench_sim(base: Settings, days: int = 1, step_seconds: int = 3600) -> dict[str, object]:
    """Wall time of simulated days at reference scale in fast lockstep, through every service (`smartshelf sim`)."""
    from smartshelf.runtime.sim import run_sim

    summary = run_sim(base.model_copy(update={"step_seconds": step_seconds}), days, base.sim_seed, None, fast=True)
    if not summary["checks_ok"]:
        raise AssertionError(f"bench sim: the run's checks failed: {summary}")
    return {
        "benchmark": "sim",
        "simulated_days": days,
        "step_seconds": step_seconds,
        "events": summary["events"],
        "wall_s": summary["wall_s"],
        "simulated_day_wall_s": round(float(summary["wall_s"]) / days, 1),  # type: ignore[arg-type]
        "digest": summary["digest"],
        "note": "wall time includes starting the scratch stack and the Spark session",
    }


def bench_cluster(base: Settings, days: int = 1, step_seconds: int = 3600, workers: int = 2) -> dict[str, object]:
    """The same simulated days (`base`'s seed, fast lockstep) with Spark in local mode and on a standalone cluster of
    `workers` one-core workers, one after the other: the digest of each (the same, or the apps are not what
    they claim) and the wall time of each."""
    from smartshelf.runtime.sim import run_sim

    runs: dict[str, dict[str, object]] = {}
    walls: dict[str, float] = {}
    for mode, count in (("local", 0), ("cluster", workers)):
        settings = base.model_copy(update={"step_seconds": step_seconds, "spark_workers": count})
        summary = run_sim(settings, days, base.sim_seed, None, fast=True)
        if not summary["checks_ok"]:
            raise AssertionError(f"bench cluster: the {mode} run's checks failed: {summary}")
        walls[mode] = float(summary["wall_s"])  # type: ignore[arg-type]
        runs[mode] = {"wall_s": walls[mode], "events": summary["events"], "digest": summary["digest"]}
    local, cluster = runs["local"], runs["cluster"]
    return {
        "benchmark": "cluster",
        "simulated_days": days,
        "step_seconds": step_seconds,
        "seed": base.sim_seed,
        "workers": workers,
        "local": local,
        "cluster": cluster,
        "same_digest": local["digest"] == cluster["digest"],
        "cluster_over_local_wall": round(walls["cluster"] / walls["local"], 2),
        "note": "wall time includes starting each scratch stack (the cluster's master and workers too)",
    }


SCALE_STORES = (1, 2, 4, 8)
MEMORY_EVERY_S = 10.0  # how often bench scale sums the stack's memory (a status read walks every process tree)


class _PeakMemory:
    """The stack's largest summed RSS and PSS (its servers' process trees) over a run, sampled now and then."""

    def __init__(self) -> None:
        self.rss_mb = self.pss_mb = 0.0
        self.last = 0.0

    def sample(self, settings: Settings, _now: datetime | None) -> None:
        if time.monotonic() - self.last < MEMORY_EVERY_S:
            return
        self.last = time.monotonic()
        rows = [row for row in supervisor.status(settings) if row.rss_mb is not None]
        self.rss_mb = max(self.rss_mb, sum(row.rss_mb or 0.0 for row in rows))
        self.pss_mb = max(self.pss_mb, sum(row.pss_mb or 0.0 for row in rows))


def bench_scale(base: Settings, sizes: tuple[int, ...] = SCALE_STORES, days: int = 1,
                step_seconds: int = 3600) -> dict[str, object]:
    """A chain of 1, 2, 4 and 8 stores, one simulated day each in fast lockstep through every service (`smartshelf
    sim --stores N`), one after the other on this machine: events, wall time, events/s, the stack's peak memory,
    and each store's digest, which must not depend on how many stores run beside it."""
    return scale_result(base, [scale_run(base, stores, days, step_seconds) for stores in sizes], days, step_seconds)


def scale_run(base: Settings, stores: int, days: int = 1, step_seconds: int = 3600) -> dict[str, Any]:
    """One run of `bench scale`: `stores` stores for `days` simulated days on a scratch stack of their own."""
    from smartshelf.runtime.sim import run_sim

    memory, began = _PeakMemory(), os.times()
    settings = base.model_copy(update={"step_seconds": step_seconds})
    summary = run_sim(settings, days, base.sim_seed, None, fast=True, stores=stores, during=memory.sample,
                      after=_after_scale_run)
    if not summary["checks_ok"]:
        raise AssertionError(f"bench scale: the run of {stores} store(s) failed its checks: {summary}")
    # this process is the run's driver: the stack's start-up, the lockstep's watch, the checks
    cpu = {**summary["cpu_s"], "sim driver": _cpu_since(began)}
    wall = float(summary["wall_s"])
    return {"stores": stores, "events": summary["events"], "wall_s": wall,
            "events_per_s": round(int(summary["events"]) / wall, 1),
            "peak_stack_rss_mb": round(memory.rss_mb), "peak_stack_pss_mb": round(memory.pss_mb),
            "cpu_s": cpu, "cpu_share_of_two_cores": round(sum(cpu.values()) / (2 * wall), 2),
            "topic_records": summary["topic_records"], "postgres_rows": summary["postgres_rows"],
            "chain_digest": summary["digest"],
            "store_digests": summary.get("store_digests") or {FIRST_STORE: summary["digest"]}}


def scale_result(base: Settings, runs: list[dict[str, Any]], days: int = 1, step_seconds: int = 3600
                 ) -> dict[str, object]:
    """`bench scale`'s result from its runs (the first: one store): each run's wall time over the first's, whether
    a store's digest is the same in every run, the chart and the 500-store estimate."""
    digests: dict[str, set[str]] = {}
    for run in runs:
        for store_id, digest in run["store_digests"].items():
            digests.setdefault(store_id, set()).add(digest)
    one = runs[0]["wall_s"]
    for run in runs:
        run["wall_over_one_store"] = round(run["wall_s"] / one, 2)
    four = next((run for run in runs if run["stores"] == 4), None)
    return {
        "benchmark": "scale",
        "simulated_days": days,
        "step_seconds": step_seconds,
        "seed": base.sim_seed,
        "runs": runs,
        "store_digest_independent_of_chain_size": all(len(found) == 1 for found in digests.values()),
        "four_stores_within_twice_one": None if four is None else four["wall_over_one_store"] <= 2.0,
        "plot": scale_chart(runs),
        "estimate": chain_estimate(runs) if len(runs) > 1 else None,
        "tick_cost": tick_cost(),
        "note": "each run starts its own scratch stack (included in its wall time); peak memory: the stack's servers "
                "(their process trees), summed, sampled every 10 s",
    }


TICK_COST_TICKS = 30


def tick_cost(buckets: tuple[int, ...] = (64, 8), ticks: int = TICK_COST_TICKS) -> dict[str, dict[str, float]]:
    """What a clock tick costs one store in the keyed processor's Python, by bucket count: one-minute ticks through
    every bucket's views of a generated store (the views' JSON read, the loop apps' rules, written back if
    changed), as `KeyedStateProcessor` runs them; Spark's own per-group state round trips are not in it. In the
    lockstep a day has 24 ticks; in real time one comes every STEP_SECONDS, which is what the estimate needs."""
    from smartshelf.datagen import generate_store
    from smartshelf.loop import StoreConfig
    from smartshelf.policies import derive_config, load_policy_config, warehouse_capacity
    from smartshelf.streaming.keyed import KeyedRecord
    from smartshelf.streaming.keyed_loop import KEYED_LOOP_APP_CLASSES, apply_views, opening_views

    store = generate_store(jobs.DEFAULT_STORE_SEED)
    apps = [cls() for cls in KEYED_LOOP_APP_CLASSES]
    config = StoreConfig.from_tables(derive_config(store, load_policy_config()), warehouse_capacity(store))
    for app in apps:
        app.start(config, Settings(_env_file=None), store.store_id)  # type: ignore[call-arg]
    opened = datetime(2025, 1, 1, 8)
    found = {}
    for count in buckets:
        views = {bucket: json.dumps(view) for bucket, view in opening_views(apps, store, opened, count).items()}
        began = time.process_time()
        for minute in range(1, ticks + 1):
            at = (opened + timedelta(minutes=minute)).isoformat()
            tick = KeyedRecord("clock_ticks", 0, minute, json.dumps({"tick_id": f"t{minute}", "ts": at}).encode())
            for bucket, text in views.items():
                value = json.loads(text)
                if apply_views(apps, value, [("", tick)], store.store_id)[0]:
                    views[bucket] = json.dumps(value)
        spent = time.process_time() - began
        found[f"{count}_buckets"] = {"ms_per_store_tick": round(spent / ticks * 1000, 1),
                                     "ms_per_group": round(spent / (ticks * count) * 1000, 2)}
    return found


ESTIMATE_STORES = 500
DAY_S = 86_400  # a simulated day in real time (TIME_MULTIPLIER=1)


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """The least-squares line through the points: (intercept, slope)."""
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread if spread else 0.0
    return mean_y - slope * mean_x, slope


def chain_estimate(runs: list[dict[str, Any]], stores: int = ESTIMATE_STORES) -> dict[str, object]:
    """What `stores` stores running in real time (a simulated day per day) ask of each part, from how the measured
    runs grow with their stores: a least-squares line through (stores, amount) for the events, each topic's
    records, the PostgreSQL writes (the mirrored topics' records; the tills' rows) and each service's CPU seconds.
    The slope is one more store-day; the intercept is what a run costs whatever its stores (the lockstep's per-tick
    work, start-up), which in real time is paid per trigger, not per store, and is reported apart."""
    from smartshelf.connect import SINKS

    counts = [float(run["stores"]) for run in runs]

    def per_store_day(amounts: list[float]) -> float:
        return _line(counts, amounts)[1]

    topics = sorted({name for run in runs for name in run["topic_records"]})
    records = {name: per_store_day([float(run["topic_records"].get(name, 0)) for run in runs]) for name in topics}
    writes = 0.0
    for sink in SINKS:
        if sink.mode == "pos":  # one record, a row per transaction and per line
            writes += sum(per_store_day([float(run["postgres_rows"].get(t.pg, 0)) for run in runs])
                          for t in sink.tables)
        else:
            writes += records.get(sink.topic, 0.0)
    services = sorted({name for run in runs for name in run["cpu_s"]})
    cpu = {name: _line(counts, [float(run["cpu_s"].get(name, 0.0)) for run in runs]) for name in services}
    events = per_store_day([float(run["events"]) for run in runs])

    def per_s(per_day: float) -> float:
        return round(per_day * stores / DAY_S, 2)

    return {
        "stores": stores,
        "from_runs_of": [run["stores"] for run in runs],
        "per_store_day": {"events": round(events), "topic_records": round(sum(records.values())),
                          "postgres_writes": round(writes),
                          "cpu_s": {name: round(line[1], 1) for name, line in cpu.items()}},
        "per_run_whatever_the_stores_cpu_s": {name: round(line[0], 1) for name, line in cpu.items()},
        "real_time": {"events_per_s": per_s(events), "topic_records_per_s": per_s(sum(records.values())),
                      "postgres_writes_per_s": per_s(writes),
                      "cores_for_the_stores_work": {name: per_s(line[1]) for name, line in cpu.items()},
                      "busiest_topics_records_per_s": {name: per_s(records[name]) for name in sorted(
                          topics, key=lambda name: -records[name])[:5]}},
    }


def _after_scale_run(settings: Settings) -> dict[str, object]:
    """Of the finished run: the CPU seconds each server used (its process tree: where the machine's cores went), the
    records in every topic (what the broker took) and the rows in every mirror table (what PostgreSQL holds)."""
    from smartshelf.runtime import mirror
    from smartshelf.runtime.sim import topic_counts

    rows = [row for row in supervisor.status(settings) if row.pid is not None]
    pids = frozenset(row.pid for row in rows if row.pid is not None)
    return {"cpu_s": {row.name: round(supervisor.cpu_s(row.pid, pids - {row.pid}), 1)
                      for row in rows if row.pid is not None},
            "topic_records": topic_counts(settings, tuple(t.name for t in TOPICS)),
            "postgres_rows": mirror.row_counts(settings)}


def _cpu_since(began: os.times_result) -> float:
    now = os.times()
    return round(now.user + now.system - began.user - began.system, 1)


def scale_chart(runs: list[dict[str, Any]]) -> str:
    """The wall time against the number of stores as a Mermaid chart (the README renders it)."""
    stores = ", ".join(str(run["stores"]) for run in runs)
    walls = ", ".join(f"{run['wall_s']:.0f}" for run in runs)
    top = max(run["wall_s"] for run in runs)
    return ("xychart-beta\n    title \"One simulated day, fast lockstep\"\n"
            f"    x-axis \"stores\" [{stores}]\n    y-axis \"wall time (s)\" 0 --> {int(top * 1.1) + 1}\n"
            f"    bar [{walls}]\n    line [{walls}]")


def _train_on_the_lake(settings: Settings, holdout_days: int) -> dict[str, object]:
    """The daily features of a settled run's lake, then the model trained and scored against both baselines."""
    from smartshelf.runtime import ml_jobs

    began = time.monotonic()
    until = ml_jobs.watermark(settings)
    rows = ml_jobs.build_features(settings, until)
    features_s = time.monotonic() - began
    trained = ml_jobs.train_model(settings, rows, until, holdout_days)
    return {"feature_rows": len(rows), "features_s": round(features_s, 1),
            "train_s": round(time.monotonic() - began - features_s, 1), "model": trained.model.model_dump(mode="json"),
            "cv_mae": [round(m, 3) for m in trained.result.cv_mae], "best_iteration": trained.result.best_iteration}


def _ml_result(summary: dict[str, Any], days: int, seed: int, holdout_days: int) -> dict[str, object]:
    model = summary["model"]
    assert isinstance(model, dict)
    metrics = {name: round(float(model[name]), 3) for name in (
        "mae_model", "rmse_model", "mae_last7", "rmse_last7", "mae_model_batches", "mae_last7_batches",
        "mae_rule_batches")}
    return {
        "benchmark": "ml", "simulated_days": days, "seed": seed, "holdout_days": holdout_days,
        "sim_wall_s": summary["wall_s"], "feature_rows": summary["feature_rows"],
        "features_s": summary["features_s"], "train_s": summary["train_s"],
        "train_rows": model["train_rows"], "holdout_rows": model["holdout_rows"],
        "data_window": [model["data_start"], model["data_end"]], "cv_mae": summary["cv_mae"],
        "best_iteration": summary["best_iteration"], **metrics,
        "model_beats_last7": metrics["mae_model"] < metrics["mae_last7"],
        "model_beats_rule_in_batches": metrics["mae_model_batches"] < metrics["mae_rule_batches"],
    }


def bench_ml(base: Settings, days: int = 21, holdout_days: int = 3, step_seconds: int = 3600) -> dict[str, object]:
    """A fast simulation of `days` days on a scratch stack, then on its lake: the daily features, training
    (time-series CV, early stopping) and the model against both baselines on the held-out days."""
    from smartshelf.runtime.sim import run_sim

    summary = run_sim(base.model_copy(update={"step_seconds": step_seconds}), days, base.sim_seed, None, fast=True,
                      after=lambda settings: _train_on_the_lake(settings, holdout_days))
    if not summary["checks_ok"]:
        raise AssertionError(f"bench ml: the run's checks failed: {summary}")
    return _ml_result(summary, days, base.sim_seed, holdout_days)


WHATIF_SNAPSHOT = "whatif-snapshot"  # under DATA_DIR: kept between runs, as the day-N state takes the longest


def bench_whatif(base: Settings, days: int = 21, more_days: int = 7, holdout_days: int = 3,
                 step_seconds: int = 7200) -> dict[str, object]:
    """`bench ml`'s run and model (days 1..`days`), its stopped stack kept as a snapshot; then `more_days` from
    that one state under SUPPLIER_POLICY=rules and under ml: stock-out hours, units expired, units ordered.
    A snapshot of the same seed, days and ticks left by an earlier run is used again (its run took hours); the ml
    arm trains its model on the snapshot's lake first, so the model is this version's (the result's "model").
    2-h ticks, not 1-h: the 35 simulated days then take ~2 h instead of ~3 on 2 cores."""
    from smartshelf.runtime import whatif

    snapshot = base.data_dir / WHATIF_SNAPSHOT
    wanted = {"days": days, "seed": base.sim_seed, "step_seconds": step_seconds}
    summary_file = snapshot / whatif.SUMMARY_FILE
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    if summary is None or summary.get("whatif_base") != wanted:
        summary = whatif.base_run(base, days, step_seconds, snapshot,
                                  lambda settings: {**_train_on_the_lake(settings, holdout_days),
                                                    "whatif_base": wanted})
    if not summary["checks_ok"]:
        raise AssertionError(f"bench whatif: the day-{days} run's checks failed: {summary}")
    arms = {"rules": _whatif_arm(snapshot, more_days, "rules"),
            "ml": _whatif_arm(snapshot, more_days, "ml", lambda settings: _train_on_the_lake(settings, holdout_days))}
    return {
        "benchmark": "whatif", "model": _ml_result({**summary, **arms["ml"]["prepared"]}, days, base.sim_seed,
                                                   holdout_days),
        "more_days": more_days, "window": arms["ml"]["window"],
        **{policy: {"outcome": arm["outcome"], "wall_s": arm["wall_s"], "digest": arm["digest"],
                    "supplier_orders": arm["supplier_orders"], "events": arm["events"]}
           for policy, arm in arms.items()},
    }


def _whatif_arm(snapshot: Path, more_days: int, policy: str,
                prepare: Callable[[Settings], dict[str, object]] | None = None) -> dict[str, Any]:
    """One arm of the what-if, kept beside its snapshot once its checks pass: a later run of the bench (after a
    session or a machine that stopped) goes on with the arms not run yet."""
    from smartshelf.runtime import whatif

    kept = snapshot / f"arm-{policy}-{more_days}d.json"
    if kept.is_file():
        return json.loads(kept.read_text())  # type: ignore[no-any-return]
    arm = whatif.run_arm(snapshot, more_days, policy, prepare)  # type: ignore[arg-type]
    if not arm["checks_ok"]:
        raise AssertionError(f"bench whatif: the {policy} arm's checks failed: {arm}")
    kept.write_text(json.dumps(arm, indent=1, default=str))
    return arm


def bench_risk(base: Settings, days: int = 3, holdout_hours: int = 24, step_seconds: int = 3600
               ) -> dict[str, object]:
    """A fast simulation of `days` days on a scratch stack (refills, orders and all), then the restock-risk model
    trained on its lake's shelf events and scored on the held-out hours against both baselines."""
    from smartshelf.runtime import ml_jobs
    from smartshelf.runtime.sim import run_sim

    def train_on_the_lake(settings: Settings) -> dict[str, object]:
        began = time.monotonic()
        trained = ml_jobs.train_risk_model(settings, ml_jobs.watermark(settings), holdout_hours)
        return {"train_s": round(time.monotonic() - began, 1), "train_rows": trained.result.train_rows,
                "holdout_rows": trained.result.holdout_rows, **asdict(trained.result.metrics)}

    summary = run_sim(base.model_copy(update={"step_seconds": step_seconds}), days, base.sim_seed, None, fast=True,
                      after=train_on_the_lake)
    if not summary["checks_ok"]:
        raise AssertionError(f"bench risk: the run's checks failed: {summary}")
    metrics = ("auc_model", "auc_emptiness", "brier_model", "brier_base_rate", "base_rate")
    return {"benchmark": "risk", "simulated_days": days, "seed": base.sim_seed, "holdout_hours": holdout_hours,
            "sim_wall_s": summary["wall_s"], "train_s": summary["train_s"], "train_rows": summary["train_rows"],
            "holdout_rows": summary["holdout_rows"], "holdout_positive": summary["holdout_positive"],
            **{name: round(float(summary[name]), 4) for name in metrics},  # type: ignore[arg-type]
            "note": "train_s replays the lake's shelf events into hourly snapshots and fits; sim_wall_s includes"
                    " starting the scratch stack"}


# the opening state raises ~170 alerts at once in the first simulated minutes; the bench times the alerts of the
# running store after it
DEMO_WARM_UP = timedelta(minutes=15)


class _DashboardMeasured(Exception):
    """Ends the demo run of bench_dashboard once its alerts are timed."""


def bench_dashboard(base: Settings, alerts: int = 20, time_multiplier: float = 10.0,
                    timeout_s: float = 900.0) -> dict[str, object]:
    """Seconds from an alert being produced (its Kafka record's timestamp) to the dashboard's map counting it, in
    headless Chromium, on a run at demo speed (`make up`'s TIME_MULTIPLIER 10): the clock advances in wall time
    and the whole pipeline runs, as a user watching the map sees it."""
    from smartshelf.runtime.dashboard_probe import alert_latencies, browser_page, load, served
    from smartshelf.runtime.sim import run_sim

    measured: dict[str, Any] = {}

    def time_alerts(settings: Settings, now: datetime | None) -> None:
        if now is None or now < settings.sim_start + DEMO_WARM_UP:
            return
        with served(settings) as url, browser_page() as page:
            measured["first_render_s"] = load(page, url)
            measured["latencies"] = alert_latencies(page, settings, alerts, timeout_s)
        raise _DashboardMeasured

    try:
        run_sim(base.model_copy(update={"time_multiplier": time_multiplier}), 1, base.sim_seed, None, fast=False,
                during=time_alerts)
    except _DashboardMeasured:
        pass
    to_map = [timing.to_map_s for timing in measured["latencies"]]
    to_postgres = [timing.to_postgres_s for timing in measured["latencies"]]
    return {
        "benchmark": "dashboard",
        "time_multiplier": time_multiplier,
        "alerts_timed": len(to_map),
        "first_render_s": round(measured["first_render_s"], 1),
        "alert_to_map_s_p50": round(_percentile(to_map, 0.50), 2),
        "alert_to_map_s_p90": round(_percentile(to_map, 0.90), 2),
        "alert_to_map_s_max": round(max(to_map), 2),
        "alert_to_postgres_s_p50": round(_percentile(to_postgres, 0.50), 2),
        "alert_to_postgres_s_max": round(max(to_postgres), 2),
        "target_s": 5.0,
        "note": "from the alert record's produce time to the map's 'Alerts raised' metric counting it, polled "
                "every ~0.1 s in the page (not reloaded: the app refreshes itself every 2 s); path: loop app → "
                "alerts topic → Kafka Connect → PostgreSQL → dashboard",
    }


def _state_record(i: int, shelves: int) -> tuple[str, bytes, bytes, datetime]:
    """A shelf_state or wh_state record whose time (unique per record) tells which one a mirror row is."""
    from smartshelf.schemas import ShelfState, WarehouseState

    ts = datetime(2025, 1, 1) + timedelta(seconds=i)
    shelf = f"S{i % shelves:04d}"
    value = ShelfState(shelf_id=shelf, current_stock=i % 50, current_weight=1000.0, last_event_type="pickup",
                       last_event_ts=ts) if i % 2 == 0 else \
        WarehouseState(shelf_id=shelf, wh_current_stock=i % 50, last_event_type="wh_out", last_event_ts=ts)
    name = "shelf_state" if i % 2 == 0 else "wh_state"
    return name, topic(name).key_of(value).encode(), value.model_dump_json().encode(), ts


def _mirror_lags(settings: Settings, rate: float, seconds: float) -> list[float]:
    """Seconds from each state record landing in Kafka (acknowledged) to its row in PostgreSQL, for records sent
    at `rate` per second, each to a key of its own (an overwritten row would hide its predecessor); a watcher
    polls both tables every 20 ms."""
    import threading

    from smartshelf.adapters import postgres

    landed: dict[datetime, float] = {}
    seen: dict[datetime, float] = {}
    sending = threading.Event()
    sending.set()

    def watch() -> None:
        with postgres.connect(settings) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                while sending.is_set() or len(seen) < len(landed):
                    cur.execute("SELECT last_event_ts FROM state.shelf_state WHERE last_event_ts < %(end)s UNION ALL "
                                "SELECT last_event_ts FROM state.wh_state WHERE last_event_ts < %(end)s",
                                {"end": last_ts})
                    now = time.monotonic()
                    for (ts,) in cur.fetchall():
                        seen.setdefault(ts, now)
                    time.sleep(0.02)
                    if not sending.is_set() and now - stop_at > 30:
                        return

    stop_at = float("inf")
    count = int(rate * seconds)
    last_ts = _state_record(count, 1)[3]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    producer = adapter.producer(**{"linger.ms": 0})
    began = time.monotonic()
    for i in range(count):
        time.sleep(max(began + i / rate - time.monotonic(), 0))
        name, key, value, ts = _state_record(i, count)
        producer.send_and_wait([Outgoing(name, key, value)], timeout_s=30)
        landed[ts] = time.monotonic()
    stop_at = time.monotonic()
    sending.clear()
    watcher.join()
    producer.close()
    adapter.close()
    missing = [ts for ts in landed if ts not in seen]
    if missing:
        raise AssertionError(f"bench connect: {len(missing)} of {count} records never showed in PostgreSQL")
    return [max(seen[ts] - landed[ts], 0.0) for ts in landed]


def bench_connect(base: Settings, rate: float = 50.0, seconds: float = 60.0, backlog: int = 40_000
                  ) -> dict[str, object]:
    """The PostgreSQL mirror (Kafka Connect, Debezium's JDBC sink): the rate at which it writes a backlog of state
    records produced while it waits, next to the raw
    consume rate of the same records in the same run; then p50/p99 lag from a state record landing in Kafka to
    its row in PostgreSQL at a steady rate (several times the demo's), one record per produce request."""
    from smartshelf.runtime import mirror

    with scratch_stack(base, prefix="smartshelf-bench-") as (settings, _):
        for name in ("db-init", "kafka-init"):
            jobs.JOBS[name](settings)
        supervisor.start(settings, ["connect"])  # returns once every sink runs its task, idle
        began = time.monotonic()
        _produce_records(settings, [_state_record(i, 1100)[:3] for i in range(10**6, 10**6 + backlog)])
        mirror.wait_caught_up(settings)
        catch_up_s = time.monotonic() - began
        adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
        partitions = [tp for name in ("shelf_state", "wh_state") for tp in adapter.partitions_for(name)]
        adapter.close()
        _, raw_rate = _raw_consume_rate(settings, {tp: 0 for tp in partitions})
        lags = _mirror_lags(settings, rate, seconds)
        rss = next(s.rss_mb for s in supervisor.status(settings) if s.name == "connect") or 0.0
        differences = mirror.differences(settings)
    if differences:
        raise AssertionError(f"bench connect: the mirror differs from the topics: {differences}")
    return {
        "benchmark": "connect",
        "steady_rate_records_per_s": rate,
        "steady_records": len(lags),
        "lag_s_p50": round(_percentile(lags, 0.50), 3),
        "lag_s_p99": round(_percentile(lags, 0.99), 3),
        "lag_s_max": round(max(lags), 3),
        "backlog_records": backlog,
        "backlog_catch_up_s": round(catch_up_s, 1),
        "backlog_records_per_s": round(backlog / catch_up_s),
        "raw_consume_msgs_per_s": round(raw_rate),
        "worker_rss_mb": round(rss),
        "note": "lag: from the broker's acknowledgement to the row seen by a watcher polling every 20 ms; the "
                "backlog time runs from the first record produced (Connect already running, idle) to every sink "
                "committed past the end",
    }


# the REST reads of `bench api`, each timed alone first; the slowest is then loaded with concurrent requests
API_READS = ("/stores", "/shelves?limit=1000", "/shelves/{shelf_id}", "/warehouse/items?limit=1000",
             "/alerts?limit=1000", "/plans/supplier?limit=1000", "/plans/restock?limit=1000", "/orders?limit=1000",
             "/kpis/hourly", "/kpis/daily")


def _single_read_ms(base_url: str, paths: list[str], rounds: int = 5) -> dict[str, float]:
    import httpx

    timings: dict[str, float] = {}
    with httpx.Client(base_url=base_url, timeout=60) as client:
        for path in paths:
            runs = []
            for _ in range(rounds):
                began = time.perf_counter()
                client.get(path).raise_for_status()
                runs.append((time.perf_counter() - began) * 1000)
            timings[path] = round(sorted(runs)[rounds // 2], 2)
    return timings


def bench_api(base: Settings, days: int = 1, concurrency: int = 100, requests: int = 2000, clients: int = 50,
              events: int = 40_000) -> dict[str, object]:
    """The live API on the data of a simulated day (then with the pipeline stopped, so only the API works): each
    REST read alone, the slowest under `concurrency` concurrent requests (p50, p99, requests/s), and the
    WebSocket feed's fan-out of `events` sensor records to `clients` clients, alone and beside a stalled client
    (enough records that a client reading nothing overflows the default queue and the socket buffers before it)."""
    import asyncio

    from smartshelf.runtime import api_probe
    from smartshelf.runtime.sim import SERVICES, run_sim

    def load_the_api(settings: Settings) -> dict[str, object]:
        supervisor.stop(settings, SERVICES)
        supervisor.start(settings, ["api"])
        base_url = f"http://127.0.0.1:{settings.api_port}"
        shelf_id = jobs.load_config(settings).shelf_profiles[0].shelf_id
        single = _single_read_ms(base_url, [path.format(shelf_id=shelf_id) for path in API_READS])
        heaviest = max(single, key=single.__getitem__)
        latencies, wall_s = asyncio.run(api_probe.rest_latencies(base_url + heaviest, concurrency, requests))
        records = [("shelf_events", key, value) for key, value in _sensor_payloads(events)]

        def publish() -> int:
            producer = KafkaAdapter(settings.kafka_bootstrap_servers).producer()
            return len(producer.send_and_wait(Outgoing(name, key, value) for name, key, value in records))

        alone = asyncio.run(api_probe.fan_out(settings.api_port, "topics=shelf_events", clients, events, publish))
        beside = asyncio.run(api_probe.fan_out(settings.api_port, "topics=shelf_events", clients, events, publish,
                                               stalled=True))
        return {"single_read_ms": single, "heaviest": heaviest, "latencies": latencies, "rest_wall_s": wall_s,
                "fan_out": alone, "fan_out_stalled": beside}

    summary = run_sim(base.model_copy(update={"step_seconds": 3600}), days, base.sim_seed, None, fast=True,
                      after=load_the_api)
    latencies = [t * 1000 for t in summary["latencies"]]  # type: ignore[union-attr]
    alone, beside = summary["fan_out"], summary["fan_out_stalled"]
    assert isinstance(alone, api_probe.FanOut) and isinstance(beside, api_probe.FanOut)
    return {
        "benchmark": "api", "simulated_days": days, "events_in_the_day": summary["events"],
        "single_read_ms_p50": summary["single_read_ms"],
        "rest_endpoint": summary["heaviest"], "rest_concurrency": concurrency, "rest_requests": requests,
        "rest_p50_ms": round(_percentile(latencies, 0.50), 1), "rest_p99_ms": round(_percentile(latencies, 0.99), 1),
        "rest_requests_s": round(requests / float(summary["rest_wall_s"]), 1),  # type: ignore[arg-type]
        "ws_clients": clients, "ws_events": events,
        "ws_per_client_events_s": round(alone.per_client_events_s), "ws_deliveries_s": round(alone.deliveries_s),
        "ws_per_client_events_s_beside_stalled": round(beside.per_client_events_s),
        "ws_rate_ratio_beside_stalled": round(beside.per_client_events_s / alone.per_client_events_s, 2),
        "ws_stalled_client_dropped": beside.stalled_dropped, "ws_stalled_client_close": beside.stalled_close,
        "note": "after the simulated day the pipeline's services are stopped: only Kafka, PostgreSQL, Redis and "
                "the API run; fan-out rates from the first record sent to the last client having all of them",
    }


def _sensor_payloads(count: int) -> list[tuple[bytes, bytes]]:
    from smartshelf.schemas import ShelfEvent

    events = [ShelfEvent(event_id=f"bench-{i:07d}", event_type="pickup", shelf_id=f"BENCH{i % 97:04d}", quantity=1,
                         weight_change=-330.0, customer_id=f"c{i % 500}", ts=datetime(2025, 1, 1, 12))
              for i in range(count)]
    return [(topic("shelf_events").key_of(e).encode(), e.model_dump_json().encode()) for e in events]


BENCHMARKS = {"broker": bench_broker, "producers": bench_producers, "spark": bench_spark, "sim": bench_sim,
              "cluster": bench_cluster, "connect": bench_connect, "dashboard": bench_dashboard, "ml": bench_ml,
              "whatif": bench_whatif, "risk": bench_risk, "api": bench_api, "scale": bench_scale}


def write_result(metrics_dir: Path, result: dict[str, object]) -> Path:
    metrics_dir.mkdir(parents=True, exist_ok=True)
    path = metrics_dir / f"bench_{result['benchmark']}.json"
    path.write_text(json.dumps({**result, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2,
                               allow_nan=False) + "\n")
    return path
