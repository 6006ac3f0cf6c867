//! The Restore drills page (`/drills`): the fleet view (instances whose last drill failed, is
//! older than N days, or that were never drilled), the recent drills with their progress, and
//! a form to run a drill now (`POST /drills/run`). Also the drill summary the instance page and
//! the Backup & Restore tab show. The services decide; permissions come from `authorize`.

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use minijinja::context;
use serde::{Deserialize, Serialize};
use steward_core::clock::display_time;
use steward_core::policy::{Action, authorize};

use super::backups::shorten_ids;
use super::paging::{PAGE_SIZE, PICKER_MAX, PageQuery, Pager, instance_choices};
use super::render::{Page, query_value, sentence_naming};
use super::session::{Posted, WebSession, redirect_with_notice};
use crate::SharedState;
use crate::api::status_of;
use crate::services::drills::{DrillAttentionView, DrillFleetPage, DrillFleetQuery, DrillView};

/// How many recent drills the page lists.
const RECENT: u32 = 20;

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/drills", get(page))
        .route("/drills/run", post(run))
}

/// `754` → `754 ms`, `1234` → `1.2 s`, `83_000` → `1 min 23 s`.
fn duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        return format!("{:.1} s", ms as f64 / 1000.0);
    }
    let s = ms / 1000;
    format!("{} min {} s", s / 60, s % 60)
}

/// A drill as the pages show it.
#[derive(Debug, Serialize)]
pub struct DrillSummary {
    pub id: i64,
    pub instance: String,
    pub state: String,
    pub state_label: &'static str,
    /// The badge's CSS classes.
    pub badge: &'static str,
    /// When it ended (or started, or was queued), to the second.
    pub when: String,
    pub duration: Option<String>,
    pub backup_id: i64,
    pub backup_label: String,
    pub origin: &'static str,
    pub requested_by: String,
    pub bytes: Option<u64>,
    /// Whole percent of the current stage, while running.
    pub percent: Option<u64>,
    pub stage: Option<String>,
    /// What failed, with chunk and pack ids shortened for a table cell.
    pub problems: Vec<String>,
    /// The same, whole (for tooltips and the instance page).
    pub problems_full: Vec<String>,
    pub attempts: u32,
}

/// What a page shows of a drill.
pub fn summary(d: &DrillView) -> DrillSummary {
    let (state_label, badge) = match d.state.as_str() {
        "passed" => ("Passed", "badge badge-backup-completed"),
        "failed" => ("Failed", "badge badge-backup-failed"),
        "running" => ("Running", "badge badge-backup-running"),
        "queued" => ("Queued", "badge badge-backup-queued"),
        "skipped" => ("Skipped", "badge badge-backup-deleted"),
        _ => ("Unknown", "badge"),
    };
    let when = d.finished_at.or(d.started_at).unwrap_or(d.created_at);
    let percent = (d.state == "running" && d.progress_total > 0).then(|| {
        (u128::from(d.progress_done.min(d.progress_total)) * 100 / u128::from(d.progress_total))
            as u64
    });
    DrillSummary {
        id: d.id,
        instance: d.instance.clone(),
        state: d.state.clone(),
        state_label,
        badge,
        when: display_time(&when).to_string(),
        duration: d.duration_ms.map(duration),
        backup_id: d.backup_id,
        backup_label: d.backup_label.clone(),
        origin: if d.origin == "scheduled" {
            "Scheduled"
        } else {
            "On demand"
        },
        requested_by: d.requested_by.clone(),
        bytes: d.bytes,
        percent,
        stage: d.stage.clone(),
        problems: d.problems.iter().map(|p| shorten_ids(p)).collect(),
        problems_full: d.problems.clone(),
        attempts: d.attempts,
    }
}

/// An instance the fleet view lists.
#[derive(Serialize)]
struct AttentionRow {
    instance: String,
    instance_type: String,
    reason: String,
    reason_label: &'static str,
    has_backup: bool,
    last: Option<DrillSummary>,
}

impl From<&DrillAttentionView> for AttentionRow {
    fn from(a: &DrillAttentionView) -> Self {
        Self {
            instance: a.instance.clone(),
            instance_type: a.instance_type.clone(),
            reason: a.reason.clone(),
            reason_label: match a.reason.as_str() {
                "failed" => "Last drill failed",
                "stale" => "Last drill too old",
                _ => "Never drilled",
            },
            has_backup: a.has_backup,
            last: a.last_drill.as_ref().map(summary),
        }
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct FleetForm {
    #[serde(default)]
    stale_days: String,
    #[serde(default)]
    failed: String,
}

/// `GET /drills?stale_days=N&failed=on&q=NAME&page=N`
pub async fn page(
    State(st): State<SharedState>,
    session: WebSession,
    Query(form): Query<FleetForm>,
    Query(query): Query<PageQuery>,
) -> Response {
    render(&st, &session, form, &query, StatusCode::OK, None).await
}

async fn render(
    st: &SharedState,
    session: &WebSession,
    form: FleetForm,
    query: &PageQuery,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let page = Page::new(session, "drills", "Restore drills");
    let offset = match query.offset() {
        Ok(o) => o,
        Err(e) => return page.service_error(st, &e),
    };
    let stale = form.stale_days.trim().to_owned();
    // `Err` when the field is not a whole number at all (the service checks the range).
    let stale_days: Result<Option<i64>, String> = match stale.as_str() {
        "" => Ok(None),
        s => s.parse::<i64>().map(Some).map_err(|_| {
            format!("“{s}” is not a number of days; give a whole number from 1 to 3650.")
        }),
    };
    let failed_only = !form.failed.is_empty();
    let can_run = authorize(session.actor.role, Action::RunDrill).is_ok();
    let actor = session.actor.clone();
    let wanted = stale_days.clone();
    let contains = query.contains();
    let loaded = st
        .run(move |s| {
            let fleet = match wanted {
                Ok(days) => Some(s.drill_fleet_page(
                    &actor,
                    &DrillFleetQuery {
                        stale_days: days,
                        failed_only,
                        contains,
                        offset,
                        limit: Some(PAGE_SIZE),
                    },
                )),
                Err(_) => None,
            };
            let recent = s.recent_drills(&actor, RECENT)?;
            // The run form's instance picker: names, or a name field for a large fleet (known
            // from the fleet's count without asking again).
            let fleet_size = fleet
                .as_ref()
                .and_then(|f| f.as_ref().ok())
                .map(|f| f.instances_checked);
            let choices = if can_run && fleet_size.is_none_or(|n| n <= PICKER_MAX) {
                instance_choices(s, &actor)?
            } else {
                None
            };
            Ok((fleet, recent, choices))
        })
        .await;
    let (fleet, recent, choices) = match loaded {
        Ok(v) => v,
        Err(e) => return page.service_error(st, &e),
    };
    let (fleet, status, error): (Option<DrillFleetPage>, StatusCode, Option<String>) =
        match (fleet, stale_days) {
            (Some(Ok(f)), _) => (Some(f), status, error),
            (Some(Err(e)), _) => (
                None,
                status_of(e.kind),
                Some(sentence_naming(&e.message, &[])),
            ),
            (None, Err(message)) => (None, StatusCode::BAD_REQUEST, Some(message)),
            (None, Ok(_)) => (None, status, error),
        };
    let attention: Vec<AttentionRow> = fleet
        .as_ref()
        .map(|f| f.instances.iter().map(AttentionRow::from).collect())
        .unwrap_or_default();
    let recent: Vec<DrillSummary> = recent.iter().map(summary).collect();
    let pager = Pager::new(
        "/drills",
        query,
        fleet.as_ref().map_or(0, |f| f.matching),
        &[
            ("stale_days", form.stale_days.trim()),
            ("failed", if failed_only { "on" } else { "" }),
        ],
    );
    page.render(
        st,
        status,
        "drills.html",
        context! {
            fleet => fleet,
            attention => attention,
            recent => recent,
            instances => choices,
            form => form,
            failed_only => failed_only,
            pager => pager,
            can_run => can_run,
            error => error,
        },
    )
}

/// `POST /drills/run` (instance, optional backup_id, optional return_to): queues a drill now.
pub async fn run(State(st): State<SharedState>, form: Posted) -> Response {
    let instance = form.field("instance").trim().to_owned();
    let backup = form.field("backup_id").trim().to_owned();
    let back = match form.field("return_to") {
        "instance" => format!("/instances/{}", query_value(&instance)),
        "backups" => format!("/backups?instance={}", query_value(&instance)),
        _ => "/drills".to_owned(),
    };
    let backup_id = match backup.as_str() {
        "" => None,
        b => match b.parse::<i64>() {
            Ok(id) => Some(id),
            Err(_) => {
                let message = format!("“{b}” is not a backup id.");
                return render(
                    &st,
                    &form.session,
                    FleetForm::default(),
                    &PageQuery::default(),
                    StatusCode::BAD_REQUEST,
                    Some(message),
                )
                .await;
            }
        },
    };
    let actor = form.session.actor.clone();
    let name = instance.clone();
    match st.run(move |s| s.run_drill(&actor, &name, backup_id)).await {
        Ok(d) => redirect_with_notice(
            &st,
            &back,
            &format!(
                "Restore drill {} of {} is queued: backup “{}” is restored into a throwaway file and checked.",
                d.id, d.instance, d.backup_label
            ),
        ),
        Err(e) => {
            let message = sentence_naming(&e.message, &[&instance]);
            render(
                &st,
                &form.session,
                FleetForm::default(),
                &PageQuery::default(),
                status_of(e.kind),
                Some(message),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(duration(754), "754 ms");
        assert_eq!(duration(1234), "1.2 s");
        assert_eq!(duration(83_000), "1 min 23 s");
    }

    #[test]
    fn chunk_and_pack_ids_are_shortened() {
        let id = "c3278df3196159cfe7678865c2c8e37d3c4b78f99fd213bf3c2f838babbfa353";
        assert_eq!(
            shorten_ids(&format!("chunk {id} in pack abc is corrupt")),
            "chunk c3278df31961… in pack abc is corrupt"
        );
    }
}
