//! Every permission decision Steward makes. The API, the admin center, the CLI (through the
//! API) and the scheduler ask [`authorize`]; no handler or template decides on its own.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::instance::UnknownValue;

/// A user's security role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Full control, including users and approvals.
    SystemAdministrator,
    /// Manages instances and their data, but not users.
    DelegatedAdmin,
    /// Reads everything an operator may see; changes nothing but their own API tokens.
    Viewer,
}

impl Role {
    pub const ALL: &'static [Role] = &[
        Role::SystemAdministrator,
        Role::DelegatedAdmin,
        Role::Viewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::SystemAdministrator => "system_administrator",
            Role::DelegatedAdmin => "delegated_admin",
            Role::Viewer => "viewer",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Role::SystemAdministrator => "System Administrator",
            Role::DelegatedAdmin => "Delegated Admin",
            Role::Viewer => "Viewer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "the role",
                allowed: "system_administrator delegated_admin viewer",
                got: s.to_owned(),
            })
    }
}

/// Something a user asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    ViewInstances,
    CreateInstance,
    SwitchInstanceType,
    DeleteInstance,
    ViewReleases,
    ViewAudit,
    ViewUsers,
    ManageUsers,
    /// Create, list and revoke one's own API tokens.
    ManageOwnTokens,
    /// List and revoke other users' API tokens.
    ManageAllTokens,
    ViewBackups,
    CreateBackup,
    EditBackup,
    DeleteBackup,
    RestoreBackup,
    /// Start a verify of backups (re-check their stored data).
    VerifyBackups,
    /// Run a restore drill now (a test restore into a throwaway file).
    RunDrill,
    ViewJobs,
    /// See the communications schedule, recipients, webhooks and the delivery log.
    ViewNotifications,
    /// Change the schedule, per-instance recipients, webhooks and users' email addresses.
    ManageNotifications,
    /// See available updates, scheduled updates, their history and the update policy.
    ViewUpdates,
    /// Schedule, reschedule or cancel an update, run "update now", start a rehearsal.
    ScheduleUpdate,
    /// Approve an update or withdraw an approval (System Administrators only, as in the seed).
    ApproveUpdate,
    /// Change the update policy.
    ManageUpdatePolicy,
    /// See work items.
    ViewWorkItems,
    /// Request, reschedule and cancel database refreshes.
    RequestRefresh,
    /// Accept a submitted work item (when acceptance is not automatic).
    AcceptWorkItem,
    /// Expire backups past their retention and prune unreferenced backup data now.
    RunMaintenance,
    /// See the Steward nodes, their health, instance counts and running jobs.
    ViewNodes,
}

/// Lists every [`Action`] in [`Action::ALL`]; the match makes a new variant that is not
/// listed a compile error, so the list cannot fall behind the enum.
macro_rules! all_actions {
    ($($variant:ident),+ $(,)?) => {
        impl Action {
            /// Every action, in declaration order.
            pub const ALL: &'static [Action] = &[$(Action::$variant),+];
        }
        const _: fn(Action) = |a| match a {
            $(Action::$variant)|+ => {}
        };
    };
}

all_actions!(
    ViewInstances,
    CreateInstance,
    SwitchInstanceType,
    DeleteInstance,
    ViewReleases,
    ViewAudit,
    ViewUsers,
    ManageUsers,
    ManageOwnTokens,
    ManageAllTokens,
    ViewBackups,
    CreateBackup,
    EditBackup,
    DeleteBackup,
    RestoreBackup,
    VerifyBackups,
    RunDrill,
    ViewJobs,
    ViewNotifications,
    ManageNotifications,
    ViewUpdates,
    ScheduleUpdate,
    ApproveUpdate,
    ManageUpdatePolicy,
    ViewWorkItems,
    RequestRefresh,
    AcceptWorkItem,
    RunMaintenance,
    ViewNodes,
);

impl Action {
    fn describe(self) -> &'static str {
        match self {
            Action::ViewInstances => "view instances",
            Action::CreateInstance => "create instances",
            Action::SwitchInstanceType => "switch an instance's type",
            Action::DeleteInstance => "delete instances",
            Action::ViewReleases => "view the release catalog",
            Action::ViewAudit => "view the audit log",
            Action::ViewUsers => "view users",
            Action::ManageUsers => "manage users",
            Action::ManageOwnTokens => "manage API tokens",
            Action::ManageAllTokens => "manage other users' API tokens",
            Action::ViewBackups => "view backups",
            Action::CreateBackup => "create backups",
            Action::EditBackup => "edit backups",
            Action::DeleteBackup => "delete backups",
            Action::RestoreBackup => "restore backups",
            Action::VerifyBackups => "verify backups",
            Action::RunDrill => "run restore drills",
            Action::ViewJobs => "view jobs",
            Action::ViewNotifications => "view notification settings",
            Action::ManageNotifications => "change notification settings",
            Action::ViewUpdates => "view updates",
            Action::ScheduleUpdate => "schedule, reschedule, cancel or rehearse updates",
            Action::ApproveUpdate => "approve updates",
            Action::ManageUpdatePolicy => "change the update policy",
            Action::ViewWorkItems => "view work items",
            Action::RequestRefresh => "request, reschedule or cancel database refreshes",
            Action::AcceptWorkItem => "accept work items",
            Action::RunMaintenance => "run backup maintenance (expire and prune)",
            Action::ViewNodes => "view the Steward nodes",
        }
    }
}

/// A refused permission, with a message that names the role and the action.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {} may not {}", role.label(), action.describe())]
pub struct Denied {
    pub role: Role,
    pub action: Action,
}

/// The one place that decides whether `role` may perform `action`.
pub fn authorize(role: Role, action: Action) -> Result<(), Denied> {
    use Action::*;
    let allowed = match role {
        Role::SystemAdministrator => true,
        Role::DelegatedAdmin => !matches!(
            action,
            ManageUsers
                | ManageAllTokens
                | ManageNotifications
                | ApproveUpdate
                | ManageUpdatePolicy
                | AcceptWorkItem
                | RunMaintenance
        ),
        Role::Viewer => matches!(
            action,
            ViewInstances
                | ViewReleases
                | ViewAudit
                | ViewBackups
                | ViewJobs
                | ViewNotifications
                | ViewUpdates
                | ViewWorkItems
                | ViewNodes
                | ManageOwnTokens
        ),
    };
    if allowed {
        Ok(())
    } else {
        Err(Denied { role, action })
    }
}

/// Limits on failed password sign-ins (the admin center's form and the API's token login):
/// `account_failures` failures to one account, or `address_failures` from one client address,
/// within `window` lock that account or address against password sign-in for `lockout` from
/// the failure that reached the limit. A limit of 0 is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignInLimits {
    pub account_failures: u32,
    pub address_failures: u32,
    pub window: chrono::Duration,
    pub lockout: chrono::Duration,
}

impl Default for SignInLimits {
    /// 5 failures per account or 20 per address within 15 minutes lock for 15 minutes.
    fn default() -> Self {
        Self {
            account_failures: 5,
            address_failures: 20,
            window: chrono::Duration::minutes(15),
            lockout: chrono::Duration::minutes(15),
        }
    }
}

/// What a sign-in limit counts: failures to one account, or from one client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignInScope {
    Account,
    Address,
}

impl SignInScope {
    pub fn as_str(self) -> &'static str {
        match self {
            SignInScope::Account => "account",
            SignInScope::Address => "address",
        }
    }
}

impl SignInLimits {
    /// Whether `failures` failed sign-ins within the window lock `scope`.
    pub fn locks(&self, scope: SignInScope, failures: u32) -> bool {
        let limit = match scope {
            SignInScope::Account => self.account_failures,
            SignInScope::Address => self.address_failures,
        };
        limit > 0 && failures >= limit
    }
}

/// A sign-in refused because an account or a client address is locked until `until`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "too many failed sign-ins {} {key}; try again in {}",
    if *scope == SignInScope::Account { "for" } else { "from" },
    wait_words(*until - *now)
)]
pub struct SignInLocked {
    pub scope: SignInScope,
    /// The username or client address.
    pub key: String,
    pub until: chrono::DateTime<chrono::Utc>,
    pub now: chrono::DateTime<chrono::Utc>,
}

/// `4 minutes`, `1 minute`, `40 seconds`: a wait rounded up, so it is never too short.
fn wait_words(wait: chrono::Duration) -> String {
    let secs = wait.num_seconds().max(1);
    if secs < 60 {
        return format!("{secs} second{}", if secs == 1 { "" } else { "s" });
    }
    let minutes = (secs + 59) / 60;
    format!("{minutes} minute{}", if minutes == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    const CHANGES: &[Action] = &[
        CreateInstance,
        SwitchInstanceType,
        DeleteInstance,
        ManageUsers,
        ManageAllTokens,
        CreateBackup,
        EditBackup,
        DeleteBackup,
        RestoreBackup,
        VerifyBackups,
        ManageNotifications,
        ScheduleUpdate,
        ApproveUpdate,
        ManageUpdatePolicy,
        RequestRefresh,
        AcceptWorkItem,
        RunMaintenance,
    ];

    #[test]
    fn system_administrators_may_do_everything() {
        for a in CHANGES {
            assert!(authorize(Role::SystemAdministrator, *a).is_ok(), "{a:?}");
        }
    }

    #[test]
    fn delegated_admins_manage_instances_but_not_users() {
        for a in [
            CreateInstance,
            SwitchInstanceType,
            DeleteInstance,
            CreateBackup,
            EditBackup,
            DeleteBackup,
            RestoreBackup,
            VerifyBackups,
            ViewUsers,
        ] {
            assert!(authorize(Role::DelegatedAdmin, a).is_ok(), "{a:?}");
        }
        assert!(authorize(Role::DelegatedAdmin, ManageUsers).is_err());
        assert!(authorize(Role::DelegatedAdmin, ManageAllTokens).is_err());
        assert!(authorize(Role::DelegatedAdmin, ManageNotifications).is_err());
        assert!(authorize(Role::DelegatedAdmin, ViewNotifications).is_ok());
        assert!(authorize(Role::DelegatedAdmin, ScheduleUpdate).is_ok());
        assert!(authorize(Role::DelegatedAdmin, RequestRefresh).is_ok());
        let refused = authorize(Role::DelegatedAdmin, ApproveUpdate).unwrap_err();
        assert_eq!(
            refused.to_string(),
            "a Delegated Admin may not approve updates"
        );
        assert!(authorize(Role::DelegatedAdmin, ManageUpdatePolicy).is_err());
        assert!(authorize(Role::DelegatedAdmin, AcceptWorkItem).is_err());
    }

    #[test]
    fn viewers_change_nothing() {
        for a in CHANGES {
            let err = authorize(Role::Viewer, *a).unwrap_err();
            assert_eq!(err.role, Role::Viewer);
        }
        assert!(authorize(Role::Viewer, ViewInstances).is_ok());
        assert!(authorize(Role::Viewer, ViewBackups).is_ok());
        assert!(authorize(Role::Viewer, ViewUsers).is_err());
        assert!(authorize(Role::Viewer, ManageOwnTokens).is_ok());
    }

    #[test]
    fn every_role_may_view_the_nodes() {
        for role in [
            Role::SystemAdministrator,
            Role::DelegatedAdmin,
            Role::Viewer,
        ] {
            assert!(authorize(role, ViewNodes).is_ok(), "{role:?}");
        }
    }

    #[test]
    fn refusals_name_role_and_action() {
        let msg = authorize(Role::Viewer, CreateInstance)
            .unwrap_err()
            .to_string();
        assert_eq!(msg, "a Viewer may not create instances");
    }

    #[test]
    fn every_refusal_names_its_own_action() {
        let mut seen = std::collections::HashSet::new();
        for a in Action::ALL {
            let what = a.describe();
            assert!(seen.insert(what), "{a:?} shares its description {what:?}");
            let msg = Denied {
                role: Role::Viewer,
                action: *a,
            }
            .to_string();
            assert_eq!(msg, format!("a Viewer may not {what}"));
        }
        // Pruning is its own action, not "manage users".
        assert_eq!(
            authorize(Role::DelegatedAdmin, RunMaintenance)
                .unwrap_err()
                .to_string(),
            "a Delegated Admin may not run backup maintenance (expire and prune)"
        );
    }

    #[test]
    fn sign_in_limits_lock_at_the_limit_and_say_how_long() {
        let limits = SignInLimits::default();
        assert!(!limits.locks(SignInScope::Account, 4));
        assert!(limits.locks(SignInScope::Account, 5));
        assert!(!limits.locks(SignInScope::Address, 19));
        assert!(limits.locks(SignInScope::Address, 20));
        let off = SignInLimits {
            account_failures: 0,
            ..limits
        };
        assert!(!off.locks(SignInScope::Account, 1000));
        let now = chrono::DateTime::UNIX_EPOCH;
        let locked = |scope, secs| SignInLocked {
            scope,
            key: "alice".into(),
            until: now + chrono::Duration::seconds(secs),
            now,
        };
        assert_eq!(
            locked(SignInScope::Account, 15 * 60).to_string(),
            "too many failed sign-ins for alice; try again in 15 minutes"
        );
        assert!(
            locked(SignInScope::Account, 3 * 60 + 1)
                .to_string()
                .ends_with("in 4 minutes")
        );
        assert!(
            locked(SignInScope::Account, 60)
                .to_string()
                .ends_with("in 1 minute")
        );
        assert!(
            locked(SignInScope::Address, 40)
                .to_string()
                .ends_with("from alice; try again in 40 seconds")
        );
        assert!(
            locked(SignInScope::Address, 0)
                .to_string()
                .ends_with("in 1 second")
        );
    }

    #[test]
    fn roles_parse() {
        assert_eq!(
            "delegated_admin".parse::<Role>().unwrap(),
            Role::DelegatedAdmin
        );
        assert!("admin".parse::<Role>().is_err());
    }
}
