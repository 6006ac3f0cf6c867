//! Backups on S3-compatible storage (`backup_url = "s3://bucket/prefix"`): a real S3 server
//! (s3s + s3s-fs) started in-process, a real admin center on port 0 and the REST API; bad
//! backup locations; and a store that stops answering while a backup runs.

mod s3_support;

use std::time::{Duration, Instant};

use reqwest::{Client, Method, StatusCode};
use s3_support::{ACCESS_KEY_ID, Gate, S3Server, SECRET_ACCESS_KEY};
use serde_json::{Value, json};
use steward_server::Config;
use steward_server::testing::TestServer;

const BUCKET: &str = "steward-backups";
const PREFIX: &str = "fleet/node-1";

/// Points `c` at `s3://steward-backups/fleet/node-1` on `s3`.
fn on_s3(c: &mut Config, s3: &S3Server, timeout_seconds: u64) {
    c.backup_url = Some(format!("s3://{BUCKET}/{PREFIX}"));
    c.backup_s3_endpoint = Some(s3.endpoint.clone());
    c.backup_s3_allow_http = true;
    c.backup_s3_access_key_id = Some(ACCESS_KEY_ID.into());
    c.backup_s3_secret_access_key = Some(SECRET_ACCESS_KEY.into());
    c.backup_s3_timeout_seconds = timeout_seconds;
}

struct Api {
    srv: TestServer,
    http: Client,
}

impl Api {
    async fn on(s3: &S3Server, timeout_seconds: u64) -> Self {
        let srv = TestServer::start_with(|c| on_s3(c, s3, timeout_seconds), None).await;
        Self {
            srv,
            http: Client::new(),
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.srv.url, path))
            .bearer_auth(&self.srv.token)
            .timeout(Duration::from_secs(30));
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

    async fn get(&self, path: &str) -> Value {
        let (s, v) = self.call(Method::GET, path, None).await;
        assert_eq!(s, StatusCode::OK, "{path}: {v}");
        v
    }

    /// Creates an instance and returns its database path.
    async fn instance(&self, name: &str, kind: &str) -> String {
        let (s, v) = self
            .call(
                Method::POST,
                "/api/v1/instances",
                Some(json!({"name": name, "type": kind})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["database_path"].as_str().unwrap().to_owned()
    }

    /// Queues a backup of `instance`; returns (backup id, job id).
    async fn start_backup(&self, instance: &str, label: &str) -> (i64, i64) {
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/api/v1/instances/{instance}/backups"),
                Some(json!({"label": label})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        (v["id"].as_i64().unwrap(), v["job_id"].as_i64().unwrap())
    }

    async fn wait_job(&self, id: i64, within: Duration) -> Value {
        let end = Instant::now() + within;
        loop {
            let j = self.get(&format!("/api/v1/jobs/{id}")).await;
            if j["state"] == "succeeded" || j["state"] == "failed" {
                return j;
            }
            assert!(
                Instant::now() < end,
                "job {id} still {} after {within:?}",
                j["state"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Backs `instance` up and waits: the backup id.
    async fn backup(&self, instance: &str, label: &str) -> i64 {
        let (id, job) = self.start_backup(instance, label).await;
        let j = self.wait_job(job, Duration::from_secs(120)).await;
        assert_eq!(j["state"], "succeeded", "{j}");
        id
    }

    /// Restores backup `id` into the sandbox `target` and waits.
    async fn restore(&self, id: i64, target: &str) {
        let (s, v) = self
            .call(
                Method::POST,
                &format!("/api/v1/backups/{id}/restore"),
                Some(json!({"target": target})),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let j = self
            .wait_job(v["job"]["id"].as_i64().unwrap(), Duration::from_secs(120))
            .await;
        assert_eq!(j["state"], "succeeded", "{j}");
    }
}

fn mark(db: &str, name: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute("INSERT INTO accounts (name) VALUES (?1)", [name])
        .unwrap();
}

fn marks(db: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT name FROM accounts WHERE name LIKE 'mark-%' ORDER BY name")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_go_to_s3_under_the_prefix_and_restore_into_a_sandbox() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3"), BUCKET);
    let api = Api::on(&s3, 60).await;
    let prod = api.instance("crm-prod", "production").await;
    let sand = api.instance("crm-sand", "sandbox").await;
    mark(&prod, "mark-before-backup");

    let id = api.backup("crm-prod", "to s3").await;
    mark(&prod, "mark-after-backup");
    let b = api.get(&format!("/api/v1/backups/{id}")).await;
    assert_eq!(b["status"], "completed", "{b}");
    assert!(b["stored_bytes"].as_u64().unwrap() > 0, "{b}");

    // The repository is in the bucket, under the prefix, and nowhere else.
    let under = |d: &str| s3.objects(BUCKET, &format!("{PREFIX}/{d}"));
    assert!(s3.root.join(BUCKET).join(PREFIX).join("config").is_file());
    assert_eq!(under("backups").len(), 2, "a manifest and its chunk list");
    assert!(!under("data").is_empty(), "packs");
    assert!(!under("index").is_empty(), "pack indexes");
    assert!(!s3.root.join(BUCKET).join("config").exists());
    assert!(
        !api.srv.data_dir.join("backups").exists(),
        "no local repository"
    );

    api.restore(id, "crm-sand").await;
    assert_eq!(marks(&sand), ["mark-before-backup"]);
    assert_eq!(marks(&prod), ["mark-after-backup", "mark-before-backup"]);

    let (s, v) = api
        .call(
            Method::POST,
            "/api/v1/backups/verify",
            Some(json!({"all": true, "mode": "read_data"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let j = api
        .wait_job(v["job"]["id"].as_i64().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["result"]["damaged"], 0, "{j}");

    // Another server on the same bucket and prefix opens that repository (not a new one).
    drop(api);
    let api = Api::on(&s3, 60).await;
    let st = api.srv.state.clone();
    let manifests = tokio::task::spawn_blocking(move || st.services.repo().unwrap().list_backups())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0].metadata["label"], "to s3");
}

/// Each malformed location stops the start with a message naming the setting and the value,
/// never the secret, before anything is written.
#[test]
fn bad_backup_urls_stop_the_start_and_change_nothing() {
    let secret = "wJalrXUtnFEMI-s3cr3t";
    let cases: &[(&str, &[&str])] = &[
        ("garbage", &["backup_url \"garbage\"", "is not a URL"]),
        (
            "gs://bucket/prefix",
            &["\"gs://bucket/prefix\"", "scheme \"gs\""],
        ),
        ("s3:///prefix", &["\"s3:///prefix\"", "names no bucket"]),
        ("s3://", &["names no bucket"]),
        (
            "file://backups/here",
            &["\"file://backups/here\"", "host \"backups\""],
        ),
        ("file:backups", &["\"file:backups\"", "relative path"]),
        ("s3://My_Bucket/p", &["bucket \"My_Bucket\""]),
        (
            "s3://AKIA:wJalrXUtnFEMI-s3cr3t@bucket/p",
            &["\"s3://***@bucket/p\"", "credentials"],
        ),
    ];
    for (url, wanted) in cases {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let config = Config {
            data_dir: data_dir.clone(),
            backup_url: Some((*url).into()),
            backup_s3_access_key_id: Some("AKIA".into()),
            backup_s3_secret_access_key: Some(secret.into()),
            ..Config::default()
        };
        let err = steward_server::prepare(config)
            .err()
            .unwrap_or_else(|| panic!("{url} was accepted"))
            .to_string();
        assert!(err.starts_with("invalid configuration: "), "{err}");
        for w in *wanted {
            assert!(err.contains(w), "{url}: {w:?} in {err}");
        }
        assert!(!err.contains(secret), "{err}");
        assert!(!data_dir.exists(), "{url}: nothing was written");
    }
}

/// A store that cannot be reached at start: Steward refuses to start, soon, saying where it
/// looked and what to check (documented in README.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_unreachable_at_start_delays_backups_and_is_used_once_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3"), BUCKET);
    s3.set(Gate::Refuse);
    // Steward starts without its repository: the API works.
    let t = Instant::now();
    let api = Api::on(&s3, 2).await;
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "bounded: {:?}",
        t.elapsed()
    );
    assert!(!api.srv.state.services.repo.is_open());
    let prod = api.instance("crm-prod", "production").await;
    let sand = api.instance("crm-sand", "sandbox").await;
    mark(&prod, "mark-1");

    // A backup meanwhile fails as a job, with the reason and an alert, and changes nothing.
    let (stuck, job) = api.start_backup("crm-prod", "while unreachable").await;
    let j = api.wait_job(job, Duration::from_secs(120)).await;
    assert_eq!(j["state"], "failed", "{j}");
    let error = j["last_error"].as_str().unwrap();
    assert!(
        error.contains(&format!("s3://{BUCKET}/{PREFIX}"))
            && error.contains("the backup repository did not answer (it closed the connection)"),
        "a clear job error: {error}"
    );
    assert!(!error.contains(SECRET_ACCESS_KEY), "{error}");
    let b = api.get(&format!("/api/v1/backups/{stuck}")).await;
    assert_eq!(b["status"], "failed", "{b}");
    let inst = api.get("/api/v1/instances/crm-prod").await;
    assert_eq!(inst["state"], "available", "the instance is given back");
    let alerts = api.get("/api/v1/alerts").await;
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["level"] == "error"
                && a["message"]
                    .as_str()
                    .unwrap()
                    .contains("“while unreachable” of crm-prod failed")),
        "an alert: {alerts}"
    );
    assert!(s3.objects(BUCKET, PREFIX).is_empty(), "nothing was written");

    // The storage answers: the next backup opens the repository (creating it) and succeeds,
    // and restores exactly.
    s3.set(Gate::Open);
    let id = api.backup("crm-prod", "once it answers").await;
    assert!(api.srv.state.services.repo.is_open());
    assert!(!s3.objects(BUCKET, PREFIX).is_empty());
    api.restore(id, "crm-sand").await;
    assert_eq!(marks(&sand), ["mark-1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_stops_answering_fails_the_backup_with_an_alert_and_never_blocks_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(&dir.path().join("s3"), BUCKET);
    // Each request may take 2 s: a backup against a silent store fails in seconds.
    let api = Api::on(&s3, 2).await;
    let prod = api.instance("crm-prod", "production").await;
    let sand = api.instance("crm-sand", "sandbox").await;
    mark(&prod, "mark-1");
    let first = api.backup("crm-prod", "before the outage").await;
    mark(&prod, "mark-2");

    // The store goes silent while a backup runs.
    s3.set(Gate::Hang);
    let started = Instant::now();
    let (stuck, job) = api.start_backup("crm-prod", "during the outage").await;
    let mut answers = 0;
    let mut slowest = Duration::ZERO;
    let failed = loop {
        let t = Instant::now();
        let list = api.get("/api/v1/instances").await;
        let took = t.elapsed();
        assert_eq!(list["instances"].as_array().unwrap().len(), 2, "{list}");
        let j = api.get(&format!("/api/v1/jobs/{job}")).await;
        match j["state"].as_str().unwrap() {
            "running" => {
                answers += 1;
                slowest = slowest.max(took);
            }
            "failed" => break j,
            "queued" => {}
            other => panic!("the backup {other} against a silent store: {j}"),
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the backup is bounded by the timeouts"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = started.elapsed();
    eprintln!(
        "silent store: backup failed after {took:?}; {answers} instance lists answered while \
         it ran, slowest {slowest:?}; error: {}",
        failed["last_error"]
    );
    assert!(answers >= 5, "the API answered while the backup was stuck");
    assert!(slowest < Duration::from_secs(2), "{slowest:?}");
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.starts_with("the backup repository did not answer in time"),
        "a clear job error: {error}"
    );
    let b = api.get(&format!("/api/v1/backups/{stuck}")).await;
    assert_eq!(b["status"], "failed", "{b}");
    let inst = api.get("/api/v1/instances/crm-prod").await;
    assert_eq!(inst["state"], "available", "the instance is given back");
    let alerts = api.get("/api/v1/alerts").await;
    let alert = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            a["level"] == "error"
                && a["message"]
                    .as_str()
                    .unwrap()
                    .contains("“during the outage” of crm-prod failed")
        })
        .unwrap_or_else(|| panic!("an alert: {alerts}"));
    assert!(
        alert["message"]
            .as_str()
            .unwrap()
            .contains("did not answer"),
        "{alert}"
    );

    // A store that refuses connections fails a backup too, sooner.
    s3.set(Gate::Refuse);
    let started = Instant::now();
    let (_, job) = api.start_backup("crm-prod", "store down").await;
    let j = api.wait_job(job, Duration::from_secs(120)).await;
    eprintln!(
        "refusing store: backup failed after {:?}: {}",
        started.elapsed(),
        j["last_error"]
    );
    assert_eq!(j["state"], "failed", "{j}");
    let error = j["last_error"].as_str().unwrap();
    assert!(
        // How the refusal surfaces depends on timing: the connection closed while the
        // request was sent, or failed otherwise; either is named as the store not answering.
        error.starts_with("the backup repository did not answer (it closed the connection)")
            || error.starts_with("the backup repository did not answer (the connection failed)"),
        "{error}"
    );

    // The store is back: a backup succeeds, and both it and the one from before the outage
    // restore exactly; the repository reads back whole.
    s3.set(Gate::Open);
    mark(&prod, "mark-3");
    let after = api.backup("crm-prod", "after the outage").await;
    api.restore(after, "crm-sand").await;
    assert_eq!(marks(&sand), ["mark-1", "mark-2", "mark-3"]);
    api.restore(first, "crm-sand").await;
    assert_eq!(marks(&sand), ["mark-1"]);
    let (s, v) = api
        .call(
            Method::POST,
            "/api/v1/backups/verify",
            Some(json!({"all": true, "mode": "read_data"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let j = api
        .wait_job(v["job"]["id"].as_i64().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(j["state"], "succeeded", "{j}");
    assert_eq!(j["result"]["damaged"], 0, "{j}");
}
