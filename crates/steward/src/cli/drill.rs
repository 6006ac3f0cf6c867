//! `steward drill ...`: command line of restore drills.

use clap::{ArgGroup, Subcommand};

use super::{JsonFlag, WaitFlag};

/// What `steward drill --help` says after the list of commands.
const DRILL_HELP: &str = "\
A restore drill proves a backup restorable: Steward restores it into a throwaway file beside
the backup repository (never into an instance), checks the whole-file hash, runs PRAGMA
integrity_check, compares the rows of every table with those counted when the backup was
taken, records the result and the duration, and deletes the file.

The server drills each instance's newest completed backup on its restore_drill_schedule
(`daily` by default, each instance at its own fixed time of day; `weekly`, `every N hours` or
`off`). Drills use one core and never delay a user's restore, refresh or update: a drill
running when one starts gives way and runs again afterwards.

A failed drill raises the restore_drill_failed notification (in-product alert, email and
webhook by default; see `steward notify schedule list`).

States: queued, running, passed, failed, skipped (the backup expired before its drill ran).";

#[derive(Debug, Subcommand)]
#[command(after_help = DRILL_HELP)]
pub enum DrillCommand {
    /// The fleet view: instances whose last drill failed, is older than N days, or that were
    /// never drilled. With --instance, that instance's drills instead, newest first.
    ///
    /// The server answers the fleet view in pages (of up to 1,000); the command reads them all.
    #[command(group(ArgGroup::new("fleet").multiple(true).args(["failed", "stale_days", "filter"]).conflicts_with("instance")))]
    List {
        /// Only instances whose last drill failed.
        #[arg(long)]
        failed: bool,
        /// Only instances whose name contains this (case-insensitive).
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        /// A passed drill older than this many days counts as stale (1–3650). [default:
        /// twice the schedule's period: 2 for daily]
        #[arg(long, value_name = "N")]
        stale_days: Option<i64>,
        /// List this instance's drills (newest first) instead of the fleet view.
        #[arg(long, value_name = "INSTANCE")]
        instance: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Drill an instance's backup now: its newest completed backup, or --backup.
    ///
    /// The drill is queued for the server's drill worker and the command returns at once
    /// with its id, unless --wait is given (then it shows the drill's progress and exits
    /// with 1 if the drill failed). Viewers cannot run drills.
    Run {
        /// The instance whose backup is drilled.
        #[arg(long, value_name = "INSTANCE")]
        instance: String,
        /// The backup to drill (one of the instance's completed backups, as `steward backup
        /// list` shows them). [default: the newest completed one]
        #[arg(long, value_name = "ID")]
        backup: Option<i64>,
        #[command(flatten)]
        wait: WaitFlag,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one drill: its backup, state and progress, duration, what was checked and every
    /// problem found.
    Show {
        /// The drill's id, as `steward drill run` or `steward drill list --instance` shows it.
        id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}
