-- GENERATED from smartshelf/registry.py by `smartshelf data sql`: do not edit by hand.
-- One table per registry entry that names a PostgreSQL table; columns come from its pydantic model.
-- Tables polled by a source connector also get updated_at, the UTC time of a row's last change.

CREATE OR REPLACE FUNCTION public.touch_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := clock_timestamp() AT TIME ZONE 'UTC';
    RETURN NEW;
END $$;

CREATE TABLE IF NOT EXISTS ref.store_inventory (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    aisle bigint NOT NULL,
    item_weight bigint NOT NULL,
    shelf_weight bigint NOT NULL,
    item_category text NOT NULL,
    item_subcategory text NOT NULL,
    item_visibility double precision NOT NULL,
    maximum_stock bigint NOT NULL,
    current_stock bigint NOT NULL,
    item_price double precision NOT NULL,
    CHECK (aisle >= 0),
    CHECK (aisle <= 10000),
    CHECK (item_weight > 0),
    CHECK (item_weight <= 100000),
    CHECK (shelf_weight > 0),
    CHECK (shelf_weight <= 100000000000),
    CHECK (item_visibility >= 0),
    CHECK (item_visibility <= 1),
    CHECK (maximum_stock > 0),
    CHECK (maximum_stock <= 1000000),
    CHECK (current_stock >= 0),
    CHECK (current_stock <= 1000000),
    CHECK (item_price > 0),
    CHECK (item_price <= 100000.0),
    PRIMARY KEY (store_id, shelf_id)
);

CREATE TABLE IF NOT EXISTS ref.warehouse_inventory (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    aisle bigint NOT NULL,
    item_weight bigint NOT NULL,
    shelf_weight bigint NOT NULL,
    item_category text NOT NULL,
    item_subcategory text NOT NULL,
    maximum_stock bigint NOT NULL,
    current_stock bigint NOT NULL,
    item_price double precision NOT NULL,
    CHECK (aisle >= 0),
    CHECK (aisle <= 10000),
    CHECK (item_weight > 0),
    CHECK (item_weight <= 100000),
    CHECK (shelf_weight > 0),
    CHECK (shelf_weight <= 100000000000),
    CHECK (maximum_stock > 0),
    CHECK (maximum_stock <= 1000000),
    CHECK (current_stock >= 0),
    CHECK (current_stock <= 1000000),
    CHECK (item_price > 0),
    CHECK (item_price <= 100000.0),
    PRIMARY KEY (store_id, shelf_id)
);

CREATE TABLE IF NOT EXISTS ref.store_batches (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    batch_code text NOT NULL,
    item_category text NOT NULL,
    item_subcategory text NOT NULL,
    standard_batch_size bigint NOT NULL,
    received_date date NOT NULL,
    expiry_date date NOT NULL,
    batch_quantity_total bigint NOT NULL,
    batch_quantity_store bigint NOT NULL,
    batch_quantity_warehouse bigint NOT NULL,
    location text NOT NULL,
    CHECK (standard_batch_size > 0),
    CHECK (standard_batch_size <= 1000000),
    CHECK (batch_quantity_total >= 0),
    CHECK (batch_quantity_total <= 1000000),
    CHECK (batch_quantity_store >= 0),
    CHECK (batch_quantity_store <= 1000000),
    CHECK (batch_quantity_warehouse >= 0),
    CHECK (batch_quantity_warehouse <= 1000000),
    CHECK (location IN ('in-store', 'warehouse')),
    PRIMARY KEY (store_id, shelf_id, batch_code)
);

CREATE TABLE IF NOT EXISTS ref.warehouse_batches (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    batch_code text NOT NULL,
    item_category text NOT NULL,
    item_subcategory text NOT NULL,
    standard_batch_size bigint NOT NULL,
    received_date date NOT NULL,
    expiry_date date NOT NULL,
    batch_quantity_total bigint NOT NULL,
    batch_quantity_store bigint NOT NULL,
    batch_quantity_warehouse bigint NOT NULL,
    location text NOT NULL,
    CHECK (standard_batch_size > 0),
    CHECK (standard_batch_size <= 1000000),
    CHECK (batch_quantity_total >= 0),
    CHECK (batch_quantity_total <= 1000000),
    CHECK (batch_quantity_store >= 0),
    CHECK (batch_quantity_store <= 1000000),
    CHECK (batch_quantity_warehouse >= 0),
    CHECK (batch_quantity_warehouse <= 1000000),
    CHECK (location IN ('in-store', 'warehouse')),
    PRIMARY KEY (store_id, shelf_id, batch_code)
);

CREATE TABLE IF NOT EXISTS ref.discounts (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    discount double precision NOT NULL,
    start_date date NOT NULL,
    end_date date NOT NULL,
    CHECK (discount > 0),
    CHECK (discount < 1),
    PRIMARY KEY (store_id, shelf_id, start_date)
);

CREATE TABLE IF NOT EXISTS config.shelf_policies (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    low_stock_threshold_pct double precision NOT NULL,
    restock_target_pct double precision NOT NULL,
    near_expiry_days bigint NOT NULL,
    near_expiry_discount double precision NOT NULL,
    CHECK (low_stock_threshold_pct > 0),
    CHECK (low_stock_threshold_pct < 1),
    CHECK (restock_target_pct > 0),
    CHECK (restock_target_pct <= 1),
    CHECK (near_expiry_days >= 0),
    CHECK (near_expiry_days <= 3650),
    CHECK (near_expiry_discount > 0),
    CHECK (near_expiry_discount < 1),
    PRIMARY KEY (store_id, shelf_id)
);
ALTER TABLE config.shelf_policies ADD COLUMN IF NOT EXISTS updated_at timestamp NOT NULL
    DEFAULT (clock_timestamp() AT TIME ZONE 'UTC');
CREATE INDEX IF NOT EXISTS shelf_policies_updated_at_idx ON config.shelf_policies (updated_at);
CREATE OR REPLACE TRIGGER shelf_policies_updated_at BEFORE INSERT OR UPDATE ON config.shelf_policies
    FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();

CREATE TABLE IF NOT EXISTS config.wh_policies (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    reorder_point bigint NOT NULL,
    order_up_to bigint NOT NULL,
    lead_time_days bigint NOT NULL,
    delivery_hour bigint NOT NULL,
    CHECK (reorder_point >= 0),
    CHECK (reorder_point <= 1000000),
    CHECK (order_up_to > 0),
    CHECK (order_up_to <= 1000000),
    CHECK (lead_time_days >= 0),
    CHECK (lead_time_days <= 3650),
    CHECK (delivery_hour >= 0),
    CHECK (delivery_hour <= 23),
    PRIMARY KEY (store_id, shelf_id)
);
ALTER TABLE config.wh_policies ADD COLUMN IF NOT EXISTS updated_at timestamp NOT NULL
    DEFAULT (clock_timestamp() AT TIME ZONE 'UTC');
CREATE INDEX IF NOT EXISTS wh_policies_updated_at_idx ON config.wh_policies (updated_at);
CREATE OR REPLACE TRIGGER wh_policies_updated_at BEFORE INSERT OR UPDATE ON config.wh_policies
    FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();

CREATE TABLE IF NOT EXISTS config.batch_catalog (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    batch_code text NOT NULL,
    item_category text NOT NULL,
    item_subcategory text NOT NULL,
    standard_batch_size bigint NOT NULL,
    received_date date NOT NULL,
    expiry_date date NOT NULL,
    CHECK (standard_batch_size > 0),
    CHECK (standard_batch_size <= 1000000),
    PRIMARY KEY (store_id, shelf_id, batch_code)
);
ALTER TABLE config.batch_catalog ADD COLUMN IF NOT EXISTS updated_at timestamp NOT NULL
    DEFAULT (clock_timestamp() AT TIME ZONE 'UTC');
CREATE INDEX IF NOT EXISTS batch_catalog_updated_at_idx ON config.batch_catalog (updated_at);
CREATE OR REPLACE TRIGGER batch_catalog_updated_at BEFORE INSERT OR UPDATE ON config.batch_catalog
    FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();

CREATE TABLE IF NOT EXISTS config.shelf_profiles (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    aisle bigint NOT NULL,
    item_category text NOT NULL,
    item_subcategory text NOT NULL,
    item_weight bigint NOT NULL,
    shelf_weight bigint NOT NULL,
    maximum_stock bigint NOT NULL,
    item_price double precision NOT NULL,
    CHECK (aisle >= 0),
    CHECK (aisle <= 10000),
    CHECK (item_weight > 0),
    CHECK (item_weight <= 100000),
    CHECK (shelf_weight > 0),
    CHECK (shelf_weight <= 100000000000),
    CHECK (maximum_stock > 0),
    CHECK (maximum_stock <= 1000000),
    CHECK (item_price > 0),
    CHECK (item_price <= 100000.0),
    PRIMARY KEY (store_id, shelf_id)
);
ALTER TABLE config.shelf_profiles ADD COLUMN IF NOT EXISTS updated_at timestamp NOT NULL
    DEFAULT (clock_timestamp() AT TIME ZONE 'UTC');
CREATE INDEX IF NOT EXISTS shelf_profiles_updated_at_idx ON config.shelf_profiles (updated_at);
CREATE OR REPLACE TRIGGER shelf_profiles_updated_at BEFORE INSERT OR UPDATE ON config.shelf_profiles
    FOR EACH ROW EXECUTE FUNCTION public.touch_updated_at();

CREATE TABLE IF NOT EXISTS ops.foot_traffic (
    store_id text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    customer_id text NOT NULL,
    ts timestamp NOT NULL,
    CHECK (event_type IN ('entry', 'exit')),
    PRIMARY KEY (store_id, event_id)
);

CREATE TABLE IF NOT EXISTS ops.wh_events (
    store_id text NOT NULL,
    event_id text NOT NULL,
    event_type text NOT NULL,
    shelf_id text NOT NULL,
    batch_code text NOT NULL,
    quantity bigint NOT NULL,
    received_date date NOT NULL,
    expiry_date date NOT NULL,
    reference text,
    ts timestamp NOT NULL,
    CHECK (event_type IN ('wh_in', 'wh_out', 'wh_removal')),
    CHECK (quantity > 0),
    CHECK (quantity <= 1000000),
    PRIMARY KEY (store_id, event_id)
);

CREATE TABLE IF NOT EXISTS state.shelf_state (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    current_stock bigint NOT NULL,
    current_weight double precision NOT NULL,
    last_event_type text NOT NULL,
    last_event_ts timestamp NOT NULL,
    CHECK (current_stock >= 0),
    CHECK (current_stock <= 1000000),
    CHECK (current_weight >= -100000000000),
    CHECK (current_weight <= 100000000000),
    PRIMARY KEY (store_id, shelf_id)
);

CREATE TABLE IF NOT EXISTS state.wh_state (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    wh_current_stock bigint NOT NULL,
    last_event_type text NOT NULL,
    last_event_ts timestamp NOT NULL,
    CHECK (wh_current_stock >= 0),
    CHECK (wh_current_stock <= 1000000),
    PRIMARY KEY (store_id, shelf_id)
);

CREATE TABLE IF NOT EXISTS state.shelf_risk (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    restock_risk double precision NOT NULL,
    model_version bigint NOT NULL,
    scored_ts timestamp NOT NULL,
    CHECK (restock_risk >= 0),
    CHECK (restock_risk <= 1),
    CHECK (model_version >= 1),
    CHECK (model_version <= 999912312359),
    PRIMARY KEY (store_id, shelf_id)
);

CREATE TABLE IF NOT EXISTS state.shelf_batch_state (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    batch_code text NOT NULL,
    received_date date NOT NULL,
    expiry_date date NOT NULL,
    batch_quantity_store bigint NOT NULL,
    last_update_ts timestamp NOT NULL,
    CHECK (batch_quantity_store >= 0),
    CHECK (batch_quantity_store <= 1000000),
    PRIMARY KEY (store_id, shelf_id, batch_code)
);

CREATE TABLE IF NOT EXISTS state.wh_batch_state (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    batch_code text NOT NULL,
    received_date date NOT NULL,
    expiry_date date NOT NULL,
    batch_quantity_warehouse bigint NOT NULL,
    last_update_ts timestamp NOT NULL,
    CHECK (batch_quantity_warehouse >= 0),
    CHECK (batch_quantity_warehouse <= 1000000),
    PRIMARY KEY (store_id, shelf_id, batch_code)
);

CREATE TABLE IF NOT EXISTS ops.alerts (
    store_id text NOT NULL,
    alert_id text NOT NULL,
    alert_type text NOT NULL,
    location text NOT NULL,
    severity text NOT NULL,
    shelf_id text,
    metric text,
    subject text,
    batch_code text,
    message text NOT NULL,
    value double precision,
    threshold double precision,
    ts timestamp NOT NULL,
    CHECK (alert_type IN ('low_stock', 'out_of_stock', 'near_expiry', 'expired', 'wh_reorder', 'wh_out_of_stock', 'anomaly', 'shrinkage')),
    CHECK (location IN ('store', 'warehouse')),
    CHECK (severity IN ('info', 'warning', 'critical')),
    PRIMARY KEY (store_id, alert_id)
);

CREATE TABLE IF NOT EXISTS ops.shelf_restock_plan (
    store_id text NOT NULL,
    plan_id text NOT NULL,
    shelf_id text NOT NULL,
    quantity bigint NOT NULL,
    status text NOT NULL,
    created_ts timestamp NOT NULL,
    updated_ts timestamp NOT NULL,
    CHECK (quantity > 0),
    CHECK (quantity <= 1000000),
    CHECK (status IN ('planned', 'picked', 'delivered', 'cancelled')),
    PRIMARY KEY (store_id, plan_id)
);

CREATE TABLE IF NOT EXISTS ops.wh_supplier_plan (
    store_id text NOT NULL,
    plan_id text NOT NULL,
    shelf_id text NOT NULL,
    batches_to_order bigint NOT NULL,
    quantity bigint NOT NULL,
    status text NOT NULL,
    expected_delivery_date date NOT NULL,
    created_ts timestamp NOT NULL,
    updated_ts timestamp NOT NULL,
    CHECK (batches_to_order > 0),
    CHECK (batches_to_order <= 1000000),
    CHECK (quantity > 0),
    CHECK (quantity <= 1000000),
    CHECK (status IN ('planned', 'ordered', 'received', 'cancelled')),
    PRIMARY KEY (store_id, plan_id)
);

CREATE TABLE IF NOT EXISTS ops.wh_supplier_orders (
    store_id text NOT NULL,
    order_id text NOT NULL,
    plan_id text NOT NULL,
    shelf_id text NOT NULL,
    batches bigint NOT NULL,
    quantity bigint NOT NULL,
    ordered_ts timestamp NOT NULL,
    expected_delivery_ts timestamp NOT NULL,
    status text NOT NULL,
    CHECK (batches > 0),
    CHECK (batches <= 1000000),
    CHECK (quantity > 0),
    CHECK (quantity <= 1000000),
    CHECK (status IN ('open', 'received')),
    PRIMARY KEY (store_id, order_id)
);

CREATE TABLE IF NOT EXISTS ops.wh_supplier_receipts (
    store_id text NOT NULL,
    receipt_id text NOT NULL,
    order_id text NOT NULL,
    shelf_id text NOT NULL,
    batch_code text NOT NULL,
    quantity bigint NOT NULL,
    received_ts timestamp NOT NULL,
    expiry_date date NOT NULL,
    CHECK (quantity > 0),
    CHECK (quantity <= 1000000),
    PRIMARY KEY (store_id, receipt_id)
);

CREATE TABLE IF NOT EXISTS ops.pos_transactions (
    store_id text NOT NULL,
    transaction_id text NOT NULL,
    customer_id text NOT NULL,
    ts timestamp NOT NULL,
    item_count bigint NOT NULL,
    total double precision NOT NULL,
    CHECK (item_count > 0),
    CHECK (item_count <= 1000000000),
    CHECK (total >= 0),
    CHECK (total <= 1000000000000.0),
    PRIMARY KEY (store_id, transaction_id)
);

CREATE TABLE IF NOT EXISTS ops.pos_transaction_items (
    shelf_id text NOT NULL,
    quantity bigint NOT NULL,
    unit_price double precision NOT NULL,
    discount double precision NOT NULL,
    line_total double precision NOT NULL,
    store_id text NOT NULL,
    transaction_id text NOT NULL,
    line_no bigint NOT NULL,
    CHECK (quantity > 0),
    CHECK (quantity <= 1000000),
    CHECK (unit_price >= 0),
    CHECK (unit_price <= 100000.0),
    CHECK (discount >= 0),
    CHECK (discount < 1),
    CHECK (line_total >= 0),
    CHECK (line_total <= 1000000000000.0),
    CHECK (line_no >= 1),
    CHECK (line_no <= 1000000000),
    PRIMARY KEY (store_id, transaction_id, line_no)
);

CREATE TABLE IF NOT EXISTS ops.dead_letters (
    source text NOT NULL,
    source_partition bigint,
    source_offset bigint,
    reason text NOT NULL,
    raw text NOT NULL,
    ts timestamp NOT NULL,
    letter_partition bigint NOT NULL,
    letter_offset bigint NOT NULL,
    CHECK (letter_partition >= 0),
    CHECK (letter_offset >= 0),
    PRIMARY KEY (letter_partition, letter_offset)
);

CREATE TABLE IF NOT EXISTS analytics.daily_discounts (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    discount_date date NOT NULL,
    discount double precision NOT NULL,
    reason text NOT NULL,
    CHECK (discount > 0),
    CHECK (discount < 1),
    CHECK (reason IN ('near_expiry', 'promotion')),
    PRIMARY KEY (store_id, shelf_id, discount_date)
);

CREATE TABLE IF NOT EXISTS analytics.shelf_daily_features (
    store_id text NOT NULL,
    shelf_id text NOT NULL,
    feature_date date NOT NULL,
    item_category text NOT NULL,
    item_subcategory text NOT NULL,
    day_of_week bigint NOT NULL,
    is_weekend boolean NOT NULL,
    days_to_next_delivery bigint,
    item_price double precision NOT NULL,
    discount double precision NOT NULL,
    people_count bigint NOT NULL,
    sales_qty bigint NOT NULL,
    sales_last_1d bigint,
    sales_last_7d bigint,
    sales_last_14d bigint,
    sales_per_day double precision NOT NULL,
    sales_rate_days bigint NOT NULL,
    shelf_capacity bigint NOT NULL,
    shelf_stock bigint NOT NULL,
    shelf_fill_ratio double precision NOT NULL,
    low_stock_threshold_pct double precision NOT NULL,
    alerts_today bigint NOT NULL,
    wh_stock bigint NOT NULL,
    wh_fill_ratio double precision NOT NULL,
    reorder_point bigint NOT NULL,
    order_up_to bigint NOT NULL,
    open_order_qty bigint NOT NULL,
    expired_units bigint NOT NULL,
    standard_batch_size bigint NOT NULL,
    days_to_earliest_expiry bigint,
    qty_expiring_next_7d bigint NOT NULL,
    sales_next_7d bigint,
    batches_to_order bigint,
    CHECK (day_of_week >= 0),
    CHECK (day_of_week <= 6),
    CHECK (days_to_next_delivery >= 0),
    CHECK (item_price > 0),
    CHECK (item_price <= 100000.0),
    CHECK (discount >= 0),
    CHECK (discount < 1),
    CHECK (people_count >= 0),
    CHECK (people_count <= 1000000000),
    CHECK (sales_qty >= 0),
    CHECK (sales_qty <= 1000000),
    CHECK (sales_last_1d >= 0),
    CHECK (sales_last_1d <= 1000000),
    CHECK (sales_last_7d >= 0),
    CHECK (sales_last_7d <= 1000000),
    CHECK (sales_last_14d >= 0),
    CHECK (sales_last_14d <= 1000000),
    CHECK (sales_per_day >= 0),
    CHECK (sales_per_day <= 1000000),
    CHECK (sales_rate_days >= 1),
    CHECK (sales_rate_days <= 3650),
    CHECK (shelf_capacity > 0),
    CHECK (shelf_capacity <= 1000000),
    CHECK (shelf_stock >= 0),
    CHECK (shelf_stock <= 1000000),
    CHECK (shelf_fill_ratio >= 0),
    CHECK (low_stock_threshold_pct > 0),
    CHECK (low_stock_threshold_pct < 1),
    CHECK (alerts_today >= 0),
    CHECK (alerts_today <= 1000000000),
    CHECK (wh_stock >= 0),
    CHECK (wh_stock <= 1000000),
    CHECK (wh_fill_ratio >= 0),
    CHECK (reorder_point >= 0),
    CHECK (reorder_point <= 1000000),
    CHECK (order_up_to > 0),
    CHECK (order_up_to <= 1000000),
    CHECK (open_order_qty >= 0),
    CHECK (open_order_qty <= 1000000),
    CHECK (expired_units >= 0),
    CHECK (expired_units <= 1000000),
    CHECK (standard_batch_size > 0),
    CHECK (standard_batch_size <= 1000000),
    CHECK (qty_expiring_next_7d >= 0),
    CHECK (qty_expiring_next_7d <= 1000000),
    CHECK (sales_next_7d >= 0),
    CHECK (sales_next_7d <= 1000000),
    CHECK (batches_to_order >= 0),
    CHECK (batches_to_order <= 1000000),
    PRIMARY KEY (store_id, shelf_id, feature_date)
);

CREATE TABLE IF NOT EXISTS analytics.ml_models (
    model_name text NOT NULL,
    model_version bigint NOT NULL,
    trained_ts timestamp NOT NULL,
    data_start date NOT NULL,
    data_end date NOT NULL,
    train_rows bigint NOT NULL,
    holdout_rows bigint NOT NULL,
    feature_hash text NOT NULL,
    params text NOT NULL,
    mae_model double precision NOT NULL,
    rmse_model double precision NOT NULL,
    mae_last7 double precision NOT NULL,
    rmse_last7 double precision NOT NULL,
    mae_model_batches double precision NOT NULL,
    mae_last7_batches double precision NOT NULL,
    mae_rule_batches double precision NOT NULL,
    metric_name text NOT NULL,
    metric_value double precision NOT NULL,
    artifact_path text NOT NULL,
    is_active boolean NOT NULL,
    CHECK (model_version >= 1),
    CHECK (model_version <= 999912312359),
    CHECK (train_rows >= 0),
    CHECK (train_rows <= 1000000000),
    CHECK (holdout_rows >= 0),
    CHECK (holdout_rows <= 1000000000),
    CHECK (mae_model >= 0),
    CHECK (rmse_model >= 0),
    CHECK (mae_last7 >= 0),
    CHECK (rmse_last7 >= 0),
    CHECK (mae_model_batches >= 0),
    CHECK (mae_last7_batches >= 0),
    CHECK (mae_rule_batches >= 0),
    PRIMARY KEY (model_name, model_version)
);

CREATE TABLE IF NOT EXISTS analytics.pulse_windows (
    store_id text NOT NULL,
    window_id text NOT NULL,
    width_minutes bigint NOT NULL,
    metric text NOT NULL,
    subject text NOT NULL,
    window_start timestamp NOT NULL,
    window_end timestamp NOT NULL,
    value double precision NOT NULL,
    events bigint NOT NULL,
    expected double precision,
    z_score double precision,
    CHECK (width_minutes >= 1),
    CHECK (width_minutes <= 60),
    CHECK (metric IN ('entries', 'exits', 'units_sold', 'revenue', 'weight_changes', 'units_taken', 'units_paid')),
    CHECK (value >= -1000000000000.0),
    CHECK (value <= 1000000000000.0),
    CHECK (events >= 0),
    CHECK (events <= 1000000000),
    PRIMARY KEY (store_id, window_id)
);

CREATE TABLE IF NOT EXISTS analytics.ml_predictions_log (
    store_id text NOT NULL,
    model_name text NOT NULL,
    model_version bigint NOT NULL,
    shelf_id text NOT NULL,
    prediction_date date NOT NULL,
    feature_date date NOT NULL,
    predicted_sales_next_7d double precision NOT NULL,
    batches_to_order bigint NOT NULL,
    predicted_ts timestamp NOT NULL,
    CHECK (model_version >= 1),
    CHECK (model_version <= 999912312359),
    CHECK (predicted_sales_next_7d >= 0),
    CHECK (batches_to_order >= 0),
    CHECK (batches_to_order <= 1000000),
    PRIMARY KEY (store_id, model_name, model_version, shelf_id, prediction_date)
);

CREATE TABLE IF NOT EXISTS ops.pos_basket_intake (basket jsonb NOT NULL);
CREATE OR REPLACE FUNCTION ops.pos_basket_intake_split() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO ops.pos_transactions (store_id, transaction_id, customer_id, ts, total, item_count)
    SELECT b.store_id, b.transaction_id, b.customer_id, b.ts, b.total, jsonb_array_length(NEW.basket->'items')
    FROM jsonb_to_record(NEW.basket) AS b(store_id text, transaction_id text, customer_id text, ts timestamp, total double precision)
    ON CONFLICT DO NOTHING;
    INSERT INTO ops.pos_transaction_items (shelf_id, quantity, unit_price, discount, line_total, store_id, transaction_id, line_no)
    SELECT i.shelf_id, i.quantity, i.unit_price, i.discount, i.line_total, NEW.basket->>'store_id', NEW.basket->>'transaction_id', i.line_no
    FROM ROWS FROM (jsonb_to_recordset(NEW.basket->'items') AS (shelf_id text, quantity bigint, unit_price double precision, discount double precision, line_total double precision))
        WITH ORDINALITY AS i(shelf_id, quantity, unit_price, discount, line_total, line_no)
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE OR REPLACE TRIGGER pos_basket_intake_split BEFORE INSERT ON ops.pos_basket_intake
    FOR EACH ROW EXECUTE FUNCTION ops.pos_basket_intake_split();

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'smartshelf_config') THEN
        CREATE PUBLICATION smartshelf_config;
    END IF;
END $$;
ALTER PUBLICATION smartshelf_config SET TABLE config.shelf_policies, config.wh_policies, config.batch_catalog, config.shelf_profiles;
