//! The blake3 hash of a whole database file, computed from the chaining values of its chunks.
//!
//! blake3 is a tree over 1 KiB blocks. A chunk of `2^k` KiB at an offset that is a multiple of
//! its size is a complete subtree, so workers can hash chunks in parallel, in any order, and
//! the root is merged at the end: the result equals `blake3::hash` (or `b3sum`) of the file,
//! without a second pass over it. Chunk sizes are powers of two (page sizes are).

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, merge_subtrees_non_root, merge_subtrees_root,
};

/// Chaining value of `data` placed at `offset` in the file (`offset` a multiple of its size).
pub(crate) fn chunk_cv(data: &[u8], offset: u64) -> ChainingValue {
    let mut h = blake3::Hasher::new();
    h.set_input_offset(offset);
    h.update(data);
    h.finalize_non_root()
}

/// Root hash from the chaining values of consecutive chunks of `chunk_len` bytes (the last one
/// `last_len` bytes). `single` is the whole file when there is only one chunk (its root
/// cannot be formed from a chaining value).
pub(crate) fn root(
    cvs: &[ChainingValue],
    chunk_len: u64,
    last_len: u64,
    single: Option<&[u8]>,
) -> blake3::Hash {
    if cvs.len() <= 1 {
        return blake3::hash(single.unwrap_or(&[]));
    }
    let blocks = |len: u64| len.div_ceil(blake3::CHUNK_LEN as u64);
    let mut stack: Vec<ChainingValue> = Vec::with_capacity(64);
    let mut total = 0u64;
    for (i, cv) in cvs.iter().enumerate() {
        while stack.len() as u32 > total.count_ones() {
            let r = stack.pop().unwrap();
            let l = stack.pop().unwrap();
            stack.push(merge_subtrees_non_root(&l, &r, Mode::Hash));
        }
        stack.push(*cv);
        total += blocks(if i + 1 == cvs.len() {
            last_len
        } else {
            chunk_len
        });
    }
    while stack.len() > 2 {
        let r = stack.pop().unwrap();
        let l = stack.pop().unwrap();
        stack.push(merge_subtrees_non_root(&l, &r, Mode::Hash));
    }
    merge_subtrees_root(&stack[0], &stack[1], Mode::Hash)
}

/// A hashed piece of the file: offset, length, chaining value.
pub(crate) type Piece = (u64, u64, ChainingValue);

/// Hashes `data`, placed at `offset` in a file of `file_len` bytes, as few and large subtrees
/// as the blake3 tree allows (large inputs use all SIMD lanes), appending them to `out`.
/// `offset` must be a multiple of 1 KiB and `file_len` more than 1 KiB; `data` must end at a
/// multiple of 1 KiB or at the end of the file.
pub(crate) fn hash_run(data: &[u8], offset: u64, file_len: u64, out: &mut Vec<Piece>) {
    let end = offset + data.len() as u64;
    let mut o = offset;
    while o < end {
        let rem = end - o;
        let low = if o == 0 {
            u64::MAX
        } else {
            1u64 << o.trailing_zeros()
        };
        let len = if end == file_len && o > 0 && rem <= low {
            // The rest of the file below an aligned offset is one (possibly partial) subtree.
            rem
        } else {
            let mut s = low.min(1u64 << (63 - rem.leading_zeros()));
            if s >= file_len {
                s /= 2;
            }
            s
        };
        let lo = (o - offset) as usize;
        out.push((o, len, chunk_cv(&data[lo..lo + len as usize], o)));
        o += len;
    }
}

/// The root hash of a file of `file_len` bytes from pieces made by [`hash_run`] that cover it
/// exactly (in any order); `None` when they do not.
pub(crate) fn root_of_pieces(pieces: &mut [Piece], file_len: u64) -> Option<blake3::Hash> {
    pieces.sort_unstable_by_key(|p| p.0);
    let mut stack: Vec<(u64, u64, ChainingValue)> = Vec::with_capacity(64);
    let mut at = 0u64;
    for &(off, len, cv) in pieces.iter() {
        if off != at || len == 0 {
            return None;
        }
        at += len;
        stack.push((off, len, cv));
        while stack.len() >= 2 {
            let (r, l) = (stack[stack.len() - 1], stack[stack.len() - 2]);
            let joined = 2 * l.1;
            if l.1 == r.1 && l.0 % joined == 0 && !(l.0 == 0 && joined == file_len) {
                stack.truncate(stack.len() - 2);
                stack.push((l.0, joined, merge_subtrees_non_root(&l.2, &r.2, Mode::Hash)));
            } else {
                break;
            }
        }
    }
    if at != file_len || stack.len() < 2 {
        return None;
    }
    while stack.len() > 2 {
        let r = stack.pop().unwrap();
        let l = stack.pop().unwrap();
        stack.push((
            l.0,
            l.1 + r.1,
            merge_subtrees_non_root(&l.2, &r.2, Mode::Hash),
        ));
    }
    Some(merge_subtrees_root(&stack[0].2, &stack[1].2, Mode::Hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_blake3_of_the_whole_input() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 + i / 13) as u8).collect();
        for chunk in [1024usize, 4096, 8192, 65536] {
            for len in [
                chunk,
                chunk * 2,
                chunk * 3,
                chunk * 5 + chunk / 2,
                chunk * 7 + 1024,
                chunk * 2 + 3072,
                190_464,
            ] {
                if len > data.len() || len % 512 != 0 {
                    continue;
                }
                let input = &data[..len];
                let cvs: Vec<_> = input
                    .chunks(chunk)
                    .enumerate()
                    .map(|(i, c)| chunk_cv(c, (i * chunk) as u64))
                    .collect();
                let last = (len - (cvs.len() - 1) * chunk) as u64;
                let got = root(&cvs, chunk as u64, last, Some(input));
                assert_eq!(got, blake3::hash(input), "chunk {chunk} len {len}");
            }
        }
    }

    #[test]
    fn pieces_of_any_runs_give_the_blake3_of_the_whole_input() {
        let data: Vec<u8> = (0..(1u32 << 20) + 40_000)
            .map(|i| (i * 31 + i / 7) as u8)
            .collect();
        let chunk = 8192usize;
        for len in [
            2 * chunk,
            3 * chunk,
            64 * chunk,
            64 * chunk + 1536,
            100 * chunk + 4096,
            128 * chunk,
            data.len() / 512 * 512,
        ] {
            let input = &data[..len];
            let nchunks = len.div_ceil(chunk);
            // Runs of 1, 2, 3, ... chunks in turn, hashed in a scrambled order.
            let mut runs = Vec::new();
            let (mut c, mut k) = (0usize, 1usize);
            while c < nchunks {
                let n = k.min(nchunks - c);
                runs.push((c * chunk, ((c + n) * chunk).min(len)));
                c += n;
                k = k % 37 + 1;
            }
            runs.reverse();
            let mut pieces = Vec::new();
            for (a, b) in &runs {
                hash_run(&input[*a..*b], *a as u64, len as u64, &mut pieces);
            }
            let got = root_of_pieces(&mut pieces, len as u64).unwrap();
            assert_eq!(got, blake3::hash(input), "len {len}");
            // One run over the whole file.
            let mut pieces = Vec::new();
            hash_run(input, 0, len as u64, &mut pieces);
            assert!(pieces.len() >= 2);
            assert_eq!(
                root_of_pieces(&mut pieces, len as u64).unwrap(),
                blake3::hash(input)
            );
            // A missing piece is noticed.
            pieces.remove(pieces.len() / 2);
            assert!(root_of_pieces(&mut pieces, len as u64).is_none());
        }
    }
}
