//! Steward nodes through the built `steward` binary, against real `steward serve` processes on
//! one real PostgreSQL: `node list` (table and `--json`, any role) shows the node with its
//! instances; a second `serve` under a running node's name stops with the reason; after a
//! clean stop (SIGTERM) the name is free for another node.

mod common;

use std::io::Read;
use std::process::Stdio;
use std::time::Duration;

use common::*;

#[test]
fn node_list_and_a_duplicate_node_name_from_the_command_line() {
    let url = steward_testpg::fresh_database();
    let tmp = tempfile::tempdir().unwrap();
    let data = data_dir(&tmp);
    let env = |name: &'static str, address: &'static str| {
        [
            ("STEWARD_DATABASE_URL", url.clone()),
            ("STEWARD_NODE_NAME", name.to_owned()),
            ("STEWARD_NODE_ADDRESS", address.to_owned()),
        ]
    };
    let first = env("node-1", "http://node-1.example.net:8080");
    let first: Vec<(&str, &str)> = first.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s = Server::start_env(&data, &first);
    s.run(&["instance", "create", "crm-prod", "--type", "production"])
        .ok();

    // Any role lists the nodes.
    let viewer = viewer_token(&s);
    let list = s
        .run_as(Some(&viewer), &["node", "list", "--json"], "")
        .ok()
        .json();
    let nodes = list.as_array().expect("an array");
    assert_eq!(nodes.len(), 1, "{list:#}");
    let n = &nodes[0];
    assert_eq!(n["name"], "node-1");
    assert_eq!(n["status"], "up");
    assert_eq!(n["address"], "http://node-1.example.net:8080");
    assert_eq!(n["instances"], 1);
    assert_eq!(n["running_jobs"], 0);
    assert_eq!(n["this_node"], true);
    assert!(n["last_heartbeat"].as_str().is_some(), "{n}");
    let table = s.run(&["node", "list"]).ok().stdout;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("LAST HEARTBEAT"),
        "{table}"
    );
    assert!(lines[1].starts_with("node-1 (this node)  up"), "{table}");
    assert!(
        lines[1].contains("http://node-1.example.net:8080"),
        "{table}"
    );

    // A second node under the same name, from another data directory: refused at start.
    let tmp2 = tempfile::tempdir().unwrap();
    let mut child = steward_command()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp2.path().join("data"))
        .env("STEWARD_DATABASE_URL", &url)
        .env("STEWARD_NODE_NAME", "node-1")
        .env("STEWARD_CONTINUOUS_CAPTURE", "false")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_for(&mut child, Duration::from_secs(60)).expect("the start must stop");
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("node node-1 is already running (last heartbeat ")
            && stderr.contains(
                "at http://node-1.example.net:8080); give this node another name with \
                 STEWARD_NODE_NAME"
            ),
        "{stderr}"
    );
    assert!(!tmp2.path().join("data").join("node-id").exists());

    // A clean stop frees the name: another node starts under it at its own address.
    assert!(s.terminate().success());
    let data2 = tmp2.path().join("data");
    let second = env("node-1", "http://node-1b.example.net:8080");
    let second: Vec<(&str, &str)> = second.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let s2 = Server::start_env(&data2, &second);
    let list = s2.run(&["node", "list", "--json"]).ok().json();
    assert_eq!(list[0]["status"], "up", "{list:#}");
    assert_eq!(list[0]["address"], "http://node-1b.example.net:8080");
    assert!(s2.terminate().success());
}
