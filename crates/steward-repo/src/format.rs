//! The on-disk format, version 1: object names, the config object, manifests, chunk lists,
//! pack indexes and pack framing. `docs/repository-format.md` describes the same thing for
//! people; a change here that old readers cannot read must bump [`FORMAT_VERSION`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crypto::{ChunkId, Crypto};
use crate::error::{RepoError, Result};

/// The repository format this build writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// A chunk holds this many bytes of whole pages: `max(1, 8192 / page_size)` pages.
pub const CHUNK_TARGET_BYTES: u32 = 8192;
/// New chunks are compressed together in frames of at least this many raw bytes (the last
/// frame of each worker may be smaller).
pub const FRAME_TARGET_BYTES: usize = 256 * 1024;
/// Frames are appended to a pack until it reaches about this size.
pub const PACK_TARGET_BYTES: usize = 16 * 1024 * 1024;

pub(crate) const CONFIG_KEY: &str = "config";
pub(crate) const PACK_MAGIC: &[u8; 8] = b"STWDPAK1";
const INDEX_MAGIC: &[u8; 8] = b"STWDIDX1";
const CHUNKS_MAGIC: &[u8; 8] = b"STWDCHK1";

pub(crate) const DOMAIN_FRAME: &[u8] = b"steward-repo frame";
pub(crate) const DOMAIN_INDEX: &[u8] = b"steward-repo index";
pub(crate) const DOMAIN_MANIFEST: &[u8] = b"steward-repo manifest";
pub(crate) const DOMAIN_CHUNKS: &[u8] = b"steward-repo chunk list";
pub(crate) const DOMAIN_PROOF: &[u8] = b"steward-repo proof";
pub(crate) const DOMAIN_SEGMENT: &[u8] = b"steward-repo segment";
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"STWDSEG1";
/// The segment object version this build writes and the newest it reads.
pub const SEGMENT_VERSION: u32 = 1;

pub(crate) fn pack_key(pack: &str) -> String {
    format!("data/{}/{}", &pack[..2], pack)
}
pub(crate) fn index_key(pack: &str) -> String {
    format!("index/{pack}")
}
pub(crate) fn condemned_key(pack: &str) -> String {
    format!("condemned/{pack}")
}
pub(crate) fn manifest_key(id: &str) -> String {
    format!("backups/{id}")
}
pub(crate) fn chunks_key(id: &str) -> String {
    format!("backups/{id}.chunks")
}
/// `segments/<base>/<seq>`, the sequence number zero-padded to 20 digits so names sort by it.
pub(crate) fn segment_key(base: &str, seq: u64) -> String {
    format!("segments/{base}/{seq:020}")
}
pub(crate) fn segments_prefix(base: &str) -> String {
    format!("segments/{base}")
}
pub(crate) fn proof_key(db_hash: &str) -> String {
    format!("proofs/{db_hash}")
}

/// Pages per chunk for a page size (pinned by the format).
pub fn pages_per_chunk(page_size: u32) -> u32 {
    (CHUNK_TARGET_BYTES / page_size.max(1)).max(1)
}

/// The `config` object at the repository root (plain JSON, never encrypted).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Always `"steward-repo"`.
    pub format: String,
    /// Format version the repository was created with.
    pub version: u32,
    /// Random id of this repository.
    pub repo_id: String,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// `"none"` or `"xchacha20poly1305"`.
    pub encryption: String,
    /// For encrypted repositories: 16 bytes derived from the key, to reject a wrong key up front.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_check: Option<String>,
    /// [`CHUNK_TARGET_BYTES`] when the repository was created.
    pub chunk_target_bytes: u32,
    /// Always `"zstd"`.
    pub compression: String,
}

#[derive(Deserialize)]
struct VersionProbe {
    version: u32,
}

pub(crate) fn check_version(object: &str, json: &[u8]) -> Result<()> {
    let probe: VersionProbe = serde_json::from_slice(json)
        .map_err(|e| RepoError::corrupt(object, format!("unreadable JSON: {e}")))?;
    if probe.version > FORMAT_VERSION {
        return Err(RepoError::NewerFormat {
            object: object.to_string(),
            found: probe.version,
            supported: FORMAT_VERSION,
        });
    }
    Ok(())
}

/// What a backup is. Only `Snapshot` is written today; `WalPages` is reserved for page sets
/// captured continuously from the WAL on top of a parent snapshot (point-in-time restore).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackupKind {
    /// A complete, consistent copy of one committed state.
    Snapshot,
    /// Reserved: the pages changed since `parent`, as of one commit.
    WalPages,
}

/// One backup: the small object `backups/<id>`, written last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// Format version of this manifest.
    pub version: u32,
    /// Backup id (`YYYYMMDDTHHMMSSZ-<8 hex>`), sorts by creation time.
    pub id: String,
    /// See [`BackupKind`].
    pub kind: BackupKind,
    /// For `WalPages`: the backup this one applies on top of. `None` for snapshots.
    #[serde(default)]
    pub parent: Option<String>,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: u64,
    /// Path of the source database when it was backed up (informational).
    pub source_path: String,
    /// The database page size in bytes.
    pub page_size: u32,
    /// Number of pages in the snapshot.
    pub page_count: u64,
    /// Pages per chunk (see [`pages_per_chunk`]).
    pub pages_per_chunk: u32,
    /// Number of chunks in the chunk list; the last one may hold fewer pages.
    pub chunk_count: u64,
    /// Database size in bytes (`page_size * page_count`).
    pub db_size: u64,
    /// blake3 of all pages in page order (the whole database file), hex.
    pub db_hash: String,
    /// blake3 of the plaintext chunk list object, hex.
    pub chunk_list_hash: String,
    /// Journal mode of the source when it was read (`wal`, `delete`, ...).
    pub journal_mode: String,
    /// Caller-supplied metadata (the server keeps label, instance, kind here).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Bytes this backup added to the repository (packs and indexes, not counting metadata).
    pub added_bytes: u64,
    /// Chunks this backup stored.
    pub chunks_new: u64,
    /// Chunks this backup found already stored.
    pub chunks_reused: u64,
    /// Rows per table of the snapshot (every `sqlite_schema` entry of type `table` with a
    /// b-tree, except SQLite's own `sqlite_%` tables), counted at backup time in the same read
    /// transaction as the pages. `None` for backups made before this field existed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_counts: Option<BTreeMap<String, u64>>,
    /// When the snapshot's read transaction was known to be open (ms since the Unix epoch):
    /// the state stored is the one committed at this moment. The restorable range of a chain
    /// of segments on this backup starts here. `None` in backups made before this field
    /// existed (then [`Manifest::snapshot_time_ms`] falls back to `created_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_ms: Option<u64>,
}

impl Manifest {
    /// The moment whose committed state the snapshot holds: `snapshot_ms`, or for backups
    /// made before that field existed, `created_ms` (later than the real moment, so a range
    /// starting there never claims a moment the snapshot does not hold).
    pub fn snapshot_time_ms(&self) -> u64 {
        self.snapshot_ms.unwrap_or(self.created_ms)
    }

    pub(crate) fn encode(&self, crypto: &Crypto) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(|e| RepoError::Invalid(e.to_string()))?;
        crypto.seal(DOMAIN_MANIFEST, json)
    }

    pub(crate) fn decode(object: &str, bytes: &[u8], crypto: &Crypto) -> Result<Self> {
        let json = crypto
            .open(DOMAIN_MANIFEST, bytes)
            .map_err(|r| RepoError::corrupt(object, r))?;
        check_version(object, &json)?;
        serde_json::from_slice(&json)
            .map_err(|e| RepoError::corrupt(object, format!("unreadable manifest: {e}")))
    }
}

pub(crate) fn encode_chunk_list(ids: &[ChunkId]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + ids.len() * 32);
    out.extend_from_slice(CHUNKS_MAGIC);
    out.extend_from_slice(&(ids.len() as u64).to_le_bytes());
    for id in ids {
        out.extend_from_slice(&id.0);
    }
    out
}

pub(crate) fn decode_chunk_list(object: &str, plain: &[u8]) -> Result<Vec<ChunkId>> {
    if plain.len() < 16 || &plain[..8] != CHUNKS_MAGIC {
        return Err(RepoError::corrupt(object, "not a chunk list"));
    }
    let n = u64::from_le_bytes(plain[8..16].try_into().unwrap()) as usize;
    let body = &plain[16..];
    if body.len() != n.saturating_mul(32) {
        return Err(RepoError::corrupt(object, "chunk list length mismatch"));
    }
    Ok(body
        .chunks_exact(32)
        .map(|c| ChunkId(c.try_into().unwrap()))
        .collect())
}

/// One compressed frame inside a pack, and the chunks it holds in order.
#[derive(Debug, Clone)]
pub(crate) struct IndexFrame {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub chunks: Vec<(ChunkId, u32)>,
}

/// The index object of one pack.
#[derive(Debug, Clone)]
pub(crate) struct PackIndex {
    pub pack: String,
    pub pack_len: u64,
    pub frames: Vec<IndexFrame>,
}

impl PackIndex {
    pub fn chunk_count(&self) -> usize {
        self.frames.iter().map(|f| f.chunks.len()).sum()
    }

    pub fn encode(&self, crypto: &Crypto) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(64 + self.chunk_count() * 36 + self.frames.len() * 20);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        let pack = hex::decode(&self.pack).map_err(|e| RepoError::Invalid(e.to_string()))?;
        out.extend_from_slice(&pack);
        out.extend_from_slice(&self.pack_len.to_le_bytes());
        out.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        for f in &self.frames {
            out.extend_from_slice(&f.offset.to_le_bytes());
            out.extend_from_slice(&f.stored_len.to_le_bytes());
            out.extend_from_slice(&f.raw_len.to_le_bytes());
            out.extend_from_slice(&(f.chunks.len() as u32).to_le_bytes());
            for (id, len) in &f.chunks {
                out.extend_from_slice(&id.0);
                out.extend_from_slice(&len.to_le_bytes());
            }
        }
        crypto.seal(DOMAIN_INDEX, out)
    }

    pub fn decode(object: &str, sealed: &[u8], crypto: &Crypto) -> Result<Self> {
        struct Frames(Vec<IndexFrame>);
        impl IndexSink for Frames {
            fn frame(&mut self, f: FrameHead) {
                self.0.push(IndexFrame {
                    offset: f.offset,
                    stored_len: f.stored_len,
                    raw_len: f.raw_len,
                    chunks: Vec::with_capacity(f.chunks.min(1 << 16)),
                });
            }
            fn chunk(&mut self, id: ChunkId, len: u32) {
                if let Some(f) = self.0.last_mut() {
                    f.chunks.push((id, len));
                }
            }
        }
        let mut frames = Frames(Vec::new());
        let (pack, pack_len) = decode_index_into(object, sealed, crypto, &mut frames)?;
        Ok(PackIndex {
            pack: hex::encode(pack),
            pack_len,
            frames: frames.0,
        })
    }
}

/// A frame of a pack index, as [`decode_index_into`] hands it over (its chunks follow).
pub(crate) struct FrameHead {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    /// How many chunks follow.
    pub chunks: usize,
}

/// Where [`decode_index_into`] puts what it reads.
pub(crate) trait IndexSink {
    /// A frame begins.
    fn frame(&mut self, f: FrameHead);
    /// A chunk of the last frame: its id and length.
    fn chunk(&mut self, id: ChunkId, len: u32);
}

/// Opens and parses a sealed pack index (`object` names it in errors), handing each frame
/// and then each of its chunks to `sink`: the one parser of the format, for
/// [`PackIndex::decode`] and for the cache of indexes, which keeps them in its own form.
/// Returns the pack's name and length.
pub(crate) fn decode_index_into(
    object: &str,
    sealed: &[u8],
    crypto: &Crypto,
    sink: &mut dyn IndexSink,
) -> Result<([u8; 32], u64)> {
    let b = crypto
        .open(DOMAIN_INDEX, sealed)
        .map_err(|r| RepoError::corrupt(object, r))?;
    let mut r = Reader {
        b: &b,
        pos: 0,
        object,
    };
    if r.take(8)? != INDEX_MAGIC {
        return Err(RepoError::corrupt(object, "not a pack index"));
    }
    let version = r.u32()?;
    if version > FORMAT_VERSION {
        return Err(RepoError::NewerFormat {
            object: object.into(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let pack: [u8; 32] = r.take(32)?.try_into().expect("32 bytes");
    let pack_len = r.u64()?;
    let nframes = r.u32()? as usize;
    for _ in 0..nframes {
        let offset = r.u64()?;
        let stored_len = r.u32()?;
        let raw_len = r.u32()?;
        let n = r.u32()? as usize;
        sink.frame(FrameHead {
            offset,
            stored_len,
            raw_len,
            chunks: n,
        });
        for _ in 0..n {
            let id = ChunkId(r.take(32)?.try_into().unwrap());
            sink.chunk(id, r.u32()?);
        }
    }
    Ok((pack, pack_len))
}

pub(crate) struct Reader<'a> {
    pub b: &'a [u8],
    pub pos: usize,
    pub object: &'a str,
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.b.len() - self.pos < n {
            return Err(RepoError::corrupt(self.object, "truncated"));
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
}

/// Lock objects under `locks/`: a running backup or prune announces itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct LockInfo {
    pub kind: String,
    pub started_ms: u64,
    pub refreshed_ms: u64,
    pub pid: u32,
    /// Who took the lock (`Repository::set_lock_owner`); empty when not said.
    #[serde(default)]
    pub owner: String,
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(crate) fn random_hex(nbytes: usize) -> String {
    let mut b = vec![0u8; nbytes];
    let _ = getrandom::fill(&mut b);
    hex::encode(b)
}

/// A new backup id: UTC time then 8 random hex digits, so ids sort by creation time.
pub(crate) fn new_backup_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        random_hex(4)
    )
}
