//! Copying a whole control plane from one store into another (`steward store migrate-to`):
//! every row of every table, in one transaction of the target, which must be empty.

use crate::sql::{self, Value};
use crate::{Backend, Result, Store, StoreError};

/// What a copy moved.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CopyReport {
    /// `(table, rows)` in the order they were copied.
    pub tables: Vec<(String, u64)>,
    pub rows: u64,
}

/// Rows read from the source per statement (bounds memory on a large audit log).
const BATCH: i64 = 2_000;

impl Store {
    /// Copies every row of this SQLite store into `target` (PostgreSQL or another SQLite
    /// file), which must be at the same schema version and hold no rows at all. Everything
    /// is written in one transaction of the target: a failure leaves it empty.
    /// `progress(table, rows_so_far)` is called after each batch.
    pub fn copy_into(
        &self,
        target: &Store,
        mut progress: impl FnMut(&str, u64),
    ) -> Result<CopyReport> {
        let Backend::Sqlite(_) = &self.backend else {
            return Err(StoreError::NotEmpty(
                "only a SQLite control plane can be copied from".into(),
            ));
        };
        // One read transaction of the source for the whole copy: a consistent snapshot even
        // if a server is still writing to it.
        self.read(|from| {
            let tables = tables_in_dependency_order(from.conn())?;
            target.write(|to| {
            for (table, _) in &tables {
                let n: i64 =
                    to.conn()
                        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
                            r.get(0)
                        })?;
                if n > 0 {
                    return Err(StoreError::NotEmpty(format!(
                        "the target control-plane store is not empty (table {table} has {n} rows); \
                         migrate into a new, empty database"
                    )));
                }
            }
            let mut report = CopyReport::default();
            for (table, columns) in &tables {
                let list = columns.join(", ");
                let marks = (1..=columns.len())
                    .map(|i| format!("?{i}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let insert = format!("INSERT INTO {table} ({list}) VALUES ({marks})");
                let mut copied = 0u64;
                let mut offset = 0i64;
                loop {
                    let mut st = from.conn().prepare(&format!(
                        "SELECT {list} FROM {table} ORDER BY rowid LIMIT ?1 OFFSET ?2"
                    ))?;
                    let n = columns.len();
                    let rows = st
                        .query_map([BATCH, offset], |r| {
                            (0..n).map(|i| r.get::<_, Value>(i)).collect()
                        })?
                        .collect::<sql::Result<Vec<Vec<Value>>>>()?;
                    if rows.is_empty() {
                        break;
                    }
                    offset += rows.len() as i64;
                    for row in rows {
                        to.conn().execute(&insert, row)?;
                        copied += 1;
                    }
                    progress(table, copied);
                }
                if to.conn().is_postgres() && columns.iter().any(|c| c == "id") {
                    // Identity columns continue after the copied ids.
                    to.conn().query_row(
                        &format!(
                            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), \
                             (SELECT COALESCE(max(id), 0) + 1 FROM {table}), false)"
                        ),
                        [],
                        |_| Ok(()),
                    )?;
                }
                report.rows += copied;
                report.tables.push((table.clone(), copied));
            }
            Ok(report)
        })
        })
    }
}

/// The tables of a SQLite store with their columns, each after the tables it references.
fn tables_in_dependency_order(conn: &sql::Conn) -> Result<Vec<(String, Vec<String>)>> {
    let mut st = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         ORDER BY name",
    )?;
    let names: Vec<String> = st
        .query_map([], |r| r.get(0))?
        .collect::<sql::Result<_>>()?;
    let mut info = Vec::new();
    for name in &names {
        let mut st = conn.prepare(&format!("SELECT name FROM pragma_table_info('{name}')"))?;
        let columns: Vec<String> = st
            .query_map([], |r| r.get(0))?
            .collect::<sql::Result<_>>()?;
        let mut st = conn.prepare(&format!(
            "SELECT DISTINCT \"table\" FROM pragma_foreign_key_list('{name}')"
        ))?;
        let refs: Vec<String> = st
            .query_map([], |r| r.get(0))?
            .collect::<sql::Result<_>>()?;
        info.push((name.clone(), columns, refs));
    }
    let mut ordered: Vec<(String, Vec<String>)> = Vec::new();
    while !info.is_empty() {
        let before = info.len();
        let mut i = 0;
        while i < info.len() {
            let ready = info[i]
                .2
                .iter()
                .all(|r| *r == info[i].0 || ordered.iter().any(|(n, _)| n == r));
            if ready {
                let (name, columns, _) = info.remove(i);
                ordered.push((name, columns));
            } else {
                i += 1;
            }
        }
        if info.len() == before {
            return Err(StoreError::Corrupt(format!(
                "the tables {:?} reference each other in a cycle",
                info.iter().map(|t| &t.0).collect::<Vec<_>>()
            )));
        }
    }
    Ok(ordered)
}
