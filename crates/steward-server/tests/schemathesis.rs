//! The OpenAPI document against the running server, checked by schemathesis (PyPI): it
//! generates requests from `/api/v1/openapi.json` (valid and invalid ones, for every
//! operation, with a bounded number of examples) and fails on any 5xx or any answer the
//! document does not describe: an undocumented status code, content type or header, a body
//! that breaks its schema, invalid input accepted, a wrong method not refused with 405.
//!
//! It runs against a throwaway server (`steward_server::testing`, its own temporary data
//! directory), because the generated requests delete instances and backups, revoke tokens
//! and change users. It runs once per role (Viewer, Delegated Admin, then System
//! Administrator, the most destructive last), so the `403` answers are exercised too. A role
//! may revoke its own token, after which every answer would be a 401; so token revocation
//! (`revoke_token`) is tested in a run of its own after the others, for every role.
//!
//! schemathesis lives in a Python virtual environment, `target/schemathesis-venv` (installed
//! by `.ci/run` from `tests/schemathesis/requirements.txt`; this test creates it when
//! `python3` can), or wherever `STEWARD_SCHEMATHESIS` points (the `st` executable). Without
//! it the test fails when `CI` is set, and otherwise says loudly that it skipped.
//!
//! Excluded, with the reason: the `positive_data_acceptance` check, which expects every
//! request that fits the schemas to succeed. Steward's rules go beyond what a schema says
//! (an instance name must be free, `confirm` must repeat the name, a window must lie ahead,
//! a release must be newer), and those refusals are documented 4xx answers. No operation is
//! excluded.
//!
//! One finding is accepted, narrowly: `ensure_resource_availability` (ST302) reads any 404
//! right after a creation as "the created resource is missing". Approving, withdrawing,
//! rescheduling or cancelling the update of a just-created instance answers `404
//! no_open_update` (the instance exists; it has no scheduled update), which is documented.
//! Exactly that failure is accepted (see [`accepted`]); any other ST302 still fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use steward_server::testing::TestServer;

/// Test cases per operation and phase; small, so the whole run takes a minute or two.
const MAX_EXAMPLES: &str = "8";
/// One run (one role) may take at most this long.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// Fixed, so a failure can be replayed; `STEWARD_SCHEMATHESIS_SEED` picks another.
const DEFAULT_SEED: &str = "20261";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace root")
        .to_path_buf()
}

fn requirements() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis/requirements.txt")
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// The `st` executable: `STEWARD_SCHEMATHESIS`, or the virtual environment in `target/`
/// (created here when it is missing and `python3` can make it).
fn schemathesis() -> Result<PathBuf, String> {
    if let Ok(p) = std::env::var("STEWARD_SCHEMATHESIS") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "STEWARD_SCHEMATHESIS={} does not exist",
                p.display()
            ))
        };
    }
    let venv = workspace_root().join("target/schemathesis-venv");
    let st = venv.join("bin/st");
    if st.is_file() {
        return Ok(st);
    }
    let run = |cmd: &mut Command| -> Result<(), String> {
        let out = cmd
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{cmd:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    };
    eprintln!("installing schemathesis into {}", venv.display());
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "-r"])
        .arg(requirements()))?;
    if st.is_file() {
        Ok(st)
    } else {
        Err(format!("{} is missing after installing", st.display()))
    }
}

/// A token for a new user with `role`.
async fn token_for(http: &Client, srv: &TestServer, username: &str, role: &str) -> String {
    let password = "correct-horse-battery";
    let r = http
        .post(format!("{}/api/v1/users", srv.url))
        .bearer_auth(&srv.token)
        .json(&json!({"username": username, "role": role, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    let v: Value = http
        .post(format!("{}/api/v1/tokens/login", srv.url))
        .json(&json!({"username": username, "password": password, "name": "schemathesis"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["secret"].as_str().expect("a token").to_owned()
}

/// Something for the generated requests to find: a production instance, a sandbox, a
/// completed backup of each, a recipient and a webhook.
async fn seed(http: &Client, srv: &TestServer) {
    let admin = |method: reqwest::Method, path: &str, body: Value| {
        http.request(method, format!("{}{path}", srv.url))
            .bearer_auth(&srv.token)
            .json(&body)
            .send()
    };
    for (name, kind) in [("acme-prod", "production"), ("acme-sandbox", "sandbox")] {
        let r = admin(
            reqwest::Method::POST,
            "/api/v1/instances",
            json!({"name": name, "type": kind}),
        )
        .await
        .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::CREATED,
            "{}",
            r.text().await.unwrap()
        );
        let r = admin(
            reqwest::Method::POST,
            &format!("/api/v1/instances/{name}/backups"),
            json!({"label": "seed", "notes": "for schemathesis"}),
        )
        .await
        .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::ACCEPTED,
            "{}",
            r.text().await.unwrap()
        );
    }
    let r = admin(
        reqwest::Method::POST,
        "/api/v1/instances/acme-prod/recipients",
        json!({"email": "ops@example.com"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = admin(
        reqwest::Method::POST,
        "/api/v1/webhooks",
        json!({"url": "http://127.0.0.1:9/hook"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // The backups are jobs; wait until both have ended.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let jobs: Value = admin(reqwest::Method::GET, "/api/v1/jobs", json!({}))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let open = jobs
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["state"] == "queued" || j["state"] == "running")
            .count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the seed backups did not finish: {jobs}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which operations a run covers.
#[derive(Clone, Copy)]
enum Part {
    /// Every operation but `revoke_token`.
    AllButRevoke,
    /// `revoke_token` alone.
    Revoke,
}

/// Runs schemathesis as one role; returns whether it passed, and its output.
fn run_schemathesis(
    st: &Path,
    url: &str,
    token: &str,
    role: &str,
    part: Part,
    work: &Path,
) -> (bool, String) {
    let seed = std::env::var("STEWARD_SCHEMATHESIS_SEED").unwrap_or_else(|_| DEFAULT_SEED.into());
    let (filter, name) = match part {
        Part::AllButRevoke => ("--exclude-operation-id", "all"),
        Part::Revoke => ("--include-operation-id", "revoke"),
    };
    let log = work.join(format!("schemathesis-{role}-{name}.log"));
    let report = work.join(format!("schemathesis-{role}-{name}.json"));
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new(st)
        .arg("run")
        .arg(format!("{url}/api/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--checks", "all"])
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args([filter, "revoke_token"])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--seed", &seed])
        .args(["--request-timeout", "30"])
        .args(["--report", "json", "--report-json-path"])
        .arg(&report)
        .arg("--no-color")
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Its caches (.hypothesis, reports) go to the throwaway directory, not the tree.
        .current_dir(work)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("start {}: {e}", st.display()));
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if started.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(s) => (s.success() || accepted(&report, &text), text),
        None => (
            false,
            format!("{text}\n\nschemathesis did not finish within {RUN_TIMEOUT:?}"),
        ),
    }
}

/// Whether a failed run found only the accepted false positive: ST302 for a just-created
/// instance whose update action answered `404 no_open_update`. Checked in the JSON report
/// (no errors, every failure ST302) and in each ST302 case of the text output.
fn accepted(report: &Path, text: &str) -> bool {
    let Ok(json) = std::fs::read_to_string(report) else {
        return false;
    };
    let Ok(report) = serde_json::from_str::<Value>(&json) else {
        return false;
    };
    let only_st302 = report["errors"].as_array().is_some_and(Vec::is_empty)
        && report["failures"]
            .as_array()
            .is_some_and(|f| !f.is_empty() && f.iter().all(|f| f["code"] == "ST302"));
    if !only_st302 {
        return false;
    }
    let Some(start) = text.find("=== FAILURES") else {
        return false;
    };
    let end = text.find("=== WARNINGS").unwrap_or(text.len());
    let section = &text[start..end];
    // One block per test case: from "N. Test Case ID" to the next one (or section header).
    let mut cases: Vec<String> = Vec::new();
    for line in section.lines() {
        let starts_case = line
            .split_once(". Test Case ID")
            .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
        if starts_case {
            cases.push(String::new());
        } else if line.starts_with("___") {
            cases.push(String::new());
            continue;
        }
        if let Some(case) = cases.last_mut() {
            case.push_str(line);
            case.push('\n');
        }
    }
    let update_action = |c: &str| {
        ["approve", "withdraw", "reschedule", "cancel"]
            .iter()
            .any(|a| {
                c.contains(&format!(
                    "Not available with: `POST /api/v1/instances/{{name}}/updates/{a}`"
                ))
            })
    };
    cases.iter().filter(|c| c.contains("- ST")).all(|c| {
        c.lines()
            .filter(|l| l.starts_with("- ST"))
            .all(|l| l == "- ST302 Created resource not found")
            && c.contains("Created with      : `POST /api/v1/instances`")
            && update_action(c)
            && c.contains(r#"{"code":"no_open_update""#)
    })
}

/// The part of schemathesis' output worth reading after a failure.
fn failures(text: &str) -> &str {
    text.find("=== FAILURES")
        .or_else(|| text.find("=== ERRORS"))
        .map_or(text, |i| {
            &text[text[..i].rfind('\n').map_or(0, |n| n + 1)..]
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_answers_what_its_openapi_document_says() {
    let st = match schemathesis() {
        Ok(st) => st,
        Err(why) if !in_ci() => {
            eprintln!(
                "\n*** SKIPPED the schemathesis API contract test: {why}\n\
                 *** install it with: python3 -m venv target/schemathesis-venv && \
                 target/schemathesis-venv/bin/pip install -r {}\n",
                requirements().display()
            );
            return;
        }
        Err(why) => panic!("CI is set and schemathesis is not available: {why}"),
    };
    let srv = TestServer::start().await;
    let http = Client::new();
    seed(&http, &srv).await;
    let roles = [
        (
            "viewer",
            token_for(&http, &srv, "schema-viewer", "viewer").await,
        ),
        (
            "delegated_admin",
            token_for(&http, &srv, "schema-delegate", "delegated_admin").await,
        ),
        ("system_administrator", srv.token.clone()),
    ];
    let work = tempfile::tempdir().unwrap();
    let mut failed = Vec::new();
    let runs = roles
        .iter()
        .map(|(r, t)| (*r, t.clone(), Part::AllButRevoke))
        .chain(roles.iter().map(|(r, t)| (*r, t.clone(), Part::Revoke)));
    for (role, token, part) in runs {
        let (st, url, dir) = (st.clone(), srv.url.clone(), work.path().to_path_buf());
        let started = Instant::now();
        let (ok, text) = tokio::task::spawn_blocking(move || {
            run_schemathesis(&st, &url, &token, role, part, &dir)
        })
        .await
        .unwrap();
        let summary = text
            .lines()
            .rev()
            .find(|l| l.contains(" in ") && l.starts_with('='))
            .unwrap_or("(no summary)")
            .to_owned();
        eprintln!(
            "schemathesis as {role}: {summary} ({:?})",
            started.elapsed()
        );
        if !ok {
            failed.push(format!("---- as {role} ----\n{}", failures(&text)));
        }
    }
    assert!(
        failed.is_empty(),
        "schemathesis found answers the OpenAPI document does not describe:\n{}",
        failed.join("\n")
    );
}

#[test]
fn only_the_no_open_update_false_positive_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let write = |codes: &[&str]| {
        let failures: Vec<Value> = codes.iter().map(|c| json!({"code": c})).collect();
        std::fs::write(
            &report,
            json!({"errors": [], "failures": failures}).to_string(),
        )
        .unwrap();
    };
    let case = |op: &str, body: &str| {
        format!(
            "1. Test Case ID: iHJdDz\n\n- ST302 Created resource not found\n\n    \
             The API returned `404 Not Found` for a resource that was just created.\n\n    \
             Created with      : `POST /api/v1/instances`\n    \
             Not available with: `POST /api/v1/instances/{{name}}/updates/{op}`\n\n\
             [404] Not Found:\n\n    `{body}`\n\n"
        )
    };
    let text = |cases: &str| {
        format!(
            "=================================== FAILURES ===================================\n\
             ________________________________ Stateful tests ________________________________\n\
             {cases}=================================== WARNINGS ===================================\n"
        )
    };
    let no_open = r#"{"code":"no_open_update","message":"x has no scheduled update"}"#;
    write(&["ST302"]);
    assert!(accepted(&report, &text(&case("cancel", no_open))));
    assert!(accepted(
        &report,
        &text(&(case("approve", no_open) + &case("reschedule", no_open)))
    ));
    // The instance itself missing, another operation, or another check: not accepted.
    let unknown = r#"{"code":"unknown_instance","message":"no instance named x"}"#;
    assert!(!accepted(&report, &text(&case("cancel", unknown))));
    assert!(!accepted(&report, &text(&case("now", no_open))));
    write(&["ST302", "ST103"]);
    assert!(!accepted(&report, &text(&case("cancel", no_open))));
    write(&[]);
    assert!(!accepted(&report, &text("")));
}
