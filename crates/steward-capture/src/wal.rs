//! Reading SQLite's `-wal` file and the `-shm` wal-index header directly.
//!
//! Layouts (see the comments in SQLite's `wal.c`):
//! - WAL header, 32 bytes, big-endian: magic (0x377f0682: checksums over little-endian
//!   words, 0x377f0683: big-endian words), version, page size, checkpoint sequence, salt-1,
//!   salt-2, checksum-1, checksum-2 (over the first 24 bytes).
//! - Frame = 24-byte header (page number, database size in pages after a commit — non-zero
//!   only on a commit frame —, salt-1, salt-2, cumulative checksum-1/2 over the first 8 bytes
//!   of the frame header and the page, seeded by the previous frame's checksum or the WAL
//!   header's) + the page.
//! - `-shm` starts with two copies of the 48-byte `WalIndexHdr` (native byte order: iVersion,
//!   unused, iChange, isInit, bigEndCksum, szPage, mxFrame, nPage, aFrameCksum[2], aSalt[2],
//!   aCksum[2]) then `WalCkptInfo` (nBackfill, aReadMark[5], locks, ...): 136 bytes.

use std::fs::File;
use std::os::unix::fs::FileExt;

pub const WAL_HEADER: usize = 32;
pub const FRAME_HEADER: usize = 24;
const MAGIC_LE: u32 = 0x377f0682;
const MAGIC_BE: u32 = 0x377f0683;
pub const SHM_HEADER: usize = 136;
/// The sector size SQLite's unix VFS reports (`SQLITE_DEFAULT_SECTOR_SIZE`), used to
/// recognize commit padding. Another size can only make the capture report `Lost` (too many
/// or too few commits against the change counter), never skip a commit silently: a frame is
/// only treated as padding when it is an exact copy of the commit frame just before it.
const PAD_SECTOR: u64 = 4096;

/// SQLite's `walChecksumBytes`: two running sums over pairs of 32-bit words.
pub fn checksum(big_endian: bool, data: &[u8], seed: (u32, u32)) -> (u32, u32) {
    let (mut s1, mut s2) = seed;
    for w in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (
                u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
                u32::from_be_bytes([w[4], w[5], w[6], w[7]]),
            )
        } else {
            (
                u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                u32::from_le_bytes([w[4], w[5], w[6], w[7]]),
            )
        };
        s1 = s1.wrapping_add(x0).wrapping_add(s2);
        s2 = s2.wrapping_add(x1).wrapping_add(s1);
    }
    (s1, s2)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn ne32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The wal-index header: the last committed state of the WAL as SQLite publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmHeader {
    /// Incremented by every commit (and reset to 0 by a WAL recovery). Not by a restart.
    pub change: u32,
    pub page_size: u32,
    /// Index of the last committed frame of the current WAL generation (0: empty).
    pub max_frame: u32,
    pub db_pages: u32,
    pub frame_cksum: (u32, u32),
    /// The salts of the current WAL generation, as raw bytes (salt-1, salt-2).
    pub salt: [u8; 8],
    /// Frames of this generation already copied into the database file.
    pub backfilled: u32,
}

pub enum ShmRead {
    Ok(ShmHeader),
    /// The two copies differ or the checksum fails: a writer is publishing; retry.
    Torn,
    /// Never initialized (no connection has opened the WAL yet).
    Uninit,
    /// The file is shorter than the header.
    Short,
}

/// Reads the wal-index header once: both copies must agree and carry a valid checksum.
pub fn read_shm(shm: &File, buf: &mut [u8; SHM_HEADER]) -> std::io::Result<ShmRead> {
    let n = read_full(shm, buf, 0)?;
    if n < SHM_HEADER {
        return Ok(ShmRead::Short);
    }
    let (a, b) = (&buf[0..48], &buf[48..96]);
    if a != b {
        return Ok(ShmRead::Torn);
    }
    if a[12] == 0 {
        return Ok(ShmRead::Uninit);
    }
    let c = checksum(cfg!(target_endian = "big"), &a[0..40], (0, 0));
    if c != (ne32(a, 40), ne32(a, 44)) {
        return Ok(ShmRead::Torn);
    }
    let sz = u16::from_ne_bytes([a[14], a[15]]) as u32;
    let page_size = (sz & 0xff00) | ((sz & 0x0001) << 16);
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&a[32..40]);
    Ok(ShmRead::Ok(ShmHeader {
        change: ne32(a, 8),
        page_size,
        max_frame: ne32(a, 16),
        db_pages: ne32(a, 20),
        frame_cksum: (ne32(a, 24), ne32(a, 28)),
        salt,
        backfilled: ne32(buf, 96),
    }))
}

/// Reads as much of `buf` as the file holds at `offset`; returns the bytes read.
pub fn read_full(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub big_endian: bool,
    pub page_size: u32,
    pub salt: [u8; 8],
    pub cksum: (u32, u32),
}

/// Parses the 32-byte WAL header; `None` if it is missing or invalid (magic or checksum).
pub fn parse_wal_header(h: &[u8]) -> Option<WalHeader> {
    if h.len() < WAL_HEADER {
        return None;
    }
    let magic = be32(h, 0);
    let big_endian = match magic {
        MAGIC_LE => false,
        MAGIC_BE => true,
        _ => return None,
    };
    let cksum = checksum(big_endian, &h[0..24], (0, 0));
    if cksum != (be32(h, 24), be32(h, 28)) {
        return None;
    }
    let page_size = be32(h, 8);
    if !(512..=65536).contains(&page_size) || !page_size.is_power_of_two() {
        return None;
    }
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&h[16..24]);
    Some(WalHeader {
        big_endian,
        page_size,
        salt,
        cksum,
    })
}

/// One committed transaction as read from the WAL: pages sorted and unique.
pub struct RawCommit {
    pub db_pages: u32,
    pub pages: Vec<(u32, Vec<u8>)>,
}

pub enum FramesRead {
    /// Every frame in the range was valid and the range ended on a commit frame.
    Ok {
        commits: Vec<RawCommit>,
        cksum: (u32, u32),
    },
    /// A frame did not validate (salt, checksum or short file) or the range did not end on
    /// a commit: the WAL changed under us (a restart) or is damaged.
    Invalid { frame: u32, why: &'static str },
}

/// Reads frames `first..=last` (1-based) of the WAL generation `hdr`, checking salts and the
/// cumulative checksum chain from `seed` (the checksum of frame `first - 1`, or the WAL
/// header's when `first == 1`). Returns the transactions they hold, in order.
pub fn read_frames(
    wal: &File,
    hdr: &WalHeader,
    first: u32,
    last: u32,
    seed: (u32, u32),
) -> std::io::Result<FramesRead> {
    let psz = hdr.page_size as usize;
    let fsz = FRAME_HEADER + psz;
    let mut cksum = seed;
    let mut commits = Vec::new();
    let mut txn: std::collections::BTreeMap<u32, Vec<u8>> = std::collections::BTreeMap::new();
    const BATCH: u32 = 64;
    let mut buf = vec![0u8; fsz * BATCH as usize];
    // Padding (synchronous=FULL without powersafe overwrite): SQLite repeats the commit frame,
    // commit mark included, until the next sector boundary. Those copies are not commits.
    let mut last_commit: Vec<u8> = Vec::new();
    let mut pad_until: Option<u64> = None;
    let mut frame = first;
    while frame <= last {
        let n = (last - frame + 1).min(BATCH);
        let want = fsz * n as usize;
        let off = WAL_HEADER as u64 + (frame as u64 - 1) * fsz as u64;
        let got = read_full(wal, &mut buf[..want], off)?;
        for i in 0..n {
            let f = &buf[i as usize * fsz..(i as usize + 1) * fsz];
            let no = frame + i;
            if (i as usize + 1) * fsz > got {
                return Ok(FramesRead::Invalid {
                    frame: no,
                    why: "the WAL file ends before it",
                });
            }
            if f[8..16] != hdr.salt {
                return Ok(FramesRead::Invalid {
                    frame: no,
                    why: "its salts are not the WAL header's",
                });
            }
            let c = checksum(hdr.big_endian, &f[0..8], cksum);
            let c = checksum(hdr.big_endian, &f[FRAME_HEADER..], c);
            if c != (be32(f, 16), be32(f, 20)) {
                return Ok(FramesRead::Invalid {
                    frame: no,
                    why: "its checksum does not match",
                });
            }
            cksum = c;
            let off = WAL_HEADER as u64 + (no as u64 - 1) * fsz as u64;
            if let Some(end) = pad_until {
                if off < end
                    && f[0..8] == last_commit[0..8]
                    && f[FRAME_HEADER..] == last_commit[8..]
                {
                    continue;
                }
                pad_until = None;
            }
            let pgno = be32(f, 0);
            if pgno == 0 {
                return Ok(FramesRead::Invalid {
                    frame: no,
                    why: "it names page 0",
                });
            }
            txn.insert(pgno, f[FRAME_HEADER..].to_vec());
            let db_pages = be32(f, 4);
            if db_pages != 0 {
                let end = off + fsz as u64;
                pad_until = (!end.is_multiple_of(PAD_SECTOR))
                    .then(|| end.div_ceil(PAD_SECTOR) * PAD_SECTOR);
                last_commit.clear();
                last_commit.extend_from_slice(&f[0..8]);
                last_commit.extend_from_slice(&f[FRAME_HEADER..]);
                // Pages beyond the new end (spilled earlier in a shrinking transaction) are
                // not part of the database after the commit.
                let pages = std::mem::take(&mut txn)
                    .into_iter()
                    .filter(|(p, _)| *p <= db_pages)
                    .collect();
                commits.push(RawCommit { db_pages, pages });
            }
        }
        frame += n;
    }
    if !txn.is_empty() {
        return Ok(FramesRead::Invalid {
            frame: last,
            why: "it is not a commit frame",
        });
    }
    Ok(FramesRead::Ok { commits, cksum })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_sqlite_definition() {
        // s1 += x0 + s2; s2 += x1 + s1, over little-endian words.
        let data = [1u8, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4, 0, 0, 0];
        let (s1, s2) = checksum(false, &data, (0, 0));
        // pair 1: s1 = 1, s2 = 2 + 1 = 3; pair 2: s1 = 1 + 3 + 3 = 7, s2 = 3 + 4 + 7 = 14
        assert_eq!((s1, s2), (7, 14));
        let be = [0u8, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4];
        assert_eq!(checksum(true, &be, (0, 0)), (7, 14));
    }

    #[test]
    fn wal_header_rejects_bad_magic_and_checksum() {
        let mut h = [0u8; 32];
        h[0..4].copy_from_slice(&MAGIC_LE.to_be_bytes());
        h[4..8].copy_from_slice(&3007000u32.to_be_bytes());
        h[8..12].copy_from_slice(&4096u32.to_be_bytes());
        h[16..24].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        let c = checksum(false, &h[0..24], (0, 0));
        h[24..28].copy_from_slice(&c.0.to_be_bytes());
        h[28..32].copy_from_slice(&c.1.to_be_bytes());
        let p = parse_wal_header(&h).unwrap();
        assert_eq!(p.page_size, 4096);
        assert!(!p.big_endian);
        let mut bad = h;
        bad[31] ^= 1;
        assert!(parse_wal_header(&bad).is_none());
        let mut bad = h;
        bad[0] = 0;
        assert!(parse_wal_header(&bad).is_none());
    }
}
