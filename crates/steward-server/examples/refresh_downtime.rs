//! Measures a database refresh of a large database: how long the whole job takes and how long
//! the target is unavailable (its downtime), through the real services, job runner, backup
//! repository and SQLite files.
//!
//! ```sh
//! cargo run --release -p steward-server --example refresh_downtime -- 1024   # MiB
//! ```
//!
//! The source (production, CRM 9.1) gets a `bulk` table of pseudo-random (incompressible)
//! blobs up to the given size; the sandbox target gets a tenth of that. The refresh copies
//! the latest (a fresh backup of the source), so every stage runs. Not a test: timings depend
//! on the machine. Results are recorded in `docs/workitems.md`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use steward_core::ManualClock;
use steward_server::Config;
use steward_server::services::workitems::RefreshRequest;

/// Fills `db` with `mib` MiB of pseudo-random blobs in a `bulk` table.
fn fill(db: &Path, mib: u64) {
    let mut c = rusqlite::Connection::open(db).unwrap();
    let tx = c.transaction().unwrap();
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS bulk (id INTEGER PRIMARY KEY, data BLOB NOT NULL)",
    )
    .unwrap();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut blob = vec![0u8; 64 * 1024];
    {
        let mut st = tx.prepare("INSERT INTO bulk (data) VALUES (?1)").unwrap();
        for _ in 0..mib * 16 {
            for chunk in blob.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                chunk.copy_from_slice(&x.to_le_bytes());
            }
            st.execute([&blob]).unwrap();
        }
    }
    tx.commit().unwrap();
}

fn main() {
    let mib: u64 = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("size in MiB"))
        .unwrap_or(1024);
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2027, 1, 10, 8, 0, 0).unwrap(),
    ));
    let config = Config {
        data_dir: dir.path().join("data"),
        system_backup_time: "off".into(),
        ..Config::default()
    };
    let (state, boot) = steward_server::prepare_with_clock(config, clock.clone()).unwrap();
    let s = &state.services;
    let admin = s.authenticate_token(&boot.unwrap().token).unwrap();
    let prod = s
        .create_instance(&admin, "bench-prod", "production", Some("9.1"))
        .unwrap();
    let sand = s
        .create_instance(&admin, "bench-test", "sandbox", Some("9.1"))
        .unwrap();
    let t = Instant::now();
    fill(Path::new(&prod.database_path), mib);
    fill(Path::new(&sand.database_path), (mib / 10).max(1));
    let size = std::fs::metadata(&prod.database_path).unwrap().len();
    println!(
        "source database: {:.1} MiB (filled in {:.1} s)",
        size as f64 / 1048576.0,
        t.elapsed().as_secs_f64()
    );

    let w = s
        .request_refresh(
            &admin,
            &RefreshRequest {
                source: "bench-prod".into(),
                target: "bench-test".into(),
                at: None,
                window_start: clock.as_ref().now_plus(Duration::hours(24)),
                acknowledge: true,
            },
        )
        .unwrap();
    clock.advance(Duration::hours(24));
    assert_eq!(s.start_due_work_items().unwrap(), [w.id]);
    let t = Instant::now();
    while s.run_next_job(&state.jobs).unwrap() {}
    let total = t.elapsed();
    let done = s.show_work_item(&admin, w.id).unwrap();
    assert_eq!(done.status, "succeeded", "{:?}", done.error);
    let target_size = std::fs::metadata(&sand.database_path).unwrap().len();
    assert!(target_size >= size, "the target holds the copy");
    println!(
        "refresh job (fresh source backup, restore, scripts, safety backup, swap): {:.1} s",
        total.as_secs_f64()
    );
    println!(
        "target downtime (unavailable -> available): {:.1} s ({} ms)",
        done.downtime_ms.unwrap() as f64 / 1000.0,
        done.downtime_ms.unwrap()
    );
}

trait NowPlus {
    fn now_plus(&self, d: Duration) -> chrono::DateTime<Utc>;
}

impl NowPlus for ManualClock {
    fn now_plus(&self, d: Duration) -> chrono::DateTime<Utc> {
        use steward_core::Clock;
        self.now() + d
    }
}
