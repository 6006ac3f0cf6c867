//! Typed rows the store reads and writes.

use chrono::{DateTime, Utc};
use serde::Serialize;
use steward_core::{Engine, InstanceState, InstanceType, Role};

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: i64,
    pub username: String,
    pub role: Role,
    pub password_hash: String,
    pub created_at: DateTime<Utc>,
    pub disabled_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewUser {
    pub username: String,
    pub role: Role,
    pub password_hash: String,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub id: i64,
    pub user_id: i64,
    pub username: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub token_hash: String,
    pub user_id: i64,
    pub csrf_token: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct InstanceRow {
    pub id: i64,
    pub name: String,
    pub instance_type: InstanceType,
    pub engine: Engine,
    pub release: String,
    pub state: InstanceState,
    pub database_path: String,
    pub documents_path: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub deleted_at: Option<DateTime<Utc>>,
    /// The node that keeps the instance's files (none: from before nodes were recorded).
    pub node: Option<String>,
    /// Database storage (file, -wal, -shm) as last measured by the node that keeps it.
    pub storage_bytes: u64,
}

/// Which page of the live instances [`crate::Db::instance_page`] reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct InstanceQuery<'a> {
    /// Only names containing this (case-insensitive for ASCII, as SQL `LIKE`).
    pub contains: Option<&'a str>,
    /// Only names after this one (a cursor: the last name of the previous page).
    pub after: Option<&'a str>,
    pub offset: i64,
    pub limit: i64,
}

/// A page of live instances, and what the whole match counts.
#[derive(Debug, Clone)]
pub struct InstancePage {
    pub rows: Vec<InstanceRow>,
    /// Instances that match, on every page.
    pub total: u64,
    /// The recorded storage of every instance that matches.
    pub storage_bytes: u64,
}

/// What the storage total leaves out now (seed 001, "Storage Utilization Calculation").
#[derive(Debug, Clone, Default)]
pub struct StorageLeftOut {
    /// Every live instance left out.
    pub names: Vec<String>,
    /// The recorded storage of those left out whose name matched the filter asked for.
    pub bytes: u64,
}

#[derive(Debug, Clone)]
pub struct NewInstance {
    pub name: String,
    pub instance_type: InstanceType,
    pub engine: Engine,
    pub release: String,
    pub state: InstanceState,
    pub database_path: String,
    pub documents_path: String,
    pub created_by: String,
    /// The node that creates (and keeps) the instance; `None` outside a registered node.
    pub node: Option<String>,
}

/// One audit entry to write: who did what to which target, and the values that matter.
#[derive(Debug, Clone)]
pub struct NewAudit {
    pub actor: String,
    pub action: String,
    pub target: String,
    /// `{"before": .., "after": ..}` or any JSON the action needs.
    pub details: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct AuditRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub details: serde_json::Value,
}

/// Which audit entries to list. `action` matches exactly or as a prefix (`instance` matches
/// `instance.create`).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub target: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub limit: Option<i64>,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }

    pub fn is_finished(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Failed)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct JobStageRow {
    pub stage: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: i64,
    pub kind: String,
    /// What the job works on, usually an instance name.
    pub target: String,
    pub state: JobState,
    pub stage: Option<String>,
    pub progress_done: u64,
    pub progress_total: u64,
    pub params: serde_json::Value,
    pub result: Option<serde_json::Value>,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// The node that claimed the job (runs or ran it).
    pub node: Option<String>,
    /// Until when that node's hold on the running job lasts (renewed with its heartbeat).
    pub lease_until: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct NewJob {
    pub kind: String,
    pub target: String,
    pub params: serde_json::Value,
    pub created_by: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackupRow {
    pub id: i64,
    pub instance_id: i64,
    pub instance_name: String,
    pub kind: steward_core::backup::BackupKind,
    pub label: String,
    pub notes: String,
    /// `queued`, `running`, `completed`, `failed`, `deleted` or `expired`.
    pub status: String,
    pub release: String,
    /// The backup's id in the backup repository, once completed.
    pub repo_id: Option<String>,
    pub size_bytes: Option<u64>,
    pub stored_bytes: Option<u64>,
    /// For system backups: the day (UTC, `YYYY-MM-DD`) the backup is for.
    pub scheduled_for: Option<String>,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub expires_at: DateTime<Utc>,
    pub job_id: Option<i64>,
    pub error: Option<String>,
}

#[derive(Debug, Clone)]
pub struct NewBackup {
    pub instance_id: i64,
    pub instance_name: String,
    pub kind: steward_core::backup::BackupKind,
    pub label: String,
    pub notes: String,
    pub release: String,
    pub scheduled_for: Option<String>,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `info`, `success` or `error`.
    pub level: String,
    pub instance: Option<String>,
    pub message: String,
}

/// One row of the communications schedule as the operator changed it.
#[derive(Debug, Clone)]
pub struct ScheduleRow {
    pub event: String,
    pub audience: String,
    /// Comma-separated channels.
    pub channels: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
}

#[derive(Debug, Clone)]
pub struct RecipientRow {
    pub instance: String,
    pub email: String,
    pub added_at: DateTime<Utc>,
    pub added_by: String,
}

#[derive(Debug, Clone)]
pub struct WebhookRow {
    pub id: i64,
    pub url: String,
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// A delivery with the outbox entry it delivers.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub id: i64,
    pub outbox_id: i64,
    pub event: String,
    pub instance: Option<String>,
    pub payload: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub channel: String,
    pub recipient: String,
    /// `pending`, `sent` or `failed`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub sent_at: Option<DateTime<Utc>>,
}
