"""Benchmarks. Each runs on its own scratch stack (free ports, temp run dir) so it neither disturbs nor
depends on a running stack, and reports numbers measured side by side in the same run.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from smartshelf.adapters.kafka import KafkaAdapter, TopicConfig
from smartshelf.runtime import jobs, supervisor
from smartshelf.runtime.scratch import scratch_stack
from smartshelf.settings import Settings


def _payload(i: int) -> bytes:
    # the size of a typical shelf event
    return json.dumps({
        "event_id": f"e{i:09d}", "event_type": "pickup", "shelf_id": f"S{i % 1100:04d}", "quantity": 1,
        "weight_change_kg": -0.5, "customer_id": f"C{i % 5000:05d}", "batch_code": None,
        "ts": "2025-01-01T09:00:00",
    }).encode()


def bench_broker(base: Settings, messages: int = 50_000) -> dict[str, object]:
    """Raw broker produce and consume rates, plus the stack's cold start time and idle memory."""
    began = time.monotonic()
    with scratch_stack(base, prefix="smartshelf-bench-") as (settings, start_times):
        stack_start_s = time.monotonic() - began
        idle = {row.name: {"rss_mb": row.rss_mb, "pss_mb": row.pss_mb} for row in supervisor.status(settings)}
        init_began = time.monotonic()
        for job in jobs.JOBS.values():
            job(settings)
        init_s = time.monotonic() - init_began

        adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
        adapter.ensure_topics([TopicConfig("bench", 2, compacted=False)])
        payloads = [_payload(i) for i in range(messages)]
        producer = adapter.producer()
        t0 = time.monotonic()
        for i, value in enumerate(payloads):
            producer.send("bench", key=f"S{i % 1100:04d}".encode(), value=value)
        producer.flush()
        produce_s = time.monotonic() - t0
        producer.close()

        t0 = time.monotonic()
        consumed = sum(1 for _ in adapter.read(adapter.partitions_for("bench")))
        consume_s = time.monotonic() - t0
        adapter.close()
        if consumed != messages:
            raise AssertionError(f"bench read {consumed} of {messages} messages")

    return {
        "benchmark": "broker",
        "messages": messages,
        "message_bytes": len(payloads[0]),
        "produce_msgs_per_s": round(messages / produce_s),
        "consume_msgs_per_s": round(messages / consume_s),
        "consume_to_produce_ratio": round(produce_s / consume_s, 2),
        "stack_cold_start_s": round(stack_start_s, 2),
        "server_start_s": {name: round(s, 2) for name, s in start_times.items()},
        "init_jobs_s": round(init_s, 2),
        "idle_memory_mb": idle,
        "idle_rss_total_mb": round(sum(v["rss_mb"] or 0 for v in idle.values()), 1),
        "idle_pss_total_mb": round(sum(v["pss_mb"] or 0 for v in idle.values()), 1),
    }


BENCHMARKS = {"broker": bench_broker}


def write_result(metrics_dir: Path, result: dict[str, object]) -> Path:
    metrics_dir.mkdir(parents=True, exist_ok=True)
    path = metrics_dir / f"bench_{result['benchmark']}.json"
    path.write_text(json.dumps({**result, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}, indent=2) + "\n")
    return path
