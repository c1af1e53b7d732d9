from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest

from smartshelf.runtime import supervisor
from smartshelf.runtime.scratch import make_run_dir
from smartshelf.settings import Settings
from tests.conftest import isolated_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def stack() -> Iterator[Settings]:
    """One real embedded stack (Apache Kafka, PostgreSQL, Redis) on free ports for the whole test session."""
    run_dir = make_run_dir("smartshelf-stack-")
    settings = isolated_settings(run_dir)
    try:
        supervisor.start(settings)
        yield settings
    finally:
        supervisor.stop(settings)
        shutil.rmtree(run_dir, ignore_errors=True)
