//! The control-plane store's suite, run against both backends: every shared test runs once on
//! SQLite and once on a real PostgreSQL server that the tests start (`steward-testpg`).

use chrono::Utc;
use steward_core::{Engine, InstanceState, InstanceType, Role};
use steward_store::*;

fn open_sqlite() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("steward.db")).unwrap();
    (dir, store)
}

fn open_postgres() -> Store {
    Store::open_postgres(&steward_testpg::fresh_database()).unwrap()
}

/// Runs each named test on both backends.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $name() {
                let (_dir, store) = super::open_sqlite();
                assert_eq!(store.backend_name(), "sqlite");
                super::$name(&store);
            })*
        }
        mod postgres {
            $(#[test]
            fn $name() {
                let store = super::open_postgres();
                assert_eq!(store.backend_name(), "postgres");
                super::$name(&store);
            })*
        }
    };
}

on_both_backends!(
    a_failed_write_changes_nothing,
    live_instance_names_are_unique_but_reusable_after_delete,
    audit_filters_by_action_prefix_and_target,
    jobs_are_claimed_in_order_and_record_stages
);

#[test]
fn sqlite_store_from_a_newer_steward_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    drop(Store::open(&path).unwrap());
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", Store::schema_version() + 1)
        .unwrap();
    drop(conn);
    let err = Store::open(&path).err().expect("must refuse");
    assert!(matches!(err, StoreError::NewerSchema { .. }));
    assert!(err.to_string().contains("newer Steward"), "{err}");
}

#[test]
fn sqlite_reopening_keeps_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    let store = Store::open(&path).unwrap();
    store
        .write(|db| {
            db.insert_user(
                &NewUser {
                    username: "alice".into(),
                    role: Role::Viewer,
                    password_hash: "x".into(),
                },
                Utc::now(),
            )
        })
        .unwrap();
    drop(store);
    let store = Store::open(&path).unwrap();
    assert_eq!(store.read(|db| db.count_users()).unwrap(), 1);
}

fn a_failed_write_changes_nothing(store: &Store) {
    let r: Result<(), StoreError> = store.write(|db| {
        db.insert_user(
            &NewUser {
                username: "bob".into(),
                role: Role::Viewer,
                password_hash: "x".into(),
            },
            Utc::now(),
        )?;
        Err(StoreError::Corrupt("boom".into()))
    });
    assert!(r.is_err());
    assert_eq!(store.read(|db| db.count_users()).unwrap(), 0);
}

fn live_instance_names_are_unique_but_reusable_after_delete(store: &Store) {
    let new = NewInstance {
        name: "crm-prod".into(),
        instance_type: InstanceType::Production,
        engine: Engine::Sqlite,
        release: "9.1".into(),
        state: InstanceState::Available,
        database_path: "/x/db".into(),
        documents_path: "/x/docs".into(),
        created_by: "alice".into(),
        node: None,
    };
    let mut first = store
        .write(|db| db.insert_instance(&new, Utc::now()))
        .unwrap()
        .unwrap();
    assert!(
        store
            .write(|db| db.insert_instance(&new, Utc::now()))
            .unwrap()
            .is_none()
    );
    first.deleted_at = Some(Utc::now());
    store.write(|db| db.update_instance(&first)).unwrap();
    assert!(
        store
            .read(|db| db.instance_by_name("crm-prod"))
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .write(|db| db.insert_instance(&new, Utc::now()))
            .unwrap()
            .is_some()
    );
}

fn audit_filters_by_action_prefix_and_target(store: &Store) {
    store
        .write(|db| {
            for (action, target) in [
                ("instance.create", "a"),
                ("instance.switch", "b"),
                ("user.create", "c"),
            ] {
                db.audit(
                    &NewAudit {
                        actor: "alice".into(),
                        action: action.into(),
                        target: target.into(),
                        details: serde_json::json!({"after": 1}),
                    },
                    Utc::now(),
                )?;
            }
            Ok::<_, StoreError>(())
        })
        .unwrap();
    let instance = store
        .read(|db| {
            db.list_audit(&AuditFilter {
                action: Some("instance".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(instance.len(), 2);
    assert_eq!(instance[0].action, "instance.switch", "newest first");
    let b = store
        .read(|db| {
            db.list_audit(&AuditFilter {
                target: Some("b".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].details["after"], 1);
}

fn jobs_are_claimed_in_order_and_record_stages(store: &Store) {
    let now = Utc::now();
    let new = |t: &str| NewJob {
        kind: "backup".into(),
        target: t.into(),
        params: serde_json::json!({"label": t}),
        created_by: "alice".into(),
    };
    let a = store.write(|db| db.insert_job(&new("a"), now)).unwrap();
    store.write(|db| db.insert_job(&new("b"), now)).unwrap();
    assert_eq!(a.state, JobState::Queued);
    let claimed = store.write(|db| db.claim_next_job(now)).unwrap().unwrap();
    assert_eq!(claimed.id, a.id);
    assert_eq!(claimed.state, JobState::Running);
    store
        .write(|db| {
            db.set_job_stage(a.id, "snapshot", now)?;
            db.set_job_progress(a.id, 5, 10)?;
            db.set_job_stage(a.id, "upload", now)?;
            db.finish_job(a.id, Err("disk full"), now)
        })
        .unwrap();
    let done = store.read(|db| db.job(a.id)).unwrap().unwrap();
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.last_error.as_deref(), Some("disk full"));
    let stages = store.read(|db| db.job_stages(a.id)).unwrap();
    assert_eq!(
        stages.iter().map(|s| s.stage.as_str()).collect::<Vec<_>>(),
        ["snapshot", "upload"]
    );
    assert!(stages.iter().all(|s| s.finished_at.is_some()));
    let next = store.write(|db| db.claim_next_job(now)).unwrap().unwrap();
    assert_eq!(next.target, "b");
    assert!(store.write(|db| db.claim_next_job(now)).unwrap().is_none());
}

// ---------------------------------------------------------------------------------------
// PostgreSQL only
// ---------------------------------------------------------------------------------------

fn alice() -> NewUser {
    NewUser {
        username: "alice".into(),
        role: Role::Viewer,
        password_hash: "x".into(),
    }
}

#[test]
fn postgres_reopening_keeps_rows_and_migrations_run_once() {
    let url = steward_testpg::fresh_database();
    let store = Store::open_postgres(&url).unwrap();
    store
        .write(|db| db.insert_user(&alice(), Utc::now()))
        .unwrap();
    drop(store);
    let store = Store::open_postgres(&url).unwrap();
    assert_eq!(store.read(|db| db.count_users()).unwrap(), 1);
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let version: i64 = c
        .query_one("SELECT max(version) FROM steward_schema", &[])
        .unwrap()
        .get(0);
    assert_eq!(version, Store::schema_version());
}

#[test]
fn postgres_store_from_a_newer_steward_is_refused() {
    let url = steward_testpg::fresh_database();
    drop(Store::open_postgres(&url).unwrap());
    let mut c = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    c.execute(
        "UPDATE steward_schema SET version = $1",
        &[&(Store::schema_version() + 1)],
    )
    .unwrap();
    let err = Store::open_postgres(&url).err().expect("must refuse");
    assert!(matches!(err, StoreError::NewerSchema { .. }), "{err}");
    assert!(err.to_string().contains("newer Steward"), "{err}");
}

#[test]
fn malformed_database_urls_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let fallback = dir.path().join("steward.db");
    for (url, expect) in [
        ("mysql://root@localhost/steward", "use postgres://"),
        (
            "postgres://steward@127.0.0.1:notaport/db",
            "is not a control-plane store",
        ),
        ("postgres://steward@127.0.0.1:5432", "names no database"),
        ("sqlite:", "names no file"),
    ] {
        let err = Store::connect(Some(url), &fallback)
            .err()
            .unwrap_or_else(|| panic!("{url} must be refused"));
        assert!(matches!(err, StoreError::InvalidUrl { .. }), "{url}: {err}");
        assert!(err.to_string().contains(expect), "{url}: {err}");
    }
    // The password never appears in a message.
    let err = Store::connect(Some("mysql://u:hunter2@h/db"), &fallback)
        .err()
        .unwrap();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert!(!fallback.exists(), "nothing was created");
}

#[test]
fn a_postgres_that_is_down_at_start_is_a_clear_unavailable_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = Store::open_postgres(&format!("postgres://steward:pw@127.0.0.1:{port}/steward"))
        .err()
        .expect("nothing listens there");
    assert!(err.is_unavailable(), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("cannot be reached"), "{msg}");
    assert!(!msg.contains(":pw@"), "{msg}");
}

#[test]
fn a_postgres_that_goes_down_fails_requests_then_recovers_when_back() {
    let mut server = steward_testpg::PgServer::start().unwrap();
    let url = server.create_database();
    let store = Store::open_postgres(&url).unwrap();
    store
        .write(|db| db.insert_user(&alice(), Utc::now()))
        .unwrap();

    server.stop();
    let err = store.read(|db| db.count_users()).expect_err("server down");
    assert!(err.is_unavailable(), "{err}");
    let err = store
        .write(|db| {
            db.insert_user(
                &NewUser {
                    username: "bob".into(),
                    ..alice()
                },
                Utc::now(),
            )
        })
        .expect_err("server down");
    assert!(err.is_unavailable(), "{err}");

    server.restart().unwrap();
    assert_eq!(
        store.read(|db| db.count_users()).unwrap(),
        1,
        "nothing half-written"
    );
    store
        .write(|db| {
            db.insert_user(
                &NewUser {
                    username: "bob".into(),
                    ..alice()
                },
                Utc::now(),
            )
        })
        .unwrap();
    assert_eq!(store.read(|db| db.count_users()).unwrap(), 2);
}

#[test]
fn postgres_writes_from_two_stores_are_serialised() {
    // Two stores on one database stand for two nodes. Each write reads a count and inserts
    // a user named after it: without serialised writes, two would read the same count and
    // the second insert would be refused as a duplicate name.
    let url = steward_testpg::fresh_database();
    let a = std::sync::Arc::new(Store::open_postgres(&url).unwrap());
    let b = std::sync::Arc::new(Store::open_postgres(&url).unwrap());
    let threads: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|store| {
            std::thread::spawn(move || {
                for _ in 0..25 {
                    store
                        .write(|db| {
                            let n = db.count_users()?;
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            let made = db.insert_user(
                                &NewUser {
                                    username: format!("user{n}"),
                                    ..alice()
                                },
                                Utc::now(),
                            )?;
                            assert!(made.is_some(), "user{n} was taken: writes interleaved");
                            Ok::<_, StoreError>(())
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(a.read(|db| db.count_users()).unwrap(), 100);
}

#[test]
fn a_sqlite_store_is_copied_into_an_empty_postgres_and_not_into_a_full_one() {
    let (_dir, from) = open_sqlite();
    let now = Utc::now();
    let user = from
        .write(|db| db.insert_user(&alice(), now))
        .unwrap()
        .unwrap();
    from.write(|db| db.insert_token(user.id, "ci", "hash-1", now))
        .unwrap();
    let instance = from
        .write(|db| {
            db.insert_instance(
                &NewInstance {
                    name: "crm-prod".into(),
                    instance_type: InstanceType::Production,
                    engine: Engine::Sqlite,
                    release: "9.1".into(),
                    state: InstanceState::Available,
                    database_path: "/x/db".into(),
                    documents_path: "/x/docs".into(),
                    created_by: "alice".into(),
                    node: None,
                },
                now,
            )
        })
        .unwrap()
        .unwrap();
    from.write(|db| {
        for i in 0..2_500 {
            db.audit(
                &NewAudit {
                    actor: "alice".into(),
                    action: "instance.create".into(),
                    target: format!("t{i}"),
                    details: serde_json::json!({"i": i, "text": "naïve \u{1F600}"}),
                },
                now,
            )?;
        }
        Ok::<_, StoreError>(())
    })
    .unwrap();

    let to = open_postgres();
    let mut batches = 0;
    let report = from.copy_into(&to, |_, _| batches += 1).unwrap();
    assert!(batches >= 2, "the audit log is copied in batches");
    assert!(report.rows >= 2_503, "{report:?}");
    let audit_rows = report
        .tables
        .iter()
        .find(|(t, _)| t == "audit_log")
        .unwrap()
        .1;
    assert_eq!(audit_rows, 2_500);

    // Every row is there, with the same ids and values.
    let got = to
        .read(|db| db.instance_by_name("crm-prod"))
        .unwrap()
        .unwrap();
    assert_eq!(got.id, instance.id);
    assert_eq!(got.created_at, instance.created_at);
    let (token, owner) = to
        .read(|db| db.user_by_token_hash("hash-1"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (token.name.as_str(), owner.username.as_str()),
        ("ci", "alice")
    );
    let audit = to
        .read(|db| {
            db.list_audit(&AuditFilter {
                target: Some("t2499".into()),
                ..Default::default()
            })
        })
        .unwrap();
    assert_eq!(audit[0].details["text"], "naïve \u{1F600}");
    // New rows continue after the copied ids.
    let bob = to
        .write(|db| {
            db.insert_user(
                &NewUser {
                    username: "bob".into(),
                    ..alice()
                },
                now,
            )
        })
        .unwrap()
        .unwrap();
    assert!(bob.id > user.id);

    // A second copy into the now non-empty store is refused and changes nothing.
    let err = from
        .copy_into(&to, |_, _| {})
        .expect_err("target not empty");
    assert!(matches!(err, StoreError::NotEmpty(_)), "{err}");
    assert!(err.to_string().contains("not empty"), "{err}");
    assert_eq!(to.read(|db| db.count_users()).unwrap(), 2);
}
