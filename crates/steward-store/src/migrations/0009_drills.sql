-- 0009_drills: restore drills. A drill test-restores one backup into a throwaway file and
-- records what it found. The table is also the drill worker's queue (state 'queued').
CREATE TABLE drills (
    id INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    instance_name TEXT NOT NULL,
    backup_id INTEGER NOT NULL REFERENCES backups(id),
    -- the backup's label when the drill was queued
    backup_label TEXT NOT NULL,
    -- 'scheduled' or 'manual'
    origin TEXT NOT NULL,
    -- the schedule's period this drill belongs to (scheduled drills only): one per period
    slot TEXT,
    -- 'queued', 'running', 'passed', 'failed' or 'skipped'
    state TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    duration_ms INTEGER,
    bytes INTEGER,
    -- while running: 'restore' (writing the throwaway file) or 'check'
    stage TEXT,
    progress_done INTEGER NOT NULL DEFAULT 0,
    progress_total INTEGER NOT NULL DEFAULT 0,
    hash_ok INTEGER,
    integrity_ok INTEGER,
    row_counts_ok INTEGER,
    db_hash TEXT,
    -- JSON array of strings, for people
    problems TEXT NOT NULL DEFAULT '[]',
    -- times the drill was started (a drill cancelled for a user's restore starts again)
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX drills_instance ON drills(instance_id, id);
CREATE INDEX drills_backup ON drills(backup_id, id);
CREATE INDEX drills_state ON drills(state, id);
CREATE UNIQUE INDEX drills_slot ON drills(instance_id, slot) WHERE slot IS NOT NULL;
