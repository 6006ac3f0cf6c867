//! The update policy in force: the operator's policy file when one is configured (reloaded
//! when its text changes; a broken edit keeps the last good policy and is logged), else the
//! policy set through the API, else the built-in default (n and n-1 supported, two majors
//! behind or past end of support is mandatory, service updates automatic).

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use serde_json::json;
use steward_core::policy::{Action, authorize};
use steward_core::update::{self as rules, UpdatePolicy};
use steward_store::Db;

use super::kind_word;
use crate::error::ServiceError;
use crate::services::{Actor, Result, Services, audit_entry};

/// The update policy as the API reads and writes it.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicyDoc {
    /// Supported major release lines, newest first (default 2: n and n-1).
    #[serde(default = "two")]
    pub supported_majors: u32,
    /// Major releases behind the newest that make an update mandatory (default 2).
    #[serde(default = "two")]
    pub mandatory_when_behind: u32,
    /// Apply service releases in the next maintenance window without approval (default true).
    #[serde(default = "yes")]
    pub service_updates_automatic: bool,
    /// Daily maintenance window start, `HH:MM` UTC (default `22:00`).
    #[serde(default = "ten_pm")]
    pub maintenance_window_start: String,
    /// Days ahead a mandatory update is scheduled (default 30).
    #[serde(default = "thirty")]
    pub mandatory_lead_days: u32,
}

fn two() -> u32 {
    2
}
fn yes() -> bool {
    true
}
fn ten_pm() -> String {
    "22:00".into()
}
fn thirty() -> u32 {
    30
}

impl From<UpdatePolicy> for UpdatePolicyDoc {
    fn from(p: UpdatePolicy) -> Self {
        Self {
            supported_majors: p.supported_majors,
            mandatory_when_behind: p.mandatory_when_behind,
            service_updates_automatic: p.service_updates_automatic,
            maintenance_window_start: p.maintenance_window_start,
            mandatory_lead_days: p.mandatory_lead_days,
        }
    }
}

impl From<UpdatePolicyDoc> for UpdatePolicy {
    fn from(p: UpdatePolicyDoc) -> Self {
        Self {
            supported_majors: p.supported_majors,
            mandatory_when_behind: p.mandatory_when_behind,
            service_updates_automatic: p.service_updates_automatic,
            maintenance_window_start: p.maintenance_window_start,
            mandatory_lead_days: p.mandatory_lead_days,
        }
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PolicyRelease {
    pub version: String,
    /// `major` or `service`
    pub kind: String,
    /// `supported` or `unsupported` today
    pub support: String,
    pub end_of_support: Option<NaiveDate>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct UpdatePolicyView {
    #[serde(flatten)]
    pub policy: UpdatePolicyDoc,
    /// `built-in`, `file` or `store`
    pub source: String,
    pub releases: Vec<PolicyRelease>,
}

impl Services {
    /// The policy in force and where it comes from.
    pub(crate) fn update_policy_in_force(&self, db: &Db) -> Result<(UpdatePolicy, &'static str)> {
        if let Some(path) = &self.updates.policy_file {
            let mut cache = self
                .updates
                .file_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match std::fs::read_to_string(path) {
                Ok(text) if cache.as_ref().map(|(t, _)| t) != Some(&text) => {
                    match UpdatePolicy::from_toml(&text) {
                        Ok(p) => {
                            tracing::info!(file = %path.display(), "reloaded the update policy");
                            *cache = Some((text, p));
                        }
                        Err(e) => tracing::error!(
                            file = %path.display(), error = %e,
                            "the update policy file is not valid; keeping the last good policy"
                        ),
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::error!(
                    file = %path.display(), error = %e,
                    "cannot read the update policy file; keeping the last good policy"
                ),
            }
            if let Some((_, p)) = cache.as_ref() {
                return Ok((p.clone(), "file"));
            }
        }
        if let Some((raw, _, _)) = db.update_policy()? {
            let p: UpdatePolicy = serde_json::from_str(&raw).map_err(|e| {
                ServiceError::internal(format!("the stored update policy is unreadable: {e}"))
            })?;
            return Ok((p, "store"));
        }
        Ok((UpdatePolicy::default(), "built-in"))
    }

    fn policy_view(&self, p: UpdatePolicy, source: &str) -> UpdatePolicyView {
        let today = self.now().date_naive();
        let releases = self
            .catalog
            .releases()
            .iter()
            .map(|r| PolicyRelease {
                version: r.version.to_string(),
                kind: kind_word(r.kind).into(),
                support: if rules::release_supported(&self.catalog, &p, r, today) {
                    "supported".into()
                } else {
                    "unsupported".into()
                },
                end_of_support: rules::end_of_support(&self.catalog, &r.version),
            })
            .collect();
        UpdatePolicyView {
            policy: p.into(),
            source: source.into(),
            releases,
        }
    }

    pub fn update_policy(&self, actor: &Actor) -> Result<UpdatePolicyView> {
        authorize(actor.role, Action::ViewUpdates)?;
        let (p, source) = self.store.read(|db| self.update_policy_in_force(db))?;
        Ok(self.policy_view(p, source))
    }

    /// Replaces the policy (System Administrators). Refused while a policy file is
    /// configured: the file is then the one place the policy lives.
    pub fn set_update_policy(
        &self,
        actor: &Actor,
        doc: UpdatePolicyDoc,
    ) -> Result<UpdatePolicyView> {
        authorize(actor.role, Action::ManageUpdatePolicy)?;
        if let Some(path) = &self.updates.policy_file {
            return Err(ServiceError::conflict(
                "policy_from_file",
                format!(
                    "the update policy comes from {}; edit that file (it is reloaded when it changes)",
                    path.display()
                ),
            ));
        }
        let policy: UpdatePolicy = doc.into();
        policy
            .check()
            .map_err(|e| ServiceError::invalid("invalid_policy", e.to_string()))?;
        let now = self.now();
        self.store.write(|db| {
            let before = self.update_policy_in_force(db)?.0;
            let raw = serde_json::to_string(&policy)
                .map_err(|e| ServiceError::internal(e.to_string()))?;
            db.set_update_policy(&raw, now, &actor.username)?;
            db.audit(
                &audit_entry(
                    actor,
                    "update.policy",
                    "update-policy",
                    json!({"before": before, "after": policy}),
                ),
                now,
            )?;
            Ok::<_, ServiceError>(())
        })?;
        Ok(self.policy_view(policy, "store"))
    }
}
