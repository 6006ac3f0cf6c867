//! Encrypted repositories: round trip, no plaintext at rest, wrong and missing keys.

use steward_repo::{InitOptions, Key, RepoError, Repository, RestoreOptions, VerifyMode};

use crate::util::*;

fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn encrypted_repository_round_trip_and_no_plaintext_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 1500);
    conn.execute(
        "INSERT INTO customer(name, email, notes) VALUES ('Zebulon Quxworth', 'z@q', 'secret')",
        [],
    )
    .unwrap();
    let key = Key::generate().unwrap();
    let key_file = dir.path().join("repo.key");
    std::fs::write(&key_file, key.to_hex()).unwrap();

    let repo = local_repo(&root, Some(Key::from_file(&key_file).unwrap()));
    let b = repo
        .backup_sqlite(
            &db,
            [("label".into(), "Quarterly close".into())].into(),
            &quiet,
        )
        .unwrap();
    drop(repo);
    let stored = all_bytes(&root);
    for needle in [
        &b"Zebulon Quxworth"[..],
        b"Quarterly close",
        b"SQLite format 3",
    ] {
        assert!(
            !stored.windows(needle.len()).any(|w| w == needle),
            "plaintext {:?} found at rest",
            String::from_utf8_lossy(needle)
        );
    }

    let repo = Repository::open(
        Repository::local_store(&root).unwrap(),
        Some(Key::from_file(&key_file).unwrap()),
    )
    .unwrap();
    assert!(repo.config().key_check.is_some());
    assert_eq!(
        repo.list_backups().unwrap()[0].metadata["label"],
        "Quarterly close"
    );
    let target = dir.path().join("out.db");
    repo.restore(&b.id, &target, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert_eq!(dump(&target), dump(&db));
    assert!(repo.verify(None, VerifyMode::Full, &quiet).unwrap().is_ok());

    // Drill proofs are sealed like the other metadata: readable with the key only.
    let r = repo
        .drill(
            &b.id,
            &dir.path().join("scratch"),
            &steward_repo::DrillOptions::default(),
            &quiet,
        )
        .unwrap();
    assert!(r.passed, "{r:?}");
    let proof = root.join("proofs").join(&r.db_hash);
    let sealed = std::fs::read(&proof).unwrap();
    assert!(
        !sealed.windows(8).any(|w| w == b"checked_"),
        "proof stored in plaintext"
    );
    assert_eq!(repo.proof(&r.db_hash).unwrap().unwrap().backup, b.id);
}

#[test]
fn wrong_missing_and_malformed_keys_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    Repository::init(
        Repository::local_store(&root).unwrap(),
        InitOptions {
            key: Some(Key::from_bytes([7; 32])),
        },
    )
    .unwrap();
    let store = || Repository::local_store(&root).unwrap();
    assert!(matches!(
        Repository::open(store(), None).unwrap_err(),
        RepoError::MissingKey
    ));
    assert!(matches!(
        Repository::open(store(), Some(Key::from_bytes([8; 32]))).unwrap_err(),
        RepoError::WrongKey
    ));
    let bad = dir.path().join("bad.key");
    std::fs::write(&bad, "not a key").unwrap();
    assert!(matches!(
        Key::from_file(&bad).unwrap_err(),
        RepoError::InvalidKey { .. }
    ));
    assert!(matches!(
        Key::from_file(dir.path().join("absent.key")).unwrap_err(),
        RepoError::InvalidKey { .. }
    ));
    let raw = dir.path().join("raw.key");
    std::fs::write(&raw, [7u8; 32]).unwrap();
    Repository::open(store(), Some(Key::from_file(&raw).unwrap())).unwrap();
}

#[test]
fn plain_and_encrypted_repositories_name_chunks_differently() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 300);
    checkpoint(&conn);
    let plain = local_repo(&dir.path().join("plain"), None);
    let enc = local_repo(&dir.path().join("enc"), Some(Key::from_bytes([1; 32])));
    plain.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    enc.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let p = all_bytes(&dir.path().join("plain"));
    // blake3 of page 1 (plain chunk id) appears in the plain index, never in the encrypted one.
    let page1 = {
        let bytes = std::fs::read(&db).unwrap();
        let m = plain.list_backups().unwrap().remove(0);
        let chunk = (m.page_size * m.pages_per_chunk) as usize;
        *blake3::hash(&bytes[..chunk.min(bytes.len())]).as_bytes()
    };
    assert!(
        p.windows(32).any(|w| w == page1),
        "plain ids are blake3 of the content"
    );
    let e = all_bytes(&dir.path().join("enc"));
    assert!(!e.windows(32).any(|w| w == page1));
}
