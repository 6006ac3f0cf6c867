//! The Backup & Restore tab: an instance's backups with the "Backups for" picker, the
//! New backup form, edit and delete (through a confirmation page), and restore in two steps
//! (select a target, then review and confirm). Beside the list: the instance's backup and
//! restore jobs with their stage and progress, database versus backup storage, and recent
//! alerts; under it, every instance's storage in pages of 50 (`?page=`, `?q=`). The services
//! decide; which actions a row offers comes from the backup's `can_*` flags and the New backup
//! form from `authorize`.
//!
//! With a large fleet nothing here grows with it: an instance picker is a select of every
//! instance only up to `paging::PICKER_MAX` of them, else a name field (the service checks
//! the name typed; see [`picker`]), and the storage table loads one page.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::context;
use serde::{Deserialize, Serialize};
use std::str::FromStr;
use steward_core::instance::{InstanceState, InstanceType};
use steward_core::policy::{Action, authorize};

use super::paging::{PAGE_SIZE, PICKER_MAX, PageQuery, Pager};
use super::render::{Page, query_value, sentence, sentence_naming};
use super::session::{Posted, WebSession, redirect_with_notice};
use crate::SharedState;
use crate::api::status_of;
use crate::error::ServiceError;
use crate::services::backups::StoragePage;
use crate::services::verify::{ALL_INSTANCES, VERIFY_JOB, VerifyRequest};
use crate::services::{
    Actor, AlertView, BackupView, InstanceListQuery, InstanceView, JobView, Services,
};

/// How many recent alerts the tab lists.
const ALERTS: i64 = 5;
/// How many finished jobs the tab lists besides the active ones.
const RECENT_JOBS: usize = 8;
const DATE: &str = "%Y-%m-%d %H:%M UTC";
const SHORT_DATE: &str = "%Y-%m-%d %H:%M";

/// `/backups?instance=NAME`, with the name encoded for a query string.
fn list_url(instance: &str) -> String {
    format!("/backups?instance={}", query_value(instance))
}

/// A backup as the templates show it.
#[derive(Serialize)]
struct BackupRow {
    id: i64,
    instance: String,
    kind: String,
    kind_label: &'static str,
    /// The label, or a description for backups without one.
    label: String,
    notes: Option<String>,
    status: String,
    status_label: &'static str,
    release: String,
    created_by: String,
    created_at: String,
    completed_at: Option<String>,
    expires_at: String,
    /// The dates without the zone, for table cells under a "UTC" heading.
    created_on: String,
    expires_on: String,
    size_bytes: Option<u64>,
    stored_bytes: Option<u64>,
    error: Option<String>,
    can_edit: bool,
    can_delete: bool,
    can_restore: bool,
    /// A verify found it damaged: the badge, and what was found (pack and chunk ids
    /// shortened; `damage_full` has them whole, for the tooltip).
    damaged: bool,
    damage: Option<String>,
    damage_full: Option<String>,
    /// Its latest verify, e.g. `Verified 2031-03-14 00:30 UTC (read data): whole`.
    verified: Option<String>,
    /// Its newest restore drill.
    drill: Option<super::drills::DrillSummary>,
}

impl From<&BackupView> for BackupRow {
    fn from(b: &BackupView) -> Self {
        let kind_label = match b.kind.as_str() {
            "system" => "System",
            "on_demand" => "On-demand",
            "pre_update" => "Pre-update",
            "pre_refresh" => "Pre-refresh",
            _ => "Backup",
        };
        let created_at = b.created_at.format(DATE).to_string();
        let label = if b.label.trim().is_empty() {
            format!("{kind_label} backup of {created_at}")
        } else {
            b.label.clone()
        };
        Self {
            id: b.id,
            instance: b.instance.clone(),
            kind: b.kind.clone(),
            kind_label,
            label,
            notes: Some(b.notes.clone()).filter(|n| !n.trim().is_empty()),
            status: b.status.clone(),
            status_label: status_label(&b.status),
            release: b.release.clone(),
            created_by: b.created_by.clone(),
            created_at,
            completed_at: b.completed_at.map(|t| t.format(DATE).to_string()),
            expires_at: b.expires_at.format(DATE).to_string(),
            created_on: b.created_at.format(SHORT_DATE).to_string(),
            expires_on: b.expires_at.format(SHORT_DATE).to_string(),
            size_bytes: b.size_bytes,
            stored_bytes: b.stored_bytes,
            error: b.error.as_deref().map(sentence),
            can_edit: b.can_edit,
            can_delete: b.can_delete,
            can_restore: b.can_restore,
            damaged: b.damaged,
            damage: b.damage.as_deref().map(|d| shorten_ids(&sentence(d))),
            damage_full: b.damage.as_deref().map(sentence),
            verified: b.verification.as_ref().map(|v| {
                format!(
                    "Verified {} ({}): {}",
                    v.at.format(DATE),
                    v.mode.replace('_', " "),
                    if v.ok { "whole" } else { "damaged" }
                )
            }),
            drill: b.last_drill.as_ref().map(super::drills::summary),
        }
    }
}

/// Pack and chunk ids (64 hex digits) shortened to their first 12 digits and an ellipsis,
/// so a table cell stays readable.
pub(super) fn shorten_ids(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 32 {
            out.push_str(&run[..12]);
            out.push('…');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

fn status_label(status: &str) -> &'static str {
    match status {
        "queued" => "Queued",
        "running" => "In progress",
        "completed" => "Completed",
        "failed" => "Failed",
        "deleted" => "Deleted",
        "expired" => "Expired",
        _ => "Unknown",
    }
}

/// An instance as the picker and the target list show it.
#[derive(Serialize)]
struct InstanceOption {
    name: String,
    #[serde(rename = "type")]
    instance_type: String,
    release: String,
    state: String,
    state_label: String,
    /// Why a restore into this instance would be refused now (`check_restore_target`).
    restore_refusal: Option<String>,
    /// Its newest restore drill.
    last_drill: Option<super::drills::DrillSummary>,
}

impl From<&InstanceView> for InstanceOption {
    fn from(i: &InstanceView) -> Self {
        let state = InstanceState::from_str(&i.state).ok();
        let restore_refusal = match (InstanceType::from_str(&i.instance_type), state) {
            (Ok(t), Some(st)) => steward_core::backup::check_restore_target(&i.name, t, st)
                .err()
                .map(|r| r.hint()),
            _ => Some("unknown type or state".into()),
        };
        Self {
            name: i.name.clone(),
            instance_type: i.instance_type.clone(),
            release: i.release.clone(),
            state: i.state.clone(),
            state_label: state
                .map(|s| s.label().to_owned())
                .unwrap_or_else(|| i.state.clone()),
            restore_refusal,
            last_drill: i.last_drill.as_ref().map(super::drills::summary),
        }
    }
}

/// A backup or restore job with its stage and progress.
#[derive(Serialize)]
struct JobRow {
    id: i64,
    kind: String,
    kind_label: String,
    state: String,
    state_label: &'static str,
    active: bool,
    stage: Option<String>,
    progress_done: u64,
    progress_total: u64,
    /// Whole percent done in the current stage, when the stage has a known total.
    percent: Option<u64>,
    created_by: String,
    created_at: String,
    finished_at: Option<String>,
    last_error: Option<String>,
}

impl From<&JobView> for JobRow {
    fn from(j: &JobView) -> Self {
        let percent = (j.progress_total > 0).then(|| {
            (u128::from(j.progress_done.min(j.progress_total)) * 100 / u128::from(j.progress_total))
                as u64
        });
        let mut kind_label = j.kind.replace('_', " ");
        if let Some(first) = kind_label.get_mut(..1) {
            first.make_ascii_uppercase();
        }
        Self {
            id: j.id,
            kind: j.kind.clone(),
            kind_label,
            state: j.state.clone(),
            state_label: match j.state.as_str() {
                "queued" => "Queued",
                "running" => "Running",
                "succeeded" => "Succeeded",
                "failed" => "Failed",
                _ => "Unknown",
            },
            active: matches!(j.state.as_str(), "queued" | "running"),
            stage: j.stage.as_deref().map(|s| s.replace('_', " ")),
            progress_done: j.progress_done,
            progress_total: j.progress_total,
            percent,
            created_by: j.created_by.clone(),
            created_at: j.created_at.format(DATE).to_string(),
            finished_at: j.finished_at.map(|t| t.format(DATE).to_string()),
            last_error: j.last_error.as_deref().map(sentence),
        }
    }
}

/// The jobs the tab lists: every active one, then the most recent finished ones.
fn backup_jobs(jobs: &[JobView]) -> Vec<JobRow> {
    let relevant = |j: &&JobView| {
        j.kind.contains("backup") || j.kind.contains("restore") || j.kind == VERIFY_JOB
    };
    let active = jobs
        .iter()
        .filter(relevant)
        .filter(|j| matches!(j.state.as_str(), "queued" | "running"));
    let finished = jobs
        .iter()
        .filter(relevant)
        .filter(|j| !matches!(j.state.as_str(), "queued" | "running"))
        .take(RECENT_JOBS);
    active.chain(finished).map(JobRow::from).collect()
}

#[derive(Serialize)]
struct AlertRow {
    level: String,
    instance: Option<String>,
    message: String,
    at: String,
}

impl From<&AlertView> for AlertRow {
    fn from(a: &AlertView) -> Self {
        Self {
            level: a.level.clone(),
            instance: a.instance.clone(),
            message: sentence_naming(&a.message, &[a.instance.as_deref().unwrap_or("")]),
            at: a.at.format(DATE).to_string(),
        }
    }
}

/// Database versus backup storage, for the chosen instance and for all of them.
#[derive(Serialize)]
struct StorageSummary {
    database_bytes: u64,
    backup_bytes: u64,
    backup_count: u64,
    total_database_bytes: u64,
    /// `None` while the repository cannot be listed.
    total_backup_bytes: Option<u64>,
}

impl StorageSummary {
    fn of(storage: &StoragePage) -> Self {
        let mine = storage.chosen.as_ref();
        Self {
            database_bytes: mine.map_or(0, |i| i.database_bytes),
            backup_bytes: mine.map_or(0, |i| i.backup_bytes),
            backup_count: mine.map_or(0, |i| i.backup_count),
            total_database_bytes: storage.total_database_bytes,
            total_backup_bytes: storage.total_backup_bytes,
        }
    }
}

/// The instances a form's picker offers, with the type and release its options show: all of
/// them when there are at most [`PICKER_MAX`] (the rule of `paging::instance_choices`), else
/// `None`, and the form asks for a name, which the service checks. Also the first instance by
/// name (`None`: there are none).
pub(super) struct Picker {
    pub choices: Option<Vec<InstanceView>>,
    pub first: Option<String>,
}

pub(super) fn picker(s: &Services, actor: &Actor) -> Result<Picker, ServiceError> {
    let page = |limit| {
        s.list_instances_page(
            actor,
            &InstanceListQuery {
                limit: Some(limit),
                ..Default::default()
            },
        )
    };
    // The first instance and how many there are; all of them only when a select shows them.
    let head = page(1)?;
    let first = head.instances.first().map(|i| i.name.clone());
    let choices = match head.total {
        0 | 1 => Some(head.instances),
        n if n <= PICKER_MAX => Some(page(PICKER_MAX)?.instances),
        _ => None,
    };
    Ok(Picker { choices, first })
}

/// The New backup form's values, kept when it is shown again with an error.
#[derive(Default, Serialize)]
struct Draft {
    label: String,
    notes: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct PickerQuery {
    #[serde(default)]
    instance: String,
}

/// `GET /backups?instance=NAME&q=PART&page=N` (the first instance without one; the storage
/// table's page and name filter)
pub async fn list(
    State(st): State<SharedState>,
    session: WebSession,
    Query(q): Query<PickerQuery>,
    Query(paging): Query<PageQuery>,
) -> Response {
    if let Err(e) = paging.number() {
        return Page::new(&session, "backups", "Backup & Restore").service_error(&st, &e);
    }
    let wanted = q.instance.trim().to_owned();
    page_with(
        &st,
        &session,
        wanted,
        paging,
        StatusCode::OK,
        None,
        Draft::default(),
        None,
    )
    .await
}

/// Everything the list shows, loaded in one blocking call.
struct Loaded {
    /// The picker's instances (`None`: too many, the picker is a name field).
    choices: Option<Vec<InstanceView>>,
    /// Whether there is any instance.
    any: bool,
    chosen: Option<String>,
    /// The chosen instance, when there is one by that name.
    current: Option<InstanceView>,
    backups: Result<Vec<BackupView>, ServiceError>,
    jobs: Vec<JobView>,
    storage: StoragePage,
    alerts: Vec<AlertView>,
    /// The restorable range, for the Restore to a moment card (`pitr.rs`).
    restore_at: Option<super::pitr::Loaded>,
}

async fn list_page(
    st: &SharedState,
    session: &WebSession,
    wanted: String,
    status: StatusCode,
    error: Option<String>,
    draft: Draft,
) -> Response {
    let paging = PageQuery::default();
    page_with(st, session, wanted, paging, status, error, draft, None).await
}

/// The tab with the Restore to a moment form shown again, with its values and refusal.
pub(super) async fn tab_page(
    st: &SharedState,
    session: &WebSession,
    wanted: String,
    status: StatusCode,
    form: super::pitr::FormState,
) -> Response {
    let paging = PageQuery::default();
    page_with(
        st,
        session,
        wanted,
        paging,
        status,
        None,
        Draft::default(),
        Some(form),
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn page_with(
    st: &SharedState,
    session: &WebSession,
    wanted: String,
    paging: PageQuery,
    status: StatusCode,
    error: Option<String>,
    draft: Draft,
    restore_at: Option<super::pitr::FormState>,
) -> Response {
    let actor = session.actor.clone();
    let query = InstanceListQuery {
        contains: paging.contains(),
        offset: paging.offset().unwrap_or(0),
        limit: Some(PAGE_SIZE),
        ..Default::default()
    };
    let loaded = st
        .run(move |s| {
            let picker = picker(s, &actor)?;
            let chosen = if wanted.is_empty() {
                picker.first.clone()
            } else {
                Some(wanted)
            };
            let alerts = s.list_alerts(&actor, ALERTS)?;
            let storage = s.storage_page(&actor, &query, chosen.as_deref())?;
            let any = picker.first.is_some();
            let Some(name) = chosen.clone() else {
                return Ok(Loaded {
                    choices: picker.choices,
                    any,
                    chosen,
                    current: None,
                    backups: Ok(Vec::new()),
                    jobs: Vec::new(),
                    storage,
                    alerts,
                    restore_at: None,
                });
            };
            Ok(Loaded {
                restore_at: super::pitr::load(s, &actor, &name),
                backups: s.list_backups(&actor, &name),
                current: s.show_instance(&actor, &name).ok(),
                jobs: {
                    // This instance's jobs and the verifies of every instance's backups.
                    let mut jobs = s.list_jobs(&actor, Some(&name), None)?;
                    jobs.extend(s.list_jobs(&actor, Some(ALL_INSTANCES), None)?);
                    jobs.sort_by_key(|j| std::cmp::Reverse(j.id));
                    jobs
                },
                choices: picker.choices,
                any,
                storage,
                chosen,
                alerts,
            })
        })
        .await;
    let page = Page::new(session, "backups", "Backup & Restore");
    let loaded = match loaded {
        Ok(v) => v,
        Err(e) => return page.service_error(st, &e),
    };
    let chosen = loaded.chosen.clone().unwrap_or_default();
    // An unknown instance in the address still shows the picker, with the reason.
    let (backups, status, error) = match loaded.backups {
        Ok(b) => (b, status, error),
        Err(e) => (
            Vec::new(),
            status_of(e.kind),
            Some(sentence_naming(&e.message, &[&chosen])),
        ),
    };
    let rows: Vec<BackupRow> = backups.iter().map(BackupRow::from).collect();
    let any_actions = rows
        .iter()
        .any(|r| r.can_edit || r.can_delete || r.can_restore);
    let instances: Option<Vec<InstanceOption>> = loaded
        .choices
        .as_ref()
        .map(|c| c.iter().map(InstanceOption::from).collect());
    let current = loaded.current.as_ref().map(InstanceOption::from);
    let jobs = backup_jobs(&loaded.jobs);
    let alerts: Vec<AlertRow> = loaded.alerts.iter().map(AlertRow::from).collect();
    let storage = StorageSummary::of(&loaded.storage);
    let pager = Pager::new(
        "/backups",
        &paging,
        loaded.storage.total,
        &[("instance", &chosen)],
    );
    let restore_at = super::pitr::section(
        loaded.restore_at,
        session.actor.role,
        loaded.choices.as_deref(),
        restore_at,
    );
    page.render(
        st,
        status,
        "backups.html",
        context! {
            any_instances => loaded.any,
            instances => instances,
            instance => chosen,
            current => current,
            backups => rows,
            any_actions => any_actions,
            jobs => jobs,
            storage => storage,
            storage_rows => loaded.storage.instances,
            pager => pager,
            alerts => alerts,
            draft => draft,
            can_create => authorize(session.actor.role, Action::CreateBackup).is_ok(),
            can_verify => authorize(session.actor.role, Action::VerifyBackups).is_ok(),
            restore_at => restore_at,
            error => error,
        },
    )
}

/// `POST /backups/new` (instance, label, notes)
pub async fn create(State(st): State<SharedState>, form: Posted) -> Response {
    let instance = form.field("instance").trim().to_owned();
    let draft = Draft {
        label: form.field("label").trim().to_owned(),
        notes: form.field("notes").trim().to_owned(),
    };
    let actor = form.session.actor.clone();
    let (name, label, notes) = (instance.clone(), draft.label.clone(), draft.notes.clone());
    match st
        .run(move |s| {
            let notes = Some(notes.as_str()).filter(|n| !n.is_empty());
            s.create_backup(&actor, &name, &label, notes)
        })
        .await
    {
        Ok(b) => redirect_with_notice(
            &st,
            &list_url(&b.instance),
            &format!("Backup of {} is being created.", b.instance),
        ),
        Err(e) => {
            let error = sentence_naming(&e.message, &[&instance]);
            list_page(
                &st,
                &form.session,
                instance,
                status_of(e.kind),
                Some(error),
                draft,
            )
            .await
        }
    }
}

/// The backup `id`, or the error page to answer with.
async fn load_backup(
    st: &SharedState,
    session: &WebSession,
    page: &Page<'_>,
    id: i64,
) -> Result<BackupView, Response> {
    let actor = session.actor.clone();
    st.run(move |s| s.show_backup(&actor, id))
        .await
        .map_err(|e| page.service_error(st, &e))
}

/// Why a backup offers no `what` action, as an error page: the service's refusal when there
/// was one (`refusal`, with its status), else a 409 saying why.
fn not_offered(
    st: &SharedState,
    page: &Page<'_>,
    b: &BackupView,
    what: &str,
    refusal: Option<(StatusCode, String)>,
) -> Response {
    if let Some((status, message)) = refusal {
        return page.error(st, status, "Not possible", &message);
    }
    let message = if b.damaged && what == "restored" {
        format!(
            "This backup is damaged and cannot be restored: {}.",
            b.damage.as_deref().unwrap_or("a verify found it damaged")
        )
    } else if b.kind == "system" {
        format!("System backups cannot be {what}; they can only be restored.")
    } else {
        format!(
            "This backup cannot be {what} while its status is {}.",
            status_label(&b.status).to_lowercase()
        )
    };
    page.error(st, StatusCode::CONFLICT, "Not possible", &message)
}

// ---------------------------------------------------------------------------------------
// edit
// ---------------------------------------------------------------------------------------

/// `GET /backups/{id}/edit`: the label and notes form.
pub async fn edit_form(
    State(st): State<SharedState>,
    session: WebSession,
    Path(id): Path<i64>,
) -> Response {
    edit_page(&st, &session, id, StatusCode::OK, None, None).await
}

async fn edit_page(
    st: &SharedState,
    session: &WebSession,
    id: i64,
    status: StatusCode,
    error: Option<String>,
    draft: Option<Draft>,
) -> Response {
    let page = Page::new(session, "backups", "Edit backup");
    if let Err(denied) = authorize(session.actor.role, Action::EditBackup) {
        return page.service_error(st, &ServiceError::from(denied));
    }
    let b = match load_backup(st, session, &page, id).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !b.can_edit {
        return not_offered(st, &page, &b, "edited", error.map(|e| (status, e)));
    }
    let draft = draft.unwrap_or_else(|| Draft {
        label: b.label.clone(),
        notes: b.notes.clone(),
    });
    page.render(
        st,
        status,
        "backup_edit.html",
        context! { backup => BackupRow::from(&b), draft => draft, error => error },
    )
}

/// `POST /backups/{id}/edit` (label, notes)
pub async fn edit(State(st): State<SharedState>, Path(id): Path<i64>, form: Posted) -> Response {
    let draft = Draft {
        label: form.field("label").trim().to_owned(),
        notes: form.field("notes").trim().to_owned(),
    };
    let actor = form.session.actor.clone();
    let (label, notes) = (draft.label.clone(), draft.notes.clone());
    match st
        .run(move |s| s.edit_backup(&actor, id, Some(&label), Some(&notes)))
        .await
    {
        Ok(b) => redirect_with_notice(
            &st,
            &list_url(&b.instance),
            &format!(
                "Saved backup {} of {}.",
                BackupRow::from(&b).label,
                b.instance
            ),
        ),
        Err(e) => {
            edit_page(
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

// ---------------------------------------------------------------------------------------
// delete
// ---------------------------------------------------------------------------------------

/// `GET /backups/{id}/delete`: the confirmation page.
pub async fn confirm_delete(
    State(st): State<SharedState>,
    session: WebSession,
    Path(id): Path<i64>,
) -> Response {
    delete_page(&st, &session, id, StatusCode::OK, None).await
}

async fn delete_page(
    st: &SharedState,
    session: &WebSession,
    id: i64,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let page = Page::new(session, "backups", "Delete backup");
    if let Err(denied) = authorize(session.actor.role, Action::DeleteBackup) {
        return page.service_error(st, &ServiceError::from(denied));
    }
    let b = match load_backup(st, session, &page, id).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !b.can_delete {
        return not_offered(st, &page, &b, "deleted", error.map(|e| (status, e)));
    }
    page.render(
        st,
        status,
        "backup_delete.html",
        context! { backup => BackupRow::from(&b), error => error },
    )
}

/// `POST /backups/{id}/delete`
pub async fn delete(State(st): State<SharedState>, Path(id): Path<i64>, form: Posted) -> Response {
    let actor = form.session.actor.clone();
    match st.run(move |s| s.delete_backup(&actor, id)).await {
        Ok(b) => redirect_with_notice(
            &st,
            &list_url(&b.instance),
            &format!(
                "Deleted backup {} of {}.",
                BackupRow::from(&b).label,
                b.instance
            ),
        ),
        Err(e) => {
            delete_page(
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

// ---------------------------------------------------------------------------------------
// restore: select a target, review, confirm
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct TargetQuery {
    #[serde(default)]
    target: String,
}

/// `GET /backups/{id}/restore?target=T`: select the target instance (sandboxes first).
pub async fn select_target(
    State(st): State<SharedState>,
    session: WebSession,
    Path(id): Path<i64>,
    Query(q): Query<TargetQuery>,
) -> Response {
    target_page(&st, &session, id, q.target.trim(), StatusCode::OK, None).await
}

async fn target_page(
    st: &SharedState,
    session: &WebSession,
    id: i64,
    selected: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let page = Page::new(session, "backups", "Restore backup");
    if let Err(denied) = authorize(session.actor.role, Action::RestoreBackup) {
        return page.service_error(st, &ServiceError::from(denied));
    }
    let actor = session.actor.clone();
    let loaded = st
        .run(move |s| Ok((s.show_backup(&actor, id)?, picker(s, &actor)?)))
        .await;
    let (b, picker) = match loaded {
        Ok(v) => v,
        Err(e) => return page.service_error(st, &e),
    };
    if !b.can_restore {
        return not_offered(st, &page, &b, "restored", error.map(|e| (status, e)));
    }
    // Offered by the same rule the restore service applies, asked per instance; with too many
    // instances for a select, the target is typed and the review asks the service.
    let (ready, refused): (Vec<InstanceOption>, Vec<InstanceOption>) = picker
        .choices
        .iter()
        .flatten()
        .map(InstanceOption::from)
        .partition(|i| i.restore_refusal.is_none());
    page.render(
        st,
        status,
        "restore_target.html",
        context! {
            backup => BackupRow::from(&b),
            typed => picker.choices.is_none(),
            any => picker.first.is_some(),
            ready => ready,
            refused => refused,
            selected => selected,
            error => error,
        },
    )
}

/// `GET /backups/{id}/restore/review?target=T`: what the restore will do, and the
/// Restore button.
pub async fn review(
    State(st): State<SharedState>,
    session: WebSession,
    Path(id): Path<i64>,
    Query(q): Query<TargetQuery>,
) -> Response {
    let target = q.target.trim();
    if target.is_empty() {
        return target_page(
            &st,
            &session,
            id,
            "",
            StatusCode::BAD_REQUEST,
            Some("Select a target instance.".into()),
        )
        .await;
    }
    review_page(&st, &session, id, target, StatusCode::OK, None).await
}

async fn review_page(
    st: &SharedState,
    session: &WebSession,
    id: i64,
    target: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let page = Page::new(session, "backups", "Review restore");
    if let Err(denied) = authorize(session.actor.role, Action::RestoreBackup) {
        return page.service_error(st, &ServiceError::from(denied));
    }
    let actor = session.actor.clone();
    let name = target.to_owned();
    let typed = target.to_owned();
    let loaded = st
        .run(move |s| Ok((s.show_backup(&actor, id)?, s.show_instance(&actor, &name))))
        .await;
    let (b, target) = match loaded {
        Ok((b, Ok(t))) => (b, t),
        Ok((_, Err(e))) => {
            // An unknown target: choose again (the name as typed), with the reason.
            return target_page(
                st,
                session,
                id,
                &typed,
                status_of(e.kind),
                Some(sentence_naming(&e.message, &[&typed])),
            )
            .await;
        }
        Err(e) => return page.service_error(st, &e),
    };
    if !b.can_restore {
        return not_offered(st, &page, &b, "restored", error.map(|e| (status, e)));
    }
    page.render(
        st,
        status,
        "restore_review.html",
        context! {
            backup => BackupRow::from(&b),
            target => InstanceOption::from(&target),
            error => error,
        },
    )
}

/// `POST /backups/{id}/restore` (target)
pub async fn restore(State(st): State<SharedState>, Path(id): Path<i64>, form: Posted) -> Response {
    let target = form.field("target").trim().to_owned();
    let actor = form.session.actor.clone();
    let name = target.clone();
    match st.run(move |s| s.restore_backup(&actor, id, &name)).await {
        Ok(started) => redirect_with_notice(
            &st,
            &list_url(&started.target.name),
            &format!(
                "Restoring {} into {}.",
                BackupRow::from(&started.backup).label,
                started.target.name
            ),
        ),
        Err(e) if target.is_empty() => {
            target_page(
                &st,
                &form.session,
                id,
                "",
                status_of(e.kind),
                Some(sentence(&e.message)),
            )
            .await
        }
        Err(e) => {
            let error = sentence_naming(&e.message, &[&target]);
            review_page(
                &st,
                &form.session,
                id,
                &target,
                status_of(e.kind),
                Some(error),
            )
            .await
        }
    }
}

// ---------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------

/// `POST /backups/verify` (instance; scope `instance` or `all`; mode `structure`,
/// `read_data` or `sample`; sample_percent): starts a verify job and returns to the list,
/// where the job shows with its progress.
pub async fn verify(State(st): State<SharedState>, form: Posted) -> Response {
    let instance = form.field("instance").trim().to_owned();
    let all = form.field("scope") == "all";
    let mode = form.field("mode").trim().to_owned();
    let percent = form.field("sample_percent").trim().to_owned();
    let actor = form.session.actor.clone();
    let name = instance.clone();
    let started = st
        .run(move |s| {
            // The percentage only matters for a sample (the form always sends the field).
            let sample_percent = match mode.as_str() {
                "sample" => Some(percent.parse::<f64>().map_err(|_| {
                    ServiceError::invalid(
                        "invalid_sample",
                        format!(
                            "enter the percentage of the data to read, e.g. 10 (got {percent:?})"
                        ),
                    )
                })?),
                _ => None,
            };
            let request = VerifyRequest {
                backup_id: None,
                instance: (!all).then_some(name),
                all,
                mode: Some(mode),
                sample_percent,
            };
            let (scope, mode) = request.parse()?;
            s.start_verify(&actor, &scope, mode)
        })
        .await;
    match started {
        Ok(v) => redirect_with_notice(
            &st,
            &list_url(&instance),
            &format!(
                "Verifying {} backup{} of {} ({}) as job {}.",
                v.backups,
                if v.backups == 1 { "" } else { "s" },
                v.job.target,
                v.mode.replace('_', " "),
                v.job.id
            ),
        ),
        Err(e) => {
            let error = sentence_naming(&e.message, &[&instance]);
            list_page(
                &st,
                &form.session,
                instance,
                status_of(e.kind),
                Some(error),
                Draft::default(),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::web::render::render_bare;

    fn backup(id: i64, kind: &str, label: &str, notes: &str) -> BackupView {
        let at = Utc.with_ymd_and_hms(2031, 3, 14, 0, 30, 0).unwrap();
        let system = kind == "system";
        BackupView {
            id,
            instance: "prod-a".into(),
            kind: kind.into(),
            label: label.into(),
            notes: notes.into(),
            status: "completed".into(),
            release: "9.1".into(),
            created_by: if system { "System" } else { "admin" }.into(),
            created_at: at,
            completed_at: Some(at),
            expires_at: at + chrono::Duration::days(3),
            size_bytes: Some(3 * 1024 * 1024),
            stored_bytes: Some(1024),
            job_id: Some(id),
            error: None,
            can_edit: !system,
            can_delete: !system,
            can_restore: true,
            damaged: false,
            damage: None,
            verification: None,
            last_drill: None,
        }
    }

    fn job(id: i64, kind: &str, state: &str, done: u64, total: u64) -> JobView {
        JobView {
            id,
            kind: kind.into(),
            target: "prod-a".into(),
            state: state.into(),
            stage: Some("snapshot".into()),
            progress_done: done,
            progress_total: total,
            params: serde_json::Value::Null,
            result: None,
            last_error: None,
            created_by: "admin".into(),
            created_at: Utc.with_ymd_and_hms(2031, 3, 14, 0, 30, 0).unwrap(),
            started_at: None,
            finished_at: None,
            node: None,
            stages: Vec::new(),
        }
    }

    #[test]
    fn rows_describe_backups_for_people() {
        let r = BackupRow::from(&backup(1, "on_demand", "before change", "  "));
        assert_eq!(r.kind_label, "On-demand");
        assert_eq!(r.status_label, "Completed");
        assert_eq!(r.created_at, "2031-03-14 00:30 UTC");
        assert_eq!(r.expires_at, "2031-03-17 00:30 UTC");
        assert_eq!(r.notes, None, "blank notes are not shown");
        let unlabelled = BackupRow::from(&backup(2, "system", "", ""));
        assert_eq!(unlabelled.label, "System backup of 2031-03-14 00:30 UTC");
    }

    #[test]
    fn jobs_list_active_work_first_with_progress() {
        let jobs = [
            job(5, "backup", "succeeded", 10, 10),
            job(4, "restore", "running", 1, 3),
            job(3, "update", "running", 0, 0),
            job(2, "backup", "queued", 0, 0),
        ];
        let rows = backup_jobs(&jobs);
        let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
        assert_eq!(ids, [4, 2, 5], "active first, other kinds left out");
        assert_eq!(rows[0].percent, Some(33));
        assert_eq!(rows[0].kind_label, "Restore");
        assert_eq!(rows[1].percent, None, "no total yet");
        assert_eq!(rows[2].percent, Some(100));
        assert_eq!(
            JobRow::from(&job(1, "backup", "running", u64::MAX, u64::MAX)).percent,
            Some(100)
        );
    }

    #[test]
    fn the_list_escapes_and_offers_only_allowed_actions() {
        let rows = [
            BackupRow::from(&backup(7, "on_demand", "<script>x</script>", "a & <b>")),
            BackupRow::from(&backup(8, "system", "System backup 2031-03-14", "")),
        ];
        let instances = [InstanceOption {
            name: "prod-a".into(),
            instance_type: "production".into(),
            release: "9.1".into(),
            state: "available".into(),
            state_label: "Available".into(),
            restore_refusal: None,
            last_drill: None,
        }];
        let render = |can_create: bool| {
            render_bare(
                "backups.html",
                context! {
                    title => "Backup & Restore", nav => "backups", user => context! { name => "a", role => "Viewer" },
                    csrf => "tok", notice => (), latest_alert => (), error => (),
                    any_instances => true, instances => instances, instance => "prod-a", current => instances.first(),
                    backups => rows, any_actions => true, jobs => Vec::<JobRow>::new(),
                    storage => (), draft => Draft::default(), can_create => can_create,
                    alerts => [AlertRow { level: "error".into(), instance: Some("prod-a".into()),
                        message: "<i>failed</i>.".into(), at: "2031-03-14 00:31 UTC".into() }],
                },
            )
        };
        let html = render(true);
        assert!(
            html.contains("&lt;script&gt;x&lt;&#x2f;script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<script>x"), "{html}");
        assert!(html.contains("a &amp; &lt;b&gt;"));
        assert!(html.contains("&lt;i&gt;failed"));
        assert!(html.contains("/backups/7/edit") && html.contains("/backups/7/delete"));
        assert!(html.contains("/backups/8/restore"));
        assert!(!html.contains("/backups/8/edit") && !html.contains("/backups/8/delete"));
        assert!(html.contains("id=\"new-backup-form\""));
        let readonly = render(false);
        assert!(!readonly.contains("new-backup-form"));
        assert!(readonly.contains("id=\"read-only\""));
    }

    #[test]
    fn damage_shortens_pack_and_chunk_ids() {
        let id = "9200dd5cb1f567f577bc5bf0e2fd2094d8a18d5751bb7d45266cef4dd6caaca1";
        assert_eq!(
            shorten_ids(&format!(
                "found 2 corrupt chunks in pack {id}: chunk {id}, 2026-12-03"
            )),
            "found 2 corrupt chunks in pack 9200dd5cb1f5…: chunk 9200dd5cb1f5…, 2026-12-03"
        );
    }

    #[test]
    fn redirects_encode_the_instance() {
        assert_eq!(list_url("prod-a"), "/backups?instance=prod-a");
        assert_eq!(list_url("a&b"), "/backups?instance=a%26b");
    }
}
