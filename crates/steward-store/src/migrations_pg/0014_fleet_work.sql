-- PostgreSQL twin of the SQLite migration of the same number.
-- 0014_fleet_work: work shared by several nodes. scheduler_ticks records which node ran the
-- fleet-wide scheduled work of each minute (and maintenance of each hour), so it runs once
-- per tick across the fleet; jobs.lease_until is how long the claiming node's hold on a
-- running job lasts (renewed with its heartbeat).
CREATE TABLE scheduler_ticks (
    tick TEXT PRIMARY KEY,
    node TEXT NOT NULL,
    at TEXT NOT NULL
);
ALTER TABLE jobs ADD COLUMN lease_until TEXT;
