-- 0006_updates: release updates of instances (seed 001), their timeline and stage timings,
-- rehearsals, the update policy set through the API, and reminder bookkeeping.
CREATE TABLE updates (
    id INTEGER PRIMARY KEY,
    instance_id INTEGER NOT NULL REFERENCES instances(id),
    instance_name TEXT NOT NULL,
    from_release TEXT NOT NULL,
    target_release TEXT NOT NULL,
    kind TEXT NOT NULL,
    mandatory INTEGER NOT NULL DEFAULT 0,
    automatic INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL,
    needs_approval INTEGER NOT NULL,
    approved_by TEXT,
    approved_at TEXT,
    preferred_start TEXT NOT NULL,
    preferred_end TEXT NOT NULL,
    alternate_start TEXT NOT NULL,
    alternate_end TEXT NOT NULL,
    active_window TEXT NOT NULL DEFAULT 'preferred',
    stage TEXT,
    error TEXT,
    backup_id INTEGER,
    job_id INTEGER,
    reminders_since TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT
);
CREATE INDEX updates_instance ON updates(instance_id, id);
-- At most one open update per instance.
CREATE UNIQUE INDEX updates_open ON updates(instance_id)
    WHERE status IN ('scheduled', 'queued', 'in_progress', 'waiting');
CREATE TABLE update_events (
    id INTEGER PRIMARY KEY,
    update_id INTEGER NOT NULL REFERENCES updates(id),
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    event TEXT NOT NULL,
    details TEXT NOT NULL
);
CREATE INDEX update_events_update ON update_events(update_id, id);
CREATE TABLE update_stages (
    update_id INTEGER NOT NULL REFERENCES updates(id),
    seq INTEGER NOT NULL,
    stage TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    PRIMARY KEY (update_id, seq)
);
CREATE TABLE update_rehearsals (
    id INTEGER PRIMARY KEY,
    update_id INTEGER REFERENCES updates(id),
    instance_name TEXT NOT NULL,
    sandbox TEXT NOT NULL,
    target_release TEXT NOT NULL,
    status TEXT NOT NULL,
    automatic INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    duration_ms INTEGER,
    problems TEXT NOT NULL DEFAULT '[]',
    job_id INTEGER,
    created_by TEXT NOT NULL
);
CREATE INDEX update_rehearsals_update ON update_rehearsals(update_id);
-- One row per reminder sent: (update, reminder, the start it was computed from). A
-- reschedule moves the start, so the moved reminders are sent again; never twice for one start.
CREATE TABLE update_reminders (
    update_id INTEGER NOT NULL REFERENCES updates(id),
    event TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    sent_at TEXT NOT NULL,
    PRIMARY KEY (update_id, event, starts_at)
);
-- The policy set through PUT /update-policy (single row).
CREATE TABLE update_policy (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    policy TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    updated_by TEXT NOT NULL
);
