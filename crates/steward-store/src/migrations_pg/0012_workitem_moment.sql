-- PostgreSQL twin of the SQLite migration of the same number (types: BIGINT for
-- INTEGER, DOUBLE PRECISION for REAL, identity columns for INTEGER PRIMARY KEY).
-- 0012_workitem_moment: a refresh to a moment copies a continuous-capture chain (its base
-- snapshot and the commits up to the moment) instead of a backup. restore_chain_id names the
-- chain; restore_at then holds the last commit at or before the moment, once copied.
ALTER TABLE work_items ADD COLUMN restore_chain_id BIGINT;
