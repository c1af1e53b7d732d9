-- Indexes for the queries the dashboard and docs/sql-cookbook.md run.
CREATE INDEX IF NOT EXISTS alerts_ts_idx ON ops.alerts (ts DESC);
CREATE INDEX IF NOT EXISTS alerts_shelf_ts_idx ON ops.alerts (shelf_id, ts DESC);
CREATE INDEX IF NOT EXISTS alerts_type_idx ON ops.alerts (alert_type, location);
CREATE INDEX IF NOT EXISTS wh_events_ts_idx ON ops.wh_events (ts);
CREATE INDEX IF NOT EXISTS wh_events_shelf_idx ON ops.wh_events (shelf_id, ts);
CREATE INDEX IF NOT EXISTS shelf_batch_state_expiry_idx ON state.shelf_batch_state (expiry_date);
CREATE INDEX IF NOT EXISTS wh_batch_state_expiry_idx ON state.wh_batch_state (expiry_date);
CREATE INDEX IF NOT EXISTS store_batches_expiry_idx ON ref.store_batches (expiry_date);
CREATE INDEX IF NOT EXISTS supplier_orders_open_idx ON ops.wh_supplier_orders (expected_delivery_ts)
    WHERE status = 'open';
CREATE INDEX IF NOT EXISTS supplier_plan_status_idx ON ops.wh_supplier_plan (status);
CREATE INDEX IF NOT EXISTS pos_transactions_ts_idx ON ops.pos_transactions (ts);
CREATE INDEX IF NOT EXISTS pos_items_shelf_idx ON ops.pos_transaction_items (shelf_id);
CREATE INDEX IF NOT EXISTS shelf_profiles_category_idx ON config.shelf_profiles (item_category, item_subcategory);
CREATE INDEX IF NOT EXISTS features_date_idx ON analytics.shelf_daily_features (feature_date);
CREATE INDEX IF NOT EXISTS foot_traffic_ts_idx ON ops.foot_traffic (ts);
CREATE INDEX IF NOT EXISTS daily_discounts_date_idx ON analytics.daily_discounts (discount_date);
CREATE INDEX IF NOT EXISTS pulse_windows_start_idx ON analytics.pulse_windows (window_start DESC);
