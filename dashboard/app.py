"""Smart Shelf dashboard: `streamlit run dashboard/app.py`, settings from the environment (smartshelf.settings).

A thin shell: smartshelf.dashboard reads the data (PostgreSQL as the read-only role, Delta, Redis) and shapes it;
this file lays it out in seven views and refreshes itself. When the twin runs a chain of stores, the sidebar picks
the store the views show (the first of the chain by default) and an eighth view, Chain, shows a tile per store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator
from streamlit_autorefresh import st_autorefresh

from smartshelf import dashboard as core
from smartshelf.settings import get_settings

REFRESH_SECONDS = 2
CACHE_TTL_SECONDS = 1  # shorter than the refresh: every refresh reads fresh data, widget clicks reuse it
LAYOUT_FILE = Path(__file__).with_name("store_layout.yaml")
NO_CLOCK = "clock stopped"
STORE_PICKER = "store"  # the sidebar's store picker (its key)
TILES_PER_ROW = 4


@st.cache_data(ttl=CACHE_TTL_SECONDS, show_spinner=False)
def snapshot(view: str, store_id: str) -> core.Snapshot:
    return core.open_source(get_settings()).snapshot(core.VIEW_TABLES[view], store_id)


@st.cache_data(ttl=CACHE_TTL_SECONDS, show_spinner=False)
def chain_snapshot(store_ids: tuple[str, ...]) -> core.Snapshot:
    return core.open_source(get_settings()).chain_snapshot(store_ids)


@st.cache_data(show_spinner=False)
def zones() -> list[core.Zone]:
    return core.load_layout(LAYOUT_FILE)


def table_or_note(frame: pd.DataFrame, empty_note: str) -> None:
    if frame.empty:
        st.info(empty_note)
    else:
        st.caption(f"{len(frame)} rows")
        st.dataframe(frame, hide_index=True)


def map_live(data: core.Snapshot) -> None:
    now = data.reference_time()
    inventory, alerts = data.frame("store_inventory"), data.frame("alerts")
    status = core.zone_status(alerts, inventory, now)
    activity = core.zone_activity(data.frame(core.SHELF_EVENTS), inventory)
    counts = core.active_counts(alerts, now)
    alert_zones = sorted(category for category, severity in status.items() if severity != "none")

    time_col, people_col, store_col, wh_col, zones_col, raised_col = st.columns([2, 1, 1, 1, 1, 1])
    time_col.metric("Simulated time", f"{data.now:%Y-%m-%d %H:%M}" if data.now else NO_CLOCK)
    people_col.metric("People in store", "–" if data.people_in_store is None else data.people_in_store)
    store_col.metric("Active store alerts", counts["store"])
    wh_col.metric("Active warehouse alerts", counts["warehouse"])
    zones_col.metric("Zones with alerts", len(alert_zones))
    raised_col.metric("Alerts raised", "–" if data.alerts_raised is None else data.alerts_raised)
    st.caption(f"Active alert: the latest per shelf (or pulse metric) and alert type raised in the last "
               f"{core.ACTIVE_ALERT_MINUTES} simulated minutes; alerts naming no shelf colour no zone. Dark border: "
               f"weight changes in the last {core.ACTIVITY_MINUTES} minutes. Risk: the highest probability, by the "
               f"restock-risk model, that a shelf of the zone runs empty before its next refill.")
    plan = core.plan_zones(zones(), inventory["item_category"].unique())
    risk = core.zone_risk(data.frame("shelf_risk"), inventory)
    st.plotly_chart(core.layout_figure(plan, status, activity, risk), key="store_map")
    st.markdown("**Zones with alerts:** " + (", ".join(f"{c} ({status[c]})" for c in alert_zones) or "none"))

    zone = st.selectbox("Zone", [z.category for z in plan], key="map_zone")
    shelves_col, alerts_col = st.columns(2)
    with shelves_col:
        st.subheader(f"{zone}: shelves")
        table_or_note(core.zone_shelves(inventory, data.frame("shelf_state"), zone, data.frame("shelf_risk")),
                      "No shelves in this zone.")
    with alerts_col:
        st.subheader(f"{zone}: active alerts")
        zone_alerts = core.select_rows(core.with_items(core.active_alerts(alerts, now), inventory),
                                       {"item_category": [zone]})
        table_or_note(zone_alerts, "No active alerts in this zone.")


def states(data: core.Snapshot) -> None:
    inventory = data.frame("store_inventory")
    categories = st.multiselect("Category", sorted(inventory["item_category"].unique()), key="states_category")
    in_categories = core.select_rows(inventory, {"item_category": categories})
    subcategories = st.multiselect("Subcategory", sorted(in_categories["item_subcategory"].unique()),
                                   key="states_subcategory")
    in_subcategories = core.select_rows(in_categories, {"item_subcategory": subcategories})
    shelf_ids = st.multiselect("Shelf", sorted(in_subcategories["shelf_id"]), key="states_shelf")
    filters = {"item_category": categories, "item_subcategory": subcategories, "shelf_id": shelf_ids}
    for name, title in (("shelf_state", "Shelf state"), ("wh_state", "Warehouse state"),
                        ("shelf_batch_state", "Shelf lots"), ("wh_batch_state", "Warehouse lots")):
        st.subheader(title)
        table_or_note(core.select_rows(core.with_items(data.frame(name), inventory), filters),
                      f"No {title.lower()} yet: the twin writes it at the first event." if data.frame(name).empty
                      else "No rows match the filters.")


def supplier_plan(data: core.Snapshot) -> None:
    now = data.reference_time()
    orders, plans = data.frame("wh_supplier_orders"), data.frame("wh_supplier_plan")
    open_orders = core.open_orders(orders)
    plans_col, orders_col, receipts_col = st.columns(3)
    plans_col.metric("Supplier plans", len(plans))
    orders_col.metric("Open supplier orders", len(open_orders))
    receipts_col.metric("Deliveries received", len(data.frame("wh_supplier_receipts")))
    st.subheader("Next deliveries (due within 2 days, or overdue)")
    table_or_note(core.next_deliveries(orders, now), "No delivery due.")
    st.subheader("Open supplier orders")
    table_or_note(open_orders, "No open supplier order.")
    st.subheader("Supplier plans")
    statuses = st.multiselect("Status", sorted(plans["status"].unique()), key="plan_status")
    table_or_note(core.select_rows(plans, {"status": statuses}).sort_values("updated_ts", ascending=False),
                  "No supplier plan yet: the warehouse has not reached a reorder point.")
    st.subheader("Shelf restock plans (warehouse to shelf)")
    table_or_note(data.frame("shelf_restock_plan").sort_values("updated_ts", ascending=False),
                  "No restock plan yet.")


def alerts_view(data: core.Snapshot) -> None:
    inventory, alerts = data.frame("store_inventory"), data.frame("alerts")
    if alerts.empty:
        st.info("No alerts yet.")
        return
    active_only = st.checkbox("Active only", key="alerts_active_only")
    shown = core.active_alerts(alerts, data.reference_time()) if active_only else alerts
    location_col, severity_col, type_col, category_col = st.columns(4)
    filters = {
        "location": location_col.multiselect("Location", sorted(alerts["location"].unique()), key="alerts_location"),
        "severity": severity_col.multiselect("Severity", [s for s in core.SEVERITIES if s != "none"],
                                             key="alerts_severity"),
        "alert_type": type_col.multiselect("Type", sorted(alerts["alert_type"].unique()), key="alerts_type"),
        "item_category": category_col.multiselect("Category", sorted(inventory["item_category"].unique()),
                                                  key="alerts_category"),
    }
    selected = core.select_rows(core.alerts_with_items(shown, inventory), filters).sort_values("ts", ascending=False)
    st.caption(f"From the newest {core.MAX_ALERT_ROWS} alerts.")
    table_or_note(selected, "No alerts match the filters.")


def pulse(data: core.Snapshot) -> None:
    now = data.reference_time()
    windows, alerts = data.frame("pulse_windows"), data.frame("alerts")
    st.subheader(core.PULSE_HEADING)
    if windows.empty:
        st.info(core.NO_PULSE)
    else:
        pulse_metrics(core.pulse_kpis(windows, now), core.pulse_alerts_today(alerts, now))
        st.subheader(f"Units sold per minute by category, last {core.PULSE_HOURS} simulated hours")
        series = core.category_series(windows)
        if series.empty:
            st.info("No units sold yet.")
        else:
            st.line_chart(series)
            st.subheader("Units sold per simulated hour by category, today")
            st.caption(f"From the newest {core.MAX_PULSE_ROWS} windows: the first hour may be partial.")
            st.plotly_chart(core.heatmap_figure(core.hour_category_heatmap(windows)), key="pulse_heatmap")
    st.subheader("Anomalies and shrinkage (newest)")
    table_or_note(core.anomaly_list(alerts), "No anomaly or shrinkage alert yet.")


def pulse_metrics(kpis: core.PulseKpis | None, alerts_today: dict[str, int]) -> None:
    entries_col, exits_col, units_col, revenue_col, anomalies_col, shrinkage_col = st.columns(6)
    entries_col.metric(core.ENTRIES_5_MIN, "–" if kpis is None else f"{kpis.entries:.0f}")
    exits_col.metric(core.EXITS_5_MIN, "–" if kpis is None else f"{kpis.exits:.0f}")
    units_col.metric(core.UNITS_SOLD_5_MIN, "–" if kpis is None else f"{kpis.units_sold:.0f}")
    revenue_col.metric(core.REVENUE_5_MIN, "–" if kpis is None else f"{kpis.revenue:,.2f}")
    anomalies_col.metric(core.ANOMALIES_TODAY, alerts_today["anomaly"])
    shrinkage_col.metric(core.SHRINKAGE_TODAY, alerts_today["shrinkage"])
    st.caption("No 5-minute window has ended yet." if kpis is None else
               f"5 min: the newest 5-minute window that has ended, {kpis.window_start:%H:%M}–{kpis.window_end:%H:%M} "
               f"simulated; alerts today: of the newest {core.MAX_ALERT_ROWS} alerts.")


def debug_config(data: core.Snapshot) -> None:
    st.subheader("Settings in force (passwords not shown)")
    st.dataframe(core.settings_in_force(get_settings()), hide_index=True)
    st.subheader("Dashboard")
    st.dataframe(pd.DataFrame({
        "setting": ["refresh (s)", "cache ttl (s)", "active alert window (simulated min)",
                    "activity window (simulated min)", "layout file"],
        "value": [str(REFRESH_SECONDS), str(CACHE_TTL_SECONDS), str(core.ACTIVE_ALERT_MINUTES),
                  str(core.ACTIVITY_MINUTES), str(LAYOUT_FILE)],
    }), hide_index=True)
    st.subheader("Shelf policies")
    table_or_note(data.frame("shelf_policies"), "No shelf policies loaded.")
    st.subheader("Warehouse policies")
    table_or_note(data.frame("wh_policies"), "No warehouse policies loaded.")
    st.subheader("Dead letters (newest)")
    table_or_note(data.frame("dead_letters"), "No dead letters.")


def ml(data: core.Snapshot) -> None:
    models = data.frame("ml_models")
    if models.empty:
        st.info("No model yet: analytics.ml_models is empty.")
        return
    active = models[models["is_active"].astype(bool)]
    if not active.empty:
        newest = active.sort_values("trained_ts").iloc[-1]
        name_col, metric_col = st.columns(2)
        name_col.metric("Active model", f"{newest['model_name']} v{newest['model_version']}")
        metric_col.metric(str(newest["metric_name"]), f"{newest['metric_value']:.3f}")
    st.subheader("Held-out error against the baselines (MAE; lower is better)")
    st.dataframe(core.model_errors(models), hide_index=True)
    st.subheader("Forecast vs sold, next 7 days, all shelves")
    table_or_note(core.predicted_vs_actual(data.frame("ml_predictions_log"), data.frame("shelf_daily_features")),
                  "No forecast yet: the inference service forecasts daily at RUN_HOUR.")
    st.subheader("The forecast's supplier plans")
    table_or_note(core.forecast_plans(data.frame("wh_supplier_plan")), "No forecast plan yet.")


def chain(data: core.Snapshot, store_ids: Sequence[str]) -> None:
    tiles = core.chain_tiles(store_ids, data.frame("shelf_state"), data.frame("alerts"),
                             data.frame("pos_transactions"), data.now)
    when = f"at {data.now:%Y-%m-%d %H:%M} simulated" if data.now else f"{NO_CLOCK} (alerts and sales need its now)"
    st.caption(f"Each running store, {when}. Worst active alert: the most severe of the store's active alerts (the "
               f"latest per shelf or pulse metric and alert type raised in the last {core.ACTIVE_ALERT_MINUTES} "
               f"simulated minutes). Stock-outs: shelves with no unit left. Sales today: the till totals of the "
               f"simulated day so far.")
    for first in range(0, len(tiles), TILES_PER_ROW):
        for column, tile in zip(st.columns(TILES_PER_ROW), tiles[first:first + TILES_PER_ROW]):
            store_tile(column.container(border=True), tile)


def store_tile(box: DeltaGenerator, tile: core.StoreTile) -> None:
    box.subheader(tile.store_id)
    box.metric("Worst active alert", tile.worst_severity)
    box.caption(tile.worst_alert or "no active alert")
    box.metric("Stock-outs", tile.stock_outs)
    box.metric("Sales today", "–" if tile.sales_today is None else f"{tile.sales_today:,.2f}")


VIEWS = dict(zip(core.VIEW_TABLES, (map_live, states, supplier_plan, alerts_view, pulse, debug_config, ml),
                 strict=True))


def read(snapshot_of: Callable[[], core.Snapshot]) -> core.Snapshot | None:
    """The snapshot, or None with one error line on the page when a data source is down."""
    try:
        return snapshot_of()
    except core.DataUnavailable as exc:
        st.error(f"Data source unavailable: {exc}")
        return None


def show(name: str, store_id: str) -> None:
    data = read(lambda: snapshot(name, store_id))
    if data is None:
        return
    if not data.has_store:
        st.info("No data yet: the store is not loaded. Start the stack (`make up`) or a run (`smartshelf sim`).")
        return
    VIEWS[name](data)


def show_chain(store_ids: list[str]) -> None:
    data = read(lambda: chain_snapshot(tuple(store_ids)))
    if data is not None:
        chain(data, store_ids)


def picked_store(store_ids: list[str]) -> str:
    """The store the views show: with a chain, picked in the sidebar (the first by default); else the one store."""
    if len(store_ids) == 1:
        return store_ids[0]
    picked = st.sidebar.selectbox("Store", store_ids, key=STORE_PICKER)
    assert picked is not None  # a selectbox with options and no index given always has one picked
    return picked


def main() -> None:
    st.set_page_config(page_title="Smart Shelf", layout="wide")
    st_autorefresh(interval=REFRESH_SECONDS * 1000, key="refresh")
    st.title("Smart Shelf")
    store_ids = get_settings().running_stores
    store_id = picked_store(store_ids)
    views = [*VIEWS, core.CHAIN_VIEW] if len(store_ids) > 1 else list(VIEWS)
    # lazy tabs: a refresh reads and draws the open view only (the other views' tables are not read)
    for tab, name in zip(st.tabs(views, key="view", on_change="rerun"), views, strict=True):
        if tab.open:
            with tab:
                if name == core.CHAIN_VIEW:
                    show_chain(store_ids)
                else:
                    show(name, store_id)


main()
