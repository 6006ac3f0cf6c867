//! The release catalog: which application releases exist, in which order, and the migration
//! SQL that takes a database from one release to the next. The catalog is data the operator
//! edits (a directory with a `catalog.toml` and one SQL file per release), not code; a sample
//! catalog for a small CRM application ships inside the binary ([`Catalog::builtin`]).
//!
//! This module parses and validates the catalog; it never runs SQL. Applying migrations to a
//! database is the engines' job (`steward-engine`), which can also prove a whole catalog
//! applies cleanly from an empty database.
//!
//! # `catalog.toml`
//!
//! ```toml
//! application = "crm"                 # the application this catalog describes
//!
//! [[release]]
//! version = "8.1"                     # MAJOR.MINOR or MAJOR.MINOR.PATCH
//! kind = "major"                      # "major" or "service"
//! released = "2016-12-05"             # YYYY-MM-DD (a quoted string or a bare TOML date)
//! end_of_support = "2019-01-31"       # optional, same format, not before `released`
//! migration = "8.1.sql"               # file beside catalog.toml
//! description = "Base schema"         # optional, free text
//! ```
//!
//! Each release's migration takes a database at the previous release (by version order, not by
//! order in the file) to this release; the first release's migration builds the schema from
//! an empty database, so the first release must be a major release. Migrations run inside a
//! transaction, so they must not contain `BEGIN`/`COMMIT` themselves. Unknown keys are
//! rejected, so a typo is an error rather than a silently ignored setting.
//!
//! Versions compare numerically (`9.0 < 10.0`); a missing patch counts as `.0`, so `9.1` and
//! `9.1.0` are the same release and cannot both appear in one catalog.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An application release number: `MAJOR.MINOR` or `MAJOR.MINOR.PATCH`, decimal, no leading
/// zeros. Ordered numerically; a missing patch equals `.0`. Displays as written.
#[derive(Debug, Clone, Copy)]
pub struct ReleaseVersion {
    major: u32,
    minor: u32,
    patch: Option<u32>,
}

/// Why a string is not a [`ReleaseVersion`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseVersionError {
    #[error("release version is empty; expected MAJOR.MINOR such as 9.0")]
    Empty,
    #[error(
        "release version `{input}` must have the form MAJOR.MINOR or MAJOR.MINOR.PATCH, such as 9.0 or 9.1.2"
    )]
    Shape { input: String },
    #[error("release version `{input}`: `{part}` is not a decimal number")]
    NotANumber { input: String, part: String },
    #[error("release version `{input}`: `{part}` has a leading zero")]
    LeadingZero { input: String, part: String },
    #[error("release version `{input}`: `{part}` is too large")]
    TooLarge { input: String, part: String },
}

impl ReleaseVersion {
    /// A `MAJOR.MINOR` version.
    pub const fn new(major: u32, minor: u32) -> Self {
        ReleaseVersion {
            major,
            minor,
            patch: None,
        }
    }

    /// A `MAJOR.MINOR.PATCH` version.
    pub const fn with_patch(major: u32, minor: u32, patch: u32) -> Self {
        ReleaseVersion {
            major,
            minor,
            patch: Some(patch),
        }
    }

    /// Parses `MAJOR.MINOR` or `MAJOR.MINOR.PATCH`.
    pub fn parse(input: &str) -> Result<Self, ReleaseVersionError> {
        if input.is_empty() {
            return Err(ReleaseVersionError::Empty);
        }
        let parts: Vec<&str> = input.split('.').collect();
        if !(2..=3).contains(&parts.len()) {
            return Err(ReleaseVersionError::Shape {
                input: input.to_owned(),
            });
        }
        let mut numbers = [0u32; 3];
        for (slot, part) in numbers.iter_mut().zip(&parts) {
            *slot = parse_component(input, part)?;
        }
        Ok(ReleaseVersion {
            major: numbers[0],
            minor: numbers[1],
            patch: (parts.len() == 3).then_some(numbers[2]),
        })
    }

    pub fn major(&self) -> u32 {
        self.major
    }

    pub fn minor(&self) -> u32 {
        self.minor
    }

    /// The patch number; `0` when the version was written as `MAJOR.MINOR`.
    pub fn patch(&self) -> u32 {
        self.patch.unwrap_or(0)
    }

    fn key(&self) -> (u32, u32, u32) {
        (self.major, self.minor, self.patch())
    }
}

fn parse_component(input: &str, part: &str) -> Result<u32, ReleaseVersionError> {
    let err_part = || part.to_owned();
    if part.is_empty() {
        return Err(ReleaseVersionError::Shape {
            input: input.to_owned(),
        });
    }
    if !part.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ReleaseVersionError::NotANumber {
            input: input.to_owned(),
            part: err_part(),
        });
    }
    if part.len() > 1 && part.starts_with('0') {
        return Err(ReleaseVersionError::LeadingZero {
            input: input.to_owned(),
            part: err_part(),
        });
    }
    part.parse().map_err(|_| ReleaseVersionError::TooLarge {
        input: input.to_owned(),
        part: err_part(),
    })
}

impl PartialEq for ReleaseVersion {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ReleaseVersion {}

impl Hash for ReleaseVersion {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for ReleaseVersion {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ReleaseVersion {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key().cmp(&other.key())
    }
}

impl fmt::Display for ReleaseVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)?;
        if let Some(patch) = self.patch {
            write!(f, ".{patch}")?;
        }
        Ok(())
    }
}

impl FromStr for ReleaseVersion {
    type Err = ReleaseVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReleaseVersion::parse(s)
    }
}

impl Serialize for ReleaseVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ReleaseVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        ReleaseVersion::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Whether a release is a major release (new features, schema changes) or a service release
/// (fixes on top of a major release).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReleaseKind {
    Major,
    Service,
}

impl fmt::Display for ReleaseKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReleaseKind::Major => "major",
            ReleaseKind::Service => "service",
        })
    }
}

/// One release of the application and the SQL that takes the previous release (or an empty
/// database, for the first release) to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Release {
    pub version: ReleaseVersion,
    pub kind: ReleaseKind,
    pub released: NaiveDate,
    pub end_of_support: Option<NaiveDate>,
    #[serde(skip)]
    pub migration_sql: String,
    pub description: String,
}

/// Why a catalog cannot be loaded or a question about it cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read release catalog {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("release catalog {path} is not valid: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("release catalog {path}: `application` must not be empty")]
    NoApplication { path: PathBuf },
    #[error("release catalog {path} lists no releases; add at least one [[release]]")]
    NoReleases { path: PathBuf },
    #[error("release catalog {path}: release {version} is listed more than once")]
    DuplicateVersion {
        path: PathBuf,
        version: ReleaseVersion,
    },
    #[error(
        "release catalog {path}: the first release, {version}, builds the database from empty and must be a major release, not a {kind} release"
    )]
    FirstReleaseNotMajor {
        path: PathBuf,
        version: ReleaseVersion,
        kind: ReleaseKind,
    },
    #[error(
        "release catalog {path}: release {version} ends support on {end_of_support}, before it was released on {released}"
    )]
    SupportEndsBeforeRelease {
        path: PathBuf,
        version: ReleaseVersion,
        released: NaiveDate,
        end_of_support: NaiveDate,
    },
    #[error(
        "release catalog {path}: migration `{migration}` of release {version} must be a relative path inside the catalog directory"
    )]
    MigrationOutsideCatalog {
        path: PathBuf,
        version: ReleaseVersion,
        migration: String,
    },
    #[error("cannot read migration {path} of release {version}: {source}")]
    MigrationUnreadable {
        path: PathBuf,
        version: ReleaseVersion,
        #[source]
        source: std::io::Error,
    },
    #[error("migration {path} of release {version} is empty")]
    MigrationEmpty {
        path: PathBuf,
        version: ReleaseVersion,
    },
    #[error("release {version} is not in the {application} catalog")]
    UnknownRelease {
        application: String,
        version: ReleaseVersion,
    },
    #[error("cannot go from release {from} back to the earlier release {to}")]
    Downgrade {
        from: ReleaseVersion,
        to: ReleaseVersion,
    },
}

/// The releases of one application, sorted by ascending version, each with its migration.
///
/// Holds only validated data: at least one release, unique versions, a non-empty migration for
/// each, and a major release first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    application: String,
    releases: Vec<Release>,
}

/// `catalog.toml` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CatalogFile {
    application: String,
    #[serde(default)]
    release: Vec<ReleaseEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseEntry {
    version: ReleaseVersion,
    kind: ReleaseKind,
    #[serde(deserialize_with = "date")]
    released: NaiveDate,
    #[serde(default, deserialize_with = "optional_date")]
    end_of_support: Option<NaiveDate>,
    migration: String,
    #[serde(default)]
    description: String,
}

/// Accepts a date as a string (`"2016-12-05"`) or as a bare TOML local date (`2016-12-05`).
fn date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<NaiveDate, D::Error> {
    use serde::de::Error;
    let text = match toml::Value::deserialize(deserializer)? {
        toml::Value::String(s) => s,
        toml::Value::Datetime(dt) if dt.time.is_none() && dt.offset.is_none() => dt.to_string(),
        other => {
            return Err(D::Error::custom(format!(
                "expected a date such as \"2016-12-05\", found {other}"
            )));
        }
    };
    NaiveDate::parse_from_str(&text, "%Y-%m-%d").map_err(|e| {
        D::Error::custom(format!(
            "`{text}` is not a date of the form YYYY-MM-DD ({e})"
        ))
    })
}

fn optional_date<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<NaiveDate>, D::Error> {
    date(deserializer).map(Some)
}

/// The sample CRM catalog shipped in the binary, as (file name, contents).
const BUILTIN_TOML: &str = include_str!("../../../catalog/crm/catalog.toml");
const BUILTIN_MIGRATIONS: &[(&str, &str)] = &[
    ("8.0.sql", include_str!("../../../catalog/crm/8.0.sql")),
    ("8.1.sql", include_str!("../../../catalog/crm/8.1.sql")),
    ("8.2.sql", include_str!("../../../catalog/crm/8.2.sql")),
    ("9.0.sql", include_str!("../../../catalog/crm/9.0.sql")),
    ("9.1.sql", include_str!("../../../catalog/crm/9.1.sql")),
];

impl Catalog {
    /// Loads and validates `<dir>/catalog.toml` and the migration files it names.
    pub fn load_dir(dir: impl AsRef<Path>) -> Result<Catalog, CatalogError> {
        let dir = dir.as_ref();
        let path = dir.join("catalog.toml");
        let text = std::fs::read_to_string(&path).map_err(|source| CatalogError::Read {
            path: path.clone(),
            source,
        })?;
        Catalog::from_parts(&path, &text, |migration| {
            let file = dir.join(migration);
            let sql = std::fs::read_to_string(&file);
            (file, sql)
        })
    }

    /// The sample CRM catalog (`catalog/crm/` in the repository), embedded in the binary.
    pub fn builtin() -> Catalog {
        let path = Path::new("<builtin>/catalog/crm/catalog.toml");
        Catalog::from_parts(path, BUILTIN_TOML, |migration| {
            let file = Path::new("<builtin>/catalog/crm").join(migration);
            let sql = BUILTIN_MIGRATIONS
                .iter()
                .find(|(name, _)| *name == migration)
                .map(|(_, sql)| (*sql).to_owned())
                .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound));
            (file, sql)
        })
        .expect("the builtin catalog is valid (checked by the release module's tests)")
    }

    /// Parses and validates a catalog; `read_migration` maps a migration name to the path
    /// used in messages and the file's contents.
    fn from_parts(
        path: &Path,
        text: &str,
        read_migration: impl Fn(&str) -> (PathBuf, std::io::Result<String>),
    ) -> Result<Catalog, CatalogError> {
        let file: CatalogFile = toml::from_str(text).map_err(|source| CatalogError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        let application = file.application.trim().to_owned();
        if application.is_empty() {
            return Err(CatalogError::NoApplication {
                path: path.to_owned(),
            });
        }
        let mut releases = Vec::with_capacity(file.release.len());
        for entry in file.release {
            let version = entry.version;
            if releases.iter().any(|r: &Release| r.version == version) {
                return Err(CatalogError::DuplicateVersion {
                    path: path.to_owned(),
                    version,
                });
            }
            if let Some(end) = entry.end_of_support
                && end < entry.released
            {
                return Err(CatalogError::SupportEndsBeforeRelease {
                    path: path.to_owned(),
                    version,
                    released: entry.released,
                    end_of_support: end,
                });
            }
            if !is_plain_relative(&entry.migration) {
                return Err(CatalogError::MigrationOutsideCatalog {
                    path: path.to_owned(),
                    version,
                    migration: entry.migration,
                });
            }
            let (migration_path, sql) = read_migration(&entry.migration);
            let migration_sql = sql.map_err(|source| CatalogError::MigrationUnreadable {
                path: migration_path.clone(),
                version,
                source,
            })?;
            if migration_sql.trim().is_empty() {
                return Err(CatalogError::MigrationEmpty {
                    path: migration_path,
                    version,
                });
            }
            releases.push(Release {
                version,
                kind: entry.kind,
                released: entry.released,
                end_of_support: entry.end_of_support,
                migration_sql,
                description: entry.description.trim().to_owned(),
            });
        }
        releases.sort_by_key(|r| r.version);
        let Some(first) = releases.first() else {
            return Err(CatalogError::NoReleases {
                path: path.to_owned(),
            });
        };
        if first.kind != ReleaseKind::Major {
            return Err(CatalogError::FirstReleaseNotMajor {
                path: path.to_owned(),
                version: first.version,
                kind: first.kind,
            });
        }
        Ok(Catalog {
            application,
            releases,
        })
    }

    /// The application this catalog describes, e.g. `crm`.
    pub fn application(&self) -> &str {
        &self.application
    }

    /// All releases, by ascending version; never empty.
    pub fn releases(&self) -> &[Release] {
        &self.releases
    }

    /// The newest release.
    pub fn latest(&self) -> &Release {
        self.releases
            .last()
            .expect("a catalog has at least one release")
    }

    /// The oldest release, whose migration builds the database from empty.
    pub fn first(&self) -> &Release {
        &self.releases[0]
    }

    /// The release with this version, if the catalog has it.
    pub fn get(&self, version: &ReleaseVersion) -> Option<&Release> {
        self.releases
            .binary_search_by(|r| r.version.cmp(version))
            .ok()
            .map(|i| &self.releases[i])
    }

    /// The releases whose migrations take a database at `from` (`None`: an empty database) to
    /// `to`, in the order to apply them. Empty when `from == to`.
    pub fn migrations_between(
        &self,
        from: Option<&ReleaseVersion>,
        to: &ReleaseVersion,
    ) -> Result<Vec<&Release>, CatalogError> {
        let unknown = |version: &ReleaseVersion| CatalogError::UnknownRelease {
            application: self.application.clone(),
            version: *version,
        };
        self.get(to).ok_or_else(|| unknown(to))?;
        if let Some(from) = from {
            self.get(from).ok_or_else(|| unknown(from))?;
            if to < from {
                return Err(CatalogError::Downgrade {
                    from: *from,
                    to: *to,
                });
            }
        }
        Ok(self
            .releases
            .iter()
            .filter(|r| from.is_none_or(|from| r.version > *from) && r.version <= *to)
            .collect())
    }
}

/// A migration name must stay inside the catalog directory: relative, no `..`.
fn is_plain_relative(name: &str) -> bool {
    !name.trim().is_empty()
        && Path::new(name)
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> ReleaseVersion {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays_versions() {
        assert_eq!(v("8.1"), ReleaseVersion::new(8, 1));
        assert_eq!(v("10.2").to_string(), "10.2");
        assert_eq!(v("9.1.3"), ReleaseVersion::with_patch(9, 1, 3));
        assert_eq!(v("9.1.3").to_string(), "9.1.3");
        assert_eq!(v("0.0").to_string(), "0.0");
        assert_eq!(v("9.1.3").patch(), 3);
        assert_eq!(v("9.1").patch(), 0);
    }

    #[test]
    fn orders_versions_numerically() {
        assert!(v("9.0") < v("10.0"));
        assert!(v("8.2") < v("8.10"));
        assert!(v("8.1") < v("8.2"));
        assert!(v("9.1") < v("9.1.1"));
        assert_eq!(v("9.1"), v("9.1.0"));
        let mut list = vec![v("10.0"), v("9.1"), v("8.10"), v("8.2")];
        list.sort();
        assert_eq!(list, vec![v("8.2"), v("8.10"), v("9.1"), v("10.0")]);
    }

    #[test]
    fn rejects_garbage_versions() {
        use ReleaseVersionError as E;
        assert_eq!(ReleaseVersion::parse(""), Err(E::Empty));
        for bad in ["9", "9.", ".9", "9..1", "1.2.3.4", "v9.0 ", " 9.0"] {
            let err = ReleaseVersion::parse(bad).unwrap_err();
            assert!(
                matches!(err, E::Shape { .. } | E::NotANumber { .. }),
                "{bad}: {err:?}"
            );
        }
        assert!(matches!(
            ReleaseVersion::parse("9.x"),
            Err(E::NotANumber { part, .. }) if part == "x"
        ));
        assert!(matches!(
            ReleaseVersion::parse("9.-1"),
            Err(E::NotANumber { .. })
        ));
        assert!(matches!(
            ReleaseVersion::parse("09.1"),
            Err(E::LeadingZero { part, .. }) if part == "09"
        ));
        assert!(matches!(
            ReleaseVersion::parse("9.99999999999"),
            Err(E::TooLarge { .. })
        ));
        assert_eq!(
            ReleaseVersion::parse("9").unwrap_err().to_string(),
            "release version `9` must have the form MAJOR.MINOR or MAJOR.MINOR.PATCH, such as 9.0 or 9.1.2"
        );
    }

    #[test]
    fn versions_serialize_as_strings() {
        let json = serde_json::to_string(&v("9.0")).unwrap();
        assert_eq!(json, "\"9.0\"");
        let back: ReleaseVersion = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v("9.0"));
        assert!(serde_json::from_str::<ReleaseVersion>("\"nine\"").is_err());
        assert_eq!(
            serde_json::to_string(&ReleaseKind::Service).unwrap(),
            "\"service\""
        );
    }

    #[test]
    fn builtin_catalog_loads() {
        let catalog = Catalog::builtin();
        assert_eq!(catalog.application(), "crm");
        let versions: Vec<String> = catalog
            .releases()
            .iter()
            .map(|r| r.version.to_string())
            .collect();
        assert_eq!(versions, ["8.0", "8.1", "8.2", "9.0", "9.1"]);
        assert_eq!(catalog.latest().version, v("9.1"));
        assert_eq!(catalog.latest().kind, ReleaseKind::Service);
        assert_eq!(catalog.first().kind, ReleaseKind::Major);
        assert!(catalog.releases().iter().all(|r| !r.description.is_empty()));
        assert!(
            catalog
                .get(&v("8.0"))
                .unwrap()
                .migration_sql
                .contains("CREATE TABLE accounts")
        );
    }

    #[test]
    fn builtin_matches_the_catalog_directory() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../catalog/crm");
        assert_eq!(Catalog::load_dir(dir).unwrap(), Catalog::builtin());
    }

    #[test]
    fn migrations_between_releases() {
        let catalog = Catalog::builtin();
        let names = |list: Vec<&Release>| -> Vec<String> {
            list.iter().map(|r| r.version.to_string()).collect()
        };
        assert_eq!(
            names(catalog.migrations_between(None, &v("9.0")).unwrap()),
            ["8.0", "8.1", "8.2", "9.0"]
        );
        assert_eq!(
            names(catalog.migrations_between(None, &v("8.1")).unwrap()),
            ["8.0", "8.1"]
        );
        assert_eq!(
            names(
                catalog
                    .migrations_between(Some(&v("8.1")), &v("9.1"))
                    .unwrap()
            ),
            ["8.2", "9.0", "9.1"]
        );
        assert!(
            catalog
                .migrations_between(Some(&v("9.0")), &v("9.0"))
                .unwrap()
                .is_empty()
        );
        assert!(matches!(
            catalog.migrations_between(None, &v("7.0")),
            Err(CatalogError::UnknownRelease { version, .. }) if version == v("7.0")
        ));
        assert!(matches!(
            catalog.migrations_between(Some(&v("8.3")), &v("9.0")),
            Err(CatalogError::UnknownRelease { version, .. }) if version == v("8.3")
        ));
        assert!(matches!(
            catalog.migrations_between(Some(&v("9.1")), &v("8.2")),
            Err(CatalogError::Downgrade { .. })
        ));
        assert!(catalog.get(&v("9.0.0")).is_some());
        assert!(catalog.get(&v("9.2")).is_none());
    }

    struct Dir(tempfile::TempDir);

    impl Dir {
        fn new(toml: &str, files: &[(&str, &str)]) -> Dir {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("catalog.toml"), toml).unwrap();
            for (name, sql) in files {
                std::fs::write(dir.path().join(name), sql).unwrap();
            }
            Dir(dir)
        }

        fn load(&self) -> Result<Catalog, CatalogError> {
            Catalog::load_dir(self.0.path())
        }
    }

    const TWO_RELEASES: &str = r#"
application = "shop"

[[release]]
version = "2.0"
kind = "service"
released = 2021-03-01
migration = "2.0.sql"
description = "second"

[[release]]
version = "1.0"
kind = "major"
released = "2020-01-01"
end_of_support = "2022-01-01"
migration = "1.0.sql"
"#;

    #[test]
    fn load_dir_sorts_and_accepts_both_date_forms() {
        let dir = Dir::new(
            TWO_RELEASES,
            &[("1.0.sql", "CREATE TABLE t(x);"), ("2.0.sql", "SELECT 1;")],
        );
        let catalog = dir.load().unwrap();
        assert_eq!(catalog.application(), "shop");
        assert_eq!(catalog.first().version, v("1.0"));
        assert_eq!(catalog.latest().version, v("2.0"));
        assert_eq!(
            catalog.latest().released,
            NaiveDate::from_ymd_opt(2021, 3, 1).unwrap()
        );
        assert_eq!(
            catalog.first().end_of_support,
            NaiveDate::from_ymd_opt(2022, 1, 1)
        );
        assert_eq!(catalog.first().migration_sql, "CREATE TABLE t(x);");
        assert_eq!(catalog.first().description, "");
    }

    #[test]
    fn load_dir_reports_missing_catalog() {
        let dir = tempfile::tempdir().unwrap();
        let err = Catalog::load_dir(dir.path()).unwrap_err();
        assert!(matches!(err, CatalogError::Read { .. }), "{err:?}");
        assert!(err.to_string().contains("catalog.toml"), "{err}");
    }

    #[test]
    fn load_dir_reports_missing_migration_file() {
        let dir = Dir::new(TWO_RELEASES, &[("1.0.sql", "CREATE TABLE t(x);")]);
        let err = dir.load().unwrap_err();
        assert!(
            matches!(&err, CatalogError::MigrationUnreadable { version, path, .. }
                if *version == v("2.0") && path.ends_with("2.0.sql")),
            "{err:?}"
        );
        assert!(err.to_string().contains("2.0.sql"), "{err}");
        assert!(err.to_string().contains("release 2.0"), "{err}");
    }

    #[test]
    fn load_dir_reports_empty_migration_file() {
        let dir = Dir::new(
            TWO_RELEASES,
            &[("1.0.sql", "CREATE TABLE t(x);"), ("2.0.sql", " \n")],
        );
        assert!(matches!(
            dir.load().unwrap_err(),
            CatalogError::MigrationEmpty { version, .. } if version == v("2.0")
        ));
    }

    #[test]
    fn load_dir_reports_duplicate_version() {
        let toml = TWO_RELEASES.replace("version = \"2.0\"", "version = \"1.0.0\"");
        let dir = Dir::new(
            &toml,
            &[("1.0.sql", "CREATE TABLE t(x);"), ("2.0.sql", "SELECT 1;")],
        );
        let err = dir.load().unwrap_err();
        assert!(
            matches!(&err, CatalogError::DuplicateVersion { version, .. } if *version == v("1.0")),
            "{err:?}"
        );
        assert!(err.to_string().contains("more than once"), "{err}");
    }

    #[test]
    fn load_dir_reports_bad_version() {
        let toml = TWO_RELEASES.replace("version = \"2.0\"", "version = \"two\"");
        let dir = Dir::new(&toml, &[]);
        let err = dir.load().unwrap_err();
        assert!(matches!(err, CatalogError::Parse { .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("catalog.toml"), "{message}");
        assert!(message.contains("`two`"), "{message}");
    }

    #[test]
    fn load_dir_reports_unknown_kind_and_unknown_keys() {
        let toml = TWO_RELEASES.replace("kind = \"service\"", "kind = \"hotfix\"");
        let err = Dir::new(&toml, &[]).load().unwrap_err();
        assert!(matches!(err, CatalogError::Parse { .. }), "{err:?}");
        assert!(err.to_string().contains("hotfix"), "{err}");

        let toml = TWO_RELEASES.replace("description = \"second\"", "descripton = \"second\"");
        let err = Dir::new(&toml, &[]).load().unwrap_err();
        assert!(err.to_string().contains("descripton"), "{err}");
    }

    #[test]
    fn load_dir_reports_bad_dates() {
        let toml = TWO_RELEASES.replace("\"2020-01-01\"", "\"2020-13-01\"");
        let err = Dir::new(&toml, &[]).load().unwrap_err();
        assert!(err.to_string().contains("2020-13-01"), "{err}");

        let toml = TWO_RELEASES.replace("\"2022-01-01\"", "\"2019-01-01\"");
        let err = Dir::new(&toml, &[("1.0.sql", "x"), ("2.0.sql", "y")])
            .load()
            .unwrap_err();
        assert!(
            matches!(err, CatalogError::SupportEndsBeforeRelease { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn load_dir_rejects_catalogs_without_a_major_base() {
        let err = Dir::new("application = \"shop\"\n", &[])
            .load()
            .unwrap_err();
        assert!(matches!(err, CatalogError::NoReleases { .. }), "{err:?}");

        let toml = TWO_RELEASES.replace("kind = \"major\"", "kind = \"service\"");
        let err = Dir::new(&toml, &[("1.0.sql", "x"), ("2.0.sql", "y")])
            .load()
            .unwrap_err();
        assert!(
            matches!(&err, CatalogError::FirstReleaseNotMajor { version, .. } if *version == v("1.0")),
            "{err:?}"
        );

        let toml = TWO_RELEASES.replace("application = \"shop\"", "application = \" \"");
        let err = Dir::new(&toml, &[]).load().unwrap_err();
        assert!(matches!(err, CatalogError::NoApplication { .. }), "{err:?}");
    }

    #[test]
    fn load_dir_keeps_migrations_inside_the_catalog() {
        for bad in ["../1.0.sql", "/etc/passwd", ""] {
            let toml = TWO_RELEASES.replace("\"1.0.sql\"", &format!("{bad:?}"));
            let err = Dir::new(&toml, &[("2.0.sql", "y")]).load().unwrap_err();
            assert!(
                matches!(err, CatalogError::MigrationOutsideCatalog { .. }),
                "{bad}: {err:?}"
            );
        }
    }
}
