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
    /// Default: `<data_dir>/backups`. `STEWARD_BACKUP_DIR`.
    pub backup_dir: Option<PathBuf>,
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
            backup_dir: None,
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
        fig.extract_lossy().map_err(|e| ConfigError(e.to_string()))
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
}
