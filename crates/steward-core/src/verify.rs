//! The rules of backup verification: how thoroughly a verify checks (its mode, and the
//! bounds of a sample), and when a backup counts as damaged. A backup is damaged from the
//! moment a verify finds a problem in it until a later verify that *would have seen that
//! problem* finds it whole again: a check that reads no data cannot clear damage found by
//! reading data, and a sample cannot clear what it may not have looked at.

use std::fmt;

use serde::Serialize;

/// How thoroughly a verify checks a backup.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum VerifyMode {
    /// Metadata only, no chunk data read: the manifest and chunk list, every chunk located in
    /// a pack index, and every pack the backup needs present and long enough for its frames.
    Structure,
    /// Also read every chunk the backup needs and check it against its hash.
    ReadData,
    /// Like `Structure`, and read this percentage (in (0, 100]) of the backup's data.
    Sample { percent: f64 },
}

/// Why a verify request's mode is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VerifyModeError {
    #[error("the verify mode must be one of structure read_data sample (got {0:?})")]
    UnknownMode(String),
    #[error("the sample must be a percentage greater than 0 and at most 100, e.g. 10 (got {0})")]
    SampleOutOfRange(f64),
    #[error("the sample mode needs a percentage of the data to read, e.g. sample_percent 10")]
    SampleMissing,
    #[error("a sample percentage only goes with the sample mode (the mode is {0})")]
    SampleWithoutSampleMode(&'static str),
}

impl VerifyMode {
    /// The words the API, CLI and store use.
    pub const WORDS: &'static [&'static str] = &["structure", "read_data", "sample"];

    /// Reads a mode word and, for `sample`, its percentage.
    pub fn parse(mode: &str, sample_percent: Option<f64>) -> Result<Self, VerifyModeError> {
        let mode = match mode {
            "structure" => VerifyMode::Structure,
            "read_data" => VerifyMode::ReadData,
            "sample" => {
                let p = sample_percent.ok_or(VerifyModeError::SampleMissing)?;
                return Self::sample(p);
            }
            other => return Err(VerifyModeError::UnknownMode(other.to_owned())),
        };
        match sample_percent {
            Some(_) => Err(VerifyModeError::SampleWithoutSampleMode(mode.as_str())),
            None => Ok(mode),
        }
    }

    /// A sample of `percent` of the data, which must be in (0, 100].
    pub fn sample(percent: f64) -> Result<Self, VerifyModeError> {
        if percent.is_finite() && percent > 0.0 && percent <= 100.0 {
            Ok(VerifyMode::Sample { percent })
        } else {
            Err(VerifyModeError::SampleOutOfRange(percent))
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Structure => "structure",
            VerifyMode::ReadData => "read_data",
            VerifyMode::Sample { .. } => "sample",
        }
    }

    pub fn sample_percent(self) -> Option<f64> {
        match self {
            VerifyMode::Sample { percent } => Some(percent),
            _ => None,
        }
    }

    /// Whether this mode reads chunk data.
    pub fn reads_data(self) -> bool {
        !matches!(self, VerifyMode::Structure)
    }

    /// For people: `structure only, no data read`, `all data read`, `10 % of the data
    /// read`.
    pub fn label(self) -> String {
        match self {
            VerifyMode::Structure => "structure only, no data read".into(),
            VerifyMode::ReadData => "all data read".into(),
            VerifyMode::Sample { percent } => format!("{} % of the data read", trim(percent)),
        }
    }

    /// Whether a verify in this mode that found a backup whole proves that a problem found
    /// earlier by a verify in mode `found_by` is gone: reading all the data clears anything;
    /// a structure check clears what a structure check found; a sample clears nothing (it
    /// may not have looked where the problem was).
    pub fn clears(self, found_by: VerifyMode) -> bool {
        match self {
            VerifyMode::ReadData => true,
            VerifyMode::Structure => found_by == VerifyMode::Structure,
            VerifyMode::Sample { .. } => false,
        }
    }
}

impl fmt::Display for VerifyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyMode::Sample { percent } => write!(f, "sample {} %", trim(*percent)),
            m => f.write_str(m.as_str()),
        }
    }
}

/// `10` for 10.0, `2.5` for 2.5.
fn trim(p: f64) -> String {
    let s = format!("{p:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Which of a backup's verifications (given oldest first as `(mode, ok)`) still stand as
/// damage: every failed verify not followed by a verify that clears it. Empty: the backup is
/// not damaged. Returns indexes into `history`, oldest first.
pub fn standing_damage(history: &[(VerifyMode, bool)]) -> Vec<usize> {
    let mut standing: Vec<usize> = Vec::new();
    for (i, &(mode, ok)) in history.iter().enumerate() {
        if ok {
            standing.retain(|&f| !mode.clears(history[f].0));
        } else {
            standing.push(i);
        }
    }
    standing
}

#[cfg(test)]
mod tests {
    use super::*;
    use VerifyMode::*;

    #[test]
    fn modes_parse_with_their_sample_bounds() {
        assert_eq!(VerifyMode::parse("structure", None), Ok(Structure));
        assert_eq!(VerifyMode::parse("read_data", None), Ok(ReadData));
        assert_eq!(
            VerifyMode::parse("sample", Some(10.0)),
            Ok(Sample { percent: 10.0 })
        );
        assert_eq!(
            VerifyMode::parse("sample", Some(100.0)),
            Ok(Sample { percent: 100.0 })
        );
        for bad in [0.0, -1.0, 100.01, 150.0, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    VerifyMode::parse("sample", Some(bad)),
                    Err(VerifyModeError::SampleOutOfRange(_))
                ),
                "{bad}"
            );
        }
        assert_eq!(
            VerifyMode::parse("sample", None),
            Err(VerifyModeError::SampleMissing)
        );
        assert_eq!(
            VerifyMode::parse("read_data", Some(5.0)),
            Err(VerifyModeError::SampleWithoutSampleMode("read_data"))
        );
        assert!(matches!(
            VerifyMode::parse("full", None),
            Err(VerifyModeError::UnknownMode(_))
        ));
        assert_eq!(Sample { percent: 2.5 }.to_string(), "sample 2.5 %");
        assert_eq!(Sample { percent: 10.0 }.label(), "10 % of the data read");
    }

    #[test]
    fn damage_stands_until_a_verify_that_would_see_it_passes() {
        let s = Sample { percent: 10.0 };
        // Found by reading data: a structure check or a sample does not clear it.
        assert_eq!(
            standing_damage(&[
                (ReadData, true),
                (ReadData, false),
                (Structure, true),
                (s, true)
            ]),
            [1]
        );
        assert!(standing_damage(&[(ReadData, false), (ReadData, true)]).is_empty());
        // Found by a structure check: a later structure check clears it.
        assert!(standing_damage(&[(Structure, false), (Structure, true)]).is_empty());
        // Several failures: each needs its own clearing.
        assert_eq!(
            standing_damage(&[(ReadData, false), (Structure, false), (Structure, true)]),
            [0]
        );
        assert_eq!(standing_damage(&[(s, false), (s, true)]), [0]);
        assert!(standing_damage(&[(s, true), (Structure, true)]).is_empty());
        assert!(standing_damage(&[]).is_empty());
    }
}
