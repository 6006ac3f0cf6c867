//! Restore drills through the services and the REST API, with real SQLite instances, a real
//! backup repository on disk, the job runner and the drill worker, and an injected clock.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration as StdDuration, Instant};

use chrono::{Duration, TimeZone, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use steward_core::drill::DrillSchedule;
use steward_core::{Clock, ManualClock};
use steward_server::services::Actor;
use steward_server::testing::TestServer;
use steward_server::{Config, SharedState};

struct Env {
    dir: tempfile::TempDir,
    state: SharedState,
    clock: Arc<ManualClock>,
    admin: Actor,
}

fn start() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 1, 0, 0).unwrap()
}

fn config(dir: &Path, tweak: impl FnOnce(&mut Config)) -> Config {
    let mut c = Config {
        data_dir: dir.join("data"),
        prune_grace_seconds: 0,
        // System backups would be queued by nothing here, but keep them out of the way.
        system_backup_time: "off".into(),
        ..Config::default()
    };
    tweak(&mut c);
    c
}

fn env_with(tweak: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(start()));
    let (state, boot) =
        steward_server::prepare_with_clock(config(dir.path(), tweak), clock.clone()).unwrap();
    let admin = state
        .services
        .authenticate_token(&boot.unwrap().token)
        .unwrap();
    Env {
        dir,
        state,
        clock,
        admin,
    }
}

fn env() -> Env {
    env_with(|_| {})
}

impl Env {
    fn run_jobs(&self) {
        while self.state.services.run_next_job(&self.state.jobs).unwrap() {}
    }

    fn instance(&self, name: &str, kind: &str) {
        self.state
            .services
            .create_instance(&self.admin, name, kind, Some("9.1"))
            .unwrap();
    }

    /// Takes a completed on-demand backup; returns its id.
    fn backup(&self, instance: &str, label: &str) -> i64 {
        let b = self
            .state
            .services
            .create_backup(&self.admin, instance, label, None)
            .unwrap();
        self.run_jobs();
        let b = self.state.services.show_backup(&self.admin, b.id).unwrap();
        assert_eq!(b.status, "completed", "{:?}", b.error);
        b.id
    }

    fn scratch(&self) -> PathBuf {
        self.state.services.drill_scratch_dir()
    }

    fn user(&self, name: &str, role: &str) -> Actor {
        let s = &self.state.services;
        s.create_user(&self.admin, name, role, Some("a-long-password-1"))
            .unwrap();
        let t = s
            .token_for_credentials(name, "a-long-password-1", "t")
            .unwrap();
        s.authenticate_token(&t.secret).unwrap()
    }
}

/// Holds drills mid-restore (the services' testing aid) until dropped, so a failed assertion
/// does not leave a drill worker waiting forever.
struct Hold(SharedState);

impl Hold {
    fn new(state: &SharedState) -> Self {
        state.services.drills.hold.store(true, Ordering::SeqCst);
        Self(state.clone())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.services.drills.hold.store(false, Ordering::SeqCst);
    }
}

/// Files in `dir` (none when it does not exist).
fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Every pack file of the repository under `data_dir/backups/data/`.
fn packs(data_dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in files_in(&data_dir.join("backups").join("data")) {
        out.extend(files_in(&sub));
    }
    assert!(!out.is_empty(), "the repository has packs");
    out
}

/// Flips one byte in the middle of every pack: each chunk stored there no longer matches
/// its checksum.
fn corrupt_packs(data_dir: &Path) {
    for p in packs(data_dir) {
        let mut bytes = std::fs::read(&p).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
    }
}

#[test]
fn the_schedule_drills_each_newest_backup_once_a_day_at_its_offset() {
    let e = env();
    let s = &e.state.services;
    e.instance("crm-prod", "production");
    e.instance("crm-sand", "sandbox");
    e.instance("no-backups", "sandbox");
    let first = e.backup("crm-prod", "first");
    let newest = e.backup("crm-prod", "second");
    let sand = e.backup("crm-sand", "sand");

    let daily = DrillSchedule::Every { hours: 24 };
    let prod_due = daily.slot("crm-prod", e.clock.now()).unwrap().due_at;
    let sand_due = daily.slot("crm-sand", e.clock.now()).unwrap().due_at;
    assert_ne!(prod_due, sand_due, "the fleet is spread over the day");
    assert!(prod_due.date_naive() == start().date_naive());

    // Before its offset, an instance is not drilled; at it, its newest backup is, once.
    let (early, late) = if prod_due < sand_due {
        ("crm-prod", "crm-sand")
    } else {
        ("crm-sand", "crm-prod")
    };
    let (early_due, late_due) = (prod_due.min(sand_due), prod_due.max(sand_due));
    e.clock.set(early_due - Duration::seconds(1));
    assert_eq!(s.schedule_drills().unwrap(), 0, "nothing is due yet");
    e.clock.set(early_due);
    assert_eq!(s.schedule_drills().unwrap(), 1, "{early} is due");
    e.clock.set(late_due);
    assert_eq!(s.schedule_drills().unwrap(), 1, "{late} is due");
    assert_eq!(s.schedule_drills().unwrap(), 0, "once per day");
    while s.run_next_drill().unwrap() {}
    assert!(
        files_in(&e.scratch()).is_empty(),
        "the throwaway files are gone"
    );

    // The results show in instance show, the backup list and the drill itself.
    let shown = s.show_instance(&e.admin, "crm-prod").unwrap();
    let last = shown.last_drill.expect("crm-prod was drilled");
    assert_eq!(last.backup_id, newest, "the newest completed backup");
    assert_eq!(last.backup_label, "second");
    assert_eq!(last.state, "passed", "{:?}", last.problems);
    assert_eq!(last.origin, "scheduled");
    assert_eq!(last.requested_by, "System");
    assert_eq!(
        (last.hash_ok, last.integrity_ok, last.row_counts_ok),
        (Some(true), Some(true), Some(true))
    );
    assert!(last.problems.is_empty());
    assert!(last.bytes.unwrap() > 0 && last.duration_ms.is_some());
    assert_eq!(last.finished_at, Some(late_due));
    let backups = s.list_backups(&e.admin, "crm-prod").unwrap();
    let of = |id: i64| backups.iter().find(|b| b.id == id).unwrap();
    assert_eq!(of(newest).last_drill.as_ref().unwrap().id, last.id);
    assert!(
        of(first).last_drill.is_none(),
        "the older backup was not drilled"
    );
    assert_eq!(
        s.show_instance(&e.admin, "crm-sand")
            .unwrap()
            .last_drill
            .unwrap()
            .backup_id,
        sand
    );
    assert!(
        s.show_instance(&e.admin, "no-backups")
            .unwrap()
            .last_drill
            .is_none(),
        "no backup, no drill"
    );
    let listed = s.list_instances(&e.admin).unwrap().instances;
    let prod = listed.iter().find(|i| i.name == "crm-prod").unwrap();
    assert_eq!(prod.last_drill.as_ref().unwrap().id, last.id);

    // The next day, at the same offset: drilled again.
    let tomorrow = daily
        .slot("crm-prod", e.clock.now() + Duration::days(1))
        .unwrap();
    assert_eq!(tomorrow.due_at - prod_due, Duration::days(1), "same offset");
    e.clock.set(tomorrow.due_at - Duration::seconds(1));
    let before = s.schedule_drills().unwrap();
    assert!(before <= 1, "only crm-sand may be due before crm-prod");
    e.clock.set(tomorrow.due_at);
    assert!(s.schedule_drills().unwrap() >= 1);
    while s.run_next_drill().unwrap() {}
    let drills = s.list_drills(&e.admin, Some("crm-prod")).unwrap();
    assert_eq!(drills.len(), 2, "one drill per day");
    assert!(drills.iter().all(|d| d.state == "passed"));
}

#[test]
fn a_corrupted_backup_fails_its_drill_alerts_and_notifies() {
    let e = env();
    let s = &e.state.services;
    s.set_user_email(&e.admin, "admin", Some("admin@example.com"))
        .unwrap();
    s.create_webhook(&e.admin, "http://127.0.0.1:9/hook", None)
        .unwrap();
    e.instance("crm-prod", "production");
    e.instance("crm-ok", "sandbox");
    e.backup("crm-ok", "fine");
    let ok = s.run_drill(&e.admin, "crm-ok", None).unwrap();
    assert!(s.run_next_drill().unwrap());
    assert_eq!(s.show_drill(&e.admin, ok.id).unwrap().state, "passed");

    let id = e.backup("crm-prod", "nightly");
    corrupt_packs(&e.state.config.data_dir);
    let d = s.run_drill(&e.admin, "crm-prod", None).unwrap();
    assert_eq!((d.state.as_str(), d.backup_id), ("queued", id));
    assert!(s.run_next_drill().unwrap());
    let d = s.show_drill(&e.admin, d.id).unwrap();
    assert_eq!(d.state, "failed");
    assert_eq!(d.hash_ok, Some(false));
    assert!(!d.problems.is_empty());
    assert!(
        d.problems[0].contains("chunk"),
        "the problem names the chunk: {:?}",
        d.problems
    );
    assert!(files_in(&e.scratch()).is_empty(), "no throwaway file left");

    // Listed in the fleet view (failed first; crm-ok passed just now and is not listed).
    let fleet = s.drill_fleet(&e.admin, None, true).unwrap();
    let names: Vec<&str> = fleet
        .instances
        .iter()
        .map(|i| i.instance.as_str())
        .collect();
    assert_eq!(names, ["crm-prod"]);
    assert_eq!(fleet.instances[0].reason, "failed");
    assert_eq!(fleet.instances[0].last_drill.as_ref().unwrap().id, d.id);
    assert_eq!(fleet.schedule, "daily");
    assert_eq!(fleet.stale_days, 2, "twice the daily period");

    // The in-product alert, and the email and webhook deliveries of the schedule.
    let alerts = s.my_alerts(&e.admin, 10).unwrap();
    let alert = alerts
        .iter()
        .find(|a| a.message.contains("Restore drill"))
        .expect("an in-product alert");
    assert_eq!(alert.level, "error");
    assert_eq!(alert.instance.as_deref(), Some("crm-prod"));
    assert!(alert.message.contains("“nightly”"), "{}", alert.message);
    let log = s.notification_log(&e.admin, Some("crm-prod"), 50).unwrap();
    let sent: Vec<(&str, &str)> = log
        .iter()
        .filter(|d| d.event == "restore_drill_failed")
        .map(|d| (d.channel.as_str(), d.recipient.as_str()))
        .collect();
    assert!(sent.contains(&("email", "admin@example.com")), "{sent:?}");
    assert!(sent.iter().any(|(c, _)| *c == "webhook"), "{sent:?}");
    assert!(
        !log.iter()
            .any(|d| d.event == "restore_drill_failed" && d.instance.as_deref() == Some("crm-ok")),
        "a passed drill is not an event"
    );
    // The communications schedule has the event, All Admins, in-product + email + webhook.
    let schedule = s.notification_schedule(&e.admin).unwrap();
    let row = schedule
        .iter()
        .find(|r| r.event == "restore_drill_failed")
        .expect("in the schedule");
    assert_eq!(row.audience, "system_administrators");
    for c in ["in_product", "email", "webhook"] {
        assert!(
            row.channels.iter().any(|x| x == c),
            "{c}: {:?}",
            row.channels
        );
    }
}

#[test]
fn the_fleet_view_lists_stale_and_never_drilled_instances() {
    let e = env_with(|c| c.restore_drill_schedule = "off".into());
    let s = &e.state.services;
    e.instance("fresh", "sandbox");
    e.instance("never", "sandbox");
    e.backup("fresh", "b");
    s.run_drill(&e.admin, "fresh", None).unwrap();
    while s.run_next_drill().unwrap() {}

    let fleet = s.drill_fleet(&e.admin, Some(3), false).unwrap();
    let listed: Vec<(&str, &str, bool)> = fleet
        .instances
        .iter()
        .map(|i| (i.instance.as_str(), i.reason.as_str(), i.has_backup))
        .collect();
    assert_eq!(listed, [("never", "never", false)]);
    assert_eq!(fleet.instances_checked, 2);
    assert_eq!(fleet.schedule, "off");

    e.clock.advance(Duration::days(3) + Duration::minutes(1));
    let fleet = s.drill_fleet(&e.admin, Some(3), false).unwrap();
    let listed: Vec<(&str, &str)> = fleet
        .instances
        .iter()
        .map(|i| (i.instance.as_str(), i.reason.as_str()))
        .collect();
    assert_eq!(listed, [("never", "never"), ("fresh", "stale")]);
    let fleet = s.drill_fleet(&e.admin, Some(4), false).unwrap();
    assert_eq!(fleet.instances.len(), 1, "not stale at 4 days");
    assert!(
        s.drill_fleet(&e.admin, Some(3), true)
            .unwrap()
            .instances
            .is_empty(),
        "--failed lists failed drills only"
    );
    assert_eq!(s.drill_fleet(&e.admin, None, false).unwrap().stale_days, 7);
}

#[test]
fn off_schedules_nothing() {
    let e = env_with(|c| c.restore_drill_schedule = "off".into());
    let s = &e.state.services;
    e.instance("crm-prod", "production");
    e.backup("crm-prod", "b");
    for _ in 0..48 {
        e.clock.advance(Duration::hours(1));
        assert_eq!(s.schedule_drills().unwrap(), 0);
    }
    assert!(!s.run_next_drill().unwrap());
    assert!(s.list_drills(&e.admin, None).unwrap().is_empty());
}

#[test]
fn every_n_hours_drills_once_per_period() {
    let e = env_with(|c| c.restore_drill_schedule = "every 6 hours".into());
    let s = &e.state.services;
    e.instance("crm-prod", "production");
    e.backup("crm-prod", "b");
    let midnight = Utc.with_ymd_and_hms(2026, 11, 3, 0, 0, 0).unwrap();
    e.clock.set(midnight);
    // Two days (and the late grace) of scheduler ticks, a minute apart.
    for _ in 0..(2 * 24 * 60 + 16) {
        s.schedule_drills().unwrap();
        while s.run_next_drill().unwrap() {}
        e.clock.advance(Duration::minutes(1));
    }
    let mut slots: Vec<String> = s
        .store
        .read(|db| db.list_drills(None, 100))
        .unwrap()
        .into_iter()
        .map(|d| d.slot.unwrap())
        .collect();
    slots.sort();
    let want: Vec<String> = (0..8)
        .map(|p| {
            (midnight + Duration::hours(6 * p))
                .format("%Y-%m-%dT%H:%MZ")
                .to_string()
        })
        .collect();
    // Each period of the two days once; at most the period before and after besides.
    for w in &want {
        assert_eq!(
            slots.iter().filter(|s| *s == w).count(),
            1,
            "{w}: {slots:?}"
        );
    }
    assert!(slots.len() <= want.len() + 2, "{slots:?}");
}

#[test]
fn a_user_restore_cancels_a_running_drill_which_runs_again_later() {
    let e = env();
    let s = &e.state.services;
    e.instance("crm-prod", "production");
    e.instance("crm-sand", "sandbox");
    let id = e.backup("crm-prod", "b");
    let d = s.run_drill(&e.admin, "crm-prod", None).unwrap();

    // The drill holds mid-restore (testing aid) on the drill worker's thread.
    let hold = Hold::new(&e.state);
    let state = e.state.clone();
    let worker = std::thread::spawn(move || state.services.run_next_drill().unwrap());
    let deadline = Instant::now() + StdDuration::from_secs(30);
    // Running, and holding at its first progress report: its throwaway database exists
    // (beside it, the drill's lock file).
    let db_files = || -> Vec<PathBuf> {
        files_in(&e.scratch())
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "db"))
            .collect()
    };
    while s.show_drill(&e.admin, d.id).unwrap().state != "running" || db_files().is_empty() {
        assert!(Instant::now() < deadline, "the drill did not start");
        std::thread::sleep(StdDuration::from_millis(10));
    }
    let scratch = db_files();
    assert_eq!(scratch.len(), 1, "one throwaway file while it runs");
    let inst_dir = e.state.config.data_dir.join("instances");
    assert!(
        !scratch[0].starts_with(&inst_dir),
        "never inside an instance"
    );

    // A user's restore, queued while the drill runs, starts at once and cancels it.
    let started = Instant::now();
    let r = s.restore_backup(&e.admin, id, "crm-sand").unwrap();
    e.run_jobs();
    let job = s.show_job(&e.admin, r.job.id).unwrap();
    assert_eq!(job.state, "succeeded", "{:?}", job.last_error);
    assert!(
        started.elapsed() < StdDuration::from_secs(20),
        "the restore did not wait for the drill"
    );
    assert!(!worker.join().unwrap(), "the drill gave way");
    let d1 = s.show_drill(&e.admin, d.id).unwrap();
    assert_eq!((d1.state.as_str(), d1.attempts), ("queued", 1));
    assert!(
        files_in(&e.scratch()).is_empty(),
        "its throwaway file is gone"
    );

    // While a restore is queued, no drill starts.
    drop(hold);
    let r = s.restore_backup(&e.admin, id, "crm-sand").unwrap();
    assert!(!s.run_next_drill().unwrap(), "waits for the queued restore");
    assert_eq!(s.show_drill(&e.admin, d.id).unwrap().state, "queued");
    e.run_jobs();
    assert_eq!(s.show_job(&e.admin, r.job.id).unwrap().state, "succeeded");

    // Then it runs again and passes.
    assert!(s.run_next_drill().unwrap());
    let d2 = s.show_drill(&e.admin, d.id).unwrap();
    assert_eq!((d2.state.as_str(), d2.attempts), ("passed", 2));
}

#[test]
fn a_restore_of_a_drilled_backup_relies_on_the_drills_integrity_check() {
    let e = env();
    let s = &e.state.services;
    e.instance("crm-prod", "production");
    e.instance("crm-sand", "sandbox");
    let id = e.backup("crm-prod", "b");

    // Not drilled yet: the restore runs PRAGMA integrity_check itself.
    let r = s.restore_backup(&e.admin, id, "crm-sand").unwrap();
    e.run_jobs();
    let job = s.show_job(&e.admin, r.job.id).unwrap();
    assert_eq!(job.state, "succeeded", "{:?}", job.last_error);
    let result = job.result.clone().expect("a result");
    assert_eq!(result["integrity"], "checked_now", "{result}");
    assert!(result["integrity_proven_at"].is_null(), "{result}");

    // A passed drill proves these bytes; the next restore of the same backup trusts it.
    let d = s.run_drill(&e.admin, "crm-prod", Some(id)).unwrap();
    assert!(s.run_next_drill().unwrap());
    assert_eq!(s.show_drill(&e.admin, d.id).unwrap().state, "passed");
    let r = s.restore_backup(&e.admin, id, "crm-sand").unwrap();
    e.run_jobs();
    let job = s.show_job(&e.admin, r.job.id).unwrap();
    assert_eq!(job.state, "succeeded", "{:?}", job.last_error);
    let result = job.result.clone().expect("a result");
    assert_eq!(result["integrity"], "proven_by_drill", "{result}");
    assert!(result["integrity_proven_at"].is_string(), "{result}");
}

#[test]
fn a_drill_interrupted_by_a_stop_leaves_no_file_and_runs_again() {
    let e = env();
    let s = &e.state.services;
    e.instance("crm-prod", "production");
    e.backup("crm-prod", "b");
    let d = s.run_drill(&e.admin, "crm-prod", None).unwrap();
    // As a crash mid-drill leaves it: running, with its throwaway file.
    let now = e.clock.now();
    s.store.write(|db| db.start_drill(d.id, now)).unwrap();
    std::fs::create_dir_all(e.scratch()).unwrap();
    let left = e.scratch().join(".drill-left-behind.db");
    std::fs::write(&left, b"half a database").unwrap();
    let Env { dir, state, .. } = e;
    drop(state);

    let clock = Arc::new(ManualClock::new(start()));
    let (state, _) = steward_server::prepare_with_clock(config(dir.path(), |_| {}), clock).unwrap();
    let s = &state.services;
    assert!(!left.exists(), "the scratch directory is emptied at start");
    let admin = Actor::system();
    assert_eq!(s.show_drill(&admin, d.id).unwrap().state, "queued");
    assert!(s.run_next_drill().unwrap());
    assert_eq!(s.show_drill(&admin, d.id).unwrap().state, "passed");
}

#[test]
fn bad_input_gets_specific_errors() {
    let e = env();
    let s = &e.state.services;
    e.instance("crm-prod", "production");
    e.instance("crm-other", "sandbox");
    let err = s.run_drill(&e.admin, "nope", None).unwrap_err();
    assert_eq!(err.code, "unknown_instance");
    let err = s.run_drill(&e.admin, "crm-prod", None).unwrap_err();
    assert_eq!(err.code, "no_backup");
    assert!(
        err.message.contains("no completed backup"),
        "{}",
        err.message
    );
    let other = e.backup("crm-other", "theirs");
    let err = s.run_drill(&e.admin, "crm-prod", Some(other)).unwrap_err();
    assert_eq!(err.code, "unknown_backup", "another instance's backup");
    let err = s.run_drill(&e.admin, "crm-prod", Some(9999)).unwrap_err();
    assert_eq!(err.code, "unknown_backup");
    e.backup("crm-prod", "mine");
    let d = s.run_drill(&e.admin, "crm-prod", None).unwrap();
    let err = s.run_drill(&e.admin, "crm-prod", None).unwrap_err();
    assert_eq!(err.code, "drill_in_progress");
    assert!(err.message.contains(&d.id.to_string()));
    let viewer = e.user("vera", "viewer");
    let err = s.run_drill(&viewer, "crm-prod", None).unwrap_err();
    assert_eq!(err.code, "forbidden");
    assert!(
        err.message.contains("run restore drills"),
        "{}",
        err.message
    );
    assert!(
        s.drill_fleet(&viewer, None, false).is_ok(),
        "viewers may look"
    );
    for bad in [0, -1, 3651] {
        let err = s.drill_fleet(&e.admin, Some(bad), false).unwrap_err();
        assert_eq!(err.code, "invalid_stale_days");
    }
    assert_eq!(
        s.show_drill(&e.admin, 777).unwrap_err().code,
        "unknown_drill"
    );
    assert_eq!(
        s.list_drills(&e.admin, Some("nope")).unwrap_err().code,
        "unknown_instance"
    );
    // Nothing was queued by the refusals.
    assert_eq!(s.list_drills(&e.admin, None).unwrap().len(), 1);

    // A backup deleted before its drill ran: the drill is skipped, not failed, and no alert.
    let mine = s.list_backups(&e.admin, "crm-prod").unwrap()[0].id;
    assert_eq!(d.backup_id, mine);
    s.delete_backup(&e.admin, mine).unwrap();
    assert!(s.run_next_drill().unwrap());
    let skipped = s.show_drill(&e.admin, d.id).unwrap();
    assert_eq!(skipped.state, "skipped");
    assert!(skipped.problems[0].contains("deleted or expired"));
    assert!(
        s.show_instance(&e.admin, "crm-prod")
            .unwrap()
            .last_drill
            .is_none(),
        "a skipped drill is not a result"
    );
    assert!(
        !s.my_alerts(&e.admin, 20)
            .unwrap()
            .iter()
            .any(|a| a.message.contains("Restore drill"))
    );
}

#[test]
fn a_bad_schedule_stops_the_start_with_a_clear_error() {
    for bad in ["hourly", "every 0 hours", "every day", ""] {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path(), |c| c.restore_drill_schedule = bad.into());
        let err = match steward_server::prepare(c) {
            Ok(_) => panic!("{bad:?} was accepted"),
            Err(e) => e.to_string(),
        };
        assert!(
            err.contains("restore_drill_schedule must be \"off\", \"daily\", \"weekly\""),
            "{bad:?}: {err}"
        );
        assert!(err.contains(&format!("{bad:?}")), "{err}");
    }
}

/// Sends `method path` with the admin token; returns the status and JSON body.
async fn call(
    srv: &TestServer,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", srv.url))
        .bearer_auth(&srv.token);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls `GET path` until `done` holds for its JSON (at most 60 s).
async fn wait_for(srv: &TestServer, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + StdDuration::from_secs(60);
    loop {
        let (status, v) = call(srv, reqwest::Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{v}");
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting on {path}: {v}");
        tokio::time::sleep(StdDuration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_api_with_the_drill_worker_beside_the_job_runner() {
    use reqwest::Method;
    let srv = TestServer::start().await;
    let st = srv.state.clone();
    let setup = tokio::task::spawn_blocking(move || {
        let s = &st.services;
        let a = Actor::system();
        s.create_instance(&a, "crm-prod", "production", Some("9.1"))
            .unwrap();
        s.create_instance(&a, "crm-sand", "sandbox", Some("9.1"))
            .unwrap();
        s.create_backup(&a, "crm-prod", "nightly", None).unwrap().id
    })
    .await
    .unwrap();
    wait_for(&srv, &format!("/api/v1/backups/{setup}"), |b| {
        b["status"] == "completed"
    })
    .await;

    // Run one now: queued, then passed, shown in the instance and the backup list.
    let (status, d) = call(
        &srv,
        Method::POST,
        "/api/v1/drills",
        Some(json!({"instance": "crm-prod"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{d}");
    assert_eq!(d["backup_id"], setup);
    let path = format!("/api/v1/drills/{}", d["id"]);
    let d = wait_for(&srv, &path, |d| {
        d["state"] == "passed" || d["state"] == "failed"
    })
    .await;
    assert_eq!(d["state"], "passed", "{d}");
    let (_, inst) = call(&srv, Method::GET, "/api/v1/instances/crm-prod", None).await;
    assert_eq!(inst["last_drill"]["id"], d["id"]);
    assert_eq!(inst["last_drill"]["state"], "passed");
    let (_, list) = call(
        &srv,
        Method::GET,
        "/api/v1/instances/crm-prod/backups",
        None,
    )
    .await;
    assert_eq!(list[0]["last_drill"]["id"], d["id"]);
    let (_, history) = call(&srv, Method::GET, "/api/v1/instances/crm-prod/drills", None).await;
    assert_eq!(history.as_array().unwrap().len(), 1);
    let (status, fleet) = call(&srv, Method::GET, "/api/v1/drills?stale_days=5", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(fleet["stale_days"], 5);
    assert_eq!(fleet["instances"][0]["instance"], "crm-sand");
    assert_eq!(fleet["instances"][0]["reason"], "never");

    // A user's restore queued while a drill runs is not delayed: the drill gives way and
    // runs again afterwards.
    let hold = Hold::new(&srv.state);
    let (_, d) = call(
        &srv,
        Method::POST,
        "/api/v1/drills",
        Some(json!({"instance": "crm-prod", "backup_id": setup})),
    )
    .await;
    let path = format!("/api/v1/drills/{}", d["id"]);
    let running = wait_for(&srv, &path, |d| d["stage"] == "restore").await;
    assert_eq!(running["state"], "running", "{running}");
    let t0 = Instant::now();
    let (status, r) = call(
        &srv,
        Method::POST,
        &format!("/api/v1/backups/{setup}/restore"),
        Some(json!({"target": "crm-sand"})),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    let job = wait_for(&srv, &format!("/api/v1/jobs/{}", r["job"]["id"]), |j| {
        j["state"] == "succeeded" || j["state"] == "failed"
    })
    .await;
    assert_eq!(job["state"], "succeeded", "{job}");
    assert!(t0.elapsed() < StdDuration::from_secs(20), "not delayed");
    let d = wait_for(&srv, &path, |d| d["state"] == "queued").await;
    assert_eq!(d["attempts"], 1, "cancelled once: {d}");
    drop(hold);
    let d = wait_for(&srv, &path, |d| d["state"] == "passed").await;
    assert_eq!(d["attempts"], 2);

    // Bad input.
    let (status, err) = call(&srv, Method::GET, "/api/v1/drills?stale_days=0", None).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_stale_days"))
    );
    let (status, err) = call(&srv, Method::GET, "/api/v1/drills?stale_days=soon", None).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_query"))
    );
    let (status, err) = call(
        &srv,
        Method::POST,
        "/api/v1/drills",
        Some(json!({"instance": "nope"})),
    )
    .await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_instance"))
    );
    let (status, err) = call(&srv, Method::GET, "/api/v1/drills/abc", None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{err}");
    let (status, err) = call(&srv, Method::GET, "/api/v1/drills/12345", None).await;
    assert_eq!(
        (status, err["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_drill"))
    );
    let (_, doc) = call(&srv, Method::GET, "/api/v1/openapi.json", None).await;
    for p in [
        "/api/v1/drills",
        "/api/v1/drills/{id}",
        "/api/v1/instances/{name}/drills",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} is documented");
    }
}

/// `GET /api/v1/drills` answers in pages: `limit` rows from `offset`, the whole match's count
/// and where the next page starts; `q` filters by name; bad bounds are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_view_is_paged_over_the_api() {
    use reqwest::Method;
    let srv = TestServer::start().await;
    let st = srv.state.clone();
    tokio::task::spawn_blocking(move || {
        let a = Actor::system();
        for name in ["alpha", "beta-1", "beta-2", "delta", "gamma"] {
            st.services
                .create_instance(&a, name, "sandbox", Some("9.1"))
                .unwrap();
        }
    })
    .await
    .unwrap();

    let (status, whole) = call(&srv, Method::GET, "/api/v1/drills", None).await;
    assert_eq!(status, StatusCode::OK, "{whole}");
    let everyone: Vec<String> = whole["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance"].as_str().unwrap().to_owned())
        .collect();
    assert!(everyone.len() >= 5, "{whole}");
    assert_eq!(whole["matching"], everyone.len());
    assert!(whole["next_offset"].is_null());

    // Two at a time: the pages join up into the whole list, in the same order.
    let mut paged: Vec<String> = Vec::new();
    let mut offset = 0u64;
    loop {
        let (status, page) = call(
            &srv,
            Method::GET,
            &format!("/api/v1/drills?limit=2&offset={offset}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let rows = page["instances"].as_array().unwrap();
        assert!(rows.len() <= 2, "{page}");
        assert_eq!(page["matching"], everyone.len(), "{page}");
        paged.extend(
            rows.iter()
                .map(|i| i["instance"].as_str().unwrap().to_owned()),
        );
        match page["next_offset"].as_u64() {
            Some(n) => {
                assert_eq!(n, offset + 2, "{page}");
                offset = n;
            }
            None => break,
        }
    }
    assert_eq!(paged, everyone);

    // A name filter (case-insensitive) with its own count.
    let (status, page) = call(&srv, Method::GET, "/api/v1/drills?q=BETA&limit=1", None).await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["matching"], 2, "{page}");
    assert_eq!(page["instances"][0]["instance"], "beta-1", "{page}");
    assert_eq!(page["next_offset"], 1, "{page}");

    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=1001", "invalid_limit"),
        ("offset=-1", "invalid_offset"),
        ("offset=x", "invalid_query"),
    ] {
        let (status, err) = call(&srv, Method::GET, &format!("/api/v1/drills?{query}"), None).await;
        assert_eq!(
            (status, err["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{query}: {err}"
        );
    }
}
