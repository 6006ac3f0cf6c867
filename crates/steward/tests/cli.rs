//! Runs the built `steward` binary: `steward serve` as a child process in a fresh temporary
//! data directory, and the client commands against it, as an operator would.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn instance_lifecycle_in_tables_and_json() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));

    let out = s
        .run(&[
            "instance",
            "create",
            "acme-prod",
            "--type",
            "production",
            "--release",
            "9.0",
        ])
        .ok();
    assert!(
        out.stdout
            .contains("Created production instance acme-prod at release 9.0"),
        "{out:#?}"
    );
    let created = s
        .run(&[
            "instance",
            "create",
            "acme-test",
            "--type",
            "sandbox",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(created["name"], "acme-test");
    assert_eq!(created["type"], "sandbox");
    assert_eq!(created["release"], "9.1", "the latest release by default");

    let list = s.run(&["instance", "list"]).ok().stdout;
    let lines: Vec<&str> = list.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{list}");
    for col in ["TYPE", "RELEASE", "STATE", "STORAGE"] {
        assert!(lines[0].contains(col), "{list}");
    }
    let prod = lines
        .iter()
        .find(|l| l.starts_with("acme-prod "))
        .expect(&list);
    for cell in ["production", "9.0", "available", "KiB"] {
        assert!(prod.contains(cell), "{prod}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("acme-test ") && l.contains("sandbox")),
        "{list}"
    );
    assert!(
        list.contains("2 instances,") && list.contains("in total"),
        "{list}"
    );
    // Columns are aligned: TYPE starts at the same offset on every row.
    let at = lines[0].find("TYPE").unwrap();
    assert_eq!(&prod[at..at + "production".len()], "production", "{list}");

    let listed = s.run(&["instance", "list", "--json"]).ok().json();
    assert_eq!(listed["instances"].as_array().unwrap().len(), 2);
    assert!(listed["total_storage_bytes"].as_u64().unwrap() > 0);
    // The first of them by name, and the totals of all; a name filter.
    let first = s
        .run(&["instance", "list", "--limit", "1", "--json"])
        .ok()
        .json();
    assert_eq!(first["instances"].as_array().unwrap().len(), 1);
    assert_eq!(first["instances"][0]["name"], "acme-prod");
    assert_eq!(first["total"], 2);
    let out = s.run(&["instance", "list", "--limit", "1"]).ok().stdout;
    assert!(
        out.contains("2 instances,") && out.contains("showing the first 1"),
        "{out}"
    );
    let found = s
        .run(&["instance", "list", "--filter", "TEST", "--json"])
        .ok()
        .json();
    assert_eq!(found["instances"].as_array().unwrap().len(), 1);
    assert_eq!(found["instances"][0]["name"], "acme-test");

    let show = s.run(&["instance", "show", "acme-prod"]).ok().stdout;
    let shown = s
        .run(&["instance", "show", "acme-prod", "--json"])
        .ok()
        .json();
    let db = shown["database_path"].as_str().unwrap();
    for text in [
        db,
        shown["documents_path"].as_str().unwrap(),
        "9.0",
        "production",
        "available",
        "admin",
    ] {
        assert!(show.contains(text), "show should contain {text:?}: {show}");
    }
    assert!(Path::new(db).is_absolute(), "{db}");
    assert!(Path::new(shown["documents_path"].as_str().unwrap()).is_dir());
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .expect("the instance database is a SQLite database");
    assert!(tables > 0, "the database has the release's schema");
    drop(conn);

    let out = s
        .run(&["instance", "switch", "acme-prod", "--type", "sandbox"])
        .ok();
    assert!(
        out.stdout.contains("acme-prod is now a sandbox instance"),
        "{out:#?}"
    );
    let switched = s
        .run(&["instance", "show", "acme-prod", "--json"])
        .ok()
        .json();
    assert_eq!(switched["type"], "sandbox");
    s.run(&["instance", "switch", "acme-prod", "--type", "sandbox"])
        .fails(5, "already_that_type");

    // Deleting needs the name typed again.
    s.run(&["instance", "delete", "acme-prod", "--confirm", "acme-test"])
        .fails(
            2,
            "type its name again to confirm (got \"acme-test\") (confirmation_mismatch)",
        );
    s.run(&["instance", "show", "acme-prod"]).ok();
    assert!(Path::new(db).exists(), "a refused delete touches nothing");
    let out = s
        .run(&["instance", "delete", "acme-prod", "--confirm", "acme-prod"])
        .ok();
    assert!(out.stdout.contains("Deleted acme-prod"), "{out:#?}");
    s.run(&["instance", "show", "acme-prod"])
        .fails(4, "unknown_instance");
    let listed = s.run(&["instance", "list", "--json"]).ok().json();
    assert_eq!(listed["instances"].as_array().unwrap().len(), 1);
    let deleted = s
        .run(&[
            "instance",
            "delete",
            "acme-test",
            "--confirm",
            "acme-test",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(deleted["name"], "acme-test");
    let out = s.run(&["instance", "list"]).ok();
    assert!(
        out.stdout.contains("No instances yet") && out.stdout.contains("0 instances"),
        "{out:#?}"
    );
}

#[test]
fn bad_requests_fail_with_the_server_message_and_exit_code() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    s.run(&["instance", "create", "acme", "--type", "sandbox"])
        .ok();

    s.run(&["instance", "create", "acme", "--type", "production"])
        .fails(5, "an instance named acme already exists (instance_exists)");
    s.run(&["instance", "create", "Bad_Name", "--type", "sandbox"])
        .fails(2, "(invalid_name)");
    s.run(&["instance", "create", "x", "--type", "sandbox"])
        .fails(2, "(invalid_name)");
    s.run(&[
        "instance",
        "create",
        "old",
        "--type",
        "sandbox",
        "--release",
        "7.0",
    ])
    .fails(4, "release 7.0 is not in the catalog");
    s.run(&["instance", "show", "nope"])
        .fails(4, "there is no instance named \"nope\" (unknown_instance)");
    s.run(&["instance", "switch", "nope", "--type", "production"])
        .fails(4, "unknown_instance");
    s.run(&["instance", "delete", "nope", "--confirm", "nope"])
        .fails(4, "unknown_instance");
    s.run(&["token", "revoke", "999"]).fails(4, "unknown_token");
    s.run(&["user", "set-role", "nobody", "--role", "viewer"])
        .fails(4, "unknown_user");
    s.run(&["user", "disable", "admin"])
        .fails(5, "last_administrator");
    s.run(&["audit", "list", "--since", "yesterday"])
        .fails(2, "--since");
    s.run(&["job", "show", "999"]).fails(4, "unknown_job");
    s.run(&["job", "list", "--state", "done"])
        .fails(2, "queued running succeeded failed");
    assert!(
        s.run(&["job", "list"])
            .ok()
            .stdout
            .contains("No jobs match.")
    );

    // Usage errors clap catches: exit code 2, nothing sent.
    let out = s.run(&["instance", "create", "acme2"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("--type"), "{out:#?}");
    let out = s.run(&["instance", "create", "acme2", "--type", "staging"]);
    assert_eq!(out.code, 2, "{out:#?}");
    let out = s.run(&["instance", "delete", "acme"]);
    assert_eq!(out.code, 2, "{out:#?}");
    assert!(out.stderr.contains("--confirm"), "{out:#?}");
    s.run(&["instance", "show", "acme"]).ok();
}

#[test]
fn missing_wrong_and_revoked_tokens_exit_3() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));

    s.run_as(None, &["instance", "list"], "")
        .fails(3, "(missing_token)");
    s.run_as(Some("stw_not-a-real-token"), &["instance", "list"], "")
        .fails(3, "(invalid_token)");

    let out = s.run(&["token", "create", "ci-pipeline"]).ok();
    assert!(out.stdout.contains("shown only this once"), "{out:#?}");
    assert!(out.stdout.contains("export STEWARD_TOKEN=stw_"), "{out:#?}");
    let created = s.run(&["token", "create", "laptop", "--json"]).ok().json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    let id = created["token"]["id"].as_i64().unwrap().to_string();
    let me = s
        .run_as(Some(&secret), &["user", "whoami", "--json"], "")
        .ok()
        .json();
    assert_eq!(me["username"], "admin");
    assert_eq!(me["role"], "system_administrator");
    let whoami = s.run_as(Some(&secret), &["user", "whoami"], "").ok().stdout;
    assert!(
        whoami.contains("admin") && whoami.contains("system_administrator"),
        "{whoami}"
    );

    let tokens = s.run(&["token", "list"]).ok().stdout;
    assert!(
        tokens.contains("laptop") && tokens.contains("ci-pipeline") && tokens.contains("bootstrap"),
        "{tokens}"
    );
    let out = s.run(&["token", "revoke", &id]).ok();
    assert!(out.stdout.contains("Revoked API token"), "{out:#?}");
    s.run_as(Some(&secret), &["instance", "list"], "")
        .fails(3, "(invalid_token)");
    s.run(&["token", "revoke", &id]).fails(5, "already_revoked");
    let tokens = s.run(&["token", "list", "--all", "--json"]).ok().json();
    let revoked = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"].as_i64().unwrap().to_string() == id)
        .unwrap();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    assert!(s.run(&["token", "list"]).ok().stdout.contains("revoked"));

    // The global flags work after the subcommand too, and beat the environment.
    let out = s
        .run_as(
            Some(&secret),
            &["instance", "list", "--token", TOKEN, "--url", &s.url],
            "",
        )
        .ok();
    assert!(out.stdout.contains("0 instances"), "{out:#?}");
}

#[test]
fn a_viewer_reads_but_cannot_change_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    s.run(&["instance", "create", "acme", "--type", "production"])
        .ok();

    let out = s
        .run_as(
            Some(TOKEN),
            &[
                "user",
                "create",
                "vera",
                "--role",
                "viewer",
                "--password-stdin",
            ],
            "correct horse battery\n",
        )
        .ok();
    assert!(
        out.stdout.contains("Created user vera (viewer)"),
        "{out:#?}"
    );
    assert!(!out.stdout.contains("Generated password"), "{out:#?}");
    let out = s
        .run(&["user", "create", "dave", "--role", "delegated_admin"])
        .ok();
    assert!(out.stdout.contains("Generated password"), "{out:#?}");
    s.run_as(
        Some(TOKEN),
        &[
            "user",
            "create",
            "weak",
            "--role",
            "viewer",
            "--password-stdin",
        ],
        "short\n",
    )
    .fails(2, "(weak_password)");
    let users = s.run(&["user", "list"]).ok().stdout;
    for text in [
        "admin",
        "vera",
        "viewer",
        "dave",
        "delegated_admin",
        "active",
    ] {
        assert!(users.contains(text), "{users}");
    }

    // A user without a token gets one with their password.
    s.run_as(None, &["token", "login", "vera"], "wrong password!!\n")
        .fails(3, "(invalid_credentials)");
    let login = s
        .run_as(
            None,
            &["token", "login", "vera", "--name", "vera-laptop", "--json"],
            "correct horse battery\n",
        )
        .ok()
        .json();
    let viewer = login["secret"].as_str().unwrap().to_owned();
    assert_eq!(login["token"]["username"], "vera");
    let v = Some(viewer.as_str());

    s.run_as(v, &["instance", "list"], "").ok();
    s.run_as(v, &["instance", "show", "acme"], "").ok();
    s.run_as(v, &["release", "list"], "").ok();
    s.run_as(v, &["instance", "create", "mine", "--type", "sandbox"], "")
        .fails(3, "(forbidden)");
    s.run_as(v, &["instance", "switch", "acme", "--type", "sandbox"], "")
        .fails(3, "(forbidden)");
    s.run_as(v, &["instance", "delete", "acme", "--confirm", "acme"], "")
        .fails(3, "(forbidden)");
    s.run_as(
        v,
        &["user", "create", "eve", "--role", "system_administrator"],
        "",
    )
    .fails(3, "(forbidden)");
    s.run_as(
        v,
        &["user", "set-role", "vera", "--role", "system_administrator"],
        "",
    )
    .fails(3, "(forbidden)");
    s.run_as(v, &["token", "list", "--all"], "")
        .fails(3, "(forbidden)");
    let shown = s.run(&["instance", "show", "acme", "--json"]).ok().json();
    assert_eq!(shown["type"], "production", "nothing changed");

    // Viewers change their own password.
    s.run_as(
        v,
        &["user", "password"],
        "not the password\nanother long password\n",
    )
    .fails(2, "(wrong_password)");
    let out = s
        .run_as(
            v,
            &["user", "password"],
            "correct horse battery\nanother long password\n",
        )
        .ok();
    assert!(out.stdout.contains("Password changed"), "{out:#?}");
    s.run_as(None, &["token", "login", "vera"], "another long password\n")
        .ok();

    // Roles and disabling.
    let out = s
        .run(&["user", "set-role", "vera", "--role", "delegated_admin"])
        .ok();
    assert!(
        out.stdout.contains("vera is now delegated_admin"),
        "{out:#?}"
    );
    s.run_as(v, &["instance", "create", "mine", "--type", "sandbox"], "")
        .ok();
    s.run(&["user", "disable", "vera"]).ok();
    s.run_as(v, &["instance", "list"], "")
        .fails(3, "(user_disabled)");
    s.run(&["user", "enable", "vera"]).ok();
    s.run_as(v, &["instance", "list"], "").ok();
}

#[test]
fn the_audit_log_shows_what_was_done() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    s.run(&["instance", "create", "acme", "--type", "production"])
        .ok();
    s.run(&["instance", "switch", "acme", "--type", "sandbox"])
        .ok();
    s.run(&["instance", "delete", "acme", "--confirm", "acme"])
        .ok();
    s.run(&["token", "create", "ci"]).ok();

    let table = s.run(&["audit", "list"]).ok().stdout;
    assert!(table.starts_with("ID"), "{table}");
    for text in [
        "ACTOR",
        "ACTION",
        "TARGET",
        "instance.create",
        "instance.switch",
        "instance.delete",
        "token.create",
        "user.bootstrap",
        "System",
    ] {
        assert!(table.contains(text), "audit should show {text:?}: {table}");
    }

    let entries = s
        .run(&["audit", "list", "--action", "instance", "--json"])
        .ok()
        .json();
    let actions: Vec<&str> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["instance.delete", "instance.switch", "instance.create"],
        "newest first"
    );
    assert!(
        entries
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["actor"] == "admin" && e["target"] == "acme")
    );
    assert_eq!(entries[1]["details"]["before"]["type"], "production");

    let limited = s
        .run(&[
            "audit", "list", "--target", "acme", "--limit", "1", "--json",
        ])
        .ok()
        .json();
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let by_system = s
        .run(&["audit", "list", "--actor", "System", "--json"])
        .ok()
        .json();
    assert_eq!(by_system[0]["action"], "user.bootstrap");
    let future = s
        .run(&["audit", "list", "--since", "2999-01-01T00:00:00Z"])
        .ok()
        .stdout;
    assert!(future.contains("No audit entries match"), "{future}");
}

#[test]
fn release_list_shows_the_catalog() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    let table = s.run(&["release", "list"]).ok().stdout;
    assert!(table.starts_with("VERSION"), "{table}");
    for v in ["8.0", "8.1", "8.2", "9.0", "9.1 (latest)"] {
        assert!(table.contains(v), "{table}");
    }
    let releases = s.run(&["release", "list", "--json"]).ok().json();
    let versions: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["8.0", "8.1", "8.2", "9.0", "9.1"]);
}

#[test]
fn help_explains_every_command() {
    let help = |args: &[&str]| {
        let out = run(steward_command().args(args), "");
        assert_eq!(out.code, 0, "{out:#?}");
        out.stdout
    };
    let top = help(&["--help"]);
    for text in [
        "serve",
        "instance",
        "release",
        "user",
        "token",
        "audit",
        "Exit codes",
        "STEWARD_URL",
        "STEWARD_TOKEN",
    ] {
        assert!(top.contains(text), "{text:?} missing from --help: {top}");
    }
    assert!(help(&["serve", "--help"]).contains("--bootstrap-token-file"));
    assert!(help(&["serve", "--help"]).contains("STEWARD_DATA_DIR"));
    assert!(help(&["instance", "delete", "--help"]).contains("typed again"));
    assert!(help(&["instance", "create", "--help"]).contains("production"));
    assert!(help(&["user", "create", "--help"]).contains("system_administrator"));
    assert!(help(&["audit", "list", "--help"]).contains("RFC 3339"));
    for group in [
        "instance",
        "release",
        "user",
        "token",
        "audit",
        "job",
        "backup",
        "maintenance",
    ] {
        help(&[group, "--help"]);
    }
    let out = run(steward_command().arg("--version"), "");
    assert!(out.stdout.starts_with("steward "), "{out:#?}");
    let out = run(&mut steward_command(), "");
    assert_eq!(out.code, 2, "no command is a usage error: {out:#?}");
}

#[test]
fn an_unreachable_server_is_named() {
    // Port 9 (discard) on localhost: nothing listens there in the test environment.
    let out = run(
        steward_command().args([
            "instance",
            "list",
            "--url",
            "http://127.0.0.1:9",
            "--token",
            TOKEN,
        ]),
        "",
    );
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr
            .contains("cannot reach the Steward server at http://127.0.0.1:9"),
        "{out:#?}"
    );
    let out = run(
        steward_command().args(["instance", "list", "--url", "localhost:8080"]),
        "",
    );
    assert_eq!(out.code, 2, "{out:#?}");
}

#[test]
fn first_start_prints_the_credentials_once() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp);
    let s = Server::start_with(&dir, None);
    let banner = s.banner.join("\n");
    assert!(banner.contains("Username:            admin"), "{banner}");
    let field = |name: &str| {
        s.banner
            .iter()
            .find_map(|l| l.trim().strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {name} in {banner}"))
    };
    let password = field("One-time password:");
    let token = field("API token:");
    assert!(token.starts_with("stw_"), "{token}");
    assert!(
        banner.contains(&format!("export STEWARD_TOKEN={token}")),
        "{banner}"
    );
    assert_eq!(
        banner.matches(&password).count(),
        1,
        "the password is printed once: {banner}"
    );
    let me = s
        .run_as(Some(&token), &["user", "whoami", "--json"], "")
        .ok()
        .json();
    assert_eq!(me["username"], "admin");
    s.run_as(None, &["token", "login", "admin"], &format!("{password}\n"))
        .ok();
    assert!(s.terminate().success());

    let again = Server::start_with(&dir, None);
    let banner = again.banner.join("\n");
    assert_eq!(again.banner.len(), 1, "only the listening line: {banner}");
    assert!(
        !banner.contains("password") && !banner.contains("stw_"),
        "{banner}"
    );
    again.run_as(Some(&token), &["user", "whoami"], "").ok();
}

#[test]
fn the_bootstrap_token_comes_from_the_environment_or_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    assert!(s.banner.join("\n").contains(TOKEN));
    s.run(&["user", "whoami"]).ok();
    drop(s);

    let file = tmp.path().join("token");
    let other = "stw_ffffffffffffffffffffffffffffffffffffffff";
    std::fs::write(&file, format!("{other}\n")).unwrap();
    let mut cmd = steward_command();
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data2"))
        .arg("--bootstrap-token-file")
        .arg(&file)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("a listening line").unwrap();
        if let Some(url) = line.strip_prefix("Steward admin center listening on ") {
            break url.to_owned();
        }
    };
    let out = run(
        steward_command().args(["user", "whoami", "--url", &url, "--token", other]),
        "",
    );
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(out.code, 0, "{out:#?}");

    let bad = run(
        steward_command()
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(tmp.path().join("data3"))
            .env("STEWARD_BOOTSTRAP_TOKEN", "stw_short"),
        "",
    );
    assert_ne!(bad.code, 0);
    assert!(
        bad.stderr.contains("error: ") && bad.stderr.contains("bootstrap token"),
        "{bad:#?}"
    );
}

#[test]
fn sigterm_right_after_start_stops_the_server_cleanly() {
    // The signal handlers are in place before the "listening on" line is printed.
    let tmp = tempfile::tempdir().unwrap();
    for _ in 0..3 {
        let s = Server::start(&data_dir(&tmp));
        let stderr = s.stderr.clone();
        let status = s.terminate();
        assert!(
            status.success(),
            "exit status {status:?}; stderr: {}",
            stderr.lock().unwrap()
        );
    }
}

#[test]
fn sigterm_stops_the_server_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    s.run(&["instance", "list"]).ok();
    let stderr = s.stderr.clone();
    let started = Instant::now();
    let status = s.terminate();
    assert!(
        status.success(),
        "exit status {status:?}; stderr: {}",
        stderr.lock().unwrap()
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    // The log thread may lag the exit by a moment.
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        stderr.lock().unwrap().contains("shutting down"),
        "{}",
        stderr.lock().unwrap()
    );
}

#[test]
fn startup_errors_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp);
    let s = Server::start(&dir);

    // The port is taken.
    let port = s.url.rsplit(':').next().unwrap().to_owned();
    let mut cmd = steward_command();
    cmd.args([
        "serve",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--data-dir",
    ])
    .arg(tmp.path().join("other"));
    let out = run(&mut cmd, "");
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr
            .contains(&format!("error: cannot listen on 127.0.0.1:{port}")),
        "{out:#?}"
    );
    assert!(!tmp.path().join("other").exists(), "nothing was created");
    assert!(s.terminate().success());

    // A configuration file that does not exist, or has a typo.
    let out = run(
        steward_command().args(["serve", "--config", "/nonexistent/steward.toml"]),
        "",
    );
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stderr.contains("does not exist"), "{out:#?}");
    let bad = tmp.path().join("steward.toml");
    std::fs::write(&bad, "listn = \"127.0.0.1:0\"\n").unwrap();
    let out = run(steward_command().arg("serve").arg("--config").arg(&bad), "");
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        out.stderr.contains("error: invalid configuration") && out.stderr.contains("listn"),
        "{out:#?}"
    );

    // A configuration file with the data directory and address works.
    let good = tmp.path().join("good.toml");
    std::fs::write(
        &good,
        format!(
            "data_dir = {:?}\nlisten = \"127.0.0.1:0\"\n",
            dir.display().to_string()
        ),
    )
    .unwrap();
    let mut child = steward_command()
        .arg("serve")
        .arg("--config")
        .arg(&good)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .next()
        .unwrap()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        first.starts_with("Steward admin center listening on http://127.0.0.1:"),
        "{first}"
    );
}

#[test]
fn a_store_from_a_newer_steward_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = data_dir(&tmp);
    let s = Server::start(&dir);
    assert!(s.terminate().success());

    let store = dir.join("steward.db");
    let conn = rusqlite::Connection::open(&store).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert!(version > 0);
    conn.pragma_update(None, "user_version", version + 1)
        .unwrap();
    drop(conn);

    let mut child = steward_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(&mut child, Duration::from_secs(30))
        .expect("steward serve should refuse to start");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut stdout = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(!status.success(), "{status:?}");
    assert!(
        stderr.contains("error: ") && stderr.contains("newer Steward"),
        "{stderr}"
    );
    assert!(!stdout.contains("listening on"), "{stdout}");
}
