//! Post-refresh scripts: SQL run on the copied database before it replaces the target's.
//!
//! A script set is the built-in sample (`crates/steward-server/post-refresh/`) or a directory
//! (`post_refresh_scripts_dir`): its `*.sql` files run for every target in file-name order,
//! then those of the subdirectory named after the target. Each file runs in its own
//! transaction. Header lines `-- requires: table.column, table` make a file run only on
//! releases that have them; elsewhere it is skipped, so one set serves every release.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One script to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub name: String,
    pub sql: String,
}

/// What running one script did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScriptRun {
    pub name: String,
    /// Ran without error, or was skipped because the release lacks what it requires.
    pub ok: bool,
    /// `applied: N rows changed`, `skipped: ...` or the error.
    pub message: String,
}

/// The built-in sample.
pub fn builtin() -> Vec<Script> {
    [
        (
            "10-anonymise-contact-emails.sql",
            include_str!("../../../post-refresh/10-anonymise-contact-emails.sql"),
        ),
        (
            "20-anonymise-contact-phones.sql",
            include_str!("../../../post-refresh/20-anonymise-contact-phones.sql"),
        ),
        (
            "30-disable-outgoing-integrations.sql",
            include_str!("../../../post-refresh/30-disable-outgoing-integrations.sql"),
        ),
    ]
    .into_iter()
    .map(|(name, sql)| Script {
        name: name.into(),
        sql: sql.into(),
    })
    .collect()
}

/// The scripts of `dir` for `target`: `dir/*.sql`, then `dir/<target>/*.sql`, each in name
/// order. Names of the target's own scripts are shown as `<target>/<file>`.
pub fn load_dir(dir: &Path, target: &str) -> Result<Vec<Script>, String> {
    let mut out = sql_files(dir, "")?;
    let own = dir.join(target);
    if own.is_dir() {
        out.extend(sql_files(&own, &format!("{target}/"))?);
    }
    Ok(out)
}

fn sql_files(dir: &Path, prefix: &str) -> Result<Vec<Script>, String> {
    let read = |e: std::io::Error| format!("post-refresh scripts in {}: {e}", dir.display());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(read)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let sql = std::fs::read_to_string(&p)
                .map_err(|e| format!("post-refresh script {}: {e}", p.display()))?;
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            Ok(Script {
                name: format!("{prefix}{name}"),
                sql,
            })
        })
        .collect()
}

/// The `-- requires:` items of a script's header (the leading comment lines).
fn requirements(sql: &str) -> Vec<String> {
    sql.lines()
        .map(str::trim)
        .take_while(|l| l.is_empty() || l.starts_with("--"))
        .filter_map(|l| {
            l.trim_start_matches('-')
                .trim()
                .strip_prefix("requires:")
                .map(str::to_owned)
        })
        .flat_map(|list| {
            list.split([',', ' '])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The first requirement `conn` lacks, if any.
fn missing(conn: &rusqlite::Connection, reqs: &[String]) -> rusqlite::Result<Option<String>> {
    for r in reqs {
        let (table, column) = match r.split_once('.') {
            Some((t, c)) => (t, Some(c)),
            None => (r.as_str(), None),
        };
        let present: bool = match column {
            None => conn.query_row(
                "SELECT count(*) > 0 FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [table],
                |row| row.get(0),
            )?,
            Some(c) => conn.query_row(
                "SELECT count(*) > 0 FROM pragma_table_info(?1) WHERE name = ?2",
                [table, c],
                |row| row.get(0),
            )?,
        };
        if !present {
            return Ok(Some(r.clone()));
        }
    }
    Ok(None)
}

/// Runs `scripts` in order on the database at `db`, each in its own transaction, stopping at
/// the first error. Returns what each did, and the error if one failed.
pub fn run_all(
    db: &Path,
    release: &str,
    scripts: &[Script],
) -> (Vec<ScriptRun>, Result<(), String>) {
    let mut runs = Vec::new();
    let mut conn = match rusqlite::Connection::open(db) {
        Ok(c) => c,
        Err(e) => return (runs, Err(format!("cannot open the copied database: {e}"))),
    };
    for s in scripts {
        let outcome = (|| {
            if let Some(m) = missing(&conn, &requirements(&s.sql))? {
                return Ok(format!("skipped: release {release} has no {m}"));
            }
            let tx = conn.transaction()?;
            let total = |tx: &rusqlite::Transaction| {
                tx.query_row("SELECT total_changes()", [], |r| r.get::<_, i64>(0))
            };
            let before = total(&tx)?;
            tx.execute_batch(&s.sql)?;
            let changed = total(&tx)? - before;
            tx.commit()?;
            Ok::<_, rusqlite::Error>(format!("applied: {changed} rows changed"))
        })();
        match outcome {
            Ok(message) => {
                tracing::info!(script = %s.name, %message, "post-refresh script");
                runs.push(ScriptRun {
                    name: s.name.clone(),
                    ok: true,
                    message,
                })
            }
            Err(e) => {
                let message = e.to_string();
                runs.push(ScriptRun {
                    name: s.name.clone(),
                    ok: false,
                    message: message.clone(),
                });
                return (
                    runs,
                    Err(format!("post-refresh script {} failed: {message}", s.name)),
                );
            }
        }
    }
    (runs, Ok(()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirements_come_from_the_header() {
        let sql = "-- Anonymise\n-- requires: contacts.email, integrations\n--requires: a.b\nUPDATE x SET y = 1;\n-- requires: not.this";
        assert_eq!(requirements(sql), ["contacts.email", "integrations", "a.b"]);
        assert!(requirements("UPDATE x SET y = 1;").is_empty());
    }

    #[test]
    fn the_sample_skips_what_a_release_lacks_and_stops_at_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("d.sqlite");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch(
            "CREATE TABLE contacts (id INTEGER PRIMARY KEY, email TEXT);
             INSERT INTO contacts (email) VALUES ('a@real.example'), (NULL);",
        )
        .unwrap();
        drop(c);
        let (runs, r) = run_all(&db, "8.1", &builtin());
        r.unwrap();
        assert_eq!(runs.len(), 3);
        assert!(runs.iter().all(|r| r.ok), "{runs:?}");
        assert!(runs[0].message.starts_with("applied"), "{runs:?}");
        assert_eq!(
            runs[1].message,
            "skipped: release 8.1 has no contacts.phone"
        );
        let c = rusqlite::Connection::open(&db).unwrap();
        let emails: Vec<Option<String>> = c
            .prepare("SELECT email FROM contacts ORDER BY id")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(emails, [Some("contact-1@example.invalid".into()), None]);

        let bad = [
            Script {
                name: "1.sql".into(),
                sql: "UPDATE contacts SET email = 'x';".into(),
            },
            Script {
                name: "2.sql".into(),
                sql: "UPDATE contacts SET email = 'y'; UPDATE nowhere SET z = 1;".into(),
            },
            Script {
                name: "3.sql".into(),
                sql: "UPDATE contacts SET email = 'z';".into(),
            },
        ];
        let (runs, r) = run_all(&db, "8.1", &bad);
        assert!(r.unwrap_err().contains("2.sql failed"));
        assert_eq!(runs.len(), 2);
        assert!(
            !runs[1].ok && runs[1].message.contains("nowhere"),
            "{runs:?}"
        );
        let first: String = c
            .query_row("SELECT email FROM contacts WHERE id = 1", [], |r| r.get(0))
            .unwrap();
        assert_eq!(first, "x", "a failed script's own changes are rolled back");
    }

    #[test]
    fn a_directory_runs_shared_then_the_targets_own_scripts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.sql"), "SELECT 2;").unwrap();
        std::fs::write(dir.path().join("a.sql"), "SELECT 1;").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a script").unwrap();
        std::fs::create_dir(dir.path().join("crm-test")).unwrap();
        std::fs::write(dir.path().join("crm-test/0.sql"), "SELECT 3;").unwrap();
        let names = |t: &str| -> Vec<String> {
            load_dir(dir.path(), t)
                .unwrap()
                .into_iter()
                .map(|s| s.name)
                .collect()
        };
        assert_eq!(names("crm-test"), ["a.sql", "b.sql", "crm-test/0.sql"]);
        assert_eq!(names("other"), ["a.sql", "b.sql"]);
        assert!(load_dir(&dir.path().join("missing"), "x").is_err());
    }
}
