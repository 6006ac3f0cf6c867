//! Restore drills through the built `steward` binary against a real `steward serve`: run one
//! and see it in `instance show` and `backup list`; a corrupted backup fails its drill and is
//! listed by `drill list --failed`; bad input and a bad schedule get specific errors.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Flips a byte in the middle of every pack of the repository under `data/backups/data/`.
fn corrupt_packs(data: &Path) {
    let mut n = 0;
    for sub in files_in(&data.join("backups").join("data")) {
        for p in files_in(&sub) {
            let mut bytes = std::fs::read(&p).unwrap();
            let i = bytes.len() / 2;
            bytes[i] ^= 0xff;
            std::fs::write(&p, bytes).unwrap();
            n += 1;
        }
    }
    assert!(n > 0, "the repository has packs");
}

#[test]
fn drills_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    // Scheduled drills off: the test runs its own at the moments it chooses.
    let s = Server::start_env(&data, &[("STEWARD_RESTORE_DRILL_SCHEDULE", "off")]);
    for (name, kind) in [("crm-prod", "production"), ("crm-idle", "sandbox")] {
        s.run(&["instance", "create", name, "--type", kind]).ok();
    }
    s.run(&[
        "backup", "create", "crm-prod", "--label", "nightly", "--wait",
    ])
    .ok();

    // Never drilled yet.
    let shown = s.run(&["instance", "show", "crm-prod"]).ok();
    assert!(shown.stdout.contains("Last drill:"), "{}", shown.stdout);
    assert!(shown.stdout.contains("never"), "{}", shown.stdout);

    // Run one and wait: it passes; instance show and backup list show it.
    let run = s
        .run(&["drill", "run", "--instance", "crm-prod", "--wait"])
        .ok();
    assert!(run.stdout.contains("passed"), "{run:#?}");
    assert!(
        run.stdout
            .contains("whole-file hash ok, integrity_check ok, row counts ok"),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("drill "),
        "progress on stderr: {run:#?}"
    );
    let inst = instance(&s, "crm-prod");
    assert_eq!(inst["last_drill"]["state"], "passed", "{inst:#}");
    assert_eq!(inst["last_drill"]["backup_label"], "nightly");
    assert!(inst["last_drill"]["duration_ms"].is_u64());
    let shown = s.run(&["instance", "show", "crm-prod"]).ok();
    let line = shown
        .stdout
        .lines()
        .find(|l| l.starts_with("Last drill:"))
        .unwrap();
    assert!(
        line.contains("passed") && line.contains("(nightly)"),
        "{line}"
    );
    let list = s.run(&["backup", "list", "crm-prod"]).ok();
    assert!(list.stdout.contains("DRILL"), "{}", list.stdout);
    assert!(list.stdout.contains("passed"), "{}", list.stdout);
    assert!(
        files_in(&data.join("drills")).is_empty(),
        "no throwaway file left"
    );

    // The fleet view: crm-idle was never drilled; nothing failed yet.
    let fleet = s.run(&["drill", "list", "--json"]).ok().json();
    let listed: Vec<&str> = fleet["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["crm-idle"]);
    assert_eq!(fleet["matching"], 1, "{fleet}");
    let idle = s
        .run(&["drill", "list", "--filter", "IDLE", "--json"])
        .ok()
        .json();
    assert_eq!(idle["instances"][0]["instance"], "crm-idle", "{idle}");
    let other = s
        .run(&["drill", "list", "--filter", "prod", "--json"])
        .ok()
        .json();
    assert!(other["instances"].as_array().unwrap().is_empty(), "{other}");
    let none = s.run(&["drill", "list", "--failed", "--json"]).ok().json();
    assert!(none["instances"].as_array().unwrap().is_empty());

    // A corrupted backup fails its drill (exit 1) and is listed by --failed.
    corrupt_packs(&data);
    let failed = s.run(&["drill", "run", "--instance", "crm-prod", "--wait"]);
    assert_eq!(failed.code, 1, "{failed:#?}");
    assert!(
        failed
            .stderr
            .contains("error: restore drill 2 of crm-prod failed: chunk"),
        "after the progress lines: {failed:#?}"
    );
    assert!(
        failed
            .stdout
            .contains("whole-file hash FAILED, integrity_check -, row counts -"),
        "{failed:#?}"
    );
    let fleet = s.run(&["drill", "list", "--failed", "--json"]).ok().json();
    let entries = fleet["instances"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{fleet:#}");
    assert_eq!(entries[0]["instance"], "crm-prod");
    assert_eq!(entries[0]["reason"], "failed");
    let human = s.run(&["drill", "list", "--failed"]).ok();
    assert!(
        human.stdout.contains("last drill failed"),
        "{}",
        human.stdout
    );
    let inst = instance(&s, "crm-prod");
    assert_eq!(inst["last_drill"]["state"], "failed");
    let id = inst["last_drill"]["id"].as_i64().unwrap();
    let show = s.run(&["drill", "show", &id.to_string()]).ok();
    assert!(show.stdout.contains("State:"), "{}", show.stdout);
    assert!(show.stdout.contains("  - chunk"), "{}", show.stdout);
    let history = s.run(&["drill", "list", "--instance", "crm-prod"]).ok();
    assert_eq!(
        history.stdout.lines().count(),
        3,
        "a header and two drills: {}",
        history.stdout
    );
    // The in-product alert.
    let alerts = s.run(&["alerts"]).ok();
    assert!(alerts.stdout.contains("Restore drill"), "{}", alerts.stdout);

    // Bad input.
    s.run(&["drill", "run", "--instance", "nope"])
        .fails(4, "there is no instance named \"nope\"");
    s.run(&["drill", "run", "--instance", "crm-idle"])
        .fails(5, "no completed backup");
    s.run(&["drill", "list", "--stale-days", "0"]).fails(
        2,
        "stale_days must be a whole number of days from 1 to 3650",
    );
    s.run(&["drill", "show", "999"])
        .fails(4, "there is no restore drill 999");
    let out = s.run(&["drill", "list", "--failed", "--instance", "crm-prod"]);
    assert_eq!(
        out.code, 2,
        "--instance conflicts with the fleet view: {out:#?}"
    );
    let viewer = viewer_token(&s);
    s.run_as(
        Some(&viewer),
        &["drill", "run", "--instance", "crm-prod"],
        "",
    )
    .fails(3, "may not run restore drills");
    s.run_as(Some(&viewer), &["drill", "list", "--json"], "")
        .ok();
}

#[test]
fn a_bad_drill_schedule_stops_serve_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cmd = steward_command();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir(&tmp))
        .env("STEWARD_RESTORE_DRILL_SCHEDULE", "every 2 days");
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(&mut child, Duration::from_secs(60)).expect("serve exits");
    assert!(!status.success());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(
        err.contains(
            "restore_drill_schedule must be \"off\", \"daily\", \"weekly\" or \"every N hours\""
        ) && err.contains("\"every 2 days\""),
        "{err}"
    );
}
