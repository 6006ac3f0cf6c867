//! `steward notify ...`: the schedule, extra recipients, webhooks and the delivery log.

use serde_json::{Value, json};

use crate::cli::{NotifyCommand, RecipientsCommand, ScheduleCommand, WebhooksCommand};
use crate::client::{Client, UsageError, segment};
use crate::output::{self, CreatedWebhook, Delivery, Recipient, ScheduleEntry, Webhook};

pub async fn run(client: &Client, cmd: NotifyCommand) -> anyhow::Result<()> {
    match cmd {
        NotifyCommand::Schedule(c) => schedule(client, c).await,
        NotifyCommand::Recipients(c) => recipients(client, c).await,
        NotifyCommand::Webhooks(c) => webhooks(client, c).await,
        NotifyCommand::Log {
            instance,
            limit,
            json,
        } => {
            let mut query = Vec::new();
            if let Some(i) = instance {
                query.push(("instance", i));
            }
            if let Some(n) = limit {
                query.push(("limit", n.to_string()));
            }
            let v: Value = client.get("/api/v1/notifications/log", &query).await?;
            super::show(&json, v, |d: &Vec<Delivery>| output::delivery_table(d))
        }
    }
}

/// `--channels` as the API takes it: `none` (or nothing) is the empty list.
fn channel_list(raw: &str) -> anyhow::Result<Vec<String>> {
    let words: Vec<String> = raw
        .split([',', ' '])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    if words.iter().any(|w| w == "none") {
        if words.len() > 1 {
            return Err(UsageError(format!(
                "--channels {raw:?}: `none` cannot be combined with channels"
            ))
            .into());
        }
        return Ok(Vec::new());
    }
    Ok(words)
}

async fn schedule(client: &Client, cmd: ScheduleCommand) -> anyhow::Result<()> {
    match cmd {
        ScheduleCommand::List(json) => {
            let v: Value = client.get("/api/v1/notifications/schedule", &[]).await?;
            super::show(&json, v, |s: &Vec<ScheduleEntry>| output::schedule_table(s))
        }
        ScheduleCommand::Set {
            event,
            audience,
            channels,
            json,
        } => {
            let channels = channels.as_deref().map(channel_list).transpose()?;
            // What is not given stays as it is: fill it in from the schedule in force.
            let (audience, channels) = match (audience, channels) {
                (Some(a), Some(c)) => (a.as_str().to_owned(), c),
                (a, c) => {
                    let v: Value = client.get("/api/v1/notifications/schedule", &[]).await?;
                    let all: Vec<ScheduleEntry> = output::decode(v)?;
                    let current = all.into_iter().find(|e| e.event == event);
                    match current {
                        Some(cur) => (
                            a.map_or(cur.audience, |a| a.as_str().to_owned()),
                            c.unwrap_or(cur.channels),
                        ),
                        // Unknown to this list: let the server say what is wrong.
                        None => (
                            a.map_or_else(String::new, |a| a.as_str().to_owned()),
                            c.unwrap_or_default(),
                        ),
                    }
                }
            };
            let body = json!({"audience": audience, "channels": channels});
            let v: Value = client
                .put(
                    &format!("/api/v1/notifications/schedule/{}", segment(&event)),
                    &body,
                )
                .await?;
            super::show(&json, v, |e: &ScheduleEntry| {
                format!(
                    "{} ({}) now goes to {} by {}.\n",
                    e.event,
                    e.label,
                    e.audience,
                    output::channels(&e.channels)
                )
            })
        }
        ScheduleCommand::Reset { event, json } => {
            let v: Value = client
                .delete(
                    &format!("/api/v1/notifications/schedule/{}", segment(&event)),
                    &[],
                )
                .await?;
            super::show(&json, v, |e: &ScheduleEntry| {
                format!(
                    "{} ({}) is back on the default: {} by {}.\n",
                    e.event,
                    e.label,
                    e.audience,
                    output::channels(&e.channels)
                )
            })
        }
    }
}

async fn recipients(client: &Client, cmd: RecipientsCommand) -> anyhow::Result<()> {
    let path = |instance: &str| format!("/api/v1/instances/{}/recipients", segment(instance));
    match cmd {
        RecipientsCommand::List { instance, json } => {
            let v: Value = client.get(&path(&instance), &[]).await?;
            super::show(&json, v, |r: &Vec<Recipient>| {
                output::recipient_table(&instance, r)
            })
        }
        RecipientsCommand::Add {
            instance,
            email,
            json,
        } => {
            let v: Value = client
                .post(&path(&instance), &json!({"email": email}))
                .await?;
            super::show(&json, v, |r: &Recipient| {
                format!(
                    "{} now receives {}'s email notifications.\n",
                    r.email, r.instance
                )
            })
        }
        RecipientsCommand::Remove { instance, email } => {
            let _: Value = client
                .delete(&format!("{}/{}", path(&instance), segment(&email)), &[])
                .await?;
            println!("{email} no longer receives {instance}'s email notifications.");
            Ok(())
        }
    }
}

async fn webhooks(client: &Client, cmd: WebhooksCommand) -> anyhow::Result<()> {
    match cmd {
        WebhooksCommand::List(json) => {
            let v: Value = client.get("/api/v1/webhooks", &[]).await?;
            super::show(&json, v, |w: &Vec<Webhook>| output::webhook_table(w))
        }
        WebhooksCommand::Add {
            webhook_url: url,
            secret_stdin,
            json,
        } => {
            let secret = if secret_stdin {
                Some(super::read_lines(&["Signing secret"])?.remove(0))
            } else {
                None
            };
            let body = json!({"url": url, "secret": secret});
            let v: Value = client.post("/api/v1/webhooks", &body).await?;
            super::show(&json, v, |c: &CreatedWebhook| {
                let mut out = format!("Added webhook {} → {}.\n", c.webhook.id, c.webhook.url);
                if !secret_stdin {
                    out.push_str(&format!(
                        "\nSigning secret — shown only this once; give it to the receiver:\n\n    {}\n\n\
                         Each POST carries X-Steward-Timestamp and X-Steward-Signature:\n\
                         sha256=<hex HMAC-SHA256 of \"<timestamp>.<body>\" with this secret>.\n",
                        c.secret
                    ));
                }
                out
            })
        }
        WebhooksCommand::Remove { id } => {
            let _: Value = client
                .delete(&format!("/api/v1/webhooks/{id}"), &[])
                .await?;
            println!("Removed webhook {id}.");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_lists_read_commas_spaces_and_none() {
        assert_eq!(
            channel_list("email, webhook,in_product").unwrap(),
            ["email", "webhook", "in_product"]
        );
        assert!(channel_list("none").unwrap().is_empty());
        assert!(channel_list("").unwrap().is_empty());
        assert!(channel_list("none,email").is_err());
    }
}
