//! Several nodes: three real `steward serve` processes on one PostgreSQL control plane and one
//! S3-compatible backup repository. Each instance lives on the node that created it and its
//! jobs run there only; a restore crosses nodes through the shared repository; scheduled
//! work runs once per tick across the fleet; a node killed mid-backup leaves its job to itself
//! (never run twice, never by another node) while the others keep serving.

mod common;
#[allow(dead_code)]
#[path = "../../steward-server/tests/s3_support/mod.rs"]
mod s3_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use s3_support::{ACCESS_KEY_ID, S3Server, SECRET_ACCESS_KEY};
use serde_json::Value;

const BUCKET: &str = "fleet";

struct Fleet {
    tmp: tempfile::TempDir,
    pg_url: String,
    s3: S3Server,
}

impl Fleet {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let s3 = S3Server::start(&tmp.path().join("s3"), BUCKET);
        Self {
            pg_url: steward_testpg::fresh_database(),
            s3,
            tmp,
        }
    }

    fn dir(&self, node: &str) -> PathBuf {
        self.tmp.path().join(node).join("data")
    }

    /// Starts node `name` (its own data directory) with `extra` settings.
    fn start(&self, name: &str, extra: &[(&str, &str)]) -> Server {
        let dir = self.dir(name);
        std::fs::create_dir_all(dir.parent().unwrap()).unwrap();
        let mut env: Vec<(&str, &str)> = vec![
            ("STEWARD_DATABASE_URL", &self.pg_url),
            ("STEWARD_BACKUP_S3_ENDPOINT", &self.s3.endpoint),
            ("STEWARD_BACKUP_S3_ALLOW_HTTP", "true"),
            ("STEWARD_BACKUP_S3_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("STEWARD_BACKUP_S3_SECRET_ACCESS_KEY", SECRET_ACCESS_KEY),
            ("STEWARD_BACKUP_S3_TIMEOUT_SECONDS", "10"),
            ("STEWARD_NODE_NAME", name),
            ("STEWARD_NODE_HEARTBEAT_SECONDS", "1"),
            ("STEWARD_NODE_DOWN_SECONDS", "3"),
            ("STEWARD_RESTORE_DRILL_SCHEDULE", "off"),
            ("STEWARD_REFRESH_LEAD_HOURS", "0"),
        ];
        let url = format!("s3://{BUCKET}/steward");
        env.push(("STEWARD_BACKUP_URL", &url));
        env.extend_from_slice(extra);
        Server::start_env(&dir, &env)
    }

    fn pg(&self) -> postgres::Client {
        postgres::Client::connect(&self.pg_url, postgres::NoTls).unwrap()
    }
}

fn nodes(s: &Server) -> Vec<Value> {
    s.run(&["node", "list", "--json"])
        .ok()
        .json()
        .as_array()
        .unwrap()
        .clone()
}

fn node_named<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter()
        .find(|n| n["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {list:#?}"))
}

fn create(s: &Server, name: &str, kind: &str) -> PathBuf {
    let v = s
        .run(&["instance", "create", name, "--type", kind, "--json"])
        .ok()
        .json();
    PathBuf::from(v["database_path"].as_str().unwrap())
}

fn mark(db: &Path, text: &str) {
    let c = open(db);
    c.execute_batch("CREATE TABLE IF NOT EXISTS fleet_marks (text TEXT)")
        .unwrap();
    c.execute("INSERT INTO fleet_marks VALUES (?1)", [text])
        .unwrap();
}

fn marks(db: &Path) -> Vec<String> {
    let c = open(db);
    let mut st = c
        .prepare("SELECT text FROM fleet_marks ORDER BY rowid")
        .unwrap();
    st.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn backup_wait(s: &Server, instance: &str, label: &str) -> i64 {
    let b = s
        .run(&[
            "backup", "create", instance, "--label", label, "--wait", "--json",
        ])
        .ok()
        .json();
    assert_eq!(b["status"], "completed", "{b:#}");
    b["id"].as_i64().unwrap()
}

#[test]
fn three_nodes_share_one_control_plane_and_one_repository() {
    let fleet = Fleet::new();
    // System backups are due at 23:59 UTC: none runs during this part of the test.
    let a = fleet.start("node-a", &[]);
    let b = fleet.start("node-b", &[]);
    let c = fleet.start("node-c", &[]);

    // Every node serves the whole fleet: each sees the three nodes, up.
    for s in [&a, &b, &c] {
        let list = nodes(s);
        assert_eq!(list.len(), 3, "{list:#?}");
        assert!(list.iter().all(|n| n["status"] == "up"), "{list:#?}");
    }

    // Each instance lives on the node that created it, and is listed by every node.
    let prod_a = create(&a, "crm-a", "production");
    let prod_b = create(&b, "crm-b", "production");
    let sand_c = create(&c, "sand-c", "sandbox");
    assert!(prod_a.starts_with(fleet.dir("node-a")), "{prod_a:?}");
    assert!(sand_c.starts_with(fleet.dir("node-c")), "{sand_c:?}");
    let listed = c.run(&["instance", "list", "--json"]).ok().json();
    assert_eq!(
        listed["instances"].as_array().unwrap().len(),
        3,
        "{listed:#}"
    );
    let list = nodes(&a);
    for (n, count) in [("node-a", 1), ("node-b", 1), ("node-c", 1)] {
        assert_eq!(node_named(&list, n)["instances"], count, "{list:#?}");
    }

    // A backup asked of node C for an instance of node A runs on node A.
    mark(&prod_a, "a-1");
    let backup = c
        .run(&["backup", "create", "crm-a", "--label", "from c", "--json"])
        .ok()
        .json();
    let job_id = backup["job_id"].as_i64().unwrap();
    let done = poll(
        &c,
        Duration::from_secs(60),
        || job(&c, job_id),
        |j| j["state"] == "succeeded" || j["state"] == "failed",
    );
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["node"], "node-a", "{done:#}");
    let backup_id = backup["id"].as_i64().unwrap().to_string();

    // A restore of node A's backup into node C's sandbox, asked of node B, runs on node C and
    // reads the shared repository.
    let r = b
        .run(&[
            "backup", "restore", &backup_id, "--target", "sand-c", "--yes", "--json",
        ])
        .ok()
        .json();
    let job_id = r["job_id"]
        .as_i64()
        .or_else(|| r["job"]["id"].as_i64())
        .unwrap_or_else(|| panic!("a job: {r:#}"));
    let done = poll(
        &b,
        Duration::from_secs(60),
        || job(&b, job_id),
        |j| j["state"] == "succeeded" || j["state"] == "failed",
    );
    assert_eq!(done["state"], "succeeded", "{done:#}");
    assert_eq!(done["node"], "node-c", "{done:#}");
    assert_eq!(marks(&sand_c), ["a-1"]);

    // --- Node B is killed in the middle of a backup. ---
    drop(b);
    let b = fleet.start("node-b", &[("STEWARD_JOB_STAGE_PAUSE_MS", "4000")]);
    mark(&prod_b, "b-1");
    let first_b = backup_wait(&b, "crm-b", "before the kill");
    mark(&prod_b, "b-2");
    let doomed = b
        .run(&["backup", "create", "crm-b", "--label", "doomed", "--json"])
        .ok()
        .json();
    let doomed_job = doomed["job_id"].as_i64().unwrap();
    poll(
        &b,
        Duration::from_secs(30),
        || job(&b, doomed_job),
        |j| j["state"] == "running",
    );
    b.kill();

    // The others keep serving, and show node B down.
    let list = poll(
        &a,
        Duration::from_secs(20),
        || Value::Array(nodes(&a)),
        |l| {
            l.as_array()
                .unwrap()
                .iter()
                .any(|n| n["name"] == "node-b" && n["status"] == "down")
        },
    );
    assert_eq!(
        node_named(list.as_array().unwrap(), "node-a")["status"],
        "up"
    );
    c.run(&["instance", "list", "--json"]).ok();
    // The interrupted job stays node B's: no other node takes it, or a new job of crm-b.
    let waiting = a
        .run(&[
            "backup",
            "create",
            "crm-b",
            "--label",
            "while b is down",
            "--json",
        ])
        .ok()
        .json();
    let waiting_job = waiting["job_id"].as_i64().unwrap();
    std::thread::sleep(Duration::from_secs(5));
    let j = job(&a, doomed_job);
    assert_eq!(
        (j["state"].as_str(), j["node"].as_str()),
        (Some("running"), Some("node-b")),
        "{j:#}"
    );
    let j = job(&a, waiting_job);
    assert_eq!(
        j["state"], "queued",
        "no node but B runs crm-b's jobs: {j:#}"
    );

    // Node B comes back (its data directory: it takes its name back at once). Its recovery
    // settles the interrupted job exactly once, then it runs the waiting one.
    let b = fleet.start("node-b", &[]);
    let settled = poll(
        &b,
        Duration::from_secs(60),
        || job(&b, doomed_job),
        |j| j["state"] == "succeeded" || j["state"] == "failed",
    );
    let waited = poll(
        &b,
        Duration::from_secs(60),
        || job(&b, waiting_job),
        |j| j["state"] == "succeeded" || j["state"] == "failed",
    );
    assert_eq!(waited["state"], "succeeded", "{waited:#}");
    assert_eq!(waited["node"], "node-b");
    let stages = settled["stages"].as_array().map(Vec::len).unwrap_or(0);
    eprintln!(
        "interrupted backup settled as {} after {stages} stages",
        settled["state"]
    );
    assert_eq!(
        settled["node"], "node-b",
        "settled by its own node: {settled:#}"
    );

    // Nothing stored was lost: the backup from before the kill restores exactly.
    let sand_b = create(&b, "sand-b", "sandbox");
    let r = b
        .run(&[
            "backup",
            "restore",
            &first_b.to_string(),
            "--target",
            "sand-b",
            "--yes",
            "--wait",
        ])
        .ok();
    assert!(r.stdout.contains("sand-b"), "{r:#?}");
    assert_eq!(marks(&sand_b), ["b-1"]);

    // --- A refresh copies across nodes: node C's sandbox from node A's production. ---
    // Asked of node B; the refresh runs on node C (the target's node), whose copy of the
    // latest data is a backup that node A (the source's node) takes into the repository.
    mark(&prod_a, "a-2");
    let window = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let w = b
        .run(&[
            "workitem",
            "refresh",
            "--source",
            "crm-a",
            "--target",
            "sand-c",
            "--window-start",
            &window,
            "--acknowledge",
            "--json",
        ])
        .ok()
        .json();
    assert_eq!(w["status"], "accepted", "{w:#}");
    let id = w["id"].as_i64().unwrap().to_string();
    // The window opens at the next scheduler tick (within a minute).
    let done = poll(
        &c,
        Duration::from_secs(150),
        || c.run(&["workitem", "show", &id, "--json"]).ok().json(),
        |w| w["status"] == "succeeded" || w["status"] == "failed",
    );
    assert_eq!(done["status"], "succeeded", "{done:#}");
    let refresh_job = job(&c, done["job_id"].as_i64().unwrap());
    assert_eq!(refresh_job["node"], "node-c", "{refresh_job:#}");
    assert_eq!(marks(&sand_c), ["a-1", "a-2"]);
    let copy = b.run(&["backup", "list", "crm-a", "--json"]).ok().json();
    let copy = copy
        .as_array()
        .unwrap()
        .iter()
        .find(|x| {
            x["label"]
                .as_str()
                .unwrap_or("")
                .starts_with("Copy for refresh")
        })
        .unwrap_or_else(|| panic!("the source's backup for the refresh: {copy:#}"))
        .clone();
    let copy_job = job(&b, copy["job_id"].as_i64().unwrap());
    assert_eq!(
        copy_job["node"], "node-a",
        "taken by the source's node: {copy_job:#}"
    );

    // --- Scheduled work runs once per tick across the fleet. ---
    // All three restart with system backups due since midnight: each node's first tick comes
    // at once; the one that claims the minute queues every instance's system backup, and
    // each runs on its instance's node.
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    assert!(c.terminate().success());
    let due = [("STEWARD_SYSTEM_BACKUP_TIME", "00:00")];
    let (a, b, c) = std::thread::scope(|s| {
        let a = s.spawn(|| fleet.start("node-a", &due));
        let b = s.spawn(|| fleet.start("node-b", &due));
        let c = s.spawn(|| fleet.start("node-c", &due));
        (a.join().unwrap(), b.join().unwrap(), c.join().unwrap())
    });
    // Each instance's system backup of today: exactly one, taken on the instance's node.
    for (instance, node) in [
        ("crm-a", "node-a"),
        ("crm-b", "node-b"),
        ("sand-b", "node-b"),
        ("sand-c", "node-c"),
    ] {
        let list = poll(
            &a,
            Duration::from_secs(90),
            || a.run(&["backup", "list", instance, "--json"]).ok().json(),
            |l| {
                l.as_array()
                    .unwrap()
                    .iter()
                    .any(|b| b["kind"] == "system" && b["status"] == "completed")
            },
        );
        let system: Vec<&Value> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["kind"] == "system")
            .collect();
        assert_eq!(system.len(), 1, "once each: {list:#}");
        let j = job(&a, system[0]["job_id"].as_i64().unwrap());
        assert_eq!(j["node"], node, "{j:#}");
    }
    let minute_claims: Vec<(String, String)> = fleet
        .pg()
        .query(
            "SELECT tick, node FROM scheduler_ticks WHERE tick LIKE 'minute %'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut seen = std::collections::BTreeSet::new();
    assert!(
        minute_claims
            .iter()
            .all(|(tick, _)| seen.insert(tick.clone())),
        "each minute claimed by one node: {minute_claims:?}"
    );
    drop((b, c));
}
