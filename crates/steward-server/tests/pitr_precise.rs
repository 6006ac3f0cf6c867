//! Restore to a moment is exact to the millisecond scale, not to the capture pass: with
//! `capture_interval_ms = 1000`, commits 40–60 ms apart are each stamped when they happen
//! (the capture worker polls a database as soon as its `-wal` is written), so a restore to
//! 10–15 ms after a commit gives exactly that commit's content. Without the watcher every commit
//! of a pass would carry the pass's time (up to a second late) and these restores would give
//! an older state.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use steward_server::testing::TestServer;

struct Api {
    srv: TestServer,
    http: Client,
}

impl Api {
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.srv.url, path))
            .bearer_auth(&self.srv.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    async fn wait_job(&self, id: i64) -> Value {
        for _ in 0..1200 {
            let j = self.get(&format!("/api/v1/jobs/{id}")).await;
            if matches!(j["state"].as_str(), Some("succeeded" | "failed")) {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} did not end");
    }

    async fn create(&self, name: &str, kind: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/instances",
                Some(json!({"name": name, "type": kind, "release": "9.1"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["database_path"].as_str().unwrap().to_owned()
    }

    /// Waits until capture confirmed `name` up to at least `at`.
    async fn wait_through(&self, name: &str, at: DateTime<Utc>) -> Value {
        for _ in 0..400 {
            let r = self.get(&format!("/api/v1/instances/{name}/range")).await;
            if let Some(latest) = r["latest"].as_str() {
                let latest: DateTime<Utc> = latest.parse().unwrap();
                if latest >= at {
                    return r;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("capture of {name} never reached {at}");
    }
}

/// A hash of every account, in id order.
fn content(db: &str) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT id, name FROM accounts ORDER BY id")
        .unwrap();
    let mut h = blake3::Hasher::new();
    let rows = st
        .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    let mut n = 0;
    for r in rows {
        let (id, name) = r.unwrap();
        h.update(&id.to_le_bytes());
        h.update(name.as_bytes());
        n += 1;
    }
    format!("{n}:{}", h.finalize().to_hex())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restores_a_few_ms_after_commits_a_few_ms_apart_give_exactly_those_commits() {
    let srv = TestServer::start_with(
        |c| {
            c.continuous_capture = true;
            // A pass a second: only the watcher can stamp commits to the millisecond.
            c.capture_interval_ms = 1000;
        },
        None,
    )
    .await;
    let api = Api {
        srv,
        http: Client::new(),
    };
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
