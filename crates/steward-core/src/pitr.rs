//! Point-in-time restore rules: an instance's restorable **range** (the spans continuous
//! capture covers, with the **gaps** between them), whether a moment can be restored, and
//! what retention keeps.
//!
//! Capture builds *chains*: a base snapshot taken at an exact commit, then every commit after
//! it, until capture stops (server down, repository unreachable, the instance restored or
//! refreshed, commits lost behind capture's back). A chain covers `[start, through]`: from its
//! base snapshot to the last moment capture confirmed nothing more had been committed. Time
//! not covered by any chain is a gap, and no restore lands in a gap: a restore never produces
//! a state that did not exist.

use chrono::{DateTime, Duration, Utc};

use crate::clock::display_time;

/// What one capture chain covers, as the control plane records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainSpan {
    pub chain_id: i64,
    /// The base snapshot's moment.
    pub start: DateTime<Utc>,
    /// The last moment capture confirmed; the chain covers `[start, through]`.
    pub through: DateTime<Utc>,
    /// Why the chain ended; `None` while capture is extending it.
    pub end_reason: Option<String>,
}

/// A stretch of time no chain covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The end of the chain before it.
    pub from: DateTime<Utc>,
    /// The start of the chain after it; `None` when no chain follows (capture is stopped).
    pub to: Option<DateTime<Utc>>,
    pub reason: String,
}

/// The continuous spans an instance can be restored to, oldest first, and the gaps between
/// (and after) them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Timeline {
    pub spans: Vec<ChainSpan>,
    pub gaps: Vec<Gap>,
}

impl Timeline {
    /// Orders the chains and names the gaps: between two chains when the next starts after the
    /// previous one's `through`, and after the last one when it has ended.
    pub fn new(mut chains: Vec<ChainSpan>) -> Self {
        chains.sort_by_key(|c| (c.start, c.chain_id));
        let mut gaps = Vec::new();
        for (i, c) in chains.iter().enumerate() {
            let next = chains.get(i + 1);
            match (next, &c.end_reason) {
                (Some(n), reason) if n.start > c.through => gaps.push(Gap {
                    from: c.through,
                    to: Some(n.start),
                    reason: reason.clone().unwrap_or_else(|| "capture stopped".into()),
                }),
                (None, Some(reason)) => gaps.push(Gap {
                    from: c.through,
                    to: None,
                    reason: reason.clone(),
                }),
                _ => {}
            }
        }
        Timeline {
            spans: chains,
            gaps,
        }
    }

    /// The earliest restorable moment.
    pub fn earliest(&self) -> Option<DateTime<Utc>> {
        self.spans.first().map(|c| c.start)
    }

    /// The latest restorable moment.
    pub fn latest(&self) -> Option<DateTime<Utc>> {
        self.spans.iter().map(|c| c.through).max()
    }

    /// The chain that holds the state at `at`: the newest chain covering it (a newer chain's
    /// base snapshot starts exactly at a commit, so where two overlap either gives the same
    /// state; the newer one needs fewer commits replayed).
    pub fn chain_at(&self, at: DateTime<Utc>) -> Option<&ChainSpan> {
        self.spans
            .iter()
            .rev()
            .find(|c| c.start <= at && at <= c.through)
    }

    /// "from X to Y", gaps named: for errors and listings.
    pub fn describe(&self) -> String {
        if self.spans.is_empty() {
            return "nothing is restorable yet".into();
        }
        let mut parts: Vec<String> = Vec::new();
        let mut from = self.spans[0].start;
        let mut to = self.spans[0].through;
        for c in &self.spans[1..] {
            if c.start > to {
                parts.push(format!(
                    "from {} to {}",
                    display_time(&from),
                    display_time(&to)
                ));
                from = c.start;
            }
            to = to.max(c.through);
        }
        parts.push(format!(
            "from {} to {}",
            display_time(&from),
            display_time(&to)
        ));
        parts.join(", and ")
    }
}

/// Why a moment cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MomentRefusal {
    #[error("{} is in the future (now: {})", display_time(.at), display_time(.now))]
    InFuture {
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    },
    #[error(
        "continuous capture of {instance} has never run, so it cannot be restored to a moment; restore a backup instead"
    )]
    NeverCaptured { instance: String },
    #[error(
        "{} is before the retention of {instance} ({retention_days} days): the earliest moment is {}; {instance} is restorable {range}",
        display_time(.at),
        display_time(.earliest)
    )]
    BeforeRetention {
        instance: String,
        at: DateTime<Utc>,
        earliest: DateTime<Utc>,
        retention_days: u32,
        range: String,
    },
    #[error(
        "{} is in a gap of {instance}'s capture, from {} to {} ({reason}); {instance} is restorable {range}",
        display_time(.at),
        display_time(.from),
        .to.map(|t| display_time(&t).to_string()).unwrap_or_else(|| "now".into())
    )]
    InGap {
        instance: String,
        at: DateTime<Utc>,
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
        reason: String,
        range: String,
    },
    #[error(
        "{} is outside the restorable range of {instance}: {range}",
        display_time(.at)
    )]
    OutsideRange {
        instance: String,
        at: DateTime<Utc>,
        range: String,
    },
}

impl MomentRefusal {
    /// The stable error code (the REST contract's).
    pub fn code(&self) -> &'static str {
        match self {
            MomentRefusal::InFuture { .. } => "moment_in_future",
            MomentRefusal::NeverCaptured { .. } => "never_captured",
            MomentRefusal::BeforeRetention { .. } => "moment_before_retention",
            MomentRefusal::InGap { .. } => "moment_in_gap",
            MomentRefusal::OutsideRange { .. } => "moment_outside_range",
        }
    }
}

/// The chain to restore `instance` to `at` from, or why not. `retention_days` bounds how far
/// back a moment may be, whatever the chains still cover.
pub fn check_moment<'t>(
    instance: &str,
    timeline: &'t Timeline,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
    retention_days: u32,
) -> Result<&'t ChainSpan, MomentRefusal> {
    if at > now {
        return Err(MomentRefusal::InFuture { at, now });
    }
    if timeline.spans.is_empty() {
        return Err(MomentRefusal::NeverCaptured {
            instance: instance.to_owned(),
        });
    }
    let range = timeline.describe();
    let horizon = retention_start(now, retention_days);
    if at < horizon {
        return Err(MomentRefusal::BeforeRetention {
            instance: instance.to_owned(),
            at,
            earliest: timeline.earliest().map_or(horizon, |e| e.max(horizon)),
            retention_days,
            range,
        });
    }
    if let Some(chain) = timeline.chain_at(at) {
        return Ok(chain);
    }
    match timeline
        .gaps
        .iter()
        .find(|g| g.from < at && g.to.is_none_or(|to| at < to))
    {
        Some(g) => Err(MomentRefusal::InGap {
            instance: instance.to_owned(),
            at,
            from: g.from,
            to: g.to,
            reason: g.reason.clone(),
            range,
        }),
        None => Err(MomentRefusal::OutsideRange {
            instance: instance.to_owned(),
            at,
            range,
        }),
    }
}

/// The oldest moment retention keeps restorable.
pub fn retention_start(now: DateTime<Utc>, retention_days: u32) -> DateTime<Utc> {
    now - Duration::days(i64::from(retention_days))
}

/// The chains retention no longer needs: every moment they cover is before the retention
/// start. A chain that covers any moment inside retention is kept whole (a restore replays
/// its commits from its base snapshot), and nothing older than that is.
pub fn expired_chains(timeline: &Timeline, now: DateTime<Utc>, retention_days: u32) -> Vec<i64> {
    let horizon = retention_start(now, retention_days);
    timeline
        .spans
        .iter()
        .filter(|c| c.through < horizon && c.end_reason.is_some())
        .map(|c| c.chain_id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(m: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2027, 1, 10, 12, 0, 0).unwrap() + Duration::minutes(m)
    }

    fn chain(id: i64, start: i64, through: i64, end: Option<&str>) -> ChainSpan {
        ChainSpan {
            chain_id: id,
            start: t(start),
            through: t(through),
            end_reason: end.map(str::to_owned),
        }
    }

    #[test]
    fn gaps_lie_between_chains_and_after_an_ended_last_one() {
        let tl = Timeline::new(vec![
            chain(2, 100, 200, None),
            chain(1, 0, 60, Some("the server was stopped")),
        ]);
        assert_eq!(tl.spans[0].chain_id, 1, "oldest first");
        assert_eq!(
            tl.gaps,
            vec![Gap {
                from: t(60),
                to: Some(t(100)),
                reason: "the server was stopped".into()
            }]
        );
        assert_eq!(
            tl.describe(),
            "from 2027-01-10 12:00:00 UTC to 2027-01-10 13:00:00 UTC, and from 2027-01-10 13:40:00 UTC to 2027-01-10 15:20:00 UTC"
        );
        let ended = Timeline::new(vec![chain(1, 0, 60, Some("the repository is unreachable"))]);
        assert_eq!(ended.gaps.len(), 1);
        assert_eq!(ended.gaps[0].to, None);
    }

    #[test]
    fn a_moment_is_placed_in_its_chain_or_refused_with_the_reason() {
        let tl = Timeline::new(vec![
            chain(1, 0, 60, Some("the server was stopped")),
            chain(2, 100, 200, None),
        ]);
        let now = t(200);
        assert_eq!(check_moment("crm", &tl, t(30), now, 7).unwrap().chain_id, 1);
        assert_eq!(check_moment("crm", &tl, t(60), now, 7).unwrap().chain_id, 1);
        assert_eq!(
            check_moment("crm", &tl, t(100), now, 7).unwrap().chain_id,
            2
        );
        assert_eq!(
            check_moment("crm", &tl, t(200), now, 7).unwrap().chain_id,
            2
        );

        let e = check_moment("crm", &tl, t(80), now, 7).unwrap_err();
        assert_eq!(e.code(), "moment_in_gap");
        let text = e.to_string();
        assert!(
            text.contains(
                "from 2027-01-10 13:00:00 UTC to 2027-01-10 13:40:00 UTC (the server was stopped)"
            ),
            "{text}"
        );
        assert!(text.contains("restorable from"), "{text}");

        assert_eq!(
            check_moment("crm", &tl, t(201), now, 7).unwrap_err().code(),
            "moment_in_future"
        );
        assert_eq!(
            check_moment("crm", &tl, t(-1), now, 7).unwrap_err().code(),
            "moment_outside_range"
        );
        assert_eq!(
            check_moment("crm", &Timeline::default(), t(10), now, 7)
                .unwrap_err()
                .code(),
            "never_captured"
        );
        // Retention bounds the range even where a chain still covers the moment.
        let e = check_moment("crm", &tl, t(30), t(30) + Duration::days(8), 7).unwrap_err();
        assert_eq!(e.code(), "moment_before_retention");
    }

    #[test]
    fn overlapping_chains_use_the_newest_and_leave_no_gap() {
        let tl = Timeline::new(vec![
            chain(1, 0, 120, Some("a new base snapshot was taken")),
            chain(2, 100, 200, None),
        ]);
        assert!(tl.gaps.is_empty());
        assert_eq!(
            check_moment("crm", &tl, t(110), t(200), 7)
                .unwrap()
                .chain_id,
            2
        );
        assert_eq!(
            check_moment("crm", &tl, t(90), t(200), 7).unwrap().chain_id,
            1
        );
        assert_eq!(
            tl.describe(),
            "from 2027-01-10 12:00:00 UTC to 2027-01-10 15:20:00 UTC"
        );
    }

    #[test]
    fn retention_expires_only_chains_wholly_before_it() {
        let now = t(0) + Duration::days(7) + Duration::minutes(90);
        let tl = Timeline::new(vec![
            chain(1, 0, 60, Some("x")),
            chain(2, 60, 100, Some("y")),
            chain(3, 100, 20_000, None),
        ]);
        // Chain 2 covers 12:01..13:40 and retention starts at 13:30: it is still needed.
        assert_eq!(expired_chains(&tl, now, 7), vec![1]);
        // The open chain is never expired, however old its start.
        assert!(!expired_chains(&tl, now + Duration::days(30), 7).contains(&3));
    }
}
