//! What the CLI prints: the API's JSON (pretty) for `--json`, otherwise aligned tables and
//! key/value blocks for people. The wire types here mirror the API's views; unknown fields
//! are ignored so a newer server does not break an older CLI.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct Instance {
    pub name: String,
    #[serde(rename = "type")]
    pub instance_type: String,
    pub engine: String,
    pub release: String,
    pub state: String,
    pub database_path: String,
    pub documents_path: String,
    pub storage_bytes: u64,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The node that keeps its files and runs its jobs.
    #[serde(default)]
    pub node: Option<String>,
    /// Its newest finished restore drill.
    #[serde(default)]
    pub last_drill: Option<Drill>,
}

/// A restore drill: a backup test-restored into a throwaway file and checked.
#[derive(Debug, Deserialize)]
pub struct Drill {
    pub id: i64,
    pub instance: String,
    pub backup_id: i64,
    #[serde(default)]
    pub backup_label: String,
    /// `scheduled` or `manual`.
    pub origin: String,
    /// `queued`, `running`, `passed`, `failed` or `skipped`.
    pub state: String,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub duration_ms: Option<u64>,
    #[serde(default)]
    pub bytes: Option<u64>,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub progress_done: u64,
    #[serde(default)]
    pub progress_total: u64,
    #[serde(default)]
    pub hash_ok: Option<bool>,
    #[serde(default)]
    pub integrity_ok: Option<bool>,
    #[serde(default)]
    pub row_counts_ok: Option<bool>,
    #[serde(default)]
    pub problems: Vec<String>,
    #[serde(default)]
    pub attempts: u32,
}

/// `754 ms`, `1.2 s`, `1 min 23 s`.
pub fn drill_duration(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {} s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// A drill in one line: `passed 2026-11-03 06:12:09 UTC in 1.2 s, backup 7 (nightly)`.
pub fn drill_line(d: &Drill) -> String {
    let when = d.finished_at.or(d.started_at).unwrap_or(d.created_at);
    let mut line = format!("{} {}", d.state, time(&when));
    if let Some(ms) = d.duration_ms {
        let _ = write!(line, " in {}", drill_duration(ms));
    }
    let _ = write!(line, ", backup {}", d.backup_id);
    if !d.backup_label.is_empty() {
        let _ = write!(line, " ({})", d.backup_label);
    }
    line
}

#[derive(Debug, Deserialize)]
pub struct InstanceList {
    pub instances: Vec<Instance>,
    pub total_storage_bytes: u64,
    /// Instances that match, when the list stopped at a limit.
    #[serde(default)]
    pub total: Option<u64>,
}

#[derive(Debug, Deserialize)]
pub struct Release {
    pub version: String,
    pub kind: String,
    pub released: NaiveDate,
    pub end_of_support: Option<NaiveDate>,
    pub description: String,
    pub latest: bool,
}

#[derive(Debug, Deserialize)]
pub struct User {
    pub username: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub disabled: bool,
}

#[derive(Debug, Deserialize)]
pub struct CreatedUser {
    pub user: User,
    pub generated_password: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Token {
    pub id: i64,
    pub name: String,
    pub username: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub struct CreatedToken {
    pub token: Token,
    pub secret: String,
}

#[derive(Debug, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
}

#[derive(Debug, Deserialize)]
pub struct JobStage {
    pub stage: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub target: String,
    pub state: String,
    pub stage: Option<String>,
    pub progress_done: u64,
    pub progress_total: u64,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub stages: Vec<JobStage>,
}

#[derive(Debug, Deserialize)]
pub struct Backup {
    pub id: i64,
    pub instance: String,
    /// `system`, `on_demand`, `pre_update` or `pre_refresh`.
    pub kind: String,
    #[serde(default)]
    pub label: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    /// `queued`, `running`, `completed`, `failed` or `deleted`.
    pub status: String,
    pub release: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub size_bytes: Option<u64>,
    #[serde(default)]
    pub stored_bytes: Option<u64>,
    #[serde(default)]
    pub job_id: Option<i64>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub can_edit: bool,
    #[serde(default)]
    pub can_delete: bool,
    #[serde(default)]
    pub can_restore: bool,
    /// A verify found it damaged (restoring it is refused).
    #[serde(default)]
    pub damaged: bool,
    /// What that verify found.
    #[serde(default)]
    pub damage: Option<String>,
    /// Its latest verify.
    #[serde(default)]
    pub verification: Option<BackupVerification>,
    /// Its newest finished restore drill.
    #[serde(default)]
    pub last_drill: Option<Drill>,
}

/// A backup's latest verify, as backup views carry it.
#[derive(Debug, Deserialize)]
pub struct BackupVerification {
    pub at: DateTime<Utc>,
    /// `structure`, `read_data` or `sample`.
    pub mode: String,
    pub ok: bool,
}

/// The answer to `POST /backups/{id}/restore`.
#[derive(Debug, Deserialize)]
pub struct RestoreStarted {
    pub job: Job,
    pub backup: Backup,
    pub target: Instance,
}

#[derive(Debug, Deserialize)]
pub struct InstanceStorage {
    pub name: String,
    #[serde(rename = "type")]
    pub instance_type: String,
    pub database_bytes: u64,
    pub backup_bytes: u64,
    pub backup_count: u64,
}

#[derive(Debug, Deserialize)]
pub struct Storage {
    pub instances: Vec<InstanceStorage>,
    pub total_database_bytes: u64,
    pub total_backup_bytes: u64,
}

#[derive(Debug, Deserialize)]
pub struct Alert {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `info`, `success` or `error`.
    pub level: String,
    #[serde(default)]
    pub instance: Option<String>,
    pub message: String,
}

#[derive(Debug, Deserialize)]
pub struct ScheduleEntry {
    pub event: String,
    pub label: String,
    pub audience: String,
    pub channels: Vec<String>,
    #[serde(default)]
    pub customized: bool,
}

#[derive(Debug, Deserialize)]
pub struct Recipient {
    pub instance: String,
    pub email: String,
    pub added_at: DateTime<Utc>,
    pub added_by: String,
}

#[derive(Debug, Deserialize)]
pub struct Webhook {
    pub id: i64,
    pub url: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

#[derive(Debug, Deserialize)]
pub struct CreatedWebhook {
    pub webhook: Webhook,
    pub secret: String,
}

#[derive(Debug, Deserialize)]
pub struct Delivery {
    pub event: String,
    #[serde(default)]
    pub instance: Option<String>,
    pub created_at: DateTime<Utc>,
    pub channel: String,
    /// An email address, or `webhook:<id>`.
    pub recipient: String,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: i64,
    #[serde(default)]
    pub next_attempt_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub last_error: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Pruned {
    #[serde(default)]
    pub expired: u64,
    pub packs_deleted: u64,
    pub bytes_deleted: u64,
}

impl Job {
    /// The error a failed job ends a command with; `None` unless it failed.
    pub fn failure(&self) -> Option<anyhow::Error> {
        (self.state == "failed").then(|| {
            anyhow::anyhow!(
                "job {} ({} of {}) failed: {}",
                self.id,
                self.kind,
                self.target,
                self.last_error
                    .as_deref()
                    .unwrap_or("no error was recorded")
            )
        })
    }
}

/// Decodes an API answer into a wire type (the answer was already checked to be JSON).
pub fn decode<T: serde::de::DeserializeOwned>(v: Value) -> anyhow::Result<T> {
    serde_json::from_value(v).map_err(|e| {
        anyhow::anyhow!("the server sent an answer this steward does not understand ({e}); are the CLI and server the same version?")
    })
}

/// Prints `v` as pretty JSON on stdout.
pub fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Rows under a header, each column as wide as its widest cell, two spaces between columns.
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Self {
        Self {
            rows: vec![header.iter().map(|h| (*h).to_owned()).collect()],
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn is_empty(&self) -> bool {
        self.rows.len() <= 1
    }

    pub fn render(&self) -> String {
        let cols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..cols)
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| r.get(c))
                    .map(|s| s.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// Key/value lines with the keys aligned, for `show` commands.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let w = pairs
        .iter()
        .map(|(k, _)| k.chars().count() + 1)
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let _ = writeln!(out, "{:<w$}  {v}", format!("{k}:"));
    }
    out
}

/// `1536` → `1.5 KiB`; bytes below 1 KiB stay exact.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A moment as people read it, in UTC to the second (the core's one format for people).
pub fn time(t: &DateTime<Utc>) -> String {
    steward_core::clock::display_time(t).to_string()
}

pub fn instance_table(list: &InstanceList) -> String {
    let mut t = Table::new(&["NAME", "TYPE", "RELEASE", "STATE", "STORAGE"]);
    for i in &list.instances {
        t.row(vec![
            i.name.clone(),
            i.instance_type.clone(),
            i.release.clone(),
            i.state.clone(),
            human_size(i.storage_bytes),
        ]);
    }
    let mut out = if t.is_empty() {
        "No instances yet; create one with `steward instance create NAME --type sandbox`.\n"
            .to_owned()
    } else {
        t.render()
    };
    let n = list.total.unwrap_or(list.instances.len() as u64);
    let shown = list.instances.len() as u64;
    let _ = writeln!(
        out,
        "{n} instance{}, {} of database storage in total{}",
        if n == 1 { "" } else { "s" },
        human_size(list.total_storage_bytes),
        if shown < n {
            format!("; showing the first {shown} (--limit)")
        } else {
            String::new()
        }
    );
    out
}

pub fn instance_details(i: &Instance) -> String {
    fields(&[
        ("Name", i.name.clone()),
        ("Type", i.instance_type.clone()),
        ("Release", i.release.clone()),
        ("State", i.state.clone()),
        ("Engine", i.engine.clone()),
        (
            "Storage",
            format!(
                "{} ({} bytes)",
                human_size(i.storage_bytes),
                i.storage_bytes
            ),
        ),
        (
            "Database",
            format!("{}  (the file applications open)", i.database_path),
        ),
        ("Documents", i.documents_path.clone()),
        (
            "Node",
            i.node.clone().unwrap_or_else(|| "(not recorded)".into()),
        ),
        (
            "Created",
            format!("{} by {}", time(&i.created_at), i.created_by),
        ),
        (
            "Last drill",
            i.last_drill.as_ref().map_or_else(
                || "never (see `steward drill run --instance NAME`)".into(),
                |d| {
                    let mut line = drill_line(d);
                    if let Some(p) = d.problems.first() {
                        let _ = write!(line, "; {p}");
                    }
                    line
                },
            ),
        ),
    ])
}

pub fn release_table(releases: &[Release]) -> String {
    let mut t = Table::new(&[
        "VERSION",
        "KIND",
        "RELEASED",
        "END OF SUPPORT",
        "DESCRIPTION",
    ]);
    for r in releases {
        let version = if r.latest {
            format!("{} (latest)", r.version)
        } else {
            r.version.clone()
        };
        t.row(vec![
            version,
            r.kind.clone(),
            r.released.to_string(),
            r.end_of_support
                .map_or_else(|| "-".into(), |d| d.to_string()),
            r.description.clone(),
        ]);
    }
    t.render()
}

pub fn user_table(users: &[User]) -> String {
    let mut t = Table::new(&["USERNAME", "ROLE", "STATUS", "CREATED"]);
    for u in users {
        t.row(vec![
            u.username.clone(),
            u.role.clone(),
            if u.disabled { "disabled" } else { "active" }.into(),
            time(&u.created_at),
        ]);
    }
    t.render()
}

pub fn user_details(u: &User) -> String {
    fields(&[
        ("Username", u.username.clone()),
        ("Role", u.role.clone()),
        (
            "Status",
            if u.disabled { "disabled" } else { "active" }.into(),
        ),
        ("Created", time(&u.created_at)),
    ])
}

pub fn token_table(tokens: &[Token]) -> String {
    let mut t = Table::new(&["ID", "NAME", "USER", "CREATED", "LAST USED", "STATUS"]);
    for k in tokens {
        t.row(vec![
            k.id.to_string(),
            k.name.clone(),
            k.username.clone(),
            time(&k.created_at),
            k.last_used_at.as_ref().map_or_else(|| "never".into(), time),
            match &k.revoked_at {
                Some(at) => format!("revoked {}", time(at)),
                None => "active".into(),
            },
        ]);
    }
    if t.is_empty() {
        return "No API tokens.\n".into();
    }
    t.render()
}

/// The one time a token's secret is shown.
pub fn new_token(c: &CreatedToken) -> String {
    format!(
        "Created API token {id} ({name:?}) for {user}.\n\n\
         Secret — shown only this once; store it now, Steward keeps only its hash:\n\n    {secret}\n\n\
         Use it with:\n\n    export STEWARD_TOKEN={secret}\n\n\
         Revoke it with `steward token revoke {id}`.\n",
        id = c.token.id,
        name = c.token.name,
        user = c.token.username,
        secret = c.secret,
    )
}

pub fn audit_table(entries: &[AuditEntry]) -> String {
    let mut t = Table::new(&["ID", "AT", "ACTOR", "ACTION", "TARGET"]);
    for e in entries {
        t.row(vec![
            e.id.to_string(),
            time(&e.at),
            e.actor.clone(),
            e.action.clone(),
            e.target.clone(),
        ]);
    }
    if t.is_empty() {
        return "No audit entries match.\n".into();
    }
    t.render()
}

fn progress(j: &Job) -> String {
    if j.progress_total == 0 {
        return String::new();
    }
    format!(
        "{}%",
        j.progress_done.saturating_mul(100) / j.progress_total
    )
}

pub fn job_table(jobs: &[Job]) -> String {
    let mut t = Table::new(&[
        "ID", "KIND", "TARGET", "STATE", "STAGE", "PROGRESS", "CREATED", "BY",
    ]);
    for j in jobs {
        t.row(vec![
            j.id.to_string(),
            j.kind.clone(),
            j.target.clone(),
            j.state.clone(),
            j.stage.clone().unwrap_or_default(),
            progress(j),
            time(&j.created_at),
            j.created_by.clone(),
        ]);
    }
    if t.is_empty() {
        return "No jobs match.\n".into();
    }
    t.render()
}

pub fn job_details(j: &Job) -> String {
    let opt = |t: &Option<DateTime<Utc>>| t.as_ref().map(time).unwrap_or_else(|| "-".into());
    let mut out = fields(&[
        ("Job", j.id.to_string()),
        ("Kind", j.kind.clone()),
        ("Target", j.target.clone()),
        ("State", j.state.clone()),
        ("Stage", j.stage.clone().unwrap_or_else(|| "-".into())),
        (
            "Progress",
            format!(
                "{} of {} {}",
                j.progress_done,
                j.progress_total,
                progress(j)
            ),
        ),
        (
            "Created",
            format!("{} by {}", time(&j.created_at), j.created_by),
        ),
        ("Started", opt(&j.started_at)),
        ("Finished", opt(&j.finished_at)),
        (
            "Last error",
            j.last_error.clone().unwrap_or_else(|| "-".into()),
        ),
    ]);
    if !j.stages.is_empty() {
        let mut t = Table::new(&["STAGE", "STARTED", "FINISHED", "SECONDS"]);
        for s in &j.stages {
            let secs = s
                .finished_at
                .map(|f| {
                    format!(
                        "{:.1}",
                        (f - s.started_at).num_milliseconds() as f64 / 1000.0
                    )
                })
                .unwrap_or_else(|| "running".into());
            t.row(vec![
                s.stage.clone(),
                time(&s.started_at),
                opt(&s.finished_at),
                secs,
            ]);
        }
        out.push('\n');
        out.push_str(&t.render());
    }
    out
}

/// A backup kind as people read it: `on_demand` → `on-demand`.
fn backup_kind(kind: &str) -> String {
    kind.replace('_', "-")
}

fn backup_label(b: &Backup) -> String {
    match b.label.as_deref() {
        Some(l) if !l.is_empty() => l.to_owned(),
        _ => "-".into(),
    }
}

/// An instance's backups, newest first as the API lists them.
pub fn backup_table(instance: &str, backups: &[Backup]) -> String {
    let mut t = Table::new(&[
        "ID",
        "LABEL",
        "KIND",
        "CREATED-BY",
        "CREATED",
        "EXPIRES",
        "STATUS",
        "SIZE",
        "DRILL",
    ]);
    for b in backups {
        t.row(vec![
            b.id.to_string(),
            backup_label(b),
            backup_kind(&b.kind),
            b.created_by.clone(),
            time(&b.created_at),
            time(&b.expires_at),
            if b.damaged {
                format!("{} DAMAGED", b.status)
            } else {
                b.status.clone()
            },
            b.size_bytes.map_or_else(|| "-".into(), human_size),
            b.last_drill.as_ref().map_or_else(
                || "-".into(),
                |d| {
                    let when = d.finished_at.unwrap_or(d.created_at);
                    format!("{} {}", d.state, when.format("%Y-%m-%d %H:%M"))
                },
            ),
        ]);
    }
    if t.is_empty() {
        return format!(
            "No backups of {instance}; take one with `steward backup create {instance} --label LABEL`.\n"
        );
    }
    t.render()
}

/// What may be done with a backup, from the flags the server computed.
fn backup_actions(b: &Backup) -> String {
    let mut actions = Vec::new();
    if b.can_edit {
        actions.push("edit");
    }
    if b.can_delete {
        actions.push("delete");
    }
    if b.can_restore {
        actions.push("restore");
    }
    if actions.is_empty() {
        "none".into()
    } else {
        actions.join(", ")
    }
}

pub fn backup_details(b: &Backup) -> String {
    let opt = |t: &Option<DateTime<Utc>>| t.as_ref().map(time).unwrap_or_else(|| "-".into());
    let size =
        |n: Option<u64>| n.map_or_else(|| "-".into(), |n| format!("{} ({n} bytes)", human_size(n)));
    let mut pairs = vec![
        ("Backup", b.id.to_string()),
        ("Instance", b.instance.clone()),
        ("Label", backup_label(b)),
        (
            "Notes",
            b.notes
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "-".into()),
        ),
        ("Kind", backup_kind(&b.kind)),
        ("Status", b.status.clone()),
        ("Release", b.release.clone()),
        (
            "Created",
            format!("{} by {}", time(&b.created_at), b.created_by),
        ),
        ("Completed", opt(&b.completed_at)),
        ("Expires", time(&b.expires_at)),
        ("Size", size(b.size_bytes)),
        ("Newly stored", size(b.stored_bytes)),
        (
            "Job",
            b.job_id.map_or_else(|| "-".into(), |j| j.to_string()),
        ),
    ];
    if let Some(e) = &b.error {
        pairs.push(("Error", e.clone()));
    }
    if let Some(v) = &b.verification {
        pairs.push((
            "Verified",
            format!(
                "{} ({}): {}",
                time(&v.at),
                v.mode.replace('_', " "),
                if v.ok { "whole" } else { "damaged" }
            ),
        ));
    }
    if b.damaged {
        pairs.push((
            "DAMAGED",
            format!(
                "{}; restoring it is refused",
                b.damage.as_deref().unwrap_or("a verify found it damaged")
            ),
        ));
    }
    pairs.push(("Actions", backup_actions(b)));
    fields(&pairs)
}

/// The prompt before deleting a backup.
pub fn delete_backup_question(b: &Backup) -> String {
    format!(
        "Delete backup {} ({}) of {}? This cannot be undone. [y/N] ",
        b.id,
        backup_label(b),
        b.instance
    )
}

/// What a restore will do, shown before it is confirmed.
pub fn restore_review(b: &Backup, target: &Instance) -> String {
    let mut out = String::from("Restore review\n\n");
    out.push_str(&fields(&[
        ("Backup", format!("{} ({})", b.id, backup_label(b))),
        ("Instance", b.instance.clone()),
        (
            "Created",
            format!("{} by {}", time(&b.created_at), b.created_by),
        ),
        ("Release", b.release.clone()),
        (
            "Target",
            format!(
                "{} ({}, release {}, {})",
                target.name, target.instance_type, target.release, target.state
            ),
        ),
    ]));
    let _ = write!(
        out,
        "\nThe target's database will be replaced by the backup's (at release {release}); its \
         documents folder is not touched; the target is unavailable until the restore \
         completes.\n",
        release = b.release
    );
    out
}

pub fn storage_table(s: &Storage) -> String {
    let mut t = Table::new(&["NAME", "TYPE", "DATABASE", "BACKUPS", "BACKUP STORAGE"]);
    for i in &s.instances {
        t.row(vec![
            i.name.clone(),
            i.instance_type.clone(),
            human_size(i.database_bytes),
            i.backup_count.to_string(),
            human_size(i.backup_bytes),
        ]);
    }
    let mut out = if t.is_empty() {
        "No instances.\n".to_owned()
    } else {
        t.render()
    };
    let _ = writeln!(
        out,
        "\nDatabase storage: {} in total\nBackup storage:   {} in total (does not count towards database storage)",
        human_size(s.total_database_bytes),
        human_size(s.total_backup_bytes)
    );
    out
}

pub fn alert_table(alerts: &[Alert]) -> String {
    let mut t = Table::new(&["AT", "ID", "LEVEL", "INSTANCE", "MESSAGE"]);
    for a in alerts {
        t.row(vec![
            time(&a.at),
            a.id.to_string(),
            a.level.clone(),
            a.instance.clone().unwrap_or_else(|| "-".into()),
            a.message.clone(),
        ]);
    }
    if t.is_empty() {
        return "No alerts.\n".into();
    }
    t.render()
}

/// A channel list as people read it: `email, webhook`, or `log only` when empty.
pub fn channels(c: &[String]) -> String {
    if c.is_empty() {
        "log only".into()
    } else {
        c.join(", ")
    }
}

pub fn schedule_table(entries: &[ScheduleEntry]) -> String {
    let mut t = Table::new(&["EVENT", "AUDIENCE", "CHANNELS", "CUSTOM", "DESCRIPTION"]);
    for e in entries {
        t.row(vec![
            e.event.clone(),
            e.audience.clone(),
            if e.channels.is_empty() {
                "-".into()
            } else {
                e.channels.join(",")
            },
            if e.customized { "yes" } else { "no" }.into(),
            e.label.clone(),
        ]);
    }
    t.render()
}

pub fn recipient_table(instance: &str, recipients: &[Recipient]) -> String {
    let mut t = Table::new(&["EMAIL", "ADDED", "ADDED BY"]);
    for r in recipients {
        t.row(vec![r.email.clone(), time(&r.added_at), r.added_by.clone()]);
    }
    if t.is_empty() {
        return format!("{instance} has no extra recipients.\n");
    }
    t.render()
}

pub fn webhook_table(hooks: &[Webhook]) -> String {
    let mut t = Table::new(&["ID", "URL", "CREATED", "CREATED BY"]);
    for w in hooks {
        t.row(vec![
            w.id.to_string(),
            w.url.clone(),
            time(&w.created_at),
            w.created_by.clone(),
        ]);
    }
    if t.is_empty() {
        return "No webhooks.\n".into();
    }
    t.render()
}

pub fn delivery_table(deliveries: &[Delivery]) -> String {
    let mut t = Table::new(&[
        "TIME",
        "EVENT",
        "INSTANCE",
        "CHANNEL",
        "RECIPIENT",
        "STATE",
        "ATTEMPTS",
        "LAST ERROR",
    ]);
    for d in deliveries {
        let state = match (&*d.state, &d.next_attempt_at) {
            ("pending", Some(next)) if d.attempts > 0 => {
                format!("pending (retry {})", next.format("%H:%M:%S"))
            }
            _ => d.state.clone(),
        };
        t.row(vec![
            time(&d.created_at),
            d.event.clone(),
            d.instance.clone().unwrap_or_else(|| "-".into()),
            d.channel.clone(),
            d.recipient.clone(),
            state,
            d.attempts.to_string(),
            d.last_error.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    if t.is_empty() {
        return "No deliveries.\n".into();
    }
    t.render()
}

/// One line of job progress for --wait: `job 7 (restore of acme-test): restore 42%`.
pub fn job_progress_line(j: &Job) -> String {
    let mut line = format!("job {} ({} of {}): ", j.id, j.kind, j.target);
    match (j.state.as_str(), &j.stage) {
        ("running", Some(stage)) => {
            line.push_str(stage);
            let p = progress(j);
            if !p.is_empty() {
                line.push(' ');
                line.push_str(&p);
            }
        }
        ("failed", Some(stage)) => {
            let _ = write!(line, "failed in stage {stage}");
        }
        (state, _) => line.push_str(state),
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backup(kind: &str, created_by: &str, label: &str) -> Backup {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        Backup {
            id: 7,
            instance: "acme".into(),
            kind: kind.into(),
            label: Some(label.into()),
            notes: Some(String::new()),
            status: "completed".into(),
            release: "8.2".into(),
            created_by: created_by.into(),
            created_at: at("2026-11-20T02:13:00Z"),
            completed_at: Some(at("2026-11-20T02:13:05Z")),
            expires_at: at("2026-11-23T02:13:00Z"),
            size_bytes: Some(2048),
            stored_bytes: Some(100),
            job_id: Some(3),
            error: None,
            can_edit: kind == "on_demand",
            can_delete: kind == "on_demand",
            can_restore: true,
            damaged: false,
            damage: None,
            verification: None,
            last_drill: None,
        }
    }

    #[test]
    fn backup_tables_show_system_backups_as_system() {
        let table = backup_table(
            "acme",
            &[
                backup("system", "System", "System backup 2026-11-20"),
                backup("on_demand", "admin", "before import"),
            ],
        );
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("ID  LABEL"), "{table}");
        assert!(
            lines[1].contains("system") && lines[1].contains("System"),
            "{table}"
        );
        assert!(
            lines[2].contains("on-demand") && lines[2].contains("2026-11-23 02:13:00 UTC"),
            "{table}"
        );
        assert!(lines[2].ends_with("completed  2.0 KiB  -"), "{table}");
        // A drilled backup shows its drill's result and when.
        let mut drilled = backup("on_demand", "admin", "x");
        drilled.last_drill = serde_json::from_value(serde_json::json!({
            "id": 3, "instance": "acme", "backup_id": 7, "origin": "manual", "state": "passed",
            "requested_by": "admin", "created_at": "2026-11-21T06:00:00Z",
            "finished_at": "2026-11-21T06:00:02Z"
        }))
        .unwrap();
        let table = backup_table("acme", &[drilled]);
        assert!(table.lines().next().unwrap().ends_with("DRILL"), "{table}");
        assert!(table.contains("passed 2026-11-21 06:00"), "{table}");
        assert!(backup_table("acme", &[]).contains("No backups of acme"));
    }

    #[test]
    fn backup_details_say_what_may_be_done() {
        let system = backup_details(&backup("system", "System", "daily"));
        assert!(system.contains("Actions:       restore\n"), "{system}");
        assert!(system.contains("Notes:         -\n"), "{system}");
        let mine = backup_details(&backup("on_demand", "admin", "x"));
        assert!(mine.contains("edit, delete, restore"), "{mine}");
    }

    #[test]
    fn confirmations_name_the_backup() {
        let b = backup("on_demand", "admin", "before import");
        assert_eq!(
            delete_backup_question(&b),
            "Delete backup 7 (before import) of acme? This cannot be undone. [y/N] "
        );
        let target = Instance {
            name: "acme-test".into(),
            instance_type: "sandbox".into(),
            engine: "sqlite".into(),
            release: "9.1".into(),
            state: "available".into(),
            database_path: "/d/acme-test/database.sqlite".into(),
            documents_path: "/d/acme-test/documents".into(),
            storage_bytes: 1,
            created_at: b.created_at,
            created_by: "admin".into(),
            node: None,
            last_drill: None,
        };
        let review = restore_review(&b, &target);
        for text in [
            "7 (before import)",
            "acme",
            "2026-11-20 02:13:00 UTC",
            "8.2",
            "acme-test (sandbox, release 9.1, available)",
            "its documents folder is not touched",
            "the target is unavailable until the restore completes",
        ] {
            assert!(review.contains(text), "{text:?} missing: {review}");
        }
    }

    #[test]
    fn job_progress_shows_stage_and_percent() {
        let mut j = Job {
            id: 4,
            kind: "restore".into(),
            target: "acme-test".into(),
            state: "queued".into(),
            stage: None,
            progress_done: 0,
            progress_total: 0,
            last_error: None,
            created_by: "admin".into(),
            created_at: Utc::now(),
            started_at: None,
            finished_at: None,
            stages: vec![],
        };
        assert_eq!(
            job_progress_line(&j),
            "job 4 (restore of acme-test): queued"
        );
        j.state = "running".into();
        j.stage = Some("restore".into());
        j.progress_done = 42;
        j.progress_total = 100;
        assert_eq!(
            job_progress_line(&j),
            "job 4 (restore of acme-test): restore 42%"
        );
        j.state = "failed".into();
        assert_eq!(
            job_progress_line(&j),
            "job 4 (restore of acme-test): failed in stage restore"
        );
        j.last_error = Some("disk full".into());
        assert!(
            j.failure()
                .unwrap()
                .to_string()
                .ends_with("failed: disk full")
        );
        j.state = "succeeded".into();
        assert!(j.failure().is_none());
    }

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(1023), "1023 B");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[test]
    fn tables_align_columns() {
        let mut t = Table::new(&["NAME", "TYPE"]);
        t.row(vec!["a-long-name".into(), "sandbox".into()]);
        t.row(vec!["b".into(), "production".into()]);
        assert_eq!(
            t.render(),
            "NAME         TYPE\na-long-name  sandbox\nb            production\n"
        );
    }
}
