//! `steward workitem ...`: command line of work items (database refreshes).

use clap::{ArgGroup, Args, Subcommand};

use super::JsonFlag;

/// What `steward workitem --help` says after the list of commands.
const WORKITEM_HELP: &str = "\
A work item is a database refresh: the database of a source instance, as of a point in time
(the latest, or a moment: `steward workitem restore-points SOURCE`), copied into a sandbox
target during a downtime window.

A moment (--at TIME) is copied exactly: when continuous capture covers the source, the
refresh copies the source as it was committed at the last commit at or before TIME. TIME must
lie in the source's restorable range; a time in a gap, before retention, outside the range or
in the future is refused with an error naming the range. Only for a source continuous
capture has never covered, the refresh copies the newest backup at or before TIME instead.

Lead time: a request must be made at least 24 hours before its window starts (the server's
refresh_lead_hours may set another lead time).

Statuses:
  Submitted         requested; waits for a System Administrator to accept it
                    (`steward workitem accept ID`) unless requests are accepted automatically
  Request accepted  will run when its window starts
  In progress       running: the target is unavailable
  Succeeded         the target has the source's database and is available again
  Failed            the target kept its previous database; the error says why
  Cancelled         cancelled before it started
Reschedule and cancel are possible until the item is In progress.

What a refresh does to the target (you must acknowledge it with --acknowledge):
  - the target's database is erased and cannot be recovered from the refresh (Steward takes
    a safety backup of the target first and keeps it for a while);
  - the target is unavailable until the refresh completes;
  - the target's documents folder is not touched.
Production instances are never refreshed: switch the target to sandbox first.

TIME is RFC 3339 (2027-01-10T22:00:00+01:00) or `YYYY-MM-DD HH:MM`, read in UTC unless
--time-zone names another zone (an IANA name such as Europe/Paris).";

#[derive(Debug, Subcommand)]
#[command(after_help = WORKITEM_HELP)]
pub enum WorkitemCommand {
    /// Work items, newest first: id, kind, source, target, point in time, window, status,
    /// requester.
    List {
        /// Only items in this status: submitted, accepted, in_progress, succeeded, failed or
        /// cancelled.
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Only items whose source or target is this instance.
        #[arg(long, value_name = "INSTANCE")]
        instance: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one work item: its status, point in time, window, downtime, safety backup,
    /// post-refresh scripts and history.
    Show {
        /// The work item's id, as `steward workitem list` shows it.
        id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Request a database refresh of a sandbox from a source instance.
    ///
    /// The target's database is erased and replaced by the source's as of --at; it cannot be
    /// recovered from the refresh. The target is unavailable until the refresh completes.
    /// Its documents folder is not touched. The window must start at least the lead time (24
    /// hours by default) from now. Without --acknowledge the command refuses (exit code 2).
    Refresh {
        /// The instance whose database is copied (any type).
        #[arg(long, value_name = "INSTANCE")]
        source: String,
        /// The sandbox instance that receives it. Production targets are refused.
        #[arg(long, value_name = "INSTANCE")]
        target: String,
        /// The moment of the source to copy: `latest` (a fresh copy at the window's start) or
        /// a TIME. When continuous capture covers the source, exactly its state at TIME (the
        /// last commit at or before it); TIME must be in its restorable range (`steward
        /// workitem restore-points SOURCE`), else refused naming the range. A source never
        /// captured: the newest backup at or before TIME. [default: latest]
        #[arg(long, value_name = "TIME|latest")]
        at: Option<String>,
        /// When the downtime window starts (TIME), at least the lead time from now.
        #[arg(long, value_name = "TIME")]
        window_start: String,
        #[command(flatten)]
        zone: TimeZoneFlag,
        /// Acknowledge the consequences: the target's database is erased and cannot be
        /// recovered from the refresh, the target is unavailable until it completes, and its
        /// documents folder is not touched. Required.
        #[arg(long)]
        acknowledge: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change a work item's window start or point in time (at least one), until it is In
    /// progress. A new window must start at least the lead time from now.
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["window_start", "at"])))]
    Reschedule {
        /// The work item's id.
        id: i64,
        /// The new start of the downtime window (TIME).
        #[arg(long, value_name = "TIME")]
        window_start: Option<String>,
        /// The new moment of the source to copy: `latest` or a TIME.
        #[arg(long, value_name = "TIME|latest")]
        at: Option<String>,
        #[command(flatten)]
        zone: TimeZoneFlag,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Cancel a work item that has not started; it then never runs.
    ///
    /// Asks for confirmation on the terminal. Without a terminal (in scripts), pass --yes;
    /// without it the command refuses (exit code 2) and cancels nothing.
    Cancel {
        /// The work item's id.
        id: i64,
        /// Cancel without asking. Required when standard input is not a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Accept a Submitted work item so that it runs at its window (System Administrators;
    /// only needed when the server does not accept requests automatically).
    Accept {
        /// The work item's id.
        id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// The moments an instance can be refreshed from, besides the latest: the range or
    /// ranges continuous capture covers, with their gaps (any moment in them is copied
    /// exactly), or, for an instance capture has never covered, its restore points
    /// (completed backups within retention). --json gives the range as `range`.
    RestorePoints {
        /// The source instance.
        instance: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// The zone local TIMEs are read in.
#[derive(Debug, Args)]
pub struct TimeZoneFlag {
    /// The time zone of TIMEs written as `YYYY-MM-DD HH:MM` (an IANA name such as
    /// Europe/Paris). [default: UTC]
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
}
