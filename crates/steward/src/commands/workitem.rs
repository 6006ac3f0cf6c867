//! `steward workitem ...`: requests, lists, reschedules, cancels and accepts work items
//! (database refreshes) through the REST API, and prints them for people.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::cli::WorkitemCommand;
use crate::client::{Client, UsageError, segment};
use crate::output::{self, Table};

/// What a refresh does to its target; printed when --acknowledge is missing.
pub const CONSEQUENCES: &str = concat!(
    "  - the target's database is erased and replaced; it cannot be recovered from the refresh\n",
    "    (Steward keeps a safety backup of it for a while);\n",
    "  - the target is unavailable until the refresh completes;\n",
    "  - the target's documents folder is not touched.",
);

pub async fn run(client: &Client, cmd: WorkitemCommand) -> anyhow::Result<()> {
    match cmd {
        WorkitemCommand::List {
            status,
            instance,
            json,
        } => {
            let mut query = Vec::new();
            if let Some(s) = status {
                query.push(("status", s));
            }
            if let Some(i) = instance {
                query.push(("instance", i));
            }
            let v: Value = client.get("/api/v1/workitems", &query).await?;
            super::show(&json, v, |items: &Vec<WorkItem>| table(items))
        }
        WorkitemCommand::Show { id, json } => {
            let v: Value = client.get(&format!("/api/v1/workitems/{id}"), &[]).await?;
            super::show(&json, v, details)
        }
        WorkitemCommand::Refresh {
            source,
            target,
            at,
            window_start,
            zone,
            acknowledge,
            json,
        } => {
            if !acknowledge {
                return Err(UsageError(format!(
                    "refusing to request a refresh of {target} from {source} without \
                     --acknowledge. A refresh means:\n{CONSEQUENCES}\nPass --acknowledge to \
                     accept these consequences."
                ))
                .into());
            }
            let window_start =
                parse_time(&window_start, zone.time_zone.as_deref(), "--window-start")?;
            let at = match at.as_deref().map(str::trim) {
                None | Some("latest") => Value::Null,
                Some(t) => Value::String(parse_time(t, zone.time_zone.as_deref(), "--at")?),
            };
            let body = json!({
                "source": source,
                "target": target,
                "at": at,
                "window_start": window_start,
                "acknowledge": true,
            });
            let v: Value = client.post("/api/v1/workitems/refresh", &body).await?;
            super::show(&json, v, |w: &WorkItem| {
                format!(
                    "Requested work item {}: refresh {} from {} ({}) at {}. Status: {}.\n\
                     Reschedule it with `steward workitem reschedule {id}` or cancel it with \
                     `steward workitem cancel {id}` until it starts.\n",
                    w.id,
                    w.target,
                    w.source,
                    point_in_time(w),
                    output::time(&w.window_start),
                    w.status_label,
                    id = w.id
                )
            })
        }
        WorkitemCommand::Reschedule {
            id,
            window_start,
            at,
            zone,
            json,
        } => {
            let mut body = Map::new();
            if let Some(w) = window_start {
                body.insert(
                    "window_start".into(),
                    parse_time(&w, zone.time_zone.as_deref(), "--window-start")?.into(),
                );
            }
            if let Some(a) = at {
                let a = a.trim();
                let value = if a == "latest" {
                    "latest".to_owned()
                } else {
                    parse_time(a, zone.time_zone.as_deref(), "--at")?
                };
                body.insert("at".into(), value.into());
            }
            let v: Value = client
                .post(
                    &format!("/api/v1/workitems/{id}/reschedule"),
                    &Value::Object(body),
                )
                .await?;
            super::show(&json, v, |w: &WorkItem| {
                format!(
                    "Rescheduled work item {}: window starts {}, copying {}.\n",
                    w.id,
                    output::time(&w.window_start),
                    point_in_time(w)
                )
            })
        }
        WorkitemCommand::Cancel { id, yes, json } => {
            super::require_confirmation(yes, &format!("cancel work item {id}"))?;
            if !yes {
                let w: WorkItem = client.get(&format!("/api/v1/workitems/{id}"), &[]).await?;
                super::confirm(
                    false,
                    &format!(
                        "Cancel work item {} (refresh {} from {}, window {})? [y/N] ",
                        w.id,
                        w.target,
                        w.source,
                        output::time(&w.window_start)
                    ),
                    &format!("work item {id} was not cancelled"),
                )?;
            }
            let v: Value = client
                .post(&format!("/api/v1/workitems/{id}/cancel"), &json!({}))
                .await?;
            super::show(&json, v, |w: &WorkItem| {
                format!(
                    "Cancelled work item {} (refresh {} from {}); it will not run.\n",
                    w.id, w.target, w.source
                )
            })
        }
        WorkitemCommand::Accept { id, json } => {
            let v: Value = client
                .post(&format!("/api/v1/workitems/{id}/accept"), &json!({}))
                .await?;
            super::show(&json, v, |w: &WorkItem| {
                format!(
                    "Accepted work item {}: it runs when its window starts, {}.\n",
                    w.id,
                    output::time(&w.window_start)
                )
            })
        }
        WorkitemCommand::RestorePoints { instance, json } => {
            let v: Value = client
                .get(
                    &format!("/api/v1/instances/{}/restore-points", segment(&instance)),
                    &[],
                )
                .await?;
            super::show(&json, v, restore_points)
        }
    }
}

/// A TIME argument as RFC 3339 UTC, or a usage error naming the flag.
pub(crate) fn parse_time(text: &str, zone: Option<&str>, flag: &str) -> anyhow::Result<String> {
    let zone = zone.unwrap_or("");
    steward_server::web::parse_local_time(text, zone)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .map_err(|e| UsageError(format!("{flag}: {e}")).into())
}

/// A work item as the API answers it (`WorkItemView`).
#[derive(Debug, Deserialize)]
pub struct WorkItem {
    pub id: i64,
    pub kind: String,
    pub source: String,
    pub target: String,
    pub point_in_time: Option<DateTime<Utc>>,
    pub restore_point: Option<RestorePointRef>,
    #[serde(default)]
    pub moment: Option<MomentRef>,
    pub window_start: DateTime<Utc>,
    pub status_label: String,
    pub requester: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub downtime_ms: Option<i64>,
    pub error: Option<String>,
    pub safety_backup_id: Option<i64>,
    #[serde(default)]
    pub scripts: Vec<ScriptRun>,
    #[serde(default)]
    pub history: Vec<HistoryEntry>,
    pub job_id: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct RestorePointRef {
    pub backup_id: Option<i64>,
    pub at: DateTime<Utc>,
}

/// A moment copied from continuous capture (`MomentRef`).
#[derive(Debug, Deserialize)]
pub struct MomentRef {
    pub chain_id: i64,
    pub at: DateTime<Utc>,
    pub commit_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub struct ScriptRun {
    pub name: String,
    pub ok: bool,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub status: String,
    #[serde(default)]
    pub details: Value,
}

#[derive(Debug, Deserialize)]
pub struct RestorePoints {
    pub instance: String,
    pub earliest: Option<DateTime<Utc>>,
    pub points: Vec<RestorePoint>,
    /// When continuous capture covers the instance.
    #[serde(default)]
    pub range: Option<super::pitr::Range>,
}

#[derive(Debug, Deserialize)]
pub struct RestorePoint {
    pub at: DateTime<Utc>,
    pub backup_id: i64,
    pub kind: String,
    #[serde(default)]
    pub label: String,
}

/// The point in time a work item copies, for people.
fn point_in_time(w: &WorkItem) -> String {
    match (&w.point_in_time, &w.restore_point) {
        (Some(t), _) => output::time(t),
        (None, Some(rp)) => format!("latest: {}", output::time(&rp.at)),
        (None, None) => "latest".into(),
    }
}

/// `754` → `754 ms`, `83_000` → `1 min 23 s`, `7_500_000` → `2 h 5 min`.
pub fn duration(ms: i64) -> String {
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

fn table(items: &[WorkItem]) -> String {
    if items.is_empty() {
        return "No work items.\n".into();
    }
    let mut t = Table::new(&[
        "ID",
        "KIND",
        "SOURCE",
        "TARGET",
        "POINT IN TIME",
        "WINDOW START",
        "STATUS",
        "REQUESTER",
        "CREATED",
    ]);
    for w in items {
        t.row(vec![
            w.id.to_string(),
            w.kind.clone(),
            w.source.clone(),
            w.target.clone(),
            point_in_time(w),
            output::time(&w.window_start),
            w.status_label.clone(),
            w.requester.clone(),
            output::time(&w.created_at),
        ]);
    }
    t.render()
}

fn details(w: &WorkItem) -> String {
    let opt = |t: &Option<DateTime<Utc>>| t.as_ref().map_or("—".to_owned(), output::time);
    let mut pairs = vec![
        ("Work item", format!("{} ({})", w.id, w.kind)),
        ("Status", w.status_label.clone()),
        ("Source", w.source.clone()),
        ("Target", w.target.clone()),
        ("Point in time", point_in_time(w)),
    ];
    if let Some(m) = &w.moment {
        let exact = steward_core::clock::display_time(&m.at);
        pairs.push((
            "Copied",
            match &m.commit_at {
                Some(c) => format!(
                    "the state committed at {} (the last commit at or before {exact}; continuous capture chain {})",
                    c.format("%Y-%m-%d %H:%M:%S%.3f UTC"),
                    m.chain_id
                ),
                None => format!(
                    "— (will copy the state at {exact}, the last commit at or before it, from continuous capture chain {})",
                    m.chain_id
                ),
            },
        ));
    } else if let Some(rp) = &w.restore_point {
        let from = rp
            .backup_id
            .map_or(String::new(), |b| format!(" (backup {b})"));
        pairs.push(("Copied", format!("{}{from}", output::time(&rp.at))));
    }
    pairs.extend([
        ("Window start", output::time(&w.window_start)),
        ("Requester", w.requester.clone()),
        ("Created", output::time(&w.created_at)),
        ("Updated", output::time(&w.updated_at)),
        ("Started", opt(&w.started_at)),
        ("Finished", opt(&w.finished_at)),
        (
            "Downtime",
            w.downtime_ms.map_or("—".to_owned(), |ms| {
                format!("{} (target unavailable → available)", duration(ms))
            }),
        ),
        (
            "Safety backup",
            w.safety_backup_id
                .map_or("— (taken when the refresh starts)".to_owned(), |b| {
                    format!("{b} (`steward backup show {b}`)")
                }),
        ),
        (
            "Job",
            w.job_id.map_or("—".to_owned(), |j| {
                format!("{j} (`steward job show {j}`)")
            }),
        ),
    ]);
    if let Some(e) = &w.error {
        pairs.push(("Error", e.clone()));
    }
    let mut out = output::fields(&pairs);
    out.push_str("\nPost-refresh scripts:\n");
    if w.scripts.is_empty() {
        out.push_str("  none run\n");
    }
    for s in &w.scripts {
        let mark = if s.ok { "ok" } else { "FAILED" };
        let _ = writeln!(out, "  {} [{mark}] {}", s.name, s.message);
    }
    out.push_str("\nHistory:\n");
    let mut t = Table::new(&["  AT", "STATUS", "BY", "DETAILS"]);
    for h in &w.history {
        t.row(vec![
            format!("  {}", output::time(&h.at)),
            h.status.clone(),
            h.actor.clone(),
            history_details(&h.details),
        ]);
    }
    out.push_str(&t.render());
    out
}

/// A history value for people: strings as they are, times as `output::time` shows them.
fn history_value(v: &Value) -> String {
    match v {
        Value::Null => "none".into(),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|t| output::time(&t.with_timezone(&Utc)))
            .unwrap_or_else(|_| s.clone()),
        other => other.to_string(),
    }
}

/// What a history entry changed (`window_start: A -> B`, from its `before` and `after`),
/// then its other facts as `key=value`.
fn history_details(details: &Value) -> String {
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
                    "{k}: {} -> {}",
                    history_value(old),
                    history_value(new)
                ));
            }
        }
    }
    for (k, v) in map {
        if !matches!(k.as_str(), "before" | "after") && !v.is_null() {
            parts.push(format!("{k}={}", history_value(v)));
        }
    }
    parts.join("; ")
}

fn restore_points(r: &RestorePoints) -> String {
    if let Some(range) = &r.range {
        return format!(
            "{} can be refreshed from the latest (a fresh copy at the window's start) or from \
             any moment of its continuous capture, copied exactly (the last commit at or before \
             it):\n{}",
            r.instance,
            super::pitr::range_text(range)
        );
    }
    let mut out = format!(
        "Restore points of {} (besides `latest`, a fresh copy at the window's start):\n",
        r.instance
    );
    if let Some(e) = &r.earliest {
        let _ = writeln!(out, "Earliest: {}", output::time(e));
    }
    if r.points.is_empty() {
        out.push_str("No completed backups within retention: only `latest` is possible.\n");
        return out;
    }
    let mut t = Table::new(&["AT", "BACKUP", "KIND", "LABEL"]);
    for p in &r.points {
        t.row(vec![
            output::time(&p.at),
            p.backup_id.to_string(),
            p.kind.clone(),
            p.label.clone(),
        ]);
    }
    out.push_str(&t.render());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_people_say_them() {
        assert_eq!(duration(754), "754 ms");
        assert_eq!(duration(1_500), "1.5 s");
        assert_eq!(duration(83_000), "1 min 23 s");
        assert_eq!(duration(7_500_000), "2 h 5 min");
    }
}
