//! Notifications: which events Steward tells people about, to whom (audience) and how
//! (channels), following the seeds' communications schedule, and the email address rule.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::instance::UnknownValue;

macro_rules! words {
    ($(#[$m:meta])* $name:ident, $what:literal { $($v:ident = $s:literal, $label:literal;)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($v,)* }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            pub fn as_str(self) -> &'static str { match self { $($name::$v => $s,)* } }
            /// For people.
            pub fn label(self) -> &'static str { match self { $($name::$v => $label,)* } }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromStr for $name {
            type Err = UnknownValue;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s).ok_or_else(|| UnknownValue {
                    what: $what,
                    allowed: concat!($($s, " ",)*),
                    got: s.to_owned(),
                })
            }
        }
    };
}

words!(
    /// Something that happened (or will happen) to an instance that people are told about.
    Event, "the notification event" {
        UpdateScheduled = "update_scheduled", "Update scheduled";
        Reminder90Days = "reminder_90_days", "90 days before update";
        Reminder30Days = "reminder_30_days", "30 days before update";
        Reminder15Days = "reminder_15_days", "15 days before update";
        Reminder7Days = "reminder_7_days", "7 days before update";
        ScheduleConfirmed = "schedule_confirmed", "Schedule confirmed by admin";
        UpdateInProgress = "update_in_progress", "Update in progress";
        UpdateSucceeded = "update_succeeded", "Update successful";
        UpdateFallback = "update_fallback", "Fallback to secondary update";
        UpdateRescheduled = "update_rescheduled", "Update rescheduled";
        RehearsalProblems = "rehearsal_problems", "Compatibility problems found before update";
        BackupStarted = "backup_started", "Backup started";
        BackupSucceeded = "backup_succeeded", "Backup succeeded";
        BackupFailed = "backup_failed", "Backup failed";
        BackupDamaged = "backup_damaged", "Backup found damaged";
        RestoreStarted = "restore_started", "Restore started";
        RestoreSucceeded = "restore_succeeded", "Restore succeeded";
        RestoreFailed = "restore_failed", "Restore failed";
        RefreshAccepted = "refresh_accepted", "Refresh accepted";
        RefreshStarted = "refresh_started", "Refresh started";
        RefreshSucceeded = "refresh_succeeded", "Refresh succeeded";
        RefreshFailed = "refresh_failed", "Refresh failed";
        RefreshCancelled = "refresh_cancelled", "Refresh cancelled";
        DrillFailed = "restore_drill_failed", "Restore drill failed";
        CaptureStopped = "capture_stopped", "Continuous capture stopped";
    }
);

words!(
    /// Who is told.
    Audience, "the audience" {
        SystemAdministrators = "system_administrators", "All Admins";
        AllAdminsAndUsers = "all_admins_and_users", "All Admins and Users";
    }
);

words!(
    /// How they are told. The admin center's notification log always shows every event.
    Channel, "the channel" {
        Email = "email", "Email";
        Webhook = "webhook", "Webhook";
        InProduct = "in_product", "In-product alert";
    }
);

impl Event {
    /// Days before an update this reminder is sent, for the reminder events.
    pub fn reminder_days(self) -> Option<i64> {
        match self {
            Event::Reminder90Days => Some(90),
            Event::Reminder30Days => Some(30),
            Event::Reminder15Days => Some(15),
            Event::Reminder7Days => Some(7),
            _ => None,
        }
    }
}

/// The reminder events, earliest first.
pub const REMINDERS: [Event; 4] = [
    Event::Reminder90Days,
    Event::Reminder30Days,
    Event::Reminder15Days,
    Event::Reminder7Days,
];

/// When each reminder of an update starting at `starts_at` falls: 90, 30, 15 and 7 days
/// before. Computed from the scheduled time, so a reschedule moves every reminder and a
/// cancel (no start) has none.
pub fn reminder_times(starts_at: DateTime<Utc>) -> Vec<(Event, DateTime<Utc>)> {
    REMINDERS
        .iter()
        .map(|&e| {
            let days = e.reminder_days().unwrap_or_default();
            (e, starts_at - chrono::Duration::days(days))
        })
        .collect()
}

/// The reminders that came due in `(since, now]` for an update starting at `starts_at` and
/// not yet started. Only the latest is returned when several fall in the interval (an update
/// scheduled 20 days ahead gets the 15-day reminder, not also the 90- and 30-day ones; a
/// server that was down for a month does not send a backlog of reminders).
pub fn reminder_due(
    starts_at: DateTime<Utc>,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<Event> {
    if now >= starts_at {
        return None;
    }
    reminder_times(starts_at)
        .into_iter()
        .filter(|(_, at)| *at > since && *at <= now)
        .map(|(e, _)| e)
        .next_back()
}

/// One row of the communications schedule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleEntry {
    pub event: Event,
    pub audience: Audience,
    pub channels: Vec<Channel>,
}

/// The seed's communications schedule (update events, verbatim: "In-product alert" and
/// "Email" columns), extended to backups, restores and refreshes: started and accepted are
/// in-product only; outcomes go by email as well. Webhooks receive every event.
pub fn default_schedule() -> Vec<ScheduleEntry> {
    use Audience::*;
    use Channel::*;
    use Event::*;
    Event::ALL
        .iter()
        .map(|&event| {
            let (audience, mut channels) = match event {
                UpdateScheduled => (SystemAdministrators, vec![InProduct, Email]),
                Reminder90Days | Reminder30Days | Reminder15Days => {
                    (SystemAdministrators, vec![Email])
                }
                Reminder7Days => (SystemAdministrators, vec![InProduct, Email]),
                ScheduleConfirmed => (SystemAdministrators, vec![]),
                UpdateInProgress => (AllAdminsAndUsers, vec![]),
                UpdateSucceeded => (AllAdminsAndUsers, vec![Email]),
                UpdateFallback | UpdateRescheduled => (SystemAdministrators, vec![Email]),
                // Seed 001: "if any of those tests fail in your instance, we will email the
                // administrator a list of potential issues".
                RehearsalProblems => (SystemAdministrators, vec![InProduct, Email]),
                BackupStarted | RestoreStarted | RefreshAccepted | RefreshStarted => {
                    (SystemAdministrators, vec![InProduct])
                }
                // Verify found a backup damaged: it may not restore when it is needed.
                BackupDamaged => (SystemAdministrators, vec![InProduct, Email]),
                BackupSucceeded | BackupFailed | RestoreSucceeded | RestoreFailed
                | RefreshSucceeded | RefreshFailed | RefreshCancelled => {
                    (SystemAdministrators, vec![InProduct, Email])
                }
                // A backup that failed its restore drill may not restore when needed.
                DrillFailed => (SystemAdministrators, vec![InProduct, Email]),
                // Moments from now on cannot be restored until capture starts again.
                CaptureStopped => (SystemAdministrators, vec![InProduct, Email]),
            };
            channels.push(Webhook);
            ScheduleEntry {
                event,
                audience,
                channels,
            }
        })
        .collect()
}

/// Parses a comma- or space-separated channel list, without duplicates.
pub fn parse_channels(raw: &str) -> Result<Vec<Channel>, UnknownValue> {
    let mut out: Vec<Channel> = Vec::new();
    for w in raw.split([',', ' ']).filter(|w| !w.is_empty()) {
        let c: Channel = w.parse()?;
        if !out.contains(&c) {
            out.push(c);
        }
    }
    out.sort();
    Ok(out)
}

/// An email address Steward will send to: `local@domain`, ASCII, no spaces or quoting, a
/// domain of dot-separated labels (letters, digits, dashes) with at least one dot. Stricter
/// than RFC 5321 on purpose: anything it refuses would be a typo in practice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct EmailAddress(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an email address (expected name@example.com)")]
pub struct InvalidEmail(pub String);

impl EmailAddress {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EmailAddress {
    type Err = InvalidEmail;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let bad = || InvalidEmail(raw.to_owned());
        let s = raw.trim();
        if s.len() > 254 {
            return Err(bad());
        }
        let (local, domain) = s.rsplit_once('@').ok_or_else(bad)?;
        let local_ok = !local.is_empty()
            && local.len() <= 64
            && !local.starts_with('.')
            && !local.ends_with('.')
            && !local.contains("..")
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~.".contains(c));
        let labels: Vec<&str> = domain.split('.').collect();
        let domain_ok = labels.len() >= 2
            && labels.iter().all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            });
        if !(local_ok && domain_ok) {
            return Err(bad());
        }
        Ok(Self(format!("{local}@{}", domain.to_ascii_lowercase())))
    }
}

impl<'de> Deserialize<'de> for EmailAddress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_addresses() {
        for ok in [
            "a@example.com",
            "first.last+tag@mail.example.co.uk",
            "x_y@A.Example.ORG",
        ] {
            assert!(ok.parse::<EmailAddress>().is_ok(), "{ok}");
        }
        assert_eq!(
            "X@Example.COM".parse::<EmailAddress>().unwrap().as_str(),
            "X@example.com"
        );
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@localhost",
            "a b@example.com",
            "a@exa mple.com",
            "a..b@example.com",
            ".a@example.com",
            "a@-x.com",
            "a@x..com",
            "a@b@c.com",
            "<a@b.com>",
            "a@b.com\r\nBcc: x@y.com",
        ] {
            assert!(bad.parse::<EmailAddress>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_schedule_follows_the_seed() {
        let s = default_schedule();
        assert_eq!(s.len(), Event::ALL.len());
        let get = |e: Event| s.iter().find(|x| x.event == e).unwrap().clone();
        assert_eq!(
            get(Event::UpdateInProgress).audience,
            Audience::AllAdminsAndUsers
        );
        assert!(
            !get(Event::ScheduleConfirmed)
                .channels
                .contains(&Channel::Email)
        );
        assert!(
            get(Event::Reminder7Days)
                .channels
                .contains(&Channel::InProduct)
        );
        assert!(
            !get(Event::Reminder30Days)
                .channels
                .contains(&Channel::InProduct)
        );
        assert!(
            get(Event::BackupSucceeded)
                .channels
                .contains(&Channel::Email)
        );
        let damaged = get(Event::BackupDamaged);
        assert_eq!(damaged.audience, Audience::SystemAdministrators);
        assert_eq!(
            damaged.channels,
            [Channel::InProduct, Channel::Email, Channel::Webhook]
        );
        for e in Event::ALL {
            assert_eq!(e.as_str().parse::<Event>().unwrap(), *e);
        }
    }

    #[test]
    fn reminders_follow_the_scheduled_time() {
        use chrono::TimeZone;
        let start = Utc.with_ymd_and_hms(2027, 3, 1, 22, 0, 0).unwrap();
        let days = |d: i64| start - chrono::Duration::days(d);
        let t = reminder_times(start);
        assert_eq!(t[0], (Event::Reminder90Days, days(90)));
        assert_eq!(t[3], (Event::Reminder7Days, days(7)));
        // Checked every hour: each reminder once, on its day.
        let mut got = Vec::new();
        let mut at = days(120);
        while at < start + chrono::Duration::days(2) {
            let next = at + chrono::Duration::hours(1);
            got.extend(reminder_due(start, at, next));
            at = next;
        }
        assert_eq!(got, REMINDERS.to_vec());
        // A reschedule moves them.
        let later = start + chrono::Duration::days(10);
        assert_eq!(
            reminder_due(later, days(8), days(7)),
            None,
            "the old 7-day reminder is gone"
        );
        assert_eq!(
            reminder_due(later, days(-3) - chrono::Duration::hours(1), days(-3)),
            Some(Event::Reminder7Days)
        );
        // Scheduled 20 days ahead: only the 15-day reminder, on its day; a long outage sends
        // the latest one only.
        assert_eq!(
            reminder_due(start, days(200), days(14)),
            Some(Event::Reminder15Days)
        );
        assert_eq!(reminder_due(start, days(20), days(16)), None);
        assert_eq!(reminder_due(start, days(20), start), None, "started");
    }

    #[test]
    fn channels_parse() {
        assert_eq!(
            parse_channels("webhook, email email").unwrap(),
            vec![Channel::Email, Channel::Webhook]
        );
        assert!(parse_channels("fax").is_err());
    }
}
