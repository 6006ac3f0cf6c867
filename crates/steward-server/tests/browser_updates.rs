//! The Updates tab in a real browser (headless Chromium through chromedriver, see
//! `browser_support`): schedule an update with the form in a time zone, a Delegated Admin
//! refused the approval and rescheduling instead, a System Administrator approving it, the
//! window opening on the manual clock and the update running to "Updated successfully" with
//! its stages and timeline; "Update now" on a sandbox; the production confirmation page; a
//! rehearsal attached to an update; cancel through its confirmation page.
//!
//! The clock is set to November 2017, when release 8.2 is still supported (n-1), so nothing
//! is mandatory and the scenarios decide every update themselves.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use serde_json::{Value, json};
use steward_core::ManualClock;
use steward_server::Actor;
use steward_server::testing::TestServer;

mod browser_support;
use browser_support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_updates_tab_in_a_real_browser() {
    let driver = Driver::start().await;
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2017, 11, 1, 8, 0, 0).unwrap(),
    ));
    // Every job stage pauses long enough for the page to show an update in progress.
    let server = TestServer::start_with(|c| c.job_stage_pause_ms = 700, Some(clock.clone())).await;
    let client = driver.browser().await;
    let ui = Ui {
        c: client.clone(),
        base: server.url.clone(),
    };
    let outcome = tokio::spawn(async move {
        setup(&server).await;
        // The administrator stays signed in from here on.
        schedule_refuse_reschedule_approve_and_run(&ui, &server, &clock).await;
        update_a_sandbox_now(&ui).await;
        production_needs_confirmation_rehearse_and_cancel(&ui).await;
        change_the_policy(&ui).await;
    })
    .await;
    let _ = client.close().await;
    drop(driver);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

const DORA_PASSWORD: &str = "a-long-password-dora";

async fn setup(server: &TestServer) {
    server
        .state
        .run(|s| {
            s.create_user(
                &Actor::system(),
                "dora",
                "delegated_admin",
                Some(DORA_PASSWORD),
            )?;
            for (name, kind) in [
                ("crm-prod", "production"),
                ("crm-sbx", "sandbox"),
                ("crm-live", "production"),
            ] {
                s.create_instance(&Actor::system(), name, kind, Some("8.2"))?;
            }
            Ok(())
        })
        .await
        .expect("users and instances");
}

/// Sets a form control's value (datetime-local inputs take no typing that works in every
/// locale).
async fn set_value(ui: &Ui, css: &str, value: &str) {
    ui.find(css).await;
    ui.c.execute(
        "document.querySelector(arguments[0]).value = arguments[1];",
        vec![json!(css), json!(value)],
    )
    .await
    .expect("set value");
}

/// POSTs a form to `path` from the page with its CSRF token (as a crafted request would),
/// and returns the answer's status and HTML.
async fn post_from_page(ui: &Ui, path: &str, fields: Value) -> (u64, String) {
    let answer =
        ui.c.execute_async(
            "const [path, fields, done] = arguments;
             const csrf = document.querySelector('input[name=csrf]').value;
             fetch(path, {method: 'POST', redirect: 'manual',
               body: new URLSearchParams({...fields, csrf})})
               .then(r => r.text().then(t => done([r.status, t])));",
            vec![json!(path), fields],
        )
        .await
        .expect("fetch");
    (
        answer[0].as_u64().expect("status"),
        answer[1].as_str().expect("html").to_owned(),
    )
}

/// Saves what the browser shows, for people looking at a failed or changed run.
async fn screenshot(ui: &Ui, name: &str, at: &str) {
    ui.c.execute(
        "document.querySelector(arguments[0]).scrollIntoView();",
        vec![json!(at)],
    )
    .await
    .expect("scroll");
    ui.save_screenshot(&format!("updates-{name}")).await;
}

async fn fleet_cell(ui: &Ui, instance: &str, col: &str) -> String {
    ui.goto("/updates").await;
    ui.text(&format!("#fleet-{instance} .col-{col}")).await
}

/// 1. Schedule through the form (bad input first), a Delegated Admin is refused the
///    approval and reschedules, the administrator approves, the window opens and the update
///    runs to "Updated successfully".
async fn schedule_refuse_reschedule_approve_and_run(
    ui: &Ui,
    server: &TestServer,
    clock: &ManualClock,
) {
    ui.sign_in("admin", &server.admin_password).await;
    ui.wait_path("/instances").await;
    ui.click("#nav-updates").await;
    ui.wait_path("/updates").await;
    assert_eq!(ui.text("#fleet-crm-prod .col-release").await, "8.2");
    let available = ui.text("#fleet-crm-prod .col-available").await;
    assert!(available.contains("Update is Available"), "{available}");
    assert!(available.contains("9.0, 9.1"), "{available}");
    assert_eq!(
        ui.text("#fleet-crm-prod .col-support").await,
        "Supported (n-1)"
    );
    assert_eq!(ui.text("#fleet-crm-prod .col-status").await, "—");

    ui.click("#fleet-crm-prod .col-name a").await;
    ui.wait_path("/updates/crm-prod").await;
    assert_eq!(ui.text("#update-available").await, "Update is Available");
    let targets = ui.text("#eligible-targets").await;
    assert!(
        targets.contains("9.0") && targets.contains("9.1"),
        "{targets}"
    );

    // A window in the past: refused with the reason, nothing scheduled, the form kept.
    ui.select("#schedule-target", "9.0").await;
    set_value(ui, "#schedule-preferred", "2017-10-20T22:00").await;
    set_value(ui, "#schedule-alternate", "2017-11-17T22:00").await;
    ui.click("#schedule-update").await;
    let error = ui.text("#error").await;
    assert!(error.contains("in the past"), "{error}");
    assert!(ui.exists("#schedule-form").await, "still nothing scheduled");
    assert_eq!(
        ui.find("#schedule-alternate")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("2017-11-17T22:00"),
        "the form keeps what was typed"
    );
    let o = server
        .state
        .run(|s| s.update_overview(&Actor::system(), "crm-prod"))
        .await
        .unwrap();
    assert!(o.current.is_none());

    // Paris time (UTC+1 in November), stored in UTC.
    ui.select("#schedule-target", "9.0").await;
    set_value(ui, "#schedule-preferred", "2017-11-10T22:00").await;
    set_value(ui, "#schedule-alternate", "2017-11-17T22:00").await;
    ui.select("#schedule-zone", "Europe/Paris").await;
    ui.click("#schedule-update").await;
    ui.wait_path("/updates/crm-prod?tz=Europe%2FParis").await;
    assert!(
        ui.notice()
            .await
            .contains("Scheduled the update of crm-prod to 9.0")
    );
    assert_eq!(
        ui.text("#update-status").await,
        "Scheduled — awaiting approval"
    );
    let preferred = ui.text("#preferred-window").await;
    assert!(
        preferred.contains("2017-11-10 21:00 UTC → 2017-11-11 09:00 UTC"),
        "12 hours, in UTC: {preferred}"
    );
    assert!(preferred.contains("2017-11-10 22:00 CET"), "{preferred}");
    assert!(ui.exists("#approve-update").await);
    screenshot(ui, "scheduled", "#current-update").await;
    ui.signed_out().await;

    // A Delegated Admin: no Approve Update, and why; a crafted approval is refused.
    ui.sign_in("dora", DORA_PASSWORD).await;
    ui.wait_path("/instances").await;
    ui.goto("/updates/crm-prod").await;
    assert!(!ui.exists("#approve-update").await);
    let why = ui.text("#approve-refused").await;
    assert!(
        why.contains("Only System Administrators can approve updates")
            && why.contains("Delegated Admin"),
        "{why}"
    );
    let (status, html) = post_from_page(ui, "/updates/crm-prod/approve", json!({})).await;
    assert_eq!(status, 403, "{html}");
    assert!(html.contains("may not approve updates"), "{html}");
    assert!(html.contains("id=\"error\""), "in the error banner");
    ui.goto("/updates").await;
    assert!(
        !ui.exists("#policy-form").await,
        "only System Administrators change the policy"
    );
    ui.goto("/updates/crm-prod").await;
    // She reschedules instead (in UTC this time).
    ui.click("#reschedule-link").await;
    ui.wait_path("/updates/crm-prod/reschedule").await;
    assert_eq!(
        ui.find("#reschedule-preferred")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("2017-11-10T21:00"),
        "the current window, in UTC"
    );
    set_value(ui, "#reschedule-preferred", "2017-11-12T22:00").await;
    set_value(ui, "#reschedule-alternate", "2017-11-13T04:00").await;
    ui.click("#confirm-reschedule").await;
    let error = ui.text("#error").await;
    assert!(error.contains("overlaps"), "{error}");
    set_value(ui, "#reschedule-alternate", "2017-11-19T22:00").await;
    ui.click("#confirm-reschedule").await;
    ui.wait_path("/updates/crm-prod").await;
    assert!(
        ui.notice()
            .await
            .contains("Rescheduled the update of crm-prod")
    );
    assert!(
        ui.text("#preferred-window")
            .await
            .contains("2017-11-12 22:00 UTC")
    );
    let timeline = ui.text("#current-update .timeline").await;
    assert!(
        timeline.contains("Rescheduled")
            && timeline.contains("preferred: 2017-11-10 21:00 UTC → 2017-11-12 22:00 UTC"),
        "{timeline}"
    );
    ui.signed_out().await;

    // The administrator approves: Queued (Not Started).
    ui.sign_in("admin", &server.admin_password).await;
    ui.wait_path("/instances").await;
    ui.goto("/updates/crm-prod").await;
    ui.click("#approve-update").await;
    ui.wait_path("/updates/crm-prod").await;
    assert!(
        ui.notice()
            .await
            .contains("Approved the update of crm-prod")
    );
    assert_eq!(ui.text("#update-status").await, "Queued (Not Started)");
    assert!(ui.text("#approval").await.contains("Approved by admin"));
    assert!(ui.exists("#withdraw-approval").await);
    screenshot(ui, "queued", "#current-update").await;
    let queued = ui
        .text("#current-update .stages tr[data-stage='Queued (Not Started)']")
        .await;
    assert!(queued.contains("Waiting for the window"), "{queued}");
    assert_eq!(
        fleet_cell(ui, "crm-prod", "status").await,
        "Queued (Not Started)"
    );
    assert_eq!(
        ui.text("#fleet-crm-prod .col-window").await,
        "2017-11-12 22:00 UTC"
    );
    assert!(
        ui.text("#fleet-crm-prod .col-approval")
            .await
            .contains("Approved by admin")
    );

    // The window opens: the update runs through its stages.
    clock.set(Utc.with_ymd_and_hms(2017, 11, 12, 22, 1, 0).unwrap());
    server.state.run(|s| s.tick_updates()).await.expect("tick");
    // Eleven days later the session has expired: sign in again.
    ui.signed_out().await;
    ui.sign_in("admin", &server.admin_password).await;
    ui.wait_path("/instances").await;
    ui.poll_text("/updates", "#fleet-crm-prod .col-status", |t| {
        t == "Updated successfully"
    })
    .await;
    assert_eq!(ui.text("#fleet-crm-prod .col-release").await, "9.0");
    ui.goto("/updates/crm-prod").await;
    assert!(!ui.exists("#current-update").await, "nothing open any more");
    let item = ui.find("#history details.history-item").await;
    item.find(fantoccini::Locator::Css("summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let stages = ui.text("#history details.history-item .stages").await;
    for stage in ["Backup", "Restore", "Database Upgrade", "Swap"] {
        let row = ui
            .text(&format!(
                "#history details.history-item .stages tr[data-stage='{stage}']"
            ))
            .await;
        assert!(row.contains("Done"), "{stage}: {row}\n{stages}");
    }
    let timeline = ui.text("#history details.history-item .timeline").await;
    for event in [
        "Scheduled",
        "Approved",
        "Rescheduled",
        "Started",
        "Stage: Database Upgrade",
        "Succeeded",
    ] {
        assert!(timeline.contains(event), "{event} missing: {timeline}");
    }
    assert!(ui.text("#history").await.contains("Updated successfully"));
    screenshot(ui, "history", "#history").await;
    ui.goto("/updates").await;
    screenshot(ui, "fleet", "#update-fleet").await;
    let release = server
        .state
        .run(|s| s.show_instance(&Actor::system(), "crm-prod"))
        .await
        .unwrap()
        .release;
    assert_eq!(release, "9.0");
}

/// 2. "Update now" on a sandbox: no confirmation page, straight to the new release.
async fn update_a_sandbox_now(ui: &Ui) {
    ui.goto("/updates/crm-sbx").await;
    ui.select("#now-target", "9.1").await;
    ui.click("#update-now").await;
    ui.wait_path("/updates/crm-sbx").await;
    assert!(
        ui.notice()
            .await
            .contains("Updating crm-sbx from 8.2 to 9.1 now")
    );
    // Once it has started it can no longer be changed: no Reschedule, and a crafted one is
    // refused.
    ui.poll_text("/updates/crm-sbx", "#update-status", |t| {
        t == "Update in progress"
    })
    .await;
    assert!(!ui.exists("#reschedule-link").await);
    assert!(!ui.exists("#cancel-link").await);
    assert!(
        ui.text("#no-changes")
            .await
            .contains("can no longer be rescheduled")
    );
    let running = ui.text("#current-update .stages").await;
    assert!(running.contains("In progress"), "{running}");
    let (status, html) = post_from_page(
        ui,
        "/updates/crm-sbx/reschedule",
        json!({"preferred_start": "2017-12-01T22:00", "alternate_start": "2017-12-08T22:00", "time_zone": "UTC"}),
    )
    .await;
    assert_eq!(status, 409, "{html}");
    assert!(
        html.contains("the update of crm-sbx has started and can no longer be changed"),
        "{html}"
    );
    ui.poll_text("/updates", "#fleet-crm-sbx .col-status", |t| {
        t == "Updated successfully"
    })
    .await;
    assert_eq!(ui.text("#fleet-crm-sbx .col-release").await, "9.1");
    ui.goto("/updates/crm-sbx").await;
    assert!(ui.exists("#up-to-date").await, "9.1 is the latest release");
    assert!(ui.text("#history").await.contains("8.2 → 9.1"));
}

/// 3. Production: "Update now" only behind a confirmation page; a rehearsal attached to a
///    scheduled update; cancel through its confirmation page.
async fn production_needs_confirmation_rehearse_and_cancel(ui: &Ui) {
    ui.goto("/updates/crm-live").await;
    assert!(!ui.exists("#update-now").await, "no one-click update");
    ui.click("#update-now-link").await;
    ui.wait_path("/updates/crm-live/now").await;
    let question = ui.text("#confirm-question").await;
    assert!(
        question.contains("production instance crm-live from 8.2 to 9.1"),
        "{question}"
    );
    // Without the confirmation the server refuses and nothing starts.
    let (status, html) =
        post_from_page(ui, "/updates/crm-live/now", json!({"target": "9.0"})).await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("confirm"), "{html}");
    ui.click("#confirm-back").await;
    ui.wait_path("/updates/crm-live").await;
    assert!(!ui.exists("#current-update").await);

    // Schedule, rehearse, cancel.
    screenshot(ui, "schedule-form", "#schedule").await;
    ui.select("#schedule-target", "9.0").await;
    set_value(ui, "#schedule-preferred", "2017-12-01T22:00").await;
    set_value(ui, "#schedule-alternate", "2017-12-08T22:00").await;
    ui.click("#schedule-update").await;
    ui.wait_path("/updates/crm-live").await;
    ui.select("#rehearse-target", "9.0").await;
    ui.click("#run-rehearsal").await;
    ui.wait_path("/updates/crm-live").await;
    assert!(
        ui.notice()
            .await
            .contains("Rehearsing the update of crm-live")
    );
    let result = ui
        .poll_text(
            "/updates/crm-live",
            "#current-update .rehearsals tbody tr",
            |t| t.contains("Succeeded"),
        )
        .await;
    assert!(result.contains("9.0"), "{result}");
    ui.click("#cancel-link").await;
    ui.wait_path("/updates/crm-live/cancel").await;
    assert!(
        ui.text("#what-happens")
            .await
            .contains("crm-live stays on release 8.2")
    );
    ui.click("#confirm").await;
    ui.wait_path("/updates/crm-live").await;
    assert!(
        ui.notice()
            .await
            .contains("Cancelled the update of crm-live")
    );
    assert!(ui.exists("#schedule-form").await, "free to schedule again");
    assert!(ui.text("#history").await.contains("Cancelled"));

    // Sandbox first: a rehearsal with no update scheduled shows among the recent ones.
    ui.select("#rehearse-target", "9.1").await;
    ui.click("#run-rehearsal").await;
    ui.wait_path("/updates/crm-live").await;
    let recent = ui
        .poll_text(
            "/updates/crm-live",
            "#recent-rehearsals .rehearsals tbody tr",
            |t| t.contains("9.1") && t.contains("Succeeded"),
        )
        .await;
    assert!(!ui.exists("#current-update").await, "{recent}");
}

/// 4. The update policy, changed by a System Administrator: bad values refused with the
///    reason and nothing changed, then a stricter mandatory threshold saved.
async fn change_the_policy(ui: &Ui) {
    ui.goto("/updates").await;
    assert!(
        ui.text("#update-policy")
            .await
            .contains("Source: built-in.")
    );
    ui.click("#policy-edit summary").await;
    // Past the browser's own checks, the server's.
    ui.c.execute(
        "document.querySelector('#policy-form').noValidate = true;",
        vec![],
    )
    .await
    .expect("no validation");
    set_value(ui, "#policy-supported", "25").await;
    ui.click("#save-policy").await;
    let error = ui.text("#error").await;
    assert!(
        error.contains("supported_majors must be 1 to 20"),
        "{error}"
    );
    assert_eq!(
        ui.find("#policy-supported")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("25"),
        "the form keeps what was typed"
    );
    ui.goto("/updates").await;
    assert!(
        ui.text("#update-policy")
            .await
            .contains("Source: built-in.")
    );

    ui.click("#policy-edit summary").await;
    set_value(ui, "#policy-behind", "3").await;
    ui.click("#save-policy").await;
    ui.wait_path("/updates").await;
    assert_eq!(ui.notice().await, "Changed the update policy.");
    let policy = ui.text("#update-policy").await;
    assert!(
        policy.contains("An instance 3 major releases behind"),
        "{policy}"
    );
    assert!(policy.contains("Source: store."), "{policy}");
}
