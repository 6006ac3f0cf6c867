//! The chunk ids of the live pack indexes, kept by a [`crate::Repository`] between backups (and
//! segment writes), so that each one reads only the indexes that appeared since the last one
//! instead of every index in the repository: with one backup per instance a day, reading them
//! all made a day of backups quadratic in the number of instances.
//!
//! A backup (or segment write) calls [`IndexCache::refresh`] after it has written its lock,
//! exactly where it used to read every index. A refresh lists `index/` (names only), drops
//! the indexes it held that are no longer listed (condemned by a prune, of any process or
//! node), reads only the listed indexes it does not hold, and adds them. Afterwards the cache
//! holds exactly the indexes listed at that moment, which is what the full walk would have
//! read (an index object never changes under its name: the name is its pack's random name,
//! and prune only moves it to `condemned/` and back, with the same bytes).
//!
//! Why it is as safe as the full walk (see "Prune protocol" in `docs/repository-format.md`):
//! prune deletes a pack only after condemning it (its index leaves `index/` at time C), and
//! only when every backup whose lock it saw started after C (plus the skew margin). A backup
//! may therefore use the chunks of any index it saw in `index/` at some moment after its own
//! lock was written: that index was condemned, if ever, after the lock, and the lock keeps the
//! pack until the backup's manifest (which then keeps it live) is written. The cache is shared
//! by the backups running at the same time on one handle, and every entry a backup can see
//! was listed at its own refresh or at a later one (a later refresh of another backup), both
//! after its lock:
//! - refreshes are serialized, and each applies its listing before the next one lists, so an
//!   older listing never brings back an index a newer one dropped;
//! - entries a refresh keeps were listed by it; entries it drops disappear for every backup
//!   (a running backup then only stores those chunks again: conservative);
//! - an index this handle writes is not used at once: it waits in `written` until a refresh
//!   lists it, and only saves that refresh a read. (Used at once, it could be an index that a
//!   prune with no grace period condemned right after it was written, before the lock of a
//!   backup that started later.)
//!
//! A refresh that fails (the store cannot be reached, an index does not open) changes nothing,
//! and the backup that asked for it fails, as it did with the full walk.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::crypto::{ChunkId, Crypto};
use crate::error::Result;
use crate::format::{self, PackIndex};
use crate::read::IdMap;
use crate::store::Store;

/// What the cache of live pack indexes holds and has done (tests and measurements).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexCacheStats {
    /// Refreshes so far (each lists `index/` once).
    pub refreshes: u64,
    /// Index objects read from the store by refreshes.
    pub indexes_read: u64,
    /// Indexes this handle wrote that a refresh took from memory instead of reading them.
    pub indexes_from_own_writes: u64,
    /// Indexes dropped because they were no longer in `index/`.
    pub indexes_dropped: u64,
    /// Indexes held now.
    pub indexes: u64,
    /// Distinct chunk ids held now.
    pub chunks: u64,
}

#[derive(Default)]
struct State {
    /// Pack name → the chunk ids of its index, for every index in `index/` at the last refresh.
    packs: HashMap<String, Box<[ChunkId]>>,
    /// Chunk id → how many of `packs` hold it.
    ids: IdMap<u32>,
    /// Indexes this handle wrote since it was last taken by a refresh (pack name → chunk ids).
    written: HashMap<String, Box<[ChunkId]>>,
}

impl State {
    fn add(&mut self, pack: String, ids: Box<[ChunkId]>) {
        for id in ids.iter() {
            *self.ids.entry(*id).or_insert(0) += 1;
        }
        self.packs.insert(pack, ids);
    }

    fn remove(&mut self, pack: &str) {
        let Some(ids) = self.packs.remove(pack) else {
            return;
        };
        for id in ids.iter() {
            if let Some(n) = self.ids.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    self.ids.remove(id);
                }
            }
        }
    }
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct IndexCache {
    /// Held for a whole refresh (list, read, apply), so that refreshes apply in the order of
    /// their listings. Lookups do not take it.
    refreshing: Mutex<()>,
    state: Mutex<State>,
    refreshes: AtomicU64,
    indexes_read: AtomicU64,
    from_own: AtomicU64,
    dropped: AtomicU64,
}

/// The chunk ids of an index, in order.
pub(crate) fn index_chunk_ids(idx: &PackIndex) -> Box<[ChunkId]> {
    idx.frames
        .iter()
        .flat_map(|f| f.chunks.iter().map(|(id, _)| *id))
        .collect()
}

impl IndexCache {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the cache up to date with `index/` (see the module docs). Call it only after
    /// the caller's backup lock is written.
    pub fn refresh(&self, store: &Store, crypto: &Crypto) -> Result<()> {
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        // Taken before listing: every index in it was completely written before the listing.
        let own = std::mem::take(&mut self.state().written);
        let listed: HashSet<String> = store.list_names("index")?.into_iter().collect();
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let (gone, mut new): (Vec<String>, Vec<String>) = {
            let st = self.state();
            let gone = st
                .packs
                .keys()
                .filter(|p| !listed.contains(*p))
                .cloned()
                .collect();
            let new = listed
                .into_iter()
                .filter(|p| !st.packs.contains_key(p))
                .collect();
            (gone, new)
        };
        let mut add: Vec<(String, Box<[ChunkId]>)> = Vec::with_capacity(new.len());
        let mut own = own;
        new.retain(|p| match own.remove(p) {
            Some(ids) => {
                add.push((p.clone(), ids));
                false
            }
            None => true,
        });
        let from_own = add.len() as u64;
        let keys: Vec<String> = new.iter().map(|p| format::index_key(p)).collect();
        let mut read = 0u64;
        for batch in keys.chunks(32) {
            for (key, bytes) in store.block_on(store.get_many(batch.to_vec()))? {
                // Condemned between the listing and the read: not live.
                let Some(bytes) = bytes else { continue };
                let idx = PackIndex::decode(&key, &bytes, crypto)?;
                read += 1;
                let name = key.strip_prefix("index/").unwrap_or(&key).to_string();
                add.push((name, index_chunk_ids(&idx)));
            }
        }
        let mut st = self.state();
        for p in &gone {
            st.remove(p);
        }
        for (p, ids) in add {
            st.add(p, ids);
        }
        drop(st);
        self.indexes_read.fetch_add(read, Ordering::Relaxed);
        self.from_own.fetch_add(from_own, Ordering::Relaxed);
        self.dropped.fetch_add(gone.len() as u64, Ordering::Relaxed);
        if !gone.is_empty() {
            tracing::debug!(
                dropped = gone.len(),
                "pack indexes left index/ since the last backup"
            );
        }
        Ok(())
    }

    /// For each of `ids`, whether a live index held it at the last refresh.
    pub fn stored(&self, ids: &[ChunkId]) -> Vec<bool> {
        let st = self.state();
        ids.iter().map(|id| st.ids.contains_key(id)).collect()
    }

    /// Records an index this handle has just written (its pack and index objects are both
    /// stored): the next refresh that lists it takes its chunk ids from here.
    pub fn wrote(&self, pack: String, ids: Box<[ChunkId]>) {
        self.state().written.insert(pack, ids);
    }

    pub fn stats(&self) -> IndexCacheStats {
        let st = self.state();
        IndexCacheStats {
            refreshes: self.refreshes.load(Ordering::Relaxed),
            indexes_read: self.indexes_read.load(Ordering::Relaxed),
            indexes_from_own_writes: self.from_own.load(Ordering::Relaxed),
            indexes_dropped: self.dropped.load(Ordering::Relaxed),
            indexes: st.packs.len() as u64,
            chunks: st.ids.len() as u64,
        }
    }
}
