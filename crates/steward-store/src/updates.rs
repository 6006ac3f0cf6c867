//! Updates: scheduled release updates of instances, their windows, approvals, stages,
//! rehearsals, timeline, reminder bookkeeping and the stored update policy.

use super::*;
use serde::Serialize;
use steward_core::update::UpdateStatus;

/// One update of one instance.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateRow {
    pub id: i64,
    pub instance_id: i64,
    pub instance_name: String,
    pub from_release: String,
    pub target_release: String,
    /// `major` or `service`
    pub kind: String,
    pub mandatory: bool,
    /// Scheduled by System under the policy (mandatory or automatic service update).
    pub automatic: bool,
    pub status: UpdateStatus,
    pub needs_approval: bool,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub preferred_start: DateTime<Utc>,
    pub preferred_end: DateTime<Utc>,
    pub alternate_start: DateTime<Utc>,
    pub alternate_end: DateTime<Utc>,
    /// `preferred` or `alternate`
    pub active_window: String,
    pub stage: Option<String>,
    pub error: Option<String>,
    pub backup_id: Option<i64>,
    pub job_id: Option<i64>,
    /// Reminders due after this instant are still to be sent.
    pub reminders_since: DateTime<Utc>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl UpdateRow {
    /// Start and end of the window the update runs in next.
    pub fn active(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        if self.active_window == "alternate" {
            (self.alternate_start, self.alternate_end)
        } else {
            (self.preferred_start, self.preferred_end)
        }
    }
}

/// One entry of an update's timeline.
#[derive(Debug, Clone, Serialize)]
pub struct UpdateEventRow {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub event: String,
    pub details: serde_json::Value,
}

/// One rehearsal: the upgrade run on a throwaway copy of an instance.
#[derive(Debug, Clone, Serialize)]
pub struct RehearsalRow {
    pub id: i64,
    pub update_id: Option<i64>,
    pub instance_name: String,
    pub sandbox: String,
    pub target_release: String,
    /// `running`, `succeeded` or `failed`
    pub status: String,
    pub automatic: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub problems: Vec<String>,
    pub job_id: Option<i64>,
    pub created_by: String,
}

const UPDATE_COLS: &str = "id, instance_id, instance_name, from_release, target_release, kind, mandatory, automatic, status, needs_approval, approved_by, approved_at, preferred_start, preferred_end, alternate_start, alternate_end, active_window, stage, error, backup_id, job_id, reminders_since, created_by, created_at, started_at, finished_at";

fn update_row(r: &Row) -> sql::Result<UpdateRow> {
    Ok(UpdateRow {
        id: r.get(0)?,
        instance_id: r.get(1)?,
        instance_name: r.get(2)?,
        from_release: r.get(3)?,
        target_release: r.get(4)?,
        kind: r.get(5)?,
        mandatory: r.get(6)?,
        automatic: r.get(7)?,
        status: parse_word(r.get(8)?)?,
        needs_approval: r.get(9)?,
        approved_by: r.get(10)?,
        approved_at: parse_opt_ts(r.get(11)?)?,
        preferred_start: parse_ts(&r.get::<_, String>(12)?)?,
        preferred_end: parse_ts(&r.get::<_, String>(13)?)?,
        alternate_start: parse_ts(&r.get::<_, String>(14)?)?,
        alternate_end: parse_ts(&r.get::<_, String>(15)?)?,
        active_window: r.get(16)?,
        stage: r.get(17)?,
        error: r.get(18)?,
        backup_id: r.get(19)?,
        job_id: r.get(20)?,
        reminders_since: parse_ts(&r.get::<_, String>(21)?)?,
        created_by: r.get(22)?,
        created_at: parse_ts(&r.get::<_, String>(23)?)?,
        started_at: parse_opt_ts(r.get(24)?)?,
        finished_at: parse_opt_ts(r.get(25)?)?,
    })
}

const REHEARSAL_COLS: &str = "id, update_id, instance_name, sandbox, target_release, status, automatic, started_at, finished_at, duration_ms, problems, job_id, created_by";

fn rehearsal_row(r: &Row) -> sql::Result<RehearsalRow> {
    let problems: String = r.get(10)?;
    Ok(RehearsalRow {
        id: r.get(0)?,
        update_id: r.get(1)?,
        instance_name: r.get(2)?,
        sandbox: r.get(3)?,
        target_release: r.get(4)?,
        status: r.get(5)?,
        automatic: r.get(6)?,
        started_at: parse_ts(&r.get::<_, String>(7)?)?,
        finished_at: parse_opt_ts(r.get(8)?)?,
        duration_ms: r.get(9)?,
        problems: serde_json::from_str(&problems).unwrap_or_default(),
        job_id: r.get(11)?,
        created_by: r.get(12)?,
    })
}

const OPEN: &str = "('scheduled', 'queued', 'in_progress', 'waiting')";

/// Updates, their timeline, stages, rehearsals, reminders and the stored policy.
impl Db<'_> {
    /// Inserts an update (its `id` is ignored); `Ok(None)` if the instance already has an
    /// open update.
    pub fn insert_update(&self, u: &UpdateRow) -> Result<Option<UpdateRow>> {
        let n = self.conn.execute(
            "INSERT INTO updates (instance_id, instance_name, from_release, target_release, kind, mandatory, automatic, status, needs_approval, approved_by, approved_at, preferred_start, preferred_end, alternate_start, alternate_end, active_window, reminders_since, created_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)
             ON CONFLICT DO NOTHING",
            params![
                u.instance_id,
                u.instance_name,
                u.from_release,
                u.target_release,
                u.kind,
                u.mandatory,
                u.automatic,
                u.status.as_str(),
                u.needs_approval,
                u.approved_by,
                u.approved_at.map(ts),
                ts(u.preferred_start),
                ts(u.preferred_end),
                ts(u.alternate_start),
                ts(u.alternate_end),
                u.active_window,
                ts(u.reminders_since),
                u.created_by,
                ts(u.created_at),
            ],
        )?;
        if n == 0 {
            return Ok(None);
        }
        self.update(self.conn.last_insert_rowid()?)
    }

    pub fn update(&self, id: i64) -> Result<Option<UpdateRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {UPDATE_COLS} FROM updates WHERE id = ?1"),
                [id],
                update_row,
            )
            .optional()?)
    }

    /// The instance's open update (scheduled, queued, in progress or waiting), if any.
    pub fn open_update(&self, instance_id: i64) -> Result<Option<UpdateRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {UPDATE_COLS} FROM updates WHERE instance_id = ?1 AND status IN {OPEN}"
                ),
                [instance_id],
                update_row,
            )
            .optional()?)
    }

    /// Updates newest first, optionally of one instance and/or in one status.
    pub fn list_updates(
        &self,
        instance: Option<&str>,
        status: Option<UpdateStatus>,
        limit: i64,
    ) -> Result<Vec<UpdateRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {UPDATE_COLS} FROM updates WHERE (?1 IS NULL OR instance_name = ?1) AND (?2 IS NULL OR status = ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = st
            .query_map(
                params![
                    instance,
                    status.map(UpdateStatus::as_str),
                    limit.clamp(1, 10_000)
                ],
                update_row,
            )?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// The updates of an instance (by id), newest first.
    pub fn instance_updates(&self, instance_id: i64) -> Result<Vec<UpdateRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {UPDATE_COLS} FROM updates WHERE instance_id = ?1 ORDER BY id DESC"
        ))?;
        let rows = st
            .query_map([instance_id], update_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// The update each of these instances shows in a fleet view: its open update, else its
    /// newest one (instances never updated have none). One query per 500 instances.
    pub fn shown_updates_of(&self, instance_ids: &[i64]) -> Result<Vec<UpdateRow>> {
        let mut out = Vec::with_capacity(instance_ids.len());
        for chunk in instance_ids.chunks(500) {
            let ids = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut st = self.conn.prepare(&format!(
                "SELECT {UPDATE_COLS} FROM (
                    SELECT *, row_number() OVER (
                        PARTITION BY instance_id
                        ORDER BY CASE WHEN status IN {OPEN} THEN 0 ELSE 1 END, id DESC
                    ) AS n
                    FROM updates WHERE instance_id IN ({ids})
                 ) shown WHERE n = 1 ORDER BY instance_id"
            ))?;
            let rows: Vec<UpdateRow> = st.query_map([], update_row)?.collect::<sql::Result<_>>()?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// How many live instances are on each release (release, count), by release: what the
    /// fleet's counts that depend only on the release (e.g. "update available") are
    /// computed from, without loading every instance.
    pub fn live_instances_by_release(&self) -> Result<Vec<(String, u64)>> {
        let mut st = self.conn.prepare(
            "SELECT release, COUNT(*) FROM instances WHERE deleted_at IS NULL
             GROUP BY release ORDER BY release",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Open updates, oldest first.
    pub fn open_updates(&self) -> Result<Vec<UpdateRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {UPDATE_COLS} FROM updates WHERE status IN {OPEN} ORDER BY id"
        ))?;
        let rows = st.query_map([], update_row)?.collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Writes every mutable field of an update.
    pub fn save_update(&self, u: &UpdateRow) -> Result<()> {
        self.conn.execute(
            "UPDATE updates SET target_release = ?2, kind = ?3, mandatory = ?4, status = ?5, needs_approval = ?6,
                approved_by = ?7, approved_at = ?8, preferred_start = ?9, preferred_end = ?10,
                alternate_start = ?11, alternate_end = ?12, active_window = ?13, stage = ?14, error = ?15,
                backup_id = ?16, job_id = ?17, reminders_since = ?18, started_at = ?19, finished_at = ?20
             WHERE id = ?1",
            params![
                u.id,
                u.target_release,
                u.kind,
                u.mandatory,
                u.status.as_str(),
                u.needs_approval,
                u.approved_by,
                u.approved_at.map(ts),
                ts(u.preferred_start),
                ts(u.preferred_end),
                ts(u.alternate_start),
                ts(u.alternate_end),
                u.active_window,
                u.stage,
                u.error,
                u.backup_id,
                u.job_id,
                ts(u.reminders_since),
                u.started_at.map(ts),
                u.finished_at.map(ts),
            ],
        )?;
        Ok(())
    }

    /// Appends an entry to an update's timeline.
    pub fn insert_update_event(
        &self,
        update_id: i64,
        at: DateTime<Utc>,
        actor: &str,
        event: &str,
        details: &serde_json::Value,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO update_events (update_id, at, actor, event, details) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![update_id, ts(at), actor, event, details.to_string()],
        )?;
        Ok(())
    }

    pub fn update_events(&self, update_id: i64) -> Result<Vec<UpdateEventRow>> {
        let mut st = self.conn.prepare(
            "SELECT at, actor, event, details FROM update_events WHERE update_id = ?1 ORDER BY id",
        )?;
        let rows = st
            .query_map([update_id], |r| {
                let details: String = r.get(3)?;
                Ok(UpdateEventRow {
                    at: parse_ts(&r.get::<_, String>(0)?)?,
                    actor: r.get(1)?,
                    event: r.get(2)?,
                    details: serde_json::from_str(&details)
                        .unwrap_or(serde_json::Value::String(details)),
                })
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Enters `stage` of an update (closing the previous one) and records it on the update.
    pub fn set_update_stage(&self, update_id: i64, stage: &str, at: DateTime<Utc>) -> Result<()> {
        self.finish_update_stage(update_id, at)?;
        self.conn.execute(
            "INSERT INTO update_stages (update_id, seq, stage, started_at)
             VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM update_stages WHERE update_id = ?1), ?2, ?3)",
            params![update_id, stage, ts(at)],
        )?;
        self.conn.execute(
            "UPDATE updates SET stage = ?2 WHERE id = ?1",
            params![update_id, stage],
        )?;
        Ok(())
    }

    /// Closes the update's open stage, if any.
    pub fn finish_update_stage(&self, update_id: i64, at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "UPDATE update_stages SET finished_at = ?2 WHERE update_id = ?1 AND finished_at IS NULL",
            params![update_id, ts(at)],
        )?;
        Ok(())
    }

    /// The stages of every attempt of an update, in order.
    pub fn update_stages(&self, update_id: i64) -> Result<Vec<JobStageRow>> {
        let mut st = self.conn.prepare(
            "SELECT stage, started_at, finished_at FROM update_stages WHERE update_id = ?1 ORDER BY seq",
        )?;
        let rows = st
            .query_map([update_id], |r| {
                Ok(JobStageRow {
                    stage: r.get(0)?,
                    started_at: parse_ts(&r.get::<_, String>(1)?)?,
                    finished_at: parse_opt_ts(r.get(2)?)?,
                })
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Inserts a running rehearsal (its `id` is ignored).
    pub fn insert_rehearsal(&self, r: &RehearsalRow) -> Result<RehearsalRow> {
        self.conn.execute(
            "INSERT INTO update_rehearsals (update_id, instance_name, sandbox, target_release, status, automatic, started_at, problems, job_id, created_by)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                r.update_id,
                r.instance_name,
                r.sandbox,
                r.target_release,
                r.status,
                r.automatic,
                ts(r.started_at),
                serde_json::to_string(&r.problems).unwrap_or_else(|_| "[]".into()),
                r.job_id,
                r.created_by,
            ],
        )?;
        let id = self.conn.last_insert_rowid()?;
        self.rehearsal(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("rehearsal {id} vanished")))
    }

    pub fn rehearsal(&self, id: i64) -> Result<Option<RehearsalRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {REHEARSAL_COLS} FROM update_rehearsals WHERE id = ?1"),
                [id],
                rehearsal_row,
            )
            .optional()?)
    }

    pub fn save_rehearsal(&self, r: &RehearsalRow) -> Result<()> {
        self.conn.execute(
            "UPDATE update_rehearsals SET update_id = ?2, sandbox = ?3, status = ?4, finished_at = ?5, duration_ms = ?6, problems = ?7, job_id = ?8 WHERE id = ?1",
            params![
                r.id,
                r.update_id,
                r.sandbox,
                r.status,
                r.finished_at.map(ts),
                r.duration_ms,
                serde_json::to_string(&r.problems).unwrap_or_else(|_| "[]".into()),
                r.job_id,
            ],
        )?;
        Ok(())
    }

    /// Rehearsals attached to an update, newest first.
    pub fn update_rehearsals(&self, update_id: i64) -> Result<Vec<RehearsalRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {REHEARSAL_COLS} FROM update_rehearsals WHERE update_id = ?1 ORDER BY id DESC"
        ))?;
        let rows = st
            .query_map([update_id], rehearsal_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// The rehearsals of `instance` since `since` (its creation), attached to an update or
    /// not, newest first, at most `limit`.
    pub fn instance_rehearsals(
        &self,
        instance: &str,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<RehearsalRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {REHEARSAL_COLS} FROM update_rehearsals
             WHERE instance_name = ?1 AND started_at >= ?2 ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = st
            .query_map(
                params![instance, ts(since), limit.clamp(1, 1000)],
                rehearsal_row,
            )?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Records that `event` was sent for the update starting at `starts_at`; `false` if it
    /// already was (nothing is written then).
    pub fn record_reminder(
        &self,
        update_id: i64,
        event: &str,
        starts_at: DateTime<Utc>,
        sent_at: DateTime<Utc>,
    ) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT INTO update_reminders (update_id, event, starts_at, sent_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            params![update_id, event, ts(starts_at), ts(sent_at)],
        )?;
        Ok(n > 0)
    }

    /// The policy stored through the API, as JSON, with when and by whom.
    pub fn update_policy(&self) -> Result<Option<(String, DateTime<Utc>, String)>> {
        self.conn
            .query_row(
                "SELECT policy, updated_at, updated_by FROM update_policy WHERE id = 1",
                [],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        parse_ts(&r.get::<_, String>(1)?)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )
            .optional()
            .map_err(StoreError::from)
    }

    pub fn set_update_policy(&self, policy: &str, at: DateTime<Utc>, by: &str) -> Result<()> {
        self.conn.execute(
            "INSERT INTO update_policy (id, policy, updated_at, updated_by) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT(id) DO UPDATE SET policy = excluded.policy, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
            params![policy, ts(at), by],
        )?;
        Ok(())
    }

    /// Live instances whose storage is left out of the total now: those whose open update
    /// `UpdateStatus::omits_storage` (seed 001, "Storage Utilization Calculation": from the
    /// moment the update is Queued (Not Started) until its Database Upgrade has completed).
    pub fn instances_left_out_of_storage(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {UPDATE_COLS} FROM updates WHERE status IN {OPEN}
             AND instance_id IN (SELECT id FROM instances WHERE deleted_at IS NULL)"
        ))?;
        let rows: Vec<UpdateRow> = st.query_map([], update_row)?.collect::<sql::Result<_>>()?;
        Ok(rows
            .into_iter()
            .filter(|u| u.status.omits_storage(u.stage.as_deref()))
            .map(|u| u.instance_name)
            .collect())
    }

    /// The instances left out of the storage total now (see
    /// [`Db::instances_left_out_of_storage`]), and the recorded storage of those whose name
    /// contains `contains` (case-insensitive, as [`Db::instance_page`] filters), or of all of
    /// them: what a total of recorded storage must subtract.
    pub fn storage_left_out(&self, contains: Option<&str>) -> Result<StorageLeftOut> {
        let names = self.instances_left_out_of_storage()?;
        let needle = contains.map(str::to_lowercase);
        let mut bytes = 0u64;
        for name in &names {
            if needle
                .as_deref()
                .is_some_and(|n| !name.to_lowercase().contains(n))
            {
                continue;
            }
            if let Some(row) = self.instance_by_name(name)? {
                bytes += row.storage_bytes;
            }
        }
        Ok(StorageLeftOut { names, bytes })
    }
}
