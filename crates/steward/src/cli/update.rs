//! `steward update ...`: command line of release updates.

use clap::{ArgGroup, Args, Subcommand};

use super::JsonFlag;

/// How windows, times, approval and mandatory updates work: the end of `steward update
/// --help`, which the commands' help refers to.
pub const UPDATE_ABOUT: &str = "\
Windows. An update is scheduled with a preferred and an alternate window. Each starts at the
time given and lasts the server's update window (12 hours unless the operator set
update_window_hours). The alternate window must not overlap the preferred one. If the update
fails in its preferred window, the instance is left exactly as it was and the update moves to
the alternate window; if that fails too, it waits for an administrator to reschedule it.

Times. START is either a moment with its offset, e.g. 2027-01-10T22:00:00+01:00, or a local
time YYYY-MM-DDTHH:MM read in --time-zone (an IANA name such as Europe/Paris; default UTC).
Steward stores and answers in UTC; `show --time-zone` also prints the windows in your zone.

Approval. A major update runs only once a System Administrator approves it (`approve`);
Delegated Admins may schedule, reschedule, cancel and rehearse but not approve or withdraw an
approval. Service updates and
mandatory updates need no approval. Approval can be withdrawn and the update rescheduled any
time before it starts; once it is \"Update in progress\" both are refused.

Mandatory. Under the update policy (`steward update policy`), an instance too many major
releases behind (2 by default) or on a release past its end of support gets a mandatory
update, scheduled by Steward without approval. It can be rescheduled but not cancelled.

Stages. Queued (Not Started) → Backup (a pre-update backup) → Restore (into a staging copy) →
Database Upgrade (on the staging copy) → Swap (the copy replaces the database) → Updated
successfully. The instance is unavailable from Backup until the swap; any failure leaves it
as it was.";

/// The windows of `schedule` and `reschedule`.
#[derive(Debug, Args)]
pub struct TimeZoneArg {
    /// The IANA time zone local START times are read in, e.g. `Europe/Paris` or
    /// `America/New_York`. Times given with an offset ignore it. [default: UTC]
    #[arg(
        long,
        value_name = "TZ",
        env = "STEWARD_TIME_ZONE",
        hide_env_values = true
    )]
    pub time_zone: Option<String>,
}

#[derive(Debug, Subcommand)]
#[command(after_long_help = UPDATE_ABOUT)]
pub enum UpdateCommand {
    /// The updates available to an instance: its release and support status, "Update is
    /// Available" with the eligible target releases, a mandatory update if any, and its
    /// current update.
    List {
        /// The instance.
        instance: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Schedule an update of an instance to a target release, with a preferred and an
    /// alternate window (see `steward update --help` for windows and times).
    ///
    /// A major update then waits for a System Administrator's approval (`steward update
    /// approve`); a service update is queued at once. Example:
    ///
    ///   steward update schedule crm-prod --target 9.0 --preferred 2027-01-10T22:00 \
    ///     --alternate 2027-01-17T22:00 --time-zone Europe/Paris
    Schedule {
        /// The instance.
        instance: String,
        /// The release to update to, one of the eligible targets `steward update list`
        /// shows. Skipping releases (8.1 → 9.0) runs every migration in between, in order.
        #[arg(long, value_name = "VERSION")]
        target: String,
        /// When the preferred window starts: 2027-01-10T22:00 (in --time-zone) or
        /// 2027-01-10T22:00:00+01:00. It lasts the update window (12 h by default).
        #[arg(long, value_name = "START")]
        preferred: String,
        /// When the alternate window starts, used if the update fails or cannot run in the
        /// preferred one. Must not overlap the preferred window.
        #[arg(long, value_name = "START")]
        alternate: String,
        #[command(flatten)]
        zone: TimeZoneArg,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Approve an instance's scheduled update (System Administrators only). The update then
    /// is "Queued (Not Started)" and starts at its preferred window.
    Approve {
        /// The instance.
        instance: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Withdraw the approval of an instance's update before it starts (System
    /// Administrators only); it waits for approval again.
    Withdraw {
        /// The instance.
        instance: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change an instance's update before it starts: new windows, a new target release, or
    /// both. What is not given stays as it is.
    ///
    /// Refused once the update is in progress. Rescheduling an update that waits for an
    /// administrator (both windows failed or were missed) queues it again.
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["target", "preferred", "alternate"])))]
    Reschedule {
        /// The instance.
        instance: String,
        /// The new target release.
        #[arg(long, value_name = "VERSION")]
        target: Option<String>,
        /// The new start of the preferred window.
        #[arg(long, value_name = "START")]
        preferred: Option<String>,
        /// The new start of the alternate window.
        #[arg(long, value_name = "START")]
        alternate: Option<String>,
        #[command(flatten)]
        zone: TimeZoneArg,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Cancel an instance's update before it starts. Mandatory updates cannot be cancelled
    /// (reschedule them instead).
    ///
    /// Asks for confirmation on the terminal. Without a terminal (in scripts), pass --yes;
    /// without it the command refuses (exit code 2) and cancels nothing.
    Cancel {
        /// The instance.
        instance: String,
        /// Cancel without asking. Required when standard input is not a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Update an instance now instead of waiting for a window, for teams that do not want to
    /// wait. Without --target, the update already scheduled (or the latest eligible release).
    ///
    /// A sandbox is updated without questions. A production instance asks for confirmation
    /// on the terminal, because it is unavailable from the backup until the swap; in scripts
    /// pass --yes, or the command refuses (exit code 2) and starts nothing.
    Now {
        /// The instance.
        instance: String,
        /// The release to update to.
        #[arg(long, value_name = "VERSION")]
        target: Option<String>,
        /// Confirm an update of a production instance without asking.
        #[arg(long, short = 'y')]
        yes: bool,
        /// Wait until the update ends, showing its stage on stderr; exit with 0 if it
        /// succeeded and 1 if it failed.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Rehearse an update: copy the instance into a throwaway sandbox and run the upgrade
    /// there. The result (duration, problems found) is attached to the instance's update so
    /// the approver sees it. Without --target, the scheduled update's target (or the latest
    /// eligible release).
    Rehearse {
        /// The instance (normally a production instance).
        instance: String,
        /// The release to rehearse.
        #[arg(long, value_name = "VERSION")]
        target: Option<String>,
        /// Wait until the rehearsal ends; exit with 1 if it failed.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show an instance's current update (or its latest one): status, windows, approval,
    /// stages with timings, rehearsals and the timeline of everything that happened to it.
    Show {
        /// The instance.
        instance: String,
        /// Another update of the instance, by id (from `steward update history`).
        #[arg(long, value_name = "ID")]
        id: Option<i64>,
        /// Also print the times in this IANA time zone, e.g. `Europe/Paris`.
        #[arg(
            long,
            value_name = "TZ",
            env = "STEWARD_TIME_ZONE",
            hide_env_values = true
        )]
        time_zone: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Updates newest first, of one instance or of all of them.
    History {
        /// Only this instance's updates.
        instance: Option<String>,
        /// Only updates with this status: scheduled, queued, in_progress, succeeded, failed,
        /// waiting or cancelled.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// The update policy: which major releases are supported, when an update becomes
    /// mandatory, and whether service updates apply on their own. `steward update policy set`
    /// changes it (System Administrators).
    #[command(args_conflicts_with_subcommands = true)]
    Policy {
        #[command(subcommand)]
        command: Option<PolicyCommand>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Change the update policy (System Administrators). Give at least one setting; what is
    /// not given stays as it is. The change is stored by the server and audited.
    #[command(group(ArgGroup::new("setting").required(true).multiple(true).args(["supported_majors", "mandatory_when_behind", "service_updates_automatic", "maintenance_window_start", "mandatory_lead_days"])))]
    Set {
        /// How many of the latest major releases are supported (2: the latest, n, and n-1).
        #[arg(long, value_name = "N")]
        supported_majors: Option<u32>,
        /// An instance this many major releases behind the latest gets a mandatory update.
        #[arg(long, value_name = "N")]
        mandatory_when_behind: Option<u32>,
        /// Whether service releases are applied in the next window without approval.
        #[arg(long, value_name = "BOOL")]
        service_updates_automatic: Option<bool>,
        /// When the daily maintenance window opens, `HH:MM` in UTC; automatic service updates
        /// use the next one.
        #[arg(long, value_name = "HH:MM")]
        maintenance_window_start: Option<String>,
        /// How many days ahead Steward schedules a mandatory update (1–365).
        #[arg(long, value_name = "DAYS")]
        mandatory_lead_days: Option<u32>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// The settings `steward update policy set` changes (`None`: keep as it is).
pub struct PolicySettings {
    pub supported_majors: Option<u32>,
    pub mandatory_when_behind: Option<u32>,
    pub service_updates_automatic: Option<bool>,
    pub maintenance_window_start: Option<String>,
    pub mandatory_lead_days: Option<u32>,
    pub json: JsonFlag,
}

impl PolicyCommand {
    pub fn into_settings(self) -> PolicySettings {
        match self {
            Self::Set {
                supported_majors,
                mandatory_when_behind,
                service_updates_automatic,
                maintenance_window_start,
                mandatory_lead_days,
                json,
            } => PolicySettings {
                supported_majors,
                mandatory_when_behind,
                service_updates_automatic,
                maintenance_window_start,
                mandatory_lead_days,
                json,
            },
        }
    }
}
