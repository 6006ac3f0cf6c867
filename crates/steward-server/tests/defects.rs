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

// ---- sign-in throttling ----

/// An HTTP client whose connections come from `address` (any of 127.0.0.0/8 reaches the
/// server on 127.0.0.1), so tests can sign in from several client addresses.
fn client_from(address: &str) -> Client {
    Client::builder()
        .local_address(address.parse::<std::net::IpAddr>().unwrap())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Api {
    async fn login_from(&self, from: &str, username: &str, password: &str) -> (StatusCode, Value) {
        let resp = client_from(from)
            .post(format!("{}/api/v1/tokens/login", self.srv.url))
            .json(&json!({"username": username, "password": password, "name": "t"}))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Posts the admin center's sign-in form from `from`; the status and page.
    async fn web_login_from(&self, from: &str, username: &str, password: &str) -> (u16, String) {
        let csrf = "ab".repeat(32);
        let resp = client_from(from)
            .post(format!("{}/login", self.srv.url))
            .header("cookie", format!("steward_login_csrf={csrf}"))
            .form(&[
                ("username", username),
                ("password", password),
                ("csrf", &csrf),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.text().await.unwrap())
    }

    fn advance_minutes(&self, minutes: i64) {
        self.clock.advance(chrono::Duration::minutes(minutes));
    }

    async fn audit_actions(&self, target: &str) -> Vec<String> {
        let (_, v) = self
            .admin(Method::GET, "/api/v1/audit?limit=1000", None)
            .await;
        let mut actions: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["target"] == target)
            .map(|e| e["action"].as_str().unwrap().to_owned())
            .collect();
        actions.reverse();
        actions
    }
}

const WRONG: &str = "not-the-password";

/// 20 wrong passwords in a row were answered at full speed and the 21st signed in. Now the
/// fifth failure within 15 minutes locks the account for 15 minutes, the right password too.
#[tokio::test]
async fn api_sign_in_locks_an_account_after_five_failures() {
    let api = Api::start().await;
    api.create_user("alice", "viewer").await;
    for _ in 0..4 {
        let got = api.login("alice", WRONG).await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let got = api.login("alice", WRONG).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "login_throttled");
    assert_eq!(
        got.1["message"],
        "too many failed sign-ins for alice; try again in 15 minutes"
    );
    // Locked: the right password is refused too, without a token.
    let got = api.login("alice", PASSWORD).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "login_throttled");
    api.advance_minutes(11);
    let got = api.login("alice", PASSWORD).await;
    assert_eq!(
        got.1["message"],
        "too many failed sign-ins for alice; try again in 4 minutes"
    );
    // Another user is not affected.
    api.create_user("bob", "viewer").await;
    assert_eq!(api.login("bob", PASSWORD).await.0, StatusCode::CREATED);
    // The lock ends after 15 minutes.
    api.advance_minutes(4);
    let (s, v) = api.login("alice", PASSWORD).await;
    assert_eq!(s, StatusCode::CREATED, "unlocked after the period: {v}");

    // Audited: each failure and the lockout; the refused attempts while locked add nothing.
    let actions = api.audit_actions("alice").await;
    let failed = actions
        .iter()
        .filter(|a| *a == "session.login_failed")
        .count();
    let locked = actions
        .iter()
        .filter(|a| *a == "session.login_locked")
        .count();
    assert_eq!((failed, locked), (5, 1), "{actions:?}");

    // A success resets the count: 4 failures, a success, 4 failures do not lock.
    for _ in 0..4 {
        assert_eq!(api.login("alice", WRONG).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(api.login("alice", PASSWORD).await.0, StatusCode::CREATED);
    for _ in 0..4 {
        assert_eq!(api.login("alice", WRONG).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(api.login("alice", PASSWORD).await.0, StatusCode::CREATED);
    // Failures older than the 15-minute window no longer count.
    for _ in 0..4 {
        assert_eq!(api.login("alice", WRONG).await.0, StatusCode::UNAUTHORIZED);
    }
    api.advance_minutes(16);
    assert_eq!(api.login("alice", WRONG).await.0, StatusCode::UNAUTHORIZED);
}

/// The per-account limit holds whatever address the attempts come from, and one address that
/// fails against many accounts is locked on its own (a larger limit).
#[tokio::test]
async fn sign_in_limits_hold_per_account_across_addresses_and_per_address() {
    let api = Api::start().await;
    api.create_user("alice", "viewer").await;
    api.create_user("bob", "viewer").await;
    for from in [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
    ] {
        api.login_from(from, "alice", WRONG).await;
    }
    let got = api.login_from("127.0.0.1", "alice", PASSWORD).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "login_throttled");

    // 20 failures from one address against different (even unknown) accounts lock it.
    for i in 0..19 {
        let got = api
            .login_from("127.0.0.9", &format!("guess{i}"), WRONG)
            .await;
        assert_error(&got, StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    let got = api.login_from("127.0.0.9", "guess19", WRONG).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "login_throttled");
    assert_eq!(
        got.1["message"],
        "too many failed sign-ins from 127.0.0.9; try again in 15 minutes"
    );
    let got = api.login_from("127.0.0.9", "bob", PASSWORD).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "login_throttled");
    let (s, _) = api.login_from("127.0.0.8", "bob", PASSWORD).await;
    assert_eq!(s, StatusCode::CREATED, "bob from another address");
    assert!(
        api.audit_actions("127.0.0.9")
            .await
            .contains(&"session.login_locked".to_owned())
    );
}

/// The admin center's sign-in form shares the limits and says why it refuses.
#[tokio::test]
async fn web_sign_in_is_throttled_with_a_clear_message() {
    let api = Api::start().await;
    api.create_user("carol", "viewer").await;
    for _ in 0..4 {
        let (s, page) = api.web_login_from("127.0.0.1", "carol", WRONG).await;
        assert_eq!(s, 401, "{page}");
    }
    // The API and the form count together.
    api.login("carol", WRONG).await;
    let (s, page) = api.web_login_from("127.0.0.1", "carol", PASSWORD).await;
    assert_eq!(s, 429, "{page}");
    assert!(
        page.contains("Too many failed sign-ins for carol; try again in 15 minutes"),
        "{page}"
    );
    api.advance_minutes(15);
    let (s, page) = api.web_login_from("127.0.0.1", "carol", PASSWORD).await;
    assert_eq!(s, 303, "signed in after the lock: {page}");
}

/// The limits are configurable; 0 turns a limit off.
#[tokio::test]
async fn sign_in_limits_are_configurable() {
    let api = Api::start_with(|c| {
        c.login_account_failures = 2;
        c.login_lockout_minutes = 1;
    })
    .await;
    api.create_user("dave", "viewer").await;
    api.login("dave", WRONG).await;
    let got = api.login("dave", WRONG).await;
    assert_error(&got, StatusCode::TOO_MANY_REQUESTS, "login_throttled");
    assert_eq!(
        got.1["message"],
        "too many failed sign-ins for dave; try again in 1 minute"
    );
    api.advance_minutes(1);
    assert_eq!(api.login("dave", PASSWORD).await.0, StatusCode::CREATED);

    let api = Api::start_with(|c| c.login_account_failures = 0).await;
    api.create_user("erin", "viewer").await;
    for _ in 0..10 {
        assert_eq!(api.login("erin", WRONG).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(api.login("erin", PASSWORD).await.0, StatusCode::CREATED);
}

/// A lock is kept in the store: restarting Steward does not lift it.
#[test]
fn a_sign_in_lock_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        scheduler: false,
        ..Config::default()
    };
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).unwrap(),
    ));
    let (state, boot) = steward_server::prepare_with_clock(config.clone(), clock.clone()).unwrap();
    let admin = state
        .services
        .authenticate_token(&boot.unwrap().token)
        .unwrap();
    state
        .services
        .create_user(&admin, "frank", "viewer", Some(PASSWORD))
        .unwrap();
    for _ in 0..5 {
        state
            .services
            .token_for_credentials("frank", WRONG, "t")
            .unwrap_err();
    }
    drop(state);
    let (state, _) = steward_server::prepare_with_clock(config, clock.clone()).unwrap();
    let err = state
        .services
        .token_for_credentials("frank", PASSWORD, "t")
        .unwrap_err();
    assert_eq!(err.code, "login_throttled", "{err}");
    clock.advance(chrono::Duration::minutes(15));
    state
        .services
        .token_for_credentials("frank", PASSWORD, "t")
        .unwrap();
}
