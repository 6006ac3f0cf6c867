//! The rules of restore drills: when each instance's newest backup is test-restored (the
//! drill schedule, with a fixed per-instance offset so a fleet is spread over the period), and
//! which instances need attention (their last drill failed, is older than N days, or they were
//! never drilled).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, TimeZone, Utc};

/// How often the newest backup of each instance is drilled (`restore_drill_schedule`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrillSchedule {
    /// No scheduled drills (drills run on demand only).
    Off,
    /// Once per period of this many hours: 24 is `daily`, 168 `weekly`.
    Every { hours: u32 },
}

/// Longest period `every N hours` accepts: 4 weeks.
pub const MAX_PERIOD_HOURS: u32 = 24 * 28;

/// Most days the fleet view may look back.
pub const MAX_STALE_DAYS: u32 = 3650;

/// A schedule that could not be read; the message lists what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "restore_drill_schedule must be \"off\", \"daily\", \"weekly\" or \"every N hours\" with N from 1 to {MAX_PERIOD_HOURS} (got {0:?})"
)]
pub struct InvalidDrillSchedule(pub String);

impl FromStr for DrillSchedule {
    type Err = InvalidDrillSchedule;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidDrillSchedule(raw.to_owned());
        let s = raw.trim().to_ascii_lowercase();
        let words: Vec<&str> = s.split_whitespace().collect();
        match words.as_slice() {
            ["off"] => Ok(DrillSchedule::Off),
            ["daily"] => Ok(DrillSchedule::Every { hours: 24 }),
            ["weekly"] => Ok(DrillSchedule::Every { hours: 24 * 7 }),
            ["every", n, unit] if matches!(*unit, "hours" | "hour") => {
                // Digits only: no sign, no fraction.
                if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                match n.parse::<u32>() {
                    Ok(hours) if (1..=MAX_PERIOD_HOURS).contains(&hours) => {
                        Ok(DrillSchedule::Every { hours })
                    }
                    _ => Err(bad()),
                }
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for DrillSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DrillSchedule::Off => f.write_str("off"),
            DrillSchedule::Every { hours: 24 } => f.write_str("daily"),
            DrillSchedule::Every { hours: 168 } => f.write_str("weekly"),
            DrillSchedule::Every { hours: 1 } => f.write_str("every 1 hour"),
            DrillSchedule::Every { hours } => write!(f, "every {hours} hours"),
        }
    }
}

/// One period of the schedule for one instance: the drill of this period is due from
/// `due_at` (the period's start plus the instance's offset). `key` names the period, so each
/// instance is drilled at most once per period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillSlot {
    pub key: String,
    pub start: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
}

/// How late a period's drill may still be queued once the next period has begun: a drill due
/// in the last moments of its period is not lost to the gap between two scheduler ticks.
pub const LATE_GRACE: Duration = Duration::minutes(15);

/// Periods count from a Monday at midnight UTC, so `daily` periods start at midnight and
/// `weekly` ones on Mondays.
fn anchor() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(1970, 1, 5, 0, 0, 0)
        .single()
        .expect("a valid date")
}

impl DrillSchedule {
    /// The period in hours; `None` when off.
    pub fn period_hours(self) -> Option<u32> {
        match self {
            DrillSchedule::Off => None,
            DrillSchedule::Every { hours } => Some(hours),
        }
    }

    /// The period holding `now` for `instance`; `None` when the schedule is off.
    pub fn slot(self, instance: &str, now: DateTime<Utc>) -> Option<DrillSlot> {
        let hours = self.period_hours()?;
        let period = i64::from(hours) * 3600;
        let since = (now - anchor()).num_seconds();
        let start = anchor() + Duration::seconds(since.div_euclid(period) * period);
        Some(DrillSlot {
            key: start.format("%Y-%m-%dT%H:%MZ").to_string(),
            start,
            due_at: start + spread_offset(instance, period),
        })
    }

    /// The drill of `instance` that is due at `now`: the current period's, once its offset has
    /// passed; before that, the previous period's if it fell due less than [`LATE_GRACE`] ago
    /// (at the very end of its period, between two scheduler ticks). `None` otherwise, or when
    /// off. Callers queue each period's drill once.
    pub fn due(self, instance: &str, now: DateTime<Utc>) -> Option<DrillSlot> {
        let slot = self.slot(instance, now)?;
        if now >= slot.due_at {
            return Some(slot);
        }
        let previous = self.slot(instance, slot.start - Duration::seconds(1))?;
        (now - previous.due_at < LATE_GRACE).then_some(previous)
    }

    /// The fleet view's default "older than" threshold: twice the period, in whole days
    /// (2 for `daily`, 14 for `weekly`); 7 when scheduled drills are off.
    pub fn default_stale_days(self) -> u32 {
        match self {
            DrillSchedule::Off => 7,
            DrillSchedule::Every { hours } => (2 * hours).div_ceil(24).max(1),
        }
    }
}

/// A fixed offset in `[0, period_seconds)` for an instance, from a stable hash of its name
/// (FNV-1a, so it never changes between releases or machines).
pub fn spread_offset(instance: &str, period_seconds: i64) -> Duration {
    if period_seconds <= 0 {
        return Duration::zero();
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in instance.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // Mix the high bits in: FNV's low bits vary little between similar names.
    h ^= h >> 29;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 32;
    Duration::seconds((h % period_seconds as u64) as i64)
}

/// Why an instance is listed in the drills fleet view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attention {
    /// Its last drill failed.
    Failed,
    /// Its last drill passed, but longer ago than the threshold.
    Stale,
    /// It was never drilled.
    Never,
}

impl Attention {
    pub fn as_str(self) -> &'static str {
        match self {
            Attention::Failed => "failed",
            Attention::Stale => "stale",
            Attention::Never => "never",
        }
    }
}

/// Whether an instance whose last finished drill ended at `last` (`Some((finished_at,
/// passed))`, or `None` when never drilled) needs attention at `now`, with drills older than
/// `stale_days` counting as stale.
pub fn attention(
    last: Option<(DateTime<Utc>, bool)>,
    now: DateTime<Utc>,
    stale_days: u32,
) -> Option<Attention> {
    match last {
        None => Some(Attention::Never),
        Some((_, false)) => Some(Attention::Failed),
        Some((at, true)) if now - at > Duration::days(i64::from(stale_days)) => {
            Some(Attention::Stale)
        }
        Some(_) => None,
    }
}

/// Checks the fleet view's "older than N days": 1 to [`MAX_STALE_DAYS`].
pub fn check_stale_days(days: i64) -> Result<u32, String> {
    if (1..=i64::from(MAX_STALE_DAYS)).contains(&days) {
        Ok(days as u32)
    } else {
        Err(format!(
            "stale_days must be a whole number of days from 1 to {MAX_STALE_DAYS} (got {days})"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
    }

    #[test]
    fn schedules_parse_and_print() {
        for (raw, want, shown) in [
            ("off", DrillSchedule::Off, "off"),
            ("daily", DrillSchedule::Every { hours: 24 }, "daily"),
            (" Weekly ", DrillSchedule::Every { hours: 168 }, "weekly"),
            (
                "every 6 hours",
                DrillSchedule::Every { hours: 6 },
                "every 6 hours",
            ),
            (
                "every 1 hour",
                DrillSchedule::Every { hours: 1 },
                "every 1 hour",
            ),
            (
                "every 24 hours",
                DrillSchedule::Every { hours: 24 },
                "daily",
            ),
        ] {
            let s: DrillSchedule = raw.parse().unwrap();
            assert_eq!(s, want, "{raw}");
            assert_eq!(s.to_string(), shown);
        }
        for bad in [
            "",
            "hourly",
            "every hours",
            "every 0 hours",
            "every -3 hours",
            "every +3 hours",
            "every 2.5 hours",
            "every 3 days",
            "every 673 hours",
            "every 99999999999 hours",
            "daily please",
        ] {
            let err = bad.parse::<DrillSchedule>().unwrap_err().to_string();
            assert!(err.contains("\"every N hours\""), "{bad}: {err}");
        }
    }

    #[test]
    fn daily_drills_fall_once_a_day_at_a_fixed_offset() {
        let s = DrillSchedule::Every { hours: 24 };
        let slot = s.slot("crm-prod", at(2026, 11, 3, 13, 0)).unwrap();
        assert_eq!(
            slot.start,
            at(2026, 11, 3, 0, 0),
            "days start at midnight UTC"
        );
        assert_eq!(slot.key, "2026-11-03T00:00Z");
        let offset = slot.due_at - slot.start;
        assert!(offset >= Duration::zero() && offset < Duration::days(1));
        // The same offset every day.
        let next = s.slot("crm-prod", at(2026, 11, 4, 23, 59)).unwrap();
        assert_eq!(next.due_at - next.start, offset);
        assert_ne!(next.key, slot.key);
        // Due only from the offset on.
        let before = slot.due_at - Duration::seconds(1);
        assert_eq!(s.due("crm-prod", before), None);
        assert_eq!(s.due("crm-prod", slot.due_at), Some(slot.clone()));
        assert_eq!(DrillSchedule::Off.due("crm-prod", slot.due_at), None);
    }

    #[test]
    fn a_drill_due_at_the_end_of_its_period_is_not_lost_between_ticks() {
        let s = DrillSchedule::Every { hours: 1 };
        // Find an instance whose offset falls in the last minute of the hour.
        let name = (0..10_000)
            .map(|i| format!("t-{i}"))
            .find(|n| spread_offset(n, 3600) >= Duration::seconds(3570))
            .unwrap();
        let slot = s.slot(&name, at(2026, 11, 3, 5, 0)).unwrap();
        // The next tick comes after the period ended: the missed drill is still due.
        let next_tick = slot.start + Duration::hours(1) + Duration::seconds(20);
        assert!(next_tick > slot.due_at);
        assert_eq!(s.due(&name, next_tick), Some(slot.clone()));
        // Not once the grace has passed.
        assert_eq!(s.due(&name, slot.due_at + LATE_GRACE), None);
    }

    #[test]
    fn a_fleet_is_spread_over_the_period() {
        let day = 86_400;
        let offsets: Vec<i64> = (0..400)
            .map(|i| spread_offset(&format!("tenant-{i}"), day).num_seconds())
            .collect();
        assert!(offsets.iter().all(|o| (0..day).contains(o)));
        for q in 0..8 {
            let n = offsets
                .iter()
                .filter(|o| (q * day / 8..(q + 1) * day / 8).contains(*o))
                .count();
            assert!(n > 25, "eighth {q} of the day has {n} of 400 drills");
        }
        assert_eq!(spread_offset("a", day), spread_offset("a", day), "stable");
    }

    #[test]
    fn weekly_periods_start_on_mondays() {
        let s = DrillSchedule::Every { hours: 168 };
        // 2026-11-05 is a Thursday; that week's Monday is 2026-11-02.
        let slot = s.slot("x", at(2026, 11, 5, 10, 0)).unwrap();
        assert_eq!(slot.start, at(2026, 11, 2, 0, 0));
        let six = DrillSchedule::Every { hours: 6 };
        assert_eq!(
            six.slot("x", at(2026, 11, 5, 10, 0)).unwrap().start,
            at(2026, 11, 5, 6, 0)
        );
    }

    #[test]
    fn attention_and_stale_days() {
        let now = at(2026, 11, 10, 12, 0);
        assert_eq!(attention(None, now, 2), Some(Attention::Never));
        assert_eq!(
            attention(Some((now, false)), now, 2),
            Some(Attention::Failed)
        );
        assert_eq!(
            attention(Some((now - Duration::days(2), true)), now, 2),
            None
        );
        assert_eq!(
            attention(
                Some((now - Duration::days(2) - Duration::seconds(1), true)),
                now,
                2
            ),
            Some(Attention::Stale)
        );
        assert_eq!(check_stale_days(3), Ok(3));
        assert!(check_stale_days(0).unwrap_err().contains("from 1 to 3650"));
        assert!(check_stale_days(3651).is_err());
        assert_eq!(DrillSchedule::Every { hours: 24 }.default_stale_days(), 2);
        assert_eq!(DrillSchedule::Every { hours: 168 }.default_stale_days(), 14);
        assert_eq!(DrillSchedule::Every { hours: 6 }.default_stale_days(), 1);
        assert_eq!(DrillSchedule::Off.default_stale_days(), 7);
    }
}

#[cfg(test)]
mod policy_tests {
    use crate::policy::{Action, Role, authorize};

    #[test]
    fn admins_run_drills_and_viewers_may_not() {
        assert!(authorize(Role::SystemAdministrator, Action::RunDrill).is_ok());
        assert!(authorize(Role::DelegatedAdmin, Action::RunDrill).is_ok());
        assert_eq!(
            authorize(Role::Viewer, Action::RunDrill)
                .unwrap_err()
                .to_string(),
            "a Viewer may not run restore drills"
        );
    }
}
