//! The Work items tab in a real browser (headless Chromium through chromedriver, see
//! `browser_support`) against a real server on a manual clock, with requests accepted by an
//! administrator (auto-accept off): request a database refresh through the form (a missing
//! acknowledgment shows an error and creates nothing; a production target is offered only as
//! "not allowed"), accept it, reschedule it in a time zone, cancel it through the
//! confirmation page; then request another, move the clock past its window, let it run and
//! see "Succeeded" with the downtime, the safety backup, the scripts and the history. Forms
//! posted without the CSRF token change nothing; a Viewer sees the list and no forms.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use serde_json::json;
use steward_core::ManualClock;
use steward_server::Actor;
use steward_server::services::workitems::RefreshRequest;
use steward_server::testing::TestServer;

mod browser_support;
use browser_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workitems_tab_in_a_real_browser() {
    let driver = Driver::start().await;
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2031, 3, 14, 0, 30, 0).unwrap(),
    ));
    let server = TestServer::start_with(
        |c| {
            c.job_stage_pause_ms = 50;
            c.refresh_auto_accept = false;
        },
        Some(clock.clone()),
    )
    .await;
    let client = driver.browser().await;
    let ui = Ui {
        c: client.clone(),
        base: server.url.clone(),
    };
    // Run the scenarios in a task so that a failure still closes the browser below.
    let outcome = tokio::spawn(async move {
        for (name, kind) in [
            ("prod-a", "production"),
            ("sand-b", "sandbox"),
            ("prod-z", "production"),
        ] {
            server
                .state
                .run(move |s| s.create_instance(&Actor::system(), name, kind, None))
                .await
                .expect("create instance");
        }
        ui.sign_in("admin", &server.admin_password).await;
        ui.wait_path("/instances").await;
        request_reschedule_and_cancel(&ui, &server).await;
        a_refresh_runs_at_its_window(&ui, &server, &clock).await;
        forms_need_the_csrf_token_and_viewers_only_look(&ui, &server).await;
    })
    .await;
    let _ = client.close().await;
    drop(driver);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn work_item_count(server: &TestServer) -> usize {
    server
        .state
        .run(|s| s.list_work_items(&Actor::system(), None, None))
        .await
        .expect("list work items")
        .len()
}

/// Waits until the notice banner contains `expected` (the page before a form's redirect may
/// still show an older notice).
async fn notice_contains(ui: &Ui, expected: &str) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let now = ui.text_now("#notice").await;
        if let Some(n) = &now
            && n.contains(expected)
        {
            return n.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "expected a notice with {expected:?}, got {now:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Sets a `datetime-local` input (typing into one depends on the browser's locale).
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

/// Opens the request form for `prod-a` (through the source picker).
async fn open_form_for_prod_a(ui: &Ui) {
    ui.goto("/workitems").await;
    ui.click("#request-refresh").await;
    ui.wait_path("/workitems/refresh").await;
    ui.select("#pick-source", "prod-a").await;
    submit(ui, "#choose-source").await;
    ui.wait_path("/workitems/refresh?source=prod-a").await;
}

/// 1. Request a refresh (first without every acknowledgment), accept it, reschedule it in
///    Paris time, cancel it through the confirmation page.
async fn request_reschedule_and_cancel(ui: &Ui, server: &TestServer) {
    ui.goto("/workitems").await;
    assert!(ui.exists("#no-workitems").await, "an empty list says so");
    open_form_for_prod_a(ui).await;

    // Sandboxes are offered; a production instance is shown as not allowed; the source
    // itself is not a target.
    let target = ui.find("#refresh-target").await;
    let selected = target.prop("value").await.unwrap();
    assert_eq!(selected.as_deref(), Some("sand-b"));
    let prod = ui.find("#refresh-target option[value='prod-z']").await;
    assert!(prod.text().await.unwrap().contains("not allowed"));
    assert_eq!(
        prod.attr("disabled").await.unwrap().as_deref(),
        Some("true")
    );
    assert!(!ui.exists("#refresh-target option[value='prod-a']").await);
    assert!(ui.text("#refresh-at").await.contains("Latest"));

    // The default window start is the first whole hour after the lead time.
    let window = ui
        .find("#refresh-window")
        .await
        .prop("value")
        .await
        .unwrap();
    assert_eq!(window.as_deref(), Some("2031-03-15T01:00"));

    // Two of the three acknowledgments: refused, nothing created, the ticks kept.
    ui.click("#ack-erase").await;
    ui.click("#ack-unavailable").await;
    submit(ui, "#submit-refresh").await;
    let error = ui.text("#error").await;
    assert!(error.to_lowercase().contains("acknowledg"), "{error}");
    assert_eq!(work_item_count(server).await, 0, "nothing was created");
    assert!(ui.find("#ack-erase").await.is_selected().await.unwrap());
    assert!(!ui.find("#ack-documents").await.is_selected().await.unwrap());

    // A window inside the 24-hour lead time: refused with the earliest start.
    set_value(ui, "#refresh-window", "2031-03-14T12:00").await;
    ui.click("#ack-documents").await;
    submit(ui, "#submit-refresh").await;
    let error = ui.text("#error").await;
    assert!(error.contains("2031-03-15"), "{error}");
    assert_eq!(work_item_count(server).await, 0, "nothing was created");

    // All three, a valid window: submitted, back on the list.
    set_value(ui, "#refresh-window", "2031-03-15T06:00").await;
    submit(ui, "#submit-refresh").await;
    ui.wait_path("/workitems").await;
    let notice = notice_contains(ui, "work item #1").await;
    assert!(notice.contains("Submitted"), "{notice}");
    let row = ui.text("#workitem-1").await;
    for text in [
        "prod-a",
        "sand-b",
        "Latest",
        "2031-03-15 06:00",
        "Submitted",
        "admin",
    ] {
        assert!(row.contains(text), "{text:?} missing: {row}");
    }

    // A System Administrator accepts it on its page.
    ui.click("#workitem-1 .workitem-link").await;
    ui.wait_path("/workitems/1").await;
    submit(ui, "#accept").await;
    notice_contains(ui, "Accepted work item #1").await;
    assert_eq!(ui.text("#detail-status").await, "Request accepted");
    assert!(
        !ui.exists("#accept").await,
        "only Submitted items can be accepted"
    );

    // Reschedule: 09:30 in Paris on 16 March 2031 is 08:30 UTC (CET, UTC+1).
    set_value(ui, "#reschedule-window", "2031-03-16T09:30").await;
    ui.select("#reschedule-zone", "Europe/Paris").await;
    submit(ui, "#submit-reschedule").await;
    notice_contains(ui, "Rescheduled work item #1").await;
    assert_eq!(ui.text("#detail-window").await, "2031-03-16 08:30 UTC");
    // Without auto-accept, a rescheduled item waits for acceptance again.
    assert_eq!(ui.text("#detail-status").await, "Submitted");
    submit(ui, "#accept").await;
    notice_contains(ui, "Accepted work item #1").await;

    // Rescheduling into the lead time is refused and changes nothing.
    set_value(ui, "#reschedule-window", "2031-03-14T08:00").await;
    ui.select("#reschedule-zone", "UTC").await;
    submit(ui, "#submit-reschedule").await;
    let error = ui.text("#error").await;
    assert!(error.contains("2031-03-15"), "{error}");
    ui.goto("/workitems/1").await;
    assert_eq!(ui.text("#detail-window").await, "2031-03-16 08:30 UTC");
    let history = ui.text("#history-list").await;
    assert!(history.contains("Request accepted"), "{history}");

    // Cancel from the list, through the confirmation page.
    ui.goto("/workitems").await;
    ui.click("#workitem-1 .cancel-link").await;
    ui.wait_path("/workitems/1/cancel").await;
    let question = ui.text("#confirm-question").await;
    assert!(
        question.contains("sand-b") && question.contains("prod-a"),
        "{question}"
    );
    submit(ui, "#confirm-cancel").await;
    ui.wait_path("/workitems?instance=sand-b").await;
    notice_contains(ui, "Cancelled work item #1").await;
    assert!(
        ui.text("#workitem-1 .col-status")
            .await
            .contains("Cancelled")
    );
    assert!(!ui.exists("#workitem-1 .cancel-link").await);
    // A cancelled item has no reschedule form and cannot be cancelled again.
    ui.goto("/workitems/1/cancel").await;
    assert!(!ui.exists("#cancel-form").await);
    ui.goto("/workitems/1").await;
    assert!(!ui.exists("#reschedule-form").await);

    // The status filter.
    ui.goto("/workitems").await;
    ui.select("#filter-status", "succeeded").await;
    submit(ui, "#apply-filters").await;
    ui.wait_path("/workitems?status=succeeded&instance=").await;
    assert!(ui.exists("#no-workitems").await);
    ui.select("#filter-status", "cancelled").await;
    submit(ui, "#apply-filters").await;
    ui.wait_path("/workitems?status=cancelled&instance=").await;
    assert!(ui.exists("#workitem-1").await);
}

/// 2. Request a refresh, accept it, move the clock past its window, let the scheduler's tick
///    start it and see it succeed with the downtime, safety backup, scripts and history.
async fn a_refresh_runs_at_its_window(ui: &Ui, server: &TestServer, clock: &ManualClock) {
    // A restore point of prod-a to copy, rather than the latest.
    let backup = server
        .state
        .run(|s| s.create_backup(&Actor::system(), "prod-a", "before the refresh", None))
        .await
        .expect("back up prod-a");
    let deadline = std::time::Instant::now() + JOB_WAIT;
    loop {
        let id = backup.id;
        let b = server
            .state
            .run(move |s| s.show_backup(&Actor::system(), id))
            .await
            .expect("show backup");
        if b.status == "completed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "backup: {b:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    open_form_for_prod_a(ui).await;
    let point = ui.find("#refresh-at option:nth-child(2)").await;
    let label = point.text().await.unwrap();
    assert!(
        label.contains(&format!("backup {}", backup.id)) && label.contains("before the refresh"),
        "{label}"
    );
    point.click().await.expect("choose the restore point");
    set_value(ui, "#refresh-window", "2031-03-15T03:00").await;
    for ack in ["#ack-erase", "#ack-unavailable", "#ack-documents"] {
        ui.click(ack).await;
    }
    submit(ui, "#submit-refresh").await;
    ui.wait_path("/workitems").await;
    notice_contains(ui, "work item #2").await;
    ui.goto("/workitems/2").await;
    submit(ui, "#accept").await;
    notice_contains(ui, "Accepted work item #2").await;
    assert!(
        ui.text("#no-scripts")
            .await
            .contains("No scripts have run yet")
    );

    clock.set(Utc.with_ymd_and_hms(2031, 3, 15, 3, 1, 0).unwrap());
    server
        .state
        .run(|s| s.tick_workitems())
        .await
        .expect("tick work items");
    // The refresh job runs beside the server (a safety backup, a copy of the source, the
    // swap and the scripts); wait for it, then look at the page.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let w = server
            .state
            .run(|s| s.show_work_item(&Actor::system(), 2))
            .await
            .expect("show work item");
        if matches!(w.status.as_str(), "succeeded" | "failed") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the refresh did not finish: {w:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    // A day has passed: the browser session has expired; sign in again.
    ui.goto("/workitems/2").await;
    if ui.path().await.starts_with("/login") {
        ui.sign_in("admin", &server.admin_password).await;
        ui.wait_path("/instances").await;
        ui.goto("/workitems/2").await;
    }
    let status = ui.text("#detail-status").await;
    let error = ui.text_now("#detail-error").await;
    assert_eq!(status, "Succeeded", "error: {error:?}");
    assert!(ui.text("#detail-point").await.starts_with("2031-03-14 00:"));
    let copied = ui.text("#detail-copied").await;
    assert!(
        copied.contains(&format!("(backup {})", backup.id)),
        "{copied}"
    );
    let downtime = ui.text("#detail-downtime").await;
    assert!(
        downtime.contains("unavailable → available again") && !downtime.starts_with('—'),
        "{downtime}"
    );
    let safety = ui.find("#detail-safety-backup a").await;
    assert!(
        safety
            .attr("href")
            .await
            .unwrap()
            .unwrap()
            .starts_with("/backups?instance=sand-b#backup-")
    );
    assert!(ui.exists("#script-list .script-row").await, "scripts ran");
    let history = ui.text("#history-list").await;
    for text in ["Submitted", "Request accepted", "In progress", "Succeeded"] {
        assert!(history.contains(text), "{text:?} missing: {history}");
    }
    assert!(
        !ui.exists("#cancel-link").await,
        "a finished item cannot be cancelled"
    );
    ui.goto("/workitems?instance=sand-b").await;
    let row = ui.text("#workitem-2").await;
    assert!(row.contains("Succeeded") && row.contains("down "), "{row}");
}

/// 3. Every work item form refuses a post without the CSRF token and changes nothing; a
///    Viewer sees the work items but no request, reschedule, cancel or accept controls.
async fn forms_need_the_csrf_token_and_viewers_only_look(ui: &Ui, server: &TestServer) {
    let before = work_item_count(server).await;
    ui.goto("/workitems").await;
    for (path, body) in [
        (
            "/workitems/refresh",
            json!({"source": "prod-a", "target": "sand-b", "at": "latest",
                   "window_start": "2031-03-20T06:00", "time_zone": "UTC",
                   "ack_erase": "yes", "ack_unavailable": "yes", "ack_documents": "yes"}),
        ),
        ("/workitems/2/cancel", json!({})),
        (
            "/workitems/2/reschedule",
            json!({"window_start": "2031-03-21T06:00", "time_zone": "UTC", "at": "latest"}),
        ),
        ("/workitems/2/accept", json!({})),
    ] {
        let answer =
            ui.c.execute(
                "return fetch(arguments[0], {method: 'POST', body: new URLSearchParams(arguments[1])})
                   .then(async r => [r.status, await r.text()]);",
                vec![json!(path), body],
            )
            .await
            .expect("fetch");
        assert_eq!(answer[0], 403, "{path}");
        assert!(answer[1].as_str().unwrap().contains(CSRF_MESSAGE), "{path}");
    }
    assert_eq!(work_item_count(server).await, before, "nothing was created");
    let w = server
        .state
        .run(|s| s.show_work_item(&Actor::system(), 2))
        .await
        .expect("show");
    assert_eq!(w.status, "succeeded", "nothing changed");

    server
        .state
        .run(|s| {
            s.create_user(
                &Actor::system(),
                "vera",
                "viewer",
                Some("a-long-password-1"),
            )
        })
        .await
        .expect("create viewer");
    // A request that can still be changed, for the Viewer to look at.
    let open = server
        .state
        .run(|s| {
            s.request_refresh(
                &Actor::system(),
                &RefreshRequest {
                    source: "prod-a".into(),
                    target: "sand-b".into(),
                    at: None,
                    window_start: Utc.with_ymd_and_hms(2031, 3, 20, 6, 0, 0).unwrap(),
                    acknowledge: true,
                },
            )
        })
        .await
        .expect("request a refresh");
    ui.signed_out().await;
    ui.sign_in("vera", "a-long-password-1").await;
    ui.wait_path("/instances").await;
    ui.goto("/workitems").await;
    assert!(ui.exists("#workitem-1").await && ui.exists("#workitem-2").await);
    assert!(!ui.exists("#request-refresh").await);
    assert!(ui.text("#read-only").await.contains("cannot request"));
    ui.goto("/workitems/refresh").await;
    assert!(!ui.exists("#refresh-form").await, "a Viewer gets no form");
    ui.goto("/workitems/1/cancel").await;
    assert!(!ui.exists("#cancel-form").await);
    ui.goto("/workitems").await;
    let row = format!("#workitem-{}", open.id);
    assert!(ui.text(&row).await.contains("Submitted"));
    for css in [".reschedule-link", ".cancel-link"] {
        assert!(
            !ui.exists(&format!("{row} {css}")).await,
            "a Viewer sees no {css}"
        );
    }
    ui.goto(&format!("/workitems/{}", open.id)).await;
    assert!(ui.exists("#workitem-details").await);
    for css in [
        "#accept",
        "#reschedule-form",
        "#reschedule-link",
        "#cancel-link",
    ] {
        assert!(!ui.exists(css).await, "a Viewer sees no {css}");
    }
}
