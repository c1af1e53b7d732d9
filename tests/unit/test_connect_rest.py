"""Kafka Connect's REST answers read right: which connectors or tasks failed (with the cause, not the stack's
first frame), which are not running yet, and that only the failed ones are restarted."""

from __future__ import annotations

import pytest

from smartshelf.adapters.kafka_connect import ConnectRest, failures, not_running

TRACE = ("org.apache.kafka.connect.errors.ConnectException: Exiting WorkerSinkTask due to unrecoverable exception.\n"
         "\tat org.apache.kafka.connect.runtime.WorkerSinkTask.deliverMessages(WorkerSinkTask.java:658)\n"
         "Caused by: org.apache.kafka.connect.errors.ConnectException: JDBC sink connector failure\n"
         "Caused by: org.postgresql.util.PSQLException: ERROR: new row violates check constraint\n")
STATUSES: dict[str, dict[str, object]] = {
    "pg-a-sink": {"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "RUNNING"}]},
    "pg-b-sink": {"connector": {"state": "RUNNING"}, "tasks": [{"id": 0, "state": "FAILED", "trace": TRACE}]},
    "pg-c-sink": {"connector": {"state": "FAILED", "trace": "java.lang.NoClassDefFoundError: x"}, "tasks": []},
    "pg-d-sink": {"connector": {"state": "RUNNING"}, "tasks": []},
}


def test_failures_name_the_connector_or_task_and_the_last_cause() -> None:
    assert failures(STATUSES) == [
        "pg-b-sink task 0: Caused by: org.postgresql.util.PSQLException: ERROR: new row violates check constraint",
        "pg-c-sink: java.lang.NoClassDefFoundError: x",
    ]
    assert failures({"pg-a-sink": STATUSES["pg-a-sink"]}) == []


def test_not_running_counts_missing_failed_and_taskless_connectors() -> None:
    assert not_running(STATUSES, ["pg-a-sink", "pg-b-sink", "pg-c-sink", "pg-d-sink", "pg-e-sink"]) == [
        "pg-b-sink", "pg-c-sink", "pg-d-sink", "pg-e-sink"]
    assert not_running(STATUSES, ["pg-a-sink"]) == []


def test_restart_failed_restarts_only_the_failed_connectors(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []

    def answer(method: str, path: str, body: object = None) -> object:
        calls.append((method, path))
        return {name: {"status": status} for name, status in STATUSES.items()} if method == "GET" else None

    rest = ConnectRest("http://127.0.0.1:1")
    monkeypatch.setattr(rest, "_call", answer)
    assert len(rest.restart_failed()) == 2
    assert calls[1:] == [("POST", "/connectors/pg-b-sink/restart?includeTasks=true&onlyFailed=true"),
                         ("POST", "/connectors/pg-c-sink/restart?includeTasks=true&onlyFailed=true")]
