//! The Nodes page in a real browser (headless Chromium through chromedriver, see
//! `browser_support`) against a real server: reached from the navigation, it shows this node
//! up with its address and instances, and a node that stopped heartbeating as down.

use steward_server::Actor;
use steward_server::testing::TestServer;
use steward_store::{NewNode, Registration};

mod browser_support;
use browser_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_nodes_page_shows_up_and_down_nodes_in_a_real_browser() {
    let driver = Driver::start().await;
    let server = TestServer::start_with(
        |c| {
            c.node_name = Some("node-a".into());
            c.node_address = Some("http://node-a.example.net:8080".into());
        },
        None,
    )
    .await;
    let client = driver.browser().await;
    let ui = Ui {
        c: client.clone(),
        base: server.url.clone(),
    };
    let outcome = tokio::spawn(async move { scenario(&ui, &server).await }).await;
    let _ = client.close().await;
    drop(driver);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn scenario(ui: &Ui, server: &TestServer) {
    let st = server.state.clone();
    tokio::task::spawn_blocking(move || {
        let s = &st.services;
        s.create_instance(&Actor::system(), "crm-prod", "production", None)
            .expect("instance");
        // Another node whose last heartbeat was a minute ago: down.
        let beat = s.now() - chrono::Duration::seconds(60);
        let node = NewNode {
            name: "node-b".into(),
            key: "elsewhere".into(),
            address: "http://node-b.example.net:8080".into(),
            version: "0.1.0".into(),
        };
        let r = s
            .store
            .write(|db| db.register_node(&node, beat, chrono::Duration::seconds(30)))
            .unwrap();
        assert_eq!(r, Registration::Registered);
    })
    .await
    .unwrap();

    ui.sign_in("admin", &server.admin_password).await;
    ui.click("#nav-nodes").await;
    ui.wait_path("/nodes").await;
    assert_eq!(ui.text("#node-node-a .col-status").await, "Up");
    assert_eq!(
        ui.text("#node-node-a .col-name").await,
        "node-a (this node)"
    );
    assert_eq!(
        ui.text("#node-node-a .col-address").await,
        "http://node-a.example.net:8080"
    );
    assert_eq!(ui.text("#node-node-a .col-instances").await, "1");
    assert_eq!(ui.text("#node-node-a .col-jobs").await, "0");
    assert_eq!(ui.text("#node-node-b .col-status").await, "Down");
    assert_eq!(ui.text("#node-node-b .col-instances").await, "0");
    let heartbeat = ui.text("#node-node-b .col-heartbeat").await;
    assert!(
        chrono::NaiveDateTime::parse_from_str(&heartbeat, "%Y-%m-%d %H:%M:%S").is_ok(),
        "{heartbeat}"
    );
    ui.save_screenshot("nodes").await;
}
