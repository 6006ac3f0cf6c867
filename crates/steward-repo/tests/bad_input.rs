//! Bad input gives a specific error and overwrites nothing.

use std::path::{Path, PathBuf};

use steward_repo::{RepoError, Repository, RestoreOptions, VerifyMode};

use crate::util::*;

fn files_under(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join(prefix)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_file_that_is_not_sqlite_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local_repo(&dir.path().join("repo"), None);
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello, this is not a database ".repeat(100)).unwrap();
    let err = repo.backup_sqlite(&text, no_meta(), &quiet).unwrap_err();
    assert!(matches!(err, RepoError::NotSqlite { .. }), "{err}");
    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let err = repo.backup_sqlite(&empty, no_meta(), &quiet).unwrap_err();
    assert!(matches!(err, RepoError::NotSqlite { .. }), "{err}");
    let err = repo
        .backup_sqlite(&dir.path().join("missing.db"), no_meta(), &quiet)
        .unwrap_err();
    assert!(matches!(err, RepoError::Io { .. }), "{err}");
    assert!(repo.list_backups().unwrap().is_empty());
}

#[test]
fn a_repository_from_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    drop(local_repo(&root, None));
    let config = std::fs::read_to_string(root.join("config")).unwrap();
    let newer = config.replace("\"version\": 1", "\"version\": 7");
    assert_ne!(config, newer);
    std::fs::write(root.join("config"), newer).unwrap();
    let err = Repository::open(Repository::local_store(&root).unwrap(), None).unwrap_err();
    match err {
        RepoError::NewerFormat {
            found, supported, ..
        } => {
            assert_eq!((found, supported), (7, 1));
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn opening_an_empty_directory_says_there_is_no_repository() {
    let dir = tempfile::tempdir().unwrap();
    let err = Repository::open(Repository::local_store(dir.path()).unwrap(), None).unwrap_err();
    assert!(matches!(err, RepoError::NotARepository(_)), "{err}");
    let again = Repository::init(
        Repository::local_store(dir.path()).unwrap(),
        Default::default(),
    );
    assert!(again.is_ok());
    let err = Repository::init(
        Repository::local_store(dir.path()).unwrap(),
        Default::default(),
    )
    .unwrap_err();
    assert!(matches!(err, RepoError::AlreadyInitialized(_)), "{err}");
}

#[test]
fn a_truncated_pack_is_reported_and_restore_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let db = dir.path().join("crm.db");
    make_db(&db, 2000);
    let repo = local_repo(&root, None);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let pack = &files_under(&root, "data")[0];
    let len = std::fs::metadata(pack).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(pack).unwrap();
    f.set_len(len / 2).unwrap();

    let target = dir.path().join("out.db");
    let err = repo
        .restore(&b.id, &target, &RestoreOptions::default(), &quiet)
        .unwrap_err();
    assert!(matches!(err, RepoError::CorruptChunk { .. }), "{err}");
    assert!(!target.exists());
    let report = repo.verify(None, VerifyMode::Full, &quiet).unwrap();
    assert!(!report.is_ok());
    assert!(report.backups[0].corrupt_chunks > 0);
    assert!(
        report.backups[0].problems[0].contains("truncated"),
        "{:?}",
        report.backups[0].problems
    );
}

#[test]
fn a_flipped_byte_in_a_chunk_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let db = dir.path().join("crm.db");
    make_db(&db, 2000);
    let repo = local_repo(&root, None);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let pack = &files_under(&root, "data")[0];
    let mut bytes = std::fs::read(pack).unwrap();
    let at = bytes.len() / 3;
    bytes[at] ^= 0x01;
    std::fs::write(pack, bytes).unwrap();

    let target = dir.path().join("out.db");
    std::fs::write(&target, b"keep me").unwrap();
    let opts = RestoreOptions {
        overwrite: true,
        ..Default::default()
    };
    let err = repo.restore(&b.id, &target, &opts, &quiet).unwrap_err();
    assert!(matches!(err, RepoError::CorruptChunk { .. }), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");

    let report = repo.verify(Some(&b.id), VerifyMode::Full, &quiet).unwrap();
    let v = &report.backups[0];
    assert!(
        v.corrupt_chunks > 0 && v.corrupt_chunks < v.chunks_needed,
        "{v:?}"
    );
}

/// A real full disk: a 1 MiB tmpfs (the tests run as root; elsewhere this test says it could
/// not mount and checks nothing).
#[test]
fn a_full_disk_during_restore_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    make_db(&db, 15000);
    let repo = local_repo(&dir.path().join("repo"), None);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    assert!(
        b.bytes_read > 2 << 20,
        "the database must not fit on the small disk"
    );

    let mnt = dir.path().join("small");
    std::fs::create_dir(&mnt).unwrap();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root?)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(mnt.clone());
    let target = mnt.join("restored.db");
    let err = repo
        .restore(&b.id, &target, &RestoreOptions::default(), &quiet)
        .unwrap_err();
    assert!(matches!(err, RepoError::DiskFull { .. }), "{err}");
    let left: Vec<_> = std::fs::read_dir(&mnt).unwrap().collect();
    assert!(left.is_empty(), "restore left files on the full disk");
}

/// A manifest written by a newer format version is refused by name, not misread.
#[test]
fn a_manifest_from_a_newer_format_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = local_repo(&root, None);
    let json = br#"{"version":9,"id":"20991231T000000.000Z-00000000","kind":"snapshot"}"#;
    // The plain seal: body, then 16 bytes of blake3(len(domain) LE, domain, body).
    let domain = b"steward-repo manifest";
    let mut h = blake3::Hasher::new();
    h.update(&(domain.len() as u64).to_le_bytes());
    h.update(domain);
    h.update(json);
    let mut sealed = json.to_vec();
    sealed.extend_from_slice(&h.finalize().as_bytes()[..16]);
    std::fs::create_dir_all(root.join("backups")).unwrap();
    std::fs::write(root.join("backups/20991231T000000.000Z-00000000"), sealed).unwrap();
    let err = repo.manifest("20991231T000000.000Z-00000000").unwrap_err();
    assert!(
        matches!(
            err,
            RepoError::NewerFormat {
                found: 9,
                supported: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        repo.list_backups().unwrap_err(),
        RepoError::NewerFormat { .. }
    ));
}

/// A restore does not check frame seals (the whole-file hash checks every byte), so a flipped
/// byte that still decompresses (here inside a stored, incompressible block) is only seen by
/// the whole-file hash. It must still be named as damage in its pack, not as a bare mismatch.
#[test]
fn a_flipped_byte_that_still_decompresses_is_named_in_its_pack() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let db = dir.path().join("blobs.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE blob(id INTEGER PRIMARY KEY, data BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
             INSERT INTO blob(data) SELECT randomblob(3000) FROM n;",
        )
        .unwrap();
    }
    let repo = local_repo(&root, None);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let packs = files_under(&root, "data");
    assert_eq!(packs.len(), 1, "{packs:?}");
    let name = packs[0].file_name().unwrap().to_string_lossy().to_string();
    let mut bytes = std::fs::read(&packs[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    std::fs::write(&packs[0], bytes).unwrap();

    for integrity_check in [false, true] {
        let target = dir.path().join(format!("out-{integrity_check}.db"));
        let opts = RestoreOptions {
            integrity_check,
            ..Default::default()
        };
        match repo.restore(&b.id, &target, &opts, &quiet) {
            Err(RepoError::CorruptChunk { pack, reason, .. }) => {
                assert_eq!(pack, name);
                assert!(reason.contains("checksum mismatch"), "{reason}");
            }
            other => panic!("expected the damaged frame to be named, got {other:?}"),
        }
        assert!(!target.exists(), "a damaged restore left its file");
    }
}
