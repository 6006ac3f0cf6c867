//! Restore drills (issue 13): on the `restore_drill_schedule` (daily by default, each instance
//! at its fixed offset in the period) and on demand, Steward restores an instance's newest
//! completed backup into a throwaway file under `<data_dir>/drills/` — never into an
//! instance — through `Repository::drill`, which checks the whole-file hash,
//! `PRAGMA integrity_check` and the per-table row counts recorded at backup time, then
//! deletes the file. The result (when, passed or failed, problems, duration, the backup, bytes)
//! is recorded; a failed drill is the `restore_drill_failed` notification.
//!
//! Invariants:
//! - Drills never run in the user job queue: the `drills` table is their own queue, worked by
//!   their own background worker (`lib.rs::run_drills`), one drill at a time on one core
//!   (`DrillOptions::threads = 1`).
//! - Drills never delay a user's restore: a drill does not start while a restore, refresh or
//!   update job is queued or running, and a running drill is cancelled the moment such a job
//!   starts ([`Services::preempt_drill`]); it goes back to the queue and runs again later.
//! - Nothing of a drill outlives it: the scratch directory is emptied after each drill and at
//!   start (a drill a crash interrupted is queued again).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use steward_core::drill::{DrillSchedule, check_stale_days};
use steward_core::notify::Event;
use steward_core::policy::{Action, authorize};
use steward_store::{DrillAttentionQuery, DrillRow, NewDrill};

use super::backups::RESTORE_JOB;
use super::instances::live_instance;
use super::updates::{REHEARSAL_JOB, UPDATE_JOB};
use super::workitems::REFRESH_JOB;
use super::{Actor, Result, Services, audit_entry};
use crate::config::{Config, ConfigError};
use crate::error::ServiceError;

/// Jobs that take priority over drills: a drill waits while one is queued or running, and a
/// running drill is cancelled when one starts.
pub const PREEMPTING_JOBS: [&str; 4] = [RESTORE_JOB, REFRESH_JOB, UPDATE_JOB, REHEARSAL_JOB];

/// Most drills a list answers with.
const LIST_LIMIT: i64 = 200;

/// Drill settings, from the configuration.
#[derive(Debug, Clone)]
pub struct DrillSettings {
    pub schedule: DrillSchedule,
}

impl Default for DrillSettings {
    fn default() -> Self {
        Self {
            schedule: DrillSchedule::Every { hours: 24 },
        }
    }
}

/// Reads `restore_drill_schedule`.
pub fn settings(c: &Config) -> Result<DrillSettings, ConfigError> {
    let schedule = c
        .restore_drill_schedule
        .parse()
        .map_err(|e: steward_core::drill::InvalidDrillSchedule| ConfigError::new(e.to_string()))?;
    Ok(DrillSettings { schedule })
}

/// The drill settings and the worker's shared state.
pub struct Drills {
    pub settings: DrillSettings,
    /// Wakes the drill worker when a drill is queued.
    pub wakeup: Arc<tokio::sync::Notify>,
    /// The running drill and its cancel flag.
    running: Mutex<Option<(i64, Arc<AtomicBool>)>>,
    /// Testing aid: while set, a running drill holds at its first progress report until it is
    /// cancelled (or the hold is released).
    #[doc(hidden)]
    pub hold: AtomicBool,
}

impl Default for Drills {
    fn default() -> Self {
        Self {
            settings: DrillSettings::default(),
            wakeup: Arc::new(tokio::sync::Notify::new()),
            running: Mutex::new(None),
            hold: AtomicBool::new(false),
        }
    }
}

impl Drills {
    fn set_running(&self, v: Option<(i64, Arc<AtomicBool>)>) {
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = v;
    }
}

/// A restore drill: a backup test-restored into a throwaway file and checked.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DrillView {
    pub id: i64,
    pub instance: String,
    /// The backup tested.
    pub backup_id: i64,
    /// The backup's label when the drill was queued.
    pub backup_label: String,
    /// `scheduled` (by `restore_drill_schedule`) or `manual`
    pub origin: String,
    /// `queued`, `running`, `passed`, `failed`, or `skipped` (its backup expired or was deleted
    /// before the drill ran)
    pub state: String,
    /// Who asked for it (`System` for scheduled drills).
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// How long the drill took, in milliseconds.
    pub duration_ms: Option<u64>,
    /// Bytes of database restored and checked.
    pub bytes: Option<u64>,
    /// While running: `restore` (writing the throwaway file) or `check`.
    pub stage: Option<String>,
    pub progress_done: u64,
    pub progress_total: u64,
    /// The restored file has the backup's whole-file hash.
    pub hash_ok: Option<bool>,
    /// `PRAGMA integrity_check` said ok.
    pub integrity_ok: Option<bool>,
    /// The rows per table match those counted at backup time (`null`: the backup has no
    /// recorded counts, or the drill did not get that far).
    pub row_counts_ok: Option<bool>,
    /// What failed, for people (empty when passed).
    pub problems: Vec<String>,
    /// Times it was started: a drill cancelled to make way for a user's restore runs again.
    pub attempts: u32,
}

impl From<DrillRow> for DrillView {
    fn from(d: DrillRow) -> Self {
        Self {
            id: d.id,
            instance: d.instance_name,
            backup_id: d.backup_id,
            backup_label: d.backup_label,
            origin: d.origin,
            state: d.state,
            requested_by: d.requested_by,
            created_at: d.created_at,
            started_at: d.started_at,
            finished_at: d.finished_at,
            duration_ms: d.duration_ms,
            bytes: d.bytes,
            stage: d.stage,
            progress_done: d.progress_done,
            progress_total: d.progress_total,
            hash_ok: d.hash_ok,
            integrity_ok: d.integrity_ok,
            row_counts_ok: d.row_counts_ok,
            problems: d.problems,
            attempts: d.attempts,
        }
    }
}

/// An instance the fleet view lists, and why.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DrillAttentionView {
    pub instance: String,
    /// `production` or `sandbox`
    #[serde(rename = "type")]
    pub instance_type: String,
    /// `failed` (its last drill failed), `stale` (its last drill is older than `stale_days`)
    /// or `never` (never drilled)
    pub reason: String,
    /// Its newest finished drill.
    pub last_drill: Option<DrillView>,
    /// Whether it has a completed backup to drill.
    pub has_backup: bool,
}

/// The drills fleet view: the instances whose last drill failed, is older than `stale_days`,
/// or that were never drilled.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DrillFleetView {
    /// `restore_drill_schedule`: `off`, `daily`, `weekly` or `every N hours`.
    pub schedule: String,
    /// Drills older than this many days count as stale.
    pub stale_days: u32,
    /// Only instances whose last drill failed are listed.
    pub failed_only: bool,
    /// Instances looked at.
    pub instances_checked: u64,
    /// Those that need attention: failed first, then never drilled, then stale (this page).
    pub instances: Vec<DrillAttentionView>,
    /// Instances that need attention and match the name filter, on every page.
    pub matching: u64,
    /// The `offset` of the next page; `null` on the last one.
    pub next_offset: Option<u64>,
}

/// What a page of the fleet view asks for.
#[derive(Debug, Clone, Default)]
pub struct DrillFleetQuery {
    /// Drills older than this many days count as stale (default: twice the schedule's
    /// period).
    pub stale_days: Option<i64>,
    /// Only instances whose last drill failed.
    pub failed_only: bool,
    /// Only instances whose name contains this.
    pub contains: Option<String>,
    /// Rows to skip, and at most this many (`None`: all).
    pub offset: u64,
    pub limit: Option<u64>,
}

/// A page of the fleet view, with the whole fleet's counts.
#[derive(Debug, Clone, Serialize)]
pub struct DrillFleetPage {
    /// `restore_drill_schedule`: `off`, `daily`, `weekly` or `every N hours`.
    pub schedule: String,
    pub stale_days: u32,
    pub failed_only: bool,
    /// Live instances in the fleet.
    pub instances_checked: u64,
    /// In the whole fleet: instances whose last drill failed, never drilled, and whose last
    /// drill is older than `stale_days`.
    pub failed: u64,
    pub never: u64,
    pub stale: u64,
    /// Instances listed over every page (those the filters keep).
    pub matching: u64,
    /// This page's instances: failed first, then never drilled, then stale, by name.
    pub instances: Vec<DrillAttentionView>,
}

fn unknown_drill(id: i64) -> ServiceError {
    ServiceError::not_found("unknown_drill", format!("there is no restore drill {id}"))
}

/// Removes everything in the scratch directory (throwaway files of drills).
fn clean_scratch(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let p = e.path();
        let r = if p.is_dir() {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        match r {
            Ok(()) => removed += 1,
            Err(err) => {
                tracing::warn!(path = %p.display(), error = %err, "cannot remove a drill's scratch file")
            }
        }
    }
    removed
}

/// A failed drill's notification text.
fn failure_message(d: &DrillRow) -> String {
    let first = d
        .problems
        .first()
        .cloned()
        .unwrap_or_else(|| "no problem was recorded".into());
    let more = match d.problems.len() {
        0 | 1 => String::new(),
        n => format!(" (and {} more)", n - 1),
    };
    format!(
        "Restore drill of backup “{}” of {} failed: {first}{more}",
        d.backup_label, d.instance_name
    )
}

fn drill_details(d: &DrillRow) -> Value {
    json!({
        "drill_id": d.id,
        "backup_id": d.backup_id,
        "backup": d.backup_label,
        "problems": d.problems,
        "duration_ms": d.duration_ms,
        "bytes": d.bytes,
    })
}

impl Services {
    /// Where drills write their throwaway files: `<data_dir>/drills/`, beside the repository
    /// and outside every instance.
    pub fn drill_scratch_dir(&self) -> PathBuf {
        self.paths.data_dir.join("drills")
    }

    /// Called when a job starts: a restore, refresh or update cancels the running drill (it is
    /// queued again and runs later), so a drill never delays it.
    pub fn preempt_drill(&self, job_kind: &str) {
        if !PREEMPTING_JOBS.contains(&job_kind) {
            return;
        }
        let running = self
            .drills
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((id, cancel)) = running.as_ref() {
            tracing::info!(
                drill = id,
                job_kind,
                "cancelling a restore drill for a user's job"
            );
            cancel.store(true, Ordering::SeqCst);
        }
    }

    /// At start: empties the scratch directory and queues again the drills a stop
    /// interrupted. Returns how many were queued again.
    pub fn recover_drills(&self) -> Result<usize> {
        let removed = clean_scratch(&self.drill_scratch_dir());
        if removed > 0 {
            tracing::warn!(
                removed,
                "removed files left by an interrupted restore drill"
            );
        }
        let running = self.store.write(|db| {
            let running = db.drills_in_state("running")?;
            for d in &running {
                db.requeue_drill(d.id)?;
            }
            Ok::<_, ServiceError>(running.len())
        })?;
        if running > 0 {
            tracing::warn!(
                running,
                "queued again restore drills interrupted by the last stop"
            );
        }
        Ok(running)
    }

    /// Queues the scheduled drill of every instance whose drill of the current period is due
    /// (the period's start plus the instance's offset has passed) and not yet queued: its
    /// newest completed backup. Instances without one are skipped. Returns how many were
    /// queued.
    pub fn schedule_drills(&self) -> Result<usize> {
        let schedule = self.drills.settings.schedule;
        if schedule == DrillSchedule::Off {
            return Ok(0);
        }
        let now = self.now();
        let instances = self.store.read(|db| db.list_instances())?;
        let due: Vec<_> = instances
            .into_iter()
            .filter_map(|i| schedule.due(&i.name, now).map(|slot| (i, slot)))
            .collect();
        // Most minutes every due slot is already taken: ask that for the whole fleet in one
        // read (a query per instance per minute would keep a fleet of 10,000 busy).
        let mut keys: Vec<String> = due.iter().map(|(_, s)| s.key.clone()).collect();
        keys.sort();
        keys.dedup();
        let taken = self.store.read(|db| db.drill_slots_taken(&keys))?;
        let open: Vec<_> = due
            .into_iter()
            .filter(|(i, slot)| !taken.contains(&(i.id, slot.key.clone())))
            .collect();
        // Instances without a backup to drill are skipped without a write transaction.
        let ids: Vec<i64> = open.iter().map(|(i, _)| i.id).collect();
        let with_backup: std::collections::HashSet<i64> = if ids.is_empty() {
            Default::default()
        } else {
            self.store
                .read(|db| db.instances_with_completed_backup(&ids))?
                .into_iter()
                .collect()
        };
        let mut queued = 0;
        for (inst, slot) in open {
            if !with_backup.contains(&inst.id) {
                continue;
            }
            let r = self.store.write(|db| {
                if db.drill_slot_taken(inst.id, &slot.key)? {
                    return Ok::<_, ServiceError>(false);
                }
                let Some(b) = db.newest_completed_backup(inst.id)? else {
                    return Ok(false);
                };
                let new = NewDrill {
                    instance_id: inst.id,
                    instance_name: inst.name.clone(),
                    backup_id: b.id,
                    backup_label: b.label.clone(),
                    origin: "scheduled".into(),
                    slot: Some(slot.key.clone()),
                    requested_by: Actor::system().username,
                };
                Ok(db.insert_drill(&new, now)?.is_some())
            });
            match r {
                Ok(true) => queued += 1,
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(instance = %inst.name, error = %e, "no scheduled restore drill")
                }
            }
        }
        if queued > 0 {
            self.drills.wakeup.notify_one();
        }
        Ok(queued)
    }

    /// Queues a drill of `instance` now: of `backup_id`, or of its newest completed backup.
    /// The drill worker runs it (progress in [`Services::show_drill`]).
    pub fn run_drill(
        &self,
        actor: &Actor,
        instance: &str,
        backup_id: Option<i64>,
    ) -> Result<DrillView> {
        authorize(actor.role, Action::RunDrill)?;
        let now = self.now();
        let row = self.store.write(|db| {
            let inst = live_instance(db, instance)?;
            let backup = match backup_id {
                Some(id) => {
                    let b = db
                        .backup(id)?
                        .filter(|b| b.instance_id == inst.id)
                        .ok_or_else(|| {
                            ServiceError::not_found(
                                "unknown_backup",
                                format!("{instance} has no backup {id}"),
                            )
                        })?;
                    if b.status != "completed" || b.repo_id.is_none() {
                        return Err(ServiceError::conflict(
                            "backup_not_drillable",
                            format!(
                                "backup {id} is {}; only completed backups can be drilled",
                                b.status
                            ),
                        ));
                    }
                    b
                }
                None => db.newest_completed_backup(inst.id)?.ok_or_else(|| {
                    ServiceError::conflict(
                        "no_backup",
                        format!(
                            "{instance} has no completed backup to drill; take one with `steward backup create {instance} --label LABEL`"
                        ),
                    )
                })?,
            };
            if let Some(active) = db.active_drill(inst.id)? {
                return Err(ServiceError::conflict(
                    "drill_in_progress",
                    format!(
                        "restore drill {} of {instance} is already {}; follow it with `steward drill show {}`",
                        active.id, active.state, active.id
                    ),
                ));
            }
            let d = db
                .insert_drill(
                    &NewDrill {
                        instance_id: inst.id,
                        instance_name: inst.name.clone(),
                        backup_id: backup.id,
                        backup_label: backup.label.clone(),
                        origin: "manual".into(),
                        slot: None,
                        requested_by: actor.username.clone(),
                    },
                    now,
                )?
                .ok_or_else(|| ServiceError::internal("the drill was not queued"))?;
            db.audit(
                &audit_entry(
                    actor,
                    "drill.run",
                    &inst.name,
                    json!({"after": {"drill_id": d.id, "backup_id": backup.id, "backup": backup.label}}),
                ),
                now,
            )?;
            Ok(d)
        })?;
        self.drills.wakeup.notify_one();
        Ok(DrillView::from(row))
    }

    pub fn show_drill(&self, actor: &Actor, id: i64) -> Result<DrillView> {
        authorize(actor.role, Action::ViewBackups)?;
        let d = self
            .store
            .read(|db| db.drill(id))?
            .ok_or_else(|| unknown_drill(id))?;
        Ok(DrillView::from(d))
    }

    /// Drills newest first: of `instance`, or of every instance.
    pub fn list_drills(&self, actor: &Actor, instance: Option<&str>) -> Result<Vec<DrillView>> {
        authorize(actor.role, Action::ViewBackups)?;
        let rows = self.store.read(|db| {
            let id = match instance {
                Some(name) => Some(live_instance(db, name)?.id),
                None => None,
            };
            Ok::<_, ServiceError>(db.list_drills(id, LIST_LIMIT)?)
        })?;
        Ok(rows.into_iter().map(DrillView::from).collect())
    }

    /// The fleet view: instances whose last drill failed, or (unless `failed_only`) is older
    /// than `stale_days` (default: twice the schedule's period) or that were never drilled.
    pub fn drill_fleet(
        &self,
        actor: &Actor,
        stale_days: Option<i64>,
        failed_only: bool,
    ) -> Result<DrillFleetView> {
        self.drill_fleet_view(
            actor,
            &DrillFleetQuery {
                stale_days,
                failed_only,
                ..Default::default()
            },
        )
    }

    /// The fleet view as the API pages it: `q.limit` rows from `q.offset`, with where the next
    /// page starts.
    pub fn drill_fleet_view(&self, actor: &Actor, q: &DrillFleetQuery) -> Result<DrillFleetView> {
        let page = self.drill_fleet_page(actor, q)?;
        let end = q.offset.saturating_add(page.instances.len() as u64);
        Ok(DrillFleetView {
            schedule: page.schedule,
            stale_days: page.stale_days,
            failed_only: q.failed_only,
            instances_checked: page.instances_checked,
            instances: page.instances,
            matching: page.matching,
            next_offset: (end < page.matching).then_some(end),
        })
    }

    /// One page of the fleet view (see [`Services::drill_fleet`]), by reason (failed, never
    /// drilled, stale) then name, with the whole fleet's counts. A bounded number of queries
    /// whatever the fleet's size: the reasons and counts are worked out in SQL, the page's
    /// last drills and backups are loaded for its rows only.
    pub fn drill_fleet_page(&self, actor: &Actor, q: &DrillFleetQuery) -> Result<DrillFleetPage> {
        authorize(actor.role, Action::ViewBackups)?;
        let schedule = self.drills.settings.schedule;
        let stale_days = match q.stale_days {
            None => schedule.default_stale_days(),
            Some(n) => {
                check_stale_days(n).map_err(|m| ServiceError::invalid("invalid_stale_days", m))?
            }
        };
        let contains = q
            .contains
            .as_deref()
            .map(str::trim)
            .filter(|c| !c.is_empty());
        // `attention`'s rule: a passed drill is stale when `now - at > stale_days`.
        let stale_before = self.now() - chrono::Duration::days(i64::from(stale_days));
        let (page, mut last, with_backup) = self.store.read(|db| {
            let page = db.drill_attention(&DrillAttentionQuery {
                stale_before,
                failed_only: q.failed_only,
                contains,
                offset: q.offset.min(i64::MAX as u64) as i64,
                limit: q.limit.map_or(i64::MAX, |l| l.min(i64::MAX as u64) as i64),
            })?;
            let ids: Vec<i64> = page.rows.iter().map(|(i, _)| i.id).collect();
            let last: HashMap<i64, DrillRow> = db
                .last_drills_of(&ids)?
                .into_iter()
                .map(|d| (d.instance_id, d))
                .collect();
            let with_backup: HashSet<i64> = db
                .instances_with_completed_backup(&ids)?
                .into_iter()
                .collect();
            Ok::<_, ServiceError>((page, last, with_backup))
        })?;
        let instances = page
            .rows
            .into_iter()
            .map(|(i, reason)| DrillAttentionView {
                instance: i.name.clone(),
                instance_type: i.instance_type.as_str().into(),
                reason,
                last_drill: last.remove(&i.id).map(DrillView::from),
                has_backup: with_backup.contains(&i.id),
            })
            .collect();
        Ok(DrillFleetPage {
            schedule: schedule.to_string(),
            stale_days,
            failed_only: q.failed_only,
            instances_checked: page.instances,
            failed: page.failed,
            never: page.never,
            stale: page.stale,
            matching: page.matching,
            instances,
        })
    }

    /// The newest drills of every instance, newest first, at most `limit`.
    pub fn recent_drills(&self, actor: &Actor, limit: u32) -> Result<Vec<DrillView>> {
        authorize(actor.role, Action::ViewBackups)?;
        let rows = self
            .store
            .read(|db| db.list_drills(None, i64::from(limit)))?;
        Ok(rows.into_iter().map(DrillView::from).collect())
    }

    /// The newest finished drill of an instance (by id).
    pub(crate) fn last_drill_of(&self, instance_id: i64) -> Result<Option<DrillView>> {
        Ok(self
            .store
            .read(|db| db.last_drill(instance_id))?
            .map(DrillView::from))
    }

    /// The newest finished drill of each of these instances, by instance id.
    pub(crate) fn last_drills_of(&self, instance_ids: &[i64]) -> Result<HashMap<i64, DrillView>> {
        let rows = self.store.read(|db| db.last_drills_of(instance_ids))?;
        Ok(rows
            .into_iter()
            .map(|d| (d.instance_id, DrillView::from(d)))
            .collect())
    }

    /// The newest finished drill of one backup.
    pub(crate) fn last_drill_of_backup(&self, backup_id: i64) -> Result<Option<DrillView>> {
        Ok(self
            .store
            .read(|db| db.last_drill_of_backup(backup_id))?
            .map(DrillView::from))
    }

    /// Runs the oldest queued drill, in the caller's thread. `false` when there was nothing to
    /// do, or the drill gave way to a user's restore, refresh or update (it stays queued); the
    /// worker then waits before asking again.
    pub fn run_next_drill(&self) -> Result<bool> {
        if self
            .store
            .read(|db| db.jobs_active_of_kinds(&PREEMPTING_JOBS))?
        {
            return Ok(false);
        }
        // The cancel flag is in place before the drill is claimed, so a job that starts from
        // here on cancels it; one that started before is seen by the check after the claim.
        let cancel = Arc::new(AtomicBool::new(false));
        let now = self.now();
        let claimed = self.store.write(|db| {
            let Some(mut d) = db.next_queued_drill()? else {
                return Ok::<_, ServiceError>(None);
            };
            let backup = db.backup(d.backup_id)?;
            let repo_id = match backup {
                Some(b) if b.status == "completed" => b.repo_id,
                _ => None,
            };
            let Some(repo_id) = repo_id else {
                d.state = "skipped".into();
                d.finished_at = Some(now);
                d.problems = vec![format!(
                    "backup {} was deleted or expired before its drill ran",
                    d.backup_id
                )];
                db.finish_drill(&d)?;
                return Ok(Some((d, None)));
            };
            db.start_drill(d.id, now)?;
            Ok(Some((d, Some(repo_id))))
        })?;
        let Some((drill, repo_id)) = claimed else {
            return Ok(false);
        };
        let Some(repo_id) = repo_id else {
            return Ok(true);
        };
        self.drills
            .set_running(Some((drill.id, Arc::clone(&cancel))));
        if self
            .store
            .read(|db| db.jobs_active_of_kinds(&PREEMPTING_JOBS))?
        {
            cancel.store(true, Ordering::SeqCst);
        }
        let outcome = self.execute_drill(&drill, &repo_id, &cancel);
        self.drills.set_running(None);
        clean_scratch(&self.drill_scratch_dir());
        outcome
    }

    fn execute_drill(
        &self,
        drill: &DrillRow,
        repo_id: &str,
        cancel: &Arc<AtomicBool>,
    ) -> Result<bool> {
        let scratch = self.drill_scratch_dir();
        let last = AtomicU64::new(u64::MAX);
        let progress = |p: steward_repo::Progress| {
            let stage = match p.phase {
                steward_repo::Phase::Check => "check",
                _ => "restore",
            };
            // Once per percent of each stage.
            let pct = p.bytes_done.saturating_mul(100) / p.bytes_total.max(1)
                + if stage == "check" { 1000 } else { 0 };
            if last.swap(pct, Ordering::Relaxed) != pct {
                let _ = self.store.write(|db| {
                    db.set_drill_progress(drill.id, stage, p.bytes_done, p.bytes_total)
                });
            }
            // Testing aid: hold here until cancelled or released.
            while self.drills.hold.load(Ordering::SeqCst) && !cancel.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        };
        let opts = steward_repo::DrillOptions {
            threads: 1,
            cancel: Some(Arc::clone(cancel)),
        };
        tracing::info!(drill = drill.id, instance = %drill.instance_name, backup = drill.backup_id, "restore drill started");
        let t0 = std::time::Instant::now();
        let result = self.repo()?.drill(repo_id, &scratch, &opts, &progress);
        let end = self.now();
        let mut d = drill.clone();
        d.finished_at = Some(end);
        match result {
            Err(steward_repo::RepoError::Cancelled) => {
                tracing::info!(drill = d.id, "restore drill cancelled; it runs again later");
                self.store.write(|db| db.requeue_drill(d.id))?;
                return Ok(false);
            }
            Ok(report) => {
                d.state = if report.passed { "passed" } else { "failed" }.into();
                d.duration_ms = Some(report.duration.as_millis() as u64);
                d.bytes = Some(report.bytes);
                d.hash_ok = Some(report.hash_ok);
                // Not checked when the restore itself failed.
                d.integrity_ok = report.hash_ok.then_some(report.integrity_ok);
                d.row_counts_ok = report.row_counts_ok;
                d.db_hash = Some(report.db_hash);
                d.problems = report.problems;
                if !report.passed && d.problems.is_empty() {
                    d.problems
                        .push("the drill failed without naming a problem".into());
                }
                d.progress_done = report.bytes;
                d.progress_total = report.bytes;
            }
            Err(e) => {
                d.state = "failed".into();
                d.duration_ms = Some(t0.elapsed().as_millis() as u64);
                d.problems = vec![format!("the backup could not be restored: {e}")];
            }
        }
        let started = self
            .store
            .read(|db| db.drill(d.id))?
            .and_then(|r| r.started_at);
        d.started_at = started;
        let failed = d.state == "failed";
        self.store.write(|db| {
            db.finish_drill(&d)?;
            if failed {
                self.announce(
                    db,
                    Event::DrillFailed,
                    "error",
                    Some(&d.instance_name),
                    &failure_message(&d),
                    drill_details(&d),
                )?;
            }
            Ok::<_, ServiceError>(())
        })?;
        if failed {
            tracing::warn!(drill = d.id, instance = %d.instance_name, problems = ?d.problems, "restore drill failed");
        } else {
            tracing::info!(drill = d.id, instance = %d.instance_name, ms = d.duration_ms, "restore drill passed");
        }
        Ok(true)
    }
}
