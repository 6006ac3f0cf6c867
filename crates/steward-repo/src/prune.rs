//! Prune: return the space of data no live backup references, safely while backups run.
//!
//! Safety rests on three rules (see `docs/repository-format.md`, "Prune protocol"):
//! 1. A backup writes its lock object before it reads the pack indexes, keeps it refreshed,
//!    and removes it only after its manifest is written.
//! 2. Prune never deletes a pack straight away: it first *condemns* it (moves its index from
//!    `index/` to `condemned/`, stamped with the time), so new backups stop deduplicating
//!    against it, while restores can still read it. A later prune deletes a condemned pack
//!    only if no manifest references it by then, it was condemned before that prune started,
//!    and no backup that was running when that prune started began before the condemnation.
//!    Otherwise a condemned pack that turned out to be referenced is restored to `index/`.
//! 3. Packs, orphan packs, orphan chunk lists and staging files younger than the grace period
//!    are never touched, whatever their references.
//!
//! A process killed in the middle of a backup leaves its lock (deleted by prune once stale, or
//! at once by [`Repository::remove_backup_locks`] when the caller knows no backup runs) and,
//! on a local store, the staging file of the write it was in (`data/ab/<pack>#1`), which the
//! store never lists: prune walks the directory for those.
//!
//! Memory: the set of live chunk ids is built one partition of the id space at a time, with
//! as many partitions as needed to keep it under `memory_budget`; besides that prune keeps one
//! bit per stored chunk and a few dozen bytes per pack. Each extra partition costs one more
//! read of every chunk list and index.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;

use crate::Repository;
use crate::backup::{LockGuard, PackBuilder, list_locks};
use crate::crypto::ChunkId;
use crate::error::{RepoError, Result};
use crate::format::{self, DOMAIN_FRAME, Manifest, PACK_TARGET_BYTES, PackIndex};
use crate::read::{IdSet, IndexState, decode_condemned, for_each_index};
use crate::store::file_name;

/// How prune behaves.
#[derive(Debug, Clone)]
pub struct PruneOptions {
    /// Objects younger than this are never condemned or deleted. Default: 1 hour.
    pub grace: Duration,
    /// A pack in which at least this fraction of chunks is dead is rewritten. Default: 0.3.
    pub repack_dead_fraction: f64,
    /// Bytes the live-chunk set may use; more partitions are used above it. Default: 64 MiB.
    pub memory_budget: usize,
    /// Allowance for clocks of different machines disagreeing. Default: 5 minutes.
    pub clock_skew_margin: Duration,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            grace: Duration::from_secs(3600),
            repack_dead_fraction: 0.3,
            memory_budget: 64 << 20,
            clock_skew_margin: Duration::from_secs(300),
        }
    }
}

/// What one prune run did.
#[derive(Debug, Clone, Default)]
pub struct PruneSummary {
    /// Backups whose chunks were kept.
    pub backups_live: u64,
    /// Partitions of the id space used (1 unless the repository is large).
    pub partitions: u32,
    /// Packs examined.
    pub packs_total: u64,
    /// Packs newly condemned (deleted by a later prune).
    pub packs_condemned: u64,
    /// Condemned packs found referenced again and restored.
    pub packs_restored: u64,
    /// Packs deleted.
    pub packs_deleted: u64,
    /// Packs whose live chunks were copied to new packs (the old ones were condemned).
    pub packs_repacked: u64,
    /// Orphan objects deleted (packs without an index, chunk lists without a manifest).
    pub orphans_deleted: u64,
    /// Bytes deleted: packs, and staging files of interrupted writes.
    pub bytes_deleted: u64,
    /// Condemned packs kept because a running backup might still use them.
    pub packs_kept_for_running_backups: u64,
    /// Lock objects deleted because their process stopped refreshing them (15 minutes).
    pub stale_locks_deleted: u64,
    /// Staging files (`<object>#<n>`) of writes a killed process left in a local repository.
    pub staging_files_deleted: u64,
    /// Drill proofs (`proofs/<db_hash>`) of hashes no live backup has.
    pub proofs_deleted: u64,
    /// Segments whose chunks were kept.
    pub segments_live: u64,
    /// Segments deleted because their base backup no longer exists.
    pub orphan_segments_deleted: u64,
}

struct PackEntry {
    name: String,
    state: IndexState,
    modified_ms: u64,
    chunks: usize,
    live: Vec<u64>,
}

impl PackEntry {
    fn live_count(&self) -> usize {
        self.live.iter().map(|w| w.count_ones() as usize).sum()
    }
}

fn partition_of(id: &ChunkId, parts: u32) -> u32 {
    ((u64::from(id.prefix_u32()) * u64::from(parts)) >> 32) as u32
}

pub(crate) fn prune(repo: &Repository, opts: &PruneOptions) -> Result<PruneSummary> {
    let store = &repo.store;
    let crypto = &*repo.crypto;
    let mut sum = PruneSummary::default();
    let grace_ms = opts.grace.as_millis() as u64;
    let skew_ms = opts.clock_skew_margin.as_millis() as u64;

    let lock_id = format::random_hex(8);
    let _lock = LockGuard::acquire(store, "prune", &lock_id)?;
    let own_key = format!("locks/prune-{lock_id}");
    let crate::backup::Locks {
        live: locks,
        stale: stale_locks,
    } = list_locks(store)?;
    if let Some((k, _)) = locks
        .iter()
        .find(|(k, l)| l.kind == "prune" && *k != own_key)
    {
        return Err(RepoError::Locked(format!("another prune is running ({k})")));
    }
    // Not refreshed for 15 minutes: their processes are gone (a live one would recreate its
    // lock at its next refresh).
    for key in stale_locks {
        tracing::info!(%key, "removing a stale lock");
        store.block_on(store.delete(&key))?;
        sum.stale_locks_deleted += 1;
    }
    // Everything below is judged against the backups running when this run started.
    let run_start = format::now_ms();
    let backup_starts: Vec<u64> = locks
        .iter()
        .filter(|(_, l)| l.kind == "backup")
        .map(|(_, l)| l.started_ms)
        .collect();
    let oldest_backup = backup_starts.iter().copied().min();

    // Manifests. An unreadable manifest stops prune: without it we cannot know what is live.
    let objects = store.block_on(store.list("backups"))?;
    let mut manifests: Vec<Manifest> = Vec::new();
    let mut chunk_lists: HashMap<String, (u64, u64)> = HashMap::new();
    let mut header_keys = Vec::new();
    for m in &objects {
        let name = file_name(m);
        if let Some(id) = name.strip_suffix(".chunks") {
            chunk_lists.insert(
                id.to_string(),
                (m.last_modified.timestamp_millis() as u64, m.size),
            );
        } else {
            header_keys.push(m.location.to_string());
        }
    }
    for (key, bytes) in store.block_on(store.get_many(header_keys))? {
        if let Some(b) = bytes {
            manifests.push(Manifest::decode(&key, &b, crypto)?);
        }
    }
    sum.backups_live = manifests.len() as u64;
    // Segments: every chunk a segment references is live while the segment exists. An
    // unreadable segment stops prune like an unreadable manifest. Segments whose base backup
    // is gone (a deletion interrupted between the two, or a segment written while its base
    // was deleted) restore nothing: once old enough they are deleted, and not counted.
    let live_bases: std::collections::HashSet<&str> =
        manifests.iter().map(|m| m.id.as_str()).collect();
    let mut segment_chunks: Vec<Vec<ChunkId>> = Vec::new();
    let mut orphan_segments: Vec<(String, u64)> = Vec::new();
    for crate::segment::SegmentRefs {
        base,
        key,
        modified_ms,
        ids,
    } in crate::segment::all_segments(repo)?
    {
        if live_bases.contains(base.as_str()) {
            segment_chunks.push(ids);
        } else if run_start.saturating_sub(modified_ms) >= grace_ms
            && oldest_backup.is_none_or(|s| s > modified_ms + skew_ms)
        {
            orphan_segments.push((key, modified_ms));
        } else {
            segment_chunks.push(ids);
        }
    }
    sum.segments_live = segment_chunks.len() as u64;
    let total_refs: u64 = manifests.iter().map(|m| m.chunk_count).sum::<u64>()
        + segment_chunks.iter().map(|c| c.len() as u64).sum::<u64>();
    let parts = ((total_refs.saturating_mul(48)) / opts.memory_budget.max(1) as u64 + 1)
        .next_power_of_two()
        .min(1 << 16) as u32;
    sum.partitions = parts;

    // Pack table, from index/ and condemned/ (a pack in both is live).
    let mut modified: HashMap<String, u64> = HashMap::new();
    for prefix in ["index", "condemned"] {
        for m in store.block_on(store.list(prefix))? {
            modified
                .entry(file_name(&m))
                .or_insert(m.last_modified.timestamp_millis() as u64);
        }
    }
    let mut packs: Vec<PackEntry> = Vec::new();
    let mut by_name: HashMap<String, usize> = HashMap::new();
    let mut stale_condemned: Vec<String> = Vec::new();

    for p in 0..parts {
        let mut live = IdSet::default();
        for m in &manifests {
            for id in repo.chunk_list(m)? {
                if partition_of(&id, parts) == p {
                    live.insert(id);
                }
            }
        }
        for ids in &segment_chunks {
            for id in ids {
                if partition_of(id, parts) == p {
                    live.insert(*id);
                }
            }
        }
        for_each_index(store, crypto, true, |state, idx| {
            let slot = match by_name.get(&idx.pack) {
                Some(&i) => {
                    if packs[i].state == IndexState::Live && state != IndexState::Live {
                        if p == 0 {
                            stale_condemned.push(idx.pack.clone());
                        }
                        return Ok(());
                    }
                    i
                }
                None => {
                    let n = idx.chunk_count();
                    packs.push(PackEntry {
                        name: idx.pack.clone(),
                        state,
                        modified_ms: modified.get(&idx.pack).copied().unwrap_or(0),
                        chunks: n,
                        live: vec![0u64; n.div_ceil(64)],
                    });
                    by_name.insert(idx.pack.clone(), packs.len() - 1);
                    packs.len() - 1
                }
            };
            let entry = &mut packs[slot];
            let mut i = 0usize;
            for f in &idx.frames {
                for (id, _) in &f.chunks {
                    // First holder wins: a chunk also held by a live pack is dead weight in a
                    // condemned (or duplicate) one.
                    if partition_of(id, parts) == p && live.remove(id) {
                        entry.live[i / 64] |= 1 << (i % 64);
                    }
                    i += 1;
                }
            }
            Ok(())
        })?;
    }
    sum.packs_total = packs.len() as u64;
    for name in stale_condemned {
        store.block_on(store.delete(&format::condemned_key(&name)))?;
    }

    let data_objects = crate::read::list_pack_objects(store)?;
    let data_sizes: HashMap<String, (u64, u64)> = data_objects
        .iter()
        .map(|m| {
            (
                crate::read::pack_name(m),
                (m.size, m.last_modified.timestamp_millis() as u64),
            )
        })
        .collect();

    let mut repack: Vec<usize> = Vec::new();
    for (i, pe) in packs.iter().enumerate() {
        let live = pe.live_count();
        let old_enough = run_start.saturating_sub(pe.modified_ms) >= grace_ms;
        match pe.state {
            IndexState::Live => {
                if live == 0 && old_enough {
                    condemn(repo, &pe.name)?;
                    sum.packs_condemned += 1;
                } else if live > 0
                    && old_enough
                    && pe.chunks > 0
                    && (pe.chunks - live) as f64 / pe.chunks as f64 >= opts.repack_dead_fraction
                {
                    repack.push(i);
                }
            }
            IndexState::Condemned { at_ms } => {
                if live > 0 {
                    uncondemn(repo, &pe.name)?;
                    sum.packs_restored += 1;
                } else if at_ms + skew_ms <= run_start
                    && backup_starts.iter().all(|s| *s > at_ms + skew_ms)
                {
                    let key = format::pack_key(&pe.name);
                    store.block_on(store.delete(&key))?;
                    store.block_on(store.delete(&format::condemned_key(&pe.name)))?;
                    sum.packs_deleted += 1;
                    sum.bytes_deleted += data_sizes.get(&pe.name).map(|s| s.0).unwrap_or(0);
                } else {
                    sum.packs_kept_for_running_backups += 1;
                }
            }
        }
    }

    if !repack.is_empty() {
        repack_packs(repo, &packs, &repack)?;
        for &i in &repack {
            condemn(repo, &packs[i].name)?;
        }
        sum.packs_repacked = repack.len() as u64;
    }

    // Orphans: written by a backup that failed (or is still running: hence grace and locks).
    let orphan_ok = |modified_ms: u64| {
        run_start.saturating_sub(modified_ms) >= grace_ms
            && oldest_backup.is_none_or(|s| s > modified_ms + skew_ms)
    };
    for (name, (size, modified_ms)) in &data_sizes {
        if !by_name.contains_key(name) && !modified.contains_key(name) && orphan_ok(*modified_ms) {
            store.block_on(store.delete(&format::pack_key(name)))?;
            sum.orphans_deleted += 1;
            sum.bytes_deleted += size;
        }
    }
    for (key, _) in &orphan_segments {
        tracing::info!(%key, "removing a segment whose base backup is gone");
        store.block_on(store.delete(key))?;
        sum.orphan_segments_deleted += 1;
    }
    let live_ids: std::collections::HashSet<&str> =
        manifests.iter().map(|m| m.id.as_str()).collect();
    for (id, (modified_ms, _)) in &chunk_lists {
        if !live_ids.contains(id.as_str()) && orphan_ok(*modified_ms) {
            store.block_on(store.delete(&format::chunks_key(id)))?;
            sum.orphans_deleted += 1;
        }
    }
    // Proofs of database hashes no live backup has any more. The manifests were read at the
    // start of this run: a proof written since for a backup made since is kept (it is newer
    // than the run); at worst a restore of such a backup runs integrity_check itself.
    let live_hashes: std::collections::HashSet<&str> =
        manifests.iter().map(|m| m.db_hash.as_str()).collect();
    for m in store.block_on(store.list("proofs"))? {
        let hash = file_name(&m);
        let written_ms = m.last_modified.timestamp_millis().max(0) as u64;
        if !live_hashes.contains(hash.as_str()) && written_ms + skew_ms < run_start {
            store.block_on(store.delete(m.location.as_ref()))?;
            sum.proofs_deleted += 1;
        }
    }
    if let Some(root) = &store.local_root {
        // Also written before this run started: with no grace, the write in progress of a
        // backup that started after the locks were read must not lose its file.
        let staging_ok = |modified_ms: u64| modified_ms < run_start && orphan_ok(modified_ms);
        remove_staging_files(root, &staging_ok, &mut sum)?;
    }
    Ok(sum)
}

/// Whether `name` is a staging file of `object_store`'s local store: `<object>#<digits>`, where
/// a put writes its data before renaming it to `<object>`. The store never lists these names.
pub(crate) fn is_staging_name(name: &str) -> bool {
    match name.rsplit_once('#') {
        Some((base, n)) => {
            !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
        }
        None => false,
    }
}

/// Removes the staging files under a local repository's directory that `ok` judges old enough
/// (by modification time): a write interrupted by a killed process leaves one behind, and
/// nothing else would ever remove it. A write in progress keeps its file's time recent.
fn remove_staging_files(
    root: &std::path::Path,
    ok: &dyn Fn(u64) -> bool,
    sum: &mut PruneSummary,
) -> Result<()> {
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir != root => continue,
            Err(e) => return Err(RepoError::io(&dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| RepoError::io(&dir, e))?;
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() {
                dirs.push(path);
                continue;
            }
            if !ft.is_file() || !entry.file_name().to_str().is_some_and(is_staging_name) {
                continue;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let modified_ms = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as u64);
            if !ok(modified_ms) {
                continue;
            }
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    tracing::info!(path = %path.display(), "removed the staging file of an interrupted write");
                    sum.staging_files_deleted += 1;
                    sum.bytes_deleted += meta.len();
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(RepoError::io(&path, e)),
            }
        }
    }
    Ok(())
}

fn condemn(repo: &Repository, pack: &str) -> Result<()> {
    let store = &repo.store;
    let Some(index) = store.block_on(store.get(&format::index_key(pack)))? else {
        return Ok(());
    };
    let stamped = |at: u64| {
        let mut b = Vec::with_capacity(8 + index.len());
        b.extend_from_slice(&at.to_le_bytes());
        b.extend_from_slice(&index);
        Bytes::from(b)
    };
    store.block_on(store.put(&format::condemned_key(pack), stamped(format::now_ms())))?;
    store.block_on(store.delete(&format::index_key(pack)))?;
    // Stamp again once the index is gone from index/: no backup can start using it later.
    store.block_on(store.put(&format::condemned_key(pack), stamped(format::now_ms())))?;
    Ok(())
}

fn uncondemn(repo: &Repository, pack: &str) -> Result<()> {
    let store = &repo.store;
    let key = format::condemned_key(pack);
    let Some(b) = store.block_on(store.get(&key))? else {
        return Ok(());
    };
    let (_, _idx) = decode_condemned(&key, &b, &repo.crypto)?;
    store.block_on(store.put(&format::index_key(pack), b.slice(8..)))?;
    store.block_on(store.delete(&key))?;
    Ok(())
}

/// Copies the live chunks of `which` packs into new packs (indexes written after each pack).
fn repack_packs(repo: &Repository, packs: &[PackEntry], which: &[usize]) -> Result<()> {
    let store = &repo.store;
    let crypto = &*repo.crypto;
    let mut comp = zstd::bulk::Compressor::new(repo.compression_level)
        .map_err(|e| RepoError::io("zstd", e))?;
    let mut dec = zstd::bulk::Decompressor::new().map_err(|e| RepoError::io("zstd", e))?;
    let mut out = PackBuilder::new();
    let mut uploads = Vec::new();
    for &i in which {
        let pe = &packs[i];
        let key = format::index_key(&pe.name);
        let Some(ib) = store.block_on(store.get(&key))? else {
            continue;
        };
        let idx = PackIndex::decode(&key, &ib, crypto)?;
        let data_key = format::pack_key(&pe.name);
        let Some(data) = store.block_on(store.get(&data_key))? else {
            return Err(RepoError::corrupt(
                data_key,
                "pack listed in index/ is missing",
            ));
        };
        let mut n = 0usize;
        for f in &idx.frames {
            let lo = f.offset as usize;
            let hi = lo + f.stored_len as usize;
            if hi > data.len() {
                return Err(RepoError::corrupt(&data_key, "truncated pack"));
            }
            let compressed = crypto
                .open(DOMAIN_FRAME, &data[lo..hi])
                .map_err(|r| RepoError::corrupt(&data_key, r))?;
            let raw = dec
                .decompress(&compressed, f.raw_len as usize)
                .map_err(|e| RepoError::corrupt(&data_key, e.to_string()))?;
            let mut keep = Vec::new();
            let mut chunks = Vec::new();
            let mut off = 0usize;
            for (id, len) in &f.chunks {
                let slice = &raw[off..off + *len as usize];
                if pe.live[n / 64] & (1 << (n % 64)) != 0 {
                    if crypto.chunk_id(slice) != *id {
                        return Err(RepoError::CorruptChunk {
                            chunk: id.to_string(),
                            pack: pe.name.clone(),
                            reason: "content does not match its hash".into(),
                        });
                    }
                    keep.extend_from_slice(slice);
                    chunks.push((*id, *len));
                }
                off += *len as usize;
                n += 1;
            }
            if !chunks.is_empty() {
                let c = comp.compress(&keep).map_err(|e| RepoError::io("zstd", e))?;
                out.add_raw(crypto.seal(DOMAIN_FRAME, c)?, keep.len() as u32, chunks);
                if out.buf.len() >= PACK_TARGET_BYTES {
                    let p = std::mem::replace(&mut out, PackBuilder::new());
                    uploads.push(p.upload(store, crypto, None)?);
                }
            }
        }
    }
    if !out.frames.is_empty() {
        uploads.push(out.upload(store, crypto, None)?);
    }
    for h in uploads {
        store
            .block_on(h)
            .map_err(|e| RepoError::Invalid(format!("upload task failed: {e}")))??;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_staging_name;

    #[test]
    fn staging_names_are_those_the_local_store_never_lists() {
        for n in ["ab12#1", "ab12#27", "backup-x#3", "config#1"] {
            assert!(is_staging_name(n), "{n}");
        }
        for n in ["ab12", "ab12#", "#1", "a#b", "a#1b", "a#-1"] {
            assert!(!is_staging_name(n), "{n}");
        }
    }
}
