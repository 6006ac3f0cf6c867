//! Work items (seed 002): database refreshes from a source instance into a sandbox,
//! requested ahead of a downtime window, accepted, run at the window's start and tracked.

use super::{JobHandlers, Result, Services};
use crate::config::{Config, ConfigError};

/// Work item settings from the configuration.
#[derive(Debug, Clone)]
pub struct WorkItemSettings {
    /// Minimum time between a request and its downtime window.
    pub lead_time: chrono::Duration,
    /// Accept valid requests automatically.
    pub auto_accept: bool,
    /// How long the safety backup of a refresh target is kept.
    pub safety_backup_retention: chrono::Duration,
    /// Post-refresh scripts directory; none: the built-in sample.
    pub scripts_dir: Option<std::path::PathBuf>,
}

impl Default for WorkItemSettings {
    fn default() -> Self {
        Self {
            lead_time: chrono::Duration::hours(24),
            auto_accept: true,
            safety_backup_retention: chrono::Duration::days(7),
            scripts_dir: None,
        }
    }
}

/// Checks the work item settings of `c`.
pub fn settings(c: &Config) -> Result<WorkItemSettings, ConfigError> {
    steward_core::backup::check_retention_days(c.refresh_safety_backup_days)
        .map_err(|e| ConfigError::new(format!("refresh_safety_backup_days: {e}")))?;
    Ok(WorkItemSettings {
        lead_time: chrono::Duration::hours(c.refresh_lead_hours.into()),
        auto_accept: c.refresh_auto_accept,
        safety_backup_retention: chrono::Duration::days(c.refresh_safety_backup_days.into()),
        scripts_dir: c.post_refresh_scripts_dir.clone(),
    })
}

/// Registers the work item jobs.
pub fn register(_handlers: &mut JobHandlers) {}

impl Services {
    /// Called once a minute by the scheduler: starts accepted work items whose window opened.
    pub fn tick_workitems(&self) -> Result<()> {
        Ok(())
    }
}
