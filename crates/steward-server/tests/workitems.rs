//! Work items (database refreshes, seed 002) through the REST API of a real server, with real
//! SQLite instances, a real backup repository, the job runner and an injected clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration as StdDuration, Instant};

use chrono::{DateTime, Duration, TimeZone, Utc};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use steward_core::ManualClock;
use steward_server::Config;
use steward_server::testing::TestServer;

mod db_support;
use db_support::{dump, staged_files};

struct T {
    srv: TestServer,
    clock: Arc<ManualClock>,
    http: Client,
    _scripts: tempfile::TempDir,
}

fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 1, 10, 8, 0, 0).unwrap()
}

/// A server with system backups off; `scripts`: the post-refresh scripts directory's files
/// (`None`: the built-in sample).
async fn start(scripts: Option<&[(&str, &str)]>, tweak: impl FnOnce(&mut Config)) -> T {
    let dir = tempfile::tempdir().unwrap();
    if let Some(files) = scripts {
        for (name, sql) in files {
            let p = dir.path().join(name);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, sql).unwrap();
        }
    }
    let scripts_dir = scripts.map(|_| dir.path().to_owned());
    let clock = Arc::new(ManualClock::new(start_time()));
    let srv = TestServer::start_with(
        |c| {
            c.system_backup_time = "off".into();
            c.post_refresh_scripts_dir = scripts_dir;
            tweak(c);
        },
        Some(clock.clone()),
    )
    .await;
    let t = T {
        srv,
        clock,
        http: Client::new(),
        _scripts: dir,
    };
    // Every notification also goes to a webhook, so the delivery log shows each event.
    let (s, v) = t
        .call(
            Method::POST,
            "/api/v1/webhooks",
            Some(json!({"url": "http://127.0.0.1:9/hook"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    t
}

impl T {
    async fn call_as(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.srv.url, path))
            .bearer_auth(token);
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

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let token = self.srv.token.clone();
        self.call_as(&token, method, path, body).await
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let (s, v) = self.call(Method::POST, path, Some(body)).await;
        assert!(s.is_success(), "POST {path}: {s} {v}");
        v
    }

    /// Creates an instance; returns its view.
    async fn instance(&self, name: &str, kind: &str, release: &str) -> Value {
        self.post(
            "/api/v1/instances",
            json!({"name": name, "type": kind, "release": release}),
        )
        .await
    }

    async fn state(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/instances/{name}")).await
    }

    /// Takes an on-demand backup of `name` and waits until it completed.
    async fn backup(&self, name: &str, label: &str) -> Value {
        let b = self
            .post(
                &format!("/api/v1/instances/{name}/backups"),
                json!({"label": label}),
            )
            .await;
        let path = format!("/api/v1/backups/{}", b["id"]);
        self.wait(&path, |b| {
            b["status"] != "queued" && b["status"] != "running"
        })
        .await
    }

    /// Polls `path` until `done` holds (at most 60 s).
    async fn wait(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + StdDuration::from_secs(60);
        loop {
            let v = self.get(path).await;
            if done(&v) {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting on {path}: {v:#}"
            );
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
    }

    /// What the scheduler does once a minute: start due work items.
    async fn tick(&self) -> Vec<i64> {
        let st = self.srv.state.clone();
        tokio::task::spawn_blocking(move || st.services.start_due_work_items())
            .await
            .unwrap()
            .unwrap()
    }

    async fn finished(&self, id: &Value) -> Value {
        self.wait(&format!("/api/v1/workitems/{id}"), |w| {
            matches!(w["status"].as_str(), Some("succeeded" | "failed"))
        })
        .await
    }

    /// The events of the notifications emitted for `instance`, oldest first.
    async fn events(&self, instance: &str) -> Vec<String> {
        let log = self
            .get(&format!("/api/v1/notifications/log?instance={instance}"))
            .await;
        let mut v: Vec<(i64, String)> = log
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["notification_id"].as_i64().unwrap(),
                    d["event"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        v.sort();
        v.dedup();
        v.into_iter()
            .map(|(_, e)| e)
            .filter(|e| e.starts_with("refresh_"))
            .collect()
    }
}

fn now_plus(t: &T, d: Duration) -> String {
    use steward_core::Clock;
    (t.clock.now() + d).to_rfc3339()
}

fn path_of(v: &Value, field: &str) -> PathBuf {
    PathBuf::from(v[field].as_str().unwrap())
}

fn sql(db: &Path, script: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(StdDuration::from_secs(5)).unwrap();
    c.execute_batch(script).unwrap();
}

fn column(db: &Path, query: &str) -> Vec<Option<String>> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.prepare(query)
        .unwrap()
        .query_map([], |r| r.get::<_, Option<String>>(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn statuses(w: &Value) -> Vec<String> {
    w["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_copies_the_source_as_of_the_chosen_moment_into_the_sandbox() {
    // No post-refresh scripts: the copy must equal the source row by row.
    let t = start(Some(&[]), |_| {}).await;
    let prod = t.instance("crm-prod", "production", "9.1").await;
    let sand = t.instance("crm-test", "sandbox", "9.0").await;
    let prod_db = path_of(&prod, "database_path");
    let sand_db = path_of(&sand, "database_path");
    let docs = path_of(&sand, "documents_path").join("contract.pdf");
    std::fs::write(&docs, b"the sandbox's attachment").unwrap();
    sql(
        &sand_db,
        "INSERT INTO accounts (name) VALUES ('only in the sandbox');",
    );
    let sandbox_before = dump(&sand_db);

    sql(
        &prod_db,
        "INSERT INTO accounts (name) VALUES ('first'); UPDATE contacts SET email = 'one@acme.example' WHERE id = 1;",
    );
    let first = t.backup("crm-prod", "one").await;
    assert_eq!(first["status"], "completed", "{first}");
    let at_first = dump(&prod_db);
    t.clock.advance(Duration::hours(1));
    sql(
        &prod_db,
        "INSERT INTO accounts (name) VALUES ('second'); DELETE FROM activities WHERE id = 1;",
    );
    let second = t.backup("crm-prod", "two").await;
    t.clock.advance(Duration::hours(1));
    sql(
        &prod_db,
        "INSERT INTO accounts (name) VALUES ('live only');",
    );
    assert_ne!(at_first, dump(&prod_db));

    let points = t.get("/api/v1/instances/crm-prod/restore-points").await;
    assert_eq!(points["latest_is_live"], true);
    let ids: Vec<&Value> = points["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["backup_id"])
        .collect();
    assert_eq!(ids, [&first["id"], &second["id"]]);
    assert_eq!(points["earliest"], first["completed_at"]);
    assert_eq!(
        points["range"],
        Value::Null,
        "never captured: backups are the restore points"
    );

    // Half an hour after the first backup: the first backup is the newest at or before it.
    let moment = (start_time() + Duration::minutes(30)).to_rfc3339();
    let window = now_plus(&t, Duration::hours(25));
    let (s, w) = t
        .call(
            Method::POST,
            "/api/v1/workitems/refresh",
            Some(
                json!({"source": "crm-prod", "target": "crm-test", "at": moment,
                        "window_start": window, "acknowledge": true}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    assert_eq!(w["kind"], "refresh");
    assert_eq!(w["status"], "accepted", "accepted automatically: {w}");
    assert_eq!(w["status_label"], "Request accepted");
    assert_eq!(w["requester"], "admin");
    assert_eq!(w["restore_point"]["backup_id"], first["id"]);
    assert_eq!(statuses(&w), ["submitted", "accepted"]);
    assert_eq!(w["history"][1]["actor"], "System");
    assert_eq!(w["history"][1]["details"]["before"]["status"], "submitted");
    assert_eq!(w["history"][1]["details"]["after"]["status"], "accepted");

    // Nothing starts before the window.
    t.tick().await;
    assert_eq!(
        t.get(&format!("/api/v1/workitems/{}", w["id"])).await["status"],
        "accepted"
    );
    t.clock.advance(Duration::hours(24));
    t.tick().await;
    assert_eq!(
        t.get(&format!("/api/v1/workitems/{}", w["id"])).await["status"],
        "accepted"
    );
    assert_eq!(sandbox_before, dump(&sand_db));
    t.clock.advance(Duration::hours(1));
    t.tick().await; // (or the scheduler's own tick got there first)
    assert_ne!(
        t.get(&format!("/api/v1/workitems/{}", w["id"])).await["status"],
        "accepted"
    );

    let done = t.finished(&w["id"]).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        statuses(&done),
        ["submitted", "accepted", "in_progress", "succeeded"]
    );
    assert!(done["downtime_ms"].as_i64().unwrap() >= 0, "{done}");
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert_eq!(done["error"], Value::Null);
    assert_eq!(
        dump(&sand_db),
        at_first,
        "the sandbox holds the source's rows as of the first backup"
    );
    let target = t.state("crm-test").await;
    assert_eq!(target["state"], "available");
    assert_eq!(target["release"], "9.1", "the source's release");
    assert_eq!(
        std::fs::read(&docs).unwrap(),
        b"the sandbox's attachment",
        "the documents folder is not touched"
    );
    assert!(staged_files(&sand_db, ".refreshing").is_empty());
    let job = t.get(&format!("/api/v1/jobs/{}", done["job_id"])).await;
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let stages: Vec<&str> = job["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["safety_backup", "restore", "scripts", "swap"]);

    // The safety backup holds the sandbox as it was, kept for the configured 7 days.
    let safety = t
        .get(&format!("/api/v1/backups/{}", done["safety_backup_id"]))
        .await;
    assert_eq!(safety["instance"], "crm-test");
    assert_eq!(safety["status"], "completed");
    assert_eq!(safety["release"], "9.0");
    assert_eq!(safety["kind"], "pre_refresh", "immutable, restorable");
    assert!(safety["label"].as_str().unwrap().contains("Before refresh"));
    let kept = DateTime::parse_from_rfc3339(safety["expires_at"].as_str().unwrap()).unwrap()
        - DateTime::parse_from_rfc3339(safety["created_at"].as_str().unwrap()).unwrap();
    assert_eq!(kept, Duration::days(7));
    let (status, refused) = t
        .call(
            Method::DELETE,
            &format!("/api/v1/backups/{}", safety["id"]),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("the safety backup taken before a refresh"),
        "{refused}"
    );
    let restored = t
        .post(
            &format!("/api/v1/backups/{}/restore", safety["id"]),
            json!({"target": "crm-test"}),
        )
        .await;
    t.wait(&format!("/api/v1/jobs/{}", restored["job"]["id"]), |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    })
    .await;
    assert_eq!(
        dump(&sand_db),
        sandbox_before,
        "the safety backup undoes the refresh"
    );

    // The list filters by status and instance; notifications went out.
    let list = t
        .get("/api/v1/workitems?status=succeeded&instance=crm-prod")
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(
        t.get("/api/v1/workitems?status=cancelled")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(
        t.get("/api/v1/workitems?instance=other")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let (s, e) = t
        .call(Method::GET, "/api/v1/workitems?status=done", None)
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_value"))
    );
    assert_eq!(
        t.events("crm-test").await,
        ["refresh_accepted", "refresh_started", "refresh_succeeded"]
    );
    let alerts = t.get("/api/v1/alerts").await;
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["instance"] == "crm-test"
                && a["message"].as_str().unwrap().contains("succeeded")),
        "{alerts:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_latest_is_a_fresh_copy_and_the_sample_scripts_anonymise_it() {
    let t = start(None, |_| {}).await;
    let prod = t.instance("crm-prod", "production", "9.1").await;
    t.instance("crm-test", "sandbox", "9.1").await;
    let prod_db = path_of(&prod, "database_path");
    sql(
        &prod_db,
        "UPDATE contacts SET phone = '+33 1 23 45 67 ' || id;
         INSERT INTO integrations (name, kind, endpoint, outgoing, enabled) VALUES ('CRM sync', 'sync', 'https://erp.example', 0, 1);",
    );
    let real_emails = column(&prod_db, "SELECT email FROM contacts ORDER BY id");
    assert!(real_emails.iter().flatten().count() >= 2, "{real_emails:?}");

    let w = t
        .post(
            "/api/v1/workitems/refresh",
            json!({"source": "crm-prod", "target": "crm-test", "window_start": now_plus(&t, Duration::hours(24)), "acknowledge": true}),
        )
        .await;
    assert_eq!(w["point_in_time"], Value::Null);
    assert_eq!(w["restore_point"], Value::Null, "resolved at window start");
    // Written after the request, before the window: a fresh copy includes it.
    t.clock.advance(Duration::hours(24));
    sql(
        &prod_db,
        "INSERT INTO accounts (name) VALUES ('just before the window');",
    );
    t.tick().await;
    let done = t.finished(&w["id"]).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");

    let copy = t
        .get(&format!(
            "/api/v1/backups/{}",
            done["restore_point"]["backup_id"]
        ))
        .await;
    assert_eq!(copy["instance"], "crm-prod");
    assert_eq!(copy["status"], "completed");
    let sand_db = path_of(&t.state("crm-test").await, "database_path");
    assert_eq!(
        column(&sand_db, "SELECT name FROM accounts ORDER BY id"),
        column(&prod_db, "SELECT name FROM accounts ORDER BY id")
    );
    assert!(
        column(&sand_db, "SELECT name FROM accounts")
            .contains(&Some("just before the window".into()))
    );

    // Emails and phones anonymised, outgoing integrations off; the source keeps its own.
    let emails = column(&sand_db, "SELECT email FROM contacts ORDER BY id");
    assert_eq!(emails.len(), real_emails.len());
    for (copy, real) in emails.iter().zip(&real_emails) {
        match (copy, real) {
            (Some(c), Some(r)) => {
                assert!(c.ends_with("@example.invalid") && c != r, "{c} vs {r}")
            }
            (c, r) => assert_eq!(c, r),
        }
    }
    for p in column(&sand_db, "SELECT phone FROM contacts")
        .into_iter()
        .flatten()
    {
        assert!(p.starts_with("+1-555-01"), "{p}");
    }
    assert_eq!(
        column(
            &sand_db,
            "SELECT name || ':' || enabled FROM integrations ORDER BY id"
        ),
        [Some("Outgoing email:0".into()), Some("CRM sync:1".into())],
        "only outgoing integrations are switched off"
    );
    assert_eq!(
        column(&prod_db, "SELECT email FROM contacts ORDER BY id"),
        real_emails
    );
    assert_eq!(
        column(
            &prod_db,
            "SELECT CAST(enabled AS TEXT) FROM integrations WHERE outgoing = 1"
        ),
        [Some("1".to_owned())],
        "the source's integrations stay on"
    );
    let scripts: Vec<(String, bool)> = done["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        scripts,
        [
            ("10-anonymise-contact-emails.sql".to_owned(), true),
            ("20-anonymise-contact-phones.sql".to_owned(), true),
            ("30-disable-outgoing-integrations.sql".to_owned(), true)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sample_scripts_skip_what_an_older_release_lacks() {
    let t = start(None, |_| {}).await;
    t.instance("crm-old", "production", "8.1").await;
    t.instance("crm-test", "sandbox", "9.1").await;
    let w = t
        .post(
            "/api/v1/workitems/refresh",
            json!({"source": "crm-old", "target": "crm-test", "window_start": now_plus(&t, Duration::hours(24)), "acknowledge": true}),
        )
        .await;
    t.clock.advance(Duration::hours(24));
    t.tick().await;
    let done = t.finished(&w["id"]).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let messages: Vec<&str> = done["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["message"].as_str().unwrap())
        .collect();
    assert!(messages[0].starts_with("applied"), "{messages:?}");
    assert_eq!(messages[1], "skipped: release 8.1 has no contacts.phone");
    assert_eq!(
        messages[2],
        "skipped: release 8.1 has no integrations.outgoing"
    );
    let target = t.state("crm-test").await;
    assert_eq!(target["release"], "8.1");
    for e in column(
        &path_of(&target, "database_path"),
        "SELECT email FROM contacts",
    )
    .into_iter()
    .flatten()
    {
        assert!(e.ends_with("@example.invalid"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_specific_error_and_change_nothing() {
    let t = start(Some(&[]), |_| {}).await;
    t.instance("crm-prod", "production", "9.1").await;
    t.instance("crm-test", "sandbox", "9.1").await;
    t.instance("crm-live", "production", "9.1").await;
    let audit_before = t
        .get("/api/v1/audit?limit=10000")
        .await
        .as_array()
        .unwrap()
        .len();
    let ok_window = now_plus(&t, Duration::hours(24));
    let req = |over: Value| {
        let mut r = json!({"source": "crm-prod", "target": "crm-test", "window_start": ok_window, "acknowledge": true});
        for (k, v) in over.as_object().unwrap() {
            if v.is_null() {
                r.as_object_mut().unwrap().remove(k);
            } else {
                r[k] = v.clone();
            }
        }
        r
    };
    let cases = [
        (
            json!({"window_start": now_plus(&t, Duration::hours(23))}),
            StatusCode::BAD_REQUEST,
            "inside_lead_time",
            "earliest allowed start is 2027-01-11 08:00:00 UTC",
        ),
        (
            json!({"window_start": now_plus(&t, -Duration::hours(1))}),
            StatusCode::BAD_REQUEST,
            "window_in_past",
            "in the past",
        ),
        (
            json!({"target": "crm-prod"}),
            StatusCode::BAD_REQUEST,
            "same_instance",
            "crm-prod",
        ),
        (
            json!({"acknowledge": false}),
            StatusCode::BAD_REQUEST,
            "acknowledgement_required",
            "documents folder",
        ),
        (
            json!({"acknowledge": null}),
            StatusCode::BAD_REQUEST,
            "acknowledgement_required",
            "erased",
        ),
        (
            json!({"source": "crm-nope"}),
            StatusCode::NOT_FOUND,
            "unknown_instance",
            "crm-nope",
        ),
        (
            json!({"target": "crm-nope"}),
            StatusCode::NOT_FOUND,
            "unknown_instance",
            "crm-nope",
        ),
        (
            json!({"target": "crm-live"}),
            StatusCode::CONFLICT,
            "production_target",
            "Switch it to sandbox first",
        ),
        (
            json!({"at": now_plus(&t, -Duration::hours(1))}),
            StatusCode::BAD_REQUEST,
            "outside_restore_range",
            "no restore points",
        ),
        (
            json!({"window_start": "tomorrow"}),
            StatusCode::BAD_REQUEST,
            "invalid_time",
            "RFC 3339",
        ),
    ];
    for (over, status, code, words) in &cases {
        let (s, e) = t
            .call(
                Method::POST,
                "/api/v1/workitems/refresh",
                Some(req(over.clone())),
            )
            .await;
        assert_eq!(
            (s, e["code"].as_str().unwrap()),
            (*status, *code),
            "{over}: {e}"
        );
        assert!(
            e["message"].as_str().unwrap().contains(words),
            "{over}: {e}"
        );
    }
    // With restore points: a moment before the earliest one, or in the future.
    let b = t.backup("crm-prod", "only").await;
    t.clock.advance(Duration::hours(1));
    for moment in [
        start_time() - Duration::minutes(1),
        start_time() + Duration::hours(2),
    ] {
        let (s, e) = t
            .call(Method::POST, "/api/v1/workitems/refresh", Some(req(json!({"at": moment.to_rfc3339(), "window_start": now_plus(&t, Duration::hours(24))}))))
            .await;
        assert_eq!(
            (s, e["code"].as_str().unwrap()),
            (StatusCode::BAD_REQUEST, "outside_restore_range"),
            "{e}"
        );
        assert_eq!(b["completed_at"], "2027-01-10T08:00:00Z");
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("from 2027-01-10 08:00:00 UTC to 2027-01-10 09:00:00 UTC"),
            "names the range: {e}"
        );
    }
    // A viewer may look but not request.
    let st = t.srv.state.clone();
    let admin_token = t.srv.token.clone();
    let viewer = tokio::task::spawn_blocking(move || {
        let s = &st.services;
        let admin = s.authenticate_token(&admin_token).unwrap();
        s.create_user(&admin, "vera", "viewer", Some("a-long-password-1"))
            .unwrap();
        s.token_for_credentials("vera", "a-long-password-1", "t")
            .unwrap()
            .secret
    })
    .await
    .unwrap();
    let (s, e) = t
        .call_as(
            &viewer,
            Method::POST,
            "/api/v1/workitems/refresh",
            Some(req(json!({}))),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::FORBIDDEN, "forbidden")
    );
    let (s, _) = t
        .call_as(&viewer, Method::GET, "/api/v1/workitems", None)
        .await;
    assert_eq!(s, StatusCode::OK);

    assert!(
        t.get("/api/v1/workitems")
            .await
            .as_array()
            .unwrap()
            .is_empty()
    );
    let audit = t.get("/api/v1/audit?limit=10000").await;
    assert!(
        !audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["action"].as_str().unwrap().starts_with("workitem.")),
        "nothing was audited: {audit:#}"
    );
    assert!(audit.as_array().unwrap().len() >= audit_before);
    assert!(t.events("crm-test").await.is_empty());
    let (s, e) = t.call(Method::GET, "/api/v1/workitems/99", None).await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "unknown_work_item")
    );
    let (s, e) = t
        .call(Method::POST, "/api/v1/workitems/99/cancel", None)
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "unknown_work_item")
    );
    let (s, e) = t
        .call(
            Method::GET,
            "/api/v1/instances/crm-nope/restore-points",
            None,
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::NOT_FOUND, "unknown_instance")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_reschedule_and_cancel_until_the_start_and_not_after() {
    // An administrator accepts each request; each job stage pauses, so "in progress" lasts.
    let t = start(Some(&[]), |c| {
        c.refresh_auto_accept = false;
        c.job_stage_pause_ms = 1500;
    })
    .await;
    t.instance("crm-prod", "production", "9.1").await;
    t.instance("crm-test", "sandbox", "9.1").await;
    let body = |h: i64| json!({"source": "crm-prod", "target": "crm-test", "window_start": now_plus(&t, Duration::hours(h)), "acknowledge": true});
    let a = t.post("/api/v1/workitems/refresh", body(30)).await;
    let b = t.post("/api/v1/workitems/refresh", body(40)).await;
    assert_eq!(a["status"], "submitted");
    assert_eq!(a["status_label"], "Submitted");
    assert!(
        t.events("crm-test").await.is_empty(),
        "nothing accepted yet"
    );

    // A Delegated Admin requests but does not accept.
    let st = t.srv.state.clone();
    let admin_token = t.srv.token.clone();
    let delegated = tokio::task::spawn_blocking(move || {
        let s = &st.services;
        let admin = s.authenticate_token(&admin_token).unwrap();
        s.create_user(&admin, "dana", "delegated_admin", Some("a-long-password-1"))
            .unwrap();
        s.token_for_credentials("dana", "a-long-password-1", "t")
            .unwrap()
            .secret
    })
    .await
    .unwrap();
    let (s, e) = t
        .call_as(
            &delegated,
            Method::POST,
            &format!("/api/v1/workitems/{}/accept", a["id"]),
            None,
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{e}"
    );

    let a = t
        .post(&format!("/api/v1/workitems/{}/accept", a["id"]), json!({}))
        .await;
    assert_eq!(a["status"], "accepted");
    assert_eq!(a["history"][1]["actor"], "admin");
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/v1/workitems/{}/accept", a["id"]),
            None,
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::CONFLICT, "work_item_not_submitted")
    );

    // Reschedule: a bad window changes nothing; a good one needs a new acceptance.
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/v1/workitems/{}/reschedule", a["id"]),
            Some(json!({"window_start": now_plus(&t, Duration::hours(2))})),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "inside_lead_time")
    );
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/v1/workitems/{}/reschedule", a["id"]),
            Some(json!({"at": start_time().to_rfc3339()})),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "outside_restore_range")
    );
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/v1/workitems/{}/reschedule", a["id"]),
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::BAD_REQUEST, "nothing_to_change")
    );
    let unchanged = t.get(&format!("/api/v1/workitems/{}", a["id"])).await;
    assert_eq!(
        (
            unchanged["status"].clone(),
            unchanged["window_start"].clone()
        ),
        (a["status"].clone(), a["window_start"].clone())
    );
    let new_window = now_plus(&t, Duration::hours(26));
    let a = t
        .post(
            &format!("/api/v1/workitems/{}/reschedule", a["id"]),
            json!({"window_start": new_window, "at": "latest"}),
        )
        .await;
    assert_eq!(a["status"], "submitted", "{a:#}");
    assert_eq!(
        DateTime::parse_from_rfc3339(a["window_start"].as_str().unwrap()).unwrap(),
        DateTime::parse_from_rfc3339(&new_window).unwrap()
    );
    let last = a["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["details"]["before"]["status"], "accepted");
    assert_eq!(last["details"]["after"]["status"], "submitted");
    assert_ne!(
        last["details"]["before"]["window_start"],
        last["details"]["after"]["window_start"]
    );
    let a = t
        .post(&format!("/api/v1/workitems/{}/accept", a["id"]), json!({}))
        .await;

    // Cancel b before its start; then it is finished.
    let cancelled = t
        .post(&format!("/api/v1/workitems/{}/cancel", b["id"]), json!({}))
        .await;
    assert_eq!(cancelled["status"], "cancelled");
    assert!(cancelled["finished_at"].is_string());
    for action in ["cancel", "reschedule", "accept"] {
        let (s, e) = t
            .call(
                Method::POST,
                &format!("/api/v1/workitems/{}/{action}", b["id"]),
                Some(json!({"window_start": now_plus(&t, Duration::hours(48))})),
            )
            .await;
        assert_eq!(
            (s, e["code"].as_str().unwrap()),
            (StatusCode::CONFLICT, "work_item_finished"),
            "{action}: {e}"
        );
    }

    // a starts at its window; while in progress, neither reschedule nor cancel.
    t.clock.advance(Duration::hours(26));
    t.tick().await;
    let running = t.get(&format!("/api/v1/workitems/{}", a["id"])).await;
    assert_eq!(running["status"], "in_progress");
    assert_eq!(running["status_label"], "In progress");
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/v1/workitems/{}/cancel", a["id"]),
            None,
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::CONFLICT, "work_item_started"),
        "{e}"
    );
    assert!(e["message"].as_str().unwrap().contains("has started"));
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/v1/workitems/{}/reschedule", a["id"]),
            Some(json!({"window_start": now_plus(&t, Duration::hours(48))})),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::CONFLICT, "work_item_started")
    );
    let done = t.finished(&a["id"]).await;
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/v1/workitems/{}/cancel", a["id"]),
            None,
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::CONFLICT, "work_item_finished")
    );
    assert_eq!(
        t.events("crm-test").await,
        [
            "refresh_accepted",
            "refresh_accepted",
            "refresh_cancelled",
            "refresh_started",
            "refresh_succeeded"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_post_refresh_script_leaves_the_target_intact() {
    let t = start(
        Some(&[
            (
                "10-ok.sql",
                "UPDATE contacts SET email = 'changed@example.invalid';",
            ),
            (
                "crm-test/20-broken.sql",
                "UPDATE contacts SET phone = NULL; UPDATE no_such_table SET x = 1;",
            ),
            ("crm-other/30-not-for-this-target.sql", "SELECT 1;"),
        ]),
        |_| {},
    )
    .await;
    t.instance("crm-prod", "production", "9.1").await;
    let sand = t.instance("crm-test", "sandbox", "9.0").await;
    let sand_db = path_of(&sand, "database_path");
    sql(
        &sand_db,
        "INSERT INTO accounts (name) VALUES ('the sandbox''s own');",
    );
    let before = dump(&sand_db);
    let w = t
        .post(
            "/api/v1/workitems/refresh",
            json!({"source": "crm-prod", "target": "crm-test", "window_start": now_plus(&t, Duration::hours(24)), "acknowledge": true}),
        )
        .await;
    t.clock.advance(Duration::hours(24));
    t.tick().await;
    let done = t.finished(&w["id"]).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("crm-test/20-broken.sql") && error.contains("no_such_table"),
        "{error}"
    );
    let scripts: Vec<(String, bool)> = done["scripts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["ok"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        scripts,
        [
            ("10-ok.sql".to_owned(), true),
            ("crm-test/20-broken.sql".to_owned(), false)
        ]
    );
    assert_eq!(
        statuses(&done),
        ["submitted", "accepted", "in_progress", "failed"]
    );
    assert_eq!(done["history"][3]["details"]["error"], error);
    assert_eq!(
        dump(&sand_db),
        before,
        "the target keeps its previous database"
    );
    let target = t.state("crm-test").await;
    assert_eq!(
        (target["state"].as_str(), target["release"].as_str()),
        (Some("available"), Some("9.0"))
    );
    assert!(
        staged_files(&sand_db, ".refreshing").is_empty(),
        "{:?}",
        staged_files(&sand_db, ".refreshing")
    );
    assert!(
        done["safety_backup_id"].as_i64().is_some(),
        "the safety backup is taken first, and kept: {done:#}"
    );
    assert_eq!(
        t.events("crm-test").await,
        ["refresh_accepted", "refresh_started", "refresh_failed"]
    );
    let job = t.get(&format!("/api/v1/jobs/{}", done["job_id"])).await;
    assert_eq!(job["state"], "failed");
    assert!(
        job["last_error"]
            .as_str()
            .unwrap()
            .contains("20-broken.sql")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_switched_to_production_before_the_window_is_not_refreshed() {
    let t = start(Some(&[]), |_| {}).await;
    t.instance("crm-prod", "production", "9.1").await;
    let sand = t.instance("crm-test", "sandbox", "9.0").await;
    let sand_db = path_of(&sand, "database_path");
    let before = dump(&sand_db);
    let w = t
        .post(
            "/api/v1/workitems/refresh",
            json!({"source": "crm-prod", "target": "crm-test", "window_start": now_plus(&t, Duration::hours(24)), "acknowledge": true}),
        )
        .await;
    t.post(
        "/api/v1/instances/crm-test/switch",
        json!({"type": "production"}),
    )
    .await;
    t.clock.advance(Duration::hours(24));
    t.tick().await;
    let done = t.finished(&w["id"]).await;
    assert_eq!(done["status"], "failed", "{done:#}");
    assert!(
        done["error"]
            .as_str()
            .unwrap()
            .contains("Switch it to sandbox first"),
        "{done}"
    );
    assert_eq!(dump(&sand_db), before);
    assert_eq!(t.state("crm-test").await["state"], "available");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_inside_an_update_window_of_its_target_or_source_is_refused() {
    let t = start(Some(&[]), |_| {}).await;
    t.instance("crm-prod", "production", "9.1").await;
    t.instance("crm-test", "sandbox", "9.0").await;
    // The sandbox's update to 9.1: preferred window 2 days ahead, alternate 4 days ahead
    // (12 hours each).
    let preferred = now_plus(&t, Duration::days(2));
    let alternate = now_plus(&t, Duration::days(4));
    let (s, u) = t
        .call(
            Method::POST,
            "/api/v1/instances/crm-test/updates",
            Some(json!({"target": "9.1", "preferred_start": preferred, "alternate_start": alternate})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{u}");
    let req = |window: String| json!({"source": "crm-prod", "target": "crm-test", "window_start": window, "acknowledge": true});
    for inside in [
        now_plus(&t, Duration::days(2) + Duration::hours(3)),
        now_plus(&t, Duration::days(4)),
    ] {
        let (s, e) = t
            .call(
                Method::POST,
                "/api/v1/workitems/refresh",
                Some(req(inside.clone())),
            )
            .await;
        assert_eq!(
            (s, e["code"].as_str().unwrap()),
            (StatusCode::CONFLICT, "overlapping_operation"),
            "{inside}: {e}"
        );
        assert!(
            e["message"]
                .as_str()
                .unwrap()
                .contains("crm-test has an update to 9.1"),
            "{e}"
        );
    }
    assert!(
        t.get("/api/v1/workitems")
            .await
            .as_array()
            .unwrap()
            .is_empty(),
        "nothing was created"
    );
    // Outside both windows: accepted; rescheduling it into a window is refused.
    let ok = t
        .post(
            "/api/v1/workitems/refresh",
            req(now_plus(&t, Duration::days(3))),
        )
        .await;
    assert_eq!(ok["status"], "accepted", "{ok}");
    let (s, e) = t
        .call(
            Method::POST,
            &format!("/api/v1/workitems/{}/reschedule", ok["id"]),
            Some(json!({"window_start": preferred})),
        )
        .await;
    assert_eq!(
        (s, e["code"].as_str().unwrap()),
        (StatusCode::CONFLICT, "overlapping_operation"),
        "{e}"
    );
    let unchanged = t.get(&format!("/api/v1/workitems/{}", ok["id"])).await;
    assert_eq!(unchanged["window_start"], ok["window_start"]);
}
