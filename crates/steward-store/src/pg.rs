//! The PostgreSQL backend: a small pool of connections and its own append-only migrations
//! (`migrations_pg/*.sql`, the twins of the SQLite ones with PostgreSQL's types).
//!
//! Every write transaction first takes one transaction-scoped advisory lock, so writes are
//! serialised across every Steward node exactly as SQLite serialises them within one: each
//! read-check-write a method does stays atomic without per-query locking.

use std::sync::Mutex;
use std::time::Duration;

use crate::StoreError;

/// The advisory lock every write transaction holds ("STWD").
pub const WRITE_LOCK: i64 = 0x5354_5744;

const MIGRATIONS: &[&str] = &[
    include_str!("migrations_pg/0001_core.sql"),
    include_str!("migrations_pg/0002_jobs.sql"),
    include_str!("migrations_pg/0003_backups.sql"),
    include_str!("migrations_pg/0004_notify.sql"),
    include_str!("migrations_pg/0005_notify.sql"),
    include_str!("migrations_pg/0006_updates.sql"),
    include_str!("migrations_pg/0007_workitems.sql"),
    include_str!("migrations_pg/0008_verify.sql"),
    include_str!("migrations_pg/0009_drills.sql"),
    include_str!("migrations_pg/0010_login_throttle.sql"),
    include_str!("migrations_pg/0011_capture.sql"),
    include_str!("migrations_pg/0012_workitem_moment.sql"),
    include_str!("migrations_pg/0013_nodes.sql"),
    include_str!("migrations_pg/0014_fleet_work.sql"),
    include_str!("migrations_pg/0015_instance_storage.sql"),
];

// The two backends must know the same schema versions.
const _: () = assert!(MIGRATIONS.len() as i64 == crate::migrations::CURRENT);

/// Connections to one PostgreSQL database. Broken connections are dropped and replaced on
/// the next request, so the store recovers by itself when the server comes back.
pub struct Pool {
    config: postgres::Config,
    /// The URL without its password, for messages.
    pub shown: String,
    idle: Mutex<Vec<postgres::Client>>,
}

/// `postgres://user:secret@host/db` as `postgres://user@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (auth, host),
        None => return url.to_owned(),
    };
    let user = auth.split(':').next().unwrap_or("");
    format!("{scheme}://{user}@{host}")
}

impl Pool {
    /// Parses `url` (`postgres://user[:password]@host[:port]/database[?options]`).
    pub fn new(url: &str) -> Result<Self, StoreError> {
        let shown = redact(url);
        let mut config: postgres::Config = url.parse().map_err(|e| StoreError::InvalidUrl {
            url: shown.clone(),
            reason: format!("{e}"),
        })?;
        if config.get_dbname().is_none() {
            return Err(StoreError::InvalidUrl {
                url: shown,
                reason: "it names no database (postgres://user@host/DATABASE)".into(),
            });
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        config.application_name("steward");
        Ok(Self {
            config,
            shown,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A connection: an idle one that is still open, or a new one.
    pub fn get(&self) -> Result<postgres::Client, StoreError> {
        loop {
            let next = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
            match next {
                Some(c) if !c.is_closed() => return Ok(c),
                Some(_) => continue,
                None => break,
            }
        }
        self.config
            .connect(postgres::NoTls)
            .map_err(|e| StoreError::Unavailable {
                url: self.shown.clone(),
                reason: crate::sql::Error::from(e).to_string(),
            })
    }

    /// Gives a connection back for reuse (a broken one is dropped).
    pub fn put(&self, c: postgres::Client) {
        if !c.is_closed() {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < 8 {
                idle.push(c);
            }
        }
    }

    /// Drops every idle connection (after an error that may have broken them all).
    pub fn clear(&self) {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing a connection blocks on its own small runtime, which panics on a thread
        // that drives async tasks (the last holder of a server's state may be one): close
        // them on a thread of their own.
        let idle = std::mem::take(self.idle.get_mut().unwrap_or_else(|p| p.into_inner()));
        if !idle.is_empty() {
            let _ = std::thread::Builder::new()
                .name("steward-pg-close".into())
                .spawn(move || drop(idle));
        }
    }
}

/// Migrates the database to the current schema under the write lock (several nodes may
/// start at once); refuses a database written by a newer Steward.
pub fn migrate(pool: &Pool) -> Result<(), StoreError> {
    let mut client = pool.get()?;
    let mut tx = client.transaction().map_err(crate::sql::Error::from)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
        .map_err(crate::sql::Error::from)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS steward_schema (version BIGINT NOT NULL)")
        .map_err(crate::sql::Error::from)?;
    let found: Option<i64> = tx
        .query_opt("SELECT max(version) FROM steward_schema", &[])
        .map_err(crate::sql::Error::from)?
        .and_then(|r| r.get(0));
    let found = found.unwrap_or(0);
    let current = MIGRATIONS.len() as i64;
    if found > current {
        return Err(StoreError::NewerSchema {
            path: pool.shown.clone(),
            found,
            supported: current,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = i as i64 + 1;
        tx.batch_execute(sql).map_err(crate::sql::Error::from)?;
        tx.execute("DELETE FROM steward_schema", &[])
            .map_err(crate::sql::Error::from)?;
        tx.execute(
            "INSERT INTO steward_schema (version) VALUES ($1)",
            &[&version],
        )
        .map_err(crate::sql::Error::from)?;
        tracing::info!(version, "migrated the PostgreSQL control-plane store");
    }
    tx.commit().map_err(crate::sql::Error::from)?;
    pool.put(client);
    Ok(())
}
