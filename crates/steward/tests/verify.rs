//! `steward backup verify` through the built binary against a real `steward serve`: a clean
//! repository, then a pack with a flipped byte, found, named and marked, with exit code 6;
//! `--json`, `--no-wait`, and bad input.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn fill(db: &Path, from: usize, rows: usize) {
    let conn = open(db);
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    for i in from..from + rows {
        conn.execute(
            "INSERT INTO accounts (name) VALUES (?1)",
            [format!("account {i} {}", "y".repeat(i % 89 + 30))],
        )
        .unwrap();
    }
}

fn packs(data: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in std::fs::read_dir(data.join("backups/data")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if !p.to_string_lossy().contains('#') {
                out.push(p);
            }
        }
    }
    out
}

fn backup(s: &Server, label: &str) -> i64 {
    s.run(&[
        "backup", "create", "crm-prod", "--label", label, "--wait", "--json",
    ])
    .ok()
    .json()["id"]
        .as_i64()
        .unwrap()
}

#[test]
fn verify_reports_damage_names_it_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    let s = Server::start(&data);
    for (name, kind) in [("crm-prod", "production"), ("crm-sand", "sandbox")] {
        s.run(&[
            "instance",
            "create",
            name,
            "--type",
            kind,
            "--release",
            "9.1",
        ])
        .ok();
    }
    let db = PathBuf::from(instance(&s, "crm-prod")["database_path"].as_str().unwrap());
    fill(&db, 0, 1200);
    let first = backup(&s, "first");
    let pack = packs(&data).pop().expect("the first backup's pack");
    let pack_name = pack.file_name().unwrap().to_string_lossy().into_owned();
    fill(&db, 1200, 3);
    let second = backup(&s, "second");

    // A clean repository: whole, exit 0, in every mode; --json parses.
    let out = s.run(&["backup", "verify", "--all", "--read-data"]).ok();
    assert!(
        out.stdout
            .starts_with("Verified 2 backups of all instances (all data read): all whole."),
        "{out:#?}"
    );
    let report = s
        .run(&["backup", "verify", "--instance", "crm-prod", "--json"])
        .ok()
        .json();
    assert_eq!(
        (report["ok"].as_bool(), report["mode"].as_str()),
        (Some(true), Some("structure"))
    );
    s.run(&["backup", "verify", &first.to_string(), "--sample", "50"])
        .ok();

    // A flipped byte in the pack both backups need.
    let mut bytes = std::fs::read(&pack).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&pack, bytes).unwrap();

    let out = s.run(&["backup", "verify", "--all", "--read-data"]);
    assert_eq!(out.code, 6, "damage found is exit code 6: {out:#?}");
    assert!(out.stdout.contains("2 DAMAGED"), "{out:#?}");
    assert!(
        out.stdout.contains(&format!(
            "  pack {pack_name}\n    backup {first} of crm-prod, taken "
        )),
        "the damaged pack names each backup it damages: {out:#?}"
    );
    assert!(
        out.stdout
            .contains(&format!("    backup {second} of crm-prod")),
        "{out:#?}"
    );
    assert!(
        out.stdout.contains(&format!("  backup {first}: ")) && out.stdout.contains("chunk "),
        "problems name the chunk: {out:#?}"
    );
    assert!(
        out.stderr
            .contains("error: verify found 2 damaged backups: "),
        "{out:#?}"
    );

    let out = s.run(&["backup", "verify", "--all", "--read-data", "--json"]);
    assert_eq!(out.code, 6, "{out:#?}");
    let report = out.json();
    assert_eq!(
        (report["ok"].as_bool(), report["damaged"].as_u64()),
        (Some(false), Some(2))
    );
    assert_eq!(report["damaged_packs"][0]["pack"], pack_name.as_str());

    // Marked damaged where backups are listed and shown; restore is refused.
    let list = s.run(&["backup", "list", "crm-prod"]).ok();
    assert_eq!(
        list.stdout.matches("completed DAMAGED").count(),
        2,
        "{list:#?}"
    );
    let show = s.run(&["backup", "show", &second.to_string()]).ok();
    assert!(show.stdout.contains("DAMAGED"), "{show:#?}");
    assert!(show.stdout.contains(&pack_name), "{show:#?}");
    let refused = s
        .run(&[
            "backup",
            "restore",
            &second.to_string(),
            "--target",
            "crm-sand",
            "--yes",
        ])
        .fails(5, "(backup_damaged)");
    // Refused before the review: nothing about the restore is printed first.
    assert!(refused.stdout.is_empty(), "{refused:#?}");

    // --no-wait returns at once with the job.
    let out = s
        .run(&["backup", "verify", &first.to_string(), "--no-wait"])
        .ok();
    assert!(
        out.stdout.starts_with("Verifying 1 backup of crm-prod"),
        "{out:#?}"
    );
}

#[test]
fn bad_verify_requests_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    s.run(&[
        "instance",
        "create",
        "crm-prod",
        "--type",
        "production",
        "--release",
        "9.1",
    ])
    .ok();
    s.run(&["backup", "verify", "--all", "--sample", "0"])
        .fails(2, "(invalid_sample)");
    s.run(&["backup", "verify", "--all", "--sample", "150"])
        .fails(2, "(invalid_sample)");
    s.run(&["backup", "verify", "9999"])
        .fails(4, "(unknown_backup)");
    s.run(&["backup", "verify", "--instance", "no-such"])
        .fails(4, "(unknown_instance)");
    s.run(&["backup", "verify", "--instance", "crm-prod"])
        .fails(5, "(nothing_to_verify)");
    // Parsing: exactly one of ID, --instance, --all; --read-data or --sample.
    for args in [
        &["backup", "verify"][..],
        &["backup", "verify", "3", "--all"],
        &["backup", "verify", "--all", "--read-data", "--sample", "5"],
    ] {
        let out = s.run(args);
        assert_eq!(out.code, 2, "{args:?}: {out:#?}");
    }
    let viewer = viewer_token(&s);
    s.run_as(Some(&viewer), &["backup", "verify", "--all"], "")
        .fails(3, "may not verify backups");
    let help = s.run(&["backup", "verify", "--help"]).ok();
    assert!(help.stdout.contains("--read-data"), "{help:#?}");
    assert!(help.stdout.contains("Exit code 6"), "{help:#?}");
}
