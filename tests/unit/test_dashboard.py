"""The dashboard's core (smartshelf.dashboard), pure: the floor plan, active alerts (those naming no shelf too),
zone colours and activity, filters, supplier orders, the store's pulse, a chain's store tiles, the settings shown
and the figures; and what it reads: the shelf events' Delta table (local files), and the queries and keys of a
store's and of a chain's read (PostgreSQL and Redis faked)."""

from __future__ import annotations

from contextlib import nullcontext
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from psycopg2 import sql
from pydantic import ValidationError

from smartshelf import dashboard as d
from smartshelf.adapters import delta
from smartshelf.apps.producers import WORLD_STATE_KEY
from smartshelf.clock import SIM_NOW, encode_time
from smartshelf.datagen import CATEGORIES
from smartshelf.registry import table
from smartshelf.schemas import ShelfEvent
from smartshelf.settings import REPO_ROOT, Settings

LAYOUT = REPO_ROOT / "dashboard" / "store_layout.yaml"
NOW = datetime(2025, 1, 1, 14, 0)


def alert(shelf_id: str, alert_type: str, minutes_ago: float, severity: str = "warning",
          location: str = "store") -> dict[str, object]:
    ts = NOW - timedelta(minutes=minutes_ago)
    return {"alert_id": f"{alert_type}-{shelf_id}-{ts:%H%M}", "alert_type": alert_type, "location": location,
            "severity": severity, "shelf_id": shelf_id, "batch_code": None, "message": "m", "value": None,
            "threshold": None, "ts": ts}


def anomaly(metric: str, subject: str, minutes_ago: float, severity: str = "warning",
            alert_type: str = "anomaly", shelf_id: str | None = None) -> dict[str, object]:
    """An alert of the pulse app: an anomaly names a metric and its subject, no shelf; shrinkage names a shelf."""
    ts = NOW - timedelta(minutes=minutes_ago)
    return {"alert_id": f"{alert_type}-{metric}-{subject}-{ts:%H%M}", "alert_type": alert_type, "location": "store",
            "severity": severity, "shelf_id": shelf_id, "metric": metric, "subject": subject, "batch_code": None,
            "message": f"{metric} of {subject}", "value": 40.0, "threshold": 12.5, "ts": ts}


def alerts(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=d.columns_of("alerts"))


INVENTORY = pd.DataFrame({
    "shelf_id": ["S1", "S2", "S3", "S4"], "aisle": [26, 26, 24, 25],
    "item_category": ["REFRIGERATED", "REFRIGERATED", "BREAD AND BREADSTICKS", "FRUITS AND VEGETABLES"], "item_subcategory": ["Milk", "Butter", "Bread", "Citrus"],
})


# --- the floor plan ---------------------------------------------------------------------------------
def test_the_store_layout_has_one_zone_per_category_and_no_overlap() -> None:
    zones = d.load_layout(LAYOUT)
    assert d.missing_categories(zones, [c.name for c in CATEGORIES]) == []
    assert sorted(z.category for z in zones) == sorted(c.name for c in CATEGORIES)
    assert d.overlapping_zones(zones) == []


def write_layout(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "layout.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("zone, problem", [
    ("{category: A, x0: 0.5, y0: 0.1, x1: 0.4, y1: 0.2}", "x0 < x1"),
    ("{category: A, x0: 0.1, y0: 0.3, x1: 0.4, y1: 0.3}", "y0 < y1"),
    ("{category: A, x0: 0.1, y0: 0.1, x1: 1.2, y1: 0.2}", "less than or equal to 1"),
    ("{category: A, x0: -0.1, y0: 0.1, x1: 0.2, y1: 0.2}", "greater than or equal to 0"),
])
def test_a_zone_outside_the_unit_square_or_without_area_is_rejected(tmp_path: Path, zone: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        d.load_layout(write_layout(tmp_path, f"zones:\n  - {zone}\n"))


def test_overlapping_or_duplicate_zones_are_rejected_touching_ones_are_not(tmp_path: Path) -> None:
    touching = ("zones:\n  - {category: A, x0: 0, y0: 0, x1: 0.5, y1: 0.5}\n"
                "  - {category: B, x0: 0.5, y0: 0, x1: 1, y1: 0.5}\n")
    assert [z.category for z in d.load_layout(write_layout(tmp_path, touching))] == ["A", "B"]
    overlapping = touching.replace("x0: 0.5, y0: 0", "x0: 0.4, y0: 0.4")
    with pytest.raises(ValidationError, match="zones overlap: A / B"):
        d.load_layout(write_layout(tmp_path, overlapping))
    with pytest.raises(ValidationError, match="more than one zone for A"):
        d.load_layout(write_layout(tmp_path, touching.replace("category: B", "category: A")))


def test_a_category_the_layout_lacks_gets_a_zone_of_its_own_and_nothing_overlaps() -> None:
    zones = d.load_layout(LAYOUT)
    assert d.plan_zones(zones, [c.name for c in CATEGORIES]) == zones  # nothing to add
    new = [f"GARDEN {n}" for n in range(7)]  # two rows of new zones
    plan = d.plan_zones(zones, [c.name for c in CATEGORIES] + new + new[:1])
    assert [z.category for z in plan] == [z.category for z in zones] + sorted(new)
    assert d.overlapping_zones(plan) == []
    assert all(0 <= z.x0 < z.x1 <= 1 and 0 <= z.y0 < z.y1 <= 1 for z in plan)
    d.StoreLayout(zones=plan)  # a valid plan: one zone per category, no overlap
    front = max(z.y1 for z in plan if z.category in new)
    assert all(z.y0 >= front for z in plan if z.category not in new)  # the layout moved back to make room


def test_missing_categories_are_named() -> None:
    zones = [d.Zone(category="REFRIGERATED", x0=0, y0=0, x1=0.1, y1=0.1)]
    assert d.missing_categories(zones, ["REFRIGERATED", "FISH", "MEAT"]) == ["FISH", "MEAT"]


# --- active alerts and zones ------------------------------------------------------------------------
def test_active_alerts_are_the_latest_per_shelf_and_type_within_the_window() -> None:
    frame = alerts(alert("S1", "low_stock", 30), alert("S1", "low_stock", 10),  # the later one stays
                   alert("S1", "out_of_stock", 5, "critical"),
                   alert("S2", "low_stock", d.ACTIVE_ALERT_MINUTES + 1),  # too old
                   alert("S3", "low_stock", -5))  # after now: not raised yet at this clock time
    active = d.active_alerts(frame, NOW)
    assert list(zip(active["shelf_id"], active["alert_type"], active["ts"])) == [
        ("S1", "out_of_stock", NOW - timedelta(minutes=5)), ("S1", "low_stock", NOW - timedelta(minutes=10))]
    assert d.active_alerts(frame, None).empty


def test_a_zone_takes_its_worst_active_store_alert() -> None:
    frame = alerts(alert("S1", "low_stock", 10, "warning"), alert("S2", "out_of_stock", 20, "critical"),
                   alert("S3", "wh_out_of_stock", 5, "critical", location="warehouse"),  # warehouse: not on the map
                   alert("S4", "near_expiry", 5, "info"))
    assert d.zone_status(frame, INVENTORY, NOW) == {"REFRIGERATED": "critical", "BREAD AND BREADSTICKS": "none", "FRUITS AND VEGETABLES": "info"}
    assert d.zone_status(alerts(), INVENTORY, NOW) == {"REFRIGERATED": "none", "BREAD AND BREADSTICKS": "none", "FRUITS AND VEGETABLES": "none"}


def test_alerts_that_name_no_shelf_are_active_per_metric_and_subject_and_colour_no_zone() -> None:
    frame = alerts(alert("S1", "low_stock", 10, "warning"),
                   anomaly("units_sold", "FISH", 30), anomaly("units_sold", "FISH", 20, "critical"),  # the later stays
                   anomaly("units_sold", "REFRIGERATED", 25, "critical"), anomaly("entries", "store", 5, "info"))
    active = d.active_alerts(frame, NOW)
    assert [(a.metric, a.subject, a.severity) for a in active.itertuples() if a.shelf_id is None] == [
        ("entries", "store", "info"), ("units_sold", "FISH", "critical"), ("units_sold", "REFRIGERATED", "critical")]
    assert len(active) == 4 and d.active_counts(frame, NOW) == {"store": 4, "warehouse": 0}
    # the critical REFRIGERATED anomaly names no shelf: the zone keeps its shelf alert's colour
    assert d.zone_status(frame, INVENTORY, NOW) == {"REFRIGERATED": "warning", "BREAD AND BREADSTICKS": "none",
                                                    "FRUITS AND VEGETABLES": "none"}
    only_anomalies = alerts(anomaly("units_sold", "FISH", 20))
    assert d.zone_status(only_anomalies, INVENTORY, NOW)["REFRIGERATED"] == "none"


def test_alerts_that_name_no_shelf_join_the_items_and_take_the_category_they_measure() -> None:
    frame = alerts(alert("S3", "low_stock", 10), anomaly("units_sold", "REFRIGERATED", 5),
                   anomaly("entries", "store", 5), anomaly("units_taken", "S4", 5, alert_type="shrinkage",
                                                           shelf_id="S4"))
    joined = d.with_items(frame, INVENTORY)
    assert list(joined["item_category"].fillna("-")) == ["BREAD AND BREADSTICKS", "-", "-", "FRUITS AND VEGETABLES"]
    listed = d.alerts_with_items(frame, INVENTORY)
    assert list(listed["item_category"].fillna("-")) == ["BREAD AND BREADSTICKS", "REFRIGERATED", "-",
                                                         "FRUITS AND VEGETABLES"]
    assert list(d.select_rows(listed, {"item_category": ["REFRIGERATED"]})["alert_type"]) == ["anomaly"]
    assert list(d.select_rows(listed, {"alert_type": ["anomaly"]})["subject"]) == ["REFRIGERATED", "store"]
    no_shelf = frame[frame["shelf_id"].isna()].astype({"shelf_id": float})  # all NaN: a float column
    assert list(d.with_items(no_shelf, INVENTORY)["subject"]) == ["REFRIGERATED", "store"]
    assert d.alerts_with_items(alerts(), INVENTORY).empty


def test_active_alerts_are_counted_per_location() -> None:
    frame = alerts(alert("S1", "low_stock", 10), alert("S1", "wh_reorder", 10, location="warehouse"),
                   alert("S2", "wh_reorder", 500, location="warehouse"))
    assert d.active_counts(frame, NOW) == {"store": 1, "warehouse": 1}


def test_weight_changes_are_counted_per_category() -> None:
    events = pd.DataFrame({"shelf_id": ["S1", "S2", "S3", "S3"],
                           "event_type": ["weight_change", "weight_change", "pickup", "weight_change"]})
    assert d.zone_activity(events, INVENTORY) == {"REFRIGERATED": 2, "BREAD AND BREADSTICKS": 1}
    assert d.zone_activity(d.empty_frame("raw_shelf_events"), INVENTORY) == {}


def test_items_join_and_filters() -> None:
    state = pd.DataFrame({"shelf_id": ["S1", "S3", "S4"], "current_stock": [5, 0, 7]})
    joined = d.with_items(state, INVENTORY)
    assert list(joined.columns) == ["shelf_id", "aisle", "item_category", "item_subcategory", "current_stock"]
    assert list(d.select_rows(joined, {"item_category": []})["shelf_id"]) == ["S1", "S3", "S4"]
    assert list(d.select_rows(joined, {"item_category": ["REFRIGERATED", "FRUITS AND VEGETABLES"]})["shelf_id"]) == ["S1", "S4"]
    assert list(d.select_rows(joined, {"item_category": ["REFRIGERATED", "FRUITS AND VEGETABLES"], "item_subcategory": ["Citrus"]})
                ["shelf_id"]) == ["S4"]
    assert list(d.select_rows(joined, {"shelf_id": ["S3"]})["current_stock"]) == [0]


def test_a_zone_lists_all_its_shelves_with_live_stock_where_known() -> None:
    inventory = INVENTORY.assign(maximum_stock=[10, 20, 30, 40])
    state = pd.DataFrame({"shelf_id": ["S2", "S3"], "current_stock": [4, 9], "current_weight": [1.0, 2.0],
                          "last_event_type": ["pickup", "pickup"], "last_event_ts": [NOW, NOW]})
    shelves = d.zone_shelves(inventory, state, "REFRIGERATED")
    assert list(shelves["shelf_id"]) == ["S1", "S2"] and list(shelves["maximum_stock"]) == [10, 20]
    assert pd.isna(shelves.loc[0, "current_stock"]) and shelves.loc[1, "current_stock"] == 4


def test_a_zone_shows_its_shelves_riskiest_first_and_the_map_its_highest_risk() -> None:
    inventory = INVENTORY.assign(maximum_stock=[10, 20, 30, 40])
    state = pd.DataFrame({"shelf_id": ["S1", "S2"], "current_stock": [4, 9], "current_weight": [1.0, 2.0],
                          "last_event_type": ["pickup", "pickup"], "last_event_ts": [NOW, NOW]})
    risk = pd.DataFrame({"shelf_id": ["S1", "S2", "S4"], "restock_risk": [0.1, 0.7, 0.4], "model_version": [1] * 3,
                         "scored_ts": [NOW] * 3})
    shelves = d.zone_shelves(inventory, state, "REFRIGERATED", risk)
    assert list(shelves["shelf_id"]) == ["S2", "S1"] and list(shelves["restock_risk"]) == [0.7, 0.1]
    assert "restock_risk" not in d.zone_shelves(inventory, state, "REFRIGERATED", d.empty_frame("shelf_risk"))
    assert d.zone_risk(risk, inventory) == {"REFRIGERATED": 0.7, "FRUITS AND VEGETABLES": 0.4}
    assert d.zone_risk(d.empty_frame("shelf_risk"), inventory) == {}
    figure = d.layout_figure(d.load_layout(LAYOUT), {}, {}, {"REFRIGERATED": 0.7})
    texts = {a.text.split("<br>")[0]: a.text for a in figure.layout.annotations}
    assert texts["<b>REFRIGERATED</b>"].endswith("risk ≤ 70%") and "risk" not in texts["<b>FISH</b>"]


def test_the_worst_severity_wins() -> None:
    assert d.worst(["info", "critical", "warning"]) == "critical"
    assert d.worst([]) == "none"


# --- supplier orders --------------------------------------------------------------------------------
def order(order_id: str, due_hours: float, status: str) -> dict[str, object]:
    return {"order_id": order_id, "plan_id": f"p-{order_id}", "shelf_id": "S1", "batches": 1, "quantity": 12,
            "ordered_ts": NOW - timedelta(hours=1), "expected_delivery_ts": NOW + timedelta(hours=due_hours),
            "status": status}


def test_open_orders_are_those_not_received_soonest_first() -> None:
    orders = pd.DataFrame([order("o1", 30, "open"), order("o2", 5, "open"), order("o1", 30, "received"),
                           order("o3", 100, "open")], columns=d.columns_of("wh_supplier_orders"))
    assert list(d.latest_orders(orders).sort_values("order_id")["status"]) == ["received", "open", "open"]
    assert list(d.open_orders(orders)["order_id"]) == ["o2", "o3"]
    assert list(d.next_deliveries(orders, NOW, days=2)["order_id"]) == ["o2"]
    assert list(d.next_deliveries(orders, None)["order_id"]) == ["o2", "o3"]
    assert d.open_orders(d.empty_frame("wh_supplier_orders")).empty


# --- snapshot, settings, figure ---------------------------------------------------------------------
def test_a_snapshot_gives_missing_tables_empty_with_their_columns_and_falls_back_to_the_newest_alert() -> None:
    snapshot = d.Snapshot(now=None, people_in_store=None, frames={"alerts": alerts(alert("S1", "low_stock", 3))})
    assert list(snapshot.frame("shelf_state").columns) == ["store_id", "shelf_id", "current_stock", "current_weight",
                                                           "last_event_type", "last_event_ts"]
    assert not snapshot.has_store
    assert snapshot.reference_time() == NOW - timedelta(minutes=3)
    assert d.Snapshot(now=NOW, people_in_store=0).reference_time() == NOW


def test_the_settings_shown_leave_passwords_out() -> None:
    settings = Settings(_env_file=None, POSTGRES_READER_PASSWORD="s3cret")  # type: ignore[call-arg]
    shown = d.settings_in_force(settings)
    assert "POSTGRES_READER_USER" in set(shown["setting"]) and "TIME_MULTIPLIER" in set(shown["setting"])
    assert not any("PASSWORD" in name for name in shown["setting"])
    assert "s3cret" not in shown.to_string() and "bdt_password" not in shown.to_string()


def test_the_map_draws_every_zone_in_its_colour_and_marks_activity() -> None:
    zones = d.load_layout(LAYOUT)
    figure = d.layout_figure(zones, {"REFRIGERATED": "critical", "FRUITS AND VEGETABLES": "warning"}, {"REFRIGERATED": 3})
    shapes = {shape.name: shape for shape in figure.layout.shapes}
    assert len(shapes) == len(zones)
    assert shapes["REFRIGERATED"].fillcolor == d.SEVERITY_COLOURS["critical"] and shapes["REFRIGERATED"].line.width == 4
    assert shapes["FRUITS AND VEGETABLES"].fillcolor == d.SEVERITY_COLOURS["warning"] and shapes["FRUITS AND VEGETABLES"].line.width == 1
    assert shapes["FISH"].fillcolor == d.SEVERITY_COLOURS["none"]
    assert (shapes["REFRIGERATED"].x0, shapes["REFRIGERATED"].y1) == next((z.x0, z.y1) for z in zones if z.category == "REFRIGERATED")


# --- Delta reads (local files) ----------------------------------------------------------------------
def test_weight_changes_are_read_from_delta_filtered_by_store_type_and_time(tmp_path: Path) -> None:
    assert d.weight_changes_since(tmp_path, NOW, "store-001").empty  # no table yet
    events = [ShelfEvent(event_id=f"e-{store_id}-{kind}-{minutes}", event_type=kind,  # type: ignore[arg-type]
                         store_id=store_id, shelf_id="S1", quantity=1, weight_change=-0.5, customer_id="c1",
                         ts=NOW - timedelta(minutes=minutes))
              for store_id, kind, minutes in (("store-001", "weight_change", 90), ("store-001", "weight_change", 30),
                                              ("store-001", "pickup", 30), ("store-002", "weight_change", 30))]
    path = delta.table_path(tmp_path, table(d.SHELF_EVENTS))
    path.mkdir(parents=True)
    delta.overwrite(path, delta.to_arrow(ShelfEvent, events))
    recent = d.weight_changes_since(tmp_path, NOW - timedelta(minutes=60), "store-001")
    assert list(recent["event_id"]) == ["e-store-001-weight_change-30"]
    assert list(recent.columns) == d.columns_of(d.SHELF_EVENTS)


def test_every_view_reads_only_tables_the_live_source_reads_and_the_store() -> None:
    readable = {*d.PG_TABLES, d.SHELF_EVENTS}
    for view, tables in d.VIEW_TABLES.items():
        assert set(tables) <= readable, view
        assert "store_inventory" in tables, view  # whether a store is loaded at all


# --- the ML tab ----------------------------------------------------------------------------------------
def test_forecasts_are_summed_per_day_next_to_what_was_sold_once_known() -> None:
    day1, day2 = date(2025, 1, 5), date(2025, 1, 6)

    def prediction(version: int, shelf: str, day: date, units: float) -> dict[str, object]:
        return {"model_name": "m", "model_version": version, "shelf_id": shelf, "feature_date": day,
                "predicted_sales_next_7d": units}

    predictions = pd.DataFrame([prediction(1, "S1", day1, 5.0), prediction(2, "S1", day1, 7.0),  # retrained: v2
                                prediction(2, "S2", day1, 3.0), prediction(2, "S1", day2, 4.0)])
    features = pd.DataFrame([{"shelf_id": "S1", "feature_date": day1, "sales_next_7d": 6},
                             {"shelf_id": "S2", "feature_date": day1, "sales_next_7d": 2},
                             {"shelf_id": "S1", "feature_date": day2, "sales_next_7d": None}])
    table = d.predicted_vs_actual(predictions, features)
    assert list(table["feature_date"]) == [day1, day2]
    assert list(table["predicted_units"]) == [10.0, 4.0]
    assert table["actual_units"].iloc[0] == 8 and pd.isna(table["actual_units"].iloc[1])


def test_only_the_forecasts_plans_are_listed_newest_first() -> None:
    plans = pd.DataFrame([
        {"plan_id": "sp-S1-20250105060000", "shelf_id": "S1", "created_ts": NOW},
        {"plan_id": "ml-S2-20250105", "shelf_id": "S2", "created_ts": NOW - timedelta(days=1)},
        {"plan_id": "ml-S1-20250106", "shelf_id": "S1", "created_ts": NOW}])
    assert list(d.forecast_plans(plans)["plan_id"]) == ["ml-S1-20250106", "ml-S2-20250105"]


# --- the Pulse tab -------------------------------------------------------------------------------------
def window(width: int, metric: str, subject: str, start: datetime, value: float, **extra: object) -> dict[str, object]:
    return {"width_minutes": width, "metric": metric, "subject": subject, "window_start": start,
            "window_end": start + timedelta(minutes=width), "value": value, "events": int(value), **extra}


def windows(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=d.columns_of("pulse_windows"))


def test_the_pulse_is_read_newest_first_and_bounded_to_its_hours_of_windows() -> None:
    # both widths: the store's entries, exits, units sold; each category's units sold, revenue, weight changes
    per_minute = 2 * (3 + 3 * len(CATEGORIES))
    assert d.MAX_PULSE_ROWS == d.PULSE_HOURS * 60 * per_minute
    assert d.PG_TABLES["pulse_windows"] == d.MAX_PULSE_ROWS and d.NEWEST_BY["pulse_windows"] == "window_start"
    for name, limit in d.PG_TABLES.items():  # every capped table says which newest rows it keeps
        assert limit is None or d.NEWEST_BY[name] in d.columns_of(name), name
    assert d.VIEW_TABLES[d.PULSE_VIEW] == ("store_inventory", "pulse_windows", "alerts")


def test_the_pulse_kpis_are_the_newest_ended_5_minute_window_of_the_store() -> None:
    ended, older = NOW - timedelta(minutes=5), NOW - timedelta(minutes=6)
    frame = windows(
        window(5, "entries", "store", ended, 12), window(5, "exits", "store", ended, 9),
        window(5, "units_sold", "store", ended, 10, expected=8.0, z_score=0.5),
        window(5, "units_sold", "FISH", ended, 4), window(5, "units_sold", "MEAT", ended, 6),
        window(5, "revenue", "FISH", ended, 20.5), window(5, "revenue", "MEAT", ended, 30.25),
        window(5, "entries", "store", older, 99), window(5, "exits", "store", older, 7),  # older
        window(5, "entries", "store", NOW - timedelta(minutes=2), 50),  # ends after now: still open
        window(1, "entries", "store", NOW - timedelta(minutes=1), 70))  # a 1-minute window
    kpis = d.pulse_kpis(frame, NOW)
    assert kpis == d.PulseKpis(window_start=ended, window_end=NOW, entries=12, exits=9, units_sold=10, revenue=50.75)
    # at 13:59 the newest ended window is the older one, which sold nothing
    assert d.pulse_kpis(frame, NOW - timedelta(minutes=1)) == d.PulseKpis(
        window_start=older, window_end=NOW - timedelta(minutes=1), entries=99, exits=7, units_sold=0, revenue=0)
    assert d.pulse_kpis(frame, None) is not None and d.pulse_kpis(frame, None).entries == 50  # type: ignore[union-attr]
    assert d.pulse_kpis(frame, NOW - timedelta(minutes=10)) is None  # none has ended yet
    assert d.pulse_kpis(windows(), NOW) is None


def test_anomaly_and_shrinkage_alerts_are_counted_for_the_simulated_day() -> None:
    frame = alerts(anomaly("entries", "store", 5), anomaly("units_sold", "FISH", 60 * 13),
                   anomaly("units_sold", "FISH", 60 * 15),  # yesterday
                   anomaly("units_taken", "S1", -5, alert_type="shrinkage", shelf_id="S1"),  # after now
                   anomaly("units_taken", "S2", 30, alert_type="shrinkage", shelf_id="S2"),
                   alert("S1", "low_stock", 10))
    assert d.pulse_alerts_today(frame, NOW) == {"anomaly": 2, "shrinkage": 1}
    assert d.pulse_alerts_today(frame, None) == {"anomaly": 0, "shrinkage": 0}
    assert d.pulse_alerts_today(alerts(), NOW) == {"anomaly": 0, "shrinkage": 0}


def test_units_sold_per_minute_has_a_column_per_category_and_every_minute() -> None:
    minute = NOW - timedelta(minutes=3)
    frame = windows(window(1, "units_sold", "MEAT", minute, 2), window(1, "units_sold", "FISH", minute, 1),
                    window(1, "units_sold", "store", minute, 3),  # the store's total is no category
                    window(1, "units_sold", "FISH", minute + timedelta(minutes=2), 4),  # none sold in between
                    window(1, "revenue", "FISH", minute, 9.5), window(5, "units_sold", "FISH", minute, 5),
                    window(1, "units_sold", "FISH", minute - timedelta(hours=d.PULSE_HOURS), 8))  # too old
    series = d.category_series(frame)
    assert list(series.columns) == ["FISH", "MEAT"]
    assert list(series.index) == [minute, minute + timedelta(minutes=1), minute + timedelta(minutes=2)]
    assert series["FISH"].tolist() == [1, 0, 4] and series["MEAT"].tolist() == [2, 0, 0]
    assert len(d.category_series(frame, hours=4)) == d.PULSE_HOURS * 60 + 3
    assert d.category_series(windows()).empty
    assert d.category_series(windows(window(5, "units_sold", "FISH", minute, 5))).empty


def test_units_sold_are_summed_per_hour_of_the_day_and_category() -> None:
    frame = windows(window(1, "units_sold", "FISH", NOW - timedelta(minutes=1), 3),  # 13:59
                    window(1, "units_sold", "FISH", NOW - timedelta(minutes=2), 2),
                    window(1, "units_sold", "MEAT", NOW - timedelta(hours=2), 5),  # 12:00
                    window(1, "units_sold", "FISH", NOW + timedelta(minutes=1), 1),  # 14:01, the newest window
                    window(1, "units_sold", "MEAT", NOW - timedelta(days=1), 100),  # yesterday at 14:00: left out
                    window(1, "entries", "store", NOW, 40))
    heatmap = d.hour_category_heatmap(frame)
    assert list(heatmap.index) == [12, 13, 14] and list(heatmap.columns) == ["FISH", "MEAT"]
    assert heatmap["FISH"].tolist() == [0, 5, 1] and heatmap["MEAT"].tolist() == [5, 0, 0]
    figure = d.heatmap_figure(heatmap)
    assert list(figure.data[0].x) == ["12:00", "13:00", "14:00"] and list(figure.data[0].y) == ["FISH", "MEAT"]
    assert figure.data[0].z.tolist() == [[0, 5, 1], [5, 0, 0]]
    assert d.hour_category_heatmap(windows()).empty


def test_the_anomaly_list_shows_the_newest_anomalies_and_shrinkage_with_what_they_are_about() -> None:
    frame = alerts(anomaly("units_sold", "FISH", 20, "critical"), alert("S1", "low_stock", 1),
                   anomaly("units_taken", "S2", 10, alert_type="shrinkage", shelf_id="S2"),
                   anomaly("entries", "store", 30, "info"))
    shown = d.anomaly_list(frame)
    assert list(shown.columns) == ["time", "type", "severity", "about", "observed", "expected / threshold",
                                   "message"]
    assert list(shown["about"]) == ["shelf S2", "units_sold · FISH", "entries · store"]
    assert list(shown["type"]) == ["shrinkage", "anomaly", "anomaly"]
    assert shown.loc[1, "observed"] == 40 and shown.loc[1, "expected / threshold"] == 12.5
    assert list(d.anomaly_list(frame, rows=1)["about"]) == ["shelf S2"]
    assert d.anomaly_list(alerts()).empty and list(d.anomaly_list(alerts()).columns) == list(shown.columns)


# --- the Chain view ------------------------------------------------------------------------------------
STORE_A, STORE_B, STORE_C = "store-001", "store-002", "store-003"


def of_store(store_id: str, row: dict[str, object]) -> dict[str, object]:
    return {**row, "store_id": store_id}


def transaction(store_id: str, number: int, ts: datetime, total: float) -> dict[str, object]:
    return {"store_id": store_id, "transaction_id": f"t{number}", "customer_id": "c1", "ts": ts, "item_count": 1,
            "total": total}


def chain_frames() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Two stores' shelf state, alerts and transactions (a third store has none)."""
    shelf_state = pd.DataFrame([{"store_id": store_id, "shelf_id": shelf_id, "current_stock": stock}
                                for store_id, shelf_id, stock in ((STORE_A, "S1", 0), (STORE_A, "S2", 0),
                                                                  (STORE_A, "S3", 5), (STORE_B, "S1", 0),
                                                                  (STORE_B, "S2", 3))])
    frame = alerts(
        of_store(STORE_A, alert("S1", "low_stock", 10, "warning")),
        of_store(STORE_A, alert("S2", "out_of_stock", 30, "critical")),
        of_store(STORE_A, alert("S3", "out_of_stock", 20, "critical")),  # as severe as S2's and newer: the worst
        of_store(STORE_B, alert("S3", "out_of_stock", 5, "info")),  # same shelf and type, another store: both count
        of_store(STORE_B, anomaly("units_sold", "FISH", 8, "warning")),
        of_store(STORE_B, alert("S1", "out_of_stock", d.ACTIVE_ALERT_MINUTES + 1, "critical")))  # no longer active
    today = NOW.replace(hour=0)
    transactions = pd.DataFrame(
        [transaction(STORE_A, 1, today + timedelta(hours=10), 12.5), transaction(STORE_A, 2, NOW, 7.5),
         transaction(STORE_A, 3, today - timedelta(hours=1), 100.0),  # yesterday
         transaction(STORE_A, 4, NOW + timedelta(minutes=1), 50.0),  # after now
         transaction(STORE_B, 1, today + timedelta(hours=9), 3.25)], columns=d.columns_of("pos_transactions"))
    return shelf_state, frame, transactions


def test_a_chain_tile_per_store_shows_its_worst_active_alert_stock_outs_and_sales_today() -> None:
    tiles = d.chain_tiles([STORE_A, STORE_B, STORE_C], *chain_frames(), NOW)
    assert tiles == [
        d.StoreTile(STORE_A, "critical", "out_of_stock · shelf S3", stock_outs=2, sales_today=20.0),
        d.StoreTile(STORE_B, "warning", "anomaly · units_sold · FISH", stock_outs=1, sales_today=3.25),
        d.StoreTile(STORE_C, "none", None, stock_outs=0, sales_today=0.0)]


def test_without_a_clock_a_chain_tile_shows_its_stock_outs_only() -> None:
    shelf_state, _, _ = chain_frames()
    tiles = d.chain_tiles([STORE_A, STORE_B], shelf_state, d.empty_frame("alerts"),
                          d.empty_frame("pos_transactions"), None)
    assert tiles == [d.StoreTile(STORE_A, "none", None, stock_outs=2, sales_today=None),
                     d.StoreTile(STORE_B, "none", None, stock_outs=1, sales_today=None)]
    empty = d.chain_tiles([STORE_A], d.empty_frame("shelf_state"), d.empty_frame("alerts"),
                          d.empty_frame("pos_transactions"), NOW)
    assert empty == [d.StoreTile(STORE_A, "none", None, stock_outs=0, sales_today=0.0)]


# --- what the live source reads (PostgreSQL and Redis faked) -------------------------------------------
CHAIN = [STORE_A, STORE_B]


class RecordingCursor:
    """A cursor that notes the queries it runs and finds no rows."""

    def __init__(self) -> None:
        self.queries: list[sql.Composable] = []

    def __enter__(self) -> RecordingCursor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def execute(self, query: sql.Composable) -> None:
        self.queries.append(query)

    def fetchall(self) -> list[tuple[object, ...]]:
        return []

    def fetchone(self) -> tuple[int]:
        return (0,)


class OneCursorConnection:
    def __init__(self, cursor: RecordingCursor) -> None:
        self._cursor = cursor

    def cursor(self) -> RecordingCursor:
        return self._cursor


class ClockRedis:
    """Redis holding the simulated clock's now (or not) and no world state; notes the keys read at once."""

    def __init__(self, now: datetime | None) -> None:
        self.now = now
        self.mget_keys: list[str] = []

    def get(self, key: str) -> bytes | None:
        return None if key != SIM_NOW or self.now is None else encode_time(self.now).encode()

    def mget(self, keys: list[str]) -> list[None]:
        self.mget_keys += keys
        return [None] * len(keys)

    def close(self) -> None:
        return None


def leaves(query: sql.Composable) -> list[sql.Composable]:
    return [leaf for part in query.seq for leaf in leaves(part)] if isinstance(query, sql.Composed) else [query]


def read_of(query: sql.Composable) -> tuple[str, list[object]]:
    """The table a query reads ("schema.table") and the values it quotes, in order."""
    (name,) = [".".join(leaf.strings) for leaf in leaves(query)
               if isinstance(leaf, sql.Identifier) and len(leaf.strings) == 2]
    return name, [leaf.wrapped for leaf in leaves(query) if isinstance(leaf, sql.Literal)]


@pytest.fixture
def faked(monkeypatch: pytest.MonkeyPatch) -> tuple[RecordingCursor, ClockRedis]:
    cursor, client = RecordingCursor(), ClockRedis(NOW)
    monkeypatch.setattr(d.postgres, "connect", lambda settings, role: nullcontext(OneCursorConnection(cursor)))
    monkeypatch.setattr(d, "redis_client", lambda settings: client)
    return cursor, client


def test_a_snapshot_reads_the_store_it_is_asked_for(faked: tuple[RecordingCursor, ClockRedis]) -> None:
    cursor, client = faked
    source = d.LiveSource(Settings(_env_file=None, STORES=2))  # type: ignore[call-arg]
    snapshot = source.snapshot(["store_inventory", "alerts", "dead_letters"], STORE_B)
    assert [read_of(query) for query in cursor.queries] == [
        ("ref.store_inventory", [STORE_B]), ("ops.alerts", [STORE_B, d.MAX_ALERT_ROWS]),
        ("ops.dead_letters", [d.MAX_DEAD_LETTER_ROWS]),  # no store column: the twin's
        ("ops.alerts", [STORE_B])]  # the store's alerts counted
    assert client.mget_keys == [f"{WORLD_STATE_KEY}{STORE_B}"]  # the people in that store
    assert snapshot.now == NOW and snapshot.people_in_store is None and snapshot.alerts_raised == 0


def test_the_chain_is_read_with_one_query_per_table_for_all_its_stores(
        faked: tuple[RecordingCursor, ClockRedis]) -> None:
    cursor, client = faked
    source = d.LiveSource(Settings(_env_file=None, STORES=2))  # type: ignore[call-arg]
    snapshot = source.chain_snapshot(CHAIN)
    assert [read_of(query) for query in cursor.queries] == [
        ("state.shelf_state", [CHAIN]),
        ("ops.alerts", [CHAIN, NOW - timedelta(minutes=d.ACTIVE_ALERT_MINUTES), NOW]),  # those that can be active
        ("ops.pos_transactions", [CHAIN, datetime(2025, 1, 1), NOW])]  # today's up to now
    assert snapshot.now == NOW and set(snapshot.frames) == {"shelf_state", "alerts", "pos_transactions"}
    client.now = None  # the clock stopped: no alert is active, no sale is today's
    cursor.queries.clear()
    assert set(source.chain_snapshot(CHAIN).frames) == {"shelf_state"}
    assert [read_of(query) for query in cursor.queries] == [("state.shelf_state", [CHAIN])]
