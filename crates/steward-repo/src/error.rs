//! The one error type of the repository: every failure a caller can act on has its own variant.

use std::path::PathBuf;

/// Result alias used throughout the crate.
pub type Result<T, E = RepoError> = std::result::Result<T, E>;

/// Everything that can go wrong in a repository operation.
///
/// Variants are specific so the server can map them to a clear message or status code.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The file given as a backup source is not a SQLite database.
    #[error("{path}: not a SQLite database ({reason})")]
    NotSqlite { path: PathBuf, reason: String },
    /// An object was written by a newer repository format than this build understands.
    #[error(
        "{object} was written by repository format version {found}, this build supports up to \
         version {supported}: upgrade steward to read it"
    )]
    NewerFormat {
        object: String,
        found: u32,
        supported: u32,
    },
    /// The repository is encrypted and no key was given.
    #[error("the repository is encrypted: a key file is required to open it")]
    MissingKey,
    /// The given key does not match the repository's key check value.
    #[error("wrong key: the key does not match the key this repository was created with")]
    WrongKey,
    /// A key file could not be read or has the wrong shape.
    #[error("invalid key file {path}: {reason}")]
    InvalidKey { path: PathBuf, reason: String },
    /// There is no repository at this location (no `config` object).
    #[error("no backup repository at {0} (the config object is missing; initialise it first)")]
    NotARepository(String),
    /// `init` was asked to create a repository where one already exists.
    #[error("a backup repository already exists at {0}")]
    AlreadyInitialized(String),
    /// No backup with this id exists (or its manifest was never written).
    #[error("backup {0} not found")]
    BackupNotFound(String),
    /// A chunk a backup needs is not in any pack index.
    #[error("chunk {chunk} needed by backup {backup} is missing from the repository")]
    MissingChunk { backup: String, chunk: String },
    /// A chunk's stored bytes do not decode to the content its id names.
    #[error("chunk {chunk} in pack {pack} is corrupt: {reason}")]
    CorruptChunk {
        chunk: String,
        pack: String,
        reason: String,
    },
    /// A repository object (manifest, index, pack header, config) is damaged.
    #[error("repository object {object} is corrupt: {reason}")]
    CorruptObject { object: String, reason: String },
    /// Restore target exists and overwriting was not requested.
    #[error("{0} already exists; refusing to overwrite it")]
    TargetExists(PathBuf),
    /// The disk filled up while writing a file; the partial file was removed.
    #[error("no space left on the device while writing {path}; nothing was overwritten")]
    DiskFull { path: PathBuf },
    /// The restored database did not pass its checks; it was not moved into place.
    #[error("restored database failed its check: {0}")]
    CheckFailed(String),
    /// Another process holds a conflicting lock.
    #[error("the repository is locked: {0}")]
    Locked(String),
    /// SQLite reported an error while reading or checking a database.
    #[error("SQLite error on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// A local file operation failed.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The object store failed (after retries for transient errors).
    #[error("object store error: {0}")]
    Store(#[from] object_store::Error),
    /// A caller passed an argument that cannot work.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The operation was cancelled through its cancel flag; nothing it wrote was kept.
    #[error("cancelled")]
    Cancelled,
    /// A restore to a moment before the chain's base snapshot.
    #[error(
        "{} is before the restorable range of the chain on backup {base}: from {} to {}",
        fmt_ms(.at_ms), fmt_ms(.from_ms), fmt_ms(.to_ms)
    )]
    MomentBeforeRange {
        base: String,
        at_ms: u64,
        from_ms: u64,
        to_ms: u64,
    },
    /// A restore to a moment after the last segment's `through_ms`: nothing says what was
    /// committed then.
    #[error(
        "{} is after the restorable range of the chain on backup {base}: from {} to {}",
        fmt_ms(.at_ms), fmt_ms(.from_ms), fmt_ms(.to_ms)
    )]
    MomentAfterRange {
        base: String,
        at_ms: u64,
        from_ms: u64,
        to_ms: u64,
    },
    /// A segment the restore needs is not in the repository (its neighbours are). The
    /// commits captured after `after_ms` (up to `until_ms`, where the next readable segment
    /// starts) are lost to this chain: no moment after `after_ms` can be restored from it.
    #[error(
        "segment {segment} is missing: the commits captured after {} (up to {}) are not in \
         the repository, so this chain cannot restore any moment after {}",
        fmt_ms(.after_ms), fmt_ms(.until_ms), fmt_ms(.after_ms)
    )]
    SegmentMissing {
        segment: String,
        after_ms: u64,
        until_ms: u64,
    },
    /// A segment the restore needs does not open or decode. As with a missing one, no
    /// moment after `after_ms` can be restored from this chain.
    #[error(
        "segment {segment} is corrupt ({reason}): the commits captured after {} (up to {}) \
         cannot be read, so this chain cannot restore any moment after {}",
        fmt_ms(.after_ms), fmt_ms(.until_ms), fmt_ms(.after_ms)
    )]
    SegmentCorrupt {
        segment: String,
        reason: String,
        after_ms: u64,
        until_ms: u64,
    },
    /// The stored content of a page a segment references (the version a restore needs) is
    /// missing or damaged.
    #[error(
        "page {page} as written by the commit at {} in segment {segment} (chunk {chunk}) \
         cannot be read: {reason}; this chain cannot restore moments from {} until that page \
         is written again",
        fmt_ms(.written_ms), fmt_ms(.written_ms)
    )]
    SegmentChunkDamaged {
        segment: String,
        page: u32,
        chunk: String,
        written_ms: u64,
        reason: String,
    },
    /// A segment with this number already exists with other content: a sealed segment never
    /// changes.
    #[error("segment {segment} already exists with different content; segments never change")]
    SegmentConflict { segment: String },
}

/// A time for messages: UTC with milliseconds, and the raw milliseconds.
pub(crate) fn fmt_ms(ms: &u64) -> String {
    match chrono::DateTime::from_timestamp_millis(*ms as i64) {
        Some(t) => format!("{} ({ms} ms)", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
        None => format!("{ms} ms"),
    }
}

impl RepoError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(28) {
            // ENOSPC
            return RepoError::DiskFull { path };
        }
        RepoError::Io { path, source }
    }

    pub(crate) fn sqlite(path: impl Into<PathBuf>, source: rusqlite::Error) -> Self {
        let path = path.into();
        if let rusqlite::Error::SqliteFailure(e, _) = &source
            && e.code == rusqlite::ErrorCode::NotADatabase
        {
            return RepoError::NotSqlite {
                path,
                reason: source.to_string(),
            };
        }
        RepoError::Sqlite { path, source }
    }

    pub(crate) fn corrupt(object: impl Into<String>, reason: impl Into<String>) -> Self {
        RepoError::CorruptObject {
            object: object.into(),
            reason: reason.into(),
        }
    }
}
