//! Verify (issue 13): checks that backups can be restored, without restoring them, as a
//! durable `verify` job with progress. One backup, an instance's backups or all of them; in
//! `structure` mode (no data read), `read_data` (every chunk read and hashed) or `sample`
//! (a percentage of the data).
//!
//! What a verify finds is recorded per backup (`backup_verifications`). A damage found in a
//! pack is followed to every other backup that needs something damaged in it (they are
//! checked too, and named with their instance and moment). A backup is **damaged** while a
//! failed verification stands (`steward_core::verify::standing_damage`): it is shown as such
//! wherever backups are listed, an alert is raised (`backup_damaged`), and restoring it is
//! refused (`backup_damaged`) until a verify that would have seen the problem finds it whole.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use steward_core::notify::Event;
use steward_core::policy::{Action, authorize};
use steward_core::verify::{VerifyMode, standing_damage};
use steward_store::{BackupRow, Db, JobRow, NewJob, NewVerification, VerificationRow};
use utoipa::ToSchema;

use super::backups::progress_reporter;
use super::instances::live_instance;
use super::jobs::{JobContext, JobHandler, JobHandlers, JobView, Recovery};
use super::{Actor, Result, Services, audit_entry};
use crate::error::ServiceError;

/// Job kind of a verify.
pub const VERIFY_JOB: &str = "verify";
/// The job target of a verify of every instance's backups.
pub const ALL_INSTANCES: &str = "all instances";
/// How many problems a backup's damage summary and alert quote.
const QUOTED_PROBLEMS: usize = 3;

/// Which backups a verify checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum VerifyScope {
    /// One backup, by id.
    Backup(i64),
    /// Every completed backup of an instance.
    Instance(String),
    /// Every completed backup of every instance.
    All,
}

/// A verify as asked for by a person or a script: the scope fields (exactly one) and the
/// mode words, before they are checked.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    pub backup_id: Option<i64>,
    pub instance: Option<String>,
    pub all: bool,
    /// `structure` (the default), `read_data` or `sample`.
    pub mode: Option<String>,
    pub sample_percent: Option<f64>,
}

impl VerifyRequest {
    /// The scope and mode, or a `400` naming what is wrong.
    pub fn parse(&self) -> Result<(VerifyScope, VerifyMode)> {
        let instance = self
            .instance
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let scope = match (self.backup_id, instance, self.all) {
            (Some(id), None, false) => VerifyScope::Backup(id),
            (None, Some(name), false) => VerifyScope::Instance(name.to_owned()),
            (None, None, true) => VerifyScope::All,
            _ => {
                return Err(ServiceError::invalid(
                    "invalid_scope",
                    "name what to verify with exactly one of: a backup id, an instance, or all",
                ));
            }
        };
        let word = self
            .mode
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty())
            .unwrap_or("structure");
        let mode = VerifyMode::parse(word, self.sample_percent).map_err(|e| {
            let code = match e {
                steward_core::verify::VerifyModeError::UnknownMode(_) => "invalid_mode",
                _ => "invalid_sample",
            };
            ServiceError::invalid(code, e.to_string())
        })?;
        Ok((scope, mode))
    }
}

/// The answer to starting a verify.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VerifyStarted {
    pub job: JobView,
    /// How many backups are in the scope now.
    pub backups: u64,
    /// `structure`, `read_data` or `sample`.
    pub mode: String,
    pub sample_percent: Option<f64>,
}

/// What one verify found in one backup.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerificationView {
    pub at: DateTime<Utc>,
    /// `structure`, `read_data` or `sample`.
    pub mode: String,
    pub sample_percent: Option<f64>,
    /// Whether the backup was found whole.
    pub ok: bool,
    pub chunks_needed: u64,
    pub chunks_checked: u64,
    pub bytes_read: u64,
    pub missing_chunks: u64,
    pub corrupt_chunks: u64,
    /// Packs in which something this backup needs is missing, truncated or corrupt.
    pub damaged_packs: Vec<String>,
    /// What was found, each naming the pack and/or chunk (at most 20).
    pub problems: Vec<String>,
    /// The verify job.
    pub job_id: Option<i64>,
    /// `requested` (in the scope asked for) or `shared` (checked because it may need a
    /// damaged pack of a backup that was).
    pub reason: String,
}

impl From<&VerificationRow> for VerificationView {
    fn from(r: &VerificationRow) -> Self {
        Self {
            at: r.at,
            mode: r.mode.clone(),
            sample_percent: r.sample_percent,
            ok: r.ok,
            chunks_needed: r.chunks_needed,
            chunks_checked: r.chunks_checked,
            bytes_read: r.bytes_read,
            missing_chunks: r.missing_chunks,
            corrupt_chunks: r.corrupt_chunks,
            damaged_packs: r.damaged_packs.clone(),
            problems: r.problems.clone(),
            job_id: r.job_id,
            reason: r.reason.clone(),
        }
    }
}

/// A backup's verification state: whether it is damaged, and its verifications.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackupVerificationView {
    pub backup_id: i64,
    pub instance: String,
    /// Whether a failed verification stands (restoring it is refused).
    pub damaged: bool,
    /// What the standing failure found, for people.
    pub damage: Option<String>,
    /// The latest verification.
    pub latest: Option<VerificationView>,
    /// Every verification, newest first.
    pub history: Vec<VerificationView>,
}

/// The verification state a backup view carries.
#[derive(Debug, Clone, Default)]
pub(crate) struct VerificationState {
    pub damaged: bool,
    pub damage: Option<String>,
    pub latest: Option<VerificationView>,
}

/// One backup in a verify's report.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifiedBackup {
    pub backup_id: i64,
    pub instance: String,
    pub label: String,
    pub kind: String,
    /// The moment the backup holds.
    pub created_at: DateTime<Utc>,
    pub ok: bool,
    /// `requested` or `shared` (see [`VerificationView::reason`]).
    pub reason: String,
    pub chunks_needed: u64,
    pub chunks_checked: u64,
    pub bytes_read: u64,
    pub missing_chunks: u64,
    pub corrupt_chunks: u64,
    pub damaged_packs: Vec<String>,
    pub problems: Vec<String>,
}

/// A backup named by a damaged pack.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AffectedBackup {
    pub backup_id: i64,
    pub instance: String,
    pub created_at: DateTime<Utc>,
}

/// A pack in which something is missing, truncated or corrupt, and every backup it damages.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DamagedPack {
    pub pack: String,
    pub backups: Vec<AffectedBackup>,
}

/// The result of a `verify` job (its `result`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct VerifyReportView {
    /// `structure`, `read_data` or `sample`.
    pub mode: String,
    pub sample_percent: Option<f64>,
    /// The job target: an instance, or `all instances`.
    pub scope: String,
    /// Whether every backup checked was found whole.
    pub ok: bool,
    /// Backups checked (in the scope, and those checked because they share a damaged pack).
    pub checked: u64,
    /// Backups found damaged.
    pub damaged: u64,
    pub backups: Vec<VerifiedBackup>,
    pub damaged_packs: Vec<DamagedPack>,
}

fn unknown_backup(id: i64) -> ServiceError {
    ServiceError::not_found("unknown_backup", format!("there is no backup {id}"))
}

fn repo_error(e: steward_repo::RepoError) -> ServiceError {
    ServiceError::internal(format!("backup repository: {e}"))
}

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn mode_of(row: &VerificationRow) -> VerifyMode {
    match (row.mode.as_str(), row.sample_percent) {
        ("read_data", _) => VerifyMode::ReadData,
        ("sample", Some(p)) => VerifyMode::Sample { percent: p },
        // Unreadable sample rows count as a sample (clears nothing).
        ("sample", None) => VerifyMode::Sample { percent: 100.0 },
        _ => VerifyMode::Structure,
    }
}

fn to_repo_mode(mode: VerifyMode) -> steward_repo::VerifyMode {
    match mode {
        VerifyMode::Structure => steward_repo::VerifyMode::Structure,
        VerifyMode::ReadData => steward_repo::VerifyMode::Full,
        VerifyMode::Sample { percent } => steward_repo::VerifyMode::Sampled(percent / 100.0),
    }
}

/// `1 missing chunk, 2 corrupt chunks in pack 3f…`, for people.
fn found_summary(r: &VerificationRow) -> String {
    let mut parts = Vec::new();
    let n = |k: u64, what: &str| format!("{k} {what} chunk{}", if k == 1 { "" } else { "s" });
    if r.missing_chunks > 0 {
        parts.push(n(r.missing_chunks, "missing"));
    }
    if r.corrupt_chunks > 0 {
        parts.push(n(r.corrupt_chunks, "corrupt"));
    }
    let mut s = if parts.is_empty() {
        "problems".to_owned()
    } else {
        parts.join(" and ")
    };
    if !r.damaged_packs.is_empty() {
        s.push_str(&format!(
            " in pack{} {}",
            if r.damaged_packs.len() == 1 { "" } else { "s" },
            r.damaged_packs.join(", ")
        ));
    }
    s
}

/// The failed verification that makes a backup damaged (the latest one that stands), from
/// its verifications (oldest first); `None` when it is not damaged.
fn standing_failure(rows: &[VerificationRow]) -> Option<&VerificationRow> {
    let history: Vec<(VerifyMode, bool)> = rows.iter().map(|r| (mode_of(r), r.ok)).collect();
    let standing = standing_damage(&history);
    Some(&rows[*standing.last()?])
}

/// `the verify of <when> (<mode>) found <what>`, without the problem descriptions.
fn damage_summary(r: &VerificationRow) -> String {
    format!(
        "the verify of {} ({}) found {}",
        when(r.at),
        mode_of(r).label(),
        found_summary(r)
    )
}

/// The damage that stands for a backup, from its verifications (oldest first), as a
/// sentence quoting the first problems; `None` when it is not damaged.
fn damage_of(rows: &[VerificationRow]) -> Option<String> {
    let r = standing_failure(rows)?;
    let mut s = damage_summary(r);
    if !r.problems.is_empty() {
        let quoted: Vec<&str> = r
            .problems
            .iter()
            .take(QUOTED_PROBLEMS)
            .map(String::as_str)
            .collect();
        s.push_str(&format!(": {}", quoted.join("; ")));
        if r.problems.len() > QUOTED_PROBLEMS {
            s.push_str(&format!(
                " (and {} more)",
                r.problems.len() - QUOTED_PROBLEMS
            ));
        }
    }
    Some(s)
}

/// Refuses to restore `b` while it is damaged (`409 backup_damaged`, saying what verify
/// found), in the caller's transaction.
pub(crate) fn refuse_if_damaged(db: &Db, b: &BackupRow) -> Result<()> {
    let rows = db.verifications_of_backup(b.id)?;
    match damage_of(&rows) {
        None => Ok(()),
        Some(damage) => Err(ServiceError::conflict(
            "backup_damaged",
            format!(
                "backup {} of {} is damaged and cannot be restored: {damage}. Verify it again \
                 with `steward backup verify {} --read-data`; when a verify finds it whole, it \
                 can be restored",
                b.id, b.instance_name, b.id
            ),
        )),
    }
}

/// What the scope covers now, in the caller's transaction; `404` for an unknown backup or
/// instance, `409` when there is nothing to verify.
fn resolve(db: &Db, scope: &VerifyScope) -> Result<(String, Vec<BackupRow>)> {
    match scope {
        VerifyScope::Backup(id) => {
            let b = db
                .backup(*id)?
                .filter(|b| b.status != "deleted" && b.status != "expired")
                .ok_or_else(|| unknown_backup(*id))?;
            if b.status != "completed" || b.repo_id.is_none() {
                return Err(ServiceError::conflict(
                    "backup_not_verifiable",
                    format!(
                        "backup {id} is {}; only completed backups can be verified",
                        b.status
                    ),
                ));
            }
            Ok((b.instance_name.clone(), vec![b]))
        }
        VerifyScope::Instance(name) => {
            let inst = live_instance(db, name)?;
            let backups = db.verifiable_backups(Some(inst.id))?;
            Ok((inst.name, backups))
        }
        VerifyScope::All => Ok((ALL_INSTANCES.to_owned(), db.verifiable_backups(None)?)),
    }
}

impl Services {
    /// Starts a verify of the backups in `scope` as a `verify` job (System Administrators
    /// and Delegated Admins). Nothing is queued when the scope names nothing verifiable.
    pub fn start_verify(
        &self,
        actor: &Actor,
        scope: &VerifyScope,
        mode: VerifyMode,
    ) -> Result<VerifyStarted> {
        authorize(actor.role, Action::VerifyBackups)?;
        let now = self.now();
        let (job, count) = self.store.write(|db| {
            let (target, backups) = resolve(db, scope)?;
            if backups.is_empty() {
                return Err(ServiceError::conflict(
                    "nothing_to_verify",
                    match scope {
                        VerifyScope::All => "there are no completed backups to verify".to_owned(),
                        _ => format!("{target} has no completed backups to verify"),
                    },
                ));
            }
            let params = json!({
                "scope": scope,
                "mode": mode.as_str(),
                "sample_percent": mode.sample_percent(),
            });
            let job = db.insert_job(
                &NewJob {
                    kind: VERIFY_JOB.into(),
                    target: target.clone(),
                    params: params.clone(),
                    created_by: actor.username.clone(),
                },
                now,
            )?;
            let mut details = params;
            details["job_id"] = json!(job.id);
            details["backups"] = json!(backups.len());
            db.audit(&audit_entry(actor, "backup.verify", &target, details), now)?;
            Ok((job, backups.len() as u64))
        })?;
        self.job_wakeup.notify_one();
        Ok(VerifyStarted {
            job: JobView::from_row(job),
            backups: count,
            mode: mode.as_str().into(),
            sample_percent: mode.sample_percent(),
        })
    }

    /// A backup's verification state and history (every role that may view backups).
    pub fn backup_verification(&self, actor: &Actor, id: i64) -> Result<BackupVerificationView> {
        authorize(actor.role, Action::ViewBackups)?;
        let (b, rows) = self.store.read(|db| {
            let b = db
                .backup(id)?
                .filter(|b| b.status != "deleted" && b.status != "expired")
                .ok_or_else(|| unknown_backup(id))?;
            let rows = db.verifications_of_backup(id)?;
            Ok::<_, ServiceError>((b, rows))
        })?;
        let damage = damage_of(&rows);
        Ok(BackupVerificationView {
            backup_id: b.id,
            instance: b.instance_name,
            damaged: damage.is_some(),
            damage,
            latest: rows.last().map(VerificationView::from),
            history: rows.iter().rev().map(VerificationView::from).collect(),
        })
    }

    /// The verification state a backup view shows (no permission check: the caller has
    /// already decided the backup may be seen).
    pub(crate) fn verification_state(&self, backup_id: i64) -> VerificationState {
        match self.store.read(|db| db.verifications_of_backup(backup_id)) {
            Ok(rows) => {
                let damage = damage_of(&rows);
                VerificationState {
                    damaged: damage.is_some(),
                    damage,
                    latest: rows.last().map(VerificationView::from),
                }
            }
            Err(e) => {
                tracing::error!(backup = backup_id, error = %e, "cannot read verifications");
                VerificationState::default()
            }
        }
    }

    /// Verifies `backups` in the repository; per backup (same order) what was found.
    fn check_backups(
        &self,
        backups: &[BackupRow],
        mode: VerifyMode,
        ctx: &JobContext,
    ) -> Result<Vec<steward_repo::BackupVerification>> {
        // A backup whose manifest is gone is reported as such; the others are checked
        // together, so a chunk several of them need is read once.
        let mut present = Vec::new();
        let mut gone = BTreeMap::new();
        for b in backups {
            let repo_id = b.repo_id.clone().unwrap_or_default();
            match self.repo()?.manifest(&repo_id) {
                Err(steward_repo::RepoError::BackupNotFound(_)) => {
                    gone.insert(repo_id.clone(), steward_repo::BackupVerification {
                        id: repo_id.clone(),
                        problems: vec![format!(
                            "the manifest backups/{repo_id} is missing from the repository: nothing of this backup can be found"
                        )],
                        ..Default::default()
                    });
                }
                // Anything else the verify itself reports.
                _ => present.push(repo_id),
            }
        }
        let report = progress_reporter(ctx);
        let found = if present.is_empty() {
            steward_repo::VerifyReport::default()
        } else {
            self.repo()?
                .verify_many(&present, to_repo_mode(mode), &report)
                .map_err(repo_error)?
        };
        let mut by_id: BTreeMap<String, steward_repo::BackupVerification> = found
            .backups
            .into_iter()
            .map(|v| (v.id.clone(), v))
            .collect();
        by_id.append(&mut gone);
        Ok(backups
            .iter()
            .map(|b| {
                let id = b.repo_id.clone().unwrap_or_default();
                by_id
                    .remove(&id)
                    .unwrap_or_else(|| steward_repo::BackupVerification {
                        id,
                        problems: vec!["the verify returned nothing for this backup".into()],
                        ..Default::default()
                    })
            })
            .collect())
    }
}

fn verified(b: &BackupRow, v: &steward_repo::BackupVerification, reason: &str) -> VerifiedBackup {
    VerifiedBackup {
        backup_id: b.id,
        instance: b.instance_name.clone(),
        label: b.label.clone(),
        kind: b.kind.as_str().into(),
        created_at: b.created_at,
        ok: v.is_ok(),
        reason: reason.into(),
        chunks_needed: v.chunks_needed,
        chunks_checked: v.chunks_checked,
        bytes_read: v.bytes_read,
        missing_chunks: v.missing_chunks,
        corrupt_chunks: v.corrupt_chunks,
        damaged_packs: v.damaged_packs.clone(),
        problems: v.problems.clone(),
    }
}

fn params_of(job: &JobRow) -> Result<(VerifyScope, VerifyMode)> {
    let bad = || ServiceError::internal(format!("verify job {} has unreadable params", job.id));
    let scope: VerifyScope =
        serde_json::from_value(job.params["scope"].clone()).map_err(|_| bad())?;
    let mode = VerifyMode::parse(
        job.params["mode"].as_str().unwrap_or("structure"),
        job.params["sample_percent"].as_f64(),
    )
    .map_err(|_| bad())?;
    Ok((scope, mode))
}

/// The `verify` job: check the scope's backups; when something is damaged, check every other
/// backup that may need the damaged packs; record each result and alert about each damaged
/// backup, in one transaction.
fn run_verify(s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
    let (scope, mode) = params_of(job)?;
    let (target, backups) = s.store.read(|db| match resolve(db, &scope) {
        Ok(v) => Ok(v),
        // Deleted or expired since it was queued: there is nothing left to check.
        Err(e) if e.code == "unknown_backup" || e.code == "backup_not_verifiable" => {
            Ok((job.target.clone(), Vec::new()))
        }
        Err(e) => Err(e),
    })?;
    ctx.stage("verify")?;
    let found = s.check_backups(&backups, mode, ctx)?;
    let mut report: Vec<(BackupRow, VerifiedBackup)> = backups
        .iter()
        .zip(&found)
        .map(|(b, v)| (b.clone(), verified(b, v, "requested")))
        .collect();
    let damaged_packs: BTreeSet<String> = report
        .iter()
        .flat_map(|(_, v)| v.damaged_packs.iter().cloned())
        .collect();
    if !damaged_packs.is_empty() {
        // Packs are shared between backups (and between instances: a sandbox restored from
        // production shares its chunks). Check the others that still exist, in the same
        // depth (reading all data when the damage was found by reading), to name each one
        // that needs something damaged.
        let checked: BTreeSet<i64> = backups.iter().map(|b| b.id).collect();
        let others: Vec<BackupRow> = s
            .store
            .read(|db| db.verifiable_backups(None))?
            .into_iter()
            .filter(|b| !checked.contains(&b.id))
            .collect();
        if !others.is_empty() {
            ctx.stage("shared packs")?;
            let depth = match mode {
                VerifyMode::Structure => VerifyMode::Structure,
                _ => VerifyMode::ReadData,
            };
            let found = s.check_backups(&others, depth, ctx)?;
            for (b, v) in others.iter().zip(&found) {
                if !v.is_ok() && v.damaged_packs.iter().any(|p| damaged_packs.contains(p)) {
                    report.push((b.clone(), verified(b, v, "shared")));
                }
            }
        }
    }
    ctx.stage("record")?;
    let now = s.now();
    let job_id = job.id;
    s.store.write(|db| {
        for (b, v) in &report {
            let depth = if v.reason == "shared" && mode.reads_data() {
                VerifyMode::ReadData
            } else {
                mode
            };
            db.insert_verification(
                &NewVerification {
                    backup_id: b.id,
                    job_id: Some(job_id),
                    mode: depth.as_str().into(),
                    sample_percent: depth.sample_percent(),
                    ok: v.ok,
                    chunks_needed: v.chunks_needed,
                    chunks_checked: v.chunks_checked,
                    bytes_read: v.bytes_read,
                    missing_chunks: v.missing_chunks,
                    corrupt_chunks: v.corrupt_chunks,
                    damaged_packs: v.damaged_packs.clone(),
                    problems: v.problems.clone(),
                    reason: v.reason.clone(),
                },
                now,
            )?;
            if !v.ok {
                let rows = db.verifications_of_backup(b.id)?;
                let damage = standing_failure(&rows).map(damage_summary).unwrap_or_default();
                let label = if b.label.is_empty() { b.kind.as_str().to_owned() } else { b.label.clone() };
                s.announce(
                    db,
                    Event::BackupDamaged,
                    "error",
                    Some(&b.instance_name),
                    &format!(
                        "Backup {} “{label}” of {}, taken {}, is damaged: {damage}. Restoring it is refused until a verify finds it whole",
                        b.id,
                        b.instance_name,
                        when(b.created_at)
                    ),
                    json!({
                        "backup_id": b.id, "backup": label, "created_at": b.created_at,
                        "mode": mode.as_str(), "missing_chunks": v.missing_chunks,
                        "corrupt_chunks": v.corrupt_chunks, "damaged_packs": v.damaged_packs,
                        "problems": v.problems.iter().take(QUOTED_PROBLEMS).collect::<Vec<_>>(),
                    }),
                )?;
            }
        }
        Ok::<_, ServiceError>(())
    })?;
    let backups: Vec<VerifiedBackup> = report.into_iter().map(|(_, v)| v).collect();
    let mut packs: BTreeMap<String, Vec<AffectedBackup>> = BTreeMap::new();
    for v in backups.iter().filter(|v| !v.ok) {
        for p in &v.damaged_packs {
            packs.entry(p.clone()).or_default().push(AffectedBackup {
                backup_id: v.backup_id,
                instance: v.instance.clone(),
                created_at: v.created_at,
            });
        }
    }
    let damaged = backups.iter().filter(|v| !v.ok).count() as u64;
    let view = VerifyReportView {
        mode: mode.as_str().into(),
        sample_percent: mode.sample_percent(),
        scope: target,
        ok: damaged == 0,
        checked: backups.len() as u64,
        damaged,
        backups,
        damaged_packs: packs
            .into_iter()
            .map(|(pack, backups)| DamagedPack { pack, backups })
            .collect(),
    };
    serde_json::to_value(&view).map_err(|e| ServiceError::internal(e.to_string()))
}

struct VerifyHandler;
impl JobHandler for VerifyHandler {
    fn run(&self, s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value> {
        run_verify(s, job, ctx)
    }
    /// A verify only reads the repository and records its findings at the end in one
    /// transaction: one interrupted by a stop is simply run again.
    fn recover(&self, _s: &Services, _job: &JobRow) -> Recovery {
        Recovery::Resume
    }
}

/// Registers the `verify` job handler.
pub fn register(handlers: &mut JobHandlers) {
    handlers.register(VERIFY_JOB, VerifyHandler);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(mode: &str, ok: bool, problems: &[&str]) -> VerificationRow {
        VerificationRow {
            id: 1,
            backup_id: 1,
            job_id: Some(1),
            at: chrono::TimeZone::with_ymd_and_hms(&Utc, 2031, 3, 14, 0, 30, 5).unwrap(),
            mode: mode.into(),
            sample_percent: (mode == "sample").then_some(10.0),
            ok,
            chunks_needed: 4,
            chunks_checked: 4,
            bytes_read: 100,
            missing_chunks: 0,
            corrupt_chunks: u64::from(!ok),
            damaged_packs: if ok { vec![] } else { vec!["ab12".into()] },
            problems: problems.iter().map(|p| p.to_string()).collect(),
            reason: "requested".into(),
        }
    }

    #[test]
    fn requests_need_one_scope_and_a_valid_mode() {
        let r = |backup_id, instance: Option<&str>, all, mode: Option<&str>, p| VerifyRequest {
            backup_id,
            instance: instance.map(Into::into),
            all,
            mode: mode.map(Into::into),
            sample_percent: p,
        };
        assert_eq!(
            r(Some(3), None, false, None, None).parse().unwrap(),
            (VerifyScope::Backup(3), VerifyMode::Structure)
        );
        assert_eq!(
            r(None, Some("crm"), false, Some("sample"), Some(5.0))
                .parse()
                .unwrap(),
            (
                VerifyScope::Instance("crm".into()),
                VerifyMode::Sample { percent: 5.0 }
            )
        );
        let code = |req: VerifyRequest| req.parse().unwrap_err().code;
        assert_eq!(code(r(Some(3), None, true, None, None)), "invalid_scope");
        assert_eq!(code(r(None, Some(" "), false, None, None)), "invalid_scope");
        assert_eq!(code(r(None, None, false, None, None)), "invalid_scope");
        assert_eq!(
            code(r(None, None, true, Some("full"), None)),
            "invalid_mode"
        );
        assert_eq!(
            code(r(None, None, true, Some("sample"), Some(0.0))),
            "invalid_sample"
        );
        assert_eq!(
            code(r(None, None, true, Some("sample"), Some(150.0))),
            "invalid_sample"
        );
        assert_eq!(
            code(r(None, None, true, None, Some(10.0))),
            "invalid_sample"
        );
    }

    #[test]
    fn damage_names_the_verify_and_its_problems() {
        let bad = row(
            "read_data",
            false,
            &["chunk c1 in pack ab12: content does not match its hash"],
        );
        let d = damage_of(std::slice::from_ref(&bad)).unwrap();
        assert!(d.starts_with("the verify of 2031-03-14 00:30:05 UTC (all data read) found 1 corrupt chunk in pack ab12: chunk c1"), "{d}");
        assert!(damage_of(&[bad.clone(), row("structure", true, &[])]).is_some());
        assert!(damage_of(&[bad, row("read_data", true, &[])]).is_none());
        assert!(damage_of(&[]).is_none());
    }
}
