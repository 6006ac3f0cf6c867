//! One documented configuration struct, layered: defaults → optional TOML file →
//! `STEWARD_*` environment variables → command-line flags (applied by the binary).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// Everything `steward serve` can be told. Every field has a default, so an empty
/// configuration starts a working admin center.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where Steward keeps its state: the control-plane store (`steward.db`), instance
    /// databases (`instances/`), retired instances (`retired/`). `STEWARD_DATA_DIR`.
    pub data_dir: PathBuf,
    /// The control-plane store: `postgres://user[:password]@host[:port]/database` for a
    /// PostgreSQL server shared by several Steward nodes, or `sqlite:///path/steward.db`.
    /// Default: the SQLite file `<data_dir>/steward.db`. `STEWARD_DATABASE_URL`.
    pub database_url: Option<String>,
    /// Address the admin center and API listen on. `STEWARD_LISTEN`.
    pub listen: SocketAddr,
    /// A release catalog directory (with `catalog.toml`) to use instead of the built-in sample
    /// CRM catalog. `STEWARD_CATALOG_DIR`.
    pub catalog_dir: Option<PathBuf>,
    /// API token given to the first System Administrator at first start, for automation.
    /// `STEWARD_BOOTSTRAP_TOKEN`. Ignored once users exist.
    pub bootstrap_token: Option<String>,
    /// File holding the bootstrap token (first line). `STEWARD_BOOTSTRAP_TOKEN_FILE`.
    pub bootstrap_token_file: Option<PathBuf>,
    /// How long a browser session lasts without signing in again, in hours.
    pub session_hours: i64,
    /// Mark session cookies `Secure` (browsers then send them only over HTTPS or to
    /// localhost). Turn off only behind a TLS-terminating proxy on plain HTTP.
    pub secure_cookies: bool,
    /// Failed sign-ins (admin center or `POST /api/v1/tokens/login`: a wrong password, an
    /// unknown or disabled user) to one account within `login_failure_window_minutes` that
    /// lock the account against password sign-in for `login_lockout_minutes`, the right
    /// password included (API tokens keep working). 0: no per-account limit. Default 5.
    /// `STEWARD_LOGIN_ACCOUNT_FAILURES`.
    pub login_account_failures: u32,
    /// Failed sign-ins from one client address (an IPv6 client by its /64), to any accounts,
    /// within the window that lock that address the same way. Behind a reverse proxy every
    /// client has the proxy's address. 0: no per-address limit. Default 20.
    /// `STEWARD_LOGIN_ADDRESS_FAILURES`.
    pub login_address_failures: u32,
    /// The window, in minutes, in which failed sign-ins are counted (1–1440, default 15).
    /// `STEWARD_LOGIN_FAILURE_WINDOW_MINUTES`.
    pub login_failure_window_minutes: u32,
    /// How long, in minutes, a lock lasts from the failure that caused it (1–1440, default
    /// 15). `STEWARD_LOGIN_LOCKOUT_MINUTES`.
    pub login_lockout_minutes: u32,
    /// Where backups are kept: a local directory holding the backup repository.
    /// Default: `<data_dir>/backups`. `STEWARD_BACKUP_DIR`. Same as `backup_url =
    /// "file:///that/dir"`; setting both to different places is refused.
    pub backup_dir: Option<PathBuf>,
    /// Where backups are kept, as a URL: `file:///absolute/dir` for a local directory, or
    /// `s3://bucket/prefix` (the prefix is optional) for S3-compatible object storage, with
    /// the `backup_s3_*` settings. Default: `backup_dir`, else `<data_dir>/backups`.
    /// Anything else stops the start. `STEWARD_BACKUP_URL`.
    pub backup_url: Option<String>,
    /// The S3 endpoint for storage that is not AWS itself (MinIO, Ceph, Garage, ...), e.g.
    /// `https://s3.example.net:9000`; none: AWS. `STEWARD_BACKUP_S3_ENDPOINT`, else
    /// `AWS_ENDPOINT_URL`.
    pub backup_s3_endpoint: Option<String>,
    /// The S3 region. `STEWARD_BACKUP_S3_REGION`, else `AWS_REGION` or `AWS_DEFAULT_REGION`,
    /// else `us-east-1`.
    pub backup_s3_region: Option<String>,
    /// S3 access key id. `STEWARD_BACKUP_S3_ACCESS_KEY_ID`, else `AWS_ACCESS_KEY_ID`.
    pub backup_s3_access_key_id: Option<String>,
    /// S3 secret access key (never shown in errors or logs).
    /// `STEWARD_BACKUP_S3_SECRET_ACCESS_KEY`, else `AWS_SECRET_ACCESS_KEY`.
    pub backup_s3_secret_access_key: Option<String>,
    /// Allow a plain `http://` endpoint (a server on this host or a private network).
    /// Default false. `STEWARD_BACKUP_S3_ALLOW_HTTP`.
    pub backup_s3_allow_http: bool,
    /// Seconds one request to the object storage may take, connecting included (connecting
    /// alone: at most 5), before it fails; failed requests are retried, so a backup against
    /// storage that does not answer fails after about five times this (1–3600, default 60).
    /// `STEWARD_BACKUP_S3_TIMEOUT_SECONDS`.
    pub backup_s3_timeout_seconds: u64,
    /// A 32-byte key file (raw or hex) to encrypt the backup repository with. Must be given
    /// from the first backup on; a wrong or missing key is refused. `STEWARD_BACKUP_KEY_FILE`.
    pub backup_key_file: Option<PathBuf>,
    /// Time of day (UTC, `HH:MM`) when daily system backups start, or `off`.
    #[serde(deserialize_with = "text")]
    pub system_backup_time: String,
    /// System backup starts are spread over this many minutes after `system_backup_time`
    /// (each instance gets a fixed offset), so a large fleet does not start at once.
    pub system_backup_spread_minutes: u32,
    /// Days a system backup is kept (1–35; the seed's default is 3).
    pub system_backup_retention_days: u32,
    /// Days an on-demand or pre-update backup is kept (1–35; default 3).
    pub on_demand_retention_days: u32,
    /// Instances on an older release cannot be backed up (the seed's "8.1 or later").
    #[serde(deserialize_with = "text")]
    pub minimum_backup_release: String,
    /// Backup data younger than this is never pruned, so a backup running at the same time is
    /// safe. Default one hour.
    pub prune_grace_seconds: u64,
    /// Testing aid: every job pauses this many milliseconds after entering each stage. 0 in
    /// production.
    pub job_stage_pause_ms: u64,
    /// Run scheduled work once a minute: daily system backups, updates and refreshes whose
    /// window opened, reminders, mandatory and service updates, backup expiry. Default true;
    /// tests that drive the schedule themselves turn it off.
    pub scheduler: bool,
    /// The admin center's address as people reach it; links in notifications start with it.
    /// `STEWARD_PUBLIC_URL`.
    pub public_url: String,
    /// This node's name among the Steward nodes sharing one control plane: 1–63 lowercase
    /// letters, digits and dashes. Two running nodes may not have the same name. Default: this
    /// host's name (its first label, lowercased, other characters as dashes).
    /// `STEWARD_NODE_NAME`.
    pub node_name: Option<String>,
    /// The URL other nodes and people reach this node at (http or https). Default:
    /// `public_url`. `STEWARD_NODE_ADDRESS`.
    pub node_address: Option<String>,
    /// Seconds between this node's heartbeats in the control plane (1–3600, default 5).
    /// `STEWARD_NODE_HEARTBEAT_SECONDS`.
    pub node_heartbeat_seconds: u64,
    /// A node whose last heartbeat is older than this many seconds is shown as down, and
    /// another node may then start under its name (more than `node_heartbeat_seconds`, at
    /// most 86400; default 30). `STEWARD_NODE_DOWN_SECONDS`.
    pub node_down_seconds: u64,
    /// SMTP server that sends notification emails; none: emails wait in the delivery log
    /// with an error. `STEWARD_SMTP_HOST`.
    pub smtp_host: Option<String>,
    /// SMTP port; default 25 (`none`), 587 (`starttls`) or 465 (`tls`).
    pub smtp_port: Option<u16>,
    /// `starttls` (default: upgrade, required), `tls` (SMTPS) or `none` (plain; a local relay).
    pub smtp_security: String,
    /// SMTP user name, if the server wants authentication (with `smtp_password`).
    pub smtp_username: Option<String>,
    pub smtp_password: Option<String>,
    /// The From of notification emails.
    pub smtp_from: String,
    /// A delivery (email or webhook) is retried with exponential backoff starting at
    /// `notify_retry_seconds`, and marked failed after `notify_max_attempts` attempts.
    pub notify_max_attempts: u32,
    pub notify_retry_seconds: u64,
    /// Update policy file (TOML, see docs/updates.md); none: the built-in policy (releases n
    /// and n-1 supported). Reloaded when it changes. `STEWARD_UPDATE_POLICY_FILE`.
    pub update_policy_file: Option<PathBuf>,
    /// Length of an update window in hours (default 12, as in the seed).
    pub update_window_hours: u32,
    /// Days before a scheduled production update that an automatic rehearsal runs on a
    /// throwaway sandbox copy (0: no automatic rehearsal). Default 7.
    pub update_rehearsal_days: u32,
    /// Minimum hours between requesting a refresh and its downtime window (default 24).
    pub refresh_lead_hours: u32,
    /// Accept valid refresh requests automatically (default); `false`: an administrator
    /// accepts each one.
    pub refresh_auto_accept: bool,
    /// Days the automatic safety backup taken of a refresh target before it is overwritten
    /// is kept (1–35, default 7).
    pub refresh_safety_backup_days: u32,
    /// Directory of post-refresh scripts (`*.sql`, run in name order on the refreshed target);
    /// none: the built-in sample (anonymise contacts, switch off outgoing integrations).
    pub post_refresh_scripts_dir: Option<PathBuf>,
    /// How often each instance's newest completed backup is test-restored into a throwaway
    /// file and checked (a restore drill): `daily` (default), `weekly`, `every N hours`, or
    /// `off`. Each instance has a fixed offset in the period, so a fleet is spread over it.
    /// `STEWARD_RESTORE_DRILL_SCHEDULE`.
    pub restore_drill_schedule: String,
    /// Capture every commit of every instance that is not retired into the backup repository
    /// (continuous capture, for restores and refreshes to any moment). Default true.
    /// `STEWARD_CONTINUOUS_CAPTURE`.
    pub continuous_capture: bool,
    /// How often, in milliseconds, capture looks for new commits (10–1000, default 100). A
    /// commit reaches the repository within about this plus one segment write.
    /// `STEWARD_CAPTURE_INTERVAL_MS`.
    pub capture_interval_ms: u64,
    /// Days the restorable range reaches back (1–35, default 7). Older captured data is
    /// pruned. `STEWARD_CAPTURE_RETENTION_DAYS`.
    pub capture_retention_days: u32,
    /// Seconds the backup repository may keep failing before capture of an instance gives
    /// up: the chain ends (a gap), the `capture_stopped` alert is raised and capture lets go
    /// of the database; it starts again, with a new base snapshot, when the repository
    /// answers (1–3600, default 30). `STEWARD_CAPTURE_GIVE_UP_SECONDS`.
    pub capture_give_up_seconds: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("steward-data"),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            catalog_dir: None,
            bootstrap_token: None,
            bootstrap_token_file: None,
            session_hours: 12,
            secure_cookies: true,
            login_account_failures: 5,
            login_address_failures: 20,
            login_failure_window_minutes: 15,
            login_lockout_minutes: 15,
            database_url: None,
            backup_dir: None,
            backup_url: None,
            backup_s3_endpoint: None,
            backup_s3_region: None,
            backup_s3_access_key_id: None,
            backup_s3_secret_access_key: None,
            backup_s3_allow_http: false,
            backup_s3_timeout_seconds: 60,
            backup_key_file: None,
            system_backup_time: "02:00".into(),
            system_backup_spread_minutes: 120,
            system_backup_retention_days: 3,
            on_demand_retention_days: 3,
            minimum_backup_release: "8.1".into(),
            prune_grace_seconds: 3600,
            job_stage_pause_ms: 0,
            scheduler: true,
            public_url: "http://127.0.0.1:8080".into(),
            node_name: None,
            node_address: None,
            node_heartbeat_seconds: 5,
            node_down_seconds: 30,
            smtp_host: None,
            smtp_port: None,
            smtp_security: "starttls".into(),
            smtp_username: None,
            smtp_password: None,
            smtp_from: "Steward <steward@localhost>".into(),
            notify_max_attempts: 8,
            notify_retry_seconds: 30,
            update_policy_file: None,
            update_window_hours: 12,
            update_rehearsal_days: 7,
            refresh_lead_hours: 24,
            refresh_auto_accept: true,
            refresh_safety_backup_days: 7,
            post_refresh_scripts_dir: None,
            restore_drill_schedule: "daily".into(),
            continuous_capture: true,
            capture_interval_ms: 100,
            capture_retention_days: 7,
            capture_give_up_seconds: 30,
        }
    }
}

/// A text setting must be written as text. Environment variables always arrive as text (see
/// [`RawEnv`]); a TOML number (`minimum_backup_release = 9.0`) is refused with a hint rather
/// than turned back into text, because `9.0` would become `9` and `8.10` would become `8.1`.
fn text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        S(String),
        I(i64),
        F(f64),
    }
    match Text::deserialize(d)? {
        Text::S(s) => Ok(s),
        Text::I(n) => Err(serde::de::Error::custom(format!(
            "the number {n} where text is expected; write it in quotes (\"{n}\")"
        ))),
        Text::F(n) => Err(serde::de::Error::custom(format!(
            "the number {n:?} where text is expected; write it in quotes, e.g. \"{n:?}\""
        ))),
    }
}

/// The `STEWARD_*` variables as they were typed. figment's `Env` provider guesses a type for
/// each value, so `9.0` became the float 9 and `00123` the integer 123, and a text setting
/// lost characters or was refused. Here every value stays text; [`Config::load`] extracts
/// "lossily", so numeric and boolean settings still read `5` or `false` as numbers and
/// booleans.
struct RawEnv(Env);

impl figment::Provider for RawEnv {
    fn metadata(&self) -> figment::Metadata {
        // Errors name the variable as the operator wrote it: `STEWARD_SESSION_HOURS`.
        figment::Metadata::named("environment variable")
            .interpolater(|_, keys| format!("STEWARD_{}", keys.join(".").to_ascii_uppercase()))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let dict = self
            .0
            .iter()
            .map(|(k, v)| (k.to_string(), figment::value::Value::from(v)))
            .collect();
        Ok(figment::Profile::Default.collect(dict))
    }
}

/// A configuration that could not be read; the message names the file or variable.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl ConfigError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl Config {
    /// Defaults, then `file` if given (it must exist), then `STEWARD_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError(format!(
                    "the configuration file {} does not exist",
                    file.display()
                )));
            }
            fig = fig.merge(Toml::file(file));
        }
        fig = fig.merge(RawEnv(
            Env::prefixed("STEWARD_")
                .ignore(&["URL", "TOKEN", "LOG"])
                .map(|k| k.as_str().to_ascii_lowercase().into()),
        ));
        let mut config: Config = fig
            .extract_lossy()
            .map_err(|e| ConfigError(e.to_string()))?;
        config.fill_s3_from_aws_env(|k| std::env::var(k).ok());
        Ok(config)
    }

    /// The standard AWS variables fill in the S3 settings that are not set, as every S3 tool
    /// reads them.
    fn fill_s3_from_aws_env(&mut self, var: impl Fn(&str) -> Option<String>) {
        let var = |names: &[&str]| {
            names
                .iter()
                .filter_map(|n| var(n))
                .find(|v| !v.trim().is_empty())
        };
        let fields: [(&mut Option<String>, &[&str]); 4] = [
            (&mut self.backup_s3_endpoint, &["AWS_ENDPOINT_URL"]),
            (
                &mut self.backup_s3_region,
                &["AWS_REGION", "AWS_DEFAULT_REGION"],
            ),
            (&mut self.backup_s3_access_key_id, &["AWS_ACCESS_KEY_ID"]),
            (
                &mut self.backup_s3_secret_access_key,
                &["AWS_SECRET_ACCESS_KEY"],
            ),
        ];
        for (field, names) in fields {
            if field.as_deref().is_none_or(|v| v.trim().is_empty()) {
                *field = var(names);
            }
        }
    }

    /// The bootstrap token from `bootstrap_token` or `bootstrap_token_file`.
    pub fn bootstrap_token(&self) -> Result<Option<String>, ConfigError> {
        if let Some(t) = &self.bootstrap_token {
            return Ok(Some(t.trim().to_owned()));
        }
        if let Some(f) = &self.bootstrap_token_file {
            let raw = std::fs::read_to_string(f).map_err(|e| {
                ConfigError(format!(
                    "cannot read the bootstrap token file {}: {e}",
                    f.display()
                ))
            })?;
            let token = raw.lines().next().unwrap_or("").trim().to_owned();
            if token.is_empty() {
                return Err(ConfigError(format!(
                    "the bootstrap token file {} is empty",
                    f.display()
                )));
            }
            return Ok(Some(token));
        }
        Ok(None)
    }
}

/// Where the backup repository lives: `backup_url`, else `backup_dir`, else
/// `<data_dir>/backups`, checked by [`Config::backup_target`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupTarget {
    /// A local directory.
    Dir(PathBuf),
    /// S3-compatible object storage.
    S3(S3Target),
}

/// An S3 location and how to reach it. Neither `Debug` nor `Display` shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Target {
    pub bucket: String,
    /// Objects are kept under this prefix: `/`-separated, no leading or trailing `/`; empty:
    /// the bucket's root.
    pub prefix: String,
    /// `None`: AWS itself.
    pub endpoint: Option<String>,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub allow_http: bool,
    /// How long one request may take, connecting included.
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for S3Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Target")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field("allow_http", &self.allow_http)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl std::fmt::Display for BackupTarget {
    /// `/var/lib/steward/backups`, or `s3://bucket/prefix` and the endpoint (no secret).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackupTarget::Dir(d) => write!(f, "{}", d.display()),
            BackupTarget::S3(s) => {
                write!(f, "s3://{}", s.bucket)?;
                if !s.prefix.is_empty() {
                    write!(f, "/{}", s.prefix)?;
                }
                if let Some(e) = &s.endpoint {
                    write!(f, " at {e}")?;
                }
                Ok(())
            }
        }
    }
}

/// What `backup_url` names, before the S3 settings are added.
enum BackupUrl {
    Dir(PathBuf),
    S3 { bucket: String, prefix: String },
}

/// `raw` with any `user:password@` before the host replaced by `***@`, for error messages.
fn redact(raw: &str) -> String {
    let Some(i) = raw.find("://") else {
        return raw.to_owned();
    };
    let rest = &raw[i + 3..];
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{}://***@{}", &raw[..i], &rest[at + 1..]),
        None => raw.to_owned(),
    }
}

/// Checks `backup_url` (already trimmed, not empty).
fn parse_backup_url(raw: &str) -> Result<BackupUrl, ConfigError> {
    let shown = redact(raw);
    let bad = |why: &str| ConfigError(format!("backup_url {shown:?} {why}"));
    let u = url::Url::parse(raw).map_err(|e| {
        bad(&format!(
            "is not a URL ({e}): write file:///absolute/dir for a local directory or \
             s3://bucket/prefix for S3-compatible storage"
        ))
    })?;
    if !matches!(u.scheme(), "file" | "s3") {
        return Err(bad(&format!(
            "has the scheme {:?}: backup_url must start with file:// (a local directory) or \
             s3:// (S3-compatible storage)",
            u.scheme()
        )));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(bad(
            "has a query or a fragment (`?` or `#`); a backup location has neither",
        ));
    }
    match u.scheme() {
        "file" => {
            // The url crate reads `file:dir` as `file:///dir`: a relative path must not
            // silently become an absolute one.
            if !raw[raw.find(':').map_or(0, |i| i + 1)..].starts_with('/') {
                return Err(bad(
                    "is a relative path: write an absolute directory, file:///absolute/dir",
                ));
            }
            if let Some(host) = u.host_str().filter(|h| !h.is_empty()) {
                return Err(bad(&format!(
                    "names the host {host:?}, not a directory on this machine: a local \
                     directory is written with three slashes and an absolute path, \
                     file:///absolute/dir"
                )));
            }
            let dir = u
                .to_file_path()
                .map_err(|()| bad("is not an absolute directory path"))?;
            Ok(BackupUrl::Dir(dir))
        }
        "s3" => {
            if !u.username().is_empty() || u.password().is_some() {
                return Err(bad(
                    "has credentials in it: set backup_s3_access_key_id and \
                     backup_s3_secret_access_key instead",
                ));
            }
            let bucket = u.host_str().unwrap_or_default();
            if bucket.is_empty() {
                return Err(bad(
                    "names no bucket: write s3://bucket or s3://bucket/prefix",
                ));
            }
            if u.port().is_some() {
                return Err(bad(
                    "has a port: the S3 server's address belongs in backup_s3_endpoint",
                ));
            }
            check_bucket(bucket).map_err(|why| {
                bad(&format!(
                    "names the bucket {bucket:?}, which is not a bucket name: {why}"
                ))
            })?;
            // The prefix as written: the url crate would resolve `a/../b` to `b` silently.
            let after_host = &raw[raw.find("://").map_or(0, |i| i + 3)..];
            let prefix = after_host
                .find('/')
                .map_or("", |i| &after_host[i..])
                .trim_matches('/');
            check_prefix(prefix).map_err(|why| {
                bad(&format!(
                    "has the prefix {prefix:?}, which cannot be used: {why}"
                ))
            })?;
            Ok(BackupUrl::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.to_owned(),
            })
        }
        _ => unreachable!("checked above"),
    }
}

/// S3's bucket naming rules.
fn check_bucket(b: &str) -> Result<(), &'static str> {
    if !(3..=63).contains(&b.len()) {
        return Err("3 to 63 characters");
    }
    if !b
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    {
        return Err("only lowercase letters, digits, dots and dashes");
    }
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge(b.chars().next()) || !edge(b.chars().last()) {
        return Err("it begins and ends with a letter or a digit");
    }
    if b.contains("..") {
        return Err("no two dots in a row");
    }
    Ok(())
}

/// A prefix is `/`-separated names of letters, digits, `.`, `_` and `-` (not `.` or `..`).
fn check_prefix(p: &str) -> Result<(), &'static str> {
    if p.is_empty() {
        return Ok(());
    }
    for seg in p.split('/') {
        if seg.is_empty() {
            return Err("an empty part (`//`)");
        }
        if seg == "." || seg == ".." {
            return Err("a `.` or `..` part");
        }
        if !seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        {
            return Err("only letters, digits, `.`, `_` and `-` between the slashes");
        }
    }
    Ok(())
}

/// Checks `backup_s3_endpoint`: an http(s) URL of a server, plain http only when allowed.
fn check_endpoint(raw: &str, allow_http: bool) -> Result<String, ConfigError> {
    let shown = redact(raw);
    let bad = |why: &str| ConfigError(format!("backup_s3_endpoint {shown:?} {why}"));
    let u = url::Url::parse(raw).map_err(|e| {
        bad(&format!(
            "is not a URL ({e}): write the server's address, e.g. https://s3.example.net"
        ))
    })?;
    if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none_or(str::is_empty) {
        return Err(bad(
            "is not an http(s) address of a server, e.g. https://s3.example.net",
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err(bad(
            "has credentials in it: set backup_s3_access_key_id and \
             backup_s3_secret_access_key instead",
        ));
    }
    if u.query().is_some() || u.fragment().is_some() {
        return Err(bad("has a query or a fragment (`?` or `#`)"));
    }
    if u.scheme() == "http" && !allow_http {
        return Err(bad(
            "is plain http: use https, or set backup_s3_allow_http = true \
             (STEWARD_BACKUP_S3_ALLOW_HTTP) for a server on this host or a private network",
        ));
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

impl Config {
    /// Where backups are kept: `backup_url`, else `backup_dir`, else `<data_dir>/backups`.
    /// A malformed URL or S3 setting is refused with the setting and its value (never the
    /// secret).
    pub fn backup_target(&self) -> Result<BackupTarget, ConfigError> {
        let Some(raw) = self
            .backup_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
        else {
            return Ok(BackupTarget::Dir(
                self.backup_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("backups")),
            ));
        };
        let shown = redact(raw);
        match parse_backup_url(raw)? {
            BackupUrl::Dir(dir) => match &self.backup_dir {
                Some(d) if std::path::absolute(d).ok().as_ref() != Some(&dir) => {
                    Err(ConfigError(format!(
                        "backup_dir {:?} and backup_url {shown:?} name different places: set \
                         only backup_url",
                        d.display().to_string()
                    )))
                }
                _ => Ok(BackupTarget::Dir(dir)),
            },
            BackupUrl::S3 { bucket, prefix } => {
                if let Some(d) = &self.backup_dir {
                    return Err(ConfigError(format!(
                        "backup_dir {:?} is a local directory but backup_url {shown:?} is on \
                         S3: set only backup_url",
                        d.display().to_string()
                    )));
                }
                self.s3_target(&shown, bucket, prefix).map(BackupTarget::S3)
            }
        }
    }

    fn s3_target(
        &self,
        shown: &str,
        bucket: String,
        prefix: String,
    ) -> Result<S3Target, ConfigError> {
        let set = |v: &Option<String>| {
            v.as_deref()
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let endpoint = set(&self.backup_s3_endpoint)
            .map(|e| check_endpoint(&e, self.backup_s3_allow_http))
            .transpose()?;
        let region = set(&self.backup_s3_region).unwrap_or_else(|| "us-east-1".into());
        if !region
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ConfigError(format!(
                "backup_s3_region {region:?} is not a region name (letters, digits and dashes, \
                 e.g. us-east-1)"
            )));
        }
        let (access_key_id, secret_access_key) = match (
            set(&self.backup_s3_access_key_id),
            set(&self.backup_s3_secret_access_key),
        ) {
            (Some(id), Some(secret)) => (id, secret),
            (None, None) => {
                return Err(ConfigError(format!(
                    "backup_url {shown:?} is on S3, but no credentials are set: set \
                     backup_s3_access_key_id and backup_s3_secret_access_key (or \
                     AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
                )));
            }
            (id, _) => {
                return Err(ConfigError(format!(
                    "backup_s3_access_key_id and backup_s3_secret_access_key go together, but \
                     only {} is set",
                    if id.is_some() {
                        "the access key id"
                    } else {
                        "the secret access key"
                    }
                )));
            }
        };
        if !(1..=3600).contains(&self.backup_s3_timeout_seconds) {
            return Err(ConfigError(format!(
                "backup_s3_timeout_seconds must be 1–3600 (got {})",
                self.backup_s3_timeout_seconds
            )));
        }
        Ok(S3Target {
            bucket,
            prefix,
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            allow_http: self.backup_s3_allow_http,
            timeout: std::time::Duration::from_secs(self.backup_s3_timeout_seconds),
        })
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;

    #[test]
    fn layers_defaults_file_then_environment() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("steward.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\nsession_hours = 3\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("STEWARD_SESSION_HOURS", "5");
            jail.set_env("STEWARD_MINIMUM_BACKUP_RELEASE", "8.2");
            let c = Config::load(Some(&file)).unwrap();
            assert_eq!(c.listen.port(), 9000, "file overrides the default");
            assert_eq!(c.session_hours, 5, "environment overrides the file");
            assert_eq!(c.data_dir, PathBuf::from("steward-data"), "default kept");
            assert_eq!(
                c.minimum_backup_release, "8.2",
                "a number-like text setting"
            );
            Ok(())
        });
    }

    #[test]
    fn environment_text_settings_stay_text() {
        figment::Jail::expect_with(|jail| {
            // Each of these parsed as a number (or lost digits) before.
            jail.set_env("STEWARD_MINIMUM_BACKUP_RELEASE", "9.0");
            jail.set_env("STEWARD_SYSTEM_BACKUP_TIME", "off");
            jail.set_env("STEWARD_BOOTSTRAP_TOKEN", "00123");
            jail.set_env("STEWARD_SMTP_PASSWORD", "1e3");
            jail.set_env("STEWARD_DATA_DIR", "2024");
            jail.set_env("STEWARD_SMTP_FROM", "true");
            // Numbers and booleans still read as such.
            jail.set_env("STEWARD_SESSION_HOURS", "5");
            jail.set_env("STEWARD_SECURE_COOKIES", "false");
            jail.set_env("STEWARD_SMTP_PORT", "2525");
            let c = Config::load(None).unwrap();
            assert_eq!(c.minimum_backup_release, "9.0");
            assert_eq!(c.system_backup_time, "off");
            assert_eq!(c.bootstrap_token.as_deref(), Some("00123"));
            assert_eq!(c.smtp_password.as_deref(), Some("1e3"));
            assert_eq!(c.data_dir, PathBuf::from("2024"));
            assert_eq!(c.smtp_from, "true");
            assert_eq!(c.session_hours, 5);
            assert!(!c.secure_cookies);
            assert_eq!(c.smtp_port, Some(2525));
            jail.set_env("STEWARD_MINIMUM_BACKUP_RELEASE", "8.10");
            let c = Config::load(None).unwrap();
            assert_eq!(c.minimum_backup_release, "8.10", "no digit is lost");
            jail.set_env("STEWARD_SESSION_HOURS", "many");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("STEWARD_SESSION_HOURS"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_and_missing_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("steward.toml");
        std::fs::write(&file, "listn = \"x\"\n").unwrap();
        let err = Config::load(Some(&file)).unwrap_err().to_string();
        assert!(err.contains("listn"), "{err}");
        let err = Config::load(Some(&dir.path().join("nope.toml")))
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not exist"), "{err}");
    }

    #[test]
    fn backup_locations_default_dir_file_url_and_s3() {
        let c = Config {
            data_dir: "/srv/steward".into(),
            ..Config::default()
        };
        assert_eq!(
            c.backup_target().unwrap(),
            BackupTarget::Dir("/srv/steward/backups".into()),
            "no configuration: <data_dir>/backups, as before"
        );
        let c = Config {
            backup_dir: Some("/mnt/backups".into()),
            ..Config::default()
        };
        assert_eq!(
            c.backup_target().unwrap(),
            BackupTarget::Dir("/mnt/backups".into())
        );
        // backup_dir and a file:// URL of the same directory agree.
        let c = Config {
            backup_dir: Some("/mnt/backups/".into()),
            backup_url: Some(" file:///mnt/backups ".into()),
            ..Config::default()
        };
        assert_eq!(
            c.backup_target().unwrap(),
            BackupTarget::Dir("/mnt/backups".into())
        );
        let c = Config {
            backup_url: Some("s3://steward-backups/prod/eu-1/".into()),
            backup_s3_endpoint: Some("http://127.0.0.1:9000/".into()),
            backup_s3_allow_http: true,
            backup_s3_access_key_id: Some("AKIAEXAMPLE".into()),
            backup_s3_secret_access_key: Some("very-secret-key".into()),
            ..Config::default()
        };
        let t = c.backup_target().unwrap();
        let BackupTarget::S3(s3) = &t else {
            panic!("{t:?}")
        };
        assert_eq!(
            (s3.bucket.as_str(), s3.prefix.as_str(), s3.region.as_str()),
            ("steward-backups", "prod/eu-1", "us-east-1")
        );
        assert_eq!(s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(s3.timeout, std::time::Duration::from_secs(60));
        assert_eq!(
            t.to_string(),
            "s3://steward-backups/prod/eu-1 at http://127.0.0.1:9000"
        );
        assert!(!format!("{t:?}{t}").contains("very-secret-key"));
    }

    #[test]
    fn s3_settings_from_steward_variables_else_the_aws_ones() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("STEWARD_BACKUP_URL", "s3://bucket-one/p");
            jail.set_env("AWS_ACCESS_KEY_ID", "aws-id");
            jail.set_env("AWS_SECRET_ACCESS_KEY", "aws-secret");
            jail.set_env("AWS_DEFAULT_REGION", "eu-west-3");
            jail.set_env("AWS_ENDPOINT_URL", "https://s3.example.net");
            let c = Config::load(None).unwrap();
            let BackupTarget::S3(s3) = c.backup_target().unwrap() else {
                panic!("S3")
            };
            assert_eq!(
                (s3.access_key_id.as_str(), s3.secret_access_key.as_str()),
                ("aws-id", "aws-secret")
            );
            assert_eq!(s3.region, "eu-west-3");
            assert_eq!(s3.endpoint.as_deref(), Some("https://s3.example.net"));
            jail.set_env("AWS_REGION", "eu-north-1");
            jail.set_env("STEWARD_BACKUP_S3_ACCESS_KEY_ID", "steward-id");
            jail.set_env("STEWARD_BACKUP_S3_SECRET_ACCESS_KEY", "steward-secret");
            jail.set_env("STEWARD_BACKUP_S3_ENDPOINT", "http://10.0.0.5:9000");
            jail.set_env("STEWARD_BACKUP_S3_ALLOW_HTTP", "true");
            jail.set_env("STEWARD_BACKUP_S3_TIMEOUT_SECONDS", "7");
            let c = Config::load(None).unwrap();
            let BackupTarget::S3(s3) = c.backup_target().unwrap() else {
                panic!("S3")
            };
            assert_eq!(
                (s3.access_key_id.as_str(), s3.secret_access_key.as_str()),
                ("steward-id", "steward-secret"),
                "Steward's own settings win"
            );
            assert_eq!(
                s3.region, "eu-north-1",
                "AWS_REGION before AWS_DEFAULT_REGION"
            );
            assert_eq!(s3.endpoint.as_deref(), Some("http://10.0.0.5:9000"));
            assert!(s3.allow_http);
            assert_eq!(s3.timeout, std::time::Duration::from_secs(7));
            Ok(())
        });
    }

    #[test]
    fn bad_backup_locations_are_specific_errors_without_the_secret() {
        let secret = "wJalrXUtnFEMI-K7MDENG";
        let s3 = |url: &str| Config {
            backup_url: Some(url.into()),
            backup_s3_access_key_id: Some("AKIAEXAMPLE".into()),
            backup_s3_secret_access_key: Some(secret.into()),
            ..Config::default()
        };
        let cases: Vec<(Config, &[&str])> = vec![
            (
                s3("not a url"),
                &["backup_url \"not a url\"", "is not a URL", "file:///"],
            ),
            (s3("/var/backups"), &["\"/var/backups\"", "is not a URL"]),
            (
                s3("ftp://host/dir"),
                &["\"ftp://host/dir\"", "scheme \"ftp\"", "s3://"],
            ),
            (
                s3("file:relative/dir"),
                &["\"file:relative/dir\"", "relative path"],
            ),
            (
                s3("file://relative/dir"),
                &["host \"relative\"", "three slashes"],
            ),
            (s3("file:///srv/b?x=1"), &["query"]),
            (s3("s3://"), &["\"s3://\"", "names no bucket"]),
            (s3("s3:///prefix"), &["names no bucket"]),
            (s3("s3:bucket/prefix"), &["names no bucket"]),
            (
                s3("s3://Bad_Bucket/p"),
                &["bucket \"Bad_Bucket\"", "lowercase"],
            ),
            (s3("s3://ab/p"), &["bucket \"ab\"", "3 to 63"]),
            (
                s3("s3://bucket:9000/p"),
                &["has a port", "backup_s3_endpoint"],
            ),
            (s3("s3://bucket/a//b"), &["prefix \"a//b\"", "empty part"]),
            (s3("s3://bucket/a/../b"), &["prefix", "`..`"]),
            (
                s3("s3://bucket/a%20b"),
                &["prefix \"a%20b\"", "letters, digits"],
            ),
            (
                s3(&format!("s3://AKIAEXAMPLE:{secret}@bucket/p")),
                &["\"s3://***@bucket/p\"", "credentials in it"],
            ),
            (
                Config {
                    backup_s3_access_key_id: None,
                    backup_s3_secret_access_key: None,
                    ..s3("s3://bucket/p")
                },
                &[
                    "no credentials",
                    "backup_s3_access_key_id",
                    "AWS_ACCESS_KEY_ID",
                ],
            ),
            (
                Config {
                    backup_s3_access_key_id: None,
                    ..s3("s3://bucket/p")
                },
                &["go together", "only the secret access key"],
            ),
            (
                Config {
                    backup_s3_endpoint: Some("http://127.0.0.1:9000".into()),
                    ..s3("s3://bucket/p")
                },
                &[
                    "backup_s3_endpoint \"http://127.0.0.1:9000\"",
                    "plain http",
                    "backup_s3_allow_http",
                ],
            ),
            (
                Config {
                    backup_s3_endpoint: Some("minio:9000".into()),
                    ..s3("s3://bucket/p")
                },
                &["backup_s3_endpoint \"minio:9000\"", "http(s)"],
            ),
            (
                Config {
                    backup_s3_region: Some("eu west".into()),
                    ..s3("s3://bucket/p")
                },
                &["backup_s3_region \"eu west\""],
            ),
            (
                Config {
                    backup_s3_timeout_seconds: 0,
                    ..s3("s3://bucket/p")
                },
                &["backup_s3_timeout_seconds", "got 0"],
            ),
            (
                Config {
                    backup_dir: Some("/srv/a".into()),
                    ..s3("file:///srv/b")
                },
                &[
                    "backup_dir \"/srv/a\"",
                    "\"file:///srv/b\"",
                    "different places",
                ],
            ),
            (
                Config {
                    backup_dir: Some("/srv/a".into()),
                    ..s3("s3://bucket/p")
                },
                &["backup_dir \"/srv/a\"", "on S3", "only backup_url"],
            ),
        ];
        for (config, wanted) in cases {
            let err = config.backup_target().unwrap_err().to_string();
            for w in wanted {
                assert!(err.contains(w), "{:?}: {w:?} in {err}", config.backup_url);
            }
            assert!(!err.contains(secret), "the secret is never shown: {err}");
        }
    }
}
