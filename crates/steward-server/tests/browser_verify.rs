//! Verify in the Backup & Restore tab in a real browser (headless Chromium through
//! chromedriver, see `browser_support`) against a real server and backup repository: a pack
//! is damaged on disk, the Verify button (reading the data) starts a job that shows in the
//! jobs list, and the backup is then shown Damaged with what was found, its Restore link is
//! gone, restoring it is refused, and Viewers get no Verify form.

use std::time::{Duration, Instant};

use steward_server::Actor;
use steward_server::testing::TestServer;

mod browser_support;
use browser_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_button_marks_a_damaged_backup_in_a_real_browser() {
    let driver = Driver::start().await;
    let server = TestServer::start().await;
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

/// A completed backup of `crm-prod` (with some rows) and the paths of its packs.
async fn backed_up(server: &TestServer) -> (i64, Vec<std::path::PathBuf>) {
    let st = server.state.clone();
    let admin = Actor::system();
    let b = tokio::task::spawn_blocking(move || {
        let s = &st.services;
        let db = s
            .create_instance(&admin, "crm-prod", "production", Some("9.1"))
            .expect("instance")
            .database_path;
        let c = rusqlite::Connection::open(db).unwrap();
        for i in 0..800 {
            c.execute(
                "INSERT INTO accounts (name) VALUES (?1)",
                [format!("account {i} {}", "z".repeat(i % 50 + 20))],
            )
            .unwrap();
        }
        s.create_backup(&admin, "crm-prod", "before the import", None)
            .expect("backup")
    })
    .await
    .unwrap();
    let deadline = Instant::now() + JOB_WAIT;
    loop {
        let st = server.state.clone();
        let now = tokio::task::spawn_blocking(move || {
            st.services.show_backup(&Actor::system(), b.id).unwrap()
        })
        .await
        .unwrap();
        if now.status == "completed" {
            break;
        }
        assert!(
            now.status != "failed" && Instant::now() < deadline,
            "{now:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every pack: two workers meeting the same chunk at once may both store it, and a pack
    // holding only such a second copy is never read, so damaging one pack is not enough.
    let mut packs = Vec::new();
    for dir in std::fs::read_dir(server.data_dir.join("backups/data")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            packs.push(f.unwrap().path());
        }
    }
    assert!(!packs.is_empty(), "the backup wrote packs");
    (b.id, packs)
}

async fn scenario(ui: &Ui, server: &TestServer) {
    let (id, packs) = backed_up(server).await;
    let pack_names: Vec<String> = packs
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for pack in &packs {
        let mut bytes = std::fs::read(pack).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x10;
        std::fs::write(pack, bytes).unwrap();
    }

    ui.sign_in("admin", &server.admin_password).await;
    ui.goto("/backups?instance=crm-prod").await;
    assert!(
        !ui.exists(&format!("#damaged-{id}")).await,
        "not marked before a verify"
    );
    assert!(ui.exists(&format!("#backup-{id} .restore-link")).await);
    ui.select("#verify-mode", "read_data").await;
    ui.click("#start-verify").await;
    let notice = ui.notice().await;
    assert!(
        notice.starts_with("Verifying 1 backup of crm-prod (read data) as job "),
        "{notice}"
    );
    let job: i64 = notice
        .trim_end_matches('.')
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The job shows in the jobs list like the others, until it has run.
    ui.poll_text(
        "/backups?instance=crm-prod",
        &format!("#job-{job} .col-state"),
        |s| s.contains("Succeeded"),
    )
    .await;
    assert_eq!(ui.text(&format!("#job-{job} .col-kind")).await, "Verify");
    // What the job recorded (said here, so a failure below is explained).
    let st = server.state.clone();
    let (found, result, backups) = tokio::task::spawn_blocking(move || {
        let s = &st.services;
        let a = Actor::system();
        (
            s.backup_verification(&a, id).unwrap(),
            s.show_job(&a, job).unwrap(),
            s.list_backups(&a, "crm-prod").unwrap(),
        )
    })
    .await
    .unwrap();
    assert!(
        found.damaged,
        "the verify found backup {id} damaged: {found:?}\njob: {result:?}\nbackups: {backups:?}"
    );
    ui.save_screenshot("verify-damaged").await;

    ui.c.execute(
        "document.getElementById('backups').scrollIntoView();",
        vec![],
    )
    .await
    .unwrap();
    ui.save_screenshot("verify-damaged-row").await;
    // The backup is Damaged, with what verify found; its Restore link is gone.
    assert_eq!(ui.text(&format!("#damaged-{id}")).await, "Damaged");
    let damage = ui.find(&format!("#backup-{id} .damage")).await;
    let text = damage.text().await.unwrap();
    let named = pack_names
        .iter()
        .find(|n| text.contains(&format!("pack {}…", &n[..12])))
        .unwrap_or_else(|| panic!("names a damaged pack: {text}"));
    let full = damage.attr("title").await.unwrap().unwrap_or_default();
    assert!(
        full.contains(named.as_str()),
        "the tooltip has the whole id: {full}"
    );
    assert!(!ui.exists(&format!("#backup-{id} .restore-link")).await);
    let alerts = ui.text("#alerts").await;
    assert!(alerts.contains("is damaged"), "{alerts}");
    // Going to the restore page anyway says why not.
    ui.goto(&format!("/backups/{id}/restore")).await;
    let page = ui.text("main").await;
    assert!(
        page.contains("This backup is damaged and cannot be restored"),
        "{page}"
    );

    // A bad sample percentage is refused on the page, with nothing started.
    ui.goto("/backups?instance=crm-prod").await;
    ui.select("#verify-mode", "sample").await;
    ui.c.execute(
        "document.getElementById('verify-sample').removeAttribute('min');",
        vec![],
    )
    .await
    .unwrap();
    ui.fill("#verify-sample", "0").await;
    ui.click("#start-verify").await;
    let error = ui.text(".error, #error, .form-error").await;
    assert!(error.contains("greater than 0"), "{error}");

    // Viewers see the mark but get no Verify form.
    let st = server.state.clone();
    tokio::task::spawn_blocking(move || {
        st.services
            .create_user(
                &Actor::system(),
                "vera",
                "viewer",
                Some("a-long-password-1"),
            )
            .unwrap()
    })
    .await
    .unwrap();
    ui.signed_out().await;
    ui.sign_in("vera", "a-long-password-1").await;
    ui.goto("/backups?instance=crm-prod").await;
    assert_eq!(ui.text(&format!("#damaged-{id}")).await, "Damaged");
    assert!(!ui.exists("#verify-form").await);
}
