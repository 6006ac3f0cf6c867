//! Defects found when Steward was tried as a new user would (issue #13, point 4), through the
//! built binary.

mod common;

use common::*;

/// `STEWARD_MINIMUM_BACKUP_RELEASE=9.0` used to stop `steward serve` from starting
/// (`minimum_backup_release "9" is not a release`): the environment parser read 9.0 as a
/// number. A release read from the environment stays text.
#[test]
fn serve_starts_with_a_number_like_minimum_backup_release() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start_env(
        &data_dir(&tmp),
        &[("STEWARD_MINIMUM_BACKUP_RELEASE", "9.0")],
    );
    s.run(&[
        "instance",
        "create",
        "acme",
        "--type",
        "production",
        "--release",
        "8.2",
    ])
    .ok();
    // The setting took effect as 9.0, not 9.
    s.run(&["backup", "create", "acme", "--label", "x"])
        .fails(5, "(release_too_old)")
        .fails(5, "release 9.0 or later");
}

/// A backup label with a right-to-left override is refused with the character named.
#[test]
fn backup_labels_with_bidi_overrides_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    s.run(&[
        "instance",
        "create",
        "acme",
        "--type",
        "sandbox",
        "--release",
        "9.0",
    ])
    .ok();
    s.run(&["backup", "create", "acme", "--label", "gpj.\u{202e}exe"])
        .fails(2, "(invalid_label)")
        .fails(2, "U+202E RIGHT-TO-LEFT OVERRIDE (at position 5)");
    s.run(&[
        "backup",
        "create",
        "acme",
        "--label",
        "ok",
        "--notes",
        "bell\u{7}",
    ])
    .fails(2, "(invalid_notes)")
    .fails(2, "U+0007 BELL");
    let list = s.run(&["backup", "list", "acme", "--json"]).ok().json();
    assert_eq!(list.as_array().unwrap().len(), 0, "nothing created: {list}");
}

/// `steward token login` after five wrong passwords: refused as an authentication failure
/// (exit 3) that says why and for how long, the right password included.
#[test]
fn token_login_is_throttled_after_failed_passwords() {
    let tmp = tempfile::tempdir().unwrap();
    let s = Server::start(&data_dir(&tmp));
    s.run_as(
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
    for _ in 0..4 {
        s.run_as(None, &["token", "login", "vera"], "wrong password!!\n")
            .fails(3, "(invalid_credentials)");
    }
    s.run_as(None, &["token", "login", "vera"], "wrong password!!\n")
        .fails(3, "(login_throttled)");
    s.run_as(None, &["token", "login", "vera"], "correct horse battery\n")
        .fails(
            3,
            "too many failed sign-ins for vera; try again in 15 minutes (login_throttled)",
        );
}
