//! The control-plane store: every row Steward keeps about users, tokens, sessions, instances
//! and the audit log. SQL lives here and nowhere else; callers get typed rows.
//!
//! Invariants:
//! - A change and its audit entry are written in one transaction ([`Store::write`]).
//! - The schema is migrated forward at open; a store written by a newer Steward is refused
//!   ([`StoreError::NewerSchema`]) instead of being misread.

mod capture;
mod copy;
mod drills;
mod login_throttle;
mod migrations;
mod nodes;
mod pg;
mod rows;
pub mod sql;
mod updates;
mod verify;
mod workitems;

use std::cell::RefCell;
use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, TransactionBehavior};
use sql::{Conn, OptionalExtension, Row, params};

pub use capture::*;
pub use copy::CopyReport;
pub use drills::*;
pub use nodes::*;
pub use pg::redact as redact_url;
pub use rows::*;
pub use updates::*;
pub use verify::*;
pub use workitems::*;

/// Errors of the store itself. Domain refusals are the caller's.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "the control-plane store at {path} was written by a newer Steward (schema version {found}; this Steward knows up to {supported}); upgrade Steward or point --data-dir elsewhere"
    )]
    NewerSchema {
        path: String,
        found: i64,
        supported: i64,
    },
    #[error("control-plane store: {0}")]
    Sql(#[from] sql::Error),
    #[error("control-plane store holds a value it cannot read: {0}")]
    Corrupt(String),
    #[error("{0}")]
    OutOfSequence(String),
    #[error("database_url {url:?} is not a control-plane store Steward can use: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("the control-plane store at {url} cannot be reached: {reason}")]
    Unavailable { url: String, reason: String },
    #[error("{0}")]
    NotEmpty(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Sql(e.into())
    }
}

impl StoreError {
    /// The store's server cannot be reached right now (PostgreSQL down); the request may be
    /// retried once it is back.
    pub fn is_unavailable(&self) -> bool {
        match self {
            StoreError::Unavailable { .. } => true,
            StoreError::Sql(e) => e.is_unavailable(),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which engine keeps the control plane.
enum Backend {
    /// One connection serialised by a mutex: the control plane's traffic is small, and
    /// SQLite serialises writers anyway.
    Sqlite(Mutex<Connection>),
    /// A pool of connections; writes serialised by an advisory lock (see `pg.rs`).
    Postgres(Box<pg::Pool>),
}

/// The control-plane store, on SQLite (the embedded default) or PostgreSQL. Every query is
/// written once against [`sql::Conn`]; see `sql.rs`.
pub struct Store {
    backend: Backend,
}

impl Store {
    /// Opens (creating if needed) the SQLite store at `path` and migrates it to the current
    /// schema.
    pub fn open(path: &Path) -> Result<Self> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrations::migrate(&mut conn, &path.display().to_string())?;
        Ok(Self {
            backend: Backend::Sqlite(Mutex::new(conn)),
        })
    }

    /// Connects to the PostgreSQL store at `url` (`postgres://user@host/database`) and
    /// migrates it to the current schema.
    pub fn open_postgres(url: &str) -> Result<Self> {
        let pool = pg::Pool::new(url)?;
        pg::migrate(&pool)?;
        Ok(Self {
            backend: Backend::Postgres(Box::new(pool)),
        })
    }

    /// The store `database_url` names (`postgres://…`, `sqlite:PATH` or `sqlite://PATH`), or
    /// the SQLite file `default_sqlite` when it is `None`.
    pub fn connect(database_url: Option<&str>, default_sqlite: &Path) -> Result<Self> {
        match database_url.map(str::trim) {
            None | Some("") => Self::open(default_sqlite),
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Self::open_postgres(url)
            }
            Some(url) if url.starts_with("sqlite:") => {
                let path = url.trim_start_matches("sqlite:").trim_start_matches("//");
                if path.is_empty() {
                    return Err(StoreError::InvalidUrl {
                        url: url.to_owned(),
                        reason: "it names no file (sqlite:///path/to/steward.db)".into(),
                    });
                }
                Self::open(Path::new(path))
            }
            Some(url) => Err(StoreError::InvalidUrl {
                url: redact_url(url),
                reason: "use postgres://user@host/database or sqlite:///path/to/steward.db".into(),
            }),
        }
    }

    /// "sqlite" or "postgres".
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The schema version this Steward writes.
    pub fn schema_version() -> i64 {
        migrations::CURRENT
    }

    /// Runs `f` in a read transaction (one consistent snapshot).
    pub fn read<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction(false, f)
    }

    /// Runs `f` in a write transaction: committed if `f` returns `Ok`, rolled back otherwise.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Db) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction(true, f)
    }

    fn transaction<T, E: From<StoreError>>(
        &self,
        write: bool,
        f: impl FnOnce(&Db) -> Result<T, E>,
    ) -> Result<T, E> {
        match &self.backend {
            Backend::Sqlite(conn) => {
                let mut conn = conn.lock().unwrap_or_else(|p| p.into_inner());
                let behavior = if write {
                    TransactionBehavior::Immediate
                } else {
                    TransactionBehavior::Deferred
                };
                let tx = conn
                    .transaction_with_behavior(behavior)
                    .map_err(StoreError::from)?;
                let out = f(&Db {
                    conn: Conn::Sqlite(&tx),
                })?;
                tx.commit().map_err(StoreError::from)?;
                Ok(out)
            }
            Backend::Postgres(pool) => {
                // The PostgreSQL client blocks on a small runtime of its own, which tokio
                // forbids on a thread that drives async tasks: there, hand the worker's
                // tasks to another thread while this one blocks. (Steward's own calls come
                // from blocking threads already; this covers callers in async code.)
                use tokio::runtime::{Handle, RuntimeFlavor};
                if Handle::try_current()
                    .is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread)
                {
                    return tokio::task::block_in_place(|| self.run_pg(pool, write, f));
                }
                self.run_pg(pool, write, f)
            }
        }
    }

    /// One transaction on a pooled connection; a connection that failed as unreachable is
    /// dropped with the idle ones (they likely broke together).
    fn run_pg<T, E: From<StoreError>>(
        &self,
        pool: &pg::Pool,
        write: bool,
        f: impl FnOnce(&Db) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut client = pool.get()?;
        let result = pg_transaction(&mut client, write, f);
        match &result {
            Err(PgOutcome::Store(e)) if e.is_unavailable() => pool.clear(),
            _ => pool.put(client),
        }
        result.map_err(|e| match e {
            PgOutcome::Store(e) => E::from(e),
            PgOutcome::Caller(e) => e,
        })
    }
}

enum PgOutcome<E> {
    Store(StoreError),
    Caller(E),
}

fn pg_transaction<T, E>(
    client: &mut postgres::Client,
    write: bool,
    f: impl FnOnce(&Db) -> Result<T, E>,
) -> Result<T, PgOutcome<E>> {
    let store = |e: postgres::Error| PgOutcome::Store(StoreError::Sql(e.into()));
    let tx = if write {
        let mut tx = client.transaction().map_err(store)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&pg::WRITE_LOCK])
            .map_err(store)?;
        tx
    } else {
        client
            .build_transaction()
            .isolation_level(postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(store)?
    };
    let db = Db {
        conn: Conn::Pg(RefCell::new(tx)),
    };
    let out = f(&db).map_err(PgOutcome::Caller)?;
    let Conn::Pg(tx) = db.conn else {
        unreachable!("a PostgreSQL transaction")
    };
    tx.into_inner().commit().map_err(store)?;
    Ok(out)
}

/// A transaction's view of the store, with one typed method per query.
pub struct Db<'a> {
    conn: Conn<'a>,
}

impl<'a> Db<'a> {
    pub(crate) fn conn(&self) -> &Conn<'a> {
        &self.conn
    }
}

fn ts(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn parse_ts(raw: &str) -> sql::Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| sql::Error::Conversion {
            column: 0,
            message: format!("{raw:?} is not a time: {e}"),
        })
}

fn parse_opt_ts(raw: Option<String>) -> sql::Result<Option<DateTime<Utc>>> {
    raw.as_deref().map(parse_ts).transpose()
}

fn parse_word<T: std::str::FromStr>(raw: String) -> sql::Result<T>
where
    T::Err: std::fmt::Display,
{
    raw.parse::<T>().map_err(|e| sql::Error::Conversion {
        column: 0,
        message: format!("{raw:?}: {e}"),
    })
}

const USER_COLS: &str = "id, username, role, password_hash, created_at, disabled_at";

fn user_row(r: &Row) -> sql::Result<UserRow> {
    Ok(UserRow {
        id: r.get(0)?,
        username: r.get(1)?,
        role: parse_word(r.get(2)?)?,
        password_hash: r.get(3)?,
        created_at: parse_ts(&r.get::<_, String>(4)?)?,
        disabled_at: parse_opt_ts(r.get(5)?)?,
    })
}

const TOKEN_COLS: &str =
    "t.id, t.user_id, u.username, t.name, t.created_at, t.last_used_at, t.revoked_at";

fn token_row(r: &Row) -> sql::Result<TokenRow> {
    Ok(TokenRow {
        id: r.get(0)?,
        user_id: r.get(1)?,
        username: r.get(2)?,
        name: r.get(3)?,
        created_at: parse_ts(&r.get::<_, String>(4)?)?,
        last_used_at: parse_opt_ts(r.get(5)?)?,
        revoked_at: parse_opt_ts(r.get(6)?)?,
    })
}

const INSTANCE_COLS: &str = "id, name, type, engine, release, state, database_path, documents_path, created_at, created_by, deleted_at, node, storage_bytes";

fn instance_row(r: &Row) -> sql::Result<InstanceRow> {
    Ok(InstanceRow {
        id: r.get(0)?,
        name: r.get(1)?,
        instance_type: parse_word(r.get(2)?)?,
        engine: parse_word(r.get(3)?)?,
        release: r.get(4)?,
        state: parse_word(r.get(5)?)?,
        database_path: r.get(6)?,
        documents_path: r.get(7)?,
        created_at: parse_ts(&r.get::<_, String>(8)?)?,
        created_by: r.get(9)?,
        deleted_at: parse_opt_ts(r.get(10)?)?,
        node: r.get(11)?,
        storage_bytes: r.get::<_, i64>(12)?.max(0) as u64,
    })
}

fn audit_row(r: &Row) -> sql::Result<AuditRow> {
    let details: String = r.get(5)?;
    Ok(AuditRow {
        id: r.get(0)?,
        at: parse_ts(&r.get::<_, String>(1)?)?,
        actor: r.get(2)?,
        action: r.get(3)?,
        target: r.get(4)?,
        details: serde_json::from_str(&details).unwrap_or(serde_json::Value::String(details)),
    })
}

impl Db<'_> {
    // ---- users ----

    pub fn count_users(&self) -> Result<i64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
    }

    /// Inserts a user; `Ok(None)` if the username is taken.
    pub fn insert_user(&self, new: &NewUser, at: DateTime<Utc>) -> Result<Option<UserRow>> {
        let n = self.conn.execute(
            "INSERT INTO users (username, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(username) DO NOTHING",
            params![new.username, new.role.as_str(), new.password_hash, ts(at)],
        )?;
        if n == 0 {
            return Ok(None);
        }
        self.user_by_id(self.conn.last_insert_rowid()?)
    }

    pub fn user_by_id(&self, id: i64) -> Result<Option<UserRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE id = ?1"),
                [id],
                user_row,
            )
            .optional()?)
    }

    pub fn user_by_name(&self, username: &str) -> Result<Option<UserRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {USER_COLS} FROM users WHERE username = ?1"),
                [username],
                user_row,
            )
            .optional()?)
    }

    pub fn list_users(&self) -> Result<Vec<UserRow>> {
        let mut st = self
            .conn
            .prepare(&format!("SELECT {USER_COLS} FROM users ORDER BY username"))?;
        let rows = st.query_map([], user_row)?.collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    pub fn update_user(&self, user: &UserRow) -> Result<()> {
        self.conn.execute(
            "UPDATE users SET role = ?2, password_hash = ?3, disabled_at = ?4 WHERE id = ?1",
            params![
                user.id,
                user.role.as_str(),
                user.password_hash,
                user.disabled_at.map(ts)
            ],
        )?;
        Ok(())
    }

    pub fn count_active_admins(&self) -> Result<i64> {
        Ok(self.conn.query_row(
            "SELECT count(*) FROM users WHERE role = 'system_administrator' AND disabled_at IS NULL",
            [],
            |r| r.get(0),
        )?)
    }

    // ---- API tokens ----

    pub fn insert_token(
        &self,
        user_id: i64,
        name: &str,
        token_hash: &str,
        at: DateTime<Utc>,
    ) -> Result<TokenRow> {
        self.conn.execute(
            "INSERT INTO api_tokens (user_id, name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![user_id, name, token_hash, ts(at)],
        )?;
        let id = self.conn.last_insert_rowid()?;
        self.token_by_id(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("token {id} vanished")))
    }

    pub fn token_by_id(&self, id: i64) -> Result<Option<TokenRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {TOKEN_COLS} FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.id = ?1"),
                [id],
                token_row,
            )
            .optional()?)
    }

    /// The live (not revoked) token with this hash and its user.
    pub fn user_by_token_hash(&self, token_hash: &str) -> Result<Option<(TokenRow, UserRow)>> {
        let token = self
            .conn
            .query_row(
                &format!("SELECT {TOKEN_COLS} FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?1 AND t.revoked_at IS NULL"),
                [token_hash],
                token_row,
            )
            .optional()?;
        let Some(token) = token else { return Ok(None) };
        let user = self.user_by_id(token.user_id)?;
        Ok(user.map(|u| (token, u)))
    }

    pub fn touch_token(&self, id: i64, at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "UPDATE api_tokens SET last_used_at = ?2 WHERE id = ?1",
            params![id, ts(at)],
        )?;
        Ok(())
    }

    /// Tokens of one user, or of everyone with `None`; newest first.
    pub fn list_tokens(&self, user_id: Option<i64>) -> Result<Vec<TokenRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {TOKEN_COLS} FROM api_tokens t JOIN users u ON u.id = t.user_id
             WHERE (?1 IS NULL OR t.user_id = ?1) ORDER BY t.id DESC"
        ))?;
        let rows = st
            .query_map([user_id], token_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    pub fn revoke_token(&self, id: i64, at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "UPDATE api_tokens SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
            params![id, ts(at)],
        )?;
        Ok(())
    }

    // ---- browser sessions ----

    pub fn insert_session(&self, s: &SessionRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![s.token_hash, s.user_id, s.csrf_token, ts(s.created_at), ts(s.expires_at)],
        )?;
        Ok(())
    }

    pub fn session(&self, token_hash: &str) -> Result<Option<SessionRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT token_hash, user_id, csrf_token, created_at, expires_at FROM sessions WHERE token_hash = ?1",
                [token_hash],
                |r| {
                    Ok(SessionRow {
                        token_hash: r.get(0)?,
                        user_id: r.get(1)?,
                        csrf_token: r.get(2)?,
                        created_at: parse_ts(&r.get::<_, String>(3)?)?,
                        expires_at: parse_ts(&r.get::<_, String>(4)?)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn delete_session(&self, token_hash: &str) -> Result<()> {
        self.conn
            .execute("DELETE FROM sessions WHERE token_hash = ?1", [token_hash])?;
        Ok(())
    }

    pub fn delete_expired_sessions(&self, now: DateTime<Utc>) -> Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM sessions WHERE expires_at < ?1", [ts(now)])?)
    }

    // ---- instances ----

    /// Inserts an instance; `Ok(None)` if a live instance already has the name.
    pub fn insert_instance(
        &self,
        new: &NewInstance,
        at: DateTime<Utc>,
    ) -> Result<Option<InstanceRow>> {
        let n = self.conn.execute(
            "INSERT INTO instances (name, type, engine, release, state, database_path, documents_path, created_at, created_by, node)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
            params![
                new.name,
                new.instance_type.as_str(),
                new.engine.as_str(),
                new.release,
                new.state.as_str(),
                new.database_path,
                new.documents_path,
                ts(at),
                new.created_by,
                new.node
            ],
        )?;
        if n == 0 {
            return Ok(None);
        }
        self.instance_by_id(self.conn.last_insert_rowid()?)
    }

    pub fn instance_by_id(&self, id: i64) -> Result<Option<InstanceRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {INSTANCE_COLS} FROM instances WHERE id = ?1"),
                [id],
                instance_row,
            )
            .optional()?)
    }

    /// The live (not deleted) instance with this name.
    pub fn instance_by_name(&self, name: &str) -> Result<Option<InstanceRow>> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {INSTANCE_COLS} FROM instances WHERE name = ?1 AND deleted_at IS NULL"
                ),
                [name],
                instance_row,
            )
            .optional()?)
    }

    /// Live instances by name.
    pub fn list_instances(&self) -> Result<Vec<InstanceRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE deleted_at IS NULL ORDER BY name"
        ))?;
        let rows = st
            .query_map([], instance_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// One page of live instances by name: those whose name contains `q.contains` (if given),
    /// after the name `q.after` (if given), skipping `q.offset`, at most `q.limit`; with the
    /// number of instances that match and the sum of their recorded storage.
    pub fn instance_page(&self, q: &InstanceQuery<'_>) -> Result<InstancePage> {
        let pattern = q.contains.map(|c| {
            let escaped = c
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        });
        let filter =
            "deleted_at IS NULL AND (?1 IS NULL OR LOWER(name) LIKE LOWER(?1) ESCAPE '\\')";
        let (total, total_storage): (i64, i64) = self.conn.query_row(
            &format!(
                "SELECT COUNT(*), CAST(COALESCE(SUM(storage_bytes), 0) AS BIGINT) FROM instances WHERE {filter}"
            ),
            params![pattern],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let mut st = self.conn.prepare(&format!(
            "SELECT {INSTANCE_COLS} FROM instances WHERE {filter} AND (?2 IS NULL OR name > ?2)
             ORDER BY name LIMIT ?3 OFFSET ?4"
        ))?;
        let rows = st
            .query_map(
                params![pattern, q.after, q.limit.max(0), q.offset.max(0)],
                instance_row,
            )?
            .collect::<sql::Result<_>>()?;
        Ok(InstancePage {
            rows,
            total: total.max(0) as u64,
            storage_bytes: total_storage.max(0) as u64,
        })
    }

    /// Live instances by id, for the rows of a page that refer to them.
    pub fn instances_by_ids(&self, ids: &[i64]) -> Result<Vec<InstanceRow>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(500) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let mut st = self.conn.prepare(&format!(
                "SELECT {INSTANCE_COLS} FROM instances WHERE id IN ({list}) ORDER BY name"
            ))?;
            let rows: Vec<InstanceRow> = st
                .query_map([], instance_row)?
                .collect::<sql::Result<_>>()?;
            out.extend(rows);
        }
        Ok(out)
    }

    /// The live instances a node keeps (with `None`: those recorded without a node too).
    pub fn instances_on_node(&self, node: &str) -> Result<Vec<InstanceRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {INSTANCE_COLS} FROM instances
             WHERE deleted_at IS NULL AND (node = ?1 OR node IS NULL) ORDER BY name"
        ))?;
        let rows = st
            .query_map([node], instance_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Records measured database storage (instance id, bytes); returns how many changed.
    pub fn set_storage_bytes(&self, measured: &[(i64, u64)]) -> Result<usize> {
        let mut changed = 0;
        for (id, bytes) in measured {
            changed += self.conn.execute(
                "UPDATE instances SET storage_bytes = ?2 WHERE id = ?1 AND storage_bytes <> ?2",
                params![*id, *bytes as i64],
            )?;
        }
        Ok(changed)
    }

    /// Writes back the mutable fields of an instance row.
    pub fn update_instance(&self, i: &InstanceRow) -> Result<()> {
        self.conn.execute(
            "UPDATE instances SET type = ?2, release = ?3, state = ?4, database_path = ?5, documents_path = ?6, deleted_at = ?7 WHERE id = ?1",
            params![
                i.id,
                i.instance_type.as_str(),
                i.release,
                i.state.as_str(),
                i.database_path,
                i.documents_path,
                i.deleted_at.map(ts)
            ],
        )?;
        Ok(())
    }

    // ---- audit log ----

    pub fn audit(&self, entry: &NewAudit, at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "INSERT INTO audit_log (at, actor, action, target, details) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts(at), entry.actor, entry.action, entry.target, entry.details.to_string()],
        )?;
        Ok(())
    }

    /// Audit entries matching `filter`, newest first.
    pub fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRow>> {
        let mut st = self.conn.prepare(
            "SELECT id, at, actor, action, target, details FROM audit_log
             WHERE (?1 IS NULL OR actor = ?1)
               AND (?2 IS NULL OR action = ?2 OR action LIKE ?2 || '.%')
               AND (?3 IS NULL OR target = ?3)
               AND (?4 IS NULL OR at >= ?4)
             ORDER BY id DESC LIMIT ?5",
        )?;
        let rows = st
            .query_map(
                params![
                    filter.actor,
                    filter.action,
                    filter.target,
                    filter.since.map(ts),
                    filter.limit.unwrap_or(200).clamp(1, 10_000)
                ],
                audit_row,
            )?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }
}

const JOB_COLS: &str = "id, kind, target, state, stage, progress_done, progress_total, params, result, last_error, created_by, created_at, started_at, finished_at, node, lease_until";

fn job_row(r: &Row) -> sql::Result<JobRow> {
    let state: String = r.get(3)?;
    let json = |raw: Option<String>| raw.and_then(|s| serde_json::from_str(&s).ok());
    Ok(JobRow {
        id: r.get(0)?,
        kind: r.get(1)?,
        target: r.get(2)?,
        state: JobState::parse(&state).ok_or_else(|| sql::Error::Conversion {
            column: 3,
            message: format!("job state {state:?}"),
        })?,
        stage: r.get(4)?,
        progress_done: r.get::<_, i64>(5)? as u64,
        progress_total: r.get::<_, i64>(6)? as u64,
        params: json(r.get(7)?).unwrap_or(serde_json::Value::Null),
        result: json(r.get(8)?),
        last_error: r.get(9)?,
        created_by: r.get(10)?,
        created_at: parse_ts(&r.get::<_, String>(11)?)?,
        started_at: parse_opt_ts(r.get(12)?)?,
        finished_at: parse_opt_ts(r.get(13)?)?,
        node: r.get(14)?,
        lease_until: parse_opt_ts(r.get(15)?)?,
    })
}

/// Jobs: the durable unit of background work.
impl Db<'_> {
    pub fn insert_job(&self, new: &NewJob, at: DateTime<Utc>) -> Result<JobRow> {
        self.conn.execute(
            "INSERT INTO jobs (kind, target, state, params, created_by, created_at) VALUES (?1, ?2, 'queued', ?3, ?4, ?5)",
            params![new.kind, new.target, new.params.to_string(), new.created_by, ts(at)],
        )?;
        let id = self.conn.last_insert_rowid()?;
        self.job(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))
    }

    pub fn job(&self, id: i64) -> Result<Option<JobRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {JOB_COLS} FROM jobs WHERE id = ?1"),
                [id],
                job_row,
            )
            .optional()?)
    }

    /// Jobs newest first, optionally only those about `target` or in `state`.
    pub fn list_jobs(
        &self,
        target: Option<&str>,
        state: Option<JobState>,
        limit: i64,
    ) -> Result<Vec<JobRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE (?1 IS NULL OR target = ?1) AND (?2 IS NULL OR state = ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = st
            .query_map(
                params![target, state.map(JobState::as_str), limit.clamp(1, 10_000)],
                job_row,
            )?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Jobs in `state`, oldest first.
    pub fn jobs_in_state(&self, state: JobState) -> Result<Vec<JobRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE state = ?1 ORDER BY id"
        ))?;
        let rows = st
            .query_map([state.as_str()], job_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Moves the oldest queued job to running and returns it; `None` if none is queued.
    pub fn claim_next_job(&self, at: DateTime<Utc>) -> Result<Option<JobRow>> {
        self.claim_next_job_on(at, None, None)
    }

    /// [`Db::claim_next_job`] for one node of a fleet: the oldest queued job this node may run
    /// (any job, except one whose target is a live instance kept by another node: an
    /// instance's files are on its node's disk), recording the node (`jobs.node`) and its
    /// lease (`jobs.lease_until`). Writes are serialised, so two nodes never claim one job.
    pub fn claim_next_job_on(
        &self,
        at: DateTime<Utc>,
        node: Option<&str>,
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<Option<JobRow>> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT j.id FROM jobs j WHERE j.state = 'queued'
                   AND (?1 IS NULL OR NOT EXISTS (
                     SELECT 1 FROM instances i WHERE i.name = j.target AND i.deleted_at IS NULL
                       AND i.node IS NOT NULL AND i.node <> ?1))
                 ORDER BY j.id LIMIT 1",
                [node],
                |r| r.get(0),
            )
            .optional()?;
        let Some(id) = id else { return Ok(None) };
        self.conn.execute(
            "UPDATE jobs SET state = 'running', started_at = coalesce(started_at, ?2), node = ?3,
                 lease_until = ?4 WHERE id = ?1",
            params![id, ts(at), node, lease_until.map(ts)],
        )?;
        self.job(id)
    }

    /// Running jobs this node claimed, and unclaimed ones (from before nodes existed): the
    /// ones its recovery at start may resume or fail. Another node's running jobs are that
    /// node's to recover.
    pub fn running_jobs_of(&self, node: &str) -> Result<Vec<JobRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {JOB_COLS} FROM jobs WHERE state = 'running' AND (node IS NULL OR node = ?1)
             ORDER BY id"
        ))?;
        let rows = st.query_map([node], job_row)?.collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Extends the lease of every job `node` is running (with its heartbeat).
    pub fn renew_job_leases(&self, node: &str, until: DateTime<Utc>) -> Result<usize> {
        Ok(self.conn.execute(
            "UPDATE jobs SET lease_until = ?2 WHERE state = 'running' AND node = ?1",
            params![node, ts(until)],
        )?)
    }

    /// Claims the fleet-wide scheduled work of `tick` (e.g. `minute 2026-12-03T10:15`) for
    /// `node`: `true` for the node that claims it first (and for that node again, e.g. after
    /// a restart within the minute), `false` for every other.
    pub fn claim_scheduler_tick(&self, tick: &str, node: &str, at: DateTime<Utc>) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT INTO scheduler_ticks (tick, node, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (tick) DO UPDATE SET at = excluded.at
             WHERE scheduler_ticks.node = excluded.node",
            params![tick, node, ts(at)],
        )?;
        Ok(n == 1)
    }

    /// Which node ran the scheduled work of `tick`.
    pub fn scheduler_tick_node(&self, tick: &str) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row(
                "SELECT node FROM scheduler_ticks WHERE tick = ?1",
                [tick],
                |r| r.get(0),
            )
            .optional()?)
    }

    /// Forgets scheduler ticks older than `before`.
    pub fn prune_scheduler_ticks(&self, before: DateTime<Utc>) -> Result<usize> {
        Ok(self
            .conn
            .execute("DELETE FROM scheduler_ticks WHERE at < ?1", [ts(before)])?)
    }

    /// Records that the job entered `stage` (closing the previous stage).
    pub fn set_job_stage(&self, id: i64, stage: &str, at: DateTime<Utc>) -> Result<()> {
        self.conn.execute(
            "UPDATE job_stages SET finished_at = ?2 WHERE job_id = ?1 AND finished_at IS NULL",
            params![id, ts(at)],
        )?;
        self.conn.execute(
            "INSERT INTO job_stages (job_id, seq, stage, started_at)
             VALUES (?1, (SELECT coalesce(max(seq), 0) + 1 FROM job_stages WHERE job_id = ?1), ?2, ?3)",
            params![id, stage, ts(at)],
        )?;
        self.conn.execute(
            "UPDATE jobs SET stage = ?2, progress_done = 0, progress_total = 0 WHERE id = ?1",
            params![id, stage],
        )?;
        Ok(())
    }

    pub fn set_job_progress(&self, id: i64, done: u64, total: u64) -> Result<()> {
        self.conn.execute(
            "UPDATE jobs SET progress_done = ?2, progress_total = ?3 WHERE id = ?1",
            params![id, done as i64, total as i64],
        )?;
        Ok(())
    }

    /// Ends a job: succeeded with `result`, or failed with `error`.
    pub fn finish_job(
        &self,
        id: i64,
        outcome: std::result::Result<&serde_json::Value, &str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.conn.execute(
            "UPDATE job_stages SET finished_at = ?2 WHERE job_id = ?1 AND finished_at IS NULL",
            params![id, ts(at)],
        )?;
        match outcome {
            Ok(result) => self.conn.execute(
                "UPDATE jobs SET state = 'succeeded', result = ?2, finished_at = ?3 WHERE id = ?1",
                params![id, result.to_string(), ts(at)],
            )?,
            Err(error) => self.conn.execute(
                "UPDATE jobs SET state = 'failed', last_error = ?2, finished_at = ?3 WHERE id = ?1",
                params![id, error, ts(at)],
            )?,
        };
        Ok(())
    }

    pub fn job_stages(&self, id: i64) -> Result<Vec<JobStageRow>> {
        let mut st = self.conn.prepare(
            "SELECT stage, started_at, finished_at FROM job_stages WHERE job_id = ?1 ORDER BY seq",
        )?;
        let rows = st
            .query_map([id], |r| {
                Ok(JobStageRow {
                    stage: r.get(0)?,
                    started_at: parse_ts(&r.get::<_, String>(1)?)?,
                    finished_at: parse_opt_ts(r.get(2)?)?,
                })
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }
}

impl Db<'_> {
    /// Puts a running job back in the queue (after a restart, for handlers that resume).
    pub fn requeue_job(&self, id: i64) -> Result<()> {
        self.conn.execute(
            "UPDATE jobs SET state = 'queued' WHERE id = ?1 AND state = 'running'",
            [id],
        )?;
        Ok(())
    }
}

const BACKUP_COLS: &str = "id, instance_id, instance_name, kind, label, notes, status, release, repo_id, size_bytes, stored_bytes, scheduled_for, created_by, created_at, completed_at, expires_at, job_id, error";

fn backup_row(r: &Row) -> sql::Result<BackupRow> {
    Ok(BackupRow {
        id: r.get(0)?,
        instance_id: r.get(1)?,
        instance_name: r.get(2)?,
        kind: parse_word(r.get(3)?)?,
        label: r.get(4)?,
        notes: r.get(5)?,
        status: r.get(6)?,
        release: r.get(7)?,
        repo_id: r.get(8)?,
        size_bytes: r.get::<_, Option<i64>>(9)?.map(|v| v as u64),
        stored_bytes: r.get::<_, Option<i64>>(10)?.map(|v| v as u64),
        scheduled_for: r.get(11)?,
        created_by: r.get(12)?,
        created_at: parse_ts(&r.get::<_, String>(13)?)?,
        completed_at: parse_opt_ts(r.get(14)?)?,
        expires_at: parse_ts(&r.get::<_, String>(15)?)?,
        job_id: r.get(16)?,
        error: r.get(17)?,
    })
}

/// Backups and alerts.
impl Db<'_> {
    /// The instances that have the system backup scheduled for `day` (any status).
    pub fn instances_with_system_backup(
        &self,
        day: &str,
    ) -> Result<std::collections::HashSet<i64>> {
        let mut st = self.conn.prepare(
            "SELECT instance_id FROM backups WHERE kind = 'system' AND scheduled_for = ?1",
        )?;
        let ids = st
            .query_map([day], |r| r.get::<_, i64>(0))?
            .collect::<sql::Result<_>>()?;
        Ok(ids)
    }

    /// Inserts a queued backup; `Ok(None)` if a system backup for that day already exists.
    pub fn insert_backup(&self, new: &NewBackup, at: DateTime<Utc>) -> Result<Option<BackupRow>> {
        let n = self.conn.execute(
            "INSERT INTO backups (instance_id, instance_name, kind, label, notes, status, release, scheduled_for, created_by, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8, ?9, ?10) ON CONFLICT DO NOTHING",
            params![
                new.instance_id,
                new.instance_name,
                new.kind.as_str(),
                new.label,
                new.notes,
                new.release,
                new.scheduled_for,
                new.created_by,
                ts(at),
                ts(new.expires_at)
            ],
        )?;
        if n == 0 {
            return Ok(None);
        }
        self.backup(self.conn.last_insert_rowid()?)
    }

    pub fn backup(&self, id: i64) -> Result<Option<BackupRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {BACKUP_COLS} FROM backups WHERE id = ?1"),
                [id],
                backup_row,
            )
            .optional()?)
    }

    /// The visible backups of an instance (not deleted or expired), newest first.
    pub fn list_backups(&self, instance_id: i64) -> Result<Vec<BackupRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {BACKUP_COLS} FROM backups WHERE instance_id = ?1 AND status NOT IN ('deleted', 'expired') ORDER BY id DESC"
        ))?;
        let rows = st
            .query_map([instance_id], backup_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Completed backups whose expiry has passed.
    pub fn expired_backups(&self, now: DateTime<Utc>) -> Result<Vec<BackupRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {BACKUP_COLS} FROM backups WHERE status IN ('completed', 'failed') AND expires_at <= ?1 ORDER BY id"
        ))?;
        let rows = st
            .query_map([ts(now)], backup_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Writes back the mutable fields of a backup row.
    pub fn update_backup(&self, b: &BackupRow) -> Result<()> {
        self.conn.execute(
            "UPDATE backups SET label = ?2, notes = ?3, status = ?4, release = ?5, repo_id = ?6, size_bytes = ?7,
             stored_bytes = ?8, completed_at = ?9, expires_at = ?10, job_id = ?11, error = ?12 WHERE id = ?1",
            params![
                b.id,
                b.label,
                b.notes,
                b.status,
                b.release,
                b.repo_id,
                b.size_bytes.map(|v| v as i64),
                b.stored_bytes.map(|v| v as i64),
                b.completed_at.map(ts),
                ts(b.expires_at),
                b.job_id,
                b.error
            ],
        )?;
        Ok(())
    }

    /// (instance name, completed backups, bytes their backups added) per instance.
    pub fn backup_storage(&self) -> Result<Vec<(String, u64, u64)>> {
        let mut st = self.conn.prepare(
            "SELECT instance_name, count(*), CAST(coalesce(sum(stored_bytes), 0) AS BIGINT) FROM backups
             WHERE status = 'completed' GROUP BY instance_name ORDER BY instance_name",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get::<_, i64>(1)? as u64,
                    r.get::<_, i64>(2)? as u64,
                ))
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Records an in-product alert for `audience` (`system_administrators` or
    /// `all_admins_and_users`); returns its id.
    pub fn insert_alert(
        &self,
        level: &str,
        instance: Option<&str>,
        message: &str,
        audience: &str,
        at: DateTime<Utc>,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO alerts (at, level, instance, message, audience) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![ts(at), level, instance, message, audience],
        )?;
        Ok(self.conn.last_insert_rowid()?)
    }

    pub fn list_alerts(&self, limit: i64) -> Result<Vec<AlertRow>> {
        let mut st = self.conn.prepare(
            "SELECT id, at, level, instance, message FROM alerts ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st
            .query_map([limit.clamp(1, 1000)], |r| {
                Ok(AlertRow {
                    id: r.get(0)?,
                    at: parse_ts(&r.get::<_, String>(1)?)?,
                    level: r.get(2)?,
                    instance: r.get(3)?,
                    message: r.get(4)?,
                })
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// (instance id, completed backups, bytes their backups added) for each of the instances
    /// `ids` that has completed backups, by instance id; one query per 500 ids.
    pub fn backup_totals_of(&self, ids: &[i64]) -> Result<Vec<(i64, u64, u64)>> {
        let mut out = Vec::new();
        for chunk in ids.chunks(500) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            out.extend(self.backup_totals_where(&format!("instance_id IN ({list})"))?);
        }
        Ok(out)
    }

    /// (instance id, completed backups, bytes their backups added) for every instance that
    /// has completed backups, by instance id.
    pub fn backup_totals(&self) -> Result<Vec<(i64, u64, u64)>> {
        self.backup_totals_where("1 = 1")
    }

    fn backup_totals_where(&self, filter: &str) -> Result<Vec<(i64, u64, u64)>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT instance_id, count(*), CAST(coalesce(sum(stored_bytes), 0) AS BIGINT)
             FROM backups WHERE status = 'completed' AND {filter}
             GROUP BY instance_id ORDER BY instance_id"
        ))?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?.max(0) as u64,
                    r.get::<_, i64>(2)?.max(0) as u64,
                ))
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }
}

impl Db<'_> {
    /// Moves one queued job to running (for work run in the caller's thread).
    pub fn claim_job(&self, id: i64, at: DateTime<Utc>) -> Result<JobRow> {
        self.conn.execute(
            "UPDATE jobs SET state = 'running', started_at = coalesce(started_at, ?2) WHERE id = ?1",
            params![id, ts(at)],
        )?;
        self.job(id)?
            .ok_or_else(|| StoreError::Corrupt(format!("job {id} vanished")))
    }
}

const DELIVERY_COLS: &str = "d.id, d.outbox_id, o.event, o.instance, o.payload, o.created_at, d.channel, d.recipient, d.state, d.attempts, d.next_attempt_at, d.last_error, d.sent_at";

fn delivery_row(r: &Row) -> sql::Result<DeliveryRow> {
    let payload: String = r.get(4)?;
    Ok(DeliveryRow {
        id: r.get(0)?,
        outbox_id: r.get(1)?,
        event: r.get(2)?,
        instance: r.get(3)?,
        payload: serde_json::from_str(&payload).unwrap_or(serde_json::Value::String(payload)),
        created_at: parse_ts(&r.get::<_, String>(5)?)?,
        channel: r.get(6)?,
        recipient: r.get(7)?,
        state: r.get(8)?,
        attempts: r.get(9)?,
        next_attempt_at: parse_ts(&r.get::<_, String>(10)?)?,
        last_error: r.get(11)?,
        sent_at: parse_opt_ts(r.get(12)?)?,
    })
}

/// Notifications: users' email addresses, the schedule, recipients, webhooks, the outbox.
impl Db<'_> {
    /// Sets or clears a user's email address; `false` if there is no such user.
    pub fn set_user_email(&self, user_id: i64, email: Option<&str>) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE users SET email = ?2 WHERE id = ?1",
            params![user_id, email],
        )? > 0)
    }

    pub fn user_email(&self, user_id: i64) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT email FROM users WHERE id = ?1", [user_id], |r| {
                r.get(0)
            })
            .optional()?
            .flatten())
    }

    /// Email addresses of enabled users: System Administrators only, or everyone.
    pub fn user_emails(&self, system_administrators_only: bool) -> Result<Vec<String>> {
        let mut st = self.conn.prepare(
            "SELECT email FROM users WHERE email IS NOT NULL AND disabled_at IS NULL
               AND (?1 = 0 OR role = 'system_administrator') ORDER BY email",
        )?;
        let rows = st
            .query_map([system_administrators_only], |r| r.get(0))?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    pub fn notification_schedule(&self) -> Result<Vec<ScheduleRow>> {
        let mut st = self.conn.prepare(
            "SELECT event, audience, channels, updated_at, updated_by FROM notification_schedule ORDER BY event",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok(ScheduleRow {
                    event: r.get(0)?,
                    audience: r.get(1)?,
                    channels: r.get(2)?,
                    updated_at: parse_ts(&r.get::<_, String>(3)?)?,
                    updated_by: r.get(4)?,
                })
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    pub fn upsert_schedule(&self, row: &ScheduleRow) -> Result<()> {
        self.conn.execute(
            "INSERT INTO notification_schedule (event, audience, channels, updated_at, updated_by)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(event) DO UPDATE SET audience = ?2, channels = ?3, updated_at = ?4, updated_by = ?5",
            params![row.event, row.audience, row.channels, ts(row.updated_at), row.updated_by],
        )?;
        Ok(())
    }

    /// Forgets the operator's change to `event`'s schedule (the default applies again);
    /// `false` if it had none.
    pub fn delete_schedule(&self, event: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "DELETE FROM notification_schedule WHERE event = ?1",
            [event],
        )? > 0)
    }

    pub fn list_recipients(&self, instance: &str) -> Result<Vec<RecipientRow>> {
        let mut st = self.conn.prepare(
            "SELECT instance, email, added_at, added_by FROM instance_recipients WHERE instance = ?1 ORDER BY email",
        )?;
        let rows = st
            .query_map([instance], |r| {
                Ok(RecipientRow {
                    instance: r.get(0)?,
                    email: r.get(1)?,
                    added_at: parse_ts(&r.get::<_, String>(2)?)?,
                    added_by: r.get(3)?,
                })
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// `false` if the address was already a recipient.
    pub fn add_recipient(
        &self,
        instance: &str,
        email: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        Ok(self.conn.execute(
            "INSERT INTO instance_recipients (instance, email, added_at, added_by) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO NOTHING",
            params![instance, email, ts(at), by],
        )? > 0)
    }

    /// `false` if the address was not a recipient.
    pub fn remove_recipient(&self, instance: &str, email: &str) -> Result<bool> {
        Ok(self.conn.execute(
            "DELETE FROM instance_recipients WHERE instance = ?1 AND email = ?2",
            params![instance, email],
        )? > 0)
    }

    pub fn insert_webhook(
        &self,
        url: &str,
        secret: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<WebhookRow> {
        self.conn.execute(
            "INSERT INTO webhooks (url, secret, created_at, created_by) VALUES (?1, ?2, ?3, ?4)",
            params![url, secret, ts(at), by],
        )?;
        self.webhook(self.conn.last_insert_rowid()?)?
            .ok_or_else(|| StoreError::Corrupt("webhook vanished".into()))
    }

    fn webhook_from(r: &Row) -> sql::Result<WebhookRow> {
        Ok(WebhookRow {
            id: r.get(0)?,
            url: r.get(1)?,
            secret: r.get(2)?,
            created_at: parse_ts(&r.get::<_, String>(3)?)?,
            created_by: r.get(4)?,
        })
    }

    /// A webhook that was not deleted.
    pub fn webhook(&self, id: i64) -> Result<Option<WebhookRow>> {
        Ok(self
            .conn
            .query_row(
                "SELECT id, url, secret, created_at, created_by FROM webhooks WHERE id = ?1 AND deleted_at IS NULL",
                [id],
                Self::webhook_from,
            )
            .optional()?)
    }

    pub fn list_webhooks(&self) -> Result<Vec<WebhookRow>> {
        let mut st = self.conn.prepare(
            "SELECT id, url, secret, created_at, created_by FROM webhooks WHERE deleted_at IS NULL ORDER BY id",
        )?;
        let rows = st
            .query_map([], Self::webhook_from)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// `false` if there is no such webhook.
    pub fn delete_webhook(&self, id: i64, at: DateTime<Utc>) -> Result<bool> {
        Ok(self.conn.execute(
            "UPDATE webhooks SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL",
            params![id, ts(at)],
        )? > 0)
    }

    pub fn insert_outbox(
        &self,
        event: &str,
        instance: Option<&str>,
        payload: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<i64> {
        self.conn.execute(
            "INSERT INTO outbox (event, instance, payload, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![event, instance, payload.to_string(), ts(at)],
        )?;
        Ok(self.conn.last_insert_rowid()?)
    }

    /// A pending delivery due at `at`; a duplicate (same entry, channel, recipient) is ignored.
    pub fn insert_delivery(
        &self,
        outbox_id: i64,
        channel: &str,
        recipient: &str,
        at: DateTime<Utc>,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT INTO deliveries (outbox_id, channel, recipient, state, next_attempt_at) VALUES (?1, ?2, ?3, 'pending', ?4)
             ON CONFLICT DO NOTHING",
            params![outbox_id, channel, recipient, ts(at)],
        )?;
        Ok(())
    }

    /// Pending deliveries due at or before `now`, oldest first.
    pub fn due_deliveries(&self, now: DateTime<Utc>, limit: i64) -> Result<Vec<DeliveryRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries d JOIN outbox o ON o.id = d.outbox_id
             WHERE d.state = 'pending' AND d.next_attempt_at <= ?1 ORDER BY d.next_attempt_at, d.id LIMIT ?2"
        ))?;
        let rows = st
            .query_map(params![ts(now), limit], delivery_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    pub fn delivery(&self, id: i64) -> Result<Option<DeliveryRow>> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {DELIVERY_COLS} FROM deliveries d JOIN outbox o ON o.id = d.outbox_id WHERE d.id = ?1"),
                [id],
                delivery_row,
            )
            .optional()?)
    }

    /// Writes a delivery's state, attempts, next attempt, last error and sent time.
    pub fn update_delivery(&self, d: &DeliveryRow) -> Result<()> {
        self.conn.execute(
            "UPDATE deliveries SET state = ?2, attempts = ?3, next_attempt_at = ?4, last_error = ?5, sent_at = ?6 WHERE id = ?1",
            params![d.id, d.state, d.attempts, ts(d.next_attempt_at), d.last_error, d.sent_at.map(ts)],
        )?;
        Ok(())
    }

    /// Deliveries newest first, optionally of one instance.
    pub fn list_deliveries(&self, instance: Option<&str>, limit: i64) -> Result<Vec<DeliveryRow>> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {DELIVERY_COLS} FROM deliveries d JOIN outbox o ON o.id = d.outbox_id
             WHERE (?1 IS NULL OR o.instance = ?1) ORDER BY d.id DESC LIMIT ?2"
        ))?;
        let rows = st
            .query_map(params![instance, limit.clamp(1, 1000)], delivery_row)?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }
}

/// In-product alerts dismissed per user.
impl Db<'_> {
    /// Alerts for one of `audiences` that `user_id` has not dismissed, raised at or after
    /// `since` (all when `None`), newest first.
    pub fn undismissed_alerts(
        &self,
        user_id: i64,
        audiences: &[&str],
        since: Option<DateTime<Utc>>,
        limit: i64,
    ) -> Result<Vec<AlertRow>> {
        let marks = if audiences.is_empty() {
            "NULL".to_owned()
        } else {
            (0..audiences.len())
                .map(|i| format!("?{}", i + 4))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut values = vec![
            sql::Value::Int(user_id),
            since.map(ts).map_or(sql::Value::Null, sql::Value::Text),
            sql::Value::Int(limit.clamp(1, 1000)),
        ];
        values.extend(audiences.iter().map(|a| sql::Value::Text((*a).to_owned())));
        let mut st = self.conn.prepare(&format!(
            "SELECT id, at, level, instance, message FROM alerts a
             WHERE NOT EXISTS (SELECT 1 FROM alert_dismissals d WHERE d.alert_id = a.id AND d.user_id = ?1)
               AND a.audience IN ({marks})
               AND (?2 IS NULL OR a.at >= ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = st
            .query_map(values, |r| {
                Ok(AlertRow {
                    id: r.get(0)?,
                    at: parse_ts(&r.get::<_, String>(1)?)?,
                    level: r.get(2)?,
                    instance: r.get(3)?,
                    message: r.get(4)?,
                })
            })?
            .collect::<sql::Result<_>>()?;
        Ok(rows)
    }

    /// Dismisses an alert for one user; `Ok(None)` if there is no such alert, `Ok(Some(false))`
    /// if it was already dismissed.
    pub fn dismiss_alert(
        &self,
        user_id: i64,
        alert_id: i64,
        at: DateTime<Utc>,
    ) -> Result<Option<bool>> {
        let exists: bool = self.conn.query_row(
            "SELECT count(*) > 0 FROM alerts WHERE id = ?1",
            [alert_id],
            |r| r.get(0),
        )?;
        if !exists {
            return Ok(None);
        }
        Ok(Some(
            self.conn.execute(
                "INSERT INTO alert_dismissals (user_id, alert_id, dismissed_at) VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING",
                params![user_id, alert_id, ts(at)],
            )? > 0,
        ))
    }
}
