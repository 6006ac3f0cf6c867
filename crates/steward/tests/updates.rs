//! Updates through the built `steward` binary against a real `steward serve`: what is
//! available, schedule with windows in a time zone, bad input refused with the server's
//! message and nothing changed, approval by System Administrators only, reschedule and
//! withdraw, cancel behind a confirmation, `show --json` with the timeline, update now on a
//! sandbox waited for until the release changed, production behind a confirmation,
//! rehearsals and the update policy.
//!
//! The server runs on the wall clock, so the tests use a copy of the sample catalog whose
//! end-of-support dates are far ahead: 8.2 is then supported (n-1) and no mandatory or
//! automatic service update is scheduled behind the test's back.

mod common;

use std::path::Path;

use chrono::{DateTime, Duration, NaiveTime, Utc};
use serde_json::Value;

use common::*;

/// The sample catalog with every end of support moved to 2099.
fn catalog_dir(tmp: &Path) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog/crm");
    let dst = tmp.join("catalog");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
    }
    let toml = std::fs::read_to_string(dst.join("catalog.toml")).unwrap();
    let mut out = String::new();
    for line in toml.lines() {
        if line.starts_with("end_of_support") {
            out.push_str("end_of_support = \"2099-01-31\"\n");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(dst.join("catalog.toml"), out).unwrap();
    dst.display().to_string()
}

fn start(tmp: &tempfile::TempDir) -> Server {
    let catalog = catalog_dir(tmp.path());
    Server::start_env(&data_dir(tmp), &[("STEWARD_CATALOG_DIR", &catalog)])
}

fn create_instance(s: &Server, name: &str, kind: &str, release: &str) {
    s.run(&[
        "instance",
        "create",
        name,
        "--type",
        kind,
        "--release",
        release,
    ])
    .ok();
}

/// A Delegated Admin `dora` and her API token.
fn delegated_token(s: &Server) -> String {
    s.run_as(
        Some(TOKEN),
        &[
            "user",
            "create",
            "dora",
            "--role",
            "delegated_admin",
            "--password-stdin",
        ],
        "correct horse battery\n",
    )
    .ok();
    let login = s
        .run_as(
            None,
            &["token", "login", "dora", "--json"],
            "correct horse battery\n",
        )
        .ok()
        .json();
    login["secret"].as_str().unwrap().to_owned()
}

fn overview(s: &Server, name: &str) -> Value {
    s.run(&["update", "list", name, "--json"]).ok().json()
}

fn at(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap().parse().unwrap()
}

/// Midnight UTC `days` from now, as the API would print it.
fn days_ahead(days: i64) -> DateTime<Utc> {
    (Utc::now() + Duration::days(days))
        .date_naive()
        .and_time(NaiveTime::MIN)
        .and_utc()
}

#[test]
fn schedule_approve_reschedule_cancel_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&tmp);
    let dora = delegated_token(&s);
    create_instance(&s, "crm-prod", "production", "8.2");

    // What is available.
    let o = overview(&s, "crm-prod");
    assert_eq!(o["release"], "8.2");
    assert_eq!(o["support"]["status"], "supported", "{o:#}");
    assert_eq!(o["update_available"], true);
    let targets: Vec<&str> = o["available"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["version"].as_str().unwrap())
        .collect();
    assert_eq!(targets, ["9.0", "9.1"]);
    assert!(o["current"].is_null() && o["mandatory"].is_null(), "{o:#}");
    let human = s.run(&["update", "list", "crm-prod"]).ok().stdout;
    assert!(human.contains("Update is Available"), "{human}");
    assert!(human.contains("9.1") && human.contains("Eligible target releases"));

    // Bad input: exit code 2, the server's message, nothing scheduled.
    let day = |d: i64| days_ahead(d).format("%Y-%m-%dT22:00").to_string();
    let yesterday = (Utc::now() - Duration::days(1))
        .format("%Y-%m-%dT22:00")
        .to_string();
    let bad: [(&[&str], &str); 5] = [
        (
            &[
                "--target",
                "9.0",
                "--preferred",
                &yesterday,
                "--alternate",
                &day(20),
            ],
            "in the past (window_in_past)",
        ),
        (
            &[
                "--target",
                "9.0",
                "--preferred",
                &day(10),
                "--alternate",
                &format!("{}T04:00", days_ahead(11).format("%Y-%m-%d")),
            ],
            "(windows_overlap)",
        ),
        (
            &[
                "--target",
                "9.0",
                "--preferred",
                &day(10),
                "--alternate",
                &day(17),
                "--time-zone",
                "Mars/Olympus",
            ],
            "unknown time zone \"Mars/Olympus\"; use an IANA name",
        ),
        (
            &[
                "--target",
                "8.1",
                "--preferred",
                &day(10),
                "--alternate",
                &day(17),
            ],
            "(target_not_newer)",
        ),
        (
            &[
                "--target",
                "9.0",
                "--preferred",
                "next tuesday",
                "--alternate",
                &day(17),
            ],
            "is not a time",
        ),
    ];
    for (args, message) in bad {
        let mut cmd = vec!["update", "schedule", "crm-prod"];
        cmd.extend_from_slice(args);
        s.run_as(Some(&dora), &cmd, "").fails(2, message);
    }
    assert!(
        overview(&s, "crm-prod")["current"].is_null(),
        "nothing changed"
    );

    // Schedule as the Delegated Admin, in Asia/Kolkata (UTC+05:30, no daylight saving).
    let preferred_local = format!("{}T22:00", days_ahead(10).format("%Y-%m-%d"));
    let alternate_local = format!("{}T22:00", days_ahead(17).format("%Y-%m-%d"));
    let u = s
        .run_as(
            Some(&dora),
            &[
                "update",
                "schedule",
                "crm-prod",
                "--target",
                "9.0",
                "--preferred",
                &preferred_local,
                "--alternate",
                &alternate_local,
                "--time-zone",
                "Asia/Kolkata",
                "--json",
            ],
            "",
        )
        .ok()
        .json();
    assert_eq!(u["status"], "scheduled", "{u:#}");
    assert_eq!(u["status_label"], "Scheduled — awaiting approval");
    assert_eq!(u["needs_approval"], true);
    assert_eq!(u["kind"], "major");
    let preferred = days_ahead(10) + Duration::minutes(16 * 60 + 30);
    assert_eq!(at(&u["preferred"]["start"]), preferred, "stored in UTC");
    assert_eq!(
        at(&u["preferred"]["end"]) - preferred,
        Duration::hours(12),
        "a window lasts 12 hours"
    );
    assert_eq!(
        at(&u["alternate"]["start"]),
        days_ahead(17) + Duration::minutes(990)
    );
    // A second one is refused while this one is open.
    s.run(&[
        "update",
        "schedule",
        "crm-prod",
        "--target",
        "9.1",
        "--preferred",
        &day(30),
        "--alternate",
        &day(40),
    ])
    .fails(5, "overlapping_operation");

    // Approval: System Administrators only.
    let denied = s
        .run_as(Some(&dora), &["update", "approve", "crm-prod"], "")
        .fails(3, "may not approve updates");
    assert!(denied.stderr.contains("(forbidden)"), "{denied:#?}");
    assert_eq!(overview(&s, "crm-prod")["current"]["status"], "scheduled");
    let approved = s.run(&["update", "approve", "crm-prod"]).ok().stdout;
    assert!(approved.contains("Queued (Not Started)"), "{approved}");
    s.run(&["update", "approve", "crm-prod"])
        .fails(5, "already_approved");

    // Reschedule the windows (RFC 3339 with an offset): still approved.
    let new_start = days_ahead(12) + Duration::hours(20);
    let moved = s
        .run_as(
            Some(&dora),
            &[
                "update",
                "reschedule",
                "crm-prod",
                "--preferred",
                &(new_start + Duration::hours(1))
                    .format("%Y-%m-%dT%H:%M:%S+01:00")
                    .to_string(),
                "--json",
            ],
            "",
        )
        .ok()
        .json();
    assert_eq!(at(&moved["preferred"]["start"]), new_start);
    assert_eq!(moved["status"], "queued");
    assert_eq!(moved["approved_by"], "admin");
    // An overlapping reschedule is refused and changes nothing.
    s.run(&[
        "update",
        "reschedule",
        "crm-prod",
        "--alternate",
        &(new_start + Duration::hours(3)).to_rfc3339(),
    ])
    .fails(2, "windows_overlap");
    // A new target is a new decision: the approval is cleared.
    let retarget = s
        .run(&[
            "update",
            "reschedule",
            "crm-prod",
            "--target",
            "9.1",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(retarget["target_release"], "9.1");
    assert_eq!(retarget["status"], "scheduled");
    assert!(retarget["approved_by"].is_null(), "{retarget:#}");
    s.run(&["update", "withdraw", "crm-prod"])
        .fails(5, "not_approved");
    s.run(&["update", "approve", "crm-prod"]).ok();
    s.run_as(Some(&dora), &["update", "withdraw", "crm-prod"], "")
        .fails(3, "may not approve updates");
    let withdrawn = s
        .run(&["update", "withdraw", "crm-prod", "--json"])
        .ok()
        .json();
    assert_eq!(withdrawn["status"], "scheduled");

    // show --json: the update with its whole timeline.
    let shown = s.run(&["update", "show", "crm-prod", "--json"]).ok().json();
    assert_eq!(shown["id"], u["id"]);
    assert_eq!(at(&shown["preferred"]["start"]), new_start);
    assert_eq!(shown["target_release"], "9.1");
    let events: Vec<&str> = shown["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "scheduled",
            "approved",
            "rescheduled",
            "rescheduled",
            "approved",
            "approval_withdrawn"
        ],
        "{shown:#}"
    );
    let first_move = &shown["timeline"][2];
    assert_eq!(first_move["actor"], "dora");
    assert_eq!(
        at(&first_move["details"]["before"]["preferred"]["start"]),
        preferred,
        "{first_move:#}"
    );
    assert_eq!(
        at(&first_move["details"]["after"]["preferred"]["start"]),
        new_start
    );
    // The same for people, with the windows in a time zone too.
    let text = s
        .run(&["update", "show", "crm-prod", "--time-zone", "Asia/Kolkata"])
        .ok()
        .stdout;
    assert!(text.contains("Scheduled — awaiting approval"), "{text}");
    assert!(text.contains("IST"), "times in the zone asked for: {text}");
    assert!(text.contains("Queued (Not Started)") && text.contains("Timeline:"));
    assert!(text.contains("approval_withdrawn"), "{text}");
    s.run(&["update", "show", "crm-prod", "--time-zone", "Nowhere/Else"])
        .fails(2, "unknown time zone");

    // Cancel needs a confirmation: scripts pass --yes, or nothing happens.
    s.run(&["update", "cancel", "crm-prod"]).fails(
        2,
        "refusing to cancel the update of crm-prod without confirmation",
    );
    assert_eq!(overview(&s, "crm-prod")["current"]["id"], u["id"]);
    let cancelled = s
        .run(&["update", "cancel", "crm-prod", "--yes"])
        .ok()
        .stdout;
    assert!(cancelled.contains("stays on release 8.2"), "{cancelled}");
    let o = overview(&s, "crm-prod");
    assert!(o["current"].is_null());
    assert_eq!(o["history"][0]["status"], "cancelled");
    assert_eq!(o["release"], "8.2");
    let history = s.run(&["update", "history", "crm-prod"]).ok().stdout;
    assert!(
        history.contains("Cancelled") && history.contains("8.2"),
        "{history}"
    );
    s.run(&["update", "cancel", "crm-prod", "--yes"])
        .fails(4, "no_open_update");
    // An update from the history, by id.
    let id = u["id"].to_string();
    let old = s
        .run(&["update", "show", "crm-prod", "--id", &id, "--json"])
        .ok()
        .json();
    assert_eq!(old["status"], "cancelled");
    assert_eq!(
        old["timeline"].as_array().unwrap().last().unwrap()["event"],
        "cancelled"
    );
    s.run(&["update", "show", "other", "--id", &id])
        .fails(4, "is not an update of other");
    s.run(&["update", "show", "nosuch"]).fails(4, "nosuch");
}

#[test]
fn update_now_on_a_sandbox_and_production_behind_a_confirmation() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&tmp);
    let dora = delegated_token(&s);
    create_instance(&s, "crm-sbx", "sandbox", "8.2");
    create_instance(&s, "crm-live", "production", "8.2");

    // A sandbox: no questions; --wait follows it to the end.
    let out = s
        .run(&[
            "update", "now", "crm-sbx", "--target", "9.1", "--wait", "--json",
        ])
        .ok();
    let u = out.json();
    assert_eq!(u["status"], "succeeded", "{u:#}");
    assert_eq!(u["status_label"], "Updated successfully");
    let stages: Vec<&str> = u["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["Backup", "Restore", "Database Upgrade", "Swap"]);
    assert!(
        u["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["finished_at"].is_null())
    );
    assert!(
        out.stderr
            .contains(&format!("update {} of crm-sbx: ", u["id"])),
        "progress on stderr: {}",
        out.stderr
    );
    let inst = s
        .run(&["instance", "show", "crm-sbx", "--json"])
        .ok()
        .json();
    assert_eq!(inst["release"], "9.1", "multi-hop 8.2 → 9.0 → 9.1");
    let text = s.run(&["update", "show", "crm-sbx"]).ok().stdout;
    assert!(
        text.contains("Updated successfully") && text.contains("Database Upgrade"),
        "{text}"
    );
    assert!(
        s.run(&["update", "list", "crm-sbx"])
            .ok()
            .stdout
            .contains("None: the instance is on the latest release")
    );

    // Production: without a terminal and without --yes nothing starts.
    s.run(&["update", "now", "crm-live", "--target", "9.0"])
        .fails(
            2,
            "refusing to update the production instance crm-live now without confirmation",
        );
    let o = overview(&s, "crm-live");
    assert!(o["current"].is_null() && o["history"].as_array().unwrap().is_empty());
    // A Delegated Admin cannot approve, so not "update now" a major update either.
    s.run_as(
        Some(&dora),
        &["update", "now", "crm-live", "--target", "9.0", "--yes"],
        "",
    )
    .fails(3, "forbidden");
    assert_eq!(overview(&s, "crm-live")["release"], "8.2");

    // A rehearsal on a throwaway copy first; crm-live is not touched.
    let r = s
        .run(&[
            "update", "rehearse", "crm-live", "--target", "9.0", "--wait", "--json",
        ])
        .ok()
        .json();
    assert_eq!(r["status"], "succeeded", "{r:#}");
    assert_eq!(r["target_release"], "9.0");
    assert!(r["duration_ms"].as_i64().is_some(), "{r:#}");
    assert_eq!(overview(&s, "crm-live")["release"], "8.2");
    let listed = s.run(&["update", "list", "crm-live"]).ok().stdout;
    let recent = listed
        .split("Recent rehearsals:")
        .nth(1)
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        recent.contains(&r["id"].to_string()) && recent.contains("succeeded"),
        "{listed}"
    );

    let u = s
        .run(&[
            "update", "now", "crm-live", "--target", "9.0", "--yes", "--wait",
        ])
        .ok()
        .stdout;
    assert!(u.contains("Updated crm-live from 8.2 to 9.0."), "{u}");
    assert_eq!(
        s.run(&["instance", "show", "crm-live", "--json"])
            .ok()
            .json()["release"],
        "9.0"
    );
    let history = s
        .run(&["update", "history", "--status", "succeeded", "--json"])
        .ok()
        .json();
    let names: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["instance"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["crm-live", "crm-sbx"], "newest first");
}

#[test]
fn the_update_policy_is_shown_and_changed_by_system_administrators() {
    let tmp = tempfile::tempdir().unwrap();
    let s = start(&tmp);
    let dora = delegated_token(&s);
    let p = s.run(&["update", "policy", "--json"]).ok().json();
    assert_eq!(p["supported_majors"], 2);
    assert_eq!(p["mandatory_when_behind"], 2);
    assert_eq!(p["source"], "built-in");
    let text = s.run_as(Some(&dora), &["update", "policy"], "").ok().stdout;
    assert!(text.contains("n, n-1"), "{text}");
    s.run_as(
        Some(&dora),
        &["update", "policy", "set", "--mandatory-when-behind", "3"],
        "",
    )
    .fails(3, "may not change the update policy");
    s.run(&["update", "policy", "set", "--supported-majors", "0"])
        .fails(2, "supported_majors must be 1 to 20");
    let changed = s
        .run(&[
            "update",
            "policy",
            "set",
            "--mandatory-when-behind",
            "3",
            "--maintenance-window-start",
            "23:30",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(changed["mandatory_when_behind"], 3);
    assert_eq!(changed["maintenance_window_start"], "23:30");
    assert_eq!(changed["supported_majors"], 2, "what is not given stays");
    assert_eq!(changed["source"], "store");
    s.run(&["update", "policy", "set"])
        .fails(2, "required arguments were not provided");
}

#[test]
fn the_help_explains_windows_approval_and_mandatory_updates() {
    let help = steward_command()
        .args(["update", "--help"])
        .output()
        .unwrap();
    let text = String::from_utf8(help.stdout).unwrap();
    for words in [
        "12 hours",
        "IANA name such as Europe/Paris",
        "stores and answers in UTC",
        "System Administrator approves",
        "Mandatory.",
        "Queued (Not Started)",
    ] {
        assert!(text.contains(words), "{words:?} missing from:\n{text}");
    }
}
