"""The API's reads: one parameterised SQL query per resource over the PostgreSQL mirror. Pure: builds SQL text and
its parameters, no I/O.

Table names come from the registry; filter values only ever travel as parameters. A shelf's or a warehouse item's
`level` is the alert engines' (`smartshelf.loop.shelf_level`, `warehouse_level`) written in SQL, with the same
float arithmetic; the integration tests compare the two for every shelf. Before its first event a shelf's stock is
the imported snapshot's, as in `state.v_shelf_stock`. One database holds a chain's stores: every query reads the
running store's rows only, through the parameter `store_id`, which the API adds to every query; per-store tables
join on `store_id` too. The tables without a `store_id` column (ops.dead_letters, analytics' features, models,
predictions and pulse windows) are not read here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, get_args

from smartshelf.loop import Level
from smartshelf.registry import table
from smartshelf.schemas import Alert, ShelfRestockPlan, SupplierOrder, WarehouseSupplierPlan

LEVELS: tuple[Level, ...] = get_args(Level)
AlertType = Literal[get_args(Alert.model_fields["alert_type"].annotation)]  # type: ignore[valid-type]
AlertSeverity = Literal[get_args(Alert.model_fields["severity"].annotation)]  # type: ignore[valid-type]
AlertLocation = Literal[get_args(Alert.model_fields["location"].annotation)]  # type: ignore[valid-type]
RestockStatus = Literal[get_args(ShelfRestockPlan.model_fields["status"].annotation)]  # type: ignore[valid-type]
_SUPPLIER_PLAN_STATUS = WarehouseSupplierPlan.model_fields["status"].annotation
SupplierPlanStatus = Literal[get_args(_SUPPLIER_PLAN_STATUS)]  # type: ignore[valid-type]
OrderStatus = Literal[get_args(SupplierOrder.model_fields["status"].annotation)]  # type: ignore[valid-type]

RECENT_ROWS = 20  # of each kind of event on a shelf's page


def pg(name: str) -> str:
    """A registry table's `schema.table` (registry names are fixed identifiers, never user input)."""
    qualified = table(name).pg
    assert qualified is not None, f"{name} has no PostgreSQL table"
    return qualified


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


@dataclass(frozen=True)
class Query:
    text: str
    params: dict[str, object] = field(default_factory=dict)


@dataclass
class _Filters:
    """WHERE conditions, each with its parameters; a None value adds no condition."""

    conditions: list[str] = field(default_factory=list)
    params: dict[str, object] = field(default_factory=dict)

    def add(self, condition: str, **params: object) -> None:
        if all(value is not None for value in params.values()):
            self.conditions.append(condition)
            self.params.update(params)

    @property
    def where(self) -> str:
        return f"WHERE {' AND '.join(self.conditions)}" if self.conditions else ""


@dataclass(frozen=True)
class PageQuery:
    rows: Query  # one page, as JSON (`as_json`)
    total: Query  # how many rows match, in a column `total`


def as_json(query: Query) -> Query:
    """The query's rows as the text of one JSON array, built by PostgreSQL in its order: the API passes it on
    without parsing it (a page of 1,000 rows costs Python ~40 ms to turn into objects and back, PostgreSQL ~2 ms).
    An aggregate reading a sorted subquery keeps its order (PostgreSQL's documented way; tests check it)."""
    return Query(f"SELECT coalesce(json_agg(q), '[]')::text AS rows, count(*) AS count FROM ({query.text}) q",
                 query.params)


def _paged(select: str, filters: _Filters, order_by: str, page: Page) -> PageQuery:
    """`select` filtered and ordered: one page of it, and how many rows match."""
    rows = Query(f"SELECT * FROM ({select}) rows {filters.where} ORDER BY {order_by} LIMIT %(limit)s "
                 "OFFSET %(offset)s", {**filters.params, "limit": page.limit, "offset": page.offset})
    total = Query(f"SELECT count(*) AS total FROM ({select}) rows {filters.where}", filters.params)
    return PageQuery(as_json(rows), total)


# --- shelves and warehouse items ------------------------------------------------------------------------
_SHELVES = f"""
SELECT i.shelf_id, i.aisle, i.item_category, i.item_subcategory, i.item_price, i.item_weight, i.maximum_stock,
       COALESCE(s.current_stock, i.current_stock) AS current_stock,
       COALESCE(s.current_weight, i.current_stock * i.item_weight) AS current_weight,
       p.low_stock_threshold_pct * i.maximum_stock AS low_stock_threshold,
       CASE WHEN COALESCE(s.current_stock, i.current_stock) = 0 THEN 'out'
            WHEN COALESCE(s.current_stock, i.current_stock) <= p.low_stock_threshold_pct * i.maximum_stock
                THEN 'low'
            ELSE 'ok' END AS level,
       s.last_event_type, s.last_event_ts
FROM {pg("store_inventory")} i
JOIN {pg("shelf_policies")} p USING (store_id, shelf_id)
LEFT JOIN {pg("shelf_state")} s USING (store_id, shelf_id)
WHERE i.store_id = %(store_id)s"""

_WAREHOUSE_ITEMS = f"""
SELECT i.shelf_id, i.aisle, i.item_category, i.item_subcategory, i.maximum_stock,
       COALESCE(w.wh_current_stock, i.current_stock) AS wh_current_stock,
       p.reorder_point, p.order_up_to, p.lead_time_days, p.delivery_hour,
       CASE WHEN COALESCE(w.wh_current_stock, i.current_stock) = 0 THEN 'out'
            WHEN COALESCE(w.wh_current_stock, i.current_stock) <= p.reorder_point THEN 'low'
            ELSE 'ok' END AS level,
       w.last_event_type, w.last_event_ts
FROM {pg("warehouse_inventory")} i
JOIN {pg("wh_policies")} p USING (store_id, shelf_id)
LEFT JOIN {pg("wh_state")} w USING (store_id, shelf_id)
WHERE i.store_id = %(store_id)s"""


def _item_filters(category: str | None, subcategory: str | None, aisle: int | None, level: str | None) -> _Filters:
    filters = _Filters()
    filters.add("item_category = %(category)s", category=category)
    filters.add("item_subcategory = %(subcategory)s", subcategory=subcategory)
    filters.add("aisle = %(aisle)s", aisle=aisle)
    filters.add("level = %(level)s", level=level)
    return filters


def shelves(page: Page, category: str | None = None, subcategory: str | None = None, aisle: int | None = None,
            level: Level | None = None) -> PageQuery:
    return _paged(_SHELVES, _item_filters(category, subcategory, aisle, level), "shelf_id", page)


def shelf(shelf_id: str) -> Query:
    return as_json(Query(f"SELECT * FROM ({_SHELVES}) rows WHERE shelf_id = %(shelf_id)s", {"shelf_id": shelf_id}))


def warehouse_items(page: Page, category: str | None = None, subcategory: str | None = None,
                    aisle: int | None = None, level: Level | None = None) -> PageQuery:
    return _paged(_WAREHOUSE_ITEMS, _item_filters(category, subcategory, aisle, level), "shelf_id", page)


def shelf_lots(shelf_id: str) -> Query:
    """The shelf's and its warehouse's lots that still hold stock, earliest expiry first (the FIFO order)."""
    return as_json(Query(f"""
        SELECT 'store' AS location, batch_code, received_date, expiry_date, batch_quantity_store AS quantity
        FROM {pg("shelf_batch_state")}
        WHERE store_id = %(store_id)s AND shelf_id = %(shelf_id)s AND batch_quantity_store > 0
        UNION ALL
        SELECT 'warehouse', batch_code, received_date, expiry_date, batch_quantity_warehouse
        FROM {pg("wh_batch_state")}
        WHERE store_id = %(store_id)s AND shelf_id = %(shelf_id)s AND batch_quantity_warehouse > 0
        ORDER BY location, expiry_date, batch_code""", {"shelf_id": shelf_id}))


def shelf_recent(shelf_id: str, what: Literal["alerts", "warehouse_moves", "sales"]) -> Query:
    """The newest RECENT_ROWS alerts, warehouse moves or sales lines of one shelf."""
    text = {
        "alerts": f"SELECT * FROM {pg('alerts')} WHERE store_id = %(store_id)s AND shelf_id = %(shelf_id)s "
                  "ORDER BY ts DESC, alert_id",
        "warehouse_moves": f"SELECT * FROM {pg('raw_wh_events')} WHERE store_id = %(store_id)s "
                           "AND shelf_id = %(shelf_id)s ORDER BY ts DESC, event_id",
        "sales": f"SELECT t.ts, i.* FROM {pg('pos_transaction_items')} i "
                 f"JOIN {pg('pos_transactions')} t USING (store_id, transaction_id) "
                 "WHERE i.store_id = %(store_id)s AND i.shelf_id = %(shelf_id)s "
                 "ORDER BY t.ts DESC, i.transaction_id, i.line_no",
    }[what]
    return as_json(Query(f"{text} LIMIT %(limit)s", {"shelf_id": shelf_id, "limit": RECENT_ROWS}))


# --- alerts, plans, orders ------------------------------------------------------------------------------
def _of_store(name: str) -> str:
    """The running store's rows of a per-store table."""
    return f"SELECT * FROM {pg(name)} WHERE store_id = %(store_id)s"


def alerts(page: Page, alert_type: str | None = None, severity: str | None = None, location: str | None = None,
           shelf_id: str | None = None, since: datetime | None = None, until: datetime | None = None) -> PageQuery:
    filters = _Filters()
    filters.add("alert_type = %(alert_type)s", alert_type=alert_type)
    filters.add("severity = %(severity)s", severity=severity)
    filters.add("location = %(location)s", location=location)
    filters.add("shelf_id = %(shelf_id)s", shelf_id=shelf_id)
    filters.add("ts >= %(since)s", since=since)
    filters.add("ts < %(until)s", until=until)
    return _paged(_of_store("alerts"), filters, "ts DESC, alert_id", page)


def _by_status(name: str, page: Page, status: str | None, shelf_id: str | None, order_by: str) -> PageQuery:
    filters = _Filters()
    filters.add("status = %(status)s", status=status)
    filters.add("shelf_id = %(shelf_id)s", shelf_id=shelf_id)
    return _paged(_of_store(name), filters, order_by, page)


def supplier_plans(page: Page, status: str | None = None, shelf_id: str | None = None) -> PageQuery:
    return _by_status("wh_supplier_plan", page, status, shelf_id, "updated_ts DESC, plan_id")


def restock_plans(page: Page, status: str | None = None, shelf_id: str | None = None) -> PageQuery:
    return _by_status("shelf_restock_plan", page, status, shelf_id, "updated_ts DESC, plan_id")


def supplier_orders(page: Page, status: str | None = None, shelf_id: str | None = None) -> PageQuery:
    return _by_status("wh_supplier_orders", page, status, shelf_id, "ordered_ts DESC, order_id")


# --- KPIs and the store ---------------------------------------------------------------------------------
def kpis(period: Literal["hourly", "daily"], since: datetime, until: datetime) -> Query:
    """The store's KPIs per simulated hour or day in [since, until), oldest first (views in 04_views.sql)."""
    column, view = ("hour", "analytics.v_kpi_hourly") if period == "hourly" else ("day", "analytics.v_kpi_daily")
    return as_json(Query(f"SELECT * FROM {view} WHERE {column} >= %(since)s AND {column} < %(until)s "
                         f"ORDER BY {column}", {"since": since, "until": until}))


def store_summary() -> Query:
    """The store's size and its current fill: None-free once a store is loaded, all zero before."""
    return Query(f"""
        SELECT count(*) AS shelves, count(DISTINCT item_category) AS categories, count(DISTINCT aisle) AS aisles,
               COALESCE(sum(current_stock), 0) AS units_on_shelves,
               COALESCE(sum(current_stock)::float / NULLIF(sum(maximum_stock), 0), 0) AS fill_rate,
               count(*) FILTER (WHERE level = 'low') AS shelves_low,
               count(*) FILTER (WHERE level = 'out') AS shelves_out
        FROM ({_SHELVES}) rows""")


STORE_LOADED = Query(f"SELECT EXISTS (SELECT 1 FROM {pg('store_inventory')} WHERE store_id = %(store_id)s) AND "
                     f"EXISTS (SELECT 1 FROM {pg('shelf_policies')} WHERE store_id = %(store_id)s) AS loaded")
