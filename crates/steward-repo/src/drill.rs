//! Restore drills: restore a backup into a throwaway file, check it as a restore would and
//! more (whole-file hash, `PRAGMA integrity_check`, per-table row counts against those
//! recorded at backup time), delete the file, and record a *proof* when everything passed.
//!
//! A proof (`proofs/<db_hash>`) says "a database with exactly these bytes passed
//! `integrity_check` at this time". A later restore of any backup with the same `db_hash`
//! checks the whole-file hash anyway, so it may skip running `integrity_check` again (see
//! [`crate::RestoreOptions::trust_proof`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::{RepoError, Result};
use crate::format::{self, DOMAIN_PROOF, FORMAT_VERSION};
use crate::restore::{
    IndexesFresh, TempFile, WriteMode, integrity_rows, open_immutable, write_backup,
};
use crate::{Phase, Progress, Repository};

/// How to run a drill.
#[derive(Debug, Clone)]
pub struct DrillOptions {
    /// Worker threads (default 1: a drill never uses more than one core).
    pub threads: usize,
    /// Set to true to stop the drill early (it returns [`RepoError::Cancelled`]; the scratch
    /// file is removed and no proof is written).
    pub cancel: Option<Arc<AtomicBool>>,
}

impl Default for DrillOptions {
    fn default() -> Self {
        DrillOptions {
            threads: 1,
            cancel: None,
        }
    }
}

/// What a drill found.
#[derive(Debug, Clone)]
pub struct DrillReport {
    /// Backup id.
    pub id: String,
    /// The backup's whole-file hash.
    pub db_hash: String,
    /// Everything checked passed (and a proof was recorded).
    pub passed: bool,
    /// What failed, for people: missing/corrupt chunk (naming chunk and pack), hash mismatch,
    /// integrity_check output, row count differences (`table t: 10 rows at backup, 9 now`).
    pub problems: Vec<String>,
    /// The restored file has the backup's whole-file hash.
    pub hash_ok: bool,
    /// `PRAGMA integrity_check` said `ok`.
    pub integrity_ok: bool,
    /// `None` when the backup has no recorded counts; otherwise whether all matched.
    pub row_counts_ok: Option<bool>,
    /// Rows per table counted in the restored file.
    pub row_counts: BTreeMap<String, u64>,
    /// Bytes of database restored.
    pub bytes: u64,
    /// Wall time of the drill.
    pub duration: Duration,
}

/// A record that a database with exactly the bytes of `db_hash` passed `integrity_check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proof {
    /// The whole-file blake3 hash of the checked database, hex.
    pub db_hash: String,
    /// When the drill checked it, milliseconds since the Unix epoch.
    pub checked_ms: u64,
    /// The backup the drill restored.
    pub backup: String,
}

/// The stored form of a proof (sealed JSON under `proofs/<db_hash>`).
#[derive(Serialize, Deserialize)]
struct ProofObject {
    version: u32,
    db_hash: String,
    checked_ms: u64,
    backup: String,
    #[serde(default)]
    db_size: u64,
    #[serde(default)]
    sqlite_version: String,
}

/// The differences between the row counts recorded at backup time and those counted now,
/// one line per table, for people. Empty when they agree.
pub(crate) fn compare_row_counts(
    at_backup: &BTreeMap<String, u64>,
    now: &BTreeMap<String, u64>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (t, n) in at_backup {
        match now.get(t) {
            Some(m) if m == n => {}
            Some(m) => out.push(format!("table {t}: {n} rows at backup, {m} now")),
            None => out.push(format!("table {t}: {n} rows at backup, missing now")),
        }
    }
    for (t, m) in now {
        if !at_backup.contains_key(t) {
            out.push(format!("table {t}: not present at backup, {m} rows now"));
        }
    }
    out
}

pub(crate) fn drill(
    repo: &Repository,
    id: &str,
    scratch_dir: &Path,
    opts: &DrillOptions,
    progress: &(dyn Fn(Progress) + Sync),
) -> Result<DrillReport> {
    let start = Instant::now();
    let cancel = opts.cancel.as_deref();
    let cancelled = || cancel.is_some_and(|c| c.load(Ordering::Relaxed));
    let manifest = match repo.manifest(id) {
        Ok(m) => m,
        // The backup exists but its manifest is damaged: a failed drill, not an error.
        Err(e @ RepoError::CorruptObject { .. }) => {
            return Ok(DrillReport {
                id: id.to_string(),
                db_hash: String::new(),
                passed: false,
                problems: vec![e.to_string()],
                hash_ok: false,
                integrity_ok: false,
                row_counts_ok: None,
                row_counts: BTreeMap::new(),
                bytes: 0,
                duration: start.elapsed(),
            });
        }
        Err(e) => return Err(e),
    };
    std::fs::create_dir_all(scratch_dir).map_err(|e| RepoError::io(scratch_dir, e))?;
    remove_stale_scratch(scratch_dir);
    let stem = format!(
        ".drill-{}-{}",
        manifest.id.replace(['/', '\\'], "_"),
        format::random_hex(4)
    );
    // The lock file is created first and removed last, and locked meanwhile: a drill killed
    // with its process leaves it unlocked, and the next drill removes what it left.
    let lock_path = scratch_dir.join(format!("{stem}.lock"));
    let lock = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&lock_path)
        .map_err(|e| RepoError::io(&lock_path, e))?;
    let _lock_file = TempFile(Some(lock_path.clone()));
    if !try_lock(&lock) {
        return Err(RepoError::Locked(format!(
            "{} is locked",
            lock_path.display()
        )));
    }
    let path = scratch_dir.join(format!("{stem}.db"));
    let _scratch = TempFile(Some(path.clone()));
    let mut report = DrillReport {
        id: manifest.id.clone(),
        db_hash: manifest.db_hash.clone(),
        passed: false,
        problems: Vec::new(),
        hash_ok: false,
        integrity_ok: false,
        row_counts_ok: None,
        row_counts: BTreeMap::new(),
        bytes: manifest.db_size,
        duration: Duration::ZERO,
    };
    if cancelled() {
        return Err(RepoError::Cancelled);
    }
    match write_backup(
        repo,
        &manifest,
        &path,
        opts.threads.max(1),
        WriteMode::Buffered,
        cancel,
        progress,
        IndexesFresh::No,
    ) {
        Ok(_) => report.hash_ok = true,
        Err(
            e @ (RepoError::MissingChunk { .. }
            | RepoError::CorruptChunk { .. }
            | RepoError::CheckFailed(_)
            | RepoError::CorruptObject { .. }),
        ) => {
            report.problems.push(e.to_string());
            report.duration = start.elapsed();
            return Ok(report);
        }
        Err(e) => return Err(e),
    }

    progress(Progress {
        phase: Phase::Check,
        bytes_done: 0,
        bytes_total: manifest.db_size,
    });
    let conn = open_immutable(&path)?;
    // A watcher interrupts SQLite when the drill is cancelled mid-check.
    let done = AtomicBool::new(false);
    let interrupt = conn.get_interrupt_handle();
    let checked = std::thread::scope(|s| {
        if let Some(c) = cancel {
            let done = &done;
            s.spawn(move || {
                while !done.load(Ordering::Relaxed) {
                    if c.load(Ordering::Relaxed) {
                        interrupt.interrupt();
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        }
        let r = (|| {
            let rows = integrity_rows(&conn)?;
            if cancelled() {
                return Ok((rows, BTreeMap::new()));
            }
            let counts = crate::backup::count_rows_until(&conn, &cancelled)?;
            Ok((rows, counts))
        })();
        done.store(true, Ordering::Relaxed);
        r
    });
    drop(conn);
    if cancelled() {
        return Err(RepoError::Cancelled);
    }
    let (rows, counts) = checked.map_err(|e: rusqlite::Error| RepoError::sqlite(&path, e))?;
    report.integrity_ok = rows.len() == 1 && rows[0] == "ok";
    if !report.integrity_ok {
        let mut shown: Vec<String> = rows.iter().take(10).cloned().collect();
        if rows.len() > 10 {
            shown.push(format!("... {} more", rows.len() - 10));
        }
        report
            .problems
            .push(format!("integrity_check: {}", shown.join("; ")));
    }
    if let Some(at_backup) = &manifest.row_counts {
        let diffs = compare_row_counts(at_backup, &counts);
        report.row_counts_ok = Some(diffs.is_empty());
        report.problems.extend(diffs);
    }
    report.row_counts = counts;
    report.passed = report.hash_ok && report.integrity_ok && report.row_counts_ok != Some(false);
    if report.passed {
        write_proof(repo, &manifest.id, &manifest.db_hash, manifest.db_size)?;
    }
    report.duration = start.elapsed();
    Ok(report)
}

/// Takes an exclusive `flock` on `file` without waiting (held until the file is closed).
fn try_lock(file: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid descriptor; a plain syscall.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

/// Removes what drills killed with their process left in `dir`: a `.drill-*.lock` file that
/// nobody holds locked, and its `.db`. Files of drills still running are locked and kept.
fn remove_stale_scratch(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(stem) = name
            .strip_prefix(".drill-")
            .and_then(|n| n.strip_suffix(".lock"))
        else {
            continue;
        };
        let lock_path = e.path();
        let Ok(f) = std::fs::OpenOptions::new().write(true).open(&lock_path) else {
            continue;
        };
        if try_lock(&f) {
            let db = dir.join(format!(".drill-{stem}.db"));
            tracing::info!(path = %db.display(), "removing the scratch file of an interrupted drill");
            let _ = std::fs::remove_file(&db);
            let _ = std::fs::remove_file(&lock_path);
        }
    }
}

fn write_proof(repo: &Repository, backup: &str, db_hash: &str, db_size: u64) -> Result<()> {
    let obj = ProofObject {
        version: FORMAT_VERSION,
        db_hash: db_hash.to_string(),
        checked_ms: format::now_ms(),
        backup: backup.to_string(),
        db_size,
        sqlite_version: rusqlite::version().to_string(),
    };
    let json = serde_json::to_vec(&obj).map_err(|e| RepoError::Invalid(e.to_string()))?;
    let sealed = repo.crypto.seal(DOMAIN_PROOF, json)?;
    let store = &repo.store;
    store.block_on(store.put(&format::proof_key(db_hash), Bytes::from(sealed)))
}

pub(crate) fn proof(repo: &Repository, db_hash: &str) -> Result<Option<Proof>> {
    if db_hash.len() != 64 || !db_hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(RepoError::Invalid(format!(
            "{db_hash:?} is not a database hash (64 hex digits)"
        )));
    }
    let key = format::proof_key(db_hash);
    let store = &repo.store;
    let Some(b) = store.block_on(store.get(&key))? else {
        return Ok(None);
    };
    let json = repo
        .crypto
        .open(DOMAIN_PROOF, &b)
        .map_err(|r| RepoError::corrupt(&key, r))?;
    format::check_version(&key, &json)?;
    let obj: ProofObject = serde_json::from_slice(&json)
        .map_err(|e| RepoError::corrupt(&key, format!("unreadable proof: {e}")))?;
    if obj.db_hash != db_hash {
        return Err(RepoError::corrupt(&key, "names another database hash"));
    }
    Ok(Some(Proof {
        db_hash: obj.db_hash,
        checked_ms: obj.checked_ms,
        backup: obj.backup,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(v: &[(&str, u64)]) -> BTreeMap<String, u64> {
        v.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    }

    #[test]
    fn row_count_comparison_names_every_difference() {
        let at = counts(&[("a", 10), ("b", 5), ("gone", 1)]);
        assert!(compare_row_counts(&at, &at).is_empty());
        let now = counts(&[("a", 9), ("b", 5), ("new", 3)]);
        assert_eq!(
            compare_row_counts(&at, &now),
            vec![
                "table a: 10 rows at backup, 9 now".to_string(),
                "table gone: 1 rows at backup, missing now".to_string(),
                "table new: not present at backup, 3 rows now".to_string(),
            ]
        );
    }
}
