//! The delivery worker: claims due deliveries, sends them by email (SMTP) or webhook (signed
//! JSON POST), and records each attempt.
//!
//! Each pass:
//! 1. claims the due deliveries in one transaction: `attempts + 1`, and the next attempt moved
//!    a lease ([`LEASE`]) ahead, so a delivery is never sent by two passes at once;
//! 2. sends each one;
//! 3. records the outcome in one transaction per delivery: `sent` (with `sent_at`), or a retry
//!    after an exponential backoff, or `failed` after `max_attempts`.
//!
//! A sent delivery is never picked again, so restarts send nothing twice. The one window that
//! is at-least-once, and cannot be otherwise with SMTP or HTTP: a crash after the server
//! accepted the message and before step 3 committed; the delivery is retried when its lease
//! ends. Emails carry a stable `Message-ID` and webhooks an `X-Steward-Delivery` id so
//! receivers can drop such a duplicate.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};
use sha2::Sha256;
use steward_store::DeliveryRow;

use super::{NotifySettings, SmtpSecurity};
use crate::SharedState;
use crate::error::ServiceError;

/// How long a claimed delivery is reserved for the pass that claimed it.
pub const LEASE: chrono::Duration = chrono::Duration::minutes(2);
/// Deliveries claimed per pass.
const BATCH: i64 = 20;

const TEXT_TEMPLATE: &str = include_str!("../../../templates/email/notification.txt");
const HTML_TEMPLATE: &str = include_str!("../../../templates/email/notification.html");

/// The wait before attempt `attempts + 1`, after `attempts` failed ones.
pub fn backoff(settings: &NotifySettings, attempts: i64) -> chrono::Duration {
    let factor = 1i32 << attempts.clamp(1, 12).saturating_sub(1);
    (settings.retry_base * factor).min(chrono::Duration::hours(1))
}

/// The HMAC-SHA256 signature of a webhook body: hex of HMAC(secret, "{timestamp}.{body}").
pub fn webhook_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A rendered email.
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Renders the email of an outbox payload from `templates/email/`.
pub fn render_email(payload: &Value) -> Result<Rendered, ServiceError> {
    let mut env = minijinja::Environment::new();
    let fail = |e: minijinja::Error| ServiceError::internal(format!("email template: {e}"));
    env.add_template("notification.txt", TEXT_TEMPLATE)
        .map_err(fail)?;
    env.add_template("notification.html", HTML_TEMPLATE)
        .map_err(fail)?;
    let at = payload["at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| {
            d.with_timezone(&Utc)
                .format("%Y-%m-%d %H:%M UTC")
                .to_string()
        })
        .unwrap_or_default();
    let details: Vec<(String, String)> = payload["details"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.replace('_', " "), v)
                })
                .collect()
        })
        .unwrap_or_default();
    let ctx = minijinja::context! {
        label => payload["label"].as_str().unwrap_or_default(),
        event => payload["event"].as_str().unwrap_or_default(),
        instance => payload["instance"].as_str(),
        at => at,
        details => details,
        link => payload["link"].as_str().unwrap_or_default(),
    };
    let instance = payload["instance"].as_str().unwrap_or("Steward");
    Ok(Rendered {
        subject: format!(
            "[Steward] {}: {instance}",
            payload["label"].as_str().unwrap_or_default()
        ),
        text: env
            .get_template("notification.txt")
            .and_then(|t| t.render(&ctx))
            .map_err(fail)?,
        html: env
            .get_template("notification.html")
            .and_then(|t| t.render(&ctx))
            .map_err(fail)?,
    })
}

async fn send_email(settings: &NotifySettings, d: &DeliveryRow) -> Result<(), String> {
    let smtp = settings
        .smtp
        .as_ref()
        .ok_or("no SMTP server is configured (set smtp_host)")?;
    let r = render_email(&d.payload).map_err(|e| e.message)?;
    let from: Mailbox = smtp
        .from
        .parse()
        .map_err(|e| format!("smtp_from {:?}: {e}", smtp.from))?;
    let to: Mailbox = d
        .recipient
        .parse()
        .map_err(|e| format!("recipient {:?}: {e}", d.recipient))?;
    let msg = Message::builder()
        .from(from)
        .to(to)
        .subject(r.subject)
        .message_id(Some(format!(
            "<steward.{}.{}@{}>",
            d.outbox_id, d.id, smtp.host
        )))
        .multipart(MultiPart::alternative_plain_html(r.text, r.html))
        .map_err(|e| format!("cannot build the message: {e}"))?;
    type T = AsyncSmtpTransport<Tokio1Executor>;
    let builder = match smtp.security {
        SmtpSecurity::None => T::builder_dangerous(&smtp.host),
        SmtpSecurity::StartTls => {
            T::starttls_relay(&smtp.host).map_err(|e| format!("SMTP server {}: {e}", smtp.host))?
        }
        SmtpSecurity::Tls => {
            T::relay(&smtp.host).map_err(|e| format!("SMTP server {}: {e}", smtp.host))?
        }
    };
    let mut builder = builder
        .port(smtp.port)
        .timeout(Some(Duration::from_secs(20)));
    if let (Some(u), Some(p)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(u.clone(), p.clone()));
    }
    builder
        .build()
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| format!("SMTP server {}:{}: {e}", smtp.host, smtp.port))
}

async fn send_webhook(
    state: &SharedState,
    d: &DeliveryRow,
    now: DateTime<Utc>,
) -> Result<(), String> {
    let id: i64 = d
        .recipient
        .strip_prefix("webhook:")
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("{:?} names no webhook", d.recipient))?;
    let hook = state
        .run(move |s| Ok(s.store.read(|db| db.webhook(id))?))
        .await
        .map_err(|e| e.message)?
        .ok_or_else(|| format!("webhook {id} was deleted"))?;
    let mut body = d.payload.clone();
    body["notification_id"] = json!(d.outbox_id);
    body["delivery_id"] = json!(d.id);
    let body = body.to_string();
    let ts = now.timestamp();
    let sig = webhook_signature(&hook.secret, ts, &body);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .map_err(|e| format!("HTTP client: {e}"))?;
    let resp = client
        .post(&hook.url)
        .header("content-type", "application/json")
        .header("x-steward-timestamp", ts.to_string())
        .header("x-steward-signature", format!("sha256={sig}"))
        .header("x-steward-delivery", d.id.to_string())
        .body(body)
        .send()
        .await
        .map_err(|e| format!("{}: {e}", hook.url))?;
    if !resp.status().is_success() {
        return Err(format!("{} answered {}", hook.url, resp.status()));
    }
    Ok(())
}

/// One pass: claims the due deliveries, sends them and records each outcome. Returns how
/// many were attempted.
pub async fn deliver_due(state: &SharedState) -> Result<usize, ServiceError> {
    let claimed = state
        .run(|s| {
            let now = s.now();
            Ok(s.store.write(|db| {
                let due = db.due_deliveries(now, BATCH)?;
                let mut out = Vec::new();
                for mut d in due {
                    d.attempts += 1;
                    d.next_attempt_at = now + LEASE;
                    db.update_delivery(&d)?;
                    out.push(d);
                }
                Ok::<_, steward_store::StoreError>(out)
            })?)
        })
        .await?;
    let n = claimed.len();
    for mut d in claimed {
        let now = state.services.now();
        let settings = &state.services.notify;
        let outcome = match d.channel.as_str() {
            "email" => send_email(settings, &d).await,
            "webhook" => send_webhook(state, &d, now).await,
            other => Err(format!("unknown channel {other:?}")),
        };
        let done = state.services.now();
        match outcome {
            Ok(()) => {
                d.state = "sent".into();
                d.sent_at = Some(done);
                d.last_error = None;
            }
            Err(e) => {
                tracing::warn!(delivery = d.id, attempts = d.attempts, error = %e, "notification delivery failed");
                d.last_error = Some(e);
                if d.attempts >= settings.max_attempts {
                    d.state = "failed".into();
                } else {
                    d.next_attempt_at = done + backoff(settings, d.attempts);
                }
            }
        }
        state
            .run(move |s| Ok(s.store.write(|db| db.update_delivery(&d))?))
            .await?;
    }
    Ok(n)
}

/// The worker beside the HTTP server: a pass whenever something is emitted, and every few
/// seconds for retries that came due.
pub async fn run(state: SharedState) {
    loop {
        loop {
            match deliver_due(&state).await {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) => {
                    tracing::error!(error = %e, "the notification worker could not reach the store");
                    break;
                }
            }
        }
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            state.services.notify_wakeup.notified(),
        )
        .await;
    }
}
