//! Update rules (seed 001): which releases an instance may move to, whether its release is
//! still supported, which updates are mandatory, what kind an update is, and what a valid
//! update window is. The update policy is data ([`UpdatePolicy`]); the catalog says which
//! releases exist and when their support ends.
//!
//! Nothing here reads a clock: callers pass `now`/`today` (the injected clock).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::display_time;
use crate::instance::UnknownValue;
use crate::release::{Catalog, Release, ReleaseKind, ReleaseVersion};

/// The update policy: which releases are supported and what is mandatory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdatePolicy {
    /// How many major release lines are supported, newest first (2: n and n-1).
    #[serde(default = "default_supported")]
    pub supported_majors: u32,
    /// An instance this many major releases behind the newest gets a mandatory update.
    #[serde(default = "default_behind")]
    pub mandatory_when_behind: u32,
    /// Service releases are applied in the next maintenance window without approval.
    #[serde(default = "default_true")]
    pub service_updates_automatic: bool,
    /// When (UTC, `HH:MM`) the daily maintenance window opens; automatic service updates use
    /// the next one.
    #[serde(default = "default_maintenance")]
    pub maintenance_window_start: String,
    /// How many days ahead System schedules a mandatory update.
    #[serde(default = "default_lead")]
    pub mandatory_lead_days: u32,
}

fn default_supported() -> u32 {
    2
}
fn default_behind() -> u32 {
    2
}
fn default_true() -> bool {
    true
}
fn default_maintenance() -> String {
    "22:00".into()
}
fn default_lead() -> u32 {
    30
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self {
            supported_majors: default_supported(),
            mandatory_when_behind: default_behind(),
            service_updates_automatic: true,
            maintenance_window_start: default_maintenance(),
            mandatory_lead_days: default_lead(),
        }
    }
}

/// Why a policy is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("update policy: {0}")]
pub struct PolicyError(pub String);

impl UpdatePolicy {
    /// Parses a policy file (TOML; missing keys take their defaults) and checks it.
    pub fn from_toml(text: &str) -> Result<Self, PolicyError> {
        let p: UpdatePolicy = toml::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        p.check()?;
        Ok(p)
    }

    /// Checks the values: at least one supported major line, a mandatory threshold of at
    /// least one release, a maintenance start of the form `HH:MM`, a lead of 1–365 days.
    pub fn check(&self) -> Result<(), PolicyError> {
        if self.supported_majors == 0 || self.supported_majors > 20 {
            return Err(PolicyError(format!(
                "supported_majors must be 1 to 20 (got {})",
                self.supported_majors
            )));
        }
        if self.mandatory_when_behind == 0 || self.mandatory_when_behind > 20 {
            return Err(PolicyError(format!(
                "mandatory_when_behind must be 1 to 20 (got {})",
                self.mandatory_when_behind
            )));
        }
        self.maintenance_time()?;
        if self.mandatory_lead_days == 0 || self.mandatory_lead_days > 365 {
            return Err(PolicyError(format!(
                "mandatory_lead_days must be 1 to 365 (got {})",
                self.mandatory_lead_days
            )));
        }
        Ok(())
    }

    /// The daily maintenance window's start (UTC).
    pub fn maintenance_time(&self) -> Result<NaiveTime, PolicyError> {
        NaiveTime::parse_from_str(self.maintenance_window_start.trim(), "%H:%M").map_err(|_| {
            PolicyError(format!(
                "maintenance_window_start must be HH:MM in UTC, e.g. 22:00 (got {:?})",
                self.maintenance_window_start
            ))
        })
    }

    /// The next maintenance window start strictly after `now`.
    pub fn next_maintenance(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        let t = self
            .maintenance_time()
            .unwrap_or_else(|_| NaiveTime::from_hms_opt(22, 0, 0).expect("valid"));
        let today = now.date_naive().and_time(t).and_utc();
        if today > now {
            today
        } else {
            today + Duration::days(1)
        }
    }
}

/// Where an instance's release stands under the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupportStatus {
    /// On one of the supported major lines, before its end of support.
    Supported,
    /// On a major line older than the supported ones.
    Behind,
    /// On a major line whose end of support has passed.
    EndOfSupport,
}

impl SupportStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SupportStatus::Supported => "supported",
            SupportStatus::Behind => "behind",
            SupportStatus::EndOfSupport => "end_of_support",
        }
    }
}

/// The major release whose line `v` belongs to: the newest major release at or before it.
pub fn major_line<'a>(catalog: &'a Catalog, v: &ReleaseVersion) -> Option<&'a Release> {
    catalog
        .releases()
        .iter()
        .rfind(|r| r.kind == ReleaseKind::Major && r.version <= *v)
}

/// How many major releases are newer than `v`'s line.
pub fn majors_behind(catalog: &Catalog, v: &ReleaseVersion) -> u32 {
    catalog
        .releases()
        .iter()
        .filter(|r| r.kind == ReleaseKind::Major && r.version > *v)
        .count() as u32
}

/// The end of support of `v`'s line: the line's major release date, or the latest date
/// given by a release of that line.
pub fn end_of_support(catalog: &Catalog, v: &ReleaseVersion) -> Option<NaiveDate> {
    let line = major_line(catalog, v)?;
    catalog
        .releases()
        .iter()
        .filter(|r| major_line(catalog, &r.version).map(|l| l.version) == Some(line.version))
        .filter_map(|r| r.end_of_support)
        .max()
}

/// Whether `v` is supported on `today` under `policy`, and a sentence saying why.
pub fn support_status(
    catalog: &Catalog,
    policy: &UpdatePolicy,
    v: &ReleaseVersion,
    today: NaiveDate,
) -> (SupportStatus, String) {
    if let Some(end) = end_of_support(catalog, v)
        && end < today
    {
        return (
            SupportStatus::EndOfSupport,
            format!("Release {v} reached its end of support on {end}"),
        );
    }
    let behind = majors_behind(catalog, v);
    if behind >= policy.supported_majors {
        return (
            SupportStatus::Behind,
            format!(
                "Release {v} is {behind} major release{} behind; only the newest {} {} supported",
                if behind == 1 { "" } else { "s" },
                policy.supported_majors,
                if policy.supported_majors == 1 {
                    "is"
                } else {
                    "are"
                }
            ),
        );
    }
    let label = if behind == 0 {
        format!("Release {v} is supported (n)")
    } else {
        format!("Release {v} is supported (n-{behind})")
    };
    (SupportStatus::Supported, label)
}

/// Whether release `r` itself is supported (for the policy view).
pub fn release_supported(
    catalog: &Catalog,
    policy: &UpdatePolicy,
    r: &Release,
    today: NaiveDate,
) -> bool {
    support_status(catalog, policy, &r.version, today).0 == SupportStatus::Supported
}

/// The releases an instance at `current` may update to: every later release. Multi-hop
/// updates run each migration in between, so skipping to a later target is always possible.
pub fn eligible_targets<'a>(catalog: &'a Catalog, current: &ReleaseVersion) -> Vec<&'a Release> {
    catalog
        .releases()
        .iter()
        .filter(|r| r.version > *current)
        .collect()
}

/// `major` if any release in `(from, to]` is a major release, else `service`.
pub fn update_kind(catalog: &Catalog, from: &ReleaseVersion, to: &ReleaseVersion) -> ReleaseKind {
    if catalog
        .releases()
        .iter()
        .any(|r| r.version > *from && r.version <= *to && r.kind == ReleaseKind::Major)
    {
        ReleaseKind::Major
    } else {
        ReleaseKind::Service
    }
}

/// The mandatory update an instance at `current` needs, if any: the newest release, because
/// the instance is too many major releases behind or its line's support has ended.
pub fn mandatory_update(
    catalog: &Catalog,
    policy: &UpdatePolicy,
    current: &ReleaseVersion,
    today: NaiveDate,
) -> Option<(ReleaseVersion, String)> {
    let latest = catalog.latest().version;
    if latest <= *current {
        return None;
    }
    let behind = majors_behind(catalog, current);
    if behind >= policy.mandatory_when_behind {
        return Some((
            latest,
            format!(
                "release {current} is {behind} major releases behind; the policy makes an update mandatory at {}",
                policy.mandatory_when_behind
            ),
        ));
    }
    if let Some(end) = end_of_support(catalog, current)
        && end < today
    {
        return Some((
            latest,
            format!("release {current} reached its end of support on {end}"),
        ));
    }
    None
}

/// The newest service release on `current`'s line, if it is newer than `current` (what an
/// automatic service update installs).
pub fn service_update(catalog: &Catalog, current: &ReleaseVersion) -> Option<ReleaseVersion> {
    catalog
        .releases()
        .iter()
        .take_while(|r| r.version <= *current || r.kind == ReleaseKind::Service)
        .filter(|r| r.version > *current)
        .map(|r| r.version)
        .last()
}

/// Why a target release cannot be chosen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("release {0} is not in the catalog")]
    Unknown(String),
    #[error("the instance is at release {current}; the target {target} must be a later release")]
    NotNewer {
        current: ReleaseVersion,
        target: ReleaseVersion,
    },
}

/// Checks a requested target release for an instance at `current`.
pub fn check_target(
    catalog: &Catalog,
    current: &ReleaseVersion,
    raw: &str,
) -> Result<ReleaseVersion, TargetError> {
    let target: ReleaseVersion = raw
        .trim()
        .parse()
        .map_err(|_| TargetError::Unknown(raw.trim().to_owned()))?;
    // The catalog's own spelling (9.1 when 9.1.0 was typed).
    let Some(target) = catalog.get(&target).map(|r| r.version) else {
        return Err(TargetError::Unknown(target.to_string()));
    };
    if target <= *current {
        return Err(TargetError::NotNewer {
            current: *current,
            target,
        });
    }
    Ok(target)
}

/// One update window: `[start, end)`, in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Window {
    pub fn new(start: DateTime<Utc>, length: Duration) -> Self {
        Self {
            start,
            end: start + length,
        }
    }

    pub fn overlaps(&self, other: &Window) -> bool {
        self.start < other.end && other.start < self.end
    }

    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.start <= at && at < self.end
    }
}

/// Why a window is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("unknown time zone {0:?}; use an IANA name such as Europe/Paris or UTC")]
    TimeZone(String),
    #[error(
        "{what} {input:?} is not a time: use RFC 3339 with an offset (2027-01-10T22:00:00+01:00) or a local YYYY-MM-DDTHH:MM in the time zone"
    )]
    Unparsable { what: &'static str, input: String },
    #[error(
        "{what} {input:?} does not exist in {zone} (the clocks go forward then); choose another time"
    )]
    SkippedTime {
        what: &'static str,
        input: String,
        zone: String,
    },
    #[error(
        "{what} {input:?} happens twice in {zone} (the clocks go back then); give the offset, as in RFC 3339"
    )]
    RepeatedTime {
        what: &'static str,
        input: String,
        zone: String,
    },
    #[error("the {what} starts at {}, which is in the past", display_time(.start))]
    InPast {
        what: &'static str,
        start: DateTime<Utc>,
    },
    #[error(
        "the alternate window ({}) overlaps the preferred window ({}); pick a start at least a window length apart",
        display_time(.alternate_start),
        display_time(.preferred_start)
    )]
    Overlap {
        preferred_start: DateTime<Utc>,
        alternate_start: DateTime<Utc>,
    },
}

/// Parses a time zone name (`None`, empty or `utc` in any case: UTC).
pub fn parse_time_zone(raw: Option<&str>) -> Result<chrono_tz::Tz, WindowError> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(chrono_tz::UTC),
        Some(name) if name.eq_ignore_ascii_case("utc") => Ok(chrono_tz::UTC),
        Some(name) => name
            .parse::<chrono_tz::Tz>()
            .map_err(|_| WindowError::TimeZone(name.to_owned())),
    }
}

/// Parses a window start: RFC 3339 with an offset, or a local `YYYY-MM-DDTHH:MM[:SS]` (a
/// space instead of `T` is accepted) read in `zone`. Returns UTC.
pub fn parse_start(
    what: &'static str,
    input: &str,
    zone: chrono_tz::Tz,
) -> Result<DateTime<Utc>, WindowError> {
    let s = input.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let local = [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%d %H:%M",
        "%Y-%m-%d %H:%M:%S",
    ]
    .iter()
    .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
    .ok_or_else(|| WindowError::Unparsable {
        what,
        input: input.to_owned(),
    })?;
    let (input, zone_name) = (input.to_owned(), zone.name().to_owned());
    match zone.from_local_datetime(&local) {
        chrono::LocalResult::Single(t) => Ok(t.with_timezone(&Utc)),
        chrono::LocalResult::None => Err(WindowError::SkippedTime {
            what,
            input,
            zone: zone_name,
        }),
        chrono::LocalResult::Ambiguous(..) => Err(WindowError::RepeatedTime {
            what,
            input,
            zone: zone_name,
        }),
    }
}

/// Checks a pair of windows: both start in the future (at or after `now`) and they do not
/// overlap.
pub fn check_windows(
    preferred: &Window,
    alternate: &Window,
    now: DateTime<Utc>,
) -> Result<(), WindowError> {
    for (what, w) in [
        ("preferred window", preferred),
        ("alternate window", alternate),
    ] {
        if w.start < now {
            return Err(WindowError::InPast {
                what,
                start: w.start,
            });
        }
    }
    if preferred.overlaps(alternate) {
        return Err(WindowError::Overlap {
            preferred_start: preferred.start,
            alternate_start: alternate.start,
        });
    }
    Ok(())
}

/// Where an update is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpdateStatus {
    /// Awaiting approval.
    Scheduled,
    /// Approved (or needing none), waiting for its window: "Queued (Not Started)".
    Queued,
    InProgress,
    Succeeded,
    /// Final failure (not used while an alternate window is ahead).
    Failed,
    /// Both windows failed or were missed: an administrator must reschedule.
    Waiting,
    Cancelled,
}

impl UpdateStatus {
    pub const ALL: &'static [UpdateStatus] = &[
        UpdateStatus::Scheduled,
        UpdateStatus::Queued,
        UpdateStatus::InProgress,
        UpdateStatus::Succeeded,
        UpdateStatus::Failed,
        UpdateStatus::Waiting,
        UpdateStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStatus::Scheduled => "scheduled",
            UpdateStatus::Queued => "queued",
            UpdateStatus::InProgress => "in_progress",
            UpdateStatus::Succeeded => "succeeded",
            UpdateStatus::Failed => "failed",
            UpdateStatus::Waiting => "waiting",
            UpdateStatus::Cancelled => "cancelled",
        }
    }

    /// The seed's words.
    pub fn label(self) -> &'static str {
        match self {
            UpdateStatus::Scheduled => "Scheduled — awaiting approval",
            UpdateStatus::Queued => "Queued (Not Started)",
            UpdateStatus::InProgress => "Update in progress",
            UpdateStatus::Succeeded => "Updated successfully",
            UpdateStatus::Failed => "Failed",
            UpdateStatus::Waiting => "Waiting for an administrator",
            UpdateStatus::Cancelled => "Cancelled",
        }
    }

    /// An open update blocks scheduling another one on the same instance.
    pub fn is_open(self) -> bool {
        matches!(
            self,
            UpdateStatus::Scheduled
                | UpdateStatus::Queued
                | UpdateStatus::InProgress
                | UpdateStatus::Waiting
        )
    }

    /// Whether the instance's storage is left out of Total Storage Used (seed 001: "When an
    /// instance enters the Queued (Not Started) state, that instance's storage is temporarily
    /// omitted [...]. Once the database update is complete, [it is] re-include[d]"). An update
    /// is Queued (Not Started) from the moment it is approved, or scheduled needing no
    /// approval, however far ahead its window is; the instance stays left out while the update
    /// runs, until its Database Upgrade stage has completed (from the Swap on it counts). An
    /// update awaiting approval, waiting for an administrator, or finished leaves it counted.
    pub fn omits_storage(self, stage: Option<&str>) -> bool {
        match self {
            UpdateStatus::Queued => true,
            UpdateStatus::InProgress => stage != Some(STAGES[3]),
            _ => false,
        }
    }

    /// Whether the schedule (windows, target, approval) may still change.
    pub fn may_change(self) -> bool {
        matches!(
            self,
            UpdateStatus::Scheduled | UpdateStatus::Queued | UpdateStatus::Waiting
        )
    }
}

impl fmt::Display for UpdateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UpdateStatus {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UpdateStatus::ALL
            .iter()
            .copied()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| UnknownValue {
                what: "the update status",
                allowed: "scheduled queued in_progress succeeded failed waiting cancelled",
                got: s.to_owned(),
            })
    }
}

/// The stages of an update, in order (the seed's words).
pub const STAGES: [&str; 4] = ["Backup", "Restore", "Database Upgrade", "Swap"];

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ReleaseVersion {
        s.parse().unwrap()
    }
    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    #[test]
    fn support_and_mandatory_follow_the_policy() {
        let c = Catalog::builtin();
        let p = UpdatePolicy::default();
        let today = d("2018-12-01");
        assert_eq!(
            support_status(&c, &p, &v("9.1"), today).0,
            SupportStatus::Supported
        );
        assert_eq!(
            support_status(&c, &p, &v("8.2"), today).0,
            SupportStatus::Supported
        );
        assert_eq!(
            support_status(&c, &p, &v("8.1"), today).0,
            SupportStatus::Behind
        );
        // 8.1's line ends on 2019-01-31, then it is past its end of support.
        assert_eq!(
            support_status(&c, &p, &v("8.1"), d("2019-02-01")).0,
            SupportStatus::EndOfSupport
        );
        assert_eq!(
            mandatory_update(&c, &p, &v("8.1"), today).map(|m| m.0),
            Some(v("9.1"))
        );
        assert_eq!(mandatory_update(&c, &p, &v("8.2"), today), None);
        // 8.2 gives no end of support: it is n-1 for as long as it is among the two newest
        // lines, so its update to 9.x stays optional (the seed's n-1).
        let later = d("2040-01-01");
        assert_eq!(
            support_status(&c, &p, &v("8.2"), later),
            (
                SupportStatus::Supported,
                "Release 8.2 is supported (n-1)".into()
            )
        );
        assert_eq!(mandatory_update(&c, &p, &v("8.2"), later), None);
        assert_eq!(update_kind(&c, &v("8.2"), &v("9.0")), ReleaseKind::Major);
        // 8.0 and 8.1 are n-3 and n-2: mandatory, whatever the date.
        assert!(mandatory_update(&c, &p, &v("8.0"), later).is_some());
        assert!(mandatory_update(&c, &p, &v("8.1"), later).is_some());
        assert_eq!(mandatory_update(&c, &p, &v("9.1"), today), None);
        let strict = UpdatePolicy {
            mandatory_when_behind: 1,
            ..p
        };
        assert!(mandatory_update(&c, &strict, &v("8.2"), today).is_some());
    }

    #[test]
    fn targets_kinds_and_service_updates() {
        let c = Catalog::builtin();
        let t: Vec<String> = eligible_targets(&c, &v("8.1"))
            .iter()
            .map(|r| r.version.to_string())
            .collect();
        assert_eq!(t, ["8.2", "9.0", "9.1"]);
        assert!(eligible_targets(&c, &v("9.1")).is_empty());
        assert_eq!(update_kind(&c, &v("8.1"), &v("9.0")), ReleaseKind::Major);
        assert_eq!(update_kind(&c, &v("9.0"), &v("9.1")), ReleaseKind::Service);
        assert_eq!(service_update(&c, &v("9.0")), Some(v("9.1")));
        assert_eq!(service_update(&c, &v("8.2")), None);
        assert_eq!(service_update(&c, &v("9.1")), None);
        assert!(matches!(
            check_target(&c, &v("8.2"), "7.0"),
            Err(TargetError::Unknown(_))
        ));
        assert!(matches!(
            check_target(&c, &v("8.2"), "nine"),
            Err(TargetError::Unknown(_))
        ));
        assert!(matches!(
            check_target(&c, &v("8.2"), "8.2"),
            Err(TargetError::NotNewer { .. })
        ));
        assert_eq!(check_target(&c, &v("8.2"), "9.0").unwrap(), v("9.0"));
        assert_eq!(
            check_target(&c, &v("8.2"), "9.1.0").unwrap().to_string(),
            "9.1"
        );
    }

    #[test]
    fn windows_in_a_time_zone_are_stored_in_utc_and_checked() {
        let paris = parse_time_zone(Some("Europe/Paris")).unwrap();
        let t = parse_start("preferred window", "2027-01-10T22:00", paris).unwrap();
        assert_eq!(t, Utc.with_ymd_and_hms(2027, 1, 10, 21, 0, 0).unwrap());
        let summer = parse_start("preferred window", "2027-07-10T22:00", paris).unwrap();
        assert_eq!(summer, Utc.with_ymd_and_hms(2027, 7, 10, 20, 0, 0).unwrap());
        let explicit = parse_start(
            "preferred window",
            "2027-01-10T22:00:00+01:00",
            chrono_tz::UTC,
        )
        .unwrap();
        assert_eq!(explicit, t);
        assert!(matches!(
            parse_time_zone(Some("Mars/Olympus")),
            Err(WindowError::TimeZone(_))
        ));
        assert!(matches!(
            parse_start("preferred window", "tomorrow", paris),
            Err(WindowError::Unparsable { .. })
        ));
        // 02:30 does not exist in Paris on the spring clock change.
        assert!(matches!(
            parse_start("preferred window", "2027-03-28T02:30", paris),
            Err(WindowError::SkippedTime { .. })
        ));
        // 02:30 happens twice in Paris on the autumn clock change.
        assert!(matches!(
            parse_start("preferred window", "2027-10-31 02:30", paris),
            Err(WindowError::RepeatedTime { .. })
        ));
        assert_eq!(parse_time_zone(Some("utc")), Ok(chrono_tz::UTC));
        let now = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        let h12 = Duration::hours(12);
        let a = Window::new(now + Duration::days(1), h12);
        let b = Window::new(now + Duration::days(2), h12);
        assert!(check_windows(&a, &b, now).is_ok());
        assert!(matches!(
            check_windows(&Window::new(now - Duration::hours(1), h12), &b, now),
            Err(WindowError::InPast { .. })
        ));
        assert!(matches!(
            check_windows(&a, &Window::new(a.start + Duration::hours(11), h12), now),
            Err(WindowError::Overlap { .. })
        ));
        // Back to back is fine.
        assert!(check_windows(&a, &Window::new(a.end, h12), now).is_ok());
    }

    #[test]
    fn policy_file_defaults_and_checks() {
        let p = UpdatePolicy::from_toml("supported_majors = 3\n").unwrap();
        assert_eq!(p.supported_majors, 3);
        assert_eq!(p.mandatory_when_behind, 2);
        assert!(p.service_updates_automatic);
        assert!(UpdatePolicy::from_toml("supported_majors = 0").is_err());
        assert!(UpdatePolicy::from_toml("suported_majors = 2").is_err());
        assert!(UpdatePolicy::from_toml("maintenance_window_start = \"25:00\"").is_err());
        let now = Utc.with_ymd_and_hms(2027, 1, 1, 23, 0, 0).unwrap();
        assert_eq!(
            UpdatePolicy::default().next_maintenance(now),
            Utc.with_ymd_and_hms(2027, 1, 2, 22, 0, 0).unwrap()
        );
    }

    #[test]
    fn storage_is_left_out_from_queued_until_the_database_upgrade_completes() {
        use UpdateStatus::*;
        assert!(!Scheduled.omits_storage(None), "awaiting approval: counted");
        assert!(
            Queued.omits_storage(None),
            "Queued (Not Started), whenever the window is"
        );
        for stage in [
            None,
            Some("Backup"),
            Some("Restore"),
            Some("Database Upgrade"),
        ] {
            assert!(InProgress.omits_storage(stage), "{stage:?}");
        }
        assert!(
            !InProgress.omits_storage(Some("Swap")),
            "the upgrade has completed"
        );
        for s in [Succeeded, Failed, Waiting, Cancelled] {
            assert!(!s.omits_storage(None), "{s:?}");
        }
    }

    #[test]
    fn status_words_round_trip() {
        for s in UpdateStatus::ALL {
            assert_eq!(s.as_str().parse::<UpdateStatus>().unwrap(), *s);
        }
        assert!(UpdateStatus::Waiting.is_open());
        assert!(!UpdateStatus::InProgress.may_change());
    }
}
