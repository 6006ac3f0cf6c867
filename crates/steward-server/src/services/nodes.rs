//! Steward nodes: every `steward serve` sharing a control plane registers itself at start
//! (name, address, version), heartbeats every `node_heartbeat_seconds` and marks itself
//! stopped at a clean shutdown; `list_nodes` shows each node's status (`steward_core::node`:
//! up, down once its heartbeat is older than `node_down_seconds`, stopped), its instances and
//! its running jobs.
//!
//! Invariants:
//! - Two live nodes never share a name: a start under the name of a node that is up is
//!   refused before anything else is written ([`RegisterError::NameTaken`]). The same node
//!   starting again (the same data directory, recognised by `<data_dir>/node-id`) takes its
//!   name back at once, so a restart after a crash never waits for the down threshold.
//! - A node only ever writes its own row: heartbeats and the stop name the node's key, so a
//!   node whose name was taken over while it was down cannot overwrite the new holder.

use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use serde::Serialize;
use steward_core::clock::display_time;
use steward_core::node::{NodeName, node_status};
use steward_core::policy::{Action, authorize};
use steward_store::{NewNode, NodeRow, Registration, StoreError};

use super::{Actor, Result, Services};
use crate::config::{Config, ConfigError};

/// The file in the data directory that identifies this node across restarts.
const KEY_FILE: &str = "node-id";

/// This node's settings, from the configuration.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    pub name: NodeName,
    /// The URL others reach this node at.
    pub address: String,
    /// Time between heartbeats.
    pub heartbeat: std::time::Duration,
    /// A node whose last heartbeat is older than this is down.
    pub down_after: chrono::Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        Self {
            name: NodeName::parse("local").expect("a valid name"),
            address: "http://127.0.0.1:8080".into(),
            heartbeat: std::time::Duration::from_secs(5),
            down_after: chrono::Duration::seconds(30),
        }
    }
}

/// This node: its settings and, once registered, the key it holds its name with.
#[derive(Debug, Default)]
pub struct Node {
    pub settings: NodeSettings,
    key: OnceLock<String>,
    /// Whether the last heartbeat found the name taken by another node (logged once).
    lost: AtomicBool,
    /// The hour whose maintenance this process ran: the store lets the same node claim an
    /// hour again (a restarted node takes its tick back), so this keeps it to once an hour.
    maintained_hour: std::sync::Mutex<Option<String>>,
}

impl Node {
    pub fn new(settings: NodeSettings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    pub fn name(&self) -> &str {
        self.settings.name.as_str()
    }
}

/// The node settings from the configuration, checked: `node_name` (default: the host name),
/// `node_address` (default: `public_url`), the heartbeat and down intervals.
pub fn settings(c: &Config) -> std::result::Result<NodeSettings, ConfigError> {
    let name = match c.node_name.as_deref().map(str::trim) {
        Some(raw) if !raw.is_empty() => NodeName::parse(raw).map_err(|e| {
            ConfigError::new(format!(
                "node_name {raw:?} cannot be used: {e} (STEWARD_NODE_NAME)"
            ))
        })?,
        _ => {
            let host = host_name().ok_or_else(|| {
                ConfigError::new(
                    "cannot tell this host's name for the node name; set node_name \
                     (STEWARD_NODE_NAME), e.g. node-1",
                )
            })?;
            NodeName::from_host_name(&host).ok_or_else(|| {
                ConfigError::new(format!(
                    "this host's name {host:?} does not make a node name (1–63 lowercase \
                     letters, digits and dashes); set node_name (STEWARD_NODE_NAME), e.g. node-1"
                ))
            })?
        }
    };
    let (what, raw) = match c.node_address.as_deref().map(str::trim) {
        Some(a) if !a.is_empty() => ("node_address", a),
        _ => ("public_url", c.public_url.trim()),
    };
    let address = check_address(raw).map_err(|why| {
        ConfigError::new(format!(
            "{what} {raw:?} cannot be this node's address: {why} (STEWARD_NODE_ADDRESS)"
        ))
    })?;
    if !(1..=3600).contains(&c.node_heartbeat_seconds) {
        return Err(ConfigError::new(format!(
            "node_heartbeat_seconds must be 1–3600 (got {})",
            c.node_heartbeat_seconds
        )));
    }
    if c.node_down_seconds <= c.node_heartbeat_seconds || c.node_down_seconds > 86_400 {
        return Err(ConfigError::new(format!(
            "node_down_seconds must be more than node_heartbeat_seconds ({}) and at most 86400 \
             (got {})",
            c.node_heartbeat_seconds, c.node_down_seconds
        )));
    }
    Ok(NodeSettings {
        name,
        address,
        heartbeat: std::time::Duration::from_secs(c.node_heartbeat_seconds),
        down_after: chrono::Duration::seconds(c.node_down_seconds as i64),
    })
}

/// An http(s) URL with a host, without a trailing slash.
fn check_address(raw: &str) -> std::result::Result<String, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("write an http:// or https:// URL".into());
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err("it names no host".into());
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

/// This host's name: `/etc/hostname`, else what `hostname` prints.
fn host_name() -> Option<String> {
    let from_file = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_owned());
    from_file.filter(|s| !s.is_empty()).or_else(|| {
        let out = std::process::Command::new("hostname").output().ok()?;
        let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (out.status.success() && !name.is_empty()).then_some(name)
    })
}

/// Why this node could not register.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(
        "node {name} is already running (last heartbeat {heartbeat}, at {address}); give this \
         node another name with STEWARD_NODE_NAME"
    )]
    NameTaken {
        name: String,
        heartbeat: String,
        address: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot use the node id file {path}: {source}")]
    KeyFile {
        path: String,
        source: std::io::Error,
    },
}

/// The key in `<data_dir>/node-id`, or a new one (`true`: not yet written).
fn read_key(data_dir: &Path) -> std::result::Result<(String, bool), RegisterError> {
    let path = data_dir.join(KEY_FILE);
    let err = |source| RegisterError::KeyFile {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => Ok((s.trim().to_owned(), false)),
        Ok(_) => Ok((new_key(), true)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((new_key(), true)),
        Err(e) => Err(err(e)),
    }
}

fn new_key() -> String {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex::encode(bytes)
}

/// Writes `key` to `<data_dir>/node-id` (beside, then renamed into place).
fn write_key(data_dir: &Path, key: &str) -> std::result::Result<(), RegisterError> {
    let path = data_dir.join(KEY_FILE);
    let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
    std::fs::write(&tmp, format!("{key}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| RegisterError::KeyFile {
            path: path.display().to_string(),
            source,
        })
}

/// `node` value asking for the up node with the fewest instances (also the default).
pub const LEAST_LOADED: &str = "least-loaded";

/// Which node creates a new instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// This node.
    Here,
    /// Another node, reached at `address`.
    On { name: String, address: String },
}

/// A node as every surface shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    pub name: String,
    /// The URL the node is reached at.
    pub address: String,
    /// `up` (heartbeating), `down` (its last heartbeat is older than `node_down_seconds`) or
    /// `stopped` (stopped cleanly).
    pub status: String,
    /// The Steward version it runs.
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub last_heartbeat: DateTime<Utc>,
    pub stopped_at: Option<DateTime<Utc>>,
    /// Live instances the node keeps.
    pub instances: u64,
    /// Jobs the node is running.
    pub running_jobs: u64,
    /// Whether this is the node that answered.
    pub this_node: bool,
}

impl Services {
    /// Registers this node at start; refused, with nothing written, while another node that
    /// is up holds the name.
    pub fn register_node(&self) -> std::result::Result<(), RegisterError> {
        let settings = &self.node.settings;
        let (key, unwritten) = read_key(&self.paths.data_dir)?;
        let now = self.now();
        let new = NewNode {
            name: settings.name.to_string(),
            key: key.clone(),
            address: settings.address.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let outcome = self
            .store
            .write(|db| db.register_node(&new, now, settings.down_after))?;
        match outcome {
            Registration::Refused { holder } => {
                let ago = (now - holder.heartbeat_at).num_seconds().max(0);
                return Err(RegisterError::NameTaken {
                    name: holder.name,
                    heartbeat: format!("{}, {ago} s ago", display_time(&holder.heartbeat_at)),
                    address: holder.address,
                });
            }
            Registration::Registered => {
                tracing::info!(node = %settings.name, address = %settings.address, "registered this node");
            }
            Registration::TookOver { previous } => {
                let was = node_status(
                    now,
                    previous.heartbeat_at,
                    previous.stopped_at,
                    settings.down_after,
                );
                tracing::info!(node = %settings.name, previously = %was, "registered this node again");
            }
        }
        if unwritten {
            write_key(&self.paths.data_dir, &key)?;
        }
        let _ = self.node.key.set(key);
        Ok(())
    }

    /// Records this node's heartbeat (the heartbeat loop calls it every
    /// `node_heartbeat_seconds`). Not registered yet: nothing to do.
    pub fn node_heartbeat(&self) -> Result<()> {
        let Some(key) = self.node.key.get() else {
            return Ok(());
        };
        let now = self.now();
        let lease = now + self.node.settings.down_after;
        let held = self.store.write(|db| {
            let held = db.node_heartbeat(self.node.name(), key, now)?;
            // The jobs this node runs stay held while it heartbeats.
            if held {
                db.renew_job_leases(self.node.name(), lease)?;
            }
            Ok::<_, StoreError>(held)
        })?;
        let was_lost = self.node.lost.swap(!held, Ordering::Relaxed);
        if !held && !was_lost {
            tracing::error!(
                node = self.node.name(),
                "another node now runs under this node's name (this one was down); give one of them another name with STEWARD_NODE_NAME"
            );
        }
        Ok(())
    }

    /// Claims the fleet-wide scheduled work of this minute (`hourly`: also of this hour) for
    /// this node: `(minute, hour)`, each `true` for exactly one node of the fleet.
    pub fn claim_scheduled_work(&self) -> Result<(bool, bool)> {
        let now = self.now();
        let minute = format!("minute {}", now.format("%Y-%m-%dT%H:%M"));
        let hour = format!("hour {}", now.format("%Y-%m-%dT%H"));
        let me = self.node.name();
        let (m, h) = self.store.write(|db| {
            let m = db.claim_scheduler_tick(&minute, me, now)?;
            let h = db.claim_scheduler_tick(&hour, me, now)?;
            if h {
                db.prune_scheduler_ticks(now - chrono::Duration::days(2))?;
            }
            Ok::<_, StoreError>((m, h))
        })?;
        // Held by this node: still only once per hour in this process (without this, a single
        // node re-claimed its own hour every minute and expired and pruned every minute).
        let mut done = self
            .node
            .maintained_hour
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let h = h && done.as_deref() != Some(hour.as_str());
        if h {
            *done = Some(hour);
        }
        Ok((m, h))
    }

    /// Where a new instance goes: `requested` names a node (which must be up), or with `None`
    /// or `least-loaded`, the up node that keeps the fewest instances (this node first among
    /// equals, then by name). Its files will be on that node's disk.
    pub fn place_instance(&self, actor: &Actor, requested: Option<&str>) -> Result<Placement> {
        authorize(actor.role, Action::CreateInstance)?;
        let now = self.now();
        let nodes = self.store.read(|db| db.list_nodes())?;
        let up = |r: &NodeRow| {
            node_status(
                now,
                r.heartbeat_at,
                r.stopped_at,
                self.node.settings.down_after,
            ) == steward_core::node::NodeStatus::Up
        };
        let me = self.node.name();
        let chosen = match requested.map(str::trim).filter(|r| !r.is_empty()) {
            Some(name) if name != LEAST_LOADED => {
                let Some(r) = nodes.iter().find(|r| r.name == name) else {
                    return Err(crate::ServiceError::not_found(
                        "unknown_node",
                        format!(
                            "there is no node named {name:?} (see `steward node list`); nothing was created"
                        ),
                    ));
                };
                if r.name != me && !up(r) {
                    return Err(crate::ServiceError::conflict(
                        "node_unavailable",
                        format!(
                            "node {name} is not up (last heartbeat {}): an instance can only be created on a running node; nothing was created",
                            display_time(&r.heartbeat_at)
                        ),
                    ));
                }
                r
            }
            _ => match nodes
                .iter()
                .filter(|r| r.name == me || up(r))
                .min_by_key(|r| (r.instances, r.name != me, r.name.clone()))
            {
                Some(r) => r,
                None => return Ok(Placement::Here),
            },
        };
        Ok(if chosen.name == me {
            Placement::Here
        } else {
            Placement::On {
                name: chosen.name.clone(),
                address: chosen.address.clone(),
            }
        })
    }

    /// Refuses `what` (an operation on an instance's files, done by the answering node) when
    /// the instance is kept by another node, naming where to ask instead.
    pub(crate) fn refuse_if_kept_elsewhere(
        &self,
        db: &steward_store::Db,
        row: &steward_store::InstanceRow,
        what: &str,
    ) -> Result<()> {
        let Some(node) = row.node.as_deref().filter(|n| *n != self.node.name()) else {
            return Ok(());
        };
        let address = db
            .node_by_name(node)?
            .map(|n| n.address)
            .unwrap_or_else(|| "its address".into());
        Err(crate::ServiceError::conflict(
            "instance_on_another_node",
            format!(
                "{} is kept by node {node}, whose disk holds its files: {what} it there \
                 (steward --url {address} ...); nothing was changed",
                row.name
            ),
        ))
    }

    /// Marks this node stopped (a clean shutdown).
    pub fn stop_node(&self) -> Result<()> {
        let Some(key) = self.node.key.get() else {
            return Ok(());
        };
        let now = self.now();
        self.store
            .write(|db| db.mark_node_stopped(self.node.name(), key, now))?;
        tracing::info!(node = self.node.name(), "marked this node stopped");
        Ok(())
    }

    /// Every registered node with its status, instances and running jobs. Every role may
    /// see them.
    pub fn list_nodes(&self, actor: &Actor) -> Result<Vec<NodeView>> {
        authorize(actor.role, Action::ViewNodes)?;
        let now = self.now();
        let rows = self.store.read(|db| db.list_nodes())?;
        Ok(rows.into_iter().map(|r| self.node_view(r, now)).collect())
    }

    fn node_view(&self, r: NodeRow, now: DateTime<Utc>) -> NodeView {
        let status = node_status(
            now,
            r.heartbeat_at,
            r.stopped_at,
            self.node.settings.down_after,
        );
        NodeView {
            this_node: r.name == self.node.name(),
            name: r.name,
            address: r.address,
            status: status.as_str().to_owned(),
            version: r.version,
            started_at: r.started_at,
            last_heartbeat: r.heartbeat_at,
            stopped_at: r.stopped_at,
            instances: r.instances,
            running_jobs: r.running_jobs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(f: impl FnOnce(&mut Config)) -> Config {
        let mut c = Config::default();
        f(&mut c);
        c
    }

    #[test]
    fn node_settings_are_checked_with_the_setting_named() {
        let s = settings(&config(|c| c.node_name = Some("node-2".into()))).unwrap();
        assert_eq!(s.name.as_str(), "node-2");
        assert_eq!(s.address, "http://127.0.0.1:8080", "public_url by default");
        assert_eq!(s.heartbeat, std::time::Duration::from_secs(5));
        assert_eq!(s.down_after, chrono::Duration::seconds(30));
        let err = |f: fn(&mut Config)| settings(&config(f)).unwrap_err().to_string();
        assert_eq!(
            err(|c| c.node_name = Some("Node_2".into())),
            "invalid configuration: node_name \"Node_2\" cannot be used: a node name may contain \
             only lowercase letters, digits and dashes (found 'N') (STEWARD_NODE_NAME)"
        );
        assert!(
            err(|c| c.node_name = Some("x".repeat(64))).contains("1–63 characters"),
            "too long"
        );
        assert!(
            err(|c| c.node_address = Some("ftp://a".into()))
                .contains("node_address \"ftp://a\" cannot be this node's address"),
        );
        assert!(err(|c| c.node_heartbeat_seconds = 0).contains("node_heartbeat_seconds"));
        assert!(err(|c| c.node_down_seconds = 5).contains("node_down_seconds must be more"));
    }

    #[test]
    fn the_default_name_is_this_hosts() {
        let s = settings(&Config::default()).unwrap();
        let expected = NodeName::from_host_name(&host_name().unwrap()).unwrap();
        assert_eq!(s.name, expected);
    }
}
