"""A simulated day of a store in the reference project's CSV format (tests/fixtures/reference_csv: grams, in-store
lots, an unknown category, data dated 2026-01-19): the clock opens on the data's day and every check holds, shelf
weights in PostgreSQL included. Then the ML shells on that stack: daily features from the lake into PostgreSQL, a
forecast without a model refused in one line (the rule's plans go on), a model registered and its training run in
MLflow with the same metrics, a registered model's daily forecast
written once however often the inference runs that day, and a corrupt model refused. (One run for both: each
costs ~3 min of the suite.)"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from smartshelf.adapters import postgres
from smartshelf.adapters.kafka import KafkaAdapter
from smartshelf.apps.inference import run_apart, run_for
from smartshelf.errors import SmartShelfError
from smartshelf.loop import FORECAST_PLAN_PREFIX
from smartshelf.ml.artifacts import MODEL_FILE
from smartshelf.ml.risk import save_risk_model
from smartshelf.registry import KEY_SEPARATOR, table, topic
from smartshelf.runtime import ml_jobs
from smartshelf.runtime.sim import run_sim
from smartshelf.schemas import ShelfDailyFeatures
from smartshelf.settings import Settings
from tests.conftest import latest_in_topic
from tests.unit.test_risk import trained_on_a_world

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "reference_csv"
FIRST_DAY = date(2026, 1, 19)  # the fixture's data day: the clock opens on it


def _history(rows: list[ShelfDailyFeatures], days: int) -> list[ShelfDailyFeatures]:
    """The real day's rows repeated over `days` earlier days with made-up targets: enough to train a model that
    reads these features (its quality is not what this test is about), and forecasts more than the shelves hold."""
    return [row.model_copy(update={"feature_date": row.feature_date - timedelta(days=back),
                                   "sales_next_7d": 100 * (1 + (back + n) % 5), "batches_to_order": (back + n) % 3,
                                   "sales_last_7d": 100})
            for back in range(1, days + 1) for n, row in enumerate(rows)]


def _count(settings: Settings, name: str) -> int:
    with postgres.connect(settings, "app") as conn, conn.cursor() as cur:
        return postgres.count_rows(cur, table(name))


def _forecast_plans(settings: Settings) -> dict[str, set[bytes]]:
    """The forecast plans on the topic: every value sent under each plan id (of the one store, STORE_ID's)."""
    kafka = KafkaAdapter(settings.kafka_bootstrap_servers)
    try:
        sent: dict[str, set[bytes]] = {}
        for record in kafka.read(kafka.partitions_for(topic("wh_supplier_plan").name)):
            store_id, _, plan_id = (record.key or b"").decode().partition(KEY_SEPARATOR)
            if plan_id.startswith(FORECAST_PLAN_PREFIX) and record.value is not None:
                assert store_id == settings.store_id
                sent.setdefault(plan_id, set()).add(record.value)
        return sent
    finally:
        kafka.close()


def _on_the_stack(settings: Settings) -> dict[str, object]:
    found: dict[str, object] = {}
    found["risk_topic"] = {k: v.model_dump() for k, v in latest_in_topic(settings, "shelf_risk").items()}
    with postgres.connect(settings, "reader") as conn, conn.cursor() as cur:
        cur.execute(f"SELECT shelf_id, restock_risk, model_version FROM {table('shelf_risk').pg} "
                    "WHERE store_id = %s", (settings.store_id,))
        found["risk_rows"] = {shelf_id: (risk, version) for shelf_id, risk, version in cur.fetchall()}
    with pytest.raises(SmartShelfError) as too_short:  # the lake's shelf events replayed: a day is not enough
        ml_jobs.train_risk_model(settings, ml_jobs.watermark(settings), holdout_hours=24)
    found["risk_too_short"] = str(too_short.value)
    rows = ml_jobs.build_features(settings, ml_jobs.watermark(settings))
    found["feature_days"] = sorted({row.feature_date for row in rows})
    found["feature_rows_in_postgres"] = _count(settings, "shelf_daily_features")
    found["without_model"] = run_for(settings, FIRST_DAY + timedelta(days=1))
    trained = ml_jobs.train_model(settings, _history(rows, 30), ml_jobs.watermark(settings), holdout_days=3)
    found["models_in_postgres"] = _count(settings, "ml_models")
    run = MlflowClient(settings.mlflow_tracking_uri).get_run(trained.mlflow_run_id)
    found["mlflow_run"] = {"status": run.info.status, "metrics": run.data.metrics, "tags": run.data.tags,
                           "artifacts": [f.path for f in MlflowClient(settings.mlflow_tracking_uri).list_artifacts(
                               trained.mlflow_run_id, "model")]}
    found["registered"] = trained.model.model_dump()
    found["first_run"] = run_for(settings, FIRST_DAY + timedelta(days=1))
    found["second_run"] = run_apart(settings, FIRST_DAY + timedelta(days=1))  # a restart, as the service runs it
    found["predictions_in_postgres"] = _count(settings, "ml_predictions_log")
    found["forecast_plan_records"] = _forecast_plans(settings)
    (Path(trained.model.artifact_path) / MODEL_FILE).write_text('{"learner": ')  # cut short, as by a crash
    with pytest.raises(SmartShelfError) as corrupt:
        ml_jobs.predict_day(settings, rows, ml_jobs.watermark(settings))
    found["corrupt"] = str(corrupt.value)
    return found


@pytest.fixture(scope="module")
def found(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    models = tmp_path_factory.mktemp("models")  # a restock-risk model there from the start: the stream scores
    save_risk_model(trained_on_a_world().booster, models / "restock_risk_xgb" / "202501100600")
    base = Settings().model_copy(update={"step_seconds": 7200,  # 2-h ticks: half the settles, for the suite
                                         "artifact_dir_setting": models})
    return run_sim(base, 1, 42, FIXTURE, fast=True, after=_on_the_stack)


def test_a_store_in_the_reference_format_runs_a_day_with_every_check_ok(found: dict[str, object]) -> None:
    assert found["checks_ok"] and found["twin_matches_world"] and found["postgres_mirror_ok"], found
    assert found["sim_start"] == "2026-01-19T08:00:00", found
    rows = found["postgres_rows"]
    assert isinstance(rows, dict) and rows["state.shelf_state"] >= 5, found
    assert found["postgres_shelf_weights_ok"] and found["sales"] > 0 and found["dead_letters"] == 0, found  # type: ignore[operator]


def test_features_of_the_complete_day_are_in_postgres(found: dict[str, object]) -> None:
    assert found["feature_days"] == [FIRST_DAY]
    assert found["feature_rows_in_postgres"] == 7  # the fixture's shelves


def test_without_a_model_the_forecast_says_so_and_the_rule_goes_on(found: dict[str, object]) -> None:
    message = str(found["without_model"])
    assert message.startswith("no forecast, the rule's plans go on: no model 'replenishment_xgb'"), message


def test_a_forecast_runs_once_per_day_whatever_restarts(found: dict[str, object]) -> None:
    assert found["models_in_postgres"] == 1
    assert found["first_run"] == found["second_run"] and str(found["first_run"]).startswith("7 predictions")
    assert found["predictions_in_postgres"] == 7  # the second run upserted the same rows
    plans = found["forecast_plan_records"]
    assert isinstance(plans, dict) and plans, "the made-up history asks for batches on some shelf"
    assert all(key.endswith("-20260120") for key in plans)  # one id per shelf and day,
    assert all(len(values) == 1 for values in plans.values())  # sent the same by both runs
    assert str(found["first_run"]) == f"7 predictions, {len(plans)} plans"


def test_the_training_run_is_in_mlflow_as_registered(found: dict[str, object]) -> None:
    run, model = found["mlflow_run"], found["registered"]
    assert isinstance(run, dict) and isinstance(model, dict)
    assert run["status"] == "FINISHED" and run["tags"]["model_version"] == str(model["model_version"])
    for metric in ("mae_model", "rmse_model", "mae_last7", "mae_model_batches", "mae_rule_batches"):
        assert run["metrics"][metric] == pytest.approx(model[metric]), metric
    assert sorted(run["artifacts"]) == ["model/feature_columns.json", "model/model.json"]


def test_the_stream_scores_every_shelfs_restock_risk_into_postgresql(found: dict[str, object]) -> None:
    topic_rows, pg_rows = found["risk_topic"], found["risk_rows"]
    assert isinstance(topic_rows, dict) and isinstance(pg_rows, dict)
    assert len(topic_rows) == 7  # the fixture's shelves, scored by the model in ARTIFACT_DIR from the first batch
    assert pg_rows == {k: (pytest.approx(v["restock_risk"]), 202501100600) for k, v in topic_rows.items()}
    assert all(0 <= v["restock_risk"] <= 1 for v in topic_rows.values())


def test_the_risk_model_refuses_a_run_too_short_to_learn_from_in_one_line(found: dict[str, object]) -> None:
    message = str(found["risk_too_short"])
    assert message.startswith("restock risk: ") and "labelled hours; training needs 24 held out" in message, message
    assert "\n" not in message


def test_a_corrupt_model_is_one_clear_line(found: dict[str, object]) -> None:
    assert "is corrupt" in str(found["corrupt"]) and "\n" not in str(found["corrupt"])
