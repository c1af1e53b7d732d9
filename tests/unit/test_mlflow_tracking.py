"""A training run logged to MLflow's own SQLite store (the library, no server): what the run holds, and a run that
cannot be logged whole ends FAILED with one clear line."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from smartshelf.adapters.mlflow_tracking import log_run
from smartshelf.errors import SmartShelfError


def _model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "models" / "m" / "202501220600"
    folder.mkdir(parents=True)
    (folder / "model.json").write_text('{"learner": {}}')
    (folder / "feature_columns.json").write_text("[]")
    return folder


def test_a_run_holds_params_metrics_per_step_tags_and_the_model_files(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # its folder does not exist yet
    run_id = log_run(uri, tmp_path / "artifacts", "m", "202501220600", {"model_version": "202501220600"},
                     {"max_depth": 4, "data_start": "2025-01-01"}, {"mae_model": 1.25, "cv_mae": [3.0, 2.5, 2.0]},
                     _model_folder(tmp_path))
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "202501220600"
    assert run.data.params == {"max_depth": "4", "data_start": "2025-01-01"}
    assert run.data.metrics == {"mae_model": 1.25, "cv_mae": 2.0}  # the last step
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "cv_mae")] == [(0, 3.0), (1, 2.5), (2, 2.0)]
    assert run.data.tags["model_version"] == "202501220600"
    assert sorted(f.path for f in client.list_artifacts(run_id, "model")) == [
        "model/feature_columns.json", "model/model.json"]
    assert run.info.artifact_uri.startswith((tmp_path / "artifacts" / "m").as_uri())


def test_a_second_training_run_is_a_second_run_of_the_same_experiment(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    folder = _model_folder(tmp_path)
    first, second = (log_run(uri, tmp_path / "artifacts", "m", name, {}, {}, {"mae_model": mae}, folder)
                     for name, mae in (("1", 2.0), ("2", 1.0)))
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("m")
    assert experiment is not None and first != second
    runs = client.search_runs([experiment.experiment_id], order_by=["metrics.mae_model ASC"])
    assert [r.info.run_id for r in runs] == [second, first]


def test_a_run_that_cannot_be_logged_whole_is_failed_with_one_line(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    with pytest.raises(SmartShelfError) as failed:
        log_run(uri, tmp_path / "artifacts", "m", "1", {}, {}, {"mae_model": float("nan")}, tmp_path / "missing")
    assert "not logged whole" in str(failed.value) and "\n" not in str(failed.value)
    experiment = MlflowClient(uri).get_experiment_by_name("m")
    assert experiment is not None
    [run] = MlflowClient(uri).search_runs([experiment.experiment_id])
    assert run.info.status == "FAILED"
