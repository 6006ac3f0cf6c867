//! What an instance is, in the domain's terms: its type, engine and state, and the rules
//! that depend only on those (which states allow which operations).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// `production` or `sandbox`. Restores and refreshes only ever write into a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InstanceType {
    Production,
    Sandbox,
}

/// How an instance's database is stored and run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    Sqlite,
}

/// What an instance is doing now. Only `available` instances accept new operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    Available,
    BackingUp,
    Restoring,
    Updating,
    Refreshing,
    Unavailable,
}

/// A value that is not one of the words a field accepts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} must be one of {allowed} (got {got:?})")]
pub struct UnknownValue {
    pub what: &'static str,
    pub allowed: &'static str,
    pub got: String,
}

macro_rules! words {
    ($ty:ident, $what:literal, $($variant:ident => $word:literal),+ $(,)?) => {
        impl $ty {
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $word),+ }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $ty {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($word => Ok($ty::$variant),)+
                    _ => Err(UnknownValue {
                        what: $what,
                        allowed: concat!($($word, " "),+),
                        got: s.to_owned(),
                    }),
                }
            }
        }
    };
}

words!(InstanceType, "the instance type", Production => "production", Sandbox => "sandbox");
words!(Engine, "the engine", Sqlite => "sqlite");
words!(InstanceState, "the instance state",
    Available => "available",
    BackingUp => "backing_up",
    Restoring => "restoring",
    Updating => "updating",
    Refreshing => "refreshing",
    Unavailable => "unavailable",
);

impl InstanceState {
    /// Human label for the admin center.
    pub fn label(self) -> &'static str {
        match self {
            InstanceState::Available => "Available",
            InstanceState::BackingUp => "Backing up",
            InstanceState::Restoring => "Restoring",
            InstanceState::Updating => "Updating",
            InstanceState::Refreshing => "Refreshing",
            InstanceState::Unavailable => "Unavailable",
        }
    }

    /// Whether an operation that changes the instance's type or existence may start now.
    /// Switching or deleting while a backup, restore, update or refresh runs is refused.
    pub fn allows_reconfiguration(self) -> bool {
        matches!(self, InstanceState::Available | InstanceState::Unavailable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        for t in InstanceType::ALL {
            assert_eq!(t.as_str().parse::<InstanceType>().unwrap(), *t);
        }
        for s in InstanceState::ALL {
            assert_eq!(s.as_str().parse::<InstanceState>().unwrap(), *s);
        }
        let err = "prod".parse::<InstanceType>().unwrap_err().to_string();
        assert!(err.contains("production sandbox"), "{err}");
    }

    #[test]
    fn busy_instances_cannot_be_reconfigured() {
        assert!(InstanceState::Available.allows_reconfiguration());
        assert!(!InstanceState::Restoring.allows_reconfiguration());
        assert!(!InstanceState::BackingUp.allows_reconfiguration());
    }
}
