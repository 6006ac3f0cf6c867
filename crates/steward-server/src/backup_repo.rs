//! Opens the backup repository where the configuration says ([`BackupTarget`]): a local
//! directory, or S3-compatible storage reached with bounded timeouts and retries, so storage
//! that does not answer fails a job with a clear error instead of holding it forever.

use std::sync::Arc;
use std::time::Duration;

use object_store::ObjectStore;
use steward_repo::{Key, RepoError, Repository};

use crate::StartError;
use crate::config::{BackupTarget, S3Target};

/// The object store of `target`. Nothing is contacted yet.
pub(crate) fn object_store(target: &BackupTarget) -> Result<Arc<dyn ObjectStore>, RepoError> {
    match target {
        BackupTarget::Dir(dir) => Repository::local_store(dir),
        BackupTarget::S3(s3) => s3_store(s3),
    }
}

/// Each request is bounded by `timeout` (connecting by at most 5 s of it) and retried by
/// object_store only within that time (a refused connection or a 5xx answer, quickly); the
/// repository then retries a failed operation a few times with backoff. A store that does not
/// answer therefore fails an operation after about five timeouts.
fn s3_store(t: &S3Target) -> Result<Arc<dyn ObjectStore>, RepoError> {
    let client = object_store::ClientOptions::new()
        .with_timeout(t.timeout)
        .with_connect_timeout(t.timeout.min(Duration::from_secs(5)))
        .with_allow_http(t.allow_http);
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 3,
        retry_timeout: t.timeout,
    };
    let mut b = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(&t.bucket)
        .with_region(&t.region)
        .with_access_key_id(&t.access_key_id)
        .with_secret_access_key(&t.secret_access_key)
        .with_allow_http(t.allow_http)
        .with_client_options(client)
        .with_retry(retry);
    if let Some(e) = &t.endpoint {
        b = b.with_endpoint(e);
    }
    let s3 = b.build()?;
    Ok(if t.prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(
            s3,
            t.prefix.as_str(),
        ))
    })
}

/// The backup repository, opened when first needed. At start Steward tries to open it; when
/// the storage cannot be reached then, Steward starts anyway (the API and everything that
/// needs no backup data work), and every later use tries again: a backup meanwhile fails as a
/// job with the reason and its alert, and the first use after the storage is back opens it.
pub struct RepoHandle {
    target: BackupTarget,
    key: Option<Key>,
    /// This node's name: the owner of the locks it takes in a repository other nodes share.
    owner: String,
    open: std::sync::Mutex<Option<Arc<Repository>>>,
}

impl RepoHandle {
    /// Opens the repository now, or, when the storage cannot be reached, a handle that opens it
    /// at its first use. Any other failure (a wrong key, access denied, a repository written by
    /// a newer Steward, a directory that cannot be created) stops the start.
    pub fn start(target: BackupTarget, key: Option<Key>, owner: &str) -> Result<Self, StartError> {
        let handle = Self {
            target,
            key,
            owner: owner.to_owned(),
            open: std::sync::Mutex::new(None),
        };
        match open(&handle.target, handle.key.clone(), &handle.owner) {
            Ok(repo) => *handle.lock() = Some(Arc::new(repo)),
            Err(Opening::Unreachable(e)) => tracing::warn!(
                repository = %handle.target,
                error = %e,
                "the backup repository cannot be reached; Steward starts without it and tries \
                 again when a backup, restore or drill needs it"
            ),
            Err(Opening::Failed(e)) => return Err(e),
        }
        Ok(handle)
    }

    /// An open repository (used as it is).
    pub fn opened(repo: Repository) -> Self {
        Self {
            target: BackupTarget::Dir(Default::default()),
            key: None,
            owner: String::new(),
            open: std::sync::Mutex::new(Some(Arc::new(repo))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Repository>>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The repository, opened now if it was not yet; the reason when it cannot be.
    pub fn get(&self) -> Result<Arc<Repository>, String> {
        if let Some(repo) = self.lock().as_ref() {
            return Ok(repo.clone());
        }
        match open(&self.target, self.key.clone(), &self.owner) {
            Ok(repo) => {
                let repo = Arc::new(repo);
                *self.lock() = Some(repo.clone());
                Ok(repo)
            }
            Err(Opening::Unreachable(e) | Opening::Failed(e)) => Err(e.to_string()),
        }
    }

    /// Whether the repository has been opened.
    pub fn is_open(&self) -> bool {
        self.lock().is_some()
    }
}

enum Opening {
    /// The storage did not answer: worth trying again later.
    Unreachable(StartError),
    Failed(StartError),
}

/// Opens (or, the first time, creates) the repository at `target` and drops the locks a
/// crash of this process left, naming where it looked and what to check when it cannot; the
/// secret is never shown. Each request is bounded as in [`s3_store`].
fn open(target: &BackupTarget, key: Option<Key>, owner: &str) -> Result<Repository, Opening> {
    let fail = |e: RepoError| {
        let hint = match (target, &e) {
            (BackupTarget::S3(_), RepoError::Store(_)) => {
                ". Check that the storage answers at that address, and backup_url, backup_s3_endpoint, \
                 backup_s3_region and the credentials"
            }
            _ => "",
        };
        match unreachable(&e) {
            Some(what) => Opening::Unreachable(StartError::Backups(format!(
                "{target}: {what}; given up after retries: {e}{hint}"
            ))),
            None => Opening::Failed(StartError::Backups(format!("{target}: {e}{hint}"))),
        }
    };
    let mut repo = object_store(target)
        .and_then(|s| Repository::open_or_init(s, key))
        .map_err(fail)?;
    // This node's locks carry its name. Its own locks left by a backup that a crash
    // interrupted are stale, and would keep prune from reclaiming that backup's data; other
    // nodes' locks are theirs (removing a running backup's lock would let a prune delete what
    // it is about to reference).
    repo.set_lock_owner(owner);
    let stale = repo.remove_backup_locks().map_err(fail)?;
    if stale > 0 {
        tracing::warn!(stale, "removed backup locks left by an interrupted backup");
    }
    // Likewise for this node's prune: without this, a prune killed with the process would
    // refuse every prune for 15 minutes.
    let stale = repo.remove_prune_locks().map_err(fail)?;
    if stale > 0 {
        tracing::warn!(stale, "removed a prune lock left by an interrupted prune");
    }
    tracing::info!(repository = %target, "backup repository open");
    Ok(repo)
}

/// When `e` is object storage that could not be reached, did not answer in time or dropped
/// the connection (after the retries): what happened, in words for a job error and its alert.
/// `None` for every other error (a definite answer such as "access denied" speaks for itself).
pub(crate) fn unreachable(e: &RepoError) -> Option<&'static str> {
    use object_store::client::{HttpError, HttpErrorKind};
    let RepoError::Store(e) = e else {
        return None;
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(h) = c.downcast_ref::<HttpError>() {
            return match h.kind() {
                HttpErrorKind::Timeout => {
                    Some("the backup repository did not answer in time (backup_s3_timeout_seconds)")
                }
                HttpErrorKind::Connect => {
                    Some("the backup repository could not be reached (no connection)")
                }
                HttpErrorKind::Request | HttpErrorKind::Interrupted => {
                    Some("the backup repository did not answer (it closed the connection)")
                }
                // Any other failure of the transport itself (an HTTP answer with a status is
                // not an `HttpError`): a connection reset while the request was sent is
                // classified so under load.
                _ => Some("the backup repository did not answer (the connection failed)"),
            };
        }
        cause = c.source();
    }
    None
}
