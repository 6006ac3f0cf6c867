//! Restore to a moment is exact to the millisecond scale, not to the capture pass: with
//! `capture_interval_ms = 1000`, commits 40–60 ms apart are each stamped when they happen
//! (the capture worker polls a database as soon as its `-wal` is written), so a restore to
//! 10–15 ms after a commit gives exactly that commit's content. Without the watcher every commit
//! of a pass would carry the pass's time (up to a second late) and these restores would give
//! an older state.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;

mod pitr_support;
use pitr_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_a_few_ms_after_commits_a_few_ms_apart_give_exactly_those_commits() {
    // A pass a second: only the watcher can stamp commits to the millisecond.
    let api = capturing(|c| c.capture_interval_ms = 1000).await;
    let prod = api.create("crm-prod", "production").await;
    let sand = api.create("crm-sand", "sandbox").await;
    api.wait_through("crm-prod", Utc::now()).await;

    // Commits 40–60 ms apart, each with the time right after it and the content it made (far
    // less than the 1 s pass; the margin keeps the test steady on a loaded machine).
    let writer = rusqlite::Connection::open(&prod).unwrap();
    writer.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut history: Vec<(DateTime<Utc>, String)> = Vec::new();
    for i in 0..16u32 {
        writer
            .execute(
                "INSERT INTO accounts (name) VALUES (?1)",
                [format!("account {i}")],
            )
            .unwrap();
        history.push((Utc::now(), content(&prod)));
        tokio::time::sleep(Duration::from_millis(40 + u64::from(i * 7 % 21))).await;
    }
    let end = Utc::now();
    api.wait_through("crm-prod", end).await;

    for (k, offset_ms) in [
        (1usize, 12i64),
        (4, 15),
        (7, 10),
        (10, 12),
        (13, 15),
        (15, 10),
    ] {
        let (committed, expected) = &history[k];
        let at = *committed + chrono::Duration::milliseconds(offset_ms);
        assert!(
            history.get(k + 1).is_none_or(|(next, _)| *next > at),
            "commit {} is after the moment",
            k + 1
        );
        let (s, v) = api
            .call(
                Method::POST,
                "/api/v1/restores",
                Some(json!({"instance": "crm-prod", "at": at.to_rfc3339(), "target": "crm-sand"})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let job = api.wait_job(v["job"]["id"].as_i64().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        let got = content(&sand);
        let which = history.iter().position(|(_, c)| *c == got);
        assert_eq!(
            &got, expected,
            "restore to {offset_ms} ms after commit {k} ({at}) gave the state of commit {which:?}"
        );
    }
}
