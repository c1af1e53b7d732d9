"""docker-compose.yml is valid and names exactly the registry's services, with their profiles."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from smartshelf.runtime.jobs import JOBS
from smartshelf.runtime.servers import SERVER_CLASSES, SERVICE_CLASSES, spark_cluster
from smartshelf.services import SERVICES, Profile
from smartshelf.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def resolved() -> dict:
    """The compose file as docker-compose itself resolves it (all profiles)."""
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose (Debian package) is installed by scripts/bootstrap.sh"
    profiles = [arg for p in Profile for arg in ("--profile", p.value)]
    result = subprocess.run([compose, "-f", str(REPO / "docker-compose.yml"), *profiles, "config"],
                            capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_compose_services_are_the_registry(resolved: dict) -> None:
    assert set(resolved["services"]) == {s.name for s in SERVICES}


def test_each_service_has_its_registry_profile(resolved: dict) -> None:
    for service in SERVICES:
        assert resolved["services"][service.name]["profiles"] == [service.profile.value], service.name


def test_each_python_service_runs_a_script_that_exists(resolved: dict) -> None:
    for name, spec in resolved["services"].items():
        command = spec.get("command") or []
        if command[:1] == ["python"]:  # python x.py, python -m streamlit run x.py, or python -m mlflow server
            for script in (arg for arg in command if arg.endswith(".py")):
                assert (REPO / script).is_file(), f"{name}: {script} missing"


def test_each_service_has_an_embedded_counterpart() -> None:
    cluster = {server.name for server in spark_cluster(Settings(_env_file=None, SPARK_WORKERS=2))}  # type: ignore[call-arg]
    embedded = {cls.name for cls in (*SERVER_CLASSES, *SERVICE_CLASSES)} | cluster | set(JOBS)
    for service in SERVICES:
        assert service.embedded_by in embedded, service.name


def test_each_streaming_app_is_a_spark_service_with_its_shell() -> None:
    from smartshelf.streaming.apps import all_apps
    from smartshelf.streaming.pulse import PULSE_APPS

    spark_services = {s.name for s in SERVICES if s.profile == Profile.SPARK}
    assert spark_services == set(all_apps()) | set(PULSE_APPS)
    for name in spark_services:
        assert (REPO / "spark-apps" / name / "app.py").is_file(), name
