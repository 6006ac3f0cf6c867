//! Every way a restore writes its file gives the same bytes: frames that fill a stretch of
//! the file, frames with holes (an incremental backup), chunks used at several places (zeroed
//! free pages), a last chunk that is not a whole number of 4 KiB blocks; written through the
//! page cache (integrity_check now, drills) or `O_DIRECT` (no check now).

use std::path::Path;

use rusqlite::Connection;
use steward_repo::{DrillOptions, Integrity, Repository, RestoreOptions};

use crate::util::*;

fn restore_both_ways(repo: &Repository, id: &str, expect: &[u8], dir: &Path, tag: &str) {
    let checked = dir.join(format!("{tag}-checked.db"));
    let s = repo
        .restore(id, &checked, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert_eq!(s.integrity, Integrity::CheckedNow);
    assert!(
        std::fs::read(&checked).unwrap() == expect,
        "{tag}: checked restore differs"
    );

    let direct = dir.join(format!("{tag}-direct.db"));
    let opts = RestoreOptions {
        integrity_check: false,
        trust_proof: false,
        ..Default::default()
    };
    let s = repo.restore(id, &direct, &opts, &quiet).unwrap();
    assert_eq!(s.integrity, Integrity::NotChecked);
    assert!(
        std::fs::read(&direct).unwrap() == expect,
        "{tag}: direct restore differs"
    );
}

#[test]
fn full_and_incremental_restores_are_byte_identical_whichever_way_they_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("odd.db");
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA page_size = 512; PRAGMA journal_mode = WAL; PRAGMA secure_delete = ON;
         CREATE TABLE big(id INTEGER PRIMARY KEY, body TEXT);",
    )
    .unwrap();
    let mut rng = Rng(11);
    {
        let tx = conn.unchecked_transaction().unwrap();
        for _ in 0..20_000 {
            tx.execute("INSERT INTO big(body) VALUES (?1)", [rng.text(12)])
                .unwrap();
        }
        tx.commit().unwrap();
    }
    // Zeroed free pages: the same chunk at many places.
    conn.execute("DELETE FROM big WHERE id BETWEEN 5000 AND 9000", [])
        .unwrap();
    // A size that is not a whole number of 4 KiB blocks.
    let mut n = 0;
    loop {
        checkpoint(&conn);
        let len = std::fs::metadata(&db).unwrap().len();
        if !len.is_multiple_of(4096) {
            break;
        }
        n += 1;
        conn.execute("INSERT INTO big(body) VALUES (?1)", [rng.text(40 + n)])
            .unwrap();
    }
    let repo = local_repo(&dir.path().join("repo"), None);
    let full = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    assert!(
        full.chunks_total > full.chunks_new,
        "no repeated chunk: {full:?}"
    );
    let full_bytes = std::fs::read(&db).unwrap();
    assert_ne!(full_bytes.len() % 4096, 0);

    // Scattered changes: the incremental's frames have holes and new frames hold chunks from
    // all over the file.
    for id in (1..20_000).step_by(1499) {
        conn.execute(
            "UPDATE big SET body = upper(body) WHERE id = ?1",
            [id as i64],
        )
        .unwrap();
    }
    checkpoint(&conn);
    let inc = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    assert!(
        inc.chunks_new >= 5 && inc.chunks_reused > inc.chunks_new * 5,
        "{inc:?}"
    );
    let inc_bytes = std::fs::read(&db).unwrap();

    restore_both_ways(&repo, &full.id, &full_bytes, dir.path(), "full");
    restore_both_ways(&repo, &inc.id, &inc_bytes, dir.path(), "inc");
    for id in [&full.id, &inc.id] {
        let r = repo
            .drill(
                id,
                &dir.path().join("scratch"),
                &DrillOptions::default(),
                &quiet,
            )
            .unwrap();
        assert!(r.passed, "{r:?}");
    }
}

#[test]
fn restores_agree_with_one_worker_and_with_many() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 20_000);
    checkpoint(&conn);
    let expect = std::fs::read(&db).unwrap();
    let root = dir.path().join("repo");
    let id = local_repo(&root, None)
        .backup_sqlite(&db, no_meta(), &quiet)
        .unwrap()
        .id;
    for threads in [1, 3, 8] {
        let repo = Repository::open(Repository::local_store(&root).unwrap(), None)
            .unwrap()
            .with_threads(threads);
        restore_both_ways(&repo, &id, &expect, dir.path(), &format!("t{threads}"));
    }
}

/// The same repository opened twice: through `local_store` (frames read with `pread`
/// straight into the workers' buffers) and through a plain `object_store` directory store
/// (frames fetched with range requests by the fetch thread).
fn both_readers(root: &Path) -> [(&'static str, Repository); 2] {
    let plain: std::sync::Arc<dyn object_store::ObjectStore> =
        std::sync::Arc::new(object_store::local::LocalFileSystem::new_with_prefix(root).unwrap());
    [
        (
            "local",
            Repository::open(Repository::local_store(root).unwrap(), None)
                .unwrap()
                .with_retry(fast_retry())
                .with_threads(1),
        ),
        (
            "object_store",
            Repository::open(plain, None)
                .unwrap()
                .with_retry(fast_retry())
                .with_threads(1),
        ),
    ]
}

#[test]
fn local_reads_restore_the_same_bytes_and_name_the_same_damage_as_range_requests() {
    for damage in ["none", "flip", "truncate", "delete"] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        let db = dir.path().join("crm.db");
        let conn = make_db(&db, 3000);
        let repo = local_repo(&root, None);
        let full = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
        conn.execute("UPDATE customer SET notes = 'v2' WHERE id % 97 = 0", [])
            .unwrap();
        let incr = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .unwrap();
        let expect = std::fs::read(&db).unwrap();
        drop(conn);

        // The full backup's pack, the largest: the full restore needs every frame in it.
        let pack = files_under(&root, "data")
            .into_iter()
            .max_by_key(|p| std::fs::metadata(p).unwrap().len())
            .unwrap();
        let name = pack.file_name().unwrap().to_string_lossy().to_string();
        match damage {
            "flip" => {
                let mut b = std::fs::read(&pack).unwrap();
                let at = b.len() / 2;
                b[at] ^= 0x40;
                std::fs::write(&pack, b).unwrap();
            }
            "truncate" => {
                let len = std::fs::metadata(&pack).unwrap().len();
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&pack)
                    .unwrap()
                    .set_len(len / 2)
                    .unwrap();
            }
            "delete" => std::fs::remove_file(&pack).unwrap(),
            _ => {}
        }

        let mut reasons = Vec::new();
        for (how, reader) in both_readers(&root) {
            for id in [&full.id, &incr.id] {
                let target = dir.path().join(format!("{how}-{id}.db"));
                let opts = RestoreOptions {
                    integrity_check: false,
                    ..Default::default()
                };
                match reader.restore(id, &target, &opts, &quiet) {
                    Ok(_) => {
                        // The incremental backup may not need the damaged frame.
                        assert!(
                            damage == "none" || id == &incr.id,
                            "{how} {damage}: a damaged pack was not noticed"
                        );
                        if id == &incr.id {
                            assert!(
                                std::fs::read(&target).unwrap() == expect,
                                "{how}: the restore differs from the source"
                            );
                        }
                    }
                    Err(steward_repo::RepoError::CorruptChunk { pack, reason, .. }) => {
                        assert_ne!(damage, "none", "{how}: {reason}");
                        assert_eq!(pack, name, "{how}: {reason}");
                        assert!(!target.exists(), "{how}: a damaged restore left its file");
                        let kind = match damage {
                            "flip" => "checksum mismatch",
                            "truncate" => "pack truncated",
                            _ => "pack is missing",
                        };
                        assert!(reason.contains(kind), "{how} {damage}: {reason}");
                        reasons.push((how, reason));
                    }
                    Err(e) => panic!("{how} {damage}: unexpected error {e}"),
                }
            }
            let v = reader
                .verify(None, steward_repo::VerifyMode::Full, &quiet)
                .unwrap();
            assert_eq!(v.is_ok(), damage == "none", "{how} {damage}: {v:?}");
            if damage != "none" {
                for b in &v.backups {
                    assert_eq!(b.damaged_packs, vec![name.clone()], "{how}: {b:?}");
                }
            }
        }
        // Both readers found the same damage in the same restores.
        let local = reasons.iter().filter(|(h, _)| *h == "local").count();
        assert_eq!(local * 2, reasons.len(), "{damage}: {reasons:?}");
        assert_eq!(local > 0, damage != "none", "{damage}: {reasons:?}");
    }
}
