"""Model artifacts: a trained model in `<artifact_dir>/<model_name>/<version>/` as XGBoost's JSON (model.json) and
the feature columns it was trained on (feature_columns.json), and the MlModel row that registers it.

Invariant: a model loads only whole and only for the features this code computes. A missing or unreadable file,
or feature columns other than FEATURE_COLUMNS, raise SmartShelfError with one line naming the file and what to do,
so a caller can say so and go on with the rule-based plans.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import xgboost as xgb

from smartshelf.errors import SmartShelfError
from smartshelf.ml.train import FEATURE_COLUMNS, FEATURE_HASH, TrainResult
from smartshelf.schemas import MlModel

MODEL_FILE = "model.json"
COLUMNS_FILE = "feature_columns.json"
HEADLINE_METRIC = "mae_model"  # the one metric the dashboard's ML tab shows: the model's held-out MAE in units
_VERSION_FORMAT = "%Y%m%d%H%M"
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # one plain folder name


@dataclass(frozen=True)
class LoadedModel:
    booster: xgb.Booster
    model_name: str
    model_version: int
    path: Path  # the version's folder


def model_version(at: datetime) -> int:
    """The version of a model trained at simulated time `at`: YYYYMMDDHHMM, so versions sort by time."""
    return int(at.strftime(_VERSION_FORMAT))


def trained_at(version: int) -> datetime:
    try:
        return datetime.strptime(str(version), _VERSION_FORMAT)
    except ValueError as exc:
        raise SmartShelfError(f"model version {version} is not a simulated time YYYYMMDDHHMM") from exc


def save_model(result: TrainResult, artifact_dir: Path, model_name: str, version: int) -> MlModel:
    """Write the model and its feature columns (each file replaced whole) and return its registry row, active."""
    if not _MODEL_NAME.fullmatch(model_name):
        raise SmartShelfError(f"model name {model_name!r} must be letters, digits, '.', '_' or '-'")
    trained_ts = trained_at(version)
    folder = artifact_dir / model_name / str(version)
    folder.mkdir(parents=True, exist_ok=True)
    columns = {"model_name": model_name, "model_version": version, "feature_hash": result.feature_hash,
               "columns": [asdict(column) for column in result.feature_columns]}
    write_whole(folder / COLUMNS_FILE, json.dumps(columns, indent=2).encode())
    write_whole(folder / MODEL_FILE, bytes(result.booster.save_raw("json")))
    metrics = asdict(result.metrics)
    return MlModel(
        model_name=model_name, model_version=version, trained_ts=trained_ts, data_start=result.data_start,
        data_end=result.data_end, train_rows=result.train_rows, holdout_rows=result.holdout_rows,
        feature_hash=result.feature_hash, params=json.dumps(result.params, sort_keys=True), **metrics,
        metric_name=HEADLINE_METRIC, metric_value=metrics[HEADLINE_METRIC], artifact_path=str(folder),
        is_active=True,
    )


def load_model(path: Path) -> LoadedModel:
    """The model saved in the version folder `path`, checked against this code's feature columns."""
    model_file, columns_file = path / MODEL_FILE, path / COLUMNS_FILE
    for needed in (model_file, columns_file):
        if not needed.is_file():
            raise SmartShelfError(f"no model at {path}: {needed.name} is missing (train a model first)")
    try:
        saved = json.loads(columns_file.read_text())
        name, version, hash_, columns = (saved["model_name"], int(saved["model_version"]), saved["feature_hash"],
                                         saved["columns"])
    except (ValueError, KeyError, TypeError) as exc:
        raise SmartShelfError(f"feature columns file {columns_file} is corrupt: train the model again") from exc
    if hash_ != FEATURE_HASH or columns != [asdict(column) for column in FEATURE_COLUMNS]:
        raise SmartShelfError(f"model {path} was trained on other feature columns (hash {str(hash_)[:12]}) than"
                              f" these features (hash {FEATURE_HASH[:12]}): train a new model")
    booster = xgb.Booster()
    try:
        booster.load_model(str(model_file))
    except xgb.core.XGBoostError as exc:
        raise SmartShelfError(f"model file {model_file} is corrupt (XGBoost cannot read it): train it again") from exc
    if booster.feature_names != [column.name for column in FEATURE_COLUMNS]:
        raise SmartShelfError(f"model file {model_file} does not match its {COLUMNS_FILE}: train it again")
    return LoadedModel(booster, name, version, path)


def newest_model_path(artifact_dir: Path, model_name: str) -> Path | None:
    """The folder of the model's newest version on disk (versions are simulated times), None if there is none."""
    folder = artifact_dir / model_name
    versions = [child for child in folder.iterdir() if child.is_dir() and child.name.isdigit()] \
        if folder.is_dir() else []
    return max(versions, key=lambda child: int(child.name), default=None)


def write_whole(path: Path, data: bytes) -> None:
    """Written beside and renamed over, so a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
