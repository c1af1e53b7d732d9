"""`smartshelf`: the command contract (see README). Problems print one clear line, never a traceback."""

from __future__ import annotations

import json
import sys
import time
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from smartshelf.errors import SmartShelfError
from smartshelf.settings import get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Smart Shelf: a digital twin of a supermarket.")
console = Console()
err_console = Console(stderr=True)

ServerNames = Annotated[Optional[list[str]], typer.Argument(help="servers (default: all)", show_default=False)]


@app.command()
def up(names: ServerNames = None) -> None:
    """Start the embedded stack (broker on local S3, PostgreSQL, Redis) and wait until healthy."""
    from smartshelf.runtime import supervisor

    began = time.monotonic()
    with console.status("starting the embedded stack…"):
        timings = supervisor.start(get_settings(), names)
    for name, seconds in timings.items():
        console.print(f"[green]started[/] {name} in {seconds:.1f}s")
    console.print(f"stack up in {time.monotonic() - began:.1f}s")


@app.command()
def down(names: ServerNames = None) -> None:
    """Stop the embedded stack (data is kept under the run directory)."""
    from smartshelf.runtime import supervisor

    stopped = supervisor.stop(get_settings(), names)
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    """Show each server: running, healthy, port, pid, memory. Exit 1 if any is unhealthy."""
    from smartshelf.runtime import supervisor

    rows = supervisor.status(get_settings())
    if as_json:
        print(json.dumps([row.__dict__ for row in rows]))
    else:
        table = Table("server", "state", "port", "pid", "RSS MiB", "PSS MiB", "problem")
        for row in rows:
            state = "[green]healthy[/]" if row.healthy else ("[yellow]unhealthy[/]" if row.running else "[red]down[/]")
            table.add_row(row.name, state, str(row.port), str(row.pid or "-"),
                          f"{row.rss_mb:.0f}" if row.rss_mb is not None else "-",
                          f"{row.pss_mb:.0f}" if row.pss_mb is not None else "-", row.problem or "")
        console.print(table)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


def main() -> None:
    try:
        app()
    except SmartShelfError as exc:
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False)
        sys.exit(1)
