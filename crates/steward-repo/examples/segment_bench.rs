//! Measures segments on a real database: a base snapshot through a held read transaction
//! (`backup_sqlite_conn`), then `SEGMENTS` segments of `COMMITS` commits of `PAGES` random
//! pages each (their current content, so the database stays valid), then restores to the
//! last moment, with and without `PRAGMA integrity_check`, beside a plain restore of the base.
//! Prints one JSON line per measurement.
//!
//! ```text
//! cargo run --release -p steward-repo --example segment_bench -- DB WORKDIR [SEGMENTS] [COMMITS] [PAGES]
//! ```
//! `DB` is copied into `WORKDIR` first (it is never written); `WORKDIR` is emptied.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

use rusqlite::Connection;
use steward_repo::{InitOptions, Repository, RestoreOptions, SegmentCommit};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: segment_bench DB WORKDIR [SEGMENTS] [COMMITS] [PAGES]");
        std::process::exit(2);
    }
    let src = Path::new(&args[1]);
    let work = Path::new(&args[2]);
    let n_seg: u64 = args.get(3).map_or(60, |a| a.parse().unwrap());
    let n_commit: usize = args.get(4).map_or(10, |a| a.parse().unwrap());
    let n_pages: usize = args.get(5).map_or(8, |a| a.parse().unwrap());
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).unwrap();
    let db = work.join("src.db");
    std::fs::copy(src, &db).unwrap();
    let repo = Repository::init(
        Repository::local_store(work.join("repo")).unwrap(),
        InitOptions::default(),
    )
    .unwrap();

    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL").unwrap();
    let page_count = conn
        .query_row("PRAGMA page_count", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64;
    let reader = Connection::open(&db).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    reader
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap();
    let t = Instant::now();
    let b = repo
        .backup_sqlite_conn(
            &reader,
            &db.display().to_string(),
            Default::default(),
            &|_| {},
        )
        .unwrap();
    reader.execute_batch("COMMIT").unwrap();
    println!(
        "{{\"op\":\"base\",\"ms\":{:.1},\"bytes\":{}}}",
        ms(t.elapsed()),
        b.bytes_read
    );
    let base_ms = repo.manifest(&b.id).unwrap().snapshot_ms.unwrap();

    let mut rng = Rng(0x5eed);
    let mut st = conn
        .prepare("SELECT data FROM sqlite_dbpage('main') WHERE pgno = ?1")
        .unwrap();
    let mut times = Vec::new();
    let mut added = 0u64;
    let mut at = base_ms;
    for seq in 1..=n_seg {
        let mut commits = Vec::new();
        for _ in 0..n_commit {
            let pages: BTreeSet<u32> = (0..n_pages)
                .map(|_| 2 + (rng.next() % (page_count - 1)) as u32)
                .collect();
            at += 7;
            commits.push(SegmentCommit {
                at_ms: at,
                db_pages: page_count as u32,
                pages: pages
                    .into_iter()
                    .map(|p| (p, st.query_row([p], |r| r.get::<_, Vec<u8>>(0)).unwrap()))
                    .collect(),
            });
        }
        at += 100;
        let t = Instant::now();
        let info = repo.write_segment(&b.id, seq, at, &commits).unwrap();
        times.push(ms(t.elapsed()));
        added += info.added_bytes;
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize];
    println!(
        "{{\"op\":\"write_segment\",\"segments\":{n_seg},\"commits_each\":{n_commit},\
         \"pages_each\":{n_pages},\"p50_ms\":{:.2},\"p99_ms\":{:.2},\"max_ms\":{:.2},\
         \"added_bytes\":{added}}}",
        pct(0.5),
        pct(0.99),
        times[times.len() - 1]
    );

    for (name, check) in [
        ("restore_at_checked", true),
        ("restore_at_unchecked", false),
    ] {
        let target = work.join(format!("{name}.db"));
        let opts = RestoreOptions {
            integrity_check: check,
            trust_proof: false,
            ..RestoreOptions::default()
        };
        let t = Instant::now();
        let s = repo.restore_at(&b.id, at, &target, &opts).unwrap();
        println!(
            "{{\"op\":\"{name}\",\"ms\":{:.1},\"check_ms\":{:.1},\"commits\":{},\"segments\":{}}}",
            ms(t.elapsed()),
            ms(s.check_duration),
            s.commits_applied,
            s.segments_used
        );
        std::fs::remove_file(target).unwrap();
    }
    let target = work.join("base.db");
    let opts = RestoreOptions {
        integrity_check: false,
        trust_proof: false,
        ..RestoreOptions::default()
    };
    let t = Instant::now();
    repo.restore(&b.id, &target, &opts, &|_| {}).unwrap();
    println!(
        "{{\"op\":\"restore_base_unchecked\",\"ms\":{:.1}}}",
        ms(t.elapsed())
    );
}
