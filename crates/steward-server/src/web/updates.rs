//! The Updates tab (seed 001): the fleet's releases, support status, "Update is Available"
//! and each instance's update status; per instance, the eligible target releases, the
//! schedule form (preferred and alternate start entered in a time zone), Approve Update,
//! Withdraw approval, Reschedule, Cancel and Update now (both through confirmation pages
//! where they matter), update rehearsals, the stage table with timings and the history
//! timeline.
//!
//! The pages read the updates service's views as the REST API sends them (the contract's
//! JSON shape, decoded into the small types below), so the tab shows exactly what
//! `steward update show --json` shows. The services decide; which buttons a page offers
//! comes from `authorize` and the update's status.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use minijinja::context;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use steward_core::policy::{Action, authorize};
use steward_core::update::{STAGES, UpdateStatus};

use super::paging::{PAGE_SIZE, PageQuery, Pager};
use super::render::{Page, query_value, sentence, sentence_naming};
use super::session::{Posted, WebSession, redirect_with_notice};
use crate::api::status_of;
use crate::error::ServiceError;
use crate::services::updates::{
    MandatoryView, RehearsalView, RehearseRequest, RescheduleRequest, ScheduleRequest,
    UpdateNowRequest, UpdateOverview, UpdatePolicyDoc, UpdateView, WindowView,
};
use crate::services::{Actor, Services};
use crate::{AppState, SharedState};

const DATE: &str = "%Y-%m-%d %H:%M UTC";
/// What a `datetime-local` input holds.
const LOCAL_INPUT: &str = "%Y-%m-%dT%H:%M";

/// The updates tab's routes.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/updates", get(fleet))
        .route("/updates/policy", axum::routing::post(set_policy))
        .route("/updates/{name}", get(instance_page))
        .route("/updates/{name}/schedule", axum::routing::post(schedule))
        .route("/updates/{name}/approve", axum::routing::post(approve))
        .route("/updates/{name}/withdraw", axum::routing::post(withdraw))
        .route(
            "/updates/{name}/reschedule",
            get(reschedule_form).post(reschedule),
        )
        .route("/updates/{name}/cancel", get(confirm_cancel).post(cancel))
        .route("/updates/{name}/now", get(confirm_now).post(update_now))
        .route("/updates/{name}/rehearse", axum::routing::post(rehearse))
}

/// `t` in the IANA time zone `zone` (e.g. `Europe/Paris`), as `2027-01-10 22:00 CET`;
/// `None` when `zone` is not a time zone Steward knows.
pub fn time_in_zone(t: DateTime<Utc>, zone: &str) -> Option<String> {
    let tz: chrono_tz::Tz = zone.trim().parse().ok()?;
    Some(t.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string())
}

/// Whether `zone` is an IANA time zone Steward knows.
fn known_zone(zone: &str) -> bool {
    zone.trim().parse::<chrono_tz::Tz>().is_ok()
}

/// `t` as a `datetime-local` value in `zone` (UTC if unknown).
fn local_input(t: DateTime<Utc>, zone: &str) -> String {
    match zone.trim().parse::<chrono_tz::Tz>() {
        Ok(tz) => t.with_timezone(&tz).format(LOCAL_INPUT).to_string(),
        Err(_) => t.format(LOCAL_INPUT).to_string(),
    }
}

/// Every time zone the schedule forms offer: UTC first, then the IANA names in order.
fn zones() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = chrono_tz::TZ_VARIANTS
        .iter()
        .map(|z| z.name())
        .filter(|n| *n != "UTC")
        .collect();
    names.sort_unstable();
    names.insert(0, "UTC");
    names
}

fn page_url(instance: &str, zone: Option<&str>) -> String {
    match zone.filter(|z| !z.is_empty() && *z != "UTC") {
        Some(z) => format!("/updates/{instance}?tz={}", query_value(z)),
        None => format!("/updates/{instance}"),
    }
}

// ---------------------------------------------------------------------------------------
// the views the updates service returns (the API's JSON), and the policy as the page reads it
// ---------------------------------------------------------------------------------------

// The service's views, used as they are.
type OverviewV = UpdateOverview;
type UpdateV = UpdateView;
type RehearsalV = RehearsalView;
type WindowV = WindowView;
type MandatoryV = MandatoryView;

#[derive(Debug, Deserialize, Serialize)]
struct PolicyReleaseV {
    version: String,
    kind: String,
    support: String,
    end_of_support: Option<NaiveDate>,
}

#[derive(Debug, Deserialize, Serialize)]
struct PolicyV {
    supported_majors: u32,
    mandatory_when_behind: u32,
    service_updates_automatic: bool,
    #[serde(default)]
    maintenance_window_start: String,
    #[serde(default)]
    mandatory_lead_days: u32,
    /// `built-in`, `file` or `store`
    #[serde(default)]
    source: String,
    #[serde(default)]
    releases: Vec<PolicyReleaseV>,
}

/// A service view in the contract's shape.
fn decode<T: DeserializeOwned>(view: impl Serialize) -> Result<T, ServiceError> {
    serde_json::to_value(view)
        .and_then(serde_json::from_value)
        .map_err(|e| ServiceError::internal(format!("an update view did not decode: {e}")))
}

// ---------------------------------------------------------------------------------------
// what the templates show
// ---------------------------------------------------------------------------------------

/// A row of the fleet table.
#[derive(Debug, Serialize)]
struct FleetRow {
    name: String,
    #[serde(rename = "type")]
    instance_type: String,
    release: String,
    support_status: String,
    /// The support status without the release, e.g. `Supported (n-1)`.
    support_label: String,
    /// The whole sentence, e.g. `Release 8.2 is supported (n-1)`.
    support_detail: String,
    update_available: bool,
    /// The eligible targets, `9.0, 9.1`.
    targets: String,
    mandatory: bool,
    /// The open update's target.
    target: Option<String>,
    status: Option<String>,
    status_label: String,
    window: Option<String>,
    window_note: Option<&'static str>,
    approval: Option<String>,
}

impl FleetRow {
    fn of(o: &OverviewV) -> Self {
        // The open update, else the last one's result.
        let shown = o.current.as_ref().or(o.history.first());
        let open = o.current.as_ref();
        Self {
            name: o.instance.clone(),
            instance_type: o.instance_type.clone(),
            release: o.release.clone(),
            support_status: o.support.status.clone(),
            support_label: short_support(&o.support.label, &o.release),
            support_detail: o.support.label.clone(),
            update_available: o.update_available,
            targets: o
                .available
                .iter()
                .map(|a| a.version.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            mandatory: o.mandatory.is_some() || open.is_some_and(|u| u.mandatory),
            target: open.map(|u| u.target_release.clone()),
            status: shown.map(|u| u.status.clone()),
            status_label: shown.map(|u| u.status_label.clone()).unwrap_or_default(),
            window: open.map(|u| active_window(u).start.format(DATE).to_string()),
            window_note: open
                .filter(|u| u.active_window == "alternate")
                .map(|_| "alternate"),
            approval: open.map(approval_text),
        }
    }
}

/// `Release 8.2 is supported (n-1)` → `Supported (n-1)`, for a table cell beside the
/// release.
fn short_support(label: &str, release: &str) -> String {
    let rest = label
        .strip_prefix(&format!("Release {release} is "))
        .or_else(|| label.strip_prefix(&format!("Release {release} ")))
        .unwrap_or(label);
    let mut out = rest.to_owned();
    if let Some(first) = out.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    out
}

fn active_window(u: &UpdateV) -> &WindowV {
    if u.active_window == "alternate" {
        &u.alternate
    } else {
        &u.preferred
    }
}

fn approval_text(u: &UpdateV) -> String {
    match (&u.approved_by, &u.approved_at) {
        (Some(by), Some(at)) => format!("Approved by {by} on {}", at.format(DATE)),
        (Some(by), None) => format!("Approved by {by}"),
        _ if u.mandatory => "Not needed: mandatory update".into(),
        _ if !u.needs_approval => format!("Not needed: {} update", u.kind),
        _ => "Awaiting a System Administrator".into(),
    }
}

#[derive(Debug, Serialize)]
struct TargetOption {
    version: String,
    kind: String,
    released: String,
    end_of_support: Option<String>,
    latest: bool,
    mandatory: bool,
}

#[derive(Debug, Serialize)]
struct OverviewCtx {
    instance: String,
    #[serde(rename = "type")]
    instance_type: String,
    release: String,
    support_status: String,
    support_label: String,
    support_end: Option<String>,
    update_available: bool,
    available: Vec<TargetOption>,
    mandatory: Option<MandatoryV>,
}

impl OverviewCtx {
    fn of(o: &OverviewV) -> Self {
        let mandatory_target = o.mandatory.as_ref().map(|m| m.target.as_str());
        Self {
            instance: o.instance.clone(),
            instance_type: o.instance_type.clone(),
            release: o.release.clone(),
            support_status: o.support.status.clone(),
            support_label: o.support.label.clone(),
            support_end: o.support.end_of_support.map(|d| d.to_string()),
            update_available: o.update_available,
            available: o
                .available
                .iter()
                .map(|a| TargetOption {
                    version: a.version.clone(),
                    kind: a.kind.clone(),
                    released: a.released.to_string(),
                    end_of_support: a.end_of_support.map(|d| d.to_string()),
                    latest: a.latest,
                    mandatory: mandatory_target == Some(a.version.as_str()),
                })
                .collect(),
            mandatory: o.mandatory.clone(),
        }
    }

    /// The target a form offers first: the mandatory one, else the latest.
    fn default_target(&self) -> String {
        self.mandatory
            .as_ref()
            .map(|m| m.target.clone())
            .or_else(|| {
                self.available
                    .iter()
                    .find(|a| a.latest)
                    .map(|a| a.version.clone())
            })
            .or_else(|| self.available.last().map(|a| a.version.clone()))
            .unwrap_or_default()
    }
}

#[derive(Debug, Serialize)]
struct WindowCtx {
    start: String,
    end: String,
    local_start: Option<String>,
    local_end: Option<String>,
}

impl WindowCtx {
    fn of(w: &WindowV, zone: Option<&str>) -> Self {
        let local = |t| {
            zone.filter(|z| *z != "UTC")
                .and_then(|z| time_in_zone(t, z))
        };
        Self {
            start: w.start.format(DATE).to_string(),
            end: w.end.format(DATE).to_string(),
            local_start: local(w.start),
            local_end: local(w.end),
        }
    }
}

#[derive(Debug, Serialize)]
struct StageRow {
    name: &'static str,
    /// `done`, `running`, `failed`, `pending` or `skipped`.
    state: &'static str,
    state_label: &'static str,
    started: Option<String>,
    finished: Option<String>,
    duration: Option<String>,
}

fn duration_text(ms: i64) -> String {
    let secs = ms.max(0) as f64 / 1000.0;
    if ms < 1000 {
        format!("{} ms", ms.max(0))
    } else if secs < 120.0 {
        format!("{secs:.1} s")
    } else if secs < 7200.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

/// The stage table: Queued (Not Started), then the four stages, with their state and
/// timings.
fn stage_rows(u: &UpdateV) -> Vec<StageRow> {
    let failed = matches!(u.status.as_str(), "failed" | "waiting")
        || (u.error.is_some() && u.status != "in_progress");
    let first_start = u.stages.first().map(|s| s.started_at);
    let waiting = matches!(u.status.as_str(), "scheduled" | "queued");
    let mut rows = vec![StageRow {
        name: "Queued (Not Started)",
        state: if waiting && u.stages.is_empty() {
            "running"
        } else if u.stages.is_empty() && u.status == "cancelled" {
            "skipped"
        } else {
            "done"
        },
        state_label: if waiting && u.stages.is_empty() {
            if u.status == "scheduled" {
                "Awaiting approval"
            } else {
                "Waiting for the window"
            }
        } else if u.stages.is_empty() && u.status == "cancelled" {
            "Cancelled"
        } else {
            "Done"
        },
        started: Some(
            u.approved_at
                .unwrap_or(u.created_at)
                .format(DATE)
                .to_string(),
        ),
        finished: first_start.map(|t| t.format(DATE).to_string()),
        duration: None,
    }];
    for name in STAGES {
        // The last attempt of the stage (a retry in the alternate window records it again).
        let s = u.stages.iter().rev().find(|s| s.stage == name);
        let (state, state_label) = match s {
            Some(s) if s.finished_at.is_some() => ("done", "Done"),
            Some(_) if failed || (u.error.is_some() && u.status != "in_progress") => {
                ("failed", "Failed")
            }
            Some(_) if u.status == "in_progress" => ("running", "In progress"),
            Some(_) => ("failed", "Interrupted"),
            None => ("pending", "Not started"),
        };
        rows.push(StageRow {
            name,
            state,
            state_label,
            started: s.map(|s| s.started_at.format(DATE).to_string()),
            finished: s.and_then(|s| s.finished_at.map(|t| t.format(DATE).to_string())),
            duration: s.and_then(|s| {
                s.finished_at
                    .map(|f| duration_text((f - s.started_at).num_milliseconds()))
            }),
        });
    }
    rows
}

#[derive(Debug, Serialize)]
struct RehearsalRow {
    id: i64,
    sandbox: String,
    target: String,
    status: String,
    status_label: &'static str,
    started_at: String,
    duration: Option<String>,
    problems: Vec<String>,
    automatic: bool,
}

impl From<&RehearsalV> for RehearsalRow {
    fn from(r: &RehearsalV) -> Self {
        Self {
            id: r.id,
            sandbox: r.sandbox.clone(),
            target: r.target_release.clone(),
            status: r.status.clone(),
            status_label: match r.status.as_str() {
                "running" => "Running",
                "succeeded" => "Succeeded",
                "failed" => "Failed",
                _ => "Unknown",
            },
            started_at: r.started_at.format(DATE).to_string(),
            duration: r.duration_ms.map(duration_text),
            problems: r.problems.clone(),
            automatic: r.automatic,
        }
    }
}

#[derive(Debug, Serialize)]
struct EventRow {
    at: String,
    actor: String,
    event: String,
    label: String,
    details: String,
}

/// A timeline event's name as people read it: `stage_started` → `Stage started`.
fn event_label(event: &str) -> String {
    let mut label = event.replace(['_', '.'], " ");
    if let Some(first) = label.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    label
}

/// A detail value, short: times as `2031-03-10 22:00 UTC`, a window as its start.
fn detail_value(v: &Value) -> String {
    match v {
        Value::Null => "—".into(),
        Value::String(s) => match s.parse::<DateTime<Utc>>() {
            Ok(t) => t.format(DATE).to_string(),
            Err(_) => s.clone(),
        },
        Value::Object(m) if m.contains_key("start") => detail_value(&m["start"]),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{}: {}", k.replace('_', " "), detail_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(a) => a.iter().map(detail_value).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A timeline event's details on one line. A change with `before` and `after` shows only
/// what changed: `preferred: 2031-03-09 22:00 UTC → 2031-03-10 22:00 UTC`.
fn details_text(v: &Value) -> String {
    let Value::Object(m) = v else {
        return if v.is_null() {
            String::new()
        } else {
            detail_value(v)
        };
    };
    let mut parts = Vec::new();
    let diffed = if let (Some(Value::Object(before)), Some(Value::Object(after))) =
        (m.get("before"), m.get("after"))
    {
        for (k, new) in after {
            let old = before.get(k).unwrap_or(&Value::Null);
            if old != new {
                parts.push(format!(
                    "{}: {} → {}",
                    k.replace('_', " "),
                    detail_value(old),
                    detail_value(new)
                ));
            }
        }
        if parts.is_empty() {
            parts.push("nothing changed".into());
        }
        true
    } else {
        false
    };
    for (k, x) in m {
        if diffed && (k == "before" || k == "after") {
            continue;
        }
        parts.push(format!("{}: {}", k.replace('_', " "), detail_value(x)));
    }
    parts.join("; ")
}

/// One update as the page shows it.
#[derive(Debug, Serialize)]
struct UpdateCard {
    id: i64,
    instance: String,
    from: String,
    target: String,
    kind: String,
    mandatory: bool,
    status: String,
    status_label: String,
    needs_approval: bool,
    approved: bool,
    approval: String,
    may_change: bool,
    preferred: WindowCtx,
    alternate: WindowCtx,
    active_window: String,
    stage: Option<String>,
    error: Option<String>,
    stages: Vec<StageRow>,
    rehearsals: Vec<RehearsalRow>,
    timeline: Vec<EventRow>,
    created_by: String,
    created_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
}

impl UpdateCard {
    fn of(u: &UpdateV, zone: Option<&str>) -> Self {
        Self {
            id: u.id,
            instance: u.instance.clone(),
            from: u.from_release.clone(),
            target: u.target_release.clone(),
            kind: u.kind.clone(),
            mandatory: u.mandatory,
            status: u.status.clone(),
            status_label: u.status_label.clone(),
            needs_approval: u.needs_approval,
            approved: u.approved_by.is_some(),
            approval: approval_text(u),
            may_change: u
                .status
                .parse::<UpdateStatus>()
                .is_ok_and(UpdateStatus::may_change),
            preferred: WindowCtx::of(&u.preferred, zone),
            alternate: WindowCtx::of(&u.alternate, zone),
            active_window: u.active_window.clone(),
            stage: u.stage.clone(),
            error: u.error.as_deref().map(sentence),
            stages: stage_rows(u),
            rehearsals: u.rehearsals.iter().map(RehearsalRow::from).collect(),
            timeline: u
                .timeline
                .iter()
                .map(|e| {
                    // A stage event reads as the stage: "Stage: Database Upgrade".
                    let stage = (e.event == "stage")
                        .then(|| e.details.get("stage").and_then(Value::as_str))
                        .flatten();
                    let mut details = e.details.clone();
                    if stage.is_some()
                        && let Some(m) = details.as_object_mut()
                    {
                        m.remove("stage");
                    }
                    EventRow {
                        at: e.at.format(DATE).to_string(),
                        actor: e.actor.clone(),
                        event: e.event.clone(),
                        label: match stage {
                            Some(s) => format!("Stage: {s}"),
                            None => event_label(&e.event),
                        },
                        details: details_text(&details),
                    }
                })
                .collect(),
            created_by: u.created_by.clone(),
            created_at: u.created_at.format(DATE).to_string(),
            started_at: u.started_at.map(|t| t.format(DATE).to_string()),
            finished_at: u.finished_at.map(|t| t.format(DATE).to_string()),
        }
    }
}

/// The schedule and reschedule forms' values, kept when the page is shown again with an
/// error.
#[derive(Debug, Default, Serialize)]
struct Draft {
    target: String,
    preferred: String,
    alternate: String,
    time_zone: String,
}

impl Draft {
    fn from_form(form: &Posted) -> Self {
        let zone = form.field("time_zone").trim();
        Self {
            target: form.field("target").trim().to_owned(),
            preferred: form.field("preferred_start").trim().to_owned(),
            alternate: form.field("alternate_start").trim().to_owned(),
            time_zone: if zone.is_empty() { "UTC" } else { zone }.to_owned(),
        }
    }
}

/// Why this user is not offered Approve Update.
fn approve_refusal(session: &WebSession) -> String {
    format!(
        "Only System Administrators can approve updates. Your role, {}, can schedule and \
         reschedule an update but not approve it.",
        session.actor.role.label()
    )
}

fn window_hours(st: &AppState) -> i64 {
    st.services.updates.window.num_hours()
}

// ---------------------------------------------------------------------------------------
// the fleet
// ---------------------------------------------------------------------------------------

/// `GET /updates?page=N&q=NAME`: a page of the fleet's instances by name (their release,
/// support and update status), the whole fleet's counts, and the policy.
async fn fleet(
    State(st): State<SharedState>,
    session: WebSession,
    Query(query): Query<PageQuery>,
) -> Response {
    fleet_page(&st, &session, &query, StatusCode::OK, None, None).await
}

/// The policy form's values, kept when it is shown again with an error.
#[derive(Debug, Serialize)]
struct PolicyDraft {
    supported_majors: String,
    mandatory_when_behind: String,
    service_updates_automatic: bool,
    maintenance_window_start: String,
    mandatory_lead_days: String,
}

impl PolicyDraft {
    fn of(p: &PolicyV) -> Self {
        Self {
            supported_majors: p.supported_majors.to_string(),
            mandatory_when_behind: p.mandatory_when_behind.to_string(),
            service_updates_automatic: p.service_updates_automatic,
            maintenance_window_start: p.maintenance_window_start.clone(),
            mandatory_lead_days: p.mandatory_lead_days.to_string(),
        }
    }

    fn from_form(form: &Posted) -> Self {
        Self {
            supported_majors: form.field("supported_majors").trim().to_owned(),
            mandatory_when_behind: form.field("mandatory_when_behind").trim().to_owned(),
            service_updates_automatic: form.field("service_updates_automatic") == "true",
            maintenance_window_start: form.field("maintenance_window_start").trim().to_owned(),
            mandatory_lead_days: form.field("mandatory_lead_days").trim().to_owned(),
        }
    }

    /// The policy this draft says, or why it says none.
    fn parse(&self) -> Result<UpdatePolicyDoc, ServiceError> {
        let number = |what: &str, raw: &str| {
            raw.parse::<u32>().map_err(|_| {
                ServiceError::invalid(
                    "invalid_policy",
                    format!("{what} must be a whole number (got {raw:?})"),
                )
            })
        };
        Ok(UpdatePolicyDoc {
            supported_majors: number("supported major releases", &self.supported_majors)?,
            mandatory_when_behind: number(
                "releases behind for a mandatory update",
                &self.mandatory_when_behind,
            )?,
            service_updates_automatic: self.service_updates_automatic,
            maintenance_window_start: self.maintenance_window_start.clone(),
            mandatory_lead_days: number("mandatory lead days", &self.mandatory_lead_days)?,
        })
    }
}

async fn fleet_page(
    st: &SharedState,
    session: &WebSession,
    query: &PageQuery,
    status: StatusCode,
    error: Option<String>,
    draft: Option<PolicyDraft>,
) -> Response {
    let page = Page::new(session, "updates", "Updates");
    let offset = match query.offset() {
        Ok(o) => o,
        Err(e) => return page.service_error(st, &e),
    };
    let actor = session.actor.clone();
    let contains = query.contains();
    let loaded = st
        .run(move |s| {
            let fleet = s.update_fleet_page(&actor, contains.as_deref(), offset, PAGE_SIZE)?;
            let policy = load_policy(s, &actor).ok();
            Ok((fleet, policy))
        })
        .await;
    let (fleet, policy) = match loaded {
        Ok(v) => v,
        Err(e) => return page.service_error(st, &e),
    };
    let rows: Vec<FleetRow> = fleet.rows.iter().map(FleetRow::of).collect();
    let pager = Pager::new("/updates", query, fleet.matching, &[]);
    let draft = draft.or_else(|| policy.as_ref().map(PolicyDraft::of));
    page.render(
        st,
        status,
        "updates.html",
        context! {
            rows => rows,
            fleet_total => fleet.instances,
            available_count => fleet.update_available,
            pager => pager,
            policy => policy,
            policy_draft => draft,
            window_hours => window_hours(st),
            can_schedule => authorize(session.actor.role, Action::ScheduleUpdate).is_ok(),
            can_manage_policy => authorize(session.actor.role, Action::ManageUpdatePolicy).is_ok(),
            error => error,
        },
    )
}

/// `POST /updates/policy` (supported_majors, mandatory_when_behind,
/// service_updates_automatic, maintenance_window_start, mandatory_lead_days)
async fn set_policy(State(st): State<SharedState>, form: Posted) -> Response {
    let draft = PolicyDraft::from_form(&form);
    let actor = form.session.actor.clone();
    let doc = draft.parse();
    let result = match doc {
        Ok(doc) => st.run(move |s| s.set_update_policy(&actor, doc)).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => redirect_with_notice(&st, "/updates", "Changed the update policy."),
        Err(e) => {
            fleet_page(
                &st,
                &form.session,
                &PageQuery::default(),
                status_of(e.kind),
                Some(sentence(&e.message)),
                Some(draft),
            )
            .await
        }
    }
}

// ---------------------------------------------------------------------------------------
// one instance
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
struct ZoneQuery {
    #[serde(default)]
    tz: String,
    #[serde(default)]
    target: String,
}

/// `GET /updates/{name}?tz=ZONE`: the instance's updates (times also in ZONE).
async fn instance_page(
    State(st): State<SharedState>,
    session: WebSession,
    Path(name): Path<String>,
    Query(q): Query<ZoneQuery>,
) -> Response {
    let zone = Some(q.tz.trim()).filter(|z| !z.is_empty());
    show_instance(&st, &session, &name, zone, StatusCode::OK, None, None).await
}

async fn show_instance(
    st: &SharedState,
    session: &WebSession,
    name: &str,
    zone: Option<&str>,
    status: StatusCode,
    error: Option<String>,
    draft: Option<Draft>,
) -> Response {
    let page = Page::new(session, "updates", name);
    let actor = session.actor.clone();
    let n = name.to_owned();
    let o = match st.run(move |s| load_overview(s, &actor, &n)).await {
        Ok(o) => o,
        Err(e) => return page.service_error(st, &e),
    };
    let zone = zone.filter(|z| known_zone(z));
    let ctx = OverviewCtx::of(&o);
    let draft = draft.unwrap_or_else(|| {
        let tz = zone.unwrap_or("UTC");
        // Tomorrow at 22:00 UTC, and a week later, as a start.
        let now = st.services.now();
        let preferred = (now + Duration::days(1))
            .date_naive()
            .and_hms_opt(22, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(now);
        Draft {
            target: ctx.default_target(),
            preferred: local_input(preferred, tz),
            alternate: local_input(preferred + Duration::days(7), tz),
            time_zone: tz.to_owned(),
        }
    });
    let current = o.current.as_ref().map(|u| UpdateCard::of(u, zone));
    let history: Vec<UpdateCard> = o.history.iter().map(|u| UpdateCard::of(u, zone)).collect();
    page.render(
        st,
        status,
        "updates_instance.html",
        context! {
            o => ctx,
            current => current,
            history => history,
            rehearsals => o.rehearsals.iter().map(RehearsalRow::from).collect::<Vec<_>>(),
            draft => draft,
            zones => zones(),
            zone => zone,
            window_hours => window_hours(st),
            can_schedule => authorize(session.actor.role, Action::ScheduleUpdate).is_ok(),
            can_approve => authorize(session.actor.role, Action::ApproveUpdate).is_ok(),
            approve_refusal => approve_refusal(session),
            error => error,
        },
    )
}

/// Answers a failed form on the instance page: the page again, with the service's message
/// in the error banner (nothing changed).
async fn refused(
    st: &SharedState,
    session: &WebSession,
    name: &str,
    e: ServiceError,
    draft: Option<Draft>,
) -> Response {
    let zone = draft.as_ref().map(|d| d.time_zone.clone());
    show_instance(
        st,
        session,
        name,
        zone.as_deref(),
        status_of(e.kind),
        Some(sentence_naming(&e.message, &[name])),
        draft,
    )
    .await
}

/// `POST /updates/{name}/schedule` (target, preferred_start, alternate_start, time_zone)
async fn schedule(
    State(st): State<SharedState>,
    Path(name): Path<String>,
    form: Posted,
) -> Response {
    let draft = Draft::from_form(&form);
    let actor = form.session.actor.clone();
    let (n, req) = (
        name.clone(),
        ScheduleRequest {
            target: draft.target.clone(),
            preferred_start: draft.preferred.clone(),
            alternate_start: draft.alternate.clone(),
            time_zone: Some(draft.time_zone.clone()),
        },
    );
    match st.run(move |s| do_schedule(s, &actor, &n, req)).await {
        Ok(u) => redirect_with_notice(
            &st,
            &page_url(&name, Some(&draft.time_zone)),
            &format!(
                "Scheduled the update of {name} to {}: {}.",
                u.target_release, u.status_label
            ),
        ),
        Err(e) => refused(&st, &form.session, &name, e, Some(draft)).await,
    }
}

/// `POST /updates/{name}/approve`
async fn approve(st: State<SharedState>, name: Path<String>, form: Posted) -> Response {
    change_update(st, name, form, Services::approve_update, |name, u| {
        format!(
            "Approved the update of {name} to {}: {}.",
            u.target_release, u.status_label
        )
    })
    .await
}

/// A form that changes the instance's update: runs `change` for the form's user, then goes
/// back to the instance page with `notice`, or shows the page again with the service's refusal
/// (nothing changed).
async fn change_update(
    State(st): State<SharedState>,
    Path(name): Path<String>,
    form: Posted,
    change: fn(&Services, &Actor, &str) -> Result<UpdateV, ServiceError>,
    notice: fn(&str, &UpdateV) -> String,
) -> Response {
    let actor = form.session.actor.clone();
    let n = name.clone();
    match st.run(move |s| change(s, &actor, &n)).await {
        Ok(u) => redirect_with_notice(&st, &page_url(&name, None), &notice(&name, &u)),
        Err(e) => refused(&st, &form.session, &name, e, None).await,
    }
}

/// `POST /updates/{name}/withdraw`
async fn withdraw(st: State<SharedState>, name: Path<String>, form: Posted) -> Response {
    change_update(
        st,
        name,
        form,
        Services::withdraw_update_approval,
        |name, u| {
            format!(
                "Withdrew the approval of the update of {name} to {}.",
                u.target_release
            )
        },
    )
    .await
}

/// `POST /updates/{name}/rehearse` (target)
async fn rehearse(
    State(st): State<SharedState>,
    Path(name): Path<String>,
    form: Posted,
) -> Response {
    let actor = form.session.actor.clone();
    let n = name.clone();
    let target = Some(form.field("target").trim().to_owned()).filter(|t| !t.is_empty());
    match st.run(move |s| do_rehearse(s, &actor, &n, target)).await {
        Ok(r) => redirect_with_notice(
            &st,
            &page_url(&name, None),
            &format!(
                "Rehearsing the update of {name} to {} in the sandbox {}; its result appears below.",
                r.target_release, r.sandbox
            ),
        ),
        Err(e) => refused(&st, &form.session, &name, e, None).await,
    }
}

// ---------------------------------------------------------------------------------------
// reschedule
// ---------------------------------------------------------------------------------------

/// `GET /updates/{name}/reschedule?tz=ZONE`: the new target and windows.
async fn reschedule_form(
    State(st): State<SharedState>,
    session: WebSession,
    Path(name): Path<String>,
    Query(q): Query<ZoneQuery>,
) -> Response {
    let zone = Some(q.tz.trim())
        .filter(|z| known_zone(z))
        .unwrap_or("UTC")
        .to_owned();
    reschedule_page(&st, &session, &name, StatusCode::OK, None, None, &zone).await
}

async fn reschedule_page(
    st: &SharedState,
    session: &WebSession,
    name: &str,
    status: StatusCode,
    error: Option<String>,
    draft: Option<Draft>,
    zone: &str,
) -> Response {
    let page = Page::new(session, "updates", "Reschedule update");
    if let Err(denied) = authorize(session.actor.role, Action::ScheduleUpdate) {
        return page.service_error(st, &ServiceError::from(denied));
    }
    let actor = session.actor.clone();
    let n = name.to_owned();
    let o = match st.run(move |s| load_overview(s, &actor, &n)).await {
        Ok(o) => o,
        Err(e) => return page.service_error(st, &e),
    };
    let Some(u) = o.current.as_ref() else {
        return page.error(
            st,
            StatusCode::CONFLICT,
            "Nothing to reschedule",
            &format!("{name} has no scheduled update. Schedule one on its Updates page."),
        );
    };
    let card = UpdateCard::of(u, None);
    if !card.may_change {
        // The service's refusal when there was one, else why not.
        let message = error.unwrap_or_else(|| {
            format!(
                "The update of {name} has started ({}): it can no longer be rescheduled.",
                u.status_label
            )
        });
        return page.error(st, StatusCode::CONFLICT, "Not possible right now", &message);
    }
    let draft = draft.unwrap_or_else(|| Draft {
        target: u.target_release.clone(),
        preferred: local_input(u.preferred.start, zone),
        alternate: local_input(u.alternate.start, zone),
        time_zone: zone.to_owned(),
    });
    let ctx = OverviewCtx::of(&o);
    page.render(
        st,
        status,
        "updates_reschedule.html",
        context! {
            u => card,
            available => ctx.available,
            draft => draft,
            zones => zones(),
            window_hours => window_hours(st),
            error => error,
        },
    )
}

/// `POST /updates/{name}/reschedule` (target, preferred_start, alternate_start, time_zone)
async fn reschedule(
    State(st): State<SharedState>,
    Path(name): Path<String>,
    form: Posted,
) -> Response {
    let draft = Draft::from_form(&form);
    let actor = form.session.actor.clone();
    let n = name.clone();
    let req = RescheduleRequest {
        target: Some(draft.target.clone()).filter(|t| !t.is_empty()),
        preferred_start: Some(draft.preferred.clone()).filter(|t| !t.is_empty()),
        alternate_start: Some(draft.alternate.clone()).filter(|t| !t.is_empty()),
        time_zone: Some(draft.time_zone.clone()),
    };
    match st.run(move |s| do_reschedule(s, &actor, &n, req)).await {
        Ok(u) => redirect_with_notice(
            &st,
            &page_url(&name, Some(&draft.time_zone)),
            &format!(
                "Rescheduled the update of {name} to {}: preferred window from {}. {}.",
                u.target_release,
                u.preferred.start.format(DATE),
                u.status_label
            ),
        ),
        Err(e) => {
            let zone = draft.time_zone.clone();
            reschedule_page(
                &st,
                &form.session,
                &name,
                status_of(e.kind),
                Some(sentence_naming(&e.message, &[&name])),
                Some(draft),
                &zone,
            )
            .await
        }
    }
}

// ---------------------------------------------------------------------------------------
// cancel and update now, behind confirmation pages
// ---------------------------------------------------------------------------------------

/// `GET /updates/{name}/cancel`: what cancelling does, and the Confirm button.
async fn confirm_cancel(
    State(st): State<SharedState>,
    session: WebSession,
    Path(name): Path<String>,
) -> Response {
    let page = Page::new(&session, "updates", "Cancel update");
    if let Err(denied) = authorize(session.actor.role, Action::ScheduleUpdate) {
        return page.service_error(&st, &ServiceError::from(denied));
    }
    let actor = session.actor.clone();
    let n = name.clone();
    let o = match st.run(move |s| load_overview(s, &actor, &n)).await {
        Ok(o) => o,
        Err(e) => return page.service_error(&st, &e),
    };
    let Some(u) = o.current.as_ref() else {
        return page.error(
            &st,
            StatusCode::CONFLICT,
            "Nothing to cancel",
            &format!("{name} has no scheduled update."),
        );
    };
    if u.mandatory {
        return page.error(
            &st,
            StatusCode::CONFLICT,
            "Not possible",
            "A mandatory update cannot be cancelled; reschedule it instead.",
        );
    }
    page.render(
        &st,
        StatusCode::OK,
        "updates_confirm.html",
        context! {
            heading => "Cancel update",
            instance => name,
            question => format!(
                "Cancel the update of {name} from {} to {} ({})?",
                u.from_release, u.target_release, u.status_label
            ),
            consequences => [
                format!("{name} stays on release {}.", u.from_release),
                "Its windows and approval are dropped; you can schedule a new update any time.".to_owned(),
                "The cancellation is kept in the update's history and the audit log.".to_owned(),
            ],
            action => format!("/updates/{name}/cancel"),
            fields => Vec::<(String, String)>::new(),
            confirm_label => "Cancel update",
            danger => true,
        },
    )
}

/// `POST /updates/{name}/cancel`
async fn cancel(st: State<SharedState>, name: Path<String>, form: Posted) -> Response {
    change_update(st, name, form, Services::cancel_update, |name, u| {
        format!(
            "Cancelled the update of {name} to {}; it stays on release {}.",
            u.target_release, u.from_release
        )
    })
    .await
}

/// `GET /updates/{name}/now?target=V`: the explicit confirmation an update now needs (a
/// production instance is unavailable from the backup until the swap).
async fn confirm_now(
    State(st): State<SharedState>,
    session: WebSession,
    Path(name): Path<String>,
    Query(q): Query<ZoneQuery>,
) -> Response {
    let page = Page::new(&session, "updates", "Update now");
    if let Err(denied) = authorize(session.actor.role, Action::ScheduleUpdate) {
        return page.service_error(&st, &ServiceError::from(denied));
    }
    let actor = session.actor.clone();
    let n = name.clone();
    let o = match st.run(move |s| load_overview(s, &actor, &n)).await {
        Ok(o) => o,
        Err(e) => return page.service_error(&st, &e),
    };
    let ctx = OverviewCtx::of(&o);
    let wanted = q.target.trim();
    let target = if !wanted.is_empty() {
        wanted.to_owned()
    } else if let Some(u) = &o.current {
        u.target_release.clone()
    } else {
        ctx.default_target()
    };
    if target.is_empty() {
        return page.error(
            &st,
            StatusCode::CONFLICT,
            "Nothing to update to",
            &format!("{name} is on the latest release."),
        );
    }
    let production = o.instance_type == "production";
    page.render(
        &st,
        StatusCode::OK,
        "updates_confirm.html",
        context! {
            heading => format!("Update {name} now"),
            instance => name,
            question => format!(
                "Update the {} instance {name} from {} to {target} now?",
                o.instance_type, o.release
            ),
            consequences => [
                format!(
                    "{name} is unavailable from the pre-update backup until the upgraded copy is swapped in{}.",
                    if production { ", even if people are working in it" } else { "" }
                ),
                "The update does not wait for a window; a scheduled update of this instance runs now instead.".to_owned(),
                format!("Any failure leaves {name} exactly as it was, on release {}.", o.release),
            ],
            action => format!("/updates/{name}/now"),
            fields => [("target".to_owned(), target), ("confirm".to_owned(), "true".to_owned())],
            confirm_label => "Update now",
            danger => production,
        },
    )
}

/// `POST /updates/{name}/now` (target, confirm)
async fn update_now(
    State(st): State<SharedState>,
    Path(name): Path<String>,
    form: Posted,
) -> Response {
    let actor = form.session.actor.clone();
    let n = name.clone();
    let target = Some(form.field("target").trim().to_owned()).filter(|t| !t.is_empty());
    let confirm = form.field("confirm") == "true";
    match st
        .run(move |s| do_now(s, &actor, &n, target, confirm))
        .await
    {
        Ok(u) => redirect_with_notice(
            &st,
            &page_url(&name, None),
            &format!(
                "Updating {name} from {} to {} now: {}.",
                u.from_release, u.target_release, u.status_label
            ),
        ),
        Err(e) => refused(&st, &form.session, &name, e, None).await,
    }
}

// ---------------------------------------------------------------------------------------
// the updates service
// ---------------------------------------------------------------------------------------

fn load_overview(s: &Services, actor: &Actor, name: &str) -> Result<OverviewV, ServiceError> {
    s.update_overview(actor, name)
}

fn load_policy(s: &Services, actor: &Actor) -> Result<PolicyV, ServiceError> {
    decode(s.update_policy(actor)?)
}

fn do_schedule(
    s: &Services,
    actor: &Actor,
    name: &str,
    req: ScheduleRequest,
) -> Result<UpdateV, ServiceError> {
    s.schedule_update(actor, name, &req)
}

fn do_reschedule(
    s: &Services,
    actor: &Actor,
    name: &str,
    req: RescheduleRequest,
) -> Result<UpdateV, ServiceError> {
    s.reschedule_update(actor, name, &req)
}

fn do_now(
    s: &Services,
    actor: &Actor,
    name: &str,
    target: Option<String>,
    confirm: bool,
) -> Result<UpdateV, ServiceError> {
    s.update_now(actor, name, &UpdateNowRequest { target, confirm })
}

fn do_rehearse(
    s: &Services,
    actor: &Actor,
    name: &str,
    target: Option<String>,
) -> Result<RehearsalV, ServiceError> {
    s.rehearse_update(actor, name, &RehearseRequest { target })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::web::render::render_bare;

    /// An update as the API sends it: approved, failed once in its preferred window and
    /// back in the queue for the alternate one, with a rehearsal and a reschedule.
    fn update_json(status: &str, label: &str) -> Value {
        json!({
            "id": 7, "instance": "crm-prod", "from_release": "8.2", "target_release": "9.0",
            "kind": "major", "mandatory": false, "automatic": false, "status": status, "status_label": label,
            "needs_approval": true, "approved_by": "admin", "approved_at": "2031-03-01T10:00:00Z",
            "preferred": {"start": "2031-03-10T22:00:00Z", "end": "2031-03-11T10:00:00Z"},
            "alternate": {"start": "2031-03-17T22:00:00Z", "end": "2031-03-18T10:00:00Z"},
            "active_window": "alternate", "stage": null,
            "stages": [
                {"stage": "Backup", "started_at": "2031-03-10T22:00:00Z", "finished_at": "2031-03-10T22:01:30Z"},
                {"stage": "Restore", "started_at": "2031-03-10T22:01:30Z", "finished_at": "2031-03-10T22:02:00Z"},
                {"stage": "Database Upgrade", "started_at": "2031-03-10T22:02:00Z", "finished_at": null}
            ],
            "error": "migration 9.0 failed: no such column <b>x</b>",
            "backup_id": 3, "job_id": 4,
            "rehearsals": [{"id": 2, "update_id": 7, "instance": "crm-prod", "sandbox": "crm-prod-rehearsal",
                "target_release": "9.0", "status": "succeeded", "started_at": "2031-03-03T22:00:00Z",
                "finished_at": "2031-03-03T22:00:04Z", "duration_ms": 4200, "problems": ["slow <index>"], "automatic": true, "job_id": 5}],
            "timeline": [
                {"at": "2031-02-28T09:00:00Z", "actor": "dora", "event": "scheduled", "details": {"target": "9.0"}},
                {"at": "2031-03-01T09:00:00Z", "actor": "dora", "event": "rescheduled",
                 "details": {"before": {"target": "9.0", "preferred": {"start": "2031-03-09T22:00:00Z"}},
                             "after": {"target": "9.0", "preferred": {"start": "2031-03-10T22:00:00Z"}}}}
            ],
            "created_by": "dora", "created_at": "2031-02-28T09:00:00Z", "started_at": "2031-03-10T22:00:00Z",
            "finished_at": null
        })
    }

    fn overview(current: Option<Value>) -> OverviewV {
        serde_json::from_value(json!({
            "instance": "crm-prod", "instance_type": "production", "release": "8.2",
            "support": {"status": "behind", "label": "Supported until 2031-12-31", "end_of_support": "2031-12-31"},
            "update_available": true,
            "available": [
                {"version": "9.0", "kind": "major", "released": "2030-10-17", "end_of_support": null, "latest": false},
                {"version": "9.1", "kind": "service", "released": "2031-01-23", "end_of_support": null, "latest": true}
            ],
            "mandatory": null, "current": current, "history": [update_json("cancelled", "Cancelled")],
            "rehearsals": []
        }))
        .expect("the contract's overview decodes")
    }

    fn render_instance(o: &OverviewV, can_approve: bool) -> String {
        let ctx = OverviewCtx::of(o);
        render_bare(
            "updates_instance.html",
            context! {
                title => "crm-prod", nav => "updates", user => context! { name => "dora", role => "Delegated Admin" },
                csrf => "tok", notice => (), latest_alert => (), error => (),
                o => ctx,
                current => o.current.as_ref().map(|u| UpdateCard::of(u, Some("Europe/Paris"))),
                history => o.history.iter().map(|u| UpdateCard::of(u, None)).collect::<Vec<_>>(),
                draft => Draft { target: "9.1".into(), preferred: "2031-03-10T22:00".into(),
                    alternate: "2031-03-17T22:00".into(), time_zone: "UTC".into() },
                zones => zones(), zone => "Europe/Paris", window_hours => 12,
                can_schedule => true, can_approve => can_approve,
                approve_refusal => "Only System Administrators can approve updates.",
            },
        )
    }

    #[test]
    fn stages_show_what_ran_and_what_failed() {
        let u: UpdateV =
            serde_json::from_value(update_json("queued", "Queued (Not Started)")).unwrap();
        let rows = stage_rows(&u);
        let names: Vec<&str> = rows.iter().map(|r| r.name).collect();
        assert_eq!(
            names,
            [
                "Queued (Not Started)",
                "Backup",
                "Restore",
                "Database Upgrade",
                "Swap"
            ]
        );
        let states: Vec<&str> = rows.iter().map(|r| r.state).collect();
        assert_eq!(states, ["done", "done", "done", "failed", "pending"]);
        assert_eq!(rows[1].duration.as_deref(), Some("90.0 s"));
        let mut running: UpdateV =
            serde_json::from_value(update_json("in_progress", "Update in progress")).unwrap();
        running.error = None;
        assert_eq!(stage_rows(&running)[3].state, "running");
        let mut fresh: UpdateV =
            serde_json::from_value(update_json("scheduled", "Scheduled — awaiting approval"))
                .unwrap();
        fresh.stages.clear();
        fresh.error = None;
        let rows = stage_rows(&fresh);
        assert_eq!(
            (rows[0].state, rows[0].state_label),
            ("running", "Awaiting approval")
        );
        assert!(rows[1..].iter().all(|r| r.state == "pending"));
    }

    #[test]
    fn times_read_in_the_chosen_zone() {
        let t = DateTime::parse_from_rfc3339("2031-03-10T22:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            time_in_zone(t, "Europe/Paris").as_deref(),
            Some("2031-03-10 23:00 CET")
        );
        assert_eq!(time_in_zone(t, "Mars/Olympus"), None);
        assert_eq!(local_input(t, "America/New_York"), "2031-03-10T18:00");
        assert_eq!(local_input(t, "nonsense"), "2031-03-10T22:00");
        let z = zones();
        assert_eq!(z[0], "UTC");
        assert!(z.contains(&"Europe/Paris") && z.len() > 300);
        assert_eq!(
            page_url("a", Some("Europe/Paris")),
            "/updates/a?tz=Europe%2FParis"
        );
        assert_eq!(page_url("a", Some("UTC")), "/updates/a");
    }

    #[test]
    fn timeline_details_read_as_before_and_after() {
        let changed = json!({
            "before": {"target": "9.0", "preferred": {"start": "2031-03-09T22:00:00Z"}, "approved_by": "ann"},
            "after": {"target": "9.1", "preferred": {"start": "2031-03-09T22:00:00Z"}, "approved_by": null},
            "update_now": true
        });
        assert_eq!(
            details_text(&changed),
            "approved by: ann → —; target: 9.0 → 9.1; update now: true"
        );
        assert_eq!(
            details_text(&json!({"error": "boom", "stage": "Swap"})),
            "error: boom; stage: Swap"
        );
        assert_eq!(
            details_text(&json!({"before": {"target": "9.0"}})),
            "before: {target: 9.0}"
        );
        assert_eq!(details_text(&Value::Null), "");
        assert_eq!(event_label("approval_withdrawn"), "Approval withdrawn");
    }

    #[test]
    fn the_instance_page_offers_actions_by_role_and_escapes() {
        let o = overview(Some(update_json(
            "scheduled",
            "Scheduled — awaiting approval",
        )));
        // Not yet approved.
        let mut o = o;
        if let Some(u) = o.current.as_mut() {
            u.approved_by = None;
            u.approved_at = None;
        }
        let admin = render_instance(&o, true);
        assert!(admin.contains("id=\"approve-update\""), "{admin}");
        assert!(!admin.contains("id=\"approve-refused\""));
        assert!(admin.contains("id=\"reschedule-link\"") && admin.contains("id=\"cancel-link\""));
        assert!(
            admin.contains("no such column &lt;b&gt;x&lt;&#x2f;b&gt;"),
            "{admin}"
        );
        assert!(!admin.contains("<b>x"));
        assert!(admin.contains("slow &lt;index&gt;"));
        assert!(
            admin.contains("2031-03-10 23:00 CET"),
            "windows also in the chosen zone"
        );
        assert!(
            admin.contains("preferred: 2031-03-09 22:00 UTC → 2031-03-10 22:00 UTC"),
            "a reschedule shows before and after"
        );
        assert!(
            admin.contains("id=\"update-now-link\""),
            "production goes through a confirmation"
        );
        assert!(
            !admin.contains("id=\"schedule-form\""),
            "one open update at a time"
        );
        let delegated = render_instance(&o, false);
        assert!(!delegated.contains("id=\"approve-update\""));
        assert!(delegated.contains("id=\"approve-refused\""));

        // Nothing scheduled: the schedule form with both targets and the zones.
        let idle = render_instance(&overview(None), true);
        assert!(idle.contains("id=\"schedule-form\""));
        assert!(
            idle.contains("<option value=\"9.1\" selected>9.1 (service, latest)</option>"),
            "{idle}"
        );
        assert!(idle.contains("<option value=\"Europe&#x2f;Paris\">"));
        assert!(idle.contains("<option value=\"UTC\" selected>UTC</option>"));
        assert!(idle.contains("type=\"datetime-local\""));
        assert!(idle.contains("id=\"history-7\""));
    }

    #[test]
    fn the_fleet_row_shows_the_open_update() {
        let o = overview(Some(update_json("queued", "Queued (Not Started)")));
        let r = FleetRow::of(&o);
        assert_eq!(r.target.as_deref(), Some("9.0"));
        assert_eq!(r.status_label, "Queued (Not Started)");
        assert_eq!(r.window.as_deref(), Some("2031-03-17 22:00 UTC"));
        assert_eq!(r.window_note, Some("alternate"));
        assert_eq!(
            r.approval.as_deref(),
            Some("Approved by admin on 2031-03-01 10:00 UTC")
        );
        assert_eq!(r.targets, "9.0, 9.1");
        assert_eq!(r.support_label, "Supported until 2031-12-31");
        assert_eq!(
            short_support("Release 8.2 is supported (n-1)", "8.2"),
            "Supported (n-1)"
        );
        assert_eq!(
            short_support(
                "Release 8.1 reached its end of support on 2019-01-31",
                "8.1"
            ),
            "Reached its end of support on 2019-01-31"
        );
        let idle = FleetRow::of(&overview(None));
        assert_eq!(idle.status_label, "Cancelled", "the last update's result");
        assert_eq!(idle.target, None);
        let html = render_bare(
            "updates.html",
            context! {
                title => "Updates", nav => "updates", user => context! { name => "a", role => "Viewer" },
                csrf => "tok", notice => (), latest_alert => (), error => (),
                rows => [r, idle], fleet_total => 120, available_count => 2, window_hours => 12, can_schedule => true,
                pager => Pager::new("/updates", &PageQuery { page: Some("2".into()), q: None }, 120, &[]),
                policy => PolicyV { supported_majors: 2, mandatory_when_behind: 2,
                    service_updates_automatic: true, maintenance_window_start: "22:00".into(),
                    mandatory_lead_days: 30, source: "built-in".into(), releases: vec![] },
                policy_draft => (), can_manage_policy => false,
            },
        );
        assert!(html.contains("id=\"fleet-crm-prod\""));
        assert!(html.contains("Queued (Not Started)"));
        assert!(html.contains("(n and n-1)"));
        assert!(
            html.contains("href=\"/updates/crm-prod#schedule\">Schedule your update"),
            "{html}"
        );
        assert!(
            html.contains("<span id=\"fleet-total\">120</span> instances"),
            "the whole fleet's count, not the page's: {html}"
        );
        assert!(html.contains("51–100 of 120"), "the pager: {html}");
        assert!(html.contains("href=\"&#x2f;updates?page=3\""), "{html}");
    }
}
