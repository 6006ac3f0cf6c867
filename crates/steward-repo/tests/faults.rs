//! Failure at any point of a backup leaves no half-backup visible and no corrupt repository,
//! and the next backup succeeds; transient failures are retried away.

use std::sync::Arc;

use steward_repo::{Repository, RestoreOptions, VerifyMode};

use crate::util::*;

fn setup(dir: &std::path::Path) -> (Arc<FaultStore>, Repository, std::path::PathBuf) {
    let db = dir.join("crm.db");
    make_db(&db, 2500);
    let inner = Repository::local_store(dir.join("repo")).unwrap();
    let faults = FaultStore::new(inner);
    let repo = Repository::init(faults.clone(), Default::default())
        .unwrap()
        .with_retry(fast_retry());
    (faults, repo, db)
}

#[test]
fn a_permanent_failure_at_any_call_leaves_the_repository_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, repo, db) = setup(dir.path());
    let first = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();

    // Count the store calls one incremental backup makes.
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute("UPDATE customer SET notes = 'v0' WHERE id % 50 = 0", [])
        .unwrap();
    faults.arm(0, false);
    repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let calls = faults.calls.load(std::sync::atomic::Ordering::SeqCst);
    assert!(calls >= 6, "only {calls} calls");

    let mut failed = 0;
    for at in 1..=calls {
        conn.execute(
            &format!("UPDATE customer SET notes = 'v{at}' WHERE id % 50 = 0"),
            [],
        )
        .unwrap();
        let backups_before = repo.list_backups().unwrap().len();
        faults.arm(at, true);
        let r = repo.backup_sqlite(&db, no_meta(), &quiet);
        faults.arm(0, false);
        let backups_after = repo.list_backups().unwrap();
        match r {
            Err(_) => {
                failed += 1;
                assert_eq!(
                    backups_after.len(),
                    backups_before,
                    "half-backup visible (call {at})"
                );
            }
            // Only the removal of the lock, after the manifest, may fail without failing
            // the backup.
            Ok(b) => assert!(backups_after.iter().any(|m| m.id == b.id)),
        }
        let report = repo.verify(None, VerifyMode::Full, &quiet).unwrap();
        assert!(
            report.is_ok(),
            "repository corrupt after failing call {at}: {report:?}"
        );
    }
    assert!(failed as u64 >= calls - 1, "{failed} of {calls} failed");

    // The next backup succeeds and restores; the first one is intact.
    let next = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    for (id, check_current) in [(&first.id, false), (&next.id, true)] {
        let t = dir.path().join(format!("{id}.db"));
        repo.restore(id, &t, &RestoreOptions::default(), &quiet)
            .unwrap();
        if check_current {
            assert_eq!(dump(&t), dump(&db));
        }
    }
    // Prune removes the debris of the failed attempts and breaks nothing.
    repo.prune(&prune_now()).unwrap();
    repo.prune(&prune_now()).unwrap();
    assert!(repo.verify(None, VerifyMode::Full, &quiet).unwrap().is_ok());
}

#[test]
fn transient_failures_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (faults, repo, db) = setup(dir.path());
    faults.arm(0, false);
    repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let calls = faults.calls.load(std::sync::atomic::Ordering::SeqCst);
    for at in 1..=calls {
        faults.arm(at, false);
        let b = repo
            .backup_sqlite(&db, no_meta(), &quiet)
            .unwrap_or_else(|e| panic!("transient failure of call {at} not retried: {e}"));
        assert!(faults.failures.load(std::sync::atomic::Ordering::SeqCst) <= 1);
        let t = dir.path().join(format!("t{at}.db"));
        faults.arm(3, false);
        repo.restore(&b.id, &t, &RestoreOptions::default(), &quiet)
            .unwrap();
    }
}
