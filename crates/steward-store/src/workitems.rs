//! Work items: requested, scheduled operations (database refreshes) and their history.

use serde::Serialize;
use steward_core::workitem::WorkItemStatus;

use super::*;

/// A work item as stored.
#[derive(Debug, Clone, Serialize)]
pub struct WorkItemRow {
    pub id: i64,
    /// `refresh`
    pub kind: String,
    pub source_id: i64,
    pub source: String,
    pub target_id: i64,
    pub target: String,
    /// The requested moment; `None`: the latest.
    pub point_in_time: Option<DateTime<Utc>>,
    /// The backup copied (or to copy), once resolved, and the moment it holds.
    pub restore_backup_id: Option<i64>,
    pub restore_at: Option<DateTime<Utc>>,
    /// For a moment copied from continuous capture: the chain (then `restore_backup_id` is
    /// `None` and `restore_at` is the last commit at or before the moment, once copied).
    pub restore_chain_id: Option<i64>,
    pub window_start: DateTime<Utc>,
    pub status: WorkItemStatus,
    pub requester: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// When the target became unavailable for the swap.
    pub unavailable_at: Option<DateTime<Utc>>,
    pub downtime_ms: Option<i64>,
    pub error: Option<String>,
    pub safety_backup_id: Option<i64>,
    /// JSON array of `{name, ok, message}`.
    pub scripts: serde_json::Value,
    pub job_id: Option<i64>,
}

/// A new work item.
#[derive(Debug, Clone)]
pub struct NewWorkItem {
    pub kind: String,
    pub source_id: i64,
    pub source: String,
    pub target_id: i64,
    pub target: String,
    pub point_in_time: Option<DateTime<Utc>>,
    pub restore_backup_id: Option<i64>,
    pub restore_at: Option<DateTime<Utc>>,
    pub restore_chain_id: Option<i64>,
    pub window_start: DateTime<Utc>,
    pub status: WorkItemStatus,
    pub requester: String,
}

/// One transition in a work item's history.
#[derive(Debug, Clone, Serialize)]
pub struct WorkItemEventRow {
    pub id: i64,
    pub work_item_id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    /// The status after the transition.
    pub status: WorkItemStatus,
    /// `{before, after, ...}`
    pub details: serde_json::Value,
}

const WORK_ITEM_COLS: &str = "id, kind, source_id, source, target_id, target, point_in_time, restore_backup_id, restore_at, window_start, status, requester, created_at, updated_at, started_at, finished_at, unavailable_at, downtime_ms, error, safety_backup_id, scripts, job_id, restore_chain_id";

fn work_item_row(r: &Row) -> sql::Result<WorkItemRow> {
    let scripts: String = r.get(20)?;
    Ok(WorkItemRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        source_id: r.get(2)?,
        source: r.get(3)?,
        target_id: r.get(4)?,
        target: r.get(5)?,
        point_in_time: parse_opt_ts(r.get(6)?)?,
        restore_backup_id: r.get(7)?,
        restore_at: parse_opt_ts(r.get(8)?)?,
        window_start: parse_ts(&r.get::<_, String>(9)?)?,
        status: parse_word(r.get(10)?)?,
        requester: r.get(11)?,
        created_at: parse_ts(&r.get::<_, String>(12)?)?,
        updated_at: parse_ts(&r.get::<_, String>(13)?)?,
        started_at: parse_opt_ts(r.get(14)?)?,
        finished_at: parse_opt_ts(r.get(15)?)?,
        unavailable_at: parse_opt_ts(r.get(16)?)?,
        downtime_ms: r.get(17)?,
        error: r.get(18)?,
        safety_backup_id: r.get(19)?,
        scripts: serde_json::from_str(&scripts).unwrap_or(serde_json::Value::Array(Vec::new())),
        job_id: r.get(21)?,
        restore_chain_id: r.get(22)?,
    })
}

/// Work items and their history.
impl Db<'_> {
    pub fn insert_work_item(&self, new: &NewWorkItem, at: DateTime<Utc>) -> Result<WorkItemRow> {
        self.conn.execute(
            "INSERT INTO work_items (kind, source_id, source, target_id, target, point_in_time, restore_backup_id, restore_at, window_start, status, requester, created_at, updated_at, restore_chain_id)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?12, ?13)",
            params![
                new.kind,
                new.source_id,
                new.source,
                new.target_id,
                new.target,
                new.point_in_time.map(ts),
                new.restore_backup_id,
                new.restore_at.map(ts),
                ts(new.window_start),
                new.status.as_str(),
                new.requester,
                ts(at),
                new.restore_chain_id
            ],
        )?;
        let id = self.conn.last_insert_rowid()?;
        self.work_item(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("work item {id} vanished")))
    }

    pub fn work_item(&self, id: i64) -> Result<Option<WorkItemRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {WORK_ITEM_COLS} FROM work_items WHERE id = ?1"),
                [id],
                work_item_row,
            )
            .optional()?)
    }

    /// Work items, newest first; `instance` matches the source or the target.
    pub fn list_work_items(
        &self,
        status: Option<WorkItemStatus>,
        instance: Option<&str>,
        limit: i64,
    ) -> Result<Vec<WorkItemRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {WORK_ITEM_COLS} FROM work_items
             WHERE (?1 IS NULL OR status = ?1) AND (?2 IS NULL OR source = ?2 OR target = ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = st
            .query_map(
                params![status.map(|s| s.as_str()), instance, limit.clamp(1, 1000)],
                work_item_row,
            )?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Accepted work items whose window has started, oldest window first.
    pub fn due_work_items(&self, now: DateTime<Utc>) -> Result<Vec<WorkItemRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {WORK_ITEM_COLS} FROM work_items WHERE status = 'accepted' AND window_start <= ?1
             ORDER BY window_start, id"
        ))?;
        let rows = st
            .query_map([ts(now)], work_item_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// The work item a job runs, if any.
    pub fn work_item_by_job(&self, job_id: i64) -> Result<Option<WorkItemRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {WORK_ITEM_COLS} FROM work_items WHERE job_id = ?1"),
                [job_id],
                work_item_row,
            )
            .optional()?)
    }

    pub fn update_work_item(&self, w: &WorkItemRow) -> Result<()> {
        self.conn.execute(
            "UPDATE work_items SET point_in_time = ?2, restore_backup_id = ?3, restore_at = ?4, window_start = ?5,
                status = ?6, updated_at = ?7, started_at = ?8, finished_at = ?9, unavailable_at = ?10,
                downtime_ms = ?11, error = ?12, safety_backup_id = ?13, scripts = ?14, job_id = ?15,
                restore_chain_id = ?16
             WHERE id = ?1",
            params![
                w.id,
                w.point_in_time.map(ts),
                w.restore_backup_id,
                w.restore_at.map(ts),
                ts(w.window_start),
                w.status.as_str(),
                ts(w.updated_at),
                w.started_at.map(ts),
                w.finished_at.map(ts),
                w.unavailable_at.map(ts),
                w.downtime_ms,
                w.error,
                w.safety_backup_id,
                w.scripts.to_string(),
                w.job_id,
                w.restore_chain_id
            ],
        )?;
        Ok(())
    }

    /// Records one transition of a work item.
    pub fn insert_work_item_event(
        &self,
        work_item_id: i64,
        at: DateTime<Utc>,
        actor: &str,
        status: WorkItemStatus,
        details: &serde_json::Value,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO work_item_history (work_item_id, at, actor, status, details) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![work_item_id, ts(at), actor, status.as_str(), details.to_string()],
        )?;
        Ok(())
    }

    /// A work item's transitions, oldest first.
    pub fn work_item_history(&self, work_item_id: i64) -> Result<Vec<WorkItemEventRow>> {
        let mut st = self.conn.prepare(
            "SELECT id, work_item_id, at, actor, status, details FROM work_item_history
             WHERE work_item_id = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([work_item_id], |r| {
                let details: String = r.get(5)?;
                Ok(WorkItemEventRow {
                    id: r.get(0)?,
                    work_item_id: r.get(1)?,
                    at: parse_ts(&r.get::<_, String>(2)?)?,
                    actor: r.get(3)?,
                    status: parse_word(r.get(4)?)?,
                    details: serde_json::from_str(&details)
                        .unwrap_or(serde_json::Value::String(details)),
                })
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// An instance's restore points: its completed backups that have not expired at `now`,
    /// oldest first.
    pub fn restore_points(&self, instance_id: i64, now: DateTime<Utc>) -> Result<Vec<BackupRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {BACKUP_COLS} FROM backups
             WHERE instance_id = ?1 AND status = 'completed' AND repo_id IS NOT NULL AND expires_at > ?2
             ORDER BY coalesce(completed_at, created_at), id"
        ))?;
        let rows = st
            .query_map(params![instance_id, ts(now)], backup_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }
}
