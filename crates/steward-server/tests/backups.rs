//! Backup & Restore through the services, with real SQLite instances, a real backup
//! repository on disk, the job handlers and an injected clock.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use chrono::{Duration, TimeZone, Utc};
use steward_core::ManualClock;
use steward_server::services::Actor;
use steward_server::{Config, SharedState};

struct Env {
    _dir: tempfile::TempDir,
    state: SharedState,
    clock: Arc<ManualClock>,
    admin: Actor,
}

fn env_with(tweak: impl FnOnce(&mut Config)) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config {
        data_dir: dir.path().join("data"),
        prune_grace_seconds: 0,
        ..Config::default()
    };
    // `STEWARD_TEST_STORE=postgres`: the same tests on a PostgreSQL control plane (a fresh
    // database on a real server this test process starts), as `TestServer` does.
    if std::env::var("STEWARD_TEST_STORE").as_deref() == Ok("postgres") {
        config.database_url = Some(steward_testpg::fresh_database());
    }
    tweak(&mut config);
    let clock = Arc::new(ManualClock::new(
        Utc.with_ymd_and_hms(2026, 11, 2, 1, 0, 0).unwrap(),
    ));
    let (state, boot) = steward_server::prepare_with_clock(config, clock.clone()).unwrap();
    let admin = state
        .services
        .authenticate_token(&boot.unwrap().token)
        .unwrap();
    Env {
        _dir: dir,
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

    fn instance(&self, name: &str, kind: &str, release: &str) -> String {
        let s = &self.state.services;
        s.create_instance(&self.admin, name, kind, Some(release))
            .unwrap()
            .database_path
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

fn mark(db: &str, name: &str) {
    let c = rusqlite::Connection::open(db).unwrap();
    c.execute("INSERT INTO accounts (name) VALUES (?1)", [name])
        .unwrap();
}

fn has_mark(db: &str, name: &str) -> bool {
    let c = rusqlite::Connection::open(db).unwrap();
    c.query_row(
        "SELECT count(*) FROM accounts WHERE name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        > 0
}

#[test]
fn on_demand_backup_then_restore_into_a_sandbox() {
    let e = env();
    let s = &e.state.services;
    let prod = e.instance("crm-prod", "production", "9.1");
    let sand = e.instance("crm-sand", "sandbox", "8.2");
    let docs = Path::new(
        &s.show_instance(&e.admin, "crm-sand")
            .unwrap()
            .documents_path,
    )
    .join("contract.pdf");
    std::fs::write(&docs, b"attachment").unwrap();
    mark(&prod, "before-backup");

    let b = s
        .create_backup(
            &e.admin,
            "crm-prod",
            "  before import ",
            Some("Q3 data load"),
        )
        .unwrap();
    assert_eq!(
        (b.status.as_str(), b.kind.as_str()),
        ("queued", "on_demand")
    );
    assert_eq!(b.label, "before import");
    assert_eq!(b.created_by, "admin");
    assert_eq!(
        b.expires_at - b.created_at,
        Duration::days(3),
        "the seed's 3 days"
    );
    assert!(
        b.can_edit && !b.can_delete && !b.can_restore,
        "a queued backup cannot be deleted yet"
    );

    // Applications keep writing while the backup runs.
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, writes, prod) = (stop.clone(), writes.clone(), prod.clone());
        std::thread::spawn(move || {
            let c = rusqlite::Connection::open(&prod).unwrap();
            c.busy_timeout(std::time::Duration::from_secs(5)).unwrap();
            while !stop.load(Ordering::Relaxed) {
                c.execute(
                    "INSERT INTO activities (kind, subject) VALUES ('call', 'follow up')",
                    [],
                )
                .unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while writes.load(Ordering::Relaxed) < 20 {
        assert!(!writer.is_finished(), "the writer stopped early");
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never got going"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let before = writes.load(Ordering::Relaxed);
    e.run_jobs();
    let during = writes.load(Ordering::Relaxed) - before;
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(
        during > 0,
        "the writer was never blocked for the whole backup"
    );

    let b = s.show_backup(&e.admin, b.id).unwrap();
    assert_eq!(b.status, "completed", "{:?}", b.error);
    assert_eq!(b.release, "9.1");
    assert!(b.size_bytes.unwrap() > 0 && b.can_restore && b.can_delete);
    assert_eq!(
        s.show_instance(&e.admin, "crm-prod").unwrap().state,
        "available"
    );
    let job = s.show_job(&e.admin, b.job_id.unwrap()).unwrap();
    assert_eq!(job.state, "succeeded");
    assert_eq!(
        job.stages
            .iter()
            .map(|s| s.stage.as_str())
            .collect::<Vec<_>>(),
        ["snapshot", "finish"]
    );
    mark(&prod, "after-backup");

    // Only sandboxes are restored into.
    let err = s.restore_backup(&e.admin, b.id, "crm-prod").unwrap_err();
    assert_eq!(err.code, "target_not_sandbox");
    assert!(
        err.message.contains("Switch it to sandbox first"),
        "{}",
        err.message
    );
    assert_eq!(
        s.show_instance(&e.admin, "crm-prod").unwrap().state,
        "available"
    );
    assert!(
        has_mark(&prod, "after-backup"),
        "a refused restore changes nothing"
    );

    // An application that keeps its connection open across the restore.
    let app = rusqlite::Connection::open(&sand).unwrap();
    let started = s.restore_backup(&e.admin, b.id, "crm-sand").unwrap();
    assert_eq!(
        started.target.state, "restoring",
        "the target is unavailable during the restore"
    );
    let again = s.restore_backup(&e.admin, b.id, "crm-sand").unwrap_err();
    assert_eq!(again.code, "instance_busy");
    e.run_jobs();
    let job = s.show_job(&e.admin, started.job.id).unwrap();
    assert_eq!(job.state, "succeeded", "{:?}", job.last_error);
    let target = s.show_instance(&e.admin, "crm-sand").unwrap();
    assert_eq!(target.state, "available");
    assert_eq!(
        target.release, "9.1",
        "after a restore the target is on the backup's release"
    );
    assert_eq!(
        steward_engine::database_release(Path::new(&sand))
            .unwrap()
            .to_string(),
        "9.1"
    );
    assert!(has_mark(&sand, "before-backup"));
    assert!(
        !has_mark(&sand, "after-backup"),
        "exactly the backed-up state"
    );
    let seen: i64 = app
        .query_row(
            "SELECT count(*) FROM accounts WHERE name = 'before-backup'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        seen, 1,
        "an open connection sees the restored database, not a stale file"
    );
    drop(app);
    assert_eq!(
        std::fs::read(&docs).unwrap(),
        b"attachment",
        "documents untouched"
    );
    assert!(!Path::new(&format!("{sand}.restoring")).exists());
    steward_engine::integrity_check(Path::new(&sand)).unwrap();

    // In-product notifications for start and success of both.
    let alerts: Vec<String> = s
        .list_alerts(&e.admin, 50)
        .unwrap()
        .into_iter()
        .map(|a| format!("{} {}", a.level, a.message))
        .collect();
    for want in [
        "info Backup “before import” of crm-prod started",
        "success Backup “before import” of crm-prod succeeded",
        "info Restore of “before import” into crm-sand started",
        "success Restore of “before import” into crm-sand succeeded",
    ] {
        assert!(alerts.iter().any(|a| a == want), "{want} in {alerts:?}");
    }
    // Audited.
    let audit = s
        .list_audit(
            &e.admin,
            &steward_server::services::AuditQuery {
                action: Some("backup".into()),
                ..Default::default()
            },
        )
        .unwrap();
    let actions: Vec<&str> = audit.iter().map(|a| a.action.as_str()).collect();
    assert!(
        actions.contains(&"backup.create") && actions.contains(&"backup.restore"),
        "{actions:?}"
    );
}

#[test]
fn edit_delete_and_bad_input() {
    let e = env();
    let s = &e.state.services;
    e.instance("crm-prod", "production", "9.1");
    let b = s
        .create_backup(&e.admin, "crm-prod", "first", None)
        .unwrap();
    e.run_jobs();

    assert_eq!(
        s.create_backup(&e.admin, "crm-prod", "  ", None)
            .unwrap_err()
            .code,
        "invalid_label"
    );
    assert_eq!(
        s.create_backup(&e.admin, "nope-nope", "x", None)
            .unwrap_err()
            .code,
        "unknown_instance"
    );
    assert_eq!(
        s.edit_backup(&e.admin, b.id, None, None).unwrap_err().code,
        "nothing_to_change"
    );
    assert_eq!(
        s.show_backup(&e.admin, 999).unwrap_err().code,
        "unknown_backup"
    );

    let edited = s
        .edit_backup(&e.admin, b.id, Some("renamed"), Some("new notes"))
        .unwrap();
    assert_eq!(
        (edited.label.as_str(), edited.notes.as_str()),
        ("renamed", "new notes")
    );

    let repo_before = s.repo().unwrap().list_backups().unwrap().len();
    s.delete_backup(&e.admin, b.id).unwrap();
    assert!(s.list_backups(&e.admin, "crm-prod").unwrap().is_empty());
    assert_eq!(
        s.repo().unwrap().list_backups().unwrap().len(),
        repo_before - 1
    );
    assert_eq!(
        s.show_backup(&e.admin, b.id).unwrap_err().code,
        "unknown_backup"
    );
    assert_eq!(
        s.restore_backup(&e.admin, b.id, "crm-prod")
            .unwrap_err()
            .code,
        "unknown_backup"
    );

    // Roles: Delegated Admins may; Viewers only list.
    let viewer = e.user("vera", "viewer");
    let dana = e.user("dana", "delegated_admin");
    let d = s.create_backup(&dana, "crm-prod", "dana's", None).unwrap();
    e.run_jobs();
    assert_eq!(
        s.create_backup(&viewer, "crm-prod", "x", None)
            .unwrap_err()
            .code,
        "forbidden"
    );
    assert_eq!(
        s.delete_backup(&viewer, d.id).unwrap_err().code,
        "forbidden"
    );
    let seen = s.list_backups(&viewer, "crm-prod").unwrap();
    assert_eq!(seen.len(), 1);
    assert!(!seen[0].can_edit && !seen[0].can_delete && !seen[0].can_restore);
    s.delete_backup(&dana, d.id).unwrap();
}

#[test]
fn old_releases_cannot_be_backed_up() {
    let e = env_with(|c| c.minimum_backup_release = "8.2".into());
    let s = &e.state.services;
    e.instance("crm-old", "production", "8.1");
    let err = s.create_backup(&e.admin, "crm-old", "x", None).unwrap_err();
    assert_eq!(err.code, "release_too_old");
    assert!(err.message.contains("8.2 or later"), "{}", err.message);
    assert!(s.list_backups(&e.admin, "crm-old").unwrap().is_empty());
    assert!(
        s.list_jobs(&e.admin, None, None).unwrap().is_empty(),
        "nothing queued"
    );
}

#[test]
fn system_backups_run_daily_are_immutable_and_expire() {
    let e = env_with(|c| c.system_backup_retention_days = 2);
    let s = &e.state.services;
    e.instance("crm-a", "production", "9.1");
    e.instance("crm-b", "sandbox", "9.1");

    // 01:00: before the 02:00 start.
    assert_eq!(s.schedule_system_backups().unwrap(), 0);
    // 04:00: past every instance's start (02:00 + at most 120 minutes).
    e.clock
        .set(Utc.with_ymd_and_hms(2026, 11, 2, 4, 0, 0).unwrap());
    assert_eq!(s.schedule_system_backups().unwrap(), 2);
    assert_eq!(s.schedule_system_backups().unwrap(), 0, "once a day");
    e.run_jobs();
    let day1 = s.list_backups(&e.admin, "crm-a").unwrap();
    assert_eq!(day1.len(), 1);
    let sys = &day1[0];
    assert_eq!(
        (
            sys.kind.as_str(),
            sys.created_by.as_str(),
            sys.status.as_str()
        ),
        ("system", "System", "completed")
    );
    assert_eq!(sys.expires_at - sys.created_at, Duration::days(2));
    assert!(sys.can_restore && !sys.can_edit && !sys.can_delete);
    assert_eq!(
        s.edit_backup(&e.admin, sys.id, Some("x"), None)
            .unwrap_err()
            .code,
        "system_backup_immutable"
    );
    assert_eq!(
        s.delete_backup(&e.admin, sys.id).unwrap_err().code,
        "system_backup_immutable"
    );

    // Starts are spread: the two instances have different offsets within the window.
    e.clock
        .set(Utc.with_ymd_and_hms(2026, 11, 3, 1, 59, 0).unwrap());
    assert_eq!(s.schedule_system_backups().unwrap(), 0);
    e.clock
        .set(Utc.with_ymd_and_hms(2026, 11, 3, 4, 0, 0).unwrap());
    assert_eq!(s.schedule_system_backups().unwrap(), 2);
    e.run_jobs();
    assert_eq!(s.list_backups(&e.admin, "crm-a").unwrap().len(), 2);

    // Day 1's backups expire two days after they were made and their data is pruned.
    let bytes_before = s.storage(&e.admin).unwrap().total_backup_bytes;
    e.clock
        .set(Utc.with_ymd_and_hms(2026, 11, 4, 4, 30, 0).unwrap());
    let report = s.expire_and_prune().unwrap();
    assert_eq!(report.expired, 2);
    let left = s.list_backups(&e.admin, "crm-a").unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].created_at.date_naive().to_string(), "2026-11-03");
    assert_eq!(s.repo().unwrap().list_backups().unwrap().len(), 2);
    assert!(s.storage(&e.admin).unwrap().total_backup_bytes <= bytes_before);
}

#[test]
fn storage_counts_backups_separately() {
    let e = env();
    let s = &e.state.services;
    let db = e.instance("crm-a", "production", "9.1");
    let before = s.storage(&e.admin).unwrap();
    s.create_backup(&e.admin, "crm-a", "one", None).unwrap();
    e.run_jobs();
    let after = s.storage(&e.admin).unwrap();
    // Database storage is the database's own files; backups are counted apart.
    assert_eq!(
        after.total_database_bytes,
        steward_engine::storage_bytes(Path::new(&db))
    );
    assert_eq!(
        after.total_database_bytes,
        s.list_instances(&e.admin).unwrap().total_storage_bytes
    );
    assert!(after.total_backup_bytes > before.total_backup_bytes);
    assert_eq!(after.instances[0].backup_count, 1);
    assert!(after.instances[0].backup_bytes > 0);
}

#[test]
fn pre_update_backups_are_taken_and_kept_from_users() {
    let e = env();
    let s = &e.state.services;
    e.instance("crm-a", "production", "9.0");
    let b = s
        .take_pre_update_backup("crm-a", "Before update to 9.1")
        .unwrap();
    assert_eq!(
        (b.kind.as_str(), b.status.as_str(), b.created_by.as_str()),
        ("pre_update", "completed", "System")
    );
    assert_eq!(
        s.show_job(&e.admin, b.job_id.unwrap()).unwrap().state,
        "succeeded"
    );
    assert_eq!(
        s.delete_backup(&e.admin, b.id).unwrap_err().code,
        "system_backup_immutable"
    );
    assert!(s.show_backup(&e.admin, b.id).unwrap().can_restore);
}

#[test]
fn interrupted_jobs_are_cleaned_up_at_start() {
    let e = env();
    let s = &e.state.services;
    e.instance("crm-prod", "production", "9.1");
    let sand = e.instance("crm-sand", "sandbox", "9.1");
    let good = s.create_backup(&e.admin, "crm-prod", "good", None).unwrap();
    e.run_jobs();
    mark(&sand, "sandbox-own");

    // A backup and a restore that were running when Steward stopped.
    let lost = s.create_backup(&e.admin, "crm-prod", "lost", None).unwrap();
    let restore = s.restore_backup(&e.admin, good.id, "crm-sand").unwrap();
    let now = s.now();
    s.store.write(|db| db.claim_next_job(now)).unwrap();
    s.store.write(|db| db.claim_next_job(now)).unwrap();
    std::fs::write(format!("{sand}.restoring"), b"half a database").unwrap();

    assert_eq!(s.recover_jobs(&e.state.jobs).unwrap(), 2);
    let lost = s.show_backup(&e.admin, lost.id).unwrap();
    assert_eq!(lost.status, "failed");
    let job = s.show_job(&e.admin, restore.job.id).unwrap();
    assert_eq!(job.state, "failed");
    assert!(job.last_error.unwrap().contains("interrupted"));
    assert!(!Path::new(&format!("{sand}.restoring")).exists());
    let sandbox = s.show_instance(&e.admin, "crm-sand").unwrap();
    assert_eq!(sandbox.state, "available");
    assert!(
        has_mark(&sand, "sandbox-own"),
        "the target kept its previous database"
    );
    assert_eq!(
        s.show_instance(&e.admin, "crm-prod").unwrap().state,
        "available"
    );
}

#[test]
fn system_backups_can_be_turned_off() {
    let e = env_with(|c| c.system_backup_time = "off".into());
    e.instance("crm-a", "production", "9.1");
    e.clock
        .set(Utc.with_ymd_and_hms(2026, 11, 2, 23, 0, 0).unwrap());
    assert_eq!(e.state.services.schedule_system_backups().unwrap(), 0);
}

#[test]
fn bad_backup_settings_refuse_to_start() {
    for tweak in [
        (|c: &mut Config| c.system_backup_retention_days = 36) as fn(&mut Config),
        |c| c.on_demand_retention_days = 0,
        |c| c.system_backup_time = "25:00".into(),
        |c| c.minimum_backup_release = "eight".into(),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            data_dir: dir.path().join("data"),
            ..Config::default()
        };
        tweak(&mut config);
        let err = steward_server::prepare(config).err().expect("refused");
        assert!(err.to_string().contains("invalid configuration"), "{err}");
    }
}

#[test]
fn a_sandbox_can_be_restored_from_its_own_backup() {
    let e = env();
    let s = &e.state.services;
    let sand = e.instance("crm-sand", "sandbox", "9.1");
    mark(&sand, "kept");
    let b = s.create_backup(&e.admin, "crm-sand", "own", None).unwrap();
    e.run_jobs();
    mark(&sand, "mistake");
    let started = s.restore_backup(&e.admin, b.id, "crm-sand").unwrap();
    e.run_jobs();
    assert_eq!(
        s.show_job(&e.admin, started.job.id).unwrap().state,
        "succeeded"
    );
    assert!(has_mark(&sand, "kept") && !has_mark(&sand, "mistake"));
}
