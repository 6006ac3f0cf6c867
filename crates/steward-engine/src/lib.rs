//! Steward's database engines: how an instance's database is created, upgraded from one
//! application release to the next, and inspected. The `sqlite` engine (the only one so far)
//! keeps each instance in a plain SQLite file in WAL mode that the application opens directly.
//!
//! **Invariant:** this crate knows nothing about the server, HTTP or the control-plane store;
//! it takes a path and a [`Catalog`] and works on that file only.
//!
//! Every database Steward manages has a table
//! `steward_release(version TEXT NOT NULL, applied_at TEXT NOT NULL)` with one row per release
//! applied, in order; the last row is the database's current release. Each migration and its
//! row commit together in one transaction, so a database is always exactly at one release.
//!
//! Creation never leaves a half-built file at the target path: the database is built beside
//! it as `<name>.creating`, made durable, then moved into place atomically.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use steward_core::release::{Catalog, CatalogError, Release, ReleaseVersion, ReleaseVersionError};
use tracing::{debug, info};

/// How long a statement waits for a lock held by the application before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The table that records which releases were applied to a database.
const CREATE_RELEASE_TABLE: &str = "CREATE TABLE IF NOT EXISTS steward_release (
    version    TEXT NOT NULL,
    applied_at TEXT NOT NULL
)";

/// What went wrong while creating, upgrading or inspecting a database.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{path} already exists; a database is only ever created at a free path")]
    AlreadyExists { path: PathBuf },
    #[error(
        "{temp} exists: another creation of this database is running, or one crashed (remove the file if none is running)"
    )]
    CreationInProgress { temp: PathBuf },
    #[error("database {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("{path} is not a SQLite database")]
    NotADatabase { path: PathBuf },
    #[error("{path} is not a Steward database: it has no steward_release table")]
    NotSteward { path: PathBuf },
    #[error("{path} has an empty steward_release table: no release was ever applied")]
    NoRelease { path: PathBuf },
    #[error("{path} records release `{value}`, which is not a valid version: {source}")]
    BadRecordedRelease {
        path: PathBuf,
        value: String,
        #[source]
        source: ReleaseVersionError,
    },
    #[error(
        "{path} changed release while being migrated (expected {expected}, found {found}); another upgrade is running"
    )]
    ReleaseChanged {
        path: PathBuf,
        expected: String,
        found: String,
    },
    #[error("{path} could not be switched to WAL mode (journal mode is {mode})")]
    JournalMode { path: PathBuf, mode: String },
    #[error("migration to release {version} failed on {path}: {source}")]
    Migration {
        path: PathBuf,
        version: ReleaseVersion,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{path} failed the integrity check: {}", .problems.join("; "))]
    Corrupt {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error("SQLite error on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

fn sqlite_err(path: &Path) -> impl FnOnce(rusqlite::Error) -> EngineError + '_ {
    move |source| {
        if source.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
            EngineError::NotADatabase {
                path: path.to_owned(),
            }
        } else {
            EngineError::Sqlite {
                path: path.to_owned(),
                source,
            }
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> EngineError + '_ {
    move |source| EngineError::Io {
        path: path.to_owned(),
        source,
    }
}

/// `<path><suffix>`, e.g. the `-wal` file SQLite keeps beside a database.
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(suffix);
    PathBuf::from(name)
}

fn exists(path: &Path) -> Result<bool, EngineError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes a database file and its `-wal` and `-shm` companions, ignoring missing ones.
fn remove_database_files(path: &Path) {
    for file in [
        path.to_owned(),
        with_suffix(path, "-wal"),
        with_suffix(path, "-shm"),
    ] {
        if let Err(e) = remove_if_present(&file) {
            tracing::warn!(path = %file.display(), error = %e, "could not remove file");
        }
    }
}

/// Creates a new database at `path` holding `release` of the catalog's application: applies
/// every migration from an empty database up to `release`, each in its own transaction, and
/// records each in `steward_release`. The file is in WAL mode.
///
/// Refuses if `path` (or a `-wal` journal for it) already exists. The database is built as
/// `<path>.creating`, checkpointed and synced, then moved into place without ever replacing
/// an existing file, and the directory is synced. On failure nothing is left at `path` and
/// the temporary file is removed.
pub fn create_database(
    path: &Path,
    catalog: &Catalog,
    release: &ReleaseVersion,
) -> Result<(), EngineError> {
    if exists(path)? || exists(&with_suffix(path, "-wal"))? {
        return Err(EngineError::AlreadyExists {
            path: path.to_owned(),
        });
    }
    let migrations = catalog.migrations_between(None, release)?;
    let temp = with_suffix(path, ".creating");
    // Claiming the temporary name with create_new keeps two creations apart.
    match OpenOptions::new().write(true).create_new(true).open(&temp) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(EngineError::CreationInProgress { temp });
        }
        Err(e) => return Err(io_err(&temp)(e)),
    }
    let result = build(&temp, &migrations).and_then(|()| publish(&temp, path));
    if result.is_err() {
        remove_database_files(&temp);
    }
    match &result {
        Ok(()) => info!(path = %path.display(), %release, "created database"),
        Err(e) => {
            tracing::warn!(path = %path.display(), %release, error = %e, "database creation failed")
        }
    }
    result
}

/// Builds the database in `temp` (an empty file we own) and leaves it checkpointed, closed
/// and synced, with no `-wal` beside it.
fn build(temp: &Path, migrations: &[&Release]) -> Result<(), EngineError> {
    // Stale journals under our temporary name belong to a crashed earlier attempt.
    for stale in [with_suffix(temp, "-wal"), with_suffix(temp, "-shm")] {
        remove_if_present(&stale).map_err(io_err(&stale))?;
    }
    let mut conn = Connection::open(temp).map_err(sqlite_err(temp))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_err(temp))?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "wal", |row| row.get(0))
        .map_err(sqlite_err(temp))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(EngineError::JournalMode {
            path: temp.to_owned(),
            mode,
        });
    }
    let mut previous = None;
    for release in migrations {
        apply_migration(&mut conn, temp, previous, release)?;
        previous = Some(release.version);
    }
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| {
        row.get::<_, i64>(0)
    })
    .map_err(sqlite_err(temp))?;
    conn.close().map_err(|(_, e)| sqlite_err(temp)(e))?;
    // Closing the last connection checkpoints and deletes the WAL; make sure it did, so the
    // renamed file holds everything.
    let wal = with_suffix(temp, "-wal");
    if fs::metadata(&wal).map(|m| m.len() > 0).unwrap_or(false) {
        return Err(EngineError::Io {
            path: wal,
            source: io::Error::other("write-ahead log still holds frames after checkpoint"),
        });
    }
    remove_if_present(&wal).map_err(io_err(&wal))?;
    let shm = with_suffix(temp, "-shm");
    remove_if_present(&shm).map_err(io_err(&shm))?;
    File::open(temp)
        .and_then(|f| f.sync_all())
        .map_err(io_err(temp))?;
    Ok(())
}

/// Moves the finished `temp` to `path` without replacing anything there, then syncs the
/// directory so the new name survives a crash.
fn publish(temp: &Path, path: &Path) -> Result<(), EngineError> {
    match fs::hard_link(temp, path) {
        Ok(()) => fs::remove_file(temp).map_err(io_err(temp))?,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(EngineError::AlreadyExists {
                path: path.to_owned(),
            });
        }
        // Some file systems have no hard links: fall back to a rename after a last check.
        Err(e) => {
            debug!(error = %e, "hard link failed, renaming instead");
            if exists(path)? {
                return Err(EngineError::AlreadyExists {
                    path: path.to_owned(),
                });
            }
            fs::rename(temp, path).map_err(io_err(path))?;
        }
    }
    // Without a durable directory entry the creation did not happen: take it back.
    sync_parent(path).inspect_err(|_| remove_database_files(path))
}

fn sync_parent(path: &Path) -> Result<(), EngineError> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Applies one release's migration and records it, in one immediate transaction. Checks
/// inside the transaction that the database is still at `previous`, so two concurrent
/// upgrades cannot both apply the same migration.
fn apply_migration(
    conn: &mut Connection,
    path: &Path,
    previous: Option<ReleaseVersion>,
    release: &Release,
) -> Result<(), EngineError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_err(path))?;
    let found = recorded_release(&tx, path)?;
    if found != previous {
        let show = |v: Option<ReleaseVersion>| v.map_or("no release".to_owned(), |v| v.to_string());
        return Err(EngineError::ReleaseChanged {
            path: path.to_owned(),
            expected: show(previous),
            found: show(found),
        });
    }
    let migration_err = |source| EngineError::Migration {
        path: path.to_owned(),
        version: release.version,
        source,
    };
    tx.execute_batch(CREATE_RELEASE_TABLE)
        .map_err(sqlite_err(path))?;
    tx.execute_batch(&release.migration_sql)
        .map_err(migration_err)?;
    tx.execute(
        "INSERT INTO steward_release (version, applied_at)
         VALUES (?1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))",
        [release.version.to_string()],
    )
    .map_err(migration_err)?;
    tx.commit().map_err(migration_err)?;
    debug!(path = %path.display(), version = %release.version, "applied migration");
    Ok(())
}

/// The last release recorded in `steward_release`; `None` when the table is missing or empty.
fn recorded_release(conn: &Connection, path: &Path) -> Result<Option<ReleaseVersion>, EngineError> {
    if !has_release_table(conn, path)? {
        return Ok(None);
    }
    let value: Option<String> = conn
        .query_row(
            "SELECT version FROM steward_release ORDER BY rowid DESC LIMIT 1",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(sqlite_err(path))?;
    value
        .map(|value| {
            ReleaseVersion::parse(&value).map_err(|source| EngineError::BadRecordedRelease {
                path: path.to_owned(),
                value,
                source,
            })
        })
        .transpose()
}

fn has_release_table(conn: &Connection, path: &Path) -> Result<bool, EngineError> {
    conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'steward_release'",
        [],
        |row| row.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(sqlite_err(path))
}

/// Opens an existing database; never creates one.
fn open_existing(path: &Path, writable: bool) -> Result<Connection, EngineError> {
    if !exists(path)? {
        return Err(EngineError::NotFound {
            path: path.to_owned(),
        });
    }
    let access = if writable {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } else {
        OpenFlags::SQLITE_OPEN_READ_ONLY
    };
    let conn = Connection::open_with_flags(path, access | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(sqlite_err(path))?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(sqlite_err(path))?;
    Ok(conn)
}

/// The release a database is at: the last row of its `steward_release` table.
pub fn database_release(path: &Path) -> Result<ReleaseVersion, EngineError> {
    let conn = open_existing(path, false)?;
    release_of(&conn, path)
}

fn release_of(conn: &Connection, path: &Path) -> Result<ReleaseVersion, EngineError> {
    if !has_release_table(conn, path)? {
        return Err(EngineError::NotSteward {
            path: path.to_owned(),
        });
    }
    recorded_release(conn, path)?.ok_or_else(|| EngineError::NoRelease {
        path: path.to_owned(),
    })
}

/// Upgrades the database at `path` to release `to`, applying each pending migration in its
/// own transaction and recording it in `steward_release`. Returns the releases applied, in
/// order (empty if the database is already at `to`).
///
/// If a migration fails, the releases before it stay applied and recorded, the failing one
/// is rolled back entirely, and the error names it; the caller (the update pipeline) decides
/// whether to restore the pre-update backup.
pub fn upgrade_database(
    path: &Path,
    catalog: &Catalog,
    to: &ReleaseVersion,
) -> Result<Vec<ReleaseVersion>, EngineError> {
    let mut conn = open_existing(path, true)?;
    let current = release_of(&conn, path)?;
    let pending = catalog.migrations_between(Some(&current), to)?;
    let mut applied = Vec::with_capacity(pending.len());
    let mut previous = current;
    for release in pending {
        apply_migration(&mut conn, path, Some(previous), release)?;
        info!(path = %path.display(), from = %previous, to = %release.version, "upgraded database");
        previous = release.version;
        applied.push(release.version);
    }
    conn.close().map_err(|(_, e)| sqlite_err(path)(e))?;
    Ok(applied)
}

/// Bytes the database occupies on disk: the file plus its `-wal` and `-shm` files. A missing
/// file counts as 0.
pub fn storage_bytes(path: &Path) -> u64 {
    [
        path.to_owned(),
        with_suffix(path, "-wal"),
        with_suffix(path, "-shm"),
    ]
    .iter()
    .filter_map(|p| fs::metadata(p).ok())
    .map(|m| m.len())
    .sum()
}

/// Runs SQLite's `PRAGMA integrity_check` on the database; `Corrupt` lists what it found.
pub fn integrity_check(path: &Path) -> Result<(), EngineError> {
    let conn = open_existing(path, false)?;
    let mut stmt = conn
        .prepare("PRAGMA integrity_check")
        .map_err(sqlite_err(path))?;
    let problems: Vec<String> = stmt
        .query_map([], |row| row.get(0))
        .and_then(|rows| rows.collect())
        .map_err(sqlite_err(path))?;
    if problems.len() == 1 && problems[0] == "ok" {
        Ok(())
    } else {
        Err(EngineError::Corrupt {
            path: path.to_owned(),
            problems,
        })
    }
}

/// Proves a catalog's migration chain works: applies every migration, in order, to an empty
/// in-memory database. Loading a catalog checks its shape; this checks its SQL.
pub fn verify_catalog(catalog: &Catalog) -> Result<(), EngineError> {
    let path = Path::new(":memory:");
    let mut conn = Connection::open_in_memory().map_err(sqlite_err(path))?;
    let mut previous = None;
    for release in catalog.releases() {
        apply_migration(&mut conn, path, previous, release)?;
        previous = Some(release.version);
    }
    Ok(())
}
