//! A refresh to a moment through the Work items tab, in a real browser (headless Chromium
//! through chromedriver, see `browser_support`) against a real server with continuous capture
//! on, real SQLite instance databases and a real backup repository: for a captured source the
//! request form shows the restorable range and offers "Latest" or "A moment" (to the second, in
//! a time zone) instead of a list of backups; a moment in the future is refused on the form
//! with the typed values kept and nothing created; the moment typed in Paris time is accepted;
//! the reschedule form refuses a moment before the range, naming it, and changes nothing; the
//! refresh runs and the sandbox holds exactly what the source had committed at that moment;
//! the item's page names the commit copied.

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Timelike, Utc};
use serde_json::json;
use steward_core::clock::display_time;
use steward_server::Actor;
use steward_server::testing::TestServer;

mod browser_support;
use browser_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_to_a_moment_from_the_work_items_tab_in_a_real_browser() {
    let driver = Driver::start().await;
    // No post-refresh scripts: the copy must equal the source row by row.
    let scripts = tempfile::tempdir().unwrap();
    let dir = scripts.path().to_owned();
    let server = TestServer::start_with(
        move |c| {
            c.continuous_capture = true;
            c.capture_interval_ms = 20;
            c.refresh_lead_hours = 0;
            c.system_backup_time = "off".into();
            c.post_refresh_scripts_dir = Some(dir);
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
    drop(scripts);
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

/// The accounts, in id order: what the refresh must reproduce exactly.
fn accounts(db: &str) -> Vec<(i64, String)> {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
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

async fn work_item_count(server: &TestServer) -> usize {
    services(server, |s| {
        s.list_work_items(&Actor::system(), None, None)
            .unwrap()
            .len()
    })
    .await
}

/// Sets an input's value (typing into a `datetime-local` depends on the browser's locale).
async fn set_value(ui: &Ui, css: &str, value: &str) {
    ui.find(css).await;
    ui.c.execute(
        "document.querySelector(arguments[0]).value = arguments[1];",
        vec![json!(css), json!(value)],
    )
    .await
    .expect("set value");
}

/// Clicks the submit button `css` and waits until the browser shows the next page (a form
/// answered with the same address must not be mistaken for the page before it).
async fn submit(ui: &Ui, css: &str) {
    ui.c.execute("window.__stewardBeforeSubmit = true;", vec![])
        .await
        .expect("mark the page");
    ui.click(css).await;
    let deadline = Instant::now() + WAIT;
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
        assert!(Instant::now() < deadline, "{css}: no new page came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn value(ui: &Ui, css: &str) -> String {
    ui.find(css)
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// Fills the moment part of the request form and submits it.
async fn request(ui: &Ui, moment: &str, zone: &str, window: &str) {
    ui.click("#refresh-at-moment-choice").await;
    set_value(ui, "#refresh-at-moment", moment).await;
    ui.select("#refresh-at-zone", zone).await;
    set_value(ui, "#refresh-window", window).await;
    ui.select("#refresh-zone", "UTC").await;
    for ack in ["#ack-erase", "#ack-unavailable", "#ack-documents"] {
        if !ui.find(ack).await.is_selected().await.unwrap() {
            ui.click(ack).await;
        }
    }
    submit(ui, "#submit-refresh").await;
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
    let earliest = display_time(&range.earliest.unwrap()).to_string();

    // The request form for the captured source: its range, and Latest or A moment; no list
    // of backups.
    ui.sign_in("admin", &server.admin_password).await;
    ui.goto("/workitems/refresh?source=crm-prod").await;
    let shown = ui.text("#pitr-range").await;
    assert!(
        shown.starts_with(&format!("Restorable from {earliest} to ")),
        "{shown}"
    );
    let spans = ui.text("#pitr-spans").await;
    assert!(
        spans.contains(&earliest) && spans.contains("Running"),
        "{spans}"
    );
    assert!(!ui.exists("#pitr-gaps").await, "no gap without a stop");
    assert!(!ui.exists("#refresh-at").await, "no backup select");
    assert!(
        ui.find("#refresh-at-latest")
            .await
            .is_selected()
            .await
            .unwrap(),
        "Latest is proposed"
    );
    let proposed = value(ui, "#refresh-at-moment").await;
    assert!(
        proposed.starts_with(&Utc::now().format("%Y-%m-%d").to_string()),
        "the latest captured moment is proposed: {proposed}"
    );
    assert_eq!(value(ui, "#refresh-at-zone").await, "UTC");
    ui.c.execute(
        "document.getElementById('refresh-point').scrollIntoView();",
        vec![],
    )
    .await
    .unwrap();
    ui.save_screenshot("workitems-pitr-form").await;

    // The window: the next whole minute at least 10 s away (the window input takes minutes).
    let now = Utc::now();
    let mut window =
        now.with_second(0).unwrap().with_nanosecond(0).unwrap() + TimeDelta::minutes(1);
    if window - now < TimeDelta::seconds(10) {
        window += TimeDelta::minutes(1);
    }
    let window_input = window.format("%Y-%m-%dT%H:%M").to_string();

    // A moment in the future: refused on the form, what was typed kept, nothing created.
    let local = datetime_local;
    let future = (Utc::now() + TimeDelta::hours(1))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap();
    request(ui, &local(future), "UTC", &window_input).await;
    let error = ui.text("#error").await;
    assert!(
        error.contains(&format!("{} is in the future", display_time(&future))),
        "{error}"
    );
    assert_eq!(work_item_count(server).await, 0, "nothing was created");
    assert_eq!(value(ui, "#refresh-at-moment").await, local(future));
    assert!(
        ui.find("#refresh-at-moment-choice")
            .await
            .is_selected()
            .await
            .unwrap(),
        "A moment stays chosen"
    );
    assert!(ui.find("#ack-documents").await.is_selected().await.unwrap());
    assert!(ui.exists("#pitr-range").await, "the range is shown again");
    ui.save_screenshot("workitems-pitr-refused").await;

    // The moment, typed in Paris time: accepted.
    let paris = moment.with_timezone(&chrono_tz::Europe::Paris);
    request(
        ui,
        &paris.format("%Y-%m-%dT%H:%M:%S").to_string(),
        "Europe/Paris",
        &window_input,
    )
    .await;
    ui.wait_path("/workitems").await;
    let notice = ui.notice().await;
    assert!(
        notice.contains("Requested the refresh of crm-sand from crm-prod as work item #1"),
        "{notice}"
    );
    let item = services(server, |s| s.show_work_item(&Actor::system(), 1).unwrap()).await;
    assert_eq!(item.point_in_time, Some(moment), "{item:?}");
    assert!(
        item.restore_point.is_none(),
        "no backup is copied: {item:?}"
    );
    let chain = item
        .moment
        .as_ref()
        .expect("a moment from capture")
        .chain_id;

    // Its page: the moment to the second, and what will be copied.
    ui.goto("/workitems/1").await;
    let shown_moment = display_time(&moment).to_string();
    assert_eq!(ui.text("#detail-point").await, shown_moment);
    let copies = ui.text("#detail-copied").await;
    assert_eq!(
        copies,
        format!(
            "The last commit at or before {shown_moment} (continuous capture, chain {chain}), when the window starts"
        )
    );
    assert!(ui.text("#workitem-details").await.contains("Will copy"));

    // The reschedule form offers the range too; a moment before it is refused, naming it,
    // and changes nothing.
    assert!(
        ui.find("#reschedule-at-moment-choice")
            .await
            .is_selected()
            .await
            .unwrap()
    );
    assert_eq!(value(ui, "#reschedule-at-moment").await, local(moment));
    assert_eq!(value(ui, "#reschedule-window").await, window_input);
    let before = (range.earliest.unwrap() - TimeDelta::hours(1))
        .duration_trunc(TimeDelta::seconds(1))
        .unwrap();
    set_value(ui, "#reschedule-at-moment", &local(before)).await;
    submit(ui, "#submit-reschedule").await;
    let error = ui.text("#error").await;
    assert!(
        error.contains(&format!(
            "{} is outside the restorable range of crm-prod: from {earliest} to ",
            display_time(&before)
        )),
        "{error}"
    );
    assert_eq!(value(ui, "#reschedule-at-moment").await, local(before));
    let unchanged = services(server, |s| s.show_work_item(&Actor::system(), 1).unwrap()).await;
    assert_eq!(unchanged.point_in_time, Some(moment));
    assert_eq!(unchanged.history.len(), item.history.len());
    ui.c.execute(
        "document.getElementById('reschedule').scrollIntoView();",
        vec![],
    )
    .await
    .unwrap();
    ui.save_screenshot("workitems-pitr-reschedule-refused")
        .await;

    // The window opens: the scheduler starts the refresh; the sandbox then holds exactly what
    // crm-prod had committed at the moment.
    while Utc::now() <= window {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = services(server, |s| s.start_due_work_items().unwrap()).await;
    assert_eq!(started, [1]);
    let done = ui
        .poll_text("/workitems/1", "#detail-status", |s| {
            s.contains("Succeeded") || s.contains("Failed")
        })
        .await;
    assert!(done.contains("Succeeded"), "{done}");
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
    let item = services(server, |s| s.show_work_item(&Actor::system(), 1).unwrap()).await;
    let commit = item
        .moment
        .as_ref()
        .unwrap()
        .commit_at
        .expect("the commit copied");
    assert!(
        committed - TimeDelta::seconds(1) <= commit && commit <= moment,
        "{item:?}"
    );
    let copied = ui.text("#detail-copied").await;
    assert_eq!(
        copied,
        format!(
            "{}: the last commit at or before {shown_moment} (continuous capture, chain {chain})",
            display_time(&commit)
        )
    );
    assert!(!copied.contains("backup"));
    assert!(ui.text("#workitem-details").await.contains("Copied"));
    ui.save_screenshot("workitems-pitr-done").await;
}
