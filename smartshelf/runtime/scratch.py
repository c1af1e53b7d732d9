"""Scratch stacks: a whole embedded stack on free ports under a temp dir, for benchmarks and tests.

A stack is removed when its work ends; when the work fails, its servers' logs are kept first, under
`<run dir>/failed-scratch/` of the settings it was made from (the last failure's only, so they stay bounded)."""

from __future__ import annotations

import contextlib
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from smartshelf.errors import SmartShelfError
from smartshelf.runtime import supervisor
from smartshelf.settings import Settings


# listening ports are drawn below the kernel's range of ephemeral ports (ip_local_port_range, 32768-60999 by
# default): a port the kernel hands out is free now, but an outgoing connection may take it as its own local port
# before the server that was given it starts (seen with Kafka Connect's many clients: "port already in use")
LISTEN_PORTS = range(20_000, 32_768)


def free_ports(count: int) -> list[int]:
    """Distinct free ports, below the ephemeral range: all stay bound until every port is chosen, so none
    repeats."""
    chosen: list[socket.socket] = []
    try:
        for port in random.sample(LISTEN_PORTS, len(LISTEN_PORTS)):
            if len(chosen) == count:
                break
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            chosen.append(sock)
        if len(chosen) < count:
            raise SmartShelfError(f"only {len(chosen)} of {count} ports free in {LISTEN_PORTS}")
        return [sock.getsockname()[1] for sock in chosen]
    finally:
        for sock in chosen:
            sock.close()


def scratch_settings(base: Settings, run_dir: Path) -> Settings:
    """`base` moved under run_dir, on free ports."""
    kafka, controller, postgres, redis, dashboard, api, spark_master, connect, mlflow = free_ports(9)
    return base.model_copy(update={
        "run_dir": run_dir, "data_dir": run_dir / "data", "delta_dir": run_dir / "delta",
        "kafka_port": kafka, "kafka_controller_port": controller, "postgres_port": postgres, "redis_port": redis,
        "dashboard_port": dashboard, "api_port": api, "spark_master_port": spark_master,
        "connect_port": connect, "mlflow_port": mlflow, "mlflow_tracking_uri_setting": None,
    })


FAILED_LOGS = "failed-scratch"


def keep_logs(run_dir: Path, kept_under: Path) -> Path:
    """Copy a scratch stack's logs to `kept_under/<its name>`, replacing what an earlier failure left there."""
    shutil.rmtree(kept_under, ignore_errors=True)
    target = kept_under / run_dir.name
    shutil.copytree(run_dir / "logs", target)
    return target


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
    previous = signal.signal(signal.SIGTERM, exit_on_term) if in_main else None
    try:
        yield settings, supervisor.start(settings)
    except Exception:
        with contextlib.suppress(OSError):  # the failure itself is what must reach the user
            kept = keep_logs(run_dir, base.run_dir / FAILED_LOGS)
            print(f"the failed scratch stack's logs: {kept}", file=sys.stderr)
        raise
    finally:
        supervisor.stop(settings)
        shutil.rmtree(run_dir, ignore_errors=True)
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def exit_on_term(signum: int, frame: object) -> None:
    """SIGTERM as SystemExit: `finally` blocks (stopping a stack) run before the process ends."""
    raise SystemExit(128 + signum)
