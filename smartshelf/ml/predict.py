"""Inference: a loaded model's forecast for the rows of one completed day, as prediction rows and pending supplier
plans.

Invariants: the output is a function of the model, the rows, the policies and the run time `at` only, so running
it again (a restart the same simulated day, with the same scheduled `at`) gives the same rows and the same plan
ids, and the compacted wh_supplier_plan topic keeps one plan per shelf and day. The rows must be of a day that
was over at `at` (no forecast reads an unfinished day).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from smartshelf.errors import SmartShelfError
from smartshelf.ml.artifacts import LoadedModel
from smartshelf.ml.features import available_units, batches_needed, end_of
from smartshelf.ml.train import predict_units
from smartshelf.policies import ConfigTables
from smartshelf.schemas import MlPrediction, ShelfDailyFeatures, WarehouseSupplierPlan


@dataclass(frozen=True)
class Forecast:
    predictions: list[MlPrediction]  # one per row, by shelf
    plans: list[WarehouseSupplierPlan]  # status "planned", only for shelves that need at least one batch


def plan_id(shelf_id: str, day: date) -> str:
    """One forecast plan per shelf and day: not per model version, so a model retrained the same day replaces
    that day's plan (same key) instead of ordering a second time."""
    return f"ml-{shelf_id}-{day:%Y%m%d}"


def forecast(model: LoadedModel, rows: Sequence[ShelfDailyFeatures], tables: ConfigTables,
             at: datetime) -> Forecast:
    """Predictions and plans at simulated time `at` (the run's scheduled time, so a restart repeats it) from the
    feature rows of one day that ended by `at`."""
    days = sorted({row.feature_date for row in rows})
    if len(days) > 1:
        raise SmartShelfError(f"a forecast reads the features of one day, got {len(days)} ({days[0]}..{days[-1]})")
    if days and end_of(days[0]) > at:
        raise SmartShelfError(f"the features of {days[0]} are not complete at {at:%Y-%m-%d %H:%M}")
    ordered = sorted(rows, key=lambda row: row.shelf_id)
    lead_times = {policy.shelf_id: policy.lead_time_days for policy in tables.wh_policies}
    predictions, plans = [], []
    for row, units in zip(ordered, predict_units(model.booster, ordered), strict=True):
        # a forecast counts whole units, like the target, before it is turned into batches
        batches = batches_needed(round(units), available_units(row), row.standard_batch_size)
        predictions.append(MlPrediction(
            model_name=model.model_name, model_version=model.model_version, shelf_id=row.shelf_id,
            prediction_date=at.date(), feature_date=row.feature_date, predicted_sales_next_7d=float(units),
            batches_to_order=batches, predicted_ts=at))
        if batches > 0:
            # delivered as the rule's orders are (smartshelf.loop): the lead time later, one day at the earliest
            delivery = at.date() + timedelta(days=max(lead_times[row.shelf_id], 1))
            plans.append(WarehouseSupplierPlan(
                plan_id=plan_id(row.shelf_id, at.date()), shelf_id=row.shelf_id, batches_to_order=batches,
                quantity=batches * row.standard_batch_size, status="planned", expected_delivery_date=delivery,
                created_ts=at, updated_ts=at))
    return Forecast(predictions, plans)
