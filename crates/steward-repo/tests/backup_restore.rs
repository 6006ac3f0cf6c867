//! Backups and restores on a local repository: round trip, incrementals, deduplication
//! across databases, online snapshots under concurrent writers, rollback-journal databases.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use steward_repo::{Phase, RepoError, RestoreOptions};

use crate::util::*;

#[test]
fn full_backup_restores_byte_identical() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 3000);
    checkpoint(&conn);
    let repo = local_repo(&dir.path().join("repo"), None);

    let progress = std::sync::Mutex::new(Vec::new());
    let meta = [("instance".to_string(), "crm".to_string())].into();
    let b = repo
        .backup_sqlite(&db, meta, &|p| progress.lock().unwrap().push(p))
        .unwrap();
    assert_eq!(b.journal_mode, "wal");
    assert_eq!(b.chunks_reused, 0);
    assert!(b.chunks_new > 0 && b.bytes_added > 0);
    let p = progress.into_inner().unwrap();
    assert!(p.windows(2).all(|w| w[0].bytes_done <= w[1].bytes_done));
    let last = p.last().unwrap();
    assert_eq!(
        (last.phase, last.bytes_done),
        (Phase::Backup, last.bytes_total)
    );
    assert_eq!(last.bytes_total, b.bytes_read);

    let listed = repo.list_backups().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].metadata["instance"], "crm");
    assert_eq!(listed[0].page_size, b.page_size);
    // The whole-database checksum is plain blake3 of the file (what `b3sum` prints).
    let file_hash = blake3::hash(&std::fs::read(&db).unwrap());
    assert_eq!(listed[0].db_hash, file_hash.to_hex().as_str());

    let target = dir.path().join("restored.db");
    let r = repo
        .restore(&b.id, &target, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert!(r.integrity_checked);
    assert_eq!(r.bytes_written, b.bytes_read);
    assert_eq!(std::fs::read(&db).unwrap(), std::fs::read(&target).unwrap());
    // No temporary files are left beside the target.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");
}

#[test]
fn incremental_backup_stores_only_changed_pages() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 4000);
    let repo = local_repo(&dir.path().join("repo"), None);
    let first = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let before = dump(&db);

    conn.execute(
        "UPDATE customer SET notes = 'changed' WHERE id % 400 = 0",
        [],
    )
    .unwrap();
    let second = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    assert!(second.chunks_reused > 0);
    assert!(
        second.chunks_new * 5 < second.chunks_total,
        "incremental stored {} of {} chunks",
        second.chunks_new,
        second.chunks_total
    );
    assert!(second.bytes_added * 4 < first.bytes_added);

    let t1 = dir.path().join("one.db");
    let t2 = dir.path().join("two.db");
    repo.restore(&first.id, &t1, &RestoreOptions::default(), &quiet)
        .unwrap();
    repo.restore(&second.id, &t2, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert_eq!(dump(&t1), before);
    assert_eq!(dump(&t2), dump(&db));
}

#[test]
fn a_copy_of_a_database_shares_all_its_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let prod = dir.path().join("prod.db");
    let conn = make_db(&prod, 2000);
    checkpoint(&conn);
    let repo = local_repo(&dir.path().join("repo"), None);
    let a = repo.backup_sqlite(&prod, no_meta(), &quiet).unwrap();
    // A sandbox restored from production, then backed up as another instance.
    let sandbox = dir.path().join("sandbox.db");
    repo.restore(&a.id, &sandbox, &RestoreOptions::default(), &quiet)
        .unwrap();
    let b = repo.backup_sqlite(&sandbox, no_meta(), &quiet).unwrap();
    assert_eq!(b.chunks_new, 0);
    assert_eq!(b.chunks_reused, b.chunks_total);
}

#[test]
fn restore_refuses_to_overwrite_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    make_db(&db, 500);
    let repo = local_repo(&dir.path().join("repo"), None);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let target = dir.path().join("existing.db");
    std::fs::write(&target, b"precious").unwrap();
    let err = repo
        .restore(&b.id, &target, &RestoreOptions::default(), &quiet)
        .unwrap_err();
    assert!(matches!(err, RepoError::TargetExists(_)), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");

    let opts = RestoreOptions {
        overwrite: true,
        ..Default::default()
    };
    repo.restore(&b.id, &target, &opts, &quiet).unwrap();
    assert_eq!(dump(&target), dump(&db));

    let err = repo
        .restore(
            "20990101T000000.000Z-00000000",
            &dir.path().join("x.db"),
            &opts,
            &quiet,
        )
        .unwrap_err();
    assert!(matches!(err, RepoError::BackupNotFound(_)), "{err}");
}

/// The snapshot is exactly one committed state while a writer keeps committing, and the
/// writer is never held up for long.
#[test]
fn online_snapshot_is_one_committed_state_while_writers_continue() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("live.db");
    let conn = make_db(&db, 6000);
    drop(conn);
    let repo = local_repo(&dir.path().join("repo"), None);

    let stop = Arc::new(AtomicBool::new(false));
    let commits = Arc::new(AtomicU64::new(0));
    let max_stall_us = Arc::new(AtomicU64::new(0));
    let writer = {
        let (db, stop, commits, max_stall_us) = (
            db.clone(),
            stop.clone(),
            commits.clone(),
            max_stall_us.clone(),
        );
        std::thread::spawn(move || {
            let conn = Connection::open(&db).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut rng = Rng(99);
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                // Each transaction adds a row and bumps the counter: a consistent snapshot
                // has counter == number of rows added since it was zero.
                conn.execute_batch(&format!(
                    "BEGIN IMMEDIATE;
                     INSERT INTO customer(name, email, notes) VALUES ('w', 'w@x', '{}');
                     UPDATE counter SET n = n + 1;
                     COMMIT;",
                    rng.text(30)
                ))
                .unwrap();
                let us = t.elapsed().as_micros() as u64;
                max_stall_us.fetch_max(us, Ordering::Relaxed);
                commits.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while commits.load(Ordering::Relaxed) < 20 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let during_before = commits.load(Ordering::Relaxed);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let during = commits.load(Ordering::Relaxed) - during_before;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    eprintln!(
        "writer: {during} commits during a {:?} backup, longest commit {} us, snapshot pinned in {:?}",
        b.duration,
        max_stall_us.load(Ordering::Relaxed),
        b.snapshot_open
    );
    assert!(during > 0, "the writer was blocked during the backup");

    let target = dir.path().join("snap.db");
    repo.restore(&b.id, &target, &RestoreOptions::default(), &quiet)
        .unwrap();
    let c = Connection::open(&target).unwrap();
    let (n, rows): (i64, i64) = c
        .query_row(
            "SELECT (SELECT n FROM counter), (SELECT count(*) FROM customer WHERE name = 'w')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(n, rows, "the snapshot mixes two committed states");
    assert!(n > 0);
}

/// Rollback-journal databases are backed up consistently too; the read lock holds writers
/// back while the pages are read, and the summary says which journal mode was found.
#[test]
fn rollback_journal_database_is_backed_up() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("legacy.db");
    let conn = make_db(&db, 1500);
    conn.execute_batch("PRAGMA journal_mode=DELETE;").unwrap();
    drop(conn);
    let repo = local_repo(&dir.path().join("repo"), None);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    assert_eq!(b.journal_mode, "delete");
    let target = dir.path().join("legacy-restored.db");
    repo.restore(&b.id, &target, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert_eq!(dump(&target), dump(&db));
}

#[test]
fn delete_backup_removes_it_from_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    make_db(&db, 300);
    let repo = local_repo(&dir.path().join("repo"), None);
    let a = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    assert_eq!(repo.list_backups().unwrap().len(), 2);
    repo.delete_backup(&a.id).unwrap();
    let left: Vec<_> = repo
        .list_backups()
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, vec![b.id]);
    assert!(matches!(
        repo.delete_backup(&a.id),
        Err(RepoError::BackupNotFound(_))
    ));
}

/// Databases of one chunk, and page sizes other than 4096, round-trip byte for byte.
#[test]
fn tiny_databases_and_other_page_sizes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(&dir.path().join("repo"), None);
    for (name, page_size, rows) in [
        ("one-page", 4096, 0),
        ("p512", 512, 300),
        ("p64k", 65536, 300),
    ] {
        let db = dir.path().join(format!("{name}.db"));
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(&format!(
            "PRAGMA page_size={page_size}; PRAGMA user_version=7;"
        ))
        .unwrap();
        if rows > 0 {
            conn.execute_batch("CREATE TABLE t(x TEXT)").unwrap();
            for i in 0..rows {
                conn.execute(
                    "INSERT INTO t VALUES (?1)",
                    [format!("row {i} {}", "x".repeat(i % 50))],
                )
                .unwrap();
            }
        }
        drop(conn);
        let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
        assert_eq!(b.page_size, page_size);
        let t = dir.path().join(format!("{name}-restored.db"));
        repo.restore(&b.id, &t, &RestoreOptions::default(), &quiet)
            .unwrap();
        assert_eq!(
            std::fs::read(&db).unwrap(),
            std::fs::read(&t).unwrap(),
            "{name}"
        );
    }
}
