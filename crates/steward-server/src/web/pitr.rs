//! Restore to a moment in the Backup & Restore tab: the instance's restorable range ("Restorable
//! from X to Y", every span with its commits and release, the gaps with their reasons) and the
//! "Restore to a moment" form (a moment in a time zone and a target sandbox), then a review
//! page and the confirmation, which starts the `restore_at` job.
//!
//! The services decide: the review asks the same questions, in the same order, as
//! `Services::restore_to_moment` (permission, the source, the target is a sandbox that can be
//! restored into now, the moment is on the range), so every refusal is shown on the form
//! before anything starts; the confirmation asks `restore_to_moment` itself. Viewers see the
//! range and no form.
//!
//! Routes: `/backups/restore-at/review?instance=&at=&time_zone=&target=` (GET),
//! `/backups/restore-at` (POST instance, at, target).

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use chrono::{DateTime, SecondsFormat, Utc};
use minijinja::context;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use steward_core::clock::display_time;
use steward_core::instance::{InstanceState, InstanceType};
use steward_core::policy::{Action, authorize};
use steward_core::{Role, backup::check_restore_target};

use super::parse_local_time;
use super::render::{Page, query_value, sentence_naming};
use super::session::{Posted, WebSession, redirect_with_notice};
use crate::SharedState;
use crate::api::status_of;
use crate::error::ServiceError;
use crate::services::capture::{RangeSpanView, RangeView};
use crate::services::{Actor, InstanceView, Services};

/// The `datetime-local` value format (whole seconds; the input has `step="1"`).
const LOCAL_INPUT: &str = "%Y-%m-%dT%H:%M:%S";

pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/backups/restore-at/review", get(review))
        .route("/backups/restore-at", post(restore))
}

/// `/backups?instance=NAME`
fn tab_url(instance: &str) -> String {
    format!("/backups?instance={}", query_value(instance))
}

/// What the form was filled with, kept when it is shown again with an error.
#[derive(Debug, Default, Clone, Deserialize, Serialize)]
pub struct Draft {
    #[serde(default)]
    pub instance: String,
    /// As typed: a local `YYYY-MM-DDTHH:MM[:SS]` in `time_zone`, or RFC 3339.
    #[serde(default)]
    pub at: String,
    #[serde(default)]
    pub time_zone: String,
    #[serde(default)]
    pub target: String,
}

/// The form shown again: its values and why it was refused.
pub struct FormState {
    pub draft: Draft,
    pub error: String,
}

/// What the tab loads for the section (in its blocking call).
pub struct Loaded {
    range: RangeView,
    /// Whether continuous capture is turned on for this server.
    enabled: bool,
}

/// The instance's range, or `None` when there is no such instance (the tab says so itself).
pub fn load(s: &Services, actor: &Actor, instance: &str) -> Option<Loaded> {
    s.backup_range(actor, instance).ok().map(|range| Loaded {
        range,
        enabled: s.capture.settings.enabled,
    })
}

#[derive(Debug, Serialize)]
struct SpanRow {
    from: String,
    to: String,
    commits: u64,
    release: Option<String>,
    open: bool,
}

impl From<&RangeSpanView> for SpanRow {
    fn from(s: &RangeSpanView) -> Self {
        Self {
            from: display_time(&s.from).to_string(),
            to: display_time(&s.to).to_string(),
            commits: s.commits,
            release: s.release.clone(),
            open: s.open,
        }
    }
}

#[derive(Debug, Serialize)]
struct GapRow {
    from: String,
    /// `None`: up to now.
    to: Option<String>,
    reason: String,
}

/// An instance the form offers as a target.
#[derive(Debug, Serialize)]
struct TargetOption {
    name: String,
    #[serde(rename = "type")]
    instance_type: String,
    release: String,
    /// Why a restore into it is refused now.
    refusal: Option<String>,
}

fn target_option(i: &InstanceView) -> TargetOption {
    let refusal = match (
        InstanceType::from_str(&i.instance_type),
        InstanceState::from_str(&i.state),
    ) {
        (Ok(t), Ok(st)) => check_restore_target(&i.name, t, st).err().map(|r| r.hint()),
        _ => Some("unknown type or state".into()),
    };
    TargetOption {
        name: i.name.clone(),
        instance_type: i.instance_type.clone(),
        release: i.release.clone(),
        refusal,
    }
}

/// The section of the tab, as the template shows it.
#[derive(Debug, Serialize)]
pub struct Section {
    instance: String,
    enabled: bool,
    capturing: bool,
    /// Whether any moment is restorable.
    restorable: bool,
    /// "Restorable from X to Y" (and the other spans), or why nothing is.
    summary: String,
    spans: Vec<SpanRow>,
    gaps: Vec<GapRow>,
    retention_days: u32,
    can_restore: bool,
    /// Too many instances for a select: the target is typed (and checked on review).
    typed: bool,
    sandboxes: Vec<TargetOption>,
    refused: Vec<TargetOption>,
    zones: Vec<&'static str>,
    draft: Draft,
    error: Option<String>,
}

/// Every time zone the form offers: UTC first, then the IANA names in order.
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

/// "Restorable from X to Y", or why nothing is.
fn summary(r: &RangeView, enabled: bool) -> String {
    if !r.spans.is_empty() {
        return format!("Restorable {}", r.description);
    }
    if enabled {
        format!(
            "Continuous capture of {} has never run, so it cannot be restored to a moment yet; restore a backup instead",
            r.instance
        )
    } else {
        format!(
            "Continuous capture is turned off on this server, so {} cannot be restored to a moment; restore a backup instead",
            r.instance
        )
    }
}

/// The section for the tab: the range, and the form when `role` may restore. `instances` are
/// the targets the form offers; `None` when there are too many for a select (see
/// `backups::picker`): the target is then typed.
pub fn section(
    loaded: Option<Loaded>,
    role: Role,
    instances: Option<&[InstanceView]>,
    form: Option<FormState>,
) -> Option<Section> {
    let Loaded { range, enabled } = loaded?;
    let (sandboxes, refused): (Vec<TargetOption>, Vec<TargetOption>) = instances
        .unwrap_or_default()
        .iter()
        .map(target_option)
        .partition(|t| t.refusal.is_none());
    let (draft, error) = match form {
        Some(f) => (f.draft, Some(f.error)),
        None => (
            Draft {
                instance: range.instance.clone(),
                at: range
                    .latest
                    .map(|t| t.format(LOCAL_INPUT).to_string())
                    .unwrap_or_default(),
                time_zone: "UTC".into(),
                target: sandboxes
                    .iter()
                    .find(|t| t.name != range.instance)
                    .or(sandboxes.first())
                    .map(|t| t.name.clone())
                    .unwrap_or_default(),
            },
            None,
        ),
    };
    Some(Section {
        summary: summary(&range, enabled),
        instance: range.instance.clone(),
        enabled,
        capturing: range.capturing,
        restorable: !range.spans.is_empty(),
        spans: range.spans.iter().map(SpanRow::from).collect(),
        gaps: range
            .gaps
            .iter()
            .map(|g| GapRow {
                from: display_time(&g.from).to_string(),
                to: g.to.map(|t| display_time(&t).to_string()),
                reason: g.reason.clone(),
            })
            .collect(),
        retention_days: range.retention_days,
        can_restore: authorize(role, Action::RestoreBackup).is_ok(),
        typed: instances.is_none(),
        sandboxes,
        refused,
        zones: zones(),
        draft,
        error,
    })
}

/// What the review shows: the restore `restore_to_moment` would start now.
struct Preview {
    source: InstanceView,
    target: InstanceView,
    /// The span the moment lies in.
    span: Option<RangeSpanView>,
    /// The release the target takes.
    release: Option<String>,
}

/// Asks what `restore_to_moment` asks, in its order, without starting anything.
fn preview(
    s: &Services,
    actor: &Actor,
    source: &str,
    at: DateTime<Utc>,
    target: &str,
) -> Result<Preview, ServiceError> {
    authorize(actor.role, Action::RestoreBackup)?;
    let src = s.show_instance(actor, source)?;
    let tgt = s.show_instance(actor, target)?;
    let (src_row, tgt_row) = s.store.read(|db| {
        Ok::<_, ServiceError>((db.instance_by_name(source)?, db.instance_by_name(target)?))
    })?;
    let (Some(src_row), Some(tgt_row)) = (src_row, tgt_row) else {
        // Deleted between the two reads: ask again for the service's own error.
        s.show_instance(actor, source)?;
        return Err(s.show_instance(actor, target).err().unwrap_or_else(|| {
            ServiceError::conflict("instance_busy", "the instances changed; try again")
        }));
    };
    check_restore_target(&tgt_row.name, tgt_row.instance_type, tgt_row.state)
        .map_err(crate::services::backups::refusal)?;
    let chain = s.chain_for_moment(&src_row, at)?;
    let range = s.backup_range(actor, source)?;
    Ok(Preview {
        source: src,
        target: tgt,
        span: range.spans.into_iter().find(|x| x.chain_id == chain.id),
        release: chain.release,
    })
}

/// The tab again, with the form's values and why it was refused; nothing was started.
async fn refuse(
    st: &SharedState,
    session: &WebSession,
    draft: Draft,
    status: StatusCode,
    error: String,
) -> Response {
    let instance = draft.instance.clone();
    super::backups::tab_page(st, session, instance, status, FormState { draft, error }).await
}

/// `GET /backups/restore-at/review`: what the restore will do, with Confirm and Cancel; or
/// the tab's form again with the refusal.
pub async fn review(
    State(st): State<SharedState>,
    session: WebSession,
    Query(mut draft): Query<Draft>,
) -> Response {
    draft.instance = draft.instance.trim().to_owned();
    draft.target = draft.target.trim().to_owned();
    draft.at = draft.at.trim().to_owned();
    let page = Page::new(&session, "backups", "Review restore to a moment");
    if let Err(denied) = authorize(session.actor.role, Action::RestoreBackup) {
        return page.service_error(&st, &ServiceError::from(denied));
    }
    if draft.at.is_empty() {
        let error = "Enter the moment to restore to.".to_owned();
        return refuse(&st, &session, draft, StatusCode::BAD_REQUEST, error).await;
    }
    let at = match parse_local_time(&draft.at, draft.time_zone.trim()) {
        Ok(at) => at,
        Err(e) => {
            let error = sentence_naming(&e, &[]);
            return refuse(&st, &session, draft, StatusCode::BAD_REQUEST, error).await;
        }
    };
    if draft.target.is_empty() {
        let error = "Select a target sandbox.".to_owned();
        return refuse(&st, &session, draft, StatusCode::BAD_REQUEST, error).await;
    }
    let actor = session.actor.clone();
    let (source, target) = (draft.instance.clone(), draft.target.clone());
    let found = st
        .run(move |s| Ok(preview(s, &actor, &source, at, &target)))
        .await;
    let p = match found {
        Ok(Ok(p)) => p,
        Ok(Err(e)) | Err(e) => {
            let error = sentence_naming(&e.message, &[&draft.instance, &draft.target]);
            return refuse(&st, &session, draft, status_of(e.kind), error).await;
        }
    };
    let zone = draft.time_zone.trim();
    let typed = (!zone.is_empty() && zone != "UTC").then(|| format!("{} {zone}", draft.at));
    page.render(
        &st,
        StatusCode::OK,
        "restore_at_review.html",
        context! {
            source => context! {
                name => p.source.name, type => p.source.instance_type, release => p.source.release,
            },
            target => context! {
                name => p.target.name, type => p.target.instance_type, release => p.target.release,
                state => p.target.state,
                state_label => InstanceState::from_str(&p.target.state)
                    .map(|s| s.label().to_owned())
                    .unwrap_or_else(|_| p.target.state.clone()),
            },
            moment => display_time(&at).to_string(),
            moment_value => at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
            typed => typed,
            span => p.span.as_ref().map(SpanRow::from),
            release => p.release,
            back => tab_url(&draft.instance),
        },
    )
}

/// `POST /backups/restore-at` (instance, at, target): starts the restore and returns to the
/// target's tab, where the job shows; a refusal shows the form again.
pub async fn restore(State(st): State<SharedState>, form: Posted) -> Response {
    let draft = Draft {
        instance: form.field("instance").trim().to_owned(),
        at: form.field("at").trim().to_owned(),
        time_zone: "UTC".into(),
        target: form.field("target").trim().to_owned(),
    };
    let at = match parse_local_time(&draft.at, "") {
        Ok(at) => at,
        Err(e) => {
            let error = sentence_naming(&e, &[]);
            return refuse(&st, &form.session, draft, StatusCode::BAD_REQUEST, error).await;
        }
    };
    let actor = form.session.actor.clone();
    let (source, target) = (draft.instance.clone(), draft.target.clone());
    match st
        .run(move |s| s.restore_to_moment(&actor, &source, at, &target))
        .await
    {
        Ok(started) => redirect_with_notice(
            &st,
            &tab_url(&started.target),
            &format!(
                "Restoring {} as of {} into {} as job {}.",
                started.source,
                display_time(&started.at),
                started.target,
                started.job.id
            ),
        ),
        Err(e) => {
            let error = sentence_naming(&e.message, &[&draft.instance, &draft.target]);
            // Shown again in UTC, as the moment was sent.
            let draft = Draft {
                at: at.format(LOCAL_INPUT).to_string(),
                ..draft
            };
            refuse(&st, &form.session, draft, status_of(e.kind), error).await
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::services::capture::RangeGapView;
    use crate::web::render::render_bare;

    fn at(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2031, 3, 14, h, m, s).unwrap()
    }

    fn range(spans: Vec<RangeSpanView>, gaps: Vec<RangeGapView>, description: &str) -> RangeView {
        RangeView {
            instance: "crm-prod".into(),
            capturing: spans.iter().any(|s| s.open),
            earliest: spans.first().map(|s| s.from),
            latest: spans.last().map(|s| s.to),
            spans,
            gaps,
            description: description.into(),
            retention_days: 7,
        }
    }

    fn span(id: i64, from: DateTime<Utc>, to: DateTime<Utc>, open: bool) -> RangeSpanView {
        RangeSpanView {
            from,
            to,
            chain_id: id,
            release: Some("9.1".into()),
            commits: 12,
            segments: 3,
            bytes: 4096,
            open,
        }
    }

    fn instance(name: &str, kind: &str) -> InstanceView {
        InstanceView {
            name: name.into(),
            instance_type: kind.into(),
            engine: "sqlite".into(),
            release: "9.1".into(),
            state: "available".into(),
            database_path: String::new(),
            documents_path: String::new(),
            storage_bytes: 0,
            created_at: at(0, 0, 0),
            created_by: "admin".into(),
            node: None,
            last_drill: None,
        }
    }

    fn render(section: &Section) -> String {
        render_bare(
            "backups_pitr.html",
            context! { restore_at => section, csrf => "tok", instance => "crm-prod" },
        )
    }

    #[test]
    fn the_range_shows_spans_gaps_and_a_form_for_those_who_may_restore() {
        let r = range(
            vec![
                span(1, at(9, 0, 0), at(10, 0, 0), false),
                span(2, at(10, 5, 0), at(11, 0, 30), true),
            ],
            vec![RangeGapView {
                from: at(10, 0, 0),
                to: Some(at(10, 5, 0)),
                reason: "Steward was <stopped>".into(),
            }],
            "from 2031-03-14 09:00:00 UTC to 2031-03-14 10:00:00 UTC, and from 2031-03-14 10:05:00 UTC to 2031-03-14 11:00:30 UTC",
        );
        let instances = [
            instance("crm-prod", "production"),
            instance("crm-sand", "sandbox"),
        ];
        let loaded = || {
            Some(Loaded {
                range: r.clone(),
                enabled: true,
            })
        };
        let s = section(loaded(), Role::SystemAdministrator, Some(&instances), None).unwrap();
        assert_eq!(
            s.draft.at, "2031-03-14T11:00:30",
            "the latest moment, in UTC"
        );
        assert_eq!(s.draft.target, "crm-sand");
        assert_eq!(s.refused.len(), 1, "production is listed as not allowed");
        let html = render(&s);
        assert!(
            html.contains(
                "Restorable from 2031-03-14 09:00:00 UTC to 2031-03-14 10:00:00 UTC, and from"
            ),
            "{html}"
        );
        assert!(
            html.contains("Steward was &lt;stopped&gt;"),
            "escaped: {html}"
        );
        assert!(html.contains("id=\"restore-at-form\""));
        assert!(html.contains("crm-prod (production, 9.1) — "), "{html}");
        let viewer = section(loaded(), Role::Viewer, Some(&instances), None).unwrap();
        let html = render(&viewer);
        assert!(html.contains("Restorable from"));
        assert!(!html.contains("restore-at-form"), "{html}");
    }

    #[test]
    fn never_captured_says_so_and_offers_no_form() {
        let instances = [instance("crm-sand", "sandbox")];
        for (enabled, expected) in [
            (true, "Continuous capture of crm-prod has never run"),
            (false, "Continuous capture is turned off on this server"),
        ] {
            let loaded = Some(Loaded {
                range: range(vec![], vec![], "nothing is restorable yet"),
                enabled,
            });
            let s = section(loaded, Role::SystemAdministrator, Some(&instances), None).unwrap();
            let html = render(&s);
            assert!(html.contains(expected), "{html}");
            assert!(!html.contains("restore-at-form"), "{html}");
        }
    }

    #[test]
    fn a_refusal_is_shown_on_the_form_with_its_values() {
        let loaded = Some(Loaded {
            range: range(
                vec![span(1, at(9, 0, 0), at(10, 0, 0), true)],
                vec![],
                "from 2031-03-14 09:00:00 UTC to 2031-03-14 10:00:00 UTC",
            ),
            enabled: true,
        });
        let form = FormState {
            draft: Draft {
                instance: "crm-prod".into(),
                at: "2031-03-14T12:00:00".into(),
                time_zone: "Europe/Paris".into(),
                target: "crm-sand".into(),
            },
            error: "2031-03-14 11:00:00 UTC is in the future.".into(),
        };
        let instances = [instance("crm-sand", "sandbox")];
        let s = section(
            loaded,
            Role::SystemAdministrator,
            Some(&instances),
            Some(form),
        )
        .unwrap();
        let html = render(&s);
        assert!(html.contains("id=\"restore-at-error\""), "{html}");
        assert!(html.contains("is in the future"));
        assert!(html.contains("value=\"2031-03-14T12:00:00\""), "{html}");
        assert!(
            html.contains("<option value=\"Europe&#x2f;Paris\" selected>"),
            "{html}"
        );
    }
}
