//! Notifications: the communications schedule (data the operator changes), per-instance
//! extra recipients, webhooks, and the outbox.
//!
//! Invariants:
//! - [`Services::emit`] writes the outbox entry and one delivery row per (channel, recipient)
//!   in the caller's transaction: a notification exists exactly when the change that caused
//!   it committed, and a failed delivery never rolls that change back.
//! - Recipients are resolved when the event is emitted (who was an administrator then).
//! - The delivery worker ([`deliver`]) marks a delivery sent in the transaction that records
//!   the attempt; see there for the one at-least-once window.
//! - In-product alerts are the `alerts` rows the services already record beside each emit;
//!   the outbox carries email and webhook deliveries.

pub mod deliver;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use steward_core::notify::{
    Audience, Channel, EmailAddress, Event, ScheduleEntry, default_schedule, parse_channels,
};
use steward_core::policy::{Action, Role, authorize};
use steward_store::{Db, DeliveryRow, RecipientRow, ScheduleRow, WebhookRow};

use super::instances::live_instance;
use super::{Actor, Result, Services, audit_entry, random_hex};
use crate::error::ServiceError;

/// Delivery settings, from the configuration.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// Base of links in messages, e.g. `https://steward.example.com`.
    pub public_url: String,
    /// The SMTP server; `None`: email deliveries fail with a clear error in the log.
    pub smtp: Option<SmtpSettings>,
    /// After this many failed attempts a delivery is marked failed.
    pub max_attempts: i64,
    /// The first retry waits this long; each further one twice as long (capped at an hour).
    pub retry_base: chrono::Duration,
}

impl Default for NotifySettings {
    fn default() -> Self {
        Self {
            public_url: "http://127.0.0.1:8080".into(),
            smtp: None,
            max_attempts: 8,
            retry_base: chrono::Duration::seconds(30),
        }
    }
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain text (a local relay only).
    None,
    /// Plain connection upgraded with STARTTLS (required).
    StartTls,
    /// TLS from the first byte (SMTPS).
    Tls,
}

impl std::str::FromStr for SmtpSecurity {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            _ => Err(format!(
                "smtp_security must be none, starttls or tls (got {s:?})"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The From header, e.g. `Steward <steward@example.com>`.
    pub from: String,
}

/// One row of the communications schedule.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ScheduleEntryView {
    pub event: String,
    /// What the seed calls it, e.g. "Update successful".
    pub label: String,
    /// `system_administrators` or `all_admins_and_users`.
    pub audience: String,
    /// Of `email`, `webhook`, `in_product`.
    pub channels: Vec<String>,
    /// Changed by an operator (otherwise the default).
    pub customized: bool,
}

impl From<&ScheduleEntry> for ScheduleEntryView {
    fn from(e: &ScheduleEntry) -> Self {
        Self {
            event: e.event.as_str().into(),
            label: e.event.label().into(),
            audience: e.audience.as_str().into(),
            channels: e.channels.iter().map(|c| c.as_str().to_owned()).collect(),
            customized: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecipientView {
    pub instance: String,
    pub email: String,
    pub added_at: DateTime<Utc>,
    pub added_by: String,
}

impl From<RecipientRow> for RecipientView {
    fn from(r: RecipientRow) -> Self {
        Self {
            instance: r.instance,
            email: r.email,
            added_at: r.added_at,
            added_by: r.added_by,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub id: i64,
    pub url: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

impl From<WebhookRow> for WebhookView {
    fn from(w: WebhookRow) -> Self {
        Self {
            id: w.id,
            url: w.url,
            created_at: w.created_at,
            created_by: w.created_by,
        }
    }
}

/// A new webhook and its signing secret, shown once.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CreatedWebhook {
    pub webhook: WebhookView,
    /// Key of the `X-Steward-Signature` HMAC-SHA256.
    pub secret: String,
}

/// One delivery of one notification to one recipient over one channel.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub notification_id: i64,
    pub event: String,
    pub instance: Option<String>,
    pub created_at: DateTime<Utc>,
    pub channel: String,
    /// An email address, or `webhook:<id>`.
    pub recipient: String,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}

impl From<DeliveryRow> for DeliveryView {
    fn from(d: DeliveryRow) -> Self {
        let pending = d.state == "pending";
        Self {
            id: d.id,
            notification_id: d.outbox_id,
            event: d.event,
            instance: d.instance,
            created_at: d.created_at,
            channel: d.channel,
            recipient: d.recipient,
            state: d.state,
            attempts: d.attempts,
            next_attempt_at: pending.then_some(d.next_attempt_at),
            last_error: d.last_error,
            sent_at: d.sent_at,
        }
    }
}

/// The alert audiences a user with `role` belongs to: System Administrators hear about
/// everything; every other user about what the schedule sends to all admins and users
/// (the same split as email recipients, see `Db::user_emails`).
pub fn audiences_of(role: Role) -> &'static [Audience] {
    match role {
        Role::SystemAdministrator => &[Audience::SystemAdministrators, Audience::AllAdminsAndUsers],
        Role::DelegatedAdmin | Role::Viewer => &[Audience::AllAdminsAndUsers],
    }
}

fn actor_user(actor: &Actor) -> Result<i64> {
    actor.user_id.ok_or_else(|| {
        ServiceError::invalid("not_a_user", "alerts are dismissed by a signed-in user")
    })
}

fn invalid_email(e: steward_core::notify::InvalidEmail) -> ServiceError {
    ServiceError::invalid("invalid_email", e.to_string())
}

/// A webhook URL must be absolute http(s) with a host.
pub fn check_webhook_url(raw: &str) -> Result<String> {
    let bad = |why: &str| {
        ServiceError::invalid(
            "invalid_webhook_url",
            format!("{raw:?} is not a webhook URL: {why}"),
        )
    };
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad("only http and https URLs are allowed"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it names no host"));
    }
    Ok(url.to_string())
}

/// The schedule in force: the defaults, with the operator's changes applied.
fn schedule_in_force(db: &Db) -> Result<Vec<(ScheduleEntry, bool)>> {
    let rows = db.notification_schedule()?;
    let mut out = Vec::new();
    for mut e in default_schedule() {
        let mut customized = false;
        if let Some(r) = rows.iter().find(|r| r.event == e.event.as_str()) {
            // A row this Steward cannot read keeps the default rather than silencing the event.
            if let (Ok(a), Ok(c)) = (r.audience.parse::<Audience>(), parse_channels(&r.channels)) {
                e.audience = a;
                e.channels = c;
                customized = true;
            }
        }
        out.push((e, customized));
    }
    Ok(out)
}

fn view((e, customized): &(ScheduleEntry, bool)) -> ScheduleEntryView {
    ScheduleEntryView {
        customized: *customized,
        ..ScheduleEntryView::from(e)
    }
}

impl Services {
    /// In the caller's transaction, tells people that `event` happened to `instance` through
    /// the channels the communications schedule names for it: an in-product alert (the
    /// banner; `level` is `info`, `success`, `warning` or `error`) when the schedule has
    /// `in_product`, and the outbox entry for email and webhooks ([`Services::emit`]).
    /// Every surface announces through here. Returns the outbox id.
    pub fn announce(
        &self,
        db: &Db,
        event: Event,
        level: &str,
        instance: Option<&str>,
        message: &str,
        details: Value,
    ) -> Result<i64> {
        let schedule = schedule_in_force(db)?;
        let entry = schedule.iter().map(|(e, _)| e).find(|e| e.event == event);
        if let Some(e) = entry.filter(|e| e.channels.contains(&Channel::InProduct)) {
            db.insert_alert(level, instance, message, e.audience.as_str(), self.now())?;
        }
        self.emit(db, event, instance, details)
    }

    /// Records that `event` happened to `instance`, in the caller's transaction: the outbox
    /// entry, and one pending delivery per email recipient and webhook the schedule names.
    /// Returns the outbox id.
    pub fn emit(
        &self,
        db: &Db,
        event: Event,
        instance: Option<&str>,
        details: Value,
    ) -> Result<i64> {
        let now = self.now();
        let schedule = schedule_in_force(db)?;
        let entry = schedule
            .iter()
            .map(|(e, _)| e)
            .find(|e| e.event == event)
            .cloned()
            .unwrap_or_else(|| ScheduleEntry {
                event,
                audience: Audience::SystemAdministrators,
                channels: vec![Channel::Email, Channel::Webhook],
            });
        let link = match instance {
            Some(name) => format!(
                "{}/instances/{name}",
                self.notify.public_url.trim_end_matches('/')
            ),
            None => format!("{}/", self.notify.public_url.trim_end_matches('/')),
        };
        let payload = json!({
            "event": event.as_str(),
            "label": event.label(),
            "instance": instance,
            "at": now,
            "details": details,
            "link": link,
        });
        let id = db.insert_outbox(event.as_str(), instance, &payload, now)?;
        if entry.channels.contains(&Channel::Email) {
            let mut to = db.user_emails(entry.audience == Audience::SystemAdministrators)?;
            if let Some(name) = instance {
                to.extend(db.list_recipients(name)?.into_iter().map(|r| r.email));
            }
            to.sort();
            to.dedup();
            for addr in to {
                db.insert_delivery(id, Channel::Email.as_str(), &addr, now)?;
            }
        }
        if entry.channels.contains(&Channel::Webhook) {
            for w in db.list_webhooks()? {
                db.insert_delivery(
                    id,
                    Channel::Webhook.as_str(),
                    &format!("webhook:{}", w.id),
                    now,
                )?;
            }
        }
        self.notify_wakeup.notify_one();
        Ok(id)
    }

    pub fn notification_schedule(&self, actor: &Actor) -> Result<Vec<ScheduleEntryView>> {
        authorize(actor.role, Action::ViewNotifications)?;
        let s = self.store.read(schedule_in_force)?;
        Ok(s.iter().map(view).collect())
    }

    /// Changes who is told about `event` and how.
    pub fn set_schedule(
        &self,
        actor: &Actor,
        event: &str,
        audience: &str,
        channels: &[String],
    ) -> Result<ScheduleEntryView> {
        authorize(actor.role, Action::ManageNotifications)?;
        let event: Event = event.parse()?;
        let audience: Audience = audience.parse()?;
        let channels = parse_channels(&channels.join(","))?;
        let now = self.now();
        self.store.write(|db| {
            let row = ScheduleRow {
                event: event.as_str().into(),
                audience: audience.as_str().into(),
                channels: channels
                    .iter()
                    .map(|c| c.as_str())
                    .collect::<Vec<_>>()
                    .join(","),
                updated_at: now,
                updated_by: actor.username.clone(),
            };
            db.upsert_schedule(&row)?;
            let v = view(&(
                ScheduleEntry {
                    event,
                    audience,
                    channels: channels.clone(),
                },
                true,
            ));
            db.audit(
                &audit_entry(actor, "notify.schedule", event.as_str(), json!(v)),
                now,
            )?;
            Ok(v)
        })
    }

    /// Puts `event` back on the default schedule (the seed's audience and channels).
    pub fn reset_schedule(&self, actor: &Actor, event: &str) -> Result<ScheduleEntryView> {
        authorize(actor.role, Action::ManageNotifications)?;
        let event: Event = event.parse()?;
        let now = self.now();
        self.store.write(|db| {
            let was_customized = db.delete_schedule(event.as_str())?;
            let entry = schedule_in_force(db)?
                .into_iter()
                .find(|(e, _)| e.event == event)
                .map(|pair| view(&pair))
                .ok_or_else(|| {
                    ServiceError::internal(format!("{event} is missing from the default schedule"))
                })?;
            if was_customized {
                db.audit(
                    &audit_entry(actor, "notify.schedule.reset", event.as_str(), json!(entry)),
                    now,
                )?;
            }
            Ok(entry)
        })
    }

    pub fn list_recipients(&self, actor: &Actor, instance: &str) -> Result<Vec<RecipientView>> {
        authorize(actor.role, Action::ViewNotifications)?;
        self.store.read(|db| {
            let inst = live_instance(db, instance)?;
            Ok(db
                .list_recipients(&inst.name)?
                .into_iter()
                .map(RecipientView::from)
                .collect())
        })
    }

    /// Adds an extra email recipient to an instance's notifications.
    pub fn add_recipient(
        &self,
        actor: &Actor,
        instance: &str,
        email: &str,
    ) -> Result<RecipientView> {
        authorize(actor.role, Action::ManageNotifications)?;
        let email: EmailAddress = email.parse().map_err(invalid_email)?;
        let now = self.now();
        self.store.write(|db| {
            let inst = live_instance(db, instance)?;
            if !db.add_recipient(&inst.name, email.as_str(), &actor.username, now)? {
                return Err(ServiceError::conflict(
                    "recipient_exists",
                    format!("{email} already receives {}'s notifications", inst.name),
                ));
            }
            db.audit(
                &audit_entry(
                    actor,
                    "notify.recipient.add",
                    &inst.name,
                    json!({"email": email}),
                ),
                now,
            )?;
            Ok(RecipientView {
                instance: inst.name,
                email: email.to_string(),
                added_at: now,
                added_by: actor.username.clone(),
            })
        })
    }

    pub fn remove_recipient(&self, actor: &Actor, instance: &str, email: &str) -> Result<()> {
        authorize(actor.role, Action::ManageNotifications)?;
        let email: EmailAddress = email.parse().map_err(invalid_email)?;
        let now = self.now();
        self.store.write(|db| {
            let inst = live_instance(db, instance)?;
            if !db.remove_recipient(&inst.name, email.as_str())? {
                return Err(ServiceError::not_found(
                    "unknown_recipient",
                    format!(
                        "{email} is not a recipient of {}'s notifications",
                        inst.name
                    ),
                ));
            }
            db.audit(
                &audit_entry(
                    actor,
                    "notify.recipient.remove",
                    &inst.name,
                    json!({"email": email}),
                ),
                now,
            )?;
            Ok(())
        })
    }

    pub fn list_webhooks(&self, actor: &Actor) -> Result<Vec<WebhookView>> {
        authorize(actor.role, Action::ViewNotifications)?;
        let rows = self.store.read(|db| db.list_webhooks())?;
        Ok(rows.into_iter().map(WebhookView::from).collect())
    }

    /// Registers a webhook; the signing secret is generated unless given (at least 16 characters).
    pub fn create_webhook(
        &self,
        actor: &Actor,
        url: &str,
        secret: Option<&str>,
    ) -> Result<CreatedWebhook> {
        authorize(actor.role, Action::ManageNotifications)?;
        let url = check_webhook_url(url)?;
        let secret = match secret {
            Some(s) if s.len() >= 16 => s.to_owned(),
            Some(_) => {
                return Err(ServiceError::invalid(
                    "invalid_webhook_secret",
                    "a webhook secret needs at least 16 characters",
                ));
            }
            None => random_hex(32),
        };
        let now = self.now();
        self.store.write(|db| {
            let w = db.insert_webhook(&url, &secret, &actor.username, now)?;
            db.audit(
                &audit_entry(
                    actor,
                    "notify.webhook.create",
                    &format!("webhook:{}", w.id),
                    json!({"url": url}),
                ),
                now,
            )?;
            Ok(CreatedWebhook {
                webhook: WebhookView::from(w),
                secret: secret.clone(),
            })
        })
    }

    pub fn delete_webhook(&self, actor: &Actor, id: i64) -> Result<()> {
        authorize(actor.role, Action::ManageNotifications)?;
        let now = self.now();
        self.store.write(|db| {
            if !db.delete_webhook(id, now)? {
                return Err(ServiceError::not_found(
                    "unknown_webhook",
                    format!("there is no webhook {id}"),
                ));
            }
            db.audit(
                &audit_entry(
                    actor,
                    "notify.webhook.delete",
                    &format!("webhook:{id}"),
                    json!({}),
                ),
                now,
            )?;
            Ok(())
        })
    }

    /// Sets or clears the email address a user is notified at: their own, or anyone's for
    /// those who manage notifications.
    pub fn set_user_email(&self, actor: &Actor, username: &str, email: Option<&str>) -> Result<()> {
        if actor.username != username {
            authorize(actor.role, Action::ManageNotifications)?;
        }
        let email: Option<EmailAddress> = email
            .filter(|e| !e.trim().is_empty())
            .map(|e| e.parse().map_err(invalid_email))
            .transpose()?;
        let now = self.now();
        self.store.write(|db| {
            let user = db.user_by_name(username)?.ok_or_else(|| {
                ServiceError::not_found(
                    "unknown_user",
                    format!("there is no user named {username:?}"),
                )
            })?;
            db.set_user_email(user.id, email.as_ref().map(|e| e.as_str()))?;
            db.audit(
                &audit_entry(actor, "user.email", username, json!({"email": email})),
                now,
            )?;
            Ok(())
        })
    }

    /// The in-product alerts for the actor's audience that they have not dismissed, newest
    /// first.
    pub fn my_alerts(&self, actor: &Actor, limit: i64) -> Result<Vec<super::AlertView>> {
        self.my_alerts_since(actor, None, limit)
    }

    /// [`Services::my_alerts`] raised at or after `since` (the banner shows the last day's).
    pub fn my_alerts_since(
        &self,
        actor: &Actor,
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<super::AlertView>> {
        authorize(actor.role, Action::ViewInstances)?;
        let user_id = actor_user(actor)?;
        let audiences: Vec<&str> = audiences_of(actor.role)
            .iter()
            .map(|a| a.as_str())
            .collect();
        let rows = self
            .store
            .read(|db| db.undismissed_alerts(user_id, &audiences, since, limit))?;
        Ok(rows.into_iter().map(super::AlertView::from).collect())
    }

    /// Dismisses an in-product alert for the actor only; others still see it.
    pub fn dismiss_alert(&self, actor: &Actor, alert_id: i64) -> Result<()> {
        authorize(actor.role, Action::ViewInstances)?;
        let user_id = actor_user(actor)?;
        let now = self.now();
        self.store
            .write(|db| match db.dismiss_alert(user_id, alert_id, now)? {
                None => Err(ServiceError::not_found(
                    "unknown_alert",
                    format!("there is no alert {alert_id}"),
                )),
                Some(_) => Ok(()),
            })
    }

    /// Deliveries, newest first: what was sent, what waits for a retry, what failed and why.
    pub fn notification_log(
        &self,
        actor: &Actor,
        instance: Option<&str>,
        limit: i64,
    ) -> Result<Vec<DeliveryView>> {
        authorize(actor.role, Action::ViewNotifications)?;
        let rows = self.store.read(|db| db.list_deliveries(instance, limit))?;
        Ok(rows.into_iter().map(DeliveryView::from).collect())
    }
}
