//! What a new user ran into with the CLI, against a real `steward serve`: usage lines that
//! made optional flags look required, a restore into production refused only after its whole
//! review, and times printed with nanoseconds in errors and histories.

mod common;

use serde_json::Value;

use common::*;

/// The `Usage:` line of a help text or an error.
fn usage_line(text: &str) -> String {
    text.lines()
        .find(|l| l.starts_with("Usage: "))
        .unwrap_or_else(|| panic!("no usage line in {text}"))
        .to_owned()
}

#[test]
fn usage_lines_show_optional_flags_as_optional() {
    let help = |args: &[&str]| {
        let out = run(steward_command().args(args), "");
        assert_eq!(out.code, 0, "{out:#?}");
        usage_line(&out.stdout)
    };
    let create = help(&["backup", "create", "--help"]);
    assert_eq!(
        create,
        "Usage: steward backup create [OPTIONS] --label <LABEL> <INSTANCE>"
    );

    // Errors used to build their usage line from the arguments given, so `--notes`, and
    // `--url`/`--token` (also when they come from STEWARD_URL/STEWARD_TOKEN), read as
    // required: `steward backup create --label <LABEL> --notes <TEXT> --url <URL> --token
    // <TOKEN> <INSTANCE>`. An error shows the command's own usage, as --help does.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 5] = [
        (&["backup", "create", "acme", "--notes", "n"], &[], &create),
        (
            &[
                "--url",
                "http://127.0.0.1:9",
                "--token",
                "stw_x",
                "backup",
                "create",
                "acme",
                "--notes",
                "n",
            ],
            &[],
            &create,
        ),
        (
            &["backup", "create", "acme", "--notes", "n"],
            &[
                ("STEWARD_URL", "http://127.0.0.1:9"),
                ("STEWARD_TOKEN", "stw_x"),
            ],
            &create,
        ),
        (
            &["backup", "edit", "7", "--json"],
            &[("STEWARD_TOKEN", "stw_x")],
            "Usage: steward backup edit [OPTIONS] <--label <LABEL>|--notes <TEXT>> <ID>",
        ),
        (
            &["--token", "stw_x", "instance", "create", "acme"],
            &[],
            "Usage: steward instance create [OPTIONS] --type <TYPE> <NAME>",
        ),
    ];
    for (args, env, expected) in cases {
        let mut cmd = steward_command();
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(cmd.args(args), "");
        assert_eq!(out.code, 2, "{args:?}: {out:#?}");
        assert!(out.stderr.starts_with("error: "), "{out:#?}");
        let usage = usage_line(&out.stderr);
        assert_eq!(usage, expected, "{args:?} {env:?}");
        for optional in ["--notes <TEXT>", "--url <URL>", "--token <TOKEN>", "--json"] {
            assert!(
                !usage.contains(&format!(" {optional}")),
                "{optional} is not required: {usage}"
            );
        }
    }
}

#[test]
fn limits_outside_the_servers_bounds_are_refused_before_asking_it() {
    for (args, range) in [
        (&["audit", "list", "--limit", "0"][..], "1..=10000"),
        (&["audit", "list", "--limit", "10001"], "1..=10000"),
        (&["alerts", "--limit", "1001"], "1..=1000"),
        (&["notify", "log", "--limit", "0"], "1..=1000"),
    ] {
        // No server runs: the command line itself is refused (exit code 2).
        let out = run(
            steward_command()
                .env("STEWARD_URL", "http://127.0.0.1:9")
                .args(args),
            "",
        );
        assert_eq!(out.code, 2, "{args:?}: {out:#?}");
        assert!(out.stderr.contains(range), "{args:?}: {out:#?}");
    }
}

fn create_instance(s: &Server, name: &str, kind: &str) -> Value {
    s.run(&["instance", "create", name, "--type", kind, "--json"])
        .ok()
        .json()
}

#[test]
fn a_restore_into_production_is_refused_before_its_review() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "acme-prod", "production");
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
    let id = b["id"].as_i64().unwrap().to_string();

    // With --yes, without it (no terminal), and with --json: the same refusal, at once.
    for extra in [&["--yes"][..], &[], &["--yes", "--json"]] {
        let mut args = vec!["backup", "restore", &id, "--target", "acme-prod"];
        args.extend_from_slice(extra);
        let out = s
            .run(&args)
            .fails(5, "acme-prod is a production instance")
            .fails(5, "Switch it to sandbox first")
            .fails(5, "(target_not_sandbox)");
        assert_eq!(out.stdout, "", "no review is printed: {out:#?}");
        assert!(!out.stderr.contains("Restore review"), "{out:#?}");
        assert!(
            !out.stderr.contains("--yes"),
            "the refusal comes before any confirmation: {out:#?}"
        );
    }
    // Nothing was started.
    let jobs = s.run(&["job", "list", "--json"]).ok().json();
    assert!(
        jobs.as_array()
            .unwrap()
            .iter()
            .all(|j| j["kind"] != "restore"),
        "{jobs:#}"
    );
    let shown = s
        .run(&["instance", "show", "acme-prod", "--json"])
        .ok()
        .json();
    assert_eq!(shown["state"], "available");

    // A sandbox target still gets the review first.
    create_instance(&s, "acme-test", "sandbox");
    let out = s
        .run(&["backup", "restore", &id, "--target", "acme-test", "--yes"])
        .ok();
    assert!(out.stdout.starts_with("Restore review"), "{out:#?}");
}

/// Every `HH:MM:SS` time in `text` is followed by ` UTC`, never by a fraction.
#[track_caller]
fn assert_whole_seconds(text: &str, at_least: usize) {
    let bytes = text.as_bytes();
    let mut found = 0;
    for i in 0..bytes.len().saturating_sub(8) {
        let t = &bytes[i..i + 8];
        let is_time = t[2] == b':'
            && t[5] == b':'
            && [0, 1, 3, 4, 6, 7].iter().all(|&k| t[k].is_ascii_digit());
        if is_time && (i == 0 || !bytes[i - 1].is_ascii_digit()) {
            let rest = &text[i + 8..];
            assert!(
                !rest.starts_with('.') && !rest.starts_with(','),
                "a time with a fraction of a second: {:?} in {text}",
                &text[i..(i + 20).min(text.len())]
            );
            found += 1;
        }
    }
    assert!(found >= at_least, "{found} times in {text}");
}

#[test]
fn times_in_errors_and_histories_are_shown_to_the_second() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    create_instance(&s, "prod-a", "production");
    create_instance(&s, "sand-b", "sandbox");

    // Errors that name "now" and times derived from it (the server's clock has nanoseconds).
    let refresh = |window: &str| {
        s.run(&[
            "workitem",
            "refresh",
            "--source",
            "prod-a",
            "--target",
            "sand-b",
            "--window-start",
            window,
            "--acknowledge",
        ])
    };
    let in_hours = |h: i64| (chrono::Utc::now() + chrono::Duration::hours(h)).to_rfc3339();
    let out = refresh(&in_hours(2)).fails(2, "(inside_lead_time)");
    assert!(
        out.stderr.contains("the earliest allowed start is 20"),
        "{out:#?}"
    );
    assert_whole_seconds(&out.stderr, 1);
    let out = refresh(&in_hours(-1)).fails(2, "(window_in_past)");
    assert!(out.stderr.contains("(now: 20"), "{out:#?}");
    assert_whole_seconds(&out.stderr, 2);

    // An update's history, scheduled and rescheduled with times given to the millisecond.
    let releases = s.run(&["release", "list", "--json"]).ok().json();
    let versions: Vec<&str> = releases
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["version"].as_str().unwrap())
        .collect();
    let latest = *versions.last().unwrap();
    create_instance(&s, "crm-prod", "production");
    // An instance on the latest release has nothing to update to; take the one before it
    // that the catalog allows a new instance at.
    let older = versions
        .iter()
        .rev()
        .skip(1)
        .find(|v| {
            s.run(&[
                "instance",
                "create",
                "crm-old",
                "--type",
                "sandbox",
                "--release",
                v,
            ])
            .code
                == 0
        })
        .copied()
        .expect("an older release");
    let year = chrono::Utc::now()
        .format("%Y")
        .to_string()
        .parse::<i32>()
        .unwrap()
        + 2;
    s.run(&[
        "update",
        "schedule",
        "crm-old",
        "--target",
        latest,
        "--preferred",
        &format!("{year}-03-10T22:00:00.250Z"),
        "--alternate",
        &format!("{year}-03-12T22:00:00.750Z"),
    ])
    .ok();
    s.run(&[
        "update",
        "reschedule",
        "crm-old",
        "--preferred",
        &format!("{year}-03-11T22:00:00.500Z"),
    ])
    .ok();
    let shown = s.run(&["update", "show", "crm-old"]).ok().stdout;
    assert!(
        shown.contains(&format!(
            "{year}-03-10 22:00:00 UTC -> {year}-03-11 22:00:00 UTC"
        )),
        "the reschedule in the history, from {older}: {shown}"
    );
    assert_whole_seconds(&shown, 4);

    // A refused schedule names the window's start, to the second.
    let out = s
        .run(&[
            "update",
            "reschedule",
            "crm-old",
            "--preferred",
            "2020-01-01T22:00:00.123456789Z",
        ])
        .fails(2, "in the past");
    assert!(out.stderr.contains("2020-01-01 22:00:00 UTC"), "{out:#?}");
    assert_whole_seconds(&out.stderr, 1);
}
