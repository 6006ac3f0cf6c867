//! Work item rules: what a valid database refresh request is, and the statuses it moves
//! through (seed 002). Submitted → Request accepted → In progress → Succeeded | Failed;
//! Cancelled from Submitted or Request accepted. Reschedule and cancel only before the work
//! starts. Nothing here knows HTTP, SQL or files.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::display_time;
use crate::instance::{InstanceType, UnknownValue};

/// The only kind of work item so far.
pub const REFRESH: &str = "refresh";

/// Where a work item is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkItemStatus {
    Submitted,
    Accepted,
    InProgress,
    Succeeded,
    Failed,
    Cancelled,
}

impl WorkItemStatus {
    pub const ALL: &'static [WorkItemStatus] = &[
        WorkItemStatus::Submitted,
        WorkItemStatus::Accepted,
        WorkItemStatus::InProgress,
        WorkItemStatus::Succeeded,
        WorkItemStatus::Failed,
        WorkItemStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WorkItemStatus::Submitted => "submitted",
            WorkItemStatus::Accepted => "accepted",
            WorkItemStatus::InProgress => "in_progress",
            WorkItemStatus::Succeeded => "succeeded",
            WorkItemStatus::Failed => "failed",
            WorkItemStatus::Cancelled => "cancelled",
        }
    }

    /// What the seed calls the status.
    pub fn label(self) -> &'static str {
        match self {
            WorkItemStatus::Submitted => "Submitted",
            WorkItemStatus::Accepted => "Request accepted",
            WorkItemStatus::InProgress => "In progress",
            WorkItemStatus::Succeeded => "Succeeded",
            WorkItemStatus::Failed => "Failed",
            WorkItemStatus::Cancelled => "Cancelled",
        }
    }

    /// Succeeded, Failed or Cancelled: nothing more happens to the item.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            WorkItemStatus::Succeeded | WorkItemStatus::Failed | WorkItemStatus::Cancelled
        )
    }

    /// Whether the lifecycle allows moving from `self` to `to`.
    pub fn can_become(self, to: WorkItemStatus) -> bool {
        use WorkItemStatus::*;
        matches!(
            (self, to),
            (Submitted, Accepted)
                | (Submitted, Cancelled)
                | (Accepted, Submitted) // rescheduled when an administrator accepts each request
                | (Accepted, InProgress)
                | (Accepted, Cancelled)
                | (InProgress, Succeeded)
                | (InProgress, Failed)
        )
    }

    /// Whether reschedule and cancel are still allowed: until the work starts.
    pub fn may_change(self) -> bool {
        matches!(self, WorkItemStatus::Submitted | WorkItemStatus::Accepted)
    }

    /// Reschedule and cancel are allowed until the work starts ([`Self::may_change`]).
    pub fn check_changeable(self, id: i64) -> Result<(), RefreshRefusal> {
        match self {
            s if s.may_change() => Ok(()),
            WorkItemStatus::InProgress => Err(RefreshRefusal::Started { id }),
            s => Err(RefreshRefusal::Finished {
                id,
                status: s.label(),
            }),
        }
    }
}

impl fmt::Display for WorkItemStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WorkItemStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WorkItemStatus::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "the work item status",
                allowed: "submitted accepted in_progress succeeded failed cancelled",
                got: s.to_owned(),
            })
    }
}

/// One moment a source instance's database can be copied as: a completed, unexpired backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestorePoint {
    pub backup_id: i64,
    /// The moment the backup holds the database as of.
    pub at: DateTime<Utc>,
    /// When the backup expires (the point leaves the restore range).
    pub expires_at: DateTime<Utc>,
}

/// Why a refresh request (or a change to one) is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshRefusal {
    #[error(
        "acknowledge the consequences first: the target's database is erased and cannot be recovered from the refresh; the target is unavailable until the refresh completes; its documents folder is not touched"
    )]
    AcknowledgementRequired,
    #[error("the source and the target are both {0}; choose two different instances")]
    SameInstance(String),
    #[error(
        "{0} is a production instance; refreshes only write into sandboxes. Switch it to sandbox first"
    )]
    ProductionTarget(String),
    #[error("the window start {} is in the past (now: {})", display_time(.window), display_time(.now))]
    WindowInPast {
        window: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error(
        "the window must start at least {hours} hours after the request: the earliest allowed start is {}",
        display_time(.earliest)
    )]
    InsideLeadTime { hours: i64, earliest: DateTime<Utc> },
    #[error("{source_name} has no restore points (completed backups); choose the latest instead")]
    NoRestorePoints { source_name: String },
    #[error(
        "{} is outside {source_name}'s restore range: from {} to {}, or the latest",
        display_time(.moment),
        display_time(.earliest),
        display_time(.latest)
    )]
    OutsideRestoreRange {
        source_name: String,
        moment: DateTime<Utc>,
        earliest: DateTime<Utc>,
        latest: DateTime<Utc>,
    },
    #[error(
        "the restore point for {} (backup {backup_id}) expires at {}, before the window starts at {}; choose an earlier window or a later point in time",
        display_time(.moment),
        display_time(.expires_at),
        display_time(.window)
    )]
    PointExpiresBeforeWindow {
        moment: DateTime<Utc>,
        backup_id: i64,
        expires_at: DateTime<Utc>,
        window: DateTime<Utc>,
    },
    #[error(
        "{} leaves {source_name}'s restorable range ({retention_days} days of continuous capture) at {}, before the window starts at {}; choose a moment after {} or an earlier window",
        display_time(.moment),
        display_time(.expires_at),
        display_time(.window),
        display_time(.earliest_kept)
    )]
    MomentExpiresBeforeWindow {
        source_name: String,
        moment: DateTime<Utc>,
        retention_days: u32,
        /// When retention drops the moment.
        expires_at: DateTime<Utc>,
        window: DateTime<Utc>,
        /// The earliest moment still kept when the window starts.
        earliest_kept: DateTime<Utc>,
    },
    #[error("{}", overlap_message(.conflict, .other))]
    Overlapping {
        conflict: OverlapKind,
        other: ScheduledRefresh,
    },
    #[error("work item {id} has started; it can no longer be rescheduled or cancelled")]
    Started { id: i64 },
    #[error("work item {id} has finished ({status}); it can no longer be changed")]
    Finished { id: i64, status: &'static str },
}

impl RefreshRefusal {
    /// The stable error code (the REST contract's).
    pub fn code(&self) -> &'static str {
        match self {
            RefreshRefusal::AcknowledgementRequired => "acknowledgement_required",
            RefreshRefusal::SameInstance(_) => "same_instance",
            RefreshRefusal::ProductionTarget(_) => "production_target",
            RefreshRefusal::WindowInPast { .. } => "window_in_past",
            RefreshRefusal::InsideLeadTime { .. } => "inside_lead_time",
            RefreshRefusal::NoRestorePoints { .. }
            | RefreshRefusal::OutsideRestoreRange { .. }
            | RefreshRefusal::PointExpiresBeforeWindow { .. } => "outside_restore_range",
            RefreshRefusal::MomentExpiresBeforeWindow { .. } => "moment_before_retention",
            RefreshRefusal::Overlapping { .. } => "overlapping_operation",
            RefreshRefusal::Started { .. } => "work_item_started",
            RefreshRefusal::Finished { .. } => "work_item_finished",
        }
    }
}

/// How long a refresh's downtime window lasts: the seed expects the downtime "to be less than
/// two hours", so a refresh holds its target (and, copying the latest, its source) for two
/// hours from the window start.
pub const REFRESH_WINDOW_HOURS: i64 = 2;

/// A refresh's downtime window: `[start, start + 2 hours)`.
pub fn refresh_window(start: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    (start, start + Duration::hours(REFRESH_WINDOW_HOURS))
}

/// A refresh that is scheduled or running, as far as overlaps go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduledRefresh {
    /// The work item id (0 for a request not yet stored).
    pub id: i64,
    pub source: String,
    pub target: String,
    pub window_start: DateTime<Utc>,
    /// Copies the source as it is at window start ("the latest"), reading the live source
    /// instance; `false` for a chosen restore point or moment, which reads only the backup
    /// repository (a stored backup, or a continuous-capture chain).
    pub reads_live_source: bool,
}

/// Why two refreshes collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlapKind {
    /// Both replace the same target.
    SameTarget,
    /// The new refresh would replace the instance the other one copies live.
    TargetIsOthersSource,
    /// The new refresh would copy, live, the instance the other one replaces.
    SourceIsOthersTarget,
}

fn overlap_message(kind: &OverlapKind, other: &ScheduledRefresh) -> String {
    let (start, end) = refresh_window(other.window_start);
    let end_format = if end.date_naive() == start.date_naive() {
        "%H:%M UTC"
    } else {
        "%Y-%m-%d %H:%M UTC"
    };
    let when = format!(
        "from {} to {}",
        start.format("%Y-%m-%d %H:%M"),
        end.format(end_format)
    );
    let id = other.id;
    match kind {
        OverlapKind::SameTarget => format!(
            "{} already has a refresh from {} {when} (work item {id}), overlapping this window; pick a window outside it, or reschedule or cancel work item {id}",
            other.target, other.source
        ),
        OverlapKind::TargetIsOthersSource => format!(
            "work item {id} copies {} into {} {when}; replacing {} in an overlapping window would change what it copies. Pick a window outside it",
            other.source, other.target, other.source
        ),
        OverlapKind::SourceIsOthersTarget => format!(
            "{} is being refreshed from {} {when} (work item {id}); copying it in an overlapping window would copy a database being replaced. Pick a window outside it, or a point in time",
            other.target, other.source
        ),
    }
}

/// Two refreshes whose two-hour windows overlap may not write the same target, and neither
/// may replace an instance the other copies live (the latest; a chosen restore point reads
/// only a stored backup). Several refreshes may copy the same source at once: a refresh never
/// changes its source. `existing` are the other open (submitted, accepted, in progress)
/// refreshes; an entry with `new`'s id is the item itself (a reschedule) and ignored.
pub fn check_no_overlapping_refresh(
    new: &ScheduledRefresh,
    existing: &[ScheduledRefresh],
) -> Result<(), RefreshRefusal> {
    let (start, end) = refresh_window(new.window_start);
    for other in existing {
        if other.id == new.id {
            continue;
        }
        let (o_start, o_end) = refresh_window(other.window_start);
        if !(start < o_end && o_start < end) {
            continue;
        }
        let conflict = if new.target == other.target {
            OverlapKind::SameTarget
        } else if new.target == other.source && other.reads_live_source {
            OverlapKind::TargetIsOthersSource
        } else if new.source == other.target && new.reads_live_source {
            OverlapKind::SourceIsOthersTarget
        } else {
            continue;
        };
        return Err(RefreshRefusal::Overlapping {
            conflict,
            other: other.clone(),
        });
    }
    Ok(())
}

/// The parts of a request checked before anything is looked up: the acknowledgment and
/// two different instances.
pub fn check_request_shape(
    source: &str,
    target: &str,
    acknowledged: bool,
) -> Result<(), RefreshRefusal> {
    if !acknowledged {
        return Err(RefreshRefusal::AcknowledgementRequired);
    }
    if source == target {
        return Err(RefreshRefusal::SameInstance(source.to_owned()));
    }
    Ok(())
}

/// A refresh only ever writes into a sandbox.
pub fn check_target(target: &str, target_type: InstanceType) -> Result<(), RefreshRefusal> {
    if target_type != InstanceType::Sandbox {
        return Err(RefreshRefusal::ProductionTarget(target.to_owned()));
    }
    Ok(())
}

/// The window starts no earlier than `now + lead_time` (and not in the past).
pub fn check_window(
    window: DateTime<Utc>,
    now: DateTime<Utc>,
    lead_time: Duration,
) -> Result<(), RefreshRefusal> {
    if window < now {
        return Err(RefreshRefusal::WindowInPast { window, now });
    }
    let earliest = now + lead_time;
    if window < earliest {
        return Err(RefreshRefusal::InsideLeadTime {
            hours: lead_time.num_hours(),
            earliest,
        });
    }
    Ok(())
}

/// Picks what a refresh copies: `None` (the latest, a fresh copy at window start) or the
/// newest restore point at or before `moment`. `moment` must lie between the earliest point
/// and `now`, and the point must still exist when the window starts.
pub fn resolve_point(
    source: &str,
    points: &[RestorePoint],
    moment: Option<DateTime<Utc>>,
    window: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<RestorePoint>, RefreshRefusal> {
    let Some(moment) = moment else {
        return Ok(None);
    };
    let Some(earliest) = points.iter().map(|p| p.at).min() else {
        return Err(RefreshRefusal::NoRestorePoints {
            source_name: source.to_owned(),
        });
    };
    if moment < earliest || moment > now {
        return Err(RefreshRefusal::OutsideRestoreRange {
            source_name: source.to_owned(),
            moment,
            earliest,
            // Shown to people: whole seconds.
            latest: chrono::SubsecRound::trunc_subsecs(now, 0),
        });
    }
    let point = points
        .iter()
        .filter(|p| p.at <= moment)
        .max_by_key(|p| (p.at, p.backup_id))
        .cloned()
        .expect("the earliest point is at or before the moment");
    if point.expires_at <= window {
        return Err(RefreshRefusal::PointExpiresBeforeWindow {
            moment,
            backup_id: point.backup_id,
            expires_at: point.expires_at,
            window,
        });
    }
    Ok(Some(point))
}

/// A refresh to a moment copied from continuous capture runs at its window start: the moment
/// must still be inside the source's retention then (the range check at request time, see
/// `pitr::check_moment`, holds for now only).
pub fn check_moment_kept(
    source: &str,
    moment: DateTime<Utc>,
    window: DateTime<Utc>,
    retention_days: u32,
) -> Result<(), RefreshRefusal> {
    let kept = Duration::days(i64::from(retention_days));
    let earliest_kept = window - kept;
    if moment < earliest_kept {
        return Err(RefreshRefusal::MomentExpiresBeforeWindow {
            source_name: source.to_owned(),
            moment,
            retention_days,
            expires_at: moment + kept,
            window,
            earliest_kept,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 10, 0, 0, 0).unwrap() + Duration::hours(h)
    }

    fn p(id: i64, h: i64) -> RestorePoint {
        RestorePoint {
            backup_id: id,
            at: t(h),
            expires_at: t(h + 72),
        }
    }

    #[test]
    fn statuses_round_trip_and_move_only_forward() {
        use WorkItemStatus::*;
        for s in WorkItemStatus::ALL {
            assert_eq!(s.as_str().parse::<WorkItemStatus>().unwrap(), *s);
        }
        assert_eq!(Accepted.label(), "Request accepted");
        assert!(Submitted.can_become(Accepted));
        assert!(Accepted.can_become(InProgress));
        assert!(InProgress.can_become(Failed));
        assert!(!InProgress.can_become(Cancelled));
        assert!(!Succeeded.can_become(InProgress));
        assert!(!Submitted.can_become(InProgress), "accepted first");
        assert!("done".parse::<WorkItemStatus>().is_err());
    }

    #[test]
    fn reschedule_and_cancel_only_before_the_start() {
        use WorkItemStatus::*;
        assert!(Submitted.check_changeable(1).is_ok());
        assert!(Accepted.check_changeable(1).is_ok());
        assert_eq!(
            InProgress.check_changeable(1).unwrap_err().code(),
            "work_item_started"
        );
        for s in [Succeeded, Failed, Cancelled] {
            assert_eq!(
                s.check_changeable(1).unwrap_err().code(),
                "work_item_finished"
            );
        }
    }

    #[test]
    fn requests_need_acknowledgment_two_instances_and_a_sandbox_target() {
        assert_eq!(
            check_request_shape("a", "b", false).unwrap_err().code(),
            "acknowledgement_required"
        );
        assert_eq!(
            check_request_shape("a", "a", true).unwrap_err().code(),
            "same_instance"
        );
        assert!(check_request_shape("a", "b", true).is_ok());
        let e = check_target("prod", InstanceType::Production).unwrap_err();
        assert_eq!(e.code(), "production_target");
        assert!(e.to_string().contains("Switch it to sandbox first"));
        assert!(check_target("sb", InstanceType::Sandbox).is_ok());
    }

    #[test]
    fn windows_respect_the_lead_time() {
        let lead = Duration::hours(24);
        assert_eq!(
            check_window(t(-1), t(0), lead).unwrap_err().code(),
            "window_in_past"
        );
        let e = check_window(t(23), t(0), lead).unwrap_err();
        assert_eq!(e.code(), "inside_lead_time");
        assert!(e.to_string().contains(&t(24).to_string()), "{e}");
        assert!(check_window(t(24), t(0), lead).is_ok());
        assert!(check_window(t(0), t(0), Duration::zero()).is_ok());
    }

    fn sched(id: i64, source: &str, target: &str, h: i64, live: bool) -> ScheduledRefresh {
        ScheduledRefresh {
            id,
            source: source.into(),
            target: target.into(),
            window_start: t(h),
            reads_live_source: live,
        }
    }

    #[test]
    fn refreshes_in_overlapping_windows_may_not_share_what_they_write() {
        let existing = [sched(1, "prod", "test", 10, true)];
        let refused = |new: ScheduledRefresh| {
            check_no_overlapping_refresh(&new, &existing)
                .err()
                .map(|e| (e.code(), e.to_string()))
        };
        // The same target: the same start, starting inside, or ending inside its two hours.
        for h in [9, 10, 11] {
            let (code, msg) = refused(sched(0, "prod", "test", h, true)).expect("refused");
            assert_eq!(code, "overlapping_operation");
            assert!(
                msg.starts_with("test already has a refresh from prod from 2027-01-10 10:00 to 12:00 UTC (work item 1)"),
                "{msg}"
            );
        }
        // Adjacent windows do not overlap.
        assert!(refused(sched(0, "prod", "test", 12, true)).is_none());
        assert!(refused(sched(0, "prod", "test", 8, true)).is_none());
        // The same source into another sandbox is fine.
        assert!(refused(sched(0, "prod", "dev", 10, true)).is_none());
        // Copying the target live while it is replaced: refused; from a stored point: fine.
        let (_, msg) = refused(sched(0, "test", "dev", 11, true)).expect("refused");
        assert!(msg.contains("test is being refreshed from prod"), "{msg}");
        assert!(refused(sched(0, "test", "dev", 11, false)).is_none());
        // Replacing what another refresh copies live: refused.
        let reading = [sched(2, "dev", "qa", 10, true)];
        let e =
            check_no_overlapping_refresh(&sched(0, "prod", "dev", 11, true), &reading).unwrap_err();
        assert!(
            e.to_string().starts_with("work item 2 copies dev into qa"),
            "{e}"
        );
        let from_point = [sched(2, "dev", "qa", 10, false)];
        assert!(
            check_no_overlapping_refresh(&sched(0, "prod", "dev", 11, true), &from_point).is_ok()
        );
        // A reschedule does not collide with itself.
        assert!(
            check_no_overlapping_refresh(&sched(1, "prod", "test", 11, true), &existing).is_ok()
        );
    }

    #[test]
    fn a_captured_moment_must_outlive_the_window_start() {
        let w = t(24);
        assert!(check_moment_kept("s", t(-24 * 6), w, 7).is_ok());
        assert!(check_moment_kept("s", t(-24 * 6) - Duration::seconds(1), w, 7).is_err());
        let e = check_moment_kept("s", t(-24 * 6 - 1), w, 7).unwrap_err();
        assert_eq!(e.code(), "moment_before_retention");
        let text = e.to_string();
        assert!(text.contains("7 days"), "{text}");
        assert!(
            text.contains(&display_time(&t(-24 * 6)).to_string()),
            "names the earliest moment kept: {text}"
        );
    }

    #[test]
    fn a_moment_picks_the_newest_point_at_or_before_it() {
        let points = [p(1, -48), p(2, -24), p(3, -2)];
        let now = t(0);
        let w = t(24);
        assert_eq!(resolve_point("s", &points, None, w, now).unwrap(), None);
        assert_eq!(
            resolve_point("s", &points, Some(t(-24)), w, now)
                .unwrap()
                .unwrap()
                .backup_id,
            2
        );
        assert_eq!(
            resolve_point("s", &points, Some(t(-3)), w, now)
                .unwrap()
                .unwrap()
                .backup_id,
            2
        );
        assert_eq!(
            resolve_point("s", &points, Some(t(0)), w, now)
                .unwrap()
                .unwrap()
                .backup_id,
            3
        );
        let e = resolve_point("s", &points, Some(t(-49)), w, now).unwrap_err();
        assert_eq!(e.code(), "outside_restore_range");
        assert!(e.to_string().contains(&t(-48).to_string()), "{e}");
        assert!(resolve_point("s", &points, Some(t(1)), w, now).is_err());
        assert!(resolve_point("s", &[], Some(t(-1)), w, now).is_err());
        // Backup 1 expires at t(24): it is gone when a window at t(30) starts.
        let e = resolve_point("s", &points, Some(t(-47)), t(30), now).unwrap_err();
        assert!(e.to_string().contains("expires"), "{e}");
    }
}
