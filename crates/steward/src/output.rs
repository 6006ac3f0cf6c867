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
}

#[derive(Debug, Deserialize)]
pub struct InstanceList {
    pub instances: Vec<Instance>,
    pub total_storage_bytes: u64,
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

/// A moment as people read it, in UTC to the second.
pub fn time(t: &DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
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
    let n = list.instances.len();
    let _ = writeln!(
        out,
        "{n} instance{}, {} of database storage in total",
        if n == 1 { "" } else { "s" },
        human_size(list.total_storage_bytes)
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
            "Created",
            format!("{} by {}", time(&i.created_at), i.created_by),
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

#[cfg(test)]
mod tests {
    use super::*;

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
