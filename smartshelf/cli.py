"""`smartshelf`: the command contract (see README). Problems print one clear line, never a traceback."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Annotated, Optional

import psycopg2
import redis
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from smartshelf.errors import SmartShelfError
from smartshelf.settings import Settings, get_settings
from smartshelf.store import MAX_STORES, chain_store_ids

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Smart Shelf: a digital twin of a supermarket.")
console = Console()
err_console = Console(stderr=True)

ServerNames = Annotated[Optional[list[str]], typer.Argument(help="servers (default: all)", show_default=False)]


data_app = typer.Typer(no_args_is_help=True, help="Generate, import and describe the store's reference data.")
app.add_typer(data_app, name="data")
ml_app = typer.Typer(no_args_is_help=True, help="Daily features, training and forecasts of the replenishment model.")
app.add_typer(ml_app, name="ml")



@app.command()
def up(names: ServerNames = None) -> None:
    """Start the embedded stack: servers, init jobs (incl. the store, generated with seed 42 if none), services."""
    from smartshelf.runtime import jobs, supervisor
    from smartshelf.runtime.servers import service_names

    settings = get_settings()
    began = time.monotonic()
    with console.status("starting the embedded stack…"):
        timings = supervisor.start(settings, names)
    for name, seconds in timings.items():
        console.print(f"[green]started[/] {name} in {seconds:.1f}s")
    if names is None:
        for job_name, job in jobs.JOBS.items():
            with console.status(f"{job_name}…"):
                done = job(settings)
            console.print(f"[green]{job_name}[/]: {len(done)} applied/created/loaded")
        settings = jobs.with_clock_start(settings)
        for name, seconds in supervisor.start(settings, service_names()).items():
            console.print(f"[green]started[/] {name} in {seconds:.1f}s")
    console.print(f"stack up in {time.monotonic() - began:.1f}s")


def _generate(seed: int, stores: int, out: Path) -> None:
    from smartshelf.datagen import generate_chain, write_chain

    if not 1 <= stores <= MAX_STORES:
        raise SmartShelfError(f"--stores must be 1 to {MAX_STORES}, not {stores}")
    paths = write_chain(generate_chain(seed, stores), out)
    what = "store" if stores == 1 else f"chain of {stores} stores"
    console.print(f"generated {what} (seed {seed}): {len(paths)} files under {out}")


def _import(csv_dir: Path) -> None:
    from smartshelf.runtime import jobs

    summary = jobs.import_store(get_settings(), csv_dir)
    rows = ", ".join(f"{name} {count}" for name, count in summary.rows.items())
    stores = f"{len(summary.stores)} stores" if len(summary.stores) > 1 else summary.stores[0]
    console.print(f"imported {csv_dir} ({stores}) in {summary.seconds:.2f}s: {rows}")


@data_app.command("generate")
def data_generate(
    seed: Annotated[int, typer.Option(help="random seed: same seed, byte-identical files")] = 42,
    stores: Annotated[int, typer.Option(help="stores of the chain (each its own folder, each from its own seed)")] = 1,
    out: Annotated[Optional[Path], typer.Option(help="output folder (default: data/)")] = None,
) -> None:
    """Generate the synthetic store: Parquet in OUT, the reference CSVs in OUT/db_csv (a chain: OUT/<store>/ and
    OUT/db_csv/<store>/)."""
    _generate(seed, stores, out or get_settings().data_dir)


@data_app.command("import")
def data_import(
    csv_dir: Annotated[Path, typer.Option("--csv-dir", help="folder with the reference CSV files, or with one "
                                                             "folder of them per store (a chain)")],
) -> None:
    """Validate the CSVs and load them into PostgreSQL (with the policies of STORE_ID's store), all or nothing."""
    _import(csv_dir)


@data_app.command("sql")
def data_sql() -> None:
    """Regenerate postgresql/02_tables.sql from the registry."""
    from smartshelf.adapters.postgres import write_generated_tables_sql

    console.print(f"wrote {write_generated_tables_sql()}")


@data_app.command("connect")
def data_connect() -> None:
    """Regenerate the connector configs in kafka-components/kafka-connect/ from the registry."""
    from smartshelf.connect import write_configs

    for path in write_configs():
        console.print(f"wrote {path}")


@ml_app.command("features")
def ml_features() -> None:
    """Rebuild analytics.shelf_daily_features from the lake: one row per shelf per complete simulated day."""
    from smartshelf.runtime import ml_jobs

    settings = get_settings()
    with console.status("replaying the run's days…"):
        rows = ml_jobs.build_features(settings, ml_jobs.watermark(settings))
    days = sorted({row.feature_date for row in rows})
    known = sum(row.sales_next_7d is not None for row in rows)
    console.print(f"{len(rows)} feature rows over {len(days)} days ({known} with their 7-day target known)")


@ml_app.command("train")
def ml_train(
    holdout_days: Annotated[int, typer.Option(min=1, help="the last days with a known target, held out to "
                                              "compare the model with the baselines")] = 7,
) -> None:
    """Train the model on the days whose target is known, compare it with the baselines, register it."""
    from smartshelf.runtime import ml_jobs

    settings = get_settings()
    began = time.monotonic()
    now = ml_jobs.watermark(settings)
    with console.status("training…"):
        trained = ml_jobs.train_model(settings, ml_jobs.build_features(settings, now), now, holdout_days)
    console.print_json(trained.model.model_dump_json())
    console.print(f"trained in {time.monotonic() - began:.1f}s: {trained.model.artifact_path}; MLflow run"
                  f" {trained.mlflow_run_id} in {settings.mlflow_tracking_uri} (UI: http://127.0.0.1:{settings.mlflow_port})")


@ml_app.command("train-risk")
def ml_train_risk(
    holdout_hours: Annotated[int, typer.Option(min=1, help="the last labelled hours, held out to compare the "
                                               "model with the baselines")] = 24,
) -> None:
    """Train the restock-risk classifier on the run's shelf events; the shelf aggregator scores with it next."""
    from smartshelf.runtime import ml_jobs

    settings = get_settings()
    began = time.monotonic()
    with console.status("training the restock-risk model…"):
        trained = ml_jobs.train_risk_model(settings, ml_jobs.watermark(settings), holdout_hours)
    console.print_json(json.dumps(asdict(trained.result.metrics)))
    console.print(f"trained in {time.monotonic() - began:.1f}s on {trained.result.train_rows} snapshots:"
                  f" {trained.folder}; MLflow run {trained.mlflow_run_id}")


@ml_app.command("predict")
def ml_predict() -> None:
    """Forecast from the last complete day with the newest model: predictions logged, pending plans sent."""
    from smartshelf.runtime import ml_jobs

    settings = get_settings()
    now = ml_jobs.watermark(settings)
    result = ml_jobs.predict_day(settings, ml_jobs.build_features(settings, now), now)
    console.print(f"{len(result.predictions)} predictions, {len(result.plans)} supplier plans at {now:%Y-%m-%d %H:%M}")


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
            table.add_row(row.name, state, str(row.port or "-"), str(row.pid or "-"),
                          f"{row.rss_mb:.0f}" if row.rss_mb is not None else "-",
                          f"{row.pss_mb:.0f}" if row.pss_mb is not None else "-", row.problem or "")
        console.print(table)
        _print_spark_queries(rows)
    if not all(row.healthy for row in rows):
        raise typer.Exit(1)


def _print_spark_queries(rows: list) -> None:  # type: ignore[type-arg]
    """The streaming queries of the running spark service, as it last wrote them."""
    from smartshelf.streaming.runner import STATUS_FILE

    path = get_settings().run_dir / STATUS_FILE
    if not path.exists() or not any(row.name == "spark" and row.running for row in rows):
        return
    table = Table("spark query", "active", "status")
    for name, query in json.loads(path.read_text()).items():
        table.add_row(name, "yes" if query.get("active") else "[red]no[/]", str(query.get("message", "")))
    console.print(table)


@app.command()
def sim(
    days: Annotated[int, typer.Option(min=1, help="simulated days")] = 1,
    seed: Annotated[int, typer.Option(help="seed of the generated store and of the world")] = 42,
    csv_dir: Annotated[Optional[Path], typer.Option("--csv-dir", help="the store's reference CSVs (default: "
                                                    "generated from the seed)")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="lockstep: each tick as soon as the pipeline caught up")
                    ] = False,
    step_seconds: Annotated[int, typer.Option(min=1, help="simulated seconds per clock tick")] = 3600,
    check_every_tick: Annotated[bool, typer.Option("--check-every-tick", help="with --fast: check the "
                                                   "invariants at every tick, not only at the end")] = False,
    scenario: Annotated[Optional[list[str]], typer.Option(
        "--scenario", metavar="KIND[@TIME]", help="inject rush or theft, on the last simulated day at 11:00 and "
        "15:00, or at TIME (e.g. rush@2025-01-03T11:00); repeatable; replaces SIM_SCENARIOS")] = None,
    stores: Annotated[Optional[int], typer.Option(
        min=1, max=MAX_STORES, help="run a chain: the first N stores of the generated chain (or of --csv-dir), one "
        "world each on the one clock (default: STORES, 1)")] = None,
) -> None:
    """Run the whole twin through the real stack (a scratch stack of its own) to the end; the last line is
    the JSON summary: events, alerts, restocks, supplier orders, dead letters, digests, conservation."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from smartshelf.apps.producers import scenarios_of
    from smartshelf.runtime.sim import run_sim
    from smartshelf.world import parse_scenarios

    if csv_dir is not None and not csv_dir.is_dir():
        raise SmartShelfError(f"--csv-dir {csv_dir}: not a folder")
    settings = get_settings()
    stores = stores or settings.stores
    if settings.store_id not in chain_store_ids(stores) and stores > 1:
        raise SmartShelfError(f"--stores {stores}: STORE_ID {settings.store_id} is not among them")
    scenarios = scenario or []
    if scenarios:  # checked before the stack starts; the run puts bare kinds on its last day
        try:
            parse_scenarios(",".join(scenarios), default_day=settings.sim_start.date())
        except ValueError as exc:
            raise SmartShelfError(f"--scenario: {exc}") from exc
    else:
        scenarios_of(settings)
    total_s = days * 86_400
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[now]}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task(f"simulating {days} day(s) of {stores} store(s), seed {seed}", total=total_s,
                                 now="starting the stack…")

        def show(now: datetime | None, end: datetime) -> None:
            if now is not None:
                progress.update(task, completed=total_s - (end - now).total_seconds(), now=str(now))

        summary = run_sim(settings.model_copy(update={"step_seconds": step_seconds}), days, seed, csv_dir, fast,
                          show, check_every_tick=check_every_tick, scenarios=scenarios, stores=stores)
    print(json.dumps(summary))
    if not summary["checks_ok"]:
        raise typer.Exit(1)


def _say(text: str) -> None:
    """One line on stderr, never wrapped (stdout is for the JSON)."""
    err_console.print(escape(text), highlight=False, soft_wrap=True)


@app.command()
def check(
    timeout: Annotated[float, typer.Option(min=0, help="seconds to wait for the pipeline to catch up with the "
                                           "paused clock (exit 2 if it does not)")] = 60.0,
) -> None:
    """Pause the simulated clock, wait until the pipeline has caught up with it, and check the invariants:
    stock conserved per item, the twin's shelves and lots equal to the world's, no expired lot on a shelf, and
    (when Kafka Connect runs) PostgreSQL equal to the topics; then resume the clock. JSON on stdout;
    exit 1 if an invariant is broken, 2 if the pipeline did not catch up in time."""
    from smartshelf.runtime.live_check import live_check
    from smartshelf.runtime.sim import NotSettled

    try:
        result = live_check(get_settings(), timeout, _say)
    except NotSettled as exc:
        _say(f"not settled: {exc}")
        raise typer.Exit(2) from exc
    print(json.dumps(result))
    if not result["ok"]:
        raise typer.Exit(1)


@app.command()
def chaos(
    days: Annotated[int, typer.Option(min=1, help="simulated days of each run")] = 1,
    seed: Annotated[int, typer.Option(help="seed of the store, the world and the faults' moments")] = 42,
    step_seconds: Annotated[int, typer.Option(min=1, help="simulated seconds per clock tick")] = 3600,
    kill: Annotated[Optional[list[str]], typer.Option(
        "--kill", metavar="COMPONENT", help="kill -9 only these, in this order (repeatable; default all of "
        "kafka, postgres, redis, spark, connect, bridge, producers, clock)")] = None,
    pause: Annotated[str, typer.Option(help="the service stopped (SIGSTOP) and continued, or 'none'")] = "bridge",
) -> None:
    """A fast simulated day undisturbed, then the same day with each component killed -9 in turn at a seeded
    moment and one service paused; the last line is the JSON verdict (`ok` only if the outcome is the same:
    digest, counts, no event lost or twice, every check). Also written to data/metrics/chaos.json."""
    from smartshelf.runtime.chaos import KILLED, run_chaos

    killed = kill or list(KILLED)
    if unknown := [name for name in [*killed, pause] if name not in (*KILLED, "none")]:
        raise SmartShelfError(f"unknown component {unknown[0]!r} (known: {', '.join(KILLED)})")
    settings = get_settings().model_copy(update={"step_seconds": step_seconds})
    with _day_progress(f"chaos: {days} day(s), seed {seed}", days) as show:
        result = run_chaos(settings, days, seed, killed, None if pause == "none" else pause, show)
    _write_verdict(settings, "chaos", result)


@contextmanager
def _day_progress(title: str, days: int) -> Iterator[Callable[[datetime | None, datetime], None]]:
    """A progress bar over the simulated days of a run (runs one after another reuse it)."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total_s = days * 86_400
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[now]}"),
                  TimeElapsedColumn(), console=err_console, transient=True) as progress:
        task = progress.add_task(title, total=total_s, now="starting the stack…")

        def show(now: datetime | None, end: datetime) -> None:
            if now is not None:
                progress.update(task, completed=total_s - (end - now).total_seconds(), now=str(now))

        yield show


def _write_verdict(settings: Settings, name: str, result: dict[str, object]) -> None:
    """A verdict to data/metrics/<name>.json and, as the last line, to stdout; exit 1 unless it is ok."""
    metrics = settings.data_dir / "metrics"
    metrics.mkdir(parents=True, exist_ok=True)
    (metrics / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    if not result["ok"]:
        raise typer.Exit(1)


@app.command()
def fuzz(
    count: Annotated[int, typer.Option(min=1, help="bad records to send")] = 10_000,
    seed: Annotated[int, typer.Option(help="seed of the store, the world and the records drawn")] = 42,
    days: Annotated[int, typer.Option(min=1, help="simulated days of each run")] = 1,
    step_seconds: Annotated[int, typer.Option(min=1, help="simulated seconds per clock tick")] = 3600,
) -> None:
    """A fast simulated day undisturbed, then the same day with COUNT bad sensor records (malformed, wrong types,
    extreme numbers, unknown shelves, far times, repeats) sent in; the last line is the JSON verdict (`ok` only if
    each is in dead_letters once with a reason, nothing restarted, and the outcome is the same). Also written to
    data/metrics/fuzz.json."""
    from smartshelf.runtime.fuzz import run_fuzz

    settings = get_settings().model_copy(update={"step_seconds": step_seconds})
    with _day_progress(f"fuzz: {count} records, {days} day(s), seed {seed}", days) as show:
        result = run_fuzz(settings, count, seed, days, show)
    _write_verdict(settings, "fuzz", result)


@app.command()
def bench(
    suite: Annotated[str, typer.Argument(help="benchmark to run, or all (an unknown name lists them; README, "
                                         "Measured, says what each measures)")] = "all",
) -> None:
    """Run benchmarks on a scratch stack; print the results and write JSON under data/metrics/."""
    from smartshelf.bench import BENCHMARKS, write_result

    if suite != "all" and suite not in BENCHMARKS:
        raise SmartShelfError(f"unknown benchmark '{suite}' (known: {', '.join(BENCHMARKS)}, all)")
    settings = get_settings()
    for name, run in BENCHMARKS.items():
        if suite in ("all", name):
            with console.status(f"benchmark {name}…"):
                result = run(settings)
            path = write_result(settings.data_dir / "metrics", result)
            console.print_json(json.dumps(result))
            console.print(f"wrote {path}")


def settings_problem(exc: ValidationError) -> str:
    """The first bad setting of a ValidationError, in one line: its variable, what is wrong, what was given."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"])
    what = first["msg"].removeprefix("Value error, ")
    given = f" (got {first['input']!r})" if where else ""
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"setting {where}: {what}{given}{more}" if where else f"settings: {what}{more}"


def main() -> None:
    try:
        app()
    except SmartShelfError as exc:
        # soft_wrap: one line whatever the terminal's width (rich would break it at 80 columns off a terminal)
        err_console.print(f"[red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except ValidationError as exc:  # a setting from the environment (or .env) that is not one
        if exc.title != Settings.__name__:
            raise
        err_console.print(f"[red]error:[/] {escape(settings_problem(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except (psycopg2.Error, redis.RedisError) as exc:  # a stack that is down, or not as this version expects
        server = "PostgreSQL" if isinstance(exc, psycopg2.Error) else "Redis"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err_console.print(f"[red]error:[/] {server}: {escape(first)}", highlight=False, soft_wrap=True)
        sys.exit(1)
