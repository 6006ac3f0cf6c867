//! `steward update ...`: release updates through `/api/v1/instances/{name}/updates`,
//! `/api/v1/updates` and `/api/v1/update-policy`, and what they print for people (the wire
//! types of updates live here, beside their formatting).

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::cli::{JsonFlag, UpdateCommand};
use crate::client::{ApiError, Client, UsageError, segment};
use crate::output::{self, Table, fields, time};

// ---------------------------------------------------------------------------------------
// wire types (the API's views; unknown fields are ignored)
// ---------------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
pub struct Overview {
    pub instance: String,
    pub instance_type: String,
    pub release: String,
    pub support: Support,
    pub update_available: bool,
    #[serde(default)]
    pub available: Vec<Available>,
    pub mandatory: Option<Mandatory>,
    pub current: Option<Update>,
    #[serde(default)]
    pub history: Vec<Update>,
    /// The instance's latest rehearsals, attached to an update or not.
    #[serde(default)]
    pub rehearsals: Vec<Rehearsal>,
}

#[derive(Debug, Deserialize)]
pub struct Support {
    pub label: String,
    pub end_of_support: Option<NaiveDate>,
}

#[derive(Debug, Deserialize)]
pub struct Available {
    pub version: String,
    pub kind: String,
    pub released: Option<NaiveDate>,
    pub end_of_support: Option<NaiveDate>,
    #[serde(default)]
    pub latest: bool,
}

#[derive(Debug, Deserialize)]
pub struct Mandatory {
    pub target: String,
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
pub struct Stage {
    pub stage: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub struct Rehearsal {
    pub id: i64,
    pub instance: String,
    #[serde(default)]
    pub sandbox: Option<String>,
    pub target_release: String,
    pub status: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i64>,
    #[serde(default)]
    pub problems: Vec<String>,
    #[serde(default)]
    pub automatic: bool,
    pub job_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct TimelineEvent {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub event: String,
    #[serde(default)]
    pub details: Value,
}

#[derive(Debug, Deserialize)]
pub struct Update {
    pub id: i64,
    pub instance: String,
    pub from_release: String,
    pub target_release: String,
    pub kind: String,
    #[serde(default)]
    pub mandatory: bool,
    /// Scheduled by System under the update policy.
    #[serde(default)]
    pub automatic: bool,
    pub status: String,
    pub status_label: String,
    #[serde(default)]
    pub needs_approval: bool,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub preferred: Window,
    pub alternate: Window,
    pub active_window: String,
    pub stage: Option<String>,
    #[serde(default)]
    pub stages: Vec<Stage>,
    pub error: Option<String>,
    pub backup_id: Option<i64>,
    pub job_id: Option<i64>,
    #[serde(default)]
    pub rehearsals: Vec<Rehearsal>,
    #[serde(default)]
    pub timeline: Vec<TimelineEvent>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub struct PolicyRelease {
    pub version: String,
    pub kind: String,
    pub support: String,
    pub end_of_support: Option<NaiveDate>,
}

#[derive(Debug, Deserialize)]
pub struct Policy {
    pub supported_majors: u32,
    pub mandatory_when_behind: u32,
    pub service_updates_automatic: bool,
    #[serde(default)]
    pub maintenance_window_start: Option<String>,
    #[serde(default)]
    pub mandatory_lead_days: Option<u32>,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub releases: Vec<PolicyRelease>,
}

impl Update {
    /// Whether nothing more will happen to this update without a person.
    fn settled(&self) -> bool {
        match self.status.as_str() {
            "succeeded" | "failed" | "waiting" | "cancelled" => true,
            // A failed attempt goes back to queued for the alternate window.
            "queued" | "scheduled" => self.error.is_some(),
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// the commands
// ---------------------------------------------------------------------------------------

fn instance_path(instance: &str) -> String {
    format!("/api/v1/instances/{}/updates", segment(instance))
}

pub async fn run(client: &Client, cmd: UpdateCommand) -> anyhow::Result<()> {
    match cmd {
        UpdateCommand::List { instance, json } => {
            let v: Value = client.get(&instance_path(&instance), &[]).await?;
            super::show(&json, v, overview_text)
        }
        UpdateCommand::Schedule {
            instance,
            target,
            preferred,
            alternate,
            zone,
            json,
        } => {
            let mut body = json!({
                "target": target,
                "preferred_start": preferred,
                "alternate_start": alternate,
            });
            if let Some(tz) = &zone.time_zone {
                body["time_zone"] = tz.clone().into();
            }
            let v: Value = client.post(&instance_path(&instance), &body).await?;
            let tz = zone.time_zone.clone();
            super::show(&json, v, |u: &Update| {
                let mut out = format!(
                    "Scheduled the update of {} from {} to {} (update {}): {}.\n\n",
                    u.instance, u.from_release, u.target_release, u.id, u.status_label
                );
                out.push_str(&windows_text(u, tz.as_deref()));
                out.push_str(&next_step(u));
                out
            })
        }
        UpdateCommand::Approve { instance, json } => {
            let v: Value = client
                .post(&format!("{}/approve", instance_path(&instance)), &json!({}))
                .await?;
            super::show(&json, v, |u: &Update| {
                format!(
                    "Approved the update of {} to {}: {}. It starts at {} (preferred window).\n",
                    u.instance,
                    u.target_release,
                    u.status_label,
                    time(&u.preferred.start)
                )
            })
        }
        UpdateCommand::Withdraw { instance, json } => {
            let v: Value = client
                .post(
                    &format!("{}/withdraw", instance_path(&instance)),
                    &json!({}),
                )
                .await?;
            super::show(&json, v, |u: &Update| {
                format!(
                    "Withdrew the approval of the update of {} to {}: {}.\n",
                    u.instance, u.target_release, u.status_label
                )
            })
        }
        UpdateCommand::Reschedule {
            instance,
            target,
            preferred,
            alternate,
            zone,
            json,
        } => {
            let mut body = Map::new();
            if let Some(t) = target {
                body.insert("target".into(), t.into());
            }
            if let Some(p) = preferred {
                body.insert("preferred_start".into(), p.into());
            }
            if let Some(a) = alternate {
                body.insert("alternate_start".into(), a.into());
            }
            if let Some(tz) = &zone.time_zone {
                body.insert("time_zone".into(), tz.clone().into());
            }
            let v: Value = client
                .post(
                    &format!("{}/reschedule", instance_path(&instance)),
                    &Value::Object(body),
                )
                .await?;
            let tz = zone.time_zone.clone();
            super::show(&json, v, |u: &Update| {
                let mut out = format!(
                    "Rescheduled the update of {} from {} to {}: {}.\n\n",
                    u.instance, u.from_release, u.target_release, u.status_label
                );
                out.push_str(&windows_text(u, tz.as_deref()));
                out.push_str(&next_step(u));
                out
            })
        }
        UpdateCommand::Cancel {
            instance,
            yes,
            json,
        } => {
            let what = format!("cancel the update of {instance}");
            super::require_confirmation(yes, &what)?;
            if !yes {
                let o: Overview = client.get(&instance_path(&instance), &[]).await?;
                let Some(u) = o.current else {
                    return Err(no_update(&instance, "to cancel"));
                };
                super::confirm(
                    false,
                    &format!(
                        "Cancel the update of {} from {} to {} ({})? [y/N] ",
                        u.instance, u.from_release, u.target_release, u.status_label
                    ),
                    "the update was not cancelled",
                )?;
            }
            let v: Value = client
                .post(&format!("{}/cancel", instance_path(&instance)), &json!({}))
                .await?;
            super::show(&json, v, |u: &Update| {
                format!(
                    "Cancelled the update of {} to {}; it stays on release {}.\n",
                    u.instance, u.target_release, u.from_release
                )
            })
        }
        UpdateCommand::Now {
            instance,
            target,
            yes,
            wait,
            json,
        } => update_now(client, &instance, target, yes, wait, &json).await,
        UpdateCommand::Rehearse {
            instance,
            target,
            wait,
            json,
        } => {
            let mut body = Map::new();
            if let Some(t) = target {
                body.insert("target".into(), t.into());
            }
            let v: Value = client
                .post(
                    &format!("{}/rehearse", instance_path(&instance)),
                    &Value::Object(body),
                )
                .await?;
            if !wait {
                return super::show(&json, v, |r: &Rehearsal| {
                    format!(
                        "Rehearsing the update of {} to {} (rehearsal {}){}; see the result with \
                         `steward update show {}` or wait with --wait.\n",
                        r.instance,
                        r.target_release,
                        r.id,
                        r.sandbox
                            .as_deref()
                            .map(|s| format!(" in the sandbox {s}"))
                            .unwrap_or_default(),
                        r.instance
                    )
                });
            }
            let r: Rehearsal = output::decode(v.clone())?;
            let (v, r) = wait_for_rehearsal(client, &instance, r, v).await?;
            super::show(&json, v, |r: &Rehearsal| rehearsal_text(r))?;
            if r.status == "failed" {
                anyhow::bail!(
                    "the rehearsal of the update of {} to {} failed: {}",
                    r.instance,
                    r.target_release,
                    if r.problems.is_empty() {
                        "no problem was recorded".to_owned()
                    } else {
                        r.problems.join("; ")
                    }
                );
            }
            Ok(())
        }
        UpdateCommand::Show {
            instance,
            id,
            time_zone,
            json,
        } => {
            if let Some(tz) = &time_zone {
                check_zone(tz)?;
            }
            let v = match id {
                Some(id) => {
                    let v: Value = client.get(&format!("/api/v1/updates/{id}"), &[]).await?;
                    let u: Update = output::decode(v.clone())?;
                    if u.instance != instance {
                        return Err(ApiError {
                            status: reqwest::StatusCode::NOT_FOUND,
                            code: "unknown_update".into(),
                            message: format!("update {id} is not an update of {instance}"),
                        }
                        .into());
                    }
                    v
                }
                None => current_or_latest(client, &instance).await?,
            };
            super::show(&json, v, |u: &Update| {
                update_details(u, time_zone.as_deref())
            })
        }
        UpdateCommand::History {
            instance,
            status,
            json,
        } => {
            let mut query = Vec::new();
            if let Some(i) = &instance {
                query.push(("instance", i.clone()));
            }
            if let Some(s) = status {
                query.push(("status", s));
            }
            let v: Value = client.get("/api/v1/updates", &query).await?;
            super::show(&json, v, |list: &Vec<Update>| {
                history_table(list, instance.as_deref())
            })
        }
        UpdateCommand::Policy { command, json } => match command {
            None => {
                let v: Value = client.get("/api/v1/update-policy", &[]).await?;
                super::show(&json, v, policy_text)
            }
            Some(set) => {
                let set = set.into_settings();
                // The whole policy goes back, so what is not given stays as it is.
                let mut body: Value = client.get("/api/v1/update-policy", &[]).await?;
                if let Value::Object(m) = &mut body {
                    m.remove("source");
                    m.remove("releases");
                }
                if let Some(n) = set.supported_majors {
                    body["supported_majors"] = n.into();
                }
                if let Some(n) = set.mandatory_when_behind {
                    body["mandatory_when_behind"] = n.into();
                }
                if let Some(b) = set.service_updates_automatic {
                    body["service_updates_automatic"] = b.into();
                }
                if let Some(t) = set.maintenance_window_start {
                    body["maintenance_window_start"] = t.into();
                }
                if let Some(d) = set.mandatory_lead_days {
                    body["mandatory_lead_days"] = d.into();
                }
                let v: Value = client.put("/api/v1/update-policy", &body).await?;
                super::show(&set.json, v, |p: &Policy| {
                    format!("Changed the update policy.\n\n{}", policy_text(p))
                })
            }
        },
    }
}

/// The error of a command that needs an update the instance does not have (exit code 4).
fn no_update(instance: &str, what: &str) -> anyhow::Error {
    ApiError {
        status: reqwest::StatusCode::NOT_FOUND,
        code: "no_update".into(),
        message: format!(
            "{instance} has no update {what}; see what is available with `steward update list {instance}`"
        ),
    }
    .into()
}

/// The instance's open update, else its latest finished one, as the API's JSON.
async fn current_or_latest(client: &Client, instance: &str) -> anyhow::Result<Value> {
    let mut v: Value = client.get(&instance_path(instance), &[]).await?;
    let current = v["current"].take();
    if !current.is_null() {
        return Ok(current);
    }
    match v["history"].get_mut(0) {
        Some(latest) => Ok(latest.take()),
        None => Err(no_update(instance, "yet")),
    }
}

async fn update_now(
    client: &Client,
    instance: &str,
    target: Option<String>,
    yes: bool,
    wait: bool,
    json: &JsonFlag,
) -> anyhow::Result<()> {
    let o: Overview = client.get(&instance_path(instance), &[]).await?;
    let production = o.instance_type == "production";
    if production {
        let what = format!("update the production instance {instance} now");
        super::require_confirmation(yes, &what)?;
        let to = target
            .clone()
            .or_else(|| o.current.as_ref().map(|u| u.target_release.clone()))
            .or_else(|| {
                o.available
                    .iter()
                    .find(|a| a.latest)
                    .map(|a| a.version.clone())
            })
            .unwrap_or_else(|| "the latest eligible release".into());
        super::confirm(
            yes,
            &format!(
                "{instance} is a production instance: it is unavailable from the backup until \
                 the swap.\nUpdate {instance} from {} to {to} now? [y/N] ",
                o.release
            ),
            "no update was started",
        )?;
    }
    let mut body = Map::new();
    if let Some(t) = target {
        body.insert("target".into(), t.into());
    }
    body.insert("confirm".into(), production.into());
    let v: Value = client
        .post(
            &format!("{}/now", instance_path(instance)),
            &Value::Object(body),
        )
        .await?;
    if !wait {
        return super::show(json, v, |u: &Update| {
            format!(
                "Updating {} from {} to {} now (update {}{}): {}.\n\
                 Follow it with `steward update show {}` or wait with --wait.\n",
                u.instance,
                u.from_release,
                u.target_release,
                u.id,
                u.job_id.map(|j| format!(", job {j}")).unwrap_or_default(),
                u.status_label,
                u.instance
            )
        });
    }
    let u: Update = output::decode(v)?;
    let v = wait_for_update(client, u.id).await?;
    let u: Update = output::decode(v.clone())?;
    super::show(json, v, |u: &Update| {
        let head = if u.status == "succeeded" {
            format!(
                "Updated {} from {} to {}.\n\n",
                u.instance, u.from_release, u.target_release
            )
        } else {
            String::new()
        };
        format!("{head}{}", update_details(u, None))
    })?;
    if u.status == "succeeded" {
        Ok(())
    } else {
        anyhow::bail!(
            "the update of {} to {} did not succeed ({}): {}",
            u.instance,
            u.target_release,
            u.status_label,
            u.error.as_deref().unwrap_or("no error was recorded")
        )
    }
}

/// Polls an update until nothing more happens to it without a person, showing its status
/// and stage on stderr, and returns its JSON.
async fn wait_for_update(client: &Client, id: i64) -> anyhow::Result<Value> {
    super::follow(client, &format!("/api/v1/updates/{id}"), |v| {
        let u: Update = output::decode(v.clone())?;
        let line = match &u.stage {
            Some(stage) if u.status == "in_progress" => {
                format!(
                    "update {id} of {}: {} — {stage}",
                    u.instance, u.status_label
                )
            }
            _ => format!("update {id} of {}: {}", u.instance, u.status_label),
        };
        Ok((line, u.settled()))
    })
    .await
}

/// Waits for the rehearsal `r` to end (through its job, whose stages show on stderr) and
/// returns it as it ended: from the instance's update when it is attached to one, else
/// rebuilt from the job.
async fn wait_for_rehearsal(
    client: &Client,
    instance: &str,
    r: Rehearsal,
    first: Value,
) -> anyhow::Result<(Value, Rehearsal)> {
    let job = match r.job_id {
        Some(j) => Some(super::wait_for_job(client, j).await?),
        None => None,
    };
    loop {
        let o: Value = client.get(&instance_path(instance), &[]).await?;
        let found = o["rehearsals"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|x| x["id"].as_i64() == Some(r.id))
            .cloned();
        match found {
            Some(v) => {
                let now: Rehearsal = output::decode(v.clone())?;
                if now.status != "running" {
                    return Ok((v, now));
                }
            }
            None => {
                // Not attached to an update: the job's result says how it ended.
                let Some(job) = &job else {
                    anyhow::bail!(
                        "rehearsal {} is not attached to an update of {instance} and has no job, \
                         so it cannot be waited for",
                        r.id
                    );
                };
                let jv: Value = client.get(&format!("/api/v1/jobs/{}", job.id), &[]).await?;
                let mut v = first;
                v["status"] = if job.state == "succeeded" {
                    "succeeded"
                } else {
                    "failed"
                }
                .into();
                v["finished_at"] = jv["finished_at"].clone();
                for key in ["status", "problems", "duration_ms"] {
                    if let Some(x) = jv["result"].get(key).filter(|x| !x.is_null()) {
                        v[key] = x.clone();
                    }
                }
                if job.state != "succeeded"
                    && let Some(e) = &job.last_error
                {
                    v["problems"] = serde_json::json!([e]);
                }
                let now: Rehearsal = output::decode(v.clone())?;
                return Ok((v, now));
            }
        }
        tokio::time::sleep(super::POLL).await;
    }
}

/// Refuses an unknown time zone before anything is asked (exit code 2).
fn check_zone(tz: &str) -> anyhow::Result<()> {
    if steward_server::web::time_in_zone(Utc::now(), tz).is_none() {
        return Err(UsageError(format!(
            "unknown time zone {tz:?}: give an IANA name such as Europe/Paris, America/New_York or UTC"
        ))
        .into());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// what people read
// ---------------------------------------------------------------------------------------

fn date(d: &Option<NaiveDate>) -> String {
    d.map(|d| d.to_string()).unwrap_or_else(|| "-".into())
}

fn opt_time(t: &Option<DateTime<Utc>>) -> String {
    t.as_ref().map(time).unwrap_or_else(|| "-".into())
}

/// `t` in UTC, and in `zone` too when one is given.
fn zoned(t: &DateTime<Utc>, zone: Option<&str>) -> String {
    match zone.and_then(|z| steward_server::web::time_in_zone(*t, z)) {
        Some(local) if zone != Some("UTC") => format!("{} ({local})", time(t)),
        _ => time(t),
    }
}

fn window(w: &Window, zone: Option<&str>) -> String {
    format!("{} → {}", zoned(&w.start, zone), zoned(&w.end, zone))
}

fn windows_text(u: &Update, zone: Option<&str>) -> String {
    let mark = |which: &str| {
        if u.active_window == which {
            " (active)"
        } else {
            ""
        }
    };
    fields(&[
        (
            &format!("Preferred window{}", mark("preferred")),
            window(&u.preferred, zone),
        ),
        (
            &format!("Alternate window{}", mark("alternate")),
            window(&u.alternate, zone),
        ),
    ])
}

/// What happens next to an update, for the end of `schedule` and `reschedule`.
fn next_step(u: &Update) -> String {
    match u.status.as_str() {
        "scheduled" if u.needs_approval => format!(
            "\nA System Administrator must approve it: `steward update approve {}`.\n",
            u.instance
        ),
        "queued" => format!(
            "\nIt starts on its own at {}.\n",
            time(if u.active_window == "alternate" {
                &u.alternate.start
            } else {
                &u.preferred.start
            })
        ),
        _ => String::new(),
    }
}

fn approval(u: &Update) -> String {
    match (&u.approved_by, &u.approved_at) {
        (Some(by), Some(at)) => format!("approved by {by} at {}", time(at)),
        (Some(by), None) => format!("approved by {by}"),
        _ if u.mandatory => "not needed (mandatory update)".into(),
        _ if u.automatic => "not needed (scheduled automatically under the update policy)".into(),
        _ if !u.needs_approval => format!("not needed ({} update)", u.kind),
        _ => "waiting for a System Administrator".into(),
    }
}

/// `steward update list`: the instance, its support status, what is available and its
/// current update.
/// Rehearsals as a table: id, target, status, start (in `zone` too), duration, sandbox and
/// the problems found.
fn rehearsals_table(rehearsals: &[Rehearsal], zone: Option<&str>) -> String {
    let mut t = Table::new(&[
        "ID", "TARGET", "STATUS", "STARTED", "DURATION", "SANDBOX", "PROBLEMS",
    ]);
    for r in rehearsals {
        t.row(vec![
            format!("{}{}", r.id, if r.automatic { " (auto)" } else { "" }),
            r.target_release.clone(),
            r.status.clone(),
            zoned(&r.started_at, zone),
            r.duration_ms.map(duration).unwrap_or_else(|| "-".into()),
            r.sandbox.clone().unwrap_or_else(|| "-".into()),
            if r.problems.is_empty() {
                "none".into()
            } else {
                r.problems.join("; ")
            },
        ]);
    }
    t.render()
}

fn overview_text(o: &Overview) -> String {
    let support = match o.support.end_of_support {
        Some(d) if !o.support.label.contains(&d.to_string()) => {
            format!("{} (support ends {d})", o.support.label)
        }
        _ => o.support.label.clone(),
    };
    let mut pairs = vec![
        ("Instance", format!("{} ({})", o.instance, o.instance_type)),
        ("Release", o.release.clone()),
        ("Support", support),
        (
            "Updates",
            if o.update_available {
                "Update is Available".into()
            } else {
                "None: the instance is on the latest release".into()
            },
        ),
    ];
    if let Some(m) = &o.mandatory {
        pairs.push((
            "Mandatory",
            format!(
                "update to {} ({}); it cannot be cancelled",
                m.target, m.reason
            ),
        ));
    }
    match &o.current {
        Some(u) => pairs.push((
            "Current update",
            format!(
                "{} → {}: {} (update {})",
                u.from_release, u.target_release, u.status_label, u.id
            ),
        )),
        None => pairs.push(("Current update", "none".into())),
    }
    if let Some(u) = o.history.first() {
        pairs.push((
            "Last update",
            format!(
                "{} → {}: {} ({})",
                u.from_release,
                u.target_release,
                u.status_label,
                opt_time(&u.finished_at.or(u.started_at))
            ),
        ));
    }
    let mut out = fields(&pairs);
    if let Some(u) = &o.current {
        out.push_str(&indent(&windows_text(u, None)));
        out.push_str(&indent(&fields(&[("Approval", approval(u))])));
    }
    if !o.available.is_empty() {
        let mut t = Table::new(&["TARGET", "KIND", "RELEASED", "END-OF-SUPPORT", "LATEST"]);
        for a in &o.available {
            t.row(vec![
                a.version.clone(),
                a.kind.clone(),
                date(&a.released),
                date(&a.end_of_support),
                if a.latest { "yes" } else { "" }.into(),
            ]);
        }
        out.push_str("\nEligible target releases:\n");
        out.push_str(&t.render());
        if o.current.is_none() {
            let _ = writeln!(
                out,
                "\nSchedule one with `steward update schedule {} --target VERSION --preferred START \
                 --alternate START`.",
                o.instance
            );
        }
    }
    if !o.rehearsals.is_empty() {
        out.push_str("\nRecent rehearsals:\n");
        out.push_str(&rehearsals_table(&o.rehearsals, None));
    }
    out
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn duration(ms: i64) -> String {
    let secs = ms as f64 / 1000.0;
    if ms < 1000 {
        format!("{ms} ms")
    } else if secs < 120.0 {
        format!("{secs:.1} s")
    } else {
        format!("{:.1} min", secs / 60.0)
    }
}

fn rehearsal_text(r: &Rehearsal) -> String {
    let mut out = fields(&[
        ("Rehearsal", r.id.to_string()),
        ("Instance", r.instance.clone()),
        ("Sandbox", r.sandbox.clone().unwrap_or_else(|| "-".into())),
        ("Target", r.target_release.clone()),
        ("Status", r.status.clone()),
        ("Started", time(&r.started_at)),
        ("Finished", opt_time(&r.finished_at)),
        (
            "Duration",
            r.duration_ms.map(duration).unwrap_or("-".into()),
        ),
    ]);
    if !r.problems.is_empty() {
        out.push_str("Problems found:\n");
        for p in &r.problems {
            let _ = writeln!(out, "  - {p}");
        }
    }
    out
}

/// A detail value, short: a window as its start, a time to the second, `null` as `-`.
fn detail_value(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => steward_core::clock::display_time_text(s).unwrap_or_else(|| s.clone()),
        Value::Object(m) if m.contains_key("start") => detail_value(&m["start"]),
        Value::Object(m) => format!(
            "{{{}}}",
            m.iter()
                .map(|(k, v)| format!("{k}: {}", detail_value(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Value::Array(a) => a.iter().map(detail_value).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// A timeline event's details on one line; a change with `before` and `after` shows only
/// what changed: `preferred: 2027-01-09 22:00:00 UTC -> 2027-01-10 22:00:00 UTC`.
fn details_line(details: &Value) -> String {
    let Value::Object(m) = details else {
        return if details.is_null() {
            String::new()
        } else {
            detail_value(details)
        };
    };
    let mut parts = Vec::new();
    let diffed = match (m.get("before"), m.get("after")) {
        (Some(Value::Object(before)), Some(Value::Object(after))) => {
            for (k, new) in after {
                let old = before.get(k).unwrap_or(&Value::Null);
                if old != new {
                    parts.push(format!(
                        "{k}: {} -> {}",
                        detail_value(old),
                        detail_value(new)
                    ));
                }
            }
            true
        }
        _ => false,
    };
    for (k, v) in m {
        if !(diffed && (k == "before" || k == "after")) {
            parts.push(format!("{k}: {}", detail_value(v)));
        }
    }
    parts.join("; ")
}

/// `steward update show`: everything about one update.
fn update_details(u: &Update, zone: Option<&str>) -> String {
    let mut pairs = vec![
        ("Update", u.id.to_string()),
        ("Instance", u.instance.clone()),
        (
            "Release",
            format!(
                "{} → {} ({}{})",
                u.from_release,
                u.target_release,
                u.kind,
                if u.mandatory { ", mandatory" } else { "" }
            ),
        ),
        ("Status", u.status_label.clone()),
    ];
    if let Some(s) = &u.stage {
        pairs.push(("Stage", s.clone()));
    }
    pairs.push(("Approval", approval(u)));
    if let Some(e) = &u.error {
        pairs.push(("Error", e.clone()));
    }
    pairs.push((
        "Created",
        format!("{} by {}", zoned(&u.created_at, zone), u.created_by),
    ));
    if let Some(t) = &u.started_at {
        pairs.push(("Started", zoned(t, zone)));
    }
    if let Some(t) = &u.finished_at {
        pairs.push(("Finished", zoned(t, zone)));
    }
    if let Some(b) = u.backup_id {
        pairs.push(("Pre-update backup", b.to_string()));
    }
    if let Some(j) = u.job_id {
        pairs.push(("Job", j.to_string()));
    }
    let mut out = fields(&pairs);
    out.push_str(&windows_text(u, zone));

    out.push_str("\nStages:\n");
    let mut t = Table::new(&["STAGE", "STARTED", "FINISHED", "DURATION"]);
    t.row(vec![
        "Queued (Not Started)".into(),
        zoned(&u.created_at, zone),
        u.stages
            .first()
            .map(|s| zoned(&s.started_at, zone))
            .unwrap_or_else(|| "-".into()),
        String::new(),
    ]);
    for s in &u.stages {
        t.row(vec![
            s.stage.clone(),
            zoned(&s.started_at, zone),
            s.finished_at
                .as_ref()
                .map(|f| zoned(f, zone))
                .unwrap_or_else(|| "-".into()),
            s.finished_at
                .map(|f| duration((f - s.started_at).num_milliseconds()))
                .unwrap_or_else(|| "running".into()),
        ]);
    }
    out.push_str(&t.render());

    if !u.rehearsals.is_empty() {
        out.push_str("\nRehearsals:\n");
        out.push_str(&rehearsals_table(&u.rehearsals, zone));
    }

    if !u.timeline.is_empty() {
        out.push_str("\nTimeline:\n");
        let mut t = Table::new(&["AT", "BY", "EVENT", "DETAILS"]);
        for e in &u.timeline {
            t.row(vec![
                zoned(&e.at, zone),
                e.actor.clone(),
                e.event.clone(),
                details_line(&e.details),
            ]);
        }
        out.push_str(&t.render());
    }
    out
}

fn history_table(list: &[Update], instance: Option<&str>) -> String {
    if list.is_empty() {
        return match instance {
            Some(i) => format!("No updates of {i}.\n"),
            None => "No updates match.\n".into(),
        };
    }
    let mut t = Table::new(&[
        "ID", "INSTANCE", "FROM", "TO", "KIND", "STATUS", "WINDOW", "FINISHED",
    ]);
    for u in list {
        let w = if u.active_window == "alternate" {
            &u.alternate
        } else {
            &u.preferred
        };
        t.row(vec![
            u.id.to_string(),
            u.instance.clone(),
            u.from_release.clone(),
            u.target_release.clone(),
            format!(
                "{}{}",
                u.kind,
                if u.mandatory { " (mandatory)" } else { "" }
            ),
            u.status_label.clone(),
            format!("{} ({})", time(&w.start), u.active_window),
            opt_time(&u.finished_at),
        ]);
    }
    t.render()
}

fn policy_text(p: &Policy) -> String {
    let mut out = fields(&[
        (
            "Supported",
            format!(
                "the latest {} major release{} (n{})",
                p.supported_majors,
                if p.supported_majors == 1 { "" } else { "s" },
                (1..p.supported_majors)
                    .map(|k| format!(", n-{k}"))
                    .collect::<String>()
            ),
        ),
        (
            "Mandatory",
            format!(
                "when {} major release{} behind the latest, or past end of support",
                p.mandatory_when_behind,
                if p.mandatory_when_behind == 1 {
                    ""
                } else {
                    "s"
                }
            ),
        ),
        (
            "Service updates",
            if p.service_updates_automatic {
                "applied automatically in the next window, without approval".into()
            } else {
                "scheduled and approved like major updates".into()
            },
        ),
        (
            "Maintenance window",
            p.maintenance_window_start
                .as_deref()
                .map(|t| format!("opens daily at {t} UTC"))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "Mandatory lead",
            p.mandatory_lead_days
                .map(|d| format!("mandatory updates are scheduled {d} days ahead"))
                .unwrap_or_else(|| "-".into()),
        ),
        (
            "Source",
            if p.source.is_empty() {
                "-".into()
            } else {
                p.source.clone()
            },
        ),
    ]);
    if !p.releases.is_empty() {
        let mut t = Table::new(&["RELEASE", "KIND", "SUPPORT", "END-OF-SUPPORT"]);
        for r in &p.releases {
            t.row(vec![
                r.version.clone(),
                r.kind.clone(),
                r.support.clone(),
                date(&r.end_of_support),
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn timeline_details_show_what_changed() {
        let d = json!({
            "before": {"target": "9.0", "preferred": {"start": "A", "end": "B"}, "status": "queued"},
            "after": {"target": "9.1", "preferred": {"start": "A", "end": "B"}, "status": "scheduled"},
        });
        assert_eq!(
            details_line(&d),
            "status: queued -> scheduled; target: 9.0 -> 9.1"
        );
        assert_eq!(
            details_line(&json!({"stage": "Swap", "error": null})),
            "error: -; stage: Swap"
        );
        assert_eq!(details_line(&Value::Null), "");
    }
}
