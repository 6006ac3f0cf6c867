//! [`WalWatcher`]: tells which of many databases had their `-wal` written, so that capture
//! polls a database as soon as it commits (its commits are stamped within a millisecond or
//! so) and an idle database costs nothing.
//!
//! # How (Linux: inotify)
//! One inotify instance watches the *directory* of each database (one watch per directory,
//! shared by every database in it) for `IN_MODIFY`, `IN_CREATE`, `IN_MOVED_TO`,
//! `IN_MOVED_FROM` and `IN_DELETE`. Events name the file, so a write to, a truncation of, or
//! the creation, deletion or replacement of `<db>-wal` (and the replacement or removal of the
//! database file itself) reports the database's key, without a per-file watch to re-arm when
//! the `-wal` is deleted and created again. Other files of the directory (the database file's
//! own writes by checkpoints, the `-shm`, anything else) are ignored.
//!
//! - **Queue overflow** (`IN_Q_OVERFLOW`, events were dropped): every key is reported.
//! - **A watched directory removed or moved** (`IN_DELETE_SELF`, `IN_MOVE_SELF`,
//!   `IN_IGNORED`): its keys are reported, and the watch is added again at the next `wait`
//!   that finds the directory; until then (and for a directory that cannot be watched at all,
//!   e.g. the watch limit was reached) its keys are reported each time `wait` times out.
//! - **The commit is published after the write**: SQLite writes a transaction's frames to the
//!   `-wal` (the event) and only then publishes the commit in the `-shm` header (no event: it is
//!   a memory mapping; with `synchronous=FULL` an fsync of the `-wal` comes first). A poll
//!   right after the event can miss the last commit, so a key is reported again ("rechecks")
//!   at doubling delays after its last event ([`RECHECK_AFTER`], 1 ms to 128 ms).
//!
//! # Elsewhere
//! A fallback without inotify reports every key each time `wait` times out (the caller then
//! polls everything at its usual pace).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// After a key's last event, it is reported again after each of these delays (see the module
/// docs: the commit is published in the `-shm` after the `-wal` write that announced it, and
/// with `synchronous=FULL` an fsync lies in between). Doubling delays bound the lateness by
/// about the time the writer took to publish; a poll that finds nothing costs two `stat`s and
/// one small `pread`.
pub const RECHECK_AFTER: [Duration; 8] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(4),
    Duration::from_millis(8),
    Duration::from_millis(16),
    Duration::from_millis(32),
    Duration::from_millis(64),
    Duration::from_millis(128),
];

/// While the caller reports a commit in flight ([`WalWatcher::set_in_flight`]), the key is
/// reported again this soon, for at most [`IN_FLIGHT_FOR`] (then only the rechecks).
pub const IN_FLIGHT_EVERY: Duration = Duration::from_micros(500);
/// See [`IN_FLIGHT_EVERY`] (frames a rolled-back transaction left are not a commit coming).
pub const IN_FLIGHT_FOR: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot start watching files: {0}")]
    Init(std::io::Error),
    #[error("cannot watch {path}: {source}")]
    Watch {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the watcher did (for logs and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// inotify events read.
    pub events: u64,
    /// Times the kernel's event queue overflowed (every key was reported).
    pub overflows: u64,
    /// Times a watched directory went away (its keys were reported).
    pub dirs_lost: u64,
    /// Keys reported again after their last event.
    pub rechecks: u64,
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn split(db_path: &Path) -> (PathBuf, Vec<u8>, Vec<u8>) {
    use std::os::unix::ffi::OsStrExt;
    // The real directory (SQLite resolves symbolic links to find the `-wal`).
    let real = std::fs::canonicalize(db_path).unwrap_or_else(|_| db_path.to_path_buf());
    let dir = match real.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = real
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let mut wal = name.clone();
    wal.extend_from_slice(b"-wal");
    (dir, name, wal)
}

/// When a key is reported again after its last event (see [`RECHECK_AFTER`]).
#[derive(Debug, Default)]
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
struct Rechecks {
    /// key → (stage into RECHECK_AFTER, the last event).
    due: HashMap<u64, (usize, Instant)>,
    /// Commits in flight (see [`WalWatcher::set_in_flight`]): key → (since when, the next
    /// recheck if one is scheduled).
    soon: HashMap<u64, (Instant, Option<Instant>)>,
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
impl Rechecks {
    fn arm(&mut self, key: u64, now: Instant) {
        self.due.insert(key, (0, now));
    }

    fn next_deadline(&self) -> Option<Instant> {
        let soon = self.soon.values().filter_map(|(_, next)| *next).min();
        self.due
            .values()
            .map(|(stage, at)| *at + RECHECK_AFTER[*stage])
            .chain(soon)
            .min()
    }

    fn in_flight(&mut self, key: u64, yes: bool, now: Instant) {
        if !yes {
            self.soon.remove(&key);
            return;
        }
        let e = self.soon.entry(key).or_insert((now, None));
        if now.duration_since(e.0) <= IN_FLIGHT_FOR {
            e.1 = Some(now + IN_FLIGHT_EVERY);
        }
    }

    /// Keys whose recheck is due at `now` (each advances to its next stage).
    fn take_due(&mut self, now: Instant, out: &mut HashSet<u64>) -> u64 {
        let mut n = 0;
        for (key, (_, next)) in self.soon.iter_mut() {
            if next.is_some_and(|t| t <= now) {
                *next = None;
                out.insert(*key);
                n += 1;
            }
        }
        self.due.retain(|key, (stage, at)| {
            if *at + RECHECK_AFTER[*stage] > now {
                return true;
            }
            out.insert(*key);
            n += 1;
            *stage += 1;
            *stage < RECHECK_AFTER.len()
        });
        n
    }
}

#[cfg(target_os = "linux")]
mod imp {
    use super::*;
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;

    /// One watched database.
    #[derive(Debug, Clone)]
    struct Entry {
        dir: PathBuf,
        /// The database's file name.
        db_name: Vec<u8>,
        /// `<db name>-wal`.
        wal_name: Vec<u8>,
    }

    const DIR_MASK: u32 = libc::IN_MODIFY
        | libc::IN_CREATE
        | libc::IN_MOVED_TO
        | libc::IN_MOVED_FROM
        | libc::IN_DELETE
        | libc::IN_DELETE_SELF
        | libc::IN_MOVE_SELF
        | libc::IN_ONLYDIR;

    /// One watched directory.
    #[derive(Debug, Default)]
    struct Dir {
        /// inotify watch descriptor, None while the directory cannot be watched.
        wd: Option<i32>,
        /// file name (database or `-wal`) → keys.
        names: HashMap<Vec<u8>, Vec<u64>>,
        /// Keys in this directory.
        keys: HashSet<u64>,
    }

    /// See the module docs.
    pub struct WalWatcher {
        fd: OwnedFd,
        entries: HashMap<u64, Entry>,
        dirs: HashMap<PathBuf, Dir>,
        by_wd: HashMap<i32, PathBuf>,
        /// Reported at the next `wait`.
        changed: HashSet<u64>,
        rechecks: Rechecks,
        /// Directories without a watch: their keys are reported on each timeout and the watch
        /// is tried again.
        unwatched: HashSet<PathBuf>,
        stats: WatchStats,
        buf: Vec<u8>,
    }

    impl WalWatcher {
        pub fn new() -> Result<WalWatcher, WatchError> {
            // SAFETY: plain syscall; the result is checked.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return Err(WatchError::Init(std::io::Error::last_os_error()));
            }
            Ok(WalWatcher {
                // SAFETY: `fd` is a new descriptor that nothing else owns.
                fd: unsafe { OwnedFd::from_raw_fd(fd) },
                entries: HashMap::new(),
                dirs: HashMap::new(),
                by_wd: HashMap::new(),
                changed: HashSet::new(),
                rechecks: Rechecks::default(),
                unwatched: HashSet::new(),
                stats: WatchStats::default(),
                buf: vec![0u8; 64 * 1024],
            })
        }

        /// Whether writes are seen as they happen (false: the fallback that reports every
        /// key at each timeout).
        pub fn is_native(&self) -> bool {
            true
        }

        /// Starts watching `db_path`'s `-wal` under `key` (replacing what `key` watched).
        /// The key is reported once at the next `wait` (whatever happened before was not
        /// seen). On error (the directory cannot be watched) the key is still kept, and
        /// reported each time `wait` times out, until a watch succeeds.
        pub fn watch(&mut self, key: u64, db_path: &Path) -> Result<(), WatchError> {
            self.unwatch(key);
            let (dir, db_name, wal_name) = split(db_path);
            let d = self.dirs.entry(dir.clone()).or_default();
            d.names.entry(db_name.clone()).or_default().push(key);
            d.names.entry(wal_name.clone()).or_default().push(key);
            d.keys.insert(key);
            self.entries.insert(
                key,
                Entry {
                    dir: dir.clone(),
                    db_name,
                    wal_name,
                },
            );
            self.changed.insert(key);
            if self.dirs[&dir].wd.is_some() {
                return Ok(());
            }
            self.add_dir_watch(&dir)
        }

        fn add_dir_watch(&mut self, dir: &Path) -> Result<(), WatchError> {
            let err = |source| WatchError::Watch {
                path: dir.to_path_buf(),
                source,
            };
            let c = CString::new(dir.as_os_str().as_bytes()).map_err(|_| {
                err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "the path holds a NUL byte",
                ))
            });
            let wd = match c {
                // SAFETY: valid fd and NUL-terminated path.
                Ok(c) => unsafe {
                    libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), DIR_MASK)
                },
                Err(e) => {
                    self.unwatched.insert(dir.to_path_buf());
                    return Err(e);
                }
            };
            if wd < 0 {
                self.unwatched.insert(dir.to_path_buf());
                return Err(err(std::io::Error::last_os_error()));
            }
            // A directory reached by two paths (or re-added) gets the same descriptor.
            if let Some(other) = self.by_wd.get(&wd)
                && other != dir
            {
                tracing::debug!(dir = %dir.display(), other = %other.display(), "one directory under two names");
            }
            self.by_wd.insert(wd, dir.to_path_buf());
            if let Some(d) = self.dirs.get_mut(dir) {
                d.wd = Some(wd);
            }
            self.unwatched.remove(dir);
            Ok(())
        }

        /// Stops watching `key`.
        pub fn unwatch(&mut self, key: u64) {
            let Some(e) = self.entries.remove(&key) else {
                return;
            };
            self.changed.remove(&key);
            self.rechecks.due.remove(&key);
            self.rechecks.soon.remove(&key);
            let Some(d) = self.dirs.get_mut(&e.dir) else {
                return;
            };
            d.keys.remove(&key);
            for name in [&e.db_name, &e.wal_name] {
                if let Some(v) = d.names.get_mut(name) {
                    v.retain(|k| *k != key);
                    if v.is_empty() {
                        d.names.remove(name);
                    }
                }
            }
            if d.keys.is_empty() {
                let d = self.dirs.remove(&e.dir).expect("dir");
                self.unwatched.remove(&e.dir);
                if let Some(wd) = d.wd
                    && self.by_wd.get(&wd) == Some(&e.dir)
                {
                    self.by_wd.remove(&wd);
                    // SAFETY: valid fd; a stale descriptor only returns EINVAL.
                    unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
                }
            }
        }

        /// The keys watched now.
        pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
            self.entries.keys().copied()
        }

        /// What the caller's poll of `key` saw: a commit on its way (written to the `-wal`,
        /// not yet published; `Capturer::commit_in_flight`) gets `key` reported again in
        /// [`IN_FLIGHT_EVERY`], for up to [`IN_FLIGHT_FOR`]; `false` ends that.
        pub fn set_in_flight(&mut self, key: u64, in_flight: bool) {
            if self.entries.contains_key(&key) {
                self.rechecks.in_flight(key, in_flight, Instant::now());
            }
        }

        pub fn stats(&self) -> WatchStats {
            self.stats
        }

        /// Waits up to `timeout` for writes, and returns the keys whose `-wal` (or database
        /// file) changed since the last call, plus the keys due for a recheck. Returns at once
        /// when some are known already; an empty list means the timeout passed with nothing.
        pub fn wait(&mut self, timeout: Duration) -> Vec<u64> {
            let deadline = Instant::now() + timeout;
            loop {
                self.read_events();
                let now = Instant::now();
                self.stats.rechecks += self.rechecks.take_due(now, &mut self.changed);
                if !self.changed.is_empty() {
                    return self.changed.drain().collect();
                }
                if now >= deadline {
                    return self.timed_out();
                }
                let until = self
                    .rechecks
                    .next_deadline()
                    .map_or(deadline, |r| r.min(deadline));
                let left = until.saturating_duration_since(now);
                let ts = libc::timespec {
                    tv_sec: left.as_secs().min(i32::MAX as u64) as libc::time_t,
                    tv_nsec: left.subsec_nanos() as libc::c_long,
                };
                let mut pfd = libc::pollfd {
                    fd: self.fd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd and timespec; no signal mask change.
                unsafe { libc::ppoll(&mut pfd, 1, &ts, std::ptr::null()) };
            }
        }

        /// The timeout passed: the keys of directories that cannot be watched (after trying
        /// to watch them again).
        fn timed_out(&mut self) -> Vec<u64> {
            if self.unwatched.is_empty() {
                return Vec::new();
            }
            let dirs: Vec<PathBuf> = self.unwatched.iter().cloned().collect();
            let mut out = Vec::new();
            for dir in dirs {
                if let Some(d) = self.dirs.get(&dir) {
                    out.extend(d.keys.iter().copied());
                }
                if let Err(e) = self.add_dir_watch(&dir) {
                    tracing::debug!(error = %e, "directory still not watched");
                }
            }
            out
        }

        fn read_events(&mut self) {
            loop {
                // SAFETY: valid fd and buffer.
                let n = unsafe {
                    libc::read(
                        self.fd.as_raw_fd(),
                        self.buf.as_mut_ptr().cast(),
                        self.buf.len(),
                    )
                };
                if n <= 0 {
                    // EAGAIN: nothing more (any other error: the next call tries again).
                    return;
                }
                let now = Instant::now();
                let n = n as usize;
                let mut off = 0;
                let hdr = std::mem::size_of::<libc::inotify_event>();
                while off + hdr <= n {
                    // SAFETY: the kernel wrote a whole event at `off`; read it unaligned.
                    let ev: libc::inotify_event =
                        unsafe { std::ptr::read_unaligned(self.buf[off..].as_ptr().cast()) };
                    let name_start = off + hdr;
                    let name_end = (name_start + ev.len as usize).min(n);
                    let raw = &self.buf[name_start..name_end];
                    let name = &raw[..raw.iter().position(|b| *b == 0).unwrap_or(raw.len())];
                    let name = name.to_vec();
                    off = name_end;
                    self.stats.events += 1;
                    self.handle(ev.wd, ev.mask, &name, now);
                }
            }
        }

        fn handle(&mut self, wd: i32, mask: u32, name: &[u8], now: Instant) {
            if mask & libc::IN_Q_OVERFLOW != 0 {
                self.stats.overflows += 1;
                tracing::debug!("inotify queue overflowed: every database is looked at");
                for k in self.entries.keys() {
                    self.changed.insert(*k);
                    self.rechecks.arm(*k, now);
                }
                return;
            }
            let Some(dir) = self.by_wd.get(&wd).cloned() else {
                return;
            };
            if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
                // The directory went away (or its watch did): report its keys and watch it
                // again when it is back.
                self.stats.dirs_lost += 1;
                if mask & libc::IN_IGNORED != 0 {
                    self.by_wd.remove(&wd);
                }
                if let Some(d) = self.dirs.get_mut(&dir) {
                    if mask & libc::IN_IGNORED != 0 && d.wd == Some(wd) {
                        d.wd = None;
                    }
                    for k in &d.keys {
                        self.changed.insert(*k);
                    }
                    if mask & libc::IN_MOVE_SELF != 0 {
                        // Moved: the path no longer names what is watched.
                        if let Some(wd) = d.wd.take() {
                            self.by_wd.remove(&wd);
                            // SAFETY: valid fd.
                            unsafe { libc::inotify_rm_watch(self.fd.as_raw_fd(), wd) };
                        }
                    }
                    if d.wd.is_none() {
                        self.unwatched.insert(dir);
                    }
                }
                return;
            }
            if name.is_empty() {
                return;
            }
            if let Some(keys) = self.dirs.get(&dir).and_then(|d| d.names.get(name)) {
                // The database file's own writes are checkpoints: not a commit.
                let is_wal = name.ends_with(b"-wal");
                if !is_wal && mask & libc::IN_MODIFY != 0 {
                    return;
                }
                for k in keys {
                    self.changed.insert(*k);
                    self.rechecks.arm(*k, now);
                }
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    use super::*;

    /// Fallback without inotify: every key is reported each time `wait` times out.
    pub struct WalWatcher {
        keys: HashSet<u64>,
        stats: WatchStats,
    }

    impl WalWatcher {
        pub fn new() -> Result<WalWatcher, WatchError> {
            Ok(WalWatcher {
                keys: HashSet::new(),
                stats: WatchStats::default(),
            })
        }

        pub fn is_native(&self) -> bool {
            false
        }

        pub fn watch(&mut self, key: u64, db_path: &Path) -> Result<(), WatchError> {
            let _ = db_path;
            self.keys.insert(key);
            Ok(())
        }

        pub fn unwatch(&mut self, key: u64) {
            self.keys.remove(&key);
        }

        pub fn keys(&self) -> impl Iterator<Item = u64> + '_ {
            self.keys.iter().copied()
        }

        pub fn stats(&self) -> WatchStats {
            self.stats
        }

        pub fn set_in_flight(&mut self, key: u64, in_flight: bool) {
            let _ = (key, in_flight);
        }

        pub fn wait(&mut self, timeout: Duration) -> Vec<u64> {
            std::thread::sleep(timeout);
            self.keys.iter().copied().collect()
        }
    }
}

pub use imp::WalWatcher;

impl std::fmt::Debug for WalWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalWatcher")
            .field("keys", &self.keys().count())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
