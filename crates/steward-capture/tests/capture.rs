//! steward-capture against real SQLite files, with writers on their own connections, threads
//! and (one) a child process. Every commit's database hash is recorded on the writer side and
//! the database is rebuilt from a `with_snapshot` base + the captured commits.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;
use steward_capture::{CaptureError, CaptureOptions, Capturer, Commit};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

fn make_db(dir: &Path) -> PathBuf {
    let path = dir.join("app.db");
    let c = Connection::open(&path).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    c.execute_batch(
        "CREATE TABLE t(id INTEGER PRIMARY KEY, k TEXT, v BLOB); CREATE INDEX t_k ON t(k);",
    )
    .unwrap();
    path
}

fn app_conn(path: &Path) -> Connection {
    let c = Connection::open(path).unwrap();
    c.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    c
}

/// All pages of the database as `conn` sees it.
fn pages_of(conn: &Connection) -> Vec<Vec<u8>> {
    let mut st = conn
        .prepare("SELECT pgno, data FROM sqlite_dbpage('main') ORDER BY pgno")
        .unwrap();
    let rows = st
        .query_map([], |r| Ok((r.get::<_, u32>(0)?, r.get::<_, Vec<u8>>(1)?)))
        .unwrap();
    let mut out = Vec::new();
    for (i, row) in rows.enumerate() {
        let (pgno, data) = row.unwrap();
        assert_eq!(pgno as usize, i + 1);
        out.push(data);
    }
    out
}

fn hash_pages(pages: &[Vec<u8>]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&(pages.len() as u64).to_le_bytes());
    for p in pages {
        h.update(p);
    }
    h.finalize().to_hex().to_string()
}

fn db_hash(conn: &Connection) -> String {
    hash_pages(&pages_of(conn))
}

fn apply(db: &mut Vec<Vec<u8>>, c: &Commit, page_size: usize) {
    for (pgno, data) in &c.pages {
        assert_eq!(data.len(), page_size);
        let i = *pgno as usize - 1;
        if db.len() <= i {
            db.resize(i + 1, vec![0; page_size]);
        }
        db[i] = data.clone();
    }
    db.resize(c.db_pages as usize, vec![0; page_size]);
    let mut last = 0;
    for (p, _) in &c.pages {
        assert!(*p > last, "pages sorted and unique");
        last = *p;
    }
}

/// Checks that base + commits reproduce every recorded hash, commit by commit.
fn check_rebuild(base: &[Vec<u8>], commits: &[Commit], hashes: &[String], page_size: usize) {
    assert_eq!(
        commits.len(),
        hashes.len(),
        "one captured commit per writer commit"
    );
    let mut db = base.to_vec();
    for (i, (c, h)) in commits.iter().zip(hashes).enumerate() {
        apply(&mut db, c, page_size);
        assert_eq!(
            &hash_pages(&db),
            h,
            "rebuilt database differs after commit {i}"
        );
    }
}

/// One random write transaction; returns false when it would change nothing.
fn random_txn(c: &Connection, rng: &mut Rng, n: u64) {
    let tx = c.unchecked_transaction().unwrap();
    match rng.below(10) {
        0..=5 => {
            let rows = 1 + rng.below(30);
            for _ in 0..rows {
                let len = 10 + rng.below(3000) as usize;
                tx.execute(
                    "INSERT INTO t(k, v) VALUES (?1, ?2)",
                    (format!("k{}", rng.below(1000)), rng.bytes(len)),
                )
                .unwrap();
            }
        }
        6..=7 => {
            tx.execute(
                "UPDATE t SET v = randomblob(abs(random()) % 2000 + 1) WHERE id % 7 = ?1",
                [rng.below(7) as i64],
            )
            .unwrap();
            tx.execute(
                "INSERT INTO t(k, v) VALUES ('u', ?1)",
                [n.to_le_bytes().to_vec()],
            )
            .unwrap();
        }
        _ => {
            tx.execute("DELETE FROM t WHERE id % 5 = ?1", [rng.below(5) as i64])
                .unwrap();
            tx.execute(
                "INSERT INTO t(k, v) VALUES ('d', ?1)",
                [n.to_le_bytes().to_vec()],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn opts() -> CaptureOptions {
    CaptureOptions::default()
}

fn base_of(cap: &mut Capturer) -> Vec<Vec<u8>> {
    cap.with_snapshot(pages_of).unwrap()
}

/// Polls on this thread until `done` is set, then once more.
fn poll_until(cap: &mut Capturer, done: &AtomicBool, out: &mut Vec<Commit>, max_wal: &AtomicU64) {
    loop {
        let finished = done.load(Ordering::SeqCst);
        match cap.poll() {
            Ok(c) => out.extend(c),
            // Transient by contract ("nothing changed, try again"), as the server treats it.
            Err(steward_capture::CaptureError::Busy(why)) => {
                eprintln!("poll busy: {why}");
                continue;
            }
            Err(e) => panic!("poll failed: {e:?}"),
        }
        max_wal.fetch_max(cap.wal_file_bytes(), Ordering::SeqCst);
        if finished {
            break;
        }
        std::thread::yield_now();
    }
    out.extend(cap.poll().unwrap());
}

#[test]
fn rebuilds_every_commit_of_random_transactions_including_spills_and_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(
        &path,
        CaptureOptions {
            max_wal_frames: 300,
            ..opts()
        },
    )
    .unwrap();
    let base = base_of(&mut cap);
    let page_size = cap.page_size() as usize;
    assert_eq!(page_size, 4096);

    let done = Arc::new(AtomicBool::new(false));
    let hashes = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (path, done, hashes) = (path.clone(), done.clone(), hashes.clone());
        std::thread::spawn(move || {
            let c = app_conn(&path);
            // A tiny page cache: the big transaction spills frames before its commit.
            c.pragma_update(None, "cache_size", 20).unwrap();
            let mut rng = Rng(0x9e3779b97f4a7c15);
            for n in 0..400u64 {
                if n == 150 {
                    // Larger than the page cache: about 400 pages.
                    let tx = c.unchecked_transaction().unwrap();
                    for i in 0..400 {
                        tx.execute(
                            "INSERT INTO t(k, v) VALUES ('big', ?1)",
                            [rng.bytes(3000 + i)],
                        )
                        .unwrap();
                    }
                    tx.commit().unwrap();
                } else if n == 250 {
                    c.execute("DELETE FROM t WHERE id % 10 != 0", []).unwrap();
                } else if n == 251 {
                    // The database shrinks.
                    c.execute_batch("VACUUM").unwrap();
                } else {
                    random_txn(&c, &mut rng, n);
                }
                hashes.lock().unwrap().push(db_hash(&c));
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut commits = Vec::new();
    let max_wal = AtomicU64::new(0);
    poll_until(&mut cap, &done, &mut commits, &max_wal);
    writer.join().unwrap();
    let hashes = hashes.lock().unwrap().clone();
    // The VACUUM shrank the database.
    let vac = &commits[251];
    assert!(
        vac.db_pages < commits[249].db_pages,
        "VACUUM shrank the database: {} -> {}",
        commits[249].db_pages,
        vac.db_pages
    );
    assert!(
        commits[150].pages.len() > 300,
        "the big transaction is one commit"
    );
    check_rebuild(&base, &commits, &hashes, page_size);
    // And the snapshot after the last commit is the real database.
    let snap = cap.with_snapshot(db_hash).unwrap();
    assert_eq!(&snap, hashes.last().unwrap());
}

#[test]
fn app_checkpoints_of_every_mode_lose_nothing_and_the_wal_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(
        &path,
        CaptureOptions {
            max_wal_frames: 200,
            ..opts()
        },
    )
    .unwrap();
    let base = base_of(&mut cap);
    let page_size = cap.page_size() as usize;
    let done = Arc::new(AtomicBool::new(false));
    let hashes = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (path, done, hashes) = (path.clone(), done.clone(), hashes.clone());
        std::thread::spawn(move || {
            let c = app_conn(&path);
            c.pragma_update(None, "wal_autocheckpoint", 20).unwrap();
            let ck = app_conn(&path);
            ck.busy_timeout(std::time::Duration::from_millis(20))
                .unwrap();
            let mut rng = Rng(42);
            let modes = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"];
            let mut results = Vec::new();
            for n in 0..600u64 {
                random_txn(&c, &mut rng, n);
                hashes.lock().unwrap().push(db_hash(&c));
                if n % 15 == 14 {
                    let mode = modes[(n / 15) as usize % 4];
                    let r: (i64, i64, i64) = ck
                        .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .unwrap();
                    results.push((mode, r));
                }
            }
            done.store(true, Ordering::SeqCst);
            results
        })
    };
    let mut commits = Vec::new();
    let max_wal = AtomicU64::new(0);
    poll_until(&mut cap, &done, &mut commits, &max_wal);
    let results = writer.join().unwrap();
    eprintln!("app checkpoint results (mode, (busy, log, checkpointed)): {results:?}");
    let hashes = hashes.lock().unwrap().clone();
    check_rebuild(&base, &commits, &hashes, page_size);
    let frame = (page_size + 24) as u64;
    let max_frames = max_wal.load(Ordering::SeqCst).max(cap.wal_file_bytes()) / frame;
    eprintln!("largest WAL seen: {max_frames} frames; {:?}", cap.stats());
    assert!(max_frames < 1500, "WAL grew to {max_frames} frames");
}

#[test]
fn wal_stays_bounded_while_a_writer_commits_continuously() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(
        &path,
        CaptureOptions {
            max_wal_frames: 300,
            ..opts()
        },
    )
    .unwrap();
    let page_size = cap.page_size() as u64;
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let (path, done) = (path.clone(), done.clone());
        std::thread::spawn(move || {
            let c = app_conn(&path);
            let mut rng = Rng(7);
            for _ in 0..3000 {
                // About four pages per commit; no pause between commits.
                let tx = c.unchecked_transaction().unwrap();
                for _ in 0..3 {
                    tx.execute("INSERT INTO t(k, v) VALUES ('c', ?1)", [rng.bytes(3500)])
                        .unwrap();
                }
                tx.commit().unwrap();
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let mut commits = Vec::new();
    let max_wal = AtomicU64::new(0);
    poll_until(&mut cap, &done, &mut commits, &max_wal);
    writer.join().unwrap();
    assert_eq!(commits.len(), 3000);
    let frames = max_wal.load(Ordering::SeqCst).max(cap.wal_file_bytes()) / (page_size + 24);
    eprintln!(
        "continuous writer: largest WAL {frames} frames (about 12000 without restarts); {:?}",
        cap.stats()
    );
    // Without the capture's own restarts the WAL ends near 12000 frames. The restart takes
    // the write lock between two of the writer's transactions (it tries every 100 µs); the
    // WAL overshoots max_wal_frames (300) by what is written while it waits (about 420 frames
    // here), more on a loaded machine.
    assert!(frames < 2000, "WAL grew to {frames} frames");
}

#[test]
fn app_truncate_checkpoint_succeeds_while_capture_is_idle_and_capture_continues() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(&path, opts()).unwrap();
    let base = base_of(&mut cap);
    let page_size = cap.page_size() as usize;
    let app = app_conn(&path);
    app.busy_timeout(std::time::Duration::from_millis(50))
        .unwrap();
    let mut rng = Rng(3);
    let mut hashes = Vec::new();
    let mut commits = Vec::new();
    for n in 0..50 {
        random_txn(&app, &mut rng, n);
        hashes.push(db_hash(&app));
    }
    commits.extend(cap.poll().unwrap());
    assert_eq!(commits.len(), 50);
    // Idle: the capture settles (backfills, moves to read mark 0).
    assert!(cap.poll().unwrap().is_empty());
    let r: (i64, i64, i64) = app
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(r.0, 0, "TRUNCATE checkpoint was blocked: {r:?}");
    assert_eq!(
        std::fs::metadata(dir.path().join("app.db-wal"))
            .unwrap()
            .len(),
        0
    );
    // A second connection writes next: it randomizes the salts of the new WAL generation.
    let app2 = app_conn(&path);
    for n in 50..60 {
        random_txn(&app2, &mut rng, n);
        hashes.push(db_hash(&app2));
    }
    commits.extend(cap.poll().unwrap());
    // Idle again, and again TRUNCATE.
    assert!(cap.poll().unwrap().is_empty());
    let r: i64 = app
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
        .unwrap();
    assert_eq!(r, 0);
    for n in 60..70 {
        random_txn(&app, &mut rng, n);
        hashes.push(db_hash(&app));
    }
    commits.extend(cap.poll().unwrap());
    check_rebuild(&base, &commits, &hashes, page_size);
}

#[test]
fn while_capture_holds_new_frames_a_truncate_cannot_discard_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(&path, opts()).unwrap();
    let base = base_of(&mut cap);
    let page_size = cap.page_size() as usize;
    let app = app_conn(&path);
    app.busy_timeout(std::time::Duration::from_millis(20))
        .unwrap();
    let mut rng = Rng(5);
    let mut hashes = Vec::new();
    for n in 0..20 {
        random_txn(&app, &mut rng, n);
        hashes.push(db_hash(&app));
    }
    // Not polled yet: the app tries to checkpoint and rewind; the frames must survive.
    for mode in ["TRUNCATE", "RESTART", "TRUNCATE"] {
        let _: i64 = app
            .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| r.get(0))
            .unwrap();
        random_txn(&app, &mut rng, 99);
        hashes.push(db_hash(&app));
    }
    let commits = cap.poll().unwrap();
    check_rebuild(&base, &commits, &hashes, page_size);
}

#[test]
fn a_restart_the_capture_did_not_see_is_reported_lost_then_capture_restarts_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(&path, opts()).unwrap();
    let app = app_conn(&path);
    let mut rng = Rng(11);
    for n in 0..5 {
        random_txn(&app, &mut rng, n);
    }
    // Construct the loss: the capture holds no reader while the app rewinds the WAL.
    cap.release_reader_for_tests();
    for round in 0..3 {
        let r: i64 = app
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
            .unwrap();
        assert_eq!(r, 0, "round {round}");
        for n in 0..3 {
            random_txn(&app, &mut rng, n);
        }
    }
    match cap.poll() {
        Err(CaptureError::Lost { reason }) => {
            assert!(reason.contains("restarted"), "{reason}");
        }
        other => panic!("expected Lost, got {other:?}"),
    }
    // The next cycle starts cleanly: a new base, then exact commits.
    assert!(cap.poll().unwrap().is_empty());
    let base = base_of(&mut cap);
    let mut hashes = Vec::new();
    for n in 0..4 {
        random_txn(&app, &mut rng, n);
        hashes.push(db_hash(&app));
    }
    let commits = cap.poll().unwrap();
    check_rebuild(&base, &commits, &hashes, cap.page_size() as usize);
}

#[test]
fn a_wal_recovery_is_reported_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(&path, opts()).unwrap();
    let app = app_conn(&path);
    let mut rng = Rng(13);
    for n in 0..5 {
        random_txn(&app, &mut rng, n);
    }
    assert_eq!(cap.poll().unwrap().len(), 5);
    for n in 0..3 {
        random_txn(&app, &mut rng, n);
    }
    // Damage the wal-index header (as a writer crashing mid-publish would): the next
    // connection to use it rebuilds it from the WAL file (recovery resets the change counter).
    {
        use std::os::unix::fs::FileExt;
        let shm = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join("app.db-shm"))
            .unwrap();
        shm.write_at(&[0u8; 96], 0).unwrap();
    }
    random_txn(&app, &mut rng, 100);
    match cap.poll() {
        Err(CaptureError::Lost { reason }) => eprintln!("recovery detected: {reason}"),
        other => panic!("expected Lost, got {other:?}"),
    }
}

#[test]
fn replacing_the_database_file_is_reported_lost() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(&path, opts()).unwrap();
    std::fs::create_dir_all(dir.path().join("x")).unwrap();
    let other = make_db(&dir.path().join("x"));
    std::fs::rename(&other, &path).unwrap();
    match cap.poll() {
        Err(CaptureError::Lost { reason }) => {
            assert!(reason.contains("database file was replaced"), "{reason}")
        }
        other => panic!("expected Lost, got {other:?}"),
    }
}

#[test]
fn the_app_cannot_leave_wal_mode_while_capture_runs() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(&path, opts()).unwrap();
    let app = app_conn(&path);
    app.busy_timeout(std::time::Duration::from_millis(20))
        .unwrap();
    app.execute("INSERT INTO t(k) VALUES ('a')", []).unwrap();
    let r: rusqlite::Result<String> = app.query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0));
    match r {
        Ok(mode) => assert_eq!(mode, "wal", "the app left WAL mode under the capture"),
        Err(e) => assert!(e.to_string().contains("locked"), "{e}"),
    }
    app.execute("INSERT INTO t(k) VALUES ('b')", []).unwrap();
    assert_eq!(cap.poll().unwrap().len(), 2);
}

#[test]
fn bad_inputs_get_specific_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.db");
    assert!(matches!(
        Capturer::open(&missing, opts()),
        Err(CaptureError::Missing { .. })
    ));
    assert!(!missing.exists(), "nothing created");

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 8192]).unwrap();
    match Capturer::open(&garbage, opts()) {
        Err(e @ CaptureError::NotADatabase { .. }) => {
            assert!(e.to_string().contains("not a SQLite database"))
        }
        other => panic!("{:?}", other.err()),
    }
    assert_eq!(
        std::fs::read(&garbage).unwrap(),
        vec![7u8; 8192],
        "unchanged"
    );

    assert!(matches!(
        Capturer::open(dir.path(), opts()),
        Err(CaptureError::NotADatabase { .. })
    ));

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        Capturer::open(&empty, opts()),
        Err(CaptureError::NotWal { .. })
    ));

    let rollback = dir.path().join("rollback.db");
    let c = Connection::open(&rollback).unwrap();
    c.execute_batch("CREATE TABLE x(a); INSERT INTO x VALUES (1);")
        .unwrap();
    drop(c);
    match Capturer::open(&rollback, opts()) {
        Err(e @ CaptureError::NotWal { .. }) => {
            assert!(e.to_string().contains("not in WAL mode"), "{e}")
        }
        other => panic!("{:?}", other.err()),
    }
    assert!(
        !dir.path().join("rollback.db-wal").exists(),
        "no WAL created"
    );
}

#[test]
fn with_snapshot_is_exact_or_refuses_and_poll_with_snapshot_returns_the_commits_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let app = app_conn(&path);
    let mut rng = Rng(17);
    for n in 0..5 {
        random_txn(&app, &mut rng, n);
    }
    let mut cap = Capturer::open(&path, opts()).unwrap();
    // Before any commit was returned, the snapshot moves the position forward to now.
    for n in 0..3 {
        random_txn(&app, &mut rng, n);
    }
    let base = base_of(&mut cap);
    assert_eq!(hash_pages(&base), db_hash(&app));
    random_txn(&app, &mut rng, 9);
    let mut hashes = vec![db_hash(&app)];
    let mut commits = cap.poll().unwrap();
    assert_eq!(commits.len(), 1);
    // Unreturned commits exist: with_snapshot refuses.
    random_txn(&app, &mut rng, 10);
    hashes.push(db_hash(&app));
    match cap.with_snapshot(|_| ()) {
        Err(CaptureError::NotCaughtUp { pending }) => assert_eq!(pending, 1),
        other => panic!("{:?}", other.err()),
    }
    let (more, snap) = cap.poll_with_snapshot(db_hash).unwrap();
    assert_eq!(more.len(), 1);
    commits.extend(more);
    assert_eq!(&snap, hashes.last().unwrap());
    check_rebuild(&base, &commits, &hashes, cap.page_size() as usize);
}

#[test]
fn clock_is_injected_and_never_goes_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let t = Arc::new(AtomicU64::new(1_000));
    let clock = {
        let t = t.clone();
        Arc::new(move || t.load(Ordering::SeqCst)) as steward_capture::Clock
    };
    let mut cap = Capturer::open(&path, CaptureOptions { clock, ..opts() }).unwrap();
    let app = app_conn(&path);
    app.execute("INSERT INTO t(k) VALUES ('a')", []).unwrap();
    let c = cap.poll().unwrap();
    assert_eq!(c[0].at_ms, 1_000);
    assert_eq!(cap.confirmed_through_ms(), Some(1_000));
    t.store(500, Ordering::SeqCst);
    app.execute("INSERT INTO t(k) VALUES ('b')", []).unwrap();
    assert_eq!(
        cap.poll().unwrap()[0].at_ms,
        1_000,
        "never before an earlier commit"
    );
    t.store(2_000, Ordering::SeqCst);
    assert!(cap.poll().unwrap().is_empty());
    assert_eq!(cap.confirmed_through_ms(), Some(2_000));
}

/// The child-process writer: does nothing unless started by the test below.
#[test]
fn child_writer_entry() {
    let Ok(spec) = std::env::var("STEWARD_CAPTURE_CHILD") else {
        return;
    };
    let (db, out) = spec.split_once('|').unwrap();
    let c = app_conn(Path::new(db));
    c.pragma_update(None, "wal_autocheckpoint", 30).unwrap();
    let mut rng = Rng(23);
    let mut lines = String::new();
    for n in 0..300 {
        random_txn(&c, &mut rng, n);
        lines.push_str(&db_hash(&c));
        lines.push('\n');
        if n % 50 == 49 {
            let _: i64 = c
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                .unwrap();
        }
    }
    std::fs::write(out, lines).unwrap();
}

#[test]
fn a_writer_in_another_process_is_captured_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(
        &path,
        CaptureOptions {
            max_wal_frames: 200,
            ..opts()
        },
    )
    .unwrap();
    let base = base_of(&mut cap);
    let out = dir.path().join("hashes.txt");
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_writer_entry",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "STEWARD_CAPTURE_CHILD",
            format!("{}|{}", path.display(), out.display()),
        )
        .spawn()
        .unwrap();
    let mut commits = Vec::new();
    loop {
        let exited = child.try_wait().unwrap();
        commits.extend(cap.poll().unwrap());
        if let Some(status) = exited {
            assert!(status.success());
            break;
        }
        std::thread::yield_now();
    }
    commits.extend(cap.poll().unwrap());
    let hashes: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(hashes.len(), 300);
    check_rebuild(&base, &commits, &hashes, cap.page_size() as usize);
}

#[test]
fn idle_poll_cost_is_measured() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(&path, opts()).unwrap();
    let app = app_conn(&path);
    app.execute("INSERT INTO t(k) VALUES ('a')", []).unwrap();
    assert_eq!(cap.poll().unwrap().len(), 1);
    assert!(cap.poll().unwrap().is_empty()); // settles
    let n = 20_000;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert!(cap.poll().unwrap().is_empty());
    }
    let per = start.elapsed() / n;
    eprintln!("idle poll: {per:?} per poll ({n} polls, debug-or-release as built)");
}

#[test]
fn padded_commits_of_a_psow0_full_sync_writer_count_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(&path, opts()).unwrap();
    let base = base_of(&mut cap);
    let app = Connection::open_with_flags(
        format!("file:{}?psow=0", path.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    app.pragma_update(None, "synchronous", "FULL").unwrap();
    let mut rng = Rng(29);
    let mut hashes = Vec::new();
    for n in 0..20 {
        random_txn(&app, &mut rng, n);
        hashes.push(db_hash(&app));
    }
    let r = cap.poll();
    eprintln!("psow=0: {:?}", r.as_ref().map(|c| c.len()));
    let commits = r.unwrap();
    check_rebuild(&base, &commits, &hashes, cap.page_size() as usize);
}

#[test]
fn app_truncates_racing_the_capture_never_lose_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_db(dir.path());
    let mut cap = Capturer::open(&path, opts()).unwrap();
    let base = base_of(&mut cap);
    let page_size = cap.page_size() as usize;
    let done = Arc::new(AtomicBool::new(false));
    let hashes = Arc::new(Mutex::new(Vec::new()));
    let writer = {
        let (path, done, hashes) = (path.clone(), done.clone(), hashes.clone());
        std::thread::spawn(move || {
            let c = app_conn(&path);
            let ck = app_conn(&path);
            ck.busy_timeout(std::time::Duration::from_millis(0))
                .unwrap();
            let mut rng = Rng(31);
            let mut truncated = 0;
            for n in 0..400u64 {
                random_txn(&c, &mut rng, n);
                hashes.lock().unwrap().push(db_hash(&c));
                // Let the capture go idle now and then, then try to rewind the WAL.
                if n % 4 == 3 {
                    for _ in 0..50 {
                        std::thread::yield_now();
                    }
                }
                let busy: i64 = ck
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                    .unwrap();
                if busy == 0 {
                    truncated += 1;
                }
            }
            done.store(true, Ordering::SeqCst);
            truncated
        })
    };
    let mut commits = Vec::new();
    let max_wal = AtomicU64::new(0);
    poll_until(&mut cap, &done, &mut commits, &max_wal);
    let truncated = writer.join().unwrap();
    eprintln!(
        "app TRUNCATE checkpoints that succeeded: {truncated} of 400; {:?}",
        cap.stats()
    );
    check_rebuild(&base, &commits, &hashes.lock().unwrap(), page_size);
}
