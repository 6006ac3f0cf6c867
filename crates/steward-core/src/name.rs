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

/// Free text people type and others read (backup labels and notes, token names): any script
/// is welcome, but not characters that are invisible or rewrite what is around them when
/// shown: control characters (a NUL, an escape sequence) and the bidirectional formatting
/// characters that reorder text (U+202E RIGHT-TO-LEFT OVERRIDE and its kin, the "Trojan
/// Source" characters), nor the Unicode line and paragraph separators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextKind {
    /// One line (labels, names): no control character at all, not even a tab.
    Line,
    /// Several lines (notes): tabs and line breaks (`\n`, `\r\n`) are allowed.
    Lines,
}

/// A character that free text may not contain, with where it was (1-based, counting
/// characters as typed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} may not contain {} (at position {position})", describe_char(*found))]
pub struct UnsafeText {
    /// What the text is, e.g. "a label", "notes".
    pub what: &'static str,
    pub found: char,
    pub position: usize,
}

/// Refuses control characters (but tabs and line breaks in [`TextKind::Lines`]), the
/// bidirectional formatting characters (Unicode's Bidi_Control set) and U+2028/U+2029.
pub fn check_plain_text(what: &'static str, text: &str, kind: TextKind) -> Result<(), UnsafeText> {
    for (i, c) in text.chars().enumerate() {
        let allowed_break = kind == TextKind::Lines && matches!(c, '\t' | '\n' | '\r');
        if (c.is_control() && !allowed_break)
            || bidi_control(c)
            || matches!(c, '\u{2028}' | '\u{2029}')
        {
            return Err(UnsafeText {
                what,
                found: c,
                position: i + 1,
            });
        }
    }
    Ok(())
}

/// Unicode's Bidi_Control characters: marks, embeddings, overrides and isolates.
fn bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `U+202E RIGHT-TO-LEFT OVERRIDE`: the code point and, for the characters refused above,
/// its name (control characters by their usual alias).
pub fn describe_char(c: char) -> String {
    const C0: [&str; 32] = [
        "NULL",
        "START OF HEADING",
        "START OF TEXT",
        "END OF TEXT",
        "END OF TRANSMISSION",
        "ENQUIRY",
        "ACKNOWLEDGE",
        "BELL",
        "BACKSPACE",
        "CHARACTER TABULATION",
        "LINE FEED",
        "LINE TABULATION",
        "FORM FEED",
        "CARRIAGE RETURN",
        "SHIFT OUT",
        "SHIFT IN",
        "DATA LINK ESCAPE",
        "DEVICE CONTROL ONE",
        "DEVICE CONTROL TWO",
        "DEVICE CONTROL THREE",
        "DEVICE CONTROL FOUR",
        "NEGATIVE ACKNOWLEDGE",
        "SYNCHRONOUS IDLE",
        "END OF TRANSMISSION BLOCK",
        "CANCEL",
        "END OF MEDIUM",
        "SUBSTITUTE",
        "ESCAPE",
        "INFORMATION SEPARATOR FOUR",
        "INFORMATION SEPARATOR THREE",
        "INFORMATION SEPARATOR TWO",
        "INFORMATION SEPARATOR ONE",
    ];
    let name = match c {
        '\0'..='\u{1f}' => C0[c as usize],
        '\u{7f}' => "DELETE",
        '\u{85}' => "NEXT LINE",
        '\u{80}'..='\u{9f}' => "a control character",
        '\u{061c}' => "ARABIC LETTER MARK",
        '\u{200e}' => "LEFT-TO-RIGHT MARK",
        '\u{200f}' => "RIGHT-TO-LEFT MARK",
        '\u{202a}' => "LEFT-TO-RIGHT EMBEDDING",
        '\u{202b}' => "RIGHT-TO-LEFT EMBEDDING",
        '\u{202c}' => "POP DIRECTIONAL FORMATTING",
        '\u{202d}' => "LEFT-TO-RIGHT OVERRIDE",
        '\u{202e}' => "RIGHT-TO-LEFT OVERRIDE",
        '\u{2066}' => "LEFT-TO-RIGHT ISOLATE",
        '\u{2067}' => "RIGHT-TO-LEFT ISOLATE",
        '\u{2068}' => "FIRST STRONG ISOLATE",
        '\u{2069}' => "POP DIRECTIONAL ISOLATE",
        '\u{2028}' => "LINE SEPARATOR",
        '\u{2029}' => "PARAGRAPH SEPARATOR",
        _ => return format!("U+{:04X} {c:?}", c as u32),
    };
    format!("U+{:04X} {name}", c as u32)
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
    fn plain_text_refuses_controls_and_bidi_characters_by_name() {
        assert!(check_plain_text("a name", "Grüße, 世界 — ok", TextKind::Line).is_ok());
        assert!(check_plain_text("notes", "a\tb\r\nc", TextKind::Lines).is_ok());
        let e = check_plain_text("a name", "a\tb", TextKind::Line).unwrap_err();
        assert_eq!(
            e.to_string(),
            "a name may not contain U+0009 CHARACTER TABULATION (at position 2)"
        );
        for (c, name) in [
            ('\0', "U+0000 NULL"),
            ('\u{1b}', "U+001B ESCAPE"),
            ('\u{7f}', "U+007F DELETE"),
            ('\u{9b}', "U+009B a control character"),
            ('\u{61c}', "U+061C ARABIC LETTER MARK"),
            ('\u{202d}', "U+202D LEFT-TO-RIGHT OVERRIDE"),
            ('\u{2067}', "U+2067 RIGHT-TO-LEFT ISOLATE"),
            ('\u{2029}', "U+2029 PARAGRAPH SEPARATOR"),
        ] {
            let e = check_plain_text("notes", &format!("ab{c}"), TextKind::Lines).unwrap_err();
            assert_eq!((e.found, e.position), (c, 3));
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn usernames() {
        assert!(Username::parse("alice@example.com").is_ok());
        assert!(Username::parse("a").is_err());
        assert!(Username::parse("al ice").is_err());
        assert!(Username::parse(".alice").is_err());
    }
}
