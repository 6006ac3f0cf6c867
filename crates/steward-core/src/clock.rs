//! Time is injected: everything that depends on "now" asks a [`Clock`], so tests can move
//! time across days and windows without sleeping.

use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until moved; for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().expect("clock poisoned") += by;
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock poisoned") = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock poisoned")
    }
}

/// A moment as a person reads it: UTC to the whole second, `2027-01-10 22:00:00 UTC`.
/// Every message, table and history shown to people formats times through this (chrono's
/// own `Display` prints nanoseconds); JSON fields stay RFC 3339.
pub fn display_time(t: &DateTime<Utc>) -> DisplayTime {
    DisplayTime(*t)
}

/// See [`display_time`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplayTime(pub DateTime<Utc>);

impl std::fmt::Display for DisplayTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0.format("%Y-%m-%d %H:%M:%S UTC"))
    }
}

/// A text that is an RFC 3339 moment (as in JSON details), shown as [`display_time`] does;
/// `None` for any other text.
pub fn display_time_text(text: &str) -> Option<String> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| display_time(&t.with_timezone(&Utc)).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_shown_to_the_whole_second_in_utc() {
        let t = DateTime::parse_from_rfc3339("2026-12-03T21:33:14.319122087Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(display_time(&t).to_string(), "2026-12-03 21:33:14 UTC");
        assert_eq!(
            display_time_text("2026-12-03T22:33:14.319122087+01:00").as_deref(),
            Some("2026-12-03 21:33:14 UTC")
        );
        assert_eq!(display_time_text("acme-prod"), None);
        assert_eq!(display_time_text("9.1"), None);
    }
}
