"""The dashboard in a real browser on a running simulated day: the checks of tests/integration/dashboard_checks.py,
made from 12:00 of the shared fast day while it runs on (tests/integration/conftest.py, `fast_day`); here their
outcome, the timings (test-artefacts/dashboard/timings.json) and the screenshots (with UPDATE_SCREENSHOTS=1 also
copied to docs/screenshots/)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from smartshelf.settings import REPO_ROOT
from tests.integration.dashboard_checks import ARTEFACTS, VIEWS, slug

pytestmark = pytest.mark.integration

SCREENSHOTS = REPO_ROOT / "docs" / "screenshots"


def test_the_dashboard_shows_a_running_day_in_a_browser(fast_day: dict[str, object]) -> None:
    assert "dashboard" in fast_day, "the day ended before the dashboard was checked"
    measured = fast_day["dashboard"]
    if isinstance(measured, BaseException):
        raise measured
    (ARTEFACTS / "timings.json").write_text(json.dumps(measured, indent=2))
    print("dashboard timings:", measured)
    shots = sorted(ARTEFACTS.glob("*.png"))
    assert [shot.stem for shot in shots] == sorted(slug(view) for view in VIEWS)
    if os.environ.get("UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for shot in shots:
            shutil.copy(shot, SCREENSHOTS / shot.name)
