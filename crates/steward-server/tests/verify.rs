//! Verify (issue 13) against a real server on port 0 with a real backup repository on disk:
//! an instance is backed up twice, then a pack file under `backups/data/` is damaged (a byte
//! flipped, cut short, deleted) and each is found, named, marked and alerted about, and
//! restoring a damaged backup is refused. Plus a clean repository, the sample mode, bad
//! input, and a verify interrupted by a stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use reqwest::{Client, Method, StatusCode};
use serde_json::{Value, json};
use steward_core::ManualClock;
use steward_server::Config;
use steward_server::testing::TestServer;

struct Api {
    srv: TestServer,
    http: Client,
}

/// Two backups of `crm-prod` (the second shares most chunks with the first) and a sandbox.
struct Fleet {
    api: Api,
    first: i64,
    second: i64,
    /// The pack the first backup wrote; the second backup reuses chunks in it.
    pack: PathBuf,
}

impl Api {
    async fn call(
        &self,
        method: Method,
        path: &str,
        token: &str,
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

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let token = self.srv.token.clone();
        self.call(method, path, &token, body).await
    }

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.admin(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "GET {path}: {v}");
        v
    }

    /// Polls a job until it ends; returns it.
    async fn wait_job(&self, id: i64) -> Value {
        for _ in 0..1200 {
            let j = self.get(&format!("/api/v1/jobs/{id}")).await;
            if matches!(j["state"].as_str(), Some("succeeded" | "failed")) {
                return j;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} did not end");
    }

    /// Starts a verify with `body`, waits for it, and returns its report (the job's result).
    async fn verify(&self, body: Value) -> Value {
        let (s, v) = self
            .admin(Method::POST, "/api/v1/backups/verify", Some(body.clone()))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}: {v}");
        assert_eq!(v["job"]["kind"], "verify");
        let job = self.wait_job(v["job"]["id"].as_i64().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        job["result"].clone()
    }

    async fn backup(&self, id: i64) -> Value {
        self.get(&format!("/api/v1/backups/{id}")).await
    }

    async fn job_count(&self) -> usize {
        self.get("/api/v1/jobs").await.as_array().unwrap().len()
    }

    async fn audit_count(&self) -> usize {
        self.get("/api/v1/audit?limit=1000")
            .await
            .as_array()
            .unwrap()
            .len()
    }

    async fn damage_alerts(&self) -> Vec<String> {
        self.get("/api/v1/alerts?limit=1000")
            .await
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["message"].as_str().unwrap().to_owned())
            .filter(|m| m.contains("is damaged"))
            .collect()
    }

    async fn take_backup(&self, label: &str) -> i64 {
        let (s, b) = self
            .admin(
                Method::POST,
                "/api/v1/instances/crm-prod/backups",
                Some(json!({"label": label})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let job = self.wait_job(b["job_id"].as_i64().unwrap()).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        b["id"].as_i64().unwrap()
    }

    fn packs(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let data = self.srv.data_dir.join("backups/data");
        for dir in std::fs::read_dir(&data).unwrap() {
            for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
                let p = f.unwrap().path();
                if !p.to_string_lossy().contains('#') {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }
}

fn pack_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn fill(db: &str, from: usize, rows: usize) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    let tx = c.unchecked_transaction().unwrap();
    for i in from..from + rows {
        tx.execute(
            "INSERT INTO accounts (name) VALUES (?1)",
            [format!("account {i} {}", "x".repeat(i % 97 + 40))],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

async fn fleet() -> Fleet {
    let api = Api {
        srv: TestServer::start().await,
        http: Client::new(),
    };
    for (name, kind) in [("crm-prod", "production"), ("crm-sand", "sandbox")] {
        let (s, v) = api
            .admin(
                Method::POST,
                "/api/v1/instances",
                Some(json!({"name": name, "type": kind, "release": "9.1"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let db = api.get("/api/v1/instances/crm-prod").await["database_path"]
        .as_str()
        .unwrap()
        .to_owned();
    fill(&db, 0, 1500);
    let first = api.take_backup("first").await;
    let packs = api.packs();
    assert_eq!(packs.len(), 1, "one pack for a small database: {packs:?}");
    let pack = packs[0].clone();
    // A few more rows: the second backup stores the changed pages and reuses the rest.
    fill(&db, 1500, 5);
    let second = api.take_backup("second").await;
    assert_eq!(api.packs().len(), 2, "the second backup added one pack");
    Fleet {
        api,
        first,
        second,
        pack,
    }
}

fn flip_byte(pack: &Path) -> u8 {
    let mut bytes = std::fs::read(pack).unwrap();
    let at = bytes.len() / 2;
    let was = bytes[at];
    bytes[at] ^= 0x40;
    std::fs::write(pack, bytes).unwrap();
    was
}

/// Asserts the report names `pack` as damaged with both backups, and each backup damaged.
fn assert_both_named(f: &Fleet, report: &Value) {
    let pack = pack_name(&f.pack);
    assert_eq!(report["ok"], false, "{report}");
    assert_eq!(report["damaged"], 2, "{report}");
    let packs = report["damaged_packs"].as_array().unwrap();
    assert_eq!(packs.len(), 1, "{report}");
    assert_eq!(packs[0]["pack"], pack.as_str());
    let mut named: Vec<i64> = packs[0]["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            assert_eq!(b["instance"], "crm-prod");
            assert!(b["created_at"].as_str().is_some(), "{b}");
            b["backup_id"].as_i64().unwrap()
        })
        .collect();
    named.sort();
    assert_eq!(
        named,
        [f.first, f.second],
        "a shared pack names every backup"
    );
    for b in report["backups"].as_array().unwrap() {
        assert_eq!(b["ok"], false, "{b}");
        assert_eq!(b["damaged_packs"], json!([pack]));
        let problems = b["problems"].as_array().unwrap();
        assert!(
            problems.iter().any(|p| p.as_str().unwrap().contains(&pack)),
            "problems name the pack: {problems:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn read_data_finds_a_flipped_byte_names_every_backup_and_refuses_the_restore() {
    let f = fleet().await;
    let api = &f.api;
    let pack = pack_name(&f.pack);
    let was = flip_byte(&f.pack);
    // The administrator has an address, so a damage notification is emailed to them.
    let (s, v) = api
        .admin(
            Method::PUT,
            "/api/v1/users/admin/email",
            Some(json!({"email": "admin@example.com"})),
        )
        .await;
    assert!(s.is_success(), "{v}");

    // A structure check reads no data: it cannot see a flipped byte, and marks nothing.
    let r = api.verify(json!({"backup_id": f.first})).await;
    assert_eq!(
        (r["ok"].as_bool(), r["mode"].as_str()),
        (Some(true), Some("structure")),
        "{r}"
    );
    assert_eq!(r["backups"][0]["chunks_checked"], 0, "{r}");
    assert_eq!(api.backup(f.first).await["damaged"], false);

    // Reading the data of the first backup finds it, and follows the pack to the second.
    let r = api
        .verify(json!({"backup_id": f.first, "mode": "read_data"}))
        .await;
    assert_both_named(&f, &r);
    assert_eq!(r["backups"][0]["backup_id"], f.first);
    assert_eq!(r["backups"][0]["reason"], "requested");
    assert_eq!(r["backups"][1]["backup_id"], f.second);
    assert_eq!(r["backups"][1]["reason"], "shared");
    let first = &r["backups"][0];
    assert!(first["corrupt_chunks"].as_u64().unwrap() > 0, "{first}");
    assert!(
        first["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains("chunk ")),
        "problems name a chunk: {first}"
    );

    // Marked damaged everywhere it is listed.
    for id in [f.first, f.second] {
        let b = api.backup(id).await;
        assert_eq!(b["damaged"], true, "{b}");
        assert!(b["damage"].as_str().unwrap().contains(&pack), "{b}");
        assert_eq!(b["can_restore"], false);
        assert_eq!(b["verification"]["ok"], false);
        let v = api.get(&format!("/api/v1/backups/{id}/verification")).await;
        assert_eq!(v["damaged"], true, "{v}");
        assert_eq!(v["latest"]["mode"], "read_data");
    }
    let list = api.get("/api/v1/instances/crm-prod/backups").await;
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|b| b["damaged"] == true),
        "{list}"
    );
    // An alert per damaged backup, naming the backup and its instance.
    let alerts = api.damage_alerts().await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    assert!(
        alerts
            .iter()
            .all(|a| a.contains("crm-prod") && a.contains(&pack)),
        "{alerts:?}"
    );
    // And the notification event, by email to the administrator.
    let log = api.get("/api/v1/notifications/log").await;
    let damaged: Vec<&Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["event"] == "backup_damaged")
        .collect();
    assert_eq!(damaged.len(), 2, "{log}");
    assert!(
        damaged
            .iter()
            .all(|d| d["channel"] == "email" && d["recipient"] == "admin@example.com"),
        "{log}"
    );

    // Restoring it is refused, naming what verify found; nothing is queued or changed.
    let jobs = api.job_count().await;
    let (s, e) = api
        .admin(
            Method::POST,
            &format!("/api/v1/backups/{}/restore", f.second),
            Some(json!({"target": "crm-sand"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{e}");
    assert_eq!(e["code"], "backup_damaged");
    assert!(e["message"].as_str().unwrap().contains(&pack), "{e}");
    assert_eq!(api.job_count().await, jobs);
    assert_eq!(
        api.get("/api/v1/instances/crm-sand").await["state"],
        "available"
    );

    // A later structure check cannot clear damage found by reading: still refused.
    api.verify(json!({"all": true})).await;
    assert_eq!(api.backup(f.first).await["damaged"], true);

    // Repaired (the byte put back), a verify that reads the data finds it whole again.
    let mut bytes = std::fs::read(&f.pack).unwrap();
    let at = bytes.len() / 2;
    bytes[at] = was;
    std::fs::write(&f.pack, bytes).unwrap();
    let r = api
        .verify(json!({"instance": "crm-prod", "mode": "read_data"}))
        .await;
    assert_eq!(
        (r["ok"].as_bool(), r["checked"].as_u64()),
        (Some(true), Some(2)),
        "{r}"
    );
    for id in [f.first, f.second] {
        let b = api.backup(id).await;
        assert_eq!(
            (b["damaged"].as_bool(), b["can_restore"].as_bool()),
            (Some(false), Some(true)),
            "{b}"
        );
    }
    let (s, v) = api
        .admin(
            Method::POST,
            &format!("/api/v1/backups/{}/restore", f.second),
            Some(json!({"target": "crm-sand"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = api.wait_job(v["job"]["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
}

#[tokio::test(flavor = "multi_thread")]
async fn structure_finds_a_truncated_pack() {
    let f = fleet().await;
    let len = std::fs::metadata(&f.pack).unwrap().len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&f.pack)
        .unwrap();
    file.set_len(len / 2).unwrap();
    drop(file);
    let r = f.api.verify(json!({"all": true})).await;
    assert_eq!(r["mode"], "structure");
    assert_eq!(r["scope"], "all instances");
    assert_both_named(&f, &r);
    assert!(
        r["backups"][0]["problems"][0]
            .as_str()
            .unwrap()
            .contains("truncated"),
        "{r}"
    );
    assert_eq!(f.api.backup(f.first).await["damaged"], true);
    assert_eq!(f.api.damage_alerts().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn structure_finds_a_deleted_pack() {
    let f = fleet().await;
    std::fs::remove_file(&f.pack).unwrap();
    let r = f.api.verify(json!({"instance": "crm-prod"})).await;
    assert_both_named(&f, &r);
    for b in r["backups"].as_array().unwrap() {
        assert!(b["missing_chunks"].as_u64().unwrap() > 0, "{b}");
    }
    let b = f.api.backup(f.second).await;
    assert_eq!(b["damaged"], true);
    assert!(b["damage"].as_str().unwrap().contains("missing"), "{b}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_clean_repository_is_whole_in_every_mode_and_nothing_is_marked() {
    let f = fleet().await;
    let api = &f.api;
    for (body, reads) in [
        (json!({"all": true}), false),
        (json!({"all": true, "mode": "read_data"}), true),
        (
            json!({"instance": "crm-prod", "mode": "sample", "sample_percent": 10}),
            true,
        ),
        (
            json!({"backup_id": f.second, "mode": "sample", "sample_percent": 100}),
            true,
        ),
    ] {
        let r = api.verify(body.clone()).await;
        assert_eq!(r["ok"], true, "{body}: {r}");
        assert_eq!(r["damaged"], 0);
        assert_eq!(r["damaged_packs"], json!([]));
        for b in r["backups"].as_array().unwrap() {
            assert_eq!(b["ok"], true, "{b}");
            assert!(b["chunks_needed"].as_u64().unwrap() > 0);
            assert_eq!(
                b["chunks_checked"].as_u64().unwrap() > 0,
                reads,
                "{body}: {b}"
            );
        }
    }
    for id in [f.first, f.second] {
        let b = api.backup(id).await;
        assert_eq!(b["damaged"], false);
        assert_eq!(b["can_restore"], true);
        assert_eq!(b["verification"]["ok"], true, "{b}");
    }
    assert!(api.damage_alerts().await.is_empty());
    // The request is audited with its scope and mode.
    let audit = api.get("/api/v1/audit?limit=1000").await;
    let verifies: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["action"] == "backup.verify")
        .collect();
    assert_eq!(verifies.len(), 4, "{audit}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sample_of_all_the_data_finds_a_flipped_byte() {
    let f = fleet().await;
    flip_byte(&f.pack);
    let r = f
        .api
        .verify(json!({"backup_id": f.second, "mode": "sample", "sample_percent": 100}))
        .await;
    assert_eq!(r["mode"], "sample");
    assert_eq!(r["sample_percent"], 100.0);
    assert_both_named(&f, &r);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_specific_error_and_queues_nothing() {
    let f = fleet().await;
    let api = &f.api;
    let viewer = {
        let (s, _) = api
            .admin(
                Method::POST,
                "/api/v1/users",
                Some(json!({"username": "vera", "role": "viewer", "password": "correct-horse-battery"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
        let (s, v) = api
            .call(
                Method::POST,
                "/api/v1/tokens/login",
                "",
                Some(json!({"username": "vera", "password": "correct-horse-battery", "name": "t"})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["secret"].as_str().unwrap().to_owned()
    };
    let jobs = api.job_count().await;
    let audit = api.audit_count().await;
    let cases = [
        (
            json!({"backup_id": 9999}),
            StatusCode::NOT_FOUND,
            "unknown_backup",
        ),
        (
            json!({"instance": "no-such"}),
            StatusCode::NOT_FOUND,
            "unknown_instance",
        ),
        (
            json!({"all": true, "mode": "sample", "sample_percent": 0}),
            StatusCode::BAD_REQUEST,
            "invalid_sample",
        ),
        (
            json!({"all": true, "mode": "sample", "sample_percent": 150}),
            StatusCode::BAD_REQUEST,
            "invalid_sample",
        ),
        (
            json!({"all": true, "mode": "sample"}),
            StatusCode::BAD_REQUEST,
            "invalid_sample",
        ),
        (
            json!({"all": true, "mode": "read_data", "sample_percent": 5}),
            StatusCode::BAD_REQUEST,
            "invalid_sample",
        ),
        (
            json!({"backup_id": f.first, "all": true}),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            json!({"backup_id": f.first, "instance": "crm-prod"}),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (json!({}), StatusCode::BAD_REQUEST, "invalid_scope"),
        (
            json!({"all": false}),
            StatusCode::BAD_REQUEST,
            "invalid_scope",
        ),
        (
            json!({"all": true, "mode": "full"}),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            json!({"all": true, "deep": true}),
            StatusCode::BAD_REQUEST,
            "malformed_json",
        ),
        (
            json!({"instance": "crm-sand"}),
            StatusCode::CONFLICT,
            "nothing_to_verify",
        ),
    ];
    for (body, status, code) in cases {
        let (s, e) = api
            .admin(Method::POST, "/api/v1/backups/verify", Some(body.clone()))
            .await;
        assert_eq!((s, e["code"].as_str()), (status, Some(code)), "{body}: {e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    let (_, e) = api
        .admin(
            Method::POST,
            "/api/v1/backups/verify",
            Some(json!({"all": true, "mode": "full"})),
        )
        .await;
    assert!(
        e["message"].as_str().unwrap().contains("`read_data`"),
        "an unknown mode names the modes: {e}"
    );
    let (s, e) = api
        .call(
            Method::POST,
            "/api/v1/backups/verify",
            &viewer,
            Some(json!({"all": true})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("verify backups"),
        "{e}"
    );
    // A viewer may still see what verify found.
    let (s, _) = api
        .call(
            Method::GET,
            &format!("/api/v1/backups/{}/verification", f.first),
            &viewer,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = api
        .admin(Method::GET, "/api/v1/backups/9999/verification", None)
        .await;
    assert_eq!(
        (s, e["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_backup"))
    );
    assert_eq!(api.job_count().await, jobs, "no job was queued");
    assert_eq!(api.audit_count().await, audit, "nothing was audited");
}

/// A verify job interrupted by a stop is run again at the next start.
#[test]
fn an_interrupted_verify_runs_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || Config {
        data_dir: dir.path().join("data"),
        scheduler: false,
        ..Config::default()
    };
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 2, 1, 0, 0).unwrap(),
    ));
    let (state, boot) = steward_server::prepare_with_clock(config(), clock.clone()).unwrap();
    let s = &state.services;
    let admin = s.authenticate_token(&boot.unwrap().token).unwrap();
    s.create_instance(&admin, "crm-prod", "production", Some("9.1"))
        .unwrap();
    let b = s
        .create_backup(&admin, "crm-prod", "nightly", None)
        .unwrap();
    while s.run_next_job(&state.jobs).unwrap() {}
    let scope = steward_server::services::verify::VerifyScope::Instance("crm-prod".into());
    let started = s
        .start_verify(&admin, &scope, steward_core::verify::VerifyMode::ReadData)
        .unwrap();
    // Steward stops while the job runs: it is left `running`.
    let claimed = s
        .store
        .write(|db| db.claim_next_job(steward_core::Clock::now(&*clock)))
        .unwrap()
        .unwrap();
    assert_eq!(
        (claimed.id, claimed.state.as_str()),
        (started.job.id, "running")
    );
    drop(state);

    let (state, _) = steward_server::prepare_with_clock(config(), clock).unwrap();
    let s = &state.services;
    let job = s.show_job(&admin, started.job.id).unwrap();
    assert_eq!(
        job.state, "queued",
        "recovery puts the verify back in the queue"
    );
    while s.run_next_job(&state.jobs).unwrap() {}
    let job = s.show_job(&admin, started.job.id).unwrap();
    assert_eq!(job.state, "succeeded", "{job:?}");
    let result = job.result.unwrap();
    assert_eq!(result["ok"], true);
    assert_eq!(result["backups"][0]["backup_id"], b.id);
    let v = s.backup_verification(&admin, b.id).unwrap();
    assert_eq!(v.history.len(), 1, "recorded once");
}
