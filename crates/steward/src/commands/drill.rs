//! `steward drill ...`: the fleet view, an instance's drills, running one now (optionally
//! waiting for it with its progress) and showing one, through the REST API.

use std::fmt::Write as _;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::DrillCommand;
use crate::client::{Client, segment};
use crate::output::{self, Drill, Table, drill_duration, drill_line, human_size, time};

/// An instance the fleet view lists.
#[derive(Debug, Deserialize)]
struct Attention {
    instance: String,
    #[serde(rename = "type")]
    instance_type: String,
    /// `failed`, `stale` or `never`.
    reason: String,
    #[serde(default)]
    last_drill: Option<Drill>,
    #[serde(default)]
    has_backup: bool,
}

/// The answer to `GET /api/v1/drills`.
#[derive(Debug, Deserialize)]
struct Fleet {
    schedule: String,
    stale_days: u32,
    failed_only: bool,
    instances_checked: u64,
    instances: Vec<Attention>,
}

/// Every page of `GET /api/v1/drills` as one answer (the counts are the first page's, which
/// count the whole match).
async fn fleet_all(client: &Client, query: Vec<(&str, String)>) -> anyhow::Result<Value> {
    const PAGE: u64 = 1000;
    let mut all: Vec<Value> = Vec::new();
    let mut offset = 0u64;
    let mut first: Option<Value> = None;
    loop {
        let mut q = query.clone();
        q.push(("limit", PAGE.to_string()));
        q.push(("offset", offset.to_string()));
        let mut page: Value = client.get("/api/v1/drills", &q).await?;
        if let Some(rows) = page.get_mut("instances").and_then(Value::as_array_mut) {
            all.append(rows);
        }
        let next = page.get("next_offset").and_then(Value::as_u64);
        let mut head = first.take().unwrap_or(page);
        head["next_offset"] = Value::Null;
        first = Some(head);
        match next {
            // A next page that does not move on would loop for ever.
            Some(n) if n > offset => offset = n,
            _ => break,
        }
    }
    let mut out = first.unwrap_or_else(|| json!({}));
    out["instances"] = Value::Array(all);
    Ok(out)
}

pub async fn run(client: &Client, cmd: DrillCommand) -> anyhow::Result<()> {
    match cmd {
        DrillCommand::List {
            instance: Some(instance),
            json,
            ..
        } => {
            let v: Value = client
                .get(
                    &format!("/api/v1/instances/{}/drills", segment(&instance)),
                    &[],
                )
                .await?;
            super::show(&json, v, |d: &Vec<Drill>| history(&instance, d))
        }
        DrillCommand::List {
            failed,
            stale_days,
            filter,
            instance: None,
            json,
        } => {
            let mut query = Vec::new();
            if let Some(n) = stale_days {
                query.push(("stale_days", n.to_string()));
            }
            if failed {
                query.push(("failed", "true".to_owned()));
            }
            if let Some(f) = filter {
                query.push(("q", f));
            }
            let v = fleet_all(client, query).await?;
            super::show(&json, v, fleet)
        }
        DrillCommand::Run {
            instance,
            backup,
            wait,
            json,
        } => {
            let v: Value = client
                .post(
                    "/api/v1/drills",
                    &json!({"instance": instance, "backup_id": backup}),
                )
                .await?;
            if !wait.wait {
                return super::show(&json, v, |d: &Drill| {
                    format!(
                        "Restore drill {id} of {} (backup {} “{}”) is queued; follow it with \
                         `steward drill show {id}` or wait with --wait.\n",
                        d.instance,
                        d.backup_id,
                        d.backup_label,
                        id = d.id
                    )
                });
            }
            let d: Drill = output::decode(v)?;
            let v = wait_for_drill(client, d.id).await?;
            let d: Drill = output::decode(v.clone())?;
            super::show(&json, v, details)?;
            if d.state == "failed" {
                anyhow::bail!(
                    "restore drill {} of {} failed: {}",
                    d.id,
                    d.instance,
                    d.problems.join("; ")
                );
            }
            Ok(())
        }
        DrillCommand::Show { id, json } => {
            let v: Value = client.get(&format!("/api/v1/drills/{id}"), &[]).await?;
            super::show(&json, v, details)
        }
    }
}

/// One line of a drill's progress for --wait: `drill 7 of crm-prod: restore 42%`.
fn progress_line(d: &Drill) -> String {
    let mut line = format!("drill {} of {}: ", d.id, d.instance);
    match (d.state.as_str(), &d.stage) {
        ("running", Some(stage)) => {
            line.push_str(stage);
            if d.progress_total > 0 && stage == "restore" {
                let pct = d.progress_done.min(d.progress_total) * 100 / d.progress_total;
                let _ = write!(line, " {pct}%");
            }
        }
        ("queued", _) if d.attempts > 0 => {
            let _ = write!(
                line,
                "queued again (it gave way to a restore, refresh or update; {} attempt{} so far)",
                d.attempts,
                if d.attempts == 1 { "" } else { "s" }
            );
        }
        (state, _) => line.push_str(state),
    }
    line
}

/// Polls a drill until it ended, showing its progress on stderr, and returns its JSON.
async fn wait_for_drill(client: &Client, id: i64) -> anyhow::Result<Value> {
    super::follow(client, &format!("/api/v1/drills/{id}"), |v| {
        let d: Drill = output::decode(v.clone())?;
        let done = matches!(d.state.as_str(), "passed" | "failed" | "skipped");
        Ok((progress_line(&d), done))
    })
    .await
}

fn yes_no(v: Option<bool>) -> String {
    match v {
        Some(true) => "ok".into(),
        Some(false) => "FAILED".into(),
        None => "-".into(),
    }
}

fn details(d: &Drill) -> String {
    let opt =
        |t: &Option<chrono::DateTime<chrono::Utc>>| t.as_ref().map_or_else(|| "-".into(), time);
    let mut state = d.state.clone();
    if d.state == "running" {
        let _ = write!(state, " ({})", progress_line(d));
    }
    let mut pairs = vec![
        ("Drill", d.id.to_string()),
        ("Instance", d.instance.clone()),
        ("Backup", format!("{} ({})", d.backup_id, d.backup_label)),
        (
            "Origin",
            if d.origin == "scheduled" {
                "scheduled (restore_drill_schedule)".into()
            } else {
                format!("on demand, by {}", d.requested_by)
            },
        ),
        ("State", state),
        ("Queued", time(&d.created_at)),
        ("Started", opt(&d.started_at)),
        ("Finished", opt(&d.finished_at)),
        (
            "Duration",
            d.duration_ms.map_or_else(|| "-".into(), drill_duration),
        ),
        (
            "Restored",
            d.bytes
                .map_or_else(|| "-".into(), |b| format!("{} ({b} bytes)", human_size(b))),
        ),
        ("Attempts", d.attempts.to_string()),
        (
            "Checks",
            format!(
                "whole-file hash {}, integrity_check {}, row counts {}",
                yes_no(d.hash_ok),
                yes_no(d.integrity_ok),
                yes_no(d.row_counts_ok)
            ),
        ),
    ];
    if matches!(d.state.as_str(), "passed" | "failed") {
        pairs.push(("Problems", d.problems.len().to_string()));
    }
    let mut out = output::fields(&pairs);
    for p in &d.problems {
        let _ = writeln!(out, "  - {p}");
    }
    out
}

fn fleet(f: &Fleet) -> String {
    let mut t = Table::new(&["INSTANCE", "TYPE", "WHY", "LAST DRILL", "PROBLEM"]);
    for a in &f.instances {
        let why = match a.reason.as_str() {
            "failed" => "last drill failed".to_owned(),
            "stale" => format!("older than {} days", f.stale_days),
            _ if a.has_backup => "never drilled".to_owned(),
            _ => "never drilled (no backup yet)".to_owned(),
        };
        t.row(vec![
            a.instance.clone(),
            a.instance_type.clone(),
            why,
            a.last_drill.as_ref().map_or_else(|| "-".into(), drill_line),
            a.last_drill
                .as_ref()
                .and_then(|d| d.problems.first().cloned())
                .unwrap_or_else(|| "-".into()),
        ]);
    }
    let scope = if f.failed_only {
        "whose last drill failed".to_owned()
    } else {
        format!(
            "whose last drill failed, is older than {} day{}, or that were never drilled",
            f.stale_days,
            if f.stale_days == 1 { "" } else { "s" }
        )
    };
    let mut out = String::new();
    if t.is_empty() {
        let _ = writeln!(
            out,
            "No instance needs attention: none of the {} {scope} (restore_drill_schedule: {}).",
            f.instances_checked, f.schedule
        );
        return out;
    }
    let _ = writeln!(
        out,
        "{} of {} instance{} {scope} (restore_drill_schedule: {}):\n",
        f.instances.len(),
        f.instances_checked,
        if f.instances_checked == 1 { "" } else { "s" },
        f.schedule
    );
    out.push_str(&t.render());
    out
}

fn history(instance: &str, drills: &[Drill]) -> String {
    let mut t = Table::new(&[
        "ID", "BACKUP", "ORIGIN", "STATE", "WHEN", "DURATION", "SIZE", "PROBLEM",
    ]);
    for d in drills {
        let when = d.finished_at.or(d.started_at).unwrap_or(d.created_at);
        t.row(vec![
            d.id.to_string(),
            format!("{} ({})", d.backup_id, d.backup_label),
            d.origin.clone(),
            d.state.clone(),
            time(&when),
            d.duration_ms.map_or_else(|| "-".into(), drill_duration),
            d.bytes.map_or_else(|| "-".into(), human_size),
            d.problems.first().cloned().unwrap_or_else(|| "-".into()),
        ]);
    }
    if t.is_empty() {
        return format!(
            "No restore drills of {instance} yet; run one with `steward drill run --instance {instance}`.\n"
        );
    }
    t.render()
}
