//! Restore drills: each drill's backup, state, timings and findings. The `drills` table is
//! also the drill worker's queue: queued drills are claimed oldest first.

use serde::Serialize;

use super::*;

/// A restore drill as stored.
#[derive(Debug, Clone, Serialize)]
pub struct DrillRow {
    pub id: i64,
    pub instance_id: i64,
    pub instance_name: String,
    pub backup_id: i64,
    pub backup_label: String,
    /// `scheduled` or `manual`
    pub origin: String,
    /// The schedule period of a scheduled drill.
    pub slot: Option<String>,
    /// `queued`, `running`, `passed`, `failed` or `skipped`
    pub state: String,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub bytes: Option<u64>,
    /// While running: `restore` (writing the throwaway file) or `check`.
    pub stage: Option<String>,
    pub progress_done: u64,
    pub progress_total: u64,
    pub hash_ok: Option<bool>,
    pub integrity_ok: Option<bool>,
    pub row_counts_ok: Option<bool>,
    pub db_hash: Option<String>,
    pub problems: Vec<String>,
    pub attempts: u32,
}

/// A drill to queue.
#[derive(Debug, Clone)]
pub struct NewDrill {
    pub instance_id: i64,
    pub instance_name: String,
    pub backup_id: i64,
    pub backup_label: String,
    pub origin: String,
    pub slot: Option<String>,
    pub requested_by: String,
}

/// Which instances a drills fleet view lists: those that need attention at a moment (their
/// newest finished drill failed, or passed before `stale_before`, or they were never
/// drilled), by reason (failed, never, stale) then name.
#[derive(Debug, Clone)]
pub struct DrillAttentionQuery<'a> {
    /// A last drill that passed before this instant is stale.
    pub stale_before: DateTime<Utc>,
    /// Only instances whose last drill failed.
    pub failed_only: bool,
    /// Only names containing this (case-insensitive for ASCII, as SQL `LIKE`).
    pub contains: Option<&'a str>,
    pub offset: i64,
    pub limit: i64,
}

/// A page of the instances that need a drill's attention, and the fleet's counts.
#[derive(Debug, Clone, Default)]
pub struct DrillAttentionPage {
    /// The page: each instance with its reason, `failed`, `never` or `stale`.
    pub rows: Vec<(InstanceRow, String)>,
    /// Live instances looked at (the whole fleet).
    pub instances: u64,
    /// In the whole fleet: last drill failed, never drilled, last drill stale.
    pub failed: u64,
    pub never: u64,
    pub stale: u64,
    /// Instances that need attention and match the query's filters (every page's total).
    pub matching: u64,
}

const DRILL_COLS: &str = "id, instance_id, instance_name, backup_id, backup_label, origin, slot, state, requested_by, created_at, started_at, finished_at, duration_ms, bytes, stage, progress_done, progress_total, hash_ok, integrity_ok, row_counts_ok, db_hash, problems, attempts";

/// The states of a drill that has ended with a verdict.
const FINISHED: &str = "('passed', 'failed')";

fn drill_row(r: &Row) -> sql::Result<DrillRow> {
    let problems: String = r.get(21)?;
    Ok(DrillRow {
        id: r.get(0)?,
        instance_id: r.get(1)?,
        instance_name: r.get(2)?,
        backup_id: r.get(3)?,
        backup_label: r.get(4)?,
        origin: r.get(5)?,
        slot: r.get(6)?,
        state: r.get(7)?,
        requested_by: r.get(8)?,
        created_at: parse_ts(&r.get::<_, String>(9)?)?,
        started_at: parse_opt_ts(r.get(10)?)?,
        finished_at: parse_opt_ts(r.get(11)?)?,
        duration_ms: r.get::<_, Option<i64>>(12)?.map(|v| v as u64),
        bytes: r.get::<_, Option<i64>>(13)?.map(|v| v as u64),
        stage: r.get(14)?,
        progress_done: r.get::<_, i64>(15)? as u64,
        progress_total: r.get::<_, i64>(16)? as u64,
        hash_ok: r.get(17)?,
        integrity_ok: r.get(18)?,
        row_counts_ok: r.get(19)?,
        db_hash: r.get(20)?,
        problems: serde_json::from_str(&problems).unwrap_or_else(|_| vec![problems]),
        attempts: r.get::<_, i64>(22)? as u32,
    })
}

/// Restore drills.
impl Db<'_> {
    /// Queues a drill; `Ok(None)` when a scheduled drill of that instance already exists for
    /// the same period.
    pub fn insert_drill(&self, new: &NewDrill, at: DateTime<Utc>) -> Result<Option<DrillRow>> {
        let n = self.conn.execute(
            "INSERT INTO drills (instance_id, instance_name, backup_id, backup_label, origin, slot, state, requested_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'queued', ?7, ?8) ON CONFLICT DO NOTHING",
            params![
                new.instance_id,
                new.instance_name,
                new.backup_id,
                new.backup_label,
                new.origin,
                new.slot,
                new.requested_by,
                ts(at)
            ],
        )?;
        if n == 0 {
            return Ok(None);
        }
        self.drill(self.conn.last_insert_rowid()?)
    }

    pub fn drill(&self, id: i64) -> Result<Option<DrillRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {DRILL_COLS} FROM drills WHERE id = ?1"),
                [id],
                drill_row,
            )
            .optional()?)
    }

    /// Whether a scheduled drill of the instance exists for the period `slot`.
    pub fn drill_slot_taken(&self, instance_id: i64, slot: &str) -> Result<bool> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM drills WHERE instance_id = ?1 AND slot = ?2",
            params![instance_id, slot],
            |r| r.get::<_, i64>(0),
        )? > 0)
    }

    /// Which (instance id, slot) pairs among these slots already have a drill.
    pub fn drill_slots_taken(
        &self,
        slots: &[String],
    ) -> Result<std::collections::HashSet<(i64, String)>> {
        let mut out = std::collections::HashSet::new();
        for slot in slots {
            let mut st = self
                .conn
                .prepare("SELECT instance_id, slot FROM drills WHERE slot = ?1")?;
            let rows: Vec<(i64, String)> = st
                .query_map([slot], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<sql::Result<_>>()?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The oldest queued drill.
    pub fn next_queued_drill(&self) -> Result<Option<DrillRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {DRILL_COLS} FROM drills WHERE state = 'queued' ORDER BY id LIMIT 1"
                ),
                [],
                drill_row,
            )
            .optional()?)
    }

    /// Drills in `state`, oldest first.
    pub fn drills_in_state(&self, state: &str) -> Result<Vec<DrillRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {DRILL_COLS} FROM drills WHERE state = ?1 ORDER BY id"
        ))?;
        let rows = st
            .query_map([state], drill_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// The instance's queued or running drill, if any.
    pub fn active_drill(&self, instance_id: i64) -> Result<Option<DrillRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {DRILL_COLS} FROM drills WHERE instance_id = ?1 AND state IN ('queued', 'running') ORDER BY id LIMIT 1"
                ),
                [instance_id],
                drill_row,
            )
            .optional()?)
    }

    /// Moves a queued drill to running; `false` if it was no longer queued.
    pub fn start_drill(&self, id: i64, at: DateTime<Utc>) -> Result<bool> {
        let n = self.conn.execute(
            "UPDATE drills SET state = 'running', started_at = ?2, attempts = attempts + 1,
             stage = NULL, progress_done = 0, progress_total = 0 WHERE id = ?1 AND state = 'queued'",
            params![id, ts(at)],
        )?;
        Ok(n == 1)
    }

    pub fn set_drill_progress(&self, id: i64, stage: &str, done: u64, total: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE drills SET stage = ?2, progress_done = ?3, progress_total = ?4 WHERE id = ?1",
            params![id, stage, done as i64, total as i64],
        )?;
        Ok(())
    }

    /// Puts a running drill back in the queue (cancelled to make way for a user's restore, or
    /// interrupted by a stop); it runs again later.
    pub fn requeue_drill(&self, id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE drills SET state = 'queued', started_at = NULL, stage = NULL, progress_done = 0, progress_total = 0
             WHERE id = ?1 AND state = 'running'",
            [id],
        )?;
        Ok(())
    }

    /// Writes a drill's outcome: state, timings, findings.
    pub fn finish_drill(&self, d: &DrillRow) -> Result<()> {
        self.conn.execute(
            "UPDATE drills SET state = ?2, finished_at = ?3, duration_ms = ?4, bytes = ?5, hash_ok = ?6,
             integrity_ok = ?7, row_counts_ok = ?8, db_hash = ?9, problems = ?10,
             stage = NULL, progress_done = ?11, progress_total = ?12 WHERE id = ?1",
            params![
                d.id,
                d.state,
                d.finished_at.map(ts),
                d.duration_ms.map(|v| v as i64),
                d.bytes.map(|v| v as i64),
                d.hash_ok,
                d.integrity_ok,
                d.row_counts_ok,
                d.db_hash,
                serde_json::to_string(&d.problems).unwrap_or_else(|_| "[]".into()),
                d.progress_done as i64,
                d.progress_total as i64
            ],
        )?;
        Ok(())
    }

    /// Each instance's newest finished (passed or failed) drill, by instance id.
    pub fn last_drills(&self) -> Result<Vec<DrillRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {DRILL_COLS} FROM (
                SELECT *, row_number() OVER (PARTITION BY instance_id ORDER BY finished_at DESC, id DESC) AS n
                FROM drills WHERE state IN {FINISHED}
             ) latest WHERE n = 1 ORDER BY instance_id"
        ))?;
        let rows = st.query_map([], drill_row)?.collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// The newest finished drill of each of these instances (those never drilled have none).
    pub fn last_drills_of(&self, instance_ids: &[i64]) -> Result<Vec<DrillRow>> {
        let mut out = Vec::new();
        for chunk in instance_ids.chunks(500) {
            let ids = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut st = self.conn.prepare(&format!(
                "SELECT {DRILL_COLS} FROM (
                    SELECT *, row_number() OVER (PARTITION BY instance_id ORDER BY finished_at DESC, id DESC) AS n
                    FROM drills WHERE state IN {FINISHED} AND instance_id IN ({ids})
                 ) latest WHERE n = 1 ORDER BY instance_id"
            ))?;
            let rows: Vec<DrillRow> = st.query_map([], drill_row)?.collect::<sql::Result<_>>()?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The instances that need a drill's attention (see [`DrillAttentionQuery`]): one page
    /// of them and the fleet's counts, in one statement (plus one for the page's instances)
    /// whatever the fleet's size.
    pub fn drill_attention(&self, q: &DrillAttentionQuery<'_>) -> Result<DrillAttentionPage> {
        // `lasts`: each live instance with its newest finished drill. PostgreSQL ranks every
        // finished drill once and hash-joins; SQLite looks each instance's up through its
        // index (its join of a ranked subquery to 10,000 instances takes seconds).
        let lasts = if self.conn.is_postgres() {
            format!(
                "lasts AS (
                    SELECT i.id AS fleet_id, i.name AS fleet_name, r.id AS last_id,
                        r.state AS last_state, COALESCE(r.finished_at, r.created_at) AS last_at
                    FROM instances i LEFT JOIN (
                        SELECT id, instance_id, state, finished_at, created_at, row_number() OVER (
                            PARTITION BY instance_id ORDER BY finished_at DESC, id DESC) AS n
                        FROM drills WHERE state IN {FINISHED}
                    ) r ON r.instance_id = i.id AND r.n = 1
                    WHERE i.deleted_at IS NULL
                 )"
            )
        } else {
            format!(
                "lasts AS (
                    SELECT l.fleet_id, l.fleet_name, d.id AS last_id, d.state AS last_state,
                        COALESCE(d.finished_at, d.created_at) AS last_at
                    FROM (
                        SELECT i.id AS fleet_id, i.name AS fleet_name, (
                            SELECT d.id FROM drills d WHERE d.instance_id = i.id AND d.state IN {FINISHED}
                            ORDER BY d.finished_at DESC, d.id DESC LIMIT 1
                        ) AS last_id
                        FROM instances i WHERE i.deleted_at IS NULL
                    ) l LEFT JOIN drills d ON d.id = l.last_id
                 )"
            )
        };
        // Each live instance with its reason (NULL: its last drill passed recently), the
        // rule of `steward_core::drill::attention`.
        let fleet = "fleet AS (
                SELECT fleet_id, fleet_name,
                    CASE WHEN last_id IS NULL THEN 'never'
                         WHEN last_state = 'failed' THEN 'failed'
                         WHEN last_at < ?1 THEN 'stale'
                    END AS reason
                FROM lasts
             )";
        let only_failed = if q.failed_only {
            "reason = 'failed'"
        } else {
            "reason IS NOT NULL"
        };
        let matches = format!(
            "{only_failed} AND (?2 IS NULL OR LOWER(fleet_name) LIKE LOWER(?2) ESCAPE '\\')"
        );
        let order = "CASE reason WHEN 'failed' THEN 0 WHEN 'never' THEN 1 ELSE 2 END, fleet_name";
        // Part 0: the counts by reason (all, and those the filters keep); part 1: the page,
        // with each row's place on it.
        let mut st = self.conn.prepare(&format!(
            "WITH {lasts}, {fleet},
             counted AS (
                SELECT reason, COUNT(*) AS n, SUM(CASE WHEN {matches} THEN 1 ELSE 0 END) AS m
                FROM fleet GROUP BY reason
             ),
             paged AS (
                SELECT fleet_id, fleet_name, reason FROM fleet WHERE {matches}
                ORDER BY {order} LIMIT ?3 OFFSET ?4
             )
             SELECT 0 AS part, reason, CAST(n AS BIGINT), CAST(m AS BIGINT), NULL AS fleet_id
             FROM counted
             UNION ALL
             SELECT 1, reason, row_number() OVER (ORDER BY {order}), 0, fleet_id FROM paged"
        ))?;
        let parts: Vec<AttentionPart> = st
            .query_map(
                params![
                    ts(q.stale_before),
                    q.contains.map(like_pattern),
                    q.limit.max(0),
                    q.offset.max(0)
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )?
            .collect::<sql::Result<_>>()?;
        let mut out = DrillAttentionPage::default();
        let mut page: Vec<(i64, i64, String)> = Vec::new();
        for (part, reason, n, m, id) in parts {
            match (part, reason, id) {
                (0, reason, _) => {
                    let all = n.max(0) as u64;
                    out.instances += all;
                    out.matching += m.max(0) as u64;
                    match reason.as_deref() {
                        Some("failed") => out.failed = all,
                        Some("never") => out.never = all,
                        Some("stale") => out.stale = all,
                        _ => {}
                    }
                }
                (_, Some(reason), Some(id)) => page.push((n, id, reason)),
                _ => {}
            }
        }
        page.sort_unstable_by_key(|(place, _, _)| *place);
        let ids: Vec<i64> = page.iter().map(|(_, id, _)| *id).collect();
        let mut rows: std::collections::HashMap<i64, InstanceRow> = self
            .instances_by_ids(&ids)?
            .into_iter()
            .map(|r| (r.id, r))
            .collect();
        out.rows = page
            .into_iter()
            .filter_map(|(_, id, reason)| rows.remove(&id).map(|r| (r, reason)))
            .collect();
        Ok(out)
    }

    /// Which of these instances have a completed backup in the repository (one a drill can
    /// test).
    pub fn instances_with_completed_backup(&self, instance_ids: &[i64]) -> Result<Vec<i64>> {
        let mut out = Vec::new();
        for chunk in instance_ids.chunks(500) {
            let ids = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut st = self.conn.prepare(&format!(
                "SELECT DISTINCT instance_id FROM backups WHERE instance_id IN ({ids})
                 AND status = 'completed' AND repo_id IS NOT NULL ORDER BY instance_id"
            ))?;
            let rows: Vec<i64> = st
                .query_map([], |r| r.get::<_, i64>(0))?
                .collect::<sql::Result<_>>()?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The instance's newest finished drill.
    pub fn last_drill(&self, instance_id: i64) -> Result<Option<DrillRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {DRILL_COLS} FROM drills WHERE instance_id = ?1 AND state IN {FINISHED}
                     ORDER BY finished_at DESC, id DESC LIMIT 1"
                ),
                [instance_id],
                drill_row,
            )
            .optional()?)
    }

    /// The newest finished drill of one backup.
    pub fn last_drill_of_backup(&self, backup_id: i64) -> Result<Option<DrillRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {DRILL_COLS} FROM drills WHERE backup_id = ?1 AND state IN {FINISHED}
                     ORDER BY finished_at DESC, id DESC LIMIT 1"
                ),
                [backup_id],
                drill_row,
            )
            .optional()?)
    }

    /// Drills newest first, of one instance or of all; at most `limit`.
    pub fn list_drills(&self, instance_id: Option<i64>, limit: i64) -> Result<Vec<DrillRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {DRILL_COLS} FROM drills WHERE (?1 IS NULL OR instance_id = ?1) ORDER BY id DESC LIMIT ?2"
        ))?;
        let rows = st
            .query_map(params![instance_id, limit.clamp(1, 1000)], drill_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// The newest completed backup of an instance (the one a scheduled drill tests).
    pub fn newest_completed_backup(&self, instance_id: i64) -> Result<Option<BackupRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {BACKUP_COLS} FROM backups WHERE instance_id = ?1 AND status = 'completed'
                     AND repo_id IS NOT NULL ORDER BY completed_at DESC, id DESC LIMIT 1"
                ),
                [instance_id],
                backup_row,
            )
            .optional()?)
    }

    /// Whether a job of one of `kinds` is queued or running.
    pub fn jobs_active_of_kinds(&self, kinds: &[&str]) -> Result<bool> {
        if kinds.is_empty() {
            return Ok(false);
        }
        let marks = (1..=kinds.len())
            .map(|i| format!("?{i}"))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(self.conn.query_row(
            &format!(
                "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running') AND kind IN ({marks})"
            ),
            sql::params_from_iter(kinds.iter()),
            |r| r.get::<_, i64>(0),
        )? > 0)
    }
}

/// A row of [`Db::drill_attention`]'s statement: part (0: a count, 1: a row of the page),
/// reason, count or place on the page, count kept by the filters, instance id.
type AttentionPart = (i64, Option<String>, i64, i64, Option<i64>);

/// A `LIKE` pattern for names containing `text` (its `%`, `_` and `\` taken literally, with
/// `ESCAPE '\'`).
fn like_pattern(text: &str) -> String {
    let escaped = text
        .replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_");
    format!("%{escaped}%")
}
