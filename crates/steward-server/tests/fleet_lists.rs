//! Lists that stay usable and fast with a large fleet: `GET /api/v1/instances` in pages
//! (limit / after / q, with whole-match totals), the Instances page in pages of 50 with a
//! name filter, each instance's storage recorded by the node that keeps its files, and the
//! admin center's create form placing an instance on another node (the form is passed on to
//! it with the same session).

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::Value;
use steward_server::Actor;
use steward_server::testing::TestServer;

mod web_support;
use web_support::{Web, rows};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .unwrap()
}

async fn get(srv: &TestServer, path: &str) -> (StatusCode, Value) {
    let r = http()
        .get(format!("{}{path}", srv.url))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// Creates instances through the services, off the async workers.
async fn create(srv: &TestServer, names: Vec<String>) {
    let st = srv.state.clone();
    tokio::task::spawn_blocking(move || {
        for n in names {
            st.services
                .create_instance(&Actor::system(), &n, "sandbox", None)
                .unwrap();
        }
    })
    .await
    .unwrap();
}

fn names(v: &Value) -> Vec<String> {
    v["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_instances_in_pages_with_totals_of_the_whole_match() {
    let srv = TestServer::start().await;
    let all: Vec<String> = (1..=7).map(|i| format!("crm-{i:02}")).collect();
    let mut mixed = all.clone();
    mixed.push("hr-01".into());
    create(&srv, mixed).await;

    // Page by page with the cursor: every instance once, in name order.
    let (s, p1) = get(&srv, "/api/v1/instances?limit=3&q=crm").await;
    assert_eq!(s, StatusCode::OK, "{p1}");
    assert_eq!(names(&p1), all[0..3]);
    assert_eq!(p1["total"], 7);
    assert_eq!(p1["next_after"], "crm-03");
    let (_, p2) = get(&srv, "/api/v1/instances?limit=3&q=crm&after=crm-03").await;
    assert_eq!(names(&p2), all[3..6]);
    let (_, p3) = get(&srv, "/api/v1/instances?limit=3&q=crm&after=crm-06").await;
    assert_eq!(names(&p3), all[6..7]);
    assert!(p3["next_after"].is_null(), "the last page says so: {p3}");

    // Totals count the whole match, not the page; the filter is case-insensitive.
    let (_, everything) = get(&srv, "/api/v1/instances?limit=1000").await;
    assert_eq!(everything["total"], 8);
    let crm_bytes: u64 = everything["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["name"].as_str().unwrap().starts_with("crm"))
        .map(|i| i["storage_bytes"].as_u64().unwrap())
        .sum();
    assert!(crm_bytes > 0);
    assert_eq!(p1["total_storage_bytes"], crm_bytes);
    let (_, upper) = get(&srv, "/api/v1/instances?limit=2&q=CRM").await;
    assert_eq!(upper["total"], 7);
    // `_` and `%` are plain characters in the filter, not wildcards.
    let (_, none) = get(&srv, "/api/v1/instances?q=crm_0").await;
    assert_eq!(none["total"], 0);

    // Without a limit: the first 100.
    let (_, default) = get(&srv, "/api/v1/instances").await;
    assert_eq!(names(&default).len(), 8);

    for bad in ["0", "1001", "-1"] {
        let (s, e) = get(&srv, &format!("/api/v1/instances?limit={bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {e}");
        assert_eq!(e["code"], "invalid_limit", "{e}");
        assert!(e["message"].as_str().unwrap().contains(bad), "{e}");
    }
    let (s, e) = get(&srv, "/api/v1/instances?limit=ten").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["message"].as_str().unwrap().contains("limit"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_is_recorded_by_the_node_that_keeps_the_files() {
    let srv = TestServer::start().await;
    create(&srv, vec!["crm-prod".into()]).await;
    let st = srv.state.clone();
    tokio::task::spawn_blocking(move || {
        let s = &st.services;
        let row = s
            .store
            .read(|db| db.instance_by_name("crm-prod"))
            .unwrap()
            .unwrap();
        let measured = steward_engine::storage_bytes(std::path::Path::new(&row.database_path));
        assert!(measured > 0);
        assert_eq!(row.storage_bytes, measured, "measured when created");

        // The database grows: the next minute's measurement records it.
        let conn = rusqlite::Connection::open(&row.database_path).unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode=DELETE; CREATE TABLE blob_data(b BLOB);
             INSERT INTO blob_data VALUES (zeroblob(300000));",
        )
        .unwrap();
        drop(conn);
        let grown = steward_engine::storage_bytes(std::path::Path::new(&row.database_path));
        assert!(grown > measured + 250_000);
        assert_eq!(s.record_storage(None).unwrap(), 1);
        let listed = s.list_instances(&Actor::system()).unwrap();
        assert_eq!(listed.instances[0].storage_bytes, grown);
        assert_eq!(listed.total_storage_bytes, grown);
        assert_eq!(s.record_storage(None).unwrap(), 0, "nothing changed since");

        // An instance another node keeps is that node's to measure: this node leaves its
        // recorded value alone, even where a file of the same path exists here.
        let other = s
            .store
            .write(|db| {
                let r = db
                    .insert_instance(
                        &steward_store::NewInstance {
                            name: "crm-elsewhere".into(),
                            instance_type: steward_core::InstanceType::Sandbox,
                            engine: steward_core::Engine::Sqlite,
                            release: row.release.clone(),
                            state: steward_core::InstanceState::Available,
                            database_path: row.database_path.clone(),
                            documents_path: row.documents_path.clone(),
                            created_by: "test".into(),
                            node: Some("node-elsewhere".into()),
                        },
                        s.now(),
                    )?
                    .unwrap();
                db.set_storage_bytes(&[(r.id, 4242)])?;
                Ok::<_, steward_store::StoreError>(r)
            })
            .unwrap();
        assert_eq!(s.record_storage(None).unwrap(), 0);
        assert_eq!(s.record_storage(Some("crm-elsewhere")).unwrap(), 0);
        let shown = s.show_instance(&Actor::system(), "crm-elsewhere").unwrap();
        assert_eq!(shown.storage_bytes, 4242, "what the keeping node recorded");
        assert_eq!(other.node.as_deref(), Some("node-elsewhere"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_instances_page_shows_fifty_at_a_time_with_a_name_filter() {
    let srv = TestServer::start().await;
    let mut all: Vec<String> = (1..=60).map(|i| format!("shop-{i:03}")).collect();
    all.push("crm-only".into());
    create(&srv, all.clone()).await;
    all.sort();
    let web = Web::sign_in(&srv).await;

    let (s, first) = web.get("/instances").await;
    assert_eq!(s, 200);
    assert_eq!(rows(&first, "instance-"), all[0..50]);
    assert!(
        first.contains("in 61 instances"),
        "the total counts the fleet"
    );
    assert!(first.contains("1–50 of 61"));
    let next = first
        .split("rel=\"next\"")
        .nth(1)
        .expect("a link to the next page");
    let next = next.split('>').next().unwrap().replace("&#x2f;", "/");
    assert!(next.contains("href=\"/instances?page=2\""), "{next}");
    assert!(!first.contains("rel=\"prev\""));
    let (_, second) = web.get("/instances?page=2").await;
    assert_eq!(rows(&second, "instance-"), all[50..61]);
    assert!(second.contains("51–61 of 61"));

    let (_, found) = web.get("/instances?q=CRM").await;
    assert_eq!(rows(&found, "instance-"), ["crm-only"]);
    assert!(found.contains("in 1 instance matching"));

    let (_, past) = web.get("/instances?page=9").await;
    assert!(rows(&past, "instance-").is_empty());
    assert!(past.contains("No instances on this page."));
    let (s, junk) = web.get("/instances?page=two").await;
    assert_eq!(s, 400);
    assert!(
        junk.contains("age must be a whole number from 1 (got &quot;two&quot;)"),
        "{junk}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_create_form_places_an_instance_on_the_node_chosen() {
    let shared = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", shared.path().join("control.sqlite").display());
    let u = url.clone();
    let a = TestServer::start_node(move |c| {
        c.node_name = Some("node-a".into());
        c.database_url = Some(u);
    })
    .await;
    let u = url.clone();
    let b = TestServer::start_node(move |c| {
        c.node_name = Some("node-b".into());
        c.database_url = Some(u);
    })
    .await;
    let web = Web::sign_in(&a).await;
    let cookie = web.cookie().to_owned();
    let listed = web.page("/instances").await;
    assert!(
        listed.contains("<option value=\"node-b\""),
        "the form offers both nodes"
    );
    let csrf = listed
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();

    // Posted to node A, for node B: B builds the files and answers through A.
    let r = http()
        .post(format!("{}/instances", a.url))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "crm-on-b"),
            ("type", "sandbox"),
            ("release", ""),
            ("node", "node-b"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/instances");
    let flash = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("steward_flash="))
        .expect("the notice of node B");
    let notice = String::from_utf8(
        hex::decode(
            flash
                .split(';')
                .next()
                .unwrap()
                .trim_start_matches("steward_flash="),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(notice.contains("on node node-b"), "{notice}");
    let st = a.state.clone();
    let row = tokio::task::spawn_blocking(move || {
        st.services
            .store
            .read(|db| db.instance_by_name("crm-on-b"))
            .unwrap()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(row.node.as_deref(), Some("node-b"));
    assert!(
        std::path::Path::new(&row.database_path).starts_with(&b.data_dir),
        "{} is on node B's disk",
        row.database_path
    );
    // Node A shows it with node B's measurement of its files.
    let (_, shown) = get(&a, "/api/v1/instances/crm-on-b").await;
    assert!(shown["storage_bytes"].as_u64().unwrap() > 0, "{shown}");
    assert_eq!(shown["node"], "node-b");

    // A node that does not exist: a clear error on the form, nothing created.
    let r = http()
        .post(format!("{}/instances", a.url))
        .header("cookie", &cookie)
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "crm-nowhere"),
            ("type", "sandbox"),
            ("release", ""),
            ("node", "node-z"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let html = r.text().await.unwrap();
    assert!(html.contains("There is no node named"), "{html}");
    let (s, _) = get(&a, "/api/v1/instances/crm-nowhere").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    drop(b);
}

/// A single node re-claimed its own hour at every minute tick (the store lets a node take its
/// tick back after a restart), so expiry and prune ran every minute: with a day of backups for
/// 10,000 instances that was 7% of a core while idle. Now once an hour.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_the_hourly_maintenance_once_an_hour() {
    use chrono::TimeZone;
    let clock = std::sync::Arc::new(steward_core::ManualClock::new(
        chrono::Utc.with_ymd_and_hms(2026, 12, 3, 10, 0, 5).unwrap(),
    ));
    let c = clock.clone();
    let srv = TestServer::start_with(|_| {}, Some(c)).await;
    let st = srv.state.clone();
    tokio::task::spawn_blocking(move || {
        let s = &st.services;
        assert_eq!(s.claim_scheduled_work().unwrap(), (true, true));
        for _ in 0..3 {
            clock.advance(chrono::Duration::minutes(1));
            assert_eq!(
                s.claim_scheduled_work().unwrap(),
                (true, false),
                "{}",
                s.now()
            );
        }
        clock.advance(chrono::Duration::minutes(57));
        assert_eq!(
            s.claim_scheduled_work().unwrap(),
            (true, true),
            "the next hour"
        );
        clock.advance(chrono::Duration::minutes(1));
        assert_eq!(s.claim_scheduled_work().unwrap(), (true, false));
    })
    .await
    .unwrap();
}
