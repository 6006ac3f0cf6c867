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

/// Backup labels and notes accepted NUL, other control characters and U+202E, and the NUL
/// reached the page's HTML raw. They are refused with a specific code and a message naming
/// the character and where it is; tabs and line breaks in notes stay allowed. Token names
/// follow the same rule.
#[tokio::test]
async fn labels_notes_and_token_names_refuse_control_and_bidi_characters() {
    let api = Api::start().await;
    let (s, v) = api
        .admin(
            Method::POST,
            "/api/v1/instances",
            Some(json!({"name": "acme", "type": "sandbox", "release": "9.0"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let path = "/api/v1/instances/acme/backups";
    let bad = [
        (
            json!({"label": "ab\u{202e}cd"}),
            "invalid_label",
            "a label may not contain U+202E RIGHT-TO-LEFT OVERRIDE (at position 3)",
        ),
        (
            json!({"label": "nul\u{0}here"}),
            "invalid_label",
            "U+0000 NULL (at position 4)",
        ),
        (
            json!({"label": "tab\there"}),
            "invalid_label",
            "U+0009 CHARACTER TABULATION",
        ),
        (
            json!({"label": "ok", "notes": "line\n\0"}),
            "invalid_notes",
            "notes may not contain U+0000 NULL (at position 6)",
        ),
        (
            json!({"label": "ok", "notes": "\u{1b}[2J"}),
            "invalid_notes",
            "U+001B ESCAPE (at position 1)",
        ),
    ];
    for (body, code, message) in &bad {
        let got = api.admin(Method::POST, path, Some(body.clone())).await;
        assert_error(&got, StatusCode::BAD_REQUEST, code);
        let m = got.1["message"].as_str().unwrap();
        assert!(m.contains(message), "{body}: {m}");
    }
    let (_, list) = api.admin(Method::GET, path, None).await;
    assert_eq!(
        list.as_array().unwrap().len(),
        0,
        "nothing was queued: {list}"
    );

    // Tabs and line breaks (as a browser's textarea sends them) are fine in notes.
    let (s, b) = api
        .admin(
            Method::POST,
            path,
            Some(json!({"label": "before import", "notes": "step 1\r\n\tstep 2\n"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let id = b["id"].as_i64().unwrap_or_else(|| panic!("{b}"));
    // Editing follows the same rule.
    let got = api
        .admin(
            Method::PATCH,
            &format!("/api/v1/backups/{id}"),
            Some(json!({"notes": "x\u{2066}y"})),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_notes");
    assert!(
        got.1["message"]
            .as_str()
            .unwrap()
            .contains("U+2066 LEFT-TO-RIGHT ISOLATE"),
        "{}",
        got.1
    );

    // Token names are shown in token lists: same rule.
    let got = api
        .admin(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({"name": "ci\u{202e}kcah"})),
        )
        .await;
    assert_error(&got, StatusCode::BAD_REQUEST, "invalid_token_name");
    assert!(
        got.1["message"]
            .as_str()
            .unwrap()
            .contains("U+202E RIGHT-TO-LEFT OVERRIDE (at position 3)"),
        "{}",
        got.1
    );
}
