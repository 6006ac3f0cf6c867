//! The admin center on a PostgreSQL control plane that goes down and comes back: requests
//! answer 503 `store_unavailable` (JSON, nothing changed) while it is down, and Steward
//! recovers by itself when it is back. Also: a PostgreSQL that is down at start stops the start.

use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use steward_server::testing::TestServer;

async fn get(http: &Client, srv: &TestServer, path: &str) -> (StatusCode, Value) {
    let resp = http
        .get(format!("{}{path}", srv.url))
        .bearer_auth(&srv.token)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_answer_503_while_postgres_is_down_and_recover_when_it_is_back() {
    let (pg, url) = tokio::task::spawn_blocking(|| {
        let pg = steward_testpg::PgServer::start().unwrap();
        let url = pg.create_database();
        (pg, url)
    })
    .await
    .unwrap();
    let srv = TestServer::start_with(move |c| c.database_url = Some(url), None).await;
    let http = Client::new();
    let (status, _) = get(&http, &srv, "/api/v1/instances").await;
    assert_eq!(status, StatusCode::OK);

    let mut pg = tokio::task::spawn_blocking(move || {
        let mut pg = pg;
        pg.stop();
        pg
    })
    .await
    .unwrap();
    let (status, body) = get(&http, &srv, "/api/v1/instances").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], "store_unavailable", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("cannot be reached") || message.contains("PostgreSQL"),
        "{message}"
    );
    assert!(message.contains("nothing was changed"), "{message}");
    // A write is refused the same way and leaves nothing behind.
    let resp = http
        .post(format!("{}/api/v1/instances", srv.url))
        .bearer_auth(&srv.token)
        .json(&json!({"name": "crm-sand", "type": "sandbox"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);

    let pg = tokio::task::spawn_blocking(move || {
        pg.restart().unwrap();
        pg
    })
    .await
    .unwrap();
    let (status, body) = get(&http, &srv, "/api/v1/instances").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["instances"].as_array().map(Vec::len),
        Some(0),
        "the refused create left nothing: {body}"
    );
    drop(srv);
    tokio::task::spawn_blocking(move || drop(pg)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_that_is_down_at_start_stops_the_start_with_the_reason() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let config = steward_server::Config {
        data_dir: dir.path().join("data"),
        database_url: Some(format!(
            "postgres://steward:secret@127.0.0.1:{port}/steward"
        )),
        scheduler: false,
        continuous_capture: false,
        ..Default::default()
    };
    let err = tokio::task::spawn_blocking(move || steward_server::prepare(config).err())
        .await
        .unwrap()
        .expect("the start must fail");
    let msg = err.to_string();
    assert!(msg.contains("cannot be reached"), "{msg}");
    assert!(!msg.contains("secret"), "{msg}");
}
