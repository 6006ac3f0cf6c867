//! Restore into a new file: chunks are written into a temporary file beside the target, which
//! is fsynced, read back against the whole-database hash, optionally checked with
//! `PRAGMA integrity_check`, and only then moved into place atomically. The source database is
//! never opened; an existing target is never touched unless the caller asks for it.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use crate::crypto::ChunkId;
use crate::error::{RepoError, Result};
use crate::format::Manifest;
use crate::index_cache::Scope;
use crate::read::{FrameJob, IdMap, Needed, Seals, fetch_sealed_frames};
use crate::sink;
use crate::treehash::Piece;
use crate::{Phase, Progress, Repository};

/// How to restore.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// Replace an existing target file (its `-wal` and `-shm` files are removed too). Only for
    /// databases nobody has open. Default: false.
    pub overwrite: bool,
    /// Make sure the restored database passed `PRAGMA integrity_check` before it is moved into
    /// place: now, or (with `trust_proof`) at a drill over exactly the same bytes.
    /// Default: true. The whole-file hash is always checked.
    pub integrity_check: bool,
    /// Skip running `PRAGMA integrity_check` now when a proof for the backup's `db_hash`
    /// exists: a drill ran integrity_check over exactly these bytes, and the whole-file hash,
    /// always checked, proves the restored file is those bytes. Default: true.
    pub trust_proof: bool,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            overwrite: false,
            integrity_check: true,
            trust_proof: true,
        }
    }
}

/// How the restored database is known to pass `PRAGMA integrity_check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// `PRAGMA integrity_check` ran on the restored file and passed.
    CheckedNow,
    /// A drill ran it over exactly these bytes (same whole-file hash) and it passed, at
    /// `checked_ms` (milliseconds since the Unix epoch).
    ProvenByDrill {
        /// When the drill checked these bytes.
        checked_ms: u64,
    },
    /// Not checked: the caller turned the check off and no drill proved these bytes.
    NotChecked,
}

/// What one restore did.
#[derive(Debug, Clone)]
pub struct RestoreSummary {
    /// Backup restored.
    pub id: String,
    /// Where the database now is.
    pub path: PathBuf,
    /// Bytes of database written.
    pub bytes_written: u64,
    /// Whether `PRAGMA integrity_check` ran now (and passed).
    pub integrity_checked: bool,
    /// How the restored database is known to pass `PRAGMA integrity_check`.
    pub integrity: Integrity,
    /// Time spent on the checks (hash read-back and integrity check).
    pub check_duration: Duration,
    /// Wall time of the whole restore.
    pub duration: Duration,
}

/// A file removed when dropped unless disarmed (`.0 = None`).
pub(crate) struct TempFile(pub Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// A name for a temporary file beside `target`, and the directory it is in.
pub(crate) fn temp_beside(target: &Path) -> Result<(PathBuf, PathBuf)> {
    let file_name = target
        .file_name()
        .ok_or_else(|| RepoError::Invalid(format!("{} is not a file path", target.display())))?;
    let dir = match target.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{}.restore-{}.tmp",
        file_name.to_string_lossy(),
        crate::format::random_hex(4)
    ));
    Ok((dir, tmp))
}

pub(crate) fn restore(
    repo: &Repository,
    id: &str,
    target: &Path,
    opts: &RestoreOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<RestoreSummary> {
    let start = Instant::now();
    if !opts.overwrite && target.symlink_metadata().is_ok() {
        return Err(RepoError::TargetExists(target.to_owned()));
    }
    let manifest = repo.manifest(id)?;
    let (dir, tmp_path) = temp_beside(target)?;
    let mut tmp = TempFile(Some(tmp_path.clone()));
    let proof = if opts.trust_proof {
        match repo.proof(&manifest.db_hash) {
            Ok(p) => p,
            // A damaged proof proves nothing: check now instead.
            Err(e @ (RepoError::CorruptObject { .. } | RepoError::NewerFormat { .. })) => {
                tracing::warn!(%e, "ignoring an unreadable drill proof");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    // When integrity_check runs now it reads the whole file: write it through the page
    // cache. Otherwise nothing reads it soon: write it O_DIRECT.
    let mode = if proof.is_none() && opts.integrity_check {
        WriteMode::Buffered
    } else {
        WriteMode::Direct
    };
    let hash_time = write_backup(
        repo,
        &manifest,
        &tmp_path,
        repo.threads,
        mode,
        None,
        progress,
        IndexesFresh::No,
    )?;

    let check_start = Instant::now();
    let integrity = match (&proof, opts.integrity_check) {
        (Some(p), _) => Integrity::ProvenByDrill {
            checked_ms: p.checked_ms,
        },
        (None, true) => {
            progress(Progress {
                phase: Phase::Check,
                bytes_done: 0,
                bytes_total: manifest.db_size,
            });
            integrity_check(&tmp_path)?;
            Integrity::CheckedNow
        }
        (None, false) => Integrity::NotChecked,
    };
    let check_duration = check_start.elapsed() + hash_time;

    move_into_place(&mut tmp, target, &dir, opts.overwrite)?;
    Ok(RestoreSummary {
        id: id.to_string(),
        path: target.to_owned(),
        bytes_written: manifest.db_size,
        integrity_checked: integrity == Integrity::CheckedNow,
        integrity,
        check_duration,
        duration: start.elapsed(),
    })
}

/// Moves the checked, fsynced temporary file `tmp` into place at `target` (in directory
/// `dir`): with `overwrite`, a rename (the target's `-wal` and `-shm` are removed first);
/// otherwise a hard link, which fails rather than replace a file created meanwhile. Then the
/// directory is fsynced. On error `tmp` is still armed (its drop removes the file).
pub(crate) fn move_into_place(
    tmp: &mut TempFile,
    target: &Path,
    dir: &Path,
    overwrite: bool,
) -> Result<()> {
    let Some(tmp_path) = tmp.0.clone() else {
        return Err(RepoError::Invalid("no temporary file to move".into()));
    };
    if overwrite {
        for suffix in ["-wal", "-shm"] {
            let mut p = target.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
        std::fs::rename(&tmp_path, target).map_err(|e| RepoError::io(target, e))?;
    } else {
        // A hard link never replaces an existing file: a target created meanwhile is kept.
        match std::fs::hard_link(&tmp_path, target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(RepoError::TargetExists(target.to_owned()));
            }
            Err(e) => return Err(RepoError::io(target, e)),
        }
        let _ = std::fs::remove_file(&tmp_path);
    }
    tmp.0 = None;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// How the restored file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WriteMode {
    /// Through the page cache, by the workers themselves (no extra threads). For files that
    /// are read right away (integrity_check), and for drills, which use one core.
    Buffered,
    /// `O_DIRECT`, by two writer threads that mostly wait for the disk: no copy into the page
    /// cache and little left to flush at the end. Falls back to `Buffered` where the
    /// filesystem does not support it.
    Direct,
}

/// Whether the caller has just brought the repository's cache of pack indexes up to date
/// (a [`Scope::All`] refresh) for this restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexesFresh {
    /// It has: locate the chunks in the cache as it is.
    Yes,
    /// It has not: refresh the cache first.
    No,
}

/// Writes backup `manifest` into a new file `tmp_path` (which must not exist; the caller
/// removes it on error), fsyncs it and checks its whole-file hash against the manifest's.
/// Returns the time the final hash check took. Data problems come back as
/// [`RepoError::MissingChunk`], [`RepoError::CorruptChunk`] or [`RepoError::CheckFailed`].
///
/// How: the chunks are located in the repository's cache of pack indexes (see
/// `index_cache`), refreshed first unless `fresh` says the caller just did: a listing of
/// `index/` and `condemned/` and a read of the index objects that appeared since the last
/// refresh, not of every index. The file is allocated at its full size up front (a full disk
/// shows at once). Workers share the frames one by one; each decompresses a frame into a
/// page-aligned buffer from a small pool, hashes the stretches of the file it covers as a few
/// large blake3 subtrees while they are still in the CPU cache (see [`crate::treehash`]), and
/// writes them (or, in [`WriteMode::Direct`], queues them for the writer threads, which join
/// adjacent stretches into one vectored write). Every byte of the file is written once, from
/// the very buffer that was hashed; the subtrees are merged into the whole-file hash at the
/// end.
#[allow(clippy::too_many_arguments)]
pub(crate) fn write_backup(
    repo: &Repository,
    manifest: &Manifest,
    tmp_path: &Path,
    threads: usize,
    mode: WriteMode,
    cancel: Option<&AtomicBool>,
    progress: &(dyn Fn(Progress) + Sync),
    fresh: IndexesFresh,
) -> Result<Duration> {
    let started = Instant::now();
    let id = &manifest.id;
    let chunk_bytes = u64::from(manifest.page_size) * u64::from(manifest.pages_per_chunk);
    let db_size = manifest.db_size;
    // Setup overlaps itself: one thread brings the cache of pack indexes up to date (for a
    // handle that has none yet, a read of every index) while this one reads the chunk list
    // and builds the positions map; then the chunks are looked up in the cache.
    let positions = std::thread::scope(|s| -> Result<_> {
        let refresher = (fresh == IndexesFresh::No).then(|| {
            s.spawn(|| {
                repo.index_cache
                    .refresh(&repo.store, &repo.crypto, Scope::All)
            })
        });
        let positions = repo.chunk_list(manifest).map(|c| Positions::new(&c));
        let refreshed = refresher.map(|r| r.join().expect("index refresh panicked"));
        let positions = positions?;
        refreshed.transpose()?;
        Ok(positions)
    })?;
    let located = repo.index_cache.locate(&positions, threads);
    if let Some(c) = located.missing.first() {
        return Err(RepoError::MissingChunk {
            backup: id.to_string(),
            chunk: c.to_string(),
        });
    }
    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Err(RepoError::Cancelled);
    }

    let located_in = started.elapsed();
    let io = |e| RepoError::io(tmp_path, e);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .create_new(true)
        .open(tmp_path)
        .map_err(io)?;
    sink::preallocate(&file, db_size).map_err(io)?;
    let direct = match mode {
        WriteMode::Direct => sink::open_direct(tmp_path),
        WriteMode::Buffered => None,
    };
    let max_raw = located
        .frames
        .iter()
        .map(|f| f.raw_len as usize)
        .max()
        .unwrap_or(0);
    // Two writers keep two writes in flight; the pool lets the writers lag ~12 MiB behind
    // (the disk's pace varies on shared machines: with half that, workers waited for buffers
    // for up to a third of a 1 GiB restore).
    let writers = if direct.is_some() { 2 } else { 0 };
    let pool = sink::BufPool::new(max_raw, threads.max(1) * 4 + writers * 24);
    let wait_ns = AtomicU64::new(0);
    let t_fetch = Instant::now();
    let out = sink::Output::new(&file, direct.as_ref(), tmp_path);

    let written = AtomicU64::new(0);
    let chunk_count = manifest.chunk_count as usize;
    let whole_file_pieces = chunk_count > 1;
    let pieces: Mutex<Vec<Piece>> = Mutex::new(Vec::with_capacity(chunk_count.min(1 << 16)));
    std::thread::scope(|s| -> Result<()> {
        let queue = out.start_writers(s, writers);
        let fetched = fetch_sealed_frames(
            &repo.store,
            &repo.crypto,
            &located.packs,
            &located.frames,
            threads,
            // The whole-file hash below checks every byte made from a frame; a frame that
            // fails to unpack has its seal checked then, to name the damage.
            Seals::Later,
            cancel,
            |unpacker, fj, compressed| {
                out.check()?;
                let corrupt = |reason| RepoError::CorruptChunk {
                    chunk: fj.chunks[0].0.to_string(),
                    pack: located.packs[fj.pack as usize].clone(),
                    reason,
                };
                let compressed = compressed.map_err(corrupt)?;
                let tw = Instant::now();
                let mut buf = pool.take();
                wait_ns.fetch_add(tw.elapsed().as_nanos() as u64, Ordering::Relaxed);
                // The whole-file hash proves every chunk landed, intact, at its place. So
                // neither the frame's seal nor the chunks' ids are hashed here.
                unpacker
                    .unpack_into(fj, compressed, &mut buf.bytes_mut()[..fj.raw_len as usize])
                    .map_err(corrupt)?;
                let runs = runs(fj, &positions, chunk_bytes);
                let mut local: Vec<Piece> = Vec::new();
                if whole_file_pieces {
                    for (at, lo, hi) in &runs {
                        crate::treehash::hash_run(&buf.bytes()[*lo..*hi], *at, db_size, &mut local);
                    }
                }
                let bytes: u64 = runs.iter().map(|(_, lo, hi)| (hi - lo) as u64).sum();
                out.write(queue.as_ref(), buf, runs)?;
                pieces.lock().unwrap().extend(local);
                let done = written.fetch_add(bytes, Ordering::Relaxed) + bytes;
                if done / WRITEBACK_STEP != (done - bytes) / WRITEBACK_STEP {
                    start_writeback(&file);
                }
                progress(Progress {
                    phase: Phase::Restore,
                    bytes_done: done,
                    bytes_total: db_size,
                });
                Ok(())
            },
        );
        drop(queue);
        fetched
    })?;
    tracing::debug!(
        ?mode,
        direct = direct.is_some(),
        ?located_in,
        written_in = ?t_fetch.elapsed(),
        waited_for_buffers = ?Duration::from_nanos(wait_ns.load(Ordering::Relaxed)),
        "restore data written"
    );
    // The writers are done (the scope joined them): did any of them fail?
    out.check()?;
    drop(direct);
    file.sync_all().map_err(io)?;

    let check_start = Instant::now();
    // The hash of exactly the bytes written, at the places written (equal to `b3sum` of the
    // file), merged from the subtrees the workers hashed.
    let actual = if whole_file_pieces {
        let mut pieces = pieces.into_inner().unwrap();
        match crate::treehash::root_of_pieces(&mut pieces, db_size) {
            Some(h) => h.to_hex().to_string(),
            None => {
                return Err(RepoError::CheckFailed(
                    "the restored chunks do not cover the whole file".into(),
                ));
            }
        }
    } else {
        hash_file(&file, db_size).map_err(io)?
    };
    drop(file);
    if actual != manifest.db_hash {
        // Name the damage when it is in the stored frames (their seals were not checked).
        fetch_sealed_frames(
            &repo.store,
            &repo.crypto,
            &located.packs,
            &located.frames,
            threads,
            Seals::Check,
            cancel,
            |_, fj, sealed| {
                sealed
                    .map(|_| ())
                    .map_err(|reason| RepoError::CorruptChunk {
                        chunk: fj.chunks[0].0.to_string(),
                        pack: located.packs[fj.pack as usize].clone(),
                        reason,
                    })
            },
        )?;
        return Err(RepoError::CheckFailed(format!(
            "restored file hash {actual} differs from the backup's {}",
            manifest.db_hash
        )));
    }
    Ok(check_start.elapsed())
}

/// Where each chunk of the backup goes in the file (by chunk index), and whether a frame
/// holding it was found. Kept small (40 bytes a chunk with its id) because for 1 GiB it has
/// 131 072 entries, and every page of it is a page fault before the first frame: a chunk has
/// one place, except chunks that repeat (zeroed pages), whose other places are aside.
struct Positions {
    first: IdMap<Place>,
    more: IdMap<Vec<u32>>,
}

struct Place {
    at: u32,
    found: std::sync::atomic::AtomicBool,
}

impl Positions {
    fn new(chunks: &[ChunkId]) -> Self {
        let mut first: IdMap<Place> =
            IdMap::with_capacity_and_hasher(chunks.len(), Default::default());
        let mut more: IdMap<Vec<u32>> = IdMap::default();
        for (i, c) in chunks.iter().enumerate() {
            match first.entry(*c) {
                std::collections::hash_map::Entry::Occupied(_) => {
                    more.entry(*c).or_default().push(i as u32)
                }
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Place {
                        at: i as u32,
                        found: AtomicBool::new(false),
                    });
                }
            }
        }
        Positions { first, more }
    }

    /// Every place of chunk `id` (which must be one of the backup's, with its first place
    /// `first`), in order.
    fn places(&self, id: &ChunkId, first: u32) -> impl Iterator<Item = u32> + '_ {
        let more = if self.more.is_empty() {
            None
        } else {
            self.more.get(id)
        };
        std::iter::once(first).chain(more.into_iter().flatten().copied())
    }
}

impl Needed for Positions {
    fn has(&self, id: &ChunkId) -> bool {
        self.first.contains_key(id)
    }
    fn count(&self) -> usize {
        self.first.len()
    }
    fn each(&self) -> Box<dyn Iterator<Item = &ChunkId> + '_> {
        Box::new(self.first.keys())
    }
    fn tracks_found(&self) -> bool {
        true
    }
    fn claim(&self, id: &ChunkId) -> Option<u32> {
        self.first
            .get(id)
            .filter(|p| !p.found.swap(true, Ordering::Relaxed))
            .map(|p| p.at)
    }
    fn claimed(&self, id: &ChunkId) -> bool {
        self.first
            .get(id)
            .is_some_and(|p| p.found.load(Ordering::Relaxed))
    }
}

/// The frame's chunks as (file offset, raw start, raw end) runs, adjacent chunks joined.
fn runs(fj: &FrameJob, positions: &Positions, chunk_bytes: u64) -> Vec<(u64, usize, usize)> {
    let mut out: Vec<(u64, usize, usize)> = Vec::new();
    debug_assert_eq!(fj.chunks.len(), fj.slots.len());
    for ((cid, off, len), first) in fj.chunks.iter().zip(&fj.slots) {
        let (off, len) = (*off as usize, *len as usize);
        for pos in positions.places(cid, *first) {
            let at = u64::from(pos) * chunk_bytes;
            match out.last_mut() {
                Some((rat, rlo, rhi)) if *rhi == off && *rat + (*rhi - *rlo) as u64 == at => {
                    *rhi = off + len;
                }
                _ => out.push((at, off, off + len)),
            }
        }
    }
    out
}

/// Start writing dirty pages out every this many bytes, so the final fsync waits for little.
/// In [`WriteMode::Direct`] too: the small stretches (chunks an incremental backup changed)
/// go through the page cache, and left to the fsync they cost ~50 ms for 1 GiB.
const WRITEBACK_STEP: u64 = 64 << 20;

#[cfg(target_os = "linux")]
fn start_writeback(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid open descriptor; SYNC_FILE_RANGE_WRITE only starts asynchronous writeback.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &std::fs::File) {}

pub(crate) fn hash_file(file: &std::fs::File, len: u64) -> std::io::Result<String> {
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let n = ((len - pos) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], pos)?;
        h.update(&buf[..n]);
        pos += n as u64;
    }
    Ok(h.finalize().to_hex().to_string())
}

/// `PRAGMA integrity_check` on a file that no one else has open.
pub(crate) fn integrity_check(path: &Path) -> Result<()> {
    let conn = open_immutable(path)?;
    let rows = integrity_rows(&conn).map_err(|e| RepoError::sqlite(path, e))?;
    if rows.len() == 1 && rows[0] == "ok" {
        Ok(())
    } else {
        Err(RepoError::CheckFailed(format!(
            "integrity_check: {}",
            rows.join("; ")
        )))
    }
}

/// Opens a file no one else has open, read-only; `immutable=1` keeps SQLite from creating
/// `-wal`/`-shm` files beside it.
pub(crate) fn open_immutable(path: &Path) -> Result<Connection> {
    let escaped = path
        .display()
        .to_string()
        .replace('%', "%25")
        .replace('?', "%3f")
        .replace('#', "%23");
    let uri = format!("file:{escaped}?immutable=1");
    Connection::open_with_flags(
        &uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|e| RepoError::sqlite(path, e))
}

/// The rows of `PRAGMA integrity_check` (`["ok"]` when the database is sound).
pub(crate) fn integrity_rows(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare("PRAGMA integrity_check")?;
    let rows = stmt.query_map([], |r| r.get(0))?;
    rows.collect()
}
