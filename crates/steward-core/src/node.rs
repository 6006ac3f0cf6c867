//! Steward nodes: the `steward serve` processes that share one control plane. Each registers
//! under a name and heartbeats; these are the rules for the name, for a node's status, and
//! for when a start may take over a name that is already registered.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::name::NameError;

/// A node's name: 1–63 lowercase ASCII letters, digits and dashes, starting and ending with a
/// letter or digit (a DNS label, like an instance name but possibly shorter).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct NodeName(String);

impl NodeName {
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, NameError> {
        const WHAT: &str = "a node name";
        let len = raw.chars().count();
        if !(1..=Self::MAX_LEN).contains(&len) {
            return Err(NameError::Length {
                what: WHAT,
                min: 1,
                max: Self::MAX_LEN,
                len,
            });
        }
        if let Some(found) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::Character {
                what: WHAT,
                allowed: "lowercase letters, digits and dashes",
                found,
            });
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err(NameError::Edge { what: WHAT });
        }
        Ok(Self(raw.to_owned()))
    }

    /// The default name from a host name: its first label, lowercased, with every other
    /// character a dash (`Web_01.example.net` → `web-01`); `None` if nothing usable is left.
    pub fn from_host_name(host: &str) -> Option<Self> {
        let label = host.trim().split('.').next().unwrap_or("");
        let mapped: String = label
            .chars()
            .map(|c| {
                let c = c.to_ascii_lowercase();
                if c.is_ascii_lowercase() || c.is_ascii_digit() {
                    c
                } else {
                    '-'
                }
            })
            .take(Self::MAX_LEN)
            .collect();
        Self::parse(mapped.trim_matches('-')).ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for NodeName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<NodeName> for String {
    fn from(value: NodeName) -> Self {
        value.0
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the fleet sees of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeStatus {
    /// Heartbeating.
    Up,
    /// Its last heartbeat is older than the down threshold: it crashed, hangs or cannot reach
    /// the control plane.
    Down,
    /// It stopped cleanly.
    Stopped,
}

impl NodeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Up => "up",
            NodeStatus::Down => "down",
            NodeStatus::Stopped => "stopped",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            NodeStatus::Up => "Up",
            NodeStatus::Down => "Down",
            NodeStatus::Stopped => "Stopped",
        }
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A node is `stopped` once it stopped cleanly, `down` when its last heartbeat is more than
/// `down_after` old, else `up`.
pub fn node_status(
    now: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
    stopped_at: Option<DateTime<Utc>>,
    down_after: Duration,
) -> NodeStatus {
    if stopped_at.is_some() {
        NodeStatus::Stopped
    } else if now - heartbeat_at > down_after {
        NodeStatus::Down
    } else {
        NodeStatus::Up
    }
}

/// Whether a starting node may register under a name already registered: only if the node
/// that holds it is not up (stopped, or down), or it is the same node starting again (the
/// same data directory, `same_node`, e.g. after a crash). Two live nodes never share a name.
pub fn may_take_over(
    now: DateTime<Utc>,
    heartbeat_at: DateTime<Utc>,
    stopped_at: Option<DateTime<Utc>>,
    down_after: Duration,
    same_node: bool,
) -> bool {
    same_node || node_status(now, heartbeat_at, stopped_at, down_after) != NodeStatus::Up
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 3, 1, 12, 0, 0).unwrap() + Duration::seconds(s)
    }

    #[test]
    fn node_names_are_dns_labels() {
        for ok in ["a", "node-1", "web01", &"x".repeat(63)] {
            assert!(NodeName::parse(ok).is_ok(), "{ok}");
        }
        let err = |raw: &str| NodeName::parse(raw).unwrap_err().to_string();
        assert_eq!(err(""), "a node name must be 1–63 characters long (got 0)");
        assert_eq!(
            err(&"x".repeat(64)),
            "a node name must be 1–63 characters long (got 64)"
        );
        assert_eq!(
            err("Web"),
            "a node name may contain only lowercase letters, digits and dashes (found 'W')"
        );
        assert_eq!(
            err("a.b"),
            "a node name may contain only lowercase letters, digits and dashes (found '.')"
        );
        assert_eq!(
            err("-a"),
            "a node name must start and end with a letter or digit"
        );
    }

    #[test]
    fn host_names_become_node_names() {
        let n = |h: &str| NodeName::from_host_name(h).map(String::from);
        assert_eq!(n("Web_01.example.net\n").as_deref(), Some("web-01"));
        assert_eq!(n("db1").as_deref(), Some("db1"));
        assert_eq!(n("-x-").as_deref(), Some("x"));
        assert_eq!(n(&"a".repeat(80)).map(|s| s.len()), Some(63));
        assert_eq!(n(""), None);
        assert_eq!(n("___"), None);
    }

    #[test]
    fn status_follows_the_heartbeat() {
        let down = Duration::seconds(30);
        assert_eq!(node_status(t(30), t(0), None, down), NodeStatus::Up);
        assert_eq!(node_status(t(31), t(0), None, down), NodeStatus::Down);
        assert_eq!(
            node_status(t(1), t(0), Some(t(0)), down),
            NodeStatus::Stopped
        );
    }

    #[test]
    fn a_live_name_is_never_taken_over_by_another_node() {
        let down = Duration::seconds(30);
        assert!(!may_take_over(t(10), t(0), None, down, false));
        assert!(may_take_over(t(10), t(0), None, down, true), "same node");
        assert!(may_take_over(t(31), t(0), None, down, false), "down");
        assert!(
            may_take_over(t(1), t(0), Some(t(0)), down, false),
            "stopped"
        );
    }
}
