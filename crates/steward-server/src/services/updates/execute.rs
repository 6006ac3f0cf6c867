//! Running updates: `tick_updates` (automatic scheduling under the policy, reminders,
//! automatic rehearsals, missed windows, starting due updates), the `update` job (Backup →
//! Restore → Database Upgrade → Swap, with the instance exactly as before on any failure and
//! a fallback to the alternate window) and the `update_rehearsal` job.

use std::path::{Path, PathBuf};

use chrono::Duration;
use serde_json::{Value, json};
use steward_core::InstanceState;
use steward_core::InstanceType;
use steward_core::backup::BackupKind;
use steward_core::notify::{Event, reminder_due};
use steward_core::release::ReleaseVersion;
use steward_core::update::{self as rules, UpdateStatus};
use steward_store::{Db, InstanceRow, JobRow, UpdateRow};

use super::{Actor, Result, Services, instance_ready, notice, release_of};
use crate::error::ServiceError;
use crate::services::backups::{progress_reporter, remove_with_sidecars, swap_in};
use crate::services::jobs::{JobContext, JobHandler, Recovery};

/// Suffix of the staging copy an update upgrades before swapping it in.
pub const STAGING_SUFFIX: &str = ".updating";

fn staging_path(db_path: &Path) -> PathBuf {
    let mut p = db_path.as_os_str().to_owned();
    p.push(STAGING_SUFFIX);
    PathBuf::from(p)
}

fn update_id_of(job: &JobRow) -> Result<i64> {
    job.params["update_id"]
        .as_i64()
        .ok_or_else(|| ServiceError::internal(format!("job {} names no update", job.id)))
}

fn load(db: &Db, id: i64) -> Result<(UpdateRow, InstanceRow)> {
    let u = db
        .update(id)?
        .ok_or_else(|| ServiceError::internal(format!("update {id} is gone")))?;
    let i = db
        .instance_by_id(u.instance_id)?
        .ok_or_else(|| ServiceError::internal(format!("the instance of update {id} is gone")))?;
    Ok((u, i))
}

impl Services {
    /// Called once a minute by the scheduler: schedules mandatory and service updates under
    /// the policy, sends due reminders, starts automatic rehearsals, moves updates whose
    /// window passed to their alternate window (or to waiting), and starts updates whose
    /// window opened. Safe to call concurrently and repeatedly: every step is one transaction
    /// that re-reads what it changes.
    pub fn tick_updates(&self) -> Result<()> {
        let now = self.now();
        let system = Actor::system();
        let (instances, policy, open) = self.store.read(|db| {
            let policy = self.update_policy_in_force(db)?.0;
            let open: std::collections::HashSet<i64> =
                db.open_updates()?.iter().map(|u| u.instance_id).collect();
            Ok::<_, ServiceError>((db.list_instances()?, policy, open))
        })?;
        // Whether the policy asks anything of a release, decided once per release: only the
        // instances it asks something of are looked at in a write transaction (a fleet of
        // 10,000 would otherwise cost 10,000 write transactions every minute).
        let mut asks: std::collections::HashMap<String, bool> = Default::default();
        for inst in &instances {
            if open.contains(&inst.id) {
                continue;
            }
            let needed = *asks.entry(inst.release.clone()).or_insert_with(|| {
                release_of(inst).is_ok_and(|current| {
                    rules::mandatory_update(&self.catalog, &policy, &current, now.date_naive())
                        .is_some()
                        || (policy.service_updates_automatic
                            && rules::service_update(&self.catalog, &current).is_some())
                })
            });
            if !needed {
                continue;
            }
            if let Err(e) = self.schedule_by_policy(&system, &inst.name) {
                tracing::warn!(instance = %inst.name, error = %e, "could not schedule an update under the policy");
            }
        }
        let open = self.store.read(|db| db.open_updates())?;
        let mut started = false;
        for u in open {
            let r = self.store.write(|db| {
                let Some(u) = db.update(u.id)? else {
                    return Ok(false);
                };
                self.tick_one(db, &system, u, now)
            });
            match r {
                Ok(s) => started |= s,
                Err(e) => tracing::warn!(update = u.id, error = %e, "update tick failed"),
            }
        }
        if started {
            self.job_wakeup.notify_one();
        }
        Ok(())
    }

    /// Schedules the update the policy requires of `instance` (mandatory, or an automatic
    /// service update), if it has no open update.
    fn schedule_by_policy(&self, system: &Actor, instance: &str) -> Result<()> {
        let now = self.now();
        self.store.write(|db| {
            let policy = self.update_policy_in_force(db)?.0;
            let Some(inst) = db.instance_by_name(instance)? else {
                return Ok(());
            };
            if db.open_update(inst.id)?.is_some() {
                return Ok(());
            }
            let current = release_of(&inst)?;
            let window = self.updates.window.max(Duration::days(1));
            if let Some((target, reason)) =
                rules::mandatory_update(&self.catalog, &policy, &current, now.date_naive())
            {
                let start = policy
                    .next_maintenance(now + Duration::days(policy.mandatory_lead_days.into()));
                let u = self.new_update(
                    &policy,
                    &inst,
                    target,
                    self.window(start),
                    self.window(start + window),
                    true,
                    true,
                    &system.username,
                )?;
                self.insert_update(db, system, &u, &format!("mandatory: {reason}"))?;
            } else if policy.service_updates_automatic
                && let Some(target) = rules::service_update(&self.catalog, &current)
            {
                let start = policy.next_maintenance(now);
                let u = self.new_update(
                    &policy,
                    &inst,
                    target,
                    self.window(start),
                    self.window(start + window),
                    false,
                    true,
                    &system.username,
                )?;
                self.insert_update(
                    db,
                    system,
                    &u,
                    "service update, applied in the next maintenance window",
                )?;
            }
            Ok(())
        })
    }

    /// One update's tick, in one transaction; `true` when it was started.
    fn tick_one(
        &self,
        db: &Db,
        system: &Actor,
        mut u: UpdateRow,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool> {
        if !matches!(
            u.status,
            UpdateStatus::Scheduled | UpdateStatus::Queued | UpdateStatus::Waiting
        ) {
            return Ok(false);
        }
        // The instance was deleted: its update goes with it.
        if db
            .instance_by_id(u.instance_id)?
            .is_none_or(|i| i.deleted_at.is_some())
        {
            u.status = UpdateStatus::Cancelled;
            u.finished_at = Some(now);
            db.save_update(&u)?;
            self.timeline(
                db,
                &u,
                &system.username,
                "cancelled",
                json!({"reason": "the instance was deleted"}),
            )?;
            return Ok(false);
        }
        if u.status == UpdateStatus::Waiting {
            return Ok(false);
        }
        // Reminders 90, 30, 15 and 7 days before the start, each once per scheduled start.
        let (start, end) = u.active();
        if let Some(event) = reminder_due(start, u.reminders_since, now)
            && db.record_reminder(u.id, event.as_str(), start, now)?
        {
            let days = event.reminder_days().unwrap_or_default();
            self.timeline(
                db,
                &u,
                &system.username,
                "reminder",
                json!({"days": days, "starts_at": start}),
            )?;
            self.announce(
                db,
                event,
                "info",
                Some(&u.instance_name),
                &format!(
                    "Reminder: {} will be updated to {} in {days} days ({})",
                    u.instance_name,
                    u.target_release,
                    start.format("%Y-%m-%d %H:%M UTC")
                ),
                notice(&u),
            )?;
        }
        u.reminders_since = now;
        db.save_update(&u)?;

        // The automatic rehearsal of a production update, once per update.
        if self.updates.rehearsal_days > 0
            && now < start
            && now >= start - Duration::days(self.updates.rehearsal_days.into())
            && !db.update_rehearsals(u.id)?.iter().any(|r| r.automatic)
            && let Some(inst) = db.instance_by_id(u.instance_id)?
            && inst.instance_type == InstanceType::Production
            && let Ok(target) = u.target_release.parse::<ReleaseVersion>()
        {
            self.queue_rehearsal(db, system, &inst, Some(&u), target, true)?;
        }

        if now >= end {
            self.window_passed(db, system, &mut u, "window_missed", None)?;
            return Ok(false);
        }
        if now >= start && u.status == UpdateStatus::Queued {
            let Some(inst) = db.instance_by_id(u.instance_id)? else {
                return Ok(false);
            };
            if !instance_ready(&inst) {
                // Another operation runs on it; try again at the next tick.
                return Ok(false);
            }
            self.start_update(db, system, u)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The active window passed without a successful update (missed, not approved, or the
    /// attempt failed): move to the alternate window, or wait for an administrator.
    fn window_passed(
        &self,
        db: &Db,
        system: &Actor,
        u: &mut UpdateRow,
        why: &str,
        error: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        let unapproved = u.needs_approval && u.approved_by.is_none();
        let before = json!({"status": u.status.as_str(), "active_window": u.active_window});
        let reason = match (error, unapproved) {
            (Some(e), _) => format!("the update failed: {e}"),
            (None, true) => "it was not approved before its window ended".to_owned(),
            (None, false) => "its window ended before it could run".to_owned(),
        };
        if u.active_window == "preferred" && now < u.alternate_end {
            u.active_window = "alternate".into();
            u.status = super::waiting_status(u);
            u.reminders_since = now;
            db.save_update(u)?;
            db.audit(
                &super::audit_entry(
                    system,
                    "update.fallback",
                    &u.instance_name,
                    json!({"update_id": u.id, "reason": reason, "before": before, "after": {"status": u.status.as_str(), "active_window": "alternate"}}),
                ),
                now,
            )?;
            self.timeline(
                db,
                u,
                &system.username,
                why,
                json!({"reason": reason, "next": "alternate", "alternate": {"start": u.alternate_start, "end": u.alternate_end}}),
            )?;
            self.announce(
                db,
                Event::UpdateFallback,
                "warning",
                Some(&u.instance_name),
                &format!(
                    "Fallback to secondary update: {} was not updated to {} because {reason}; it moves to the alternate window at {}",
                    u.instance_name,
                    u.target_release,
                    u.alternate_start.format("%Y-%m-%d %H:%M UTC")
                ),
                notice(u),
            )?;
        } else {
            u.status = UpdateStatus::Waiting;
            db.save_update(u)?;
            db.audit(
                &super::audit_entry(
                    system,
                    "update.wait",
                    &u.instance_name,
                    json!({"update_id": u.id, "reason": reason, "before": before, "after": {"status": "waiting"}}),
                ),
                now,
            )?;
            self.timeline(
                db,
                u,
                &system.username,
                "waiting",
                json!({"reason": reason}),
            )?;
            self.announce(
                db,
                Event::UpdateFallback,
                "error",
                Some(&u.instance_name),
                &format!(
                    "{} was not updated to {} because {reason}; both windows are used up, so the update waits for an administrator to reschedule it",
                    u.instance_name, u.target_release
                ),
                notice(u),
            )?;
        }
        Ok(())
    }

    /// Enters a stage of the running update: the job's stage, the update's stage timings and
    /// its timeline, then the testing pause.
    fn enter_stage(&self, ctx: &JobContext, u: &UpdateRow, stage: &str) -> Result<()> {
        ctx.stage(stage)?;
        let now = self.now();
        self.store.write(|db| {
            db.set_update_stage(u.id, stage, now)?;
            db.insert_update_event(u.id, now, "System", "stage", &json!({"stage": stage}))?;
            Ok::<_, ServiceError>(())
        })?;
        self.pause_stage();
        Ok(())
    }

    fn pause_stage(&self) {
        if !self.stage_pause.is_zero() {
            std::thread::sleep(self.stage_pause);
        }
    }
}

/// The `update` job.
fn run_update(s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
    let id = update_id_of(job)?;
    let (u, inst) = s.store.read(|db| load(db, id))?;
    if u.status != UpdateStatus::InProgress {
        return Err(ServiceError::conflict(
            "update_not_started",
            format!("update {id} is {}, not in progress", u.status),
        ));
    }
    let db_path = PathBuf::from(&inst.database_path);
    let staging = staging_path(&db_path);
    let target: ReleaseVersion = u
        .target_release
        .parse()
        .map_err(|_| ServiceError::internal("unreadable target release"))?;
    let (_, window_end) = u.active();
    let started = std::time::Instant::now();
    let result = (|| {
        // Backup: the instance is unavailable from here until the swap.
        s.store.write(|db| {
            let mut i = db
                .instance_by_id(inst.id)?
                .ok_or_else(|| ServiceError::internal("the instance is gone"))?;
            if i.state != InstanceState::Available {
                return Err(ServiceError::conflict(
                    "instance_busy",
                    format!("{} is {}", i.name, i.state.label().to_lowercase()),
                ));
            }
            i.state = InstanceState::Updating;
            db.update_instance(&i)?;
            // Continuous capture's chain ends here: the next one runs the new release.
            s.end_capture_of(db, i.id, "the instance was updated")?;
            Ok(())
        })?;
        s.enter_stage(ctx, &u, "Backup")?;
        let label = format!(
            "Before update {} to {} (update {})",
            u.from_release, u.target_release, u.id
        );
        let backup = s.take_pre_update_backup_held(&inst.name, &label)?;
        s.store.write(|db| {
            let mut cur = db
                .update(u.id)?
                .ok_or_else(|| ServiceError::internal("gone"))?;
            cur.backup_id = Some(backup.id);
            db.save_update(&cur)?;
            Ok::<_, ServiceError>(())
        })?;

        s.enter_stage(ctx, &u, "Restore")?;
        let report = progress_reporter(ctx);
        s.restore_to_file(backup.id, &staging, &report)?;

        s.enter_stage(ctx, &u, "Database Upgrade")?;
        let applied = steward_engine::upgrade_database(&staging, &s.catalog, &target)
            .map_err(|e| ServiceError::internal(format!("Database Upgrade failed: {e}")))?;
        steward_engine::integrity_check(&staging)
            .map_err(|e| ServiceError::internal(format!("the upgraded copy is damaged: {e}")))?;
        if s.now() >= window_end {
            return Err(ServiceError::conflict(
                "window_exceeded",
                "the update could not finish inside its window; it was abandoned before the swap",
            ));
        }
        // Until the swap the storage of a queued instance is left out of the total; from
        // here on it counts again (its database upgrade completed).
        s.enter_stage(ctx, &u, "Swap")?;
        swap_in(&staging, &db_path)?;
        Ok::<_, ServiceError>(applied)
    })();
    remove_with_sidecars(&staging);
    match result {
        Ok(applied) => {
            let ms = started.elapsed().as_millis() as i64;
            s.store
                .write(|db| finish_success(s, db, u.id, &applied, ms))?;
            Ok(json!({"update_id": id, "applied": applied, "target": u.target_release}))
        }
        Err(e) => {
            s.store
                .write(|db| finish_failure(s, db, u.id, &e.message))?;
            Err(e)
        }
    }
}

/// The update succeeded: the instance is on the target release and available again.
fn finish_success(
    s: &Services,
    db: &Db,
    id: i64,
    applied: &[ReleaseVersion],
    duration_ms: i64,
) -> Result<()> {
    let now = s.now();
    let (mut u, mut inst) = load(db, id)?;
    let before = inst.release.clone();
    inst.release = u.target_release.clone();
    if inst.state == InstanceState::Updating {
        inst.state = InstanceState::Available;
    }
    db.update_instance(&inst)?;
    db.finish_update_stage(id, now)?;
    u.status = UpdateStatus::Succeeded;
    u.stage = None;
    u.error = None;
    u.finished_at = Some(now);
    db.save_update(&u)?;
    let applied: Vec<String> = applied.iter().map(|v| v.to_string()).collect();
    db.insert_update_event(
        id,
        now,
        "System",
        "succeeded",
        &json!({"applied": applied, "duration_ms": duration_ms}),
    )?;
    db.audit(
        &super::audit_entry(
            &Actor::system(),
            "update.succeed",
            &inst.name,
            json!({"update_id": id, "before": {"release": before}, "after": {"release": inst.release}}),
        ),
        now,
    )?;
    s.announce(
        db,
        Event::UpdateSucceeded,
        "success",
        Some(&inst.name),
        &format!(
            "Updated successfully: {} is on release {} and ready to use",
            inst.name, inst.release
        ),
        notice(&u),
    )?;
    Ok(())
}

/// The attempt failed: the instance is exactly as before (its database was never touched;
/// its release is read back from the database itself) and available; the update moves to
/// its alternate window or waits for an administrator.
fn finish_failure(s: &Services, db: &Db, id: i64, error: &str) -> Result<()> {
    let now = s.now();
    let (mut u, mut inst) = load(db, id)?;
    if let Ok(v) = steward_engine::database_release(Path::new(&inst.database_path)) {
        inst.release = v.to_string();
    }
    if inst.state == InstanceState::Updating {
        inst.state = InstanceState::Available;
    }
    db.update_instance(&inst)?;
    db.finish_update_stage(id, now)?;
    let stage = u.stage.take();
    u.error = Some(error.to_owned());
    u.finished_at = Some(now);
    db.save_update(&u)?;
    db.insert_update_event(
        id,
        now,
        "System",
        "failed",
        &json!({"error": error, "stage": stage, "release": inst.release}),
    )?;
    db.audit(
        &super::audit_entry(
            &Actor::system(),
            "update.fail",
            &inst.name,
            json!({"update_id": id, "error": error, "release": inst.release}),
        ),
        now,
    )?;
    u.finished_at = None;
    s.window_passed(db, &Actor::system(), &mut u, "fallback", Some(error))
}

/// After a crash during an update: the staging copy is removed; the swap is one SQLite
/// transaction, so the instance's database is wholly on its old release or wholly on the
/// target. Its release is read from the database itself; the update is finished accordingly.
fn recover_update(s: &Services, job: &JobRow) -> Recovery {
    let msg = "interrupted: Steward stopped while this update ran".to_string();
    let Ok(id) = update_id_of(job) else {
        return Recovery::Fail(msg);
    };
    let r = s.store.write(|db| {
        let (u, inst) = load(db, id)?;
        let db_path = PathBuf::from(&inst.database_path);
        remove_with_sidecars(&staging_path(&db_path));
        let actual = steward_engine::database_release(&db_path).ok();
        if u.status != UpdateStatus::InProgress {
            return Ok::<_, ServiceError>(msg.clone());
        }
        if actual.is_some() && actual == u.target_release.parse::<ReleaseVersion>().ok() {
            finish_success(s, db, id, &[], 0)?;
            Ok(format!(
                "{msg}; the swap had completed, so {} is on {}",
                inst.name, u.target_release
            ))
        } else {
            let stage = u.stage.clone().unwrap_or_else(|| "start".into());
            let error = format!(
                "{msg} (stage {stage}); {} is on its previous release, unchanged",
                inst.name
            );
            finish_failure(s, db, id, &error)?;
            Ok(error)
        }
    });
    match r {
        Ok(m) => Recovery::Fail(m),
        Err(e) => {
            tracing::error!(error = %e, "could not recover the interrupted update");
            Recovery::Fail(msg)
        }
    }
}

/// The `update_rehearsal` job: copy production (its latest completed backup on the current
/// release, or a fresh one) into a throwaway file, upgrade it, check it, record the duration
/// and the problems, remove the file.
fn run_rehearsal(s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
    let id = job.params["rehearsal_id"]
        .as_i64()
        .ok_or_else(|| ServiceError::internal(format!("job {} names no rehearsal", job.id)))?;
    let (mut r, inst, backup) = s.store.read(|db| {
        let r = db
            .rehearsal(id)?
            .ok_or_else(|| ServiceError::internal(format!("rehearsal {id} is gone")))?;
        let inst = db
            .instance_by_name(&r.instance_name)?
            .ok_or_else(|| ServiceError::internal("the instance is gone"))?;
        let backup = db
            .list_backups(inst.id)?
            .into_iter()
            .filter(|b| b.status == "completed" && b.release == inst.release && b.repo_id.is_some())
            .max_by_key(|b| b.id);
        Ok::<_, ServiceError>((r, inst, backup))
    })?;
    let dir = s.paths.data_dir.join("rehearsals");
    let file = dir.join(format!("{}.sqlite", r.sandbox));
    let mut problems = Vec::new();
    let started = std::time::Instant::now();
    let outcome = (|| {
        std::fs::create_dir_all(&dir)
            .map_err(|e| ServiceError::internal(format!("{}: {e}", dir.display())))?;
        ctx.stage("copy")?;
        let backup_id = match backup {
            Some(b) => b.id,
            None => {
                s.take_backup_now(
                    &inst.name,
                    BackupKind::PreUpdate,
                    &format!("Rehearsal copy for {}", r.target_release),
                    "",
                    None,
                )?
                .id
            }
        };
        let report = progress_reporter(ctx);
        s.restore_to_file(backup_id, &file, &report)?;
        ctx.stage("upgrade")?;
        let target: ReleaseVersion = r
            .target_release
            .parse()
            .map_err(|_| ServiceError::internal("unreadable target"))?;
        Ok::<_, ServiceError>(target)
    })();
    let upgrade_started = std::time::Instant::now();
    match outcome {
        Ok(target) => {
            if let Err(e) = steward_engine::upgrade_database(&file, &s.catalog, &target) {
                problems.push(e.to_string());
            } else if let Err(e) = steward_engine::integrity_check(&file) {
                problems.push(e.to_string());
            }
        }
        Err(e) => problems.push(format!("the copy could not be made: {}", e.message)),
    }
    remove_with_sidecars(&file);
    let _ = started;
    let now = s.now();
    r.finished_at = Some(now);
    r.duration_ms = Some(upgrade_started.elapsed().as_millis() as i64);
    r.status = if problems.is_empty() {
        "succeeded"
    } else {
        "failed"
    }
    .into();
    r.problems = problems.clone();
    s.store.write(|db| {
        db.save_rehearsal(&r)?;
        if let Some(uid) = r.update_id
            && let Some(u) = db.update(uid)?
        {
            db.insert_update_event(
                uid,
                now,
                &r.created_by,
                "rehearsal",
                &json!({"rehearsal_id": r.id, "status": r.status, "duration_ms": r.duration_ms, "problems": r.problems, "automatic": r.automatic}),
            )?;
            // The seed's automated compatibility tests: administrators are emailed the list
            // of problems found before the update.
            if r.automatic && !problems.is_empty() {
                let mut details = notice(&u);
                details["rehearsal"] = json!(r.id);
                details["problems"] = json!(problems.join("; "));
                details["rehearsal_duration_ms"] = json!(r.duration_ms);
                s.announce(
                    db,
                    Event::RehearsalProblems,
                    "warning",
                    Some(&u.instance_name),
                    &format!(
                        "The rehearsal of the update of {} to {} found {} problem{}: {}",
                        u.instance_name,
                        u.target_release,
                        problems.len(),
                        if problems.len() == 1 { "" } else { "s" },
                        problems.join("; ")
                    ),
                    details,
                )?;
            }
        }
        Ok::<_, ServiceError>(())
    })?;
    Ok(
        json!({"rehearsal_id": r.id, "status": r.status, "problems": r.problems, "duration_ms": r.duration_ms}),
    )
}

/// After a crash during a rehearsal: remove the throwaway file; the rehearsal failed.
fn recover_rehearsal(s: &Services, job: &JobRow) -> Recovery {
    let msg = "interrupted: Steward stopped while this rehearsal ran".to_string();
    if let Some(id) = job.params["rehearsal_id"].as_i64() {
        let now = s.now();
        let r = s.store.write(|db| {
            if let Some(mut r) = db.rehearsal(id)? {
                let file = s
                    .paths
                    .data_dir
                    .join("rehearsals")
                    .join(format!("{}.sqlite", r.sandbox));
                remove_with_sidecars(&file);
                r.status = "failed".into();
                r.finished_at = Some(now);
                r.problems.push(msg.clone());
                db.save_rehearsal(&r)?;
            }
            Ok::<_, ServiceError>(())
        });
        if let Err(e) = r {
            tracing::error!(error = %e, "could not recover the interrupted rehearsal");
        }
    }
    Recovery::Fail(msg)
}

pub(super) struct UpdateHandler;
impl JobHandler for UpdateHandler {
    fn run(&self, s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
        run_update(s, job, ctx)
    }
    fn recover(&self, s: &Services, job: &JobRow) -> Recovery {
        recover_update(s, job)
    }
}

pub(super) struct RehearsalHandler;
impl JobHandler for RehearsalHandler {
    fn run(&self, s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
        run_rehearsal(s, job, ctx)
    }
    fn recover(&self, s: &Services, job: &JobRow) -> Recovery {
        recover_rehearsal(s, job)
    }
}
