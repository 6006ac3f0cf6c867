//! Defects found when Steward was tried as a new user would (issue #13, point 4), over the
//! REST API of a real server on port 0 with a manual clock.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use steward_core::ManualClock;
use steward_server::Config;
use steward_server::testing::TestServer;

const PASSWORD: &str = "correct-horse-battery";

struct Api {
    srv: TestServer,
    http: Client,
    clock: Arc<ManualClock>,
}

impl Api {
    async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap(),
        ));
        Self {
            srv: TestServer::start_with(tweak, Some(clock.clone())).await,
            http: Client::new(),
            clock,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.srv.url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, path, Some(&self.srv.token.clone()), body)
            .await
    }

    async fn create_user(&self, username: &str, role: &str) {
        let (s, v) = self
            .admin(
                Method::POST,
                "/api/v1/users",
                Some(json!({"username": username, "role": role, "password": PASSWORD})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    async fn login(&self, username: &str, password: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/tokens/login",
            None,
            Some(json!({"username": username, "password": password, "name": "test"})),
        )
        .await
    }

    /// Creates a user with `role` and returns an API token for them.
    async fn user_token(&self, username: &str, role: &str) -> String {
        self.create_user(username, role).await;
        let (s, v) = self.login(username, PASSWORD).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["secret"].as_str().unwrap().to_owned()
    }
}

#[track_caller]
fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
}

/// Refusing `maintenance prune` to a Delegated Admin said "may not manage users".
#[tokio::test]
async fn a_refused_prune_names_the_prune() {
    let api = Api::start().await;
    let delegated = api.user_token("dana", "delegated_admin").await;
    let got = api
        .call(
            Method::POST,
            "/api/v1/maintenance/prune",
            Some(&delegated),
            None,
        )
        .await;
    assert_error(&got, StatusCode::FORBIDDEN, "forbidden");
    let message = got.1["message"].as_str().unwrap();
    assert_eq!(
        message,
        "a Delegated Admin may not run backup maintenance (expire and prune)"
    );
    let (s, _) = api
        .admin(Method::POST, "/api/v1/maintenance/prune", None)
        .await;
    assert_eq!(s, StatusCode::OK, "System Administrators still may");
}
