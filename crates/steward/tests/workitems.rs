//! Work items (database refreshes) through the built `steward` binary against a real
//! `steward serve`: the acknowledgment the CLI insists on, the server's refusals (lead time,
//! production target, same instance, unknown instance) passed on with their exit codes, and
//! a request listed, rescheduled and cancelled with --json.

mod common;

use chrono::{DateTime, Duration, SecondsFormat, Timelike, Utc};
use serde_json::Value;

use common::*;

fn create_instance(s: &Server, name: &str, kind: &str) {
    s.run(&["instance", "create", name, "--type", kind, "--json"])
        .ok();
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap()
        .with_timezone(&Utc)
}

/// A moment `hours` from now, on a whole minute.
fn in_hours(hours: i64) -> DateTime<Utc> {
    let t = Utc::now() + Duration::hours(hours);
    t.with_second(0).unwrap().with_nanosecond(0).unwrap()
}

fn list(s: &Server, filters: &[&str]) -> Vec<Value> {
    let mut args = vec!["workitem", "list", "--json"];
    args.extend_from_slice(filters);
    s.run(&args).ok().json().as_array().unwrap().clone()
}

fn show(s: &Server, id: i64) -> Value {
    s.run(&["workitem", "show", &id.to_string(), "--json"])
        .ok()
        .json()
}

#[test]
fn refresh_requests_are_refused_with_reasons_and_nothing_is_created() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "prod-a", "production");
    create_instance(&s, "sand-b", "sandbox");
    let window = rfc3339(in_hours(30));

    // Without --acknowledge the CLI refuses before asking the server, and says why.
    let out = s
        .run(&[
            "workitem",
            "refresh",
            "--source",
            "prod-a",
            "--target",
            "sand-b",
            "--window-start",
            &window,
        ])
        .fails(2, "without --acknowledge");
    for consequence in [
        "database is erased",
        "cannot be recovered from the refresh",
        "unavailable until the refresh completes",
        "documents folder is not touched",
    ] {
        assert!(
            out.stderr.contains(consequence),
            "{consequence:?}: {out:#?}"
        );
    }

    let refresh = |target: &str, window: &str| {
        s.run(&[
            "workitem",
            "refresh",
            "--source",
            "prod-a",
            "--target",
            target,
            "--window-start",
            window,
            "--acknowledge",
        ])
    };
    // A window inside the 24-hour lead time: the server's message names the earliest start.
    let out = refresh("sand-b", &rfc3339(in_hours(2))).fails(2, "(inside_lead_time)");
    assert!(
        out.stderr.contains(&Utc::now().format("%Y").to_string()),
        "{out:#?}"
    );
    refresh("sand-b", &rfc3339(in_hours(-1))).fails(2, "(window_in_past)");
    create_instance(&s, "prod-c", "production");
    let out = refresh("prod-c", &window).fails(5, "(production_target)");
    assert!(out.stderr.contains("sandbox"), "{out:#?}");
    refresh("nope-x", &window).fails(4, "(unknown_instance)");
    s.run(&[
        "workitem",
        "refresh",
        "--source",
        "sand-b",
        "--target",
        "sand-b",
        "--window-start",
        &window,
        "--acknowledge",
    ])
    .fails(2, "(same_instance)");
    // A time the CLI cannot read never reaches the server.
    refresh("sand-b", "next tuesday").fails(2, "--window-start");

    assert!(list(&s, &[]).is_empty(), "nothing was created");
    s.run(&["workitem", "show", "999"])
        .fails(4, "(unknown_work_item)");
}

#[test]
fn a_refresh_is_listed_rescheduled_and_cancelled() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "prod-a", "production");
    create_instance(&s, "sand-b", "sandbox");
    create_instance(&s, "sand-c", "sandbox");

    // A local time read in a time zone (Tokyo has no daylight saving time: UTC+9).
    let window = in_hours(48);
    let tokyo = (window + Duration::hours(9))
        .format("%Y-%m-%d %H:%M")
        .to_string();
    let w = s
        .run(&[
            "workitem",
            "refresh",
            "--source",
            "prod-a",
            "--target",
            "sand-b",
            "--window-start",
            &tokyo,
            "--time-zone",
            "Asia/Tokyo",
            "--acknowledge",
            "--json",
        ])
        .ok()
        .json();
    let id = w["id"].as_i64().unwrap();
    assert_eq!(w["kind"], "refresh");
    assert_eq!(w["source"], "prod-a");
    assert_eq!(w["target"], "sand-b");
    assert_eq!(time(&w["window_start"]), window);
    assert_eq!(w["point_in_time"], Value::Null, "latest by default");
    assert_eq!(w["status"], "accepted", "accepted automatically by default");
    assert_eq!(w["status_label"], "Request accepted");
    assert_eq!(w["requester"], "admin");

    // Another one, into another sandbox, to filter against.
    s.run(&[
        "workitem",
        "refresh",
        "--source",
        "prod-a",
        "--target",
        "sand-c",
        "--window-start",
        &rfc3339(in_hours(72)),
        "--acknowledge",
    ])
    .ok();
    let all = list(&s, &[]);
    assert_eq!(all.len(), 2);
    assert_eq!(all[1]["id"], id, "newest first");
    let only_b = list(&s, &["--instance", "sand-b"]);
    assert_eq!(only_b.len(), 1);
    assert_eq!(only_b[0]["id"], id);
    assert_eq!(
        list(&s, &["--instance", "prod-a"]).len(),
        2,
        "source matches too"
    );
    assert_eq!(list(&s, &["--status", "cancelled"]).len(), 0);

    // The human forms.
    let table = s.run(&["workitem", "list"]).ok().stdout;
    for text in [
        "ID",
        "SOURCE",
        "TARGET",
        "WINDOW START",
        "Request accepted",
        "sand-b",
        "latest",
    ] {
        assert!(table.contains(text), "{text:?} missing: {table}");
    }
    let details = s.run(&["workitem", "show", &id.to_string()]).ok().stdout;
    for text in [
        "Status:",
        "Request accepted",
        "Window start:",
        &window.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        "Downtime:",
        "Safety backup:",
        "Post-refresh scripts:",
        "History:",
    ] {
        assert!(details.contains(text), "{text:?} missing: {details}");
    }

    // Reschedule: a new window (a local time in UTC) and the latest point in time.
    let later = in_hours(60);
    let r = s
        .run(&[
            "workitem",
            "reschedule",
            &id.to_string(),
            "--window-start",
            &later.format("%Y-%m-%d %H:%M").to_string(),
            "--at",
            "latest",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(time(&r["window_start"]), later);
    assert_eq!(r["status"], "accepted");
    assert_eq!(time(&show(&s, id)["window_start"]), later);
    // Rescheduling into the lead time is refused and changes nothing.
    s.run(&[
        "workitem",
        "reschedule",
        &id.to_string(),
        "--window-start",
        &rfc3339(in_hours(1)),
    ])
    .fails(2, "(inside_lead_time)");
    assert_eq!(time(&show(&s, id)["window_start"]), later);
    // Reschedule needs something to change.
    let out = s.run(&["workitem", "reschedule", &id.to_string()]);
    assert_eq!(out.code, 2, "{out:#?}");

    // Cancel without a terminal and without --yes is refused; nothing changes.
    s.run(&["workitem", "cancel", &id.to_string()])
        .fails(2, "refusing to cancel work item");
    assert_eq!(show(&s, id)["status"], "accepted");

    let c = s
        .run(&["workitem", "cancel", &id.to_string(), "--yes", "--json"])
        .ok()
        .json();
    assert_eq!(c["status"], "cancelled");
    assert_eq!(c["status_label"], "Cancelled");
    let cancelled = list(&s, &["--status", "cancelled"]);
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0]["id"], id);
    let history: Vec<String> = show(&s, id)["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["status"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(history.first().unwrap(), "submitted", "{history:?}");
    assert_eq!(history.last().unwrap(), "cancelled", "{history:?}");

    // A cancelled item can be neither rescheduled nor cancelled again.
    let out = s.run(&[
        "workitem",
        "reschedule",
        &id.to_string(),
        "--window-start",
        &rfc3339(in_hours(80)),
    ]);
    assert!(out.stderr.contains("(work_item_finished)"), "{out:#?}");
    assert_eq!(out.code, 5, "{out:#?}");
    s.run(&["workitem", "cancel", &id.to_string(), "--yes"])
        .fails(5, "(work_item_finished)");
}

#[test]
fn a_viewer_sees_work_items_but_cannot_request_one() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "prod-a", "production");
    create_instance(&s, "sand-b", "sandbox");
    let viewer = viewer_token(&s);
    let args = [
        "workitem",
        "refresh",
        "--source",
        "prod-a",
        "--target",
        "sand-b",
        "--window-start",
        &rfc3339(in_hours(30)),
        "--acknowledge",
    ];
    let out = s.run_as(Some(&viewer), &args, "");
    assert_eq!(out.code, 3, "{out:#?}");
    s.run(&args).ok();
    let seen = s.run_as(Some(&viewer), &["workitem", "list", "--json"], "");
    assert_eq!(seen.code, 0, "{seen:#?}");
    assert_eq!(seen.json().as_array().unwrap().len(), 1);
}

#[test]
fn a_refresh_can_copy_a_restore_point() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "prod-a", "production");
    create_instance(&s, "sand-b", "sandbox");
    let none = s
        .run(&["workitem", "restore-points", "prod-a", "--json"])
        .ok()
        .json();
    assert_eq!(none["instance"], "prod-a");
    assert_eq!(none["points"].as_array().unwrap().len(), 0);
    let b = s
        .run(&[
            "backup", "create", "prod-a", "--label", "before", "--wait", "--json",
        ])
        .ok()
        .json();
    let points = s
        .run(&["workitem", "restore-points", "prod-a", "--json"])
        .ok()
        .json();
    let points = points["points"].as_array().unwrap().clone();
    assert_eq!(points.len(), 1, "{points:?}");
    assert_eq!(points[0]["backup_id"], b["id"]);
    let human = s.run(&["workitem", "restore-points", "prod-a"]).ok().stdout;
    assert!(human.contains("before"), "{human}");
    let at = points[0]["at"].as_str().unwrap();
    let w = s
        .run(&[
            "workitem",
            "refresh",
            "--source",
            "prod-a",
            "--target",
            "sand-b",
            "--at",
            at,
            "--window-start",
            &rfc3339(in_hours(30)),
            "--acknowledge",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(time(&w["point_in_time"]), time(&points[0]["at"]));
    // A moment before any restore point is outside the range.
    s.run(&[
        "workitem",
        "refresh",
        "--source",
        "prod-a",
        "--target",
        "sand-b",
        "--at",
        "2001-01-01 00:00",
        "--window-start",
        &rfc3339(in_hours(30)),
        "--acknowledge",
    ])
    .fails(2, "(outside_restore_range)");
}

#[test]
fn workitem_help_explains_lead_time_statuses_and_consequences() {
    let help = |args: &[&str]| {
        let out = run(steward_command().args(args), "");
        assert_eq!(out.code, 0, "{out:#?}");
        out.stdout
    };
    let top = help(&["workitem", "--help"]);
    for text in [
        "24 hours",
        "Submitted",
        "Request accepted",
        "In progress",
        "Succeeded",
        "Failed",
        "Cancelled",
        "cannot be recovered",
        "unavailable until",
        "documents folder is not touched",
        "sandbox",
    ] {
        assert!(top.contains(text), "{text:?} missing: {top}");
    }
    assert!(top.contains("continuous capture"), "{top}");
    assert!(
        top.contains("never covered"),
        "the fallback to backups: {top}"
    );
    let refresh = help(&["workitem", "refresh", "--help"]);
    for text in [
        "--acknowledge",
        "--window-start",
        "--at",
        "--time-zone",
        "lead time",
    ] {
        assert!(refresh.contains(text), "{text:?} missing: {refresh}");
    }
    assert!(help(&["workitem", "cancel", "--help"]).contains("--yes"));
}

#[test]
fn an_administrator_accepts_submitted_requests_when_auto_accept_is_off() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_env(&data_dir(&tmp), &[("STEWARD_REFRESH_AUTO_ACCEPT", "false")]);
    create_instance(&s, "prod-a", "production");
    create_instance(&s, "sand-b", "sandbox");
    let w = s
        .run(&[
            "workitem",
            "refresh",
            "--source",
            "prod-a",
            "--target",
            "sand-b",
            "--window-start",
            &rfc3339(in_hours(30)),
            "--acknowledge",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(w["status"], "submitted");
    assert_eq!(w["status_label"], "Submitted");
    let id = w["id"].as_i64().unwrap().to_string();

    let viewer = viewer_token(&s);
    let out = s.run_as(Some(&viewer), &["workitem", "accept", &id], "");
    assert_eq!(out.code, 3, "{out:#?}");
    assert_eq!(show(&s, w["id"].as_i64().unwrap())["status"], "submitted");

    let out = s.run(&["workitem", "accept", &id]).ok();
    assert!(
        out.stdout.contains(&format!("Accepted work item {id}")),
        "{out:#?}"
    );
    assert_eq!(show(&s, w["id"].as_i64().unwrap())["status"], "accepted");
    s.run(&["workitem", "accept", &id])
        .fails(5, "(work_item_not_submitted)");
}

/// Every account, in id order: what a copy of the source at a moment must hold.
fn accounts(db: &std::path::Path) -> Vec<(i64, String)> {
    let c = open(db);
    let mut st = c
        .prepare("SELECT id, name FROM accounts ORDER BY id")
        .unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn restore_points(s: &Server, name: &str) -> Value {
    s.run(&["workitem", "restore-points", name, "--json"])
        .ok()
        .json()
}

#[test]
fn a_refresh_at_a_moment_copies_exactly_that_moment_when_capture_covers_it() {
    let tmp = tempfile::tempdir().unwrap();
    // No post-refresh scripts: the copy must equal the source row by row.
    let scripts = tmp.path().join("scripts");
    std::fs::create_dir(&scripts).unwrap();
    let s = Server::start_env(
        &data_dir(&tmp),
        &[
            ("STEWARD_CONTINUOUS_CAPTURE", "true"),
            ("STEWARD_CAPTURE_INTERVAL_MS", "20"),
            ("STEWARD_REFRESH_LEAD_HOURS", "0"),
            (
                "STEWARD_POST_REFRESH_SCRIPTS_DIR",
                scripts.to_str().unwrap(),
            ),
        ],
    );
    create_instance(&s, "prod-a", "production");
    create_instance(&s, "sand-b", "sandbox");
    let prod_db =
        std::path::PathBuf::from(instance(&s, "prod-a")["database_path"].as_str().unwrap());
    let sand_db =
        std::path::PathBuf::from(instance(&s, "sand-b")["database_path"].as_str().unwrap());
    let covered = |s: &Server, t: DateTime<Utc>| {
        poll(
            s,
            std::time::Duration::from_secs(30),
            || restore_points(s, "prod-a"),
            |v| {
                v["range"]["latest"]
                    .as_str()
                    .is_some_and(|l| time(&Value::from(l)) >= t)
            },
        )
    };
    covered(&s, Utc::now());

    // A commit, the moment well after it (capture reads every 20 ms), then a later commit.
    let commit = Utc::now();
    open(&prod_db)
        .execute_batch("INSERT INTO accounts (name) VALUES ('at the moment');")
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let at = Utc::now();
    let expected = accounts(&prod_db);
    std::thread::sleep(std::time::Duration::from_millis(100));
    open(&prod_db)
        .execute_batch("INSERT INTO accounts (name) VALUES ('after the moment');")
        .unwrap();
    let points = covered(&s, Utc::now());

    // restore-points shows the range, not backups; --json gives it.
    assert_eq!(points["points"], serde_json::json!([]), "{points:#}");
    assert_eq!(points["range"]["instance"], "prod-a");
    assert!(!points["range"]["spans"].as_array().unwrap().is_empty());
    let human = s.run(&["workitem", "restore-points", "prod-a"]).ok().stdout;
    assert!(human.contains("prod-a is restorable from "), "{human}");
    assert!(human.contains("any moment"), "{human}");

    let request = |at: &str| {
        s.run(&[
            "workitem",
            "refresh",
            "--source",
            "prod-a",
            "--target",
            "sand-b",
            "--at",
            at,
            "--window-start",
            &(Utc::now() + Duration::seconds(2)).to_rfc3339_opts(SecondsFormat::Millis, true),
            "--acknowledge",
            "--json",
        ])
    };
    // A moment before capture started is refused, naming the range; nothing is created.
    let out = request(&rfc3339(Utc::now() - Duration::hours(1))).fails(5, "(moment_outside_range)");
    assert!(
        out.stderr.contains("restorable range of prod-a: from "),
        "{out:#?}"
    );
    assert!(list(&s, &[]).is_empty());

    let w = request(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
        .ok()
        .json();
    assert!(w["moment"]["chain_id"].is_i64(), "{w:#}");
    assert_eq!(w["restore_point"], Value::Null, "{w:#}");
    let id = w["id"].as_i64().unwrap();
    let pending = s.run(&["workitem", "show", &id.to_string()]).ok().stdout;
    assert!(pending.contains("will copy the state at"), "{pending}");

    // The scheduler starts it at its next tick (once a minute).
    let done = poll(
        &s,
        std::time::Duration::from_secs(100),
        || show(&s, id),
        |w| matches!(w["status"].as_str(), Some("succeeded" | "failed")),
    );
    assert_eq!(done["status"], "succeeded", "{done:#}");
    assert_eq!(
        accounts(&sand_db),
        expected,
        "exactly prod-a's rows at the moment"
    );
    let copied = time(&done["moment"]["commit_at"]);
    assert!(commit <= copied && copied <= at, "{done:#}");
    let shown = s.run(&["workitem", "show", &id.to_string()]).ok().stdout;
    assert!(
        shown.contains(&format!(
            "the state committed at {}",
            copied.format("%Y-%m-%d %H:%M:%S%.3f UTC")
        )),
        "{shown}"
    );
    assert!(shown.contains("the last commit at or before"), "{shown}");
    assert!(!shown.contains("(backup "), "no backup was copied: {shown}");
}

/// Runs a client command on a pseudo-terminal (with util-linux `script`), answering `answer`
/// to its question; `None` when `script` is not installed.
fn run_on_terminal(s: &Server, args: &[&str], answer: &str) -> Option<Out> {
    let probe = std::process::Command::new("script")
        .arg("--version")
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        return None;
    }
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let line = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = std::process::Command::new("script");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("STEWARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.args(["-qec", &line, "/dev/null"])
        .env("STEWARD_URL", &s.url)
        .env("STEWARD_TOKEN", TOKEN);
    Some(run(&mut cmd, answer))
}

#[test]
fn cancel_asks_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "prod-a", "production");
    create_instance(&s, "sand-b", "sandbox");
    let w = s
        .run(&[
            "workitem",
            "refresh",
            "--source",
            "prod-a",
            "--target",
            "sand-b",
            "--window-start",
            &rfc3339(in_hours(30)),
            "--acknowledge",
            "--json",
        ])
        .ok()
        .json();
    let id = w["id"].as_i64().unwrap();
    let Some(out) = run_on_terminal(&s, &["workitem", "cancel", &id.to_string()], "n\n") else {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    };
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout.contains(&format!(
            "Cancel work item {id} (refresh sand-b from prod-a"
        )),
        "{out:#?}"
    );
    assert!(out.stdout.contains("was not cancelled"), "{out:#?}");
    assert_eq!(show(&s, id)["status"], "accepted");

    let out = run_on_terminal(&s, &["workitem", "cancel", &id.to_string()], "y\n").unwrap();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains(&format!("Cancelled work item {id}")),
        "{out:#?}"
    );
    assert_eq!(show(&s, id)["status"], "cancelled");
}
