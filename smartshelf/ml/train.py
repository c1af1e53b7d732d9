"""Honest training of the 7-day demand model: XGBoost on the daily features, scored on held-out days against the
last-7-day sales and against the supplier manager's rule.

Invariants:
- No look-ahead across a split. A row of day d is trained on only to score days s with d + HORIZON_DAYS <= s:
  its target (the sales of d+1..d+HORIZON_DAYS) was known by the end of the first scored day, and it never
  covers a day whose sales a scored target counts. This holds for every cross-validation fold, and between the
  training days and the held-out days.
- The last `holdout_days` dates with a known target are seen by neither the cross-validation nor the final fit;
  the model and both baselines are compared there only.
- Early stopping picks the number of rounds on the last training dates (before every scored date); the final
  model is then fitted on all training dates with that number of rounds.
- Deterministic: the same rows and settings give the same model and metrics (fixed seed, 2 threads, `hist`).

The trees learn corrections to the run's demand rate, not the sales from scratch: every row starts from
HORIZON_DAYS x sales_per_day (XGBoost's base margin, in training and in prediction). A 21-day run has 5 training
days, all early in the run where the 7- and 14-day windows are unknown; trees alone could not learn the near-linear
link between past and future sales from them and did worse than the last-7-day mean on the held-out days (MAE
14.4 vs 10.4 units). The objective is the absolute error, the metric the model is judged by.
"""

from __future__ import annotations

import hashlib
import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import xgboost as xgb

from smartshelf.errors import SmartShelfError
from smartshelf.ml.features import HORIZON_DAYS, available_units, batches_needed
from smartshelf.schemas import ShelfDailyFeatures

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "reg:absoluteerror", "eval_metric": "mae", "tree_method": "hist", "max_depth": 4,
    "learning_rate": 0.05, "min_child_weight": 3, "subsample": 0.8, "colsample_bytree": 0.8,
    "seed": 0, "nthread": 2, "verbosity": 0,
}
MAX_ROUNDS = 600
EARLY_STOPPING_ROUNDS = 40


@dataclass(frozen=True)
class FeatureColumn:
    name: str
    type: str  # the schema's annotation ("int", "float | None", ...); part of the feature hash


# Not inputs: the row's identity (a store or shelf id would let the model memorise them instead of learning demand
# from the sales history) and the targets.
_NOT_FEATURES = ("store_id", "shelf_id", "feature_date", "sales_next_7d", "batches_to_order")
# Text columns enter as a stable integer code: crc32 of the name, kept below 2**24 so float32 holds it exactly.
# Stable across runs and stores (no vocabulary to store and match), and a category the model has not seen gets a
# code of its own instead of shifting the others; trees split on codes as on any number (one-hot would tie the
# columns to the training data's categories).
_CODED = {f"{name}_code": name for name in ("item_category", "item_subcategory")}
_CODE_RANGE = 2**24


def _feature_columns() -> tuple[FeatureColumn, ...]:
    """Every field of ShelfDailyFeatures but identity and targets, in schema order, text fields as codes."""
    coded_from = {source: coded for coded, source in _CODED.items()}
    columns = []
    for name, info in ShelfDailyFeatures.model_fields.items():
        if name in _NOT_FEATURES:
            continue
        if name in coded_from:
            columns.append(FeatureColumn(coded_from[name], "int"))
        else:
            annotation = info.annotation
            columns.append(FeatureColumn(name, getattr(annotation, "__name__", str(annotation))))
    return tuple(columns)


def feature_hash(columns: Sequence[FeatureColumn]) -> str:
    """sha256 of the columns' names and types, in order: a model fits the features only if these agree."""
    text = json.dumps([[c.name, c.type] for c in columns])
    return hashlib.sha256(text.encode()).hexdigest()


FEATURE_COLUMNS = _feature_columns()
FEATURE_HASH = feature_hash(FEATURE_COLUMNS)


def category_code(value: str) -> int:
    return zlib.crc32(value.encode()) % _CODE_RANGE


def feature_matrix(rows: Sequence[ShelfDailyFeatures]) -> np.ndarray:
    """The rows as FEATURE_COLUMNS, float32; None (an unknown value) is NaN, which XGBoost treats as missing."""
    def value(row: ShelfDailyFeatures, name: str) -> float:
        if name in _CODED:
            return float(category_code(getattr(row, _CODED[name])))
        raw = getattr(row, name)
        return math.nan if raw is None else float(raw)
    names = [c.name for c in FEATURE_COLUMNS]
    return np.array([[value(row, name) for name in names] for row in rows], dtype=np.float32).reshape(-1, len(names))


def demand_margin(rows: Sequence[ShelfDailyFeatures]) -> np.ndarray:
    """Where every row's forecast starts: its demand rate over the horizon."""
    return np.array([HORIZON_DAYS * row.sales_per_day for row in rows], dtype=np.float32)


def _dmatrix(rows: Sequence[ShelfDailyFeatures], with_target: bool = True) -> xgb.DMatrix:
    label = np.array([row.sales_next_7d for row in rows], dtype=np.float32) if with_target else None
    return xgb.DMatrix(feature_matrix(rows), label=label, base_margin=demand_margin(rows),
                       feature_names=[c.name for c in FEATURE_COLUMNS])


def predict_units(booster: xgb.Booster, rows: Sequence[ShelfDailyFeatures]) -> np.ndarray:
    """Forecast units sold over the next HORIZON_DAYS days, one per row; never below zero."""
    if not rows:
        return np.zeros(0)
    return np.clip(booster.predict(_dmatrix(rows, with_target=False)), 0.0, None).astype(np.float64)


# --- folds ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Fold:
    train: tuple[date, ...]
    score: tuple[date, ...]


def time_series_folds(dates: Sequence[date], n_folds: int, gap_days: int = HORIZON_DAYS,
                      min_train_days: int = 1) -> list[Fold]:
    """Expanding-window folds over the distinct dates: the dates that have at least `min_train_days` dates
    `gap_days` or more before them are cut into up to `n_folds` consecutive blocks, each scored by a fold that
    trains on every date at least `gap_days` before the block's first date (so train < score, with the gap)."""
    days = sorted(set(dates))
    gap = timedelta(days=gap_days)

    def trainable(day: date) -> list[date]:
        return [d for d in days if d + gap <= day]

    scorable = [day for day in days if len(trainable(day)) >= min_train_days]
    if not scorable:
        return []
    blocks = np.array_split(np.array(scorable, dtype=object), min(n_folds, len(scorable)))
    return [Fold(tuple(trainable(block[0])), tuple(block)) for block in blocks]


# --- baselines -----------------------------------------------------------------------------------------
def rule_batches(row: ShelfDailyFeatures) -> int:
    """What the supplier manager's order-up-to rule (smartshelf.loop, _plan_supply) orders for the row's end of
    day: nothing while the warehouse is above its reorder point or an order is open, else whole batches up to
    order_up_to."""
    if row.wh_stock > row.reorder_point or row.open_order_qty > 0:
        return 0
    return math.ceil(max(0, row.order_up_to - row.wh_stock) / row.standard_batch_size)


def _last7(row: ShelfDailyFeatures) -> int:
    if row.sales_last_7d is None:
        raise SmartShelfError(f"held-out day {row.feature_date} of shelf {row.shelf_id} has no 7 days of sales"
                              " before it: the last-7-day baseline needs them")
    return row.sales_last_7d


# --- training ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HoldoutMetrics:
    """On the held-out rows: units sold over the next 7 days (model, last-7-day sales as the forecast), and whole
    batches to order (those two turned into batches as the target is, and the rule's own batches)."""

    mae_model: float
    rmse_model: float
    mae_last7: float
    rmse_last7: float
    mae_model_batches: float
    mae_last7_batches: float
    mae_rule_batches: float


@dataclass(frozen=True)
class TrainResult:
    booster: xgb.Booster = field(repr=False)
    params: dict[str, Any]  # XGBoost's, with the rounds and the split settings: enough to train it again
    best_iteration: int
    metrics: HoldoutMetrics
    cv_mae: tuple[float, ...]  # per fold, in units, on the training dates only
    data_start: date  # the first training date
    data_end: date  # the last held-out date
    train_rows: int
    holdout_rows: int
    feature_columns: tuple[FeatureColumn, ...] = FEATURE_COLUMNS
    feature_hash: str = FEATURE_HASH


def train(rows: Sequence[ShelfDailyFeatures], holdout_days: int = 7, n_folds: int = 3,
          early_stopping_days: int = 3, params: dict[str, Any] | None = None) -> TrainResult:
    """Train on the rows whose target is known (see the module's invariants); SmartShelfError if there are too
    few days for a held-out week, the gap and early stopping."""
    if holdout_days < 1 or early_stopping_days < 1:
        raise SmartShelfError("holdout_days and early_stopping_days must be at least 1")
    params = {**DEFAULT_PARAMS, **(params or {})}
    known = [row for row in rows if row.sales_next_7d is not None]
    dates = sorted({row.feature_date for row in known})
    holdout = set(dates[-holdout_days:])
    first_scored = min(holdout, default=date.max)
    pool = [d for d in dates if d + timedelta(days=HORIZON_DAYS) <= first_scored]
    needed = early_stopping_days + 1
    if len(pool) < needed:
        raise SmartShelfError(
            f"too few days to train: {len(dates)} days with a known target, {len(pool)} of them {HORIZON_DAYS}"
            f" days or more before the {holdout_days} held-out days; training needs {needed} such days, so"
            f" {holdout_days + HORIZON_DAYS - 1 + needed} days with a target"
            f" ({holdout_days + 2 * HORIZON_DAYS - 1 + needed} simulated days)")
    pool_days = set(pool)
    train_rows = [row for row in known if row.feature_date in pool_days]
    holdout_rows = [row for row in known if row.feature_date in holdout]
    cv_mae = tuple(_fold_mae(train_rows, fold, params, early_stopping_days)
                   for fold in time_series_folds(pool, n_folds, min_train_days=needed))
    booster, best = _fit(train_rows, params, early_stopping_days)
    settings = {"num_boost_round": best + 1, "holdout_days": holdout_days, "n_folds": n_folds,
                "early_stopping_days": early_stopping_days, "horizon_days": HORIZON_DAYS}
    return TrainResult(booster=booster, params={**params, **settings}, best_iteration=best,
                       metrics=holdout_metrics(booster, holdout_rows), cv_mae=cv_mae, data_start=pool[0],
                       data_end=dates[-1], train_rows=len(train_rows), holdout_rows=len(holdout_rows))


def _fit(rows: Sequence[ShelfDailyFeatures], params: dict[str, Any], early_stopping_days: int
         ) -> tuple[xgb.Booster, int]:
    """The number of rounds from early stopping on the last `early_stopping_days` dates of `rows` (fitted on the
    dates before them), then a fit on all of `rows` with that many rounds: (model, best iteration)."""
    dates = sorted({row.feature_date for row in rows})
    stop_on = set(dates[-early_stopping_days:])
    fit = [row for row in rows if row.feature_date not in stop_on]
    check = [row for row in rows if row.feature_date in stop_on]
    probe = xgb.train(params, _dmatrix(fit), num_boost_round=MAX_ROUNDS, evals=[(_dmatrix(check), "check")],
                      early_stopping_rounds=EARLY_STOPPING_ROUNDS, verbose_eval=False)
    best = probe.best_iteration
    return xgb.train(params, _dmatrix(rows), num_boost_round=best + 1), best


def _fold_mae(rows: Sequence[ShelfDailyFeatures], fold: Fold, params: dict[str, Any],
              early_stopping_days: int) -> float:
    """The whole training procedure on a fold's training dates, scored on its scored dates."""
    train_days, score_days = set(fold.train), set(fold.score)
    booster, _ = _fit([row for row in rows if row.feature_date in train_days], params, early_stopping_days)
    scored = [row for row in rows if row.feature_date in score_days]
    actual = np.array([row.sales_next_7d for row in scored], dtype=np.float64)
    return float(np.mean(np.abs(predict_units(booster, scored) - actual)))


def holdout_metrics(booster: xgb.Booster, rows: Sequence[ShelfDailyFeatures]) -> HoldoutMetrics:
    """The model and both baselines on the same rows (their targets known)."""
    actual = np.array([row.sales_next_7d for row in rows], dtype=np.float64)
    model = predict_units(booster, rows)
    last7 = np.array([_last7(row) for row in rows], dtype=np.float64)
    actual_batches = np.array([row.batches_to_order for row in rows], dtype=np.float64)

    def as_batches(units: np.ndarray) -> np.ndarray:
        # a forecast counts whole units, like the target, before it is turned into batches
        return np.array([batches_needed(round(u), available_units(row), row.standard_batch_size)
                         for u, row in zip(units, rows, strict=True)], dtype=np.float64)

    def mae(predicted: np.ndarray, truth: np.ndarray) -> float:
        return float(np.mean(np.abs(predicted - truth)))

    def rmse(predicted: np.ndarray, truth: np.ndarray) -> float:
        return float(np.sqrt(np.mean((predicted - truth) ** 2)))

    rule = np.array([rule_batches(row) for row in rows], dtype=np.float64)
    return HoldoutMetrics(
        mae_model=mae(model, actual), rmse_model=rmse(model, actual),
        mae_last7=mae(last7, actual), rmse_last7=rmse(last7, actual),
        mae_model_batches=mae(as_batches(model), actual_batches),
        mae_last7_batches=mae(as_batches(last7), actual_batches),
        mae_rule_batches=mae(rule, actual_batches),
    )
