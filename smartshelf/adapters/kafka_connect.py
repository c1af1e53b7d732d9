"""Kafka Connect's REST API: register the connector configs, read what the connectors and their tasks are doing.

PUT /connectors/<name>/config creates or updates a connector, so registering again is harmless (`connect-init`
in compose, the connect server's start embedded). A task that failed stays failed (Connect does not retry it):
`failures` names them, with the first line of why, so that the health probe fails; the watchdog restarts them
(`restart_failed`), and they start again from their last committed offsets.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Mapping

from smartshelf.errors import SmartShelfError, Unavailable

TIMEOUT_S = 10.0


class ConnectRest:
    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def _call(self, method: str, path: str, body: object = None) -> object:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:300]
            raise SmartShelfError(f"Kafka Connect {method} {path}: HTTP {exc.code}: {detail}") from exc
        except (urllib.error.URLError, OSError) as exc:
            raise Unavailable(f"Kafka Connect does not answer at {self.url}: {exc}") from exc
        return json.loads(payload) if payload else None

    def register(self, configs: Mapping[str, Mapping[str, str]]) -> list[str]:
        """Create or update each connector (name -> config); returns the names."""
        for name, config in configs.items():
            self._call("PUT", f"/connectors/{name}/config", dict(config))
        return list(configs)

    def restart_failed(self) -> list[str]:
        """Restart every connector that has failed or has a failed task (only those); returns them, with why."""
        failed = failures(self.statuses())
        for name in sorted({entry.split(":")[0].split(" task ")[0] for entry in failed}):
            self._call("POST", f"/connectors/{name}/restart?includeTasks=true&onlyFailed=true")
        return failed

    def statuses(self) -> dict[str, dict[str, object]]:
        """Each connector's status, by name: {"connector": {"state": ...}, "tasks": [{"id", "state", ...}]}."""
        answer = self._call("GET", "/connectors?expand=status")
        if not isinstance(answer, dict):
            raise SmartShelfError(f"Kafka Connect answered /connectors with {type(answer).__name__}")
        return {name: entry.get("status", {}) for name, entry in answer.items()}


def failures(statuses: Mapping[str, Mapping[str, object]]) -> list[str]:
    """'<connector>: <why>' for every connector or task that has FAILED."""
    found = []
    for name, status in sorted(statuses.items()):
        connector = status.get("connector")
        if isinstance(connector, dict) and connector.get("state") == "FAILED":
            found.append(f"{name}: {_first_line(connector.get('trace'))}")
        tasks = status.get("tasks")
        for task in tasks if isinstance(tasks, list) else []:
            if isinstance(task, dict) and task.get("state") == "FAILED":
                found.append(f"{name} task {task.get('id')}: {_first_line(task.get('trace'))}")
    return found


def not_running(statuses: Mapping[str, Mapping[str, object]], names: list[str]) -> list[str]:
    """Those of `names` that are not registered, or whose connector or a task is not RUNNING (yet)."""
    waiting = []
    for name in names:
        status = statuses.get(name, {})
        connector, tasks = status.get("connector"), status.get("tasks")
        if not isinstance(connector, dict) or connector.get("state") != "RUNNING" or not isinstance(tasks, list) \
                or not tasks or any(not isinstance(t, dict) or t.get("state") != "RUNNING" for t in tasks):
            waiting.append(name)
    return waiting


def _first_line(trace: object) -> str:
    lines = str(trace or "no trace").strip().splitlines()
    causes = [line for line in lines if line.startswith("Caused by:")]
    return (causes[-1] if causes else lines[0])[:300]
