"""MLflow experiment tracking: one MLflow run per training run, in the experiment named after the model.

A run holds what the model registry row (analytics.ml_models) holds and more: the params, every metric (the
model's and the baselines'; per-fold values as steps of one metric), tags naming the model version, and the
model's folder as artifacts. The registry stays the source of truth for which model is active; MLflow is where a
person compares runs. Invariant: a run that could not be logged whole is marked FAILED, never left RUNNING, and
the caller gets one SmartShelfError line.

A local store (sqlite:/// or a path) keeps the experiment's artifacts under `artifact_root`; a tracking server
(http://...) decides where they go itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from mlflow.entities import Metric, Param, RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from smartshelf.errors import SmartShelfError

# MLflow and its migrations log every step of opening a store at INFO; our logs are quiet by default
for _name in ("mlflow", "alembic"):
    logging.getLogger(_name).setLevel(logging.WARNING)

MetricValue = float | Sequence[float]  # a sequence is logged as steps 0, 1, ... of one metric


def log_run(tracking_uri: str, artifact_root: Path, experiment: str, run_name: str, tags: Mapping[str, str],
            params: Mapping[str, object], metrics: Mapping[str, MetricValue], artifacts: Path) -> str:
    """Log one finished run and return its id."""
    if tracking_uri.startswith("sqlite:///"):  # SQLite makes the file, not its folder
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri)
    try:
        experiment_id = _experiment_id(client, tracking_uri, artifact_root, experiment)
        run_id = client.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id
    except MlflowException as exc:
        raise SmartShelfError(f"MLflow at {tracking_uri}: cannot start a run of {experiment!r}: {exc.message}") \
            from exc
    try:
        client.log_batch(run_id, metrics=_metrics(metrics), params=[Param(k, str(v)) for k, v in params.items()])
        if not artifacts.is_dir():  # log_artifacts would log nothing, silently
            raise FileNotFoundError(f"no model folder {artifacts}")
        client.log_artifacts(run_id, str(artifacts), artifact_path="model")
    except (MlflowException, OSError) as exc:
        client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
        raise SmartShelfError(f"MLflow at {tracking_uri}: run {run_id} of {experiment!r} not logged whole: {exc}") \
            from exc
    client.set_terminated(run_id)
    return run_id


def _experiment_id(client: MlflowClient, tracking_uri: str, artifact_root: Path, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    local = not tracking_uri.startswith(("http://", "https://", "databricks"))
    location = (artifact_root / name).resolve().as_uri() if local else None
    return str(client.create_experiment(name, artifact_location=location))


def _metrics(metrics: Mapping[str, MetricValue]) -> list[Metric]:
    now_ms = int(time.time() * 1000)
    logged = []
    for key, value in metrics.items():
        values = [value] if isinstance(value, (int, float)) else list(value)
        logged += [Metric(key, float(v), now_ms, step) for step, v in enumerate(values)]
    return logged
