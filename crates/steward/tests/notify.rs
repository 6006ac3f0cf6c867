//! `steward notify ...`, `steward user set-email` and `steward alerts dismiss|--mine` through
//! the built binary against a real `steward serve`: the schedule, extra recipients,
//! webhooks, roles, and the delivery log after a backup whose webhook cannot be reached.

mod common;

use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

fn create_instance(s: &Server, name: &str) {
    s.run(&[
        "instance",
        "create",
        name,
        "--type",
        "production",
        "--release",
        "9.0",
    ])
    .ok();
}

fn entry<'a>(schedule: &'a Value, event: &str) -> &'a Value {
    schedule
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == event)
        .unwrap_or_else(|| panic!("no {event} in {schedule:#}"))
}

/// A 127.0.0.1 port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

#[test]
fn schedule_recipients_webhooks_and_roles() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "acme");

    // The schedule: every event, with the backup outcome on email, in-product and webhook.
    let table = s.run(&["notify", "schedule", "list"]).ok().stdout;
    assert!(table.starts_with("EVENT"), "{table}");
    assert!(
        table.contains("AUDIENCE") && table.contains("CHANNELS"),
        "{table}"
    );
    let line = table
        .lines()
        .find(|l| l.starts_with("backup_succeeded "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(line.contains("system_administrators"), "{line}");
    let before = s.run(&["notify", "schedule", "list", "--json"]).ok().json();
    let e = entry(&before, "backup_succeeded");
    assert_eq!(e["customized"], false);
    assert!(e["channels"].as_array().unwrap().contains(&"email".into()));

    // Set both, then only the audience: the channels stay.
    let out = s
        .run(&[
            "notify",
            "schedule",
            "set",
            "backup_succeeded",
            "--audience",
            "all_admins_and_users",
            "--channels",
            "webhook,in_product",
        ])
        .ok()
        .stdout;
    assert!(out.contains("all_admins_and_users"), "{out}");
    s.run(&[
        "notify",
        "schedule",
        "set",
        "backup_succeeded",
        "--audience",
        "system_administrators",
    ])
    .ok();
    let after = s.run(&["notify", "schedule", "list", "--json"]).ok().json();
    let e = entry(&after, "backup_succeeded");
    assert_eq!(e["customized"], true);
    assert_eq!(e["audience"], "system_administrators");
    assert_eq!(e["channels"], serde_json::json!(["webhook", "in_product"]));
    // `none`: the log only.
    let v = s
        .run(&[
            "notify",
            "schedule",
            "set",
            "backup_started",
            "--channels",
            "none",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(v["channels"], serde_json::json!([]));
    // Reset: back to the default, no longer customized.
    let out = s
        .run(&["notify", "schedule", "reset", "backup_succeeded"])
        .ok()
        .stdout;
    assert!(out.contains("back on the default"), "{out}");
    let reset = s.run(&["notify", "schedule", "list", "--json"]).ok().json();
    assert_eq!(
        entry(&reset, "backup_succeeded"),
        entry(&before, "backup_succeeded")
    );
    s.run(&["notify", "schedule", "reset", "no_such_event"])
        .fails(2, "no_such_event");
    s.run(&[
        "notify",
        "schedule",
        "set",
        "no_such_event",
        "--channels",
        "email",
    ])
    .fails(2, "no_such_event");
    s.run(&[
        "notify",
        "schedule",
        "set",
        "backup_failed",
        "--channels",
        "pigeon",
    ])
    .fails(2, "pigeon");
    s.run(&["notify", "schedule", "set", "backup_failed"])
        .fails(2, "--audience");

    // Recipients.
    let table = s.run(&["notify", "recipients", "list", "acme"]).ok().stdout;
    assert!(table.contains("no extra recipients"), "{table}");
    let out = s
        .run(&["notify", "recipients", "add", "acme", "dba@example.com"])
        .ok()
        .stdout;
    assert!(out.contains("dba@example.com"), "{out}");
    s.run(&["notify", "recipients", "add", "acme", "dba@example.com"])
        .fails(5, "already");
    let out = s.run(&["notify", "recipients", "add", "acme", "not-an-address"]);
    out.fails(2, "invalid_email");
    assert!(
        s.run(&["notify", "recipients", "add", "acme", "a@b"]).code == 2,
        "an address without a dot in its domain is refused"
    );
    let list = s
        .run(&["notify", "recipients", "list", "acme", "--json"])
        .ok()
        .json();
    let emails: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        ["dba@example.com"],
        "invalid addresses change nothing"
    );
    let table = s.run(&["notify", "recipients", "list", "acme"]).ok().stdout;
    assert!(
        table.starts_with("EMAIL") && table.contains("dba@example.com"),
        "{table}"
    );
    s.run(&["notify", "recipients", "list", "nope"])
        .fails(4, "");
    s.run(&["notify", "recipients", "remove", "acme", "dba@example.com"])
        .ok();
    s.run(&["notify", "recipients", "remove", "acme", "dba@example.com"])
        .fails(4, "unknown_recipient");
    let list = s
        .run(&["notify", "recipients", "list", "acme", "--json"])
        .ok()
        .json();
    assert_eq!(list, serde_json::json!([]));

    // Webhooks: the generated secret is shown once, never listed.
    s.run(&["notify", "webhooks", "add", "ftp://example.com/hook"])
        .fails(2, "invalid_webhook_url");
    let out = s
        .run(&["notify", "webhooks", "add", "https://hooks.example.com/a"])
        .ok()
        .stdout;
    assert!(out.contains("shown only this once"), "{out}");
    let created = s
        .run_as(
            Some(TOKEN),
            &[
                "notify",
                "webhooks",
                "add",
                "https://hooks.example.com/b",
                "--secret-stdin",
                "--json",
            ],
            "sixteen-chars-or-more\n",
        )
        .ok()
        .json();
    assert_eq!(created["secret"], "sixteen-chars-or-more");
    let id = created["webhook"]["id"].as_i64().unwrap();
    s.run_as(
        Some(TOKEN),
        &[
            "notify",
            "webhooks",
            "add",
            "https://hooks.example.com/c",
            "--secret-stdin",
        ],
        "short\n",
    )
    .fails(2, "invalid_webhook_secret");
    let list = s.run(&["notify", "webhooks", "list"]).ok().stdout;
    assert!(
        list.starts_with("ID") && list.contains("hooks.example.com/b"),
        "{list}"
    );
    assert!(!list.contains("sixteen-chars-or-more"), "{list}");
    s.run(&["notify", "webhooks", "remove", &id.to_string()])
        .ok();
    s.run(&["notify", "webhooks", "remove", &id.to_string()])
        .fails(4, "unknown_webhook");
    let list = s.run(&["notify", "webhooks", "list", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");

    // Email addresses of users.
    s.run(&["user", "set-email", "admin", "ops@example.com"])
        .ok();
    s.run(&["user", "set-email", "admin", "nope"])
        .fails(2, "invalid_email");
    s.run(&["user", "set-email", "nobody", "a@example.com"])
        .fails(4, "");
    s.run(&["user", "set-email", "admin", "--clear"]).ok();
    assert_eq!(s.run(&["user", "set-email", "admin"]).code, 2);

    // A Viewer may look, not change.
    let viewer = viewer_token(&s);
    let v = Some(viewer.as_str());
    s.run_as(v, &["notify", "schedule", "list"], "").ok();
    s.run_as(v, &["notify", "webhooks", "list"], "").ok();
    s.run_as(v, &["notify", "recipients", "list", "acme"], "")
        .ok();
    s.run_as(v, &["notify", "log"], "").ok();
    for args in [
        &[
            "notify",
            "schedule",
            "set",
            "backup_failed",
            "--channels",
            "email",
        ][..],
        &["notify", "recipients", "add", "acme", "x@example.com"],
        &["notify", "webhooks", "add", "https://hooks.example.com/v"],
        &["user", "set-email", "admin", "x@example.com"],
    ] {
        s.run_as(v, args, "").fails(3, "");
    }
    // A Viewer sets their own address.
    s.run_as(v, &["user", "set-email", "vera", "vera@example.com"], "")
        .ok();
    let after = s.run(&["notify", "schedule", "list", "--json"]).ok().json();
    assert_eq!(
        entry(&after, "backup_failed"),
        entry(&before, "backup_failed")
    );
    assert_eq!(
        s.run(&["notify", "recipients", "list", "acme", "--json"])
            .ok()
            .json(),
        serde_json::json!([])
    );
}

#[test]
fn the_log_shows_a_failing_webhook_delivery_after_a_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "acme");
    let url = format!("http://127.0.0.1:{}/hook", closed_port());
    s.run(&["notify", "webhooks", "add", &url]).ok();
    s.run(&["notify", "log"]).ok();

    s.run(&["backup", "create", "acme", "--label", "before", "--wait"])
        .ok();

    // The worker tries at once; the refused connection is recorded on the delivery.
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivery = loop {
        let log = s
            .run(&["notify", "log", "--instance", "acme", "--json"])
            .ok()
            .json();
        let found = log.as_array().unwrap().iter().find(|d| {
            d["event"] == "backup_succeeded"
                && d["channel"] == "webhook"
                && d["attempts"].as_i64().unwrap_or(0) >= 1
                && d["last_error"].is_string()
        });
        if let Some(d) = found {
            break d.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no failed webhook delivery: {log:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        matches!(delivery["state"].as_str(), Some("pending" | "failed")),
        "{delivery:#}"
    );
    assert!(
        delivery["last_error"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "{delivery:#}"
    );

    let table = s.run(&["notify", "log"]).ok().stdout;
    assert!(table.starts_with("TIME"), "{table}");
    for col in [
        "EVENT",
        "INSTANCE",
        "CHANNEL",
        "RECIPIENT",
        "STATE",
        "ATTEMPTS",
        "LAST ERROR",
    ] {
        assert!(table.contains(col), "{col} missing: {table}");
    }
    let line = table
        .lines()
        .find(|l| l.contains("backup_succeeded") && l.contains("webhook:"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        (line.contains("pending") || line.contains("failed")) && line.contains("acme"),
        "{line}"
    );
    assert!(line.contains("127.0.0.1"), "{line}");
    let one = s
        .run(&["notify", "log", "--limit", "1", "--json"])
        .ok()
        .json();
    assert_eq!(one.as_array().unwrap().len(), 1);

    // In-product alerts of the backup: dismissed for the admin only.
    let mine = s.run(&["alerts", "--mine", "--json"]).ok().json();
    let id = mine.as_array().unwrap()[0]["id"].as_i64().unwrap();
    let out = s.run(&["alerts", "dismiss", &id.to_string()]).ok().stdout;
    assert!(out.contains("Dismissed"), "{out}");
    let mine = s.run(&["alerts", "--mine", "--json"]).ok().json();
    assert!(
        mine.as_array().unwrap().iter().all(|a| a["id"] != id),
        "{mine:#}"
    );
    let all = s.run(&["alerts", "--json"]).ok().json();
    assert!(
        all.as_array().unwrap().iter().any(|a| a["id"] == id),
        "{all:#}"
    );
    s.run(&["alerts", "dismiss", "999999"])
        .fails(4, "unknown_alert");
}

#[test]
fn notify_help_explains_each_command() {
    let help = |args: &[&str]| {
        let out = run(steward_command().args(args), "");
        assert_eq!(out.code, 0, "{out:#?}");
        out.stdout
    };
    assert!(help(&["--help"]).contains("notify"));
    let notify = help(&["notify", "--help"]);
    for text in [
        "schedule",
        "recipients",
        "webhooks",
        "log",
        "in_product",
        "set-email",
    ] {
        assert!(notify.contains(text), "{text:?} missing: {notify}");
    }
    let set = help(&["notify", "schedule", "set", "--help"]);
    for text in ["--audience", "--channels", "all_admins_and_users", "none"] {
        assert!(set.contains(text), "{text:?} missing: {set}");
    }
    assert!(help(&["notify", "schedule", "list", "--help"]).contains("--json"));
    assert!(help(&["notify", "recipients", "add", "--help"]).contains("name@example.com"));
    assert!(help(&["notify", "recipients", "remove", "--help"]).contains("EMAIL"));
    let add = help(&["notify", "webhooks", "add", "--help"]);
    for text in ["--secret-stdin", "X-Steward-Signature", "only this once"] {
        assert!(add.contains(text), "{text:?} missing: {add}");
    }
    assert!(help(&["notify", "webhooks", "remove", "--help"]).contains("ID"));
    let log = help(&["notify", "log", "--help"]);
    for text in ["pending", "failed", "attempts", "--instance", "--json"] {
        assert!(log.contains(text), "{text:?} missing: {log}");
    }
    assert!(help(&["user", "set-email", "--help"]).contains("--clear"));
    let alerts = help(&["alerts", "--help"]);
    assert!(
        alerts.contains("--mine") && alerts.contains("dismiss"),
        "{alerts}"
    );
    assert!(help(&["alerts", "dismiss", "--help"]).contains("for yourself only"));
}
