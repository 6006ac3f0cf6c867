//! Updates (seed 001): available releases under the update policy, scheduling with a
//! preferred and an alternate window, approval, reschedule, "update now", staged execution
//! with a backup before and a rollback on failure, rehearsals, reminders and history.
//!
//! The rules (eligible targets, support, mandatory updates, windows) are in
//! `steward_core::update`; this module applies them, keeps every change with its timeline
//! entry, audit entry and notification in one transaction, and runs the work as jobs
//! (`execute.rs`: the `update` and `update_rehearsal` jobs and `tick_updates`).

mod execute;
mod policy;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use steward_core::notify::Event;
use steward_core::policy::{Action, authorize};
use steward_core::release::{ReleaseKind, ReleaseVersion};
use steward_core::update::{
    self as rules, TargetError, UpdatePolicy, UpdateStatus, Window, WindowError,
};
use steward_core::{InstanceState, InstanceType};
use steward_store::{Db, InstanceQuery, InstanceRow, RehearsalRow, UpdateRow};

use super::instances::live_instance;
use super::jobs::JobStageView;
use super::{Actor, JobHandlers, Result, Services, audit_entry};
use crate::config::{Config, ConfigError};
use crate::error::ServiceError;

pub use policy::{PolicyRelease, UpdatePolicyDoc, UpdatePolicyView};

/// Job kinds of this module.
pub const UPDATE_JOB: &str = "update";
pub const REHEARSAL_JOB: &str = "update_rehearsal";

/// Update settings from the configuration.
#[derive(Debug, Clone)]
pub struct UpdateSettings {
    /// Length of an update window.
    pub window: chrono::Duration,
    /// Days before a production update that an automatic rehearsal runs (0: none).
    pub rehearsal_days: u32,
    /// The operator's policy file, if any.
    pub policy_file: Option<std::path::PathBuf>,
    /// The policy file's last good contents and policy (reloaded when the text changes).
    file_cache: Arc<Mutex<Option<(String, UpdatePolicy)>>>,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        Self {
            window: chrono::Duration::hours(12),
            rehearsal_days: 7,
            policy_file: None,
            file_cache: Arc::default(),
        }
    }
}

/// Checks the update settings of `c`; a policy file that cannot be read or is not valid
/// stops the start.
pub fn settings(c: &Config) -> Result<UpdateSettings, ConfigError> {
    if c.update_window_hours == 0 || c.update_window_hours > 72 {
        return Err(ConfigError::new(format!(
            "update_window_hours must be 1 to 72 (got {})",
            c.update_window_hours
        )));
    }
    let file_cache = match &c.update_policy_file {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new(format!(
                    "update_policy_file {} cannot be read: {e}",
                    path.display()
                ))
            })?;
            let p = UpdatePolicy::from_toml(&text)
                .map_err(|e| ConfigError::new(format!("{}: {e}", path.display())))?;
            Some((text, p))
        }
        None => None,
    };
    Ok(UpdateSettings {
        window: chrono::Duration::hours(c.update_window_hours.into()),
        rehearsal_days: c.update_rehearsal_days,
        policy_file: c.update_policy_file.clone(),
        file_cache: Arc::new(Mutex::new(file_cache)),
    })
}

/// Registers the update jobs.
pub fn register(handlers: &mut JobHandlers) {
    handlers.register(UPDATE_JOB, execute::UpdateHandler);
    handlers.register(REHEARSAL_JOB, execute::RehearsalHandler);
}

// ---- views ----

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WindowView {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    /// `scheduled`, `approved`, `approval_withdrawn`, `rescheduled`, `cancelled`, `started`,
    /// `stage`, `succeeded`, `failed`, `fallback`, `window_missed`, `waiting`, `reminder`,
    /// `rehearsal`
    pub event: String,
    #[schema(value_type = Object)]
    pub details: Value,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RehearsalView {
    pub id: i64,
    pub update_id: Option<i64>,
    pub instance: String,
    /// The throwaway copy the upgrade ran on.
    pub sandbox: String,
    pub target_release: String,
    /// `running`, `succeeded` or `failed`
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    pub problems: Vec<String>,
    /// Started by System before a scheduled production update.
    pub automatic: bool,
    pub job_id: Option<i64>,
}

impl From<RehearsalRow> for RehearsalView {
    fn from(r: RehearsalRow) -> Self {
        Self {
            id: r.id,
            update_id: r.update_id,
            instance: r.instance_name,
            sandbox: r.sandbox,
            target_release: r.target_release,
            status: r.status,
            started_at: r.started_at,
            finished_at: r.finished_at,
            duration_ms: r.duration_ms,
            problems: r.problems,
            automatic: r.automatic,
            job_id: r.job_id,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdateView {
    pub id: i64,
    pub instance: String,
    pub from_release: String,
    pub target_release: String,
    /// `major` or `service`
    pub kind: String,
    pub mandatory: bool,
    /// Scheduled by System under the update policy.
    pub automatic: bool,
    /// `scheduled`, `queued`, `in_progress`, `succeeded`, `failed`, `waiting` or `cancelled`
    pub status: String,
    /// The seed's words, e.g. "Queued (Not Started)".
    pub status_label: String,
    pub needs_approval: bool,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub preferred: WindowView,
    pub alternate: WindowView,
    /// `preferred` or `alternate`
    pub active_window: String,
    /// `Backup`, `Restore`, `Database Upgrade` or `Swap` while running.
    pub stage: Option<String>,
    pub stages: Vec<JobStageView>,
    pub error: Option<String>,
    pub backup_id: Option<i64>,
    pub job_id: Option<i64>,
    pub rehearsals: Vec<RehearsalView>,
    pub timeline: Vec<TimelineEntry>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SupportView {
    /// `supported`, `behind` or `end_of_support`
    pub status: String,
    pub label: String,
    pub end_of_support: Option<NaiveDate>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AvailableRelease {
    pub version: String,
    /// `major` or `service`: the kind of the update to this release
    pub kind: String,
    pub released: NaiveDate,
    pub end_of_support: Option<NaiveDate>,
    pub latest: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MandatoryView {
    pub target: String,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpdateOverview {
    pub instance: String,
    /// `production` or `sandbox`
    pub instance_type: String,
    pub release: String,
    pub support: SupportView,
    /// "Update is Available": a later release exists.
    pub update_available: bool,
    /// Eligible target releases, oldest first.
    pub available: Vec<AvailableRelease>,
    pub mandatory: Option<MandatoryView>,
    /// The open update, if any.
    pub current: Option<UpdateView>,
    /// Finished and cancelled updates, newest first.
    pub history: Vec<UpdateView>,
    /// The instance's latest rehearsals (at most 20), newest first, whether attached to an
    /// update or run on their own ("sandbox first").
    pub rehearsals: Vec<RehearsalView>,
}

/// What the catalog and the policy say of one release (see `Services::release_facts`).
#[derive(Debug, Clone)]
struct ReleaseFacts {
    support: SupportView,
    available: Vec<AvailableRelease>,
    mandatory: Option<MandatoryView>,
}

/// A page of the fleet's update overviews (see [`Services::update_fleet_page`]).
#[derive(Debug, Clone, Serialize)]
pub struct UpdateFleetPage {
    /// Live instances in the whole fleet.
    pub instances: u64,
    /// Those of the whole fleet with a later release available.
    pub update_available: u64,
    /// Instances whose name matches, over every page.
    pub matching: u64,
    /// This page's instances, by name.
    pub rows: Vec<UpdateOverview>,
}

// ---- requests ----

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRequest {
    /// A later release in the catalog, e.g. `9.0`.
    pub target: String,
    /// RFC 3339 with an offset, or local `YYYY-MM-DDTHH:MM` in `time_zone`.
    pub preferred_start: String,
    pub alternate_start: String,
    /// IANA time zone of local times (default `UTC`).
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    pub target: Option<String>,
    pub preferred_start: Option<String>,
    pub alternate_start: Option<String>,
    pub time_zone: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNowRequest {
    pub target: Option<String>,
    /// Required (true) for a production instance.
    #[serde(default)]
    pub confirm: bool,
}

#[derive(Debug, Clone, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RehearseRequest {
    pub target: Option<String>,
}

// ---- errors ----

fn window_error(e: WindowError) -> ServiceError {
    let code = match &e {
        WindowError::TimeZone(_) => "invalid_time_zone",
        WindowError::Unparsable { .. }
        | WindowError::SkippedTime { .. }
        | WindowError::RepeatedTime { .. } => "invalid_window",
        WindowError::InPast { .. } => "window_in_past",
        WindowError::Overlap { .. } => "windows_overlap",
    };
    ServiceError::invalid(code, e.to_string())
}

fn target_error(e: TargetError) -> ServiceError {
    match e {
        TargetError::Unknown(_) => ServiceError::invalid("unknown_release", e.to_string()),
        TargetError::NotNewer { .. } => ServiceError::invalid("target_not_newer", e.to_string()),
    }
}

fn no_open_update(instance: &str) -> ServiceError {
    ServiceError::not_found(
        "no_open_update",
        format!("{instance} has no scheduled update"),
    )
}

fn in_progress(instance: &str) -> ServiceError {
    ServiceError::conflict(
        "update_in_progress",
        format!(
            "Update in progress: the update of {instance} has started and can no longer be changed"
        ),
    )
}

fn release_of(i: &InstanceRow) -> Result<ReleaseVersion> {
    i.release.parse().map_err(|e| {
        ServiceError::internal(format!(
            "{} has an unreadable release {:?}: {e}",
            i.name, i.release
        ))
    })
}

fn kind_word(k: ReleaseKind) -> &'static str {
    match k {
        ReleaseKind::Major => "major",
        ReleaseKind::Service => "service",
    }
}

/// The timeline's picture of an update's schedule.
fn schedule_details(u: &UpdateRow) -> Value {
    json!({
        "target": u.target_release,
        "preferred": {"start": u.preferred_start, "end": u.preferred_end},
        "alternate": {"start": u.alternate_start, "end": u.alternate_end},
        "status": u.status.as_str(),
        "approved_by": u.approved_by,
    })
}

/// What an update notification says.
fn notice(u: &UpdateRow) -> Value {
    let (start, end) = u.active();
    json!({
        "update_id": u.id,
        "from_release": u.from_release,
        "target_release": u.target_release,
        "kind": u.kind,
        "mandatory": u.mandatory,
        "status": u.status.label(),
        "window": {"start": start, "end": end, "which": u.active_window},
        "preferred": {"start": u.preferred_start, "end": u.preferred_end},
        "alternate": {"start": u.alternate_start, "end": u.alternate_end},
    })
}

/// The status an update goes back to while it waits for its window.
fn waiting_status(u: &UpdateRow) -> UpdateStatus {
    if u.needs_approval && u.approved_by.is_none() {
        UpdateStatus::Scheduled
    } else {
        UpdateStatus::Queued
    }
}

/// An update's view without its stages, timeline and rehearsals (what a fleet row shows).
fn bare_update_view(u: UpdateRow) -> UpdateView {
    UpdateView {
        id: u.id,
        instance: u.instance_name,
        from_release: u.from_release,
        target_release: u.target_release,
        kind: u.kind,
        mandatory: u.mandatory,
        automatic: u.automatic,
        status: u.status.as_str().into(),
        status_label: u.status.label().into(),
        needs_approval: u.needs_approval,
        approved_by: u.approved_by,
        approved_at: u.approved_at,
        preferred: WindowView {
            start: u.preferred_start,
            end: u.preferred_end,
        },
        alternate: WindowView {
            start: u.alternate_start,
            end: u.alternate_end,
        },
        active_window: u.active_window,
        stage: u.stage,
        stages: Vec::new(),
        error: u.error,
        backup_id: u.backup_id,
        job_id: u.job_id,
        rehearsals: Vec::new(),
        timeline: Vec::new(),
        created_by: u.created_by,
        created_at: u.created_at,
        started_at: u.started_at,
        finished_at: u.finished_at,
    }
}

impl Services {
    fn window(&self, start: DateTime<Utc>) -> Window {
        Window::new(start, self.updates.window)
    }

    /// Whether an update from `from` to `to` needs a System Administrator's approval under
    /// `policy`: major updates do unless mandatory; service updates do only when the policy
    /// does not apply them automatically.
    fn needs_approval(&self, policy: &UpdatePolicy, kind: ReleaseKind, mandatory: bool) -> bool {
        match kind {
            ReleaseKind::Major => !mandatory,
            ReleaseKind::Service => !mandatory && !policy.service_updates_automatic,
        }
    }

    fn update_view(&self, db: &Db, u: UpdateRow) -> Result<UpdateView> {
        let id = u.id;
        let mut view = bare_update_view(u);
        view.stages = db
            .update_stages(id)?
            .into_iter()
            .map(JobStageView::from)
            .collect();
        view.timeline = db
            .update_events(id)?
            .into_iter()
            .map(|e| TimelineEntry {
                at: e.at,
                actor: e.actor,
                event: e.event,
                details: e.details,
            })
            .collect();
        view.rehearsals = db
            .update_rehearsals(id)?
            .into_iter()
            .map(RehearsalView::from)
            .collect();
        Ok(view)
    }

    /// Appends a timeline entry.
    fn timeline(
        &self,
        db: &Db,
        u: &UpdateRow,
        actor: &str,
        event: &str,
        details: Value,
    ) -> Result<()> {
        Ok(db.insert_update_event(u.id, self.now(), actor, event, &details)?)
    }

    /// The instance's update page: support, eligible targets, mandatory update, the open
    /// update and the history.
    pub fn update_overview(&self, actor: &Actor, instance: &str) -> Result<UpdateOverview> {
        authorize(actor.role, Action::ViewUpdates)?;
        let today = self.now().date_naive();
        self.store.read(|db| {
            let policy = self.update_policy_in_force(db)?.0;
            let inst = live_instance(db, instance)?;
            let ReleaseFacts {
                support,
                available,
                mandatory,
            } = self.release_facts(&policy, &release_of(&inst)?, today);
            let mut open = None;
            let mut history = Vec::new();
            for u in db.instance_updates(inst.id)? {
                if u.status.is_open() {
                    open = Some(self.update_view(db, u)?);
                } else {
                    history.push(self.update_view(db, u)?);
                }
            }
            Ok(UpdateOverview {
                instance: inst.name.clone(),
                instance_type: inst.instance_type.as_str().into(),
                release: inst.release.clone(),
                support,
                update_available: !available.is_empty(),
                available,
                mandatory,
                current: open,
                history,
                rehearsals: db
                    .instance_rehearsals(&inst.name, inst.created_at, 20)?
                    .into_iter()
                    .map(RehearsalView::from)
                    .collect(),
            })
        })
    }

    /// What the catalog and `policy` say of an instance on `current` on `today`: its
    /// support, the releases it may update to and the mandatory update it needs.
    fn release_facts(
        &self,
        policy: &UpdatePolicy,
        current: &ReleaseVersion,
        today: NaiveDate,
    ) -> ReleaseFacts {
        let (status, label) = rules::support_status(&self.catalog, policy, current, today);
        let latest = self.catalog.latest().version;
        let available = rules::eligible_targets(&self.catalog, current)
            .into_iter()
            .map(|r| AvailableRelease {
                version: r.version.to_string(),
                kind: kind_word(rules::update_kind(&self.catalog, current, &r.version)).into(),
                released: r.released,
                end_of_support: r.end_of_support,
                latest: r.version == latest,
            })
            .collect();
        let mandatory =
            rules::mandatory_update(&self.catalog, policy, current, today).map(|(t, reason)| {
                MandatoryView {
                    target: t.to_string(),
                    reason,
                }
            });
        ReleaseFacts {
            support: SupportView {
                status: status.as_str().into(),
                label,
                end_of_support: rules::end_of_support(&self.catalog, current),
            },
            available,
            mandatory,
        }
    }

    /// One page of the fleet's update overviews, by name (names containing `contains`, if
    /// given), with the whole fleet's counts. Each row is an [`UpdateOverview`] without
    /// details: `current` is the open update and `history` at most the newest finished one,
    /// both without stages, timeline and rehearsals, and `rehearsals` is empty (the
    /// instance's own page has them all). A bounded number of queries whatever the fleet's
    /// size: the page's updates in one, and the counts from the number of instances on each
    /// release, the catalog's rules applied once per release.
    pub fn update_fleet_page(
        &self,
        actor: &Actor,
        contains: Option<&str>,
        offset: u64,
        limit: u64,
    ) -> Result<UpdateFleetPage> {
        authorize(actor.role, Action::ViewUpdates)?;
        authorize(actor.role, Action::ViewInstances)?;
        let today = self.now().date_naive();
        let contains = contains.map(str::trim).filter(|c| !c.is_empty());
        self.store.read(|db| {
            let policy = self.update_policy_in_force(db)?.0;
            let mut facts: HashMap<String, ReleaseFacts> = HashMap::new();
            let mut fact = |release: &str| -> Result<ReleaseFacts> {
                if let Some(f) = facts.get(release) {
                    return Ok(f.clone());
                }
                let version: ReleaseVersion = release.parse().map_err(|e| {
                    ServiceError::internal(format!(
                        "an instance has an unreadable release {release:?}: {e}"
                    ))
                })?;
                let f = self.release_facts(&policy, &version, today);
                facts.insert(release.to_owned(), f.clone());
                Ok(f)
            };
            let mut instances = 0;
            let mut update_available = 0;
            for (release, n) in db.live_instances_by_release()? {
                instances += n;
                if !fact(&release)?.available.is_empty() {
                    update_available += n;
                }
            }
            let page = db.instance_page(&InstanceQuery {
                contains,
                after: None,
                offset: offset.min(i64::MAX as u64) as i64,
                limit: limit.min(i64::MAX as u64) as i64,
            })?;
            let ids: Vec<i64> = page.rows.iter().map(|i| i.id).collect();
            let mut shown: HashMap<i64, UpdateRow> = db
                .shown_updates_of(&ids)?
                .into_iter()
                .map(|u| (u.instance_id, u))
                .collect();
            let mut rows = Vec::with_capacity(page.rows.len());
            for inst in page.rows {
                let ReleaseFacts {
                    support,
                    available,
                    mandatory,
                } = fact(&inst.release)?;
                let (current, history) = match shown.remove(&inst.id) {
                    Some(u) if u.status.is_open() => (Some(bare_update_view(u)), Vec::new()),
                    Some(u) => (None, vec![bare_update_view(u)]),
                    None => (None, Vec::new()),
                };
                rows.push(UpdateOverview {
                    instance: inst.name,
                    instance_type: inst.instance_type.as_str().into(),
                    release: inst.release,
                    support,
                    update_available: !available.is_empty(),
                    available,
                    mandatory,
                    current,
                    history,
                    rehearsals: Vec::new(),
                });
            }
            Ok(UpdateFleetPage {
                instances,
                update_available,
                matching: page.total,
                rows,
            })
        })
    }

    /// Creates an update row (not yet written) for `inst` to `target` in `preferred` /
    /// `alternate`, with the policy's approval rule.
    #[allow(clippy::too_many_arguments)]
    fn new_update(
        &self,
        policy: &UpdatePolicy,
        inst: &InstanceRow,
        target: ReleaseVersion,
        preferred: Window,
        alternate: Window,
        mandatory: bool,
        automatic: bool,
        created_by: &str,
    ) -> Result<UpdateRow> {
        let current = release_of(inst)?;
        let kind = rules::update_kind(&self.catalog, &current, &target);
        let needs_approval = self.needs_approval(policy, kind, mandatory);
        let now = self.now();
        Ok(UpdateRow {
            id: 0,
            instance_id: inst.id,
            instance_name: inst.name.clone(),
            from_release: inst.release.clone(),
            target_release: target.to_string(),
            kind: kind_word(kind).into(),
            mandatory,
            automatic,
            status: if needs_approval {
                UpdateStatus::Scheduled
            } else {
                UpdateStatus::Queued
            },
            needs_approval,
            approved_by: None,
            approved_at: None,
            preferred_start: preferred.start,
            preferred_end: preferred.end,
            alternate_start: alternate.start,
            alternate_end: alternate.end,
            active_window: "preferred".into(),
            stage: None,
            error: None,
            backup_id: None,
            job_id: None,
            reminders_since: now,
            created_by: created_by.to_owned(),
            created_at: now,
            started_at: None,
            finished_at: None,
        })
    }

    /// Writes a new update with its timeline entry, audit entry and the "Update scheduled"
    /// notification, in the caller's transaction. `overlapping_operation` if the instance
    /// already has an open update.
    fn insert_update(
        &self,
        db: &Db,
        actor: &Actor,
        u: &UpdateRow,
        reason: &str,
    ) -> Result<UpdateRow> {
        let u = db.insert_update(u)?.ok_or_else(|| {
            ServiceError::conflict(
                "overlapping_operation",
                format!(
                    "{} already has an update scheduled; reschedule or cancel it instead",
                    u.instance_name
                ),
            )
        })?;
        let mut details = schedule_details(&u);
        details["reason"] = json!(reason);
        self.timeline(db, &u, &actor.username, "scheduled", details.clone())?;
        db.audit(
            &audit_entry(
                actor,
                "update.schedule",
                &u.instance_name,
                json!({"update_id": u.id, "after": details}),
            ),
            self.now(),
        )?;
        let needs = if u.needs_approval {
            " It needs a System Administrator's approval."
        } else {
            ""
        };
        self.announce(
            db,
            Event::UpdateScheduled,
            "info",
            Some(&u.instance_name),
            &format!(
                "Update of {} from {} to {} scheduled for {}.{needs}",
                u.instance_name,
                u.from_release,
                u.target_release,
                u.preferred_start.format("%Y-%m-%d %H:%M UTC")
            ),
            notice(&u),
        )?;
        Ok(u)
    }

    /// Schedules an update of `instance` to `target` with a preferred and an alternate
    /// window. Major updates then wait for a System Administrator's approval.
    pub fn schedule_update(
        &self,
        actor: &Actor,
        instance: &str,
        req: &ScheduleRequest,
    ) -> Result<UpdateView> {
        authorize(actor.role, Action::ScheduleUpdate)?;
        let zone = rules::parse_time_zone(req.time_zone.as_deref()).map_err(window_error)?;
        let preferred = rules::parse_start("preferred window", &req.preferred_start, zone)
            .map_err(window_error)?;
        let alternate = rules::parse_start("alternate window", &req.alternate_start, zone)
            .map_err(window_error)?;
        let (preferred, alternate) = (self.window(preferred), self.window(alternate));
        let now = self.now();
        rules::check_windows(&preferred, &alternate, now).map_err(window_error)?;
        self.store.write(|db| {
            let policy = self.update_policy_in_force(db)?.0;
            let inst = live_instance(db, instance)?;
            let current = release_of(&inst)?;
            let target =
                rules::check_target(&self.catalog, &current, &req.target).map_err(target_error)?;
            check_no_overlapping_refresh(db, &inst.name, &[preferred, alternate])?;
            let mandatory =
                rules::mandatory_update(&self.catalog, &policy, &current, now.date_naive())
                    .is_some();
            let u = self.new_update(
                &policy,
                &inst,
                target,
                preferred,
                alternate,
                mandatory,
                false,
                &actor.username,
            )?;
            let u = self.insert_update(db, actor, &u, "scheduled by an administrator")?;
            self.update_view(db, u)
        })
    }

    /// The instance's open update, for a change by `actor`.
    fn open_update(&self, db: &Db, instance: &str) -> Result<(InstanceRow, UpdateRow)> {
        let inst = live_instance(db, instance)?;
        let u = db
            .open_update(inst.id)?
            .ok_or_else(|| no_open_update(instance))?;
        Ok((inst, u))
    }

    /// Approves the instance's scheduled update (System Administrators only).
    pub fn approve_update(&self, actor: &Actor, instance: &str) -> Result<UpdateView> {
        authorize(actor.role, Action::ApproveUpdate)?;
        let now = self.now();
        self.store.write(|db| {
            let (_, mut u) = self.open_update(db, instance)?;
            if u.status == UpdateStatus::InProgress {
                return Err(in_progress(instance));
            }
            if !u.needs_approval {
                return Err(ServiceError::conflict(
                    "approval_not_needed",
                    format!(
                        "the update of {instance} to {} needs no approval ({})",
                        u.target_release,
                        if u.mandatory {
                            "mandatory"
                        } else {
                            "service update"
                        }
                    ),
                ));
            }
            if let Some(by) = &u.approved_by {
                return Err(ServiceError::conflict(
                    "already_approved",
                    format!("the update of {instance} was already approved by {by}"),
                ));
            }
            u.approved_by = Some(actor.username.clone());
            u.approved_at = Some(now);
            if u.status == UpdateStatus::Scheduled {
                u.status = UpdateStatus::Queued;
            }
            db.save_update(&u)?;
            self.timeline(
                db,
                &u,
                &actor.username,
                "approved",
                json!({"target": u.target_release}),
            )?;
            db.audit(
                &audit_entry(
                    actor,
                    "update.approve",
                    instance,
                    json!({"update_id": u.id, "target": u.target_release}),
                ),
                now,
            )?;
            self.announce(
                db,
                Event::ScheduleConfirmed,
                "info",
                Some(instance),
                &format!(
                    "{} approved the update of {instance} to {}",
                    actor.username, u.target_release
                ),
                notice(&u),
            )?;
            self.update_view(db, u)
        })
    }

    /// Withdraws the approval of an update that has not started.
    pub fn withdraw_update_approval(&self, actor: &Actor, instance: &str) -> Result<UpdateView> {
        authorize(actor.role, Action::ApproveUpdate)?;
        let now = self.now();
        self.store.write(|db| {
            let (_, mut u) = self.open_update(db, instance)?;
            if u.status == UpdateStatus::InProgress {
                return Err(in_progress(instance));
            }
            let Some(by) = u.approved_by.take() else {
                return Err(ServiceError::conflict(
                    "not_approved",
                    format!("the update of {instance} is not approved"),
                ));
            };
            u.approved_at = None;
            if u.status == UpdateStatus::Queued {
                u.status = UpdateStatus::Scheduled;
            }
            db.save_update(&u)?;
            self.timeline(
                db,
                &u,
                &actor.username,
                "approval_withdrawn",
                json!({"approved_by": by}),
            )?;
            db.audit(
                &audit_entry(
                    actor,
                    "update.withdraw_approval",
                    instance,
                    json!({"update_id": u.id, "before": {"approved_by": by}}),
                ),
                now,
            )?;
            self.update_view(db, u)
        })
    }

    /// Changes the target and/or windows of an update that has not started.
    pub fn reschedule_update(
        &self,
        actor: &Actor,
        instance: &str,
        req: &RescheduleRequest,
    ) -> Result<UpdateView> {
        authorize(actor.role, Action::ScheduleUpdate)?;
        let zone = rules::parse_time_zone(req.time_zone.as_deref()).map_err(window_error)?;
        let preferred = req
            .preferred_start
            .as_deref()
            .map(|s| rules::parse_start("preferred window", s, zone))
            .transpose()
            .map_err(window_error)?;
        let alternate = req
            .alternate_start
            .as_deref()
            .map(|s| rules::parse_start("alternate window", s, zone))
            .transpose()
            .map_err(window_error)?;
        if req.target.is_none() && preferred.is_none() && alternate.is_none() {
            return Err(ServiceError::invalid(
                "nothing_to_change",
                "give a new target, new windows, or both",
            ));
        }
        let now = self.now();
        self.store.write(|db| {
            let policy = self.update_policy_in_force(db)?.0;
            let (inst, mut u) = self.open_update(db, instance)?;
            if !u.status.may_change() {
                return Err(in_progress(instance));
            }
            let before = schedule_details(&u);
            let current = release_of(&inst)?;
            if let Some(raw) = &req.target {
                let target =
                    rules::check_target(&self.catalog, &current, raw).map_err(target_error)?;
                if target.to_string() != u.target_release {
                    let kind = rules::update_kind(&self.catalog, &current, &target);
                    u.target_release = target.to_string();
                    u.kind = kind_word(kind).into();
                    u.needs_approval = self.needs_approval(&policy, kind, u.mandatory);
                    // A new target is a new decision: it needs a new approval.
                    u.approved_by = None;
                    u.approved_at = None;
                }
            }
            let p = self.window(preferred.unwrap_or(u.preferred_start));
            let a = self.window(alternate.unwrap_or(u.alternate_start));
            // The resulting schedule must lie ahead (a waiting update needs new windows).
            rules::check_windows(&p, &a, now).map_err(window_error)?;
            check_no_overlapping_refresh(db, &inst.name, &[p, a])?;
            u.preferred_start = p.start;
            u.preferred_end = p.end;
            u.alternate_start = a.start;
            u.alternate_end = a.end;
            u.active_window = "preferred".into();
            u.reminders_since = now;
            u.status = waiting_status(&u);
            db.save_update(&u)?;
            let after = schedule_details(&u);
            self.timeline(
                db,
                &u,
                &actor.username,
                "rescheduled",
                json!({"before": before, "after": after}),
            )?;
            db.audit(
                &audit_entry(
                    actor,
                    "update.reschedule",
                    instance,
                    json!({"update_id": u.id, "before": before, "after": after}),
                ),
                now,
            )?;
            let mut details = notice(&u);
            details["before"] = before;
            self.announce(
                db,
                Event::UpdateRescheduled,
                "info",
                Some(instance),
                &format!(
                    "Update of {instance} to {} rescheduled to {}",
                    u.target_release,
                    u.preferred_start.format("%Y-%m-%d %H:%M UTC")
                ),
                details,
            )?;
            self.update_view(db, u)
        })
    }

    /// Cancels an update that has not started (not a mandatory or automatic one).
    pub fn cancel_update(&self, actor: &Actor, instance: &str) -> Result<UpdateView> {
        authorize(actor.role, Action::ScheduleUpdate)?;
        let now = self.now();
        self.store.write(|db| {
            let (_, mut u) = self.open_update(db, instance)?;
            if !u.status.may_change() {
                return Err(in_progress(instance));
            }
            if u.mandatory {
                return Err(ServiceError::conflict(
                    "update_mandatory",
                    format!("the update of {instance} is mandatory under the update policy; reschedule it instead"),
                ));
            }
            if u.automatic {
                return Err(ServiceError::conflict(
                    "update_automatic",
                    format!("service updates are applied automatically under the update policy; reschedule the update of {instance} instead"),
                ));
            }
            let before = schedule_details(&u);
            u.status = UpdateStatus::Cancelled;
            u.finished_at = Some(now);
            db.save_update(&u)?;
            self.timeline(db, &u, &actor.username, "cancelled", json!({"before": before}))?;
            db.audit(
                &audit_entry(actor, "update.cancel", instance, json!({"update_id": u.id, "before": before})),
                now,
            )?;
            self.update_view(db, u)
        })
    }

    /// Starts an update of `instance` now, without waiting for a window. A production
    /// instance needs `confirm`. A major update that is not mandatory needs approval: a
    /// System Administrator's "update now" is that approval.
    pub fn update_now(
        &self,
        actor: &Actor,
        instance: &str,
        req: &UpdateNowRequest,
    ) -> Result<UpdateView> {
        authorize(actor.role, Action::ScheduleUpdate)?;
        let now = self.now();
        let view = self.store.write(|db| {
            let policy = self.update_policy_in_force(db)?.0;
            let inst = live_instance(db, instance)?;
            if inst.instance_type == InstanceType::Production && !req.confirm {
                return Err(ServiceError::invalid(
                    "confirmation_required",
                    format!("{instance} is a production instance: updating it now makes it unavailable during the update; confirm to go ahead"),
                ));
            }
            if !instance_ready(&inst) {
                return Err(ServiceError::conflict(
                    "instance_busy",
                    format!(
                        "{instance} is {}; update it when that has finished",
                        inst.state.label().to_lowercase()
                    ),
                ));
            }
            let current = release_of(&inst)?;
            let preferred = self.window(now);
            let alternate = self.window(preferred.end.max(now + Duration::days(1)));
            let mut u = match db.open_update(inst.id)? {
                Some(u) if u.status == UpdateStatus::InProgress => return Err(in_progress(instance)),
                Some(mut u) => {
                    let before = schedule_details(&u);
                    if let Some(raw) = &req.target {
                        let target = rules::check_target(&self.catalog, &current, raw)
                            .map_err(target_error)?;
                        if target.to_string() != u.target_release {
                            let kind = rules::update_kind(&self.catalog, &current, &target);
                            u.target_release = target.to_string();
                            u.kind = kind_word(kind).into();
                            u.needs_approval = self.needs_approval(&policy, kind, u.mandatory);
                            u.approved_by = None;
                            u.approved_at = None;
                        }
                    }
                    u.preferred_start = preferred.start;
                    u.preferred_end = preferred.end;
                    u.alternate_start = alternate.start;
                    u.alternate_end = alternate.end;
                    u.active_window = "preferred".into();
                    db.save_update(&u)?;
                    self.timeline(db, &u, &actor.username, "rescheduled", json!({"before": before, "after": schedule_details(&u), "update_now": true}))?;
                    u
                }
                None => {
                    let target = match &req.target {
                        Some(raw) => rules::check_target(&self.catalog, &current, raw)
                            .map_err(target_error)?,
                        None => {
                            let latest = self.catalog.latest().version;
                            if latest <= current {
                                return Err(ServiceError::conflict(
                                    "no_update_available",
                                    format!("{instance} is already on the latest release, {current}"),
                                ));
                            }
                            latest
                        }
                    };
                    let mandatory = rules::mandatory_update(&self.catalog, &policy, &current, now.date_naive()).is_some();
                    let u = self.new_update(&policy, &inst, target, preferred, alternate, mandatory, false, &actor.username)?;
                    self.insert_update(db, actor, &u, "update now")?
                }
            };
            if u.needs_approval && u.approved_by.is_none() {
                authorize(actor.role, Action::ApproveUpdate)?;
                u.approved_by = Some(actor.username.clone());
                u.approved_at = Some(now);
                self.timeline(db, &u, &actor.username, "approved", json!({"target": u.target_release, "update_now": true}))?;
            }
            u.status = UpdateStatus::Queued;
            db.save_update(&u)?;
            db.audit(
                &audit_entry(actor, "update.now", instance, json!({"update_id": u.id, "target": u.target_release})),
                now,
            )?;
            let u = self.start_update(db, actor, u)?;
            self.update_view(db, u)
        })?;
        self.job_wakeup.notify_one();
        Ok(view)
    }

    /// Starts a rehearsal of the update of `instance`: production is copied into a
    /// throwaway sandbox file and upgraded there; the result is attached to the open update.
    pub fn rehearse_update(
        &self,
        actor: &Actor,
        instance: &str,
        req: &RehearseRequest,
    ) -> Result<RehearsalView> {
        authorize(actor.role, Action::ScheduleUpdate)?;
        let r = self.store.write(|db| {
            let inst = live_instance(db, instance)?;
            let current = release_of(&inst)?;
            let open = db.open_update(inst.id)?;
            let target = match (&req.target, &open) {
                (Some(raw), _) => {
                    rules::check_target(&self.catalog, &current, raw).map_err(target_error)?
                }
                (None, Some(u)) => u
                    .target_release
                    .parse()
                    .map_err(|_| ServiceError::internal("bad target"))?,
                (None, None) => {
                    let latest = self.catalog.latest().version;
                    if latest <= current {
                        return Err(ServiceError::conflict(
                            "no_update_available",
                            format!("{instance} is already on the latest release, {current}"),
                        ));
                    }
                    latest
                }
            };
            // Attached to the open update when it rehearses that update's target.
            let attach = open
                .as_ref()
                .filter(|u| u.target_release.parse::<ReleaseVersion>().ok() == Some(target));
            self.queue_rehearsal(db, actor, &inst, attach, target, false)
        })?;
        self.job_wakeup.notify_one();
        Ok(r.into())
    }

    /// Updates, newest first, optionally by status and instance.
    pub fn list_updates(
        &self,
        actor: &Actor,
        status: Option<&str>,
        instance: Option<&str>,
    ) -> Result<Vec<UpdateView>> {
        authorize(actor.role, Action::ViewUpdates)?;
        let status = match status.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(s.parse::<UpdateStatus>()?),
        };
        self.store.read(|db| {
            db.list_updates(instance.filter(|i| !i.is_empty()), status, 500)?
                .into_iter()
                .map(|u| self.update_view(db, u))
                .collect()
        })
    }

    pub fn show_update(&self, actor: &Actor, id: i64) -> Result<UpdateView> {
        authorize(actor.role, Action::ViewUpdates)?;
        self.store.read(|db| {
            let u = db.update(id)?.ok_or_else(|| {
                ServiceError::not_found("unknown_update", format!("there is no update {id}"))
            })?;
            self.update_view(db, u)
        })
    }

    /// Writes a running rehearsal and its job, in the caller's transaction.
    fn queue_rehearsal(
        &self,
        db: &Db,
        actor: &Actor,
        inst: &InstanceRow,
        update: Option<&UpdateRow>,
        target: ReleaseVersion,
        automatic: bool,
    ) -> Result<RehearsalRow> {
        let now = self.now();
        let mut r = db.insert_rehearsal(&RehearsalRow {
            id: 0,
            update_id: update.map(|u| u.id),
            instance_name: inst.name.clone(),
            sandbox: String::new(),
            target_release: target.to_string(),
            status: "running".into(),
            automatic,
            started_at: now,
            finished_at: None,
            duration_ms: None,
            problems: Vec::new(),
            job_id: None,
            created_by: actor.username.clone(),
        })?;
        r.sandbox = format!("{}-rehearsal-{}", inst.name, r.id);
        let job = db.insert_job(
            &steward_store::NewJob {
                kind: REHEARSAL_JOB.into(),
                target: inst.name.clone(),
                params: json!({"rehearsal_id": r.id}),
                created_by: actor.username.clone(),
            },
            now,
        )?;
        r.job_id = Some(job.id);
        db.save_rehearsal(&r)?;
        db.audit(
            &audit_entry(
                actor,
                "update.rehearse",
                &inst.name,
                json!({"rehearsal_id": r.id, "target": r.target_release, "automatic": automatic}),
            ),
            now,
        )?;
        Ok(r)
    }

    /// Moves a queued update to in progress and queues its job, in the caller's transaction.
    fn start_update(&self, db: &Db, actor: &Actor, mut u: UpdateRow) -> Result<UpdateRow> {
        let now = self.now();
        let job = db.insert_job(
            &steward_store::NewJob {
                kind: UPDATE_JOB.into(),
                target: u.instance_name.clone(),
                params: json!({"update_id": u.id}),
                created_by: actor.username.clone(),
            },
            now,
        )?;
        u.status = UpdateStatus::InProgress;
        u.started_at = Some(now);
        u.finished_at = None;
        u.stage = None;
        u.job_id = Some(job.id);
        db.save_update(&u)?;
        db.audit(
            &audit_entry(
                actor,
                "update.start",
                &u.instance_name,
                json!({"update_id": u.id, "target": u.target_release, "window": u.active_window, "job_id": job.id}),
            ),
            now,
        )?;
        self.timeline(
            db,
            &u,
            &actor.username,
            "started",
            json!({"window": u.active_window, "job_id": job.id}),
        )?;
        self.announce(
            db,
            Event::UpdateInProgress,
            "info",
            Some(&u.instance_name),
            &format!(
                "Update in progress: {} is being updated from {} to {}",
                u.instance_name, u.from_release, u.target_release
            ),
            notice(&u),
        )?;
        Ok(u)
    }
}

/// Whether an instance may be updated right now (no other operation running on it).
fn instance_ready(i: &InstanceRow) -> bool {
    i.state == InstanceState::Available
}

/// A refresh (work item) of or from `instance` whose two-hour window overlaps `windows`
/// overlaps the update: the instance cannot be updated and refreshed at once.
fn check_no_overlapping_refresh(db: &Db, instance: &str, windows: &[Window]) -> Result<()> {
    use steward_core::workitem::{REFRESH_WINDOW_HOURS, WorkItemStatus as W};
    let open = [W::Submitted, W::Accepted, W::InProgress]
        .into_iter()
        .map(|status| db.list_work_items(Some(status), Some(instance), 1000))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for w in open.into_iter().flatten() {
        let refresh = Window::new(
            w.window_start,
            chrono::Duration::hours(REFRESH_WINDOW_HOURS),
        );
        if windows.iter().any(|win| win.overlaps(&refresh)) {
            return Err(ServiceError::conflict(
                "overlapping_operation",
                format!(
                    "a refresh {} {instance} is scheduled at {} (work item {}), inside the update window; pick other windows or reschedule the refresh",
                    if w.target == instance { "of" } else { "from" },
                    w.window_start.format("%Y-%m-%d %H:%M UTC"),
                    w.id
                ),
            ));
        }
    }
    Ok(())
}
