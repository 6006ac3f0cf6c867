use chrono::Utc;
use steward_core::{Engine, InstanceState, InstanceType, Role};
use steward_store::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("steward.db")).unwrap();
    (dir, store)
}

#[test]
fn a_store_from_a_newer_steward_is_refused() {
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
fn reopening_keeps_rows() {
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

#[test]
fn a_failed_write_changes_nothing() {
    let (_d, store) = open();
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

#[test]
fn live_instance_names_are_unique_but_reusable_after_delete() {
    let (_d, store) = open();
    let new = NewInstance {
        name: "crm-prod".into(),
        instance_type: InstanceType::Production,
        engine: Engine::Sqlite,
        release: "9.1".into(),
        state: InstanceState::Available,
        database_path: "/x/db".into(),
        documents_path: "/x/docs".into(),
        created_by: "alice".into(),
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

#[test]
fn audit_filters_by_action_prefix_and_target() {
    let (_d, store) = open();
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

#[test]
fn jobs_are_claimed_in_order_and_record_stages() {
    let (_d, store) = open();
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
