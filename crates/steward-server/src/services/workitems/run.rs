//! The `refresh` job: copies the source's database as of the chosen moment into the target.
//!
//! Stages, in order: `source_backup` (for the latest: a fresh backup of the source, taken
//! online), `restore` (that backup, or the chosen one, or, for a moment continuous capture
//! covers, the capture chain's base snapshot with every commit up to the moment, written and
//! checked in a staging file beside the target: `database.sqlite.refreshing`), `scripts` (post-refresh scripts on the
//! staging copy), `safety_backup` (an online backup of the target, kept for the configured
//! time), `swap` (the target is marked `refreshing`, i.e. unavailable, the staging copy is
//! copied in through SQLite's backup API in one transaction, the target is available again).
//!
//! Invariants: the target's database changes only in the swap, which is one SQLite
//! transaction, so any failure or crash leaves its whole previous database or the whole new
//! one; its documents folder is never touched; the staging file never outlives the job (or
//! the recovery after a crash).

use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use steward_core::InstanceState;
use steward_core::backup::BackupKind;
use steward_core::notify::Event;
use steward_core::workitem::WorkItemStatus;
use steward_store::{JobRow, WorkItemRow};

use super::scripts::{self, ScriptRun};
use super::{details, load, snapshot, transition};
use crate::error::ServiceError;
use crate::services::backups::{progress_reporter, remove_with_sidecars, swap_in};
use crate::services::capture::restore_chain_to_file;
use crate::services::jobs::{JobContext, JobHandler, Recovery};
use crate::services::{Actor, Result, Services};

/// Suffix of the staging copy beside the target database.
pub const STAGING_SUFFIX: &str = ".refreshing";

pub(crate) fn staging_path(db_path: &Path) -> PathBuf {
    let mut p = db_path.as_os_str().to_owned();
    p.push(STAGING_SUFFIX);
    PathBuf::from(p)
}

fn work_item_id(job: &JobRow) -> Result<i64> {
    job.params["work_item_id"]
        .as_i64()
        .ok_or_else(|| ServiceError::internal(format!("job {} names no work item", job.id)))
}

fn pause(s: &Services) {
    if !s.stage_pause.is_zero() {
        std::thread::sleep(s.stage_pause);
    }
}

/// Saves `f`'s change to the work item (no transition).
fn update(s: &Services, id: i64, f: impl FnOnce(&mut WorkItemRow)) -> Result<()> {
    let now = s.now();
    s.store.write(|db| {
        let mut w = load(db, id)?;
        f(&mut w);
        w.updated_at = now;
        db.update_work_item(&w)?;
        Ok(())
    })
}

/// What a refresh copied: the release the copy runs, and what to report about it.
struct Copied {
    release: String,
    /// `{backup_id}` or `{chain_id, at, commit_at, commits_applied}`.
    what: Value,
    /// For a moment: the last commit at or before it, whose state was copied.
    commit_at: Option<DateTime<Utc>>,
}

/// The `restore` stage of a refresh to a moment continuous capture covers: the source's range
/// is checked again (retention or a restore of the source may have changed it since the
/// request), then the chain's base snapshot and its commits up to the moment are written into
/// the staging file.
fn copy_moment(
    s: &Services,
    ctx: &JobContext,
    w: &WorkItemRow,
    at: DateTime<Utc>,
    staging: &Path,
) -> Result<Copied> {
    let source = s
        .store
        .read(|db| db.instance_by_id(w.source_id))?
        .ok_or_else(|| {
            ServiceError::conflict(
                "unknown_instance",
                format!("the source {} no longer exists", w.source),
            )
        })?;
    let chain = s.chain_for_moment(&source, at)?;
    if w.restore_chain_id != Some(chain.id) {
        update(s, w.id, |w| w.restore_chain_id = Some(chain.id))?;
    }
    ctx.stage("restore")?;
    pause(s);
    remove_with_sidecars(staging);
    let at_ms = at.timestamp_millis().max(0) as u64;
    let summary = restore_chain_to_file(s, chain.id, &chain.base_repo_id, at_ms, staging)?;
    let commit_at = Utc
        .timestamp_millis_opt(summary.applied_at_ms as i64)
        .single()
        .unwrap_or(at);
    update(s, w.id, |w| w.restore_at = Some(commit_at))?;
    Ok(Copied {
        release: chain.release.clone().unwrap_or(source.release),
        what: json!({
            "chain_id": chain.id, "at": at, "commit_at": commit_at,
            "commits_applied": summary.commits_applied,
        }),
        commit_at: Some(commit_at),
    })
}

/// What the swap stage measured.
#[derive(Default)]
struct Downtime {
    since: Option<Instant>,
}

fn run_refresh(s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
    let id = work_item_id(job)?;
    let (w, target) = s.store.read(|db| {
        let w = load(db, id)?;
        let target = db
            .instance_by_id(w.target_id)?
            .filter(|i| i.deleted_at.is_none())
            .ok_or_else(|| {
                ServiceError::conflict(
                    "unknown_instance",
                    format!("the target {} no longer exists", w.target),
                )
            })?;
        Ok::<_, ServiceError>((w, target))
    })?;
    let db_path = PathBuf::from(&target.database_path);
    let staging = staging_path(&db_path);
    let mut downtime = Downtime::default();
    let mut script_runs: Vec<ScriptRun> = Vec::new();
    let outcome = (|| {
        // The target must still be a sandbox that can be refreshed (it may have been switched
        // to production since the request).
        super::check_target_now(&target)?;
        // Then the safety net: a backup of the target as it is now, kept for the configured
        // time, so a mistaken refresh can be undone.
        ctx.stage("safety_backup")?;
        pause(s);
        let safety = s.take_backup_now(
            &w.target,
            BackupKind::PreRefresh,
            &format!("Before refresh #{id} from {}", w.source),
            &format!(
                "Safety backup taken by Steward before work item {id} replaced {}'s database with {}'s.",
                w.target, w.source
            ),
            Some(s.workitems.safety_backup_retention),
        )?;
        update(s, id, |w| w.safety_backup_id = Some(safety.id))?;

        // From here until the swap the target is unavailable (seed 002: "The target
        // environment will be unavailable until the refresh process is completed").
        let now = s.now();
        s.store.write(|db| {
            let mut t = db
                .instance_by_id(w.target_id)?
                .filter(|i| i.deleted_at.is_none())
                .ok_or_else(|| {
                    ServiceError::conflict(
                        "unknown_instance",
                        format!("the target {} no longer exists", w.target),
                    )
                })?;
            super::check_target_now(&t)?;
            t.state = InstanceState::Refreshing;
            db.update_instance(&t)?;
            s.end_capture_of(db, t.id, "the instance was refreshed")?;
            let mut item = load(db, id)?;
            item.unavailable_at = Some(now);
            item.updated_at = now;
            db.update_work_item(&item)?;
            Ok::<_, ServiceError>(())
        })?;
        downtime.since = Some(Instant::now());
        // What to copy: the moment from continuous capture, the chosen restore point, or a
        // fresh backup of the source.
        let copied = if let (Some(at), Some(_)) = (w.point_in_time, w.restore_chain_id) {
            copy_moment(s, ctx, &w, at, &staging)?
        } else {
            let backup_id = match (w.point_in_time, w.restore_backup_id) {
                (Some(_), Some(b)) => {
                    let row = s.store.read(|db| db.backup(b))?;
                    match row {
                        Some(r) if r.status == "completed" && r.expires_at > s.now() => b,
                        Some(r) => {
                            return Err(ServiceError::conflict(
                                "outside_restore_range",
                                format!(
                                    "the restore point (backup {b}) is {}; reschedule with another point in time",
                                    r.status
                                ),
                            ));
                        }
                        None => {
                            return Err(ServiceError::internal(format!("backup {b} is gone")));
                        }
                    }
                }
                _ => {
                    ctx.stage("source_backup")?;
                    pause(s);
                    let b = s.take_backup_now(
                        &w.source,
                        BackupKind::OnDemand,
                        &format!("Copy for refresh #{id} into {}", w.target),
                        &format!("Taken by Steward for work item {id}."),
                        None,
                    )?;
                    let at = b.completed_at.unwrap_or(b.created_at);
                    update(s, id, |w| {
                        w.restore_backup_id = Some(b.id);
                        w.restore_at = Some(at);
                    })?;
                    b.id
                }
            };
            let backup = s
                .store
                .read(|db| db.backup(backup_id))?
                .ok_or_else(|| ServiceError::internal(format!("backup {backup_id} is gone")))?;

            ctx.stage("restore")?;
            pause(s);
            let report = progress_reporter(ctx);
            s.restore_to_file(backup_id, &staging, &report)?;
            Copied {
                release: backup.release.clone(),
                what: json!({"backup_id": backup.id}),
                commit_at: None,
            }
        };

        ctx.stage("scripts")?;
        pause(s);
        let set = match &s.workitems.scripts_dir {
            None => scripts::builtin(),
            Some(dir) => scripts::load_dir(dir, &w.target).map_err(ServiceError::internal)?,
        };
        let (runs, result) = scripts::run_all(&staging, &copied.release, &set);
        script_runs = runs;
        update(s, id, |w| w.scripts = json!(script_runs))?;
        result.map_err(|e| ServiceError::conflict("post_refresh_script_failed", e))?;

        ctx.stage("swap")?;
        pause(s);
        swap_in(&staging, &db_path)?;
        Ok::<_, ServiceError>(copied)
    })();
    remove_with_sidecars(&staging);
    let end = s.now();
    let downtime_ms = downtime.since.map(|t| t.elapsed().as_millis() as i64);
    match outcome {
        Ok(copied) => {
            s.store.write(|db| {
                if let Some(mut t) = db.instance_by_id(w.target_id)? {
                    t.release = copied.release.clone();
                    if t.state == InstanceState::Refreshing {
                        t.state = InstanceState::Available;
                    }
                    db.update_instance(&t)?;
                }
                let mut item = load(db, id)?;
                let before = snapshot(&item);
                item.finished_at = Some(end);
                item.downtime_ms = downtime_ms;
                let safety = item.safety_backup_id;
                transition(
                    db,
                    &Actor::system(),
                    &mut item,
                    WorkItemStatus::Succeeded,
                    "workitem.succeed",
                    before,
                    json!({"release": copied.release, "downtime_ms": downtime_ms, "safety_backup_id": safety,
                           "copied_commit_at": copied.commit_at}),
                    end,
                )?;
                s.announce(
                    db,
                    Event::RefreshSucceeded,
                    "success",
                    Some(&item.target),
                    &format!(
                        "Refresh #{} of {} from {} succeeded (release {}, {} ms unavailable)",
                        item.id,
                        item.target,
                        item.source,
                        copied.release,
                        downtime_ms.unwrap_or(0)
                    ),
                    details(&item),
                )?;
                Ok::<_, ServiceError>(())
            })?;
            let mut result = json!({
                "work_item_id": id, "target": w.target, "source": w.source,
                "release": copied.release, "downtime_ms": downtime_ms, "scripts": script_runs,
            });
            if let (Some(r), Some(what)) = (result.as_object_mut(), copied.what.as_object()) {
                r.extend(what.clone());
            }
            Ok(result)
        }
        Err(e) => {
            s.store
                .write(|db| fail(s, db, id, &e.message, downtime_ms, end))?;
            Err(e)
        }
    }
}

/// Ends work item `id` as failed with `error`, makes its target available again if the
/// refresh had made it unavailable, and announces the failure, in the caller's transaction.
fn fail(
    s: &Services,
    db: &steward_store::Db,
    id: i64,
    error: &str,
    downtime_ms: Option<i64>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let mut item = load(db, id)?;
    if item.status.is_finished() {
        return Ok(());
    }
    if let Some(mut t) = db.instance_by_id(item.target_id)?
        && t.state == InstanceState::Refreshing
    {
        let db_path = PathBuf::from(&t.database_path);
        if let Ok(v) = steward_engine::database_release(&db_path) {
            t.release = v.to_string();
        }
        t.state = InstanceState::Available;
        db.update_instance(&t)?;
    }
    let before = snapshot(&item);
    item.error = Some(error.to_owned());
    item.finished_at = Some(now);
    item.downtime_ms = downtime_ms.or_else(|| {
        item.unavailable_at
            .map(|u| (now - u).num_milliseconds().max(0))
    });
    transition(
        db,
        &Actor::system(),
        &mut item,
        WorkItemStatus::Failed,
        "workitem.fail",
        before,
        json!({"error": error}),
        now,
    )?;
    s.announce(
        db,
        Event::RefreshFailed,
        "error",
        Some(&item.target),
        &format!(
            "Refresh #{} of {} from {} failed: {error}",
            item.id, item.target, item.source
        ),
        details(&item),
    )?;
    Ok(())
}

/// After a crash during a refresh: the swap is one SQLite transaction, so the target holds
/// its whole previous database or the whole copied one. Remove the staging copy, read the
/// release from the database itself, make the target available, fail the work item.
fn recover_refresh(s: &Services, job: &JobRow) -> Recovery {
    let msg = "interrupted: Steward stopped while this refresh ran".to_string();
    let Ok(id) = work_item_id(job) else {
        return Recovery::Fail(msg);
    };
    let now = s.now();
    let r = s.store.write(|db| {
        let item = load(db, id)?;
        let target = db.instance_by_id(item.target_id)?;
        let error = match &target {
            Some(t) => {
                let db_path = PathBuf::from(&t.database_path);
                remove_with_sidecars(&staging_path(&db_path));
                format!(
                    "{msg}; {} holds either its previous database or the whole copy, never a mix",
                    t.name
                )
            }
            None => msg.clone(),
        };
        fail(s, db, id, &error, None, now)?;
        Ok::<_, ServiceError>(error)
    });
    match r {
        Ok(error) => Recovery::Fail(error),
        Err(e) => {
            tracing::error!(error = %e, "could not recover the interrupted refresh");
            Recovery::Fail(msg)
        }
    }
}

pub(crate) struct RefreshHandler;

impl JobHandler for RefreshHandler {
    fn run(&self, s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
        run_refresh(s, job, ctx)
    }
    fn recover(&self, s: &Services, job: &JobRow) -> Recovery {
        recover_refresh(s, job)
    }
}
