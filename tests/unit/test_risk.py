"""Restock risk (smartshelf.ml.risk), pure: labels read only the horizon after a snapshot (hand-checked cases,
and changing later events leaves features and earlier labels alone); training on a simulated world is
deterministic, holds out hours after its training horizons and beats the base rate; the model files load whole
or fail in one line; and the shelf aggregator publishes the newest model's scores (every shelf when a version
comes, then the shelves a batch changed) and ignores a version it cannot read."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from smartshelf import rules
from smartshelf.datagen import generate_store
from smartshelf.errors import SmartShelfError
from smartshelf.ml.risk import (COLUMNS_FILE, HORIZON, MODEL_FILE, RISK_FEATURES, RiskResult, RiskRow, RiskScorer,
                                ShelfFacts, features_of, save_risk_model, shelf_facts, snapshots, train_risk)
from smartshelf.runtime import jobs
from smartshelf.policies import ConfigTables
from smartshelf.schemas import ShelfEvent, ShelfRisk, ShelfState
from smartshelf.store import StoreData
from smartshelf.streaming.apps import RiskScoring
from smartshelf.settings import Settings
from smartshelf.world import World, WorldConfig
from tests.unit.test_ml import shelf_row

START = datetime(2025, 1, 6, 8)
DAYS = 4


def move(shelf_id: str, kind: str, quantity: int, ts: datetime, *, staff: bool = False) -> ShelfEvent:
    lot = {"batch_code": "L1", "received_date": date(2025, 1, 1), "expiry_date": date(2025, 3, 1)} if staff else {}
    return ShelfEvent(event_id=f"{shelf_id}-{ts:%d%H%M}", event_type=kind, shelf_id=shelf_id,  # type: ignore[arg-type]
                      quantity=quantity, weight_change=(-1.0 if kind == "pickup" else 1.0) * quantity * 500,
                      customer_id=None if staff else "C1", ts=ts, **lot)


@pytest.fixture
def hand_store() -> StoreData:
    return StoreData(store_inventory=[shelf_row("A", "BEVERAGES", 10, 5), shelf_row("B", "BEVERAGES", 10, 8)])


def labels(rows: list[RiskRow], shelf_id: str) -> dict[int, int | None]:
    """Hour after START -> label, for one shelf."""
    return {int((row.at - START) / timedelta(hours=1)): row.label for row in rows if row.shelf_id == shelf_id}


def test_labels_say_whether_the_shelf_empties_before_a_refill_within_the_horizon(hand_store: StoreData) -> None:
    events = [move("A", "pickup", 3, START + timedelta(hours=2, minutes=30)),
              move("A", "pickup", 2, START + timedelta(hours=3, minutes=30)),  # A is empty at 11:30
              move("A", "putback", 10, START + timedelta(hours=5), staff=True),  # refilled at 13:00
              move("B", "putback", 2, START + timedelta(hours=1), staff=True),  # B refilled first, then
              move("B", "pickup", 10, START + timedelta(hours=6))]  # emptied at 14:00
    until = START + timedelta(hours=30)
    rows = snapshots(hand_store, START, events, until)
    a, b = labels(rows, "A"), labels(rows, "B")
    assert [a[h] for h in range(6)] == [1, 1, 1, 1, 1, 0]  # empties by 11:30; at 11:00 and 12:00 it is empty
    assert [b[h] for h in range(7)] == [0, 1, 1, 1, 1, 1, 1]  # 08:00: a refill comes first; 14:00 it is empty
    assert a[6] == 0 and a[30 - 12] == 0  # refilled, nothing after: the horizon passes
    assert a[30 - 11] is None  # its horizon reaches past the run: unknown
    by_hour = {(row.shelf_id, row.at): row.features for row in rows}
    assert by_hour[("A", START + timedelta(hours=3))] == features_of(2, shelf_facts(hand_store)["A"],
                                                                      START + timedelta(hours=3))


def test_a_snapshot_reads_nothing_after_its_horizon(hand_store: StoreData) -> None:
    early = [move("A", "pickup", 1, START + timedelta(hours=1))]
    later = [move("A", "pickup", 4, START + timedelta(hours=20)), move("B", "pickup", 8, START + timedelta(hours=15))]
    until = START + timedelta(hours=40)
    with_later = snapshots(hand_store, START, early + later, until)
    without = snapshots(hand_store, START, early, until)
    for row, other in zip(with_later, without, strict=True):
        assert row.features == other.features or row.at >= START + timedelta(hours=15)
        if row.at + HORIZON < START + timedelta(hours=15):
            assert row.label == other.label, row


# --- training on a simulated world ------------------------------------------------------------
def simulated_world() -> tuple[StoreData, list[ShelfEvent]]:
    """Every tenth shelf of the generated store, DAYS days of customers (no refills: shelves run empty)."""
    full = generate_store(42)
    keep = {row.shelf_id for row in full.store_inventory[::10]}
    store = StoreData(store_inventory=[r for r in full.store_inventory if r.shelf_id in keep],
                      warehouse_inventory=[r for r in full.warehouse_inventory if r.shelf_id in keep],
                      store_batches=[r for r in full.store_batches if r.shelf_id in keep],
                      warehouse_batches=[r for r in full.warehouse_batches if r.shelf_id in keep])
    simulated = World(store, 7, WorldConfig(customers_per_day=300))
    state, events, tick = simulated.initial_state(START), [], START
    while tick < START + timedelta(days=DAYS):
        tick += timedelta(hours=2)
        state, new = simulated.advance(state, tick)
        events += new.shelf_events
    return store, events


def trained_on_a_world() -> RiskResult:
    store, events = simulated_world()
    return train_risk(snapshots(store, START, events, START + timedelta(days=DAYS)), holdout_hours=24)


@pytest.fixture(scope="module")
def world() -> tuple[StoreData, list[ShelfEvent]]:
    return simulated_world()


@pytest.fixture(scope="module")
def trained(world: tuple[StoreData, list[ShelfEvent]]) -> RiskResult:
    store, events = world
    return train_risk(snapshots(store, START, events, START + timedelta(days=DAYS)), holdout_hours=24)


def test_training_beats_the_base_rate_on_held_out_hours(trained: RiskResult) -> None:
    m = trained.metrics
    assert m.holdout_positive > 0 and 0 < m.base_rate < 1
    assert m.brier_model < m.brier_base_rate and m.auc_model > 0.5, m
    assert trained.train_rows > trained.holdout_rows > 0


def test_training_is_deterministic_and_holds_out_hours_after_every_training_horizon(
        world: tuple[StoreData, list[ShelfEvent]], trained: RiskResult) -> None:
    store, events = world
    again = train_risk(snapshots(store, START, events, START + timedelta(days=DAYS)), holdout_hours=24)
    assert again.metrics == trained.metrics
    rows = [row for row in snapshots(store, START, events, START + timedelta(days=DAYS))
            if row.label is not None and row.features[1] > 0]  # an empty shelf is neither learnt nor scored
    held_from = sorted({row.at for row in rows})[-24]
    assert trained.train_rows == sum(1 for row in rows if row.at + HORIZON < held_from)


def test_too_few_hours_to_train_is_one_clear_error(world: tuple[StoreData, list[ShelfEvent]]) -> None:
    store, events = world
    with pytest.raises(SmartShelfError, match="labelled hours") as error:
        train_risk(snapshots(store, START, events, START + timedelta(hours=30)))
    assert "\n" not in str(error.value)


# --- model files and scoring --------------------------------------------------------------------
@pytest.fixture
def saved(trained: RiskResult, tmp_path: Path) -> Path:
    folder = tmp_path / "restock_risk_xgb" / "202501100600"
    save_risk_model(trained.booster, folder)
    return folder


def test_a_saved_model_scores_as_the_trained_one(saved: Path, trained: RiskResult,
                                                 world: tuple[StoreData, list[ShelfEvent]]) -> None:
    store, _ = world
    scorer = RiskScorer.load(saved)
    shelves = rules.initial_states(store, START + timedelta(hours=3)).shelves
    shelves[0] = shelves[0].model_copy(update={"current_stock": 0, "current_weight": 0})
    scores = scorer.score(shelves, shelf_facts(store))
    assert scorer.model_version == 202501100600 and len(scores) == len(shelves)
    facts = shelf_facts(store)
    expected = trained.booster.predict(xgb.DMatrix(np.array(
        [features_of(s.current_stock, facts[s.shelf_id], s.last_event_ts) for s in shelves]),
        feature_names=list(RISK_FEATURES)))
    assert scores[0].restock_risk == 1.0  # empty: 1 by definition, not the model's guess
    assert [s.restock_risk for s in scores[1:]] == [round(float(p), 4) for p in expected[1:]]
    assert all(s.scored_ts == START + timedelta(hours=3) for s in scores)


@pytest.mark.parametrize("damage", ["model", "columns", "other-columns"])
def test_a_model_that_cannot_be_read_is_one_clear_line(saved: Path, damage: str) -> None:
    if damage == "model":
        (saved / MODEL_FILE).write_text('{"learner": ')
    elif damage == "columns":
        (saved / COLUMNS_FILE).unlink()
    else:
        (saved / COLUMNS_FILE).write_text(json.dumps({"columns": ["x"], "feature_hash": "0" * 64}))
    with pytest.raises(SmartShelfError) as error:
        RiskScorer.load(saved)
    assert str(saved) in str(error.value) and "\n" not in str(error.value)


def test_the_shelf_aggregator_scores_with_the_newest_model(trained: RiskResult, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store = generate_store(7)
    monkeypatch.setattr(jobs, "load_store", lambda settings, store_id=None: store)
    monkeypatch.setattr(jobs, "load_config", lambda settings, store_id=None: ConfigTables([], [], [], []))
    settings = Settings(_env_file=None).model_copy(update={"delta_dir": tmp_path, "run_dir": tmp_path})  # type: ignore[call-arg]
    shelves = rules.initial_states(store, settings.sim_start).shelves
    risk = RiskScoring(settings)
    every_shelf_read = []

    def every_shelf() -> list[ShelfState]:
        every_shelf_read.append(True)
        return shelves

    assert risk.scores(shelves[:3], every_shelf) == []  # no model yet
    models = settings.artifact_dir / settings.risk_model_name
    save_risk_model(trained.booster, models / "202501100600")
    first = risk.scores(shelves[:3], every_shelf)  # a new version scores every shelf
    assert {r.shelf_id for r in first} == {s.shelf_id for s in shelves} and every_shelf_read == [True]
    latest = risk.scores(shelves[3:5], every_shelf)  # then the changed ones
    assert [r.shelf_id for r in latest] == [s.shelf_id for s in shelves[3:5]]
    assert all(isinstance(r, ShelfRisk) and r.model_version == 202501100600 for r in latest)

    (models / "202501110600").mkdir()  # a newer version that cannot be read: warned about, the old one goes on
    assert [r.model_version for r in risk.scores(shelves[5:6], every_shelf)] == [202501100600]
    assert every_shelf_read == [True]


def test_each_store_of_a_chain_is_scored_with_its_own_shelves_facts(trained: RiskResult, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two stores with the same shelf ids and other prices and capacities: one model, each store's facts."""
    chain = {"store-001": generate_store(7), "store-002": replace(generate_store(8), store_id="store-002")}
    loaded: list[str] = []

    def load_store(settings: Settings, store_id: str | None = None) -> StoreData:
        loaded.append(store_id or settings.store_id)
        return chain[store_id or settings.store_id]

    monkeypatch.setattr(jobs, "load_store", load_store)
    monkeypatch.setattr(jobs, "load_config", lambda settings, store_id=None: ConfigTables([], [], [], []))
    settings = Settings(_env_file=None).model_copy(update={"delta_dir": tmp_path, "run_dir": tmp_path})  # type: ignore[call-arg]
    save_risk_model(trained.booster, settings.artifact_dir / settings.risk_model_name / "202501100600")
    shelves = {store_id: rules.initial_states(store, settings.sim_start).shelves[:20]
               for store_id, store in chain.items()}
    shared = {s.shelf_id for s in shelves["store-001"]} & {s.shelf_id for s in shelves["store-002"]}
    assert shared  # the same ids: only the store tells their facts apart
    scores = RiskScoring(settings).scores([], lambda: [*shelves["store-002"], *shelves["store-001"]])
    scorer = RiskScorer.load(settings.artifact_dir / settings.risk_model_name / "202501100600")
    assert scores == [*scorer.score(shelves["store-001"], shelf_facts(chain["store-001"])),
                      *scorer.score(shelves["store-002"], shelf_facts(chain["store-002"]))]
    assert {r.store_id for r in scores} == set(chain) and sorted(loaded) == sorted(chain)


def test_facts_of_a_shelf_the_store_adds_have_no_popularity() -> None:
    from smartshelf.schemas import ShelfProfile

    profile = ShelfProfile(shelf_id="NEW", aisle=1, item_category="BEVERAGES", item_subcategory="Water",
                           item_weight=500, shelf_weight=5000, maximum_stock=10, item_price=2.0)
    facts = shelf_facts(StoreData(), [profile])["NEW"]
    assert facts.capacity == 10 and facts.item_price == 2.0 and np.isnan(facts.item_visibility)
    assert features_of(5, ShelfFacts(10, 0.5, 2.0), START)[:3] == [0.5, 5.0, 10.0]

