//! Writing a restored file: page-aligned buffers from a bounded pool, and either writes by the
//! workers themselves (through the page cache) or writer threads that write `O_DIRECT`,
//! joining adjacent stretches into one vectored write. See `restore::write_backup`.

use std::alloc::Layout;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Condvar, Mutex};

use crate::error::{RepoError, Result};

/// Alignment of buffers, file offsets and lengths for `O_DIRECT` (enough for 512-byte and
/// 4 KiB sectors).
const ALIGN: usize = 4096;
/// One vectored write joins at most this many bytes.
const MAX_WRITE: usize = 8 << 20;
/// Stretches adjacent to nothing and smaller than this are written through the page cache.
const SMALL_WRITE: usize = 64 << 10;
/// A writer gathers this many bytes of stretches before it writes, unless none come for
/// [`GATHER_WAIT`].
const GATHER: usize = 2 << 20;
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// Allocates `len` bytes for the file up front, so that a full disk shows before anything is
/// written; where the filesystem cannot, only sets the length.
pub(crate) fn preallocate(file: &File, len: u64) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if len > 0 {
        use std::os::fd::AsRawFd;
        // SAFETY: a valid descriptor; a plain syscall.
        let r = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if r == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if !matches!(
            e.raw_os_error(),
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL)
        ) {
            return Err(e);
        }
    }
    file.set_len(len)
}

/// The file opened again for `O_DIRECT` writes; `None` where that is not supported.
pub(crate) fn open_direct(path: &Path) -> Option<File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = path;
        None
    }
}

/// A page-aligned heap buffer.
struct AlignedBuf {
    ptr: *mut u8,
    layout: Layout,
}

// SAFETY: plain owned memory.
unsafe impl Send for AlignedBuf {}
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let size = len.max(1).div_ceil(ALIGN) * ALIGN;
        let layout = Layout::from_size_align(size, ALIGN).expect("buffer layout");
        // SAFETY: a non-zero size.
        let ptr = unsafe { std::alloc::alloc(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        AlignedBuf { ptr, layout }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// A bounded pool of equal page-aligned buffers: `take` waits while all are in use, which
/// holds back workers that run ahead of the disk.
pub(crate) struct BufPool {
    size: usize,
    cap: usize,
    state: Mutex<(Vec<AlignedBuf>, usize)>,
    freed: Condvar,
}

impl BufPool {
    pub fn new(size: usize, cap: usize) -> Self {
        BufPool {
            size,
            cap: cap.max(1),
            state: Mutex::new((Vec::new(), 0)),
            freed: Condvar::new(),
        }
    }

    pub fn take(&self) -> PooledBuf<'_> {
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(b) = st.0.pop() {
                return PooledBuf {
                    buf: Some(b),
                    pool: self,
                };
            }
            if st.1 < self.cap {
                st.1 += 1;
                return PooledBuf {
                    buf: Some(AlignedBuf::new(self.size)),
                    pool: self,
                };
            }
            st = self.freed.wait(st).unwrap();
        }
    }
}

/// A buffer of a [`BufPool`], returned to it when dropped.
pub(crate) struct PooledBuf<'p> {
    buf: Option<AlignedBuf>,
    pool: &'p BufPool,
}

impl PooledBuf<'_> {
    pub fn bytes(&self) -> &[u8] {
        let b = self.buf.as_ref().unwrap();
        // SAFETY: `size` bytes allocated (uninitialised bytes are never read: callers read
        // only what they wrote).
        unsafe { std::slice::from_raw_parts(b.ptr, self.pool.size) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        let b = self.buf.as_ref().unwrap();
        // SAFETY: as above, and `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut(b.ptr, self.pool.size) }
    }
}

impl Drop for PooledBuf<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.state.lock().unwrap().0.push(b);
            self.pool.freed.notify_one();
        }
    }
}

/// One stretch to write: `buf[lo..hi]` at file offset `at`.
pub(crate) struct Job<'p> {
    at: u64,
    buf: Arc<PooledBuf<'p>>,
    lo: usize,
    hi: usize,
}

impl Job<'_> {
    fn data(&self) -> &[u8] {
        &self.buf.bytes()[self.lo..self.hi]
    }
    fn aligned(&self) -> bool {
        let d = self.data();
        (self.at as usize).is_multiple_of(ALIGN)
            && d.len().is_multiple_of(ALIGN)
            && (d.as_ptr() as usize).is_multiple_of(ALIGN)
    }
}

/// Where the stretches go: the file (through the page cache), or its `O_DIRECT` twin.
pub(crate) struct Output<'f> {
    file: &'f File,
    direct: Option<&'f File>,
    path: &'f Path,
    failed: AtomicBool,
    error: Mutex<Option<RepoError>>,
}

impl<'f> Output<'f> {
    pub fn new(file: &'f File, direct: Option<&'f File>, path: &'f Path) -> Self {
        Output {
            file,
            direct,
            path,
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
        }
    }

    /// The first write error, if a writer thread met one.
    pub fn check(&self) -> Result<()> {
        if !self.failed.load(Ordering::Relaxed) {
            return Ok(());
        }
        match self.error.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Err(RepoError::Invalid(format!(
                "writing {} failed",
                self.path.display()
            ))),
        }
    }

    fn fail(&self, e: std::io::Error) {
        let mut slot = self.error.lock().unwrap();
        if slot.is_none() && !self.failed.load(Ordering::Relaxed) {
            *slot = Some(RepoError::io(self.path, e));
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    /// Starts `n` writer threads (0: the workers write themselves) and returns their queue.
    pub fn start_writers<'scope, 'p: 'scope>(
        &'scope self,
        s: &'scope std::thread::Scope<'scope, '_>,
        n: usize,
    ) -> Option<SyncSender<Job<'p>>>
    where
        'f: 'scope,
    {
        if n == 0 || self.direct.is_none() {
            return None;
        }
        let (tx, rx) = sync_channel::<Job<'p>>(256);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..n {
            let rx = Arc::clone(&rx);
            s.spawn(move || self.writer(&rx));
        }
        Some(tx)
    }

    fn writer(&self, rx: &Mutex<Receiver<Job<'_>>>) {
        loop {
            // Gather a few MiB (or what comes within a moment) while the other writer writes:
            // one large write costs the disk and the kernel much less than many small ones.
            let mut batch = {
                let rx = rx.lock().unwrap();
                let Ok(first) = rx.recv() else { return };
                let mut batch = vec![first];
                let mut bytes = batch[0].hi - batch[0].lo;
                while bytes < GATHER {
                    match rx.recv_timeout(GATHER_WAIT) {
                        Ok(j) => {
                            bytes += j.hi - j.lo;
                            batch.push(j);
                        }
                        Err(_) => break,
                    }
                }
                batch
            };
            if self.failed.load(Ordering::Relaxed) {
                continue; // drain, so that nobody waits on a full queue
            }
            batch.sort_unstable_by_key(|j| j.at);
            let mut start = 0;
            while start < batch.len() {
                let mut end = start + 1;
                let mut bytes = batch[start].hi - batch[start].lo;
                if batch[start].aligned() {
                    while end < batch.len()
                        && end - start < 512
                        && bytes < MAX_WRITE
                        && batch[end].aligned()
                        && batch[end].at
                            == batch[end - 1].at + (batch[end - 1].hi - batch[end - 1].lo) as u64
                    {
                        bytes += batch[end].hi - batch[end].lo;
                        end += 1;
                    }
                }
                if let Err(e) = self.write_group(&batch[start..end]) {
                    self.fail(e);
                    break;
                }
                start = end;
            }
        }
    }

    /// Writes adjacent stretches: one vectored `O_DIRECT` write when they are aligned, else
    /// (or when the filesystem refuses it) through the page cache.
    fn write_group(&self, group: &[Job<'_>]) -> std::io::Result<()> {
        let bytes: usize = group.iter().map(|j| j.hi - j.lo).sum();
        // A small stretch on its own (a chunk an incremental backup changed) would cost a
        // whole round trip to the disk: it goes through the page cache, flushed by the fsync.
        if let Some(direct) = self.direct
            && bytes >= SMALL_WRITE
            && group.iter().all(Job::aligned)
        {
            match pwritev_all(direct, group) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(28) => return Err(e),
                // Writing the same bytes again through the page cache is harmless.
                Err(e) => tracing::debug!(%e, "O_DIRECT write refused, writing buffered"),
            }
        }
        for j in group {
            self.file.write_all_at(j.data(), j.at)?;
        }
        Ok(())
    }

    /// Writes `buf`'s `runs` (file offset, start, end): queued for the writers when there are
    /// any, else here and now.
    pub fn write<'p>(
        &self,
        queue: Option<&SyncSender<Job<'p>>>,
        buf: PooledBuf<'p>,
        runs: Vec<(u64, usize, usize)>,
    ) -> Result<()> {
        match queue {
            Some(q) => {
                let buf = Arc::new(buf);
                for (at, lo, hi) in runs {
                    let job = Job {
                        at,
                        buf: Arc::clone(&buf),
                        lo,
                        hi,
                    };
                    if q.send(job).is_err() {
                        self.check()?;
                        return Err(RepoError::Invalid("the restore writers stopped".into()));
                    }
                }
                Ok(())
            }
            None => {
                for (at, lo, hi) in runs {
                    self.file
                        .write_all_at(&buf.bytes()[lo..hi], at)
                        .map_err(|e| RepoError::io(self.path, e))?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn pwritev_all(file: &File, group: &[Job<'_>]) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut iov: Vec<libc::iovec> = group
        .iter()
        .map(|j| {
            let d = j.data();
            libc::iovec {
                iov_base: d.as_ptr() as *mut libc::c_void,
                iov_len: d.len(),
            }
        })
        .collect();
    let mut off = group[0].at;
    let mut i = 0;
    while i < iov.len() {
        let n = iov.len() - i;
        // SAFETY: the iovecs point into live buffers owned by `group`.
        let r = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                iov[i..].as_ptr(),
                n.min(1024) as libc::c_int,
                off as libc::off_t,
            )
        };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if r == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let mut left = r as usize;
        off += left as u64;
        while left > 0 {
            if left >= iov[i].iov_len {
                left -= iov[i].iov_len;
                i += 1;
            } else {
                // SAFETY: still inside the same buffer.
                iov[i].iov_base = unsafe { (iov[i].iov_base as *mut u8).add(left) }.cast();
                iov[i].iov_len -= left;
                left = 0;
            }
        }
    }
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn pwritev_all(file: &File, group: &[Job<'_>]) -> std::io::Result<()> {
    for j in group {
        file.write_all_at(j.data(), j.at)?;
    }
    Ok(())
}
