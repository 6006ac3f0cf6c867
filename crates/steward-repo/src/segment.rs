//! Segments: the commits captured from a database's WAL after a base snapshot, for restore to
//! a moment (point-in-time restore). A chain is one base snapshot (an ordinary backup) and
//! segments numbered 1, 2, 3, … Each segment is one small sealed object
//! `segments/<base>/<seq>` listing, per commit, its time, the database size after it and the
//! (page number, chunk id) of every page it wrote. Pages are stored as one-page chunks in the
//! same packs, frames and indexes as snapshots, deduplicated by chunk id.
//!
//! Write order, as for a backup: packs, then their indexes, then the sealed segment object
//! last, so a segment never refers to missing data; a segment exists exactly when its object
//! does. `docs/repository-format.md` ("Segments") describes the format.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backup::{LockGuard, PackBuilder};
use crate::crypto::{ChunkId, Crypto};
use crate::error::{RepoError, Result};
use crate::format::{
    self, BackupKind, DOMAIN_FRAME, DOMAIN_SEGMENT, FRAME_TARGET_BYTES, Manifest,
    PACK_TARGET_BYTES, Reader, SEGMENT_MAGIC, SEGMENT_VERSION,
};
use crate::index_cache::Scope;
use crate::read::{IdMap, IdSet, fetch_frames};
use crate::restore::{
    IndexesFresh, Integrity, RestoreOptions, TempFile, WriteMode, hash_file, integrity_check,
    move_into_place, temp_beside, write_backup,
};
use crate::store::file_name;
use crate::{Progress, Repository};

/// One committed transaction, as the capture read it from the WAL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentCommit {
    /// When the capture saw it committed (ms since the Unix epoch).
    pub at_ms: u64,
    /// The database size in pages after the commit.
    pub db_pages: u32,
    /// (page number, content) of every page the transaction wrote (its last version), sorted
    /// by page number, each number once; every content is exactly one page.
    pub pages: Vec<(u32, Vec<u8>)>,
}

/// One stored segment, as [`crate::Repository::segments`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The chain's base snapshot (a backup id).
    pub base: String,
    /// The segment's number in its chain (1, 2, 3, …).
    pub seq: u64,
    /// Time of its first commit; `through_ms` when it has none.
    pub first_ms: u64,
    /// Time of its last commit; `through_ms` when it has none.
    pub last_ms: u64,
    /// The capture had confirmed at this time that no commit after the last one existed.
    pub through_ms: u64,
    /// Commits in the segment.
    pub commits: u64,
    /// (page, chunk) references in all its commits.
    pub pages: u64,
    /// Bytes this segment added to the repository when it was written (packs, indexes and
    /// the segment object).
    pub added_bytes: u64,
}

/// What one restore to a moment did.
#[derive(Debug, Clone)]
pub struct RestoreAtSummary {
    /// The chain's base snapshot.
    pub base: String,
    /// The moment asked for.
    pub at_ms: u64,
    /// Time of the last commit applied: the restored state is exactly the one committed then.
    /// The base snapshot's time when no commit was applied.
    pub applied_at_ms: u64,
    /// Commits applied on top of the base snapshot.
    pub commits_applied: u64,
    /// Segments read for them.
    pub segments_used: u64,
    /// Where the database now is.
    pub path: PathBuf,
    /// Size of the restored database in bytes.
    pub db_size: u64,
    /// blake3 of the restored database file, hex.
    pub db_hash: String,
    /// Whether `PRAGMA integrity_check` ran now (and passed).
    pub integrity_checked: bool,
    /// How the restored database is known to pass `PRAGMA integrity_check`.
    pub integrity: Integrity,
    /// Time spent on the checks (hash read-back and integrity check).
    pub check_duration: Duration,
    /// Wall time of the whole restore.
    pub duration: Duration,
}

/// One commit as stored: pages by chunk id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredCommit {
    pub at_ms: u64,
    pub db_pages: u32,
    pub pages: Vec<(u32, ChunkId)>,
}

/// A decoded segment object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Segment {
    pub base: String,
    pub seq: u64,
    pub through_ms: u64,
    pub page_size: u32,
    pub added_bytes: u64,
    pub commits: Vec<StoredCommit>,
}

impl Segment {
    fn info(&self) -> SegmentInfo {
        SegmentInfo {
            base: self.base.clone(),
            seq: self.seq,
            first_ms: self.commits.first().map_or(self.through_ms, |c| c.at_ms),
            last_ms: self.commits.last().map_or(self.through_ms, |c| c.at_ms),
            through_ms: self.through_ms,
            commits: self.commits.len() as u64,
            pages: self.commits.iter().map(|c| c.pages.len() as u64).sum(),
            added_bytes: self.added_bytes,
        }
    }

    /// Same commits, through time and page size (`added_bytes` may differ: a rewrite adds
    /// nothing).
    fn same_content(&self, other: &Segment) -> bool {
        self.base == other.base
            && self.seq == other.seq
            && self.through_ms == other.through_ms
            && self.page_size == other.page_size
            && self.commits == other.commits
    }

    pub fn chunk_ids(&self) -> impl Iterator<Item = &ChunkId> {
        self.commits
            .iter()
            .flat_map(|c| c.pages.iter().map(|(_, id)| id))
    }

    fn encode(&self, crypto: &Crypto) -> Result<Vec<u8>> {
        let refs: usize = self.commits.iter().map(|c| c.pages.len()).sum();
        let mut out =
            Vec::with_capacity(64 + self.base.len() + self.commits.len() * 16 + refs * 36);
        out.extend_from_slice(SEGMENT_MAGIC);
        out.extend_from_slice(&SEGMENT_VERSION.to_le_bytes());
        out.extend_from_slice(&(self.base.len() as u32).to_le_bytes());
        out.extend_from_slice(self.base.as_bytes());
        out.extend_from_slice(&self.seq.to_le_bytes());
        out.extend_from_slice(&self.through_ms.to_le_bytes());
        out.extend_from_slice(&self.page_size.to_le_bytes());
        out.extend_from_slice(&self.added_bytes.to_le_bytes());
        out.extend_from_slice(&(self.commits.len() as u32).to_le_bytes());
        for c in &self.commits {
            out.extend_from_slice(&c.at_ms.to_le_bytes());
            out.extend_from_slice(&c.db_pages.to_le_bytes());
            out.extend_from_slice(&(c.pages.len() as u32).to_le_bytes());
            for (pgno, id) in &c.pages {
                out.extend_from_slice(&pgno.to_le_bytes());
                out.extend_from_slice(&id.0);
            }
        }
        crypto.seal(DOMAIN_SEGMENT, out)
    }

    /// Opens and decodes the object `key`, which must be segment `seq` of chain `base`.
    fn decode(key: &str, base: &str, seq: u64, sealed: &[u8], crypto: &Crypto) -> Result<Self> {
        let b = crypto
            .open(DOMAIN_SEGMENT, sealed)
            .map_err(|r| RepoError::corrupt(key, r))?;
        let mut r = Reader {
            b: &b,
            pos: 0,
            object: key,
        };
        if r.take(8)? != SEGMENT_MAGIC {
            return Err(RepoError::corrupt(key, "not a segment"));
        }
        let version = r.u32()?;
        if version > SEGMENT_VERSION {
            return Err(RepoError::NewerFormat {
                object: key.to_string(),
                found: version,
                supported: SEGMENT_VERSION,
            });
        }
        let base_len = r.u32()? as usize;
        let got_base = std::str::from_utf8(r.take(base_len)?)
            .map_err(|_| RepoError::corrupt(key, "base id is not UTF-8"))?
            .to_string();
        let got_seq = r.u64()?;
        if got_base != base || got_seq != seq {
            return Err(RepoError::corrupt(
                key,
                format!("holds segment {got_seq} of chain {got_base}"),
            ));
        }
        let through_ms = r.u64()?;
        let page_size = r.u32()?;
        let added_bytes = r.u64()?;
        let n = r.u32()? as usize;
        let mut commits = Vec::with_capacity(n.min(1 << 16));
        let mut last_at = 0u64;
        for _ in 0..n {
            let at_ms = r.u64()?;
            let db_pages = r.u32()?;
            let np = r.u32()? as usize;
            if at_ms < last_at {
                return Err(RepoError::corrupt(key, "commits out of time order"));
            }
            last_at = at_ms;
            let mut pages = Vec::with_capacity(np.min(1 << 20));
            for _ in 0..np {
                let pgno = r.u32()?;
                if pages.last().is_some_and(|(p, _)| *p >= pgno) || pgno == 0 {
                    return Err(RepoError::corrupt(key, "page numbers out of order"));
                }
                pages.push((pgno, ChunkId(r.take(32)?.try_into().unwrap())));
            }
            commits.push(StoredCommit {
                at_ms,
                db_pages,
                pages,
            });
        }
        if r.pos != b.len() {
            return Err(RepoError::corrupt(key, "trailing bytes"));
        }
        if through_ms < last_at {
            return Err(RepoError::corrupt(
                key,
                "through time before its last commit",
            ));
        }
        Ok(Segment {
            base: got_base,
            seq,
            through_ms,
            page_size,
            added_bytes,
            commits,
        })
    }
}

fn base_manifest(repo: &Repository, base: &str) -> Result<Manifest> {
    let m = repo.manifest(base)?;
    if m.kind != BackupKind::Snapshot {
        return Err(RepoError::Invalid(format!(
            "backup {base} is not a snapshot and cannot be the base of a chain"
        )));
    }
    Ok(m)
}

pub(crate) fn write_segment(
    repo: &Repository,
    base: &str,
    seq: u64,
    through_ms: u64,
    commits: &[SegmentCommit],
) -> Result<SegmentInfo> {
    let store = &repo.store;
    let crypto = &*repo.crypto;
    if seq == 0 {
        return Err(RepoError::Invalid("segments are numbered from 1".into()));
    }
    let manifest = base_manifest(repo, base)?;
    let page_size = manifest.page_size;
    let mut last_at = 0u64;
    for (i, c) in commits.iter().enumerate() {
        if c.at_ms < last_at {
            return Err(RepoError::Invalid(format!(
                "commit {i} of segment {seq} is older than the one before it"
            )));
        }
        last_at = c.at_ms;
        if c.db_pages == 0 {
            return Err(RepoError::Invalid(format!(
                "commit {i} of segment {seq} leaves a database of 0 pages"
            )));
        }
        let mut prev = 0u32;
        for (pgno, data) in &c.pages {
            if *pgno <= prev {
                return Err(RepoError::Invalid(format!(
                    "commit {i} of segment {seq}: pages must be sorted, unique and from 1 \
                     (page {pgno} after {prev})"
                )));
            }
            prev = *pgno;
            if data.len() != page_size as usize {
                return Err(RepoError::Invalid(format!(
                    "commit {i} of segment {seq}: page {pgno} has {} bytes, the base's page \
                     size is {page_size}",
                    data.len()
                )));
            }
        }
    }
    if commits.last().is_some_and(|c| c.at_ms > through_ms) {
        return Err(RepoError::Invalid(format!(
            "segment {seq}: through_ms {through_ms} is before its last commit"
        )));
    }

    let stored: Vec<StoredCommit> = commits
        .iter()
        .map(|c| StoredCommit {
            at_ms: c.at_ms,
            db_pages: c.db_pages,
            pages: c
                .pages
                .iter()
                .map(|(p, d)| (*p, crypto.chunk_id(d)))
                .collect(),
        })
        .collect();
    let mut segment = Segment {
        base: base.to_string(),
        seq,
        through_ms,
        page_size,
        added_bytes: 0,
        commits: stored,
    };
    let key = format::segment_key(base, seq);
    // Idempotent: the same segment written again (a retry after a lost answer) changes
    // nothing; a different one under the same number is refused.
    if let Some(existing) = store.block_on(store.get(&key))? {
        match Segment::decode(&key, base, seq, &existing, crypto) {
            Ok(old) if old.same_content(&segment) => return Ok(old.info()),
            Ok(_) => return Err(RepoError::SegmentConflict { segment: key }),
            // A damaged object under this name is replaced by the good one.
            Err(RepoError::CorruptObject { .. }) => {}
            Err(e) => return Err(e),
        }
    }

    // Like a backup: the lock before reading the indexes (prune keeps every pack a running
    // backup might reuse), packs and indexes before the object that refers to them.
    let lock = LockGuard::acquire(
        store,
        "backup",
        &format!("segment-{}", format::random_hex(8)),
    )?;
    let mut new_chunks: Vec<(ChunkId, &[u8])> = Vec::new();
    {
        // Reads only the indexes that appeared since the last backup or segment write of this
        // handle, and forgets those that left `index/` (see `index_cache`).
        repo.index_cache.refresh(store, crypto, Scope::Live)?;
        let mut this = IdSet::default();
        for (c, sc) in commits.iter().zip(&segment.commits) {
            let ids: Vec<ChunkId> = sc.pages.iter().map(|(_, id)| *id).collect();
            let stored = repo.index_cache.stored(&ids);
            for (((_, data), id), stored) in c.pages.iter().zip(&ids).zip(stored) {
                if !stored && this.insert(*id) {
                    new_chunks.push((*id, data));
                }
            }
        }
    }
    let mut added = 0u64;
    if !new_chunks.is_empty() {
        let mut comp = zstd::bulk::Compressor::new(repo.compression_level)
            .map_err(|e| RepoError::io("zstd", e))?;
        let mut pack = PackBuilder::new();
        let mut uploads = Vec::new();
        let mut raw: Vec<u8> = Vec::with_capacity(FRAME_TARGET_BYTES + page_size as usize);
        let mut frame_chunks: Vec<(ChunkId, u32)> = Vec::new();
        let n = new_chunks.len();
        for (i, (id, data)) in new_chunks.iter().enumerate() {
            raw.extend_from_slice(data);
            frame_chunks.push((*id, data.len() as u32));
            if raw.len() >= FRAME_TARGET_BYTES || i + 1 == n {
                let c = comp.compress(&raw).map_err(|e| RepoError::io("zstd", e))?;
                pack.add_raw(
                    crypto.seal(DOMAIN_FRAME, c)?,
                    raw.len() as u32,
                    std::mem::take(&mut frame_chunks),
                );
                raw.clear();
                if pack.buf.len() >= PACK_TARGET_BYTES {
                    let p = std::mem::replace(&mut pack, PackBuilder::new());
                    uploads.push(p.upload(store, crypto, Some(&repo.index_cache))?);
                }
            }
        }
        if !pack.frames.is_empty() {
            uploads.push(pack.upload(store, crypto, Some(&repo.index_cache))?);
        }
        let mut first_err = None;
        for h in uploads {
            match store.block_on(h) {
                Ok(Ok(b)) => added += b,
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(RepoError::Invalid(format!("upload task failed: {e}")));
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    segment.added_bytes = added;
    let sealed = segment.encode(crypto)?;
    segment.added_bytes += sealed.len() as u64;
    // Encoded again with the object's own size counted in (the count is informational; the
    // length of the number does not change).
    let sealed = segment.encode(crypto)?;
    // Written last: until this put succeeds the segment does not exist.
    store.block_on(store.put(&key, Bytes::from(sealed)))?;
    drop(lock);
    Ok(segment.info())
}

/// The segment numbers under `segments/<base>/`, with their keys.
fn list_segments(repo: &Repository, base: &str) -> Result<BTreeMap<u64, String>> {
    let store = &repo.store;
    let mut out = BTreeMap::new();
    for m in store.block_on(store.list(&format::segments_prefix(base)))? {
        let name = file_name(&m);
        match name.parse::<u64>() {
            Ok(seq) if seq > 0 => {
                out.insert(seq, m.location.to_string());
            }
            _ => tracing::warn!(key = %m.location, "ignoring an object that is not a segment"),
        }
    }
    Ok(out)
}

/// Reads and decodes the segments `seqs` of chain `base`: `None` for one that vanished.
fn load_segments(
    repo: &Repository,
    base: &str,
    listed: &BTreeMap<u64, String>,
) -> Result<BTreeMap<u64, Result<Segment>>> {
    let store = &repo.store;
    let keys: Vec<String> = listed.values().cloned().collect();
    let by_key: std::collections::HashMap<&str, u64> =
        listed.iter().map(|(s, k)| (k.as_str(), *s)).collect();
    let mut out = BTreeMap::new();
    for (key, bytes) in store.block_on(store.get_many(keys))? {
        let seq = by_key[key.as_str()];
        if let Some(b) = bytes {
            out.insert(seq, Segment::decode(&key, base, seq, &b, &repo.crypto));
        }
    }
    Ok(out)
}

pub(crate) fn segments(repo: &Repository, base: &str) -> Result<Vec<SegmentInfo>> {
    let listed = list_segments(repo, base)?;
    let loaded = load_segments(repo, base, &listed)?;
    let mut out = Vec::with_capacity(loaded.len());
    for (_, s) in loaded {
        out.push(s?.info());
    }
    Ok(out)
}

pub(crate) fn delete_segments(repo: &Repository, base: &str) -> Result<usize> {
    let store = &repo.store;
    let listed = list_segments(repo, base)?;
    // Newest first: an interrupted deletion leaves a shorter chain, never one with a hole.
    for key in listed.values().rev() {
        store.block_on(store.delete(key))?;
    }
    Ok(listed.len())
}

/// What prune needs of one stored segment.
pub(crate) struct SegmentRefs {
    /// The chain's base backup id.
    pub base: String,
    /// The object's key.
    pub key: String,
    /// When the object was written (ms since the epoch).
    pub modified_ms: u64,
    /// Every chunk it references.
    pub ids: Vec<ChunkId>,
}

/// Every segment of every chain, for prune. An object that does not decode is an error.
pub(crate) fn all_segments(repo: &Repository) -> Result<Vec<SegmentRefs>> {
    let store = &repo.store;
    let metas = store.block_on(store.list("segments"))?;
    let mut modified = std::collections::HashMap::new();
    let mut keys = Vec::new();
    for m in &metas {
        modified.insert(
            m.location.to_string(),
            m.last_modified.timestamp_millis().max(0) as u64,
        );
        keys.push(m.location.to_string());
    }
    let mut out = Vec::new();
    for batch in keys.chunks(64) {
        for (key, bytes) in store.block_on(store.get_many(batch.to_vec()))? {
            let Some(b) = bytes else { continue };
            let mut parts = key.split('/');
            let (Some("segments"), Some(base), Some(seq), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(RepoError::corrupt(&key, "not a segment name"));
            };
            let seq: u64 = seq
                .parse()
                .map_err(|_| RepoError::corrupt(&key, "not a segment name"))?;
            let s = Segment::decode(&key, base, seq, &b, &repo.crypto)?;
            let ids: Vec<ChunkId> = s.chunk_ids().copied().collect();
            out.push(SegmentRefs {
                base: base.to_string(),
                modified_ms: modified[&key],
                key,
                ids,
            });
        }
    }
    Ok(out)
}

/// The state of the file being built: newest version of each page, and how far the base
/// snapshot's pages stay valid.
struct Overlay {
    /// page → (chunk, segment seq, commit time) of its newest applied version.
    pages: BTreeMap<u32, (ChunkId, u64, u64)>,
    /// Pages of the base that no applied commit truncated away.
    base_floor: u64,
    /// Database size in pages after the last applied commit.
    db_pages: u64,
    applied: u64,
    applied_at_ms: Option<u64>,
}

impl Overlay {
    fn apply(&mut self, seq: u64, c: &StoredCommit) {
        for (pgno, id) in &c.pages {
            self.pages.insert(*pgno, (*id, seq, c.at_ms));
        }
        let n = u64::from(c.db_pages);
        // A commit that shrinks the file drops every page beyond it, whatever wrote it; a
        // later growth brings zeros back (until pages are written there again).
        drop(self.pages.split_off(&(c.db_pages.saturating_add(1))));
        self.base_floor = self.base_floor.min(n);
        self.db_pages = n;
        self.applied += 1;
        self.applied_at_ms = Some(c.at_ms);
    }
}

pub(crate) fn restore_at(
    repo: &Repository,
    base: &str,
    at_ms: u64,
    target: &Path,
    opts: &RestoreOptions,
) -> Result<RestoreAtSummary> {
    let start = Instant::now();
    if !opts.overwrite && target.symlink_metadata().is_ok() {
        return Err(RepoError::TargetExists(target.to_owned()));
    }
    let manifest = base_manifest(repo, base)?;
    let from_ms = manifest.snapshot_time_ms();
    let listed = list_segments(repo, base)?;
    let max_seq = listed.keys().next_back().copied().unwrap_or(0);
    // Segments are read as needed: the last one (the end of the range), then in order from
    // the first, a batch at a time, until the first commit after the moment.
    let mut loaded: BTreeMap<u64, Result<Segment>> = BTreeMap::new();
    let load = |loaded: &mut BTreeMap<u64, Result<Segment>>,
                seqs: &mut dyn Iterator<Item = u64>|
     -> Result<()> {
        let want: BTreeMap<u64, String> = seqs
            .filter(|s| !loaded.contains_key(s))
            .filter_map(|s| listed.get(&s).map(|k| (s, k.clone())))
            .collect();
        if !want.is_empty() {
            loaded.extend(load_segments(repo, base, &want)?);
        }
        Ok(())
    };
    load(&mut loaded, &mut std::iter::once(max_seq))?;
    // The end of the range: the last segment's through time (when it is readable; otherwise
    // the last readable one's, and the walk below refuses the moments that need the rest).
    let to_ms = match loaded.get(&max_seq) {
        Some(Ok(s)) => s.through_ms.max(from_ms),
        _ => {
            load(&mut loaded, &mut (1..=max_seq))?;
            loaded
                .values()
                .filter_map(|s| s.as_ref().ok())
                .map(|s| s.through_ms)
                .max()
                .unwrap_or(from_ms)
                .max(from_ms)
        }
    };
    if at_ms < from_ms {
        return Err(RepoError::MomentBeforeRange {
            base: base.to_string(),
            at_ms,
            from_ms,
            to_ms,
        });
    }
    if at_ms > to_ms {
        return Err(RepoError::MomentAfterRange {
            base: base.to_string(),
            at_ms,
            from_ms,
            to_ms,
        });
    }
    // Where the commits after a missing or unreadable segment `seq` resume: the first commit
    // (or through time) of the next readable segment, else the end of the range.
    let resumes = |loaded: &mut BTreeMap<u64, Result<Segment>>, seq: u64| -> Result<u64> {
        load(loaded, &mut (seq + 1..=max_seq))?;
        Ok(loaded
            .range(seq + 1..)
            .find_map(|(_, s)| s.as_ref().ok())
            .map_or(to_ms, |s| s.info().first_ms))
    };

    let mut overlay = Overlay {
        pages: BTreeMap::new(),
        base_floor: manifest.page_count,
        db_pages: manifest.page_count,
        applied: 0,
        applied_at_ms: None,
    };
    let mut prev_through = from_ms;
    let mut segments_used = 0u64;
    for seq in 1..=max_seq {
        let key = format::segment_key(base, seq);
        if !loaded.contains_key(&seq) {
            load(&mut loaded, &mut (seq..=max_seq.min(seq + 63)))?;
        }
        let seg = match loaded.remove(&seq) {
            // The state after the previous segment held until its through time: a moment
            // up to then does not need this segment.
            None | Some(Err(_)) if at_ms <= prev_through => break,
            None => {
                return Err(RepoError::SegmentMissing {
                    segment: key,
                    after_ms: prev_through,
                    until_ms: resumes(&mut loaded, seq)?,
                });
            }
            Some(Err(RepoError::CorruptObject { reason, .. })) => {
                return Err(RepoError::SegmentCorrupt {
                    segment: key,
                    reason,
                    after_ms: prev_through,
                    until_ms: resumes(&mut loaded, seq)?,
                });
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(s)) => s,
        };
        if seg.page_size != manifest.page_size {
            return Err(RepoError::SegmentCorrupt {
                segment: key,
                reason: format!(
                    "page size {} differs from the base's {}",
                    seg.page_size, manifest.page_size
                ),
                after_ms: prev_through,
                until_ms: resumes(&mut loaded, seq)?,
            });
        }
        let mut done = false;
        let before = overlay.applied;
        for c in &seg.commits {
            if c.at_ms > at_ms {
                done = true;
                break;
            }
            overlay.apply(seq, c);
        }
        if overlay.applied > before {
            segments_used += 1;
        }
        if done {
            break;
        }
        prev_through = seg.through_ms;
    }

    // Where every needed chunk is (live indexes first, then condemned ones); its pages.
    let mut pages_of: IdMap<Vec<u32>> = IdMap::default();
    for (pgno, (id, _, _)) in &overlay.pages {
        pages_of.entry(*id).or_default().push(*pgno);
    }
    let needed: IdSet = pages_of.keys().copied().collect();
    let damaged = |id: &ChunkId, reason: String| {
        let page = pages_of
            .get(id)
            .and_then(|p| p.first())
            .copied()
            .unwrap_or(0);
        let (seq, written_ms) = overlay
            .pages
            .get(&page)
            .map_or((0, 0), |(_, s, at)| (*s, *at));
        RepoError::SegmentChunkDamaged {
            segment: format::segment_key(base, seq),
            page,
            chunk: id.to_string(),
            written_ms,
            reason,
        }
    };
    // The repository's cache of pack indexes, brought up to date (a listing of index/ and
    // condemned/, and a read of what appeared since), instead of reading every index; the
    // base's restore below uses the same refresh.
    repo.index_cache
        .refresh(&repo.store, &repo.crypto, Scope::All)?;
    let located = repo.index_cache.locate(&needed, 1);
    if let Some(id) = located.missing.first() {
        return Err(damaged(id, "it is in no pack index".into()));
    }

    // The base snapshot into a temporary file beside the target (checked against its hash),
    // then the newest version of every page over it.
    let (dir, tmp_path) = temp_beside(target)?;
    let mut tmp = TempFile(Some(tmp_path.clone()));
    let quiet = |_: Progress| {};
    write_backup(
        repo,
        &manifest,
        &tmp_path,
        repo.threads,
        WriteMode::Buffered,
        None,
        &quiet,
        IndexesFresh::Yes,
    )?;
    let io = |e| RepoError::io(&tmp_path, e);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&tmp_path)
        .map_err(io)?;
    let ps = u64::from(manifest.page_size);
    file.set_len(overlay.base_floor * ps).map_err(io)?;
    file.set_len(overlay.db_pages * ps).map_err(io)?;
    fetch_frames(
        &repo.store,
        &repo.crypto,
        &located.packs,
        &located.frames,
        repo.threads,
        None,
        |fj, raw| {
            let raw = raw.map_err(|reason| damaged(&fj.chunks[0].0, reason))?;
            for (id, off, len) in &fj.chunks {
                let data = &raw[*off as usize..(*off + *len) as usize];
                if data.len() as u64 != ps || repo.crypto.chunk_id(data) != *id {
                    return Err(damaged(id, "its content does not match its id".into()));
                }
                for pgno in pages_of.get(id).map(Vec::as_slice).unwrap_or(&[]) {
                    file.write_all_at(data, u64::from(*pgno - 1) * ps)
                        .map_err(|e| RepoError::io(&tmp_path, e))?;
                }
            }
            Ok(())
        },
    )?;
    file.sync_all().map_err(io)?;

    let check_start = Instant::now();
    let db_size = overlay.db_pages * ps;
    let db_hash = hash_file(&file, db_size).map_err(io)?;
    drop(file);
    let proof = if opts.trust_proof {
        match repo.proof(&db_hash) {
            Ok(p) => p,
            Err(e @ (RepoError::CorruptObject { .. } | RepoError::NewerFormat { .. })) => {
                tracing::warn!(%e, "ignoring an unreadable drill proof");
                None
            }
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let integrity = match (&proof, opts.integrity_check) {
        (Some(p), _) => Integrity::ProvenByDrill {
            checked_ms: p.checked_ms,
        },
        (None, true) => {
            integrity_check(&tmp_path)?;
            Integrity::CheckedNow
        }
        (None, false) => Integrity::NotChecked,
    };
    let check_duration = check_start.elapsed();
    move_into_place(&mut tmp, target, &dir, opts.overwrite)?;
    Ok(RestoreAtSummary {
        base: base.to_string(),
        at_ms,
        applied_at_ms: overlay.applied_at_ms.unwrap_or(from_ms),
        commits_applied: overlay.applied,
        segments_used,
        path: target.to_owned(),
        db_size,
        db_hash,
        integrity_checked: integrity == Integrity::CheckedNow,
        integrity,
        check_duration,
        duration: start.elapsed(),
    })
}
