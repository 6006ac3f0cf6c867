//! The Notifications tab: the communications schedule (who is told about each event, and
//! through which channels), editable by those who manage notifications and read-only for
//! others; an instance's extra email recipients; webhooks (the signing secret is shown once,
//! on the page that answers the add); and the delivery log, filterable by instance. Also the
//! Dismiss button of the in-product alert banner above every page (`/alerts/{id}/dismiss`),
//! which hides the alert for the signed-in user only.
//!
//! The services decide; the page offers the editing forms only when `authorize` allows
//! `ManageNotifications`. Removing a recipient and deleting a webhook go through a
//! confirmation page.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::header::REFERER;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use minijinja::context;
use serde::{Deserialize, Serialize};
use steward_core::notify::{Audience, Channel, Event};
use steward_core::policy::{Action, authorize};

use super::render::{Page, query_value, sentence, sentence_naming};
use super::session::{Posted, WebSession, redirect_with_notice};
use crate::SharedState;
use crate::api::status_of;
use crate::error::ServiceError;
use crate::services::notify::{DeliveryView, RecipientView, ScheduleEntryView, WebhookView};

/// How many deliveries the log shows.
const LOG_LIMIT: i64 = 100;
const DATE: &str = "%Y-%m-%d %H:%M:%S UTC";
/// For table cells under a "UTC" heading.
const CELL_DATE: &str = "%Y-%m-%d %H:%M:%S";

/// The tab's routes, and the banner's Dismiss.
pub fn routes() -> Router<SharedState> {
    Router::new()
        .route("/notifications", get(page))
        .route("/notifications/schedule/{event}", post(save_schedule))
        .route(
            "/notifications/schedule/{event}/reset",
            post(reset_schedule),
        )
        .route("/notifications/recipients", post(add_recipient))
        .route(
            "/notifications/recipients/remove",
            get(confirm_remove_recipient).post(remove_recipient),
        )
        .route("/notifications/webhooks", post(add_webhook))
        .route(
            "/notifications/webhooks/{id}/delete",
            get(confirm_delete_webhook).post(delete_webhook),
        )
        .route("/alerts/{id}/dismiss", post(dismiss_alert))
}

/// `/notifications?instance=NAME&log=NAME`, with the names encoded.
fn page_url(instance: &str, log: &str, anchor: &str) -> String {
    let mut url = format!("/notifications?instance={}", query_value(instance));
    if !log.is_empty() {
        url.push_str(&format!("&log={}", query_value(log)));
    }
    if !anchor.is_empty() {
        url.push('#');
        url.push_str(anchor);
    }
    url
}

/// One row of the communications schedule as the table shows it.
#[derive(Serialize)]
struct ScheduleRow {
    event: String,
    label: String,
    audience: String,
    audience_label: &'static str,
    email: bool,
    webhook: bool,
    in_product: bool,
    customized: bool,
}

impl From<&ScheduleEntryView> for ScheduleRow {
    fn from(e: &ScheduleEntryView) -> Self {
        let has = |c: Channel| e.channels.iter().any(|x| x == c.as_str());
        Self {
            event: e.event.clone(),
            label: e.label.clone(),
            audience: e.audience.clone(),
            audience_label: e
                .audience
                .parse::<Audience>()
                .map(Audience::label)
                .unwrap_or("Unknown"),
            email: has(Channel::Email),
            webhook: has(Channel::Webhook),
            in_product: has(Channel::InProduct),
            customized: e.customized,
        }
    }
}

#[derive(Serialize)]
struct RecipientRow {
    email: String,
    added_at: String,
    added_by: String,
}

impl From<&RecipientView> for RecipientRow {
    fn from(r: &RecipientView) -> Self {
        Self {
            email: r.email.clone(),
            added_at: r.added_at.format(DATE).to_string(),
            added_by: r.added_by.clone(),
        }
    }
}

#[derive(Serialize)]
struct WebhookRow {
    id: i64,
    url: String,
    created_at: String,
    created_by: String,
}

impl From<&WebhookView> for WebhookRow {
    fn from(w: &WebhookView) -> Self {
        Self {
            id: w.id,
            url: w.url.clone(),
            created_at: w.created_at.format(DATE).to_string(),
            created_by: w.created_by.clone(),
        }
    }
}

/// One delivery as the log shows it.
#[derive(Serialize)]
struct DeliveryRow {
    id: i64,
    event: String,
    event_label: String,
    instance: Option<String>,
    created_at: String,
    channel: String,
    channel_label: &'static str,
    /// The address, or the webhook's URL.
    recipient: String,
    state: String,
    state_label: &'static str,
    attempts: i64,
    next_attempt_at: Option<String>,
    sent_at: Option<String>,
    last_error: Option<String>,
}

impl DeliveryRow {
    fn of(d: &DeliveryView, webhooks: &[WebhookView]) -> Self {
        let recipient = d
            .recipient
            .strip_prefix("webhook:")
            .and_then(|id| id.parse::<i64>().ok())
            .and_then(|id| webhooks.iter().find(|w| w.id == id))
            .map(|w| w.url.clone())
            .unwrap_or_else(|| d.recipient.clone());
        Self {
            id: d.id,
            event: d.event.clone(),
            event_label: d
                .event
                .parse::<Event>()
                .map(|e| e.label().to_owned())
                .unwrap_or_else(|_| d.event.clone()),
            instance: d.instance.clone(),
            created_at: d.created_at.format(CELL_DATE).to_string(),
            channel: d.channel.clone(),
            channel_label: d
                .channel
                .parse::<Channel>()
                .map(Channel::label)
                .unwrap_or("Unknown"),
            recipient,
            state: d.state.clone(),
            state_label: match d.state.as_str() {
                "pending" => "Waiting",
                "sent" => "Sent",
                "failed" => "Failed",
                _ => "Unknown",
            },
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at.map(|t| t.format(CELL_DATE).to_string()),
            sent_at: d.sent_at.map(|t| t.format(CELL_DATE).to_string()),
            last_error: d.last_error.clone(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct PageQuery {
    /// Whose extra recipients to show (the first instance when empty).
    #[serde(default)]
    instance: String,
    /// The delivery log's instance filter (every instance when empty).
    #[serde(default)]
    log: String,
}

/// What a failed form leaves on the page: where the error goes and what was typed.
#[derive(Default, Serialize)]
struct Extras {
    /// Above the schedule.
    schedule_error: Option<String>,
    recipient_error: Option<String>,
    recipient_draft: String,
    webhook_error: Option<String>,
    webhook_draft: String,
    /// A webhook just added and its secret, shown this once.
    created: Option<CreatedRow>,
}

#[derive(Serialize)]
struct CreatedRow {
    id: i64,
    url: String,
    secret: String,
}

struct Loaded {
    schedule: Vec<ScheduleEntryView>,
    /// The pickers' instances (`None`: too many for a select, a name is typed).
    instances: Option<Vec<String>>,
    /// Whether there is any instance.
    any: bool,
    chosen: Option<String>,
    recipients: Result<Vec<RecipientView>, ServiceError>,
    webhooks: Vec<WebhookView>,
    log: Vec<DeliveryView>,
}

/// `GET /notifications?instance=NAME&log=NAME`
async fn page(
    State(st): State<SharedState>,
    session: WebSession,
    Query(q): Query<PageQuery>,
) -> Response {
    render_page(&st, &session, q, StatusCode::OK, Extras::default()).await
}

async fn render_page(
    st: &SharedState,
    session: &WebSession,
    q: PageQuery,
    status: StatusCode,
    extras: Extras,
) -> Response {
    let actor = session.actor.clone();
    let wanted = q.instance.trim().to_owned();
    let log_filter = q.log.trim().to_owned();
    let filter = log_filter.clone();
    let loaded = st
        .run(move |s| {
            let schedule = s.notification_schedule(&actor)?;
            let picker = super::backups::picker(s, &actor)?;
            let instances: Option<Vec<String>> = picker
                .choices
                .map(|c| c.into_iter().map(|i| i.name).collect());
            let any = picker.first.is_some();
            let chosen = if wanted.is_empty() {
                picker.first
            } else {
                Some(wanted)
            };
            let recipients = match &chosen {
                Some(name) => s.list_recipients(&actor, name),
                None => Ok(Vec::new()),
            };
            let webhooks = s.list_webhooks(&actor)?;
            let log = s.notification_log(
                &actor,
                Some(filter.as_str()).filter(|f| !f.is_empty()),
                LOG_LIMIT,
            )?;
            Ok(Loaded {
                schedule,
                instances,
                any,
                chosen,
                recipients,
                webhooks,
                log,
            })
        })
        .await;
    let page = Page::new(session, "notifications", "Notifications");
    let loaded = match loaded {
        Ok(v) => v,
        Err(e) => return page.service_error(st, &e),
    };
    let chosen = loaded.chosen.clone().unwrap_or_default();
    // An unknown instance in the address still shows the picker, with the reason.
    let (recipients, status, recipient_error) = match loaded.recipients {
        Ok(r) => (r, status, extras.recipient_error),
        Err(e) => (
            Vec::new(),
            status_of(e.kind),
            Some(sentence_naming(&e.message, &[&chosen])),
        ),
    };
    let schedule: Vec<ScheduleRow> = loaded.schedule.iter().map(ScheduleRow::from).collect();
    let recipients: Vec<RecipientRow> = recipients.iter().map(RecipientRow::from).collect();
    let webhooks: Vec<WebhookRow> = loaded.webhooks.iter().map(WebhookRow::from).collect();
    let log: Vec<DeliveryRow> = loaded
        .log
        .iter()
        .map(|d| DeliveryRow::of(d, &loaded.webhooks))
        .collect();
    let audiences: Vec<(&str, &str)> = Audience::ALL
        .iter()
        .map(|a| (a.as_str(), a.label()))
        .collect();
    page.render(
        st,
        status,
        "notifications.html",
        context! {
            can_manage => authorize(session.actor.role, Action::ManageNotifications).is_ok(),
            schedule => schedule,
            audiences => audiences,
            instances => loaded.instances,
            any_instances => loaded.any,
            instance => chosen,
            recipients => recipients,
            webhooks => webhooks,
            log => log,
            log_instance => log_filter,
            schedule_error => extras.schedule_error,
            recipient_error => recipient_error,
            recipient_draft => extras.recipient_draft,
            webhook_error => extras.webhook_error,
            webhook_draft => extras.webhook_draft,
            created => extras.created,
        },
    )
}

/// `POST /notifications/schedule/{event}` (audience; email, webhook, in_product checkboxes)
async fn save_schedule(
    State(st): State<SharedState>,
    Path(event): Path<String>,
    form: Posted,
) -> Response {
    let audience = form.field("audience").to_owned();
    let channels: Vec<String> = Channel::ALL
        .iter()
        .filter(|c| !form.field(c.as_str()).is_empty())
        .map(|c| c.as_str().to_owned())
        .collect();
    let actor = form.session.actor.clone();
    match st
        .run(move |s| s.set_schedule(&actor, &event, &audience, &channels))
        .await
    {
        Ok(v) => redirect_with_notice(
            &st,
            "/notifications#schedule",
            &format!("Saved who hears about “{}” and how.", v.label),
        ),
        Err(e) => schedule_failed(&st, &form.session, e).await,
    }
}

/// `POST /notifications/schedule/{event}/reset`
async fn reset_schedule(
    State(st): State<SharedState>,
    Path(event): Path<String>,
    form: Posted,
) -> Response {
    let actor = form.session.actor.clone();
    match st.run(move |s| s.reset_schedule(&actor, &event)).await {
        Ok(v) => redirect_with_notice(
            &st,
            "/notifications#schedule",
            &format!("“{}” is back on the default schedule.", v.label),
        ),
        Err(e) => schedule_failed(&st, &form.session, e).await,
    }
}

async fn schedule_failed(st: &SharedState, session: &WebSession, e: ServiceError) -> Response {
    let extras = Extras {
        schedule_error: Some(sentence(&e.message)),
        ..Extras::default()
    };
    render_page(st, session, PageQuery::default(), status_of(e.kind), extras).await
}

/// `POST /notifications/recipients` (instance, email)
async fn add_recipient(State(st): State<SharedState>, form: Posted) -> Response {
    let instance = form.field("instance").trim().to_owned();
    let email = form.field("email").trim().to_owned();
    let actor = form.session.actor.clone();
    let (name, addr) = (instance.clone(), email.clone());
    match st.run(move |s| s.add_recipient(&actor, &name, &addr)).await {
        Ok(r) => redirect_with_notice(
            &st,
            &page_url(&r.instance, "", "recipients"),
            &format!("{} now receives {}'s notifications.", r.email, r.instance),
        ),
        Err(e) => {
            let extras = Extras {
                recipient_error: Some(sentence_naming(&e.message, &[&instance])),
                recipient_draft: email,
                ..Extras::default()
            };
            let q = PageQuery {
                instance,
                log: String::new(),
            };
            render_page(&st, &form.session, q, status_of(e.kind), extras).await
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RecipientQuery {
    #[serde(default)]
    instance: String,
    #[serde(default)]
    email: String,
}

/// `GET /notifications/recipients/remove?instance=NAME&email=ADDR`: the confirmation.
async fn confirm_remove_recipient(
    State(st): State<SharedState>,
    session: WebSession,
    Query(q): Query<RecipientQuery>,
) -> Response {
    remove_page(&st, &session, &q.instance, &q.email, StatusCode::OK, None)
}

fn remove_page(
    st: &SharedState,
    session: &WebSession,
    instance: &str,
    email: &str,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let page = Page::new(session, "notifications", "Remove recipient");
    if let Err(denied) = authorize(session.actor.role, Action::ManageNotifications) {
        return page.service_error(st, &ServiceError::from(denied));
    }
    page.render(
        st,
        status,
        "notifications_confirm.html",
        context! {
            heading => "Remove recipient",
            question => format!("Stop sending {instance}'s notifications to {email}?"),
            action => "/notifications/recipients/remove",
            fields => [("instance", instance), ("email", email)],
            cancel => page_url(instance, "", "recipients"),
            confirm_id => "confirm-remove",
            error => error,
        },
    )
}

/// `POST /notifications/recipients/remove` (instance, email)
async fn remove_recipient(State(st): State<SharedState>, form: Posted) -> Response {
    let instance = form.field("instance").trim().to_owned();
    let email = form.field("email").trim().to_owned();
    let actor = form.session.actor.clone();
    let (name, addr) = (instance.clone(), email.clone());
    match st
        .run(move |s| s.remove_recipient(&actor, &name, &addr))
        .await
    {
        Ok(()) => redirect_with_notice(
            &st,
            &page_url(&instance, "", "recipients"),
            &format!("{email} no longer receives {instance}'s notifications."),
        ),
        Err(e) => remove_page(
            &st,
            &form.session,
            &instance,
            &email,
            status_of(e.kind),
            Some(sentence_naming(&e.message, &[&instance])),
        ),
    }
}

/// `POST /notifications/webhooks` (url): answers with the page showing the secret once.
async fn add_webhook(State(st): State<SharedState>, form: Posted) -> Response {
    let url = form.field("url").trim().to_owned();
    let actor = form.session.actor.clone();
    let raw = url.clone();
    let result = st.run(move |s| s.create_webhook(&actor, &raw, None)).await;
    let (status, extras) = match result {
        Ok(c) => (
            StatusCode::CREATED,
            Extras {
                created: Some(CreatedRow {
                    id: c.webhook.id,
                    url: c.webhook.url,
                    secret: c.secret,
                }),
                ..Extras::default()
            },
        ),
        Err(e) => (
            status_of(e.kind),
            Extras {
                webhook_error: Some(sentence(&e.message)),
                webhook_draft: url,
                ..Extras::default()
            },
        ),
    };
    render_page(&st, &form.session, PageQuery::default(), status, extras).await
}

/// `GET /notifications/webhooks/{id}/delete`: the confirmation.
async fn confirm_delete_webhook(
    State(st): State<SharedState>,
    session: WebSession,
    Path(id): Path<i64>,
) -> Response {
    delete_webhook_page(&st, &session, id, StatusCode::OK, None).await
}

async fn delete_webhook_page(
    st: &SharedState,
    session: &WebSession,
    id: i64,
    status: StatusCode,
    error: Option<String>,
) -> Response {
    let page = Page::new(session, "notifications", "Delete webhook");
    if let Err(denied) = authorize(session.actor.role, Action::ManageNotifications) {
        return page.service_error(st, &ServiceError::from(denied));
    }
    let actor = session.actor.clone();
    let webhook = match st.run(move |s| s.list_webhooks(&actor)).await {
        Ok(all) => all.into_iter().find(|w| w.id == id),
        Err(e) => return page.service_error(st, &e),
    };
    let Some(webhook) = webhook else {
        return page.error(
            st,
            StatusCode::NOT_FOUND,
            "Not found",
            &format!("There is no webhook {id}."),
        );
    };
    page.render(
        st,
        status,
        "notifications_confirm.html",
        context! {
            heading => "Delete webhook",
            question => format!("Stop sending notifications to {}? This cannot be undone.", webhook.url),
            action => format!("/notifications/webhooks/{id}/delete"),
            fields => Vec::<(String, String)>::new(),
            cancel => "/notifications#webhooks",
            confirm_id => "confirm-delete-webhook",
            error => error,
        },
    )
}

/// `POST /notifications/webhooks/{id}/delete`
async fn delete_webhook(
    State(st): State<SharedState>,
    Path(id): Path<i64>,
    form: Posted,
) -> Response {
    let actor = form.session.actor.clone();
    match st.run(move |s| s.delete_webhook(&actor, id)).await {
        Ok(()) => redirect_with_notice(
            &st,
            "/notifications#webhooks",
            &format!("Deleted webhook {id}."),
        ),
        Err(e) => {
            delete_webhook_page(
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

/// Where to go back to after dismissing: the page the banner was on, if it was one of ours.
fn back_to(headers: &HeaderMap) -> String {
    let path = headers
        .get(REFERER)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| reqwest::Url::parse(r).ok())
        .map(|u| match u.query() {
            Some(q) => format!("{}?{q}", u.path()),
            None => u.path().to_owned(),
        });
    match path {
        // A path of this site only (not `//host`), and never back to a POST-only address.
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.starts_with("/alerts/") => p,
        _ => "/instances".into(),
    }
}

/// `POST /alerts/{id}/dismiss`: hides the alert from the signed-in user's banner only.
async fn dismiss_alert(
    State(st): State<SharedState>,
    Path(id): Path<i64>,
    headers: HeaderMap,
    form: Posted,
) -> Response {
    let actor = form.session.actor.clone();
    match st.run(move |s| s.dismiss_alert(&actor, id)).await {
        Ok(()) => redirect_with_notice(&st, &back_to(&headers), "Alert dismissed."),
        Err(e) => Page::new(&form.session, "", "Dismiss alert").service_error(&st, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn dismiss_goes_back_only_to_our_own_pages() {
        let with = |r: &str| {
            let mut h = HeaderMap::new();
            h.insert(REFERER, HeaderValue::from_str(r).unwrap());
            back_to(&h)
        };
        assert_eq!(
            with("http://127.0.0.1:8080/backups?instance=prod-a"),
            "/backups?instance=prod-a"
        );
        assert_eq!(with("http://x/alerts/3/dismiss"), "/instances");
        assert_eq!(with("not a url"), "/instances");
        assert_eq!(back_to(&HeaderMap::new()), "/instances");
    }

    #[test]
    fn page_urls_encode_names() {
        assert_eq!(
            page_url("a b", "c&d", "log"),
            "/notifications?instance=a%20b&log=c%26d#log"
        );
        assert_eq!(page_url("", "", ""), "/notifications?instance=");
    }
}
