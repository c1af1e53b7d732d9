"""Restock risk: the probability that a shelf runs empty before its next refill, from what the streaming shelf
aggregator knows of it (its stock, the shelf's fixed facts, the simulated time), by an XGBoost classifier.

Invariants:
- One definition of the columns, `features_of`, for the training rows and for the live score.
- Training rows are hourly snapshots of every shelf's stock, replayed from the run's shelf events with the twin's
  own rule (rules.apply_shelf_event). A snapshot's label reads only the events after it, up to HORIZON: 1 if the
  stock reaches 0 (or is 0) before a refill (a staff putback) within HORIZON, 0 if a refill comes first or HORIZON
  passes; a snapshot whose HORIZON the run has not covered yet has no label and is left out.
- Snapshots of an empty shelf are neither learnt nor scored: its risk is 1 by definition, and the scorer says so.
- The held-out hours come after every training hour's horizon, so no training label has seen them; the model is
  compared there with two baselines: the training rows' base rate (Brier score), and the shelf's emptiness
  (1 - fill ratio) as a score (ROC AUC).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import xgboost as xgb
from sklearn.metrics import brier_score_loss, roc_auc_score

from smartshelf.errors import SmartShelfError
from smartshelf.rules import Refused, apply_shelf_event, initial_states
from smartshelf.schemas import ShelfEvent, ShelfProfile, ShelfRisk, ShelfState
from smartshelf.store import StoreData

HORIZON = timedelta(hours=12)
SNAPSHOT_EVERY = timedelta(hours=1)
RISK_MODEL_NAME = "restock_risk_xgb"
RISK_FEATURES = ("fill_ratio", "stock", "capacity", "item_visibility", "item_price", "hour_of_day", "day_of_week")
_STOCK = RISK_FEATURES.index("stock")
RISK_FEATURE_HASH = hashlib.sha256(json.dumps(RISK_FEATURES).encode()).hexdigest()
RISK_PARAMS = {"objective": "binary:logistic", "eval_metric": "logloss", "max_depth": 4, "eta": 0.1,
               "subsample": 0.9, "min_child_weight": 5, "seed": 0, "nthread": 2}
RISK_ROUNDS = 200
MODEL_FILE, COLUMNS_FILE = "model.json", "feature_columns.json"


@dataclass(frozen=True)
class ShelfFacts:
    """What does not change about a shelf while the store runs."""

    capacity: int
    item_visibility: float  # the reference data's popularity; NaN for a shelf the store added (no such column)
    item_price: float


def shelf_facts(store: StoreData, profiles: Iterable[ShelfProfile] = ()) -> dict[str, ShelfFacts]:
    facts = {row.shelf_id: ShelfFacts(row.maximum_stock, row.item_visibility, row.item_price)
             for row in store.store_inventory}
    for profile in profiles:
        facts.setdefault(profile.shelf_id, ShelfFacts(profile.maximum_stock, math.nan, profile.item_price))
    return facts


def features_of(stock: int, facts: ShelfFacts, at: datetime) -> list[float]:
    """The RISK_FEATURES of a shelf holding `stock` at `at`, in their order."""
    return [stock / facts.capacity, float(stock), float(facts.capacity), facts.item_visibility, facts.item_price,
            at.hour + at.minute / 60, float(at.weekday())]


@dataclass(frozen=True)
class RiskRow:
    shelf_id: str
    at: datetime
    features: list[float]
    label: int | None  # None: the run has not covered its horizon yet


@dataclass(frozen=True)
class _Moment:
    """An event that decides a label: the shelf ran empty, or was refilled."""

    at: datetime
    empty: bool  # else a refill


def snapshots(store: StoreData, start: datetime, events: Iterable[ShelfEvent], until: datetime) -> list[RiskRow]:
    """Every shelf's snapshot on each SNAPSHOT_EVERY from `start` up to `until` (the clock's watermark: every
    event before it is in `events`), labelled where its horizon ends by `until`."""
    facts = shelf_facts(store)
    states = {state.shelf_id: state for state in initial_states(store, start).shelves}
    moments: dict[str, list[_Moment]] = {shelf_id: [] for shelf_id in states}
    taken: list[tuple[datetime, dict[str, int]]] = []
    ordered = iter(sorted((e for e in events if e.ts < until and e.shelf_id in states), key=lambda e: e.ts))
    pending, at = next(ordered, None), start
    while pending is not None or at < until:
        if pending is not None and (at >= until or pending.ts <= at):
            _apply(states, moments, pending)
            pending = next(ordered, None)
        else:
            taken.append((at, {shelf_id: state.current_stock for shelf_id, state in states.items()}))
            at += SNAPSHOT_EVERY
    times = {shelf_id: [m.at for m in shelf_moments] for shelf_id, shelf_moments in moments.items()}
    return [RiskRow(shelf_id, when, features_of(held, facts[shelf_id], when),
                    label_of(held, moments[shelf_id], times[shelf_id], when, until))
            for when, stocks in taken for shelf_id, held in sorted(stocks.items())]


def _apply(states: dict[str, ShelfState], moments: dict[str, list[_Moment]], event: ShelfEvent) -> None:
    after, problem = apply_shelf_event(states[event.shelf_id], event)
    if isinstance(problem, Refused) or event.event_type == "weight_change":
        return
    states[event.shelf_id] = after
    if event.by_staff and event.event_type == "putback":
        moments[event.shelf_id].append(_Moment(event.ts, empty=False))
    elif after.current_stock == 0:
        moments[event.shelf_id].append(_Moment(event.ts, empty=True))


def label_of(stock: int, moments: Sequence[_Moment], times: Sequence[datetime], at: datetime, until: datetime
             ) -> int | None:
    """1 if the shelf is or runs empty before a refill within HORIZON of `at`; 0 if a refill comes first or the
    horizon passes; None if the horizon reaches past `until` with neither seen. `times` are the moments' times."""
    if stock == 0:
        return 1
    first = bisect.bisect_right(times, at)
    if first < len(moments) and moments[first].at <= at + HORIZON:
        return int(moments[first].empty)
    return 0 if at + HORIZON <= until else None


@dataclass(frozen=True)
class RiskMetrics:
    auc_model: float
    auc_emptiness: float  # 1 - fill ratio as the score
    brier_model: float
    brier_base_rate: float  # the training rows' rate of running empty, for every row
    base_rate: float
    holdout_positive: int


@dataclass(frozen=True)
class RiskResult:
    booster: xgb.Booster
    metrics: RiskMetrics
    train_rows: int
    holdout_rows: int
    data_start: datetime
    data_end: datetime  # the last held-out snapshot


def train_risk(rows: Sequence[RiskRow], holdout_hours: int = 24) -> RiskResult:
    """Fit on the labelled snapshots before the held-out hours' horizon gap; score on the last `holdout_hours`."""
    # an empty shelf's risk is 1 by definition (RiskScorer says so without the model): learning and scoring it
    # would only reward the model for seeing a zero
    known = sorted((row for row in rows if row.label is not None and row.features[_STOCK] > 0),
                   key=lambda row: row.at)
    times = sorted({row.at for row in known})
    if len(times) < holdout_hours + HORIZON / SNAPSHOT_EVERY + 24:
        raise SmartShelfError(f"restock risk: {len(times)} labelled hours; training needs {holdout_hours} held out,"
                              f" {HORIZON / SNAPSHOT_EVERY:.0f} of gap and a day to learn from (run longer)")
    first_held = times[-holdout_hours]
    train = [row for row in known if row.at + HORIZON < first_held]
    held = [row for row in known if row.at >= first_held]
    labels = np.array([row.label for row in train], dtype=float)
    held_labels = np.array([row.label for row in held], dtype=float)
    if len(set(labels)) < 2 or len(set(held_labels)) < 2:
        raise SmartShelfError("restock risk: the run has no shelf that ran empty (or none that did not) in the"
                              " training or the held-out hours: nothing to learn or score")
    booster = xgb.train(RISK_PARAMS, _matrix(train, labels), num_boost_round=RISK_ROUNDS)
    predicted = booster.predict(_matrix(held))
    emptiness = np.array([1 - row.features[0] for row in held])
    base_rate = float(labels.mean())
    metrics = RiskMetrics(
        auc_model=float(roc_auc_score(held_labels, predicted)),
        auc_emptiness=float(roc_auc_score(held_labels, emptiness)),
        brier_model=float(brier_score_loss(held_labels, predicted)),
        brier_base_rate=float(brier_score_loss(held_labels, np.full(len(held), base_rate))),
        base_rate=base_rate, holdout_positive=int(held_labels.sum()))
    return RiskResult(booster, metrics, len(train), len(held), known[0].at, held[-1].at)


def _matrix(rows: Sequence[RiskRow], labels: np.ndarray | None = None) -> xgb.DMatrix:
    return xgb.DMatrix(np.array([row.features for row in rows], dtype=float), label=labels,
                       feature_names=list(RISK_FEATURES))


def save_risk_model(booster: xgb.Booster, folder: Path) -> None:
    from smartshelf.ml.artifacts import write_whole

    folder.mkdir(parents=True, exist_ok=True)
    columns = {"columns": list(RISK_FEATURES), "feature_hash": RISK_FEATURE_HASH}
    write_whole(folder / COLUMNS_FILE, json.dumps(columns, indent=2).encode())
    write_whole(folder / MODEL_FILE, bytes(booster.save_raw("json")))


@dataclass(frozen=True)
class RiskScorer:
    """A loaded risk model: scores shelves as the streaming shelf aggregator holds them."""

    booster: xgb.Booster
    model_version: int

    @classmethod
    def load(cls, folder: Path) -> RiskScorer:
        """The model saved in the version folder `folder`; SmartShelfError (one line) if it is not whole or was
        trained on other columns."""
        try:
            saved = json.loads((folder / COLUMNS_FILE).read_text())
            if saved["feature_hash"] != RISK_FEATURE_HASH:
                raise SmartShelfError(f"risk model {folder} was trained on other columns: train it again")
            booster = xgb.Booster(params={"nthread": 1})
            booster.load_model(str(folder / MODEL_FILE))
        except (OSError, ValueError, KeyError, TypeError, xgb.core.XGBoostError) as exc:
            raise SmartShelfError(f"risk model {folder} cannot be read ({type(exc).__name__}): train it again") \
                from exc
        return cls(booster, int(folder.name))

    def score(self, states: Sequence[ShelfState], facts: Mapping[str, ShelfFacts]) -> list[ShelfRisk]:
        """The risk of each state's shelf at its last event's time (shelves without facts are not scored)."""
        known = [state for state in states if state.shelf_id in facts]
        if not known:
            return []
        matrix = np.array([features_of(s.current_stock, facts[s.shelf_id], s.last_event_ts) for s in known],
                          dtype=float)
        risks = np.where(matrix[:, _STOCK] > 0, self.booster.inplace_predict(matrix), 1.0)
        return [ShelfRisk(store_id=state.store_id, shelf_id=state.shelf_id, restock_risk=round(float(risk), 4),
                          model_version=self.model_version, scored_ts=state.last_event_ts)
                for state, risk in zip(known, risks, strict=True)]
