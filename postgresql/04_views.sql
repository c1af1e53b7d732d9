-- Views over the mirrored state: what a store manager and the replenishment model read.

-- Every shelf with its live stock (falling back to the imported snapshot before the first event),
-- its policy threshold and the warehouse stock behind it: the running store's (STORE_ID, which db-init sets as
-- the database's smartshelf.store_id) of the chain the tables hold.
CREATE OR REPLACE VIEW state.v_shelf_stock AS
SELECT p.store_id,
       p.shelf_id,
       p.aisle,
       p.item_category,
       p.item_subcategory,
       p.maximum_stock,
       COALESCE(s.current_stock, i.current_stock) AS current_stock,
       ceil(p.maximum_stock * sp.low_stock_threshold_pct)::bigint AS low_stock_threshold,
       COALESCE(w.wh_current_stock, wi.current_stock) AS wh_current_stock,
       s.last_event_ts
FROM config.shelf_profiles p
JOIN config.shelf_policies sp ON sp.store_id = p.store_id AND sp.shelf_id = p.shelf_id
LEFT JOIN state.shelf_state s ON s.store_id = p.store_id AND s.shelf_id = p.shelf_id
LEFT JOIN ref.store_inventory i ON i.store_id = p.store_id AND i.shelf_id = p.shelf_id
LEFT JOIN state.wh_state w ON w.store_id = p.store_id AND w.shelf_id = p.shelf_id
LEFT JOIN ref.warehouse_inventory wi ON wi.store_id = p.store_id AND wi.shelf_id = p.shelf_id
WHERE p.store_id = current_setting('smartshelf.store_id', true);

-- The model's inputs for the latest feature day of every shelf.
CREATE OR REPLACE VIEW analytics.v_ml_features AS
SELECT f.*
FROM analytics.shelf_daily_features f
WHERE f.feature_date = (SELECT max(feature_date) FROM analytics.shelf_daily_features);

-- Training rows: days whose target is known.
CREATE OR REPLACE VIEW analytics.v_ml_train AS
SELECT f.*
FROM analytics.shelf_daily_features f
WHERE f.batches_to_order IS NOT NULL;

-- The store's KPIs per simulated hour (the API's /kpis/hourly): sales, stock-outs, people, discounts, waste.
-- people_in_store is the running balance of entries and exits at the hour's end (the store opens empty). The
-- running store's (smartshelf.store_id), as above.
CREATE OR REPLACE VIEW analytics.v_kpi_hourly AS
WITH sales AS (
    SELECT date_trunc('hour', t.ts) AS hour,
           count(DISTINCT t.transaction_id) AS transactions,
           sum(i.quantity) AS units_sold,
           sum(i.line_total) AS revenue,
           coalesce(sum(i.quantity) FILTER (WHERE i.discount > 0), 0) AS discounted_units,
           sum(i.quantity * i.unit_price - i.line_total) AS discount_amount
    FROM ops.pos_transactions t
    JOIN ops.pos_transaction_items i USING (store_id, transaction_id)
    WHERE t.store_id = current_setting('smartshelf.store_id', true)
    GROUP BY 1),
alerts AS (
    SELECT date_trunc('hour', ts) AS hour,
           count(*) FILTER (WHERE alert_type = 'out_of_stock') AS stock_outs,
           count(*) FILTER (WHERE alert_type = 'low_stock') AS low_stock_alerts,
           coalesce(sum(value) FILTER (WHERE alert_type = 'expired'), 0)::bigint AS wasted_units
    FROM ops.alerts
    WHERE store_id = current_setting('smartshelf.store_id', true)
    GROUP BY 1),
people AS (
    SELECT date_trunc('hour', ts) AS hour,
           count(*) FILTER (WHERE event_type = 'entry') AS entries,
           count(*) FILTER (WHERE event_type = 'exit') AS exits
    FROM ops.foot_traffic
    WHERE store_id = current_setting('smartshelf.store_id', true)
    GROUP BY 1),
hours AS (SELECT hour FROM sales UNION SELECT hour FROM alerts UNION SELECT hour FROM people)
SELECT h.hour,
       coalesce(s.transactions, 0) AS transactions,
       coalesce(s.units_sold, 0) AS units_sold,
       coalesce(s.revenue, 0)::numeric(14, 2) AS revenue,
       coalesce(s.discounted_units, 0) AS discounted_units,
       coalesce(s.discount_amount, 0)::numeric(14, 2) AS discount_amount,
       coalesce(a.stock_outs, 0) AS stock_outs,
       coalesce(a.low_stock_alerts, 0) AS low_stock_alerts,
       coalesce(a.wasted_units, 0) AS wasted_units,
       coalesce(p.entries, 0) AS entries,
       coalesce(p.exits, 0) AS exits,
       sum(coalesce(p.entries, 0) - coalesce(p.exits, 0)) OVER (ORDER BY h.hour)::bigint AS people_in_store
FROM hours h
LEFT JOIN sales s USING (hour)
LEFT JOIN alerts a USING (hour)
LEFT JOIN people p USING (hour);

-- The same per simulated day, with the day's mean shelf fill ratio at its end (from the daily features, built by
-- the inference service; NULL for a day without them) and the shelves discounted that day.
CREATE OR REPLACE VIEW analytics.v_kpi_daily AS
SELECT k.day,
       k.transactions, k.units_sold, k.revenue, k.discounted_units, k.discount_amount,
       k.stock_outs, k.low_stock_alerts, k.wasted_units, k.entries, k.exits,
       (SELECT avg(f.shelf_fill_ratio)::numeric(6, 4) FROM analytics.shelf_daily_features f
        WHERE f.feature_date = k.day AND f.store_id = current_setting('smartshelf.store_id', true)) AS fill_rate,
       (SELECT count(*) FROM analytics.daily_discounts d
        WHERE d.discount_date = k.day AND d.store_id = current_setting('smartshelf.store_id', true))
           AS discounted_shelves
FROM (SELECT hour::date AS day,
             sum(transactions)::bigint AS transactions, sum(units_sold)::bigint AS units_sold,
             sum(revenue)::numeric(14, 2) AS revenue, sum(discounted_units)::bigint AS discounted_units,
             sum(discount_amount)::numeric(14, 2) AS discount_amount, sum(stock_outs)::bigint AS stock_outs,
             sum(low_stock_alerts)::bigint AS low_stock_alerts, sum(wasted_units)::bigint AS wasted_units,
             sum(entries)::bigint AS entries, sum(exits)::bigint AS exits
      FROM analytics.v_kpi_hourly
      GROUP BY 1) k;
