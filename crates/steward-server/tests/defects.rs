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

// ---- overlapping refreshes ----

impl Api {
    async fn instance(&self, name: &str, kind: &str, release: &str) {
        let (s, v) = self
            .admin(
                Method::POST,
                "/api/v1/instances",
                Some(json!({"name": name, "type": kind, "release": release})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }

    /// The manual clock plus `hours`, as RFC 3339.
    fn hours_ahead(&self, hours: f64) -> String {
        let at = steward_core::Clock::now(&*self.clock)
            + chrono::Duration::minutes((hours * 60.0) as i64);
        at.to_rfc3339()
    }

    async fn refresh(&self, source: &str, target: &str, window_start: &str) -> (StatusCode, Value) {
        self.admin(
            Method::POST,
            "/api/v1/workitems/refresh",
            Some(json!({"source": source, "target": target, "window_start": window_start, "acknowledge": true})),
        )
        .await
    }
}

/// Two refreshes of the same target in the same window were both accepted. A refresh's
/// downtime lasts up to two hours (seed 002); two refreshes whose windows overlap may not
/// write the same target, nor may one overwrite the instance the other copies from. Sharing
/// a source is fine.
#[tokio::test]
async fn overlapping_refreshes_of_one_target_are_refused() {
    let api = Api::start().await;
    api.instance("crm-prod", "production", "9.0").await;
    api.instance("crm-test", "sandbox", "9.0").await;
    api.instance("crm-dev", "sandbox", "9.0").await;
    api.instance("crm-qa", "sandbox", "9.0").await;
    let t = 48.0;
    let (s, first) = api
        .refresh("crm-prod", "crm-test", &api.hours_ahead(t))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");

    for (source, target, at) in [
        ("crm-prod", "crm-test", t),       // the same window
        ("crm-prod", "crm-test", t + 1.5), // starts inside the first one's two hours
        ("crm-dev", "crm-test", t - 1.0),  // ends inside it, from another source
        ("crm-test", "crm-qa", t + 1.0),   // copies crm-test while it is being replaced
    ] {
        let got = api.refresh(source, target, &api.hours_ahead(at)).await;
        assert_error(&got, StatusCode::CONFLICT, "overlapping_operation");
        let message = got.1["message"].as_str().unwrap();
        assert!(
            message.contains(&format!("work item {}", first["id"])),
            "{source} → {target} at +{at}h: {message}"
        );
    }
    let got = api
        .refresh("crm-prod", "crm-test", &api.hours_ahead(t + 0.5))
        .await;
    assert!(
        got.1["message"]
            .as_str()
            .unwrap()
            .starts_with("crm-test already has a refresh from crm-prod"),
        "{}",
        got.1
    );
    let (_, list) = api.admin(Method::GET, "/api/v1/workitems", None).await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "nothing else was created"
    );

    // Right after its two hours, or the same source into another sandbox: accepted.
    let (s, later) = api
        .refresh("crm-prod", "crm-test", &api.hours_ahead(t + 2.0))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{later}");
    let (s, sibling) = api
        .refresh("crm-prod", "crm-dev", &api.hours_ahead(t))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sibling}");

    // Rescheduling into an overlap is refused and changes nothing.
    let got = api
        .admin(
            Method::POST,
            &format!("/api/v1/workitems/{}/reschedule", later["id"]),
            Some(json!({"window_start": api.hours_ahead(t + 1.0)})),
        )
        .await;
    assert_error(&got, StatusCode::CONFLICT, "overlapping_operation");
    let (_, unchanged) = api
        .admin(
            Method::GET,
            &format!("/api/v1/workitems/{}", later["id"]),
            None,
        )
        .await;
    assert_eq!(unchanged["window_start"], later["window_start"]);
    // Rescheduling a work item over its own window is not an overlap with itself.
    let (s, v) = api
        .admin(
            Method::POST,
            &format!("/api/v1/workitems/{}/reschedule", later["id"]),
            Some(json!({"window_start": api.hours_ahead(t + 2.5)})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // A cancelled refresh no longer blocks its window.
    let (s, _) = api
        .admin(
            Method::POST,
            &format!("/api/v1/workitems/{}/cancel", first["id"]),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = api
        .refresh("crm-prod", "crm-test", &api.hours_ahead(t))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
}

// ---- storage of an instance whose update is queued ----

impl Api {
    /// Total Storage Used, and whether `name` counts in it.
    async fn storage_of(&self, name: &str) -> (u64, bool) {
        let (s, v) = self.admin(Method::GET, "/api/v1/storage", None).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        let counted = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()["counted"]
            .as_bool()
            .unwrap();
        let (_, list) = self.admin(Method::GET, "/api/v1/instances", None).await;
        assert_eq!(
            list["total_storage_bytes"], v["total_database_bytes"],
            "the instance list's total agrees"
        );
        (v["total_database_bytes"].as_u64().unwrap(), counted)
    }

    async fn update_op(&self, name: &str, op: &str, body: Value) -> Value {
        let (s, v) = self
            .admin(
                Method::POST,
                &format!("/api/v1/instances/{name}/updates{op}"),
                Some(body),
            )
            .await;
        assert!(s.is_success(), "{op}: {s} {v}");
        v
    }
}

/// Seed 001: "When an instance enters the Queued (Not Started) state, that instance's storage
/// is temporarily omitted from the Total Storage Used calculation." An update is Queued (Not
/// Started) once it is approved (or needs no approval) and waits for its scheduled time; its
/// storage used to be left out only from the window's start.
#[tokio::test]
async fn storage_is_left_out_from_the_moment_an_update_is_queued() {
    let api = Api::start().await;
    api.instance("crm-a", "production", "9.1").await;
    api.instance("crm-b", "sandbox", "9.0").await;
    // Service updates wait for a System Administrator's approval under this policy.
    let (s, v) = api
        .admin(
            Method::PUT,
            "/api/v1/update-policy",
            Some(json!({"service_updates_automatic": false})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (all, counted) = api.storage_of("crm-b").await;
    assert!(counted);
    let (a_only, _) = {
        let (s, v) = api.admin(Method::GET, "/api/v1/storage", None).await;
        assert_eq!(s, StatusCode::OK);
        let a = v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "crm-a")
            .unwrap()["database_bytes"]
            .as_u64()
            .unwrap();
        (a, ())
    };

    // Scheduled by a Delegated Admin, awaiting a System Administrator's approval: counted.
    let delegated = api.user_token("dana", "delegated_admin").await;
    let (s, u) = api
        .call(
            Method::POST,
            "/api/v1/instances/crm-b/updates",
            Some(&delegated),
            Some(json!({"target": "9.1", "preferred_start": api.hours_ahead(24.0 * 20.0), "alternate_start": api.hours_ahead(24.0 * 22.0)})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert_eq!(u["status"], "scheduled", "{u}");
    assert_eq!(api.storage_of("crm-b").await, (all, true));

    // Approved for a window 20 days ahead: Queued (Not Started), left out at once.
    let u = api.update_op("crm-b", "/approve", json!({})).await;
    assert_eq!(u["status"], "queued", "{u}");
    assert_eq!(api.storage_of("crm-b").await, (a_only, false));
    // A filtered instance list subtracts only the left-out instances it matches.
    for (q, expect) in [("CRM-A", a_only), ("crm-b", 0), ("crm", a_only)] {
        let (s, list) = api
            .admin(Method::GET, &format!("/api/v1/instances?q={q}"), None)
            .await;
        assert_eq!(s, StatusCode::OK, "{list}");
        assert_eq!(list["total_storage_bytes"], expect, "q={q}: {list}");
    }

    // Approval withdrawn: no longer queued, counted again; cancelled likewise.
    api.update_op("crm-b", "/withdraw", json!({})).await;
    assert_eq!(api.storage_of("crm-b").await, (all, true));
    api.update_op("crm-b", "/approve", json!({})).await;
    assert_eq!(api.storage_of("crm-b").await, (a_only, false));
    api.update_op("crm-b", "/cancel", json!({})).await;
    assert_eq!(api.storage_of("crm-b").await, (all, true));
}

// ---- the sample catalog shows the seed's rules ----

/// The built-in sample had no release older than the 8.1 backup minimum and no optional
/// major update (every 8.x was mandatory). Like the seed's 8.1 / 8.2 / 9.x: 9.x is n, 8.2 is
/// n-1 (supported; its update to 9.x is an optional major update that needs approval), 8.1
/// and 8.0 are further behind (mandatory), and 8.0 is older than the backup minimum.
#[tokio::test]
async fn the_sample_catalog_shows_the_backup_minimum_and_an_optional_major_update() {
    let api = Api::start().await;
    let (_, releases) = api.admin(Method::GET, "/api/v1/releases", None).await;
    let versions: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["8.0", "8.1", "8.2", "9.0", "9.1"], "{releases}");

    // 8.0 is below the minimum: a backup is refused, naming 8.1.
    api.instance("crm-old", "production", "8.0").await;
    let got = api
        .admin(
            Method::POST,
            "/api/v1/instances/crm-old/backups",
            Some(json!({"label": "before anything"})),
        )
        .await;
    assert_error(&got, StatusCode::CONFLICT, "release_too_old");
    assert!(
        got.1["message"]
            .as_str()
            .unwrap()
            .contains("crm-old is on release 8.0; only release 8.1 or later can be backed up"),
        "{}",
        got.1
    );

    // 8.2 is n-1: supported, with an optional major update to 9.x.
    api.instance("crm-n1", "production", "8.2").await;
    let (_, o) = api
        .admin(Method::GET, "/api/v1/instances/crm-n1/updates", None)
        .await;
    assert_eq!(o["support"]["status"], "supported", "{o}");
    assert_eq!(
        o["support"]["label"], "Release 8.2 is supported (n-1)",
        "{o}"
    );
    assert_eq!(o["mandatory"], Value::Null, "{o}");
    let to_9 = o["available"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["version"] == "9.0")
        .unwrap_or_else(|| panic!("{o}"));
    assert_eq!(to_9["kind"], "major");
    let (s, u) = api
        .admin(
            Method::POST,
            "/api/v1/instances/crm-n1/updates",
            Some(json!({"target": "9.1", "preferred_start": api.hours_ahead(48.0), "alternate_start": api.hours_ahead(96.0)})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    assert_eq!(
        (
            &u["kind"],
            &u["mandatory"],
            &u["needs_approval"],
            &u["status"]
        ),
        (
            &json!("major"),
            &json!(false),
            &json!(true),
            &json!("scheduled")
        ),
        "an optional major update waits for approval: {u}"
    );

    // 8.1 is n-2: its update is mandatory.
    api.instance("crm-n2", "production", "8.1").await;
    let (_, o) = api
        .admin(Method::GET, "/api/v1/instances/crm-n2/updates", None)
        .await;
    assert_eq!(o["mandatory"]["target"], "9.1", "{o}");
}
