//! The Notifications tab and the dismissible alert banner in a real browser (headless
//! Chromium through chromedriver, see `browser_support`), against a real server with a real
//! webhook endpoint: edit the communications schedule, add and remove extra recipients
//! (a bad address is refused), add a webhook (its secret shown once), read the delivery log
//! after a backup, and dismiss the banner for one user while others still see it.

use std::sync::{Arc, Mutex};

use steward_server::Actor;
use steward_server::testing::TestServer;
use tokio::net::TcpListener;

mod browser_support;
use browser_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_tab_in_a_real_browser() {
    let driver = Driver::start().await;
    let server = TestServer::start().await;
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

/// A webhook endpoint on 127.0.0.1 that answers 200 and counts the requests.
async fn webhook_endpoint() -> (String, Arc<Mutex<usize>>) {
    let count = Arc::new(Mutex::new(0usize));
    let seen = count.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let seen = seen.clone();
            async move {
                *seen.lock().unwrap() += 1;
                "ok"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, count)
}

/// Waits until the notice banner says `expected` (the page before a form's redirect may
/// still show an older notice).
async fn notice_is(ui: &Ui, expected: &str) {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = ui.text_now("#notice").await;
        if now.as_deref() == Some(expected) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected the notice {expected:?}, got {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn user(server: &TestServer, name: &str, role: &str) {
    server
        .state
        .services
        .create_user(&Actor::system(), name, role, Some("a-long-password-1"))
        .expect("create user");
}

async fn scenario(ui: &Ui, server: &TestServer) {
    let s = &server.state.services;
    s.create_instance(&Actor::system(), "crm-prod", "production", None)
        .expect("instance");
    s.create_instance(&Actor::system(), "crm-test", "sandbox", None)
        .expect("instance");
    user(server, "root2", "system_administrator");
    user(server, "vic", "viewer");
    let admin = s.authenticate_token(&server.token).expect("admin");
    let (hook_url, hook_calls) = webhook_endpoint().await;

    ui.sign_in("admin", &server.admin_password).await;
    ui.wait_path("/instances").await;
    ui.click("#nav-notifications").await;
    ui.wait_path("/notifications").await;

    // 1. The schedule: the seed's rows; "Backup started" goes to everyone, in-product and
    //    by email, and the change sticks.
    let table = ui.text("#schedule-table").await;
    for row in [
        "Update scheduled",
        "90 days before update",
        "Update successful",
        "Fallback to secondary update",
        "Refresh cancelled",
    ] {
        assert!(table.contains(row), "{row} in {table}");
    }
    ui.select("#audience-backup_started", "all_admins_and_users")
        .await;
    ui.click("#email-backup_started").await;
    ui.click("#webhook-backup_started").await;
    ui.click("#save-backup_started").await;
    notice_is(ui, "Saved who hears about “Backup started” and how.").await;
    ui.goto("/notifications").await;
    let audience = ui
        .find("#audience-backup_started")
        .await
        .prop("value")
        .await
        .expect("value");
    assert_eq!(audience.as_deref(), Some("all_admins_and_users"));
    for (ch, on) in [("in_product", true), ("email", true), ("webhook", false)] {
        let checked = ui
            .find(&format!("#{ch}-backup_started"))
            .await
            .prop("checked")
            .await
            .expect("checked");
        assert_eq!(
            checked.as_deref(),
            Some(if on { "true" } else { "false" }),
            "{ch}"
        );
    }
    assert!(
        ui.text("#schedule-backup_started .col-event")
            .await
            .contains("changed")
    );
    let stored = s
        .notification_schedule(&admin)
        .unwrap()
        .into_iter()
        .find(|e| e.event == "backup_started")
        .unwrap();
    assert_eq!(stored.channels, ["email", "in_product"]);
    // Another row changed and put back on the default.
    ui.click("#in_product-restore_failed").await;
    ui.click("#save-restore_failed").await;
    notice_is(ui, "Saved who hears about “Restore failed” and how.").await;
    ui.click("#reset-restore_failed").await;
    notice_is(ui, "“Restore failed” is back on the default schedule.").await;
    assert!(!ui.exists("#reset-restore_failed").await);

    // 2. Extra recipients of crm-prod: a bad address is refused and nothing is stored.
    ui.select("#recipients-for", "crm-prod").await;
    ui.click("#show-recipients").await;
    ui.wait_path("/notifications?instance=crm-prod").await;
    ui.fill("#recipient-email", "ops at example").await;
    ui.click("#add-recipient").await;
    let error = ui.text("#recipient-error").await;
    assert!(error.contains("is not an email address"), "{error}");
    assert!(ui.exists("#no-recipients").await);
    assert!(s.list_recipients(&admin, "crm-prod").unwrap().is_empty());
    ui.fill("#recipient-email", "Ops@Example.COM").await;
    ui.click("#add-recipient").await;
    notice_is(ui, "Ops@example.com now receives crm-prod's notifications.").await;
    assert_eq!(
        ui.text("#recipients-table .col-email").await,
        "Ops@example.com"
    );

    // 3. Webhooks: the URL is checked; the secret is shown once.
    ui.fill("#webhook-url", "ftp://example.com/hook").await;
    ui.click("#add-webhook").await;
    let error = ui.text("#webhook-error").await;
    assert!(error.contains("only http and https"), "{error}");
    assert!(ui.exists("#no-webhooks").await);
    ui.fill("#webhook-url", &hook_url).await;
    ui.click("#add-webhook").await;
    let secret = ui.text("#webhook-secret").await;
    assert_eq!(secret.len(), 64, "{secret}");
    assert!(ui.text("#webhooks-table").await.contains(&hook_url));
    ui.goto("/notifications").await;
    assert!(!ui.exists("#webhook-secret").await, "shown only once");

    // 4. A backup of crm-prod: the delivery log shows the webhook sent and the email to the
    //    extra recipient waiting for a retry, with the reason (no SMTP server here).
    s.create_backup(&admin, "crm-prod", "nightly", None)
        .expect("backup");
    let log = ui
        .poll_text("/notifications?log=crm-prod", "#log-table", |t| {
            t.contains("Backup succeeded") && t.contains("Sent")
        })
        .await;
    assert!(log.contains(&hook_url), "{log}");
    assert!(log.contains("Ops@example.com"), "{log}");
    assert!(log.contains("no SMTP server is configured"), "{log}");
    assert!(
        ui.text("#log-table .delivery-pending .col-when")
            .await
            .contains("next try"),
        "a retry is planned"
    );
    assert!(*hook_calls.lock().unwrap() >= 1);
    ui.save_screenshot("notifications-admin").await;
    ui.c.execute("window.scrollTo(0, document.body.scrollHeight)", vec![])
        .await
        .expect("scroll");
    ui.save_screenshot("notifications-log").await;
    // Filtered by another instance, the log is empty.
    ui.select("#log-instance", "crm-test").await;
    ui.click("#filter-log").await;
    ui.wait_path("/notifications?instance=crm-prod&log=crm-test")
        .await;
    assert!(ui.exists("#no-deliveries").await);

    // 5. Remove the recipient, through the confirmation page.
    ui.goto("/notifications?instance=crm-prod").await;
    ui.click("#recipients-table .remove-link").await;
    let question = ui.text("#confirm-question").await;
    assert!(question.contains("Ops@example.com"), "{question}");
    assert_eq!(s.list_recipients(&admin, "crm-prod").unwrap().len(), 1);
    ui.click("#confirm-remove").await;
    notice_is(
        ui,
        "Ops@example.com no longer receives crm-prod's notifications.",
    )
    .await;
    assert!(ui.exists("#no-recipients").await);
    assert!(s.list_recipients(&admin, "crm-prod").unwrap().is_empty());

    // 6. The banner: the administrator dismisses "succeeded" for themselves only.
    ui.goto("/instances").await;
    let banner = ui.text("#latest-alert").await;
    assert!(
        banner.contains("Backup “nightly” of crm-prod succeeded."),
        "{banner}"
    );
    ui.click("#dismiss-alert").await;
    ui.wait_path("/instances").await;
    notice_is(ui, "Alert dismissed.").await;
    let banner = ui.text_now("#latest-alert").await.unwrap_or_default();
    assert!(!banner.contains("succeeded"), "dismissed: {banner}");
    ui.signed_out().await;

    // Another System Administrator still sees it.
    ui.sign_in("root2", "a-long-password-1").await;
    ui.wait_path("/instances").await;
    assert!(
        ui.text("#latest-alert").await.contains("succeeded"),
        "others still see it"
    );
    ui.signed_out().await;

    // A viewer is in the audience of "Backup started" (changed above) only, and sees the
    // schedule read-only.
    ui.sign_in("vic", "a-long-password-1").await;
    ui.wait_path("/instances").await;
    let banner = ui.text("#latest-alert").await;
    assert!(
        banner.contains("Backup “nightly” of crm-prod started."),
        "{banner}"
    );
    ui.goto("/notifications").await;
    assert!(ui.exists("#schedule-read-only").await);
    assert!(!ui.exists("#save-backup_started").await);
    assert!(!ui.exists("#add-recipient-form").await);
    assert_eq!(
        ui.text("#schedule-backup_started .col-audience").await,
        "All Admins and Users"
    );
    ui.save_screenshot("notifications").await;
}
