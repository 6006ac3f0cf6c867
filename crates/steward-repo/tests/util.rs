//! Shared helpers: real SQLite databases, repositories in temp dirs, a fault-injecting store.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path as OPath;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use rusqlite::Connection;
use steward_repo::{InitOptions, Key, PruneOptions, Repository, RetryPolicy};

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

pub fn local_repo(dir: &Path, key: Option<Key>) -> Repository {
    Repository::init(Repository::local_store(dir).unwrap(), InitOptions { key })
        .unwrap()
        .with_retry(fast_retry())
}

pub fn no_meta() -> BTreeMap<String, String> {
    BTreeMap::new()
}

pub fn quiet(_: steward_repo::Progress) {}

pub fn prune_now() -> PruneOptions {
    PruneOptions {
        grace: Duration::ZERO,
        clock_skew_margin: Duration::ZERO,
        ..PruneOptions::default()
    }
}

/// Deterministic pseudo-random numbers (xorshift), so tests need no extra crate.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub fn word(&mut self) -> &'static str {
        const W: &[&str] = &[
            "acme",
            "order",
            "invoice",
            "contact",
            "lead",
            "pipeline",
            "renewal",
            "quote",
            "support",
            "ticket",
            "meeting",
            "north",
            "south",
            "widget",
            "enterprise",
            "call",
            "email",
            "follow",
            "up",
            "discount",
            "contract",
            "signed",
            "pending",
            "closed",
        ];
        W[(self.next() % W.len() as u64) as usize]
    }
    pub fn text(&mut self, words: usize) -> String {
        let mut s = String::new();
        for i in 0..words {
            if i > 0 {
                s.push(' ');
            }
            s.push_str(self.word());
        }
        s.push_str(&format!(" #{}", self.next() % 100_000));
        s
    }
}

/// A small CRM-like database in WAL mode with `rows` customers.
pub fn make_db(path: &Path, rows: usize) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode=WAL;
         CREATE TABLE customer(id INTEGER PRIMARY KEY, name TEXT, email TEXT, notes TEXT);
         CREATE INDEX customer_email ON customer(email);
         CREATE TABLE counter(n INTEGER);
         INSERT INTO counter VALUES (0);",
    )
    .unwrap();
    fill(&conn, rows, 1);
    conn
}

pub fn fill(conn: &Connection, rows: usize, seed: u64) {
    let mut rng = Rng(seed * 7919 + 1);
    let tx = conn.unchecked_transaction().unwrap();
    {
        let mut st = tx
            .prepare("INSERT INTO customer(name, email, notes) VALUES (?1, ?2, ?3)")
            .unwrap();
        for _ in 0..rows {
            let name = rng.text(2);
            let email = format!("{}@{}.example", rng.next() % 1_000_000, rng.word());
            let notes = rng.text(20);
            st.execute((name, email, notes)).unwrap();
        }
    }
    tx.commit().unwrap();
}

/// Every row of every table, for comparing databases by content.
pub fn dump(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut out = Vec::new();
    let mut st = conn
        .prepare("SELECT id, name, email, notes FROM customer ORDER BY id")
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok(format!(
                "{}|{}|{}|{}",
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?
            ))
        })
        .unwrap();
    for r in rows {
        out.push(r.unwrap());
    }
    out.push(format!(
        "counter={}",
        conn.query_row("SELECT n FROM counter", [], |r| r.get::<_, i64>(0))
            .unwrap()
    ));
    out
}

pub fn checkpoint(conn: &Connection) {
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
        .unwrap();
}

/// Which operations the fault injector counts and fails.
#[derive(Debug)]
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    /// Calls so far (put, get, list, delete, copy, all counted together).
    pub calls: AtomicU64,
    /// Fail the call with this number (1-based); 0: never.
    pub fail_at: AtomicU64,
    /// Fail every call from `fail_at` on (true) or only that one (false: a transient error).
    pub permanent: std::sync::atomic::AtomicBool,
    pub failures: AtomicU64,
    /// When set, only calls on objects whose path starts with this are counted and failed.
    pub only_prefix: std::sync::Mutex<Option<String>>,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Arc<Self> {
        Arc::new(FaultStore {
            inner,
            calls: AtomicU64::new(0),
            fail_at: AtomicU64::new(0),
            permanent: std::sync::atomic::AtomicBool::new(false),
            failures: AtomicU64::new(0),
            only_prefix: std::sync::Mutex::new(None),
        })
    }

    /// Counts and fails only calls on objects under `prefix` (`None`: all calls).
    pub fn only_under(&self, prefix: Option<&str>) {
        *self.only_prefix.lock().unwrap() = prefix.map(str::to_string);
    }

    fn check_at(&self, op: &str, location: &OPath) -> object_store::Result<()> {
        if let Some(p) = &*self.only_prefix.lock().unwrap()
            && !location.as_ref().starts_with(p.as_str())
        {
            return Ok(());
        }
        self.check(op)
    }

    pub fn arm(&self, at: u64, permanent: bool) {
        self.calls.store(0, Ordering::SeqCst);
        self.failures.store(0, Ordering::SeqCst);
        self.permanent.store(permanent, Ordering::SeqCst);
        self.fail_at.store(at, Ordering::SeqCst);
    }

    fn check(&self, op: &str) -> object_store::Result<()> {
        if self.only_prefix.lock().unwrap().is_some() && op != "get" && op != "put" {
            return Ok(());
        }
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let at = self.fail_at.load(Ordering::SeqCst);
        let hit = at != 0
            && if self.permanent.load(Ordering::SeqCst) {
                n >= at
            } else {
                n == at
            };
        if hit {
            self.failures.fetch_add(1, Ordering::SeqCst);
            return Err(object_store::Error::Generic {
                store: "fault",
                source: format!("injected failure of {op} call #{n}").into(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &OPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check_at("put", location)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &OPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check("put_multipart")?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &OPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check_at("get", location)?;
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<OPath>>,
    ) -> BoxStream<'static, object_store::Result<OPath>> {
        if let Err(e) = self.check("delete") {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&OPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.check("list") {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&OPath>,
    ) -> object_store::Result<ListResult> {
        self.check("list")?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &OPath,
        to: &OPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check("copy")?;
        self.inner.copy_opts(from, to, options).await
    }
}

/// Every file under `dir/prefix`, sorted.
pub fn files_under(dir: &Path, prefix: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.join(prefix)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Seals `body` as a plain (unencrypted) repository does: the body, then 16 bytes of
/// blake3 over the domain's length, the domain and the body. Lets tests hand-craft objects.
pub fn plain_seal(domain: &str, mut body: Vec<u8>) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&(domain.len() as u64).to_le_bytes());
    h.update(domain.as_bytes());
    h.update(&body);
    body.extend_from_slice(&h.finalize().as_bytes()[..16]);
    body
}

/// Opens a plain-sealed object (checks nothing; tests only).
pub fn plain_body(sealed: &[u8]) -> Vec<u8> {
    sealed[..sealed.len() - 16].to_vec()
}

/// A store that counts the reads of index objects (`index/` and `condemned/`) and the
/// listings of those prefixes, so that a test sees what an operation read, whatever the
/// repository's own counters say.
#[derive(Debug)]
pub struct Counting {
    inner: Arc<dyn ObjectStore>,
    index_gets: AtomicU64,
    index_lists: AtomicU64,
    condemned_gets: AtomicU64,
    condemned_lists: AtomicU64,
}

/// What a [`Counting`] store saw since the last [`Counting::take_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IndexReads {
    /// `index/<pack>` objects read.
    pub index_gets: u64,
    /// Listings of `index/`.
    pub index_lists: u64,
    /// `condemned/<pack>` objects read.
    pub condemned_gets: u64,
    /// Listings of `condemned/`.
    pub condemned_lists: u64,
}

impl Counting {
    pub fn on(dir: &Path) -> Arc<Self> {
        Arc::new(Counting {
            inner: Repository::local_store(dir).unwrap(),
            index_gets: AtomicU64::new(0),
            index_lists: AtomicU64::new(0),
            condemned_gets: AtomicU64::new(0),
            condemned_lists: AtomicU64::new(0),
        })
    }
    /// (index objects read, listings of `index/`) since the last call.
    pub fn take(&self) -> (u64, u64) {
        let r = self.take_all();
        (r.index_gets, r.index_lists)
    }
    /// Everything counted since the last call (and resets the counters).
    pub fn take_all(&self) -> IndexReads {
        IndexReads {
            index_gets: self.index_gets.swap(0, Ordering::SeqCst),
            index_lists: self.index_lists.swap(0, Ordering::SeqCst),
            condemned_gets: self.condemned_gets.swap(0, Ordering::SeqCst),
            condemned_lists: self.condemned_lists.swap(0, Ordering::SeqCst),
        }
    }
}

impl fmt::Display for Counting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &OPath,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.inner.put_opts(location, payload, opts).await
    }
    async fn put_multipart_opts(
        &self,
        location: &OPath,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }
    async fn get_opts(
        &self,
        location: &OPath,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if location.as_ref().starts_with("index/") {
            self.index_gets.fetch_add(1, Ordering::SeqCst);
        } else if location.as_ref().starts_with("condemned/") {
            self.condemned_gets.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.get_opts(location, options).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<OPath>>,
    ) -> BoxStream<'static, object_store::Result<OPath>> {
        self.inner.delete_stream(locations)
    }
    fn list(&self, prefix: Option<&OPath>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match prefix.map(|p| p.as_ref()) {
            Some("index") => {
                self.index_lists.fetch_add(1, Ordering::SeqCst);
            }
            Some("condemned") => {
                self.condemned_lists.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
        self.inner.list(prefix)
    }
    async fn list_with_delimiter(
        &self,
        prefix: Option<&OPath>,
    ) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }
    async fn copy_opts(
        &self,
        from: &OPath,
        to: &OPath,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
