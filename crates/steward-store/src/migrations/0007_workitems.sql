-- 0007_workitems: work items (database refreshes) and the history of their transitions.
CREATE TABLE work_items (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    source_id INTEGER NOT NULL REFERENCES instances(id),
    source TEXT NOT NULL,
    target_id INTEGER NOT NULL REFERENCES instances(id),
    target TEXT NOT NULL,
    -- the requested moment; NULL: the latest (a fresh copy of the source at window start)
    point_in_time TEXT,
    -- what is (or was) copied, once resolved
    restore_backup_id INTEGER,
    restore_at TEXT,
    window_start TEXT NOT NULL,
    status TEXT NOT NULL,
    requester TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    -- when the target became unavailable, and for how long it was
    unavailable_at TEXT,
    downtime_ms INTEGER,
    error TEXT,
    safety_backup_id INTEGER,
    -- JSON array of {name, ok, message}: the post-refresh scripts run
    scripts TEXT NOT NULL DEFAULT '[]',
    job_id INTEGER
);
CREATE INDEX work_items_status ON work_items(status, window_start);
CREATE TABLE work_item_history (
    id INTEGER PRIMARY KEY,
    work_item_id INTEGER NOT NULL REFERENCES work_items(id),
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    status TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX work_item_history_item ON work_item_history(work_item_id, id);
