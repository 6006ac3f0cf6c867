//! Names that reach the services already valid: instance names and usernames.
//! Parse, don't validate: a value of these types cannot hold a bad name.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused. The message says exactly which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{what} must be {min}–{max} characters long (got {len})")]
    Length {
        what: &'static str,
        min: usize,
        max: usize,
        len: usize,
    },
    #[error("{what} may contain only {allowed} (found {found:?})")]
    Character {
        what: &'static str,
        allowed: &'static str,
        found: char,
    },
    #[error("{what} must start and end with a letter or digit")]
    Edge { what: &'static str },
}

/// An instance name: 3–63 lowercase ASCII letters, digits and dashes, starting and ending with
/// a letter or digit (so it is safe as a file name, a DNS label and a URL segment).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct InstanceName(String);

impl InstanceName {
    pub const MIN_LEN: usize = 3;
    pub const MAX_LEN: usize = 63;

    pub fn parse(raw: &str) -> Result<Self, NameError> {
        const WHAT: &str = "an instance name";
        let len = raw.chars().count();
        if !(Self::MIN_LEN..=Self::MAX_LEN).contains(&len) {
            return Err(NameError::Length {
                what: WHAT,
                min: Self::MIN_LEN,
                max: Self::MAX_LEN,
                len,
            });
        }
        if let Some(found) = raw
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
        {
            return Err(NameError::Character {
                what: WHAT,
                allowed: "lowercase letters, digits and dashes",
                found,
            });
        }
        if raw.starts_with('-') || raw.ends_with('-') {
            return Err(NameError::Edge { what: WHAT });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for InstanceName {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<InstanceName> for String {
    fn from(value: InstanceName) -> Self {
        value.0
    }
}

impl fmt::Display for InstanceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A user's login name: 2–64 characters of letters, digits, `.`, `_`, `-` and `@`
/// (so an email address works), starting with a letter or digit. Stored as typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Username(String);

impl Username {
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        const WHAT: &str = "a username";
        let len = raw.chars().count();
        if !(2..=64).contains(&len) {
            return Err(NameError::Length {
                what: WHAT,
                min: 2,
                max: 64,
                len,
            });
        }
        if let Some(found) = raw
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@')))
        {
            return Err(NameError::Character {
                what: WHAT,
                allowed: "letters, digits, '.', '_', '-' and '@'",
                found,
            });
        }
        if !raw.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            return Err(NameError::Edge { what: WHAT });
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Username {
    type Error = NameError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Username> for String {
    fn from(value: Username) -> Self {
        value.0
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_that_are_accepted() {
        for ok in ["abc", "crm-prod-01", "a1b", &"x".repeat(63)] {
            assert_eq!(InstanceName::parse(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn instance_names_that_are_refused_say_why() {
        assert!(matches!(
            InstanceName::parse("ab"),
            Err(NameError::Length { len: 2, .. })
        ));
        assert!(matches!(
            InstanceName::parse(&"x".repeat(64)),
            Err(NameError::Length { len: 64, .. })
        ));
        assert!(matches!(
            InstanceName::parse("Prod"),
            Err(NameError::Character { found: 'P', .. })
        ));
        assert!(matches!(
            InstanceName::parse("my_db"),
            Err(NameError::Character { found: '_', .. })
        ));
        assert!(matches!(
            InstanceName::parse("../etc"),
            Err(NameError::Character { found: '.', .. })
        ));
        assert!(matches!(
            InstanceName::parse("-abc"),
            Err(NameError::Edge { .. })
        ));
        assert!(matches!(
            InstanceName::parse("abc-"),
            Err(NameError::Edge { .. })
        ));
        let msg = InstanceName::parse("a b c").unwrap_err().to_string();
        assert!(
            msg.contains("lowercase letters, digits and dashes"),
            "{msg}"
        );
    }

    #[test]
    fn instance_name_deserialisation_validates() {
        let err = serde_json::from_str::<InstanceName>("\"BAD\"");
        assert!(err.is_err());
    }

    #[test]
    fn usernames() {
        assert!(Username::parse("alice@example.com").is_ok());
        assert!(Username::parse("a").is_err());
        assert!(Username::parse("al ice").is_err());
        assert!(Username::parse(".alice").is_err());
    }
}
