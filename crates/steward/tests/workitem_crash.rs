//! A refresh interrupted by a SIGKILL of `steward serve`: after a restart the target holds
//! its whole previous database, the staging copy is gone, the target is available and the
//! work item is Failed with "interrupted". The server pauses in each job stage
//! (STEWARD_JOB_STAGE_PAUSE_MS) so the kill lands in a known stage.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;

use common::*;

/// How long each job stage pauses in the killed server.
const PAUSE_MS: &str = "3000";

/// Refresh windows may start right away in these tests.
const NO_LEAD: (&str, &str) = ("STEWARD_REFRESH_LEAD_HOURS", "0");

fn create_instance(s: &Server, name: &str, kind: &str, release: &str) -> Value {
    s.run(&[
        "instance",
        "create",
        name,
        "--type",
        kind,
        "--release",
        release,
        "--json",
    ])
    .ok()
    .json()
}

fn sql(db: &Path, script: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(10)).unwrap();
    c.execute_batch(script).unwrap();
}

/// Requests a refresh of the sandbox `acme-test` (9.0, rows and a document of its own) from
/// a backup of `acme-prod` (9.1), kills the server while the refresh job is in `stage`,
/// starts it again and checks that the sandbox is whole, unchanged and available.
fn refresh_killed_in(stage: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp);

    let s = Server::start_env(&dir, &[NO_LEAD]);
    let prod = create_instance(&s, "acme-prod", "production", "9.1");
    sql(
        Path::new(prod["database_path"].as_str().unwrap()),
        "INSERT INTO accounts (name) VALUES ('from production');",
    );
    let backup = s
        .run(&[
            "backup",
            "create",
            "acme-prod",
            "--label",
            "golden",
            "--wait",
            "--json",
        ])
        .ok()
        .json();
    let target = create_instance(&s, "acme-test", "sandbox", "9.0");
    let target_db = PathBuf::from(target["database_path"].as_str().unwrap());
    let docs = Path::new(target["documents_path"].as_str().unwrap()).join("keep.txt");
    std::fs::write(&docs, "kept").unwrap();
    sql(
        &target_db,
        "INSERT INTO accounts (name) VALUES ('the sandbox''s own');",
    );
    let before = dump(&target_db);
    let window = (Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let w = s
        .run(&[
            "workitem",
            "refresh",
            "--source",
            "acme-prod",
            "--target",
            "acme-test",
            "--at",
            backup["completed_at"].as_str().unwrap(),
            "--window-start",
            &window,
            "--acknowledge",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(w["status"], "accepted", "{w:#}");
    let id = w["id"].as_i64().unwrap().to_string();
    assert!(s.terminate().success());
    std::thread::sleep(Duration::from_millis(2500));

    // The scheduler's first tick, at start, opens the window.
    let s = Server::start_env(&dir, &[NO_LEAD, ("STEWARD_JOB_STAGE_PAUSE_MS", PAUSE_MS)]);
    let show = || s.run(&["workitem", "show", &id, "--json"]).ok().json();
    let running = poll(&s, Duration::from_secs(20), show, |w| w["job_id"].is_i64());
    let job_id = running["job_id"].as_i64().unwrap().to_string();
    poll(
        &s,
        Duration::from_secs(60),
        || s.run(&["job", "show", &job_id, "--json"]).ok().json(),
        |j| j["state"] == "running" && j["stage"] == stage,
    );
    assert_eq!(show()["status"], "in_progress");
    assert_eq!(
        instance(&s, "acme-test")["state"],
        "refreshing",
        "the target is unavailable from the safety backup until the refresh completes"
    );
    assert_eq!(
        staged_files(&target_db, ".refreshing").len(),
        1,
        "the copy is staged beside the target"
    );
    s.kill();

    let s = Server::start(&dir);
    let failed = poll(
        &s,
        Duration::from_secs(20),
        || s.run(&["workitem", "show", &id, "--json"]).ok().json(),
        |w| w["status"] != "in_progress",
    );
    assert_eq!(failed["status"], "failed", "{failed:#}");
    let error = failed["error"].as_str().unwrap();
    assert!(error.contains("interrupted"), "{error}");
    assert!(failed["finished_at"].is_string());
    let last = failed["history"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(
        (last["status"].as_str(), last["actor"].as_str()),
        (Some("failed"), Some("System"))
    );
    let job = s.run(&["job", "show", &job_id, "--json"]).ok().json();
    assert_eq!(job["state"], "failed", "{job:#}");
    let t = instance(&s, "acme-test");
    assert_eq!(t["state"], "available", "{t:#}");
    assert_eq!(t["release"], "9.0", "{t:#}");
    assert_eq!(
        dump(&target_db),
        before,
        "the sandbox holds its previous database"
    );
    assert!(
        staged_files(&target_db, ".refreshing").is_empty(),
        "{:?}",
        staged_files(&target_db, ".refreshing")
    );
    assert_eq!(std::fs::read_to_string(&docs).unwrap(), "kept");
    let alerts = s.run(&["alerts", "--json"]).ok().json();
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["level"] == "error"
                && a["instance"] == "acme-test"
                && a["message"].as_str().unwrap().contains("interrupted")),
        "{alerts:#}"
    );
    assert!(s.terminate().success());
}

#[test]
fn sigkill_while_post_refresh_scripts_run_leaves_the_sandbox_as_it_was() {
    refresh_killed_in("scripts");
}

#[test]
fn sigkill_before_the_swap_leaves_the_sandbox_as_it_was_and_available() {
    refresh_killed_in("swap");
}
