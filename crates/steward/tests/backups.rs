//! Backups and restores through the built `steward` binary against a real `steward serve`:
//! on-demand backups with label, notes and expiry; edit, delete, restore into sandboxes only;
//! storage and alerts; and what a SIGKILL of the server in the middle of a backup or a
//! restore leaves behind (the server pauses in each job stage with
//! STEWARD_JOB_STAGE_PAUSE_MS, so the kill lands in a known stage).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;

use common::*;

/// How long each stage of a job pauses in the tests that kill the server mid-job.
const PAUSE_MS: &str = "3000";

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

fn database_path(s: &Server, name: &str) -> PathBuf {
    PathBuf::from(instance(s, name)["database_path"].as_str().unwrap())
}

/// Adds a row to a table of the test's own in an instance's database, as an application
/// would.
fn add_marker(db: &Path, text: &str) {
    let conn = open(db);
    conn.execute(
        "CREATE TABLE IF NOT EXISTS test_marker (text TEXT NOT NULL)",
        [],
    )
    .unwrap();
    conn.execute("INSERT INTO test_marker (text) VALUES (?1)", [text])
        .unwrap();
}

/// The marker rows, in insertion order (none if the table does not exist).
fn markers(db: &Path) -> Vec<String> {
    let conn = open(db);
    let Ok(mut stmt) = conn.prepare("SELECT text FROM test_marker ORDER BY rowid") else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Adds about `mib` MiB of incompressible rows, so a backup has real data to store.
fn add_bulk(db: &Path, mib: u32) {
    let conn = open(db);
    conn.execute("CREATE TABLE IF NOT EXISTS test_bulk (data BLOB)", [])
        .unwrap();
    conn.execute(
        "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < ?1) \
         INSERT INTO test_bulk (data) SELECT randomblob(65536) FROM n",
        [mib * 16],
    )
    .unwrap();
}

/// The sum of the sizes of all files under `dir`.
fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        if meta.is_dir() {
            total += dir_size(&e.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// Every file under `dir`, relative to it, with its size (to show what a size mismatch is).
fn dir_listing(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else {
                let len = e.metadata().unwrap().len();
                out.push(format!("{} {len}", p.strip_prefix(root).unwrap().display()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn backup(s: &Server, id: i64) -> Value {
    s.run(&["backup", "show", &id.to_string(), "--json"])
        .ok()
        .json()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("no id: {v:#}"))
}

#[test]
fn on_demand_backups_are_created_listed_edited_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_env(
        &data_dir(&tmp),
        // Unquoted, as an operator types it (a release stays text).
        &[("STEWARD_MINIMUM_BACKUP_RELEASE", "8.2")],
    );
    create_instance(&s, "acme", "production", "9.0");

    // --wait follows the job on stderr and ends with the completed backup.
    let out = s
        .run(&[
            "backup",
            "create",
            "acme",
            "--label",
            "before-customization",
            "--notes",
            "first try",
            "--wait",
            "--json",
        ])
        .ok();
    assert!(
        out.stderr.contains("job ") && out.stderr.contains("(backup of acme): succeeded"),
        "progress on stderr: {out:#?}"
    );
    let first = out.json();
    let first_id = id_of(&first);
    assert_eq!(first["status"], "completed", "{first:#}");
    assert_eq!(first["kind"], "on_demand");
    assert_eq!(first["instance"], "acme");
    assert_eq!(first["label"], "before-customization");
    assert_eq!(first["notes"], "first try");
    assert_eq!(first["release"], "9.0");
    assert_eq!(first["created_by"], "admin");
    assert!(first["size_bytes"].as_u64().unwrap() > 0, "{first:#}");
    assert_eq!(
        time(&first["expires_at"]) - time(&first["created_at"]),
        chrono::Duration::days(3),
        "on-demand backups expire 3 days after they are taken: {first:#}"
    );
    assert_eq!(
        (
            first["can_edit"].as_bool(),
            first["can_delete"].as_bool(),
            first["can_restore"].as_bool()
        ),
        (Some(true), Some(true), Some(true))
    );

    // Without --wait the command returns with the queued backup and its job.
    let out = s
        .run(&["backup", "create", "acme", "--label", "second"])
        .ok();
    assert!(
        out.stdout.contains("(second) of acme is queued as job")
            && out.stdout.contains("steward job show"),
        "{out:#?}"
    );
    let list = s.run(&["backup", "list", "acme", "--json"]).ok().json();
    let second_id = id_of(&list[0]);
    assert_eq!(list[0]["label"], "second", "newest first: {list:#}");
    poll(
        &s,
        Duration::from_secs(15),
        || backup(&s, second_id),
        |b| b["status"] == "completed",
    );

    let table = s.run(&["backup", "list", "acme"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        [
            "ID",
            "LABEL",
            "KIND",
            "CREATED-BY",
            "CREATED",
            "EXPIRES",
            "STATUS",
            "SIZE",
            "DRILL"
        ],
        "{table}"
    );
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[1].starts_with(&format!("{second_id} ")), "{table}");
    let row = lines[2];
    let expires = time(&first["expires_at"]).format("%Y-%m-%d").to_string();
    for cell in [
        "before-customization",
        "on-demand",
        "admin",
        "completed",
        expires.as_str(),
    ] {
        assert!(row.contains(cell), "{cell:?} missing: {table}");
    }

    // Edit the label and the notes.
    let out = s
        .run(&[
            "backup",
            "edit",
            &first_id.to_string(),
            "--label",
            "known-good",
            "--notes",
            "checked by QA",
        ])
        .ok();
    assert!(
        out.stdout.contains(&format!("Updated backup {first_id}")),
        "{out:#?}"
    );
    let edited = backup(&s, first_id);
    assert_eq!(edited["label"], "known-good");
    assert_eq!(edited["notes"], "checked by QA");
    assert_eq!(
        edited["expires_at"], first["expires_at"],
        "edit keeps expiry"
    );
    let shown = s
        .run(&["backup", "show", &first_id.to_string()])
        .ok()
        .stdout;
    for text in [
        "known-good",
        "checked by QA",
        "on-demand",
        "completed",
        "9.0",
        "by admin",
        "edit, delete, restore",
    ] {
        assert!(shown.contains(text), "{text:?} missing: {shown}");
    }
    let notes_only = s
        .run(&[
            "backup",
            "edit",
            &first_id.to_string(),
            "--notes",
            "",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(notes_only["label"], "known-good");
    assert_eq!(notes_only["notes"], "");

    // Bad input changes nothing.
    let out = s.run(&["backup", "edit", &first_id.to_string()]);
    assert_eq!(out.code, 2, "edit needs --label or --notes: {out:#?}");
    s.run(&["backup", "edit", &first_id.to_string(), "--label", ""])
        .fails(2, "(invalid_label)");
    s.run(&["backup", "create", "acme", "--label", ""])
        .fails(2, "(invalid_label)");
    s.run(&["backup", "create", "acme", "--label", &"x".repeat(101)])
        .fails(2, "(invalid_label)");
    let out = s.run(&["backup", "create", "acme"]);
    assert_eq!(out.code, 2, "--label is required: {out:#?}");
    s.run(&["backup", "create", "nope", "--label", "x"])
        .fails(4, "(unknown_instance)");
    s.run(&["backup", "list", "nope"])
        .fails(4, "(unknown_instance)");
    s.run(&["backup", "show", "999"])
        .fails(4, "(unknown_backup)");
    create_instance(&s, "legacy", "production", "8.1");
    s.run(&["backup", "create", "legacy", "--label", "x"])
        .fails(5, "(release_too_old)")
        .fails(5, "8.2");

    // Deleting asks; without a terminal it needs --yes.
    let out = s
        .run(&["backup", "delete", &second_id.to_string()])
        .fails(2, "--yes");
    assert!(out.stderr.contains("not a terminal"), "{out:#?}");
    assert_eq!(
        backup(&s, second_id)["status"],
        "completed",
        "nothing deleted"
    );
    let out = s
        .run(&["backup", "delete", &second_id.to_string(), "--yes"])
        .ok();
    assert!(
        out.stdout
            .contains(&format!("Deleted backup {second_id} (second) of acme")),
        "{out:#?}"
    );
    s.run(&["backup", "show", &second_id.to_string()])
        .fails(4, "(unknown_backup)");
    s.run(&["backup", "delete", &second_id.to_string(), "--yes"])
        .fails(4, "(unknown_backup)");
    let list = s.run(&["backup", "list", "acme", "--json"]).ok().json();
    let ids: Vec<i64> = list.as_array().unwrap().iter().map(id_of).collect();
    assert_eq!(ids, [first_id], "deleted backups are not listed");

    // Viewers see backups but cannot take, change or delete them.
    let viewer = viewer_token(&s);
    let v = Some(viewer.as_str());
    s.run_as(v, &["backup", "list", "acme"], "").ok();
    s.run_as(v, &["backup", "create", "acme", "--label", "mine"], "")
        .fails(3, "(forbidden)");
    s.run_as(
        v,
        &["backup", "edit", &first_id.to_string(), "--label", "x"],
        "",
    )
    .fails(3, "(forbidden)");
    s.run_as(v, &["backup", "delete", &first_id.to_string(), "--yes"], "")
        .fails(3, "(forbidden)");
    s.run_as(v, &["maintenance", "prune"], "")
        .fails(3, "(forbidden)");
    let seen = s
        .run_as(v, &["backup", "show", &first_id.to_string(), "--json"], "")
        .ok()
        .json();
    assert_eq!(seen["can_delete"], false, "{seen:#}");
    assert_eq!(
        s.run(&["backup", "list", "acme", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Storage: backups are accounted apart from database storage.
    let storage = s.run(&["storage", "--json"]).ok().json();
    let acme = storage["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "acme")
        .unwrap();
    assert_eq!(acme["backup_count"], 1, "{storage:#}");
    assert!(acme["backup_bytes"].as_u64().unwrap() > 0, "{storage:#}");
    assert!(acme["database_bytes"].as_u64().unwrap() > 0, "{storage:#}");
    assert!(storage["total_backup_bytes"].as_u64().unwrap() > 0);
    let listed = s.run(&["instance", "list", "--json"]).ok().json();
    assert_eq!(
        storage["total_database_bytes"], listed["total_storage_bytes"],
        "backups do not count towards database storage"
    );
    let table = s.run(&["storage"]).ok().stdout;
    for text in [
        "NAME",
        "DATABASE",
        "BACKUPS",
        "BACKUP STORAGE",
        "acme",
        "legacy",
        "does not count towards database storage",
    ] {
        assert!(table.contains(text), "{text:?} missing: {table}");
    }

    // Alerts: the backups' start and success, newest first.
    let alerts = s.run(&["alerts", "--json"]).ok().json();
    let alerts = alerts.as_array().unwrap();
    assert!(
        alerts.iter().any(|a| a["level"] == "success"
            && a["instance"] == "acme"
            && a["message"]
                .as_str()
                .unwrap()
                .contains("before-customization")),
        "{alerts:#?}"
    );
    assert!(alerts.iter().any(|a| a["level"] == "info"), "{alerts:#?}");
    let ats: Vec<DateTime<Utc>> = alerts.iter().map(|a| time(&a["at"])).collect();
    assert!(
        ats.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {ats:?}"
    );
    let one = s.run(&["alerts", "--limit", "1", "--json"]).ok().json();
    assert_eq!(one.as_array().unwrap().len(), 1);
    let table = s.run(&["alerts"]).ok().stdout;
    assert!(
        table.starts_with("AT") && table.contains("success") && table.contains("acme"),
        "{table}"
    );

    let out = s.run(&["maintenance", "prune"]).ok();
    assert!(
        out.stdout.contains("Pruned the backup repository"),
        "{out:#?}"
    );
}

#[test]
fn system_backups_are_by_system_and_cannot_be_edited_or_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp);
    let s = Server::start(&dir);
    create_instance(&s, "acme", "production", "9.1");
    assert!(s.terminate().success());

    // Daily system backups are due from midnight UTC; the server queues them when it starts.
    let s = Server::start_env(&dir, &[("STEWARD_SYSTEM_BACKUP_TIME", "00:00")]);
    let list = poll(
        &s,
        Duration::from_secs(20),
        || s.run(&["backup", "list", "acme", "--json"]).ok().json(),
        |l| {
            l.as_array()
                .unwrap()
                .iter()
                .any(|b| b["status"] == "completed")
        },
    );
    let system = &list[0];
    let id = id_of(system).to_string();
    assert_eq!(system["kind"], "system", "{list:#}");
    assert_eq!(system["created_by"], "System");
    assert_eq!(
        time(&system["expires_at"]) - time(&system["created_at"]),
        chrono::Duration::days(3)
    );
    assert_eq!(system["can_edit"], false);
    assert_eq!(system["can_delete"], false);
    assert_eq!(system["can_restore"], true);
    let table = s.run(&["backup", "list", "acme"]).ok().stdout;
    let row = table.lines().nth(1).unwrap();
    for cell in ["system", "System", "completed"] {
        assert!(row.contains(cell), "{cell:?} missing: {table}");
    }
    let shown = s.run(&["backup", "show", &id]).ok().stdout;
    assert!(
        shown.contains("Actions:") && shown.contains("restore"),
        "{shown}"
    );
    assert!(!shown.contains("edit, delete"), "{shown}");

    s.run(&["backup", "edit", &id, "--label", "mine"])
        .fails(5, "(system_backup_immutable)");
    s.run(&["backup", "delete", &id, "--yes"])
        .fails(5, "(system_backup_immutable)");
    assert_eq!(backup(&s, id_of(system))["status"], "completed");
}

#[test]
fn a_restore_replaces_only_the_sandbox_database() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "acme-prod", "production", "8.2");
    let source = database_path(&s, "acme-prod");
    add_marker(&source, "before the backup");
    let b = s
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
    let id = id_of(&b).to_string();
    assert_eq!(b["release"], "8.2");
    add_marker(&source, "after the backup");

    let target = create_instance(&s, "acme-test", "sandbox", "9.1");
    let target_db = PathBuf::from(target["database_path"].as_str().unwrap());
    add_marker(&target_db, "the sandbox's own");
    let keep = Path::new(target["documents_path"].as_str().unwrap()).join("contract.pdf");
    std::fs::write(&keep, b"attachment").unwrap();

    // Only sandboxes are restored into.
    s.run(&["backup", "restore", &id, "--target", "acme-prod", "--yes"])
        .fails(5, "(target_not_sandbox)")
        .fails(5, "Switch it to sandbox first");
    assert_eq!(markers(&source), ["before the backup", "after the backup"]);
    assert_eq!(instance(&s, "acme-prod")["state"], "available");
    s.run(&["backup", "restore", &id, "--target", "nope", "--yes"])
        .fails(4, "(unknown_instance)");
    s.run(&["backup", "restore", "999", "--target", "acme-test", "--yes"])
        .fails(4, "(unknown_backup)");
    let out = s.run(&["backup", "restore", &id, "--target", "acme-test"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("--yes"), "{out:#?}");
    assert_eq!(markers(&target_db), ["the sandbox's own"]);
    let out = s.run(&["backup", "restore", &id]);
    assert_eq!(out.code, 2, "--target is required: {out:#?}");

    let out = s
        .run(&[
            "backup",
            "restore",
            &id,
            "--target",
            "acme-test",
            "--yes",
            "--wait",
        ])
        .ok();
    for text in [
        "Restore review",
        "golden",
        "acme-prod",
        "8.2",
        "acme-test",
        "the target's database will be replaced",
        "its documents folder is not touched",
        "the target is unavailable until the restore completes",
        "Restored backup",
    ] {
        assert!(
            out.stdout.to_lowercase().contains(&text.to_lowercase()),
            "{text:?} missing: {out:#?}"
        );
    }
    assert!(out.stderr.contains("(restore of acme-test)"), "{out:#?}");

    assert_eq!(markers(&target_db), ["before the backup"]);
    assert_eq!(
        dump(&target_db)
            .iter()
            .filter(|r| r.starts_with("test_marker"))
            .count(),
        1
    );
    let shown = instance(&s, "acme-test");
    assert_eq!(
        shown["release"], "8.2",
        "the target takes the backup's release"
    );
    assert_eq!(shown["state"], "available");
    assert_eq!(shown["type"], "sandbox");
    assert_eq!(std::fs::read(&keep).unwrap(), b"attachment");
    assert!(staged_files(&target_db, ".restoring").is_empty());
    assert_eq!(
        markers(&source),
        ["before the backup", "after the backup"],
        "the source is untouched"
    );

    let jobs = s
        .run(&["job", "list", "--target", "acme-test", "--json"])
        .ok()
        .json();
    assert_eq!(jobs[0]["kind"], "restore");
    assert_eq!(jobs[0]["state"], "succeeded");
    let restore_job = job(&s, id_of(&jobs[0]));
    let stages: Vec<&str> = restore_job["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(stages, ["restore", "swap"]);
    let alerts = s.run(&["alerts", "--json"]).ok().json();
    assert!(
        alerts
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["level"] == "success"
                && a["instance"] == "acme-test"
                && a["message"].as_str().unwrap().contains("Restore")),
        "{alerts:#}"
    );

    // --json prints the outcome on stdout and the review on stderr.
    let out = s
        .run(&[
            "backup",
            "restore",
            &id,
            "--target",
            "acme-test",
            "--yes",
            "--wait",
            "--json",
        ])
        .ok();
    let answer = out.json();
    assert_eq!(answer["job"]["state"], "succeeded", "{answer:#}");
    assert_eq!(answer["target"]["state"], "available");
    assert!(out.stderr.contains("Restore review"), "{out:#?}");
}

/// Two instances for the restore kill tests: `acme-prod` (production, 8.2) with a completed
/// backup, and the sandbox `acme-test` (9.1) with rows and a document of its own. Returns the
/// backup's id; the server is stopped.
fn prepare_restore(dir: &Path) -> String {
    let s = Server::start(dir);
    create_instance(&s, "acme-prod", "production", "8.2");
    add_marker(&database_path(&s, "acme-prod"), "from the backup");
    let b = s
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
    let target = create_instance(&s, "acme-test", "sandbox", "9.1");
    let target_db = PathBuf::from(target["database_path"].as_str().unwrap());
    add_marker(&target_db, "the sandbox's own");
    add_marker(&target_db, "and another");
    std::fs::write(
        Path::new(target["documents_path"].as_str().unwrap()).join("keep.txt"),
        "kept",
    )
    .unwrap();
    assert!(s.terminate().success());
    id_of(&b).to_string()
}

/// Starts a restore into the sandbox, kills the server with SIGKILL while the restore job
/// is in `stage`, starts it again, and checks the sandbox is whole, unchanged and usable.
fn restore_killed_in(stage: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp);
    let backup_id = prepare_restore(&dir);

    let s = Server::start_env(&dir, &[("STEWARD_JOB_STAGE_PAUSE_MS", PAUSE_MS)]);
    let target_db = database_path(&s, "acme-test");
    let before = dump(&target_db);
    let started = s
        .run(&[
            "backup",
            "restore",
            &backup_id,
            "--target",
            "acme-test",
            "--yes",
            "--json",
        ])
        .ok()
        .json();
    let job_id = id_of(&started["job"]);
    poll(
        &s,
        Duration::from_secs(10),
        || job(&s, job_id),
        |j| j["state"] == "running" && j["stage"] == stage,
    );
    assert_eq!(instance(&s, "acme-test")["state"], "restoring");
    if stage == "swap" {
        assert_eq!(
            staged_files(&target_db, ".restoring")
                .iter()
                .filter(|p| p.to_string_lossy().ends_with(".restoring"))
                .count(),
            1,
            "the restored database waits beside the target"
        );
    }
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
    let target = instance(&s, "acme-test");
    assert_eq!(target["state"], "available", "{target:#}");
    assert_eq!(target["release"], "9.1", "{target:#}");
    assert_eq!(
        dump(&target_db),
        before,
        "the sandbox holds its previous database"
    );
    assert_eq!(markers(&target_db), ["the sandbox's own", "and another"]);
    assert!(
        staged_files(&target_db, ".restoring").is_empty(),
        "{:?}",
        staged_files(&target_db, ".restoring")
    );
    assert_eq!(
        std::fs::read_to_string(target_db.parent().unwrap().join("documents/keep.txt"))
            .or_else(|_| std::fs::read_to_string(
                Path::new(target["documents_path"].as_str().unwrap()).join("keep.txt")
            ))
            .unwrap(),
        "kept"
    );
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

    // The sandbox is usable: the same restore now goes through.
    s.run(&[
        "backup",
        "restore",
        &backup_id,
        "--target",
        "acme-test",
        "--yes",
        "--wait",
    ])
    .ok();
    assert_eq!(markers(&target_db), ["from the backup"]);
    assert_eq!(instance(&s, "acme-test")["release"], "8.2");
}

#[test]
fn sigkill_during_the_restore_stage_leaves_the_sandbox_as_it_was() {
    restore_killed_in("restore");
}

#[test]
fn sigkill_during_the_swap_stage_leaves_the_sandbox_as_it_was() {
    restore_killed_in("swap");
}

/// Where the server is killed during a backup.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum BackupKill {
    /// Right after the `snapshot` stage starts, before any data is read.
    SnapshotStart,
    /// In the `snapshot` stage while data is being read and stored.
    MidSnapshot,
    /// In the `finish` stage: all data stored, the backup not yet recorded as completed.
    Finish,
}

/// Takes a backup, kills the server with SIGKILL at `when`, starts it again (pruning without
/// a grace period), and checks: the backup failed, the instance is available and unchanged,
/// prune returns the repository to its size before the killed backup, and a new backup works.
fn backup_killed(when: BackupKill) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp);
    let repo = dir.join("backups");

    let s = Server::start(&dir);
    create_instance(&s, "acme", "production", "9.1");
    let db = database_path(&s, "acme");
    add_bulk(&db, 1);
    s.run(&["backup", "create", "acme", "--label", "base", "--wait"])
        .ok();
    // New data, so the next backup has chunks of its own to store.
    add_bulk(
        &db,
        if when == BackupKill::MidSnapshot {
            48
        } else {
            2
        },
    );
    add_marker(&db, "live");
    let size_before = dir_size(&repo);
    let packs_before = dir_listing(&repo.join("data")).len();
    let files_before = dir_listing(&repo);
    let storage_before = s.run(&["storage", "--json"]).ok().json()["total_backup_bytes"].clone();
    assert!(s.terminate().success());

    let s = Server::start_env(&dir, &[("STEWARD_JOB_STAGE_PAUSE_MS", PAUSE_MS)]);
    let before = dump(&db);
    let b = s
        .run(&["backup", "create", "acme", "--label", "doomed", "--json"])
        .ok()
        .json();
    let backup_id = id_of(&b);
    let job_id = b["job_id"].as_i64().unwrap();
    let seen = poll(
        &s,
        Duration::from_secs(15),
        || job(&s, job_id),
        |j| match when {
            BackupKill::SnapshotStart => j["stage"] == "snapshot",
            BackupKill::MidSnapshot => {
                j["stage"] == "finish"
                    || (j["stage"] == "snapshot"
                        && dir_listing(&repo.join("data")).len() > packs_before)
            }
            BackupKill::Finish => j["stage"] == "finish",
        },
    );
    s.kill();
    if when == BackupKill::MidSnapshot {
        assert_eq!(
            seen["stage"], "snapshot",
            "the snapshot ended before the kill; make the database larger: {seen:#}"
        );
    }
    if when != BackupKill::SnapshotStart {
        assert!(
            dir_listing(&repo.join("data")).len() > packs_before,
            "the killed backup had stored data: {:?}",
            dir_listing(&repo)
        );
    }

    let s = Server::start_env(&dir, &[("STEWARD_PRUNE_GRACE_SECONDS", "0")]);
    let failed = poll(
        &s,
        Duration::from_secs(10),
        || backup(&s, backup_id),
        |b| b["status"] != "running" && b["status"] != "queued",
    );
    assert_eq!(failed["status"], "failed", "{failed:#}");
    assert!(
        failed["error"].as_str().unwrap().contains("interrupted"),
        "{failed:#}"
    );
    assert_eq!(failed["can_restore"], false);
    let j = job(&s, job_id);
    assert_eq!(j["state"], "failed", "{j:#}");
    assert_eq!(instance(&s, "acme")["state"], "available");
    assert_eq!(dump(&db), before, "a backup never changes the instance");
    s.run(&[
        "backup",
        "restore",
        &backup_id.to_string(),
        "--target",
        "acme",
        "--yes",
    ])
    .fails(5, "(backup_not_restorable)");

    let pruned = s.run(&["maintenance", "prune", "--json"]).ok().json();
    assert_eq!(
        dir_listing(&repo),
        files_before,
        "prune leaves the repository as it was before the killed backup (pruned: {pruned})"
    );
    assert_eq!(dir_size(&repo), size_before);
    assert_eq!(
        s.run(&["storage", "--json"]).ok().json()["total_backup_bytes"],
        storage_before
    );

    // The repository is sound: a new backup succeeds and restores.
    let again = s
        .run(&[
            "backup", "create", "acme", "--label", "again", "--wait", "--json",
        ])
        .ok()
        .json();
    assert_eq!(again["status"], "completed");
    let list = s.run(&["backup", "list", "acme", "--json"]).ok().json();
    let statuses: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["label"].as_str().unwrap(), b["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("again", "completed"),
            ("doomed", "failed"),
            ("base", "completed")
        ]
    );
    create_instance(&s, "scratch", "sandbox", "9.1");
    s.run(&[
        "backup",
        "restore",
        &id_of(&again).to_string(),
        "--target",
        "scratch",
        "--yes",
        "--wait",
    ])
    .ok();
    assert_eq!(markers(&database_path(&s, "scratch")), ["live"]);
}

#[test]
fn sigkill_at_the_start_of_a_snapshot_fails_the_backup_cleanly() {
    backup_killed(BackupKill::SnapshotStart);
}

#[test]
fn sigkill_while_a_snapshot_stores_data_is_pruned_away() {
    backup_killed(BackupKill::MidSnapshot);
}

#[test]
fn sigkill_in_the_finish_stage_is_pruned_away() {
    backup_killed(BackupKill::Finish);
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
fn delete_and_restore_ask_on_a_terminal() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "acme", "sandbox", "9.1");
    let b = s
        .run(&[
            "backup", "create", "acme", "--label", "keep me", "--wait", "--json",
        ])
        .ok()
        .json();
    let id = id_of(&b).to_string();

    let Some(out) = run_on_terminal(&s, &["backup", "delete", &id], "n\n") else {
        eprintln!("skipped: util-linux `script` is not installed");
        return;
    };
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stdout.contains(&format!(
            "Delete backup {id} (keep me) of acme? This cannot be undone. [y/N]"
        )),
        "{out:#?}"
    );
    assert!(out.stdout.contains("was not deleted"), "{out:#?}");
    assert_eq!(backup(&s, id_of(&b))["status"], "completed");

    let out = run_on_terminal(&s, &["backup", "restore", &id, "--target", "acme"], "\n").unwrap();
    assert_eq!(out.code, 1, "the default answer is no: {out:#?}");
    assert!(
        out.stdout.contains("Restore review") && out.stdout.contains("nothing was restored"),
        "{out:#?}"
    );
    assert_eq!(
        s.run(&["job", "list", "--json"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let out = run_on_terminal(&s, &["backup", "delete", &id], "y\n").unwrap();
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains(&format!("Deleted backup {id}")),
        "{out:#?}"
    );
    s.run(&["backup", "show", &id]).fails(4, "(unknown_backup)");
}

#[test]
fn backup_help_explains_the_rules() {
    let help = |args: &[&str]| {
        let out = run(steward_command().args(args), "");
        assert_eq!(out.code, 0, "{out:#?}");
        out.stdout
    };
    let top = help(&["--help"]);
    for cmd in ["backup", "storage", "alerts", "maintenance"] {
        assert!(top.contains(cmd), "{cmd:?} missing: {top}");
    }
    let backup = help(&["backup", "--help"]);
    for text in ["System", "sandbox", "3 days", "expires"] {
        assert!(backup.contains(text), "{text:?} missing: {backup}");
    }
    assert!(help(&["backup", "create", "--help"]).contains("--wait"));
    assert!(help(&["backup", "delete", "--help"]).contains("--yes"));
    let restore = help(&["backup", "restore", "--help"]);
    for text in ["sandbox", "switch", "documents folder", "--target", "--yes"] {
        assert!(restore.contains(text), "{text:?} missing: {restore}");
    }
    assert!(help(&["maintenance", "prune", "--help"]).contains("no backup references"));
}
