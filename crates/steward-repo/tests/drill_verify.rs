//! Verify modes that find and name damage (flipped byte, truncated pack, deleted pack), restore
//! drills and their proofs, restores that trust a proof, and row counts recorded at backup.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use steward_repo::{
    DrillOptions, Integrity, Phase, Progress, RepoError, Repository, RestoreOptions, VerifyMode,
};

use crate::util::*;

/// A repository with one backup of a small database, and the backup's id.
fn one_backup(dir: &Path, rows: usize) -> (Repository, PathBuf, PathBuf, String) {
    let root = dir.join("repo");
    let db = dir.join("crm.db");
    make_db(&db, rows);
    let repo = local_repo(&root, None);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    (repo, root, db, b.id)
}

fn pack_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

fn count(db: &Path, table: &str) -> u64 {
    Connection::open(db)
        .unwrap()
        .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap() as u64
}

/// The chunk ids of a backup's first pack, from its (plain) index: what a problem may name.
fn chunks_of_pack(root: &Path, pack: &str) -> Vec<String> {
    let idx = plain_body(&std::fs::read(root.join("index").join(pack)).unwrap());
    // magic 8, version 4, pack 32, pack_len 8, frames 4, then per frame 8+4+4+4 and 36/chunk.
    let mut pos = 8 + 4 + 32 + 8;
    let nframes = u32::from_le_bytes(idx[pos..pos + 4].try_into().unwrap());
    pos += 4;
    let mut out = Vec::new();
    for _ in 0..nframes {
        pos += 16;
        let n = u32::from_le_bytes(idx[pos..pos + 4].try_into().unwrap());
        pos += 4;
        for _ in 0..n {
            out.push(hex(&idx[pos..pos + 32]));
            pos += 36;
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn names_a_chunk_of(problem: &str, chunks: &[String]) -> bool {
    chunks
        .iter()
        .any(|c| problem.contains(&format!("chunk {c}")))
}

#[test]
fn a_flipped_byte_is_found_and_named_by_full_and_sampled_verify_not_by_structure() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, root, _db, id) = one_backup(dir.path(), 3000);
    let pack = files_under(&root, "data")[0].clone();
    let name = pack_name(&pack);
    let chunks = chunks_of_pack(&root, &name);
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();

    for mode in [VerifyMode::Full, VerifyMode::Sampled(1.0)] {
        let r = repo.verify(Some(&id), mode, &quiet).unwrap();
        let v = &r.backups[0];
        assert!(!v.is_ok(), "{mode:?}: {v:?}");
        assert_eq!(v.id, id);
        assert!(
            v.corrupt_chunks > 0 && v.corrupt_chunks < v.chunks_needed,
            "{v:?}"
        );
        assert_eq!(v.missing_chunks, 0);
        assert_eq!(v.damaged_packs, vec![name.clone()], "{mode:?}");
        assert!(
            v.problems
                .iter()
                .any(|p| p.contains(&name) && names_a_chunk_of(p, &chunks)),
            "{mode:?}: {:?}",
            v.problems
        );
    }
    // Structure reads no chunk data, so it cannot see a flipped byte.
    let s = repo
        .verify(Some(&id), VerifyMode::Structure, &quiet)
        .unwrap();
    assert!(s.is_ok(), "{s:?}");
    assert_eq!(s.backups[0].bytes_read, 0);
    assert_eq!(s.backups[0].chunks_checked, 0);
}

#[test]
fn a_truncated_pack_is_found_by_structure_and_full_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, root, _db, id) = one_backup(dir.path(), 3000);
    let pack = files_under(&root, "data")[0].clone();
    let name = pack_name(&pack);
    let chunks = chunks_of_pack(&root, &name);
    let len = std::fs::metadata(&pack).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    for mode in [VerifyMode::Structure, VerifyMode::Full] {
        let v = &repo.verify(Some(&id), mode, &quiet).unwrap().backups[0];
        assert!(!v.is_ok());
        assert!(v.corrupt_chunks > 0, "{mode:?}: {v:?}");
        assert_eq!(v.damaged_packs, vec![name.clone()]);
        assert!(
            v.problems.iter().any(|p| p.contains(&name)
                && p.contains("truncated")
                && names_a_chunk_of(p, &chunks)),
            "{mode:?}: {:?}",
            v.problems
        );
        if mode == VerifyMode::Structure {
            assert_eq!(v.bytes_read, 0);
        }
    }
}

#[test]
fn a_deleted_pack_is_found_by_structure_and_full_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, root, _db, id) = one_backup(dir.path(), 3000);
    let pack = files_under(&root, "data")[0].clone();
    let name = pack_name(&pack);
    let chunks = chunks_of_pack(&root, &name);
    std::fs::remove_file(&pack).unwrap();

    for mode in [VerifyMode::Structure, VerifyMode::Full] {
        let v = &repo.verify(Some(&id), mode, &quiet).unwrap().backups[0];
        assert!(!v.is_ok());
        assert_eq!(v.missing_chunks, v.chunks_needed, "{mode:?}: {v:?}");
        assert_eq!(v.damaged_packs, vec![name.clone()]);
        assert!(
            v.problems.iter().any(|p| p.contains(&name)
                && p.contains("missing")
                && names_a_chunk_of(p, &chunks)),
            "{mode:?}: {:?}",
            v.problems
        );
    }
}

#[test]
fn verify_many_reads_shared_chunks_once_and_refuses_unknown_ids() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 3000);
    let repo = local_repo(&root, None);
    let a = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    conn.execute("UPDATE customer SET notes = 'v2' WHERE id % 500 = 0", [])
        .unwrap();
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let ids = vec![a.id.clone(), b.id.clone()];
    let r = repo.verify_many(&ids, VerifyMode::Full, &quiet).unwrap();
    assert!(r.is_ok(), "{r:?}");
    let (va, vb) = (&r.backups[0], &r.backups[1]);
    assert_eq!(va.chunks_checked, va.chunks_needed);
    assert_eq!(vb.chunks_checked, vb.chunks_needed);
    // The second backup shares most chunks with the first: only its new frames are read.
    assert!(vb.bytes_read * 4 < va.bytes_read, "{va:?} {vb:?}");

    let err = repo
        .verify_many(
            &["20990101T000000.000Z-deadbeef".to_string()],
            VerifyMode::Structure,
            &quiet,
        )
        .unwrap_err();
    assert!(matches!(err, RepoError::BackupNotFound(_)), "{err}");
}

#[test]
fn an_unreachable_store_is_an_error_not_damage() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    make_db(&db, 2000);
    let faults = FaultStore::new(Repository::local_store(dir.path().join("repo")).unwrap());
    let repo = Repository::init(faults.clone(), Default::default())
        .unwrap()
        .with_retry(fast_retry());
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    faults.only_under(Some("data/"));
    faults.arm(1, true);
    let err = repo
        .verify(Some(&b.id), VerifyMode::Full, &quiet)
        .unwrap_err();
    assert!(matches!(err, RepoError::Store(_)), "{err}");
    let scratch = dir.path().join("scratch");
    let err = repo
        .drill(&b.id, &scratch, &DrillOptions::default(), &quiet)
        .unwrap_err();
    assert!(matches!(err, RepoError::Store(_)), "{err}");
    assert!(empty(&scratch));
    faults.arm(0, false);
    faults.only_under(None);
    assert!(
        repo.verify(Some(&b.id), VerifyMode::Full, &quiet)
            .unwrap()
            .is_ok()
    );
}

#[test]
fn a_drill_passes_records_counts_and_a_proof_that_a_restore_then_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _root, db, id) = one_backup(dir.path(), 3000);
    let m = repo.manifest(&id).unwrap();
    let recorded = m.row_counts.clone().expect("row counts recorded");
    assert_eq!(
        recorded,
        BTreeMap::from([("counter".to_string(), 1), ("customer".to_string(), 3000)])
    );
    assert!(repo.proof(&m.db_hash).unwrap().is_none());

    // Without a proof the default restore runs integrity_check now.
    let phases = Mutex::new(Vec::new());
    let record = |p: Progress| phases.lock().unwrap().push(p.phase);
    let s = repo
        .restore(
            &id,
            &dir.path().join("a.db"),
            &RestoreOptions::default(),
            &record,
        )
        .unwrap();
    assert_eq!(s.integrity, Integrity::CheckedNow);
    assert!(s.integrity_checked);
    assert!(phases.lock().unwrap().contains(&Phase::Check));

    let scratch = dir.path().join("scratch");
    let r = repo
        .drill(&id, &scratch, &DrillOptions::default(), &quiet)
        .unwrap();
    assert!(r.passed, "{r:?}");
    assert!(r.hash_ok && r.integrity_ok);
    assert_eq!(r.row_counts_ok, Some(true));
    assert_eq!(r.row_counts, recorded);
    assert_eq!(r.db_hash, m.db_hash);
    assert_eq!(r.bytes, m.db_size);
    assert!(r.problems.is_empty());
    assert!(empty(&scratch), "the scratch file was left behind");
    let proof = repo.proof(&m.db_hash).unwrap().expect("a proof");
    assert_eq!(proof.backup, id);
    assert_eq!(proof.db_hash, m.db_hash);

    phases.lock().unwrap().clear();
    let s = repo
        .restore(
            &id,
            &dir.path().join("b.db"),
            &RestoreOptions::default(),
            &record,
        )
        .unwrap();
    assert_eq!(
        s.integrity,
        Integrity::ProvenByDrill {
            checked_ms: proof.checked_ms
        }
    );
    assert!(!s.integrity_checked);
    assert!(!phases.lock().unwrap().contains(&Phase::Check));
    assert_eq!(dump(&dir.path().join("b.db")), dump(&db));

    // trust_proof: false runs it anyway; integrity_check: false without a proof is NotChecked.
    let opts = RestoreOptions {
        trust_proof: false,
        ..Default::default()
    };
    let s = repo
        .restore(&id, &dir.path().join("c.db"), &opts, &quiet)
        .unwrap();
    assert_eq!(s.integrity, Integrity::CheckedNow);
    let opts = RestoreOptions {
        trust_proof: false,
        integrity_check: false,
        ..Default::default()
    };
    let s = repo
        .restore(&id, &dir.path().join("d.db"), &opts, &quiet)
        .unwrap();
    assert_eq!(s.integrity, Integrity::NotChecked);

    assert!(matches!(repo.proof("nothex"), Err(RepoError::Invalid(_))));
}

/// A database whose index disagrees with its table: the bytes are intact (hash passes) but
/// `PRAGMA integrity_check` fails.
fn make_inconsistent_db(path: &Path) {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE t(a INTEGER, b INTEGER);
         CREATE INDEX t_a ON t(a);
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
         INSERT INTO t SELECT i, 1000 - i FROM n;
         PRAGMA writable_schema = ON;
         UPDATE sqlite_schema SET sql = 'CREATE INDEX t_a ON t(b)' WHERE name = 't_a';
         PRAGMA writable_schema = OFF;",
    )
    .unwrap();
    drop(conn);
    let rows: Vec<String> = {
        let c = Connection::open(path).unwrap();
        let mut st = c.prepare("PRAGMA integrity_check").unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_ne!(
        rows,
        vec!["ok".to_string()],
        "the test database should be inconsistent"
    );
}

#[test]
fn a_restore_with_a_proof_really_skips_integrity_check_and_a_failing_drill_writes_none() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let db = dir.path().join("bad.db");
    make_inconsistent_db(&db);
    let repo = local_repo(&root, None);
    let id = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap().id;
    let hash = repo.manifest(&id).unwrap().db_hash;

    let err = repo
        .restore(
            &id,
            &dir.path().join("a.db"),
            &RestoreOptions::default(),
            &quiet,
        )
        .unwrap_err();
    assert!(matches!(err, RepoError::CheckFailed(_)), "{err}");
    assert!(!dir.path().join("a.db").exists());

    let scratch = dir.path().join("scratch");
    let r = repo
        .drill(&id, &scratch, &DrillOptions::default(), &quiet)
        .unwrap();
    assert!(!r.passed && r.hash_ok && !r.integrity_ok, "{r:?}");
    assert!(
        r.problems.iter().any(|p| p.starts_with("integrity_check:")),
        "{r:?}"
    );
    assert!(repo.proof(&hash).unwrap().is_none());
    assert!(empty(&scratch));

    // A proof for these bytes (hand-made here: no drill would write one) makes the default
    // restore skip integrity_check, which is how it gets its speed: the file is moved into
    // place although integrity_check would have failed. trust_proof: false still catches it.
    let proof = format!(r#"{{"version":1,"db_hash":"{hash}","checked_ms":1234,"backup":"{id}"}}"#);
    std::fs::create_dir_all(root.join("proofs")).unwrap();
    std::fs::write(
        root.join("proofs").join(&hash),
        plain_seal("steward-repo proof", proof.into_bytes()),
    )
    .unwrap();
    let s = repo
        .restore(
            &id,
            &dir.path().join("b.db"),
            &RestoreOptions::default(),
            &quiet,
        )
        .unwrap();
    assert_eq!(s.integrity, Integrity::ProvenByDrill { checked_ms: 1234 });
    let opts = RestoreOptions {
        trust_proof: false,
        ..Default::default()
    };
    let err = repo
        .restore(&id, &dir.path().join("c.db"), &opts, &quiet)
        .unwrap_err();
    assert!(matches!(err, RepoError::CheckFailed(_)), "{err}");

    // A proof naming another hash is refused as corrupt, not trusted.
    let other = "0".repeat(64);
    std::fs::copy(
        root.join("proofs").join(&hash),
        root.join("proofs").join(&other),
    )
    .unwrap();
    assert!(matches!(
        repo.proof(&other),
        Err(RepoError::CorruptObject { .. })
    ));
}

#[test]
fn a_drill_over_a_corrupt_pack_fails_names_chunk_and_pack_and_writes_no_proof() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, root, _db, id) = one_backup(dir.path(), 3000);
    let hash = repo.manifest(&id).unwrap().db_hash;
    let pack = files_under(&root, "data")[0].clone();
    let name = pack_name(&pack);
    let chunks = chunks_of_pack(&root, &name);
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();

    let scratch = dir.path().join("scratch");
    let r = repo
        .drill(&id, &scratch, &DrillOptions::default(), &quiet)
        .unwrap();
    assert!(!r.passed && !r.hash_ok, "{r:?}");
    assert!(
        r.problems
            .iter()
            .any(|p| p.contains(&name) && names_a_chunk_of(p, &chunks)),
        "{:?}",
        r.problems
    );
    assert!(repo.proof(&hash).unwrap().is_none());
    assert!(empty(&scratch));

    // A deleted pack: also a failed drill, not an error.
    std::fs::remove_file(&pack).unwrap();
    let r = repo
        .drill(&id, &scratch, &DrillOptions::default(), &quiet)
        .unwrap();
    assert!(!r.passed, "{r:?}");
    assert!(r.problems.iter().any(|p| p.contains(&name)), "{r:?}");
    assert!(empty(&scratch));
}

/// Rewrites a backup's (plain) manifest with `edit` applied to its JSON.
fn edit_manifest(root: &Path, id: &str, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = root.join("backups").join(id);
    let mut v: serde_json::Value =
        serde_json::from_slice(&plain_body(&std::fs::read(&path).unwrap())).unwrap();
    edit(&mut v);
    std::fs::write(
        &path,
        plain_seal("steward-repo manifest", serde_json::to_vec(&v).unwrap()),
    )
    .unwrap();
}

#[test]
fn a_drill_reports_row_count_differences_and_tolerates_old_manifests() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, root, _db, id) = one_backup(dir.path(), 500);
    let hash = repo.manifest(&id).unwrap().db_hash;
    let scratch = dir.path().join("scratch");

    edit_manifest(&root, &id, |v| {
        v["row_counts"]["customer"] = serde_json::json!(501);
    });
    let r = repo
        .drill(&id, &scratch, &DrillOptions::default(), &quiet)
        .unwrap();
    assert!(!r.passed && r.hash_ok && r.integrity_ok, "{r:?}");
    assert_eq!(r.row_counts_ok, Some(false));
    assert_eq!(
        r.problems,
        vec!["table customer: 501 rows at backup, 500 now".to_string()]
    );
    assert!(repo.proof(&hash).unwrap().is_none());

    // A manifest written before row counts existed: the drill checks the rest.
    edit_manifest(&root, &id, |v| {
        v.as_object_mut().unwrap().remove("row_counts");
    });
    assert!(repo.manifest(&id).unwrap().row_counts.is_none());
    let r = repo
        .drill(&id, &scratch, &DrillOptions::default(), &quiet)
        .unwrap();
    assert!(r.passed, "{r:?}");
    assert_eq!(r.row_counts_ok, None);
    assert_eq!(r.row_counts["customer"], 500);
    assert!(repo.proof(&hash).unwrap().is_some());
    assert!(empty(&scratch));
}

#[test]
fn row_counts_are_taken_in_the_backup_snapshot_and_skip_internal_and_virtual_tables() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 40_000);
    conn.execute_batch(
        "CREATE TABLE tag(name TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID;
         INSERT INTO tag VALUES ('a', 1), ('b', 2), ('c', 3);
         CREATE TABLE seq(id INTEGER PRIMARY KEY AUTOINCREMENT, x);
         INSERT INTO seq(x) VALUES (1), (2);
         CREATE VIRTUAL TABLE doc USING fts5(body);
         INSERT INTO doc VALUES ('hello world'), ('restore drill');
         ANALYZE;",
    )
    .unwrap();
    let repo = local_repo(&dir.path().join("repo"), None);
    // A writer adds rows while the backup reads: they are not in the snapshot, nor counted.
    let writer = Mutex::new(Connection::open(&db).unwrap());
    let wrote = AtomicBool::new(false);
    let b = repo
        .backup_sqlite(&db, no_meta(), &|_| {
            if !wrote.swap(true, Ordering::SeqCst) {
                fill(&writer.lock().unwrap(), 100, 9);
            }
        })
        .unwrap();
    assert!(wrote.load(Ordering::SeqCst));
    assert_eq!(count(&db, "customer"), 40_100);

    let counts = repo.manifest(&b.id).unwrap().row_counts.unwrap();
    assert_eq!(counts["customer"], 40_000);
    assert_eq!(counts["counter"], 1);
    assert_eq!(counts["tag"], 3);
    assert_eq!(counts["seq"], 2);
    assert!(
        !counts.contains_key("doc"),
        "virtual table counted: {counts:?}"
    );
    assert!(
        counts.contains_key("doc_data"),
        "fts5 shadow table not counted: {counts:?}"
    );
    assert!(
        counts.keys().all(|k| !k.starts_with("sqlite_")),
        "internal tables counted: {counts:?}"
    );
    let target = dir.path().join("restored.db");
    repo.restore(&b.id, &target, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert_eq!(count(&target, "customer"), 40_000);
    let r = repo
        .drill(
            &b.id,
            &dir.path().join("scratch"),
            &DrillOptions::default(),
            &quiet,
        )
        .unwrap();
    assert!(r.passed && r.row_counts_ok == Some(true), "{r:?}");
}

#[test]
fn a_drill_uses_one_thread_by_default() {
    assert_eq!(DrillOptions::default().threads, 1);
    let dir = tempfile::tempdir().unwrap();
    let (repo, _root, _db, id) = one_backup(dir.path(), 40_000);
    let repo = repo.with_threads(2);
    let scratch = dir.path().join("scratch");
    let threads_used = |opts: &DrillOptions| {
        let seen = Mutex::new(HashSet::new());
        let r = repo
            .drill(&id, &scratch, opts, &|p| {
                if p.phase == Phase::Restore {
                    seen.lock().unwrap().insert(std::thread::current().id());
                }
            })
            .unwrap();
        assert!(r.passed, "{r:?}");
        seen.into_inner().unwrap().len()
    };
    assert_eq!(threads_used(&DrillOptions::default()), 1);
    // The same observation sees a second worker when one is allowed.
    let two = DrillOptions {
        threads: 2,
        ..Default::default()
    };
    assert!((0..5).any(|_| threads_used(&two) == 2));
    assert!(empty(&scratch));
}

#[test]
fn a_cancelled_drill_stops_removes_its_file_and_writes_no_proof() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, _root, _db, id) = one_backup(dir.path(), 40_000);
    let hash = repo.manifest(&id).unwrap().db_hash;
    let scratch = dir.path().join("scratch");
    // Cancelled while restoring, while checking, and before it starts.
    for at in [Some(Phase::Restore), Some(Phase::Check), None] {
        let cancel = Arc::new(AtomicBool::new(at.is_none()));
        let opts = DrillOptions {
            cancel: Some(cancel.clone()),
            ..Default::default()
        };
        let saw_file = AtomicBool::new(false);
        let err = repo
            .drill(&id, &scratch, &opts, &|p| {
                if Some(p.phase) == at {
                    saw_file.store(!empty(&scratch), Ordering::SeqCst);
                    cancel.store(true, Ordering::SeqCst);
                }
            })
            .unwrap_err();
        assert!(matches!(err, RepoError::Cancelled), "{at:?}: {err}");
        assert_eq!(saw_file.load(Ordering::SeqCst), at.is_some());
        assert!(empty(&scratch), "{at:?}: scratch file left behind");
        assert!(repo.proof(&hash).unwrap().is_none());
    }
    // Unknown backups are an error, not a failed drill.
    let err = repo
        .drill(
            "20990101T000000.000Z-deadbeef",
            &scratch,
            &DrillOptions::default(),
            &quiet,
        )
        .unwrap_err();
    assert!(matches!(err, RepoError::BackupNotFound(_)), "{err}");
}

#[test]
fn prune_keeps_proofs_of_live_backups_and_deletes_the_others() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 2000);
    let repo = local_repo(&dir.path().join("repo"), None);
    let a = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    fill(&conn, 100, 3);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let scratch = dir.path().join("scratch");
    for id in [&a.id, &b.id] {
        assert!(
            repo.drill(id, &scratch, &DrillOptions::default(), &quiet)
                .unwrap()
                .passed
        );
    }
    let (ha, hb) = (
        repo.manifest(&a.id).unwrap().db_hash,
        repo.manifest(&b.id).unwrap().db_hash,
    );
    assert_ne!(ha, hb);
    let s = repo.prune(&prune_now()).unwrap();
    assert_eq!(s.proofs_deleted, 0);
    repo.delete_backup(&a.id).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let s = repo.prune(&prune_now()).unwrap();
    assert_eq!(s.proofs_deleted, 1);
    assert!(repo.proof(&ha).unwrap().is_none());
    assert!(repo.proof(&hb).unwrap().is_some());
    assert_eq!(repo.stats().unwrap().backups, 1);
}

#[test]
fn a_drill_removes_what_a_killed_drill_left_and_keeps_a_running_drills_files() {
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let (repo, _root, _db, id) = one_backup(dir.path(), 500);
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    // A drill killed with its process: its lock file is no longer locked.
    std::fs::write(scratch.join(".drill-old-1234.lock"), b"").unwrap();
    std::fs::write(scratch.join(".drill-old-1234.db"), b"half a database").unwrap();
    // A drill still running elsewhere: its lock file is locked.
    std::fs::write(scratch.join(".drill-busy-5678.db"), b"in use").unwrap();
    let held = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(scratch.join(".drill-busy-5678.lock"))
        .unwrap();
    assert_eq!(
        unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    // Someone else's file is never touched.
    std::fs::write(scratch.join("notes.txt"), b"mine").unwrap();

    let r = repo
        .drill(&id, &scratch, &DrillOptions::default(), &quiet)
        .unwrap();
    assert!(r.passed, "{r:?}");
    let mut left: Vec<String> = std::fs::read_dir(&scratch)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![".drill-busy-5678.db", ".drill-busy-5678.lock", "notes.txt"]
    );
    drop(held);
}

#[test]
fn a_damaged_proof_is_not_trusted_and_a_damaged_manifest_fails_the_drill() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, root, _db, id) = one_backup(dir.path(), 500);
    let hash = repo.manifest(&id).unwrap().db_hash;
    let scratch = dir.path().join("scratch");
    assert!(
        repo.drill(&id, &scratch, &DrillOptions::default(), &quiet)
            .unwrap()
            .passed
    );
    let proof = root.join("proofs").join(&hash);
    let mut bytes = std::fs::read(&proof).unwrap();
    bytes[3] ^= 0x20;
    std::fs::write(&proof, bytes).unwrap();
    assert!(matches!(
        repo.proof(&hash),
        Err(RepoError::CorruptObject { .. })
    ));
    let s = repo
        .restore(
            &id,
            &dir.path().join("a.db"),
            &RestoreOptions::default(),
            &quiet,
        )
        .unwrap();
    assert_eq!(s.integrity, Integrity::CheckedNow);

    let manifest = root.join("backups").join(&id);
    let mut bytes = std::fs::read(&manifest).unwrap();
    bytes[10] ^= 0x20;
    std::fs::write(&manifest, bytes).unwrap();
    let r = repo
        .drill(&id, &scratch, &DrillOptions::default(), &quiet)
        .unwrap();
    assert!(!r.passed, "{r:?}");
    assert!(r.problems[0].contains(&format!("backups/{id}")), "{r:?}");
    assert!(empty(&scratch));
}
