//! Schema migrations of the control-plane store, applied in order at open. The schema version
//! is SQLite's `user_version`. Never edit a shipped migration; append a new one.

use rusqlite::Connection;

use crate::StoreError;

const MIGRATIONS: &[&str] = &[
    // 1: users, tokens, sessions, instances, audit log
    r#"
    CREATE TABLE users (
        id INTEGER PRIMARY KEY,
        username TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        password_hash TEXT NOT NULL,
        created_at TEXT NOT NULL,
        disabled_at TEXT
    );
    CREATE TABLE api_tokens (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        name TEXT NOT NULL,
        token_hash TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL,
        last_used_at TEXT,
        revoked_at TEXT
    );
    CREATE TABLE sessions (
        token_hash TEXT PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id),
        csrf_token TEXT NOT NULL,
        created_at TEXT NOT NULL,
        expires_at TEXT NOT NULL
    );
    CREATE TABLE instances (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        type TEXT NOT NULL,
        engine TEXT NOT NULL,
        release TEXT NOT NULL,
        state TEXT NOT NULL,
        database_path TEXT NOT NULL,
        documents_path TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE UNIQUE INDEX instances_live_name ON instances(name) WHERE deleted_at IS NULL;
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        details TEXT NOT NULL
    );
    CREATE INDEX audit_log_target ON audit_log(target);
    "#,
    // 2: durable jobs with stages and progress
    r#"
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL,
        stage TEXT,
        progress_done INTEGER NOT NULL DEFAULT 0,
        progress_total INTEGER NOT NULL DEFAULT 0,
        params TEXT NOT NULL,
        result TEXT,
        last_error TEXT,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT
    );
    CREATE INDEX jobs_state ON jobs(state, id);
    CREATE TABLE job_stages (
        job_id INTEGER NOT NULL REFERENCES jobs(id),
        seq INTEGER NOT NULL,
        stage TEXT NOT NULL,
        started_at TEXT NOT NULL,
        finished_at TEXT,
        PRIMARY KEY (job_id, seq)
    );
    "#,
    // 3: backups and in-product alerts
    r#"
    CREATE TABLE backups (
        id INTEGER PRIMARY KEY,
        instance_id INTEGER NOT NULL REFERENCES instances(id),
        instance_name TEXT NOT NULL,
        kind TEXT NOT NULL,
        label TEXT NOT NULL,
        notes TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        release TEXT NOT NULL,
        repo_id TEXT,
        size_bytes INTEGER,
        stored_bytes INTEGER,
        scheduled_for TEXT,
        created_by TEXT NOT NULL,
        created_at TEXT NOT NULL,
        completed_at TEXT,
        expires_at TEXT NOT NULL,
        job_id INTEGER,
        error TEXT
    );
    CREATE INDEX backups_instance ON backups(instance_id, id);
    CREATE UNIQUE INDEX backups_system_day ON backups(instance_id, scheduled_for) WHERE kind = 'system';
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        level TEXT NOT NULL,
        instance TEXT,
        message TEXT NOT NULL
    );
    "#,
    // 4: notifications: users' email, the communications schedule, per-instance recipients,
    // webhooks, and the outbox with one delivery row per channel and recipient
    r#"
    ALTER TABLE users ADD COLUMN email TEXT;
    CREATE TABLE notification_schedule (
        event TEXT PRIMARY KEY,
        audience TEXT NOT NULL,
        channels TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        updated_by TEXT NOT NULL
    );
    CREATE TABLE instance_recipients (
        instance TEXT NOT NULL,
        email TEXT NOT NULL,
        added_at TEXT NOT NULL,
        added_by TEXT NOT NULL,
        PRIMARY KEY (instance, email)
    );
    CREATE TABLE webhooks (
        id INTEGER PRIMARY KEY,
        url TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at TEXT NOT NULL,
        created_by TEXT NOT NULL,
        deleted_at TEXT
    );
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        event TEXT NOT NULL,
        instance TEXT,
        payload TEXT NOT NULL,
        created_at TEXT NOT NULL
    );
    CREATE TABLE deliveries (
        id INTEGER PRIMARY KEY,
        outbox_id INTEGER NOT NULL REFERENCES outbox(id),
        channel TEXT NOT NULL,
        recipient TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT,
        sent_at TEXT,
        UNIQUE (outbox_id, channel, recipient)
    );
    CREATE INDEX deliveries_due ON deliveries(state, next_attempt_at);
    CREATE TABLE alert_dismissals (
        user_id INTEGER NOT NULL REFERENCES users(id),
        alert_id INTEGER NOT NULL REFERENCES alerts(id),
        dismissed_at TEXT NOT NULL,
        PRIMARY KEY (user_id, alert_id)
    );
    "#,
    // 5: in-product alerts for their audience (notifications)
    include_str!("migrations/0005_notify.sql"),
    // 6: updates
    include_str!("migrations/0006_updates.sql"),
    // 7: work items (refreshes)
    include_str!("migrations/0007_workitems.sql"),
    // 8: backup verification results
    include_str!("migrations/0008_verify.sql"),
    // 9: restore drills
    include_str!("migrations/0009_drills.sql"),
    // 10: failed sign-ins and sign-in locks
    include_str!("migrations/0010_login_throttle.sql"),
    // 11: continuous capture chains and segments (point-in-time restore)
    include_str!("migrations/0011_capture.sql"),
    // 12: a refresh to a moment records the capture chain it copies
    include_str!("migrations/0012_workitem_moment.sql"),
    // 13: the Steward nodes, and which node keeps each instance and claimed each job
    include_str!("migrations/0013_nodes.sql"),
    // 14: fleet-wide scheduler ticks and job leases
    include_str!("migrations/0014_fleet_work.sql"),
    // 15: each instance's database storage, recorded by the node that keeps it
    include_str!("migrations/0015_instance_storage.sql"),
];

pub const CURRENT: i64 = MIGRATIONS.len() as i64;

pub fn migrate(conn: &mut Connection, path: &str) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > CURRENT {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: CURRENT,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "migrated the control-plane store");
    }
    Ok(())
}
