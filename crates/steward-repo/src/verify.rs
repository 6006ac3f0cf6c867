//! Verify: check that backups can be restored, without restoring them. Reports, per backup,
//! what is missing and what is corrupt, naming the chunks and packs, instead of stopping at
//! the first problem.
//!
//! Every mode first checks the structure: the manifest and chunk list open and agree, every
//! chunk is in a pack index, and every pack the backup needs exists and is long enough for
//! its frames (one listing of `data/`). `Full` and `Sampled` then read frames: each is
//! opened (its seal), decompressed, and every chunk in it is hashed against its id. When
//! several backups are verified together, a chunk read for one is not read again for another.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::crypto::ChunkId;
use crate::error::Result;
use crate::format::PackIndex;
use crate::index_cache::Scope;
use crate::read::{
    IdMap, IdSet, IndexState, Located, Locator, fetch_frames, for_each_index, list_pack_objects,
    locate, pack_name,
};
use crate::{Phase, Progress, Repository};

/// How much to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VerifyMode {
    /// Metadata only: manifest, chunk list, every chunk located in an index, and every pack
    /// the backup needs exists and is long enough for its frames. Reads no chunk data.
    Structure,
    /// Structure, then every chunk every selected backup needs (`--read-data`).
    Full,
    /// Structure, then a random fraction (0.0–1.0) of the frames each backup needs (at least
    /// one frame; `--sample PERCENT` / 100).
    Sampled(f64),
}

/// The outcome for one backup.
#[derive(Debug, Clone, Default)]
pub struct BackupVerification {
    /// Backup id.
    pub id: String,
    /// Chunks (distinct) the backup needs.
    pub chunks_needed: u64,
    /// Chunks read and checked against their ids (0 in `Structure` mode).
    pub chunks_checked: u64,
    /// Stored bytes read for this backup (frames already read for another backup of the
    /// same run are not read again).
    pub bytes_read: u64,
    /// Chunks in no pack index, or in a pack that no longer exists.
    pub missing_chunks: u64,
    /// Chunks whose stored bytes are unreadable, cut short, or do not match their id.
    pub corrupt_chunks: u64,
    /// Packs (names) in which something this backup needs is missing, truncated or corrupt.
    pub damaged_packs: Vec<String>,
    /// Up to 20 descriptions of problems, for people; each names the pack and/or chunk.
    pub problems: Vec<String>,
}

impl BackupVerification {
    /// True when nothing is missing or corrupt.
    pub fn is_ok(&self) -> bool {
        self.missing_chunks == 0
            && self.corrupt_chunks == 0
            && self.problems.is_empty()
            && self.damaged_packs.is_empty()
    }
}

/// The outcome of a verify run.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// One entry per backup verified.
    pub backups: Vec<BackupVerification>,
}

impl VerifyReport {
    /// True when every backup verified cleanly.
    pub fn is_ok(&self) -> bool {
        self.backups.iter().all(BackupVerification::is_ok)
    }
}

const MAX_PROBLEMS: usize = 20;
/// Pack indexes are kept in memory across the backups of one run when they are smaller than
/// this in all; otherwise they are streamed again for each backup.
const INDEX_CACHE_BYTES: u64 = 64 << 20;

/// What reading a chunk showed, shared between the backups of one run.
#[derive(Clone, Copy)]
enum Seen {
    Ok,
    /// Index into `Run::reasons`.
    Bad(u32),
}

/// Where a verify finds the frames of the chunks it checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// In the repository's cache of pack indexes, refreshed once at the start of the run
    /// (reads only the index objects that appeared since the last refresh): a verify of some
    /// backups.
    Cache,
    /// By reading every index object of the repository: a verify of the whole repository,
    /// which is meant to read everything.
    ReadAll,
}

struct Run<'r> {
    repo: &'r Repository,
    lookup: Lookup,
    /// Pack name → stored size, from one listing of `data/`.
    pack_sizes: HashMap<String, u64>,
    /// All indexes (live first), when small enough to keep.
    indexes: Option<Vec<PackIndex>>,
    seen: IdMap<Seen>,
    reasons: Vec<(String, String)>,
}

impl Run<'_> {
    fn locate(&self, needed: &IdSet) -> Result<Located> {
        if self.lookup == Lookup::Cache {
            return Ok(self.repo.index_cache.locate(needed, 1));
        }
        match &self.indexes {
            Some(all) => {
                let mut l = Locator::new(needed);
                for idx in all {
                    l.add(idx);
                }
                Ok(l.finish())
            }
            None => locate(&self.repo.store, &self.repo.crypto, needed),
        }
    }
}

pub(crate) fn verify_many(
    repo: &Repository,
    ids: &[String],
    mode: VerifyMode,
    progress: &(dyn Fn(Progress) + Sync),
    lookup: Lookup,
) -> Result<VerifyReport> {
    let store = &repo.store;
    if lookup == Lookup::Cache {
        // Before the listing of data/: a pack is written before its index, so every pack an
        // index listed now names is in that listing, unless a prune deleted it since.
        repo.index_cache.refresh(store, &repo.crypto, Scope::All)?;
    }
    let pack_sizes = list_pack_objects(store)?
        .iter()
        .map(|m| (pack_name(m), m.size))
        .collect();
    let indexes = if ids.len() > 1 && lookup == Lookup::ReadAll {
        let index_bytes: u64 = ["index", "condemned"]
            .iter()
            .map(|p| store.block_on(store.list(p)))
            .collect::<Result<Vec<_>>>()?
            .iter()
            .flatten()
            .map(|m| m.size)
            .sum();
        if index_bytes <= INDEX_CACHE_BYTES {
            let mut all = Vec::new();
            let mut names = std::collections::HashSet::new();
            for_each_index(store, &repo.crypto, true, |state, idx| {
                // A pack both live and condemned is live.
                if names.insert(idx.pack.clone()) || state == IndexState::Live {
                    all.push(idx);
                }
                Ok(())
            })?;
            Some(all)
        } else {
            None
        }
    } else {
        None
    };
    let mut run = Run {
        repo,
        lookup,
        pack_sizes,
        indexes,
        seen: IdMap::default(),
        reasons: Vec::new(),
    };
    let mut report = VerifyReport::default();
    for id in ids {
        report
            .backups
            .push(verify_one(&mut run, id, mode, progress)?);
    }
    Ok(report)
}

fn verify_one(
    run: &mut Run<'_>,
    id: &str,
    mode: VerifyMode,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<BackupVerification> {
    let repo = run.repo;
    let mut v = BackupVerification {
        id: id.to_string(),
        ..Default::default()
    };
    let mut problems: Vec<String> = Vec::new();
    let mut damaged: BTreeSet<String> = BTreeSet::new();
    let chunks = match repo.manifest(id).and_then(|m| repo.chunk_list(&m)) {
        Ok(c) => c,
        Err(e @ crate::RepoError::BackupNotFound(_)) => return Err(e),
        Err(e) => {
            v.problems.push(e.to_string());
            return Ok(v);
        }
    };
    let needed: IdSet = chunks.iter().copied().collect();
    drop(chunks);
    v.chunks_needed = needed.len() as u64;
    let mut located = run.locate(&needed)?;
    drop(needed);
    v.missing_chunks = located.missing.len() as u64;
    for c in located.missing.iter().take(MAX_PROBLEMS) {
        problems.push(format!("chunk {c} is missing: it is in no pack index"));
    }

    // Structure: every pack exists and holds every frame the backup needs.
    let mut readable = Vec::with_capacity(located.frames.len());
    let mut pack_notes: HashMap<u32, (String, u64, ChunkId)> = HashMap::new();
    for f in std::mem::take(&mut located.frames) {
        let pack = &located.packs[f.pack as usize];
        let end = f.offset + u64::from(f.stored_len);
        let n = f.chunks.len() as u64;
        let what = match run.pack_sizes.get(pack) {
            None => {
                v.missing_chunks += n;
                Some("is missing".to_string())
            }
            Some(&size) if size < end => {
                v.corrupt_chunks += n;
                Some(format!("is truncated: {size} bytes, its frames need {end}"))
            }
            Some(_) => None,
        };
        match what {
            Some(what) => {
                let e = pack_notes
                    .entry(f.pack)
                    .or_insert_with(|| (String::new(), 0, f.chunks[0].0));
                // Frames come in offset order: the last message names the largest need.
                e.0 = what;
                e.1 += n;
            }
            None => readable.push(f),
        }
    }
    let mut notes: Vec<_> = pack_notes.into_iter().collect();
    notes.sort_by_key(|(p, _)| *p);
    for (p, (what, n, first)) in notes {
        let pack = &located.packs[p as usize];
        damaged.insert(pack.clone());
        problems.push(format!(
            "pack {pack} {what}; {n} chunks of this backup are in it (first: chunk {first})"
        ));
    }
    located.frames = readable;

    if let VerifyMode::Sampled(fraction) = mode {
        let fraction = fraction.clamp(0.0, 1.0);
        let total = located.frames.len();
        if fraction < 1.0 && total > 0 {
            let mut rnd = vec![0u8; total * 4];
            let _ = getrandom::fill(&mut rnd);
            let mut keep: Vec<bool> = rnd
                .chunks_exact(4)
                .map(|b| {
                    f64::from(u32::from_le_bytes(b.try_into().unwrap())) / f64::from(u32::MAX)
                        < fraction
                })
                .collect();
            if !keep.iter().any(|k| *k) {
                keep[(u32::from_le_bytes(rnd[..4].try_into().unwrap()) as usize) % total] = true;
            }
            let mut i = 0;
            located.frames.retain(|_| {
                i += 1;
                keep[i - 1]
            });
        }
    }
    if mode == VerifyMode::Structure {
        located.frames.clear();
    }

    // Chunks already read for another backup of this run are not read again.
    let mut checked = 0u64;
    let mut corrupt_seen = 0u64;
    located.frames.retain(|f| {
        if f.chunks.iter().all(|(c, _, _)| run.seen.contains_key(c)) {
            for (c, _, _) in &f.chunks {
                checked += 1;
                if let Seen::Bad(r) = run.seen[c] {
                    corrupt_seen += 1;
                    let (pack, reason) = &run.reasons[r as usize];
                    damaged.insert(pack.clone());
                    problems.push(reason.clone());
                }
            }
            false
        } else {
            true
        }
    });

    let total_bytes: u64 = located.frames.iter().map(|f| u64::from(f.stored_len)).sum();
    let read = AtomicU64::new(0);
    // Per chunk read: `None` when sound, else (pack, problem).
    type Outcome = (ChunkId, Option<(String, String)>);
    let outcomes: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    let crypto = &*repo.crypto;
    fetch_frames(
        &repo.store,
        crypto,
        &located.packs,
        &located.frames,
        repo.threads,
        None,
        |fj, raw| {
            let pack = &located.packs[fj.pack as usize];
            let done = read.fetch_add(u64::from(fj.stored_len), Ordering::Relaxed)
                + u64::from(fj.stored_len);
            progress(Progress {
                phase: Phase::Verify,
                bytes_done: done,
                bytes_total: total_bytes,
            });
            let mut local = Vec::with_capacity(fj.chunks.len());
            match raw {
                Err(reason) => {
                    let text = format!(
                        "pack {pack}, frame at offset {}: {reason}; {} chunks of it are \
                         unreadable (first: chunk {})",
                        fj.offset,
                        fj.chunks.len(),
                        fj.chunks[0].0
                    );
                    for (cid, _, _) in &fj.chunks {
                        local.push((*cid, Some((pack.clone(), text.clone()))));
                    }
                }
                Ok(raw) => {
                    for (cid, off, len) in &fj.chunks {
                        let data = &raw[*off as usize..(*off + *len) as usize];
                        let bad = (crypto.chunk_id(data) != *cid).then(|| {
                            (
                                pack.clone(),
                                format!(
                                    "chunk {cid} in pack {pack} (frame at offset {}): its \
                                     content does not match its hash",
                                    fj.offset
                                ),
                            )
                        });
                        local.push((*cid, bad));
                    }
                }
            }
            outcomes.lock().unwrap().extend(local);
            Ok(())
        },
    )?;
    let mut last_reason: Option<(String, String)> = None;
    for (cid, bad) in outcomes.into_inner().unwrap() {
        checked += 1;
        match bad {
            None => {
                run.seen.insert(cid, Seen::Ok);
            }
            Some(pr) => {
                corrupt_seen += 1;
                damaged.insert(pr.0.clone());
                // Frame-wide problems repeat their text: keep one entry per text.
                if last_reason.as_ref() != Some(&pr) {
                    run.reasons.push(pr.clone());
                    problems.push(pr.1.clone());
                    last_reason = Some(pr);
                }
                run.seen
                    .insert(cid, Seen::Bad(run.reasons.len() as u32 - 1));
            }
        }
    }
    v.chunks_checked = checked;
    v.bytes_read = read.into_inner();
    v.corrupt_chunks += corrupt_seen;
    problems.dedup();
    problems.truncate(MAX_PROBLEMS);
    v.problems = problems;
    v.damaged_packs = damaged.into_iter().collect();
    Ok(v)
}
