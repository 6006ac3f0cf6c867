//! `steward store migrate-to`: a SQLite control plane copied into a real PostgreSQL, then
//! served from there; a non-empty target and bad URLs refused.

mod common;

use common::*;

#[test]
fn a_sqlite_control_plane_moves_to_postgres_and_is_served_from_there() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp);

    // A control plane with an instance, a backup and a second user, on SQLite.
    let s = Server::start(&dir);
    s.run(&["instance", "create", "acme", "--type", "sandbox"])
        .ok();
    let out = s
        .run(&[
            "backup",
            "create",
            "acme",
            "--label",
            "before-move",
            "--wait",
        ])
        .ok();
    assert!(out.stdout.contains("before-move"), "{out:#?}");
    s.run(&["user", "create", "vera", "--role", "viewer"]).ok();
    assert!(s.terminate().success());

    let url = steward_testpg::fresh_database();

    // Bad targets: refused, nothing written.
    let bad = run(
        steward_command()
            .args([
                "store",
                "migrate-to",
                "mysql://root@h/steward",
                "--data-dir",
            ])
            .arg(&dir),
        "",
    );
    assert_eq!(bad.code, 1, "{bad:#?}");
    assert!(bad.stderr.contains("is not a PostgreSQL URL"), "{bad:#?}");
    let missing = run(
        steward_command()
            .args(["store", "migrate-to", &url, "--data-dir"])
            .arg(tmp.path().join("nowhere")),
        "",
    );
    assert_eq!(missing.code, 1, "{missing:#?}");
    assert!(
        missing
            .stderr
            .contains("there is no control-plane store at"),
        "{missing:#?}"
    );

    // The copy.
    let out = run(
        steward_command()
            .args(["store", "migrate-to", &url, "--json", "--data-dir"])
            .arg(&dir),
        "",
    )
    .ok();
    let report = out.json();
    let rows_of = |table: &str| {
        report["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["table"] == table)
            .map(|t| t["rows"].as_u64().unwrap())
            .unwrap_or_else(|| panic!("{table} in {report:#}"))
    };
    assert_eq!(rows_of("instances"), 1);
    assert_eq!(rows_of("users"), 2);
    assert!(rows_of("backups") >= 1);
    assert!(rows_of("audit_log") >= 3);

    // A second copy into the same (now full) database is refused and changes nothing.
    let again = run(
        steward_command()
            .args(["store", "migrate-to", &url, "--data-dir"])
            .arg(&dir),
        "",
    );
    assert_eq!(again.code, 1, "{again:#?}");
    assert!(again.stderr.contains("is not empty"), "{again:#?}");

    // Served from PostgreSQL: the same instance, backup, users and API token.
    let s = Server::start_env(&dir, &[("STEWARD_DATABASE_URL", url.as_str())]);
    let list = s.run(&["instance", "list", "--json"]).ok().json();
    assert_eq!(list["instances"].as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list["instances"][0]["name"], "acme");
    let backups = s.run(&["backup", "list", "acme", "--json"]).ok().json();
    assert_eq!(backups[0]["label"], "before-move", "{backups:#}");
    let users = s.run(&["user", "list", "--json"]).ok().json();
    assert_eq!(users.as_array().unwrap().len(), 2, "{users:#}");
    // New work lands in PostgreSQL, with new ids after the copied ones.
    let out = s
        .run(&[
            "backup",
            "create",
            "acme",
            "--label",
            "after-move",
            "--wait",
        ])
        .ok();
    assert!(out.stdout.contains("after-move"), "{out:#?}");
    let backups = s.run(&["backup", "list", "acme", "--json"]).ok().json();
    assert_eq!(backups[0]["label"], "after-move");
    assert!(backups[0]["id"].as_i64() > backups[1]["id"].as_i64());
    // And a restore from the backup taken before the move works.
    let first = backups[1]["id"].as_i64().unwrap().to_string();
    let out = s
        .run(&[
            "backup", "restore", &first, "--target", "acme", "--yes", "--wait",
        ])
        .ok();
    assert!(out.stdout.contains("acme"), "{out:#?}");
    assert!(s.terminate().success());
}
