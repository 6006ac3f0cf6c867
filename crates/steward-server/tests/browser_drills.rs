//! Restore drills in a real browser (headless Chromium through chromedriver, see
//! `browser_support`), against a real server whose drill worker runs beside the job runner:
//! run a drill from an instance page, see it pass there and in the Backup & Restore tab; run
//! one over a corrupted backup from the Restore drills page, see it fail in the fleet view,
//! the instance page, the backup list and the alert banner; Viewers get no Run forms.

use std::path::{Path, PathBuf};

use steward_server::Actor;
use steward_server::testing::TestServer;

mod browser_support;
use browser_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_drills_in_a_real_browser() {
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

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Flips a byte in the middle of every pack of the repository.
fn corrupt_packs(data_dir: &Path) {
    let mut n = 0;
    for sub in files_in(&data_dir.join("backups").join("data")) {
        for p in files_in(&sub) {
            let mut bytes = std::fs::read(&p).unwrap();
            let i = bytes.len() / 2;
            bytes[i] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
            n += 1;
        }
    }
    assert!(n > 0, "the repository has packs");
}

/// Takes a backup through the services and waits until it completed; returns its id.
async fn backup(server: &TestServer, instance: &str) -> i64 {
    let st = server.state.clone();
    let name = instance.to_owned();
    let id = tokio::task::spawn_blocking(move || {
        st.services
            .create_backup(&Actor::system(), &name, "nightly", None)
            .expect("backup")
            .id
    })
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + JOB_WAIT;
    loop {
        let b = server
            .state
            .services
            .show_backup(&Actor::system(), id)
            .unwrap();
        if b.status == "completed" {
            return id;
        }
        assert!(
            std::time::Instant::now() < deadline && b.status != "failed",
            "backup of {instance}: {b:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

async fn scenario(ui: &Ui, server: &TestServer) {
    let s = &server.state.services;
    s.create_instance(&Actor::system(), "crm-prod", "production", None)
        .expect("instance");
    s.create_instance(&Actor::system(), "crm-ok", "sandbox", None)
        .expect("instance");
    s.create_user(&Actor::system(), "vic", "viewer", Some("a-long-password-1"))
        .expect("viewer");
    let ok_backup = backup(server, "crm-ok").await;

    ui.sign_in("admin", &server.admin_password).await;
    ui.wait_path("/instances").await;

    // 1. An instance never drilled says so; run one from its page; it passes.
    ui.goto("/instances/crm-ok").await;
    assert!(ui.text("#no-drill").await.contains("Never drilled"));
    ui.click("#run-drill").await;
    ui.wait_path("/instances/crm-ok").await;
    assert!(ui.notice().await.contains("is queued"));
    let result = ui
        .poll_text("/instances/crm-ok", "#drill-result", |t| {
            t == "Passed" || t == "Failed"
        })
        .await;
    assert_eq!(result, "Passed");
    assert!(ui.text("#drill-backup").await.contains("nightly"));
    assert!(
        ui.text("#drill-duration")
            .await
            .contains("restored and checked")
    );
    ui.save_screenshot("drills-instance-passed").await;
    // Shown beside the backup in the Backup & Restore tab.
    ui.goto("/backups?instance=crm-ok").await;
    assert!(
        ui.text(&format!("#drill-of-{ok_backup}"))
            .await
            .contains("Passed")
    );
    assert!(ui.text("#current-drill").await.contains("Passed"));
    assert!(
        files_in(&server.data_dir.join("drills")).is_empty(),
        "no throwaway file left"
    );

    // 2. A corrupted backup, drilled from the Restore drills page, fails.
    let bad_backup = backup(server, "crm-prod").await;
    corrupt_packs(&server.data_dir);
    ui.click("#nav-drills").await;
    ui.wait_path("/drills").await;
    assert!(
        ui.text("#attention-crm-prod")
            .await
            .contains("Never drilled"),
        "never drilled instances are listed"
    );
    assert!(!ui.exists("#attention-crm-ok").await, "crm-ok passed today");
    ui.select("#drill-instance", "crm-prod").await;
    ui.click("#run-drill-button").await;
    ui.wait_path("/drills").await;
    let row = ui
        .poll_text("/drills", "#attention-crm-prod", |t| t.contains("failed"))
        .await;
    assert!(row.contains("Last drill failed"), "{row}");
    assert!(row.contains("chunk"), "the problem names the chunk: {row}");
    assert!(ui.text("#drill-list").await.contains("Failed"));
    ui.save_screenshot("drills-fleet-failed").await;
    // Failed only.
    ui.click("#failed-only").await;
    ui.click("#apply-filter").await;
    // The form keeps the fleet view's default of twice the daily period.
    ui.wait_path("/drills?stale_days=2&q=&failed=on").await;
    assert!(ui.exists("#attention-crm-prod").await);
    assert_eq!(ui.text("#attention-total").await, "1");
    // Finding by name keeps the other filters; one that matches nothing says so.
    ui.fill("#filter-q", "zzz").await;
    ui.click("#apply-filter").await;
    ui.wait_path("/drills?stale_days=2&q=zzz&failed=on").await;
    assert!(ui.text("#no-rows").await.contains("zzz"));
    assert_eq!(ui.text("#count-failed").await, "1", "the fleet's count");
    ui.fill("#filter-q", "PROD").await;
    ui.click("#apply-filter").await;
    ui.wait_path("/drills?stale_days=2&q=PROD&failed=on").await;
    assert!(ui.exists("#attention-crm-prod").await);
    // A bad number of days is refused with a sentence.
    ui.goto("/drills?stale_days=0").await;
    assert!(ui.text("#error").await.contains("from 1 to 3650"));

    // 3. The instance page, the backup list and the alert banner show the failure.
    ui.goto("/instances/crm-prod").await;
    assert_eq!(ui.text("#drill-result").await, "Failed");
    assert!(ui.text("#drill-problems").await.contains("chunk"));
    assert!(ui.text("#latest-alert").await.contains("Restore drill"));
    ui.goto("/backups?instance=crm-prod").await;
    assert!(
        ui.text(&format!("#drill-of-{bad_backup}"))
            .await
            .contains("Failed")
    );

    // 4. Viewers see the drills but cannot run one.
    ui.signed_out().await;
    ui.sign_in("vic", "a-long-password-1").await;
    ui.wait_path("/instances").await;
    ui.goto("/drills").await;
    assert!(ui.exists("#attention-crm-prod").await);
    assert!(!ui.exists("#run-drill-form").await);
    assert!(!ui.exists(".run-drill").await);
    ui.goto("/instances/crm-prod").await;
    assert_eq!(ui.text("#drill-result").await, "Failed");
    assert!(!ui.exists("#run-drill").await);
}
