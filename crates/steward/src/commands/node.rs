//! `steward node list`: the Steward nodes sharing the control plane, through the REST API.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

use crate::cli::NodeCommand;
use crate::client::Client;
use crate::output::{Table, time};

/// One node of `GET /api/v1/nodes`.
#[derive(Debug, Deserialize)]
struct Node {
    name: String,
    address: String,
    status: String,
    version: String,
    last_heartbeat: DateTime<Utc>,
    instances: u64,
    running_jobs: u64,
    #[serde(default)]
    this_node: bool,
}

pub async fn run(client: &Client, cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::List { json } => {
            let v: Value = client.get("/api/v1/nodes", &[]).await?;
            super::show(&json, v, |nodes: &Vec<Node>| table(nodes))
        }
    }
}

fn table(nodes: &[Node]) -> String {
    let mut t = Table::new(&[
        "NAME",
        "STATUS",
        "ADDRESS",
        "LAST HEARTBEAT",
        "INSTANCES",
        "RUNNING JOBS",
        "VERSION",
    ]);
    for n in nodes {
        let name = if n.this_node {
            format!("{} (this node)", n.name)
        } else {
            n.name.clone()
        };
        t.row(vec![
            name,
            n.status.clone(),
            n.address.clone(),
            time(&n.last_heartbeat),
            n.instances.to_string(),
            n.running_jobs.to_string(),
            n.version.clone(),
        ]);
    }
    if t.is_empty() {
        return "No node has registered yet.\n".into();
    }
    t.render()
}
