//! The Steward nodes sharing this control plane (`nodes`, migration 13): registration under a
//! unique name, heartbeats, a clean stop, and the list with each node's instance and running
//! job counts (`instances.node`, `jobs.node`). Whether a name may be taken over is
//! `steward_core::node::may_take_over`.

use chrono::{DateTime, Duration, Utc};

use crate::sql::{OptionalExtension, Row, params};
use crate::{Db, Result, parse_opt_ts, parse_ts, sql, ts};

/// A node as registered, with what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRow {
    pub id: i64,
    pub name: String,
    /// The URL other nodes and people reach it at.
    pub address: String,
    /// The Steward version it runs.
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Set when it stopped cleanly; cleared when it starts again.
    pub stopped_at: Option<DateTime<Utc>>,
    /// Live (not deleted) instances it keeps.
    pub instances: u64,
    /// Jobs it claimed that are running.
    pub running_jobs: u64,
}

/// A node starting: what it registers.
#[derive(Debug, Clone)]
pub struct NewNode {
    pub name: String,
    /// Identifies the node's data directory: the same node starting again takes its name back
    /// even while its last heartbeat is recent (it crashed a moment ago).
    pub key: String,
    pub address: String,
    pub version: String,
}

/// What [`Db::register_node`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registration {
    /// The name was new.
    Registered,
    /// The name was registered by a node that stopped, is down, or was this node itself
    /// (`previous` is that row as it was).
    TookOver { previous: NodeRow },
    /// Another node holds the name and is up: nothing was written.
    Refused { holder: NodeRow },
}

const NODE_COLS: &str =
    "n.id, n.name, n.address, n.version, n.started_at, n.heartbeat_at, n.stopped_at,
     (SELECT count(*) FROM instances i WHERE i.node = n.name AND i.deleted_at IS NULL),
     (SELECT count(*) FROM jobs j WHERE j.node = n.name AND j.state = 'running')";

fn node_row(r: &Row) -> sql::Result<NodeRow> {
    Ok(NodeRow {
        id: r.get(0)?,
        name: r.get(1)?,
        address: r.get(2)?,
        version: r.get(3)?,
        started_at: parse_ts(&r.get::<_, String>(4)?)?,
        heartbeat_at: parse_ts(&r.get::<_, String>(5)?)?,
        stopped_at: parse_opt_ts(r.get(6)?)?,
        instances: r.get(7)?,
        running_jobs: r.get(8)?,
    })
}

/// Nodes.
impl Db<'_> {
    /// Registers `node` as started at `at`: a new name is inserted; a name already registered
    /// is taken over only if `steward_core::node::may_take_over` allows it (its holder stopped,
    /// is down for longer than `down_after`, or has the same key); otherwise nothing is
    /// written and the holder is returned. Instances recorded before nodes were (no node)
    /// become the registering node's.
    pub fn register_node(
        &self,
        node: &NewNode,
        at: DateTime<Utc>,
        down_after: Duration,
    ) -> Result<Registration> {
        let existing = self.node_by_name(&node.name)?;
        let outcome = match existing {
            None => {
                let n = self.conn().execute(
                    "INSERT INTO nodes (name, node_key, address, version, started_at, heartbeat_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5) ON CONFLICT DO NOTHING",
                    params![node.name, node.key, node.address, node.version, ts(at)],
                )?;
                if n == 0 {
                    // Registered in between (only possible without serialised writes).
                    return match self.node_by_name(&node.name)? {
                        Some(holder) => Ok(Registration::Refused { holder }),
                        None => Err(crate::StoreError::Corrupt(format!(
                            "node {} neither inserted nor found",
                            node.name
                        ))),
                    };
                }
                Registration::Registered
            }
            Some(previous) => {
                let key: String = self.conn().query_row(
                    "SELECT node_key FROM nodes WHERE name = ?1",
                    [&node.name],
                    |r| r.get(0),
                )?;
                if !steward_core::node::may_take_over(
                    at,
                    previous.heartbeat_at,
                    previous.stopped_at,
                    down_after,
                    key == node.key,
                ) {
                    return Ok(Registration::Refused { holder: previous });
                }
                self.conn().execute(
                    "UPDATE nodes SET node_key = ?2, address = ?3, version = ?4, started_at = ?5,
                     heartbeat_at = ?5, stopped_at = NULL WHERE name = ?1",
                    params![node.name, node.key, node.address, node.version, ts(at)],
                )?;
                Registration::TookOver { previous }
            }
        };
        self.conn().execute(
            "UPDATE instances SET node = ?1 WHERE node IS NULL",
            [&node.name],
        )?;
        Ok(outcome)
    }

    /// Records a heartbeat of the node `name` holding `key`; `false` if it no longer holds
    /// the name (another node took it over while this one was down).
    pub fn node_heartbeat(&self, name: &str, key: &str, at: DateTime<Utc>) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE nodes SET heartbeat_at = ?3 WHERE name = ?1 AND node_key = ?2",
            params![name, key, ts(at)],
        )?;
        Ok(n == 1)
    }

    /// Marks the node `name` holding `key` as stopped cleanly at `at`; `false` if it no
    /// longer holds the name.
    pub fn mark_node_stopped(&self, name: &str, key: &str, at: DateTime<Utc>) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE nodes SET stopped_at = ?3, heartbeat_at = ?3 WHERE name = ?1 AND node_key = ?2",
            params![name, key, ts(at)],
        )?;
        Ok(n == 1)
    }

    pub fn node_by_name(&self, name: &str) -> Result<Option<NodeRow>> {
        Ok(self
            .conn()
            .query_row(
                &format!("SELECT {NODE_COLS} FROM nodes n WHERE n.name = ?1"),
                [name],
                node_row,
            )
            .optional()?)
    }

    /// Every registered node by name, with its instance and running job counts.
    pub fn list_nodes(&self) -> Result<Vec<NodeRow>> {
        let mut st = self
            .conn()
            .prepare(&format!("SELECT {NODE_COLS} FROM nodes n ORDER BY n.name"))?;
        let rows = st.query_map([], node_row)?.collect::<sql::Result<_>>()?;
        Ok(rows)
    }
}
