//! The node registry (migration 13), on both backends: registering, refusing a name a live
//! node holds, taking a name over from a node that stopped or is down (or from the same node
//! starting again), heartbeats that only the holder can write, and the instance and running
//! job counts.

use chrono::{DateTime, Duration, TimeZone, Utc};
use steward_core::{Engine, InstanceState, InstanceType};
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
    a_new_name_registers_and_heartbeats,
    a_live_name_is_refused_and_nothing_changes,
    a_stopped_or_down_node_is_taken_over,
    the_same_node_takes_its_name_back_at_once,
    instances_and_running_jobs_are_counted_per_node,
    a_scheduler_tick_is_claimed_by_one_node_only,
    leases_are_renewed_and_recovery_takes_only_its_own_jobs,
);

const DOWN: i64 = 30;

fn t(s: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2027, 3, 1, 12, 0, 0).unwrap() + Duration::seconds(s)
}

fn node(name: &str, key: &str) -> NewNode {
    NewNode {
        name: name.into(),
        key: key.into(),
        address: format!("http://{name}.example.net:8080"),
        version: "0.1.0".into(),
    }
}

fn register(store: &Store, n: &NewNode, at: DateTime<Utc>) -> Registration {
    store
        .write(|db| db.register_node(n, at, Duration::seconds(DOWN)))
        .unwrap()
}

fn get(store: &Store, name: &str) -> NodeRow {
    store
        .read(|db| db.node_by_name(name))
        .unwrap()
        .unwrap_or_else(|| panic!("node {name}"))
}

fn a_new_name_registers_and_heartbeats(store: &Store) {
    assert_eq!(
        register(store, &node("node-a", "k1"), t(0)),
        Registration::Registered
    );
    let a = get(store, "node-a");
    assert_eq!(a.address, "http://node-a.example.net:8080");
    assert_eq!(a.version, "0.1.0");
    assert_eq!(
        (a.started_at, a.heartbeat_at, a.stopped_at),
        (t(0), t(0), None)
    );

    assert!(
        store
            .write(|db| db.node_heartbeat("node-a", "k1", t(5)))
            .unwrap()
    );
    let a = get(store, "node-a");
    assert_eq!((a.started_at, a.heartbeat_at), (t(0), t(5)));
    // A heartbeat with another key is not this node's: nothing is written.
    assert!(
        !store
            .write(|db| db.node_heartbeat("node-a", "other", t(9)))
            .unwrap()
    );
    assert_eq!(get(store, "node-a").heartbeat_at, t(5));

    assert!(
        store
            .write(|db| db.mark_node_stopped("node-a", "k1", t(7)))
            .unwrap()
    );
    assert_eq!(get(store, "node-a").stopped_at, Some(t(7)));
    register(store, &node("node-b", "k2"), t(8));
    let names: Vec<String> = store
        .read(|db| db.list_nodes())
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["node-a", "node-b"]);
}

fn a_live_name_is_refused_and_nothing_changes(store: &Store) {
    register(store, &node("node-a", "k1"), t(0));
    store
        .write(|db| db.node_heartbeat("node-a", "k1", t(20)))
        .unwrap();
    let before = get(store, "node-a");
    // 30 s after the last heartbeat the node is still up: another node may not take the name.
    let mut other = node("node-a", "k2");
    other.address = "http://elsewhere:8080".into();
    match register(store, &other, t(50)) {
        Registration::Refused { holder } => assert_eq!(holder, before),
        r => panic!("must refuse: {r:?}"),
    }
    assert_eq!(get(store, "node-a"), before, "nothing changed");
    // The holder keeps its name: its heartbeats still land.
    assert!(
        store
            .write(|db| db.node_heartbeat("node-a", "k1", t(51)))
            .unwrap()
    );
}

fn a_stopped_or_down_node_is_taken_over(store: &Store) {
    // Stopped cleanly: taken over at once.
    register(store, &node("node-a", "k1"), t(0));
    store
        .write(|db| db.mark_node_stopped("node-a", "k1", t(1)))
        .unwrap();
    let mut moved = node("node-a", "k2");
    moved.address = "http://new-host:8080".into();
    match register(store, &moved, t(2)) {
        Registration::TookOver { previous } => assert_eq!(previous.stopped_at, Some(t(1))),
        r => panic!("must take over: {r:?}"),
    }
    let a = get(store, "node-a");
    assert_eq!(a.address, "http://new-host:8080");
    assert_eq!(
        (a.started_at, a.heartbeat_at, a.stopped_at),
        (t(2), t(2), None)
    );
    // The old holder's heartbeat and stop no longer touch the row.
    assert!(
        !store
            .write(|db| db.node_heartbeat("node-a", "k1", t(3)))
            .unwrap()
    );
    assert!(
        !store
            .write(|db| db.mark_node_stopped("node-a", "k1", t(3)))
            .unwrap()
    );
    assert_eq!(get(store, "node-a").stopped_at, None);

    // Down (no heartbeat for more than 30 s): taken over; exactly 30 s is still up.
    assert!(matches!(
        register(store, &node("node-a", "k3"), t(2 + DOWN)),
        Registration::Refused { .. }
    ));
    assert!(matches!(
        register(store, &node("node-a", "k3"), t(3 + DOWN)),
        Registration::TookOver { .. }
    ));
    assert!(
        store
            .write(|db| db.node_heartbeat("node-a", "k3", t(40)))
            .unwrap()
    );
}

fn the_same_node_takes_its_name_back_at_once(store: &Store) {
    // A crash leaves the row up; the same node (same key) starting again is not refused.
    register(store, &node("node-a", "k1"), t(0));
    assert!(matches!(
        register(store, &node("node-a", "k1"), t(1)),
        Registration::TookOver { .. }
    ));
    assert_eq!(get(store, "node-a").started_at, t(1));
}

fn new_instance(name: &str, node: Option<&str>) -> NewInstance {
    NewInstance {
        name: name.into(),
        instance_type: InstanceType::Sandbox,
        engine: Engine::Sqlite,
        release: "9.1".into(),
        state: InstanceState::Available,
        database_path: format!("/x/{name}.db"),
        documents_path: format!("/x/{name}"),
        created_by: "alice".into(),
        node: node.map(Into::into),
    }
}

fn instances_and_running_jobs_are_counted_per_node(store: &Store) {
    // An instance from before nodes were recorded becomes the first registering node's.
    store
        .write(|db| db.insert_instance(&new_instance("old-one", None), t(0)))
        .unwrap()
        .unwrap();
    register(store, &node("node-a", "k1"), t(0));
    register(store, &node("node-b", "k2"), t(0));
    for (name, n) in [("a-1", "node-a"), ("a-2", "node-a"), ("b-1", "node-b")] {
        store
            .write(|db| db.insert_instance(&new_instance(name, Some(n)), t(1)))
            .unwrap()
            .unwrap();
    }
    // A deleted instance no longer counts.
    let mut gone = store
        .read(|db| db.instance_by_name("a-2"))
        .unwrap()
        .unwrap();
    gone.deleted_at = Some(t(2));
    store.write(|db| db.update_instance(&gone)).unwrap();

    let job = |target: &str| NewJob {
        kind: "backup".into(),
        target: target.into(),
        params: serde_json::json!({}),
        created_by: "alice".into(),
    };
    for target in ["a-1", "b-1", "old-one"] {
        store.write(|db| db.insert_job(&job(target), t(3))).unwrap();
    }
    // A node claims only jobs of its own instances (and of none): node-b skips a-1.
    let first = store
        .write(|db| db.claim_next_job_on(t(4), Some("node-b"), Some(t(34))))
        .unwrap()
        .unwrap();
    assert_eq!(first.target, "b-1");
    assert_eq!(first.node.as_deref(), Some("node-b"));
    assert_eq!(first.lease_until, Some(t(34)));
    assert!(
        store
            .write(|db| db.claim_next_job_on(t(4), Some("node-b"), Some(t(34))))
            .unwrap()
            .is_none(),
        "the other jobs are node-a's instances'"
    );
    let second = store
        .write(|db| db.claim_next_job_on(t(4), Some("node-a"), Some(t(34))))
        .unwrap()
        .unwrap();
    assert_eq!(second.target, "a-1");
    // Still queued: counted nowhere. Finished: no longer running.
    store
        .write(|db| db.finish_job(first.id, Ok(&serde_json::json!({})), t(5)))
        .unwrap();

    let counts: Vec<(String, u64, u64)> = store
        .read(|db| db.list_nodes())
        .unwrap()
        .into_iter()
        .map(|n| (n.name, n.instances, n.running_jobs))
        .collect();
    assert_eq!(
        counts,
        [("node-a".into(), 2, 1), ("node-b".into(), 1, 0)],
        "node-a: old-one and a-1 and one running job; node-b: b-1, its job finished"
    );
}

fn a_scheduler_tick_is_claimed_by_one_node_only(store: &Store) {
    let tick = "minute 2027-03-01T12:00";
    let claims: Vec<bool> = ["node-a", "node-b", "node-c", "node-a"]
        .into_iter()
        .map(|n| {
            store
                .write(|db| db.claim_scheduler_tick(tick, n, t(0)))
                .unwrap()
        })
        .collect();
    // node-a again (e.g. restarted within the minute) may run it again; no other node may.
    assert_eq!(claims, [true, false, false, true]);
    assert_eq!(
        store.read(|db| db.scheduler_tick_node(tick)).unwrap(),
        Some("node-a".into())
    );
    // The next minute is a new tick; old ticks are pruned.
    assert!(
        store
            .write(|db| db.claim_scheduler_tick("minute 2027-03-01T12:01", "node-c", t(60)))
            .unwrap()
    );
    assert_eq!(
        store.write(|db| db.prune_scheduler_ticks(t(30))).unwrap(),
        1
    );
    assert_eq!(store.read(|db| db.scheduler_tick_node(tick)).unwrap(), None);
}

fn leases_are_renewed_and_recovery_takes_only_its_own_jobs(store: &Store) {
    let job = |target: &str| NewJob {
        kind: "verify".into(),
        target: target.into(),
        params: serde_json::json!({}),
        created_by: "alice".into(),
    };
    for target in ["all instances", "all instances"] {
        store.write(|db| db.insert_job(&job(target), t(0))).unwrap();
    }
    let a = store
        .write(|db| db.claim_next_job_on(t(1), Some("node-a"), Some(t(31))))
        .unwrap()
        .unwrap();
    let b = store
        .write(|db| db.claim_next_job_on(t(1), Some("node-b"), Some(t(31))))
        .unwrap()
        .unwrap();
    assert_ne!(a.id, b.id, "one job, one node");
    assert_eq!(
        store
            .write(|db| db.renew_job_leases("node-a", t(40)))
            .unwrap(),
        1
    );
    let a = store.read(|db| db.job(a.id)).unwrap().unwrap();
    let b = store.read(|db| db.job(b.id)).unwrap().unwrap();
    assert_eq!((a.lease_until, b.lease_until), (Some(t(40)), Some(t(31))));
    let ids = |n: &str| -> Vec<i64> {
        store
            .read(|db| db.running_jobs_of(n))
            .unwrap()
            .iter()
            .map(|j| j.id)
            .collect()
    };
    assert_eq!(ids("node-a"), [a.id]);
    assert_eq!(ids("node-b"), [b.id]);
    assert!(ids("node-c").is_empty());
}
