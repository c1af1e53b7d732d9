"""Scratch stacks: a whole embedded stack on free ports under a temp dir, for benchmarks and tests."""

from __future__ import annotations

import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smartshelf.runtime import supervisor
from smartshelf.settings import Settings


def free_ports(count: int) -> list[int]:
    """Distinct free ports: all sockets stay bound until every port is chosen, so none repeats."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def scratch_settings(base: Settings, run_dir: Path) -> Settings:
    """`base` moved under run_dir, on free ports."""
    kafka, controller, postgres, redis, dashboard, api, spark_master, connect = free_ports(8)
    return base.model_copy(update={
        "run_dir": run_dir, "data_dir": run_dir / "data", "delta_dir": run_dir / "delta",
        "kafka_port": kafka, "kafka_controller_port": controller, "postgres_port": postgres, "redis_port": redis,
        "dashboard_port": dashboard, "api_port": api, "spark_master_port": spark_master,
        "connect_port": connect,
    })


def make_run_dir(prefix: str) -> Path:
    """A temp dir the `postgres` OS user can traverse (mkdtemp makes it private)."""
    run_dir = Path(tempfile.mkdtemp(prefix=prefix))
    run_dir.chmod(0o755)
    return run_dir


@contextmanager
def scratch_stack(base: Settings, prefix: str = "smartshelf-scratch-") -> Iterator[tuple[Settings, dict[str, float]]]:
    """Start a fresh stack; yields its settings and each server's start time; stops and removes it after, also
    when the process is asked to stop (SIGTERM), so no server outlives it."""
    run_dir = make_run_dir(prefix)
    settings = scratch_settings(base, run_dir)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_term) if in_main else None
    try:
        yield settings, supervisor.start(settings)
    finally:
        supervisor.stop(settings)
        shutil.rmtree(run_dir, ignore_errors=True)
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
