//! Verify: re-read the chunks backups need and check them against their ids. Reports, per
//! backup, what is missing and what is corrupt instead of stopping at the first problem.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::crypto::ChunkId;
use crate::error::Result;
use crate::read::{IdSet, fetch_frames, locate};
use crate::{Phase, Progress, Repository};

/// How much to read.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum VerifyMode {
    /// Every chunk every selected backup needs.
    Full,
    /// A random fraction (0.0–1.0) of the frames each backup needs (at least one).
    Sampled(f64),
}

/// The outcome for one backup.
#[derive(Debug, Clone, Default)]
pub struct BackupVerification {
    /// Backup id.
    pub id: String,
    /// Chunks (distinct) the backup needs.
    pub chunks_needed: u64,
    /// Chunks read and checked.
    pub chunks_checked: u64,
    /// Stored bytes read.
    pub bytes_read: u64,
    /// Chunks not found in any pack index.
    pub missing_chunks: u64,
    /// Chunks whose stored bytes are unreadable or do not match their id.
    pub corrupt_chunks: u64,
    /// Up to 20 descriptions of problems, for people.
    pub problems: Vec<String>,
}

impl BackupVerification {
    /// True when nothing is missing or corrupt.
    pub fn is_ok(&self) -> bool {
        self.missing_chunks == 0 && self.corrupt_chunks == 0 && self.problems.is_empty()
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

pub(crate) fn verify_one(
    repo: &Repository,
    id: &str,
    mode: VerifyMode,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<BackupVerification> {
    let mut v = BackupVerification {
        id: id.to_string(),
        ..Default::default()
    };
    let chunks = match repo.manifest(id).and_then(|m| repo.chunk_list(&m)) {
        Ok(c) => c,
        Err(e) => {
            v.problems.push(e.to_string());
            return Ok(v);
        }
    };
    let needed: IdSet = chunks.iter().copied().collect();
    drop(chunks);
    v.chunks_needed = needed.len() as u64;
    let mut located = locate(&repo.store, &repo.crypto, &needed)?;
    drop(needed);
    v.missing_chunks = located.missing.len() as u64;
    for c in located.missing.iter().take(MAX_PROBLEMS) {
        v.problems.push(format!("chunk {c} is missing"));
    }
    if let VerifyMode::Sampled(fraction) = mode {
        let fraction = fraction.clamp(0.0, 1.0);
        let total = located.frames.len();
        let mut rnd = vec![0u8; total * 4];
        let _ = getrandom::fill(&mut rnd);
        let mut i = 0;
        located.frames.retain(|_| {
            let r = u32::from_le_bytes(rnd[i * 4..i * 4 + 4].try_into().unwrap());
            i += 1;
            (f64::from(r) / f64::from(u32::MAX)) < fraction
        });
        if located.frames.is_empty() && total > 0 {
            // Keep at least one frame: re-locate would be wasteful, so sample the first one.
            let again = locate(
                &repo.store,
                &repo.crypto,
                &std::iter::once(first_needed(repo, id)?).collect(),
            )?;
            located.frames = again.frames;
            located.packs = again.packs;
        }
    }
    let total_bytes: u64 = located.frames.iter().map(|f| u64::from(f.stored_len)).sum();
    let checked = AtomicU64::new(0);
    let read = AtomicU64::new(0);
    let corrupt = AtomicU64::new(0);
    let problems: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let crypto = &*repo.crypto;
    let note = |s: String| {
        let mut p = problems.lock().unwrap();
        if p.len() < MAX_PROBLEMS {
            p.push(s);
        }
    };
    fetch_frames(
        &repo.store,
        crypto,
        &located.packs,
        &located.frames,
        repo.threads,
        |fj, raw| {
            let pack = &located.packs[fj.pack as usize];
            let done = read.fetch_add(u64::from(fj.stored_len), Ordering::Relaxed)
                + u64::from(fj.stored_len);
            progress(Progress {
                phase: Phase::Verify,
                bytes_done: done,
                bytes_total: total_bytes,
            });
            checked.fetch_add(fj.chunks.len() as u64, Ordering::Relaxed);
            match raw {
                Err(reason) => {
                    corrupt.fetch_add(fj.chunks.len() as u64, Ordering::Relaxed);
                    note(format!(
                        "pack {pack} frame at {}: {reason} ({} chunks)",
                        fj.offset,
                        fj.chunks.len()
                    ));
                }
                Ok(raw) => {
                    for (cid, off, len) in &fj.chunks {
                        let data = &raw[*off as usize..(*off + *len) as usize];
                        if crypto.chunk_id(data) != *cid {
                            corrupt.fetch_add(1, Ordering::Relaxed);
                            note(format!(
                                "chunk {cid} in pack {pack}: content does not match its hash"
                            ));
                        }
                    }
                }
            }
            Ok(())
        },
    )?;
    v.chunks_checked = checked.into_inner();
    v.bytes_read = read.into_inner();
    v.corrupt_chunks = corrupt.into_inner();
    v.problems.extend(problems.into_inner().unwrap());
    Ok(v)
}

fn first_needed(repo: &Repository, id: &str) -> Result<ChunkId> {
    let m = repo.manifest(id)?;
    Ok(repo.chunk_list(&m)?[0])
}
