//! The durable job engine: stages, progress, failure, and recovery after a stop.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use steward_server::services::{Actor, JobContext, JobHandler, JobHandlers, Recovery};
use steward_server::{ServiceError, Services};
use steward_store::JobRow;

struct Copy {
    runs: Arc<AtomicUsize>,
}

impl JobHandler for Copy {
    fn run(&self, _s: &Services, job: &JobRow, ctx: &JobContext) -> Result<Value, ServiceError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        ctx.stage("read")?;
        ctx.progress(50, 100)?;
        ctx.stage("write")?;
        ctx.progress(100, 100)?;
        if job.params["fail"] == true {
            return Err(ServiceError::internal("the disk is full"));
        }
        Ok(json!({"bytes": 100}))
    }

    fn recover(&self, _s: &Services, job: &JobRow) -> Recovery {
        if job.params["resumable"] == true {
            Recovery::Resume
        } else {
            Recovery::Fail("interrupted".into())
        }
    }
}

fn services() -> (tempfile::TempDir, Services) {
    let dir = tempfile::tempdir().unwrap();
    let store = steward_store::Store::open(&dir.path().join("steward.db")).unwrap();
    let repo = steward_repo::Repository::local_store(dir.path().join("backups"))
        .and_then(|s| steward_repo::Repository::open_or_init(s, None))
        .unwrap();
    let s = Services::new(
        store,
        steward_core::release::Catalog::builtin(),
        Arc::new(steward_core::SystemClock),
        dir.path(),
        12,
        steward_server::RepoHandle::opened(repo),
        Default::default(),
    );
    (dir, s)
}

#[test]
fn jobs_record_stages_results_and_errors() {
    let (_d, s) = services();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut handlers = JobHandlers::default();
    handlers.register("copy", Copy { runs: runs.clone() });
    let ok = s
        .enqueue_job(&Actor::system(), "copy", "crm", json!({}))
        .unwrap();
    let bad = s
        .enqueue_job(&Actor::system(), "copy", "crm", json!({"fail": true}))
        .unwrap();
    let orphan = s
        .enqueue_job(&Actor::system(), "mystery", "crm", json!({}))
        .unwrap();
    while s.run_next_job(&handlers).unwrap() {}
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    let ok = s.show_job(&Actor::system(), ok.id).unwrap();
    assert_eq!(ok.state, "succeeded");
    assert_eq!(ok.result, Some(json!({"bytes": 100})));
    assert_eq!(
        ok.stages
            .iter()
            .map(|s| s.stage.as_str())
            .collect::<Vec<_>>(),
        ["read", "write"]
    );
    assert_eq!((ok.progress_done, ok.progress_total), (100, 100));
    assert!(ok.finished_at.is_some());

    let bad = s.show_job(&Actor::system(), bad.id).unwrap();
    assert_eq!(bad.state, "failed");
    assert_eq!(bad.last_error.as_deref(), Some("the disk is full"));
    let orphan = s.show_job(&Actor::system(), orphan.id).unwrap();
    assert_eq!(orphan.state, "failed");
    assert!(orphan.last_error.unwrap().contains("mystery"));

    let failed = s.list_jobs(&Actor::system(), None, Some("failed")).unwrap();
    assert_eq!(failed.len(), 2);
    assert!(s.list_jobs(&Actor::system(), None, Some("done")).is_err());
}

#[test]
fn running_jobs_are_resumed_or_failed_after_a_stop() {
    let (_d, s) = services();
    let runs = Arc::new(AtomicUsize::new(0));
    let mut handlers = JobHandlers::default();
    handlers.register("copy", Copy { runs: runs.clone() });
    let resumable = s
        .enqueue_job(&Actor::system(), "copy", "a", json!({"resumable": true}))
        .unwrap();
    let not = s
        .enqueue_job(&Actor::system(), "copy", "b", json!({}))
        .unwrap();
    // Simulate a stop while both ran: claim them without running.
    let now = s.now();
    s.store.write(|db| db.claim_next_job(now)).unwrap();
    s.store.write(|db| db.claim_next_job(now)).unwrap();

    assert_eq!(s.recover_jobs(&handlers).unwrap(), 2);
    let not = s.show_job(&Actor::system(), not.id).unwrap();
    assert_eq!(not.state, "failed");
    assert_eq!(not.last_error.as_deref(), Some("interrupted"));
    assert_eq!(
        s.show_job(&Actor::system(), resumable.id).unwrap().state,
        "queued"
    );
    while s.run_next_job(&handlers).unwrap() {}
    assert_eq!(
        s.show_job(&Actor::system(), resumable.id).unwrap().state,
        "succeeded"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}
