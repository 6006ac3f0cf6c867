//! The web admin center in a real browser: headless Chromium driven through chromedriver
//! (Debian's `/usr/bin/chromium` and `/usr/bin/chromedriver`; `CHROMIUM` and `CHROMEDRIVER`
//! override the paths). One browser serves every scenario, run one after another; each
//! scenario starts signed out. A few HTTP-level checks (statuses, headers) use reqwest.
//! The server runs on a manual clock (so daily system backups start only when a scenario
//! moves time past their hour) with a short pause in every job stage.

use std::sync::Arc;

use chrono::{TimeZone, Utc};
use fantoccini::Locator;
use serde_json::json;
use steward_core::ManualClock;
use steward_server::Actor;
use steward_server::testing::TestServer;

mod browser_support;
use browser_support::*;

// ---------------------------------------------------------------------------------------
// the scenarios
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_center_in_a_real_browser() {
    let driver = Driver::start().await;
    // Before the day's system backups (02:00 UTC plus each instance's offset).
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2031, 3, 14, 0, 30, 0).unwrap(),
    ));
    let server = TestServer::start_with(|c| c.job_stage_pause_ms = 150, Some(clock.clone())).await;
    let client = driver.browser().await;
    let ui = Ui {
        c: client.clone(),
        base: server.url.clone(),
    };
    // Run the scenarios in a task so that a failure still closes the browser below.
    let outcome = tokio::spawn(async move {
        create_and_switch_an_instance(&ui, &server).await;
        ui.signed_out().await;
        delete_through_the_confirmation_page(&ui, &server).await;
        ui.signed_out().await;
        forms_without_the_csrf_token_are_refused(&ui, &server).await;
        ui.signed_out().await;
        sign_in_failures_redirects_and_sign_out(&ui, &server).await;
        ui.signed_out().await;
        viewers_see_instances_but_no_change_forms(&ui, &server).await;
        ui.signed_out().await;
        back_up_edit_restore_and_delete(&ui, &server, &clock).await;
    })
    .await;
    let _ = client.close().await;
    drop(driver);
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

fn latest_release(server: &TestServer) -> String {
    let releases = server
        .state
        .services
        .list_releases(&Actor::system())
        .expect("releases");
    releases
        .into_iter()
        .find(|r| r.latest)
        .expect("a latest release")
        .version
}

async fn instance_names(server: &TestServer) -> Vec<String> {
    server
        .state
        .run(|s| s.list_instances(&Actor::system()))
        .await
        .expect("list")
        .instances
        .into_iter()
        .map(|i| i.name)
        .collect()
}

async fn create_instance(server: &TestServer, name: &'static str) {
    server
        .state
        .run(move |s| s.create_instance(&Actor::system(), name, "sandbox", None))
        .await
        .expect("create instance");
}

/// 1. Sign in, create a sandbox on the default release, switch it to production, see both
///    changes in the audit log.
async fn create_and_switch_an_instance(ui: &Ui, server: &TestServer) {
    ui.sign_in("admin", &server.admin_password).await;
    ui.wait_path("/instances").await;
    assert_eq!(ui.text("#current-user").await, "admin");
    assert_eq!(ui.text("#current-role").await, "System Administrator");

    // The session cookie's attributes, as the browser stored them (Secure works on
    // http://127.0.0.1 because Chromium treats loopback as a secure context).
    let cookie =
        ui.c.get_named_cookie("steward_session")
            .await
            .expect("a session cookie");
    assert_eq!(cookie.http_only(), Some(true), "HttpOnly");
    assert_eq!(cookie.secure(), Some(true), "Secure");
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");

    assert!(ui.exists("#no-instances").await, "an empty list says so");
    let release = latest_release(server);
    let selected = ui
        .find("#new-release")
        .await
        .prop("value")
        .await
        .expect("value");
    assert_eq!(
        selected.as_deref(),
        Some(release.as_str()),
        "the latest release is the default"
    );

    ui.fill("#new-name", "crm-test").await;
    ui.find("#new-type")
        .await
        .select_by_value("sandbox")
        .await
        .expect("select");
    ui.click("#create-instance").await;
    ui.wait_path("/instances").await;
    assert!(
        ui.notice()
            .await
            .contains("Created the sandbox instance crm-test")
    );
    assert_eq!(ui.text("#instance-crm-test .col-name").await, "crm-test");
    assert_eq!(ui.text("#instance-crm-test .col-type").await, "sandbox");
    assert_eq!(ui.text("#instance-crm-test .col-release").await, release);
    assert_eq!(ui.text("#instance-crm-test .col-state").await, "Available");
    let list = server
        .state
        .run(|s| s.list_instances(&Actor::system()))
        .await
        .unwrap();
    let total = steward_server::web::format_size(list.total_storage_bytes);
    assert_eq!(
        ui.text("#total-storage").await,
        format!("Total storage: {total} in 1 instance")
    );
    let storage = ui.text("#instance-crm-test .col-storage").await;
    assert!(
        storage.ends_with("iB") || storage.ends_with(" B"),
        "readable size: {storage}"
    );

    // A notice is shown once.
    ui.save_screenshot("instances").await;
    ui.goto("/instances").await;
    assert!(
        !ui.exists("#notice").await,
        "the notice is gone after a reload"
    );

    // Switch to production with the row's form.
    assert_eq!(
        ui.text("#instance-crm-test .switch-form button").await,
        "Switch to production"
    );
    ui.click("#instance-crm-test .switch-form button").await;
    ui.wait_path("/instances").await;
    assert_eq!(ui.notice().await, "crm-test is now a production instance.");
    assert_eq!(ui.text("#instance-crm-test .col-type").await, "production");

    // The detail page.
    ui.click("#instance-crm-test .col-name a").await;
    ui.wait_path("/instances/crm-test").await;
    let details = ui.text("#instance-details").await;
    let db_path = ui.text("#database-path").await;
    assert!(db_path.ends_with("crm-test/database.sqlite"), "{db_path}");
    assert!(
        ui.text("#documents-path")
            .await
            .ends_with("crm-test/documents")
    );
    assert!(
        details.contains("production") && details.contains(&release),
        "{details}"
    );
    assert!(details.contains("by admin"), "{details}");

    // The audit log shows both changes, by admin, readably.
    ui.click("#nav-audit").await;
    ui.wait_path("/audit").await;
    let audit = ui.text("#audit").await;
    assert!(audit.contains("instance.create"), "{audit}");
    let switch_row = ui.text("#audit tbody tr:first-child").await;
    assert!(
        switch_row.contains("admin") && switch_row.contains("instance.switch"),
        "{switch_row}"
    );
    assert!(
        switch_row.contains("crm-test") && switch_row.contains("sandbox → production"),
        "{switch_row}"
    );
    let rows =
        ui.c.find_all(Locator::Css("#audit tbody tr"))
            .await
            .unwrap();
    let mut create_by_admin = false;
    for r in rows {
        let t = r.text().await.unwrap();
        create_by_admin |=
            t.contains("instance.create") && t.contains("admin") && t.contains("crm-test");
    }
    assert!(create_by_admin, "instance.create by admin is listed");

    // The filter narrows the log.
    ui.fill("#f-action", "instance.switch").await;
    ui.click("#audit-filter button[type=submit]").await;
    ui.wait_path("/audit?actor=&action=instance.switch&target=")
        .await;
    let filtered = ui.text("#audit tbody").await;
    assert!(
        filtered.contains("instance.switch") && !filtered.contains("instance.create"),
        "{filtered}"
    );

    // The later sections are real pages.
    for (nav, heading) in [
        ("backups", "Backup & Restore"),
        ("updates", "Updates"),
        ("workitems", "Work items"),
        ("notifications", "Notifications"),
    ] {
        ui.click(&format!("#nav-{nav}")).await;
        ui.wait_path(&format!("/{nav}")).await;
        assert_eq!(ui.text("h1").await, heading);
        assert!(
            ui.find(&format!("#nav-{nav}"))
                .await
                .attr("aria-current")
                .await
                .unwrap()
                .is_some()
        );
    }
}

/// 2. Deleting needs the name typed again on the confirmation page.
async fn delete_through_the_confirmation_page(ui: &Ui, server: &TestServer) {
    create_instance(server, "doomed").await;
    ui.sign_in("admin", &server.admin_password).await;
    ui.wait_path("/instances").await;
    ui.click("#instance-doomed .delete-link").await;
    ui.wait_path("/instances/doomed/delete").await;
    let explained = ui.text(".card-danger").await;
    assert!(explained.contains("moves out of service"), "{explained}");
    assert!(explained.contains("backups stay restorable"), "{explained}");

    ui.fill("#confirm", "doomd").await;
    ui.click("#confirm-delete").await;
    let error = ui.text("#error").await;
    assert!(error.contains("type its name again to confirm"), "{error}");
    ui.goto("/instances").await;
    assert_eq!(
        ui.text("#instance-doomed .col-name").await,
        "doomed",
        "still listed"
    );
    assert!(instance_names(server).await.contains(&"doomed".to_owned()));

    ui.goto("/instances/doomed/delete").await;
    ui.fill("#confirm", "doomed").await;
    ui.click("#confirm-delete").await;
    ui.wait_path("/instances").await;
    assert!(ui.notice().await.starts_with("Deleted doomed."));
    assert!(!ui.exists("#instance-doomed").await, "gone from the list");
    assert!(!instance_names(server).await.contains(&"doomed".to_owned()));
}

/// 3. A POST without the session's CSRF token is refused with 403 and changes nothing.
async fn forms_without_the_csrf_token_are_refused(ui: &Ui, server: &TestServer) {
    ui.sign_in("admin", &server.admin_password).await;
    ui.wait_path("/instances").await;
    let post = |body: serde_json::Value| {
        let c = ui.c.clone();
        async move {
            c.execute(
                "return fetch(arguments[0], {method: 'POST', body: new URLSearchParams(arguments[1])})
                   .then(async r => [r.status, await r.text()]);",
                vec![json!("/instances"), body],
            )
            .await
            .expect("fetch")
        }
    };
    for body in [
        json!({"name": "evil", "type": "sandbox"}),
        json!({"name": "evil", "type": "sandbox", "csrf": ""}),
        json!({"name": "evil", "type": "sandbox", "csrf": "0".repeat(64)}),
    ] {
        let answer = post(body.clone()).await;
        assert_eq!(answer[0], 403, "{body}");
        assert!(answer[1].as_str().unwrap().contains(CSRF_MESSAGE), "{body}");
    }
    assert!(!instance_names(server).await.contains(&"evil".to_owned()));

    // The same with the real token works: the check is the token, not the request's shape.
    let ok = ui
        .c
        .execute(
            "const csrf = document.querySelector('#create-form input[name=csrf]').value;
             return fetch('/instances', {method: 'POST', redirect: 'manual',
               body: new URLSearchParams({name: 'good', type: 'sandbox', csrf})}).then(r => r.type);",
            vec![],
        )
        .await
        .expect("fetch");
    assert_eq!(ok, "opaqueredirect");
    assert!(instance_names(server).await.contains(&"good".to_owned()));

    // Outside the browser: the session cookie alone is not enough, for any form.
    let session = ui.c.get_named_cookie("steward_session").await.unwrap();
    let cookie = format!("steward_session={}", session.value());
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (path, form) in [
        ("/instances", vec![("name", "evil2"), ("type", "sandbox")]),
        ("/instances/good/switch", vec![("type", "production")]),
        ("/instances/good/delete", vec![("confirm", "good")]),
        (
            "/backups/new",
            vec![("instance", "good"), ("label", "evil backup")],
        ),
        ("/backups/1/edit", vec![("label", "evil")]),
        ("/backups/1/delete", vec![]),
        ("/backups/1/restore", vec![("target", "good")]),
        ("/logout", vec![]),
    ] {
        let r = http
            .post(format!("{}{path}", server.url))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert!(r.text().await.unwrap().contains(CSRF_MESSAGE), "{path}");
    }
    let list = server
        .state
        .run(|s| s.list_instances(&Actor::system()))
        .await
        .unwrap();
    let good = list
        .instances
        .iter()
        .find(|i| i.name == "good")
        .expect("good still exists");
    assert_eq!(good.instance_type, "sandbox", "not switched");
    assert!(!list.instances.iter().any(|i| i.name == "evil2"));
    let backups = server
        .state
        .run(|s| s.list_backups(&Actor::system(), "good"))
        .await
        .unwrap();
    assert!(backups.is_empty(), "no backup was queued: {backups:?}");
    ui.goto("/instances").await;
    assert_eq!(ui.text("#current-user").await, "admin", "still signed in");

    // The sign-in form has its own token (double submit): without the cookie, 403.
    let r = http
        .post(format!("{}/login", server.url))
        .form(&[
            ("username", "admin"),
            ("password", server.admin_password.as_str()),
            ("csrf", &"a".repeat(64)),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()
            .get_all("set-cookie")
            .iter()
            .all(|c| !c.to_str().unwrap().starts_with("steward_session="))
    );
}

/// 4. A wrong password shows an error and opens no session; signed out, pages redirect to
///    the sign-in form; signing out ends the session.
async fn sign_in_failures_redirects_and_sign_out(ui: &Ui, server: &TestServer) {
    for page in ["/instances", "/audit", "/instances/good", "/backups", "/"] {
        ui.goto(page).await;
        ui.wait_path("/login").await;
    }
    ui.sign_in("admin", "not-the-password").await;
    let error = ui.text("#error").await;
    assert_eq!(error, "The username or password is wrong.");
    assert_eq!(ui.path().await, "/login");
    assert!(
        ui.c.get_named_cookie("steward_session").await.is_err(),
        "no session cookie"
    );
    assert_eq!(
        ui.find("#username")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("admin"),
        "the username is kept"
    );

    ui.fill("#password", &server.admin_password).await;
    ui.click("#sign-in").await;
    ui.wait_path("/instances").await;
    let session =
        ui.c.get_named_cookie("steward_session")
            .await
            .unwrap()
            .value()
            .to_owned();

    ui.click("#sign-out").await;
    ui.wait_path("/login").await;
    assert_eq!(ui.notice().await, "You have signed out.");
    assert!(
        ui.c.get_named_cookie("steward_session").await.is_err(),
        "cookie cleared"
    );
    ui.goto("/audit").await;
    ui.wait_path("/login").await;
    // The old session is gone on the server too.
    assert!(server.state.services.session(&session).is_err());

    // The sign-in form answers 401 to a wrong password (checked over HTTP for the status).
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = http
        .get(format!("{}/login", server.url))
        .send()
        .await
        .unwrap();
    let login_cookie = form
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("steward_login_csrf="))
        .expect("a login CSRF cookie");
    assert!(login_cookie.contains("SameSite=Strict") && login_cookie.contains("HttpOnly"));
    let token = login_cookie["steward_login_csrf=".len()..]
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let post = |password: String| {
        http.post(format!("{}/login", server.url))
            .header("cookie", format!("steward_login_csrf={token}"))
            .form(&[
                ("username", "admin".to_owned()),
                ("password", password),
                ("csrf", token.clone()),
            ])
            .send()
    };
    let wrong = post("wrong-password".into()).await.unwrap();
    assert_eq!(wrong.status(), 401);
    let right = post(server.admin_password.clone()).await.unwrap();
    assert_eq!(right.status(), 303);
    assert_eq!(right.headers()["location"], "/instances");
    let set = right
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|c| c.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("steward_session="))
        .expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(set.contains(attr), "{attr} in {set}");
    }

    // Assets come from the binary with cache headers.
    // (minijinja escapes `/` in attribute values as `&#x2f;`.)
    let html = form.text().await.unwrap().replace("&#x2f;", "/");
    let css = html
        .split("href=\"")
        .find_map(|s| s.strip_prefix("/assets/steward.css"))
        .map(|s| format!("/assets/steward.css{}", &s[..s.find('"').unwrap()]))
        .expect("the page links the stylesheet");
    let r = http
        .get(format!("{}{css}", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/css; charset=utf-8");
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age=")
    );
    let etag = r.headers()["etag"].clone();
    let again = http
        .get(format!("{}{css}", server.url))
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
}

/// 5. A Viewer sees the instances but none of the forms that change them.
async fn viewers_see_instances_but_no_change_forms(ui: &Ui, server: &TestServer) {
    server
        .state
        .run(|s| {
            s.create_user(
                &Actor::system(),
                "viewer1",
                "viewer",
                Some("a-long-password-1"),
            )
        })
        .await
        .expect("create viewer");
    ui.sign_in("viewer1", "a-long-password-1").await;
    ui.wait_path("/instances").await;
    assert_eq!(ui.text("#current-role").await, "Viewer");
    assert_eq!(ui.text("#instance-good .col-name").await, "good");
    assert_eq!(ui.text("#instance-crm-test .col-type").await, "production");
    for css in ["#create-form", ".switch-form", ".delete-link", "th.actions"] {
        assert!(!ui.exists(css).await, "a Viewer sees no {css}");
    }
    assert!(
        ui.text("#read-only")
            .await
            .contains("cannot create, switch or delete")
    );

    ui.goto("/instances/good").await;
    assert!(ui.exists("#instance-details").await);
    assert!(!ui.exists("form[action='/instances/good/switch']").await);

    ui.goto("/instances/good/delete").await;
    assert_eq!(ui.text("#error-heading").await, "Not allowed");
    assert!(!ui.exists("#delete-form").await);

    // Even with a valid token the service refuses a Viewer's change.
    let answer =
        ui.c.execute(
            "const csrf = document.querySelector('input[name=csrf]').value;
             return fetch('/instances/good/switch', {method: 'POST',
               body: new URLSearchParams({type: 'production', csrf})})
               .then(async r => [r.status, await r.text()]);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answer[0], 403);
    assert!(
        answer[1].as_str().unwrap().contains("may not switch"),
        "{answer}"
    );
    let list = server
        .state
        .run(|s| s.list_instances(&Actor::system()))
        .await
        .unwrap();
    assert_eq!(
        list.instances
            .iter()
            .find(|i| i.name == "good")
            .unwrap()
            .instance_type,
        "sandbox"
    );
}

async fn create_instance_of_type(server: &TestServer, name: &'static str, kind: &'static str) {
    server
        .state
        .run(move |s| s.create_instance(&Actor::system(), name, kind, None))
        .await
        .expect("create instance");
}

/// The id of `instance`'s backup labelled `label`.
async fn backup_id(server: &TestServer, instance: &'static str, label: &'static str) -> i64 {
    server
        .state
        .run(move |s| s.list_backups(&Actor::system(), instance))
        .await
        .expect("list backups")
        .into_iter()
        .find(|b| b.label == label)
        .unwrap_or_else(|| panic!("no backup {label:?} of {instance}"))
        .id
}

/// 6. Backup & Restore: pick an instance, create an on-demand backup and watch it complete,
///    edit it, restore it (refused into production, then into a sandbox), delete it; system
///    backups offer only Restore; a Viewer sees the list but no actions.
async fn back_up_edit_restore_and_delete(ui: &Ui, server: &TestServer, clock: &ManualClock) {
    create_instance_of_type(server, "prod-a", "production").await;
    create_instance_of_type(server, "sand-b", "sandbox").await;
    ui.sign_in("admin", &server.admin_password).await;
    ui.wait_path("/instances").await;
    ui.click("#nav-backups").await;
    ui.wait_path("/backups").await;

    // "Backups for": the first instance by default, then the one picked.
    let first = instance_names(server).await[0].clone();
    assert_eq!(
        ui.find("#backups-for")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some(first.as_str())
    );
    ui.select("#backups-for", "prod-a").await;
    ui.click("#show-backups").await;
    ui.wait_path("/backups?instance=prod-a").await;
    assert!(ui.exists("#no-backups").await, "prod-a has no backups yet");
    let db_storage = ui.text("#database-storage").await;
    assert!(db_storage.ends_with('B'), "{db_storage}");
    assert_eq!(ui.text("#backup-storage").await, "0 B");

    // A label is required: the form is refused by the service, and kept.
    let refused =
        ui.c.execute(
            "const csrf = document.querySelector('#new-backup-form input[name=csrf]').value;
             return fetch('/backups/new', {method: 'POST',
               body: new URLSearchParams({instance: 'prod-a', label: '  ', notes: 'kept', csrf})})
               .then(async r => [r.status, await r.text()]);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(refused[0], 400, "{refused}");
    assert!(
        refused[1].as_str().unwrap().contains("needs a label"),
        "{refused}"
    );

    // New backup, with notes that must be shown as text.
    let notes = "Before <b>the</b> change & its \"migration\"";
    ui.fill("#backup-label", "before change").await;
    ui.fill("#backup-notes", notes).await;
    ui.click("#create-backup").await;
    ui.wait_path("/backups?instance=prod-a").await;
    assert_eq!(ui.notice().await, "Backup of prod-a is being created.");
    let id = backup_id(server, "prod-a", "before change").await;
    let row = format!("#backup-{id}");
    let list = "/backups?instance=prod-a";
    ui.poll_text(list, &format!("{row} .col-status"), |t| t == "Completed")
        .await;
    assert_eq!(
        ui.text(&format!("{row} .backup-label")).await,
        "before change"
    );
    assert_eq!(ui.text(&format!("{row} .backup-notes")).await, notes);
    assert_eq!(ui.text(&format!("{row} .col-created-by")).await, "admin");
    assert_eq!(
        ui.text(&format!("{row} .col-created")).await,
        "2031-03-14 00:30"
    );
    assert_eq!(
        ui.text(&format!("{row} .col-expires")).await,
        "2031-03-17 00:30",
        "on-demand backups are kept three days"
    );
    let size = ui.text(&format!("{row} .col-size")).await;
    assert!(size.ends_with('B'), "{size}");
    for action in ["edit-link", "delete-link", "restore-link"] {
        assert!(ui.exists(&format!("{row} .{action}")).await, "{action}");
    }
    // Its job, with the stages it went through, and the alerts.
    let job = ui.text("#job-list .job-backup").await;
    assert!(job.contains("Backup") && job.contains("Succeeded"), "{job}");
    assert_ne!(ui.text("#backup-storage").await, "0 B");
    let alerts = ui.text("#alerts").await;
    assert!(
        alerts.contains("Backup “before change” of prod-a succeeded."),
        "{alerts}"
    );
    assert!(
        !ui.exists("#latest-alert").await,
        "the tab lists alerts itself"
    );
    ui.goto("/instances").await;
    assert!(
        ui.text("#latest-alert").await.contains("succeeded"),
        "other pages show the latest alert"
    );
    ui.goto(list).await;
    ui.save_screenshot("backups").await;

    // Edit the label.
    ui.click(&format!("{row} .edit-link")).await;
    ui.wait_path(&format!("/backups/{id}/edit")).await;
    assert_eq!(
        ui.find("#edit-label")
            .await
            .prop("value")
            .await
            .unwrap()
            .as_deref(),
        Some("before change")
    );
    ui.fill("#edit-label", "before the big change").await;
    ui.click("#save-backup").await;
    ui.wait_path(list).await;
    assert_eq!(
        ui.notice().await,
        "Saved backup before the big change of prod-a."
    );
    assert_eq!(
        ui.text(&format!("{row} .backup-label")).await,
        "before the big change"
    );
    assert_eq!(
        ui.text(&format!("{row} .backup-notes")).await,
        notes,
        "notes kept"
    );

    // Restore: sandboxes are offered first; production is marked.
    ui.click(&format!("{row} .restore-link")).await;
    ui.wait_path(&format!("/backups/{id}/restore")).await;
    let options = ui.c.find_all(Locator::Css("#target option")).await.unwrap();
    let mut labels = Vec::new();
    for o in &options {
        labels.push(o.text().await.unwrap());
    }
    let sandbox_at = labels.iter().position(|l| l.starts_with("sand-b")).unwrap();
    let prod_at = labels.iter().position(|l| l.starts_with("prod-a")).unwrap();
    assert!(sandbox_at < prod_at, "sandboxes first: {labels:?}");
    assert!(
        labels[prod_at].contains("switch to sandbox first"),
        "{labels:?}"
    );
    assert!(
        !labels[sandbox_at].contains("switch to sandbox first"),
        "{labels:?}"
    );

    // Into production: the review shows the details; Restore is refused with the reason.
    ui.select("#target", "prod-a").await;
    ui.click("#restore-next").await;
    ui.wait_path(&format!("/backups/{id}/restore/review?target=prod-a"))
        .await;
    let backup_side = ui.text("#review-backup").await;
    let release = latest_release(server);
    for part in [
        "before the big change",
        "prod-a",
        "2031-03-14 00:30 UTC",
        &release,
    ] {
        assert!(backup_side.contains(part), "{part} in {backup_side}");
    }
    let target_side = ui.text("#review-target").await;
    assert!(
        target_side.contains("prod-a") && target_side.contains("production"),
        "{target_side}"
    );
    ui.click("#confirm-restore").await;
    let error = ui.text("#error").await;
    assert!(
        error.contains("prod-a is a production instance")
            && error.contains("Switch it to sandbox first"),
        "{error}"
    );
    // The refusal is a 409 and starts nothing.
    let answer =
        ui.c.execute(
            "const f = document.querySelector('#restore-form');
             return fetch(f.action, {method: 'POST', body: new URLSearchParams(new FormData(f))})
               .then(r => r.status);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(answer, 409);
    let restores = server
        .state
        .run(|s| s.list_jobs(&Actor::system(), Some("prod-a"), None))
        .await
        .unwrap();
    assert!(restores.iter().all(|j| j.kind != "restore"), "{restores:?}");

    // Into the sandbox.
    ui.click("#restore-back").await;
    ui.wait_path(&format!("/backups/{id}/restore?target=prod-a"))
        .await;
    ui.select("#target", "sand-b").await;
    ui.click("#restore-next").await;
    ui.wait_path(&format!("/backups/{id}/restore/review?target=sand-b"))
        .await;
    let happens = ui.text("#what-happens").await;
    for part in [
        "The database of sand-b is replaced",
        "documents folder is untouched",
        "unavailable until the restore completes",
    ] {
        assert!(happens.contains(part), "{part} in {happens}");
    }
    ui.click("#confirm-restore").await;
    ui.wait_path("/backups?instance=sand-b").await;
    assert_eq!(
        ui.notice().await,
        "Restoring before the big change into sand-b."
    );
    ui.poll_text(
        "/backups?instance=sand-b",
        "#job-list .job-restore .col-state",
        |t| t.starts_with("Succeeded") || t.starts_with("Failed"),
    )
    .await;
    assert_eq!(
        ui.text("#job-list .job-restore .col-state").await,
        "Succeeded"
    );
    assert!(ui.text("#current-instance").await.contains("Available"));
    let alerts = ui.text("#alerts").await;
    assert!(
        alerts.contains("Restore of “before the big change” into sand-b succeeded."),
        "{alerts}"
    );

    // Delete through the confirmation page.
    ui.goto(list).await;
    ui.click(&format!("{row} .delete-link")).await;
    ui.wait_path(&format!("/backups/{id}/delete")).await;
    assert_eq!(
        ui.text("#confirm-question").await,
        "Delete backup before the big change of prod-a? This cannot be undone."
    );
    ui.click("#confirm-delete").await;
    ui.wait_path(list).await;
    assert_eq!(
        ui.notice().await,
        "Deleted backup before the big change of prod-a."
    );
    assert!(!ui.exists(&row).await, "gone from the list");
    ui.goto(&format!("/backups/{id}/edit")).await;
    assert_eq!(ui.text("#error-heading").await, "Not found");

    // The day's system backups: created by System, only Restore.
    clock.set(Utc.with_ymd_and_hms(2031, 3, 14, 5, 0, 0).unwrap());
    let queued = server
        .state
        .run(|s| s.schedule_system_backups())
        .await
        .unwrap();
    assert!(queued >= 2, "{queued}");
    ui.fill_backup_form_and_wait(list, "kept for viewers").await;
    let system_row = ui
        .poll_text(list, "#backups .backup-system .col-status", |t| {
            t == "Completed"
        })
        .await;
    assert_eq!(system_row, "Completed");
    assert_eq!(
        ui.text("#backups .backup-system .col-created-by").await,
        "System"
    );
    assert_eq!(
        ui.text("#backups .backup-system .col-expires").await,
        "2031-03-17 05:00"
    );
    assert!(ui.exists("#backups .backup-system .restore-link").await);
    for action in ["edit-link", "delete-link"] {
        assert!(
            !ui.exists(&format!("#backups .backup-system .{action}"))
                .await,
            "system backups have only Restore, not {action}"
        );
    }
    let system_id = server
        .state
        .run(|s| s.list_backups(&Actor::system(), "prod-a"))
        .await
        .unwrap()
        .into_iter()
        .find(|b| b.kind == "system")
        .unwrap()
        .id;
    ui.goto(&format!("/backups/{system_id}/delete")).await;
    assert_eq!(ui.text("#error-heading").await, "Not possible");
    assert!(!ui.exists("#delete-form").await);

    // A Viewer sees the backups but no form and no actions.
    ui.signed_out().await;
    ui.sign_in("viewer1", "a-long-password-1").await;
    ui.wait_path("/instances").await;
    ui.goto(list).await;
    assert!(ui.exists("#backups .backup-system").await);
    assert!(ui.exists("#backups .backup-on_demand").await);
    for css in [
        "#new-backup-form",
        ".edit-link",
        ".delete-link",
        ".restore-link",
        "#backups th.actions",
    ] {
        assert!(!ui.exists(css).await, "a Viewer sees no {css}");
    }
    assert!(ui.text("#read-only").await.contains("cannot create"));
    assert!(ui.exists("#job-list").await, "a Viewer sees the jobs");
    ui.goto(&format!("/backups/{system_id}/restore")).await;
    assert_eq!(ui.text("#error-heading").await, "Not allowed");
}

impl Ui {
    /// Creates an on-demand backup of the list's instance and waits until it completed.
    async fn fill_backup_form_and_wait(&self, list: &str, label: &str) {
        self.goto(list).await;
        self.fill("#backup-label", label).await;
        self.click("#create-backup").await;
        self.wait_path(list).await;
        self.poll_text(list, "#backups .backup-on_demand .col-status", |t| {
            t == "Completed"
        })
        .await;
    }
}
