-- Views over the mirrored state: what a store manager and the replenishment model read.

-- Every shelf with its live stock (falling back to the imported snapshot before the first event),
-- its policy threshold and the warehouse stock behind it.
CREATE OR REPLACE VIEW state.v_shelf_stock AS
SELECT p.shelf_id,
       p.aisle,
       p.item_category,
       p.item_subcategory,
       p.maximum_stock,
       COALESCE(s.current_stock, i.current_stock) AS current_stock,
       ceil(p.maximum_stock * sp.low_stock_threshold_pct)::bigint AS low_stock_threshold,
       COALESCE(w.wh_current_stock, wi.current_stock) AS wh_current_stock,
       s.last_event_ts
FROM config.shelf_profiles p
JOIN config.shelf_policies sp USING (shelf_id)
LEFT JOIN state.shelf_state s USING (shelf_id)
LEFT JOIN ref.store_inventory i USING (shelf_id)
LEFT JOIN state.wh_state w USING (shelf_id)
LEFT JOIN ref.warehouse_inventory wi USING (shelf_id);

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
