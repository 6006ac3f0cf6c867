//! With more than 200 instances, the instance pickers of the Backup & Restore, Work items and
//! Notifications tabs are name fields: in a real browser (headless Chromium through
//! chromedriver, see `browser_support`) against a real server, a typed name shows that
//! instance's backups and its storage row, backs it up, pages the storage table, requests a
//! refresh between two typed instances and adds a recipient; an unknown typed name gets a
//! clear error and changes nothing.

use steward_server::Actor;
use steward_server::testing::TestServer;

mod browser_support;
use browser_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_instance_names_in_a_real_browser() {
    let driver = Driver::start().await;
    let server = TestServer::start().await;
    let st = server.state.clone();
    tokio::task::spawn_blocking(move || {
        for i in 0..210 {
            st.services
                .create_instance(&Actor::system(), &format!("shop-{i:03}"), "sandbox", None)
                .expect("create instance");
        }
    })
    .await
    .unwrap();
    let client = driver.browser().await;
    let ui = Ui {
        c: client.clone(),
        base: server.url.clone(),
    };
    // Run the scenario in a task so that a failure still closes the browser below.
    let outcome = tokio::spawn(async move { scenario(&ui, &server).await }).await;
    let _ = client.close().await;
    drop(driver);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The tag name of the element `css`.
async fn tag(ui: &Ui, css: &str) -> String {
    ui.find(css).await.tag_name().await.expect("tag name")
}

/// Clicks the submit button `css` and waits until the browser shows the next page (a form
/// answered with the same address must not be mistaken for the page before it).
async fn submit(ui: &Ui, css: &str) {
    ui.c.execute("window.__stewardBeforeSubmit = true;", vec![])
        .await
        .expect("mark the page");
    ui.click(css).await;
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let fresh =
            ui.c.execute(
                "return window.__stewardBeforeSubmit === undefined \
                 && document.readyState === 'complete';",
                vec![],
            )
            .await;
        if matches!(fresh, Ok(serde_json::Value::Bool(true))) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{css}: no new page came"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn scenario(ui: &Ui, server: &TestServer) {
    let s = &server.state.services;
    ui.sign_in("admin", &server.admin_password).await;
    ui.wait_path("/instances").await;

    // Backup & Restore: "Backups for" is a name field; the storage table pages.
    ui.goto("/backups").await;
    assert_eq!(tag(ui, "#backups-for").await, "input");
    assert!(ui.text(".pager-count").await.contains("1–50 of 210"));
    ui.fill("#backups-for", "shop-150").await;
    submit(ui, "#show-backups").await;
    ui.wait_path("/backups?instance=shop-150").await;
    assert!(ui.text("#no-backups").await.contains("shop-150"));
    ui.click(".pager a[rel=next]").await;
    ui.wait_path("/backups?instance=shop-150&page=2").await;
    assert!(ui.exists("#storage-shop-050").await);
    assert!(!ui.exists("#storage-shop-000").await);

    // A backup of the typed instance.
    ui.fill("#backup-label", "typed in a browser").await;
    submit(ui, "#create-backup").await;
    assert_eq!(ui.notice().await, "Backup of shop-150 is being created.");
    let row = ui
        .poll_text("/backups?instance=shop-150", "#backups", |t| {
            t.contains("Completed")
        })
        .await;
    assert!(row.contains("typed in a browser"), "{row}");

    // An unknown name: a clear error, the field keeps it, nothing is created.
    ui.fill("#backups-for", "shop-999").await;
    submit(ui, "#show-backups").await;
    assert!(
        ui.text(".banner-error")
            .await
            .contains("There is no instance named"),
        "the error banner names the problem"
    );
    assert_eq!(
        ui.find("#backups-for")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("shop-999")
    );

    // Work items: the source and the target are typed.
    ui.goto("/workitems/refresh").await;
    assert_eq!(tag(ui, "#pick-source").await, "input");
    ui.fill("#pick-source", "shop-150").await;
    submit(ui, "#choose-source").await;
    ui.wait_path("/workitems/refresh?source=shop-150").await;
    assert_eq!(tag(ui, "#refresh-target").await, "input");
    ui.fill("#refresh-target", "shop-nope").await;
    ui.click("#ack-erase").await;
    ui.click("#ack-unavailable").await;
    ui.click("#ack-documents").await;
    submit(ui, "#submit-refresh").await;
    assert!(
        ui.text(".banner-error")
            .await
            .contains("There is no instance named"),
        "an unknown target is refused"
    );
    assert!(
        s.list_work_items(&Actor::system(), None, None)
            .unwrap()
            .is_empty()
    );
    ui.fill("#refresh-target", "shop-151").await;
    for ack in ["#ack-erase", "#ack-unavailable", "#ack-documents"] {
        if !ui.find(ack).await.is_selected().await.unwrap() {
            ui.click(ack).await;
        }
    }
    submit(ui, "#submit-refresh").await;
    assert!(
        ui.notice()
            .await
            .starts_with("Requested the refresh of shop-151 from shop-150"),
    );

    // Notifications: the recipients of a typed instance.
    ui.goto("/notifications").await;
    assert_eq!(tag(ui, "#recipients-for").await, "input");
    assert_eq!(tag(ui, "#log-instance").await, "input");
    ui.fill("#recipients-for", "shop-123").await;
    submit(ui, "#show-recipients").await;
    ui.wait_path("/notifications?instance=shop-123").await;
    ui.fill("#recipient-email", "ops@example.com").await;
    submit(ui, "#add-recipient").await;
    assert!(
        ui.notice()
            .await
            .contains("ops@example.com now receives shop-123")
    );
    assert_eq!(
        s.list_recipients(&Actor::system(), "shop-123")
            .unwrap()
            .len(),
        1
    );
}
