"""`smartshelf sim` through the real stack: a fast simulated day whose twin matches the world, conserves stock,
and gives the same digest when run again with the same seed."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

SMARTSHELF = str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "smartshelf")


def _sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SMARTSHELF, "sim", *args], capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "SMARTSHELF_LOG_LEVEL": "WARNING"})


def test_a_fast_day_twice_gives_the_same_digest_and_the_twin_matches_the_world() -> None:
    args = ("--days", "1", "--seed", "7", "--fast", "--step-seconds", "3600")
    first = _sim(*args)
    assert first.returncode == 0, first.stderr[-3000:] + first.stdout[-2000:]
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["conservation_ok"] and summary["twin_matches_world"], summary
    assert summary["events"] > 10_000 and summary["sales"] > 500 and summary["dead_letters"] == 0
    assert set(summary) >= {"events", "alerts", "restocks", "supplier_orders", "dead_letters", "digest",
                            "conservation_ok"}
    second = _sim(*args)
    assert second.returncode == 0, second.stderr[-3000:]
    again = json.loads(second.stdout.strip().splitlines()[-1])
    assert (again["digest"], again["events"]) == (summary["digest"], summary["events"])


def test_bad_arguments_get_one_line() -> None:
    missing = _sim("--csv-dir", "/nonexistent/store")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: --csv-dir /nonexistent/store: not a folder"
    zero = _sim("--days", "0")
    assert zero.returncode == 2 and "Traceback" not in zero.stderr
