//! `steward backup verify ...`: starts a verify job, waits for it showing its progress on
//! stderr, prints the per-backup report, and ends with exit code 6 when something is damaged.

use std::fmt;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::JsonFlag;
use crate::client::Client;
use crate::output::{self, Table, human_size, time};

/// Verify found damaged backups (exit code 6).
#[derive(Debug)]
pub struct DamageFound(pub String);

impl fmt::Display for DamageFound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DamageFound {}

/// What to verify and how, from the command line.
pub struct VerifyArgs {
    pub id: Option<i64>,
    pub instance: Option<String>,
    pub all: bool,
    pub read_data: bool,
    pub sample: Option<f64>,
    pub no_wait: bool,
    pub json: JsonFlag,
}

#[derive(Debug, Deserialize)]
struct Started {
    job: output::Job,
    backups: u64,
    mode: String,
    sample_percent: Option<f64>,
}

#[derive(Debug, Deserialize)]
pub struct Report {
    pub mode: String,
    pub sample_percent: Option<f64>,
    pub scope: String,
    pub ok: bool,
    pub checked: u64,
    pub damaged: u64,
    pub backups: Vec<Verified>,
    pub damaged_packs: Vec<DamagedPack>,
}

#[derive(Debug, Deserialize)]
pub struct Verified {
    pub backup_id: i64,
    pub instance: String,
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub ok: bool,
    pub reason: String,
    pub chunks_needed: u64,
    pub chunks_checked: u64,
    pub bytes_read: u64,
    pub missing_chunks: u64,
    pub corrupt_chunks: u64,
    pub problems: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct DamagedPack {
    pub pack: String,
    pub backups: Vec<Affected>,
}

#[derive(Debug, Deserialize)]
pub struct Affected {
    pub backup_id: i64,
    pub instance: String,
    pub created_at: DateTime<Utc>,
}

fn mode_label(mode: &str, percent: Option<f64>) -> String {
    match (mode, percent) {
        ("sample", Some(p)) => format!("sample of {p} % of the data"),
        ("read_data", _) => "all data read".into(),
        ("structure", _) => "structure only, no data read".into(),
        (m, _) => m.replace('_', " "),
    }
}

pub async fn run(client: &Client, a: VerifyArgs) -> anyhow::Result<()> {
    let (mode, sample_percent) = match (a.read_data, a.sample) {
        (_, Some(p)) => ("sample", Some(p)),
        (true, None) => ("read_data", None),
        (false, None) => ("structure", None),
    };
    let mut body = json!({"mode": mode, "sample_percent": sample_percent});
    if let Some(id) = a.id {
        body["backup_id"] = json!(id);
    }
    if let Some(name) = &a.instance {
        body["instance"] = json!(name);
    }
    if a.all {
        body["all"] = json!(true);
    }
    let v: Value = client.post("/api/v1/backups/verify", &body).await?;
    let started: Started = output::decode(v.clone())?;
    if a.no_wait {
        return super::show(&a.json, v, |s: &Started| {
            format!(
                "Verifying {} backup{} of {} ({}) as job {j}.\n\
                 Follow it with `steward job show {j}`; its result is the report.\n",
                s.backups,
                if s.backups == 1 { "" } else { "s" },
                s.job.target,
                mode_label(&s.mode, s.sample_percent),
                j = s.job.id
            )
        });
    }
    let job = super::wait_for_job(client, started.job.id).await?;
    if let Some(failed) = job.failure() {
        return Err(failed);
    }
    let job_v: Value = client
        .get(&format!("/api/v1/jobs/{}", started.job.id), &[])
        .await?;
    let result = job_v["result"].clone();
    let report: Report = output::decode(result.clone())?;
    if a.json.json {
        output::print_json(&result)?;
    } else {
        print!("{}", report_text(&report));
    }
    if report.ok {
        Ok(())
    } else {
        Err(DamageFound(format!(
            "verify found {} damaged backup{}: {}; restoring {} is refused until a verify finds {} whole",
            report.damaged,
            if report.damaged == 1 { "" } else { "s" },
            report
                .backups
                .iter()
                .filter(|b| !b.ok)
                .map(|b| format!("{} of {}", b.backup_id, b.instance))
                .collect::<Vec<_>>()
                .join(", "),
            if report.damaged == 1 { "it" } else { "them" },
            if report.damaged == 1 { "it" } else { "them" },
        ))
        .into())
    }
}

/// The report for people: a line per backup, the damaged packs with every backup they
/// damage, and the problems found.
pub fn report_text(r: &Report) -> String {
    let mut out = format!(
        "Verified {} backup{} of {} ({}): {}.\n\n",
        r.checked,
        if r.checked == 1 { "" } else { "s" },
        r.scope,
        mode_label(&r.mode, r.sample_percent),
        if r.ok {
            "all whole".to_owned()
        } else {
            format!("{} DAMAGED", r.damaged)
        }
    );
    let mut t = Table::new(&[
        "BACKUP", "INSTANCE", "LABEL", "CREATED", "RESULT", "CHUNKS", "READ", "MISSING", "CORRUPT",
    ]);
    for b in &r.backups {
        t.row(vec![
            b.backup_id.to_string(),
            b.instance.clone(),
            if b.label.is_empty() {
                "-".into()
            } else {
                b.label.clone()
            },
            time(&b.created_at),
            match (b.ok, b.reason.as_str()) {
                (true, _) => "whole".into(),
                (false, "shared") => "DAMAGED (shares a damaged pack)".into(),
                (false, _) => "DAMAGED".into(),
            },
            format!("{}/{}", b.chunks_checked, b.chunks_needed),
            human_size(b.bytes_read),
            b.missing_chunks.to_string(),
            b.corrupt_chunks.to_string(),
        ]);
    }
    out.push_str(&t.render());
    if !r.damaged_packs.is_empty() {
        out.push_str("\nDamaged packs, and every backup each one damages:\n");
        for p in &r.damaged_packs {
            let _ = writeln!(out, "  pack {}", p.pack);
            for b in &p.backups {
                let _ = writeln!(
                    out,
                    "    backup {} of {}, taken {}",
                    b.backup_id,
                    b.instance,
                    time(&b.created_at)
                );
            }
        }
    }
    let damaged: Vec<&Verified> = r.backups.iter().filter(|b| !b.ok).collect();
    if !damaged.is_empty() {
        out.push_str("\nProblems:\n");
        for b in damaged {
            for p in &b.problems {
                let _ = writeln!(out, "  backup {}: {p}", b.backup_id);
            }
        }
        out.push_str(
            "\nRestoring a damaged backup is refused until a verify that reads its data \
             (--read-data) finds it whole.\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_names_each_damaged_backup_pack_and_problem() {
        let at = "2031-03-14T00:30:05Z".parse::<DateTime<Utc>>().unwrap();
        let b = |id: i64, ok: bool, reason: &str| Verified {
            backup_id: id,
            instance: "crm-prod".into(),
            label: format!("b{id}"),
            created_at: at,
            ok,
            reason: reason.into(),
            chunks_needed: 10,
            chunks_checked: 10,
            bytes_read: 2048,
            missing_chunks: 0,
            corrupt_chunks: u64::from(!ok),
            problems: if ok {
                vec![]
            } else {
                vec!["chunk c1 in pack ab12: its content does not match its hash".into()]
            },
        };
        let r = Report {
            mode: "read_data".into(),
            sample_percent: None,
            scope: "crm-prod".into(),
            ok: false,
            checked: 3,
            damaged: 2,
            backups: vec![
                b(7, false, "requested"),
                b(8, true, "requested"),
                b(9, false, "shared"),
            ],
            damaged_packs: vec![DamagedPack {
                pack: "ab12".into(),
                backups: vec![
                    Affected {
                        backup_id: 7,
                        instance: "crm-prod".into(),
                        created_at: at,
                    },
                    Affected {
                        backup_id: 9,
                        instance: "crm-prod".into(),
                        created_at: at,
                    },
                ],
            }],
        };
        let text = report_text(&r);
        assert!(
            text.starts_with("Verified 3 backups of crm-prod (all data read): 2 DAMAGED."),
            "{text}"
        );
        assert!(text.contains("DAMAGED (shares a damaged pack)"), "{text}");
        assert!(
            text.contains(
                "  pack ab12\n    backup 7 of crm-prod, taken 2031-03-14 00:30:05 UTC\n    backup 9"
            ),
            "{text}"
        );
        assert!(text.contains("  backup 7: chunk c1 in pack ab12"), "{text}");
        assert!(!text.contains("backup 8:"), "{text}");
    }
}
