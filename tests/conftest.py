"""Shared test helpers: isolated settings on free ports, the environment that carries them, and a topic's latest
value per key."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pydantic import BaseModel

from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.ingress import Rejection, parse_record
from smartshelf.registry import topic
from smartshelf.runtime import jobs, supervisor
from smartshelf.runtime.scratch import make_run_dir, scratch_settings
from smartshelf.settings import Settings


def isolated_settings(run_dir: Path, **overrides: object) -> Settings:
    """Settings on free ports under run_dir, ignoring the developer's environment and .env."""
    settings = scratch_settings(Settings(_env_file=None), run_dir)  # type: ignore[call-arg]
    return settings.model_copy(update=overrides)


def latest_in_topic(settings: Settings, topic_name: str) -> dict[str, BaseModel]:
    """The latest value of each key on a (compacted) topic of one store, by its key within the store (the record key
    without the store: the tests' stacks run one store)."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    described = topic(topic_name)
    latest: dict[str, BaseModel] = {}
    for record in adapter.read(adapter.partitions_for(topic_name)):
        value = described.schema.model_validate_json(record.value)
        assert record.key.decode() == described.key_of(value), "a record keyed otherwise than its fields say"
        latest[described.local_key_of(value)] = value
    adapter.close()
    return latest


def values_in_topic(settings: Settings, topic_name: str, valid_only: bool = False) -> list[BaseModel]:
    """Every value on a topic, in the order of its partitions (tombstones left out; with `valid_only`, the records
    its schema refuses too, which a test sent on purpose)."""
    adapter = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        described = topic(topic_name)
        parsed = [parse_record(described, record.value) if valid_only else described.schema.model_validate_json(
            record.value) for record in adapter.read(adapter.partitions_for(topic_name)) if record.value is not None]
        return [value for value in parsed if not isinstance(value, Rejection)]
    finally:
        adapter.close()


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess (the CLI, an app) see the same settings."""
    return {**os.environ, **settings.as_env()}


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A temp dir that the `postgres` OS user can traverse (pytest's tmp_path is root-only)."""
    path = make_run_dir("smartshelf-test-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def initialised_stack(settings: Settings) -> Iterator[Settings]:
    """A running stack with its init jobs done (topics, tables, Delta layout, the seed-42 store); stopped after."""
    try:
        supervisor.start(settings)
        for job in jobs.JOBS.values():
            job(settings)
        yield settings
    finally:
        supervisor.stop(settings)
