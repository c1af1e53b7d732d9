"""The dashboard's views (dashboard/app.py) rendered by Streamlit's AppTest on seeded data: the app's data source
(smartshelf.dashboard.open_source) is replaced by one that returns a snapshot built from the schema models, holding
only the tables a view asks for (so a view that reads less than it shows fails here), and noting the store asked
for. A chain's settings (STORES=2) bring the store picker and the Chain view."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from datetime import date, datetime, timedelta

import pandas as pd
import pytest
import streamlit as st
from pydantic import BaseModel
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Tab

from smartshelf import dashboard as core
from smartshelf.schemas import (Alert, MlModel, PosTransactionRow, PulseWindow, ShelfBatchState, ShelfEvent, ShelfState,
                                SupplierOrder, SupplierReceipt, WarehouseBatchState, WarehouseState,
                                WarehouseSupplierPlan)
from smartshelf.settings import REPO_ROOT, Settings

APP = str(REPO_ROOT / "dashboard" / "app.py")
NOW = datetime(2025, 1, 1, 14, 0)
VIEWS = list(core.VIEW_TABLES)
SHELVES = {"S-D1": ("REFRIGERATED", "Milk"), "S-D2": ("REFRIGERATED", "Butter"), "S-B1": ("BREAD AND BREADSTICKS", "Bread"),
           "S-F1": ("FRUITS AND VEGETABLES", "Citrus")}


def frame(name: str, rows: Sequence[BaseModel]) -> pd.DataFrame:
    return pd.DataFrame([row.model_dump() for row in rows], columns=core.columns_of(name))


def inventory() -> pd.DataFrame:
    return pd.DataFrame([{"shelf_id": shelf_id, "aisle": 1, "item_weight": 1000, "shelf_weight": 40_000,
                          "item_category": category, "item_subcategory": sub, "item_visibility": 0.1,
                          "maximum_stock": 40, "current_stock": 20, "item_price": 1.99}
                         for shelf_id, (category, sub) in SHELVES.items()], columns=core.columns_of("store_inventory"))


def alert(alert_type: str, location: str, severity: str, shelf_id: str, minutes_ago: int) -> Alert:
    ts = NOW - timedelta(minutes=minutes_ago)
    return Alert(alert_id=f"{alert_type}-{shelf_id}-{minutes_ago}", alert_type=alert_type, location=location,  # type: ignore[arg-type]
                 severity=severity, shelf_id=shelf_id, message=f"{alert_type} on {shelf_id}", ts=ts)  # type: ignore[arg-type]


def pulse_alert(alert_type: str, severity: str, minutes_ago: int, metric: str, subject: str,
                shelf_id: str | None = None) -> Alert:
    """An anomaly (a metric of the store or a category, no shelf) or shrinkage (a shelf) alert."""
    return Alert(alert_id=f"{alert_type}-{metric}-{subject}-{minutes_ago}", alert_type=alert_type,  # type: ignore[arg-type]
                 location="store", severity=severity, shelf_id=shelf_id, metric=metric, subject=subject,  # type: ignore[arg-type]
                 message=f"{metric} of {subject} off", value=40.0, threshold=12.5,
                 ts=NOW - timedelta(minutes=minutes_ago))


def window(width: int, metric: str, subject: str, start: datetime, value: float) -> PulseWindow:
    return PulseWindow(width_minutes=width, metric=metric, subject=subject, window_start=start,  # type: ignore[arg-type]
                       window_end=start + timedelta(minutes=width), value=value, events=int(value))


def order(order_id: str, due: datetime, status: str) -> SupplierOrder:
    return SupplierOrder(order_id=order_id, plan_id=f"wp-{order_id}", shelf_id="S-D1", batches=1, quantity=12,
                         ordered_ts=NOW - timedelta(hours=3), expected_delivery_ts=due, status=status)  # type: ignore[arg-type]


def seeded_snapshot(models: Sequence[MlModel] = (), more_alerts: Sequence[Alert] = ()) -> core.Snapshot:
    lot = {"received_date": date(2024, 12, 30), "expiry_date": date(2025, 1, 9), "last_update_ts": NOW}
    return core.Snapshot(now=NOW, people_in_store=7, frames={
        "store_inventory": inventory(),
        "shelf_state": frame("shelf_state", [
            ShelfState(shelf_id=s, current_stock=i, current_weight=10.0 + i, last_event_type="pickup",
                       last_event_ts=NOW) for i, s in enumerate(SHELVES)]),
        "wh_state": frame("wh_state", [WarehouseState(shelf_id=s, wh_current_stock=50, last_event_type="wh_out",
                                                      last_event_ts=NOW) for s in SHELVES]),
        "shelf_batch_state": frame("shelf_batch_state", [
            ShelfBatchState(shelf_id=s, batch_code=f"L-{s}", batch_quantity_store=3, **lot) for s in SHELVES]),
        "wh_batch_state": frame("wh_batch_state", [
            WarehouseBatchState(shelf_id=s, batch_code=f"W-{s}", batch_quantity_warehouse=50, **lot) for s in SHELVES]),
        "alerts": frame("alerts", [
            alert("out_of_stock", "store", "critical", "S-D1", 10),
            alert("low_stock", "store", "warning", "S-D2", 20),
            alert("wh_reorder", "warehouse", "warning", "S-B1", 30),
            alert("low_stock", "store", "warning", "S-F1", core.ACTIVE_ALERT_MINUTES + 60),  # no longer active
            *more_alerts,
        ]),
        "wh_supplier_plan": frame("wh_supplier_plan", [
            WarehouseSupplierPlan(plan_id="wp-o1", shelf_id="S-D1", batches_to_order=1, quantity=12, status="ordered",
                                  expected_delivery_date=date(2025, 1, 2), created_ts=NOW, updated_ts=NOW)]),
        "wh_supplier_orders": frame("wh_supplier_orders", [
            order("o1", NOW + timedelta(hours=20), "open"), order("o2", NOW - timedelta(hours=1), "open"),
            order("o2", NOW - timedelta(hours=1), "received")]),
        "wh_supplier_receipts": frame("wh_supplier_receipts", [
            SupplierReceipt(receipt_id="sr-o2", order_id="o2", shelf_id="S-D1", batch_code="B-o2", quantity=12,
                            received_ts=NOW - timedelta(hours=1), expiry_date=date(2025, 1, 20))]),
        core.SHELF_EVENTS: frame(core.SHELF_EVENTS, [
            ShelfEvent(event_id=f"e{i}", event_type="weight_change", shelf_id="S-B1", quantity=1,
                       weight_change=-1.0, customer_id="c1", ts=NOW - timedelta(minutes=i)) for i in range(3)]),
        "ml_models": frame("ml_models", models),
    })


def pulse_snapshot() -> core.Snapshot:
    """The seeded store with its pulse: 1-minute units sold from 13:50, the 5-minute window 13:55-14:00 (and one
    still open), an anomaly of a category and one of the store (no shelf) and a shelf's shrinkage."""
    seeded = seeded_snapshot(more_alerts=[
        pulse_alert("anomaly", "critical", 5, "units_sold", "BREAD AND BREADSTICKS"),
        pulse_alert("anomaly", "warning", 8, "entries", "store"),
        pulse_alert("shrinkage", "warning", 15, "units_taken", "S-F1", shelf_id="S-F1")])
    ended, open_window = NOW - timedelta(minutes=5), NOW - timedelta(minutes=4)
    rows = [window(1, "units_sold", category, NOW - timedelta(minutes=minute), units)
            for minute in range(1, 11) for category, units in (("REFRIGERATED", 2), ("FRUITS AND VEGETABLES", 1))]
    rows += [window(5, "entries", "store", ended, 12), window(5, "exits", "store", ended, 9),
             window(5, "units_sold", "store", ended, 15),
             window(5, "units_sold", "REFRIGERATED", ended, 10), window(5, "units_sold", "FRUITS AND VEGETABLES", ended, 5),
             window(5, "revenue", "REFRIGERATED", ended, 20.5), window(5, "revenue", "FRUITS AND VEGETABLES", ended, 30.25),
             window(5, "entries", "store", open_window, 50)]
    return core.Snapshot(now=NOW, people_in_store=seeded.people_in_store,
                         frames={**seeded.frames, "pulse_windows": frame("pulse_windows", rows)})


CHAIN_STOCK = {"store-001": 0, "store-002": 6}  # each store's one shelf
CHAIN = list(CHAIN_STOCK)


def chain_snapshot() -> core.Snapshot:
    """A chain of two stores: store-001 (the models' default store) with a critical alert, an empty shelf and sales
    today; store-002 with none."""
    return core.Snapshot(now=NOW, people_in_store=None, frames={
        "shelf_state": frame("shelf_state", [
            ShelfState(store_id=store_id, shelf_id="S-D1", current_stock=stock, current_weight=stock * 1.0,
                       last_event_type="pickup", last_event_ts=NOW) for store_id, stock in CHAIN_STOCK.items()]),
        "alerts": frame("alerts", [alert("out_of_stock", "store", "critical", "S-D1", 10)]),
        "pos_transactions": frame("pos_transactions", [
            PosTransactionRow(transaction_id=f"t{minutes}", customer_id="c1", ts=NOW - timedelta(minutes=minutes),
                              item_count=2, total=10.0) for minutes in (1, 30)]),
    })


class SeededSource:
    def __init__(self, make: Callable[[], core.Snapshot], asked: list[tuple[str, ...]], stores_asked: list[str],
                 chains_asked: list[tuple[str, ...]]) -> None:
        self.make = make
        self.asked = asked
        self.stores_asked = stores_asked
        self.chains_asked = chains_asked

    def snapshot(self, tables: Collection[str], store_id: str) -> core.Snapshot:
        self.asked.append(tuple(tables))
        self.stores_asked.append(store_id)
        full = self.make()
        frames = {name: rows for name, rows in full.frames.items() if name in tables}
        alerts_raised = len(full.frame("alerts")) if "alerts" in tables else None
        return core.Snapshot(now=full.now, people_in_store=full.people_in_store, frames=frames,
                             alerts_raised=alerts_raised)

    def chain_snapshot(self, store_ids: Sequence[str]) -> core.Snapshot:
        self.chains_asked.append(tuple(store_ids))
        return chain_snapshot()


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., AppTest]]:
    """Runs the app on the snapshots `make` returns (chain_snapshot's for the Chain view), noting in `asked` the
    tables each read asks for, in `stores_asked` the store and in `chains_asked` the stores of each chain read; the
    app's cache is emptied so each test sees its own."""
    def run(make: Callable[[], core.Snapshot], asked: list[tuple[str, ...]] | None = None,
            stores_asked: list[str] | None = None, chains_asked: list[tuple[str, ...]] | None = None) -> AppTest:
        source = SeededSource(make, [] if asked is None else asked, [] if stores_asked is None else stores_asked,
                              [] if chains_asked is None else chains_asked)
        monkeypatch.setattr(core, "open_source", lambda settings: source)
        app = AppTest.from_file(APP, default_timeout=30)
        app.run()
        assert not app.exception, app.exception
        return app

    st.cache_data.clear()
    yield run
    st.cache_data.clear()


def metrics(app: AppTest) -> dict[str, str]:
    return {metric.label: metric.value for metric in app.metric}


def open_view(app: AppTest, view: str) -> Tab:
    """Select a tab as a click does (the tabs' key holds the open one's label); returns it, drawn."""
    app.session_state["view"] = view
    app.run()
    assert not app.exception, app.exception
    return app.tabs[VIEWS.index(view)]


def test_the_map_shows_the_clock_people_active_alerts_and_the_zones_with_alerts(serve) -> None:  # type: ignore[no-untyped-def]
    app = serve(seeded_snapshot)
    assert [tab.label for tab in app.tabs] == VIEWS
    shown = metrics(app)
    assert shown["Simulated time"] == "2025-01-01 14:00" and shown["People in store"] == "7"
    assert shown["Active store alerts"] == "2" and shown["Active warehouse alerts"] == "1"
    assert shown["Zones with alerts"] == "1"  # REFRIGERATED; the bread alert is in the warehouse, the fruit one is old
    assert shown["Alerts raised"] == "4"
    live = app.tabs[0]
    assert any(m.value == "**Zones with alerts:** REFRIGERATED (critical)" for m in live.markdown)
    assert len(live.get("plotly_chart")) == 1

    app.selectbox(key="map_zone").set_value("REFRIGERATED").run()
    shelves, zone_alerts = app.tabs[0].dataframe[0].value, app.tabs[0].dataframe[1].value
    assert list(shelves["shelf_id"]) == ["S-D1", "S-D2"]
    assert list(zone_alerts["alert_type"]) == ["out_of_stock", "low_stock"]
    app.selectbox(key="map_zone").set_value("FISH").run()
    assert [info.value for info in app.tabs[0].info] == ["No shelves in this zone.", "No active alerts in this zone."]


def test_states_show_shelf_and_warehouse_state_filtered_by_category_subcategory_and_shelf(serve) -> None:  # type: ignore[no-untyped-def]
    app = serve(seeded_snapshot)
    tables = open_view(app, "States").dataframe
    assert len(tables) == 4 and all(len(t.value) == len(SHELVES) for t in tables)
    app.multiselect(key="states_category").set_value(["REFRIGERATED"]).run()
    assert all(set(t.value["item_category"]) == {"REFRIGERATED"} for t in app.tabs[1].dataframe)
    assert app.multiselect(key="states_subcategory").options == ["Butter", "Milk"]
    app.multiselect(key="states_subcategory").set_value(["Milk"]).run()
    assert [list(t.value["shelf_id"]) for t in app.tabs[1].dataframe] == [["S-D1"]] * 4
    app.multiselect(key="states_shelf").set_value(["S-D1"]).run()
    assert list(app.tabs[1].dataframe[1].value["wh_current_stock"]) == [50]


def test_the_supplier_plan_shows_plans_open_orders_and_next_deliveries(serve) -> None:  # type: ignore[no-untyped-def]
    app = serve(seeded_snapshot)
    tab = open_view(app, "Supplier Plan")
    shown = {m.label: m.value for m in tab.metric}
    assert shown == {"Supplier plans": "1", "Open supplier orders": "1", "Deliveries received": "1"}
    next_deliveries, open_orders, plans = (table.value for table in tab.dataframe)
    assert list(next_deliveries["order_id"]) == ["o1"] and list(open_orders["order_id"]) == ["o1"]
    assert list(plans["plan_id"]) == ["wp-o1"]
    assert [info.value for info in tab.info] == ["No restock plan yet."]


def test_the_alerts_table_filters(serve) -> None:  # type: ignore[no-untyped-def]
    app = serve(seeded_snapshot)
    assert len(open_view(app, "Alerts").dataframe[0].value) == 4
    app.multiselect(key="alerts_severity").set_value(["warning"]).run()
    assert set(app.tabs[3].dataframe[0].value["shelf_id"]) == {"S-D2", "S-B1", "S-F1"}
    app.multiselect(key="alerts_location").set_value(["store"]).run()
    app.checkbox(key="alerts_active_only").check().run()
    assert list(app.tabs[3].dataframe[0].value["shelf_id"]) == ["S-D2"]
    app.multiselect(key="alerts_category").set_value(["FRUITS AND VEGETABLES"]).run()
    assert [info.value for info in app.tabs[3].info] == ["No alerts match the filters."]


def test_debug_shows_the_settings_in_force_without_passwords(serve, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("smartshelf.settings.get_settings",
                        lambda: Settings(_env_file=None, POSTGRES_READER_PASSWORD="reader-s3cret",  # type: ignore[call-arg]
                                         POSTGRES_PASSWORD="admin-s3cret", TIME_MULTIPLIER=10))
    app = serve(seeded_snapshot)
    settings = open_view(app, "Debug/Config").dataframe[0].value
    values = dict(zip(settings["setting"], settings["value"], strict=True))
    assert values["TIME_MULTIPLIER"] == "10.0" and values["POSTGRES_READER_USER"] == "smartshelf_reader"
    rendered = " ".join(t.value.to_string() for t in app.dataframe)
    assert "PASSWORD" not in rendered and "s3cret" not in rendered


def test_ml_says_no_model_yet_or_shows_the_active_model(serve) -> None:  # type: ignore[no-untyped-def]
    app = serve(seeded_snapshot)
    assert [info.value for info in open_view(app, "ML").info] == ["No model yet: analytics.ml_models is empty."]
    model = MlModel(model_name="replenishment", model_version=2, trained_ts=NOW, data_start=date(2024, 12, 1),
                    data_end=date(2024, 12, 31), train_rows=900, holdout_rows=70, feature_hash="f" * 64,
                    params="{}", mae_model=0.4213, rmse_model=0.6, mae_last7=0.5, rmse_last7=0.7,
                    mae_model_batches=0.2, mae_last7_batches=0.3, mae_rule_batches=0.4, metric_name="mae",
                    metric_value=0.4213, artifact_path="models/replenishment/2", is_active=True)
    st.cache_data.clear()
    app = serve(lambda: seeded_snapshot([model]))
    tab = open_view(app, "ML")
    assert {m.label: m.value for m in tab.metric} == {"Active model": "replenishment v2", "mae": "0.421"}
    errors = tab.dataframe[0].value
    assert list(errors.columns) == ["model_name", "model_version", "units: model", "units: last-7-day sales",
                                    "batches: model", "batches: last-7-day sales", "batches: order-up-to rule"]
    assert errors.iloc[0]["units: model"] == 0.4213 and errors.iloc[0]["batches: order-up-to rule"] == 0.4
    assert [info.value for info in tab.info] == [
        "No forecast yet: the inference service forecasts daily at RUN_HOUR.", "No forecast plan yet."]


def test_no_store_yet_gives_one_clear_message(serve) -> None:  # type: ignore[no-untyped-def]
    app = serve(lambda: core.Snapshot(now=None, people_in_store=None))
    assert [info.value for info in app.info] == [
        "No data yet: the store is not loaded. Start the stack (`make up`) or a run (`smartshelf sim`)."]
    assert not app.metric and not app.get("plotly_chart")


def test_an_empty_twin_shows_empty_states_not_errors(serve) -> None:  # type: ignore[no-untyped-def]
    app = serve(lambda: core.Snapshot(now=NOW, people_in_store=0, frames={"store_inventory": inventory()}))
    assert metrics(app)["Active store alerts"] == "0" and metrics(app)["Zones with alerts"] == "0"
    assert "No shelf state yet: the twin writes it at the first event." in [
        i.value for i in open_view(app, "States").info]
    assert [i.value for i in open_view(app, "Alerts").info] == ["No alerts yet."]
    assert "No open supplier order." in [i.value for i in open_view(app, "Supplier Plan").info]


def test_a_database_down_gives_one_error_line(serve) -> None:  # type: ignore[no-untyped-def]
    def down() -> core.Snapshot:
        raise core.DataUnavailable("cannot connect to PostgreSQL at 127.0.0.1:1 as reader: connection refused")

    app = serve(down)
    assert [error.value for error in app.error] == [
        "Data source unavailable: cannot connect to PostgreSQL at 127.0.0.1:1 as reader: connection refused"]
    assert not app.metric and not app.exception


def test_a_refresh_reads_only_the_open_views_tables(serve) -> None:  # type: ignore[no-untyped-def]
    asked: list[tuple[str, ...]] = []
    app = serve(seeded_snapshot, asked)
    assert asked == [core.VIEW_TABLES["Map Live"]]
    assert [len(tab.children) > 0 for tab in app.tabs] == [view == "Map Live" for view in VIEWS]
    open_view(app, "Supplier Plan")
    assert asked[-1] == core.VIEW_TABLES["Supplier Plan"] and "alerts" not in asked[-1]
    assert [len(tab.children) > 0 for tab in app.tabs] == [view == "Supplier Plan" for view in VIEWS]
    open_view(app, core.PULSE_VIEW)
    assert asked[-1] == core.VIEW_TABLES[core.PULSE_VIEW]


def test_alerts_naming_no_shelf_are_listed_with_the_alerts_and_colour_no_zone(serve) -> None:  # type: ignore[no-untyped-def]
    app = serve(pulse_snapshot)
    shown = metrics(app)
    assert shown["Active store alerts"] == "5"  # two of shelves, two anomalies and a shelf's shrinkage
    assert shown["Zones with alerts"] == "2"  # the shrinkage's fruit shelf; the bread anomaly names no shelf
    assert any(m.value == "**Zones with alerts:** FRUITS AND VEGETABLES (warning), REFRIGERATED (critical)"
               for m in app.tabs[0].markdown)
    app.selectbox(key="map_zone").set_value("BREAD AND BREADSTICKS").run()
    assert list(app.tabs[0].dataframe[1].value["alert_type"]) == ["wh_reorder"]  # its shelf's, not the anomaly

    listed = open_view(app, "Alerts").dataframe[0].value
    assert len(listed) == 7 and listed["shelf_id"].isna().sum() == 2
    app.multiselect(key="alerts_category").set_value(["BREAD AND BREADSTICKS"]).run()  # the anomaly's category too
    assert list(app.tabs[3].dataframe[0].value["alert_type"]) == ["anomaly", "wh_reorder"]
    app.multiselect(key="alerts_category").set_value([]).run()
    app.multiselect(key="alerts_type").set_value(["anomaly"]).run()
    app.checkbox(key="alerts_active_only").check().run()
    assert list(app.tabs[3].dataframe[0].value["metric"]) == ["units_sold", "entries"]


def test_the_pulse_tab_shows_the_kpis_the_charts_and_the_anomalies(serve) -> None:  # type: ignore[no-untyped-def]
    app = serve(pulse_snapshot)
    tab = open_view(app, core.PULSE_VIEW)
    assert tab.subheader[0].value == core.PULSE_HEADING
    assert {m.label: m.value for m in tab.metric} == {
        core.ENTRIES_5_MIN: "12", core.EXITS_5_MIN: "9", core.UNITS_SOLD_5_MIN: "15", core.REVENUE_5_MIN: "50.75",
        core.ANOMALIES_TODAY: "2", core.SHRINKAGE_TODAY: "1"}
    assert "13:55–14:00" in tab.caption[0].value
    assert len(tab.get("vega_lite_chart")) == 1 and len(tab.get("plotly_chart")) == 1
    anomalies = tab.dataframe[0].value
    assert list(anomalies["about"]) == ["units_sold · BREAD AND BREADSTICKS", "entries · store", "shelf S-F1"]
    assert not tab.info


def test_the_pulse_tab_without_a_pulse_says_so(serve) -> None:  # type: ignore[no-untyped-def]
    app = serve(seeded_snapshot)
    tab = open_view(app, core.PULSE_VIEW)
    assert tab.subheader[0].value == core.PULSE_HEADING
    assert [info.value for info in tab.info] == [core.NO_PULSE, "No anomaly or shrinkage alert yet."]
    assert not tab.metric and not tab.get("plotly_chart") and not tab.get("vega_lite_chart")


def run_with(monkeypatch: pytest.MonkeyPatch, **settings: object) -> None:
    """The app's settings from now on: the defaults but these (env var names)."""
    chosen = Settings(_env_file=None, **settings)  # type: ignore[call-arg]
    monkeypatch.setattr("smartshelf.settings.get_settings", lambda: chosen)


def test_one_store_has_no_store_picker_nor_chain_view_and_shows_store_id(
        serve: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch) -> None:
    run_with(monkeypatch, STORE_ID="store-003")
    stores_asked: list[str] = []
    app = serve(seeded_snapshot, stores_asked=stores_asked)
    assert [box.key for box in app.selectbox] == ["map_zone"] and not app.sidebar.children
    assert [tab.label for tab in app.tabs] == VIEWS
    open_view(app, core.PULSE_VIEW)
    assert stores_asked == ["store-003", "store-003"]


def test_a_chain_picks_the_store_every_view_shows_the_first_by_default(
        serve: Callable[..., AppTest], monkeypatch: pytest.MonkeyPatch) -> None:
    run_with(monkeypatch, STORES=2, STORE_ID="store-002")
    stores_asked: list[str] = []
    app = serve(pulse_snapshot, stores_asked=stores_asked)
    picker = app.sidebar.selectbox(key="store")
    assert picker.options == CHAIN and picker.value == "store-001" and stores_asked == ["store-001"]
    picker.set_value("store-002").run()
    assert stores_asked[-1] == "store-002"
    open_view(app, "States")
    assert stores_asked[-1] == "store-002"
    pulse_tab = open_view(app, core.PULSE_VIEW)
    assert stores_asked[-1] == "store-002" and pulse_tab.subheader[0].value == core.PULSE_HEADING

    app.sidebar.selectbox(key="store").set_value("store-001").run()  # not STORE_ID: every store has its pulse
    assert stores_asked[-1] == "store-001"
    open_view(app, "ML")  # and its forecasts
    assert stores_asked[-1] == "store-001"


def test_the_chain_view_shows_a_tile_per_running_store(serve: Callable[..., AppTest],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    run_with(monkeypatch, STORES=2)
    asked: list[tuple[str, ...]] = []
    chains_asked: list[tuple[str, ...]] = []
    app = serve(seeded_snapshot, asked=asked, chains_asked=chains_asked)
    assert [tab.label for tab in app.tabs] == [*VIEWS, core.CHAIN_VIEW] and not chains_asked
    app.session_state["view"] = core.CHAIN_VIEW
    app.run()
    assert not app.exception, app.exception
    tab = app.tabs[-1]
    assert chains_asked == [tuple(CHAIN)] and asked == [core.VIEW_TABLES["Map Live"]]  # one read for all the stores
    assert [header.value for header in tab.subheader] == CHAIN
    assert [(m.label, m.value) for m in tab.metric] == [
        ("Worst active alert", "critical"), ("Stock-outs", "1"), ("Sales today", "20.00"),
        ("Worst active alert", "none"), ("Stock-outs", "0"), ("Sales today", "0.00")]
    assert [caption.value for caption in tab.caption][1:] == ["out_of_stock · shelf S-D1", "no active alert"]
