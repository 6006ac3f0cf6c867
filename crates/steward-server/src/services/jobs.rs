//! Durable jobs: the unit of background work behind every long operation (backup, restore,
//! update stage, refresh). A job is a row first; the runner claims queued jobs one at a time,
//! records stages and progress, and ends each job succeeded or failed with its error. At start,
//! jobs a crash left `running` are handed to their handler's `recover`, which resumes or fails
//! them cleanly.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::Value;
use steward_core::policy::{Action, authorize};
use steward_store::{JobRow, JobStageRow, JobState, NewJob};

use super::{Actor, Result, Services};
use crate::error::ServiceError;

/// What to do with a job that was running when Steward stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Put it back in the queue; `run` starts it again from its recorded state.
    Resume,
    /// End it as failed with this message (the handler has already undone what it must).
    Fail(String),
}

/// Records a job's stage and progress as it runs.
pub struct JobContext<'a> {
    services: &'a Services,
    job_id: i64,
}

impl<'a> JobContext<'a> {
    pub fn new(services: &'a Services, job_id: i64) -> Self {
        Self { services, job_id }
    }

    pub fn job_id(&self) -> i64 {
        self.job_id
    }

    /// Enters a named stage (closing the previous one), resetting progress.
    pub fn stage(&self, stage: &str) -> Result<()> {
        let now = self.services.now();
        Ok(self
            .services
            .store
            .write(|db| db.set_job_stage(self.job_id, stage, now))?)
    }

    /// Records progress within the current stage, in bytes or items.
    pub fn progress(&self, done: u64, total: u64) -> Result<()> {
        Ok(self
            .services
            .store
            .write(|db| db.set_job_progress(self.job_id, done, total))?)
    }
}

/// The work behind one kind of job.
pub trait JobHandler: Send + Sync + 'static {
    /// Does the work; the returned value is stored as the job's result.
    fn run(&self, services: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value>;

    /// Decides what happens to a job that was running when Steward stopped. The default
    /// fails it; handlers whose work is idempotent may resume.
    fn recover(&self, _services: &Services, _job: &JobRow) -> Recovery {
        Recovery::Fail("interrupted: Steward stopped while this job ran".into())
    }
}

/// Handlers by job kind.
#[derive(Default, Clone)]
pub struct JobHandlers(HashMap<String, Arc<dyn JobHandler>>);

impl JobHandlers {
    pub fn register(&mut self, kind: &str, handler: impl JobHandler) {
        self.0.insert(kind.to_owned(), Arc::new(handler));
    }

    fn get(&self, kind: &str) -> Option<Arc<dyn JobHandler>> {
        self.0.get(kind).cloned()
    }
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobView {
    pub id: i64,
    /// e.g. `backup`, `restore`
    pub kind: String,
    /// What the job works on, usually an instance name.
    pub target: String,
    /// `queued`, `running`, `succeeded` or `failed`
    pub state: String,
    pub stage: Option<String>,
    pub progress_done: u64,
    pub progress_total: u64,
    #[schema(value_type = Object)]
    pub params: Value,
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The node that claimed the job (runs or ran it); none while it is queued.
    pub node: Option<String>,
    /// The stages the job went through, with their timings (filled by `show`).
    pub stages: Vec<JobStageView>,
}

#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct JobStageView {
    pub stage: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub finished_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl From<JobStageRow> for JobStageView {
    fn from(s: JobStageRow) -> Self {
        Self {
            stage: s.stage,
            started_at: s.started_at,
            finished_at: s.finished_at,
        }
    }
}

impl JobView {
    /// A job without its stage history.
    pub fn from_row(j: JobRow) -> Self {
        Self::new(j, Vec::new())
    }

    fn new(j: JobRow, stages: Vec<JobStageRow>) -> Self {
        Self {
            id: j.id,
            kind: j.kind,
            target: j.target,
            state: j.state.as_str().into(),
            stage: j.stage,
            progress_done: j.progress_done,
            progress_total: j.progress_total,
            params: j.params,
            result: j.result,
            last_error: j.last_error,
            created_by: j.created_by,
            created_at: j.created_at,
            started_at: j.started_at,
            finished_at: j.finished_at,
            node: j.node,
            stages: stages.into_iter().map(JobStageView::from).collect(),
        }
    }
}

impl Services {
    /// Queues a job. Callers write it in the same transaction as the change that needs it
    /// (use [`steward_store::Db::insert_job`] there); this is the stand-alone form.
    pub fn enqueue_job(
        &self,
        actor: &Actor,
        kind: &str,
        target: &str,
        params: Value,
    ) -> Result<JobRow> {
        let now = self.now();
        Ok(self.store.write(|db| {
            db.insert_job(
                &NewJob {
                    kind: kind.into(),
                    target: target.into(),
                    params,
                    created_by: actor.username.clone(),
                },
                now,
            )
        })?)
    }

    pub fn list_jobs(
        &self,
        actor: &Actor,
        target: Option<&str>,
        state: Option<&str>,
    ) -> Result<Vec<JobView>> {
        authorize(actor.role, Action::ViewJobs)?;
        let state = match state.filter(|s| !s.is_empty()) {
            None => None,
            Some(s) => Some(JobState::parse(s).ok_or_else(|| {
                ServiceError::invalid(
                    "invalid_value",
                    format!(
                        "the job state must be one of queued running succeeded failed (got {s:?})"
                    ),
                )
            })?),
        };
        let rows = self
            .store
            .read(|db| db.list_jobs(target.filter(|t| !t.is_empty()), state, 500))?;
        Ok(rows
            .into_iter()
            .map(|j| JobView::new(j, Vec::new()))
            .collect())
    }

    pub fn show_job(&self, actor: &Actor, id: i64) -> Result<JobView> {
        authorize(actor.role, Action::ViewJobs)?;
        self.store.read(|db| {
            let job = db.job(id)?.ok_or_else(|| {
                ServiceError::not_found("unknown_job", format!("there is no job {id}"))
            })?;
            let stages = db.job_stages(id)?;
            Ok(JobView::new(job, stages))
        })
    }

    /// Hands every job a crash left running to its handler's `recover`. Called once at start,
    /// before the runner claims anything.
    pub fn recover_jobs(&self, handlers: &JobHandlers) -> Result<usize> {
        // Another node's running jobs are its own to recover (their files are on its disk).
        let running = self.store.read(|db| db.running_jobs_of(self.node.name()))?;
        let now = self.now();
        for job in &running {
            let recovery = match handlers.get(&job.kind) {
                Some(h) => h.recover(self, job),
                None => Recovery::Fail(format!("no handler for jobs of kind {:?}", job.kind)),
            };
            tracing::warn!(job = job.id, kind = %job.kind, ?recovery, "recovering an interrupted job");
            self.store.write(|db| match &recovery {
                Recovery::Resume => db.requeue_job(job.id),
                Recovery::Fail(msg) => db.finish_job(job.id, Err(msg), now),
            })?;
        }
        Ok(running.len())
    }

    /// Claims and runs the oldest queued job; `false` when none was queued.
    pub fn run_next_job(&self, handlers: &JobHandlers) -> Result<bool> {
        let now = self.now();
        let node = Some(self.node.name());
        let lease = Some(now + self.node.settings.down_after);
        let Some(job) = self
            .store
            .write(|db| db.claim_next_job_on(now, node, lease))?
        else {
            return Ok(false);
        };
        // A user's restore, refresh or update never waits for a restore drill.
        self.preempt_drill(&job.kind);
        let ctx = JobContext {
            services: self,
            job_id: job.id,
        };
        let outcome = match handlers.get(&job.kind) {
            Some(h) => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h.run(self, &job, &ctx)))
                    .unwrap_or_else(|_| Err(ServiceError::internal("the job panicked")))
            }
            None => Err(ServiceError::internal(format!(
                "no handler for jobs of kind {:?}",
                job.kind
            ))),
        };
        let now = self.now();
        match &outcome {
            Ok(v) => {
                tracing::info!(job = job.id, kind = %job.kind, "job succeeded");
                self.store.write(|db| db.finish_job(job.id, Ok(v), now))?;
            }
            Err(e) => {
                tracing::warn!(job = job.id, kind = %job.kind, error = %e, "job failed");
                self.store
                    .write(|db| db.finish_job(job.id, Err(&e.message), now))?;
            }
        }
        // The job may have changed the instance's files: every node shows what they use now.
        if let Err(e) = self.record_storage(Some(&job.target)) {
            tracing::warn!(job = job.id, error = %e, "could not record the instance's storage");
        }
        Ok(true)
    }
}
