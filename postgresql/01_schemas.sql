-- Schemas of the Smart Shelf database (the roles themselves are created by postgresql/migrate.py,
-- which knows their passwords from the settings).
CREATE SCHEMA IF NOT EXISTS ref;        -- store snapshot imported from CSV
CREATE SCHEMA IF NOT EXISTS config;     -- policies and metadata
CREATE SCHEMA IF NOT EXISTS state;      -- mirrors of the compacted state topics
CREATE SCHEMA IF NOT EXISTS ops;        -- operational events, alerts, plans, orders, sales
CREATE SCHEMA IF NOT EXISTS analytics;  -- discounts, features, models, predictions

CREATE TABLE IF NOT EXISTS public.schema_migrations (
    filename text PRIMARY KEY,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
