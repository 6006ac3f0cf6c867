//! Updates (seed 001) against a real server: real SQLite instances, the real backup
//! repository, the job handlers and a manual clock moved across months.

use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use steward_core::{Clock, ManualClock};
use steward_server::testing::TestServer;

struct Env {
    server: TestServer,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
}

/// 2018-09-01 10:00 UTC: 9.1 is out, 8.2 is still supported (until 2020-01-31).
fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2018, 9, 1, 10, 0, 0).unwrap()
}

async fn env_with(tweak: impl FnOnce(&mut steward_server::Config)) -> Env {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::start_with(
        |c| {
            c.system_backup_time = "off".into();
            c.update_rehearsal_days = 0;
            tweak(c);
        },
        Some(clock.clone() as Arc<dyn Clock>),
    )
    .await;
    Env {
        server,
        clock,
        http: reqwest::Client::new(),
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

impl Env {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn call(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let url = format!("{}/api/v1{path}", self.server.url);
        let mut req = match method {
            "GET" => self.http.get(url),
            "PUT" => self.http.put(url),
            _ => self.http.post(url),
        }
        .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let t = self.server.token.clone();
        self.call(method, path, &t, body).await
    }

    async fn instance(&self, name: &str, kind: &str, release: &str) -> String {
        let (st, v) = self
            .admin("POST", "/instances", Some(json!({"name": name, "type": kind, "release": release})))
            .await;
        assert_eq!(st, 201, "{v}");
        v["database_path"].as_str().unwrap().to_owned()
    }

    async fn user_token(&self, name: &str, role: &str) -> String {
        let (st, v) = self
            .admin("POST", "/users", Some(json!({"username": name, "role": role, "password": "a-long-password-1"})))
            .await;
        assert_eq!(st, 201, "{v}");
        let (st, v) = self
            .call(
                "POST",
                "/tokens/login",
                "",
                Some(json!({"username": name, "password": "a-long-password-1", "name": "t"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        v["secret"].as_str().or(v["token"].as_str()).unwrap().to_owned()
    }

    /// Runs the update tick and every queued job, off the async workers.
    async fn tick(&self) {
        let st = self.server.state.clone();
        tokio::task::spawn_blocking(move || {
            st.services.tick_updates().unwrap();
            while st.services.run_next_job(&st.jobs).unwrap() {}
        })
        .await
        .unwrap();
    }

    fn advance_to(&self, t: DateTime<Utc>) {
        self.clock.set(t);
    }
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn major_update_needs_approval_then_runs_in_its_window() {
    let e = env().await;
    let db = e.instance("crm-prod", "production", "8.2").await;
    let preferred = e.now() + Duration::days(10);
    let (st, u) = e
        .admin(
            "POST",
            "/instances/crm-prod/updates",
            Some(json!({"target": "9.0", "preferred_start": ts(preferred), "alternate_start": ts(preferred + Duration::days(1))})),
        )
        .await;
    assert_eq!(st, 201, "{u}");
    assert_eq!(u["status"], "scheduled");
    assert_eq!(u["needs_approval"], true);
    // Not approved: the window opens and nothing runs.
    e.advance_to(preferred + Duration::minutes(1));
    e.tick().await;
    let (_, o) = e.admin("GET", "/instances/crm-prod/updates", None).await;
    assert_eq!(o["release"], "8.2", "{o}");
    let _ = db;
}
