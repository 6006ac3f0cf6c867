//! `steward backup range` and `steward backup restore --instance NAME --at TIME`.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::JsonFlag;
use crate::client::{Client, segment};
use crate::output::Instance;

/// A range as the API answers it (`RangeView`).
#[derive(Debug, Deserialize)]
pub struct Range {
    pub instance: String,
    pub capturing: bool,
    pub spans: Vec<Span>,
    pub gaps: Vec<Gap>,
    pub description: String,
    pub retention_days: u32,
}

#[derive(Debug, Deserialize)]
pub struct Span {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub release: Option<String>,
    pub commits: u64,
    pub open: bool,
}

#[derive(Debug, Deserialize)]
pub struct Gap {
    pub from: DateTime<Utc>,
    pub to: Option<DateTime<Utc>>,
    pub reason: String,
}

fn when(t: &DateTime<Utc>) -> String {
    steward_core::clock::display_time(t).to_string()
}

/// The range for people.
pub fn range_text(r: &Range) -> String {
    let mut out = format!("{} is restorable {}.\n", r.instance, r.description);
    if r.spans.is_empty() {
        out = format!(
            "{} has no restorable range: continuous capture has not run for it{}.\n",
            r.instance,
            if r.capturing { " yet" } else { "" }
        );
    }
    for s in &r.spans {
        out.push_str(&format!(
            "  {} – {}{}  {} commit{}{}\n",
            when(&s.from),
            when(&s.to),
            if s.open { " (now)" } else { "" },
            s.commits,
            if s.commits == 1 { "" } else { "s" },
            s.release
                .as_ref()
                .map(|v| format!(", release {v}"))
                .unwrap_or_default()
        ));
    }
    for g in &r.gaps {
        out.push_str(&format!(
            "  gap from {} to {}: {}\n",
            when(&g.from),
            g.to.as_ref().map(when).unwrap_or_else(|| "now".into()),
            g.reason
        ));
    }
    out.push_str(&format!(
        "Capture is {}; moments older than {} days are not kept.\n",
        if r.capturing {
            "running"
        } else {
            "not running"
        },
        r.retention_days
    ));
    out
}

pub async fn range(client: &Client, instance: &str, json: &JsonFlag) -> anyhow::Result<()> {
    let v: Value = client
        .get(
            &format!("/api/v1/instances/{}/range", segment(instance)),
            &[],
        )
        .await?;
    super::show(json, v, |r: &Range| range_text(r))
}

/// What a restore to a moment answered (`RestoreAtStarted`).
#[derive(Debug, Deserialize)]
struct Started {
    job: crate::output::Job,
    source: String,
    target: String,
    at: DateTime<Utc>,
    release: Option<String>,
}

pub struct RestoreAtArgs {
    pub instance: String,
    pub at: String,
    pub time_zone: Option<String>,
    pub target: String,
    pub yes: bool,
    pub wait: bool,
    pub json: JsonFlag,
}

pub async fn restore_at(client: &Client, a: RestoreAtArgs) -> anyhow::Result<()> {
    let at = super::workitem::parse_time(&a.at, a.time_zone.as_deref(), "--at")?;
    let target: Instance = client
        .get(&format!("/api/v1/instances/{}", segment(&a.target)), &[])
        .await?;
    // A production target is refused before the review, as the server would.
    if target.instance_type == "production" {
        return Err(crate::client::ApiError {
            status: reqwest::StatusCode::CONFLICT,
            code: "target_not_sandbox".into(),
            message: format!(
                "{} is a production instance; restores only write into sandboxes. Switch it to sandbox first, restore, then switch it back",
                target.name
            ),
        }
        .into());
    }
    let range: Range = client
        .get(
            &format!("/api/v1/instances/{}/range", segment(&a.instance)),
            &[],
        )
        .await?;
    super::require_confirmation(
        a.yes,
        &format!("restore {} as of {} into {}", a.instance, at, a.target),
    )?;
    let review = format!(
        "Restore {} as it was at {at} (the last commit at or before it)\n  into {} ({}, release {} now), replacing its database; its documents are not touched.\n  {} is unavailable until the restore completes.\n  {} is restorable {}.\n",
        a.instance,
        target.name,
        target.instance_type,
        target.release,
        target.name,
        range.instance,
        range.description
    );
    if a.json.json {
        eprint!("{review}");
    } else {
        print!("{review}");
    }
    super::confirm(
        a.yes,
        &format!(
            "Restore {} as of {at} into {}? [y/N] ",
            a.instance, a.target
        ),
        "nothing was restored",
    )?;
    let v: Value = client
        .post(
            "/api/v1/restores",
            &json!({"instance": a.instance, "at": at, "target": a.target}),
        )
        .await?;
    let started: Started = crate::output::decode(v.clone())?;
    if !a.wait {
        return super::show(&a.json, v, |r: &Started| {
            format!(
                "Restoring {} as of {} into {} as job {j}{}; {} is unavailable until it completes.\n\
                 Follow it with `steward job show {j}` or wait with --wait.\n",
                r.source,
                when(&r.at),
                r.target,
                r.release
                    .as_ref()
                    .map(|v| format!(" (release {v})"))
                    .unwrap_or_default(),
                r.target,
                j = r.job.id
            )
        });
    }
    let job = super::wait_for_job(client, started.job.id).await?;
    let failure = job.failure();
    let job_v: Value = client
        .get(&format!("/api/v1/jobs/{}", started.job.id), &[])
        .await?;
    let mut answer = v;
    answer["job"] = job_v.clone();
    super::show(&a.json, answer, |_: &Value| match &failure {
        None => format!(
            "Restored {} as of {} into {}: the state committed at {}.\n",
            started.source,
            when(&started.at),
            started.target,
            job_v["result"]["commit_at"]
                .as_str()
                .and_then(steward_core::clock::display_time_text)
                .unwrap_or_else(|| "?".into())
        ),
        Some(_) => String::new(),
    })?;
    failure.map_or(Ok(()), Err)
}
