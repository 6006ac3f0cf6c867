//! Restore to a moment in the Backup & Restore tab, in a real browser (headless Chromium
//! through chromedriver, see `browser_support`) against a real server with continuous capture
//! on, real SQLite instance databases and a real backup repository: the tab shows the
//! restorable range; a moment typed in a time zone is reviewed, confirmed, and the sandbox then
//! holds exactly what the production instance had committed at that moment; every refusal
//! (a moment in the future, before the range, a malformed time, a production target, a form
//! without its CSRF token) is shown and starts nothing; the restore leaves a gap in the
//! target's range, named with its reason; Viewers see the range and no form.

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use steward_core::clock::display_time;
use steward_server::Actor;
use steward_server::testing::TestServer;

mod browser_support;
use browser_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_to_a_moment_from_the_backup_tab_in_a_real_browser() {
    let driver = Driver::start().await;
    let server = TestServer::start_with(
        |c| {
            c.continuous_capture = true;
            c.capture_interval_ms = 20;
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

/// Runs `f` on the services, off the async threads.
async fn services<T: Send + 'static>(
    server: &TestServer,
    f: impl FnOnce(&steward_server::Services) -> T + Send + 'static,
) -> T {
    let st = server.state.clone();
    tokio::task::spawn_blocking(move || f(&st.services))
        .await
        .unwrap()
}

/// Waits until capture confirmed `name` up to at least `at`.
async fn wait_through(server: &TestServer, name: &'static str, at: DateTime<Utc>) {
    let deadline = Instant::now() + JOB_WAIT;
    loop {
        let r = services(server, move |s| {
            s.backup_range(&Actor::system(), name).unwrap()
        })
        .await;
        if r.latest.is_some_and(|l| l >= at) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "capture of {name} never reached {at}: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The accounts, in id order: what a restore must reproduce exactly.
fn accounts(db: &str) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c
        .prepare("SELECT id, name FROM accounts ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn write_batch(db: &str, batch: &str, n: usize) {
    let mut c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    let tx = c.transaction().unwrap();
    for i in 0..n {
        tx.execute(
            "INSERT INTO accounts (name) VALUES (?1)",
            [format!("{batch} account {i}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// The restore-at jobs queued so far.
async fn restore_at_jobs(server: &TestServer) -> usize {
    services(server, |s| {
        s.list_jobs(&Actor::system(), None, None)
            .unwrap()
            .iter()
            .filter(|j| j.kind == "restore_at")
            .count()
    })
    .await
}

/// Fills the Restore to a moment form and asks for the review.
async fn ask_review(ui: &Ui, moment: &str, zone: &str, target: &str) {
    ui.find("#restore-at-moment").await;
    ui.c.execute(
        "document.getElementById('restore-at-moment').value = arguments[0];",
        vec![serde_json::json!(moment)],
    )
    .await
    .unwrap();
    ui.select("#restore-at-zone", zone).await;
    ui.select("#restore-at-target", target).await;
    ui.click("#restore-at-review").await;
}

async fn scenario(ui: &Ui, server: &TestServer) {
    let (prod, sand) = services(server, |s| {
        let a = Actor::system();
        let p = s
            .create_instance(&a, "crm-prod", "production", Some("9.1"))
            .unwrap();
        let d = s
            .create_instance(&a, "crm-sand", "sandbox", Some("9.1"))
            .unwrap();
        (p.database_path, d.database_path)
    })
    .await;
    wait_through(server, "crm-prod", Utc::now()).await;

    // The first batch, committed and captured; the moment: a whole second (what the form
    // takes) at least 300 ms after the commit, so capture has read it by then.
    let seeded = accounts(&prod).len();
    write_batch(&prod, "first", 5);
    let committed = Utc::now();
    let moment = (committed + TimeDelta::milliseconds(300))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap()
        + TimeDelta::seconds(1);
    let first = accounts(&prod);
    assert_eq!(first.len(), seeded + 5);
    wait_through(server, "crm-prod", moment).await;
    while Utc::now() <= moment + TimeDelta::milliseconds(50) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The second batch, after the moment.
    write_batch(&prod, "second", 7);
    assert_eq!(accounts(&prod).len(), seeded + 12);
    wait_through(server, "crm-prod", Utc::now()).await;
    let range = services(server, |s| {
        s.backup_range(&Actor::system(), "crm-prod").unwrap()
    })
    .await;

    ui.sign_in("admin", &server.admin_password).await;
    ui.goto("/backups?instance=crm-prod").await;
    let shown = ui.text("#pitr-range").await;
    let earliest = display_time(&range.earliest.unwrap()).to_string();
    assert!(
        shown.starts_with(&format!("Restorable from {earliest} to ")),
        "{shown}"
    );
    let spans = ui.text("#pitr-spans").await;
    assert!(spans.contains(&earliest), "{spans}");
    assert!(
        spans.contains("9.1") && spans.contains("Running"),
        "{spans}"
    );
    assert!(
        !ui.exists("#pitr-gaps").await,
        "no gap in a range captured without a stop"
    );
    // The form proposes the latest moment and the sandbox; production is not allowed.
    let proposed = ui
        .find("#restore-at-moment")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(proposed.starts_with(&Utc::now().format("%Y-%m-%d").to_string()));
    let targets = ui.text("#restore-at-target").await;
    assert!(targets.contains("crm-sand (sandbox, 9.1)"), "{targets}");
    assert!(
        targets.contains("crm-prod (production, 9.1) — "),
        "{targets}"
    );
    ui.c.execute(
        "document.getElementById('restore-at').scrollIntoView();",
        vec![],
    )
    .await
    .unwrap();
    ui.save_screenshot("pitr-tab").await;

    // Refusals: each on the form, nothing started.
    let local = datetime_local;
    let future = Utc::now() + TimeDelta::hours(1);
    ask_review(ui, &local(future), "UTC", "crm-sand").await;
    let error = ui.text("#restore-at-error").await;
    assert!(
        error.contains(&format!("{} is in the future", display_time(&future))),
        "{error}"
    );
    assert!(ui.path().await.starts_with("/backups/restore-at/review?"));
    assert_eq!(
        ui.find("#restore-at-moment")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(local(future).as_str()),
        "the form keeps what was typed"
    );
    ui.save_screenshot("pitr-refused").await;

    let before = range.earliest.unwrap() - TimeDelta::hours(1);
    ask_review(ui, &local(before), "UTC", "crm-sand").await;
    let error = ui.text("#restore-at-error").await;
    assert!(
        error.contains("is outside the restorable range of crm-prod: from "),
        "{error}"
    );

    ask_review(ui, &local(moment), "UTC", "crm-prod").await;
    let error = ui.text("#restore-at-error").await;
    assert!(
        error.starts_with("crm-prod is a production instance"),
        "{error}"
    );

    ui.goto(
        "/backups/restore-at/review?instance=crm-prod&at=tomorrow&time_zone=UTC&target=crm-sand",
    )
    .await;
    let error = ui.text("#restore-at-error").await;
    assert!(
        error.starts_with("The time \"tomorrow\" is not a time"),
        "{error}"
    );
    assert_eq!(restore_at_jobs(server).await, 0, "no refusal started a job");

    // The moment, typed in Paris time: the review says what will happen.
    let paris = moment.with_timezone(&chrono_tz::Europe::Paris);
    ui.goto("/backups?instance=crm-prod").await;
    ask_review(
        ui,
        &paris.format("%Y-%m-%dT%H:%M:%S").to_string(),
        "Europe/Paris",
        "crm-sand",
    )
    .await;
    let shown_moment = display_time(&moment).to_string();
    assert_eq!(
        ui.text("h1").await,
        format!("Restore crm-prod as of {shown_moment} into crm-sand")
    );
    let reviewed = ui.text("#review-moment").await;
    assert!(
        reviewed.starts_with(&shown_moment) && reviewed.contains("Europe/Paris"),
        "{reviewed}"
    );
    assert_eq!(ui.text("#review-release").await, "9.1");
    let happens = ui.text("#what-happens").await;
    for said in [
        "The database of crm-sand is replaced by crm-prod's database exactly as it was at the last commit at or before",
        "crm-sand stays on release 9.1",
        "Its documents folder is untouched.",
        "crm-sand is unavailable until the restore completes.",
    ] {
        assert!(happens.contains(said), "{said:?} in {happens}");
    }
    ui.save_screenshot("pitr-review").await;

    // Without its CSRF token the confirmation is refused and starts nothing.
    ui.c.execute(
        "document.querySelector('#restore-at-confirm-form input[name=csrf]').remove();",
        vec![],
    )
    .await
    .unwrap();
    ui.click("#confirm-restore-at").await;
    let page = ui.text("main").await;
    assert!(page.contains(CSRF_MESSAGE), "{page}");
    assert_eq!(restore_at_jobs(server).await, 0);

    // Cancel goes back to the tab; Confirm starts the restore.
    ui.c.back().await.unwrap();
    ui.c.refresh().await.unwrap();
    ui.click("#cancel-restore-at").await;
    ui.wait_path("/backups?instance=crm-prod").await;
    assert_eq!(restore_at_jobs(server).await, 0);
    ui.c.back().await.unwrap();
    ui.click("#confirm-restore-at").await;
    let notice = ui.notice().await;
    let prefix = format!("Restoring crm-prod as of {shown_moment} into crm-sand as job ");
    assert!(notice.starts_with(&prefix), "{notice}");
    let job: i64 = notice[prefix.len()..]
        .trim_end_matches('.')
        .parse()
        .unwrap();
    assert_eq!(ui.path().await, "/backups?instance=crm-sand");
    ui.poll_text(
        "/backups?instance=crm-sand",
        &format!("#job-{job} .col-state"),
        |s| s.contains("Succeeded") || s.contains("Failed"),
    )
    .await;
    let state = ui.text(&format!("#job-{job} .col-state")).await;
    assert!(state.contains("Succeeded"), "{state}");
    assert_eq!(
        accounts(&sand),
        first,
        "the sandbox holds exactly what crm-prod had committed at the moment"
    );
    assert_eq!(
        accounts(&prod).len(),
        seeded + 12,
        "the source is untouched"
    );

    // The restore ended the sandbox's capture: its range names the gap, once capture has
    // started again.
    let deadline = Instant::now() + JOB_WAIT;
    loop {
        ui.goto("/backups?instance=crm-sand").await;
        if let Some(gaps) = ui.text_now("#pitr-gaps").await {
            assert!(gaps.contains("the instance was restored"), "{gaps}");
            break;
        }
        assert!(Instant::now() < deadline, "no gap shown for crm-sand");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Viewers see the range, and no form.
    services(server, |s| {
        s.create_user(
            &Actor::system(),
            "vera",
            "viewer",
            Some("a-long-password-1"),
        )
        .unwrap()
    })
    .await;
    ui.signed_out().await;
    ui.sign_in("vera", "a-long-password-1").await;
    ui.goto("/backups?instance=crm-prod").await;
    assert!(ui.text("#pitr-range").await.starts_with("Restorable from "));
    assert!(ui.exists("#pitr-spans").await);
    assert!(!ui.exists("#restore-at-form").await);
    ui.goto(&format!(
        "/backups/restore-at/review?instance=crm-prod&at={}&time_zone=UTC&target=crm-sand",
        local(moment)
    ))
    .await;
    assert!(!ui.exists("#confirm-restore-at").await);
    assert_eq!(restore_at_jobs(server).await, 1);
}
