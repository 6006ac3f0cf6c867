//! Verify (full and sampled) and prune, including prune while a backup is running.

use std::sync::{Arc, Barrier};

use steward_repo::{RepoError, RestoreOptions, VerifyMode};

use crate::util::*;

#[test]
fn verify_full_and_sampled_on_a_healthy_repository() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 3000);
    let repo = local_repo(&dir.path().join("repo"), None);
    repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    fill(&conn, 500, 2);
    repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let full = repo.verify(None, VerifyMode::Full, &quiet).unwrap();
    assert_eq!(full.backups.len(), 2);
    assert!(full.is_ok(), "{full:?}");
    for b in &full.backups {
        assert_eq!(b.chunks_checked, b.chunks_needed);
    }
    let sampled = repo.verify(None, VerifyMode::Sampled(0.1), &quiet).unwrap();
    assert!(sampled.is_ok());
    for b in &sampled.backups {
        assert!(
            b.chunks_checked > 0 && b.chunks_checked < b.chunks_needed,
            "{b:?}"
        );
    }
}

#[test]
fn verify_reports_missing_chunks_per_backup() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 2000);
    let repo = local_repo(&root, None);
    let first = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    conn.execute("UPDATE customer SET notes = 'x' WHERE id % 100 = 0", [])
        .unwrap();
    let second = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    // Remove the index (and so the chunks) written by the second backup only.
    let mut idx: Vec<_> = std::fs::read_dir(root.join("index"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    idx.sort_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap());
    std::fs::remove_file(idx.last().unwrap()).unwrap();

    let report = repo.verify(None, VerifyMode::Full, &quiet).unwrap();
    let by_id = |id: &str| report.backups.iter().find(|b| b.id == id).unwrap();
    assert!(by_id(&first.id).is_ok());
    assert!(by_id(&second.id).missing_chunks > 0);
    let err = repo
        .restore(
            &second.id,
            &dir.path().join("o.db"),
            &RestoreOptions::default(),
            &quiet,
        )
        .unwrap_err();
    assert!(matches!(err, RepoError::MissingChunk { .. }), "{err}");
}

#[test]
fn prune_reclaims_deleted_backups_and_keeps_live_ones() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 3000);
    let repo = local_repo(&dir.path().join("repo"), None);
    let old = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    conn.execute_batch("DELETE FROM customer; VACUUM;").unwrap();
    fill(&conn, 3000, 5);
    let new = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let before = repo.stats().unwrap();

    // Nothing is deleted while both backups live.
    let s = repo.prune(&prune_now()).unwrap();
    assert_eq!((s.packs_condemned, s.packs_deleted), (0, 0), "{s:?}");

    repo.delete_backup(&old.id).unwrap();
    let s1 = repo.prune(&prune_now()).unwrap();
    assert!(s1.packs_condemned + s1.packs_repacked > 0, "{s1:?}");
    assert_eq!(s1.packs_deleted, 0, "first prune only condemns");
    let s2 = repo.prune(&prune_now()).unwrap();
    assert!(s2.packs_deleted > 0, "{s2:?}");
    let after = repo.stats().unwrap();
    assert!(
        after.pack_bytes < before.pack_bytes,
        "{before:?} -> {after:?}"
    );

    assert!(repo.verify(None, VerifyMode::Full, &quiet).unwrap().is_ok());
    let t = dir.path().join("new.db");
    repo.restore(&new.id, &t, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert_eq!(dump(&t), dump(&db));
}

#[test]
fn prune_with_a_small_memory_budget_uses_partitions_and_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 2000);
    let repo = local_repo(&dir.path().join("repo"), None);
    let a = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    conn.execute_batch("DELETE FROM customer; VACUUM;").unwrap();
    fill(&conn, 2000, 9);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    repo.delete_backup(&a.id).unwrap();
    let opts = steward_repo::PruneOptions {
        memory_budget: 512,
        ..prune_now()
    };
    let s1 = repo.prune(&opts).unwrap();
    assert!(s1.partitions > 1, "{s1:?}");
    let s2 = repo.prune(&opts).unwrap();
    assert!(s2.packs_deleted > 0, "{s2:?}");
    let t = dir.path().join("b.db");
    repo.restore(&b.id, &t, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert_eq!(dump(&t), dump(&db));
}

/// A backup that already decided to reuse chunks from packs nobody references keeps them,
/// however often prune runs meanwhile.
#[test]
fn prune_while_a_backup_runs_does_not_delete_what_it_reuses() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    make_db(&db, 3000);
    let repo = Arc::new(local_repo(&dir.path().join("repo"), None));
    let a = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    repo.delete_backup(&a.id).unwrap(); // A's packs are now unreferenced

    let paused = Arc::new(Barrier::new(2));
    let resume = Arc::new(Barrier::new(2));
    let backup = {
        let (repo, db, paused, resume) = (repo.clone(), db.clone(), paused.clone(), resume.clone());
        std::thread::spawn(move || {
            let once = std::sync::Once::new();
            repo.backup_sqlite(&db, no_meta(), &|_| {
                once.call_once(|| {
                    paused.wait();
                    resume.wait();
                })
            })
        })
    };
    paused.wait();
    // The backup has read the indexes and is reusing A's chunks. Prune twice.
    let s1 = repo.prune(&prune_now()).unwrap();
    assert!(s1.packs_condemned > 0, "{s1:?}");
    let s2 = repo.prune(&prune_now()).unwrap();
    assert_eq!(s2.packs_deleted, 0, "{s2:?}");
    assert!(s2.packs_kept_for_running_backups > 0, "{s2:?}");
    resume.wait();
    let b = backup.join().unwrap().unwrap();
    assert_eq!(b.chunks_new, 0);

    // The finished backup references the condemned packs: the next prune restores them.
    let s3 = repo.prune(&prune_now()).unwrap();
    assert!(s3.packs_restored > 0, "{s3:?}");
    assert_eq!(s3.packs_deleted, 0);
    assert!(repo.verify(None, VerifyMode::Full, &quiet).unwrap().is_ok());
    let t = dir.path().join("b.db");
    repo.restore(&b.id, &t, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert_eq!(dump(&t), dump(&db));
}

#[test]
fn a_second_prune_at_the_same_time_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = local_repo(&root, None);
    std::fs::create_dir_all(root.join("locks")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    std::fs::write(
        root.join("locks/prune-other"),
        format!(r#"{{"kind":"prune","started_ms":{now},"refreshed_ms":{now},"pid":1}}"#),
    )
    .unwrap();
    let err = repo.prune(&prune_now()).unwrap_err();
    assert!(matches!(err, RepoError::Locked(_)), "{err}");
}

#[test]
fn prune_repacks_packs_that_are_partly_dead() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 3000);
    let repo = local_repo(&dir.path().join("repo"), None);
    let a = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    // Rewrite about half of the rows: half of A's pages die, the rest stay shared with B.
    conn.execute(
        "UPDATE customer SET notes = upper(notes) WHERE id % 2 = 0",
        [],
    )
    .unwrap();
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    assert!(b.chunks_reused > 0 && b.chunks_new > 0, "{b:?}");
    repo.delete_backup(&a.id).unwrap();
    let s1 = repo.prune(&prune_now()).unwrap();
    assert!(s1.packs_repacked > 0, "{s1:?}");
    let s2 = repo.prune(&prune_now()).unwrap();
    assert!(s2.packs_deleted > 0, "{s2:?}");
    assert_eq!(s2.packs_restored, 0, "{s2:?}");
    assert!(repo.verify(None, VerifyMode::Full, &quiet).unwrap().is_ok());
    let t = dir.path().join("b.db");
    repo.restore(&b.id, &t, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert_eq!(dump(&t), dump(&db));
}
