//! Work items (seed 002): database refreshes from a source instance into a sandbox,
//! requested ahead of a downtime window, accepted, run at the window's start and tracked.
//!
//! The rules (statuses, lead time, sandbox-only targets, restore range) are in
//! `steward_core::workitem` (and, for a moment copied from continuous capture,
//! `steward_core::pitr`); this module applies them, records every transition in the work
//! item's history with its audit entry and notification in one transaction, and runs the
//! refresh as a durable `refresh` job (`run.rs`) with post-refresh scripts (`scripts.rs`).

mod run;
pub mod scripts;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use steward_core::InstanceState;
use steward_core::backup::check_backup;
use steward_core::notify::Event;
use steward_core::policy::{Action, authorize};
use steward_core::workitem::{
    REFRESH, RefreshRefusal, RestorePoint, ScheduledRefresh, WorkItemStatus, check_moment_kept,
    check_no_overlapping_refresh, check_request_shape, check_target, check_window, refresh_window,
    resolve_point,
};
use steward_store::{
    BackupRow, ChainRow, Db, InstanceRow, NewJob, NewWorkItem, WorkItemEventRow, WorkItemRow,
};

use super::capture::RangeView;
use super::instances::live_instance;
use super::{Actor, JobHandlers, Result, Services, audit_entry};
use crate::config::{Config, ConfigError};
use crate::error::ServiceError;

pub use scripts::ScriptRun;

/// Job kind of a refresh.
pub const REFRESH_JOB: &str = "refresh";

/// Work item settings from the configuration.
#[derive(Debug, Clone)]
pub struct WorkItemSettings {
    /// Minimum time between a request and its downtime window.
    pub lead_time: chrono::Duration,
    /// Accept valid requests automatically.
    pub auto_accept: bool,
    /// How long the safety backup of a refresh target is kept.
    pub safety_backup_retention: chrono::Duration,
    /// Post-refresh scripts directory; none: the built-in sample.
    pub scripts_dir: Option<std::path::PathBuf>,
}

impl Default for WorkItemSettings {
    fn default() -> Self {
        Self {
            lead_time: chrono::Duration::hours(24),
            auto_accept: true,
            safety_backup_retention: chrono::Duration::days(7),
            scripts_dir: None,
        }
    }
}

/// Checks the work item settings of `c`.
pub fn settings(c: &Config) -> Result<WorkItemSettings, ConfigError> {
    steward_core::backup::check_retention_days(c.refresh_safety_backup_days)
        .map_err(|e| ConfigError::new(format!("refresh_safety_backup_days: {e}")))?;
    if let Some(dir) = &c.post_refresh_scripts_dir
        && !dir.is_dir()
    {
        return Err(ConfigError::new(format!(
            "post_refresh_scripts_dir {} is not a directory",
            dir.display()
        )));
    }
    Ok(WorkItemSettings {
        lead_time: chrono::Duration::hours(c.refresh_lead_hours.into()),
        auto_accept: c.refresh_auto_accept,
        safety_backup_retention: chrono::Duration::days(c.refresh_safety_backup_days.into()),
        scripts_dir: c.post_refresh_scripts_dir.clone(),
    })
}

/// Registers the work item jobs.
pub fn register(handlers: &mut JobHandlers) {
    handlers.register(REFRESH_JOB, run::RefreshHandler);
}

/// The backup a refresh copies, and the moment it holds.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RestorePointRef {
    pub backup_id: i64,
    pub at: DateTime<Utc>,
}

/// The moment a refresh copies from continuous capture (instead of a backup): the source's
/// state committed at the last commit at or before `at`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MomentRef {
    /// The capture chain (a base snapshot and the commits after it) the copy is replayed from.
    pub chain_id: i64,
    /// The moment asked for.
    pub at: DateTime<Utc>,
    /// The last commit at or before `at` (the base snapshot's moment when there was none
    /// since): the state copied. `null` until the refresh has run.
    pub commit_at: Option<DateTime<Utc>>,
}

/// One transition of a work item.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkItemEventView {
    pub at: DateTime<Utc>,
    pub actor: String,
    /// The status after the transition.
    pub status: String,
    /// `before` and `after` values, and what else matters (error, backup ids).
    #[schema(value_type = Object)]
    pub details: Value,
}

impl From<WorkItemEventRow> for WorkItemEventView {
    fn from(e: WorkItemEventRow) -> Self {
        Self {
            at: e.at,
            actor: e.actor,
            status: e.status.as_str().into(),
            details: e.details,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WorkItemView {
    pub id: i64,
    /// `refresh`
    pub kind: String,
    pub source: String,
    pub target: String,
    /// The requested moment; `null`: the latest (a fresh copy of the source at window start).
    pub point_in_time: Option<DateTime<Utc>>,
    /// The backup that was (or will be) copied, once resolved; `null` for a moment copied
    /// from continuous capture (see `moment`).
    pub restore_point: Option<RestorePointRef>,
    /// The moment copied (or to copy) from continuous capture, when the source's capture
    /// covers `point_in_time`.
    pub moment: Option<MomentRef>,
    pub window_start: DateTime<Utc>,
    /// `submitted`, `accepted`, `in_progress`, `succeeded`, `failed` or `cancelled`
    pub status: String,
    /// What the seed calls the status, e.g. "Request accepted".
    pub status_label: String,
    pub requester: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// How long the target was unavailable, in milliseconds.
    pub downtime_ms: Option<i64>,
    pub error: Option<String>,
    /// The automatic backup of the target taken before its database was replaced.
    pub safety_backup_id: Option<i64>,
    /// The post-refresh scripts run on the copy.
    pub scripts: Vec<ScriptRun>,
    pub history: Vec<WorkItemEventView>,
    pub job_id: Option<i64>,
}

impl WorkItemView {
    fn new(w: WorkItemRow, history: Vec<WorkItemEventRow>) -> Self {
        Self {
            id: w.id,
            kind: w.kind,
            source: w.source,
            target: w.target,
            point_in_time: w.point_in_time,
            restore_point: match (w.restore_backup_id, w.restore_at) {
                (Some(backup_id), Some(at)) => Some(RestorePointRef { backup_id, at }),
                _ => None,
            },
            moment: match (w.restore_chain_id, w.point_in_time) {
                (Some(chain_id), Some(at)) => Some(MomentRef {
                    chain_id,
                    at,
                    commit_at: w.restore_at,
                }),
                _ => None,
            },
            window_start: w.window_start,
            status: w.status.as_str().into(),
            status_label: w.status.label().into(),
            requester: w.requester,
            created_at: w.created_at,
            updated_at: w.updated_at,
            started_at: w.started_at,
            finished_at: w.finished_at,
            downtime_ms: w.downtime_ms,
            error: w.error,
            safety_backup_id: w.safety_backup_id,
            scripts: serde_json::from_value(w.scripts).unwrap_or_default(),
            history: history.into_iter().map(Into::into).collect(),
            job_id: w.job_id,
        }
    }
}

/// One restore point of an instance.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RestorePointView {
    /// The moment the backup holds the database as of.
    pub at: DateTime<Utc>,
    pub backup_id: i64,
    /// `system`, `on_demand`, `pre_update` or `pre_refresh`
    pub kind: String,
    pub label: String,
    pub expires_at: DateTime<Utc>,
}

/// What a refresh from an instance can copy: the latest (always), and any moment of its
/// continuous-capture range (`range`) or, for an instance capture has never covered, one of
/// its backups (`points`).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RestorePointsView {
    pub instance: String,
    /// The latest is always available: a fresh copy taken at window start.
    pub latest_is_live: bool,
    /// The earliest moment that can be chosen.
    pub earliest: Option<DateTime<Utc>>,
    /// Completed backups within retention, oldest first, when capture has never covered the
    /// instance (a refresh then copies the newest one at or before the moment); empty when
    /// `range` is given.
    pub points: Vec<RestorePointView>,
    /// When continuous capture covers the instance: the range or ranges any moment of which
    /// can be copied exactly, with the gaps between them (as `GET
    /// /api/v1/instances/{name}/range`).
    pub range: Option<RangeView>,
}

/// A request for a database refresh.
#[derive(Debug, Clone)]
pub struct RefreshRequest {
    pub source: String,
    pub target: String,
    /// `None`: the latest.
    pub at: Option<DateTime<Utc>>,
    pub window_start: DateTime<Utc>,
    /// The requester acknowledged the consequences.
    pub acknowledge: bool,
}

/// A new point in time for a rescheduled refresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointInTime {
    Latest,
    At(DateTime<Utc>),
}

/// Reads an RFC 3339 moment (any offset) given for `field`; `invalid_time` otherwise.
pub fn parse_moment(field: &str, text: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ServiceError::invalid(
                "invalid_time",
                format!("{field} {text:?} is not an RFC 3339 time, e.g. 2027-01-10T22:00:00Z"),
            )
        })
}

/// Reads a point in time: `latest` (or empty) or an RFC 3339 moment.
pub fn parse_point(text: &str) -> Result<PointInTime> {
    match text.trim() {
        "" | "latest" => Ok(PointInTime::Latest),
        t => parse_moment("at", t).map(PointInTime::At),
    }
}

pub(crate) fn refusal(e: RefreshRefusal) -> ServiceError {
    let code = e.code();
    match e {
        RefreshRefusal::ProductionTarget(_)
        | RefreshRefusal::MomentExpiresBeforeWindow { .. }
        | RefreshRefusal::Overlapping { .. }
        | RefreshRefusal::Started { .. }
        | RefreshRefusal::Finished { .. } => ServiceError::conflict(code, e.to_string()),
        _ => ServiceError::invalid(code, e.to_string()),
    }
}

/// At the swap: the target is still a sandbox, and available.
pub(crate) fn check_target_now(t: &InstanceRow) -> Result<()> {
    check_target(&t.name, t.instance_type).map_err(refusal)?;
    if t.state != InstanceState::Available {
        return Err(ServiceError::conflict(
            "instance_busy",
            format!(
                "{} is {}; the refresh needs it available",
                t.name,
                t.state.label()
            ),
        ));
    }
    Ok(())
}

/// A refresh whose two-hour window overlaps an open update's window of its source or target
/// would collide with that update: refused as `overlapping_operation` (the update side checks
/// the converse).
fn check_no_overlapping_update(
    db: &Db,
    instances: &[&InstanceRow],
    window_start: DateTime<Utc>,
) -> Result<()> {
    let (refresh_start, refresh_end) = refresh_window(window_start);
    for i in instances {
        let Some(u) = db.open_update(i.id)? else {
            continue;
        };
        for (start, end) in [
            (u.preferred_start, u.preferred_end),
            (u.alternate_start, u.alternate_end),
        ] {
            if start < refresh_end && refresh_start < end {
                return Err(ServiceError::conflict(
                    "overlapping_operation",
                    format!(
                        "{} has an update to {} scheduled from {} to {} (update {}); pick a window outside it or reschedule the update",
                        i.name,
                        u.target_release,
                        start.format("%Y-%m-%d %H:%M UTC"),
                        end.format("%Y-%m-%d %H:%M UTC"),
                        u.id
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Two refreshes in overlapping windows that write the same target, or where one replaces what
/// the other copies, are refused as `overlapping_operation` (`steward_core::workitem`).
fn check_no_overlapping_refreshes(db: &Db, new: &ScheduledRefresh) -> Result<()> {
    let mut open = Vec::new();
    for instance in [&new.source, &new.target] {
        for status in [
            WorkItemStatus::Submitted,
            WorkItemStatus::Accepted,
            WorkItemStatus::InProgress,
        ] {
            for w in db.list_work_items(Some(status), Some(instance), 1000)? {
                if !open.iter().any(|o: &ScheduledRefresh| o.id == w.id) {
                    open.push(scheduled(&w));
                }
            }
        }
    }
    check_no_overlapping_refresh(new, &open).map_err(refusal)
}

/// A stored work item as far as overlaps go.
fn scheduled(w: &WorkItemRow) -> ScheduledRefresh {
    ScheduledRefresh {
        id: w.id,
        source: w.source.clone(),
        target: w.target.clone(),
        window_start: w.window_start,
        reads_live_source: w.restore_backup_id.is_none() && w.restore_chain_id.is_none(),
    }
}

fn unknown_work_item(id: i64) -> ServiceError {
    ServiceError::not_found("unknown_work_item", format!("there is no work item {id}"))
}

pub(crate) fn load(db: &Db, id: i64) -> Result<WorkItemRow> {
    db.work_item(id)?.ok_or_else(|| unknown_work_item(id))
}

fn restore_point_of(b: &BackupRow) -> RestorePoint {
    RestorePoint {
        backup_id: b.id,
        at: b.completed_at.unwrap_or(b.created_at),
        expires_at: b.expires_at,
    }
}

/// The values a transition's history entry and audit entry show.
pub(crate) fn snapshot(w: &WorkItemRow) -> Value {
    json!({
        "status": w.status.as_str(),
        "window_start": w.window_start,
        "point_in_time": w.point_in_time,
        "restore_backup_id": w.restore_backup_id,
        "restore_chain_id": w.restore_chain_id,
    })
}

/// What a work item notification says.
pub(crate) fn details(w: &WorkItemRow) -> Value {
    let mut d = json!({
        "work_item": w.id,
        "source": w.source,
        "target": w.target,
        "window_start": w.window_start,
        "point_in_time": w.point_in_time,
        "status": w.status.label(),
    });
    if let Some(e) = &w.error {
        d["error"] = json!(e);
    }
    if let Some(ms) = w.downtime_ms {
        d["downtime_ms"] = json!(ms);
    }
    if let Some(b) = w.safety_backup_id {
        d["safety_backup_id"] = json!(b);
    }
    d
}

/// Moves `w` to `to` (checked against the lifecycle), saves it, records the history entry
/// with `before`/`after` and `extra`, and the audit entry `action`, in the caller's
/// transaction. `w`'s other fields are saved as they are.
#[allow(clippy::too_many_arguments)]
pub(crate) fn transition(
    db: &Db,
    actor: &Actor,
    w: &mut WorkItemRow,
    to: WorkItemStatus,
    action: &str,
    before: Value,
    extra: Value,
    now: DateTime<Utc>,
) -> Result<()> {
    if w.status != to && !w.status.can_become(to) {
        return Err(ServiceError::internal(format!(
            "work item {} cannot go from {} to {}",
            w.id, w.status, to
        )));
    }
    w.status = to;
    w.updated_at = now;
    db.update_work_item(w)?;
    let mut d = json!({"before": before, "after": snapshot(w)});
    if let (Some(d), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
        d.extend(extra.clone());
    }
    db.insert_work_item_event(w.id, now, &actor.username, to, &d)?;
    let mut audit = d.clone();
    audit["work_item"] = json!(w.id);
    db.audit(&audit_entry(actor, action, &w.target, audit), now)?;
    Ok(())
}

impl Services {
    fn work_item_view(&self, db: &Db, w: WorkItemRow) -> Result<WorkItemView> {
        let history = db.work_item_history(w.id)?;
        Ok(WorkItemView::new(w, history))
    }

    /// Work items, newest first, optionally only those in `status` or involving `instance`
    /// (as source or target).
    pub fn list_work_items(
        &self,
        actor: &Actor,
        status: Option<&str>,
        instance: Option<&str>,
    ) -> Result<Vec<WorkItemView>> {
        authorize(actor.role, Action::ViewWorkItems)?;
        let status = status
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<WorkItemStatus>())
            .transpose()?;
        let instance = instance.map(str::trim).filter(|s| !s.is_empty());
        self.store.read(|db| {
            db.list_work_items(status, instance, 500)?
                .into_iter()
                .map(|w| self.work_item_view(db, w))
                .collect()
        })
    }

    pub fn show_work_item(&self, actor: &Actor, id: i64) -> Result<WorkItemView> {
        authorize(actor.role, Action::ViewWorkItems)?;
        self.store.read(|db| {
            let w = load(db, id)?;
            self.work_item_view(db, w)
        })
    }

    /// What a refresh from `instance` can copy: the range continuous capture covers, with its
    /// gaps, or, when capture has never covered the instance, its restore points (completed,
    /// unexpired backups).
    pub fn restore_points(&self, actor: &Actor, instance: &str) -> Result<RestorePointsView> {
        authorize(actor.role, Action::ViewWorkItems)?;
        let now = self.now();
        let range = self.backup_range(actor, instance)?;
        if !range.spans.is_empty() {
            let horizon =
                steward_core::pitr::retention_start(now, self.capture.settings.retention_days);
            return Ok(RestorePointsView {
                instance: range.instance.clone(),
                latest_is_live: true,
                earliest: range.earliest.map(|e| e.max(horizon)),
                points: Vec::new(),
                range: Some(range),
            });
        }
        let (inst, rows) = self.store.read(|db| {
            let inst = live_instance(db, instance)?;
            let rows = db.restore_points(inst.id, now)?;
            Ok::<_, ServiceError>((inst, rows))
        })?;
        let points: Vec<RestorePointView> = rows
            .iter()
            .map(|b| RestorePointView {
                at: restore_point_of(b).at,
                backup_id: b.id,
                kind: b.kind.as_str().into(),
                label: b.label.clone(),
                expires_at: b.expires_at,
            })
            .collect();
        Ok(RestorePointsView {
            instance: inst.name,
            latest_is_live: true,
            earliest: points.iter().map(|p| p.at).min(),
            points,
            range: None,
        })
    }

    /// The capture chain a refresh of `source` to `moment` copies, checked outside any store
    /// transaction (the range check reads the store): `Ok(None)` for the latest, and for a
    /// source continuous capture has never covered (a backup restore point is copied then, so
    /// a fleet without capture still works). Otherwise the moment must lie in the source's
    /// range (`moment_in_gap`, `moment_outside_range`, `moment_before_retention`,
    /// `moment_in_future`, naming the range) and still be kept when the window starts.
    fn moment_chain(
        &self,
        source: &InstanceRow,
        moment: Option<DateTime<Utc>>,
        window: DateTime<Utc>,
    ) -> Result<Option<ChainRow>> {
        let Some(at) = moment else {
            return Ok(None);
        };
        if self.store.read(|db| db.chains_of(source.id))?.is_empty() {
            return Ok(None);
        }
        let chain = self.chain_for_moment(source, at)?;
        check_moment_kept(
            &source.name,
            at,
            window,
            self.capture.settings.retention_days,
        )
        .map_err(refusal)?;
        Ok(Some(chain))
    }

    /// The source's restore points in `db` and the one `moment` picks for `window`.
    fn pick_point(
        &self,
        db: &Db,
        source: &InstanceRow,
        moment: Option<DateTime<Utc>>,
        window: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Option<RestorePoint>> {
        let points: Vec<RestorePoint> = db
            .restore_points(source.id, now)?
            .iter()
            .map(restore_point_of)
            .collect();
        resolve_point(&source.name, &points, moment, window, now).map_err(refusal)
    }

    /// Both instances must be on a release that can be backed up: the target's safety backup,
    /// and for the latest, the fresh copy of the source.
    fn check_backupable(&self, inst: &InstanceRow) -> Result<()> {
        let release = inst.release.parse().map_err(|e| {
            ServiceError::internal(format!("{} has an unreadable release: {e}", inst.name))
        })?;
        check_backup(
            &inst.name,
            release,
            InstanceState::Available,
            self.backups.minimum_release,
        )
        .map_err(|e| ServiceError::conflict("release_too_old", e.to_string()))
    }

    /// Requests a database refresh of sandbox `target` from `source`. Accepted at once when
    /// requests are accepted automatically.
    pub fn request_refresh(&self, actor: &Actor, req: &RefreshRequest) -> Result<WorkItemView> {
        authorize(actor.role, Action::RequestRefresh)?;
        check_request_shape(&req.source, &req.target, req.acknowledge).map_err(refusal)?;
        let now = self.now();
        // The range check reads the store, so it runs first; its verdict is applied below, in
        // the order of the checks (an unknown source is named by the transaction's look-up).
        let copy = match self.store.read(|db| live_instance(db, &req.source)) {
            Ok(src) => Some(self.moment_chain(&src, req.at, req.window_start)),
            Err(_) => None,
        };
        let view = self.store.write(|db| {
            let source = live_instance(db, &req.source)?;
            let target = live_instance(db, &req.target)?;
            check_target(&target.name, target.instance_type).map_err(refusal)?;
            check_window(req.window_start, now, self.workitems.lead_time).map_err(refusal)?;
            check_no_overlapping_update(db, &[&source, &target], req.window_start)?;
            let (point, chain) = match copy {
                Some(Err(e)) => return Err(e),
                Some(Ok(Some(chain))) => (None, Some(chain)),
                _ => (
                    self.pick_point(db, &source, req.at, req.window_start, now)?,
                    None,
                ),
            };
            check_no_overlapping_refreshes(
                db,
                &ScheduledRefresh {
                    id: 0,
                    source: source.name.clone(),
                    target: target.name.clone(),
                    window_start: req.window_start,
                    reads_live_source: point.is_none() && chain.is_none(),
                },
            )?;
            if point.is_none() && chain.is_none() {
                self.check_backupable(&source)?;
            }
            self.check_backupable(&target)?;
            let mut w = db.insert_work_item(
                &NewWorkItem {
                    kind: REFRESH.into(),
                    source_id: source.id,
                    source: source.name.clone(),
                    target_id: target.id,
                    target: target.name.clone(),
                    point_in_time: req.at,
                    restore_backup_id: point.as_ref().map(|p| p.backup_id),
                    restore_at: point.as_ref().map(|p| p.at),
                    restore_chain_id: chain.as_ref().map(|c| c.id),
                    window_start: req.window_start,
                    status: WorkItemStatus::Submitted,
                    requester: actor.username.clone(),
                },
                now,
            )?;
            transition(
                db,
                actor,
                &mut w,
                WorkItemStatus::Submitted,
                "workitem.request",
                Value::Null,
                json!({"acknowledged": true}),
                now,
            )?;
            if self.workitems.auto_accept {
                self.accept_in(db, &Actor::system(), &mut w, now)?;
            }
            self.work_item_view(db, w)
        })?;
        Ok(view)
    }

    fn accept_in(
        &self,
        db: &Db,
        actor: &Actor,
        w: &mut WorkItemRow,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let before = snapshot(w);
        transition(
            db,
            actor,
            w,
            WorkItemStatus::Accepted,
            "workitem.accept",
            before,
            Value::Null,
            now,
        )?;
        self.announce(
            db,
            Event::RefreshAccepted,
            "info",
            Some(&w.target),
            &format!(
                "Refresh #{} of {} from {} accepted for {}",
                w.id,
                w.target,
                w.source,
                w.window_start.format("%Y-%m-%d %H:%M UTC")
            ),
            details(w),
        )?;
        Ok(())
    }

    /// Accepts a submitted work item (System Administrators, when acceptance is not
    /// automatic). If its window has already started, it starts at the next tick.
    pub fn accept_work_item(&self, actor: &Actor, id: i64) -> Result<WorkItemView> {
        authorize(actor.role, Action::AcceptWorkItem)?;
        let now = self.now();
        self.store.write(|db| {
            let mut w = load(db, id)?;
            w.status.check_changeable(id).map_err(refusal)?;
            if w.status != WorkItemStatus::Submitted {
                return Err(ServiceError::conflict(
                    "work_item_not_submitted",
                    format!("work item {id} is already {}", w.status.label()),
                ));
            }
            self.accept_in(db, actor, &mut w, now)?;
            self.work_item_view(db, w)
        })
    }

    /// Moves a work item's window and/or point in time, with the same checks as a request.
    /// When an administrator accepts each request, a rescheduled one is submitted again.
    pub fn reschedule_work_item(
        &self,
        actor: &Actor,
        id: i64,
        window_start: Option<DateTime<Utc>>,
        at: Option<PointInTime>,
    ) -> Result<WorkItemView> {
        authorize(actor.role, Action::RequestRefresh)?;
        if window_start.is_none() && at.is_none() {
            return Err(ServiceError::invalid(
                "nothing_to_change",
                "give a new window start, a new point in time, or both",
            ));
        }
        let now = self.now();
        // The range check for the new moment and window reads the store, so it runs first.
        let copy = match self.store.read(|db| {
            let w = load(db, id)?;
            let src = db
                .instance_by_id(w.source_id)?
                .filter(|i| i.deleted_at.is_none());
            Ok::<_, ServiceError>((w, src))
        }) {
            Ok((w, Some(src))) => {
                let moment = match at {
                    Some(PointInTime::Latest) => None,
                    Some(PointInTime::At(t)) => Some(t),
                    None => w.point_in_time,
                };
                Some(self.moment_chain(&src, moment, window_start.unwrap_or(w.window_start)))
            }
            _ => None,
        };
        self.store.write(|db| {
            let mut w = load(db, id)?;
            w.status.check_changeable(id).map_err(refusal)?;
            let before = snapshot(&w);
            if let Some(ws) = window_start {
                check_window(ws, now, self.workitems.lead_time).map_err(refusal)?;
                w.window_start = ws;
            }
            if let Some(p) = at {
                w.point_in_time = match p {
                    PointInTime::Latest => None,
                    PointInTime::At(t) => Some(t),
                };
            }
            let source = db
                .instance_by_id(w.source_id)?
                .filter(|i| i.deleted_at.is_none());
            let source = source.ok_or_else(|| {
                ServiceError::conflict(
                    "unknown_instance",
                    format!(
                        "the source {} no longer exists; cancel this work item",
                        w.source
                    ),
                )
            })?;
            if window_start.is_some() {
                let target = db.instance_by_id(w.target_id)?;
                let mut involved = vec![&source];
                involved.extend(target.as_ref());
                check_no_overlapping_update(db, &involved, w.window_start)?;
            }
            let (point, chain) = match copy {
                Some(Err(e)) => return Err(e),
                Some(Ok(Some(chain))) => (None, Some(chain)),
                _ => (
                    self.pick_point(db, &source, w.point_in_time, w.window_start, now)?,
                    None,
                ),
            };
            if point.is_none() && chain.is_none() {
                self.check_backupable(&source)?;
            }
            w.restore_backup_id = point.as_ref().map(|p| p.backup_id);
            w.restore_at = point.as_ref().map(|p| p.at);
            w.restore_chain_id = chain.as_ref().map(|c| c.id);
            check_no_overlapping_refreshes(db, &scheduled(&w))?;
            let to = if w.status == WorkItemStatus::Accepted && !self.workitems.auto_accept {
                WorkItemStatus::Submitted
            } else {
                w.status
            };
            transition(
                db,
                actor,
                &mut w,
                to,
                "workitem.reschedule",
                before,
                Value::Null,
                now,
            )?;
            self.work_item_view(db, w)
        })
    }

    /// Cancels a work item that has not started.
    pub fn cancel_work_item(&self, actor: &Actor, id: i64) -> Result<WorkItemView> {
        authorize(actor.role, Action::RequestRefresh)?;
        let now = self.now();
        self.store.write(|db| {
            let mut w = load(db, id)?;
            w.status.check_changeable(id).map_err(refusal)?;
            let before = snapshot(&w);
            w.finished_at = Some(now);
            transition(
                db,
                actor,
                &mut w,
                WorkItemStatus::Cancelled,
                "workitem.cancel",
                before,
                Value::Null,
                now,
            )?;
            self.announce(
                db,
                Event::RefreshCancelled,
                "info",
                Some(&w.target),
                &format!(
                    "Refresh #{} of {} from {} cancelled by {}",
                    w.id, w.target, w.source, actor.username
                ),
                details(&w),
            )?;
            self.work_item_view(db, w)
        })
    }

    /// Called once a minute by the scheduler: starts accepted work items whose window opened,
    /// each as a `refresh` job.
    pub fn tick_workitems(&self) -> Result<()> {
        self.start_due_work_items().map(drop)
    }

    /// Starts every accepted work item whose window has opened; returns their ids.
    pub fn start_due_work_items(&self) -> Result<Vec<i64>> {
        let now = self.now();
        let due = self.store.read(|db| db.due_work_items(now))?;
        let mut started = Vec::new();
        for w in due {
            let r = self.store.write(|db| {
                let mut w = load(db, w.id)?;
                if w.status != WorkItemStatus::Accepted || w.window_start > now {
                    return Ok(false);
                }
                let before = snapshot(&w);
                let job = db.insert_job(
                    &NewJob {
                        kind: REFRESH_JOB.into(),
                        target: w.target.clone(),
                        params: json!({"work_item_id": w.id}),
                        created_by: Actor::system().username,
                    },
                    now,
                )?;
                w.job_id = Some(job.id);
                w.started_at = Some(now);
                transition(
                    db,
                    &Actor::system(),
                    &mut w,
                    WorkItemStatus::InProgress,
                    "workitem.start",
                    before,
                    json!({"job_id": job.id}),
                    now,
                )?;
                self.announce(
                    db,
                    Event::RefreshStarted,
                    "info",
                    Some(&w.target),
                    &format!(
                        "Refresh #{} of {} from {} started",
                        w.id, w.target, w.source
                    ),
                    details(&w),
                )?;
                Ok::<_, ServiceError>(true)
            });
            match r {
                Ok(true) => started.push(w.id),
                Ok(false) => {}
                Err(e) => {
                    tracing::error!(work_item = w.id, error = %e, "could not start a work item")
                }
            }
        }
        if !started.is_empty() {
            self.job_wakeup.notify_one();
        }
        Ok(started)
    }
}
