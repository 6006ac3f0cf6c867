//! REST API tests against a real server on 127.0.0.1 port 0 with its own data directory.

use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use steward_server::testing::TestServer;

struct Api {
    srv: TestServer,
    http: Client,
}

impl Api {
    async fn start() -> Self {
        Self {
            srv: TestServer::start().await,
            http: Client::new(),
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

    async fn instance_count(&self) -> usize {
        let (_, v) = self.admin(Method::GET, "/api/v1/instances", None).await;
        v["instances"].as_array().unwrap().len()
    }

    async fn audit_count(&self) -> usize {
        let (_, v) = self
            .admin(Method::GET, "/api/v1/audit?limit=10000", None)
            .await;
        v.as_array().unwrap().len()
    }

    /// Creates a user with `role` and returns an API token for them.
    async fn user_token(&self, username: &str, role: &str) -> String {
        let password = "correct-horse-battery";
        let (s, _) = self
            .admin(
                Method::POST,
                "/api/v1/users",
                Some(json!({"username": username, "role": role, "password": password})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/tokens/login",
                None,
                Some(json!({"username": username, "password": password, "name": "test"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["secret"].as_str().unwrap().to_owned()
    }
}

fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    assert_eq!(got.1["code"], code, "{}", got.1);
    assert!(
        !got.1["message"].as_str().unwrap_or("").is_empty(),
        "a message: {}",
        got.1
    );
}

#[tokio::test]
async fn health_and_openapi_match_the_routes() {
    let api = Api::start().await;
    let (s, v) = api.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v, Value::String("ok".into()));

    let (s, doc) = api
        .call(Method::GET, "/api/v1/openapi.json", None, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/api/v1/instances",
        "/api/v1/instances/{name}",
        "/api/v1/instances/{name}/switch",
        "/api/v1/releases",
        "/api/v1/users",
        "/api/v1/tokens",
        "/api/v1/audit",
    ] {
        assert!(paths.contains_key(p), "{p} documented");
    }
    // Every documented operation is routed: calling it never yields the unknown-route 404
    // or a 405, so the document cannot drift from the router.
    for (path, ops) in paths {
        let concrete = path
            .replace("{name}", "nope-instance")
            .replace("{username}", "nobody")
            .replace("{id}", "999999");
        for method in ops.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (s, v) = api.admin(m.clone(), &concrete, Some(json!({}))).await;
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{m} {path}");
            assert_ne!(
                v["code"], "unknown_route",
                "{m} {path} is documented but not routed"
            );
        }
    }
    let unknown = api.admin(Method::GET, "/api/v1/nothing-here", None).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "unknown_route");
}

#[tokio::test]
async fn instances_lifecycle() {
    let api = Api::start().await;
    let (s, created) = api
        .admin(
            Method::POST,
            "/api/v1/instances",
            Some(json!({"name": "crm-prod", "type": "production"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["release"], "9.1", "latest release by default");
    assert_eq!(created["state"], "available");
    assert_eq!(created["type"], "production");
    let db_path = created["database_path"].as_str().unwrap().to_owned();
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(conn);
    assert!(std::path::Path::new(created["documents_path"].as_str().unwrap()).is_dir());
    assert!(created["storage_bytes"].as_u64().unwrap() > 0);

    let (s, old) = api
        .admin(
            Method::POST,
            "/api/v1/instances",
            Some(json!({"name": "crm-old", "type": "sandbox", "release": "8.1"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(old["release"], "8.1");

    let (s, list) = api.admin(Method::GET, "/api/v1/instances", None).await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["crm-old", "crm-prod"]);
    let sum: u64 = list["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["storage_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(list["total_storage_bytes"].as_u64().unwrap(), sum);

    let (s, shown) = api
        .admin(Method::GET, "/api/v1/instances/crm-prod", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(shown["database_path"], db_path.as_str());

    let (s, switched) = api
        .admin(
            Method::POST,
            "/api/v1/instances/crm-prod/switch",
            Some(json!({"type": "sandbox"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(switched["type"], "sandbox");
    let again = api
        .admin(
            Method::POST,
            "/api/v1/instances/crm-prod/switch",
            Some(json!({"type": "sandbox"})),
        )
        .await;
    assert_error(&again, StatusCode::CONFLICT, "already_that_type");

    let (_, audit) = api
        .admin(
            Method::GET,
            "/api/v1/audit?target=crm-prod&action=instance.switch",
            None,
        )
        .await;
    let entry = &audit.as_array().unwrap()[0];
    assert_eq!(entry["actor"], "admin");
    assert_eq!(entry["details"]["before"]["type"], "production");
    assert_eq!(entry["details"]["after"]["type"], "sandbox");

    // Delete needs the name typed again.
    let wrong = api
        .admin(
            Method::DELETE,
            "/api/v1/instances/crm-prod?confirm=crm-pro",
            None,
        )
        .await;
    assert_error(&wrong, StatusCode::BAD_REQUEST, "confirmation_mismatch");
    let missing = api
        .admin(Method::DELETE, "/api/v1/instances/crm-prod", None)
        .await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "confirmation_mismatch");
    assert!(
        std::path::Path::new(&db_path).exists(),
        "a refused delete changes nothing"
    );
    let (s, deleted) = api
        .admin(
            Method::DELETE,
            "/api/v1/instances/crm-prod?confirm=crm-prod",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{deleted}");
    assert!(
        !std::path::Path::new(&db_path).exists(),
        "the database moved out of service"
    );
    let retired = deleted["database_path"].as_str().unwrap();
    assert!(retired.contains("retired"), "{retired}");
    assert!(std::path::Path::new(retired).exists(), "nothing is erased");
    let gone = api
        .admin(Method::GET, "/api/v1/instances/crm-prod", None)
        .await;
    assert_error(&gone, StatusCode::NOT_FOUND, "unknown_instance");
    // The name can be used again.
    let (s, _) = api
        .admin(
            Method::POST,
            "/api/v1/instances",
            Some(json!({"name": "crm-prod", "type": "production"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
}

#[tokio::test]
async fn bad_input_gets_specific_errors_and_changes_nothing() {
    let api = Api::start().await;
    api.admin(
        Method::POST,
        "/api/v1/instances",
        Some(json!({"name": "taken", "type": "sandbox"})),
    )
    .await;
    let before = (api.instance_count().await, api.audit_count().await);

    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"name": "taken", "type": "sandbox"}),
            StatusCode::CONFLICT,
            "instance_exists",
        ),
        (
            json!({"name": "Bad_Name", "type": "sandbox"}),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            json!({"name": "ab", "type": "sandbox"}),
            StatusCode::BAD_REQUEST,
            "invalid_name",
        ),
        (
            json!({"name": "fine-name", "type": "staging"}),
            StatusCode::BAD_REQUEST,
            "invalid_value",
        ),
        (
            json!({"name": "fine-name", "type": "sandbox", "release": "7.0"}),
            StatusCode::NOT_FOUND,
            "unknown_release",
        ),
        (
            json!({"name": "fine-name", "type": "sandbox", "release": "latest"}),
            StatusCode::BAD_REQUEST,
            "invalid_release",
        ),
        (
            json!({"name": "fine-name"}),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            json!({"name": "fine-name", "type": "sandbox", "colour": "red"}),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
    ];
    for (body, status, code) in cases {
        let got = api
            .admin(Method::POST, "/api/v1/instances", Some(body.clone()))
            .await;
        assert_error(&got, status, code);
    }
    // Malformed JSON text.
    let resp = api
        .http
        .post(format!("{}/api/v1/instances", api.srv.url))
        .bearer_auth(&api.srv.token)
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["code"], "malformed_json");

    let unknown = api
        .admin(
            Method::POST,
            "/api/v1/instances/nope-nope/switch",
            Some(json!({"type": "sandbox"})),
        )
        .await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "unknown_instance");
    let bad_since = api
        .admin(Method::GET, "/api/v1/audit?since=yesterday", None)
        .await;
    assert_error(&bad_since, StatusCode::BAD_REQUEST, "invalid_query");

    assert_eq!(
        (api.instance_count().await, api.audit_count().await),
        before,
        "nothing changed"
    );
    assert!(!api.srv.data_dir.join("instances/fine-name").exists());
}

#[tokio::test]
async fn tokens_missing_revoked_and_roles() {
    let api = Api::start().await;
    let none = api.call(Method::GET, "/api/v1/instances", None, None).await;
    assert_error(&none, StatusCode::UNAUTHORIZED, "missing_token");
    let bogus = api
        .call(Method::GET, "/api/v1/instances", Some("stw_nope"), None)
        .await;
    assert_error(&bogus, StatusCode::UNAUTHORIZED, "invalid_token");

    // A token created, used, listed and revoked.
    let (s, created) = api
        .admin(Method::POST, "/api/v1/tokens", Some(json!({"name": "ci"})))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("stw_"));
    let id = created["token"]["id"].as_i64().unwrap();
    let (s, _) = api
        .call(Method::GET, "/api/v1/instances", Some(&secret), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, list) = api.admin(Method::GET, "/api/v1/tokens", None).await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == id && t["last_used_at"].is_string())
    );
    assert!(
        !list.to_string().contains(&secret),
        "secrets are never listed"
    );
    let (s, _) = api
        .admin(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let revoked = api
        .call(Method::GET, "/api/v1/instances", Some(&secret), None)
        .await;
    assert_error(&revoked, StatusCode::UNAUTHORIZED, "invalid_token");
    let twice = api
        .admin(Method::DELETE, &format!("/api/v1/tokens/{id}"), None)
        .await;
    assert_error(&twice, StatusCode::CONFLICT, "already_revoked");

    // A Viewer reads but changes nothing.
    api.admin(
        Method::POST,
        "/api/v1/instances",
        Some(json!({"name": "crm-prod", "type": "production"})),
    )
    .await;
    let viewer = api.user_token("vera", "viewer").await;
    let before = api.audit_count().await;
    let (s, _) = api
        .call(Method::GET, "/api/v1/instances", Some(&viewer), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let refused = [
        api.call(
            Method::POST,
            "/api/v1/instances",
            Some(&viewer),
            Some(json!({"name": "sneaky", "type": "sandbox"})),
        )
        .await,
        api.call(
            Method::POST,
            "/api/v1/instances/crm-prod/switch",
            Some(&viewer),
            Some(json!({"type": "sandbox"})),
        )
        .await,
        api.call(
            Method::DELETE,
            "/api/v1/instances/crm-prod?confirm=crm-prod",
            Some(&viewer),
            None,
        )
        .await,
        api.call(
            Method::POST,
            "/api/v1/users",
            Some(&viewer),
            Some(json!({"username": "x1", "role": "viewer"})),
        )
        .await,
    ];
    for r in &refused {
        assert_error(r, StatusCode::FORBIDDEN, "forbidden");
        assert!(r.1["message"].as_str().unwrap().contains("Viewer"));
    }
    assert_eq!(api.audit_count().await, before, "refusals change nothing");
    let (_, shown) = api
        .admin(Method::GET, "/api/v1/instances/crm-prod", None)
        .await;
    assert_eq!(shown["type"], "production");

    // A Delegated Admin manages instances but not users.
    let delegated = api.user_token("dana", "delegated_admin").await;
    let (s, _) = api
        .call(
            Method::POST,
            "/api/v1/instances/crm-prod/switch",
            Some(&delegated),
            Some(json!({"type": "sandbox"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let users = api
        .call(
            Method::PATCH,
            "/api/v1/users/vera",
            Some(&delegated),
            Some(json!({"role": "system_administrator"})),
        )
        .await;
    assert_error(&users, StatusCode::FORBIDDEN, "forbidden");

    // Wrong credentials get no token.
    let bad = api
        .call(
            Method::POST,
            "/api/v1/tokens/login",
            None,
            Some(json!({"username": "vera", "password": "nope", "name": "x"})),
        )
        .await;
    assert_error(&bad, StatusCode::UNAUTHORIZED, "invalid_credentials");
}

#[tokio::test]
async fn users_and_the_last_administrator() {
    let api = Api::start().await;
    let (s, created) = api
        .admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "ops", "role": "delegated_admin"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(created["generated_password"].as_str().unwrap().len() >= 12);
    let dup = api
        .admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "ops", "role": "viewer"})),
        )
        .await;
    assert_error(&dup, StatusCode::CONFLICT, "user_exists");
    let weak = api
        .admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "weak", "role": "viewer", "password": "short"})),
        )
        .await;
    assert_error(&weak, StatusCode::BAD_REQUEST, "weak_password");
    let role = api
        .admin(
            Method::POST,
            "/api/v1/users",
            Some(json!({"username": "r1", "role": "root"})),
        )
        .await;
    assert_error(&role, StatusCode::BAD_REQUEST, "invalid_value");

    let last = api
        .admin(
            Method::PATCH,
            "/api/v1/users/admin",
            Some(json!({"role": "viewer"})),
        )
        .await;
    assert_error(&last, StatusCode::CONFLICT, "last_administrator");
    let (s, me) = api.admin(Method::GET, "/api/v1/me", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["role"], "system_administrator");

    let (s, disabled) = api
        .admin(
            Method::PATCH,
            "/api/v1/users/ops",
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(disabled["disabled"], true);
    let (_, audit) = api
        .admin(
            Method::GET,
            "/api/v1/audit?action=user.update&target=ops",
            None,
        )
        .await;
    assert_eq!(audit[0]["details"]["before"]["disabled"], false);
    assert_eq!(audit[0]["details"]["after"]["disabled"], true);
}
