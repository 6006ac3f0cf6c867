//! The object store seen by the repository: one `ObjectStore` (local directory or S3), a tokio
//! runtime to drive it from synchronous code, and retries with exponential backoff for
//! transient errors. Nothing else in the crate talks to `object_store` directly.

use std::future::Future;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload};

use crate::error::Result;

/// How transient object store errors are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, including the first (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry; doubled each time.
    pub base_delay: Duration,
    /// Upper bound on one delay.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// Errors worth retrying: everything that is not a definite answer from the store.
fn is_transient(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    ) && !e.to_string().contains("Range started at")
        && !e.to_string().contains("Wanted range starting at")
}

/// Owns the runtime when the repository made its own; shut down without blocking on drop so
/// a repository may be dropped anywhere, even inside an async context.
pub(crate) struct RuntimeGuard(Option<tokio::runtime::Runtime>);

impl Drop for RuntimeGuard {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Directories of the stores made by `Repository::local_store`, by store. An
/// `Arc<dyn ObjectStore>` cannot say what it is, but the repository needs the directory of a
/// local store to find what the store never lists: the staging files (`<name>#<n>`) of writes
/// that a killed process left behind. The `Weak` keeps the allocation, so an address cannot be
/// reused while its entry exists; entries of dropped stores are removed on the next insert.
type LocalRoots = Vec<(Weak<dyn ObjectStore>, PathBuf)>;
static LOCAL_ROOTS: Mutex<LocalRoots> = Mutex::new(Vec::new());

/// Records that `store` keeps its objects in the directory `root`.
pub(crate) fn remember_local_root(store: &Arc<dyn ObjectStore>, root: PathBuf) {
    let mut roots = LOCAL_ROOTS.lock().unwrap_or_else(|e| e.into_inner());
    roots.retain(|(w, _)| w.strong_count() > 0);
    roots.push((Arc::downgrade(store), root));
}

fn local_root_of(store: &Arc<dyn ObjectStore>) -> Option<PathBuf> {
    let roots = LOCAL_ROOTS.lock().unwrap_or_else(|e| e.into_inner());
    roots
        .iter()
        .find(|(w, _)| std::ptr::addr_eq(w.as_ptr(), Arc::as_ptr(store)))
        .map(|(_, root)| root.clone())
}

#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<dyn ObjectStore>,
    rt: tokio::runtime::Handle,
    _guard: Arc<RuntimeGuard>,
    pub retry: RetryPolicy,
    pub name: String,
    /// The directory of a store made by `Repository::local_store`; `None` for other stores.
    pub local_root: Option<PathBuf>,
    /// Who this process's locks belong to (e.g. a Steward node's name; empty by default).
    pub owner: String,
}

impl Store {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("steward-repo-io")
            .enable_all()
            .build()
            .map_err(|e| crate::RepoError::io("tokio runtime", e))?;
        let name = inner.to_string();
        let local_root = local_root_of(&inner);
        Ok(Store {
            inner,
            rt: rt.handle().clone(),
            _guard: Arc::new(RuntimeGuard(Some(rt))),
            retry: RetryPolicy::default(),
            name,
            local_root,
            owner: String::new(),
        })
    }

    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.rt
    }

    /// Runs a future to completion from synchronous code (not from inside an async task).
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    async fn with_retry<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = object_store::Result<T>>,
    {
        let mut delay = self.retry.base_delay;
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if attempt < self.retry.max_attempts.max(1) && is_transient(&e) => {
                    tracing::warn!(attempt, %e, "{what} failed, retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    pub async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = Path::from(key);
        self.with_retry("put", || {
            self.inner.put(&path, PutPayload::from_bytes(data.clone()))
        })
        .await
        .map(|_| ())
    }

    /// The whole object, or `None` when it does not exist.
    pub async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = Path::from(key);
        let r = self
            .with_retry("get", || async {
                let r = self.inner.get(&path).await?;
                r.bytes().await
            })
            .await;
        match r {
            Ok(b) => Ok(Some(b)),
            Err(crate::RepoError::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = Path::from(key);
        self.with_retry("get_range", || self.inner.get_range(&path, range.clone()))
            .await
    }

    /// An object's metadata, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = Path::from(key);
        match self.with_retry("head", || self.inner.head(&path)).await {
            Ok(m) => Ok(Some(m)),
            Err(crate::RepoError::Store(object_store::Error::NotFound { .. })) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let path = Path::from(prefix);
        self.with_retry("list", || {
            self.inner.list(Some(&path)).try_collect::<Vec<_>>()
        })
        .await
    }

    /// Deletes an object; a missing object is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        let path = Path::from(key);
        match self.with_retry("delete", || self.inner.delete(&path)).await {
            Ok(()) => Ok(()),
            Err(crate::RepoError::Store(object_store::Error::NotFound { .. })) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads many small objects concurrently (`None` for those that vanished meanwhile).
    pub async fn get_many(&self, keys: Vec<String>) -> Result<Vec<(String, Option<Bytes>)>> {
        futures::stream::iter(keys)
            .map(|k| async move {
                let b = self.get(&k).await?;
                Ok::<_, crate::RepoError>((k, b))
            })
            .buffered(16)
            .try_collect()
            .await
    }
}

/// The final path segment of an object's location.
pub(crate) fn file_name(meta: &ObjectMeta) -> String {
    meta.location.filename().unwrap_or_default().to_string()
}
