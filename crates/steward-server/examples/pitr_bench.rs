//! Continuous capture vs Litestream (issue #11, point 6): the writer side and Steward's side
//! of `bench/pitr.sh`. One writer commits small transactions (WAL, `synchronous=NORMAL`) for a
//! fixed time; every transaction also writes its sequence number into a one-page marker table,
//! so whoever holds a copy of that page knows exactly which commits it holds.
//!
//! ```text
//! pitr_bench prep DB                          # adds the marker table, prints its page
//! pitr_bench run MODE DB WORKDIR SECS RATE    # MODE: none | steward | litestream
//! pitr_bench restore REPO BASE AT_MS TARGET check|nocheck
//! ```
//!
//! `run` writes `WORKDIR/commits.csv` (sequence number, commit time in µs since the epoch, taken
//! by the writer right after `COMMIT` returned) and prints one JSON line.
//! - `none`: the writer alone.
//! - `steward`: the capture loop of `steward serve`'s capture worker in this process (a
//!   `Capturer` on the database, a base snapshot at an exact commit, then every
//!   `interval` ms one `poll` and, when it found commits, one `write_segment`), started before
//!   the writer. A commit is durable when the `write_segment` holding it returned. The
//!   control-plane bookkeeping the server adds per segment (one row in its store) is not done.
//! - `litestream`: Litestream runs outside (started by `bench/pitr.py`); a thread polls the
//!   replica's `ltx/0` directory every 5 ms and records when each LTX file first appeared
//!   (`WORKDIR/ltx_seen.csv`); `bench/pitr.py` reads the marker page out of each file.
//!
//! RATE is commits per second (0: as fast as the writer can).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rusqlite::Connection;
use serde_json::json;
use steward_repo::{InitOptions, Repository, RestoreOptions, SegmentCommit};

const MARKER: &[u8] = b"PITRSEQ:";

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn marker_text(seq: u64) -> String {
    format!("PITRSEQ:{seq:020};")
}

/// The sequence number in a copy of the marker page, if it holds one.
fn marker_in(page: &[u8]) -> Option<u64> {
    let i = page.windows(MARKER.len()).position(|w| w == MARKER)?;
    let digits = page.get(i + MARKER.len()..i + MARKER.len() + 20)?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn marker_page(conn: &Connection) -> u32 {
    conn.query_row(
        "SELECT rootpage FROM sqlite_schema WHERE name = 'pitr_marker'",
        [],
        |r| r.get(0),
    )
    .expect("the marker table (run `prep` first)")
}

fn prep(db: &Path) {
    let conn = Connection::open(db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE IF NOT EXISTS pitr_marker(id INTEGER PRIMARY KEY, v TEXT);
         INSERT OR REPLACE INTO pitr_marker VALUES (1, 'PITRSEQ:00000000000000000000;');
         PRAGMA wal_checkpoint(TRUNCATE);",
    )
    .unwrap();
    let activities: i64 = conn
        .query_row("SELECT max(id) FROM activity", [], |r| r.get(0))
        .unwrap();
    println!(
        "{}",
        json!({"marker_page": marker_page(&conn), "activities": activities})
    );
}

/// The writer: small transactions until `stop`, `rate` per second (0: unthrottled). Returns
/// the commit times (µs), index = sequence number - 1.
fn writer(db: PathBuf, rate: u64, stop: Arc<AtomicBool>) -> Vec<u64> {
    let conn = Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(30)).unwrap();
    conn.execute_batch("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        .unwrap();
    let activities: u64 = conn
        .query_row("SELECT max(id) FROM activity", [], |r| r.get::<_, i64>(0))
        .unwrap() as u64;
    let mut rng = Rng(0x1234_5678);
    let mut times = Vec::with_capacity(1 << 20);
    let start = Instant::now();
    let mut seq = 0u64;
    let mut note = String::with_capacity(128);
    while !stop.load(Ordering::Relaxed) {
        if let Some(us) = (seq * 1_000_000).checked_div(rate) {
            let due = start + Duration::from_micros(us);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        seq += 1;
        note.clear();
        for _ in 0..12 {
            note.push_str(&format!("{:08x} ", rng.next() as u32));
        }
        let tx = conn.unchecked_transaction().unwrap();
        tx.execute(
            "UPDATE pitr_marker SET v = ?1 WHERE id = 1",
            [marker_text(seq)],
        )
        .unwrap();
        tx.execute(
            "UPDATE activity SET done = coalesce(done, 0) + 1 WHERE id = ?1",
            [(1 + rng.next() % activities) as i64],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO activity(account_id, kind, subject, notes) VALUES (?1, 'call', 'pitr bench', ?2)",
            ((rng.next() % 400_000) as i64, note.as_str()),
        )
        .unwrap();
        tx.commit().unwrap();
        times.push(now_us());
    }
    times
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                total += dir_bytes(&e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// Steward's capture loop, as the server's capture worker runs it for one instance.
struct StewardSide {
    repo: Repository,
    capturer: steward_capture::Capturer,
    base: String,
    seq: u64,
    marker: u32,
    /// (highest sequence number in the segment, µs when its write returned).
    durable: Vec<(u64, u64)>,
    segment_ms: Vec<f64>,
    commits: u64,
    pages: u64,
}

impl StewardSide {
    fn start(db: &Path, work: &Path) -> (StewardSide, f64) {
        let repo = Repository::init(
            Repository::local_store(work.join("repo")).unwrap(),
            InitOptions::default(),
        )
        .unwrap();
        let mut capturer =
            steward_capture::Capturer::open(db, steward_capture::CaptureOptions::default())
                .unwrap();
        let t = Instant::now();
        let source = db.display().to_string();
        let (_, summary) = capturer
            .poll_with_snapshot(|conn| {
                repo.backup_sqlite_conn(conn, &source, BTreeMap::new(), &|_| {})
            })
            .unwrap();
        let base = summary.unwrap().id;
        let base_secs = t.elapsed().as_secs_f64();
        let marker = marker_page(&Connection::open(db).unwrap());
        (
            StewardSide {
                repo,
                capturer,
                base,
                seq: 1,
                marker,
                durable: Vec::new(),
                segment_ms: Vec::new(),
                commits: 0,
                pages: 0,
            },
            base_secs,
        )
    }

    /// One pass: poll, and write a segment when it found commits.
    fn pass(&mut self) {
        let commits = self.capturer.poll().expect("capture poll");
        if commits.is_empty() {
            return;
        }
        let last = commits.last().unwrap();
        let top = last
            .pages
            .binary_search_by_key(&self.marker, |(p, _)| *p)
            .ok()
            .and_then(|i| marker_in(&last.pages[i].1))
            .expect("every commit writes the marker page");
        let seg: Vec<SegmentCommit> = commits
            .into_iter()
            .map(|c| SegmentCommit {
                at_ms: c.at_ms,
                db_pages: c.db_pages,
                pages: c.pages,
            })
            .collect();
        let through = seg.last().unwrap().at_ms;
        let t = Instant::now();
        let info = self
            .repo
            .write_segment(&self.base, self.seq, through, &seg)
            .expect("write_segment");
        self.segment_ms.push(t.elapsed().as_secs_f64() * 1e3);
        self.durable.push((top, now_us()));
        self.seq += 1;
        self.commits += info.commits;
        self.pages += info.pages;
    }
}

fn run(mode: &str, db: &Path, work: &Path, secs: f64, rate: u64) {
    let interval = Duration::from_millis(
        std::env::var("PITR_INTERVAL_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(100),
    );
    let mut steward = None;
    let mut base_secs = 0.0;
    let mut repo_before = 0;
    if mode == "steward" {
        let (s, b) = StewardSide::start(db, work);
        base_secs = b;
        repo_before = dir_bytes(&work.join("repo"));
        steward = Some(s);
    }
    let replica_l0 = work.join("replica").join("ltx").join("0");
    let stop = Arc::new(AtomicBool::new(false));
    let start_us = now_us();
    let w = {
        let (db, stop) = (db.to_path_buf(), stop.clone());
        std::thread::spawn(move || writer(db, rate, stop))
    };
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = (mode == "litestream").then(|| {
        let stop = watch_stop.clone();
        let dir = replica_l0.clone();
        std::thread::spawn(move || {
            let mut seen: BTreeMap<String, u64> = BTreeMap::new();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    let t = now_us();
                    for e in rd.flatten() {
                        let name = e.file_name().to_string_lossy().into_owned();
                        if name.ends_with(".ltx") {
                            seen.entry(name).or_insert(t);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        })
    });
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let mut passes = 0u64;
    while Instant::now() < deadline {
        let started = Instant::now();
        if let Some(s) = steward.as_mut() {
            s.pass();
            passes += 1;
        }
        std::thread::sleep(
            interval
                .saturating_sub(started.elapsed())
                .min(deadline.saturating_duration_since(Instant::now())),
        );
    }
    stop.store(true, Ordering::Relaxed);
    let times = w.join().unwrap();
    let end_us = now_us();
    if let Some(wt) = watcher {
        // Keep watching for the syncs of the last commits.
        std::thread::sleep(Duration::from_secs(3));
        watch_stop.store(true, Ordering::Relaxed);
        let seen = wt.join().unwrap();
        let mut out = String::new();
        for (name, t) in &seen {
            out.push_str(&format!("{name},{t}\n"));
        }
        std::fs::write(work.join("ltx_seen.csv"), out).unwrap();
    }
    let wall = (end_us - start_us) as f64 / 1e6;
    let mut csv = String::with_capacity(times.len() * 24);
    for (i, t) in times.iter().enumerate() {
        csv.push_str(&format!("{},{t}\n", i + 1));
    }
    std::fs::write(work.join("commits.csv"), csv).unwrap();
    let mut out = json!({
        "mode": mode, "rate": rate, "secs": wall, "commits": times.len(),
        "commits_per_s": times.len() as f64 / wall, "start_us": start_us, "end_us": end_us,
    });
    if let Some(mut s) = steward {
        // The passes after the writer stopped capture its last commits (their lag counts).
        let tail = Instant::now();
        while s.durable.last().map(|d| d.0) < Some(times.len() as u64)
            && tail.elapsed() < Duration::from_secs(10)
        {
            let started = Instant::now();
            s.pass();
            std::thread::sleep(interval.saturating_sub(started.elapsed()));
        }
        let mut lags = Vec::with_capacity(times.len());
        let mut j = 0;
        for (i, t) in times.iter().enumerate() {
            let seq = i as u64 + 1;
            while j < s.durable.len() && s.durable[j].0 < seq {
                j += 1;
            }
            if j == s.durable.len() {
                break;
            }
            lags.push((s.durable[j].1 as f64 - *t as f64) / 1e3);
        }
        lags.sort_by(|a, b| a.total_cmp(b));
        s.segment_ms.sort_by(|a, b| a.total_cmp(b));
        let repo_after = dir_bytes(&work.join("repo"));
        out["base_snapshot_secs"] = json!(base_secs);
        out["base"] = json!(s.base);
        out["passes"] = json!(passes);
        out["segments"] = json!(s.seq - 1);
        out["captured_commits"] = json!(s.commits);
        out["captured_pages"] = json!(s.pages);
        out["lag_commits"] = json!(lags.len());
        out["lag_p50_ms"] = json!(pct(&lags, 0.5));
        out["lag_p99_ms"] = json!(pct(&lags, 0.99));
        out["lag_max_ms"] = json!(lags.last().copied().unwrap_or(f64::NAN));
        out["segment_write_p50_ms"] = json!(pct(&s.segment_ms, 0.5));
        out["segment_write_p99_ms"] = json!(pct(&s.segment_ms, 0.99));
        out["repo_bytes_base"] = json!(repo_before);
        out["repo_bytes_added"] = json!(repo_after - repo_before);
        out["capture_stats"] = json!(format!("{:?}", s.capturer.stats()));
        out["wal_file_bytes"] = json!(s.capturer.wal_file_bytes());
    }
    println!("{out}");
}

fn restore(repo: &Path, base: &str, at_ms: u64, target: &Path, check: bool) {
    let repo = Repository::open(Repository::local_store(repo).unwrap(), None).unwrap();
    let opts = RestoreOptions {
        integrity_check: check,
        trust_proof: false,
        ..RestoreOptions::default()
    };
    let t = Instant::now();
    let s = repo.restore_at(base, at_ms, target, &opts).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let conn = Connection::open(target).unwrap();
    let v: String = conn
        .query_row("SELECT v FROM pitr_marker WHERE id = 1", [], |r| r.get(0))
        .unwrap();
    println!(
        "{}",
        json!({
            "secs": secs, "check_secs": s.check_duration.as_secs_f64(),
            "commits_applied": s.commits_applied, "segments_used": s.segments_used,
            "applied_at_ms": s.applied_at_ms, "db_size": s.db_size,
            "integrity_checked": s.integrity_checked,
            "marker_seq": marker_in(v.as_bytes()),
        })
    );
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!(
            "usage: pitr_bench prep DB | run none|steward|litestream DB WORKDIR SECS RATE | restore REPO BASE AT_MS TARGET check|nocheck"
        );
        std::process::exit(2)
    };
    match a.get(1).map(String::as_str) {
        Some("prep") if a.len() == 3 => prep(Path::new(&a[2])),
        Some("run") if a.len() == 7 => run(
            &a[2],
            Path::new(&a[3]),
            Path::new(&a[4]),
            a[5].parse().unwrap_or_else(|_| usage()),
            a[6].parse().unwrap_or_else(|_| usage()),
        ),
        Some("restore") if a.len() == 7 => restore(
            Path::new(&a[2]),
            &a[3],
            a[4].parse().unwrap_or_else(|_| usage()),
            Path::new(&a[5]),
            a[6] == "check",
        ),
        _ => usage(),
    }
}
