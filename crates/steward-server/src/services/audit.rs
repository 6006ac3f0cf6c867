//! Reading the audit log. Entries are written by each service in the transaction of the change.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use steward_core::policy::{Action, authorize};
use steward_store::{AuditFilter, AuditRow};

use super::{Actor, Result, Services};

/// Filters for the audit log; every field optional.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only entries by this user (or `System`).
    pub actor: Option<String>,
    /// Only this action, or actions under this prefix (`instance` matches `instance.create`).
    pub action: Option<String>,
    /// Only entries about this target (an instance name, a username, ...).
    pub target: Option<String>,
    /// Only entries at or after this moment (RFC 3339).
    pub since: Option<DateTime<Utc>>,
    /// At most this many entries (default 200).
    pub limit: Option<i64>,
}

impl Services {
    pub fn list_audit(&self, actor: &Actor, q: &AuditQuery) -> Result<Vec<AuditRow>> {
        authorize(actor.role, Action::ViewAudit)?;
        let filter = AuditFilter {
            actor: q.actor.clone().filter(|s| !s.is_empty()),
            action: q.action.clone().filter(|s| !s.is_empty()),
            target: q.target.clone().filter(|s| !s.is_empty()),
            since: q.since,
            limit: q.limit,
        };
        Ok(self.store.read(|db| db.list_audit(&filter))?)
    }
}
