//! The REST API keeps its contract where axum's defaults would not: every error is JSON
//! `{code, message}` (unparsable path ids, wrong methods, non-object bodies), `limit`s are
//! held to the bounds the OpenAPI document states, and the document describes what the
//! server answers. Against a real server on 127.0.0.1 port 0.

use reqwest::header::{ALLOW, CONTENT_TYPE};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use steward_server::testing::TestServer;

struct Api {
    srv: TestServer,
    http: Client,
    doc: Value,
}

struct Answer {
    status: StatusCode,
    content_type: String,
    allow: Option<String>,
    body: Value,
}

impl Api {
    async fn start() -> Self {
        let srv = TestServer::start().await;
        let http = Client::new();
        let doc = http
            .get(format!("{}/api/v1/openapi.json", srv.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        Self { srv, http, doc }
    }

    async fn call(&self, method: Method, path: &str, body: Option<&str>) -> Answer {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.srv.url))
            .bearer_auth(&self.srv.token);
        if let Some(b) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(b.to_owned());
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let header = |name| {
            resp.headers()
                .get(name)
                .map(|v: &reqwest::header::HeaderValue| v.to_str().unwrap().to_owned())
        };
        let content_type = header(CONTENT_TYPE).unwrap_or_default();
        let allow = header(ALLOW);
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer {
            status,
            content_type,
            allow,
            body,
        }
    }

    /// Every documented operation: (METHOD, path template, operation).
    fn operations(&self) -> Vec<(Method, String, Value)> {
        let mut ops = Vec::new();
        for (path, item) in self.doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                ops.push((m, path.clone(), op.clone()));
            }
        }
        ops
    }
}

/// An error answer: the status, JSON content, a stable code and a message.
fn assert_json_error(a: &Answer, status: StatusCode, code: &str, what: &str) {
    assert_eq!(a.status, status, "{what}: {:?}", a.body);
    assert!(
        a.content_type.starts_with("application/json"),
        "{what}: content type {:?}, body {:?}",
        a.content_type,
        a.body
    );
    assert_eq!(a.body["code"], code, "{what}: {:?}", a.body);
    assert!(
        !a.body["message"].as_str().unwrap_or("").is_empty(),
        "{what}: a message: {:?}",
        a.body
    );
}

#[tokio::test]
async fn an_unparsable_id_in_any_path_is_a_json_400_naming_the_parameter() {
    let api = Api::start().await;
    let mut checked = 0;
    for (method, path, _) in api.operations() {
        if !path.contains("{id}") {
            continue;
        }
        for bad in ["abc", "99999999999999999999", "1.5"] {
            let concrete = path.replace("{id}", bad);
            let body = (method != Method::GET && method != Method::DELETE).then_some("{}");
            let a = api.call(method.clone(), &concrete, body).await;
            let what = format!("{method} {concrete}");
            assert_json_error(&a, StatusCode::BAD_REQUEST, "invalid_path", &what);
            let message = a.body["message"].as_str().unwrap();
            assert!(
                message.contains("`id`") && message.contains(bad),
                "{what}: the message names the parameter and the value: {message}"
            );
            checked += 1;
        }
    }
    // Jobs, backups, tokens, webhooks, alerts, updates, work items (and more as they come).
    assert!(checked >= 3 * 10, "only {checked} id routes were checked");
}

#[tokio::test]
async fn wrong_methods_and_unknown_api_paths_are_json_errors() {
    let api = Api::start().await;
    let a = api.call(Method::PUT, "/api/v1/jobs/1", Some("{}")).await;
    assert_json_error(
        &a,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "PUT /api/v1/jobs/1",
    );
    assert_eq!(
        a.allow.as_deref(),
        Some("GET,HEAD"),
        "the Allow header stays"
    );

    // Every documented path refuses the methods it does not document with a JSON 405.
    let mut paths: Vec<(String, Vec<Method>)> = Vec::new();
    for (m, path, _) in api.operations() {
        match paths.iter_mut().find(|(p, _)| *p == path) {
            Some((_, ms)) => ms.push(m),
            None => paths.push((path, vec![m])),
        }
    }
    for (path, methods) in paths {
        let concrete = path
            .replace("{name}", "nope-instance")
            .replace("{username}", "nobody")
            .replace("{id}", "1")
            .replace("{event}", "backup_succeeded")
            .replace("{email}", "a@example.com");
        for m in [
            Method::GET,
            Method::PUT,
            Method::POST,
            Method::PATCH,
            Method::DELETE,
        ] {
            if methods.contains(&m) {
                continue;
            }
            let a = api.call(m.clone(), &concrete, Some("{}")).await;
            assert_json_error(
                &a,
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{m} {concrete}"),
            );
        }
    }

    for path in [
        "/api/v1",
        "/api/v1/",
        "/api/v1/nothing-here",
        "/api/v1/jobs/1/nothing",
    ] {
        let a = api.call(Method::GET, path, None).await;
        assert_json_error(&a, StatusCode::NOT_FOUND, "unknown_route", path);
    }
}

#[tokio::test]
async fn request_bodies_must_be_json_objects_and_bad_ones_change_nothing() {
    let api = Api::start().await;
    // serde reads a struct from an array of its fields; the API must not.
    for body in [
        "[\"viewer\", true]",
        "[null, null]",
        "\"viewer\"",
        "42",
        "null",
    ] {
        let a = api
            .call(Method::PATCH, "/api/v1/users/admin", Some(body))
            .await;
        assert_json_error(
            &a,
            StatusCode::BAD_REQUEST,
            "malformed_json",
            &format!("PATCH /api/v1/users/admin {body}"),
        );
        assert!(
            a.body["message"].as_str().unwrap().contains("JSON object"),
            "{:?}",
            a.body
        );
    }
    let me = api.call(Method::GET, "/api/v1/me", None).await;
    assert_eq!(me.body["role"], "system_administrator");
    assert_eq!(me.body["disabled"], false);

    // Malformed JSON, a missing field and an unknown field stay `malformed_json` too.
    for body in [
        "{\"label\": ",
        "{}",
        "{\"label\": \"x\", \"colour\": \"red\"}",
    ] {
        let a = api
            .call(
                Method::POST,
                "/api/v1/instances/nope-instance/backups",
                Some(body),
            )
            .await;
        assert_json_error(&a, StatusCode::BAD_REQUEST, "malformed_json", body);
    }
}

#[tokio::test]
async fn limits_are_held_to_the_bounds_the_document_states() {
    let api = Api::start().await;
    let mut checked = Vec::new();
    for (method, path, op) in api.operations() {
        let Some(limit) = op["parameters"]
            .as_array()
            .and_then(|ps| ps.iter().find(|p| p["name"] == "limit"))
        else {
            continue;
        };
        assert_eq!(
            limit["in"], "query",
            "{method} {path}: limit is a query parameter"
        );
        assert_ne!(
            limit["required"], true,
            "{method} {path}: limit is optional"
        );
        let min = limit["schema"]["minimum"]
            .as_i64()
            .unwrap_or_else(|| panic!("{method} {path}: limit documents its minimum"));
        let max = limit["schema"]["maximum"]
            .as_i64()
            .unwrap_or_else(|| panic!("{method} {path}: limit documents its maximum"));
        assert_eq!(min, 1, "{method} {path}");
        for out in [min - 1, -5, max + 1] {
            let url = format!("{path}?limit={out}");
            let a = api.call(method.clone(), &url, None).await;
            assert_json_error(&a, StatusCode::BAD_REQUEST, "invalid_limit", &url);
            let message = a.body["message"].as_str().unwrap();
            assert!(
                message.contains(&format!("1 to {max}")) && message.contains(&out.to_string()),
                "{url}: {message}"
            );
        }
        for ok in [min, max] {
            let url = format!("{path}?limit={ok}");
            let a = api.call(method.clone(), &url, None).await;
            assert_eq!(a.status, StatusCode::OK, "{url}: {:?}", a.body);
        }
        checked.push(path);
    }
    for p in [
        "/api/v1/alerts",
        "/api/v1/alerts/mine",
        "/api/v1/audit",
        "/api/v1/instances",
        "/api/v1/notifications/log",
    ] {
        assert!(
            checked.iter().any(|c| c == p),
            "{p} has a limit: {checked:?}"
        );
    }
}

/// The schema `r` points at, following `$ref`s into the components.
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    while let Some(r) = schema["$ref"].as_str() {
        let name = r.trim_start_matches("#/components/schemas/");
        schema = &doc["components"]["schemas"][name];
    }
    schema
}

#[tokio::test]
async fn the_update_policy_answer_is_what_its_schema_describes() {
    let api = Api::start().await;
    let a = api.call(Method::GET, "/api/v1/update-policy", None).await;
    assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
    for key in ["source", "releases", "supported_majors"] {
        assert!(a.body.get(key).is_some(), "{key} in {:?}", a.body);
    }
    let schema = resolve(
        &api.doc,
        &api.doc["paths"]["/api/v1/update-policy"]["get"]["responses"]["200"]["content"]["application/json"]
            ["schema"],
    );
    let properties = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("the answer's schema lists its properties: {schema}"));
    for key in a.body.as_object().unwrap().keys() {
        assert!(
            properties.contains_key(key),
            "the server answers `{key}`, which the schema does not describe: {schema}"
        );
    }
    for key in schema["required"].as_array().unwrap() {
        assert!(
            a.body.get(key.as_str().unwrap()).is_some(),
            "{key} is required"
        );
    }
    // The request document (PUT) still refuses unknown fields, as the server does.
    let put = resolve(
        &api.doc,
        &api.doc["paths"]["/api/v1/update-policy"]["put"]["requestBody"]["content"]["application/json"]
            ["schema"],
    );
    assert_eq!(put["additionalProperties"], false, "{put}");
    let a = api
        .call(
            Method::PUT,
            "/api/v1/update-policy",
            Some(&json!({"supported_majors": 2, "source": "x"}).to_string()),
        )
        .await;
    assert_json_error(
        &a,
        StatusCode::BAD_REQUEST,
        "malformed_json",
        "PUT unknown field",
    );
}

#[tokio::test]
async fn every_operation_documents_the_errors_every_request_can_get() {
    let api = Api::start().await;
    for (method, path, op) in api.operations() {
        let what = format!("{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        let public = op["security"]
            .as_array()
            .is_some_and(|s| !s.is_empty() && s.iter().all(|r| r.as_object().unwrap().is_empty()));
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let takes_input = !params.is_empty() || op.get("requestBody").is_some();
        let mut expected = vec!["500"];
        if !public {
            expected.push("401");
        }
        if takes_input {
            expected.push("400");
        }
        for status in expected {
            assert!(responses.contains_key(status), "{what} documents {status}");
        }
        // Every error answer is the JSON error body.
        for (status, r) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                let schema = &r["content"]["application/json"]["schema"];
                assert_eq!(
                    schema["$ref"], "#/components/schemas/ApiErrorBody",
                    "{what} {status}: {r}"
                );
            }
        }
        // Path parameters are exactly the template's; everything else is a query parameter
        // (a struct of query parameters documented `in: path` by mistake shows up here).
        let template: Vec<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for p in &params {
            let name = p["name"].as_str().unwrap();
            match p["in"].as_str().unwrap() {
                "path" => assert!(
                    template.contains(&name),
                    "{what}: `{name}` is documented as a path parameter but is not in the path; \
                     add #[into_params(parameter_in = Query)] to its struct"
                ),
                "query" => assert!(!template.contains(&name), "{what}: {name}"),
                other => panic!("{what}: `{name}` in {other}"),
            }
        }
        for name in template {
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path"),
                "{what}: the path parameter `{name}` is documented"
            );
        }
    }
    let error_ref = json!({"$ref": "#/components/schemas/ApiErrorBody"});
    let body = resolve(&api.doc, &error_ref);
    assert_eq!(body["required"], json!(["code", "message"]));
}
