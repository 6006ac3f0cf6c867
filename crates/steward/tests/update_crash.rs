//! A server killed with SIGKILL in the middle of an update (seed 001): the built `steward`
//! binary against a real `steward serve` that pauses in each job stage
//! (STEWARD_JOB_STAGE_PAUSE_MS), so the kill lands in a known stage. Killed during the
//! Database Upgrade: after a restart the instance is on its old release, its data intact, the
//! staging copy gone, and the same update then goes through. Killed right after the swap
//! committed: the restart finishes the update as succeeded on the new release.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

#[test]
fn sigkill_during_the_database_upgrade_leaves_the_instance_on_its_old_release_intact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp);
    let s = Server::start_env(&dir, &[("STEWARD_JOB_STAGE_PAUSE_MS", "3000")]);
    let created = s
        .run(&[
            "instance",
            "create",
            "crm-sand",
            "--type",
            "sandbox",
            "--release",
            "8.2",
            "--json",
        ])
        .ok()
        .json();
    let db = PathBuf::from(created["database_path"].as_str().unwrap());
    open(&db)
        .execute(
            "INSERT INTO accounts (name) VALUES ('Kept through the crash')",
            [],
        )
        .unwrap();
    let before = dump(&db);

    let u = s
        .run(&["update", "now", "crm-sand", "--target", "9.0", "--json"])
        .ok()
        .json();
    let job_id = u["job_id"]
        .as_i64()
        .unwrap_or_else(|| panic!("no job: {u:#}"));
    poll(
        &s,
        Duration::from_secs(60),
        || job(&s, job_id),
        |j| j["state"] == "running" && j["stage"] == "Database Upgrade",
    );
    assert_eq!(instance(&s, "crm-sand")["state"], "updating");
    assert_eq!(
        staged_files(&db, ".updating").len(),
        1,
        "the staging copy waits beside the database"
    );
    s.kill();

    let s = Server::start(&dir);
    let failed = poll(
        &s,
        Duration::from_secs(10),
        || job(&s, job_id),
        |j| j["state"] != "running" && j["state"] != "queued",
    );
    assert_eq!(failed["state"], "failed", "{failed:#}");
    assert!(
        failed["last_error"]
            .as_str()
            .unwrap()
            .contains("interrupted"),
        "{failed:#}"
    );
    let inst = instance(&s, "crm-sand");
    assert_eq!(
        (inst["state"].as_str(), inst["release"].as_str()),
        (Some("available"), Some("8.2")),
        "{inst:#}"
    );
    assert_eq!(
        dump(&db),
        before,
        "the instance's database is exactly as before"
    );
    assert!(
        staged_files(&db, ".updating").is_empty(),
        "{:?}",
        staged_files(&db, ".updating")
    );

    // The instance is usable: the same update now goes through.
    let u = s
        .run(&["update", "now", "crm-sand", "--target", "9.0", "--json"])
        .ok()
        .json();
    let job_id = u["job_id"].as_i64().unwrap();
    let done = poll(
        &s,
        Duration::from_secs(60),
        || job(&s, job_id),
        |j| j["state"] != "running" && j["state"] != "queued",
    );
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(instance(&s, "crm-sand")["release"], "9.0");
    let n: i64 = open(&db)
        .query_row(
            "SELECT count(*) FROM accounts WHERE name = 'Kept through the crash'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
}

/// The swap is one SQLite transaction. If the process dies right after it committed but before
/// the update was recorded as done, the next start must see the database on the target release
/// and finish the update as succeeded (not "fail" it and leave the store saying 8.2). The kill
/// lands in the Swap stage's pause; the committed swap is reproduced by copying the staging copy
/// into the live database with SQLite's backup API, as `swap_in` does.
#[test]
fn sigkill_right_after_the_swap_committed_finishes_the_update_on_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp);
    let s = Server::start_env(&dir, &[("STEWARD_JOB_STAGE_PAUSE_MS", "3000")]);
    let created = s
        .run(&[
            "instance",
            "create",
            "crm-sand",
            "--type",
            "sandbox",
            "--release",
            "8.2",
            "--json",
        ])
        .ok()
        .json();
    let db = PathBuf::from(created["database_path"].as_str().unwrap());
    open(&db)
        .execute(
            "INSERT INTO accounts (name) VALUES ('Kept through the crash')",
            [],
        )
        .unwrap();
    let u = s
        .run(&["update", "now", "crm-sand", "--target", "9.0", "--json"])
        .ok()
        .json();
    let job_id = u["job_id"].as_i64().unwrap();
    poll(
        &s,
        Duration::from_secs(60),
        || job(&s, job_id),
        |j| j["state"] == "running" && j["stage"] == "Swap",
    );
    let staging: Vec<PathBuf> = staged_files(&db, ".updating")
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".updating"))
        .collect();
    assert_eq!(staging.len(), 1, "{staging:?}");
    s.kill();
    // What the swap's committed transaction leaves: the live database is the upgraded copy.
    let upgraded = open(&staging[0]);
    let mut live = open(&db);
    {
        let copy = rusqlite::backup::Backup::new(&upgraded, &mut live).unwrap();
        copy.run_to_completion(1024, Duration::ZERO, None).unwrap();
    }
    drop(live);
    drop(upgraded);

    let s = Server::start(&dir);
    let ended = poll(
        &s,
        Duration::from_secs(10),
        || job(&s, job_id),
        |j| j["state"] != "running" && j["state"] != "queued",
    );
    assert!(
        ended["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("the swap had completed"),
        "{ended:#}"
    );
    let inst = instance(&s, "crm-sand");
    assert_eq!(
        (inst["state"].as_str(), inst["release"].as_str()),
        (Some("available"), Some("9.0")),
        "{inst:#}"
    );
    // (The scheduler may meanwhile have scheduled the automatic service update to 9.1.)
    let id = u["id"].to_string();
    let shown = s
        .run(&["update", "show", "crm-sand", "--id", &id, "--json"])
        .ok()
        .json();
    assert_eq!(shown["status"], "succeeded", "{shown:#}");
    assert!(
        staged_files(&db, ".updating").is_empty(),
        "{:?}",
        staged_files(&db, ".updating")
    );
    let n: i64 = open(&db)
        .query_row(
            "SELECT count(*) FROM accounts WHERE name = 'Kept through the crash'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 1);
}
