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
}
