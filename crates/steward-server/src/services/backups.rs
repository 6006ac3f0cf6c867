//! Backup & Restore (seed 000): daily system backups, on-demand backups with label and notes,
//! pre-update backups, retention and expiry, edit/delete/restore, restore only into sandboxes,
//! storage accounting and in-product alerts. The rules come from `steward_core::backup`; the
//! data from `steward_repo`; the long work runs as `backup` and `restore` jobs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use steward_core::InstanceState;
use steward_core::backup::{BackupKind, Label, check_backup, check_notes, check_restore_target};
use steward_core::notify::Event;
use steward_core::policy::{Action, authorize};
use steward_core::release::ReleaseVersion;
use steward_store::{AlertRow, BackupRow, Db, InstanceRow, JobRow, NewBackup, NewJob};

use super::instances::live_instance;
use super::jobs::{JobContext, JobHandler, JobHandlers, JobView, Recovery};
use super::{Actor, InstanceListQuery, InstanceView, Result, Services, audit_entry};
use crate::error::ServiceError;

/// Job kinds of this module.
pub const BACKUP_JOB: &str = "backup";
pub const RESTORE_JOB: &str = "restore";
/// Suffix of the file a restore writes beside the target database before the swap.
pub const RESTORING_SUFFIX: &str = ".restoring";

/// Backup settings, from the configuration.
#[derive(Debug, Clone)]
pub struct BackupSettings {
    /// When (UTC) daily system backups start; `None` turns them off.
    pub system_time: Option<NaiveTime>,
    /// Starts are spread over this many minutes (a fixed offset per instance).
    pub spread_minutes: u32,
    pub system_retention: Duration,
    pub on_demand_retention: Duration,
    pub minimum_release: ReleaseVersion,
    /// Backup data younger than this is never pruned.
    pub prune_grace: std::time::Duration,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            system_time: Some(NaiveTime::from_hms_opt(2, 0, 0).expect("valid time")),
            spread_minutes: 120,
            system_retention: Duration::days(3),
            on_demand_retention: Duration::days(3),
            minimum_release: ReleaseVersion::new(8, 1),
            prune_grace: std::time::Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BackupView {
    pub id: i64,
    pub instance: String,
    /// `system`, `on_demand`, `pre_update` or `pre_refresh`
    pub kind: String,
    pub label: String,
    pub notes: String,
    /// `queued`, `running`, `completed`, `failed`, `deleted` or `expired`
    pub status: String,
    /// The application release of the backed-up database.
    pub release: String,
    /// `System` for system backups.
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    /// Size of the backed-up database in bytes.
    pub size_bytes: Option<u64>,
    /// Bytes this backup added to the backup repository (after deduplication and compression).
    pub stored_bytes: Option<u64>,
    pub job_id: Option<i64>,
    pub error: Option<String>,
    /// Whether the caller may edit the label and notes.
    pub can_edit: bool,
    /// Whether the caller may delete it.
    pub can_delete: bool,
    /// Whether the caller may restore it.
    pub can_restore: bool,
    /// Its newest finished restore drill (when, result, duration), if it was ever drilled.
    pub last_drill: Option<super::drills::DrillView>,
    /// Whether a verify found it damaged (and no later verify found it whole): restoring it
    /// is refused.
    pub damaged: bool,
    /// What the verify that found it damaged found, for people.
    pub damage: Option<String>,
    /// Its latest verification, if it was ever verified.
    pub verification: Option<super::verify::VerificationView>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RestoreStarted {
    pub job: JobView,
    pub backup: BackupView,
    pub target: InstanceView,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceStorage {
    pub name: String,
    #[serde(rename = "type")]
    pub instance_type: String,
    /// Database storage: what counts as storage used.
    pub database_bytes: u64,
    /// Bytes the instance's completed backups added to the repository (not counted as used).
    pub backup_bytes: u64,
    pub backup_count: u64,
    /// Whether `database_bytes` counts in the total. `false` from the moment an update of the
    /// instance is Queued (Not Started), i.e. approved or needing no approval, however far
    /// ahead its window (seed 001): it counts again once its database upgrade completes.
    pub counted: bool,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct StorageView {
    pub instances: Vec<InstanceStorage>,
    pub total_database_bytes: u64,
    /// All bytes in the backup repository (shared chunks counted once).
    pub total_backup_bytes: u64,
}

/// A page of the storage view (the Backup & Restore tab), with the fleet's totals.
#[derive(Debug, Clone, Serialize)]
pub struct StoragePage {
    /// This page's instances, by name.
    pub instances: Vec<InstanceStorage>,
    /// How many instances match the filter, on every page.
    pub total: u64,
    /// The instance asked for, when there is one by that name.
    pub chosen: Option<InstanceStorage>,
    /// Database storage of every instance that counts (every page, no filter).
    pub total_database_bytes: u64,
    /// All bytes in the backup repository; `None` while it cannot be listed.
    pub total_backup_bytes: Option<u64>,
}

/// Completed backups per instance and the instances left out of the storage total, for
/// [`InstanceStorage`] rows.
struct BackupTotals {
    by_instance: HashMap<i64, (u64, u64)>,
    left_out: HashSet<String>,
}

impl BackupTotals {
    fn new(totals: Vec<(i64, u64, u64)>, left_out: Vec<String>) -> Self {
        Self {
            by_instance: totals
                .into_iter()
                .map(|(id, count, bytes)| (id, (count, bytes)))
                .collect(),
            left_out: left_out.into_iter().collect(),
        }
    }

    fn of(&self, i: &InstanceRow) -> InstanceStorage {
        let (count, bytes) = self.by_instance.get(&i.id).copied().unwrap_or((0, 0));
        InstanceStorage {
            name: i.name.clone(),
            instance_type: i.instance_type.as_str().into(),
            database_bytes: i.storage_bytes,
            backup_bytes: bytes,
            backup_count: count,
            counted: !self.left_out.contains(&i.name),
        }
    }
}

/// A repository total older than this is listed again (in the background) when viewed: how
/// late a change made by another node, continuous capture or a drill shows.
pub const REPO_TOTAL_MAX_AGE: Duration = Duration::seconds(60);
/// While changes keep coming (a fleet's system backups), the repository is listed at most
/// once per this long.
const REPO_TOTAL_PAUSE: std::time::Duration = std::time::Duration::from_secs(2);

/// The backup repository's total size as last listed ([`Services::total_backup_bytes`]).
#[derive(Debug, Default, Clone)]
pub struct RepoTotal {
    state: Arc<Mutex<RepoTotalState>>,
    /// Held while the repository is listed: one listing at a time.
    listing: Arc<Mutex<()>>,
}

#[derive(Debug, Default)]
struct RepoTotalState {
    bytes: Option<u64>,
    /// When the listing that found `bytes` started.
    at: Option<DateTime<Utc>>,
    /// Counts this node's changes to the repository.
    generation: u64,
    /// The generation `bytes` includes (that of the start of its listing).
    seen: u64,
    /// A background listing is running.
    refreshing: bool,
}

impl RepoTotal {
    fn lock_state(&self) -> std::sync::MutexGuard<'_, RepoTotalState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_listing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.listing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a change; whether a total is known (and so needs listing again).
    fn bump(&self) -> bool {
        let mut t = self.lock_state();
        t.generation += 1;
        t.bytes.is_some()
    }

    /// Lists the repository and keeps its total (the caller holds `listing`).
    fn list(
        &self,
        repo: &steward_repo::Repository,
        clock: &dyn steward_core::Clock,
    ) -> Result<u64> {
        let (generation, start) = (self.lock_state().generation, clock.now());
        let bytes = repo.stats().map_err(repo_error)?.total_bytes;
        let mut t = self.lock_state();
        // A listing that started earlier than the one kept does not replace it.
        if t.bytes.is_none() || generation >= t.seen {
            t.bytes = Some(bytes);
            t.at = Some(start);
            t.seen = generation;
        }
        Ok(bytes)
    }

    /// The background listing: lists until no change of this node came during a listing,
    /// pausing between listings while changes keep coming.
    fn refresh(&self, repo: &steward_repo::Repository, clock: &dyn steward_core::Clock) {
        loop {
            let listed = {
                let _one = self.lock_listing();
                self.list(repo, clock)
            };
            let mut t = self.lock_state();
            if let Err(e) = listed {
                tracing::warn!(error = %e, "listing the backup repository failed");
                t.refreshing = false;
                return;
            }
            if t.seen == t.generation {
                t.refreshing = false;
                return;
            }
            drop(t);
            std::thread::sleep(REPO_TOTAL_PAUSE);
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AlertView {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `info`, `success` or `error`
    pub level: String,
    pub instance: Option<String>,
    pub message: String,
}

impl From<AlertRow> for AlertView {
    fn from(a: AlertRow) -> Self {
        Self {
            id: a.id,
            at: a.at,
            level: a.level,
            instance: a.instance,
            message: a.message,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MaintenanceReport {
    /// Backups removed because they expired.
    pub expired: u64,
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
}

fn unknown_backup(id: i64) -> ServiceError {
    ServiceError::not_found("unknown_backup", format!("there is no backup {id}"))
}

pub(crate) fn refusal(e: steward_core::backup::BackupRefusal) -> ServiceError {
    use steward_core::backup::BackupRefusal::*;
    let code = match &e {
        ReleaseTooOld { .. } => "release_too_old",
        TargetNotSandbox { .. } => "target_not_sandbox",
        TargetBusy { .. } | SourceBusy { .. } => "instance_busy",
    };
    ServiceError::conflict(code, e.to_string())
}

pub(crate) fn repo_error(e: steward_repo::RepoError) -> ServiceError {
    match crate::backup_repo::unreachable(&e) {
        // Object storage that is down or too slow: say so first, then the details.
        Some(what) => ServiceError::internal(format!("{what}; given up after retries: {e}")),
        None => ServiceError::internal(format!("backup repository: {e}")),
    }
}

fn live_backup(db: &Db, id: i64) -> Result<BackupRow> {
    match db.backup(id)? {
        Some(b) if b.status != "deleted" && b.status != "expired" => Ok(b),
        _ => Err(unknown_backup(id)),
    }
}

fn instance_release(i: &InstanceRow) -> Result<ReleaseVersion> {
    i.release.parse().map_err(|e| {
        ServiceError::internal(format!(
            "{} has an unreadable release {:?}: {e}",
            i.name, i.release
        ))
    })
}

/// Sets an instance's state if it is in `from` (so a recovery never overrides another job's
/// state).
pub(crate) fn set_state(
    db: &Db,
    instance_id: i64,
    from: &[InstanceState],
    to: InstanceState,
) -> Result<()> {
    if let Some(mut i) = db.instance_by_id(instance_id)?
        && from.contains(&i.state)
    {
        i.state = to;
        db.update_instance(&i)?;
    }
    Ok(())
}

impl Services {
    fn backup_view(&self, actor: &Actor, b: BackupRow) -> BackupView {
        let may = |a| authorize(actor.role, a).is_ok();
        let live = matches!(
            b.status.as_str(),
            "queued" | "running" | "completed" | "failed"
        );
        let managed = b.kind.user_managed() && live;
        let verified = self.verification_state(b.id);
        let last_drill = self.last_drill_of_backup(b.id).unwrap_or_default();
        BackupView {
            last_drill,
            damaged: verified.damaged,
            damage: verified.damage,
            verification: verified.latest,
            can_edit: managed && may(Action::EditBackup),
            can_delete: managed
                && !matches!(b.status.as_str(), "running" | "queued")
                && may(Action::DeleteBackup),
            can_restore: b.status == "completed" && !verified.damaged && may(Action::RestoreBackup),
            id: b.id,
            instance: b.instance_name,
            kind: b.kind.as_str().into(),
            label: b.label,
            notes: b.notes,
            status: b.status,
            release: b.release,
            created_by: b.created_by,
            created_at: b.created_at,
            completed_at: b.completed_at,
            expires_at: b.expires_at,
            size_bytes: b.size_bytes,
            stored_bytes: b.stored_bytes,
            job_id: b.job_id,
            error: b.error,
        }
    }

    fn retention(&self, kind: BackupKind) -> Duration {
        match kind {
            BackupKind::System => self.backups.system_retention,
            BackupKind::OnDemand | BackupKind::PreUpdate | BackupKind::PreRefresh => {
                self.backups.on_demand_retention
            }
        }
    }

    /// Queues a backup of `inst` and its job, in the caller's transaction. `Ok(None)` when a
    /// system backup for `scheduled_for` already exists.
    #[allow(clippy::too_many_arguments)]
    fn queue_backup(
        &self,
        db: &Db,
        actor: &Actor,
        inst: &InstanceRow,
        kind: BackupKind,
        label: &str,
        notes: &str,
        scheduled_for: Option<String>,
        now: DateTime<Utc>,
    ) -> Result<Option<BackupRow>> {
        check_backup(
            &inst.name,
            instance_release(inst)?,
            inst.state,
            self.backups.minimum_release,
        )
        .map_err(refusal)?;
        let Some(mut backup) = db.insert_backup(
            &NewBackup {
                instance_id: inst.id,
                instance_name: inst.name.clone(),
                kind,
                label: label.to_owned(),
                notes: notes.to_owned(),
                release: inst.release.clone(),
                scheduled_for,
                created_by: actor.username.clone(),
                expires_at: now + self.retention(kind),
            },
            now,
        )?
        else {
            return Ok(None);
        };
        let job = db.insert_job(
            &NewJob {
                kind: BACKUP_JOB.into(),
                target: inst.name.clone(),
                params: json!({"backup_id": backup.id}),
                created_by: actor.username.clone(),
            },
            now,
        )?;
        backup.job_id = Some(job.id);
        db.update_backup(&backup)?;
        db.audit(
            &audit_entry(
                actor,
                "backup.create",
                &inst.name,
                json!({"after": {"backup_id": backup.id, "kind": kind, "label": label, "notes": notes, "expires_at": backup.expires_at}}),
            ),
            now,
        )?;
        Ok(Some(backup))
    }

    pub fn list_backups(&self, actor: &Actor, instance: &str) -> Result<Vec<BackupView>> {
        authorize(actor.role, Action::ViewBackups)?;
        let rows = self.store.read(|db| {
            let inst = live_instance(db, instance)?;
            Ok::<_, ServiceError>(db.list_backups(inst.id)?)
        })?;
        Ok(rows
            .into_iter()
            .map(|b| self.backup_view(actor, b))
            .collect())
    }

    /// Queues an on-demand backup with a label (required) and notes.
    pub fn create_backup(
        &self,
        actor: &Actor,
        instance: &str,
        label: &str,
        notes: Option<&str>,
    ) -> Result<BackupView> {
        authorize(actor.role, Action::CreateBackup)?;
        let label = Label::parse(label)
            .map_err(|e| ServiceError::invalid("invalid_label", e.to_string()))?;
        let notes = notes.unwrap_or("").trim();
        check_notes(notes).map_err(|e| ServiceError::invalid("invalid_notes", e.to_string()))?;
        let now = self.now();
        let backup = self.store.write(|db| {
            let inst = live_instance(db, instance)?;
            self.queue_backup(
                db,
                actor,
                &inst,
                BackupKind::OnDemand,
                label.as_str(),
                notes,
                None,
                now,
            )?
            .ok_or_else(|| ServiceError::internal("the backup was not queued"))
        })?;
        self.job_wakeup.notify_one();
        Ok(self.backup_view(actor, backup))
    }

    pub fn show_backup(&self, actor: &Actor, id: i64) -> Result<BackupView> {
        authorize(actor.role, Action::ViewBackups)?;
        let b = self.store.read(|db| live_backup(db, id))?;
        Ok(self.backup_view(actor, b))
    }

    /// Changes an on-demand backup's label and/or notes.
    pub fn edit_backup(
        &self,
        actor: &Actor,
        id: i64,
        label: Option<&str>,
        notes: Option<&str>,
    ) -> Result<BackupView> {
        authorize(actor.role, Action::EditBackup)?;
        let label = label
            .map(Label::parse)
            .transpose()
            .map_err(|e| ServiceError::invalid("invalid_label", e.to_string()))?;
        if let Some(n) = notes {
            check_notes(n).map_err(|e| ServiceError::invalid("invalid_notes", e.to_string()))?;
        }
        if label.is_none() && notes.is_none() {
            return Err(ServiceError::invalid(
                "nothing_to_change",
                "give a new label, new notes, or both",
            ));
        }
        let now = self.now();
        let b = self.store.write(|db| {
            let mut b = live_backup(db, id)?;
            if !b.kind.user_managed() {
                return Err(immutable(&b));
            }
            let before = json!({"label": b.label, "notes": b.notes});
            if let Some(l) = &label {
                b.label = l.as_str().to_owned();
            }
            if let Some(n) = notes {
                b.notes = n.trim().to_owned();
            }
            db.update_backup(&b)?;
            db.audit(
                &audit_entry(
                    actor,
                    "backup.edit",
                    &b.instance_name,
                    json!({"backup_id": id, "before": before, "after": {"label": b.label, "notes": b.notes}}),
                ),
                now,
            )?;
            Ok(b)
        })?;
        Ok(self.backup_view(actor, b))
    }

    /// Deletes an on-demand backup (its data is reclaimed by the next prune).
    pub fn delete_backup(&self, actor: &Actor, id: i64) -> Result<BackupView> {
        authorize(actor.role, Action::DeleteBackup)?;
        let now = self.now();
        let b = self.store.write(|db| {
            let mut b = live_backup(db, id)?;
            if !b.kind.user_managed() {
                return Err(immutable(&b));
            }
            if b.status == "running" || b.status == "queued" {
                return Err(ServiceError::conflict(
                    "backup_running",
                    format!("backup {id} is still being created; delete it when it has finished"),
                ));
            }
            if let Some(repo_id) = &b.repo_id {
                match self.repo()?.delete_backup(repo_id) {
                    Ok(()) | Err(steward_repo::RepoError::BackupNotFound(_)) => {}
                    Err(e) => return Err(repo_error(e)),
                }
            }
            b.status = "deleted".into();
            db.update_backup(&b)?;
            db.audit(
                &audit_entry(
                    actor,
                    "backup.delete",
                    &b.instance_name,
                    json!({"before": {"backup_id": id, "label": b.label}}),
                ),
                now,
            )?;
            Ok(b)
        })?;
        if b.repo_id.is_some() {
            self.repo_changed_now();
        }
        Ok(self.backup_view(actor, b))
    }

    /// Starts restoring a completed backup into `target`, which must be an available sandbox.
    pub fn restore_backup(&self, actor: &Actor, id: i64, target: &str) -> Result<RestoreStarted> {
        authorize(actor.role, Action::RestoreBackup)?;
        let now = self.now();
        let (backup, job, inst) = self.store.write(|db| {
            let b = live_backup(db, id)?;
            if b.status != "completed" || b.repo_id.is_none() {
                return Err(ServiceError::conflict(
                    "backup_not_restorable",
                    format!("backup {id} is {}; only completed backups can be restored", b.status),
                ));
            }
            super::verify::refuse_if_damaged(db, &b)?;
            let mut inst = live_instance(db, target)?;
            check_restore_target(&inst.name, inst.instance_type, inst.state).map_err(refusal)?;
            let before = json!({"release": inst.release, "state": inst.state});
            inst.state = InstanceState::Restoring;
            db.update_instance(&inst)?;
            self.end_capture_of(db, inst.id, "the instance was restored")?;
            let job = db.insert_job(
                &NewJob {
                    kind: RESTORE_JOB.into(),
                    target: inst.name.clone(),
                    params: json!({"backup_id": b.id, "target": inst.name}),
                    created_by: actor.username.clone(),
                },
                now,
            )?;
            db.audit(
                &audit_entry(
                    actor,
                    "backup.restore",
                    &inst.name,
                    json!({"backup_id": b.id, "source": b.instance_name, "label": b.label, "before": before, "after": {"release": b.release}}),
                ),
                now,
            )?;
            Ok((b, job, inst))
        })?;
        self.job_wakeup.notify_one();
        Ok(RestoreStarted {
            job: JobView::from_row(job),
            backup: self.backup_view(actor, backup),
            target: InstanceView::from(&inst),
        })
    }

    /// Database storage per instance (what counts as used) and backup storage, separately:
    /// every instance (`GET /api/v1/storage`). Database storage is what each instance's node
    /// recorded; the repository's total is [`Services::total_backup_bytes`].
    pub fn storage(&self, actor: &Actor) -> Result<StorageView> {
        authorize(actor.role, Action::ViewBackups)?;
        let (instances, totals, left_out) = self.store.read(|db| {
            Ok::<_, ServiceError>((
                db.list_instances()?,
                db.backup_totals()?,
                db.instances_left_out_of_storage()?,
            ))
        })?;
        let total_backup_bytes = self.total_backup_bytes()?;
        let totals = BackupTotals::new(totals, left_out);
        let instances: Vec<InstanceStorage> = instances.iter().map(|i| totals.of(i)).collect();
        Ok(StorageView {
            total_database_bytes: instances
                .iter()
                .filter(|i| i.counted)
                .map(|i| i.database_bytes)
                .sum(),
            instances,
            total_backup_bytes,
        })
    }

    /// One page of the storage view (instances by name, those whose name contains
    /// `q.contains`), the storage of the instance `chosen` (when there is such an instance),
    /// and the totals of the whole fleet. A bounded number of queries, whatever the fleet.
    pub fn storage_page(
        &self,
        actor: &Actor,
        q: &InstanceListQuery,
        chosen: Option<&str>,
    ) -> Result<StoragePage> {
        authorize(actor.role, Action::ViewBackups)?;
        let contains = q.filter();
        let query = q.store_query(0);
        let (page, fleet_bytes, chosen, totals, left_out) = self.store.read(|db| {
            let page = db.instance_page(&query)?;
            // The whole fleet's recorded storage: the page's sum when nothing is filtered.
            let fleet_bytes = match contains {
                None => page.storage_bytes,
                Some(_) => {
                    let all = steward_store::InstanceQuery {
                        contains: None,
                        after: None,
                        offset: 0,
                        limit: 0,
                    };
                    db.instance_page(&all)?.storage_bytes
                }
            };
            let chosen = match chosen {
                Some(name) => db.instance_by_name(name)?,
                None => None,
            };
            // Seed 001 (as `list_instances_page` counts it): an instance whose update is
            // Queued (Not Started) is left out of the whole fleet's total until its upgrade
            // completes.
            let left_out = db.storage_left_out(None)?;
            let ids: Vec<i64> = page.rows.iter().chain(&chosen).map(|r| r.id).collect();
            Ok::<_, ServiceError>((
                page,
                fleet_bytes.saturating_sub(left_out.bytes),
                chosen,
                db.backup_totals_of(&ids)?,
                left_out.names,
            ))
        })?;
        let totals = BackupTotals::new(totals, left_out);
        let total_backup_bytes = match self.total_backup_bytes() {
            Ok(bytes) => Some(bytes),
            Err(e) => {
                tracing::warn!(error = %e, "the backup repository's size is not known now");
                None
            }
        };
        Ok(StoragePage {
            instances: page.rows.iter().map(|i| totals.of(i)).collect(),
            total: page.total,
            chosen: chosen.as_ref().map(|i| totals.of(i)),
            total_database_bytes: fleet_bytes,
            total_backup_bytes,
        })
    }

    /// All bytes in the backup repository. Listing the repository reads every object's size
    /// (tens of thousands with a large fleet), so the total is kept ([`RepoTotal`]) and a view
    /// never waits for a listing, except the very first:
    /// - a change this node makes for someone (an on-demand or pre-update backup, a delete,
    ///   expiry and prune) lists it again before the change is reported done
    ///   ([`Services::repo_changed_now`]), so the page shown next has the new total;
    /// - the daily system backups list it again in the background, at most once per
    ///   [`REPO_TOTAL_PAUSE`] while they keep coming ([`Services::repo_changed`]);
    /// - a view of a total older than [`REPO_TOTAL_MAX_AGE`] lists it again in the background
    ///   (changes by other nodes sharing the repository, continuous capture, drills).
    pub fn total_backup_bytes(&self) -> Result<u64> {
        let now = self.now();
        {
            let mut t = self.repo_total.lock_state();
            if let (Some(bytes), Some(at)) = (t.bytes, t.at) {
                let age = now.signed_duration_since(at);
                if age >= REPO_TOTAL_MAX_AGE || age < Duration::zero() || t.seen != t.generation {
                    self.refresh_repo_total(&mut t);
                }
                return Ok(bytes);
            }
        }
        // Nothing listed yet: list now, one listing at a time (a view that waited for another
        // uses its result).
        let _one = self.repo_total.lock_listing();
        if let Some(bytes) = self.repo_total.lock_state().bytes {
            return Ok(bytes);
        }
        self.repo_total.list(&*self.repo()?, self.clock.as_ref())
    }

    /// Records that this node changed the backup repository and lists it again now, when its
    /// total has been asked for (see [`Services::total_backup_bytes`]).
    pub(crate) fn repo_changed_now(&self) {
        if !self.repo_total.bump() {
            return;
        }
        let _one = self.repo_total.lock_listing();
        let listed = self
            .repo()
            .and_then(|repo| self.repo_total.list(&repo, self.clock.as_ref()));
        if let Err(e) = listed {
            // The next view lists it again in the background.
            tracing::warn!(error = %e, "listing the backup repository failed");
        }
    }

    /// Records that this node changed the backup repository; its total is listed again in the
    /// background (see [`Services::total_backup_bytes`]).
    pub(crate) fn repo_changed(&self) {
        if self.repo_total.bump() {
            self.refresh_repo_total(&mut self.repo_total.lock_state());
        }
    }

    /// Starts listing the repository in a background thread, unless one is running (that one
    /// lists again when it ends, since the generation moved).
    fn refresh_repo_total(&self, t: &mut RepoTotalState) {
        if t.refreshing {
            return;
        }
        let repo = match self.repo() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "the backup repository cannot be listed now");
                return;
            }
        };
        t.refreshing = true;
        let total = self.repo_total.clone();
        let clock = self.clock.clone();
        let spawned = std::thread::Builder::new()
            .name("repo-total".into())
            .spawn(move || total.refresh(&repo, clock.as_ref()));
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread to list the backup repository");
            t.refreshing = false;
        }
    }

    pub fn list_alerts(&self, actor: &Actor, limit: i64) -> Result<Vec<AlertView>> {
        authorize(actor.role, Action::ViewInstances)?;
        let rows = self.store.read(|db| db.list_alerts(limit))?;
        Ok(rows.into_iter().map(AlertView::from).collect())
    }

    /// Records an in-product alert and emits the notification `event`, in one transaction.
    pub(crate) fn alert(
        &self,
        event: Event,
        level: &str,
        instance: &str,
        message: String,
        details: Value,
    ) {
        if let Err(e) = self.store.write(|db| {
            self.announce(db, event, level, Some(instance), &message, details)
                .map(drop)
        }) {
            tracing::error!(error = %e, "could not record an alert");
        }
    }

    /// Queues today's system backup of every instance whose start time (the configured time
    /// plus the instance's fixed offset) has passed. Returns how many were queued.
    pub fn schedule_system_backups(&self) -> Result<usize> {
        let Some(start) = self.backups.system_time else {
            return Ok(0);
        };
        let now = self.now();
        let today = now.date_naive();
        let base = today.and_time(start).and_utc();
        let day = today.format("%Y-%m-%d").to_string();
        // Those that have today's already are left out in one query (a fleet of 10,000 would
        // otherwise cost 10,000 write transactions every minute of the day).
        let (instances, done) = self.store.read(|db| {
            Ok::<_, ServiceError>((db.list_instances()?, db.instances_with_system_backup(&day)?))
        })?;
        let mut queued = 0;
        for inst in instances {
            if done.contains(&inst.id) {
                continue;
            }
            let offset = spread_offset(&inst.name, self.backups.spread_minutes);
            if now < base + offset {
                continue;
            }
            let label = format!("System backup {day}");
            let r = self.store.write(|db| {
                self.queue_backup(
                    db,
                    &Actor::system(),
                    &inst,
                    BackupKind::System,
                    &label,
                    "",
                    Some(day.clone()),
                    now,
                )
            });
            match r {
                Ok(Some(_)) => queued += 1,
                Ok(None) => {}
                Err(e) if e.code == "instance_busy" => {} // tried again at the next tick
                Err(e) => tracing::warn!(instance = %inst.name, error = %e, "no system backup"),
            }
        }
        if queued > 0 {
            self.job_wakeup.notify_one();
        }
        Ok(queued)
    }

    /// Removes expired backups from the repository and marks them expired; then prunes.
    pub fn expire_and_prune(&self) -> Result<MaintenanceReport> {
        let now = self.now();
        let expired = self.store.read(|db| db.expired_backups(now))?;
        for mut b in expired.iter().cloned() {
            if let Some(repo_id) = &b.repo_id {
                match self.repo()?.delete_backup(repo_id) {
                    Ok(()) | Err(steward_repo::RepoError::BackupNotFound(_)) => {}
                    Err(e) => return Err(repo_error(e)),
                }
            }
            b.status = "expired".into();
            self.store.write(|db| {
                db.update_backup(&b)?;
                db.audit(
                    &audit_entry(&Actor::system(), "backup.expire", &b.instance_name, json!({"before": {"backup_id": b.id, "label": b.label, "expires_at": b.expires_at}})),
                    now,
                )
            })?;
        }
        // Captured moments older than the capture retention: their chains go whole.
        self.expire_capture()?;
        // Prune condemns unreferenced packs first and deletes them on a later pass.
        let opts = steward_repo::PruneOptions {
            grace: self.backups.prune_grace,
            clock_skew_margin: self
                .backups
                .prune_grace
                .min(std::time::Duration::from_secs(300)),
            ..Default::default()
        };
        let mut report = MaintenanceReport {
            expired: expired.len() as u64,
            packs_deleted: 0,
            bytes_deleted: 0,
        };
        for _ in 0..2 {
            let s = self.repo()?.prune(&opts).map_err(repo_error)?;
            report.packs_deleted += s.packs_deleted;
            report.bytes_deleted += s.bytes_deleted;
        }
        self.repo_changed_now();
        Ok(report)
    }

    /// Expires and prunes now (System Administrators).
    pub fn run_maintenance(&self, actor: &Actor) -> Result<MaintenanceReport> {
        authorize(actor.role, Action::RunMaintenance)?;
        self.expire_and_prune()
    }

    /// Takes a labelled pre-update backup of `instance` now, in the caller's thread (the
    /// update pipeline runs it as its Backup stage). Returns the completed backup.
    pub fn take_pre_update_backup(&self, instance: &str, label: &str) -> Result<BackupView> {
        self.take_backup_now(instance, BackupKind::PreUpdate, label, "", None)
    }

    /// Takes a backup of `instance` now, in the caller's thread, created by System; kept for
    /// `retention` (the kind's default when `None`). The instance must be available; it is
    /// `backing_up` while this runs and available again afterwards. Returns the completed
    /// backup, or the backup's error (the backup is then marked failed).
    pub(crate) fn take_backup_now(
        &self,
        instance: &str,
        kind: BackupKind,
        label: &str,
        notes: &str,
        retention: Option<Duration>,
    ) -> Result<BackupView> {
        let now = self.now();
        let label = Label::parse(label)
            .map_err(|e| ServiceError::invalid("invalid_label", e.to_string()))?;
        let (backup, kept_by) = self.store.write(|db| {
            let inst = live_instance(db, instance)?;
            let mut b = self
                .queue_backup(
                    db,
                    &Actor::system(),
                    &inst,
                    kind,
                    label.as_str(),
                    notes,
                    None,
                    now,
                )?
                .ok_or_else(|| ServiceError::internal("the backup was not queued"))?;
            if let Some(r) = retention {
                b.expires_at = now + r;
                db.update_backup(&b)?;
            }
            let elsewhere = inst.node.filter(|n| n != self.node.name());
            Ok::<_, ServiceError>((b, elsewhere))
        })?;
        match kept_by {
            // Only the node that keeps the instance can read its file: its job runner takes
            // the queued job, and this waits for the backup in the shared repository.
            Some(node) => self.wait_for_backup_on(&backup, &node),
            None => self.run_backup_here(&backup, now),
        }
    }

    /// Waits until backup `backup` (queued for an instance kept by `node`) completes or
    /// fails; fails too once `node` is no longer up.
    fn wait_for_backup_on(&self, backup: &BackupRow, node: &str) -> Result<BackupView> {
        tracing::info!(
            backup = backup.id,
            node,
            "waiting for the backup on the node that keeps the instance"
        );
        loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let now = self.now();
            let (row, holder) = self.store.read(|db| {
                Ok::<_, ServiceError>((db.backup(backup.id)?, db.node_by_name(node)?))
            })?;
            let Some(row) = row else {
                return Err(ServiceError::internal(format!(
                    "backup {} is gone",
                    backup.id
                )));
            };
            match row.status.as_str() {
                "completed" => return self.show_backup(&Actor::system(), backup.id),
                "failed" => {
                    return Err(ServiceError::conflict(
                        "backup_failed",
                        format!(
                            "the backup of {} on node {node} failed: {}",
                            row.instance_name,
                            row.error.unwrap_or_default()
                        ),
                    ));
                }
                _ => {}
            }
            let up = holder.is_some_and(|h| {
                steward_core::node::node_status(
                    now,
                    h.heartbeat_at,
                    h.stopped_at,
                    self.node.settings.down_after,
                ) == steward_core::node::NodeStatus::Up
            });
            if !up {
                return Err(ServiceError::conflict(
                    "node_unavailable",
                    format!(
                        "node {node}, which keeps {} and must take its backup, is not up; the \
                         backup runs when it is back",
                        row.instance_name
                    ),
                ));
            }
        }
    }

    /// Takes a pre-update backup of `instance` while the update pipeline holds it `updating`
    /// (its Backup stage): the instance stays `updating` and unavailable throughout. The other
    /// backup rules (minimum release) apply as usual. Returns the completed backup.
    pub(crate) fn take_pre_update_backup_held(
        &self,
        instance: &str,
        label: &str,
    ) -> Result<BackupView> {
        let now = self.now();
        let label = Label::parse(label)
            .map_err(|e| ServiceError::invalid("invalid_label", e.to_string()))?;
        let backup = self.store.write(|db| {
            let mut inst = live_instance(db, instance)?;
            if inst.state != InstanceState::Updating {
                return Err(ServiceError::conflict(
                    "instance_busy",
                    format!("{instance} is not held for an update"),
                ));
            }
            // The update owns the instance; check the remaining rules as for an available one.
            inst.state = InstanceState::Available;
            self.queue_backup(
                db,
                &Actor::system(),
                &inst,
                BackupKind::PreUpdate,
                label.as_str(),
                "",
                None,
                now,
            )?
            .ok_or_else(|| ServiceError::internal("the backup was not queued"))
        })?;
        self.run_backup_here(&backup, now)
    }

    /// Runs queued `backup` in the caller's thread rather than through the job queue, and
    /// marks its job done with the outcome. Returns the completed backup.
    fn run_backup_here(&self, backup: &BackupRow, now: DateTime<Utc>) -> Result<BackupView> {
        let job_id = backup.job_id.expect("queued with a job");
        let claimed = self.store.write(|db| db.claim_job(job_id, now))?;
        let ctx = JobContext::new(self, job_id);
        let outcome = run_backup(self, &claimed, &ctx);
        let end = self.now();
        self.store.write(|db| match &outcome {
            Ok(v) => db.finish_job(job_id, Ok(v), end),
            Err(e) => db.finish_job(job_id, Err(&e.message), end),
        })?;
        outcome?;
        self.show_backup(&Actor::system(), backup.id)
    }

    /// Restores completed backup `backup_id` into the file `dest` (written, fsynced, hashed
    /// and integrity-checked; any file there is replaced). The caller swaps it into place
    /// with [`swap_in`] or removes it with [`remove_with_sidecars`].
    pub(crate) fn restore_to_file(
        &self,
        backup_id: i64,
        dest: &Path,
        progress: &(dyn Fn(steward_repo::Progress) + Sync),
    ) -> Result<steward_repo::RestoreSummary> {
        let b = self
            .store
            .read(|db| db.backup(backup_id))?
            .ok_or_else(|| unknown_backup(backup_id))?;
        let repo_id = b.repo_id.clone().ok_or_else(|| {
            ServiceError::conflict("backup_not_restorable", "the backup has no data")
        })?;
        self.store
            .read(|db| super::verify::refuse_if_damaged(db, &b))?;
        remove_with_sidecars(dest);
        self.repo()?
            .restore(
                &repo_id,
                dest,
                &steward_repo::RestoreOptions::default(),
                progress,
            )
            .map_err(repo_error)
    }

    fn pause(&self) {
        if !self.stage_pause.is_zero() {
            std::thread::sleep(self.stage_pause);
        }
    }
}

fn immutable(b: &BackupRow) -> ServiceError {
    let what = match b.kind {
        BackupKind::System => "a system backup",
        BackupKind::PreRefresh => "the safety backup taken before a refresh",
        _ => "a pre-update backup",
    };
    ServiceError::conflict(
        "system_backup_immutable",
        format!(
            "backup {} is {what}; it can be restored but not edited or deleted",
            b.id
        ),
    )
}

/// A fixed offset in `[0, spread)` minutes for an instance, from a hash of its name.
fn spread_offset(name: &str, spread_minutes: u32) -> Duration {
    if spread_minutes == 0 {
        return Duration::zero();
    }
    let h = blake3::hash(name.as_bytes());
    let n = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
    Duration::seconds((n % (u64::from(spread_minutes) * 60)) as i64)
}

/// Reports progress at most once per percent.
pub(crate) fn progress_reporter<'a>(
    ctx: &'a JobContext<'a>,
) -> impl Fn(steward_repo::Progress) + Sync + 'a {
    let last = AtomicU64::new(u64::MAX);
    move |p: steward_repo::Progress| {
        let pct = p.bytes_done.saturating_mul(100) / p.bytes_total.max(1);
        if last.swap(pct, Ordering::Relaxed) != pct {
            let _ = ctx.progress(p.bytes_done, p.bytes_total);
        }
    }
}

fn backup_id_of(job: &JobRow) -> Result<i64> {
    job.params["backup_id"]
        .as_i64()
        .ok_or_else(|| ServiceError::internal(format!("job {} names no backup", job.id)))
}

/// The `backup` job: a consistent online snapshot of the instance's database into the
/// repository; the instance stays available (writers continue) and shows `backing_up`.
fn run_backup(s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
    let id = backup_id_of(job)?;
    let (mut b, inst) = s.store.write(|db| {
        let mut b = db.backup(id)?.ok_or_else(|| unknown_backup(id))?;
        let inst = db
            .instance_by_id(b.instance_id)?
            .ok_or_else(|| ServiceError::internal(format!("instance of backup {id} is gone")))?;
        b.status = "running".into();
        db.update_backup(&b)?;
        set_state(
            db,
            inst.id,
            &[InstanceState::Available],
            InstanceState::BackingUp,
        )?;
        s.announce(
            db,
            Event::BackupStarted,
            "info",
            Some(&inst.name),
            &format!("Backup “{}” of {} started", b.label, inst.name),
            backup_details(&b),
        )?;
        Ok::<_, ServiceError>((b, inst))
    })?;
    let result = (|| {
        ctx.stage("snapshot")?;
        s.pause();
        let meta = BTreeMap::from([
            ("steward_backup_id".to_string(), id.to_string()),
            ("instance".to_string(), inst.name.clone()),
            ("kind".to_string(), b.kind.as_str().to_string()),
            ("label".to_string(), b.label.clone()),
            ("release".to_string(), b.release.clone()),
        ]);
        let report = progress_reporter(ctx);
        let summary = s
            .repo()?
            .backup_sqlite(Path::new(&inst.database_path), meta, &report)
            .map_err(repo_error)?;
        ctx.stage("finish")?;
        s.pause();
        Ok::<_, ServiceError>(summary)
    })();
    let end = s.now();
    // The repository's total: listed again now for a backup someone waits for; in the
    // background for the fleet's system backups (and for a failed one's leftovers).
    if result.is_ok() && b.kind != BackupKind::System {
        s.repo_changed_now();
    } else {
        s.repo_changed();
    }
    match result {
        Ok(summary) => {
            b.status = "completed".into();
            b.repo_id = Some(summary.id.clone());
            b.size_bytes = Some(summary.bytes_read);
            b.stored_bytes = Some(summary.bytes_added);
            b.completed_at = Some(end);
            s.store.write(|db| {
                db.update_backup(&b)?;
                set_state(
                    db,
                    inst.id,
                    &[InstanceState::BackingUp],
                    InstanceState::Available,
                )?;
                s.announce(
                    db,
                    Event::BackupSucceeded,
                    "success",
                    Some(&inst.name),
                    &format!("Backup “{}” of {} succeeded", b.label, inst.name),
                    backup_details(&b),
                )?;
                Ok::<_, ServiceError>(())
            })?;
            Ok(
                json!({"backup_id": id, "repo_id": summary.id, "bytes_read": summary.bytes_read, "bytes_added": summary.bytes_added,
                      "chunks_new": summary.chunks_new, "chunks_reused": summary.chunks_reused, "seconds": summary.duration.as_secs_f64()}),
            )
        }
        Err(e) => {
            s.store.write(|db| fail_backup(s, db, &mut b, &e.message))?;
            Err(e)
        }
    }
}

/// Marks a backup failed with `error`, gives its instance back (if it still shows the backup),
/// and announces the failure, in the caller's transaction.
fn fail_backup(s: &Services, db: &Db, b: &mut BackupRow, error: &str) -> Result<()> {
    b.status = "failed".into();
    b.error = Some(error.to_owned());
    db.update_backup(b)?;
    set_state(
        db,
        b.instance_id,
        &[InstanceState::BackingUp],
        InstanceState::Available,
    )?;
    s.announce(
        db,
        Event::BackupFailed,
        "error",
        Some(&b.instance_name),
        &format!(
            "Backup “{}” of {} failed: {error}",
            b.label, b.instance_name
        ),
        backup_details(b),
    )?;
    Ok(())
}

/// After a crash during a backup: no manifest means no backup; a manifest written just before
/// the crash is deleted so the failed row and the repository agree. Prune reclaims the data.
fn recover_backup(s: &Services, job: &JobRow) -> Recovery {
    let msg =
        "interrupted: Steward stopped while this backup ran; nothing of it was kept".to_string();
    let Ok(id) = backup_id_of(job) else {
        return Recovery::Fail(msg);
    };
    // A repository that cannot be reached now keeps such a manifest (and its data): its row is
    // failed, so no view offers it, but nothing deletes it later either.
    if let Ok(repo) = s.repo()
        && let Ok(manifests) = repo.list_backups()
    {
        for m in manifests
            .iter()
            .filter(|m| m.metadata.get("steward_backup_id") == Some(&id.to_string()))
        {
            let _ = repo.delete_backup(&m.id);
        }
    }
    let r = s.store.write(|db| {
        if let Some(mut b) = db.backup(id)? {
            fail_backup(s, db, &mut b, &msg)?;
        }
        Ok::<_, ServiceError>(())
    });
    if let Err(e) = r {
        tracing::error!(error = %e, "could not record the interrupted backup");
    }
    Recovery::Fail(msg)
}

/// How a restore's `PRAGMA integrity_check` was satisfied, for the job's result:
/// `checked_now`, or `proven_by_drill` with when that drill checked exactly these bytes.
fn integrity_of(summary: &steward_repo::RestoreSummary) -> (&'static str, Option<DateTime<Utc>>) {
    match summary.integrity {
        steward_repo::Integrity::CheckedNow => ("checked_now", None),
        steward_repo::Integrity::ProvenByDrill { checked_ms } => (
            "proven_by_drill",
            DateTime::<Utc>::from_timestamp_millis(checked_ms as i64),
        ),
        steward_repo::Integrity::NotChecked => ("not_checked", None),
    }
}

pub(crate) fn restoring_path(db_path: &Path) -> PathBuf {
    let mut p = db_path.as_os_str().to_owned();
    p.push(RESTORING_SUFFIX);
    PathBuf::from(p)
}

/// Copies the restored, checked database into the target through SQLite's online backup API,
/// in one write transaction: applications that have the target open are kept out while it
/// runs (their writes wait or get SQLITE_BUSY), readers keep their snapshot until it commits,
/// and a crash midway is rolled back by SQLite, so the target holds either its whole previous
/// database or the whole restored one. The temporary file is removed afterwards.
pub(crate) fn swap_in(restored: &Path, db_path: &Path) -> Result<()> {
    use rusqlite::backup::{Backup, StepResult};
    let sql = |what: &str, e: rusqlite::Error| ServiceError::internal(format!("{what}: {e}"));
    let src = rusqlite_open(restored)?;
    let mut dst = rusqlite_open(db_path)?;
    {
        let copy = Backup::new(&src, &mut dst).map_err(|e| sql("cannot start the copy", e))?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match copy
                .step(-1)
                .map_err(|e| sql("copy into the target failed", e))?
            {
                StepResult::Done => break,
                StepResult::More => continue,
                _ if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                _ => {
                    return Err(ServiceError::conflict(
                        "instance_in_use",
                        format!(
                            "applications kept {} locked for 30 s; stop them and restore again",
                            db_path.display()
                        ),
                    ));
                }
            }
        }
    }
    // Keep the write-ahead log small; if a reader holds it, SQLite checkpoints later.
    let _ = dst.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()));
    drop(dst);
    drop(src);
    remove_with_sidecars(restored);
    Ok(())
}

/// Removes a database file and its `-wal` and `-shm` files, if present.
pub(crate) fn remove_with_sidecars(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn rusqlite_open(path: &Path) -> Result<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)
        .map_err(|e| ServiceError::internal(format!("cannot open {}: {e}", path.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| ServiceError::internal(e.to_string()))?;
    Ok(conn)
}

/// The `restore` job: the backup is written beside the target database and checked, then
/// copied in as one transaction (`swap_in`). The target's documents folder is never touched.
fn run_restore(s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
    let id = backup_id_of(job)?;
    let target = job.params["target"].as_str().unwrap_or_default().to_owned();
    let (b, inst) = s.store.read(|db| {
        let b = db.backup(id)?.ok_or_else(|| unknown_backup(id))?;
        let inst = live_instance(db, &target)?;
        Ok::<_, ServiceError>((b, inst))
    })?;
    s.alert(
        Event::RestoreStarted,
        "info",
        &inst.name,
        format!("Restore of “{}” into {} started", b.label, inst.name),
        restore_details(&b),
    );
    let db_path = PathBuf::from(&inst.database_path);
    let temp = restoring_path(&db_path);
    let result = (|| {
        let repo_id = b.repo_id.clone().ok_or_else(|| {
            ServiceError::conflict("backup_not_restorable", "the backup has no data")
        })?;
        ctx.stage("restore")?;
        s.pause();
        remove_with_sidecars(&temp);
        let report = progress_reporter(ctx);
        let summary = s
            .repo()?
            .restore(
                &repo_id,
                &temp,
                &steward_repo::RestoreOptions::default(),
                &report,
            )
            .map_err(repo_error)?;
        ctx.stage("swap")?;
        s.pause();
        swap_in(&temp, &db_path)?;
        Ok::<_, ServiceError>(summary)
    })();
    remove_with_sidecars(&temp);
    match result {
        Ok(summary) => {
            s.store.write(|db| {
                if let Some(mut i) = db.instance_by_id(inst.id)? {
                    i.release = b.release.clone();
                    i.state = InstanceState::Available;
                    db.update_instance(&i)?;
                }
                s.announce(
                    db,
                    Event::RestoreSucceeded,
                    "success",
                    Some(&inst.name),
                    &format!("Restore of “{}” into {} succeeded", b.label, inst.name),
                    restore_details(&b),
                )?;
                Ok::<_, ServiceError>(())
            })?;
            let (integrity, proven_at) = integrity_of(&summary);
            Ok(
                json!({"backup_id": id, "target": inst.name, "bytes": summary.bytes_written, "seconds": summary.duration.as_secs_f64(), "release": b.release,
                       "integrity": integrity, "integrity_proven_at": proven_at}),
            )
        }
        Err(e) => {
            s.store.write(|db| {
                set_state(
                    db,
                    inst.id,
                    &[InstanceState::Restoring],
                    InstanceState::Available,
                )?;
                let mut details = restore_details(&b);
                details["error"] = json!(e.message);
                s.announce(
                    db,
                    Event::RestoreFailed,
                    "error",
                    Some(&inst.name),
                    &format!(
                        "Restore of “{}” into {} failed: {}",
                        b.label, inst.name, e.message
                    ),
                    details,
                )?;
                Ok::<_, ServiceError>(())
            })?;
            Err(e)
        }
    }
}

/// After a crash during a restore: the copy into the target is one SQLite transaction, so the
/// target holds its whole previous or its whole restored database. Remove the temporary file,
/// read the release from the database itself, and make the target available again.
fn recover_restore(s: &Services, job: &JobRow) -> Recovery {
    let msg = "interrupted: Steward stopped while this restore ran".to_string();
    let target = job.params["target"].as_str().unwrap_or_default().to_owned();
    let r = s.store.write(|db| {
        if let Some(mut i) = db.instance_by_name(&target)? {
            let db_path = PathBuf::from(&i.database_path);
            remove_with_sidecars(&restoring_path(&db_path));
            if let Ok(v) = steward_engine::database_release(&db_path) {
                i.release = v.to_string();
            }
            if i.state == InstanceState::Restoring {
                i.state = InstanceState::Available;
            }
            db.update_instance(&i)?;
            s.announce(
                db,
                Event::RestoreFailed,
                "error",
                Some(&target),
                &format!("Restore into {target} failed: {msg}"),
                json!({"error": msg}),
            )?;
        }
        Ok::<_, ServiceError>(())
    });
    if let Err(e) = r {
        tracing::error!(error = %e, "could not recover the interrupted restore");
    }
    Recovery::Fail(format!(
        "{msg}; {target} holds either its previous database or the whole restored one, never a mix"
    ))
}

/// What a backup notification says about the backup.
fn backup_details(b: &BackupRow) -> Value {
    let mut d = json!({"backup": b.label, "kind": b.kind.as_str(), "status": b.status});
    if let Some(e) = &b.error {
        d["error"] = json!(e);
    }
    d
}

/// What a restore notification says about the backup restored.
fn restore_details(b: &BackupRow) -> Value {
    json!({"backup": b.label, "source_instance": b.instance_name, "release": b.release})
}

struct BackupHandler;
impl JobHandler for BackupHandler {
    fn run(&self, s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
        run_backup(s, job, ctx)
    }
    fn recover(&self, s: &Services, job: &JobRow) -> Recovery {
        recover_backup(s, job)
    }
}

struct RestoreHandler;
impl JobHandler for RestoreHandler {
    fn run(&self, s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
        run_restore(s, job, ctx)
    }
    fn recover(&self, s: &Services, job: &JobRow) -> Recovery {
        recover_restore(s, job)
    }
}

/// Registers the `backup` and `restore` job handlers.
pub fn register(handlers: &mut JobHandlers) {
    handlers.register(BACKUP_JOB, BackupHandler);
    handlers.register(RESTORE_JOB, RestoreHandler);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_backup_starts_are_spread_over_the_window_and_stable() {
        let offsets: Vec<Duration> = (0..200)
            .map(|i| spread_offset(&format!("tenant-{i}"), 120))
            .collect();
        assert!(
            offsets
                .iter()
                .all(|o| *o >= Duration::zero() && *o < Duration::minutes(120))
        );
        // A fleet of 200 does not start at once: the starts fall in every quarter of the window.
        for q in 0..4 {
            let (lo, hi) = (Duration::minutes(30 * q), Duration::minutes(30 * (q + 1)));
            let n = offsets.iter().filter(|o| **o >= lo && **o < hi).count();
            assert!(n > 20, "quarter {q} has {n} starts");
        }
        assert_eq!(
            spread_offset("crm-prod", 120),
            spread_offset("crm-prod", 120)
        );
        assert_eq!(spread_offset("crm-prod", 0), Duration::zero());
    }
}
