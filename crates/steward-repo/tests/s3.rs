//! The same repository on S3: a real S3-compatible server (s3s-fs) started in-process on
//! 127.0.0.1, spoken to over HTTP by object_store's S3 client.

use std::net::SocketAddr;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use steward_repo::{InitOptions, Key, Repository, RestoreOptions, S3Config, VerifyMode};

use crate::util::*;

/// Serves `root` over S3 until the returned runtime is dropped.
pub fn start_s3(root: &std::path::Path) -> (tokio::runtime::Runtime, SocketAddr) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = S3ServiceBuilder::new(fs);
    b.set_auth(SimpleAuth::from_single("steward", "steward-secret"));
    let service = b.build();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    rt.spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let conn = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                let _ = conn.await;
            });
        }
    });
    (rt, addr)
}

pub fn s3_config(addr: SocketAddr, bucket: &str) -> S3Config {
    S3Config {
        endpoint: Some(format!("http://{addr}")),
        bucket: bucket.into(),
        region: "us-east-1".into(),
        access_key_id: "steward".into(),
        secret_access_key: "steward-secret".into(),
        allow_http: true,
    }
}

fn run_on_s3(key: Option<Key>) {
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    std::fs::create_dir_all(s3_root.join("backups-bucket")).unwrap();
    let (_server, addr) = start_s3(&s3_root);

    let store = Repository::s3_store(&s3_config(addr, "backups-bucket")).unwrap();
    let repo = Repository::init(store, InitOptions { key: key.clone() })
        .unwrap()
        .with_retry(fast_retry());
    let db = dir.path().join("crm.db");
    let conn = make_db(&db, 3000);
    let a = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    conn.execute("UPDATE customer SET notes = 's3' WHERE id % 300 = 0", [])
        .unwrap();
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    assert!(b.chunks_new * 5 < b.chunks_total, "{b:?}");
    drop(repo);

    let store = Repository::s3_store(&s3_config(addr, "backups-bucket")).unwrap();
    let repo = Repository::open(store, key)
        .unwrap()
        .with_retry(fast_retry());
    assert_eq!(repo.list_backups().unwrap().len(), 2);
    let t = dir.path().join("from-s3.db");
    repo.restore(&b.id, &t, &RestoreOptions::default(), &quiet)
        .unwrap();
    assert_eq!(dump(&t), dump(&db));
    assert!(repo.verify(None, VerifyMode::Full, &quiet).unwrap().is_ok());
    repo.delete_backup(&a.id).unwrap();
    repo.prune(&prune_now()).unwrap();
    repo.prune(&prune_now()).unwrap();
    assert!(repo.verify(None, VerifyMode::Full, &quiet).unwrap().is_ok());
    let stats = repo.stats().unwrap();
    assert_eq!(stats.backups, 1);
    // The objects really are in the server's directory.
    assert!(s3_root.join("backups-bucket/config").exists());
}

#[test]
fn plain_repository_on_s3() {
    run_on_s3(None);
}

#[test]
fn encrypted_repository_on_s3() {
    run_on_s3(Some(Key::from_bytes([42; 32])));
}

#[test]
fn drills_proofs_and_verify_on_s3_name_a_deleted_pack() {
    let dir = tempfile::tempdir().unwrap();
    let s3_root = dir.path().join("s3");
    let bucket = s3_root.join("drill-bucket");
    std::fs::create_dir_all(&bucket).unwrap();
    let (_server, addr) = start_s3(&s3_root);
    let store = Repository::s3_store(&s3_config(addr, "drill-bucket")).unwrap();
    let repo = Repository::init(store, InitOptions::default())
        .unwrap()
        .with_retry(fast_retry());
    let db = dir.path().join("crm.db");
    make_db(&db, 3000);
    let b = repo.backup_sqlite(&db, no_meta(), &quiet).unwrap();
    let hash = repo.manifest(&b.id).unwrap().db_hash;

    let scratch = dir.path().join("scratch");
    let r = repo
        .drill(
            &b.id,
            &scratch,
            &steward_repo::DrillOptions::default(),
            &quiet,
        )
        .unwrap();
    assert!(r.passed, "{r:?}");
    assert!(bucket.join("proofs").join(&hash).exists());
    let s = repo
        .restore(
            &b.id,
            &dir.path().join("r.db"),
            &RestoreOptions::default(),
            &quiet,
        )
        .unwrap();
    assert!(matches!(
        s.integrity,
        steward_repo::Integrity::ProvenByDrill { .. }
    ));
    assert_eq!(dump(&dir.path().join("r.db")), dump(&db));

    let pack = files_under(&bucket, "data")[0].clone();
    let name = pack.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::remove_file(&pack).unwrap();
    for mode in [VerifyMode::Structure, VerifyMode::Full] {
        let v = &repo.verify(Some(&b.id), mode, &quiet).unwrap().backups[0];
        assert_eq!(v.damaged_packs, vec![name.clone()], "{mode:?}: {v:?}");
        assert!(v.missing_chunks > 0);
    }
    let r = repo
        .drill(
            &b.id,
            &scratch,
            &steward_repo::DrillOptions::default(),
            &quiet,
        )
        .unwrap();
    assert!(
        !r.passed && r.problems.iter().any(|p| p.contains(&name)),
        "{r:?}"
    );
}
