//! Finding and reading stored chunks: locates the chunks a job needs in pack indexes (the
//! repository's cache of them, see `index_cache`, or, for prune and a verify of the whole
//! repository, every index streamed from the store), then reads their frames with few, large
//! range requests (adjacent frames are coalesced), opens and decompresses them on worker
//! threads. Used by restore, verify and prune.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;

use crate::crypto::{ChunkId, Crypto};
use crate::error::{RepoError, Result};
use crate::format::{self, DOMAIN_FRAME, PackIndex};
use crate::store::{Store, file_name};

/// Chunk ids are already uniformly distributed: hash maps keyed by them use 8 of their bytes.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes.iter().take(8) {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
}

pub(crate) type IdBuild = BuildHasherDefault<IdHasher>;
pub(crate) type IdSet = HashSet<ChunkId, IdBuild>;
pub(crate) type IdMap<V> = HashMap<ChunkId, V, IdBuild>;

/// Where an index object lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IndexState {
    /// `index/<pack>`: live, used for deduplication.
    Live,
    /// `condemned/<pack>`: marked for deletion by prune, still readable.
    Condemned { at_ms: u64 },
}

/// Decodes an object from `condemned/`: 8 bytes of condemnation time, then the index.
pub(crate) fn decode_condemned(
    object: &str,
    bytes: &[u8],
    crypto: &Crypto,
) -> Result<(u64, PackIndex)> {
    if bytes.len() < 8 {
        return Err(RepoError::corrupt(object, "truncated"));
    }
    let at = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    Ok((at, PackIndex::decode(object, &bytes[8..], crypto)?))
}

/// Calls `f` for every pack index (live ones first, then condemned ones if asked), fetching a
/// few at a time so memory holds only a batch of indexes, not all of them.
pub(crate) fn for_each_index(
    store: &Store,
    crypto: &Crypto,
    include_condemned: bool,
    mut f: impl FnMut(IndexState, PackIndex) -> Result<()>,
) -> Result<()> {
    let mut prefixes = vec!["index"];
    if include_condemned {
        prefixes.push("condemned");
    }
    for prefix in prefixes {
        let metas = store.block_on(store.list(prefix))?;
        let keys: Vec<String> = metas.iter().map(|m| m.location.to_string()).collect();
        for batch in keys.chunks(32) {
            let got = store.block_on(store.get_many(batch.to_vec()))?;
            for (key, bytes) in got {
                let Some(bytes) = bytes else { continue };
                if prefix == "index" {
                    f(IndexState::Live, PackIndex::decode(&key, &bytes, crypto)?)?;
                } else {
                    let (at_ms, idx) = decode_condemned(&key, &bytes, crypto)?;
                    f(IndexState::Condemned { at_ms }, idx)?;
                }
            }
        }
    }
    Ok(())
}

/// The names of all packs that have a data object.
pub(crate) fn list_pack_objects(store: &Store) -> Result<Vec<object_store::ObjectMeta>> {
    store.block_on(store.list("data"))
}

pub(crate) fn pack_name(meta: &object_store::ObjectMeta) -> String {
    file_name(meta)
}

/// One frame to read, and the wanted chunks in it.
#[derive(Debug, Clone)]
pub(crate) struct FrameJob {
    pub pack: u32,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    /// (chunk id, offset in the raw frame, length)
    pub chunks: Vec<(ChunkId, u32, u32)>,
    /// When the [`Needed`] set tracks what was found: what its [`Needed::claim`] returned for
    /// each of `chunks`, in the same order (a restore's first place of the chunk, so that
    /// workers need not look it up again). Empty otherwise.
    pub slots: Vec<u32>,
}

pub(crate) struct Located {
    pub packs: Vec<String>,
    pub frames: Vec<FrameJob>,
    pub missing: Vec<ChunkId>,
}

/// A set of chunk ids to locate: an [`IdSet`], or the keys of an [`IdMap`].
pub(crate) trait Needed: Sync {
    fn has(&self, id: &ChunkId) -> bool;
    fn count(&self) -> usize;
    fn each(&self) -> Box<dyn Iterator<Item = &ChunkId> + '_>;
    /// Whether the set records itself which ids were found ([`Needed::claim`]), so that the
    /// [`Locator`] needs no set of its own.
    fn tracks_found(&self) -> bool {
        false
    }
    /// For a set that [`tracks_found`](Needed::tracks_found): when `id` is needed and was not
    /// claimed before, claims it and returns a number the set keeps for it (see
    /// [`FrameJob::slots`]).
    fn claim(&self, _id: &ChunkId) -> Option<u32> {
        unreachable!("claim on a set that does not track what was found")
    }
    /// For a set that tracks what was found: whether `id` was claimed.
    fn claimed(&self, _id: &ChunkId) -> bool {
        unreachable!("claimed on a set that does not track what was found")
    }
}

impl Needed for IdSet {
    fn has(&self, id: &ChunkId) -> bool {
        self.contains(id)
    }
    fn count(&self) -> usize {
        self.len()
    }
    fn each(&self) -> Box<dyn Iterator<Item = &ChunkId> + '_> {
        Box::new(self.iter())
    }
}

impl<V: Sync> Needed for IdMap<V> {
    fn has(&self, id: &ChunkId) -> bool {
        self.contains_key(id)
    }
    fn count(&self) -> usize {
        self.len()
    }
    fn each(&self) -> Box<dyn Iterator<Item = &ChunkId> + '_> {
        Box::new(self.keys())
    }
}

/// Finds a frame for every id in `needed`, preferring live indexes over condemned ones.
pub(crate) fn locate(store: &Store, crypto: &Crypto, needed: &dyn Needed) -> Result<Located> {
    let mut l = Locator::new(needed);
    for_each_index(store, crypto, true, |_, idx| {
        l.add(&idx);
        Ok(())
    })?;
    Ok(l.finish())
}

/// Builds a [`Located`] from pack indexes fed one at a time (live ones first).
pub(crate) struct Locator<'a> {
    needed: &'a dyn Needed,
    found: IdSet,
    /// Ids found, when `needed` tracks them itself.
    claimed: usize,
    packs: Vec<String>,
    frames: Vec<FrameJob>,
    /// Whether a chunk was taken from the pack being offered.
    used: bool,
}

impl<'a> Locator<'a> {
    pub fn new(needed: &'a dyn Needed) -> Self {
        Locator {
            needed,
            found: if needed.tracks_found() {
                IdSet::default()
            } else {
                IdSet::with_capacity_and_hasher(needed.count(), IdBuild::default())
            },
            claimed: 0,
            packs: Vec::new(),
            frames: Vec::new(),
            used: false,
        }
    }

    /// The set this locator finds.
    pub fn needed(&self) -> &'a dyn Needed {
        self.needed
    }

    /// Offers every frame of `idx`.
    pub fn add(&mut self, idx: &PackIndex) {
        for f in &idx.frames {
            self.frame(f.offset, f.stored_len, f.raw_len, &f.chunks);
        }
        self.end_pack(|| idx.pack.clone());
    }

    /// Offers one frame of the pack being offered (`chunks`: each chunk's id and length, in
    /// frame order): takes the chunks that are needed and not found yet.
    pub fn frame(&mut self, offset: u64, stored_len: u32, raw_len: u32, chunks: &[(ChunkId, u32)]) {
        let pack_no = self.packs.len() as u32;
        let tracks = self.needed.tracks_found();
        let mut raw_off = 0u32;
        let mut want = Vec::new();
        let mut slots = Vec::new();
        for (id, len) in chunks {
            let take = if tracks {
                match self.needed.claim(id) {
                    Some(slot) => {
                        slots.push(slot);
                        self.claimed += 1;
                        true
                    }
                    None => false,
                }
            } else {
                self.needed.has(id) && self.found.insert(*id)
            };
            if take {
                want.push((*id, raw_off, *len));
            }
            raw_off += len;
        }
        if !want.is_empty() {
            self.used = true;
            self.frames.push(FrameJob {
                pack: pack_no,
                offset,
                stored_len,
                raw_len,
                chunks: want,
                slots,
            });
        }
    }

    /// Ends the pack whose frames were offered: names it if a chunk was taken from it.
    pub fn end_pack(&mut self, name: impl FnOnce() -> String) {
        if std::mem::take(&mut self.used) {
            self.packs.push(name());
        }
    }

    /// Takes in what `other` (a locator of the same set, which tracks what was found
    /// itself, offered other packs) took.
    pub fn merge(&mut self, other: Locator<'_>) {
        debug_assert!(self.needed.tracks_found() && !other.used);
        let base = self.packs.len() as u32;
        self.packs.extend(other.packs);
        self.frames.extend(other.frames.into_iter().map(|mut f| {
            f.pack += base;
            f
        }));
        self.claimed += other.claimed;
    }

    pub fn finish(mut self) -> Located {
        self.frames.sort_by_key(|f| (f.pack, f.offset));
        let tracks = self.needed.tracks_found();
        let found = if tracks {
            self.claimed
        } else {
            self.found.len()
        };
        let missing = if found == self.needed.count() {
            Vec::new()
        } else if tracks {
            let needed = self.needed;
            needed
                .each()
                .filter(|id| !needed.claimed(id))
                .copied()
                .collect()
        } else {
            self.needed
                .each()
                .filter(|id| !self.found.contains(id))
                .copied()
                .collect()
        };
        Located {
            packs: self.packs,
            frames: self.frames,
            missing,
        }
    }
}

/// Reads are coalesced up to this many bytes per request.
const MAX_RANGE: u64 = 4 * 1024 * 1024;
/// Gaps up to this size between wanted frames are read through rather than split.
const MAX_GAP: u64 = 256 * 1024;

struct RangeJob {
    pack: u32,
    start: u64,
    end: u64,
    frames: std::ops::Range<usize>,
}

fn plan_ranges(frames: &[FrameJob]) -> Vec<RangeJob> {
    let mut out: Vec<RangeJob> = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        let end = f.offset + u64::from(f.stored_len);
        if let Some(last) = out.last_mut()
            && last.pack == f.pack
            && f.offset >= last.end
            && f.offset - last.end <= MAX_GAP
            && end - last.start <= MAX_RANGE
        {
            last.end = end;
            last.frames.end = i + 1;
            continue;
        }
        out.push(RangeJob {
            pack: f.pack,
            start: f.offset,
            end,
            frames: i..i + 1,
        });
    }
    out
}

/// A worker's decompression context and buffer, reused from frame to frame.
pub(crate) struct Unpacker {
    dec: zstd::bulk::Decompressor<'static>,
    buf: Vec<u8>,
}

impl Unpacker {
    fn new() -> Result<Self> {
        Ok(Unpacker {
            dec: zstd::bulk::Decompressor::new().map_err(|e| RepoError::io("zstd", e))?,
            buf: Vec::new(),
        })
    }

    /// Decompresses a frame into the worker's buffer.
    pub fn unpack(
        &mut self,
        fj: &FrameJob,
        compressed: &[u8],
    ) -> std::result::Result<&[u8], String> {
        self.buf.clear();
        self.buf.reserve(fj.raw_len as usize);
        let n = self
            .dec
            .decompress_to_buffer(compressed, &mut self.buf)
            .map_err(|e| format!("decompression failed: {e}"))?;
        if n != fj.raw_len as usize {
            return Err("frame has the wrong length".to_string());
        }
        Ok(&self.buf)
    }

    /// Decompresses a frame straight into `dest`, which must be exactly `raw_len` long. On
    /// error `dest` holds garbage.
    pub fn unpack_into(
        &mut self,
        fj: &FrameJob,
        compressed: &[u8],
        dest: &mut [u8],
    ) -> std::result::Result<(), String> {
        if dest.len() != fj.raw_len as usize {
            return Err("frame has the wrong length".to_string());
        }
        let n = self
            .dec
            .decompress_to_buffer(compressed, dest)
            .map_err(|e| format!("decompression failed: {e}"))?;
        if n != fj.raw_len as usize {
            return Err("frame has the wrong length".to_string());
        }
        Ok(())
    }
}

/// Whether frame seals are checked before a frame is handed on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Seals {
    /// Every frame's seal is checked first; a broken one goes to the handler as damage.
    Check,
    /// In a plain repository the handler gets the body unchecked: for restores, whose
    /// whole-file hash checks every byte made from it anyway (a blake3 pass over the
    /// compressed bytes saved). When the handler fails on a frame, its seal is checked then,
    /// so damage is still named as damage ("checksum mismatch"). Encrypted frames are always
    /// authenticated (decrypting needs it).
    Later,
}

/// Hands `sealed` to `handle` as [`Seals`] says.
fn open_frame<F>(
    crypto: &Crypto,
    seals: Seals,
    unpacker: &mut Unpacker,
    fj: &FrameJob,
    sealed: &[u8],
    handle: &F,
) -> Result<()>
where
    F: Fn(&mut Unpacker, &FrameJob, std::result::Result<&[u8], String>) -> Result<()> + Sync,
{
    let opened = match seals {
        Seals::Check => crypto.open_ref(DOMAIN_FRAME, sealed),
        Seals::Later => crypto.body_ref(DOMAIN_FRAME, sealed),
    };
    match opened {
        Ok(body) => {
            let out = handle(unpacker, fj, Ok(&body));
            if out.is_err()
                && seals == Seals::Later
                && let Err(reason) = crypto.open_ref(DOMAIN_FRAME, sealed)
            {
                return handle(unpacker, fj, Err(reason));
            }
            out
        }
        Err(reason) => handle(unpacker, fj, Err(reason)),
    }
}

/// Reads every frame in `frames` (sorted by pack and offset), opens and decompresses it on
/// `threads` worker threads, and hands the raw bytes (or why they could not be read) to
/// `handle`. See [`fetch_sealed_frames`] for errors and cancellation.
pub(crate) fn fetch_frames<F>(
    store: &Store,
    crypto: &Crypto,
    packs: &[String],
    frames: &[FrameJob],
    threads: usize,
    cancel: Option<&AtomicBool>,
    handle: F,
) -> Result<()>
where
    F: Fn(&FrameJob, std::result::Result<&[u8], String>) -> Result<()> + Sync,
{
    fetch_sealed_frames(
        store,
        crypto,
        packs,
        frames,
        threads,
        Seals::Check,
        cancel,
        |u, fj, compressed| handle(fj, compressed.and_then(|c| u.unpack(fj, c))),
    )
}

/// Reads every frame in `frames` (sorted by pack and offset) with few, large range requests,
/// and on `threads` worker threads opens each frame's seal and hands the compressed bytes (or
/// why they could not be read) to `handle`, with the worker's [`Unpacker`] to decompress them
/// where it likes. Frames are handed out one by one, so the workers share the work evenly.
/// Stops at the first error `handle` returns, or with [`RepoError::Cancelled`] as soon as
/// `cancel` is set.
///
/// What is wrong with the data (a pack that is missing, shorter than its frames, or a frame
/// whose seal does not open) goes to `handle` as `Err(reason)`; a store that cannot be
/// reached (after retries) stops the whole call with its error instead, so that an outage is
/// never reported as damaged data. `seals` says when seals are checked (see [`Seals`]).
#[allow(clippy::too_many_arguments)]
pub(crate) fn fetch_sealed_frames<F>(
    store: &Store,
    crypto: &Crypto,
    packs: &[String],
    frames: &[FrameJob],
    threads: usize,
    seals: Seals,
    cancel: Option<&AtomicBool>,
    handle: F,
) -> Result<()>
where
    F: Fn(&mut Unpacker, &FrameJob, std::result::Result<&[u8], String>) -> Result<()> + Sync,
{
    let threads = threads.max(1);
    if let Some(root) = &store.local_root {
        return fetch_local(root, crypto, packs, frames, threads, seals, cancel, handle);
    }
    let ranges = plan_ranges(frames);
    let (tx, rx) = sync_channel::<(usize, std::result::Result<Bytes, String>)>(threads * 8);
    let rx = Arc::new(Mutex::new(rx));
    let first_error: Mutex<Option<RepoError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let fail = |e: RepoError| {
        let mut fe = first_error.lock().unwrap();
        if fe.is_none() {
            *fe = Some(e);
        }
        stop.store(true, Ordering::Relaxed);
    };
    let stopped = || {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            fail(RepoError::Cancelled);
            return true;
        }
        false
    };
    std::thread::scope(|s| {
        let ranges = &ranges;
        let (fail, stopped) = (&fail, &stopped);
        s.spawn(move || {
            let fut = futures::stream::iter(ranges.iter().enumerate())
                .map(|(i, r)| {
                    let key = format::pack_key(&packs[r.pack as usize]);
                    async move {
                        let res = match store.get_range(&key, r.start..r.end).await {
                            Ok(b) if b.len() as u64 == r.end - r.start => Ok(b),
                            Ok(b) => Err(Ok(format!(
                                "pack truncated: got {} of {} bytes at {}",
                                b.len(),
                                r.end - r.start,
                                r.start
                            ))),
                            Err(e) => Err(classify(store, &key, r.end, e).await),
                        };
                        (i, res)
                    }
                })
                .buffered(3);
            store.block_on(async {
                let mut fut = std::pin::pin!(fut);
                'ranges: while let Some((i, res)) = fut.next().await {
                    let r = &ranges[i];
                    for f in r.frames.clone() {
                        let fj = &frames[f];
                        let item = match &res {
                            Ok(b) => {
                                let lo = (fj.offset - r.start) as usize;
                                Ok(b.slice(lo..lo + fj.stored_len as usize))
                            }
                            Err(Ok(reason)) => Err(reason.clone()),
                            Err(Err(_)) => break,
                        };
                        if stopped() || tx.send((f, item)).is_err() {
                            break 'ranges;
                        }
                    }
                    if let Err(Err(e)) = res {
                        fail(e);
                        break;
                    }
                }
            });
            drop(tx);
        });
        for _ in 0..threads {
            let rx = Arc::clone(&rx);
            let handle = &handle;
            s.spawn(move || {
                let mut unpacker = match Unpacker::new() {
                    Ok(u) => u,
                    Err(e) => {
                        fail(e);
                        return;
                    }
                };
                loop {
                    let msg = rx.lock().unwrap().recv();
                    let Ok((f, sealed)) = msg else { break };
                    if stopped() {
                        break;
                    }
                    let fj = &frames[f];
                    let out = match &sealed {
                        Ok(b) => open_frame(crypto, seals, &mut unpacker, fj, b, handle),
                        Err(reason) => handle(&mut unpacker, fj, Err(reason.clone())),
                    };
                    if let Err(e) = out {
                        fail(e);
                        return;
                    }
                }
            });
        }
        drop(rx);
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// [`fetch_sealed_frames`] for a repository in a local directory: no fetch thread, no
/// runtime, no buffer per read. Each worker takes the next frame, reads it with one `pread`
/// straight into its own reused buffer and handles it. Frames are still taken in pack and
/// offset order, so the reads stay sequential. The same damage is named the same way: a pack
/// that does not exist is "pack is missing", one shorter than its frames is "pack truncated";
/// any other error reading a pack (permissions, I/O) stops the call.
#[allow(clippy::too_many_arguments)]
fn fetch_local<F>(
    root: &std::path::Path,
    crypto: &Crypto,
    packs: &[String],
    frames: &[FrameJob],
    threads: usize,
    seals: Seals,
    cancel: Option<&AtomicBool>,
    handle: F,
) -> Result<()>
where
    F: Fn(&mut Unpacker, &FrameJob, std::result::Result<&[u8], String>) -> Result<()> + Sync,
{
    use std::os::unix::fs::FileExt;
    use std::sync::atomic::AtomicUsize;

    let path_of = |pack: u32| root.join(format::pack_key(&packs[pack as usize]));
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<RepoError>> = Mutex::new(None);
    let stop = AtomicBool::new(false);
    let fail = |e: RepoError| {
        let mut fe = first_error.lock().unwrap();
        if fe.is_none() {
            *fe = Some(e);
        }
        stop.store(true, Ordering::Relaxed);
    };
    // Reads one frame into `buf`: `Ok(Ok(()))`, `Ok(Err(reason))` for damage, `Err` for a
    // failure of the filesystem itself.
    // Each worker keeps the pack it is reading open (frames come in pack order), so a
    // restore holds at most one descriptor per worker however many packs it reads.
    let read = |fj: &FrameJob,
                open: &mut Option<(u32, std::io::Result<std::fs::File>)>,
                buf: &mut Vec<u8>|
     -> Result<std::result::Result<(), String>> {
        if open.as_ref().is_none_or(|(p, _)| *p != fj.pack) {
            *open = None;
            *open = Some((fj.pack, std::fs::File::open(path_of(fj.pack))));
        }
        let file = match &open.as_ref().expect("just opened").1 {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Err("pack is missing".to_string()));
            }
            Err(e) => {
                return Err(RepoError::io(
                    path_of(fj.pack),
                    std::io::Error::new(e.kind(), e.to_string()),
                ));
            }
        };
        let len = fj.stored_len as usize;
        if buf.len() < len {
            buf.resize(len, 0);
        }
        let end = fj.offset + u64::from(fj.stored_len);
        let mut got = 0;
        while got < len {
            match file.read_at(&mut buf[got..len], fj.offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RepoError::io(path_of(fj.pack), e)),
            }
        }
        if got < len {
            let size = file
                .metadata()
                .map_err(|e| RepoError::io(path_of(fj.pack), e))?
                .len();
            return Ok(Err(format!(
                "pack truncated: {size} bytes, its frames need {end}"
            )));
        }
        Ok(Ok(()))
    };
    std::thread::scope(|s| {
        for _ in 0..threads {
            let (handle, read, fail, next, stop) = (&handle, &read, &fail, &next, &stop);
            s.spawn(move || {
                let mut unpacker = match Unpacker::new() {
                    Ok(u) => u,
                    Err(e) => {
                        fail(e);
                        return;
                    }
                };
                let mut buf: Vec<u8> = Vec::new();
                let mut open = None;
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                        fail(RepoError::Cancelled);
                        break;
                    }
                    let f = next.fetch_add(1, Ordering::Relaxed);
                    let Some(fj) = frames.get(f) else { break };
                    let out = match read(fj, &mut open, &mut buf) {
                        Ok(Ok(())) => open_frame(
                            crypto,
                            seals,
                            &mut unpacker,
                            fj,
                            &buf[..fj.stored_len as usize],
                            handle,
                        ),
                        Ok(Err(reason)) => handle(&mut unpacker, fj, Err(reason)),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = out {
                        fail(e);
                        return;
                    }
                }
            });
        }
    });
    match first_error.into_inner().unwrap() {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Why a range read of a pack failed: `Ok(reason)` when the pack is missing or too short (the
/// data is damaged), `Err(e)` when the store itself failed (an outage, not damage).
pub(crate) async fn classify(
    store: &Store,
    key: &str,
    end: u64,
    e: RepoError,
) -> std::result::Result<String, RepoError> {
    if let RepoError::Store(object_store::Error::NotFound { .. }) = e {
        return Ok("pack is missing".to_string());
    }
    match store.head(key).await {
        Ok(None) => Ok("pack is missing".to_string()),
        Ok(Some(m)) if m.size < end => Ok(format!(
            "pack truncated: {} bytes, its frames need {end}",
            m.size
        )),
        _ => Err(e),
    }
}
