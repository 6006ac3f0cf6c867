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

    /// The names (last path segment) of the objects directly under `prefix/`, like
    /// [`file_name`] of each object [`Store::list`] returns, with less work on a local
    /// directory: one `readdir`, no `stat` per object (the store's own listing makes three
    /// system calls per file, which at tens of thousands of index objects was most of the cost
    /// of a backup). Falls back to [`Store::list`] for anything it is not sure it reads as the
    /// store would (subdirectories, names the store would encode).
    pub fn list_names(&self, prefix: &str) -> Result<Vec<String>> {
        if let Some(root) = &self.local_root
            && let Some(names) = list_local_names(&root.join(prefix))?
        {
            return Ok(names);
        }
        Ok(self
            .block_on(self.list(prefix))?
            .iter()
            .map(file_name)
            .collect())
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

/// The plain files in `dir` (a missing directory has none), or `None` when it holds something
/// the local store might list differently: a directory (the store lists its files too), a
/// name the store would decode, or an entry it cannot classify. Staging files of writes in
/// progress (`<name>#<digits>`) are left out, as the store leaves them out; so are broken
/// symbolic links.
fn list_local_names(dir: &std::path::Path) -> Result<Option<Vec<String>>> {
    let io = |e| crate::RepoError::io(dir, e);
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Some(Vec::new())),
        Err(e) => return Err(io(e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io)?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            return Ok(None);
        };
        if crate::prune::is_staging_name(&name) {
            continue;
        }
        let plain = !name.starts_with('.')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
        if !plain {
            return Ok(None);
        }
        let ft = entry.file_type().map_err(io)?;
        let is_file = if ft.is_symlink() {
            match std::fs::metadata(entry.path()) {
                Ok(m) if m.is_file() => true,
                Ok(_) => return Ok(None),
                Err(_) => false,
            }
        } else if ft.is_file() {
            true
        } else if ft.is_dir() {
            return Ok(None);
        } else {
            false
        };
        if is_file {
            out.push(name);
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    /// What the store's own listing gives, by name.
    fn listed(store: &Store, prefix: &str) -> Vec<String> {
        sorted(
            store
                .block_on(store.list(prefix))
                .unwrap()
                .iter()
                .map(file_name)
                .collect(),
        )
    }

    #[test]
    fn names_from_the_directory_are_those_the_store_lists() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(crate::Repository::local_store(dir.path()).unwrap()).unwrap();
        assert!(store.local_root.is_some());
        assert!(
            store.list_names("index").unwrap().is_empty(),
            "no directory yet"
        );
        for name in ["0a1b", "ffee99", "c0ffee"] {
            store
                .block_on(store.put(&format!("index/{name}"), Bytes::from_static(b"x")))
                .unwrap();
        }
        let index = dir.path().join("index");
        // A write in progress (or killed) and a broken link: the store lists neither.
        std::fs::write(index.join("0a1b#7"), b"partial").unwrap();
        std::os::unix::fs::symlink(index.join("gone"), index.join("dangling")).unwrap();
        let fast = list_local_names(&index)
            .unwrap()
            .expect("read from the directory");
        assert_eq!(sorted(fast), listed(&store, "index"));
        assert_eq!(
            sorted(store.list_names("index").unwrap()),
            listed(&store, "index")
        );

        // Something it does not read as the store would: it asks the store.
        std::fs::create_dir(index.join("sub")).unwrap();
        std::fs::write(index.join("sub").join("deep"), b"x").unwrap();
        assert!(list_local_names(&index).unwrap().is_none());
        assert_eq!(
            sorted(store.list_names("index").unwrap()),
            listed(&store, "index")
        );
        assert!(listed(&store, "index").contains(&"deep".to_string()));
    }
}
