//! Updates (seed 001) against a real server: real SQLite instances, the real backup
//! repository, the job handlers and a manual clock moved across months.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use steward_core::{Clock, ManualClock};
use steward_server::services::{Actor, Services};
use steward_server::testing::TestServer;

mod db_support;
use db_support::{dump, staged_files};

struct Env {
    server: TestServer,
    clock: Arc<ManualClock>,
    http: reqwest::Client,
}

/// 2018-09-01 10:00 UTC: 9.1 is out, 8.2 is still supported (until 2020-01-31).
fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2018, 9, 1, 10, 0, 0).unwrap()
}

async fn env_with(tweak: impl FnOnce(&mut steward_server::Config)) -> Env {
    let clock = Arc::new(ManualClock::new(start_time()));
    let server = TestServer::start_with(
        |c| {
            c.system_backup_time = "off".into();
            c.update_rehearsal_days = 0;
            tweak(c);
        },
        Some(clock.clone() as Arc<dyn Clock>),
    )
    .await;
    Env {
        server,
        clock,
        http: reqwest::Client::new(),
    }
}

async fn env() -> Env {
    env_with(|_| {}).await
}

impl Env {
    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}/api/v1{path}", self.server.url);
        let mut req = match method {
            "GET" => self.http.get(url),
            "PUT" => self.http.put(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url),
        }
        .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        let t = self.server.token.clone();
        self.call(method, path, &t, body).await
    }

    async fn instance(&self, name: &str, kind: &str, release: &str) -> String {
        let (st, v) = self
            .admin(
                "POST",
                "/instances",
                Some(json!({"name": name, "type": kind, "release": release})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        v["database_path"].as_str().unwrap().to_owned()
    }

    async fn user_token(&self, name: &str, role: &str) -> String {
        let (st, v) = self
            .admin(
                "POST",
                "/users",
                Some(json!({"username": name, "role": role, "password": "a-long-password-1"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        let (st, v) = self
            .call(
                "POST",
                "/tokens/login",
                "",
                Some(json!({"username": name, "password": "a-long-password-1", "name": "t"})),
            )
            .await;
        assert_eq!(st, 201, "{v}");
        v["secret"]
            .as_str()
            .or(v["token"].as_str())
            .unwrap()
            .to_owned()
    }

    fn sv(&self) -> &Services {
        &self.server.state.services
    }

    fn admin_actor(&self) -> Actor {
        self.sv().authenticate_token(&self.server.token).unwrap()
    }

    /// Runs the update tick, then every job until none is queued or running (the server's
    /// own job runner may take some of them).
    async fn tick(&self) {
        let st = self.server.state.clone();
        tokio::task::spawn_blocking(move || st.services.tick_updates().unwrap())
            .await
            .unwrap();
        self.settle().await;
    }

    /// Waits until no job is queued or running, running them here too.
    async fn settle(&self) {
        let admin = self.admin_actor();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let st = self.server.state.clone();
            tokio::task::spawn_blocking(
                move || {
                    while st.services.run_next_job(&st.jobs).unwrap() {}
                },
            )
            .await
            .unwrap();
            let busy = ["queued", "running"]
                .iter()
                .map(|s| self.sv().list_jobs(&admin, None, Some(s)).unwrap().len())
                .sum::<usize>();
            if busy == 0 {
                return;
            }
            assert!(std::time::Instant::now() < deadline, "jobs did not finish");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Registers a webhook so that every notification leaves a delivery row to count.
    fn watch_notifications(&self) {
        self.sv()
            .create_webhook(&self.admin_actor(), "http://127.0.0.1:9/hook", None)
            .unwrap();
    }

    /// The events notified about `instance`, oldest first (one webhook delivery each).
    fn events(&self, instance: &str) -> Vec<String> {
        let mut log = self
            .sv()
            .notification_log(&self.admin_actor(), Some(instance), 10_000)
            .unwrap();
        log.retain(|d| d.channel == "webhook");
        log.sort_by_key(|d| d.notification_id);
        log.into_iter().map(|d| d.event).collect()
    }

    fn count(&self, instance: &str, event: &str) -> usize {
        self.events(instance).iter().filter(|e| *e == event).count()
    }

    async fn overview(&self, name: &str) -> Value {
        let (st, v) = self
            .admin("GET", &format!("/instances/{name}/updates"), None)
            .await;
        assert_eq!(st, 200, "{v}");
        v
    }

    async fn update(&self, id: &Value) -> Value {
        let (st, v) = self.admin("GET", &format!("/updates/{id}"), None).await;
        assert_eq!(st, 200, "{v}");
        v
    }

    async fn schedule(
        &self,
        name: &str,
        target: &str,
        preferred: DateTime<Utc>,
        alternate: DateTime<Utc>,
    ) -> Value {
        let (st, u) = self
            .admin(
                "POST",
                &format!("/instances/{name}/updates"),
                Some(json!({"target": target, "preferred_start": ts(preferred), "alternate_start": ts(alternate)})),
            )
            .await;
        assert_eq!(st, 201, "{u}");
        u
    }

    async fn post(&self, name: &str, op: &str, body: Option<Value>) -> (u16, Value) {
        self.admin(
            "POST",
            &format!("/instances/{name}/updates/{op}"),
            body.or(Some(json!({}))),
        )
        .await
    }

    fn advance_to(&self, t: DateTime<Utc>) {
        self.clock.set(t);
    }
}

/// The sample catalog up to 8.2, then a 9.0 whose migration fails halfway: it changes rows
/// and the schema first, then hits a table that does not exist. The transaction must roll all
/// of it back, and the update must leave the instance exactly as it was. Written under
/// Cargo's test scratch directory, one copy per `name`.
fn failing_catalog(name: &str) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog/crm");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("failing-9.0-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["8.0.sql", "8.1.sql", "8.2.sql"] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    std::fs::write(
        dir.join("9.0.sql"),
        "ALTER TABLE contacts ADD COLUMN first_name TEXT NOT NULL DEFAULT '';\n\
         UPDATE accounts SET name = name || ' (migrated)';\n\
         DELETE FROM activities;\n\
         INSERT INTO no_such_table (x) VALUES (1);\n",
    )
    .unwrap();
    let toml = std::fs::read_to_string(src.join("catalog.toml")).unwrap();
    let up_to_9_0 = toml
        .split("\n[[release]]\nversion = \"9.1\"")
        .next()
        .unwrap();
    std::fs::write(dir.join("catalog.toml"), up_to_9_0).unwrap();
    dir
}

fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339()
}

fn releases_applied(db: &str) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.prepare("SELECT version FROM steward_release ORDER BY rowid")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn add_account(db: &str, name: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute("INSERT INTO accounts (name) VALUES (?1)", [name])
        .unwrap();
}

fn has_account(db: &str, name: &str) -> bool {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT count(*) FROM accounts WHERE name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        > 0
}

fn timeline_events(u: &Value) -> Vec<String> {
    u["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_major_update_waits_for_approval_and_runs_in_its_window_with_timed_stages() {
    let e = env().await;
    e.watch_notifications();
    let db = e.instance("crm-prod", "production", "8.2").await;
    add_account(&db, "Contoso before update");
    let o = e.overview("crm-prod").await;
    assert_eq!(o["update_available"], true, "{o}");
    assert_eq!(o["support"]["status"], "supported");
    let targets: Vec<&str> = o["available"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["9.0", "9.1"]);
    assert!(o["mandatory"].is_null());

    let preferred = e.now() + Duration::days(10);
    let alternate = preferred + Duration::days(1);
    let u = e.schedule("crm-prod", "9.0", preferred, alternate).await;
    assert_eq!(u["status"], "scheduled");
    assert_eq!(u["status_label"], "Scheduled — awaiting approval");
    assert_eq!(u["needs_approval"], true);
    assert_eq!(u["kind"], "major");
    assert_eq!(
        chrono::DateTime::parse_from_rfc3339(u["preferred"]["end"].as_str().unwrap()).unwrap(),
        preferred + Duration::hours(12),
        "a window lasts 12 hours by default"
    );

    // Not approved: the preferred window opens and passes, nothing runs, and the update
    // falls back to the alternate window.
    e.advance_to(preferred + Duration::minutes(1));
    e.tick().await;
    assert_eq!(e.overview("crm-prod").await["release"], "8.2");
    e.advance_to(preferred + Duration::hours(12));
    e.tick().await;
    let u = e.update(&u["id"]).await;
    assert_eq!(
        (u["status"].as_str(), u["active_window"].as_str()),
        (Some("scheduled"), Some("alternate")),
        "{u}"
    );
    assert_eq!(e.count("crm-prod", "update_fallback"), 1);

    // A Delegated Admin may not approve; nothing changes.
    let delegated = e.user_token("dana", "delegated_admin").await;
    let (st, err) = e
        .call(
            "POST",
            "/instances/crm-prod/updates/approve",
            &delegated,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (st, err["code"].as_str()),
        (403, Some("forbidden")),
        "{err}"
    );
    assert_eq!(
        e.update(&u["id"]).await,
        u,
        "a refused approval changes nothing"
    );

    let (st, a) = e.post("crm-prod", "approve", None).await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        (a["status"].as_str(), a["approved_by"].as_str()),
        (Some("queued"), Some("admin"))
    );
    assert_eq!(a["status_label"], "Queued (Not Started)");
    assert_eq!(e.count("crm-prod", "schedule_confirmed"), 1);

    e.advance_to(alternate + Duration::minutes(1));
    e.tick().await;
    let done = e.update(&u["id"]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["status_label"], "Updated successfully");
    let o = e.overview("crm-prod").await;
    assert_eq!(o["release"], "9.0");
    assert!(o["current"].is_null());
    assert_eq!(o["history"][0]["id"], u["id"]);
    assert_eq!(releases_applied(&db), ["8.0", "8.1", "8.2", "9.0"]);
    assert!(
        has_account(&db, "Contoso before update"),
        "the data came through the update"
    );
    assert!(staged_files(&db, ".updating").is_empty());
    // Stage timings, in the seed's order, each closed.
    let stages: Vec<&str> = done["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["Backup", "Restore", "Database Upgrade", "Swap"]);
    assert!(
        done["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["finished_at"].is_null())
    );
    // The pre-update backup is labelled with the update.
    let b = e
        .sv()
        .show_backup(&e.admin_actor(), done["backup_id"].as_i64().unwrap())
        .unwrap();
    assert_eq!(b.kind, "pre_update");
    assert!(
        b.label.contains(&format!("update {}", u["id"])),
        "{}",
        b.label
    );
    // The timeline tells the story; the instance is available again.
    let t = timeline_events(&done);
    for ev in [
        "scheduled",
        "window_missed",
        "approved",
        "started",
        "stage",
        "succeeded",
    ] {
        assert!(t.contains(&ev.to_string()), "{ev} missing from {t:?}");
    }
    let approved = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == "approved")
        .unwrap();
    assert_eq!(approved["actor"], "admin");
    let (_, inst) = e.admin("GET", "/instances/crm-prod", None).await;
    assert_eq!(inst["state"], "available");
    // Every change is audited: by whom, and System's own steps.
    let (_, audit) = e
        .admin("GET", "/audit?action=update&target=crm-prod", None)
        .await;
    let actions: Vec<(String, String)> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["actor"].as_str().unwrap().to_owned(),
                a["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for want in [
        ("admin", "update.schedule"),
        ("admin", "update.approve"),
        ("System", "update.fallback"),
        ("System", "update.start"),
        ("System", "update.succeed"),
    ] {
        assert!(
            actions.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} missing from {actions:?}"
        );
    }
    let ev = e.events("crm-prod");
    for want in [
        "update_scheduled",
        "schedule_confirmed",
        "update_in_progress",
        "update_succeeded",
    ] {
        assert!(ev.contains(&want.to_string()), "{want} missing from {ev:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reschedule_and_withdraw_are_allowed_until_the_update_starts_and_refused_after() {
    let e = env_with(|c| c.job_stage_pause_ms = 700).await;
    e.watch_notifications();
    e.instance("crm-prod", "production", "8.2").await;
    let p = e.now() + Duration::days(5);
    let u = e
        .schedule("crm-prod", "9.0", p, p + Duration::days(1))
        .await;
    e.post("crm-prod", "approve", None).await;
    let (st, w) = e.post("crm-prod", "withdraw", None).await;
    assert_eq!(
        (st, w["status"].as_str(), w["approved_by"].is_null()),
        (200, Some("scheduled"), true),
        "{w}"
    );
    e.post("crm-prod", "approve", None).await;

    // Reschedule with a local time in Paris: stored in UTC, before and after in the timeline.
    let (st, r) = e
        .post(
            "crm-prod",
            "reschedule",
            Some(json!({"preferred_start": "2018-09-20T22:00", "alternate_start": "2018-09-21T22:00", "time_zone": "Europe/Paris"})),
        )
        .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["preferred"]["start"], "2018-09-20T20:00:00Z");
    assert_eq!(r["status"], "queued", "same target: the approval stands");
    let entry = r["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == "rescheduled")
        .unwrap();
    assert_eq!(
        entry["details"]["before"]["preferred"]["start"],
        u["preferred"]["start"]
    );
    assert_eq!(
        entry["details"]["after"]["preferred"]["start"],
        "2018-09-20T20:00:00Z"
    );
    assert_eq!(e.count("crm-prod", "update_rescheduled"), 1);
    // A new target is a new decision: the approval is cleared.
    let (st, r2) = e
        .post("crm-prod", "reschedule", Some(json!({"target": "9.1"})))
        .await;
    assert_eq!(
        (st, r2["status"].as_str(), r2["target_release"].as_str()),
        (200, Some("scheduled"), Some("9.1")),
        "{r2}"
    );
    e.post("crm-prod", "approve", None).await;

    // The update starts; while it runs every change is refused and nothing changes.
    e.advance_to(Utc.with_ymd_and_hms(2018, 9, 20, 20, 1, 0).unwrap());
    let st8 = e.server.state.clone();
    tokio::task::spawn_blocking(move || st8.services.tick_updates().unwrap())
        .await
        .unwrap();
    let running = e.update(&u["id"]).await;
    assert_eq!(running["status"], "in_progress");
    assert_eq!(running["status_label"], "Update in progress");
    for (op, body) in [
        (
            "reschedule",
            json!({"preferred_start": ts(e.now() + Duration::days(3)), "alternate_start": ts(e.now() + Duration::days(4))}),
        ),
        ("withdraw", json!({})),
        ("cancel", json!({})),
        ("approve", json!({})),
    ] {
        let (st, err) = e.post("crm-prod", op, Some(body)).await;
        assert_eq!(
            (st, err["code"].as_str()),
            (409, Some("update_in_progress")),
            "{op}: {err}"
        );
    }
    let after = e.update(&u["id"]).await;
    // (The job adds its own stage entries meanwhile; the people's entries are unchanged.)
    let by_people = |u: &Value| -> Vec<Value> {
        u["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["actor"] != "System")
            .cloned()
            .collect()
    };
    assert_eq!(
        by_people(&after),
        by_people(&running),
        "refusals leave the timeline as it was"
    );
    assert_eq!(after["target_release"], running["target_release"]);
    assert_eq!(after["approved_by"], running["approved_by"]);
    assert_eq!(after["preferred"], running["preferred"]);
    // While it runs the instance shows updating (from Backup until the swap).
    let mut saw_updating = false;
    for _ in 0..100 {
        let (_, i) = e.admin("GET", "/instances/crm-prod", None).await;
        if i["state"] == "updating" {
            saw_updating = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        saw_updating,
        "the instance is unavailable during the update"
    );
    e.settle().await;
    assert_eq!(e.update(&u["id"]).await["status"], "succeeded");
    assert_eq!(e.overview("crm-prod").await["release"], "9.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_two_behind_gets_a_mandatory_update_scheduled_by_system_without_approval() {
    let e = env().await;
    e.watch_notifications();
    let db = e.instance("crm-old", "production", "8.1").await;
    add_account(&db, "Fabrikam");
    let o = e.overview("crm-old").await;
    assert_eq!(o["support"]["status"], "behind");
    assert_eq!(o["mandatory"]["target"], "9.1", "{o}");
    e.tick().await;
    let o = e.overview("crm-old").await;
    let u = &o["current"];
    assert_eq!(u["mandatory"], true, "{o}");
    assert_eq!(u["needs_approval"], false);
    assert_eq!(u["status"], "queued");
    assert_eq!(u["created_by"], "System");
    assert_eq!(u["target_release"], "9.1");
    assert_eq!(e.count("crm-old", "update_scheduled"), 1);
    // Ticking again schedules nothing more.
    e.tick().await;
    let (_, list) = e.admin("GET", "/updates?instance=crm-old", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    let (st, err) = e.post("crm-old", "cancel", None).await;
    assert_eq!(
        (st, err["code"].as_str()),
        (409, Some("update_mandatory")),
        "{err}"
    );

    // It runs in its window, no approval needed: 8.1 → 8.2 → 9.0 → 9.1.
    let start = chrono::DateTime::parse_from_rfc3339(u["preferred"]["start"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    assert!(
        start > e.now() + Duration::days(29),
        "scheduled ahead by the policy's lead time"
    );
    e.advance_to(start);
    e.tick().await;
    let done = e.update(&u["id"]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(releases_applied(&db), ["8.0", "8.1", "8.2", "9.0", "9.1"]);
    assert!(has_account(&db, "Fabrikam"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_update_is_applied_automatically_in_the_next_maintenance_window() {
    let e = env().await;
    e.instance("crm-svc", "sandbox", "9.0").await;
    e.tick().await;
    let u = e.overview("crm-svc").await["current"].clone();
    assert_eq!(
        (
            u["kind"].as_str(),
            u["status"].as_str(),
            u["needs_approval"].as_bool()
        ),
        (Some("service"), Some("queued"), Some(false)),
        "{u}"
    );
    assert_eq!(
        u["preferred"]["start"], "2018-09-01T22:00:00Z",
        "the next 22:00 UTC maintenance window"
    );
    let (st, err) = e.post("crm-svc", "cancel", None).await;
    assert_eq!(
        (st, err["code"].as_str()),
        (409, Some("update_automatic")),
        "{err}"
    );
    e.advance_to(Utc.with_ymd_and_hms(2018, 9, 1, 21, 59, 0).unwrap());
    e.tick().await;
    assert_eq!(
        e.overview("crm-svc").await["release"],
        "9.0",
        "not before its window"
    );
    e.advance_to(Utc.with_ymd_and_hms(2018, 9, 1, 22, 0, 0).unwrap());
    e.tick().await;
    let o = e.overview("crm-svc").await;
    assert_eq!(o["release"], "9.1", "{o}");
    assert_eq!(o["history"][0]["status"], "succeeded");
    assert_eq!(o["update_available"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_migration_leaves_the_instance_as_it_was_and_falls_back_then_waits() {
    let fixture = failing_catalog("fallback");
    let e = env_with(|c| c.catalog_dir = Some(fixture)).await;
    e.watch_notifications();
    let db = e.instance("crm-prod", "production", "8.2").await;
    add_account(&db, "Northwind");
    let before = dump(&db);
    let p = e.now() + Duration::days(3);
    let alternate = p + Duration::days(2);
    let u = e.schedule("crm-prod", "9.0", p, alternate).await;
    e.post("crm-prod", "approve", None).await;

    e.advance_to(p + Duration::minutes(5));
    e.tick().await;
    let f = e.update(&u["id"]).await;
    assert_eq!(
        (f["status"].as_str(), f["active_window"].as_str()),
        (Some("queued"), Some("alternate")),
        "{f}"
    );
    assert!(
        f["error"].as_str().unwrap().contains("no_such_table"),
        "{f}"
    );
    assert_eq!(
        dump(&db),
        before,
        "the instance's data is exactly as before, row by row"
    );
    assert_eq!(releases_applied(&db), ["8.0", "8.1", "8.2"]);
    let (_, inst) = e.admin("GET", "/instances/crm-prod", None).await;
    assert_eq!(
        (inst["release"].as_str(), inst["state"].as_str()),
        (Some("8.2"), Some("available"))
    );
    assert!(staged_files(&db, ".updating").is_empty());
    assert_eq!(e.count("crm-prod", "update_fallback"), 1);
    let t = timeline_events(&f);
    assert!(
        t.contains(&"failed".into()) && t.contains(&"fallback".into()),
        "{t:?}"
    );
    let failed = f["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == "failed")
        .unwrap();
    assert_eq!(failed["details"]["stage"], "Database Upgrade");

    // The alternate window fails too: the update waits for an administrator.
    e.advance_to(alternate + Duration::minutes(5));
    e.tick().await;
    let w = e.update(&u["id"]).await;
    assert_eq!(w["status"], "waiting", "{w}");
    assert_eq!(w["status_label"], "Waiting for an administrator");
    assert_eq!(dump(&db), before);
    assert_eq!(e.count("crm-prod", "update_fallback"), 2);
    // Two attempts, each with its own stages.
    let stages = w["stages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == "Backup")
        .count();
    assert_eq!(stages, 2);
    // A waiting update needs new windows to be rescheduled.
    let (st, err) = e
        .post("crm-prod", "reschedule", Some(json!({"target": "9.0"})))
        .await;
    assert_eq!(
        (st, err["code"].as_str()),
        (400, Some("window_in_past")),
        "{err}"
    );
    let (st, r) = e
        .post("crm-prod", "reschedule", Some(json!({"preferred_start": ts(e.now() + Duration::days(1)), "alternate_start": ts(e.now() + Duration::days(2))})))
        .await;
    assert_eq!(
        (st, r["status"].as_str(), r["active_window"].as_str()),
        (200, Some("queued"), Some("preferred")),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_multi_hop_update_skips_to_a_later_target_and_runs_each_migration_in_order() {
    let e = env().await;
    let db = e.instance("crm-hop", "sandbox", "8.1").await;
    {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute("INSERT INTO contacts (account_id, full_name, email) SELECT id, 'Ada Lovelace King', 'ada@example.com' FROM accounts LIMIT 1", []).unwrap();
    }
    let p = e.now() + Duration::days(2);
    // First 8.2, then change the target to 9.0 (skipping over 8.2 as a stop of its own).
    let u = e.schedule("crm-hop", "8.2", p, p + Duration::days(1)).await;
    let (st, r) = e
        .post("crm-hop", "reschedule", Some(json!({"target": "9.0"})))
        .await;
    assert_eq!(
        (st, r["target_release"].as_str()),
        (200, Some("9.0")),
        "{r}"
    );
    assert_eq!(
        r["mandatory"], true,
        "8.1 is two majors behind: any update of it is mandatory"
    );
    e.advance_to(p);
    e.tick().await;
    let done = e.update(&u["id"]).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(releases_applied(&db), ["8.0", "8.1", "8.2", "9.0"]);
    let c = rusqlite::Connection::open(&db).unwrap();
    let (first, last): (String, String) = c
        .query_row(
            "SELECT first_name, last_name FROM contacts WHERE email = 'ada@example.com'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(
        (first.as_str(), last.as_str()),
        ("Ada", "Lovelace King"),
        "9.0's data migration ran on 8.2's schema"
    );
    let applied = done["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == "succeeded")
        .unwrap();
    assert_eq!(applied["details"]["applied"], json!(["8.2", "9.0"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_instance_is_left_out_of_total_storage_until_its_database_upgrade_completes() {
    let e = env().await;
    e.instance("crm-a", "production", "9.1").await;
    e.instance("crm-b", "sandbox", "8.2").await;
    let storage = |v: &Value, name: &str| {
        v["instances"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .unwrap()
            .clone()
    };
    let (_, s0) = e.admin("GET", "/storage", None).await;
    let a = storage(&s0, "crm-a")["database_bytes"].as_u64().unwrap();
    let b = storage(&s0, "crm-b")["database_bytes"].as_u64().unwrap();
    assert_eq!(s0["total_database_bytes"].as_u64().unwrap(), a + b);

    let p = e.now() + Duration::days(1);
    e.schedule("crm-b", "9.0", p, p + Duration::days(1)).await;
    let (_, s1) = e.admin("GET", "/storage", None).await;
    assert_eq!(
        s1["total_database_bytes"].as_u64().unwrap(),
        a + b,
        "scheduled, awaiting approval: still counted"
    );
    // Approved: Queued (Not Started), and seed 001 leaves the instance out from that moment,
    // however far ahead the window is.
    e.post("crm-b", "approve", None).await;
    let (_, s15) = e.admin("GET", "/storage", None).await;
    assert_eq!(
        s15["total_database_bytes"].as_u64().unwrap(),
        a,
        "queued for a window a day ahead: left out"
    );

    // The window opens: still Queued (Not Started) until the job starts.
    e.advance_to(p);
    let (_, s2) = e.admin("GET", "/storage", None).await;
    assert_eq!(storage(&s2, "crm-b")["counted"], false, "{s2}");
    assert_eq!(
        s2["total_database_bytes"].as_u64().unwrap(),
        a,
        "queued: left out of the total"
    );
    let (_, list) = e.admin("GET", "/instances", None).await;
    assert_eq!(
        list["total_storage_bytes"].as_u64().unwrap(),
        a,
        "the instance list's Total Storage Used agrees"
    );

    e.tick().await;
    let (_, s3) = e.admin("GET", "/storage", None).await;
    let b3 = storage(&s3, "crm-b");
    assert_eq!(b3["counted"], true);
    assert_eq!(
        s3["total_database_bytes"].as_u64().unwrap(),
        a + b3["database_bytes"].as_u64().unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_go_out_90_30_15_and_7_days_before_once_each_moved_by_reschedule_removed_by_cancel()
 {
    let e = env().await;
    e.watch_notifications();
    e.instance("crm-prod", "production", "8.2").await;
    let t0 = e.now();
    let start = t0 + Duration::days(100);
    e.schedule("crm-prod", "9.0", start, start + Duration::days(1))
        .await;
    let reminders = |e: &Env| -> Vec<String> {
        e.events("crm-prod")
            .into_iter()
            .filter(|x| x.starts_with("reminder_"))
            .collect()
    };
    // Tick every 6 hours; record on which day each reminder went out.
    let mut seen: Vec<(String, i64)> = Vec::new();
    let mut t = t0;
    let until = start - Duration::days(25);
    while t < until {
        t += Duration::hours(6);
        e.advance_to(t);
        e.tick().await;
        e.tick().await; // twice: never a duplicate
        let r = reminders(&e);
        if r.len() > seen.len() {
            seen.push((r.last().unwrap().clone(), (start - t).num_days()));
        }
    }
    assert_eq!(
        seen,
        [
            ("reminder_90_days".to_string(), 90),
            ("reminder_30_days".to_string(), 30)
        ]
    );

    // Reschedule 20 days later: the reminders move with the start.
    let start2 = start + Duration::days(20);
    let (st, _) = e
        .post("crm-prod", "reschedule", Some(json!({"preferred_start": ts(start2), "alternate_start": ts(start2 + Duration::days(1))})))
        .await;
    assert_eq!(st, 200);
    let until = start2 - Duration::days(10);
    while t < until {
        t += Duration::hours(6);
        e.advance_to(t);
        e.tick().await;
        let r = reminders(&e);
        if r.len() > seen.len() {
            seen.push((r.last().unwrap().clone(), (start2 - t).num_days()));
        }
    }
    assert_eq!(
        seen[2..],
        [
            ("reminder_30_days".to_string(), 30),
            ("reminder_15_days".to_string(), 15)
        ]
    );
    // Cancel: no 7-day reminder, nothing at the start.
    let (st, c) = e.post("crm-prod", "cancel", None).await;
    assert_eq!((st, c["status"].as_str()), (200, Some("cancelled")));
    while t < start2 + Duration::days(1) {
        t += Duration::hours(12);
        e.advance_to(t);
        e.tick().await;
    }
    assert_eq!(reminders(&e).len(), 4, "{:?}", reminders(&e));
    assert_eq!(e.overview("crm-prod").await["release"], "8.2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_specific_error_and_changes_nothing() {
    let e = env().await;
    e.instance("crm-prod", "production", "8.2").await;
    let now = e.now();
    let p = now + Duration::days(3);
    let a = p + Duration::days(1);
    let sched = |target: &str, p: String, a: String, tz: Option<&str>| json!({"target": target, "preferred_start": p, "alternate_start": a, "time_zone": tz});
    for (body, status, code) in [
        (
            sched("9.0", ts(now - Duration::hours(1)), ts(a), None),
            400,
            "window_in_past",
        ),
        (
            sched("9.0", ts(p), ts(p + Duration::hours(6)), None),
            400,
            "windows_overlap",
        ),
        (sched("9.7", ts(p), ts(a), None), 400, "unknown_release"),
        (sched("nine", ts(p), ts(a), None), 400, "unknown_release"),
        (sched("8.1", ts(p), ts(a), None), 400, "target_not_newer"),
        (sched("8.2", ts(p), ts(a), None), 400, "target_not_newer"),
        (
            sched("9.0", "next tuesday".into(), ts(a), None),
            400,
            "invalid_window",
        ),
        (
            sched(
                "9.0",
                "2018-09-10T22:00".into(),
                ts(a),
                Some("Mars/Olympus"),
            ),
            400,
            "invalid_time_zone",
        ),
    ] {
        let (st, err) = e
            .admin("POST", "/instances/crm-prod/updates", Some(body.clone()))
            .await;
        assert_eq!(
            (st, err["code"].as_str()),
            (status, Some(code)),
            "{body}: {err}"
        );
    }
    let (_, list) = e.admin("GET", "/updates", None).await;
    assert_eq!(list, json!([]), "nothing was scheduled");

    let u = e.schedule("crm-prod", "9.0", p, a).await;
    let before = e.update(&u["id"]).await;
    // Another update on the same instance overlaps the scheduled one.
    let (st, err) = e
        .admin(
            "POST",
            "/instances/crm-prod/updates",
            Some(sched(
                "9.1",
                ts(p + Duration::days(5)),
                ts(p + Duration::days(6)),
                None,
            )),
        )
        .await;
    assert_eq!(
        (st, err["code"].as_str()),
        (409, Some("overlapping_operation")),
        "{err}"
    );
    for (body, code) in [
        (json!({"target": "8.1"}), "target_not_newer"),
        (json!({"target": "10.0"}), "unknown_release"),
        (
            json!({"preferred_start": ts(now - Duration::days(1))}),
            "window_in_past",
        ),
        (
            json!({"alternate_start": ts(p + Duration::hours(1))}),
            "windows_overlap",
        ),
        (json!({}), "nothing_to_change"),
    ] {
        let (st, err) = e.post("crm-prod", "reschedule", Some(body.clone())).await;
        assert_eq!(
            (st, err["code"].as_str()),
            (400, Some(code)),
            "{body}: {err}"
        );
    }
    let viewer = e.user_token("vera", "viewer").await;
    let delegated = e.user_token("dana", "delegated_admin").await;
    let (st, err) = e
        .call(
            "POST",
            "/instances/crm-prod/updates/approve",
            &delegated,
            Some(json!({})),
        )
        .await;
    assert_eq!(
        (st, err["code"].as_str()),
        (403, Some("forbidden")),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("approve updates"),
        "{err}"
    );
    let (st, _) = e
        .call(
            "POST",
            "/instances/crm-prod/updates/reschedule",
            &viewer,
            Some(json!({"target": "9.1"})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, err) = e.post("crm-prod", "withdraw", None).await;
    assert_eq!((st, err["code"].as_str()), (409, Some("not_approved")));
    let (st, err) = e
        .post("crm-prod", "now", Some(json!({"target": "9.0"})))
        .await;
    assert_eq!(
        (st, err["code"].as_str()),
        (400, Some("confirmation_required")),
        "{err}"
    );
    let (st, err) = e.post("crm-nope", "approve", None).await;
    assert_eq!(
        (st, err["code"].as_str()),
        (404, Some("unknown_instance")),
        "{err}"
    );
    assert_eq!(
        e.update(&u["id"]).await,
        before,
        "every refusal left the update as it was"
    );
    let (st, err) = e.admin("GET", "/updates?status=bogus", None).await;
    assert_eq!(st, 400, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_now_runs_at_once_on_a_sandbox_and_needs_confirmation_on_production() {
    let e = env().await;
    let db = e.instance("crm-sand", "sandbox", "8.2").await;
    e.instance("crm-prod", "production", "8.2").await;
    let delegated = e.user_token("dana", "delegated_admin").await;
    let (st, err) = e
        .call(
            "POST",
            "/instances/crm-sand/updates/now",
            &delegated,
            Some(json!({"target": "9.0"})),
        )
        .await;
    assert_eq!(
        (st, err["code"].as_str()),
        (403, Some("forbidden")),
        "a major update needs an administrator's approval: {err}"
    );
    let (st, u) = e
        .post("crm-sand", "now", Some(json!({"target": "9.0"})))
        .await;
    assert_eq!(st, 202, "{u}");
    assert_eq!(u["approved_by"], "admin");
    e.settle().await;
    assert_eq!(e.update(&u["id"]).await["status"], "succeeded");
    assert_eq!(releases_applied(&db), ["8.0", "8.1", "8.2", "9.0"]);
    let (st, u) = e
        .post("crm-prod", "now", Some(json!({"confirm": true})))
        .await;
    assert_eq!(
        (st, u["target_release"].as_str()),
        (202, Some("9.1")),
        "{u}"
    );
    e.settle().await;
    assert_eq!(e.overview("crm-prod").await["release"], "9.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_update_policy_is_data_from_the_built_in_default_the_api_or_a_reloaded_file() {
    let e = env().await;
    let (st, p) = e.admin("GET", "/update-policy", None).await;
    assert_eq!(st, 200);
    assert_eq!(
        (p["source"].as_str(), p["supported_majors"].as_u64()),
        (Some("built-in"), Some(2)),
        "{p}"
    );
    let support = |p: &Value, v: &str| {
        p["releases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["version"] == v)
            .unwrap()["support"]
            .clone()
    };
    assert_eq!(support(&p, "8.1"), "unsupported");
    assert_eq!(support(&p, "8.2"), "supported");
    let delegated = e.user_token("dana", "delegated_admin").await;
    let (st, _) = e
        .call(
            "PUT",
            "/update-policy",
            &delegated,
            Some(json!({"supported_majors": 3})),
        )
        .await;
    assert_eq!(st, 403);
    let (st, err) = e
        .admin(
            "PUT",
            "/update-policy",
            Some(json!({"supported_majors": 0})),
        )
        .await;
    assert_eq!((st, err["code"].as_str()), (400, Some("invalid_policy")));
    let (st, p) = e
        .admin(
            "PUT",
            "/update-policy",
            Some(json!({"supported_majors": 3, "mandatory_when_behind": 3})),
        )
        .await;
    assert_eq!((st, p["source"].as_str()), (200, Some("store")), "{p}");
    assert_eq!(support(&p, "8.1"), "supported");
    // Under this policy 8.1 is no longer mandatory: nothing is scheduled for it.
    e.instance("crm-old", "production", "8.1").await;
    e.tick().await;
    assert!(e.overview("crm-old").await["current"].is_null());

    // A policy file wins, is reloaded when it changes, and PUT points at it.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("update-policy.toml");
    std::fs::write(&file, "supported_majors = 1\n").unwrap();
    let f2 = file.clone();
    let e2 = env_with(move |c| c.update_policy_file = Some(f2)).await;
    let (_, p) = e2.admin("GET", "/update-policy", None).await;
    assert_eq!(
        (p["source"].as_str(), p["supported_majors"].as_u64()),
        (Some("file"), Some(1)),
        "{p}"
    );
    std::fs::write(
        &file,
        "supported_majors = 4\nservice_updates_automatic = false\n",
    )
    .unwrap();
    let (_, p) = e2.admin("GET", "/update-policy", None).await;
    assert_eq!(
        (
            p["supported_majors"].as_u64(),
            p["service_updates_automatic"].as_bool()
        ),
        (Some(4), Some(false))
    );
    std::fs::write(&file, "supported_majors = \"many\"\n").unwrap();
    let (_, p) = e2.admin("GET", "/update-policy", None).await;
    assert_eq!(
        p["supported_majors"].as_u64(),
        Some(4),
        "a broken edit keeps the last good policy"
    );
    let (st, err) = e2
        .admin(
            "PUT",
            "/update-policy",
            Some(json!({"supported_majors": 2})),
        )
        .await;
    assert_eq!((st, err["code"].as_str()), (409, Some("policy_from_file")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rehearsals_record_duration_and_problems_and_run_automatically_before_production_updates() {
    let fixture = failing_catalog("rehearsal");
    let e = env_with(|c| {
        c.catalog_dir = Some(fixture);
        c.update_rehearsal_days = 7;
    })
    .await;
    e.watch_notifications();
    let db = e.instance("crm-prod", "production", "8.2").await;
    let before = dump(&db);
    let (st, r) = e
        .post("crm-prod", "rehearse", Some(json!({"target": "8.2"})))
        .await;
    assert_eq!((st, r["code"].as_str()), (400, Some("target_not_newer")));
    let (st, r) = e
        .post("crm-prod", "rehearse", Some(json!({"target": "9.0"})))
        .await;
    assert_eq!((st, r["status"].as_str()), (202, Some("running")), "{r}");
    e.settle().await;
    // Sandbox first, with no update scheduled: the result is on the instance's overview.
    let o = e.overview("crm-prod").await;
    assert_eq!(o["current"], Value::Null);
    let own = &o["rehearsals"][0];
    assert_eq!(
        (
            own["id"].clone(),
            own["status"].as_str(),
            own["update_id"].clone()
        ),
        (r["id"].clone(), Some("failed"), Value::Null),
        "{o}"
    );
    assert!(
        own["problems"][0]
            .as_str()
            .unwrap()
            .contains("no_such_table"),
        "{own}"
    );

    // Scheduled production update: 7 days before, System rehearses it and emails the problems.
    let start = e.now() + Duration::days(20);
    let u = e
        .schedule("crm-prod", "9.0", start, start + Duration::days(1))
        .await;
    // A rehearsal of the scheduled update's target is attached to it for the approver.
    let (st, manual) = e.post("crm-prod", "rehearse", None).await;
    assert_eq!(
        (st, manual["update_id"].clone()),
        (202, u["id"].clone()),
        "{manual}"
    );
    e.settle().await;
    e.advance_to(start - Duration::days(8));
    e.tick().await;
    let v = e.update(&u["id"]).await;
    assert_eq!(v["rehearsals"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["rehearsals"][0]["automatic"], false);
    assert_eq!(e.count("crm-prod", "update_scheduled"), 1);
    e.advance_to(start - Duration::days(7));
    e.tick().await;
    e.tick().await;
    let v = e.update(&u["id"]).await;
    let rehearsals = v["rehearsals"].as_array().unwrap();
    assert_eq!(
        rehearsals.len(),
        2,
        "one automatic rehearsal, however many ticks: {v}"
    );
    let r = &rehearsals[0];
    assert_eq!(
        (r["automatic"].as_bool(), r["status"].as_str()),
        (Some(true), Some("failed")),
        "{r}"
    );
    assert!(r["duration_ms"].as_i64().is_some());
    assert!(
        r["problems"][0].as_str().unwrap().contains("no_such_table"),
        "{r}"
    );
    assert!(timeline_events(&v).contains(&"rehearsal".to_string()));
    // The administrators are told the list of problems (the seed's automated compatibility
    // tests), once; production untouched.
    assert_eq!(e.count("crm-prod", "rehearsal_problems"), 1);
    assert_eq!(
        e.count("crm-prod", "update_scheduled"),
        1,
        "no second \"Update scheduled\""
    );
    let log = e
        .sv()
        .notification_log(&e.admin_actor(), Some("crm-prod"), 1000)
        .unwrap();
    assert!(
        log.iter().any(|d| d.event == "rehearsal_problems"),
        "{log:?}"
    );
    let alerts = e.sv().list_alerts(&e.admin_actor(), 50).unwrap();
    assert!(
        alerts
            .iter()
            .any(|a| a.message.contains("rehearsal") && a.message.contains("no_such_table")),
        "{alerts:?}"
    );
    assert_eq!(
        dump(&db),
        before,
        "a rehearsal never touches production's data"
    );
    let rehearsal_dir = e.server.data_dir.join("rehearsals");
    let left: Vec<_> = std::fs::read_dir(&rehearsal_dir)
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "throwaway copies are removed: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_cannot_finish_inside_its_window_is_abandoned_before_the_swap() {
    let e = env_with(|c| c.job_stage_pause_ms = 400).await;
    let db = e.instance("crm-sand", "sandbox", "8.2").await;
    let before = dump(&db);
    let p = e.now() + Duration::days(1);
    let u = e
        .schedule("crm-sand", "9.0", p, p + Duration::days(1))
        .await;
    e.post("crm-sand", "approve", None).await;
    e.advance_to(p + Duration::hours(11));
    let st = e.server.state.clone();
    tokio::task::spawn_blocking(move || st.services.tick_updates().unwrap())
        .await
        .unwrap();
    // While the job is in its first stages, the window closes.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    e.advance_to(p + Duration::hours(12) + Duration::minutes(1));
    e.settle().await;
    let v = e.update(&u["id"]).await;
    assert_eq!(
        (v["status"].as_str(), v["active_window"].as_str()),
        (Some("queued"), Some("alternate")),
        "{v}"
    );
    assert!(
        v["error"].as_str().unwrap().contains("inside its window"),
        "{v}"
    );
    assert_eq!(dump(&db), before);
    assert!(staged_files(&db, ".updating").is_empty());
    let (_, inst) = e.admin("GET", "/instances/crm-sand", None).await;
    assert_eq!(
        (inst["release"].as_str(), inst["state"].as_str()),
        (Some("8.2"), Some("available"))
    );
}

#[test]
fn a_reminder_is_not_sent_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(start_time()));
    let config = || steward_server::Config {
        data_dir: dir.path().join("data"),
        system_backup_time: "off".into(),
        update_rehearsal_days: 0,
        ..steward_server::Config::default()
    };
    let start = start_time() + Duration::days(40);
    let reminders = |s: &Services, admin: &Actor| {
        s.notification_log(admin, Some("crm-prod"), 1000)
            .unwrap()
            .into_iter()
            .filter(|d| d.event.starts_with("reminder_") && d.channel == "webhook")
            .count()
    };
    {
        let (state, boot) = steward_server::prepare_with_clock(config(), clock.clone()).unwrap();
        let s = &state.services;
        let admin = s.authenticate_token(&boot.unwrap().token).unwrap();
        s.create_webhook(&admin, "http://127.0.0.1:9/hook", None)
            .unwrap();
        s.create_instance(&admin, "crm-prod", "production", Some("8.2"))
            .unwrap();
        s.schedule_update(
            &admin,
            "crm-prod",
            &steward_server::services::updates::ScheduleRequest {
                target: "9.0".into(),
                preferred_start: ts(start),
                alternate_start: ts(start + Duration::days(1)),
                time_zone: None,
            },
        )
        .unwrap();
        clock.set(start - Duration::days(30) + Duration::minutes(1));
        s.tick_updates().unwrap();
        assert_eq!(reminders(s, &admin), 1);
    }
    // Restart on the same data directory: the bookkeeping is in the store.
    let (state, _) = steward_server::prepare_with_clock(config(), clock.clone()).unwrap();
    let s = &state.services;
    let admin = Actor::system();
    s.tick_updates().unwrap();
    clock.advance(Duration::minutes(1));
    s.tick_updates().unwrap();
    assert_eq!(reminders(s, &admin), 1, "not sent again after the restart");
    clock.set(start - Duration::days(15));
    s.tick_updates().unwrap();
    assert_eq!(reminders(s, &admin), 2, "the next one still comes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_instance_cancels_its_update() {
    let e = env().await;
    e.instance("crm-gone", "sandbox", "9.0").await;
    e.tick().await;
    let u = e.overview("crm-gone").await["current"].clone();
    assert_eq!(u["status"], "queued", "{u}");
    let (st, v) = e
        .call(
            "DELETE",
            "/instances/crm-gone?confirm=crm-gone",
            &e.server.token.clone(),
            None,
        )
        .await;
    assert!(st < 300, "{st}: {v}");
    let (_, storage) = e.admin("GET", "/storage", None).await;
    assert_eq!(storage["instances"], json!([]));
    e.tick().await;
    let v = e.update(&u["id"]).await;
    assert_eq!(v["status"], "cancelled", "{v}");
    assert_eq!(timeline_events(&v).last().unwrap(), "cancelled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_window_over_a_scheduled_refresh_of_the_same_instance_is_refused() {
    let e = env().await;
    e.instance("crm-prod", "production", "9.1").await;
    e.instance("crm-test", "sandbox", "8.2").await;
    let refresh_at = e.now() + Duration::days(10);
    let (st, w) = e
        .admin(
            "POST",
            "/workitems/refresh",
            Some(json!({"source": "crm-prod", "target": "crm-test", "window_start": ts(refresh_at), "acknowledge": true})),
        )
        .await;
    assert_eq!(st, 201, "{w}");
    let body = |p: DateTime<Utc>| json!({"target": "9.0", "preferred_start": ts(p), "alternate_start": ts(p + Duration::days(2))});
    let (st, err) = e
        .admin(
            "POST",
            "/instances/crm-test/updates",
            Some(body(refresh_at - Duration::hours(2))),
        )
        .await;
    assert_eq!(
        (st, err["code"].as_str()),
        (409, Some("overlapping_operation")),
        "{err}"
    );
    assert!(
        err["message"].as_str().unwrap().contains("refresh"),
        "{err}"
    );
    let (_, list) = e.admin("GET", "/updates", None).await;
    assert_eq!(list, json!([]));
    // Another time is fine; moving it onto the refresh is refused and changes nothing.
    let u = e
        .schedule(
            "crm-test",
            "9.0",
            refresh_at + Duration::days(1),
            refresh_at + Duration::days(3),
        )
        .await;
    let (st, err) = e
        .post(
            "crm-test",
            "reschedule",
            Some(json!({"alternate_start": ts(refresh_at - Duration::hours(1))})),
        )
        .await;
    assert_eq!(
        (st, err["code"].as_str()),
        (409, Some("overlapping_operation")),
        "{err}"
    );
    assert_eq!(e.update(&u["id"]).await["alternate"], u["alternate"]);
}
