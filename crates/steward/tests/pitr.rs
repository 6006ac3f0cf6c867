//! `steward backup range` and `steward backup restore --instance NAME --at TIME` against a
//! real `steward serve` with continuous capture on, and real instance databases.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn db_of(s: &Server, name: &str) -> PathBuf {
    let v = s.run(&["instance", "show", name, "--json"]).ok().json();
    PathBuf::from(v["database_path"].as_str().unwrap())
}

fn names(db: &std::path::Path) -> Vec<String> {
    let c = rusqlite::Connection::open(db).unwrap();
    let mut st = c.prepare("SELECT name FROM accounts ORDER BY id").unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

fn insert(db: &std::path::Path, name: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.busy_timeout(Duration::from_secs(5)).unwrap();
    c.execute("INSERT INTO accounts (name) VALUES (?1)", [name])
        .unwrap();
}

/// Waits until `backup range NAME --json` reaches past `at`.
fn wait_range(s: &Server, name: &str, at: chrono::DateTime<chrono::Utc>) -> serde_json::Value {
    for _ in 0..400 {
        let r = s.run(&["backup", "range", name, "--json"]).ok().json();
        if r["latest"]
            .as_str()
            .and_then(|l| l.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .is_some_and(|l| l >= at)
        {
            return r;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("the range of {name} never reached {at}");
}

#[test]
fn restore_to_a_moment_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    let s = Server::start_env(
        &data,
        &[
            ("STEWARD_CONTINUOUS_CAPTURE", "true"),
            ("STEWARD_CAPTURE_INTERVAL_MS", "20"),
        ],
    );
    s.run(&["instance", "create", "crm-prod", "--type", "production"])
        .ok();
    s.run(&["instance", "create", "crm-sand", "--type", "sandbox"])
        .ok();
    s.run(&["instance", "create", "crm-prod2", "--type", "production"])
        .ok();
    let prod = db_of(&s, "crm-prod");
    let sand = db_of(&s, "crm-sand");
    // Capture of a new instance starts within a second or so (a base snapshot first).
    wait_range(&s, "crm-prod", chrono::Utc::now());

    insert(&prod, "first");
    std::thread::sleep(Duration::from_millis(100));
    let moment = chrono::Utc::now();
    let expected = names(&prod);
    std::thread::sleep(Duration::from_millis(100));
    insert(&prod, "second");
    std::thread::sleep(Duration::from_millis(100));
    wait_range(&s, "crm-prod", chrono::Utc::now());

    // The range for people: restorable from X to Y, and capture running.
    let text = s.run(&["backup", "range", "crm-prod"]).ok().stdout;
    assert!(text.starts_with("crm-prod is restorable from "), "{text}");
    assert!(text.contains("Capture is running"), "{text}");

    let at = moment.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    // A production target is refused before the review, nothing restored.
    let before_prod2 = names(&db_of(&s, "crm-prod2"));
    let out = s.run(&[
        "backup",
        "restore",
        "--instance",
        "crm-prod",
        "--at",
        &at,
        "--target",
        "crm-prod2",
        "--yes",
    ]);
    let out = out.fails(5, "production instance");
    assert!(
        !out.stdout.contains("Restore crm-prod as it was"),
        "{out:#?}"
    );
    assert_eq!(names(&db_of(&s, "crm-prod2")), before_prod2);
    // A malformed time is a usage error naming the flag.
    s.run(&[
        "backup",
        "restore",
        "--instance",
        "crm-prod",
        "--at",
        "last tuesday",
        "--target",
        "crm-sand",
        "--yes",
    ])
    .fails(2, "--at");
    // A moment in the future: the server's specific refusal, exit code 5.
    let future = (chrono::Utc::now() + chrono::Duration::hours(2)).to_rfc3339();
    s.run(&[
        "backup",
        "restore",
        "--instance",
        "crm-prod",
        "--at",
        &future,
        "--target",
        "crm-sand",
        "--yes",
    ])
    .fails(5, "is in the future");
    // Without --yes and without a terminal: refused, nothing restored.
    s.run(&[
        "backup",
        "restore",
        "--instance",
        "crm-prod",
        "--at",
        &at,
        "--target",
        "crm-sand",
    ])
    .fails(2, "--yes");

    let out = s
        .run(&[
            "backup",
            "restore",
            "--instance",
            "crm-prod",
            "--at",
            &at,
            "--target",
            "crm-sand",
            "--yes",
            "--wait",
        ])
        .ok();
    assert!(out.stdout.contains("Restored crm-prod as of "), "{out:#?}");
    assert_eq!(
        names(&sand),
        expected,
        "the sandbox holds what crm-prod held at that moment: the first row, not the second"
    );
    assert!(names(&sand).contains(&"first".to_owned()));
    assert!(!names(&sand).contains(&"second".to_owned()));
}
