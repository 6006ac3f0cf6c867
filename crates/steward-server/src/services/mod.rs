//! Services: the operations every surface (API, admin center, scheduler) calls. Each one
//! asks `steward_core::policy` whether the actor may act, applies the domain's rules, writes
//! the change and its audit entry in one transaction, and returns a view. No HTTP here.

mod access;
mod audit;
pub mod backups;
pub mod capture;
pub mod drills;
mod instances;
pub mod jobs;
pub mod nodes;
pub mod notify;
mod releases;
pub mod updates;
pub mod verify;
pub mod workitems;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use steward_core::release::Catalog;
use steward_core::{Clock, Role};
use steward_store::{NewAudit, Store};

pub use access::{
    Bootstrap, CreatedToken, CreatedUser, NewSession, TokenView, UserView, login_limits,
};
pub use audit::AuditQuery;
pub use backups::{
    AlertView, BackupSettings, BackupView, InstanceStorage, RestoreStarted, StorageView,
};
pub use instances::{InstanceList, InstanceListQuery, InstanceView, MAX_PAGE};
pub use jobs::{JobContext, JobHandler, JobHandlers, JobView, Recovery};
pub use notify::{
    CreatedWebhook, DeliveryView, NotifySettings, RecipientView, ScheduleEntryView, WebhookView,
};
pub use releases::ReleaseView;

use crate::error::ServiceError;

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// Who is acting: a signed-in user, or Steward itself for scheduled work.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub user_id: Option<i64>,
    pub username: String,
    pub role: Role,
}

impl Actor {
    /// Steward's own job runner ("System" in the admin center).
    pub fn system() -> Self {
        Self {
            user_id: None,
            username: "System".into(),
            role: Role::SystemAdministrator,
        }
    }
}

/// Where Steward keeps files under its data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
}

impl Paths {
    pub fn store(&self) -> PathBuf {
        self.data_dir.join("steward.db")
    }
    pub fn instances(&self) -> PathBuf {
        self.data_dir.join("instances")
    }
    pub fn instance_dir(&self, name: &str) -> PathBuf {
        self.instances().join(name)
    }
    pub fn retired(&self) -> PathBuf {
        self.data_dir.join("retired")
    }
}

/// Everything the services need, shared by the API, the admin center and background work.
pub struct Services {
    pub store: Store,
    pub catalog: Catalog,
    pub clock: Arc<dyn Clock>,
    pub paths: Paths,
    pub session_hours: i64,
    /// Failed sign-ins that lock an account or a client address, and for how long.
    pub login: steward_core::policy::SignInLimits,
    /// The backup repository, opened when first needed (see [`Services::repo`]).
    pub repo: crate::backup_repo::RepoHandle,
    pub backups: BackupSettings,
    /// Wakes the job runner when a job is queued.
    pub job_wakeup: Arc<tokio::sync::Notify>,
    /// Testing aid: pause after entering each job stage.
    pub stage_pause: std::time::Duration,
    /// Notification delivery settings (SMTP, links, retries).
    pub notify: NotifySettings,
    /// Wakes the notification worker when something is emitted.
    pub notify_wakeup: Arc<tokio::sync::Notify>,
    /// Update windows, rehearsals and the policy file.
    pub updates: updates::UpdateSettings,
    /// Refresh lead time, acceptance, safety backups and post-refresh scripts.
    pub workitems: workitems::WorkItemSettings,
    /// Restore drills: the schedule and the drill worker's state.
    pub drills: drills::Drills,
    /// Continuous capture: its settings and what the capture worker confirmed.
    pub capture: capture::Capture,
    /// This Steward node: its name, address and heartbeat (see `nodes.rs`).
    pub node: nodes::Node,
    /// The backup repository's total size as last listed (see `backups.rs`).
    pub repo_total: backups::RepoTotal,
}

impl Services {
    /// The backup repository; `503 repository_unavailable` with the reason while its storage
    /// cannot be reached (a job that needs it fails with that reason).
    pub fn repo(&self) -> Result<Arc<steward_repo::Repository>> {
        self.repo.get().map_err(|message| {
            ServiceError::new(
                crate::ErrorKind::Unavailable,
                "repository_unavailable",
                message,
            )
        })
    }

    pub fn new(
        store: Store,
        catalog: Catalog,
        clock: Arc<dyn Clock>,
        data_dir: &Path,
        session_hours: i64,
        repo: crate::backup_repo::RepoHandle,
        backups: BackupSettings,
    ) -> Self {
        Self {
            store,
            catalog,
            clock,
            paths: Paths {
                data_dir: data_dir.to_owned(),
            },
            session_hours,
            login: Default::default(),
            repo,
            backups,
            job_wakeup: Arc::new(tokio::sync::Notify::new()),
            stage_pause: std::time::Duration::ZERO,
            notify: NotifySettings::default(),
            notify_wakeup: Arc::new(tokio::sync::Notify::new()),
            updates: updates::UpdateSettings::default(),
            workitems: workitems::WorkItemSettings::default(),
            drills: drills::Drills::default(),
            capture: capture::Capture::default(),
            node: nodes::Node::default(),
            repo_total: backups::RepoTotal::default(),
        }
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }
}

/// An audit entry for `actor` doing `action` to `target` with the values that matter.
fn audit_entry(actor: &Actor, action: &str, target: &str, details: serde_json::Value) -> NewAudit {
    NewAudit {
        actor: actor.username.clone(),
        action: action.to_owned(),
        target: target.to_owned(),
        details,
    }
}

/// A random secret of `bytes` bytes, hex-encoded.
fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("the operating system's random source failed");
    hex::encode(buf)
}

/// How secrets (API tokens, session ids) are stored: only their BLAKE3 hash.
fn secret_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}
