//! What the point-in-time tests share: a real server with continuous capture on, a REST
//! client for it, and the content of an instance's rows to compare states by. Include with
//! `mod pitr_support;`.
#![allow(dead_code)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use steward_server::Config;
use steward_server::testing::TestServer;

/// A test server and an HTTP client authenticated as its first administrator.
pub struct Api {
    pub srv: TestServer,
    pub http: Client,
    /// Whatever must live as long as the server (e.g. a scripts directory).
    pub keep: Option<tempfile::TempDir>,
}

impl Api {
    pub fn new(srv: TestServer) -> Self {
        Api {
            srv,
            http: Client::new(),
            keep: None,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
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

    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    /// Polls a job until it ends; returns it.
    pub async fn wait_job(&self, id: i64) -> Value {
        for _ in 0..1200 {
            let j = self.get(&format!("/api/v1/jobs/{id}")).await;
            if matches!(j["state"].as_str(), Some("succeeded" | "failed")) {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} did not end");
    }

    /// Creates an instance at release 9.1; returns its database path.
    pub async fn create(&self, name: &str, kind: &str) -> String {
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

    pub async fn range(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/instances/{name}/range")).await
    }

    /// Waits until capture confirmed `name` up to at least `at`; returns the range.
    pub async fn wait_through(&self, name: &str, at: DateTime<Utc>) -> Value {
        for _ in 0..400 {
            let r = self.range(name).await;
            if let Some(latest) = r["latest"].as_str() {
                let latest: DateTime<Utc> = latest.parse().unwrap();
                if latest >= at {
                    return r;
                }
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "capture of {name} never reached {at}: {}",
            self.range(name).await
        );
    }
}

/// A server with continuous capture on (a pass every 20 ms) after `tweak`.
pub async fn capturing(tweak: impl FnOnce(&mut Config) + Send + 'static) -> Api {
    let srv = TestServer::start_with(
        |c| {
            c.continuous_capture = true;
            c.capture_interval_ms = 20;
            tweak(c);
        },
        None,
    )
    .await;
    Api::new(srv)
}

/// What the rows say: every account and contact, in id order (the page layout after a copy
/// may differ; the committed content may not).
pub fn content(db: &str) -> String {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut h = blake3::Hasher::new();
    let mut n = 0;
    for q in [
        "SELECT id, name FROM accounts ORDER BY id",
        "SELECT id, coalesce(email, '') FROM contacts ORDER BY id",
    ] {
        let mut st = c.prepare(q).unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))
            .unwrap();
        for r in rows {
            let (id, name) = r.unwrap();
            h.update(&id.to_le_bytes());
            h.update(name.as_bytes());
            n += 1;
        }
    }
    format!("{n}:{}", h.finalize().to_hex())
}
