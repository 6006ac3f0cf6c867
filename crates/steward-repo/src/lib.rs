//! `steward-repo`: the backup repository. Page-aligned, deduplicated, compressed, verified
//! (and optionally encrypted) backups of SQLite databases, on a local directory or on
//! S3-compatible object storage. It knows nothing about the server; the server drives it.
//!
//! **Invariants.** A backup exists once its manifest object is written, and it is written
//! last. Every index entry points into a pack that was fully written before the index. Restore
//! writes only into a new temporary file beside the target (each byte once, from the buffer it
//! hashed), fsyncs it, checks its whole-file hash, and moves it into place (rename or hard link)
//! only after it passed its checks; on any error or kill the target is untouched. A drill
//! writes a proof (`proofs/<db_hash>`) only after the hash, `PRAGMA integrity_check` and the row
//! counts all passed, and a restore skips integrity_check only when a proof names the exact
//! whole-file hash it has just verified. Prune deletes nothing a live backup, or a backup still
//! running, can reference.
//!
//! # Using it
//!
//! The API is synchronous; from async code call it inside `tokio::task::spawn_blocking` (the
//! repository runs its own small runtime for object store I/O, and must not be called from
//! inside an async task). A [`Repository`] is `Send + Sync`: share it behind an `Arc`.
//!
//! ```no_run
//! use std::collections::BTreeMap;
//! use steward_repo::{Repository, InitOptions, RestoreOptions, VerifyMode, PruneOptions};
//!
//! # fn main() -> Result<(), steward_repo::RepoError> {
//! let repo = Repository::init(Repository::local_store("/var/lib/steward/backups")?,
//!                             InitOptions::default())?;
//! let meta = BTreeMap::from([("instance".to_string(), "crm-prod".to_string())]);
//! let b = repo.backup_sqlite("/srv/crm.db".as_ref(), meta, &|p| eprintln!("{p:?}"))?;
//! repo.restore(&b.id, "/srv/sandbox.db".as_ref(), &RestoreOptions::default(), &|_| {})?;
//! assert!(repo.verify(Some(&b.id), VerifyMode::Full, &|_| {})?.is_ok());
//! repo.delete_backup(&b.id)?;
//! repo.prune(&PruneOptions::default())?;
//! # Ok(()) }
//! ```
//!
//! The calls, all on [`Repository`]:
//!
//! | call | does |
//! |---|---|
//! | `local_store(dir)`, `s3_store(&S3Config)` | an `Arc<dyn ObjectStore>` to open a repository on |
//! | `init(store, InitOptions)`, `open(store, Option<Key>)`, `open_or_init` | create / open |
//! | `backup_sqlite(path, metadata, progress)` | online snapshot → [`BackupSummary`] |
//! | `list_backups()`, `manifest(id)`, `delete_backup(id)` | the catalogue ([`Manifest`]) |
//! | `restore(id, target, &RestoreOptions, progress)` | into a new file → [`RestoreSummary`] |
//! | `verify(Some(id) or None, VerifyMode, progress)`, `verify_many(ids, ..)` | check → [`VerifyReport`] |
//! | `drill(id, scratch_dir, &DrillOptions, progress)` | restore into a throwaway file, check it fully, record a [`Proof`] → [`DrillReport`] |
//! | `proof(db_hash)` | when a drill proved these bytes → `Option<`[`Proof`]`>` |
//! | `prune(&PruneOptions)` | reclaim space, safe beside running backups → [`PruneSummary`] |
//! | `remove_backup_locks()` | after a crash, when no backup can be running: drop their locks |
//! | `remove_prune_locks()` | after a crash, when no prune can be running: drop their locks |
//! | `stats()` | stored bytes → [`RepoStats`] |
//! | `backup_sqlite_conn(conn, path, metadata, progress)` | snapshot through a caller's read transaction (a chain's base) → [`BackupSummary`] |
//! | `write_segment(base, seq, through_ms, commits)` | store captured commits ([`SegmentCommit`]) as segment `seq` of a chain → [`SegmentInfo`] |
//! | `segments(base)`, `delete_segments(base)` | a chain's segments |
//! | `restore_at(base, at_ms, target, &RestoreOptions)` | the state committed at a moment, into a new file → [`RestoreAtSummary`] |
//!
//! Errors are one enum, [`RepoError`], with a variant per case the caller can act on
//! (`NotSqlite`, `NewerFormat`, `MissingKey`, `WrongKey`, `TargetExists`, `DiskFull`,
//! `CorruptChunk`, `MissingChunk`, `Locked`, ...). Progress callbacks get [`Progress`] (phase,
//! bytes done, bytes total) and may be called from worker threads.
//!
//! The storage format is described in `docs/repository-format.md`; [`mod@format`] holds its
//! constants.

mod backup;
mod crypto;
mod drill;
mod error;
pub mod format;
mod index_cache;
mod prune;
mod read;
mod restore;
mod segment;
mod sink;
mod store;
mod treehash;
mod verify;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use object_store::ObjectStore;

pub use backup::BackupSummary;
pub use crypto::{ChunkId, Key};
pub use drill::{DrillOptions, DrillReport, Proof};
pub use error::{RepoError, Result};
pub use format::{BackupKind, FORMAT_VERSION, Manifest, RepoConfig};
#[doc(hidden)]
pub use index_cache::IndexCacheStats;
pub use prune::{PruneOptions, PruneSummary};
pub use restore::{Integrity, RestoreOptions, RestoreSummary};
pub use segment::{RestoreAtSummary, SegmentCommit, SegmentInfo};
pub use store::RetryPolicy;
pub use verify::{BackupVerification, VerifyMode, VerifyReport};

use crypto::Crypto;
use format::{CONFIG_KEY, DOMAIN_CHUNKS};
use store::Store;

/// Which long operation a [`Progress`] report belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading and storing a database.
    Backup,
    /// Writing a database from the repository.
    Restore,
    /// Checking a restored database (`bytes_done` stays 0 until it ends).
    Check,
    /// Re-reading stored chunks.
    Verify,
}

/// Progress of a long operation, reported through a callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// What is being done.
    pub phase: Phase,
    /// Bytes done so far.
    pub bytes_done: u64,
    /// Bytes to do in all.
    pub bytes_total: u64,
}

/// How to create a repository.
#[derive(Debug, Clone, Default)]
pub struct InitOptions {
    /// Encrypt chunks, indexes and manifests with this key. `None`: a plain repository.
    pub key: Option<Key>,
}

/// Connection settings for S3-compatible object storage.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL, e.g. `http://127.0.0.1:9000`; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// Bucket name (at least 3 characters).
    pub bucket: String,
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Allow plain HTTP endpoints (tests, private networks).
    pub allow_http: bool,
}

/// Stored bytes, by kind of object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RepoStats {
    /// Backups (manifests) in the repository.
    pub backups: u64,
    /// Pack objects.
    pub packs: u64,
    /// Bytes in pack objects.
    pub pack_bytes: u64,
    /// Bytes in index objects (live and condemned).
    pub index_bytes: u64,
    /// Bytes in manifests, chunk lists and drill proofs.
    pub manifest_bytes: u64,
    /// All bytes stored.
    pub total_bytes: u64,
}

/// An open backup repository.
pub struct Repository {
    pub(crate) store: Store,
    pub(crate) crypto: Arc<Crypto>,
    config: RepoConfig,
    pub(crate) compression_level: i32,
    pub(crate) threads: usize,
    /// The pack indexes (chunk ids, frames, live or condemned), kept between operations:
    /// backups and segment writes ask it which chunks are stored, restores, drills and
    /// verifies of some backups where chunks are.
    pub(crate) index_cache: Arc<index_cache::IndexCache>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("store", &self.store.name)
            .field("repo_id", &self.config.repo_id)
            .field("encrypted", &self.crypto.is_encrypted())
            .finish()
    }
}

impl Repository {
    /// An object store on a local directory (created if missing).
    ///
    /// A repository opened on this store (or a clone of the `Arc`) knows the directory, so
    /// [`Repository::prune`] can also remove the staging files (`<object>#<n>`) that a process
    /// killed while writing leaves behind: the store itself never lists them. A repository on
    /// a wrapper around this store cannot see them.
    pub fn local_store(path: impl AsRef<Path>) -> Result<Arc<dyn ObjectStore>> {
        let path = path.as_ref();
        std::fs::create_dir_all(path).map_err(|e| RepoError::io(path, e))?;
        let fs = object_store::local::LocalFileSystem::new_with_prefix(path)?;
        let root = std::fs::canonicalize(path).map_err(|e| RepoError::io(path, e))?;
        let store: Arc<dyn ObjectStore> = Arc::new(fs);
        store::remember_local_root(&store, root);
        Ok(store)
    }

    /// An object store on S3-compatible storage. `object_store` retries transient HTTP errors
    /// itself; the repository adds its own retries on top.
    pub fn s3_store(cfg: &S3Config) -> Result<Arc<dyn ObjectStore>> {
        let mut b = object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region)
            .with_access_key_id(&cfg.access_key_id)
            .with_secret_access_key(&cfg.secret_access_key)
            .with_allow_http(cfg.allow_http);
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        Ok(Arc::new(b.build()?))
    }

    /// Creates a new repository in an empty store.
    pub fn init(store: Arc<dyn ObjectStore>, opts: InitOptions) -> Result<Self> {
        let store = Store::new(store)?;
        if store.block_on(store.get(CONFIG_KEY))?.is_some() {
            return Err(RepoError::AlreadyInitialized(store.name.clone()));
        }
        let config = RepoConfig {
            format: "steward-repo".into(),
            version: format::FORMAT_VERSION,
            repo_id: format::random_hex(16),
            created_ms: format::now_ms(),
            encryption: if opts.key.is_some() {
                "xchacha20poly1305".into()
            } else {
                "none".into()
            },
            key_check: opts.key.as_ref().map(Key::check_value),
            chunk_target_bytes: format::CHUNK_TARGET_BYTES,
            compression: "zstd".into(),
        };
        let json =
            serde_json::to_vec_pretty(&config).map_err(|e| RepoError::Invalid(e.to_string()))?;
        store.block_on(store.put(CONFIG_KEY, Bytes::from(json)))?;
        let crypto = match &opts.key {
            Some(k) => Crypto::encrypted(k),
            None => Crypto::plain(),
        };
        Ok(Self::assemble(store, crypto, config))
    }

    /// Opens an existing repository. `key` is required for an encrypted one, ignored otherwise.
    pub fn open(store: Arc<dyn ObjectStore>, key: Option<Key>) -> Result<Self> {
        let store = Store::new(store)?;
        let Some(bytes) = store.block_on(store.get(CONFIG_KEY))? else {
            return Err(RepoError::NotARepository(store.name.clone()));
        };
        format::check_version(CONFIG_KEY, &bytes)?;
        let config: RepoConfig = serde_json::from_slice(&bytes)
            .map_err(|e| RepoError::corrupt(CONFIG_KEY, e.to_string()))?;
        if config.format != "steward-repo" {
            return Err(RepoError::corrupt(
                CONFIG_KEY,
                format!("format is {:?}", config.format),
            ));
        }
        let crypto = match config.encryption.as_str() {
            "none" => Crypto::plain(),
            "xchacha20poly1305" => {
                let key = key.ok_or(RepoError::MissingKey)?;
                if config.key_check.as_deref() != Some(key.check_value().as_str()) {
                    return Err(RepoError::WrongKey);
                }
                Crypto::encrypted(&key)
            }
            other => {
                return Err(RepoError::corrupt(
                    CONFIG_KEY,
                    format!("unknown encryption {other:?}"),
                ));
            }
        };
        Ok(Self::assemble(store, crypto, config))
    }

    /// Opens the repository, creating it first if the store has none.
    pub fn open_or_init(store: Arc<dyn ObjectStore>, key: Option<Key>) -> Result<Self> {
        match Self::open(Arc::clone(&store), key.clone()) {
            Err(RepoError::NotARepository(_)) => Self::init(store, InitOptions { key }),
            r => r,
        }
    }

    fn assemble(store: Store, crypto: Crypto, config: RepoConfig) -> Self {
        Repository {
            store,
            crypto: Arc::new(crypto),
            config,
            compression_level: 2,
            index_cache: Default::default(),
            threads: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(2)
                .clamp(1, 8),
        }
    }

    /// zstd level for new chunks (1–19; default 2: on 256 KiB frames it compresses about as
    /// well as level 3 on 128 KiB, and faster; see BENCHMARKS.md).
    pub fn with_compression_level(mut self, level: i32) -> Self {
        self.compression_level = level.clamp(1, 19);
        self
    }

    /// Worker threads for hashing, compression and decompression (default: cores, up to 8).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// How transient object store errors are retried.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.store.retry = retry;
        self
    }

    /// The repository's config object.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// What this handle's cache of pack indexes holds and has read (for tests and
    /// measurements; not a stable interface).
    #[doc(hidden)]
    pub fn index_cache_stats(&self) -> IndexCacheStats {
        self.index_cache.stats()
    }

    /// Takes a consistent online backup of the SQLite database at `db_path`.
    ///
    /// In WAL mode writers continue throughout; in rollback-journal modes the read lock makes
    /// writers wait until the database has been read (the summary reports the journal mode).
    pub fn backup_sqlite(
        &self,
        db_path: &Path,
        metadata: BTreeMap<String, String>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<BackupSummary> {
        backup::backup_sqlite(self, db_path, metadata, progress)
    }

    /// The same snapshot as [`Repository::backup_sqlite`] (same manifest, chunks and checks),
    /// read through `conn`, a caller's connection that is already inside a read transaction:
    /// the stored state is exactly the one that transaction sees (a capture's exact WAL
    /// position, the base of a chain of segments). The transaction is left open; the caller
    /// ends it. `source_path` is recorded in the manifest and named in errors.
    ///
    /// Refuses a connection that is not inside a transaction ([`RepoError::Invalid`]). The
    /// manifest's `snapshot_ms` is the time of the call: the pinned state held at least then.
    pub fn backup_sqlite_conn(
        &self,
        conn: &rusqlite::Connection,
        source_path: &str,
        metadata: BTreeMap<String, String>,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<BackupSummary> {
        backup::backup_sqlite_conn(self, conn, source_path, metadata, progress)
    }

    /// All backups, oldest first.
    pub fn list_backups(&self) -> Result<Vec<Manifest>> {
        let metas = self.store.block_on(self.store.list("backups"))?;
        let keys: Vec<String> = metas
            .iter()
            .map(|m| m.location.to_string())
            .filter(|k| !k.ends_with(".chunks"))
            .collect();
        let mut out = Vec::new();
        for (key, bytes) in self.store.block_on(self.store.get_many(keys))? {
            if let Some(b) = bytes {
                out.push(Manifest::decode(&key, &b, &self.crypto)?);
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    /// One backup's manifest.
    pub fn manifest(&self, id: &str) -> Result<Manifest> {
        if id.is_empty() || id.contains('/') || id.ends_with(".chunks") {
            return Err(RepoError::BackupNotFound(id.to_string()));
        }
        let key = format::manifest_key(id);
        match self.store.block_on(self.store.get(&key))? {
            Some(b) => Manifest::decode(&key, &b, &self.crypto),
            None => Err(RepoError::BackupNotFound(id.to_string())),
        }
    }

    /// The ordered chunk ids of a backup, checked against the manifest.
    pub(crate) fn chunk_list(&self, m: &Manifest) -> Result<Vec<ChunkId>> {
        let key = format::chunks_key(&m.id);
        let Some(b) = self.store.block_on(self.store.get(&key))? else {
            return Err(RepoError::corrupt(
                key,
                "the chunk list of this backup is missing",
            ));
        };
        let plain = self
            .crypto
            .open(DOMAIN_CHUNKS, &b)
            .map_err(|r| RepoError::corrupt(&key, r))?;
        if blake3::hash(&plain).to_hex().as_str() != m.chunk_list_hash {
            return Err(RepoError::corrupt(
                &key,
                "does not match the manifest's hash",
            ));
        }
        let ids = format::decode_chunk_list(&key, &plain)?;
        if ids.len() as u64 != m.chunk_count {
            return Err(RepoError::corrupt(
                &key,
                "chunk count differs from the manifest",
            ));
        }
        Ok(ids)
    }

    /// Restores a backup into a new file at `target` (see [`RestoreOptions`]).
    pub fn restore(
        &self,
        id: &str,
        target: &Path,
        opts: &RestoreOptions,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<RestoreSummary> {
        restore::restore(self, id, target, opts, progress)
    }

    /// Deletes a backup's manifest (its data is reclaimed by [`Repository::prune`]), and
    /// first the segments of the chain it is the base of, if any (without their base they
    /// restore nothing).
    pub fn delete_backup(&self, id: &str) -> Result<()> {
        self.manifest(id)?;
        segment::delete_segments(self, id)?;
        self.store
            .block_on(self.store.delete(&format::manifest_key(id)))?;
        self.store
            .block_on(self.store.delete(&format::chunks_key(id)))
    }

    /// Writes segment `seq` (1, 2, 3, …) of the chain whose base snapshot is backup `base`:
    /// the `commits` captured after segment `seq - 1` (or after the base), in commit order,
    /// and `through_ms`, the time until which the capture confirmed no later commit existed.
    /// New page contents go into packs and indexes first, the sealed segment object
    /// `segments/<base>/<seq>` last, so a segment never refers to missing data and exists
    /// exactly when its object does. Writing the same segment again is a no-op that returns
    /// the stored one; a different segment under an existing number is refused
    /// ([`RepoError::SegmentConflict`]). A segment may hold no commits (it then only extends
    /// the chain's range to `through_ms`).
    pub fn write_segment(
        &self,
        base: &str,
        seq: u64,
        through_ms: u64,
        commits: &[SegmentCommit],
    ) -> Result<SegmentInfo> {
        segment::write_segment(self, base, seq, through_ms, commits)
    }

    /// The segments of the chain on `base`, by number (reads only the small segment objects).
    /// A gap in the numbers is a missing segment; a segment that does not open is an error
    /// naming it.
    pub fn segments(&self, base: &str) -> Result<Vec<SegmentInfo>> {
        segment::segments(self, base)
    }

    /// Restores the state of the chain on `base` at moment `at_ms` (ms since the epoch) into
    /// a new file at `target`: the base snapshot with every commit whose time is `<= at_ms`
    /// applied in order (newest version of each page wins), sized as after the last applied
    /// commit. Written into a temporary file beside the target, fsynced, hashed, checked with
    /// `PRAGMA integrity_check` (unless `opts` turns it off, or a drill proved these exact
    /// bytes), then moved into place like [`Repository::restore`]; the target is untouched on
    /// any error.
    ///
    /// Refuses before writing anything: a moment outside `[base snapshot time, last
    /// through_ms]` ([`RepoError::MomentBeforeRange`], [`RepoError::MomentAfterRange`], naming
    /// the range); a needed segment that is missing, corrupt or newer
    /// ([`RepoError::SegmentMissing`], [`RepoError::SegmentCorrupt`],
    /// [`RepoError::NewerFormat`], naming the segment and the moments lost). A needed page
    /// whose stored content is missing or damaged gives [`RepoError::SegmentChunkDamaged`].
    pub fn restore_at(
        &self,
        base: &str,
        at_ms: u64,
        target: &Path,
        opts: &RestoreOptions,
    ) -> Result<RestoreAtSummary> {
        segment::restore_at(self, base, at_ms, target, opts)
    }

    /// Deletes every segment of the chain on `base` (newest first, so an interruption leaves
    /// a shorter chain, never a hole) and returns how many there were. Their data is
    /// reclaimed by [`Repository::prune`]. [`Repository::delete_backup`] of the base does
    /// this itself.
    pub fn delete_segments(&self, base: &str) -> Result<usize> {
        segment::delete_segments(self, base)
    }

    /// Checks one backup (`Some(id)`) or all backups (see [`VerifyMode`]). One backup's
    /// chunks are located in this handle's cache of pack indexes (brought up to date first);
    /// a verify of all backups reads every pack index of the repository.
    pub fn verify(
        &self,
        id: Option<&str>,
        mode: VerifyMode,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<VerifyReport> {
        let ids = match id {
            Some(id) => {
                return verify::verify_many(
                    self,
                    &[id.to_string()],
                    mode,
                    progress,
                    verify::Lookup::Cache,
                );
            }
            None => {
                let metas = self.store.block_on(self.store.list("backups"))?;
                let mut ids: Vec<String> = metas
                    .iter()
                    .map(store::file_name)
                    .filter(|k| !k.ends_with(".chunks"))
                    .collect();
                ids.sort();
                ids
            }
        };
        verify::verify_many(self, &ids, mode, progress, verify::Lookup::ReadAll)
    }

    /// Checks the backups `ids`, in that order, reading each chunk at most once however
    /// many of them need it. An unknown id is [`RepoError::BackupNotFound`]; a damaged
    /// manifest or chunk list is reported as a problem of that backup. Their chunks are
    /// located in this handle's cache of pack indexes, brought up to date first (a listing
    /// of `index/` and `condemned/`, and a read of the index objects that appeared since).
    pub fn verify_many(
        &self,
        ids: &[String],
        mode: VerifyMode,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<VerifyReport> {
        verify::verify_many(self, ids, mode, progress, verify::Lookup::Cache)
    }

    /// Restores backup `id` into a throwaway file inside `scratch_dir` (created if missing),
    /// checks the whole-file hash, `PRAGMA integrity_check`, and per-table row counts against
    /// the manifest's, deletes the file, and — only when everything passed — records a proof
    /// object `proofs/<db_hash>` saying a database with exactly these bytes passed
    /// integrity_check at this time. Data problems (missing/corrupt chunk, hash, integrity,
    /// counts) give `Ok(report)` with `passed == false`; `Err` only for operational failures
    /// (store unreachable, scratch dir unwritable, cancelled, unknown backup id).
    pub fn drill(
        &self,
        id: &str,
        scratch_dir: &Path,
        opts: &DrillOptions,
        progress: &(dyn Fn(Progress) + Sync),
    ) -> Result<DrillReport> {
        drill::drill(self, id, scratch_dir, opts, progress)
    }

    /// When a drill proved these bytes (by whole-file hash), if ever.
    pub fn proof(&self, db_hash: &str) -> Result<Option<Proof>> {
        drill::proof(self, db_hash)
    }

    /// Deletes data no backup references (see the `prune` module docs for the protocol), lock
    /// objects not refreshed for 15 minutes, and, on a store made by
    /// [`Repository::local_store`], staging files of interrupted writes.
    pub fn prune(&self, opts: &PruneOptions) -> Result<PruneSummary> {
        prune::prune(self, opts)
    }

    /// Checks that the repository answers and takes writes: writes and deletes a small
    /// object `probe/<id>` (with the usual retries). Cheap; reads no backup data.
    pub fn probe(&self) -> Result<()> {
        let store = &self.store;
        let key = format!("probe/{}", format::new_backup_id());
        store.block_on(store.put(&key, Bytes::from_static(b"probe")))?;
        store.block_on(store.delete(&key))
    }

    /// Names who this handle's locks belong to (e.g. a Steward node), so that
    /// [`Repository::remove_backup_locks`] and [`Repository::remove_prune_locks`] of one
    /// process never remove the locks of another process sharing the repository.
    pub fn set_lock_owner(&mut self, owner: &str) {
        self.store.owner = owner.to_owned();
    }

    /// Deletes this owner's backup locks (`locks/backup-*` taken under the same
    /// [`Repository::set_lock_owner`]) and returns how many there were.
    ///
    /// Call this only when no backup of this owner can be running, e.g. at the start of the
    /// process: a backup killed with its process leaves its lock, and until the lock is stale
    /// (15 minutes) prune treats that backup as running and keeps what it might reuse.
    /// Removing the lock of a backup that *is* running lets prune delete packs that backup is
    /// about to reference; that is why another owner's locks are left alone. Prune locks are
    /// left alone too.
    pub fn remove_backup_locks(&self) -> Result<usize> {
        self.remove_own_locks("backup-")
    }

    /// Deletes this owner's prune lock (`locks/prune-*`), as
    /// [`Repository::remove_backup_locks`] does for backups.
    ///
    /// Call this only when no prune of this owner can be running, e.g. at the start of the
    /// process: a prune killed with its process leaves its lock, and every later prune is
    /// refused as "another prune is running" until the lock is stale (15 minutes). An
    /// interrupted prune is safe to leave unfinished: packs it condemned are deleted or
    /// restored by the next prune under the usual rules.
    pub fn remove_prune_locks(&self) -> Result<usize> {
        self.remove_own_locks("prune-")
    }

    fn remove_own_locks(&self, prefix: &str) -> Result<usize> {
        let store = &self.store;
        let mut removed = 0;
        for m in store.block_on(store.list("locks"))? {
            if !store::file_name(&m).starts_with(prefix) {
                continue;
            }
            let key = m.location.as_ref().to_owned();
            let owner = store
                .block_on(store.get(&key))?
                .and_then(|b| serde_json::from_slice::<format::LockInfo>(&b).ok())
                .map(|l| l.owner);
            // An unreadable lock is someone's only when no owner is named (as before owners).
            if owner.as_deref().unwrap_or("") == store.owner {
                store.block_on(store.delete(&key))?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Stored bytes by kind.
    pub fn stats(&self) -> Result<RepoStats> {
        let mut s = RepoStats::default();
        for m in self.store.block_on(self.store.list(""))? {
            let key = m.location.to_string();
            s.total_bytes += m.size;
            if key.starts_with("data/") {
                s.packs += 1;
                s.pack_bytes += m.size;
            } else if key.starts_with("index/") || key.starts_with("condemned/") {
                s.index_bytes += m.size;
            } else if key.starts_with("backups/") {
                s.manifest_bytes += m.size;
                if !key.ends_with(".chunks") {
                    s.backups += 1;
                }
            } else if key.starts_with("proofs/") || key.starts_with("segments/") {
                s.manifest_bytes += m.size;
            }
        }
        Ok(s)
    }
}

// The server shares one repository between jobs.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Repository>();
};
