-- PostgreSQL twin of the SQLite migration of the same number (types: BIGINT for
-- INTEGER, DOUBLE PRECISION for REAL, identity columns for INTEGER PRIMARY KEY).
-- 0005_notify: in-product alerts go to an audience (the communications schedule's audience of
-- the event that raised them): `system_administrators` or `all_admins_and_users`. Alerts
-- recorded before this migration were shown to everyone's banner; they stay visible to
-- System Administrators.
ALTER TABLE alerts ADD COLUMN audience TEXT NOT NULL DEFAULT 'system_administrators';
