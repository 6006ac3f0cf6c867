//! The node registry with real parts: two nodes (two `prepare`) on one real PostgreSQL are
//! both listed; a third start under a live node's name is refused with the reason and changes
//! nothing; a node whose heartbeat stops is shown as down (the injected clock moves, nobody
//! sleeps 30 s) and its name can then be taken; a clean stop shows as stopped. Through the API
//! (`GET /api/v1/nodes`, any role): the node's instances and running jobs, and heartbeats
//! from the server's own loop. The API tests also run on PostgreSQL with
//! `STEWARD_TEST_STORE=postgres`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use steward_core::{Clock, ManualClock};
use steward_server::testing::TestServer;
use steward_server::{Actor, Config, SharedState, StartError};

/// A node's configuration on the shared database `url`.
fn node_config(dir: &tempfile::TempDir, name: &str, url: &str) -> Config {
    Config {
        data_dir: dir.path().join(name),
        database_url: Some(url.to_owned()),
        node_name: Some(name.split('#').next().unwrap().to_owned()),
        node_address: Some(format!(
            "http://{}.example.net:8080",
            name.replace('#', "-")
        )),
        scheduler: false,
        continuous_capture: false,
        ..Config::default()
    }
}

async fn prepare(config: Config, clock: &Arc<ManualClock>) -> Result<SharedState, StartError> {
    let clock: Arc<dyn Clock> = clock.clone();
    tokio::task::spawn_blocking(move || steward_server::prepare_with_clock(config, clock))
        .await
        .unwrap()
        .map(|(state, _)| state)
}

/// `(name, status, address, instances)` of every node, as `state` lists them.
fn nodes(state: &SharedState) -> Vec<(String, String, String, u64)> {
    state
        .services
        .list_nodes(&Actor::system())
        .unwrap()
        .into_iter()
        .map(|n| (n.name, n.status, n.address, n.instances))
        .collect()
}

fn row(name: &str, status: &str, address: &str, instances: u64) -> (String, String, String, u64) {
    (name.into(), status.into(), address.into(), instances)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_postgres_are_listed_and_a_live_name_is_never_shared() {
    let url = tokio::task::spawn_blocking(steward_testpg::fresh_database)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(
        chrono::Utc.with_ymd_and_hms(2027, 3, 1, 12, 0, 0).unwrap(),
    ));
    let a = prepare(node_config(&dir, "node-a", &url), &clock)
        .await
        .expect("node-a starts");
    let b = prepare(node_config(&dir, "node-b", &url), &clock)
        .await
        .expect("node-b starts");
    let b_services = b.clone();
    tokio::task::spawn_blocking(move || {
        b_services
            .services
            .create_instance(&Actor::system(), "crm-sand", "sandbox", None)
            .unwrap()
    })
    .await
    .unwrap();
    let a_addr = "http://node-a.example.net:8080";
    let b_addr = "http://node-b.example.net:8080";
    let both_up = vec![
        row("node-a", "up", a_addr, 0),
        row("node-b", "up", b_addr, 1),
    ];
    assert_eq!(nodes(&a), both_up, "any node lists the whole fleet");
    assert_eq!(nodes(&b), both_up);
    let listed = a.services.list_nodes(&Actor::system()).unwrap();
    assert!(listed[0].this_node && !listed[1].this_node);

    // A third process under node-a's name, from another data directory: refused, nothing
    // written (not even its node id).
    let third = node_config(&dir, "node-a#2", &url);
    let third_dir = third.data_dir.clone();
    let err = prepare(third, &clock)
        .await
        .err()
        .expect("a second node-a must not start");
    assert_eq!(
        err.to_string(),
        "node node-a is already running (last heartbeat 2027-03-01 12:00:00 UTC, 0 s ago, at \
         http://node-a.example.net:8080); give this node another name with STEWARD_NODE_NAME"
    );
    assert!(matches!(err, StartError::Node(_)), "{err:?}");
    assert!(!third_dir.join("node-id").exists());
    assert_eq!(nodes(&a), both_up, "nothing changed");

    // node-a stops heartbeating; node-b keeps on. 31 s later node-a is down.
    clock.advance(chrono::Duration::seconds(31));
    let b_beat = b.clone();
    tokio::task::spawn_blocking(move || b_beat.services.node_heartbeat().unwrap())
        .await
        .unwrap();
    assert_eq!(
        nodes(&b),
        [
            row("node-a", "down", a_addr, 0),
            row("node-b", "up", b_addr, 1)
        ]
    );

    // Now another process may take the name: it is up at its own address.
    let c = prepare(node_config(&dir, "node-a#2", &url), &clock)
        .await
        .expect("node-a is down: its name can be taken");
    let c_addr = "http://node-a-2.example.net:8080";
    assert_eq!(
        nodes(&c),
        [
            row("node-a", "up", c_addr, 0),
            row("node-b", "up", b_addr, 1)
        ]
    );
    // The old node-a coming back does not overwrite the new holder.
    let a_beat = a.clone();
    clock.advance(chrono::Duration::seconds(1));
    tokio::task::spawn_blocking(move || a_beat.services.node_heartbeat().unwrap())
        .await
        .unwrap();
    let now_a = c.services.list_nodes(&Actor::system()).unwrap().remove(0);
    assert_eq!(now_a.address, c_addr);
    assert!(
        now_a.last_heartbeat < clock.now(),
        "the old node-a wrote nothing"
    );

    // A clean stop shows as stopped; the name is free again at once.
    let b_stop = b.clone();
    tokio::task::spawn_blocking(move || b_stop.services.stop_node().unwrap())
        .await
        .unwrap();
    assert_eq!(nodes(&c)[1], row("node-b", "stopped", b_addr, 1));
    prepare(node_config(&dir, "node-b#2", &url), &clock)
        .await
        .expect("a stopped node's name is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_node_name_stops_the_start_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().join("data"),
        node_name: Some("Node_1".into()),
        scheduler: false,
        continuous_capture: false,
        ..Config::default()
    };
    let err = tokio::task::spawn_blocking(move || steward_server::prepare(config).err())
        .await
        .unwrap()
        .expect("must refuse");
    assert_eq!(
        err.to_string(),
        "invalid configuration: node_name \"Node_1\" cannot be used: a node name may contain \
         only lowercase letters, digits and dashes (found 'N') (STEWARD_NODE_NAME)"
    );
    assert!(
        !dir.path().join("data").join("steward.db").exists(),
        "checked before the store is created"
    );
}

async fn get(http: &Client, url: &str, token: &str, path: &str) -> (StatusCode, Value) {
    let resp = http
        .get(format!("{url}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls `GET /api/v1/nodes` until `done` holds for the only node.
async fn wait_node(http: &Client, srv: &TestServer, token: &str, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = get(http, &srv.url, token, "/api/v1/nodes").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if done(&body[0]) {
            return;
        }
        assert!(Instant::now() < deadline, "{body:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_lists_the_node_with_its_instances_running_jobs_and_heartbeats() {
    let srv = TestServer::start_with(
        |c| {
            c.node_name = Some("solo".into());
            c.node_heartbeat_seconds = 1;
            c.node_down_seconds = 2;
            // Keeps a backup running long enough to be seen.
            c.job_stage_pause_ms = 1500;
        },
        None,
    )
    .await;
    let http = Client::new();
    // Any role may list the nodes: a Viewer's token.
    srv.state
        .services
        .create_user(
            &Actor::system(),
            "vera",
            "viewer",
            Some("a-long-password-1"),
        )
        .unwrap();
    let login: Value = http
        .post(format!("{}/api/v1/tokens/login", srv.url))
        .json(&json!({"username": "vera", "password": "a-long-password-1", "name": "cli"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let viewer = login["secret"].as_str().expect("a token").to_owned();

    let (status, body) = get(&http, &srv.url, &viewer, "/api/v1/nodes").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let nodes = body.as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{body:#}");
    let n = &nodes[0];
    assert_eq!(n["name"], "solo");
    assert_eq!(n["status"], "up");
    assert_eq!(
        n["address"], "http://127.0.0.1:8080",
        "public_url by default"
    );
    assert_eq!(n["this_node"], true);
    assert_eq!(
        (n["instances"].as_u64(), n["running_jobs"].as_u64()),
        (Some(0), Some(0))
    );
    let started = n["last_heartbeat"].as_str().unwrap().to_owned();

    // The heartbeat loop keeps the node up (its down threshold is 2 s).
    wait_node(&http, &srv, &viewer, |n| {
        n["last_heartbeat"].as_str().unwrap() > started.as_str()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (_, body) = get(&http, &srv.url, &viewer, "/api/v1/nodes").await;
    assert_eq!(body[0]["status"], "up", "{body:#}");

    // An instance created here is this node's; a backup running is one of its running jobs.
    let resp = http
        .post(format!("{}/api/v1/instances", srv.url))
        .bearer_auth(&srv.token)
        .json(&json!({"name": "crm-prod", "type": "production"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = http
        .post(format!("{}/api/v1/instances/crm-prod/backups", srv.url))
        .bearer_auth(&srv.token)
        .json(&json!({"label": "nightly"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
    wait_node(&http, &srv, &viewer, |n| {
        n["instances"] == 1 && n["running_jobs"] == 1
    })
    .await;
    wait_node(&http, &srv, &viewer, |n| n["running_jobs"] == 0).await;

    // A clean stop shows as stopped.
    let state = srv.state.clone();
    drop(srv);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let st = state.clone();
        let status = tokio::task::spawn_blocking(move || {
            st.services.list_nodes(&Actor::system()).unwrap()[0]
                .status
                .clone()
        })
        .await
        .unwrap();
        if status == "stopped" {
            break;
        }
        assert!(Instant::now() < deadline, "still {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
