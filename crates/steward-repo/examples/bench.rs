//! Benchmark helper for `bench/run.py`: generates a CRM-like database, changes a fraction of
//! its pages, and runs steward-repo backups and restores, printing one JSON line per command.
//!
//! ```text
//! bench gen DB SIZE_MIB
//! bench mutate DB FRACTION SEED
//! bench init REPO
//! bench backup REPO DB
//! bench restore REPO TARGET [--no-check | --check-now]
//! bench drill REPO SCRATCH_DIR
//! bench stall REPO DB
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use steward_repo::{DrillOptions, InitOptions, Integrity, Repository, RestoreOptions};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, w: &[&'a str]) -> &'a str {
        w[(self.next() % w.len() as u64) as usize]
    }
}

const WORDS: &[&str] = &[
    "account",
    "renewal",
    "meeting",
    "follow",
    "up",
    "quote",
    "invoice",
    "overdue",
    "support",
    "ticket",
    "escalated",
    "customer",
    "requested",
    "discount",
    "pricing",
    "contract",
    "signed",
    "pending",
    "approval",
    "legal",
    "review",
    "shipment",
    "delayed",
    "warehouse",
    "north",
    "south",
    "east",
    "west",
    "region",
    "pipeline",
    "stage",
    "qualified",
    "proposal",
    "closed",
    "won",
    "lost",
    "competitor",
    "budget",
    "next",
    "quarter",
    "call",
    "email",
    "demo",
    "scheduled",
    "onboarding",
    "training",
    "feedback",
    "positive",
    "negative",
    "upgrade",
    "license",
    "seats",
    "enterprise",
    "standard",
    "trial",
    "expired",
    "payment",
    "received",
];
const FIRST: &[&str] = &[
    "Anna", "Ben", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira",
    "Liam", "Maya", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Sven", "Tara",
];
const LAST: &[&str] = &[
    "Smith", "Meyer", "Rossi", "Dubois", "Novak", "Silva", "Jansen", "Kowalski", "Berg", "Costa",
    "Fischer", "Horvat", "Ivanova", "Larsen", "Moreau", "Nielsen",
];

fn sentence(rng: &mut Rng, words: usize) -> String {
    let mut s = String::with_capacity(words * 8);
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
        if rng.next().is_multiple_of(7) {
            s.push_str(&format!(" {}", rng.next() % 10_000));
        }
    }
    s
}

fn generate(db: &Path, size_mib: u64) {
    let _ = std::fs::remove_file(db);
    let conn = Connection::open(db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF;
         CREATE TABLE account(id INTEGER PRIMARY KEY, name TEXT, industry TEXT, city TEXT,
                              created TEXT, revenue INTEGER);
         CREATE TABLE contact(id INTEGER PRIMARY KEY, account_id INTEGER, first TEXT, last TEXT,
                              email TEXT, phone TEXT, title TEXT);
         CREATE INDEX contact_email ON contact(email);
         CREATE TABLE activity(id INTEGER PRIMARY KEY, account_id INTEGER, contact_id INTEGER,
                               kind TEXT, subject TEXT, notes TEXT, due TEXT, done INTEGER);
         CREATE INDEX activity_account ON activity(account_id, due);",
    )
    .unwrap();
    let mut rng = Rng(0x5eed);
    let target = size_mib << 20;
    let mut accounts = 0u64;
    let mut contacts = 0u64;
    loop {
        let tx = conn.unchecked_transaction().unwrap();
        {
            let mut acc = tx
                .prepare("INSERT INTO account VALUES (NULL, ?1, ?2, ?3, ?4, ?5)")
                .unwrap();
            let mut con = tx
                .prepare("INSERT INTO contact VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6)")
                .unwrap();
            let mut act = tx
                .prepare("INSERT INTO activity VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7)")
                .unwrap();
            for _ in 0..2000 {
                accounts += 1;
                let name = format!("{} {} Ltd", rng.pick(LAST), rng.pick(WORDS));
                acc.execute((
                    &name,
                    rng.pick(WORDS),
                    rng.pick(WORDS),
                    format!("2026-{:02}-{:02}", rng.next() % 12 + 1, rng.next() % 28 + 1),
                    (rng.next() % 10_000_000) as i64,
                ))
                .unwrap();
                for _ in 0..3 {
                    contacts += 1;
                    let (f, l) = (rng.pick(FIRST), rng.pick(LAST));
                    con.execute((
                        accounts as i64,
                        f,
                        l,
                        format!(
                            "{}.{}{}@{}.example",
                            f,
                            l,
                            rng.next() % 1000,
                            rng.pick(WORDS)
                        ),
                        format!("+49 30 {}", rng.next() % 10_000_000),
                        rng.pick(WORDS),
                    ))
                    .unwrap();
                }
                for _ in 0..6 {
                    let words = 10 + (rng.next() % 40) as usize;
                    act.execute((
                        accounts as i64,
                        (contacts - rng.next() % 3) as i64,
                        rng.pick(&["call", "email", "meeting", "task"]),
                        sentence(&mut rng, 5),
                        sentence(&mut rng, words),
                        format!("2026-{:02}-{:02}", rng.next() % 12 + 1, rng.next() % 28 + 1),
                        (rng.next() % 2) as i64,
                    ))
                    .unwrap();
                }
            }
        }
        tx.commit().unwrap();
        let pages: u64 = conn
            .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
            .unwrap() as u64;
        if pages * 4096 >= target {
            break;
        }
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    let size = std::fs::metadata(db).unwrap().len();
    println!("{{\"cmd\":\"gen\",\"bytes\":{size},\"accounts\":{accounts}}}");
}

fn page_hashes(db: &Path) -> Vec<[u8; 16]> {
    let bytes = std::fs::read(db).unwrap();
    bytes
        .chunks(4096)
        .map(|p| {
            let mut h = [0u8; 16];
            h.copy_from_slice(&blake3::hash(p).as_bytes()[..16]);
            h
        })
        .collect()
}

/// Rewrites the notes of random activities (same length, so no page splits) until about
/// `fraction` of the pages changed; prints how many pages really changed.
fn mutate(db: &Path, fraction: f64, seed: u64) {
    let before = page_hashes(db);
    let conn = Connection::open(db).unwrap();
    let max_id: i64 = conn
        .query_row("SELECT max(id) FROM activity", [], |r| r.get(0))
        .unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9e3779b97f4a7c15) | 1);
    let want = (before.len() as f64 * fraction) as usize;
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut up = tx
            .prepare(
                "UPDATE activity SET notes = substr(?2 || notes, 1, length(notes)), done = 1 - done
                 WHERE id = ?1",
            )
            .unwrap();
        for _ in 0..want {
            let id = (rng.next() % max_id as u64) as i64 + 1;
            let tag = format!("edited {} ", rng.next() % 1_000_000);
            up.execute((id, tag)).unwrap();
        }
    }
    tx.commit().unwrap();
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
    drop(conn);
    let after = page_hashes(db);
    let changed = before.iter().zip(&after).filter(|(a, b)| a != b).count()
        + after.len().saturating_sub(before.len());
    println!(
        "{{\"cmd\":\"mutate\",\"pages\":{},\"changed_pages\":{changed},\"fraction\":{:.4}}}",
        after.len(),
        changed as f64 / after.len() as f64
    );
}

/// The repository at `repo`; `BENCH_THREADS` overrides the number of worker threads.
fn open(repo: &Path) -> Repository {
    let r = Repository::open(Repository::local_store(repo).unwrap(), None).unwrap();
    match std::env::var("BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
    {
        Some(t) => r.with_threads(t),
        None => r,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let a = |i: usize| args.get(i).map(String::as_str).unwrap_or("");
    match a(1) {
        "gen" => generate(Path::new(a(2)), a(3).parse().unwrap()),
        "mutate" => mutate(
            Path::new(a(2)),
            a(3).parse().unwrap(),
            a(4).parse().unwrap(),
        ),
        "init" => {
            Repository::init(
                Repository::local_store(a(2)).unwrap(),
                InitOptions::default(),
            )
            .unwrap();
        }
        "backup" => {
            let repo = open(Path::new(a(2)));
            let s = repo
                .backup_sqlite(Path::new(a(3)), BTreeMap::new(), &|_| {})
                .unwrap();
            println!(
                "{{\"cmd\":\"backup\",\"id\":\"{}\",\"secs\":{:.3},\"bytes_added\":{},\"chunks_new\":{},\"chunks_total\":{},\"snapshot_open_us\":{},\"row_count_ms\":{:.1}}}",
                s.id,
                s.duration.as_secs_f64(),
                s.bytes_added,
                s.chunks_new,
                s.chunks_total,
                s.snapshot_open.as_micros(),
                s.row_count_duration.as_secs_f64() * 1e3
            );
        }
        "restore" => {
            // Default: integrity_check unless a drill proved these bytes. `--check-now`:
            // integrity_check even so. `--no-check`: neither (the hash is always checked).
            let repo = open(Path::new(a(2)));
            let id = repo.list_backups().unwrap().pop().unwrap().id;
            let opts = RestoreOptions {
                overwrite: false,
                integrity_check: a(4) != "--no-check",
                trust_proof: a(4) != "--check-now",
            };
            let s = repo.restore(&id, Path::new(a(3)), &opts, &|_| {}).unwrap();
            let integrity = match s.integrity {
                Integrity::CheckedNow => "checked_now",
                Integrity::ProvenByDrill { .. } => "proven_by_drill",
                Integrity::NotChecked => "not_checked",
            };
            println!(
                "{{\"cmd\":\"restore\",\"secs\":{:.3},\"check_secs\":{:.3},\"bytes\":{},\"integrity\":\"{integrity}\"}}",
                s.duration.as_secs_f64(),
                s.check_duration.as_secs_f64(),
                s.bytes_written
            );
        }
        "drill" => {
            let repo = open(Path::new(a(2)));
            let id = repo.list_backups().unwrap().pop().unwrap().id;
            let r = repo
                .drill(&id, Path::new(a(3)), &DrillOptions::default(), &|_| {})
                .unwrap();
            println!(
                "{{\"cmd\":\"drill\",\"secs\":{:.3},\"passed\":{},\"tables\":{},\"problems\":{}}}",
                r.duration.as_secs_f64(),
                r.passed,
                r.row_counts.len(),
                r.problems.len()
            );
        }
        "stall" => stall(Path::new(a(2)), Path::new(a(3))),
        "probe" => probe(Path::new(a(2))),
        _ => {
            eprintln!("usage: see the doc comment of examples/bench.rs");
            std::process::exit(2);
        }
    }
}

/// Commit latency of a writer (small transactions, WAL, synchronous=NORMAL) while nothing
/// else runs, then while a full backup runs.
fn stall(repo: &Path, db: &Path) {
    let run = |with_backup: bool| -> (usize, Duration, Duration, f64) {
        let stop = Arc::new(AtomicBool::new(false));
        let writer = {
            let (db, stop) = (db.to_owned(), stop.clone());
            std::thread::spawn(move || {
                let conn = Connection::open(&db).unwrap();
                conn.busy_timeout(Duration::from_secs(30)).unwrap();
                conn.execute_batch("PRAGMA synchronous=NORMAL;").unwrap();
                if std::env::var_os("STALL_NO_AUTOCHECKPOINT").is_some() {
                    // To tell lock waits from the writer's own checkpoint fsyncs.
                    conn.execute_batch("PRAGMA wal_autocheckpoint=0;").unwrap();
                }
                let mut lat = Vec::new();
                let mut rng = Rng(7);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    conn.execute(
                        "INSERT INTO activity(account_id, kind, subject, notes) VALUES (?1, 'call', 'stall probe', ?2)",
                        ((rng.next() % 1000) as i64, sentence(&mut rng, 20)),
                    )
                    .unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        };
        let t = Instant::now();
        if with_backup {
            open(repo)
                .backup_sqlite(db, BTreeMap::new(), &|_| {})
                .unwrap();
        } else {
            std::thread::sleep(Duration::from_secs(3));
        }
        let secs = t.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let mut lat = writer.join().unwrap();
        lat.sort();
        let p99 = lat[lat.len() * 99 / 100];
        (lat.len(), *lat.last().unwrap(), p99, secs)
    };
    let (n0, max0, p990, s0) = run(false);
    let (n1, max1, p991, s1) = run(true);
    println!(
        "{{\"cmd\":\"stall\",\"idle_commits_per_s\":{:.0},\"idle_max_ms\":{:.3},\"idle_p99_ms\":{:.3},\"backup_commits_per_s\":{:.0},\"backup_max_ms\":{:.3},\"backup_p99_ms\":{:.3},\"backup_secs\":{:.2}}}",
        n0 as f64 / s0,
        max0.as_secs_f64() * 1e3,
        p990.as_secs_f64() * 1e3,
        n1 as f64 / s1,
        max1.as_secs_f64() * 1e3,
        p991.as_secs_f64() * 1e3,
        s1
    );
}

/// Single-thread costs of the building blocks on this machine (for BENCHMARKS.md).
fn probe(db: &Path) {
    let data = std::fs::read(db).unwrap();
    let mb = data.len() as f64 / 1e6;
    let t = Instant::now();
    let h = blake3::hash(&data);
    println!(
        "blake3 one pass: {:.0} MB/s ({})",
        mb / t.elapsed().as_secs_f64(),
        &h.to_hex()[..8]
    );
    for frame in [128usize << 10, 256 << 10] {
        for level in [1, 2, 3] {
            let mut c = zstd::bulk::Compressor::new(level).unwrap();
            let t = Instant::now();
            let mut out = 0usize;
            for f in data[..data.len() / 4].chunks(frame) {
                out += c.compress(f).unwrap().len();
            }
            println!(
                "zstd level {level} frame {} KiB: {:.0} MB/s, ratio {:.3}",
                frame >> 10,
                mb / 4.0 / t.elapsed().as_secs_f64(),
                (data.len() / 4) as f64 / out as f64
            );
        }
    }
}
