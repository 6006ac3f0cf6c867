//! Work items (database refreshes) to a moment, against a real server with continuous capture
//! on (the server's own clock: capture stamps commits when it reads them), real SQLite
//! instance databases and a real backup repository: a refresh `--at TIME` copies exactly the
//! source's state committed at the last commit at or before TIME; a moment outside the
//! range is refused with its specific code, naming the range, and changes nothing; the
//! restore points of a captured source are its range with its gaps.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

mod pitr_support;
use pitr_support::*;

/// What these tests add to the shared client.
impl Api {
    async fn refresh(
        &self,
        source: &str,
        target: &str,
        at: &str,
        window: &str,
    ) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/api/v1/workitems/refresh",
            Some(json!({"source": source, "target": target, "at": at,
                        "window_start": window, "acknowledge": true})),
        )
        .await
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
        for _ in 0..1200 {
            let w = self.get(&format!("/api/v1/workitems/{id}")).await;
            if matches!(w["status"].as_str(), Some("succeeded" | "failed")) {
                return w;
            }
            tokio::time::sleep(StdDuration::from_millis(50)).await;
        }
        panic!("work item {id} did not finish");
    }
}

/// Capture every 20 ms, no lead time (windows a few seconds ahead), no post-refresh scripts
/// (the copy must equal the source row by row), no system backups.
async fn server() -> Api {
    let scripts = tempfile::tempdir().unwrap();
    let dir = scripts.path().to_owned();
    let mut api = capturing(move |c| {
        c.refresh_lead_hours = 0;
        c.system_backup_time = "off".into();
        c.post_refresh_scripts_dir = Some(dir);
    })
    .await;
    api.keep = Some(scripts);
    api
}

fn sql(db: &str, script: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(StdDuration::from_secs(5)).unwrap();
    c.execute_batch(script).unwrap();
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

fn ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_at_a_moment_copies_exactly_the_state_committed_then() {
    let api = server().await;
    let prod = api.create("crm-prod", "production").await;
    let sand_a = api.create("crm-sand-a", "sandbox").await;
    let sand_b = api.create("crm-sand-b", "sandbox").await;
    api.wait_through("crm-prod", Utc::now()).await;

    // Commits, with the moment recorded well after each one (capture reads every 20 ms and
    // stamps a commit when it reads it) and well before the next.
    let first_commit = Utc::now();
    sql(
        &prod,
        "INSERT INTO accounts (name) VALUES ('first'); UPDATE contacts SET email = 'one@acme.example' WHERE id = 1;",
    );
    tokio::time::sleep(StdDuration::from_millis(150)).await;
    let at_a = Utc::now();
    let content_a = content(&prod);
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    let second_commit = Utc::now();
    sql(
        &prod,
        "INSERT INTO accounts (name) VALUES ('second'); DELETE FROM accounts WHERE name = 'first';",
    );
    tokio::time::sleep(StdDuration::from_millis(150)).await;
    let at_b = Utc::now();
    let content_b = content(&prod);
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    sql(&prod, "INSERT INTO accounts (name) VALUES ('live only');");
    let live = content(&prod);
    assert!(content_a != content_b && content_b != live);
    api.wait_through("crm-prod", Utc::now()).await;
    let chain = api.range("crm-prod").await["spans"][0]["chain_id"].clone();

    // The restore points of a captured source are its range, not backups.
    let points = api.get("/api/v1/instances/crm-prod/restore-points").await;
    assert_eq!(points["points"], json!([]), "{points:#}");
    assert_eq!(points["latest_is_live"], true);
    assert_eq!(points["range"]["instance"], "crm-prod", "{points:#}");
    assert_eq!(points["range"]["capturing"], true);
    assert_eq!(points["range"]["spans"][0]["chain_id"], chain);
    assert!(time(&points["earliest"]) <= first_commit, "{points:#}");
    assert!(
        points["range"]["description"]
            .as_str()
            .unwrap()
            .starts_with("from "),
        "{points:#}"
    );

    // Two refreshes, each at its moment, into two sandboxes, in the same window.
    let window = Utc::now() + Duration::seconds(2);
    let mut items = Vec::new();
    for (target, at) in [("crm-sand-a", at_a), ("crm-sand-b", at_b)] {
        let (s, w) = api.refresh("crm-prod", target, &ms(at), &ms(window)).await;
        assert_eq!(s, StatusCode::CREATED, "{w}");
        assert_eq!(w["status"], "accepted", "{w}");
        assert_eq!(w["restore_point"], Value::Null, "no backup is copied: {w}");
        assert_eq!(w["moment"]["chain_id"], chain, "{w}");
        assert_eq!(time(&w["moment"]["at"]), time(&json!(ms(at))));
        assert_eq!(w["moment"]["commit_at"], Value::Null, "not copied yet: {w}");
        items.push(w);
    }
    // No backup was ever taken of the source: the copy can only come from capture.
    let backups = api.get("/api/v1/instances/crm-prod/backups").await;
    assert_eq!(backups.as_array().map(Vec::len), Some(0), "{backups}");

    while Utc::now() <= window {
        tokio::time::sleep(StdDuration::from_millis(100)).await;
    }
    api.tick().await;
    for (w, db, expected, commit) in [
        (&items[0], &sand_a, &content_a, first_commit),
        (&items[1], &sand_b, &content_b, second_commit),
    ] {
        let done = api.finished(&w["id"]).await;
        assert_eq!(done["status"], "succeeded", "{done:#}");
        assert_eq!(
            &content(db),
            expected,
            "{} holds exactly what crm-prod had committed at {}",
            done["target"],
            done["point_in_time"]
        );
        let copied = time(&done["moment"]["commit_at"]);
        let asked = time(&done["moment"]["at"]);
        assert!(
            commit <= copied && copied <= asked,
            "the last commit at or before the moment: {done:#}"
        );
        let job = api.get(&format!("/api/v1/jobs/{}", done["job_id"])).await;
        assert_eq!(job["result"]["chain_id"], chain, "{job:#}");
        assert_eq!(time(&job["result"]["commit_at"]), copied);
        assert_eq!(job["result"]["backup_id"], Value::Null, "{job:#}");
        let stages: Vec<&str> = job["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["stage"].as_str().unwrap())
            .collect();
        assert_eq!(stages, ["safety_backup", "restore", "scripts", "swap"]);
        // The refresh's own rules still hold: a safety backup, the target available again
        // with the source's release, the downtime measured.
        assert!(done["safety_backup_id"].is_i64(), "{done:#}");
        assert!(done["downtime_ms"].as_i64().unwrap() >= 0);
        let target = api
            .get(&format!(
                "/api/v1/instances/{}",
                done["target"].as_str().unwrap()
            ))
            .await;
        assert_eq!(target["state"], "available", "{target}");
        assert_eq!(target["release"], "9.1");
    }
    assert_eq!(content(&prod), live, "the source is untouched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moment_outside_the_range_is_refused_naming_it_and_changes_nothing() {
    let api = server().await;
    // The source is a sandbox, so that a restore into it ends its chain: a gap.
    let src = api.create("crm-src", "sandbox").await;
    api.create("crm-other", "production").await;
    let sand = api.create("crm-sand", "sandbox").await;
    api.wait_through("crm-src", Utc::now()).await;
    api.wait_through("crm-other", Utc::now()).await;
    sql(
        &src,
        "INSERT INTO accounts (name) VALUES ('before the gap');",
    );
    tokio::time::sleep(StdDuration::from_millis(150)).await;
    let in_range = Utc::now();
    api.wait_through("crm-src", in_range).await;
    let other_at = Utc::now();
    api.wait_through("crm-other", other_at).await;

    let (s, v) = api
        .call(
            Method::POST,
            "/api/v1/restores",
            Some(json!({"instance": "crm-other", "at": ms(other_at), "target": "crm-src"})),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    let job = api.wait_job(v["job"]["id"].as_i64().unwrap()).await;
    assert_eq!(job["state"], "succeeded", "{job}");
    let after = Utc::now();
    let range = api.wait_through("crm-src", after).await;
    let gap = range["gaps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["reason"] == "the instance was restored")
        .unwrap_or_else(|| panic!("the restore left a gap: {range:#}"))
        .clone();
    let (from, to) = (time(&gap["from"]), time(&gap["to"]));
    let in_gap = from + (to - from) / 2;
    assert!(from < in_gap && in_gap < to, "{gap}");

    // The restore points show the ranges with the gap between them.
    let points = api.get("/api/v1/instances/crm-src/restore-points").await;
    assert_eq!(points["points"], json!([]));
    assert!(
        points["range"]["spans"].as_array().unwrap().len() >= 2,
        "{points:#}"
    );
    assert!(
        points["range"]["gaps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["reason"] == "the instance was restored"),
        "{points:#}"
    );

    let sandbox_before = content(&sand);
    let window = ms(Utc::now() + Duration::hours(1));
    let now = Utc::now();
    let cases = [
        (
            ms(in_gap),
            window.clone(),
            "moment_in_gap",
            "in a gap of crm-src's capture",
        ),
        (
            ms(now - Duration::hours(1)),
            window.clone(),
            "moment_outside_range",
            "outside the restorable range of crm-src: from ",
        ),
        (
            ms(now - Duration::days(30)),
            window.clone(),
            "moment_before_retention",
            "before the retention of crm-src",
        ),
        (
            ms(now + Duration::minutes(10)),
            window.clone(),
            "moment_in_future",
            "is in the future",
        ),
        // In the range now, but retention drops it before a window 8 days ahead starts.
        (
            ms(in_range),
            ms(now + Duration::days(8)),
            "moment_before_retention",
            "before the window starts",
        ),
    ];
    for (at, window, code, text) in &cases {
        let (s, v) = api.refresh("crm-src", "crm-sand", at, window).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::CONFLICT, Some(*code)),
            "at {at}: {v}"
        );
        let message = v["message"].as_str().unwrap();
        assert!(message.contains(text), "{message}");
    }
    // Refusals in the range name it.
    let (_, v) = api
        .refresh("crm-src", "crm-sand", &ms(in_gap), &window)
        .await;
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("crm-src is restorable from "),
        "{v}"
    );
    assert_eq!(
        api.get("/api/v1/workitems").await,
        json!([]),
        "no work item was created"
    );

    // A valid moment is accepted; rescheduling it into the gap is refused and changes nothing.
    let (s, w) = api
        .refresh("crm-src", "crm-sand", &ms(in_range), &window)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{w}");
    assert!(w["moment"]["chain_id"].is_i64(), "{w}");
    let (s, v) = api
        .call(
            Method::POST,
            &format!("/api/v1/workitems/{}/reschedule", w["id"]),
            Some(json!({"at": ms(in_gap)})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::CONFLICT, Some("moment_in_gap")),
        "{v}"
    );
    let after = api.get(&format!("/api/v1/workitems/{}", w["id"])).await;
    assert_eq!(after["point_in_time"], w["point_in_time"]);
    assert_eq!(after["moment"], w["moment"]);
    assert_eq!(after["history"].as_array().unwrap().len(), 2, "{after:#}");
    // Rescheduled to the latest, it copies the live source again (no chain).
    let (s, v) = api
        .call(
            Method::POST,
            &format!("/api/v1/workitems/{}/reschedule", w["id"]),
            Some(json!({"at": "latest"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["moment"], Value::Null, "{v}");
    assert_eq!(v["point_in_time"], Value::Null, "{v}");
    assert_eq!(content(&sand), sandbox_before, "the sandbox is untouched");
}
