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
