//! Online backup of a SQLite database: pins one committed state with a read transaction,
//! streams its pages through `sqlite_dbpage`, cuts them into page-aligned chunks, and stores
//! the chunks the repository does not have yet.
//!
//! Threads: the reader (SQLite + whole-database hash) feeds `threads` workers (chunk ids,
//! deduplication, zstd, sealing) through a bounded channel; the calling thread packs frames and
//! hands full packs to the async runtime, at most two uploads in flight. Memory is bounded by
//! the channels, one pack being filled, two in flight, the chunk list of this backup (32 bytes
//! per chunk) and the set of new chunk ids it stores. The chunk ids already stored come from
//! the repository's cache of pack indexes (see `index_cache`; about 60 bytes per stored chunk
//! and 300 per index, kept between operations and shared with restores), brought up to date at
//! the start of each backup by reading only the indexes that appeared since the last refresh.

use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags};

use crate::crypto::{ChunkId, Crypto};
use crate::error::{RepoError, Result};
use crate::format::{
    self, BackupKind, DOMAIN_CHUNKS, DOMAIN_FRAME, FORMAT_VERSION, FRAME_TARGET_BYTES, IndexFrame,
    Manifest, PACK_MAGIC, PACK_TARGET_BYTES, PackIndex,
};
use crate::index_cache::{CachedPack, IndexCache, Scope};
use crate::read::IdSet;
use crate::store::Store;
use crate::{Phase, Progress, Repository};

/// What one backup did.
#[derive(Debug, Clone)]
pub struct BackupSummary {
    /// The new backup's id.
    pub id: String,
    /// Database bytes read (page size × page count).
    pub bytes_read: u64,
    /// Bytes written to the store: packs, indexes, chunk list and manifest.
    pub bytes_added: u64,
    /// Chunks in the backup.
    pub chunks_total: u64,
    /// Chunks stored by this backup.
    pub chunks_new: u64,
    /// Chunks that were already in the repository.
    pub chunks_reused: u64,
    /// Page size of the source database.
    pub page_size: u32,
    /// Pages in the snapshot.
    pub page_count: u64,
    /// Journal mode of the source (`wal`; `delete` and friends block writers while read).
    pub journal_mode: String,
    /// Time to open the source and pin its snapshot.
    pub snapshot_open: Duration,
    /// Time spent counting the rows of every table (inside the same read transaction).
    pub row_count_duration: Duration,
    /// Wall time of the whole backup.
    pub duration: Duration,
}

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

pub(crate) fn check_sqlite_header(path: &Path) -> Result<()> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| RepoError::io(path, e))?;
    let mut head = [0u8; 100];
    let mut n = 0;
    while n < head.len() {
        match f.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) => return Err(RepoError::io(path, e)),
        }
    }
    if n < 100 || &head[..16] != SQLITE_MAGIC {
        return Err(RepoError::NotSqlite {
            path: path.to_owned(),
            reason: if n < 100 {
                format!("only {n} bytes, shorter than a SQLite header")
            } else {
                "the file does not start with the SQLite header".into()
            },
        });
    }
    Ok(())
}

struct Batch {
    first_chunk: usize,
    raw: Vec<u8>,
    lens: Vec<u32>,
}

struct NewFrame {
    sealed: Vec<u8>,
    raw_len: u32,
    chunks: Vec<(ChunkId, u32)>,
}

struct Output {
    first_chunk: usize,
    ids: Vec<ChunkId>,
    cvs: Vec<blake3::hazmat::ChainingValue>,
    frame: Option<NewFrame>,
    raw_bytes: u64,
}

/// A lock object under `locks/`, refreshed in the background until dropped.
pub(crate) struct LockGuard {
    store: Store,
    key: String,
    refresh: Option<tokio::task::JoinHandle<()>>,
}

pub(crate) const LOCK_REFRESH: Duration = Duration::from_secs(60);
/// A lock not refreshed for this long belongs to a dead process and is ignored.
pub(crate) const LOCK_STALE_MS: u64 = 15 * 60 * 1000;

impl LockGuard {
    pub fn acquire(store: &Store, kind: &str, id: &str) -> Result<Self> {
        let key = format!("locks/{kind}-{id}");
        let started_ms = format::now_ms();
        let owner = store.owner.clone();
        let body = |refreshed_ms| {
            Bytes::from(
                serde_json::to_vec(&format::LockInfo {
                    kind: kind.to_string(),
                    started_ms,
                    refreshed_ms,
                    pid: std::process::id(),
                    owner: owner.clone(),
                })
                .unwrap_or_default(),
            )
        };
        store.block_on(store.put(&key, body(started_ms)))?;
        let (s2, k2) = (store.clone(), key.clone());
        let kind2 = kind.to_string();
        let refresh = store.handle().spawn(async move {
            loop {
                tokio::time::sleep(LOCK_REFRESH).await;
                let b = serde_json::to_vec(&format::LockInfo {
                    kind: kind2.clone(),
                    started_ms,
                    refreshed_ms: format::now_ms(),
                    pid: std::process::id(),
                    owner: owner.clone(),
                })
                .unwrap_or_default();
                let _ = s2.put(&k2, Bytes::from(b)).await;
            }
        });
        Ok(LockGuard {
            store: store.clone(),
            key,
            refresh: Some(refresh),
        })
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(h) = self.refresh.take() {
            h.abort();
        }
        if let Err(e) = self.store.block_on(self.store.delete(&self.key)) {
            tracing::warn!(%e, key = %self.key, "could not remove lock");
        }
    }
}

/// The locks of the repository, from [`list_locks`].
pub(crate) struct Locks {
    /// In force: key and content.
    pub live: Vec<(String, format::LockInfo)>,
    /// Keys of stale locks.
    pub stale: Vec<String>,
}

/// The locks of the repository: those in force, and the keys of stale ones (not refreshed for
/// [`LOCK_STALE_MS`], or unreadable and not written for that long), which belong to dead
/// processes.
pub(crate) fn list_locks(store: &Store) -> Result<Locks> {
    let metas = store.block_on(store.list("locks"))?;
    let written: std::collections::HashMap<String, u64> = metas
        .iter()
        .map(|m| {
            (
                m.location.to_string(),
                m.last_modified.timestamp_millis().max(0) as u64,
            )
        })
        .collect();
    let keys = metas.iter().map(|m| m.location.to_string()).collect();
    let now = format::now_ms();
    let mut live = Vec::new();
    let mut stale = Vec::new();
    for (k, b) in store.block_on(store.get_many(keys))? {
        let Some(b) = b else { continue };
        match serde_json::from_slice::<format::LockInfo>(&b) {
            Ok(l) if now.saturating_sub(l.refreshed_ms) < LOCK_STALE_MS => live.push((k, l)),
            Ok(_) => stale.push(k),
            Err(e) => {
                tracing::warn!(%e, key = %k, "unreadable lock ignored");
                if now.saturating_sub(written.get(&k).copied().unwrap_or(now)) >= LOCK_STALE_MS {
                    stale.push(k);
                }
            }
        }
    }
    Ok(Locks { live, stale })
}

fn open_source(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| RepoError::sqlite(path, e))?;
    conn.busy_timeout(Duration::from_secs(30))
        .map_err(|e| RepoError::sqlite(path, e))?;
    Ok(conn)
}

pub(crate) fn backup_sqlite(
    repo: &Repository,
    db_path: &Path,
    metadata: BTreeMap<String, String>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<BackupSummary> {
    let start = Instant::now();
    check_sqlite_header(db_path)?;
    let id = format::new_backup_id();

    // The lock is written before the index is read: prune relies on that order.
    let lock = LockGuard::acquire(&repo.store, "backup", &id)?;
    repo.index_cache
        .refresh(&repo.store, &repo.crypto, Scope::Live)?;

    let snap_start = Instant::now();
    let conn = open_source(db_path)?;
    let sq = |e| RepoError::sqlite(db_path, e);
    let journal_mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(sq)?;
    conn.execute_batch("BEGIN").map_err(sq)?;
    // The first read starts the read transaction: from here on we see one committed state.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(sq)?;
    let snapshot_ms = format::now_ms();
    let source = Source {
        conn: &conn,
        path: db_path,
        journal_mode,
        snapshot_ms,
        end_transaction: true,
    };
    snapshot(
        repo, source, id, lock, metadata, start, snap_start, progress,
    )
}

/// [`backup_sqlite`] through a caller's connection that is already inside a read transaction
/// (the exact position a capture pinned). The transaction is left open: the caller ends it.
pub(crate) fn backup_sqlite_conn(
    repo: &Repository,
    conn: &Connection,
    source_path: &str,
    metadata: BTreeMap<String, String>,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<BackupSummary> {
    let start = Instant::now();
    let path = Path::new(source_path);
    if conn.is_autocommit() {
        return Err(RepoError::Invalid(
            "backup_sqlite_conn needs a connection inside a read transaction (BEGIN and a \
             first read); this one is not in a transaction"
                .into(),
        ));
    }
    let sq = |e| RepoError::sqlite(path, e);
    // Starts the read transaction if the caller's BEGIN has not read anything yet; otherwise
    // reads inside the state the caller pinned.
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(sq)?;
    // The pinned state held at least until now: the restorable range of a chain on this base
    // starts here.
    let snapshot_ms = format::now_ms();
    let id = format::new_backup_id();
    let lock = LockGuard::acquire(&repo.store, "backup", &id)?;
    repo.index_cache
        .refresh(&repo.store, &repo.crypto, Scope::Live)?;
    let snap_start = Instant::now();
    let journal_mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .map_err(sq)?;
    let source = Source {
        conn,
        path,
        journal_mode,
        snapshot_ms,
        end_transaction: false,
    };
    snapshot(
        repo, source, id, lock, metadata, start, snap_start, progress,
    )
}

/// The database a snapshot reads: a connection inside a read transaction.
struct Source<'c> {
    conn: &'c Connection,
    /// For messages and the manifest's `source_path`.
    path: &'c Path,
    journal_mode: String,
    /// When the read transaction was known to be pinned (ms since the epoch).
    snapshot_ms: u64,
    /// End the read transaction (COMMIT) once the pages and row counts are read.
    end_transaction: bool,
}

/// The shared body of both backups: reads every page of `src` inside its read transaction,
/// stores the new chunks, then the chunk list, then the manifest (last), then drops `lock`.
/// A chunk is new unless the repository's index cache (refreshed after `lock` was written)
/// holds it or this backup already stored it.
#[allow(clippy::too_many_arguments)]
fn snapshot(
    repo: &Repository,
    src: Source<'_>,
    id: String,
    lock: LockGuard,
    metadata: BTreeMap<String, String>,
    start: Instant,
    snap_start: Instant,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<BackupSummary> {
    let store = &repo.store;
    let crypto = &*repo.crypto;
    let conn = src.conn;
    let db_path = src.path;
    let journal_mode = src.journal_mode;
    let end_transaction = src.end_transaction;
    let snapshot_ms = src.snapshot_ms;
    let sq = |e| RepoError::sqlite(db_path, e);
    let page_size: u32 = conn
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(sq)?;
    let page_count = conn
        .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
        .map_err(sq)? as u64;
    let snapshot_open = snap_start.elapsed();
    if journal_mode != "wal" {
        tracing::warn!(
            path = %db_path.display(),
            %journal_mode,
            "database is not in WAL mode: writers wait until the backup has read it"
        );
    }

    let ppc = format::pages_per_chunk(page_size);
    let chunk_bytes = ppc * page_size;
    let chunk_count = page_count.div_ceil(u64::from(ppc)) as usize;
    let per_batch = (FRAME_TARGET_BYTES / chunk_bytes as usize).max(1);
    let db_size = page_count * u64::from(page_size);
    let threads = repo.threads.max(1);
    let level = repo.compression_level;

    let cache = &*repo.index_cache;
    // The chunks this backup stores (the cache learns of them at the next refresh).
    let this_backup: Mutex<IdSet> = Mutex::new(IdSet::default());
    // Batch buffers go round between the reader and the workers instead of being reallocated.
    let pool: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let mut chunk_ids = vec![ChunkId::default(); chunk_count];
    let mut chunk_cvs = vec![[0u8; 32]; chunk_count];
    let mut filled = 0usize;
    let mut chunks_new = 0u64;
    let mut pack_bytes = 0u64;

    type ReaderOut = (Option<[u8; 32]>, BTreeMap<String, u64>, Duration);
    let result: Result<ReaderOut> = std::thread::scope(|s| {
        let (btx, brx) = sync_channel::<Batch>(threads * 2);
        let brx = Arc::new(Mutex::new(brx));
        let (otx, orx) = sync_channel::<Output>(threads * 2);

        let single_chunk = chunk_count <= 1;
        let pool = &pool;
        // The reader runs on this thread: the connection may be the caller's, which cannot
        // be sent to another thread.
        let read_pages = move || -> Result<ReaderOut> {
            let mut hasher = blake3::Hasher::new();
            let mut stmt = conn
                .prepare("SELECT pgno, data FROM sqlite_dbpage('main')")
                .map_err(sq)?;
            let mut rows = stmt.query([]).map_err(sq)?;
            let cap = per_batch * chunk_bytes as usize;
            let take = || {
                pool.lock()
                    .unwrap()
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(cap))
            };
            let mut batch = Batch {
                first_chunk: 0,
                raw: take(),
                lens: Vec::new(),
            };
            let mut in_chunk = 0u32;
            let mut expect: u64 = 1;
            let zero = vec![0u8; page_size as usize];
            while let Some(row) = rows.next().map_err(sq)? {
                let pgno: i64 = row.get(0).map_err(sq)?;
                if pgno as u64 != expect || expect > page_count {
                    return Err(RepoError::Invalid(format!(
                        "sqlite_dbpage returned page {pgno}, expected {expect}"
                    )));
                }
                let data = row.get_ref(1).map_err(sq)?.as_blob().unwrap_or(&[]);
                let data = if data.len() == page_size as usize {
                    data
                } else {
                    // The lock-byte page of a database above 1 GiB may come back empty.
                    &zero[..]
                };
                if single_chunk {
                    hasher.update(data);
                }
                batch.raw.extend_from_slice(data);
                in_chunk += 1;
                expect += 1;
                if in_chunk == ppc {
                    batch.lens.push(chunk_bytes);
                    in_chunk = 0;
                    if batch.lens.len() == per_batch {
                        let next = batch.first_chunk + batch.lens.len();
                        let full = std::mem::replace(
                            &mut batch,
                            Batch {
                                first_chunk: next,
                                raw: take(),
                                lens: Vec::new(),
                            },
                        );
                        if btx.send(full).is_err() {
                            return Err(RepoError::Invalid("backup pipeline stopped".into()));
                        }
                    }
                }
            }
            if in_chunk > 0 {
                batch.lens.push(in_chunk * page_size);
            }
            if !batch.lens.is_empty() && btx.send(batch).is_err() {
                return Err(RepoError::Invalid("backup pipeline stopped".into()));
            }
            if expect - 1 != page_count {
                return Err(RepoError::Invalid(format!(
                    "read {} pages, the snapshot has {page_count}",
                    expect - 1
                )));
            }
            drop(rows);
            drop(stmt);
            // Still inside the read transaction: the counts describe exactly these pages.
            let counted = Instant::now();
            let counts = count_rows(conn).map_err(sq)?;
            let count_time = counted.elapsed();
            if end_transaction {
                let _ = conn.execute_batch("COMMIT");
            }
            Ok((
                single_chunk.then(|| *hasher.finalize().as_bytes()),
                counts,
                count_time,
            ))
        };

        let mut workers = Vec::new();
        for _ in 0..threads {
            let brx = Arc::clone(&brx);
            let otx = otx.clone();
            let this_backup = &this_backup;
            workers.push(s.spawn(move || -> Result<()> {
                let mut comp =
                    zstd::bulk::Compressor::new(level).map_err(|e| RepoError::io("zstd", e))?;
                let mut pending: Vec<u8> = Vec::with_capacity(FRAME_TARGET_BYTES * 2);
                let mut pending_chunks: Vec<(ChunkId, u32)> = Vec::new();
                let seal_frame = |comp: &mut zstd::bulk::Compressor<'static>,
                                  raw: &mut Vec<u8>,
                                  chunks: &mut Vec<(ChunkId, u32)>|
                 -> Result<NewFrame> {
                    let compressed = comp.compress(raw).map_err(|e| RepoError::io("zstd", e))?;
                    let f = NewFrame {
                        sealed: crypto.seal(DOMAIN_FRAME, compressed)?,
                        raw_len: raw.len() as u32,
                        chunks: std::mem::take(chunks),
                    };
                    raw.clear();
                    Ok(f)
                };
                loop {
                    let msg = brx.lock().unwrap().recv();
                    let Ok(b) = msg else {
                        if !pending_chunks.is_empty() {
                            let frame = seal_frame(&mut comp, &mut pending, &mut pending_chunks)?;
                            let _ = otx.send(Output {
                                first_chunk: 0,
                                ids: Vec::new(),
                                cvs: Vec::new(),
                                frame: Some(frame),
                                raw_bytes: 0,
                            });
                        }
                        return Ok(());
                    };
                    let mut raw_buf = b.raw;
                    let raw_bytes = raw_buf.len() as u64;
                    let mut ids = Vec::with_capacity(b.lens.len());
                    let mut cvs = Vec::with_capacity(b.lens.len());
                    let mut off = 0usize;
                    for (j, len) in b.lens.iter().enumerate() {
                        let data = &raw_buf[off..off + *len as usize];
                        ids.push(crypto.chunk_id(data));
                        let at = (b.first_chunk + j) as u64 * u64::from(chunk_bytes);
                        cvs.push(crate::treehash::chunk_cv(data, at));
                        off += *len as usize;
                    }
                    let stored = cache.stored(&ids);
                    let fresh: Vec<bool> = {
                        let mut this = this_backup.lock().unwrap();
                        ids.iter()
                            .zip(&stored)
                            .map(|(id, stored)| !*stored && this.insert(*id))
                            .collect()
                    };
                    // New chunks gather in this worker's frame until it reaches the target
                    // size, so that scattered changes are still compressed together.
                    let frame = if pending.is_empty()
                        && raw_buf.len() >= FRAME_TARGET_BYTES
                        && fresh.iter().all(|f| *f)
                    {
                        // A batch of new chunks (a full backup) is a frame as it is.
                        let mut chunks: Vec<(ChunkId, u32)> =
                            ids.iter().copied().zip(b.lens.iter().copied()).collect();
                        Some(seal_frame(&mut comp, &mut raw_buf, &mut chunks)?)
                    } else {
                        let mut off = 0usize;
                        for ((id, len), new) in ids.iter().zip(&b.lens).zip(&fresh) {
                            if *new {
                                pending.extend_from_slice(&raw_buf[off..off + *len as usize]);
                                pending_chunks.push((*id, *len));
                            }
                            off += *len as usize;
                        }
                        None
                    };
                    let frame = if frame.is_some() {
                        frame
                    } else if pending.len() >= FRAME_TARGET_BYTES {
                        Some(seal_frame(&mut comp, &mut pending, &mut pending_chunks)?)
                    } else {
                        None
                    };
                    raw_buf.clear();
                    {
                        let mut p = pool.lock().unwrap();
                        if p.len() < threads * 4 {
                            p.push(raw_buf);
                        }
                    }
                    let out = Output {
                        first_chunk: b.first_chunk,
                        ids,
                        cvs,
                        frame,
                        raw_bytes,
                    };
                    if otx.send(out).is_err() {
                        return Ok(());
                    }
                }
            }));
        }
        drop(otx);
        drop(brx);

        let (chunk_ids, chunk_cvs) = (&mut chunk_ids, &mut chunk_cvs);
        let (filled, chunks_new, pack_bytes) = (&mut filled, &mut chunks_new, &mut pack_bytes);
        let packer = s.spawn(move || -> Result<()> {
            let mut pack = PackBuilder::new();
            let mut inflight: VecDeque<tokio::task::JoinHandle<Result<u64>>> = VecDeque::new();
            let mut done = 0u64;
            for out in orx.iter() {
                let n = out.ids.len();
                chunk_ids[out.first_chunk..out.first_chunk + n].copy_from_slice(&out.ids);
                chunk_cvs[out.first_chunk..out.first_chunk + n].copy_from_slice(&out.cvs);
                *filled += n;
                if let Some(f) = out.frame {
                    *chunks_new += f.chunks.len() as u64;
                    pack.add(f);
                    if pack.buf.len() >= PACK_TARGET_BYTES {
                        let p = std::mem::replace(&mut pack, PackBuilder::new());
                        inflight.push_back(p.upload(store, crypto, Some(&repo.index_cache))?);
                        while inflight.len() > 2 {
                            *pack_bytes += join(store, inflight.pop_front().unwrap())?;
                        }
                    }
                }
                done += out.raw_bytes;
                progress(Progress {
                    phase: Phase::Backup,
                    bytes_done: done,
                    bytes_total: db_size,
                });
            }
            if !pack.frames.is_empty() {
                inflight.push_back(pack.upload(store, crypto, Some(&repo.index_cache))?);
            }
            while let Some(h) = inflight.pop_front() {
                *pack_bytes += join(store, h)?;
            }
            drop(orx);
            Ok(())
        });
        let db_hash = read_pages();
        // The closure owns the batch sender: dropping it tells the workers the pages ended.
        drop(read_pages);
        let packed = packer.join().expect("backup packer panicked");
        let mut first_err = packed.err();
        for w in workers {
            if let Err(e) = w.join().expect("backup worker panicked")
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        match (first_err, db_hash) {
            (Some(e), _) => Err(e),
            (None, r) => r,
        }
    });
    let (small_hash, row_counts, row_count_duration) = result?;
    if filled != chunk_count {
        return Err(RepoError::Invalid(format!(
            "backup produced {filled} of {chunk_count} chunks"
        )));
    }
    let db_hash = match small_hash {
        Some(h) => h,
        None => {
            let last = db_size - (chunk_count as u64 - 1) * u64::from(chunk_bytes);
            *crate::treehash::root(&chunk_cvs, u64::from(chunk_bytes), last, None).as_bytes()
        }
    };
    drop(chunk_cvs);

    let list = format::encode_chunk_list(&chunk_ids);
    let chunk_list_hash = blake3::hash(&list).to_hex().to_string();
    let sealed_list = crypto.seal(DOMAIN_CHUNKS, list)?;
    let list_len = sealed_list.len() as u64;
    store.block_on(store.put(&format::chunks_key(&id), Bytes::from(sealed_list)))?;

    let manifest = Manifest {
        version: FORMAT_VERSION,
        id: id.clone(),
        kind: BackupKind::Snapshot,
        parent: None,
        created_ms: format::now_ms(),
        source_path: db_path.display().to_string(),
        page_size,
        page_count,
        pages_per_chunk: ppc,
        chunk_count: chunk_count as u64,
        db_size,
        db_hash: hex::encode(db_hash),
        chunk_list_hash,
        journal_mode: journal_mode.clone(),
        metadata,
        added_bytes: pack_bytes,
        chunks_new,
        chunks_reused: chunk_count as u64 - chunks_new,
        row_counts: Some(row_counts),
        snapshot_ms: Some(snapshot_ms),
    };
    let sealed = manifest.encode(crypto)?;
    let man_len = sealed.len() as u64;
    // Written last: until this put succeeds the backup does not exist.
    store.block_on(store.put(&format::manifest_key(&id), Bytes::from(sealed)))?;
    drop(lock);

    Ok(BackupSummary {
        id,
        bytes_read: db_size,
        bytes_added: pack_bytes + list_len + man_len,
        chunks_total: chunk_count as u64,
        chunks_new,
        chunks_reused: chunk_count as u64 - chunks_new,
        page_size,
        page_count,
        journal_mode,
        snapshot_open,
        row_count_duration,
        duration: start.elapsed(),
    })
}

/// The tables whose rows are counted: every `sqlite_schema` entry of type `table` that has a
/// b-tree (virtual tables have none; their shadow tables are counted), except SQLite's own
/// `sqlite_%` tables. Ordered by name.
pub(crate) fn counted_tables(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut st = conn.prepare(
        "SELECT name FROM main.sqlite_schema WHERE type = 'table' AND rootpage > 0 \
         AND substr(name, 1, 7) <> 'sqlite_' ORDER BY name",
    )?;
    let names = st.query_map([], |r| r.get::<_, String>(0))?;
    names.collect()
}

/// `count(*)` of every table of [`counted_tables`], in the connection's current transaction.
pub(crate) fn count_rows(conn: &Connection) -> rusqlite::Result<BTreeMap<String, u64>> {
    count_rows_until(conn, &|| false)
}

/// Like [`count_rows`], stopping early (with `Ok` of what was counted) when `stop` says so.
pub(crate) fn count_rows_until(
    conn: &Connection,
    stop: &dyn Fn() -> bool,
) -> rusqlite::Result<BTreeMap<String, u64>> {
    let mut out = BTreeMap::new();
    for name in counted_tables(conn)? {
        if stop() {
            break;
        }
        let sql = format!(
            "SELECT count(*) FROM main.\"{}\"",
            name.replace('"', "\"\"")
        );
        let n: i64 = conn.query_row(&sql, [], |r| r.get(0))?;
        out.insert(name, n.max(0) as u64);
    }
    Ok(out)
}

fn join(store: &Store, h: tokio::task::JoinHandle<Result<u64>>) -> Result<u64> {
    match store.block_on(h) {
        Ok(r) => r,
        Err(e) => Err(RepoError::Invalid(format!("upload task failed: {e}"))),
    }
}

/// A pack being filled with frames.
pub(crate) struct PackBuilder {
    pub buf: Vec<u8>,
    pub frames: Vec<IndexFrame>,
}

impl PackBuilder {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(PACK_TARGET_BYTES + FRAME_TARGET_BYTES * 2);
        buf.extend_from_slice(PACK_MAGIC);
        PackBuilder {
            buf,
            frames: Vec::new(),
        }
    }

    fn add(&mut self, f: NewFrame) {
        self.add_raw(f.sealed, f.raw_len, f.chunks);
    }

    pub fn add_raw(&mut self, sealed: Vec<u8>, raw_len: u32, chunks: Vec<(ChunkId, u32)>) {
        self.frames.push(IndexFrame {
            offset: self.buf.len() as u64,
            stored_len: sealed.len() as u32,
            raw_len,
            chunks,
        });
        self.buf.extend_from_slice(&sealed);
    }

    /// Starts uploading the pack, then its index; the index is only written once the pack is.
    /// Once both are stored, `cache` (if given) is told of the index, so that its next refresh
    /// need not read it back.
    pub fn upload(
        self,
        store: &Store,
        crypto: &Crypto,
        cache: Option<&Arc<IndexCache>>,
    ) -> Result<tokio::task::JoinHandle<Result<u64>>> {
        // A random name: hashing every pack would cost a pass over all stored bytes, and
        // the frames inside are sealed (checked) on their own.
        let name = format::random_hex(32);
        let index = PackIndex {
            pack: name.clone(),
            pack_len: self.buf.len() as u64,
            frames: self.frames,
        };
        let index_bytes = Bytes::from(index.encode(crypto)?);
        let own = match cache {
            Some(c) => Some((Arc::clone(c), CachedPack::of(&index)?)),
            None => None,
        };
        let data = Bytes::from(self.buf);
        let store2 = store.clone();
        Ok(store.handle().spawn(async move {
            let n = data.len() as u64 + index_bytes.len() as u64;
            store2.put(&format::pack_key(&name), data).await?;
            store2.put(&format::index_key(&name), index_bytes).await?;
            if let Some((cache, pack)) = own {
                cache.wrote(name, pack);
            }
            Ok(n)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::LockGuard;
    use crate::Repository;

    fn open(dir: &std::path::Path, owner: &str) -> Repository {
        let mut repo = Repository::local_store(dir)
            .and_then(|s| Repository::open_or_init(s, None))
            .unwrap();
        repo.set_lock_owner(owner);
        repo
    }

    fn locks(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir.join("locks"))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    #[test]
    fn a_process_removes_only_its_own_locks_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let a = open(dir.path(), "node-a");
        let b = open(dir.path(), "node-b");
        // node-a is running a backup and a prune.
        let backup = LockGuard::acquire(&a.store, "backup", "one").unwrap();
        let prune = LockGuard::acquire(&a.store, "prune", "one").unwrap();
        assert_eq!(locks(dir.path()), 2);
        // node-b starts: node-a's locks stay (removing them would let a prune delete what
        // node-a's backup is about to reference).
        assert_eq!(b.remove_backup_locks().unwrap(), 0);
        assert_eq!(b.remove_prune_locks().unwrap(), 0);
        assert_eq!(locks(dir.path()), 2);
        // node-a was killed and starts again: its own stale locks go.
        std::mem::forget(backup);
        std::mem::forget(prune);
        let a = open(dir.path(), "node-a");
        assert_eq!(a.remove_backup_locks().unwrap(), 1);
        assert_eq!(a.remove_prune_locks().unwrap(), 1);
        assert_eq!(locks(dir.path()), 0);
    }
}
