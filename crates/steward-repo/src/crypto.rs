//! Keys, chunk ids and sealing: the only place that knows how bytes are authenticated.
//!
//! A plain repository names chunks by `blake3(content)` and seals objects with a 16-byte
//! blake3 tag (so a flipped byte is always detected). An encrypted repository names chunks by
//! `blake3::keyed_hash(id_key, content)` (ids do not leak content) and seals with
//! XChaCha20-Poly1305 under a random 24-byte nonce. Sub-keys are derived from the 32-byte master
//! key with `blake3::derive_key`, one context string each.

use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::error::{RepoError, Result};

const CTX_ID: &str = "steward-repo v1 chunk id";
const CTX_ENC: &str = "steward-repo v1 encryption";
const CTX_CHECK: &str = "steward-repo v1 key check";
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;

/// A 32-byte master key for an encrypted repository.
#[derive(Clone)]
pub struct Key([u8; 32]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

impl Key {
    /// A key from raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| RepoError::Invalid(format!("no randomness: {e}")))?;
        Ok(Key(k))
    }

    /// Reads a key file: exactly 32 raw bytes, or 64 hex digits (surrounding whitespace allowed).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| RepoError::InvalidKey {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        if bytes.len() == 32 {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes);
            return Ok(Key(k));
        }
        let text = std::str::from_utf8(&bytes).unwrap_or("").trim();
        let mut k = [0u8; 32];
        match hex::decode_to_slice(text, &mut k) {
            Ok(()) => Ok(Key(k)),
            Err(_) => Err(RepoError::InvalidKey {
                path: path.to_owned(),
                reason: format!(
                    "expected 32 raw bytes or 64 hex digits, found {} bytes",
                    bytes.len()
                ),
            }),
        }
    }

    /// The key as 64 hex digits (what `from_file` accepts).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub(crate) fn check_value(&self) -> String {
        hex::encode(&blake3::derive_key(CTX_CHECK, &self.0)[..16])
    }
}

/// A chunk's address: 32 bytes of (possibly keyed) blake3.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ChunkId(pub [u8; 32]);

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ChunkId({})", &hex::encode(&self.0[..8]))
    }
}

impl ChunkId {
    /// Top bits used to split the id space into partitions.
    pub(crate) fn prefix_u32(&self) -> u32 {
        u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]])
    }
}

/// What a repository uses to name and seal data.
pub(crate) struct Crypto {
    id_key: Option<[u8; 32]>,
    cipher: Option<XChaCha20Poly1305>,
}

impl Crypto {
    pub fn plain() -> Self {
        Crypto {
            id_key: None,
            cipher: None,
        }
    }

    pub fn encrypted(key: &Key) -> Self {
        let enc = blake3::derive_key(CTX_ENC, &key.0);
        Crypto {
            id_key: Some(blake3::derive_key(CTX_ID, &key.0)),
            cipher: Some(XChaCha20Poly1305::new_from_slice(&enc).expect("32-byte key")),
        }
    }

    pub fn is_encrypted(&self) -> bool {
        self.cipher.is_some()
    }

    pub fn chunk_id(&self, data: &[u8]) -> ChunkId {
        match &self.id_key {
            Some(k) => ChunkId(*blake3::keyed_hash(k, data).as_bytes()),
            None => ChunkId(*blake3::hash(data).as_bytes()),
        }
    }

    /// Seals `plain` for storage. `domain` binds the bytes to their role (frame, index, ...).
    pub fn seal(&self, domain: &[u8], mut plain: Vec<u8>) -> Result<Vec<u8>> {
        match &self.cipher {
            None => {
                let tag = plain_tag(domain, &plain);
                plain.extend_from_slice(&tag);
                Ok(plain)
            }
            Some(c) => {
                let mut nonce = [0u8; NONCE_LEN];
                getrandom::fill(&mut nonce)
                    .map_err(|e| RepoError::Invalid(format!("no randomness: {e}")))?;
                let ct = c
                    .encrypt(
                        XNonce::from_slice(&nonce),
                        Payload {
                            msg: &plain,
                            aad: domain,
                        },
                    )
                    .map_err(|_| RepoError::Invalid("encryption failed".into()))?;
                let mut out = Vec::with_capacity(NONCE_LEN + ct.len());
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ct);
                Ok(out)
            }
        }
    }

    /// Opens sealed bytes; `Err(reason)` when they were altered (or sealed with another key).
    pub fn open(&self, domain: &[u8], sealed: &[u8]) -> std::result::Result<Vec<u8>, String> {
        self.open_ref(domain, sealed)
            .map(std::borrow::Cow::into_owned)
    }

    /// The body of sealed bytes without checking a plain repository's checksum (encrypted
    /// bytes are still authenticated: decrypting checks them). Only for callers that check
    /// everything they derive from the body against another hash, as a restore does with the
    /// whole-file hash, and that call [`Crypto::open_ref`] to name the damage when that check
    /// fails.
    pub fn body_ref<'a>(
        &self,
        domain: &[u8],
        sealed: &'a [u8],
    ) -> std::result::Result<std::borrow::Cow<'a, [u8]>, String> {
        match &self.cipher {
            None if sealed.len() < TAG_LEN => Err("shorter than its checksum".into()),
            None => Ok(std::borrow::Cow::Borrowed(
                &sealed[..sealed.len() - TAG_LEN],
            )),
            Some(_) => self.open_ref(domain, sealed),
        }
    }

    /// Like [`Crypto::open`], without copying in plain repositories.
    pub fn open_ref<'a>(
        &self,
        domain: &[u8],
        sealed: &'a [u8],
    ) -> std::result::Result<std::borrow::Cow<'a, [u8]>, String> {
        match &self.cipher {
            None => {
                if sealed.len() < TAG_LEN {
                    return Err("shorter than its checksum".into());
                }
                let (body, tag) = sealed.split_at(sealed.len() - TAG_LEN);
                if plain_tag(domain, body) != tag {
                    return Err("checksum mismatch".into());
                }
                Ok(std::borrow::Cow::Borrowed(body))
            }
            Some(c) => {
                if sealed.len() < NONCE_LEN + TAG_LEN {
                    return Err("shorter than nonce and tag".into());
                }
                let (nonce, ct) = sealed.split_at(NONCE_LEN);
                c.decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: ct,
                        aad: domain,
                    },
                )
                .map(std::borrow::Cow::Owned)
                .map_err(|_| "authentication failed (altered data or another key)".to_string())
            }
        }
    }
}

fn plain_tag(domain: &[u8], body: &[u8]) -> [u8; TAG_LEN] {
    let mut h = blake3::Hasher::new();
    h.update(&(domain.len() as u64).to_le_bytes());
    h.update(domain);
    h.update(body);
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&h.finalize().as_bytes()[..TAG_LEN]);
    tag
}
