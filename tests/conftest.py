"""Shared test helpers: free ports and an isolated Settings per stack."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def isolated_settings(run_dir: Path, **overrides: object) -> Settings:
    """Settings on free ports under run_dir, ignoring the developer's environment and .env."""
    kafka, s3, postgres, redis = free_ports(4)
    values: dict[str, object] = {
        "run_dir": run_dir, "data_dir": run_dir / "data", "delta_dir": run_dir / "delta",
        "kafka_port": kafka, "s3_port": s3, "postgres_port": postgres, "redis_port": redis,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess (the CLI, an app) see the same settings."""
    return {
        **os.environ,
        "SMARTSHELF_RUN_DIR": str(settings.run_dir), "SMARTSHELF_DATA_DIR": str(settings.data_dir),
        "SMARTSHELF_DELTA_DIR": str(settings.delta_dir), "KAFKA_PORT": str(settings.kafka_port),
        "S3_PORT": str(settings.s3_port), "POSTGRES_PORT": str(settings.postgres_port),
        "REDIS_PORT": str(settings.redis_port),
    }


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A temp dir that the `postgres` OS user can traverse (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="smartshelf-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
