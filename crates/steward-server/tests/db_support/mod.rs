//! Looking inside instance databases from tests, as an application or an operator would:
//! a whole-database dump to compare before and after, and the staging files a job leaves
//! beside a database. Include with `mod db_support;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

/// A connection to a database file, waiting for locks like an application would.
pub fn open(db: impl AsRef<Path>) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(db.as_ref()).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c
}

/// Everything in a database, so that equal dumps mean the same database row by row: the
/// integrity check (must be ok), every table's and index's definition, and every table's rows
/// in rowid order.
pub fn dump(db: impl AsRef<Path>) -> Vec<String> {
    let db = db.as_ref();
    let c = open(db);
    let check: String = c
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok", "{}", db.display());
    let objects: Vec<(String, String)> = c
        .prepare(
            "SELECT name, sql FROM sqlite_schema WHERE type IN ('table', 'index') \
             AND sql IS NOT NULL ORDER BY name",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut out = Vec::new();
    for (name, sql) in objects {
        let is_table = sql.starts_with("CREATE TABLE");
        out.push(sql);
        if !is_table {
            continue;
        }
        let mut st = c
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
            .unwrap();
        let n = st.column_count();
        let rows = st
            .query_map([], |r| {
                (0..n)
                    .map(|i| r.get::<_, rusqlite::types::Value>(i))
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .unwrap();
        for r in rows {
            out.push(format!("{name}: {:?}", r.unwrap()));
        }
    }
    out
}

/// Files beside a database whose name contains `suffix` (`.updating`, `.refreshing`, ...):
/// a job's staging copy and its `-wal`/`-shm`.
pub fn staged_files(db: impl AsRef<Path>, suffix: &str) -> Vec<PathBuf> {
    std::fs::read_dir(db.as_ref().parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(suffix))
        .collect()
}
