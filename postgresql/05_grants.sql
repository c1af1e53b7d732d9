-- Services write through the app role; the dashboard and SQL users read through the read-only role.
-- :app_role and :reader_role are replaced by postgresql/migrate.py with the configured role names.
GRANT USAGE ON SCHEMA ref, config, state, ops, analytics TO :app_role, :reader_role;
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON ALL TABLES IN SCHEMA ref, config, state, ops, analytics TO :app_role;
GRANT SELECT ON ALL TABLES IN SCHEMA ref, config, state, ops, analytics TO :reader_role;
