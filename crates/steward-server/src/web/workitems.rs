//! The Work items tab: database refreshes requested ahead of a downtime window. The list
//! with filters by status and instance; the "Request for database refresh" form (source,
//! sandbox target, point in time, window start in UTC or a chosen time zone, and three
//! acknowledgments); a page per work item with its history, downtime, safety backup and
//! post-refresh scripts, where it can be rescheduled, cancelled (through a confirmation
//! page) or accepted. The services decide; errors come back in the error banner with
//! nothing changed.
//!
//! The point in time: for a source continuous capture covers, the forms show its restorable
//! range (the Backup & Restore tab's `pitr_range.html`, with its spans and gaps) and offer
//! "Latest" or "A moment" (to the second, in a time zone, read with [`parse_local_time`]);
//! the refresh copies exactly the last commit at or before it, which the item's page names.
//! For a source capture has never covered they offer its backups.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, Duration, Timelike, Utc};
use minijinja::context;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use steward_core::clock::display_time;
use steward_core::policy::{Action, authorize};
use steward_core::update;
use steward_core::workitem::WorkItemStatus;

use super::render::{Page, query_value, sentence, sentence_naming};
use super::session::{Posted, WebSession, redirect_with_notice};
use super::{backups, pitr};
use crate::SharedState;
use crate::api::status_of;
use crate::error::ServiceError;
use crate::services::InstanceView;
use crate::services::workitems::{
    PointInTime, RefreshRequest, RestorePointsView, WorkItemView, parse_point,
};

const DATE: &str = "%Y-%m-%d %H:%M UTC";
/// For table cells under a "UTC" heading.
const SHORT_DATE: &str = "%Y-%m-%d %H:%M";
/// What a `datetime-local` input holds.
const LOCAL_INPUT: &str = "%Y-%m-%dT%H:%M";
/// What the moment's `datetime-local` input holds (whole seconds; it has `step="1"`).
const MOMENT_INPUT: &str = "%Y-%m-%dT%H:%M:%S";

/// The statuses the filter offers, with their labels.
fn statuses() -> Vec<(&'static str, &'static str)> {
    WorkItemStatus::ALL
        .iter()
        .map(|s| (s.as_str(), s.label()))
        .collect()
}

/// What the core rules allow next for an item in `status` (an unknown status allows nothing).
fn allows(status: &str, rule: impl Fn(WorkItemStatus) -> bool) -> bool {
    status.parse::<WorkItemStatus>().is_ok_and(rule)
}

/// The workitems tab's routes.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/workitems", get(list))
        .route("/workitems/refresh", get(refresh_form).post(refresh))
        .route("/workitems/{id}", get(detail))
        .route("/workitems/{id}/reschedule", post(reschedule))
        .route("/workitems/{id}/cancel", get(confirm_cancel).post(cancel))
        .route("/workitems/{id}/accept", post(accept))
}

/// Reads a moment typed by a person: RFC 3339 with an offset (`2027-01-10T22:00:00+01:00`),
/// or a local `YYYY-MM-DD HH:MM` (also with a `T`, optionally with seconds) read in `zone`
/// (an IANA name such as `Europe/Paris`; empty means UTC). The error is a sentence naming
/// what is wrong.
pub fn parse_local_time(text: &str, zone: &str) -> Result<DateTime<Utc>, String> {
    let zone = update::parse_time_zone(Some(zone)).map_err(|e| e.to_string())?;
    update::parse_start("the time", text, zone).map_err(|e| e.to_string())
}

/// `754` → `754 ms`, `83_000` → `1 min 23 s`, `7_500_000` → `2 h 5 min`.
fn duration(ms: i64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        return format!("{:.1} s", ms as f64 / 1000.0);
    }
    let secs = ms / 1000;
    if secs < 3600 {
        return format!("{} min {} s", secs / 60, secs % 60);
    }
    format!("{} h {} min", secs / 3600, secs % 3600 / 60)
}

fn status_label(status: &str) -> String {
    status
        .parse::<WorkItemStatus>()
        .map(|s| s.label().to_owned())
        .unwrap_or_else(|_| status.to_owned())
}

/// A value of a history entry as people read it: strings as they are, times shortened.
fn value_text(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&Utc).format(DATE).to_string())
            .unwrap_or_else(|_| s.clone()),
        other => other.to_string(),
    }
}

/// A history entry's details for people: what changed (`window start: A → B`, from its
/// `before` and `after`), then the other facts as `key: value`.
fn details_text(details: &Value) -> String {
    let Value::Object(map) = details else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let (Some(Value::Object(before)), Some(Value::Object(after))) =
        (map.get("before"), map.get("after"))
    {
        for (k, new) in after {
            let old = before.get(k).unwrap_or(&Value::Null);
            if k != "status" && old != new {
                parts.push(format!(
                    "{}: {} → {}",
                    k.replace('_', " "),
                    value_text(old),
                    value_text(new)
                ));
            }
        }
    }
    for (k, v) in map {
        if matches!(k.as_str(), "before" | "after") || v.is_null() {
            continue;
        }
        parts.push(format!("{}: {}", k.replace('_', " "), value_text(v)));
    }
    parts.join("; ")
}

#[derive(Serialize)]
struct ScriptRow {
    name: String,
    ok: bool,
    message: String,
}

#[derive(Serialize)]
struct HistoryRow {
    at: String,
    actor: String,
    status_label: String,
    details: String,
}

/// A work item as the templates show it.
#[derive(Serialize)]
struct ItemRow {
    id: i64,
    kind_label: &'static str,
    source: String,
    target: String,
    point_in_time: String,
    /// What was (or will be) copied, once resolved: a backup, or the last commit at or before
    /// the moment.
    copied: Option<String>,
    /// "Copied", or "Will copy" for a moment not copied yet.
    copied_label: &'static str,
    window_start: String,
    /// The dates without the zone, for the list's cells under a "UTC" heading.
    point_short: String,
    window_short: String,
    created_short: String,
    updated_short: String,
    status: String,
    status_label: String,
    requester: String,
    created_at: String,
    updated_at: String,
    started_at: Option<String>,
    finished_at: Option<String>,
    downtime: Option<String>,
    error: Option<String>,
    safety_backup_id: Option<i64>,
    job_id: Option<i64>,
    scripts: Vec<ScriptRow>,
    history: Vec<HistoryRow>,
    /// Reschedule and cancel are possible (not started yet).
    can_change: bool,
}

impl From<&WorkItemView> for ItemRow {
    fn from(w: &WorkItemView) -> Self {
        // A moment copied from continuous capture is exact to the second.
        let point_in_time = match (w.point_in_time, &w.moment) {
            (Some(t), Some(_)) => display_time(&t).to_string(),
            (Some(t), None) => t.format(DATE).to_string(),
            (None, _) => "Latest".into(),
        };
        let (copied, copied_label) = copied(w);
        Self {
            id: w.id,
            kind_label: if w.kind == "refresh" {
                "Database refresh"
            } else {
                "Work item"
            },
            source: w.source.clone(),
            target: w.target.clone(),
            point_in_time,
            copied,
            copied_label,
            window_start: w.window_start.format(DATE).to_string(),
            point_short: w
                .point_in_time
                .map_or_else(|| "Latest".into(), |t| t.format(SHORT_DATE).to_string()),
            window_short: w.window_start.format(SHORT_DATE).to_string(),
            created_short: w.created_at.format(SHORT_DATE).to_string(),
            updated_short: w.updated_at.format(SHORT_DATE).to_string(),
            status: w.status.clone(),
            status_label: w.status_label.clone(),
            requester: w.requester.clone(),
            created_at: w.created_at.format(DATE).to_string(),
            updated_at: w.updated_at.format(DATE).to_string(),
            started_at: w.started_at.map(|t| t.format(DATE).to_string()),
            finished_at: w.finished_at.map(|t| t.format(DATE).to_string()),
            downtime: w.downtime_ms.map(duration),
            error: w.error.as_deref().map(sentence),
            safety_backup_id: w.safety_backup_id,
            job_id: w.job_id,
            scripts: w
                .scripts
                .iter()
                .map(|s| ScriptRow {
                    name: s.name.clone(),
                    ok: s.ok,
                    message: s.message.clone(),
                })
                .collect(),
            history: w
                .history
                .iter()
                .map(|h| HistoryRow {
                    at: h.at.format(DATE).to_string(),
                    actor: h.actor.clone(),
                    status_label: status_label(&h.status),
                    details: details_text(&h.details),
                })
                .collect(),
            can_change: allows(&w.status, WorkItemStatus::may_change),
        }
    }
}

/// What the item copied (or will copy), and the label for it: a backup, or, for a moment
/// copied from continuous capture, the last commit at or before it.
fn copied(w: &WorkItemView) -> (Option<String>, &'static str) {
    if let Some(rp) = &w.restore_point {
        let text = format!("{} (backup {})", rp.at.format(DATE), rp.backup_id);
        return (Some(text), "Copied");
    }
    let Some(m) = &w.moment else {
        return (None, "Copied");
    };
    let moment = display_time(&m.at);
    match m.commit_at {
        Some(c) => (
            Some(format!(
                "{}: the last commit at or before {moment} (continuous capture, chain {})",
                display_time(&c),
                m.chain_id
            )),
            "Copied",
        ),
        None => (
            Some(format!(
                "The last commit at or before {moment} (continuous capture, chain {}), when the window starts",
                m.chain_id
            )),
            "Will copy",
        ),
    }
}

/// An instance as the selects show it.
#[derive(Serialize)]
struct InstanceOption {
    name: String,
    #[serde(rename = "type")]
    instance_type: String,
    release: String,
}

impl From<&InstanceView> for InstanceOption {
    fn from(i: &InstanceView) -> Self {
        Self {
            name: i.name.clone(),
            instance_type: i.instance_type.clone(),
            release: i.release.clone(),
        }
    }
}

/// A restore point as the point-in-time select offers it.
#[derive(Serialize)]
struct PointOption {
    /// RFC 3339, what the form sends back.
    value: String,
    text: String,
}

fn point_options(points: Option<&RestorePointsView>) -> Vec<PointOption> {
    let Some(points) = points else {
        return Vec::new();
    };
    points
        .points
        .iter()
        .map(|p| {
            let label = if p.label.trim().is_empty() {
                String::new()
            } else {
                format!(" “{}”", p.label.trim())
            };
            PointOption {
                value: p.at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                text: format!(
                    "{} — {} backup {}{label}",
                    p.at.format(DATE),
                    p.kind.replace('_', "-"),
                    p.backup_id
                ),
            }
        })
        .collect()
}

/// Every time zone the window can be entered in, UTC first.
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

/// The earliest window start allowed now, and a suggestion: that moment rounded up to the
/// next whole hour, as a `datetime-local` value in UTC.
fn earliest_window(st: &SharedState) -> (DateTime<Utc>, String) {
    let earliest = st.services.now() + st.services.workitems.lead_time;
    let whole = earliest
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .and_then(|t| t.with_minute(0))
        .unwrap_or(earliest)
        + Duration::hours(1);
    (earliest, whole.format(LOCAL_INPUT).to_string())
}

fn lead_hours(st: &SharedState) -> i64 {
    st.services.workitems.lead_time.num_hours()
}

// ---------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    instance: String,
}

/// `GET /workitems?status=S&instance=I`
async fn list(
    State(st): State<SharedState>,
    session: WebSession,
    Query(q): Query<ListQuery>,
) -> Response {
    let page = Page::new(&session, "workitems", "Work items");
    let actor = session.actor.clone();
    let status = q.status.trim().to_owned();
    let instance = q.instance.trim().to_owned();
    let (s2, i2) = (status.clone(), instance.clone());
    let loaded = st
        .run(move |s| {
            let choices = backups::picker(s, &actor)?.choices;
            let mut items = s.list_work_items(
                &actor,
                Some(s2.as_str()).filter(|v| !v.is_empty()),
                Some(i2.as_str()).filter(|v| !v.is_empty()),
            );
            // A typed name that matches nothing and names no instance: say so.
            if let Ok(found) = &items
                && found.is_empty()
                && !i2.is_empty()
                && let Err(e) = s.show_instance(&actor, &i2)
            {
                items = Err(e);
            }
            Ok((choices, items))
        })
        .await;
    let (choices, items) = match loaded {
        Ok(v) => v,
        Err(e) => return page.service_error(&st, &e),
    };
    let (items, code, error) = match items {
        Ok(items) => (items, StatusCode::OK, None),
        Err(e) => (
            Vec::new(),
            status_of(e.kind),
            Some(sentence_naming(&e.message, &[&instance])),
        ),
    };
    let rows: Vec<ItemRow> = items.iter().map(ItemRow::from).collect();
    let instances: Option<Vec<InstanceOption>> = choices
        .as_ref()
        .map(|c| c.iter().map(InstanceOption::from).collect());
    page.render(
        &st,
        code,
        "workitems.html",
        context! {
            items => rows,
            instances => instances,
            statuses => statuses(),
            status => status,
            instance => instance,
            lead_hours => lead_hours(&st),
            can_request => authorize(session.actor.role, Action::RequestRefresh).is_ok(),
            error => error,
        },
    )
}

// ---------------------------------------------------------------------------------------
// request a refresh
// ---------------------------------------------------------------------------------------

/// The refresh form's values, kept when it is shown again with an error.
#[derive(Default, Serialize)]
struct Draft {
    source: String,
    target: String,
    /// A backup's moment (RFC 3339) or `latest`: the select offered for a source capture has
    /// never covered.
    at: String,
    /// For a captured source: `latest` or `moment`.
    at_kind: String,
    /// For a captured source: the moment as typed, `YYYY-MM-DDTHH:MM[:SS]` in `at_zone`.
    at_moment: String,
    at_zone: String,
    window_start: String,
    time_zone: String,
    ack_erase: bool,
    ack_unavailable: bool,
    ack_documents: bool,
}

#[derive(Debug, Default, Deserialize)]
pub struct SourceQuery {
    #[serde(default)]
    source: String,
}

/// `GET /workitems/refresh?source=S`: the form (the point-in-time choices are the chosen
/// source's restore points).
async fn refresh_form(
    State(st): State<SharedState>,
    session: WebSession,
    Query(q): Query<SourceQuery>,
) -> Response {
    let (_, suggested) = earliest_window(&st);
    let draft = Draft {
        source: q.source.trim().to_owned(),
        at: "latest".into(),
        at_kind: "latest".into(),
        at_zone: "UTC".into(),
        window_start: suggested,
        time_zone: "UTC".into(),
        ..Draft::default()
    };
    refresh_page(&st, &session, draft, StatusCode::OK, None).await
}

async fn refresh_page(
    st: &SharedState,
    session: &WebSession,
    mut draft: Draft,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let page = Page::new(session, "workitems", "Request database refresh");
    if let Err(denied) = authorize(session.actor.role, Action::RequestRefresh) {
        return page.service_error(st, &ServiceError::from(denied));
    }
    let actor = session.actor.clone();
    let source = draft.source.clone();
    let loaded = st
        .run(move |s| {
            let instances = backups::picker(s, &actor)?.choices;
            let points = if source.is_empty() {
                Ok(None)
            } else {
                s.restore_points(&actor, &source).map(Some)
            };
            let range = match &points {
                Ok(Some(p)) => captured_range(s, &actor, p),
                _ => None,
            };
            Ok((instances, points, range))
        })
        .await;
    let (instances, points, range) = match loaded {
        Ok(v) => v,
        Err(e) => return page.service_error(st, &e),
    };
    // The source as typed, for a name field (kept when it is unknown).
    let typed_source = draft.source.clone();
    let (points, status, error) = match points {
        Ok(p) => (p, status, error),
        Err(e) => {
            // An unknown source: choose again, with the reason.
            let message = sentence_naming(&e.message, &[&draft.source]);
            draft.source.clear();
            (None, status_of(e.kind), Some(message))
        }
    };
    propose_moment(&mut draft, points.as_ref());
    let range = pitr::section(range, session.actor.role, Some(&[]), None);
    // With too many instances for a select, source and target are typed (the service checks
    // them): `instances` is then `None`.
    let (sandboxes, production): (Vec<InstanceOption>, Vec<InstanceOption>) = instances
        .iter()
        .flatten()
        .filter(|i| i.name != draft.source)
        .map(InstanceOption::from)
        .partition(|i| i.instance_type == "sandbox");
    let all: Option<Vec<InstanceOption>> = instances
        .as_ref()
        .map(|c| c.iter().map(InstanceOption::from).collect());
    let (earliest, _) = earliest_window(st);
    page.render(
        st,
        status,
        "workitems_refresh.html",
        context! {
            instances => all,
            typed_source => typed_source,
            sandboxes => sandboxes,
            production => production,
            points => point_options(points.as_ref()),
            earliest => points.as_ref().and_then(|p| p.earliest).map(|t| t.format(DATE).to_string()),
            pitr => range,
            zones => zones(),
            lead_hours => lead_hours(st),
            earliest_start => earliest.format(DATE).to_string(),
            draft => draft,
            error => error,
        },
    )
}

/// When capture covers the source (`points.range`), its range as the Backup & Restore tab
/// loads it, for `pitr_range.html`; `None` for a source capture has never covered.
fn captured_range(
    s: &crate::services::Services,
    actor: &crate::services::Actor,
    points: &RestorePointsView,
) -> Option<pitr::Loaded> {
    points
        .range
        .as_ref()
        .and_then(|r| pitr::load(s, actor, &r.instance))
}

/// Proposes the latest captured moment (in UTC) when none was typed.
fn propose_moment(draft: &mut Draft, points: Option<&RestorePointsView>) {
    if !draft.at_moment.is_empty() {
        return;
    }
    if let Some(latest) = points.and_then(|p| p.range.as_ref()).and_then(|r| r.latest) {
        draft.at_moment = latest.format(MOMENT_INPUT).to_string();
        draft.at_zone = "UTC".into();
    }
}

/// The point in time a form asks for: for a captured source, "Latest" or a moment typed to
/// the second in a time zone (`at_kind`, `at_moment`, `at_zone`); otherwise the backup select
/// (`at`). The error is for the banner.
fn point_of(form: &Posted) -> Result<PointInTime, String> {
    match form.field("at_kind").trim() {
        "" => parse_point(form.field("at")).map_err(|e| sentence(&e.message)),
        "latest" => Ok(PointInTime::Latest),
        "moment" => {
            let typed = form.field("at_moment").trim();
            if typed.is_empty() {
                return Err("Enter the moment to copy, or choose Latest.".into());
            }
            parse_local_time(typed, form.field("at_zone").trim())
                .map(PointInTime::At)
                .map_err(|e| sentence(&format!("the moment: {e}")))
        }
        other => Err(sentence(&format!(
            "the point in time \"{other}\" is neither latest nor moment"
        ))),
    }
}

/// Reads the window start and point in time of a form; the error is for the banner.
fn window_and_point(form: &Posted) -> Result<(DateTime<Utc>, PointInTime), String> {
    let window = form.field("window_start").trim();
    if window.is_empty() {
        return Err("Enter when the downtime window starts.".into());
    }
    let window = parse_local_time(window, form.field("time_zone"))
        .map_err(|e| sentence(&format!("window start: {e}")))?;
    Ok((window, point_of(form)?))
}

/// The point-in-time fields of a posted form, kept when it is shown again.
fn posted_point(form: &Posted) -> (String, String, String, String) {
    (
        form.field("at").trim().to_owned(),
        form.field("at_kind").trim().to_owned(),
        form.field("at_moment").trim().to_owned(),
        form.field("at_zone").trim().to_owned(),
    )
}

/// `POST /workitems/refresh` (source, target, at or at_kind + at_moment + at_zone,
/// window_start, time_zone, ack_erase, ack_unavailable, ack_documents)
async fn refresh(State(st): State<SharedState>, form: Posted) -> Response {
    let (at, at_kind, at_moment, at_zone) = posted_point(&form);
    let draft = Draft {
        source: form.field("source").trim().to_owned(),
        target: form.field("target").trim().to_owned(),
        at,
        at_kind,
        at_moment,
        at_zone,
        window_start: form.field("window_start").trim().to_owned(),
        time_zone: form.field("time_zone").trim().to_owned(),
        ack_erase: !form.field("ack_erase").is_empty(),
        ack_unavailable: !form.field("ack_unavailable").is_empty(),
        ack_documents: !form.field("ack_documents").is_empty(),
    };
    let (window_start, point) = match window_and_point(&form) {
        Ok(v) => v,
        Err(error) => {
            return refresh_page(
                &st,
                &form.session,
                draft,
                StatusCode::BAD_REQUEST,
                Some(error),
            )
            .await;
        }
    };
    let req = RefreshRequest {
        source: draft.source.clone(),
        target: draft.target.clone(),
        at: match point {
            PointInTime::Latest => None,
            PointInTime::At(t) => Some(t),
        },
        window_start,
        acknowledge: draft.ack_erase && draft.ack_unavailable && draft.ack_documents,
    };
    let actor = form.session.actor.clone();
    match st.run(move |s| s.request_refresh(&actor, &req)).await {
        Ok(w) => redirect_with_notice(
            &st,
            "/workitems",
            &format!(
                "Requested the refresh of {} from {} as work item #{}: {}.",
                w.target, w.source, w.id, w.status_label
            ),
        ),
        Err(e) => {
            let error = sentence_naming(&e.message, &[&draft.source, &draft.target]);
            refresh_page(&st, &form.session, draft, status_of(e.kind), Some(error)).await
        }
    }
}

// ---------------------------------------------------------------------------------------
// one work item: details, reschedule, accept, cancel
// ---------------------------------------------------------------------------------------

/// `/workitems/{id}`
fn item_url(id: i64) -> String {
    format!("/workitems/{id}")
}

/// `GET /workitems/{id}`
async fn detail(
    State(st): State<SharedState>,
    session: WebSession,
    Path(id): Path<i64>,
) -> Response {
    detail_page(&st, &session, id, StatusCode::OK, None, None).await
}

async fn detail_page(
    st: &SharedState,
    session: &WebSession,
    id: i64,
    status: StatusCode,
    error: Option<String>,
    draft: Option<Draft>,
) -> Response {
    let page = Page::new(session, "workitems", "Work item");
    let actor = session.actor.clone();
    let loaded = st
        .run(move |s| {
            let w = s.show_work_item(&actor, id)?;
            // The source may have gone; then only `latest` is offered.
            let points = s.restore_points(&actor, &w.source).ok();
            let range = points.as_ref().and_then(|p| captured_range(s, &actor, p));
            Ok((w, points, range))
        })
        .await;
    let (w, points, range) = match loaded {
        Ok(v) => v,
        Err(e) => return page.service_error(st, &e),
    };
    let mut draft = draft.unwrap_or_else(|| Draft {
        at: w
            .point_in_time
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            .unwrap_or_else(|| "latest".into()),
        at_kind: if w.point_in_time.is_some() {
            "moment".into()
        } else {
            "latest".into()
        },
        at_moment: w
            .point_in_time
            .map(|t| t.format(MOMENT_INPUT).to_string())
            .unwrap_or_default(),
        at_zone: "UTC".into(),
        window_start: w.window_start.format(LOCAL_INPUT).to_string(),
        time_zone: "UTC".into(),
        ..Draft::default()
    });
    propose_moment(&mut draft, points.as_ref());
    let range = pitr::section(range, session.actor.role, Some(&[]), None);
    let (earliest, _) = earliest_window(st);
    let role = session.actor.role;
    page.render(
        st,
        status,
        "workitems_detail.html",
        context! {
            item => ItemRow::from(&w),
            points => point_options(points.as_ref()),
            pitr => range,
            zones => zones(),
            draft => draft,
            lead_hours => lead_hours(st),
            earliest_start => earliest.format(DATE).to_string(),
            can_request => authorize(role, Action::RequestRefresh).is_ok(),
            can_accept_item => allows(&w.status, |s| s.can_become(WorkItemStatus::Accepted))
                && authorize(role, Action::AcceptWorkItem).is_ok(),
            error => error,
        },
    )
}

/// `POST /workitems/{id}/reschedule` (window_start, time_zone, at or at_kind + at_moment +
/// at_zone)
async fn reschedule(State(st): State<SharedState>, Path(id): Path<i64>, form: Posted) -> Response {
    let (at, at_kind, at_moment, at_zone) = posted_point(&form);
    let draft = Draft {
        at,
        at_kind,
        at_moment,
        at_zone,
        window_start: form.field("window_start").trim().to_owned(),
        time_zone: form.field("time_zone").trim().to_owned(),
        ..Draft::default()
    };
    let (window_start, point) = match window_and_point(&form) {
        Ok(v) => v,
        Err(error) => {
            return detail_page(
                &st,
                &form.session,
                id,
                StatusCode::BAD_REQUEST,
                Some(error),
                Some(draft),
            )
            .await;
        }
    };
    let actor = form.session.actor.clone();
    match st
        .run(move |s| s.reschedule_work_item(&actor, id, Some(window_start), Some(point)))
        .await
    {
        Ok(w) => redirect_with_notice(
            &st,
            &item_url(w.id),
            &format!(
                "Rescheduled work item #{}: the window starts {}; status {}.",
                w.id,
                w.window_start.format(DATE),
                w.status_label
            ),
        ),
        Err(e) => {
            detail_page(
                &st,
                &form.session,
                id,
                status_of(e.kind),
                Some(sentence(&e.message)),
                Some(draft),
            )
            .await
        }
    }
}

/// `POST /workitems/{id}/accept`
async fn accept(State(st): State<SharedState>, Path(id): Path<i64>, form: Posted) -> Response {
    let actor = form.session.actor.clone();
    match st.run(move |s| s.accept_work_item(&actor, id)).await {
        Ok(w) => redirect_with_notice(
            &st,
            &item_url(w.id),
            &format!(
                "Accepted work item #{}: it runs when its window starts, {}.",
                w.id,
                w.window_start.format(DATE)
            ),
        ),
        Err(e) => {
            detail_page(
                &st,
                &form.session,
                id,
                status_of(e.kind),
                Some(sentence(&e.message)),
                None,
            )
            .await
        }
    }
}

/// `GET /workitems/{id}/cancel`: the confirmation page.
async fn confirm_cancel(
    State(st): State<SharedState>,
    session: WebSession,
    Path(id): Path<i64>,
) -> Response {
    cancel_page(&st, &session, id, StatusCode::OK, None).await
}

async fn cancel_page(
    st: &SharedState,
    session: &WebSession,
    id: i64,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let page = Page::new(session, "workitems", "Cancel work item");
    if let Err(denied) = authorize(session.actor.role, Action::RequestRefresh) {
        return page.service_error(st, &ServiceError::from(denied));
    }
    let actor = session.actor.clone();
    let w = match st.run(move |s| s.show_work_item(&actor, id)).await {
        Ok(w) => w,
        Err(e) => return page.service_error(st, &e),
    };
    let item = ItemRow::from(&w);
    if !item.can_change {
        let message = error.unwrap_or_else(|| {
            format!(
                "Work item #{} can no longer be cancelled: it is {}.",
                w.id,
                w.status_label.to_lowercase()
            )
        });
        let status = if status == StatusCode::OK {
            StatusCode::CONFLICT
        } else {
            status
        };
        return page.error(st, status, "Not possible", &message);
    }
    page.render(
        st,
        status,
        "workitems_cancel.html",
        context! { item => item, error => error },
    )
}

/// `POST /workitems/{id}/cancel`
async fn cancel(State(st): State<SharedState>, Path(id): Path<i64>, form: Posted) -> Response {
    let actor = form.session.actor.clone();
    match st.run(move |s| s.cancel_work_item(&actor, id)).await {
        Ok(w) => redirect_with_notice(
            &st,
            &format!("/workitems?instance={}", query_value(&w.target)),
            &format!(
                "Cancelled work item #{}, the refresh of {} from {}; it will not run.",
                w.id, w.target, w.source
            ),
        ),
        Err(e) => {
            cancel_page(
                &st,
                &form.session,
                id,
                status_of(e.kind),
                Some(sentence(&e.message)),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::workitems::{MomentRef, RestorePointRef, ScriptRun, WorkItemEventView};
    use crate::web::render::render_bare;
    use chrono::TimeZone;

    fn item(status: &str) -> WorkItemView {
        let at = Utc.with_ymd_and_hms(2031, 3, 14, 0, 30, 0).unwrap();
        WorkItemView {
            id: 7,
            kind: "refresh".into(),
            source: "prod-a".into(),
            target: "sand-<b>".into(),
            point_in_time: Some(at),
            restore_point: Some(RestorePointRef { backup_id: 3, at }),
            moment: None,
            window_start: at + Duration::hours(30),
            status: status.into(),
            status_label: status_label(status),
            requester: "admin".into(),
            created_at: at,
            updated_at: at,
            started_at: None,
            finished_at: None,
            downtime_ms: Some(83_000),
            error: Some("the copy failed: <disk full>".into()),
            safety_backup_id: Some(4),
            scripts: vec![ScriptRun {
                name: "10-anonymise.sql".into(),
                ok: true,
                message: "applied: 3 rows changed".into(),
            }],
            history: vec![WorkItemEventView {
                at,
                actor: "admin".into(),
                status: "accepted".into(),
                details: serde_json::json!({
                    "before": {"status": "submitted", "window_start": "2031-03-15T06:00:00Z"},
                    "after": {"status": "accepted", "window_start": "2031-03-16T08:30:00Z"},
                    "job_id": null,
                    "note": "<i>x</i>",
                }),
            }],
            job_id: None,
        }
    }

    #[test]
    fn rows_describe_work_items_for_people() {
        let r = ItemRow::from(&item("accepted"));
        assert_eq!(r.kind_label, "Database refresh");
        assert_eq!(r.status_label, "Request accepted");
        assert_eq!(r.point_in_time, "2031-03-14 00:30 UTC");
        assert_eq!(r.window_short, "2031-03-15 06:30");
        assert_eq!(r.copied.as_deref(), Some("2031-03-14 00:30 UTC (backup 3)"));
        assert_eq!(r.downtime.as_deref(), Some("1 min 23 s"));
        assert!(r.can_change);
        assert_eq!(
            r.history[0].details,
            "window start: 2031-03-15 06:00 UTC → 2031-03-16 08:30 UTC; note: <i>x</i>"
        );
        for (status, changeable) in [
            ("submitted", true),
            ("in_progress", false),
            ("succeeded", false),
            ("failed", false),
            ("cancelled", false),
        ] {
            assert_eq!(
                ItemRow::from(&item(status)).can_change,
                changeable,
                "{status}"
            );
        }
        let mut latest = item("submitted");
        latest.point_in_time = None;
        assert_eq!(ItemRow::from(&latest).point_in_time, "Latest");
        assert_eq!(duration(754), "754 ms");
        assert_eq!(duration(1_500), "1.5 s");
        assert_eq!(duration(7_500_000), "2 h 5 min");
    }

    #[test]
    fn pages_escape_and_offer_only_allowed_actions() {
        let layout = |extra: minijinja::Value| {
            minijinja::context! {
                title => "Work items", nav => "workitems",
                user => minijinja::context! { name => "a", role => "Viewer" },
                csrf => "tok", notice => (), latest_alert => (), error => (),
                lead_hours => 24, earliest_start => "2031-03-15 00:30 UTC",
                ..extra
            }
        };
        let list = |can_request: bool| {
            render_bare(
                "workitems.html",
                layout(context! {
                    items => [ItemRow::from(&item("accepted"))],
                    instances => Vec::<InstanceOption>::new(),
                    statuses => statuses(), status => "", instance => "",
                    can_request => can_request,
                }),
            )
        };
        let html = list(true);
        assert!(html.contains("sand-&lt;b&gt;"), "{html}");
        assert!(!html.contains("sand-<b>"));
        assert!(html.contains("/workitems/7/cancel") && html.contains("/workitems/7#reschedule"));
        assert!(html.contains("id=\"request-refresh\""));
        let readonly = list(false);
        assert!(!readonly.contains("/workitems/7/cancel"));
        assert!(!readonly.contains("request-refresh"));
        assert!(readonly.contains("id=\"read-only\""));

        let detail = |status: &str, can_request: bool, can_accept: bool| {
            render_bare(
                "workitems_detail.html",
                layout(context! {
                    item => ItemRow::from(&item(status)),
                    points => Vec::<PointOption>::new(), zones => ["UTC"],
                    draft => Draft::default(),
                    can_request => can_request, can_accept_item => can_accept,
                }),
            )
        };
        let html = detail("submitted", true, true);
        assert!(
            html.contains("The copy failed: &lt;disk full&gt;."),
            "{html}"
        );
        assert!(html.contains("note: &lt;i&gt;x&lt;&#x2f;i&gt;"), "{html}");
        assert!(html.contains("id=\"accept-form\"") && html.contains("id=\"reschedule-form\""));
        assert!(
            html.contains("/backups?instance=sand-%3Cb%3E#backup-4"),
            "{html}"
        );
        assert!(html.contains("1 min 23 s"));
        let viewer = detail("submitted", false, false);
        assert!(!viewer.contains("accept-form") && !viewer.contains("reschedule-form"));
        assert!(!viewer.contains("cancel-link"));
        let done = detail("succeeded", true, false);
        assert!(!done.contains("reschedule-form") && !done.contains("cancel-link"));
    }

    #[test]
    fn the_refresh_form_asks_for_three_acknowledgments_and_blocks_production() {
        let html = render_bare(
            "workitems_refresh.html",
            minijinja::context! {
                title => "t", nav => "workitems", user => (), csrf => "tok", notice => (),
                latest_alert => (), error => (), lead_hours => 24,
                earliest_start => "2031-03-15 00:30 UTC", earliest => (),
                instances => Vec::<InstanceOption>::new(),
                sandboxes => [InstanceOption { name: "sand-b".into(), instance_type: "sandbox".into(), release: "9.1".into() }],
                production => [InstanceOption { name: "prod-z".into(), instance_type: "production".into(), release: "9.1".into() }],
                points => Vec::<PointOption>::new(), zones => ["UTC", "Europe/Paris"],
                draft => Draft { source: "prod-a".into(), ack_erase: true, ..Draft::default() },
            },
        );
        assert!(
            html.contains(
                "<option value=\"prod-z\" disabled>prod-z (production — not allowed)</option>"
            ),
            "{html}"
        );
        for name in ["ack_erase", "ack_unavailable", "ack_documents"] {
            assert!(html.contains(&format!("name=\"{name}\"")), "{name}");
        }
        assert!(
            html.contains("id=\"ack-erase\" value=\"yes\" checked"),
            "the draft is kept"
        );
        assert!(!html.contains("id=\"ack-documents\" value=\"yes\" checked"));
        assert!(html.contains("name=\"csrf\" value=\"tok\""));
    }

    #[test]
    fn a_moment_from_capture_is_named_as_the_last_commit_at_or_before_it() {
        let at = Utc.with_ymd_and_hms(2031, 3, 14, 0, 30, 7).unwrap();
        let mut w = item("accepted");
        w.restore_point = None;
        w.point_in_time = Some(at);
        w.moment = Some(MomentRef {
            chain_id: 5,
            at,
            commit_at: None,
        });
        let r = ItemRow::from(&w);
        assert_eq!(r.point_in_time, "2031-03-14 00:30:07 UTC", "to the second");
        assert_eq!(r.copied_label, "Will copy");
        assert_eq!(
            r.copied.as_deref(),
            Some(
                "The last commit at or before 2031-03-14 00:30:07 UTC (continuous capture, chain 5), when the window starts"
            )
        );
        w.moment = Some(MomentRef {
            chain_id: 5,
            at,
            commit_at: Some(at - Duration::milliseconds(1500)),
        });
        let r = ItemRow::from(&w);
        assert_eq!(r.copied_label, "Copied");
        assert_eq!(
            r.copied.as_deref(),
            Some(
                "2031-03-14 00:30:05 UTC: the last commit at or before 2031-03-14 00:30:07 UTC (continuous capture, chain 5)"
            )
        );
        assert!(!r.copied.unwrap().contains("backup"));
        assert_eq!(ItemRow::from(&item("accepted")).copied_label, "Copied");
    }

    /// A captured source's range as `pitr_range.html` reads it.
    fn range_section() -> minijinja::Value {
        minijinja::context! {
            summary => "Restorable from 2031-03-14 09:00:00 UTC to 2031-03-14 11:00:30 UTC",
            spans => [minijinja::context! {
                from => "2031-03-14 09:00:00 UTC", to => "2031-03-14 11:00:30 UTC",
                commits => 12, release => "9.1", open => true,
            }],
            gaps => [minijinja::context! {
                from => "2031-03-14 08:00:00 UTC", to => "2031-03-14 09:00:00 UTC",
                reason => "Steward was <stopped>",
            }],
            retention_days => 7,
        }
    }

    #[test]
    fn a_captured_source_offers_latest_or_a_moment_on_its_range() {
        let refresh_form = |pitr: minijinja::Value, draft: Draft| {
            render_bare(
                "workitems_refresh.html",
                minijinja::context! {
                    title => "t", nav => "workitems", user => (), csrf => "tok", notice => (),
                    latest_alert => (), error => (), lead_hours => 24,
                    earliest_start => "2031-03-15 00:30 UTC", earliest => (),
                    instances => Vec::<InstanceOption>::new(),
                    sandboxes => Vec::<InstanceOption>::new(),
                    production => Vec::<InstanceOption>::new(),
                    points => [PointOption { value: "2031-03-14T00:30:00Z".into(), text: "backup 3".into() }],
                    zones => ["UTC", "Europe/Paris"], pitr => pitr, draft => draft,
                },
            )
        };
        let draft = Draft {
            source: "prod-a".into(),
            at_kind: "moment".into(),
            at_moment: "2031-03-14T10:15:07".into(),
            at_zone: "Europe/Paris".into(),
            time_zone: "UTC".into(),
            ..Draft::default()
        };
        let html = refresh_form(range_section(), draft);
        assert!(
            html.contains("Restorable from 2031-03-14 09:00:00 UTC to 2031-03-14 11:00:30 UTC."),
            "{html}"
        );
        assert!(html.contains("id=\"pitr-spans\""), "{html}");
        assert!(html.contains("Steward was &lt;stopped&gt;"), "{html}");
        assert!(
            html.contains("id=\"refresh-at-moment-choice\" value=\"moment\" checked"),
            "{html}"
        );
        assert!(!html.contains("id=\"refresh-at-latest\" value=\"latest\" checked"));
        assert!(
            html.contains("step=\"1\" value=\"2031-03-14T10:15:07\""),
            "the typed moment is kept, to the second: {html}"
        );
        assert!(
            html.contains("<option value=\"Europe&#x2f;Paris\" selected>"),
            "{html}"
        );
        assert!(
            !html.contains("id=\"refresh-at\""),
            "no backup select: {html}"
        );
        assert!(!html.contains("backup 3"));

        // Never captured: the backups, as before.
        let html = refresh_form(
            minijinja::Value::from(()),
            Draft {
                source: "prod-a".into(),
                at: "latest".into(),
                ..Draft::default()
            },
        );
        assert!(html.contains("id=\"refresh-at\""), "{html}");
        assert!(html.contains("backup 3"));
        assert!(!html.contains("pitr-range") && !html.contains("at_moment"));

        // The reschedule form offers the same.
        let mut w = item("accepted");
        w.restore_point = None;
        let html = render_bare(
            "workitems_detail.html",
            minijinja::context! {
                title => "t", nav => "workitems", user => (), csrf => "tok", notice => (),
                latest_alert => (), error => (), lead_hours => 24,
                earliest_start => "2031-03-15 00:30 UTC",
                item => ItemRow::from(&w), points => Vec::<PointOption>::new(),
                zones => ["UTC"], pitr => range_section(),
                draft => Draft { at_kind: "latest".into(), ..Draft::default() },
                can_request => true, can_accept_item => false,
            },
        );
        assert!(html.contains("id=\"reschedule-at-moment\""), "{html}");
        assert!(html.contains("id=\"reschedule-at-latest\" value=\"latest\" checked"));
        assert!(html.contains("Restorable from 2031-03-14 09:00:00 UTC"));
        assert!(!html.contains("id=\"reschedule-at\""));
    }

    #[test]
    fn times_are_read_in_utc_or_the_given_zone() {
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            parse_local_time("2027-01-10T22:00:00+01:00", "Asia/Tokyo").unwrap(),
            utc("2027-01-10T21:00:00Z"),
            "an explicit offset wins over the zone"
        );
        assert_eq!(
            parse_local_time("2027-01-10 22:00", "").unwrap(),
            utc("2027-01-10T22:00:00Z")
        );
        assert_eq!(
            parse_local_time("2027-07-10T22:00", "Europe/Paris").unwrap(),
            utc("2027-07-10T20:00:00Z")
        );
        assert!(
            parse_local_time("tomorrow", "")
                .unwrap_err()
                .contains("not a time")
        );
        assert!(
            parse_local_time("2027-01-10 22:00", "Mars/Olympus")
                .unwrap_err()
                .contains("unknown time zone")
        );
        assert!(
            parse_local_time("2027-03-28 02:30", "Europe/Paris")
                .unwrap_err()
                .contains("does not exist")
        );
        assert!(
            parse_local_time("2027-10-31 02:30", "Europe/Paris")
                .unwrap_err()
                .contains("twice")
        );
    }
}
