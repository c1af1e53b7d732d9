"""What a command's failure looks like to the user: one line on stderr and exit code 1, never a traceback."""

from __future__ import annotations

import psycopg2.errors
import pytest
import redis

from smartshelf import cli
from smartshelf.errors import SmartShelfError


@pytest.mark.parametrize(("raised", "line"), [
    (SmartShelfError("no model 'replenishment_xgb'"), "error: no model 'replenishment_xgb'"),
    # longer than a terminal's 80 columns: still one line
    (SmartShelfError("data/db_csv holds the folders of stores store-003, which this chain would not replace: "
                     "delete them or write elsewhere (--out)"),
     "error: data/db_csv holds the folders of stores store-003, which this chain would not replace: "
     "delete them or write elsewhere (--out)"),
    # a stack whose database lacks a table this version writes (an older run dir, a table dropped by hand)
    (psycopg2.errors.UndefinedTable('relation "analytics.shelf_daily_features" does not exist\nLINE 1: INSERT'),
     'error: PostgreSQL: relation "analytics.shelf_daily_features" does not exist'),
    # a command that needs the stack's clock while the stack is down
    (redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused."),
     "error: Redis: Error 111 connecting to 127.0.0.1:1. Connection refused."),
])
def test_a_failing_command_prints_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                           raised: Exception, line: str) -> None:
    def command() -> None:
        raise raised

    monkeypatch.setattr(cli, "app", command)
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip() == line


@pytest.mark.parametrize(("environment", "line"), [
    ({"STORES": "0"}, "error: setting STORES: Input should be greater than or equal to 1 (got '0')"),
    ({"KAFKA_PORT": "abc"},
     "error: setting KAFKA_PORT: Input should be a valid integer, unable to parse string as an integer (got 'abc')"),
    ({"STORES": "3", "STORE_ID": "store-009"},
     "error: settings: STORE_ID store-009 is not among the 3 stores this twin runs (store-001 to store-003)"),
])
def test_a_bad_setting_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                             environment: dict[str, str], line: str) -> None:
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(cli, "app", lambda: cli.Settings())
    with pytest.raises(SystemExit) as exited:
        cli.main()
    assert exited.value.code == 1
    assert capsys.readouterr().err.strip() == line


def test_another_models_validation_error_is_not_taken_for_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from smartshelf.schemas import ClockTick

    monkeypatch.setattr(cli, "app", lambda: ClockTick.model_validate({}))
    with pytest.raises(ValidationError):
        cli.main()
