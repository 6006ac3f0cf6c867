//! The command line: every command, flag and its help text. Parsing only; the work is in
//! `commands`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

mod drill;
mod update;
mod workitem;

pub use drill::DrillCommand;
pub use update::UpdateCommand;
pub use workitem::WorkitemCommand;

/// Reads the command line, or prints the error (or help) and exits.
pub fn parse() -> Cli {
    try_parse_from(std::env::args_os()).unwrap_or_else(|e| e.exit())
}

/// Reads a command line. On an error, clap builds the usage line from the arguments given
/// (including `--url`/`--token` taken from STEWARD_URL/STEWARD_TOKEN), so optional ones such
/// as `--notes`, `--url` and `--token` would read as required; errors show the command's own
/// usage instead, the line its `--help` starts with.
pub fn try_parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    Cli::try_parse_from(&args).map_err(|mut e| {
        use clap::error::{ContextKind, ContextValue};
        if e.get(ContextKind::Usage).is_some()
            && let Some(usage) = plain_usage(&args)
        {
            e.insert(ContextKind::Usage, ContextValue::StyledStr(usage));
        }
        e
    })
}

/// The usage of the (sub)command `args` name, as its `--help` shows it.
fn plain_usage(args: &[std::ffi::OsString]) -> Option<clap::builder::StyledStr> {
    use clap::CommandFactory;
    let bin = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map_or_else(
            || "steward".to_owned(),
            |n| n.to_string_lossy().into_owned(),
        );
    let mut cmd = Cli::command().bin_name(bin);
    cmd.build();
    // Which subcommands were named, read leniently (the real parse just failed).
    let matches = Cli::command()
        .ignore_errors(true)
        .try_get_matches_from(args)
        .ok()?;
    let mut sub = &mut cmd;
    let mut m = &matches;
    while let Some((name, next)) = m.subcommand() {
        sub = sub.find_subcommand_mut(name)?;
        m = next;
    }
    Some(sub.render_usage())
}

const CONNECTION: &str = "Connection (client commands)";

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  failure: the server is unreachable or failed inside, `serve` could not start, a job
     waited for with --wait failed, or a confirmation was not answered yes
  2  invalid command line or request (HTTP 400)
  3  no API token, a wrong or revoked one, or a role that may not do this (HTTP 401/403)
  4  the instance, release, user or token named does not exist (HTTP 404)
  5  conflict with the current state, e.g. a name already taken (HTTP 409)
  6  `backup verify` found damaged backups (they are marked damaged; restoring them is refused)

Errors are printed to stderr as `error: <message> (<code>)`.

Start with `steward serve`; on first start it prints the administrator's password and an API
token. Then `export STEWARD_TOKEN=<token>` and run e.g. `steward instance list`.";

/// Steward: a self-hosted admin center for fleets of database instances.
///
/// `steward serve` runs the admin center (web UI and REST API). Every other command is a
/// client of that REST API: it needs the server's address (--url) and an API token (--token).
#[derive(Debug, Parser)]
#[command(name = "steward", version, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(flatten)]
    pub conn: Connection,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the API client commands send their requests.
#[derive(Debug, Args)]
pub struct Connection {
    /// Address of the Steward server (client commands only).
    #[arg(
        long,
        global = true,
        help_heading = CONNECTION,
        env = "STEWARD_URL",
        hide_env_values = true,
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub url: String,
    /// API token to authenticate with (client commands only). The first one is printed by the
    /// first `steward serve`; more come from `steward token create` or `steward token login`.
    #[arg(
        long,
        global = true,
        help_heading = CONNECTION,
        env = "STEWARD_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the admin center: the web UI and the REST API, until Ctrl-C or SIGTERM.
    ///
    /// Settings come from built-in defaults, then the TOML file given with --config, then
    /// STEWARD_* environment variables (STEWARD_DATA_DIR, STEWARD_LISTEN, STEWARD_CATALOG_DIR,
    /// STEWARD_BOOTSTRAP_TOKEN, STEWARD_BOOTSTRAP_TOKEN_FILE, ...), then these flags. On the
    /// first start with an empty data directory, Steward creates the System Administrator
    /// `admin` and prints its one-time password and an API token, once. Logs go to stderr;
    /// set their level with STEWARD_LOG (default `info`).
    Serve(ServeArgs),
    /// Create, list, show, switch and delete database instances.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// The application releases in the catalog.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Users of the admin center and their roles.
    #[command(subcommand)]
    User(UserCommand),
    /// API tokens: what the CLI and automation authenticate with.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log: who did what to which instance, user or token, and when.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Background jobs (backups, restores, updates, refreshes): state, stage, progress, errors.
    #[command(subcommand)]
    Job(JobCommand),
    /// Back up instances on demand; list, edit, delete and restore their backups.
    #[command(subcommand, long_about = BACKUP_ABOUT)]
    Backup(BackupCommand),
    /// Database and backup storage per instance, and the totals.
    ///
    /// Backups do not count towards an instance's database storage; they are shown apart.
    Storage(JsonFlag),
    /// In-product alerts, newest first: backups and restores started, succeeded or failed.
    ///
    /// Without a subcommand, lists every alert (or, with --mine, those you have not
    /// dismissed). `steward alerts dismiss ID` hides one alert for you only.
    #[command(args_conflicts_with_subcommands = true)]
    Alerts {
        #[command(subcommand)]
        command: Option<AlertsCommand>,
        /// Only the alerts you have not dismissed (the banner in the web UI).
        #[arg(long)]
        mine: bool,
        /// At most this many alerts, 1 to 1000. [default: 50]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Notifications: who is told about which event and how (the schedule), extra email
    /// recipients per instance, webhooks, and the delivery log.
    #[command(subcommand, long_about = NOTIFY_ABOUT)]
    Notify(NotifyCommand),
    /// Housekeeping of the backup repository (System Administrators).
    #[command(subcommand)]
    Maintenance(MaintenanceCommand),
    /// Release updates: what is available, schedule with windows, approve, reschedule,
    /// update now, rehearse, and each update's history.
    #[command(subcommand)]
    Update(UpdateCommand),
    /// Work items: database refreshes from a source instance into a sandbox, requested ahead
    /// of a downtime window; list, show, reschedule, cancel.
    #[command(subcommand)]
    Workitem(WorkitemCommand),
    /// Restore drills: backups test-restored into a throwaway file and checked, on a schedule
    /// or now; the instances whose last drill failed, is too old, or never ran.
    #[command(subcommand)]
    Drill(DrillCommand),
    /// The Steward nodes sharing this control plane: their health (up, down, stopped), address,
    /// last heartbeat, instance counts and running jobs.
    #[command(subcommand)]
    Node(NodeCommand),
    /// The control-plane store itself (run on the host, not through the API): copy a SQLite
    /// control plane into PostgreSQL.
    #[command(subcommand)]
    Store(StoreCommand),
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy this host's SQLite control plane (`<data_dir>/steward.db`, or the `sqlite:` file
    /// that STEWARD_DATABASE_URL names) into an empty PostgreSQL database, in one transaction.
    ///
    /// Stop `steward serve` first: the copy is a consistent snapshot, and changes made after
    /// it are not copied. The target must be empty (a new database); a target with any rows
    /// is refused and left as it was. Then start Steward with
    /// STEWARD_DATABASE_URL=postgres://... (see the README, "Control plane on PostgreSQL").
    MigrateTo(MigrateToArgs),
}

#[derive(Debug, Args)]
pub struct MigrateToArgs {
    /// The target: postgres://user[:password]@host[:port]/database (an empty database).
    #[arg(value_name = "POSTGRES_URL")]
    pub url: String,
    /// Steward's data directory, whose steward.db is copied.
    /// [default: steward-data; env: STEWARD_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The TOML configuration file `steward serve` uses (for data_dir and database_url).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub json: JsonFlag,
}

const BACKUP_ABOUT: &str = "\
Back up instances on demand; list, edit, delete and restore their backups.

Kinds of backup:
  system      daily and automatic, created by \"System\"; can be restored, not edited or deleted
  on_demand   taken with `steward backup create`, with a label and notes; can be edited,
              deleted and restored
  pre_update  taken before a version update; can be restored, not edited or deleted
  pre_refresh the safety backup of a refresh target, taken before its database is replaced;
              restoring it undoes the refresh; can be restored, not edited or deleted

Every backup expires (by default 3 days after it was taken) and is then removed. Backups do
not count towards an instance's database storage (see `steward storage`). The instance stays
available while it is backed up.

A backup can only be restored into a sandbox instance: to restore into a production
instance, switch it to sandbox first (`steward instance switch NAME --type sandbox`), restore,
and switch it back. A restore replaces the target's database only (its documents folder is
not touched), and the target is unavailable until the restore completes.";

const NOTIFY_ABOUT: &str = "\
Notifications: who is told about which event and how (the schedule), extra email recipients
per instance, webhooks, and the delivery log.

When something happens to an instance (a backup succeeded, an update was scheduled, ...),
Steward looks up the event in the schedule: its audience (system_administrators, or
all_admins_and_users) and its channels:
  email       to the audience's users with an address (`steward user set-email`) and to the
              instance's extra recipients (`steward notify recipients add`)
  webhook     a signed JSON POST to every webhook (`steward notify webhooks add`)
  in_product  an alert in the web UI and in `steward alerts`

Email and webhook deliveries are retried with growing delays after a failure; `steward
notify log` shows each one: pending, sent or failed, its attempts and last error.
Every role may look; only System Administrators may change anything.";

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Directory for Steward's state: the control-plane store, the instance databases,
    /// retired instances and the backup repository (`backups/`, unless STEWARD_BACKUP_DIR says
    /// otherwise). Created if missing. [default: steward-data; env: STEWARD_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. 0.0.0.0:8080; port 0 picks a free port (printed on start).
    /// [default: 127.0.0.1:8080; env: STEWARD_LISTEN]
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// A TOML configuration file (its keys are the snake_case names of the STEWARD_*
    /// variables, e.g. `data_dir`, `listen`). It must exist.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A release catalog directory (with catalog.toml) to use instead of the built-in one.
    /// [env: STEWARD_CATALOG_DIR]
    #[arg(long, value_name = "DIR")]
    pub catalog_dir: Option<PathBuf>,
    /// A file whose first line is the API token to give the first administrator on first
    /// start (it must start with `stw_` and have at least 32 characters after it), for
    /// automation that provisions Steward. Ignored once users exist.
    /// [env: STEWARD_BOOTSTRAP_TOKEN_FILE, or the token itself in STEWARD_BOOTSTRAP_TOKEN]
    #[arg(long, value_name = "FILE")]
    pub bootstrap_token_file: Option<PathBuf>,
}

/// An instance type.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum InstanceType {
    /// Live data; restores and refreshes never write into it.
    Production,
    /// For tests and training; restores and refreshes go here.
    Sandbox,
}

impl InstanceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Production => "production",
            Self::Sandbox => "sandbox",
        }
    }
}

/// A user's role.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Role {
    /// Everything, including users, approvals and other users' tokens.
    SystemAdministrator,
    /// Day-to-day work on instances, without managing users.
    DelegatedAdmin,
    /// Read-only.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemAdministrator => "system_administrator",
            Self::DelegatedAdmin => "delegated_admin",
            Self::Viewer => "viewer",
        }
    }
}

#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print the API's JSON answer (pretty) instead of a table, for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Create an instance: a new database at a catalog release, with a documents folder.
    Create {
        /// 3–63 lowercase letters, digits and dashes, e.g. `acme-prod`.
        name: String,
        /// Production or sandbox. Restores and refreshes only ever write into sandboxes.
        #[arg(long = "type", value_name = "TYPE")]
        instance_type: InstanceType,
        /// The release the database starts at, e.g. `9.0` (see `steward release list`).
        /// [default: the catalog's latest release]
        #[arg(long, value_name = "VERSION")]
        release: Option<String>,
        /// The node that keeps the instance's files and runs its jobs (see `steward node
        /// list`), or `least-loaded`. [default: least-loaded: the up node with the fewest
        /// instances, the answering node first among equals]
        #[arg(long, value_name = "NODE")]
        node: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List instances with their type, release, state and storage, and the total storage.
    ///
    /// The server answers in pages (of up to 1,000); the command reads them all, or stops at
    /// --limit.
    List {
        /// Only instances whose name contains this (case-insensitive).
        #[arg(long, value_name = "TEXT")]
        filter: Option<String>,
        /// At most this many instances, by name. [default: all]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        limit: Option<u64>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one instance, including the database file applications open.
    Show {
        /// The instance's name.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Switch an instance between production and sandbox (audited).
    Switch {
        /// The instance's name.
        name: String,
        /// The type to switch to.
        #[arg(long = "type", value_name = "TYPE")]
        instance_type: InstanceType,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete an instance: it goes out of service and its database and documents move to
    /// the data directory's `retired/` folder; nothing is erased.
    Delete {
        /// The instance's name.
        name: String,
        /// The instance's name typed again, to confirm. Required; the deletion is refused
        /// unless it matches NAME exactly.
        #[arg(long, value_name = "NAME", required = true)]
        confirm: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// List the releases in the catalog, oldest first, with their support dates.
    List(JsonFlag),
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users with their roles and whether they are disabled (System Administrators).
    List(JsonFlag),
    /// Create a user (System Administrators). Without --password-stdin, Steward generates a
    /// password and it is printed once.
    Create {
        /// 2–64 letters, digits, '.', '_', '-' and '@'.
        username: String,
        /// What the user may do.
        #[arg(long, value_name = "ROLE")]
        role: Role,
        /// Read the user's password from the first line of standard input instead of
        /// generating one (at least 12 characters).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change a user's role. The last active System Administrator cannot be demoted.
    SetRole {
        username: String,
        /// The new role.
        #[arg(long, value_name = "ROLE")]
        role: Role,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Disable a user: their API tokens and sessions stop working until they are enabled
    /// again. The last active System Administrator cannot be disabled.
    Disable {
        username: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Enable a disabled user again.
    Enable {
        username: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show who the API token belongs to and their role.
    Whoami(JsonFlag),
    /// Change your own password: reads the current password, then the new one (at least 12
    /// characters), one per line from standard input.
    Password,
    /// Set the email address a user's notifications go to (see `steward notify --help`), or
    /// clear it with --clear. Your own, or anyone's for a System Administrator.
    #[command(group(ArgGroup::new("address").required(true).args(["email", "clear"])))]
    SetEmail {
        username: String,
        /// The address, e.g. `ops@example.com`.
        email: Option<String>,
        /// Remove the address: the user gets no more email notifications.
        #[arg(long)]
        clear: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertsCommand {
    /// Dismiss an alert (its id is in `steward alerts --json`) for yourself only; others
    /// still see it.
    Dismiss {
        /// The alert's id.
        id: i64,
    },
}

/// Who is told about an event.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Audience {
    /// System Administrators only.
    SystemAdministrators,
    /// Every administrator and user.
    AllAdminsAndUsers,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::SystemAdministrators => "system_administrators",
            Self::AllAdminsAndUsers => "all_admins_and_users",
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum NotifyCommand {
    /// The communications schedule: the audience and channels of every event.
    #[command(subcommand)]
    Schedule(ScheduleCommand),
    /// Extra email recipients of an instance's notifications (besides the audience's users).
    #[command(subcommand)]
    Recipients(RecipientsCommand),
    /// Webhooks: URLs that receive every event on the webhook channel as a signed JSON POST.
    #[command(subcommand)]
    Webhooks(WebhooksCommand),
    /// The delivery log, newest first: one line per notification, channel and recipient,
    /// with its state (pending, sent or failed), attempts and last error.
    ///
    /// A pending delivery that has an error is waiting for its next attempt; after the
    /// server's maximum number of attempts it is marked failed.
    Log {
        /// Only deliveries of this instance's notifications.
        #[arg(long, value_name = "INSTANCE")]
        instance: Option<String>,
        /// At most this many deliveries, 1 to 1000. [default: 100]
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: Option<u32>,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List every event with its audience and channels; CUSTOM says an operator changed it
    /// from the default.
    List(JsonFlag),
    /// Change who is told about an event and how (System Administrators). Give --audience,
    /// --channels or both; what is not given stays as it is.
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["audience", "channels"])))]
    Set {
        /// The event, e.g. `backup_succeeded` (see `steward notify schedule list`).
        event: String,
        /// Who is told.
        #[arg(long, value_name = "AUDIENCE")]
        audience: Option<Audience>,
        /// Comma-separated channels: any of `email`, `webhook`, `in_product`; `none` for the
        /// admin center's notification log only.
        #[arg(long, value_name = "LIST")]
        channels: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Put an event back on the default schedule (System Administrators).
    Reset {
        /// The event, e.g. `backup_succeeded`.
        event: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecipientsCommand {
    /// List an instance's extra email recipients.
    List {
        /// The instance's name.
        instance: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Add an email address that receives the instance's email notifications (System
    /// Administrators). The address must look like name@example.com.
    Add {
        /// The instance's name.
        instance: String,
        /// The address, e.g. `dba@example.com`.
        email: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Stop emailing an extra recipient about the instance (System Administrators).
    Remove {
        /// The instance's name.
        instance: String,
        /// The address to remove.
        email: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List the webhooks (never their secrets).
    List(JsonFlag),
    /// Register a webhook (System Administrators): an http or https URL that receives a JSON
    /// POST per event, signed with HMAC-SHA256 in the X-Steward-Signature header
    /// (`sha256=<hex>` of `<X-Steward-Timestamp>.<body>`).
    ///
    /// Without --secret-stdin, Steward generates the signing secret and it is printed only
    /// this once.
    Add {
        /// Where to POST, e.g. `https://hooks.example.com/steward`.
        #[arg(value_name = "URL")]
        webhook_url: String,
        /// Read the signing secret (at least 16 characters) from the first line of standard
        /// input instead of generating one.
        #[arg(long)]
        secret_stdin: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Remove a webhook by id (from `steward notify webhooks list`); deliveries to it that
    /// are still pending are not sent (System Administrators).
    Remove {
        /// The webhook's id.
        id: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for yourself. Its secret is printed only this once.
    Create {
        /// What the token is for, e.g. `ci-pipeline` (1–100 characters).
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Get an API token with a username and password (no --token needed): how a user
    /// without a token gets one. Reads the password from the first line of standard input.
    /// The secret is printed only this once.
    Login {
        username: String,
        /// What the token is for.
        #[arg(long, value_name = "NAME", default_value = "cli")]
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List your API tokens (never their secrets).
    List {
        /// Everyone's tokens (System Administrators only).
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Revoke an API token by id (from `steward token list`): it stops working at once.
    /// Yours, or anyone's for a System Administrator.
    Revoke {
        id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// List audit entries, newest first. Every filter is optional.
    List(AuditFilter),
}

#[derive(Debug, Args)]
pub struct AuditFilter {
    /// Only entries by this user (or `System`).
    #[arg(long, value_name = "USER")]
    pub actor: Option<String>,
    /// Only this action, or actions under this prefix (`instance` matches `instance.create`).
    #[arg(long, value_name = "ACTION")]
    pub action: Option<String>,
    /// Only entries about this target: an instance name, a username, ...
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,
    /// Only entries at or after this moment, RFC 3339, e.g. 2026-11-01T00:00:00Z.
    #[arg(long, value_name = "TIME")]
    pub since: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// At most this many entries, 1 to 10000. [default: 200]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub limit: Option<u32>,
    #[command(flatten)]
    pub json: JsonFlag,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes by name. A node is `down` once its last heartbeat is older than the
    /// server's node_down_seconds (30 by default), `stopped` after a clean stop.
    List {
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// List jobs, newest first.
    List {
        /// Only jobs about this target (an instance name).
        #[arg(long, value_name = "INSTANCE")]
        target: Option<String>,
        /// Only jobs in this state: queued, running, succeeded or failed.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one job with its stages and their timings, progress and last error.
    Show {
        /// The job's id, as `steward job list` shows it.
        id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
}

/// How a command that starts a job waits for it.
#[derive(Debug, Args)]
pub struct WaitFlag {
    /// Wait until the job ends, showing its stage and progress on stderr; exit with 0 if it
    /// succeeded and 1 if it failed. Without it the command returns as soon as the job is
    /// queued (follow it with `steward job show ID`).
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Take an on-demand backup of an instance, with a label and notes.
    ///
    /// The backup is queued as a job and the command returns at once with its id, unless
    /// --wait is given. The instance stays available while it is backed up. The backup
    /// expires 3 days after it is taken. The instance must be at a release that supports
    /// backups (8.1 or later unless the server sets another minimum_backup_release); Viewers
    /// cannot take backups.
    Create {
        /// The instance to back up.
        instance: String,
        /// What this backup is, to find it again, e.g. `before-customization` (1–100
        /// characters). Required.
        #[arg(long, value_name = "LABEL")]
        label: String,
        /// Free-text notes about why it was taken.
        #[arg(long, value_name = "TEXT")]
        notes: Option<String>,
        #[command(flatten)]
        wait: WaitFlag,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List an instance's backups, newest first: queued, running, completed and failed ones
    /// (deleted and expired ones are gone). System backups show "System" as their creator.
    List {
        /// The instance whose backups to list.
        instance: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show one backup: label, notes, status, release, who took it, when it expires, its size,
    /// and what may be done with it (edit, delete, restore).
    Show {
        /// The backup's id, as `steward backup list` shows it.
        id: i64,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Change an on-demand backup's label or notes (at least one). System, pre-update and
    /// pre-refresh backups cannot be edited.
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["label", "notes"])))]
    Edit {
        /// The backup's id.
        id: i64,
        /// The new label (1–100 characters).
        #[arg(long, value_name = "LABEL")]
        label: Option<String>,
        /// The new notes; `--notes ''` clears them.
        #[arg(long, value_name = "TEXT")]
        notes: Option<String>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Delete an on-demand backup. This cannot be undone. System, pre-update and pre-refresh
    /// backups cannot be deleted (they expire on their own).
    ///
    /// Asks for confirmation on the terminal. Without a terminal (in scripts), pass --yes;
    /// without it the command refuses (exit code 2) and deletes nothing.
    Delete {
        /// The backup's id.
        id: i64,
        /// Delete without asking. Required when standard input is not a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Restore a backup, or an instance as it was at any moment, into a sandbox instance,
    /// replacing its database.
    ///
    /// Either a backup (ID), or an instance and a moment (--instance NAME --at TIME): the
    /// database exactly as committed at the last commit at or before TIME, from continuous
    /// capture (see `steward backup range NAME` for the moments that can be restored).
    ///
    /// Prints a review (what is restored, its release, the target) and asks for confirmation
    /// on the terminal; without a terminal pass --yes, or the command refuses (exit code 2).
    /// The target must be a sandbox: to restore into a production instance, switch it to
    /// sandbox first, restore, then switch it back. The target's database is replaced (and
    /// takes the release the source had then).
    ///
    /// The target's documents folder is not touched. The target is unavailable until the
    /// restore completes. A backup must be completed.
    #[command(group(ArgGroup::new("source").required(true).args(["id", "instance"])))]
    Restore {
        /// The backup's id (any instance's backup).
        id: Option<i64>,
        /// Restore this instance as it was at --at instead of a backup.
        #[arg(long, value_name = "INSTANCE", requires = "at", conflicts_with = "id")]
        instance: Option<String>,
        /// The moment to restore --instance to: `YYYY-MM-DD HH:MM[:SS]` in --time-zone
        /// (default UTC), or RFC 3339 with an offset (e.g. `2027-01-10T22:15:07+01:00`).
        #[arg(long, value_name = "TIME", requires = "instance")]
        at: Option<String>,
        #[command(flatten)]
        zone: workitem::TimeZoneFlag,
        /// The sandbox instance to restore into; it may be the backup's own instance.
        #[arg(long, value_name = "INSTANCE")]
        target: String,
        /// Restore without asking. Required when standard input is not a terminal.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        wait: WaitFlag,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Show the moments an instance can be restored to: "restorable from X to Y", the spans
    /// continuous capture covers, and the gaps between them with their reasons.
    Range {
        /// The instance.
        instance: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Check that backups can be restored, without restoring them: one backup, an
    /// instance's backups, or all of them.
    #[command(long_about = VERIFY_ABOUT)]
    #[command(group(ArgGroup::new("what").required(true).args(["id", "instance", "all"])))]
    Verify {
        /// The backup's id, as `steward backup list` shows it.
        id: Option<i64>,
        /// Verify every completed backup of this instance.
        #[arg(long, value_name = "INSTANCE")]
        instance: Option<String>,
        /// Verify every completed backup of every instance.
        #[arg(long)]
        all: bool,
        /// Read every chunk of the backups and check it against its hash (finds corrupt
        /// data; reads as much as the backups hold).
        #[arg(long, conflicts_with = "sample")]
        read_data: bool,
        /// Read this percentage of the backups' data, chosen at random: more than 0, at
        /// most 100 (e.g. `--sample 10`).
        #[arg(long, value_name = "PERCENT")]
        sample: Option<f64>,
        /// Start the verify and return at once with its job id, instead of waiting for the
        /// report.
        #[arg(long)]
        no_wait: bool,
        #[command(flatten)]
        json: JsonFlag,
    },
}

const VERIFY_ABOUT: &str = "\
Check that backups can be restored, without restoring them: one backup (ID), every backup of
an instance (--instance NAME) or of every instance (--all).

Modes:
  (default)         structure: every chunk a backup needs is in a pack index, and every pack
                    it needs exists and is long enough for its frames. Reads no chunk data, so
                    it is quick, but it cannot see a changed byte inside a pack.
  --read-data       also read every chunk and check it against its hash: finds corrupt data.
  --sample PERCENT  also read this percentage of the data (0 < PERCENT <= 100), at random.

The verify runs as a job on the server. By default the command waits for it, showing its
progress on stderr, and prints a report: per backup, whether it is whole, and the missing and
corrupt chunks; then each damaged pack with every backup it damages (packs are shared between
backups, and between instances), and the problems found, naming packs and chunks. --json
prints the report as JSON; --no-wait returns at once with the job (its result is the report).

A backup found damaged is marked damaged in `steward backup list` and `show`, the API and the
admin center, an alert is raised (event backup_damaged), and restoring it is refused until a
verify that would have seen the problem finds it whole (for damage found by reading data:
--read-data). Exit code 6 when damaged backups were found.

System Administrators and Delegated Admins may verify.";

#[derive(Debug, Subcommand)]
pub enum MaintenanceCommand {
    /// Remove expired backups now, then delete backup data no backup references any more
    /// (e.g. left by a backup that failed or was interrupted), and print what was freed.
    ///
    /// Steward also does this on its own schedule. Data written within the last moments may
    /// be kept for a grace period (STEWARD_PRUNE_GRACE_SECONDS on the server), so a backup
    /// that is running is never pruned. System Administrators only.
    Prune(JsonFlag),
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
