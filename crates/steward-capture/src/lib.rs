//! Continuous capture of committed transactions from a SQLite database in WAL mode that
//! another process writes, for point-in-time restore (issue #11; the interface is the
//! contract in `notes/pitr-contract.md`).
//!
//! A [`Capturer`] reads the `-wal` file itself (never through SQL) and returns every committed
//! transaction as the pages it wrote ([`Commit`]). It keeps the application's WAL bounded and
//! its checkpoints working, and reports [`CaptureError::Lost`] when commits may have been
//! lost — never a silently wrong sequence.
//!
//! # The invariant: no committed frame disappears before it is captured
//!
//! Frames leave the WAL only when a writer *restarts* it (rewinds to frame 1 after everything
//! was checkpointed; `walRestartLog`, or a `TRUNCATE` checkpoint). SQLite's locks give:
//! - a restart needs an exclusive lock on read marks 1..4 (and the write lock);
//! - backfilling (checkpointing) any frame needs an exclusive lock on read mark 0, and never
//!   goes past the value of a read mark 1..4 that a reader holds;
//! - a reader gets mark 0 only when the whole WAL is backfilled (`nBackfill == mxFrame`).
//!
//! The capturer ALWAYS holds a read transaction on one of its two reader connections
//! (except inside [`Capturer::poll`]'s WAL restart, where it holds the write lock instead,
//! so nothing can commit or restart). It hands over by *beginning the new read transaction
//! before ending the old one*, after having read the WAL up to the last commit published in
//! the `-shm` header. Hence, at every moment, every committed frame not yet captured is still
//! in the WAL file:
//! - holding mark 1..4: no restart is possible, the file is only appended to;
//! - holding mark 0: nothing can be backfilled, so at most one restart can happen, and it
//!   only discards frames that were all backfilled when mark 0 was granted; those were
//!   captured, because the previous reader (still held then) capped backfilling at its own
//!   mark, which is at or below what had been captured (by induction; at open the position
//!   starts at the state the first reader saw).
//!
//! The capture then *checks* the invariant rather than trusting it: the `-shm` header's
//! `iChange` counts every commit (SQLite increments it on each commit; a WAL recovery resets
//! it to 0). Each cycle reads the header, reads the frames up to its `mxFrame`, and requires
//! `commits found == iChange - iChange at the previous position`. Any mismatch (a restart
//! that discarded uncaptured commits, a recovery, frames that do not validate) is
//! [`CaptureError::Lost`] with the reason. Salts are not used for that check: a restart sets
//! salt-1 to salt-1 + 1, but the first frame written by a connection that never restarted the
//! WAL itself randomizes both salts (`sqlite3WalFrames`, `nCkpt == 0`), so a salt jump is
//! legitimate; the change counter is what proves nothing was skipped.
//!
//! # Keeping the WAL bounded and the application's checkpoints working
//! - Every poll that found commits hands the read transaction over, so the application's
//!   PASSIVE/automatic checkpoints can backfill up to a recent mark.
//! - When the WAL holds at least `max_wal_frames` frames, the poll restarts it safely: it
//!   takes the write lock (`BEGIN IMMEDIATE`, short busy timeout; if busy, next poll), reads
//!   the remaining frames (none can be added), ends its read transaction, runs a PASSIVE
//!   checkpoint, begins its next read transaction (mark 0 when everything was backfilled)
//!   and releases the write lock: the next writer rewinds the WAL.
//! - When a poll finds nothing new and the capture is "not settled", it checkpoints
//!   (PASSIVE) and, if the WAL is then fully backfilled, moves its read transaction to mark 0:
//!   mark 0 does not block the application's `wal_checkpoint(TRUNCATE)`/`RESTART` nor the
//!   next writer's rewind. (It blocks backfilling new frames until the next poll hands over.)
//!   Failed attempts are retried after `settle_retry_ms`.
//!
//! # Cost when idle
//! A poll that finds nothing new does two `stat`s (database and WAL still the same files)
//! and one 136-byte `pread` of the `-shm` header; no SQL.
//!
//! # While capture runs
//! The capturer's connections hold a SHARED lock on the database file, so the application
//! cannot leave WAL mode (`PRAGMA journal_mode=DELETE` gets "database is locked") and the
//! application's last connection closing does not delete the WAL.

mod wal;
mod watch;

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tracing::{debug, warn};

use wal::{ShmHeader, ShmRead};
pub use watch::{RECHECK_AFTER, WalWatcher, WatchError, WatchStats};

/// One committed transaction read from the WAL.
#[derive(Clone, PartialEq, Eq)]
pub struct Commit {
    /// When the capture saw it committed (ms since the Unix epoch, from the options' clock).
    pub at_ms: u64,
    /// Database size in pages after the commit.
    pub db_pages: u32,
    /// (page number, content), sorted by page number, unique (the last version written by
    /// the transaction).
    pub pages: Vec<(u32, Vec<u8>)>,
}

impl std::fmt::Debug for Commit {
    /// Page numbers only (the pages themselves would flood logs and test failures).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pages: Vec<u32> = self.pages.iter().map(|(p, _)| *p).collect();
        f.debug_struct("Commit")
            .field("at_ms", &self.at_ms)
            .field("db_pages", &self.db_pages)
            .field("pages", &pages)
            .finish()
    }
}

/// The clock: milliseconds since the Unix epoch.
pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Options of a [`Capturer`].
#[derive(Clone)]
pub struct CaptureOptions {
    /// Restart the WAL (safely, see the crate docs) once it holds this many frames.
    pub max_wal_frames: u32,
    /// Where `at_ms` comes from. Defaults to the system clock.
    pub clock: Clock,
    /// How long `BEGIN IMMEDIATE` may wait for the application's write lock when the capture
    /// restarts the WAL (busy: tried again at the next poll).
    pub write_lock_timeout: Duration,
    /// How long `with_snapshot`/`poll_with_snapshot` may wait for the write lock when the
    /// database keeps changing.
    pub snapshot_lock_timeout: Duration,
    /// After failed attempts to settle (fully backfill and move to read mark 0 when idle),
    /// wait 5 ms, 10 ms, ... up to this long before trying again.
    pub retry_ms: u64,
    /// After a WAL restart attempt found the write lock busy or could not backfill
    /// everything, wait this long before the next attempt.
    pub restart_retry_ms: u64,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        CaptureOptions {
            max_wal_frames: 4000,
            clock: Arc::new(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            }),
            write_lock_timeout: Duration::from_millis(20),
            snapshot_lock_timeout: Duration::from_secs(5),
            retry_ms: 1000,
            restart_retry_ms: 20,
        }
    }
}

impl std::fmt::Debug for CaptureOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureOptions")
            .field("max_wal_frames", &self.max_wal_frames)
            .field("write_lock_timeout", &self.write_lock_timeout)
            .field("snapshot_lock_timeout", &self.snapshot_lock_timeout)
            .field("retry_ms", &self.retry_ms)
            .field("restart_retry_ms", &self.restart_retry_ms)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("database file {path} does not exist")]
    Missing { path: PathBuf },
    #[error("{path} is not a SQLite database ({detail})")]
    NotADatabase { path: PathBuf, detail: String },
    #[error(
        "{path} is not in WAL mode (journal mode {mode}); continuous capture needs journal_mode=WAL"
    )]
    NotWal { path: PathBuf, mode: String },
    /// Commits may have been lost: the caller records a gap and starts a new chain (new base
    /// snapshot with `with_snapshot`). The next `poll` starts cleanly from the current state.
    #[error("commits may have been lost: {reason}")]
    Lost { reason: String },
    /// `with_snapshot` was called while commits exist that `poll` has not returned yet (use
    /// `poll_with_snapshot`).
    #[error(
        "{pending} commit(s) happened since the last poll; poll first or use poll_with_snapshot"
    )]
    NotCaughtUp { pending: u32 },
    /// The `-shm` header stayed inconsistent (a writer mid-publish) or the write lock stayed
    /// busy; nothing changed, try again.
    #[error("busy: {0}")]
    Busy(String),
    #[error("SQLite error on {path}: {source}")]
    Sqlite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

type Result<T> = std::result::Result<T, CaptureError>;

/// Counters of what the capture did (for logs, alerts and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    pub polls: u64,
    pub commits: u64,
    /// Read-transaction hand-overs.
    pub handovers: u64,
    /// Times the capture settled on read mark 0 while idle.
    pub settles: u64,
    /// WAL restarts attempted because the WAL reached `max_wal_frames`.
    pub restart_attempts: u64,
    /// ... of which the application's write lock was busy (retried later).
    pub restart_lock_busy: u64,
    /// ... of which everything was backfilled and the next writer can rewind the WAL.
    pub restarts_prepared: u64,
    pub lost: u64,
}

/// Where the capture stands: the last commit it has read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    salt: [u8; 8],
    /// Last frame read (a commit frame), 0 when the generation is empty.
    frame: u32,
    /// Checksum of `frame` (None when `frame == 0`: the WAL header's seeds frame 1).
    cksum: Option<(u32, u32)>,
    /// The header's `iChange` at that commit.
    change: u32,
}

/// Between two tries for the application's write lock (see `restart_wal`).
const SPIN_STEP: Duration = Duration::from_micros(100);

thread_local! {
    /// How many tries `spin_busy` makes before giving up (set before each use).
    static SPIN_TRIES: std::cell::Cell<i32> = const { std::cell::Cell::new(0) };
}

/// A busy handler that tries again every `SPIN_STEP`, `SPIN_TRIES` times.
fn spin_busy(count: i32) -> bool {
    if count >= SPIN_TRIES.with(|c| c.get()) {
        return false;
    }
    std::thread::sleep(SPIN_STEP);
    true
}

fn same_commit_state(a: &ShmHeader, b: &ShmHeader) -> bool {
    a.change == b.change && a.max_frame == b.max_frame && a.salt == b.salt
}

struct Inner {
    readers: [Connection; 2],
    /// Index of the reader holding the read transaction.
    active: usize,
    /// True while `active` really holds a read transaction (false only after the test hook).
    holding: bool,
    writer: Connection,
    wal: File,
    shm: File,
    db_id: (u64, u64),
    wal_id: (u64, u64),
    page_size: u32,
    pos: Pos,
    last_hdr: ShmHeader,
    /// Caught up, fully backfilled, and our reader is on mark 0.
    settled: bool,
    next_settle_ms: u64,
    /// Delay before the next settle attempt after a failed one (doubles up to `retry_ms`).
    settle_backoff_ms: u64,
    next_restart_ms: u64,
    /// Some commit was returned by `poll` since this state was opened.
    returned: bool,
    shm_buf: [u8; wal::SHM_HEADER],
}

/// Captures the committed transactions of one database in WAL mode. See the crate docs.
pub struct Capturer {
    db_path: PathBuf,
    wal_path: PathBuf,
    shm_path: PathBuf,
    opts: CaptureOptions,
    inner: Option<Inner>,
    last_at_ms: u64,
    through_ms: Option<u64>,
    stats: CaptureStats,
}

fn file_id(path: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

fn sibling(db: &Path, suffix: &str) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl Capturer {
    /// Opens the capture of `db_path` (a database in WAL mode). The position starts at the
    /// current state: the first `poll` returns the commits made after `open`.
    pub fn open(db_path: &Path, opts: CaptureOptions) -> Result<Capturer> {
        let mut c = Capturer {
            db_path: db_path.to_path_buf(),
            wal_path: sibling(db_path, "-wal"),
            shm_path: sibling(db_path, "-shm"),
            opts,
            inner: None,
            last_at_ms: 0,
            through_ms: None,
            stats: CaptureStats::default(),
        };
        c.inner = Some(c.open_inner()?);
        Ok(c)
    }

    fn sql(&self, source: rusqlite::Error) -> CaptureError {
        CaptureError::Sqlite {
            path: self.db_path.clone(),
            source,
        }
    }

    fn io(&self, path: &Path, source: std::io::Error) -> CaptureError {
        CaptureError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    fn check_header(&self) -> Result<()> {
        let path = &self.db_path;
        let f = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(CaptureError::Missing { path: path.clone() });
            }
            Err(e) => return Err(self.io(path, e)),
        };
        let meta = f.metadata().map_err(|e| self.io(path, e))?;
        if meta.is_dir() {
            return Err(CaptureError::NotADatabase {
                path: path.clone(),
                detail: "it is a directory".into(),
            });
        }
        let mut h = [0u8; 100];
        let n = wal::read_full(&f, &mut h, 0).map_err(|e| self.io(path, e))?;
        if n == 0 {
            return Err(CaptureError::NotWal {
                path: path.clone(),
                mode: "none: the file is empty".into(),
            });
        }
        if n < 100 || &h[0..16] != b"SQLite format 3\0" {
            return Err(CaptureError::NotADatabase {
                path: path.clone(),
                detail: "it does not start with the SQLite header".into(),
            });
        }
        if h[18] != 2 || h[19] != 2 {
            return Err(CaptureError::NotWal {
                path: path.clone(),
                mode: "a rollback journal mode".into(),
            });
        }
        Ok(())
    }

    fn open_conn(&self, busy: Duration) -> Result<Connection> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(&self.db_path, flags).map_err(|e| self.sql(e))?;
        conn.busy_timeout(busy).map_err(|e| self.sql(e))?;
        // Our connections never write; never let them checkpoint on their own.
        conn.pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(|e| self.sql(e))?;
        // They read each page at most once (a base snapshot through sqlite_dbpage): a page
        // cache would only hold memory, three connections per instance of a whole fleet.
        conn.pragma_update(None, "cache_size", 10)
            .map_err(|e| self.sql(e))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .map_err(|e| self.sql(e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CaptureError::NotWal {
                path: self.db_path.clone(),
                mode,
            });
        }
        Ok(conn)
    }

    fn open_inner(&self) -> Result<Inner> {
        self.check_header()?;
        let r0 = self.open_conn(Duration::from_millis(500))?;
        let r1 = self.open_conn(Duration::from_millis(500))?;
        let writer = self.open_conn(self.opts.write_lock_timeout)?;
        // A first read creates/opens the -wal and initializes the -shm.
        begin_read(&r0).map_err(|e| self.sql(e))?;
        let wal = File::open(&self.wal_path).map_err(|e| self.io(&self.wal_path, e))?;
        let shm = File::open(&self.shm_path).map_err(|e| self.io(&self.shm_path, e))?;
        let db_id = file_id(&self.db_path).map_err(|e| self.io(&self.db_path, e))?;
        let wal_id = file_id(&self.wal_path).map_err(|e| self.io(&self.wal_path, e))?;
        end_read(&r0);
        let mut shm_buf = [0u8; wal::SHM_HEADER];
        // Begin the first read transaction at a known header: the starting position.
        let hdr = begin_stable(&r0, &shm, &mut shm_buf, |_| true).map_err(|e| match e {
            StableErr::Sql(e) => self.sql(e),
            StableErr::Io(e) => self.io(&self.shm_path, e),
            StableErr::Other(why) => CaptureError::Busy(why),
        })?;
        let page_size: u32 = if hdr.page_size != 0 {
            hdr.page_size
        } else {
            r0.query_row("PRAGMA page_size", [], |r| r.get(0))
                .map_err(|e| self.sql(e))?
        };
        let pos = Pos {
            salt: hdr.salt,
            frame: hdr.max_frame,
            cksum: (hdr.max_frame > 0).then_some(hdr.frame_cksum),
            change: hdr.change,
        };
        debug!(db = %self.db_path.display(), frame = pos.frame, change = pos.change, "capture opened");
        Ok(Inner {
            readers: [r0, r1],
            active: 0,
            holding: true,
            writer,
            wal,
            shm,
            db_id,
            wal_id,
            page_size,
            pos,
            last_hdr: hdr,
            settled: false,
            next_settle_ms: 0,
            settle_backoff_ms: 0,
            next_restart_ms: 0,
            returned: false,
            shm_buf,
        })
    }

    /// The database captured.
    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Whether a commit seems to be on its way: the `-wal` holds a frame of the current
    /// generation right after the last commit read (a writer wrote it and has not published
    /// the commit in the `-shm` yet, e.g. while it syncs the `-wal`; or a transaction that
    /// spilled frames and rolled back, or a writer that died, left it there). Two small
    /// `pread`s; no lock. A [`WalWatcher`] caller polls again soon while this holds.
    pub fn commit_in_flight(&self) -> bool {
        let Some(inner) = self.inner.as_ref() else {
            return false;
        };
        let mut hb = [0u8; wal::WAL_HEADER];
        if !matches!(wal::read_full(&inner.wal, &mut hb, 0), Ok(n) if n == wal::WAL_HEADER) {
            return false;
        }
        let salt = &hb[16..24];
        // Same generation: the frame after our position; a rewound WAL: its first frame.
        let next = if salt == inner.pos.salt {
            inner.pos.frame as u64
        } else {
            0
        };
        let off = wal::WAL_HEADER as u64 + next * (24 + inner.page_size as u64);
        let mut fh = [0u8; 24];
        matches!(wal::read_full(&inner.wal, &mut fh, off), Ok(24)) && &fh[8..16] == salt
    }

    /// Database page size in bytes.
    pub fn page_size(&self) -> u32 {
        self.inner.as_ref().map(|i| i.page_size).unwrap_or(0)
    }

    /// Current WAL length in frames (the last committed frame of the current generation, as
    /// of the last poll).
    pub fn wal_frames(&self) -> u64 {
        self.inner
            .as_ref()
            .map(|i| i.last_hdr.max_frame as u64)
            .unwrap_or(0)
    }

    /// Size of the `-wal` file in bytes (SQLite rewinds it but does not shrink it unless
    /// `journal_size_limit` or a TRUNCATE checkpoint says so).
    pub fn wal_file_bytes(&self) -> u64 {
        std::fs::metadata(&self.wal_path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// The clock value of the last successful poll: the capture confirmed then that no commit
    /// after the last one returned existed (a segment's `through_ms`).
    pub fn confirmed_through_ms(&self) -> Option<u64> {
        self.through_ms
    }

    /// What the capture did so far.
    pub fn stats(&self) -> CaptureStats {
        self.stats
    }

    fn now(&mut self) -> u64 {
        let t = (self.opts.clock)().max(self.last_at_ms);
        self.last_at_ms = t;
        t
    }

    fn ensure_open(&mut self) -> Result<()> {
        if self.inner.is_none() {
            self.inner = Some(self.open_inner()?);
        }
        Ok(())
    }

    fn lost(&mut self, reason: String) -> CaptureError {
        warn!(db = %self.db_path.display(), %reason, "capture lost commits");
        // Start cleanly at the next call.
        self.inner = None;
        self.through_ms = None;
        self.stats.lost += 1;
        CaptureError::Lost { reason }
    }

    /// One capture cycle: every commit since the last call, in order.
    ///
    /// `Err(Lost)` when commits may have been lost (WAL restarted or recovered behind the
    /// capture, database or WAL file replaced): the caller records a gap and starts a new
    /// chain; the next call starts from the current state. A poll right after `Lost` (or
    /// `open`) returns the commits made since then.
    pub fn poll(&mut self) -> Result<Vec<Commit>> {
        self.ensure_open()?;
        match self.poll_inner() {
            Ok(c) => Ok(c),
            Err(Failure::Lost(reason)) => Err(self.lost(reason)),
            Err(Failure::Err(e)) => Err(e),
        }
    }

    fn poll_inner(&mut self) -> std::result::Result<Vec<Commit>, Failure> {
        self.stats.polls += 1;
        // Same files as when we opened? (A restore renames a new file over the database.)
        {
            let inner = self.inner.as_ref().expect("open");
            match file_id(&self.db_path) {
                Ok(id) if id == inner.db_id => {}
                Ok(_) => return Err(Failure::Lost("the database file was replaced".into())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Failure::Lost("the database file was removed".into()));
                }
                Err(e) => return Err(Failure::Err(self.io(&self.db_path.clone(), e))),
            }
            match file_id(&self.wal_path) {
                Ok(id) if id == inner.wal_id => {}
                Ok(_) => return Err(Failure::Lost("the WAL file was replaced".into())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(Failure::Lost(
                        "the WAL file was removed (database left WAL mode?)".into(),
                    ));
                }
                Err(e) => return Err(Failure::Err(self.io(&self.wal_path.clone(), e))),
            }
        }
        let inner = self.inner.as_mut().expect("open");
        if !inner.holding {
            begin_read(&inner.readers[inner.active])
                .map_err(|e| Failure::Err(sql_err(&self.db_path, e)))?;
            inner.holding = true;
        }
        let hdr = read_shm_retry(&inner.shm, &mut inner.shm_buf, &self.shm_path)?;
        let now = self.now();
        let inner = self.inner.as_mut().expect("open");
        // Fast path: nothing committed since the last look.
        if same_commit_state(&hdr, &inner.last_hdr)
            && hdr.salt == inner.pos.salt
            && hdr.max_frame == inner.pos.frame
        {
            if hdr.change != inner.pos.change {
                return Err(Failure::Lost(format!(
                    "the WAL index change counter moved from {} to {} without new frames (WAL recovery?)",
                    inner.pos.change, hdr.change
                )));
            }
            inner.last_hdr = hdr;
            self.through_ms = Some(now);
            if !inner.settled && now >= inner.next_settle_ms {
                self.settle(now)?;
            }
            return Ok(Vec::new());
        }
        let raw = capture(inner, &self.wal_path, &self.shm_path, hdr)?;
        let mut out: Vec<Commit> = raw
            .into_iter()
            .map(|c| Commit {
                at_ms: now,
                db_pages: c.db_pages,
                pages: c.pages,
            })
            .collect();
        let inner = self.inner.as_mut().expect("open");
        inner.settled = false;
        // Going idle after these commits: try to settle at once.
        inner.settle_backoff_ms = 0;
        inner.next_settle_ms = 0;
        // Hand over: begin the new read transaction before ending the old one.
        handover(inner, &self.db_path);
        self.stats.handovers += 1;
        if inner.last_hdr.max_frame >= self.opts.max_wal_frames && now >= inner.next_restart_ms {
            let more = self.restart_wal()?;
            out.extend(more.into_iter().map(|c| Commit {
                at_ms: now,
                db_pages: c.db_pages,
                pages: c.pages,
            }));
        }
        let inner = self.inner.as_mut().expect("open");
        if !out.is_empty() {
            inner.returned = true;
        }
        self.stats.commits += out.len() as u64;
        self.through_ms = Some(now);
        Ok(out)
    }

    /// Caught up and idle: checkpoint and move our read transaction to mark 0 so that the
    /// application's TRUNCATE/RESTART checkpoints and the next writer's rewind can proceed.
    fn settle(&mut self, now: u64) -> std::result::Result<(), Failure> {
        let retry = self.opts.retry_ms;
        let inner = self.inner.as_mut().expect("open");
        let hdr = inner.last_hdr;
        if hdr.backfilled < hdr.max_frame {
            // Our mark may be older than mxFrame: take one at mxFrame first, then backfill.
            handover(inner, &self.db_path);
            let spare = &inner.readers[1 - inner.active];
            if let Err(e) = checkpoint_passive(spare) {
                debug!(error = %e, "passive checkpoint failed");
            }
        }
        let inner = self.inner.as_mut().expect("open");
        let pos = inner.pos;
        let spare = 1 - inner.active;
        let got = begin_stable(&inner.readers[spare], &inner.shm, &mut inner.shm_buf, |h| {
            h.backfilled == h.max_frame && h.salt == pos.salt && h.max_frame == pos.frame
        });
        match got {
            Ok(h) => {
                end_read(&inner.readers[inner.active]);
                inner.active = spare;
                inner.settled = true;
                inner.last_hdr = h;
                self.stats.settles += 1;
                debug!(db = %self.db_path.display(), "capture settled on read mark 0");
            }
            Err(StableErr::Other(_)) => {
                inner.settle_backoff_ms = (inner.settle_backoff_ms * 2).clamp(5, retry.max(5));
                inner.next_settle_ms = now + inner.settle_backoff_ms;
            }
            Err(StableErr::Sql(e)) => {
                inner.settle_backoff_ms = (inner.settle_backoff_ms * 2).clamp(5, retry.max(5));
                inner.next_settle_ms = now + inner.settle_backoff_ms;
                debug!(error = %e, "settle failed");
            }
            Err(StableErr::Io(e)) => return Err(Failure::Err(self.io(&self.shm_path.clone(), e))),
        }
        Ok(())
    }

    /// Restarts the WAL safely (see the crate docs). Returns the commits read under the lock.
    fn restart_wal(&mut self) -> std::result::Result<Vec<wal::RawCommit>, Failure> {
        let now = (self.opts.clock)();
        let restart_retry = self.opts.restart_retry_ms;
        self.stats.restart_attempts += 1;
        let inner = self.inner.as_mut().expect("open");
        // Backfill what we can without holding the application's write lock.
        let spare = 1 - inner.active;
        if let Err(e) = checkpoint_passive(&inner.readers[spare]) {
            debug!(error = %e, "passive checkpoint failed");
        }
        // A writer that never pauses frees its lock only for microseconds between two
        // transactions; SQLite's own busy handler sleeps milliseconds between tries and
        // would almost never catch it. Try every ~100 µs instead, for `write_lock_timeout`,
        // and ten times as long once the WAL is twice its limit (the application waits at most
        // that long for its next transaction, once).
        let far_over = inner.last_hdr.max_frame >= self.opts.max_wal_frames.saturating_mul(2);
        let wait = if far_over {
            self.opts.write_lock_timeout * 10
        } else {
            self.opts.write_lock_timeout
        };
        SPIN_TRIES.with(|c| c.set((wait.as_micros() / SPIN_STEP.as_micros()) as i32));
        let _ = inner.writer.busy_handler(Some(spin_busy));
        let locked = inner.writer.execute_batch("BEGIN IMMEDIATE");
        let _ = inner.writer.busy_timeout(self.opts.write_lock_timeout);
        if let Err(e) = locked {
            debug!(error = %e, "write lock busy; WAL restart postponed");
            inner.next_restart_ms = now + restart_retry;
            self.stats.restart_lock_busy += 1;
            return Ok(Vec::new());
        }
        let result = (|| {
            let hdr = read_shm_retry(&inner.shm, &mut inner.shm_buf, &self.shm_path)?;
            let raw =
                if same_commit_state(&hdr, &inner.last_hdr) && hdr.max_frame == inner.pos.frame {
                    Vec::new()
                } else {
                    capture(inner, &self.wal_path, &self.shm_path, hdr)?
                };
            // Nothing can commit now: drop our read transaction, backfill everything, take
            // the next read transaction (mark 0 when fully backfilled).
            end_read(&inner.readers[inner.active]);
            inner.holding = false;
            let spare = 1 - inner.active;
            // An application checkpoint may still be running (it holds the checkpoint lock
            // and PASSIVE does not wait): retry briefly until everything is backfilled.
            for i in 0..40 {
                if let Err(e) = checkpoint_passive(&inner.readers[spare]) {
                    debug!(error = %e, "passive checkpoint under the write lock failed");
                }
                match read_shm_retry(&inner.shm, &mut inner.shm_buf, &self.shm_path) {
                    Ok(h) if h.backfilled >= h.max_frame => break,
                    Ok(_) => {}
                    Err(_) => break,
                }
                std::thread::sleep(Duration::from_micros(if i < 10 { 100 } else { 500 }));
            }
            let pos = inner.pos;
            // The write lock is held: nothing can commit, so a plain begin sees `pos`.
            if let Err(e) = begin_read(&inner.readers[spare]) {
                // Keep protecting the WAL with the other reader if we can.
                if begin_read(&inner.readers[inner.active]).is_ok() {
                    inner.holding = true;
                }
                return Err(Failure::Err(sql_err(&self.db_path, e)));
            }
            inner.active = spare;
            inner.holding = true;
            let h = read_shm_retry(&inner.shm, &mut inner.shm_buf, &self.shm_path)?;
            inner.last_hdr = h;
            inner.settled =
                h.backfilled == h.max_frame && h.max_frame == pos.frame && h.salt == pos.salt;
            if !inner.settled {
                inner.next_restart_ms = now + restart_retry;
            }
            Ok(raw)
        })();
        let _ = inner.writer.execute_batch("ROLLBACK");
        if inner.settled {
            self.stats.restarts_prepared += 1;
        }
        if inner.holding {
            debug!(db = %self.db_path.display(), settled = inner.settled, "WAL restart prepared");
        }
        result
    }

    /// Runs `f` with a connection in a read transaction whose snapshot is EXACTLY the state
    /// after the last commit `poll` returned (the caller takes a base snapshot with it).
    ///
    /// How: the read transaction is begun between two reads of the `-shm` header that agree
    /// (same change counter, so no commit happened in between: the snapshot is that header's),
    /// and that header must be the capture's position. Right after `open` or a `Lost` (no
    /// commit returned yet), the position simply moves to the snapshot (the commits before it
    /// belong to no chain). Otherwise, if commits happened that `poll` has not returned, this
    /// fails with `NotCaughtUp` (use [`Capturer::poll_with_snapshot`]).
    /// `f` must not end the read transaction.
    pub fn with_snapshot<T>(&mut self, f: impl FnOnce(&Connection) -> T) -> Result<T> {
        self.ensure_open()?;
        for _ in 0..20 {
            let inner = self.inner.as_mut().expect("open");
            let spare = 1 - inner.active;
            let pos = inner.pos;
            let h = self.begin_stable_spare()?;
            let inner = self.inner.as_mut().expect("open");
            if h.salt == pos.salt && h.max_frame == pos.frame && h.change == pos.change {
                let conn = &inner.readers[spare];
                let out = f(conn);
                end_read(conn);
                return Ok(out);
            }
            end_read(&inner.readers[spare]);
            if inner.returned {
                return Err(CaptureError::NotCaughtUp {
                    pending: h.change.wrapping_sub(pos.change),
                });
            }
            // Nothing returned yet: move the position forward (those commits precede the base).
            match self.poll_inner() {
                Ok(_) => {}
                Err(Failure::Lost(reason)) => return Err(self.lost(reason)),
                Err(Failure::Err(e)) => return Err(e),
            }
            if let Some(i) = self.inner.as_mut() {
                i.returned = false;
            }
        }
        Err(CaptureError::Busy(
            "the database kept changing while taking a snapshot".into(),
        ))
    }

    /// A poll, then `f` on a read transaction at exactly the state after the last commit
    /// returned (see [`Capturer::with_snapshot`]). If the database keeps changing, takes the
    /// application's write lock (up to `snapshot_lock_timeout`) for the moment it takes to
    /// begin the read transaction.
    pub fn poll_with_snapshot<T>(
        &mut self,
        f: impl FnOnce(&Connection) -> T,
    ) -> Result<(Vec<Commit>, T)> {
        self.ensure_open()?;
        let mut commits = Vec::new();
        for attempt in 0..6 {
            let locked = attempt == 5;
            if locked {
                let inner = self.inner.as_mut().expect("open");
                inner
                    .writer
                    .busy_timeout(self.opts.snapshot_lock_timeout)
                    .map_err(|e| sql_err(&self.db_path, e))?;
                let r = inner.writer.execute_batch("BEGIN IMMEDIATE");
                let _ = inner.writer.busy_timeout(self.opts.write_lock_timeout);
                r.map_err(|e| CaptureError::Busy(format!("write lock for the snapshot: {e}")))?;
            }
            let polled = self.poll();
            let result = polled.and_then(|c| {
                commits.extend(c);
                let inner = self.inner.as_mut().expect("open");
                let spare = 1 - inner.active;
                let pos = inner.pos;
                let h = self.begin_stable_spare()?;
                let inner = self.inner.as_mut().expect("open");
                if h.salt == pos.salt && h.max_frame == pos.frame && h.change == pos.change {
                    Ok(Some(spare))
                } else {
                    end_read(&inner.readers[spare]);
                    Ok(None)
                }
            });
            if locked && let Some(inner) = self.inner.as_ref() {
                let _ = inner.writer.execute_batch("ROLLBACK");
            }
            if let Some(spare) = result? {
                let inner = self.inner.as_mut().expect("open");
                let conn = &inner.readers[spare];
                let out = f(conn);
                end_read(conn);
                return Ok((commits, out));
            }
        }
        Err(CaptureError::Busy(
            "the database kept changing while taking a snapshot".into(),
        ))
    }

    fn begin_stable_spare(&mut self) -> Result<ShmHeader> {
        let inner = self.inner.as_mut().expect("open");
        let spare = 1 - inner.active;
        begin_stable(
            &inner.readers[spare],
            &inner.shm,
            &mut inner.shm_buf,
            |_| true,
        )
        .map_err(|e| match e {
            StableErr::Sql(e) => sql_err(&self.db_path, e),
            StableErr::Io(e) => CaptureError::Io {
                path: self.shm_path.clone(),
                source: e,
            },
            StableErr::Other(why) => CaptureError::Busy(why),
        })
    }

    /// Test hook: ends the capture's read transaction WITHOUT a hand-over, so that the
    /// application can restart the WAL behind the capture's back (the next poll must report
    /// `Lost` if commits were discarded). Never use outside tests.
    #[doc(hidden)]
    pub fn release_reader_for_tests(&mut self) {
        if let Some(inner) = self.inner.as_mut() {
            end_read(&inner.readers[inner.active]);
            inner.holding = false;
            inner.settled = false;
        }
    }
}

enum Failure {
    Lost(String),
    Err(CaptureError),
}

impl From<CaptureError> for Failure {
    fn from(e: CaptureError) -> Self {
        Failure::Err(e)
    }
}

fn sql_err(path: &Path, source: rusqlite::Error) -> CaptureError {
    CaptureError::Sqlite {
        path: path.to_path_buf(),
        source,
    }
}

/// Begins a read transaction (the snapshot is taken by the first read).
fn begin_read(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN DEFERRED")?;
    let r = conn.query_row("PRAGMA schema_version", [], |r| r.get::<_, i64>(0));
    if let Err(e) = r {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(e);
    }
    Ok(())
}

fn end_read(conn: &Connection) {
    if !conn.is_autocommit() {
        let _ = conn.execute_batch("COMMIT");
    }
}

fn checkpoint_passive(conn: &Connection) -> rusqlite::Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
}

/// Begins the spare reader before ending the active one.
fn handover(inner: &mut Inner, db: &Path) {
    let spare = 1 - inner.active;
    match begin_read(&inner.readers[spare]) {
        Ok(()) => {
            end_read(&inner.readers[inner.active]);
            inner.active = spare;
        }
        Err(e) => {
            warn!(db = %db.display(), error = %e, "read-transaction hand-over failed; keeping the old one")
        }
    }
}

enum StableErr {
    Sql(rusqlite::Error),
    Io(std::io::Error),
    Other(String),
}

/// Begins a read transaction on `conn` between two identical reads of the `-shm` header
/// (same change counter, frames and salts: no commit or restart in between), so the
/// snapshot is exactly that header's state. `accept` may refuse the header (the read
/// transaction is then ended and `Other` returned).
fn begin_stable(
    conn: &Connection,
    shm: &File,
    buf: &mut [u8; wal::SHM_HEADER],
    accept: impl Fn(&ShmHeader) -> bool,
) -> std::result::Result<ShmHeader, StableErr> {
    for _ in 0..50 {
        let before = match read_shm_once(shm, buf).map_err(StableErr::Io)? {
            Some(h) => h,
            None => continue,
        };
        begin_read(conn).map_err(StableErr::Sql)?;
        let after = match read_shm_once(shm, buf).map_err(StableErr::Io)? {
            Some(h) => h,
            None => {
                end_read(conn);
                continue;
            }
        };
        if same_commit_state(&before, &after) {
            if !accept(&before) || !accept(&after) {
                end_read(conn);
                return Err(StableErr::Other("header not accepted".into()));
            }
            return Ok(after);
        }
        end_read(conn);
    }
    Err(StableErr::Other(
        "the WAL index header kept changing".into(),
    ))
}

fn read_shm_once(
    shm: &File,
    buf: &mut [u8; wal::SHM_HEADER],
) -> std::io::Result<Option<ShmHeader>> {
    for _ in 0..1000 {
        match wal::read_shm(shm, buf)? {
            ShmRead::Ok(h) => return Ok(Some(h)),
            ShmRead::Torn => std::hint::spin_loop(),
            ShmRead::Uninit | ShmRead::Short => return Ok(None),
        }
    }
    Ok(None)
}

/// How long a torn WAL-index header may stay torn before a poll gives up with `Busy`. A
/// writer updates the header's two copies one after the other; when it is preempted between
/// them (a loaded machine), the header stays torn for a whole scheduling slice or more, which
/// a fixed number of retries did not outlast (`a_writer_in_another_process_is_captured_exactly`
/// failed once in CI that way). SQLite's own readers wait too.
const TORN_HEADER_PATIENCE: Duration = Duration::from_secs(2);

fn read_shm_retry(
    shm: &File,
    buf: &mut [u8; wal::SHM_HEADER],
    path: &Path,
) -> std::result::Result<ShmHeader, Failure> {
    let start = std::time::Instant::now();
    let mut torn = 0u32;
    loop {
        match wal::read_shm(shm, buf).map_err(|e| {
            Failure::Err(CaptureError::Io {
                path: path.to_path_buf(),
                source: e,
            })
        })? {
            ShmRead::Ok(h) => return Ok(h),
            ShmRead::Torn => {
                torn += 1;
                // Spin briefly (the writer is between two memcpys), then yield, then sleep.
                if torn <= 100 {
                    std::hint::spin_loop();
                } else if start.elapsed() >= TORN_HEADER_PATIENCE {
                    break;
                } else if torn <= 2000 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            ShmRead::Uninit | ShmRead::Short => {
                return Err(Failure::Lost(
                    "the WAL index (-shm) was reinitialized".into(),
                ));
            }
        }
    }
    Err(Failure::Err(CaptureError::Busy(
        "the WAL index header stays inconsistent".into(),
    )))
}

/// Reads every commit between the capture's position and `hdr` (re-reading the header when
/// the WAL changed under us), checks the change-counter accounting, and advances the
/// position. The read transaction held by the caller protects the frames (crate docs).
fn capture(
    inner: &mut Inner,
    wal_path: &Path,
    shm_path: &Path,
    mut hdr: ShmHeader,
) -> std::result::Result<Vec<wal::RawCommit>, Failure> {
    let io = |e: std::io::Error| {
        Failure::Err(CaptureError::Io {
            path: wal_path.to_path_buf(),
            source: e,
        })
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let pos = inner.pos;
        let expected = hdr.change.wrapping_sub(pos.change);
        if expected > u32::MAX / 2 {
            return Err(Failure::Lost(format!(
                "the WAL index change counter went back from {} to {} (WAL recovery)",
                pos.change, hdr.change
            )));
        }
        if hdr.max_frame > 0 && hdr.page_size != inner.page_size {
            return Err(Failure::Lost(format!(
                "the page size changed from {} to {}",
                inner.page_size, hdr.page_size
            )));
        }
        let same_gen = hdr.salt == pos.salt;
        if same_gen && hdr.max_frame < pos.frame {
            return Err(Failure::Lost(format!(
                "the WAL went back from frame {} to {} without a restart (WAL recovery)",
                pos.frame, hdr.max_frame
            )));
        }
        let first = if same_gen { pos.frame + 1 } else { 1 };
        let mut commits = Vec::new();
        let mut cksum = pos.cksum;
        if hdr.max_frame >= first {
            let mut hb = [0u8; wal::WAL_HEADER];
            let n = wal::read_full(&inner.wal, &mut hb, 0).map_err(io)?;
            let walhdr = if n == wal::WAL_HEADER {
                wal::parse_wal_header(&hb)
            } else {
                None
            };
            let walhdr = match walhdr {
                Some(w) if w.salt == hdr.salt => w,
                _ => {
                    // The WAL is being rewound right now: read the header again.
                    if attempt < 20 {
                        std::thread::yield_now();
                        hdr = read_shm_retry(&inner.shm, &mut inner.shm_buf, shm_path)?;
                        continue;
                    }
                    return Err(Failure::Lost(
                        "the WAL file header does not match the WAL index".into(),
                    ));
                }
            };
            if walhdr.page_size != inner.page_size {
                return Err(Failure::Lost(format!(
                    "the WAL page size {} is not the database's {}",
                    walhdr.page_size, inner.page_size
                )));
            }
            let seed = match (first, pos.cksum) {
                (1, _) | (_, None) => walhdr.cksum,
                (_, Some(c)) => c,
            };
            match wal::read_frames(&inner.wal, &walhdr, first, hdr.max_frame, seed).map_err(io)? {
                wal::FramesRead::Ok {
                    commits: c,
                    cksum: k,
                } => {
                    if k != hdr.frame_cksum {
                        if attempt < 20 {
                            hdr = read_shm_retry(&inner.shm, &mut inner.shm_buf, shm_path)?;
                            continue;
                        }
                        return Err(Failure::Lost(format!(
                            "the checksum of WAL frame {} is not the one the WAL index records",
                            hdr.max_frame
                        )));
                    }
                    commits = c;
                    cksum = Some(k);
                }
                wal::FramesRead::Invalid { frame, why } => {
                    if attempt < 20 {
                        std::thread::yield_now();
                        hdr = read_shm_retry(&inner.shm, &mut inner.shm_buf, shm_path)?;
                        continue;
                    }
                    return Err(Failure::Lost(format!(
                        "WAL frame {frame} cannot be read: {why}"
                    )));
                }
            }
        } else if !same_gen {
            cksum = None;
        }
        let found = commits.len() as u32;
        if found > expected {
            return Err(Failure::Lost(format!(
                "the WAL holds {found} new commit(s) but SQLite counted {expected} (WAL recovery)"
            )));
        }
        if found != expected {
            return Err(Failure::Lost(if same_gen {
                format!(
                    "SQLite counted {expected} commit(s) since the last capture but the WAL holds {found} (WAL recovery or rewrite)"
                )
            } else {
                format!(
                    "the WAL was restarted (checkpointed and rewound) before {} commit(s) were captured",
                    expected - found
                )
            }));
        }
        inner.pos = Pos {
            salt: hdr.salt,
            frame: hdr.max_frame,
            cksum: if hdr.max_frame == 0 { None } else { cksum },
            change: hdr.change,
        };
        inner.last_hdr = hdr;
        return Ok(commits);
    }
}

// The server moves capturers between worker threads.
const _: fn() = || {
    fn assert_send<T: Send>() {}
    assert_send::<Capturer>();
};

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAL-index header whose two copies agree and whose checksum holds.
    fn header(max_frame: u32) -> [u8; wal::SHM_HEADER] {
        let mut h = [0u8; wal::SHM_HEADER];
        h[0..4].copy_from_slice(&3007000u32.to_ne_bytes()); // iVersion
        h[12] = 1; // isInit
        h[14..16].copy_from_slice(&4096u16.to_ne_bytes());
        h[16..20].copy_from_slice(&max_frame.to_ne_bytes());
        let (c1, c2) = wal::checksum(cfg!(target_endian = "big"), &h[0..40], (0, 0));
        h[40..44].copy_from_slice(&c1.to_ne_bytes());
        h[44..48].copy_from_slice(&c2.to_ne_bytes());
        let (a, b) = h.split_at_mut(48);
        b[..48].copy_from_slice(&a[..48]);
        h
    }

    /// A header left torn for longer than a burst of retries (a writer preempted between its
    /// two copies) is waited for, not reported as `Busy`; one torn for good still is.
    #[test]
    fn a_header_torn_for_a_while_is_waited_for() {
        use std::os::unix::fs::FileExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db-shm");
        let mut torn = header(7);
        torn[48 + 16] ^= 1; // the second copy differs
        std::fs::write(&path, torn).unwrap();
        let shm = File::open(&path).unwrap();
        let mut buf = [0u8; wal::SHM_HEADER];
        assert!(matches!(
            wal::read_shm(&shm, &mut buf).unwrap(),
            ShmRead::Torn
        ));

        let writer = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
                f.write_all_at(&header(7), 0).unwrap();
            })
        };
        let started = std::time::Instant::now();
        let h = match read_shm_retry(&shm, &mut buf, &path) {
            Ok(h) => h,
            Err(Failure::Err(e)) => panic!("gave up after {:?}: {e}", started.elapsed()),
            Err(Failure::Lost(why)) => panic!("{why}"),
        };
        assert_eq!(h.max_frame, 7);
        assert!(started.elapsed() >= Duration::from_millis(250));
        writer.join().unwrap();

        std::fs::write(&path, torn).unwrap();
        let started = std::time::Instant::now();
        match read_shm_retry(&shm, &mut buf, &path) {
            Err(Failure::Err(CaptureError::Busy(why))) => assert!(why.contains("inconsistent")),
            Ok(_) => panic!("a torn header was read"),
            Err(Failure::Err(e)) => panic!("{e}"),
            Err(Failure::Lost(why)) => panic!("{why}"),
        }
        assert!(started.elapsed() >= TORN_HEADER_PATIENCE);
    }
}
