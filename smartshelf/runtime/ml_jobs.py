"""The ML jobs on a stack, shells over smartshelf.ml: daily features from the lake into
analytics.shelf_daily_features, training into ARTIFACT_DIR and analytics.ml_models, and a day's forecast into
analytics.ml_predictions_log and (as pending plans) the wh_supplier_plan topic.

Every job reads the run as the lake holds it up to the clock's watermark, so what it writes depends on simulated
time only: run again, it writes the same rows (tables are upserted by key, plans keep their ids).

A chain: the features are each running store's, from its own records, reference data and policies; a model is the
chain's, trained on every store's rows (the store is no feature: a shelf's features say what it sells and how);
each store's forecast is made from its own day's rows and policies, and its plans go to its own store.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from smartshelf.adapters import delta, postgres
from smartshelf.adapters.kafka import KafkaAdapter, Outgoing
from smartshelf.adapters.redis_clock import SimClock, redis_client
from smartshelf.errors import SmartShelfError
from smartshelf.ml.artifacts import load_model, model_version, newest_model_path, save_model
from smartshelf.ml.features import RunRecords, daily_features
from smartshelf.ml.predict import Forecast, forecast
from smartshelf.ml.risk import (HORIZON, RISK_FEATURE_HASH, RISK_PARAMS, RISK_ROUNDS, RiskResult, save_risk_model,
                                snapshots, train_risk)
from smartshelf.ml.train import TrainResult, train
from smartshelf.registry import STORE_COLUMN, table, topic
from smartshelf.runtime import jobs
from smartshelf.schemas import MlModel, ShelfDailyFeatures, ShelfEvent
from smartshelf.settings import Settings
from smartshelf.store import clock_start

ModelT = TypeVar("ModelT", bound=BaseModel)
_LAKE = {field: table(name) for field, name in (
    ("pos_transactions", "raw_pos_transactions"), ("foot_traffic", "raw_foot_traffic"),
    ("shelf_events", "raw_shelf_events"), ("wh_events", "raw_wh_events"), ("alerts", "alerts"),
    ("wh_supplier_orders", "wh_supplier_orders"), ("wh_supplier_receipts", "wh_supplier_receipts"),
    ("daily_discounts", "daily_discounts"))}


def run_records(settings: Settings) -> dict[str, RunRecords]:
    """What the lake holds of each running store: the tables the features are replayed from (each read once)."""
    read = {field: delta.read_rows(delta.table_path(settings.delta_dir, t), t.schema) for field, t in _LAKE.items()}
    return {store_id: RunRecords(**{field: _of_store(store_id, rows)  # type: ignore[arg-type]
                                    for field, rows in read.items()})
            for store_id in settings.running_stores}


def _of_store(store_id: str, rows: Sequence[ModelT]) -> list[ModelT]:
    return [row for row in rows if getattr(row, STORE_COLUMN) == store_id]


def _stamped(store_id: str, rows: Sequence[ModelT]) -> list[ModelT]:
    return [row.model_copy(update={STORE_COLUMN: store_id}) for row in rows]


def watermark(settings: Settings) -> datetime:
    """The clock's time: every record stamped before it is in the lake once the pipeline has settled."""
    now = SimClock(redis_client(settings)).now_or_none()
    if now is None:
        raise SmartShelfError("the simulated clock has not started: no day is complete yet")
    return now


def build_features(settings: Settings, until: datetime) -> list[ShelfDailyFeatures]:
    """Every running store's feature rows of every day complete by `until`, written to
    analytics.shelf_daily_features."""
    records = run_records(settings)
    rows = []
    for store_id in settings.running_stores:
        store = jobs.load_store(settings, store_id)
        rows += _stamped(store_id, daily_features(store, jobs.load_config(settings, store_id),
                                                  clock_start(store, settings.sim_start), records[store_id], until))
    _upsert(settings, "shelf_daily_features", rows)
    return rows


@dataclass(frozen=True)
class Trained:
    model: MlModel
    result: TrainResult
    mlflow_run_id: str


def train_model(settings: Settings, rows: list[ShelfDailyFeatures], at: datetime, holdout_days: int) -> Trained:
    """Train on `rows`, save the model under ARTIFACT_DIR as version `at`, register it (the only active one), and
    log the run to MLflow (a model registered but not logged is one clear error: train again to log it)."""
    result = train(rows, holdout_days=holdout_days)
    model = save_model(result, settings.artifact_dir, settings.model_name, model_version(at))
    with postgres.connect(settings, "app") as conn, conn.cursor() as cur:  # one transaction: always one active
        cur.execute(f"UPDATE {table('ml_models').pg} SET is_active = false WHERE model_name = %s",
                    (model.model_name,))
        postgres.upsert_rows(cur, table("ml_models"), [model])
    return Trained(model, result, _log_to_mlflow(settings, model, result))


def _log_to_mlflow(settings: Settings, model: MlModel, result: TrainResult) -> str:
    from smartshelf.adapters import mlflow_tracking  # MLflow takes ~1.5 s to import: only when training

    metrics: dict[str, mlflow_tracking.MetricValue] = {
        name: getattr(model, name) for name in ("mae_model", "rmse_model", "mae_last7", "rmse_last7",
                                                "mae_model_batches", "mae_last7_batches", "mae_rule_batches")}
    metrics["cv_mae"] = result.cv_mae
    return mlflow_tracking.log_run(
        settings.mlflow_tracking_uri, settings.mlflow_dir / "artifacts", model.model_name,
        run_name=str(model.model_version),
        tags={"model_version": str(model.model_version), "feature_hash": model.feature_hash},
        params={**result.params, "best_iteration": result.best_iteration, "data_start": model.data_start,
                "data_end": model.data_end, "train_rows": model.train_rows, "holdout_rows": model.holdout_rows},
        metrics=metrics, artifacts=Path(model.artifact_path))


@dataclass(frozen=True)
class TrainedRisk:
    result: RiskResult
    folder: Path
    mlflow_run_id: str


def train_risk_model(settings: Settings, until: datetime, holdout_hours: int) -> TrainedRisk:
    """The restock-risk classifier on every running store's shelf events up to `until`, saved under ARTIFACT_DIR as
    version `until` (the shelf aggregator scores with it from its next batch) and logged to MLflow."""
    from smartshelf.adapters import mlflow_tracking

    shelf_events = delta.read_rows(delta.table_path(settings.delta_dir, table("raw_shelf_events")), ShelfEvent)
    rows = []
    for store_id in settings.running_stores:
        store = jobs.load_store(settings, store_id)
        rows += snapshots(store, clock_start(store, settings.sim_start), _of_store(store_id, shelf_events), until)
    result = train_risk(rows, holdout_hours=holdout_hours)
    version = model_version(until)
    staging = settings.artifact_dir / settings.risk_model_name / f".{version}.partial"
    save_risk_model(result.booster, staging)
    folder = staging.with_name(str(version))
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)  # whole, or not there: the streaming scorer looks for new versions at each batch
    run_id = mlflow_tracking.log_run(
        settings.mlflow_tracking_uri, settings.mlflow_dir / "artifacts", settings.risk_model_name, str(version),
        tags={"model_version": str(version), "feature_hash": RISK_FEATURE_HASH},
        params={**RISK_PARAMS, "rounds": RISK_ROUNDS, "horizon_hours": HORIZON / timedelta(hours=1),
                "data_start": result.data_start, "data_end": result.data_end, "train_rows": result.train_rows,
                "holdout_rows": result.holdout_rows},
        metrics=asdict(result.metrics), artifacts=folder)
    return TrainedRisk(result, folder, run_id)


def newest_model(settings: Settings) -> Path:
    path = newest_model_path(settings.artifact_dir, settings.model_name)
    if path is None:
        raise SmartShelfError(f"no model {settings.model_name!r} under {settings.artifact_dir}: the rule-based"
                              " plans go on (train one with `smartshelf ml train`)")
    return path


def predict_day(settings: Settings, rows: list[ShelfDailyFeatures], at: datetime) -> Forecast:
    """The newest model's forecast at `at` from the last complete day's rows of every store that has them, each
    with its own policies: predictions logged, plans sent to their store."""
    last_day = max((row.feature_date for row in rows), default=None)
    if last_day is None:
        raise SmartShelfError(f"no complete day before {at:%Y-%m-%d %H:%M} to forecast from")
    model = load_model(newest_model(settings))
    result = Forecast([], [])
    for store_id in sorted({row.store_id for row in rows}):
        mine = forecast(model, [r for r in rows if r.feature_date == last_day and r.store_id == store_id],
                        jobs.load_config(settings, store_id), at)
        result.predictions.extend(_stamped(store_id, mine.predictions))
        result.plans.extend(_stamped(store_id, mine.plans))
    _upsert(settings, "ml_predictions_log", result.predictions)
    plans = topic("wh_supplier_plan")
    producer = KafkaAdapter(settings.kafka_bootstrap_servers).producer()
    try:
        producer.send_and_wait([Outgoing(plans.name, plans.key_of(plan).encode(), plan.model_dump_json().encode())
                                 for plan in result.plans])
    finally:
        producer.close()
    return result


def _upsert(settings: Settings, name: str, rows: Sequence[BaseModel]) -> None:
    with postgres.connect(settings, "app") as conn, conn.cursor() as cur:
        postgres.upsert_rows(cur, table(name), rows)
