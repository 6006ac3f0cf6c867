//! The rules of backups and restores (seed 000): which kinds a user may edit or delete,
//! which releases can be backed up, where a backup may be restored, how long backups live.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::instance::{InstanceState, InstanceType, UnknownValue};
use crate::name::{TextKind, UnsafeText, check_plain_text};
use crate::release::ReleaseVersion;

/// Who made a backup and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    /// Daily, automatic, created by System. Restorable; never edited or deleted.
    System,
    /// Made by a user with a label and notes. Editable and deletable.
    OnDemand,
    /// Taken by the update pipeline before an update. Restorable; never edited or deleted.
    PreUpdate,
    /// The safety backup of a refresh target, taken before its database is replaced.
    /// Restorable (that undoes the refresh); never edited or deleted.
    PreRefresh,
}

impl BackupKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::System => "system",
            BackupKind::OnDemand => "on_demand",
            BackupKind::PreUpdate => "pre_update",
            BackupKind::PreRefresh => "pre_refresh",
        }
    }

    /// Whether users may edit the label and notes, or delete the backup.
    pub fn user_managed(self) -> bool {
        matches!(self, BackupKind::OnDemand)
    }
}

impl fmt::Display for BackupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackupKind {
    type Err = UnknownValue;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            BackupKind::System,
            BackupKind::OnDemand,
            BackupKind::PreUpdate,
            BackupKind::PreRefresh,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| UnknownValue {
            what: "the backup kind",
            allowed: "system on_demand pre_update pre_refresh",
            got: s.to_owned(),
        })
    }
}

/// A backup's label: 1–100 characters, not only spaces, no control characters or
/// bidirectional overrides. Required for on-demand backups.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Label(String);

/// A label or notes that break the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("a backup needs a label (1–100 characters)")]
    EmptyLabel,
    #[error("a label may be at most 100 characters long (got {0})")]
    LongLabel(usize),
    #[error("notes may be at most 2000 characters long (got {0})")]
    LongNotes(usize),
    /// A control character or a bidirectional override (tabs and line breaks are allowed in
    /// notes).
    #[error(transparent)]
    Unsafe(#[from] UnsafeText),
}

impl Label {
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        let trimmed = raw.trim();
        check_plain_text("a label", trimmed, TextKind::Line).map_err(|mut e| {
            // Count the position in what was typed, leading spaces included.
            e.position += raw.chars().count() - raw.trim_start().chars().count();
            e
        })?;
        let len = trimmed.chars().count();
        if len == 0 {
            return Err(TextError::EmptyLabel);
        }
        if len > 100 {
            return Err(TextError::LongLabel(len));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Label {
    type Error = TextError;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        Self::parse(&v)
    }
}

impl From<Label> for String {
    fn from(v: Label) -> Self {
        v.0
    }
}

/// Checks backup notes (at most 2000 characters; tabs and line breaks, but no other control
/// character or bidirectional override).
pub fn check_notes(notes: &str) -> Result<(), TextError> {
    let len = notes.chars().count();
    if len > 2000 {
        return Err(TextError::LongNotes(len));
    }
    check_plain_text("notes", notes, TextKind::Lines)?;
    Ok(())
}

/// Why a backup or restore may not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackupRefusal {
    #[error(
        "{instance} is on release {release}; only release {minimum} or later can be backed up. Update it first"
    )]
    ReleaseTooOld {
        instance: String,
        release: ReleaseVersion,
        minimum: ReleaseVersion,
    },
    #[error(
        "{target} is a production instance, and backups are only restored into sandbox instances. Switch it to sandbox first, restore, then switch it back"
    )]
    TargetNotSandbox { target: String },
    #[error("{target} is {state}; wait until it is available")]
    TargetBusy { target: String, state: &'static str },
    #[error("{instance} is {state}; wait until it is available")]
    SourceBusy {
        instance: String,
        state: &'static str,
    },
}

/// A backup of an instance on `release` needs `release >= minimum`; the instance must not be
/// in the middle of a restore, update or refresh (it stays available while backed up).
pub fn check_backup(
    instance: &str,
    release: ReleaseVersion,
    state: InstanceState,
    minimum: ReleaseVersion,
) -> Result<(), BackupRefusal> {
    if release < minimum {
        return Err(BackupRefusal::ReleaseTooOld {
            instance: instance.to_owned(),
            release,
            minimum,
        });
    }
    if !matches!(state, InstanceState::Available | InstanceState::BackingUp) {
        return Err(BackupRefusal::SourceBusy {
            instance: instance.to_owned(),
            state: state.label(),
        });
    }
    Ok(())
}

/// Restores (and refreshes) only ever write into an available sandbox.
pub fn check_restore_target(
    target: &str,
    instance_type: InstanceType,
    state: InstanceState,
) -> Result<(), BackupRefusal> {
    if instance_type != InstanceType::Sandbox {
        return Err(BackupRefusal::TargetNotSandbox {
            target: target.to_owned(),
        });
    }
    if state != InstanceState::Available {
        return Err(BackupRefusal::TargetBusy {
            target: target.to_owned(),
            state: state.label(),
        });
    }
    Ok(())
}

impl BackupRefusal {
    /// A few words for a list of choices, e.g. beside a target the restore page cannot use.
    pub fn hint(&self) -> String {
        match self {
            BackupRefusal::TargetNotSandbox { .. } => "production: switch to sandbox first".into(),
            BackupRefusal::TargetBusy { state, .. } | BackupRefusal::SourceBusy { state, .. } => {
                format!("{}: wait until it is available", state.to_lowercase())
            }
            BackupRefusal::ReleaseTooOld { minimum, .. } => {
                format!("release too old: update to {minimum} first")
            }
        }
    }
}

/// Retention in days must be 1–35 (the seed keeps backups up to three days by default).
pub fn check_retention_days(days: u32) -> Result<(), String> {
    if !(1..=35).contains(&days) {
        return Err(format!("backup retention must be 1–35 days (got {days})"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_targets_are_offered_by_the_rule_with_a_hint() {
        let prod = check_restore_target("p", InstanceType::Production, InstanceState::Available)
            .unwrap_err();
        assert_eq!(prod.hint(), "production: switch to sandbox first");
        let busy =
            check_restore_target("s", InstanceType::Sandbox, InstanceState::BackingUp).unwrap_err();
        assert!(busy.hint().starts_with("backing up"), "{}", busy.hint());
        assert!(check_restore_target("s", InstanceType::Sandbox, InstanceState::Available).is_ok());
    }

    fn v(s: &str) -> ReleaseVersion {
        s.parse().unwrap()
    }

    #[test]
    fn only_on_demand_backups_are_user_managed() {
        assert!(BackupKind::OnDemand.user_managed());
        assert!(!BackupKind::System.user_managed());
        assert!(!BackupKind::PreUpdate.user_managed());
        assert!(!BackupKind::PreRefresh.user_managed());
        assert_eq!(
            "pre_refresh".parse::<BackupKind>().unwrap(),
            BackupKind::PreRefresh
        );
    }

    #[test]
    fn labels_are_required_and_bounded() {
        assert_eq!(
            Label::parse("  before go-live ").unwrap().as_str(),
            "before go-live"
        );
        assert_eq!(Label::parse("   "), Err(TextError::EmptyLabel));
        assert!(matches!(
            Label::parse(&"x".repeat(101)),
            Err(TextError::LongLabel(101))
        ));
        assert!(check_notes(&"n".repeat(2000)).is_ok());
        assert!(check_notes(&"n".repeat(2001)).is_err());
    }

    #[test]
    fn labels_refuse_control_characters_and_bidi_overrides() {
        let err = Label::parse("ab\u{202e}cd").unwrap_err().to_string();
        assert_eq!(
            err,
            "a label may not contain U+202E RIGHT-TO-LEFT OVERRIDE (at position 3)"
        );
        let err = Label::parse("x\0y").unwrap_err().to_string();
        assert!(err.contains("U+0000 NULL (at position 2)"), "{err}");
        // Positions count what was typed, leading spaces too.
        let err = Label::parse("  a\u{1b}[31m").unwrap_err().to_string();
        assert!(err.contains("U+001B ESCAPE (at position 4)"), "{err}");
        for bad in [
            "a\tb",
            "a\nb",
            "a\u{7f}",
            "a\u{85}b",
            "a\u{2066}b",
            "a\u{200f}",
            "a\u{2028}b",
        ] {
            assert!(Label::parse(bad).is_err(), "{bad:?} is refused");
        }
        // Ordinary text in any script is fine.
        assert!(Label::parse("vor dem Update – ünïcödé 日本 שלום").is_ok());
    }

    #[test]
    fn notes_keep_tabs_and_line_breaks_but_refuse_other_controls() {
        assert!(check_notes("line one\r\n\tline two\nthree").is_ok());
        let err = check_notes("fine\nbut\0not").unwrap_err().to_string();
        assert_eq!(err, "notes may not contain U+0000 NULL (at position 9)");
        let err = check_notes("\u{202e}abc").unwrap_err().to_string();
        assert!(
            err.contains("U+202E RIGHT-TO-LEFT OVERRIDE (at position 1)"),
            "{err}"
        );
        assert!(check_notes("bell\u{7}").is_err());
        assert!(check_notes("para\u{2029}graph").is_err());
    }

    #[test]
    fn old_releases_cannot_be_backed_up() {
        let err = check_backup("crm", v("8.0"), InstanceState::Available, v("8.1")).unwrap_err();
        assert!(err.to_string().contains("8.1 or later"), "{err}");
        assert!(check_backup("crm", v("8.1"), InstanceState::Available, v("8.1")).is_ok());
        assert!(check_backup("crm", v("9.1"), InstanceState::BackingUp, v("8.1")).is_ok());
        assert!(check_backup("crm", v("9.1"), InstanceState::Restoring, v("8.1")).is_err());
    }

    #[test]
    fn restores_only_write_into_available_sandboxes() {
        let err = check_restore_target("prod", InstanceType::Production, InstanceState::Available)
            .unwrap_err();
        assert!(
            err.to_string().contains("Switch it to sandbox first"),
            "{err}"
        );
        assert!(
            check_restore_target("sb", InstanceType::Sandbox, InstanceState::Available).is_ok()
        );
        assert!(matches!(
            check_restore_target("sb", InstanceType::Sandbox, InstanceState::Restoring),
            Err(BackupRefusal::TargetBusy { .. })
        ));
    }

    #[test]
    fn retention_is_one_to_thirty_five_days() {
        assert!(check_retention_days(0).is_err());
        assert!(check_retention_days(1).is_ok());
        assert!(check_retention_days(35).is_ok());
        assert!(check_retention_days(36).is_err());
    }
}
