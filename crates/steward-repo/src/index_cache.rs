//! The pack indexes of the repository, kept by a [`crate::Repository`] between operations, so
//! that each operation reads only the indexes that appeared since the last one instead of
//! every index in the repository: with one backup per instance a day, reading them all made a
//! day of backups quadratic in the number of instances, and a restore drill of every instance
//! a day as well.
//!
//! For each index it holds what a backup needs (the chunk ids, and whether the index is live)
//! and what a restore needs to find a chunk: the pack, each frame's offset and lengths, and
//! each chunk's length in its frame. Chunk ids are held once, in the pack's own array; a hash
//! table of 16-byte entries (pack slot, position, live holders, holders) finds a chunk by id.
//! About 60 bytes per stored chunk and 300 per index in all (see [`IndexCacheStats::bytes`]
//! and `docs/repository-format.md`, "The cache of pack indexes"). The table is built when
//! something first needs it: a handle's first refresh only files the indexes, and a restore
//! that needs about every chunk held scans them as the walk did.
//!
//! # Refreshes
//!
//! A backup (or segment write) calls [`IndexCache::refresh`] with [`Scope::Live`] after it has
//! written its lock, exactly where it used to read every index. A restore, restore to a moment,
//! drill or verify of some backups calls it with [`Scope::All`] before it locates its chunks,
//! exactly where it used to read every index, live and condemned. A refresh lists `index/`
//! (names only), reads the listed indexes it does not hold, then (always with `Scope::All`;
//! with `Scope::Live` only when a live index it held has left `index/`) lists `condemned/` and,
//! with `Scope::All`, reads the condemned indexes it does not hold. Held indexes are not read
//! again: an index object never changes under its name (the name is its pack's random name,
//! and prune only moves it to `condemned/` and back with the same bytes, behind an 8-byte
//! stamp there). Afterwards:
//! - an index is *live* exactly when that listing of `index/` showed it;
//! - an index held and not live was in that listing of `condemned/` (or, when the refresh did
//!   not list `condemned/`, in the last one that did, and in no listing of `index/` since);
//! - every other index is forgotten.
//!
//! Why a restore finds what the full walk found: after a `Scope::All` refresh the cache holds
//! every index the walk, starting at the same moment, would have read: the walk listed
//! `index/` and read each object (skipping those condemned in between), then listed
//! `condemned/` and read those; the refresh lists in the same order and reads in the same
//! order, and an index it already holds has the same content as the object the walk would
//! have read. A chunk is located in a live pack when a live index holds it (the walk read live
//! indexes first), otherwise in a condemned one. What happens to a pack after that is what
//! happened after the walk: a pack deleted by a prune meanwhile fails the restore with
//! "pack is missing", as before, and a verify reports it.
//!
//! Why a backup is as safe as with the full walk (see "Prune protocol" in
//! `docs/repository-format.md`): prune deletes a pack only after condemning it (its index
//! leaves `index/` at time C), and only when every backup whose lock it saw started after C
//! (plus the skew margin). A backup may therefore use the chunks of any index it saw in
//! `index/` at some moment after its own lock was written: that index was condemned, if ever,
//! after the lock, and the lock keeps the pack until the backup's manifest (which then keeps it
//! live) is written. A backup asks only whether a *live* index holds a chunk
//! ([`IndexCache::stored`]). The cache is shared by every operation on one handle, and every
//! live entry a backup can see was listed in `index/` at its own refresh or at a later one
//! (of any scope), both after its lock:
//! - refreshes are serialized, and each applies its listing before the next one lists, so an
//!   older listing never brings back an index a newer one dropped;
//! - entries a refresh keeps live were listed by it; entries that leave `index/` stop being
//!   live for every backup (a running backup then only stores those chunks again:
//!   conservative);
//! - an index this handle writes is not used at once: it waits in `written` until a refresh
//!   lists it, and only saves that refresh a read. (Used at once, it could be an index that a
//!   prune with no grace period condemned right after it was written, before the lock of a
//!   backup that started later.)
//!
//! A refresh that fails (the store cannot be reached, an index does not open) changes nothing,
//! and the operation that asked for it fails, as it did with the full walk.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use hashbrown::HashTable;

use crate::crypto::{ChunkId, Crypto};
use crate::error::{RepoError, Result};
use crate::format::{self, FrameHead, IndexSink, PackIndex};
use crate::read::{IdSet, Located, Locator, Needed};
use crate::store::Store;

/// What the cache of pack indexes holds and has done (tests and measurements).
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexCacheStats {
    /// Refreshes so far (each lists `index/` once).
    pub refreshes: u64,
    /// Listings of `condemned/` by refreshes.
    pub condemned_listings: u64,
    /// Index objects read from `index/` by refreshes.
    pub indexes_read: u64,
    /// Index objects read from `condemned/` by refreshes.
    pub condemned_read: u64,
    /// Indexes this handle wrote that a refresh took from memory instead of reading them.
    pub indexes_from_own_writes: u64,
    /// Indexes forgotten because they were in neither `index/` nor `condemned/`.
    pub indexes_dropped: u64,
    /// Held indexes that left `index/` for `condemned/` (no longer live, still held).
    pub indexes_condemned: u64,
    /// Indexes held now (live and condemned).
    pub indexes: u64,
    /// Of those, the ones not live.
    pub condemned: u64,
    /// Distinct chunk ids held now.
    pub chunks: u64,
    /// Chunk ids held, counted once per index that holds them.
    pub chunk_entries: u64,
    /// Lookups of a restore, drill or verify answered from the cache.
    pub lookups: u64,
    /// Heap bytes the cache uses now (tables, pack entries, names), from their capacities.
    pub bytes: u64,
}

/// What a refresh lists and reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// For a backup or segment write: brings the live indexes up to date.
    Live,
    /// For a restore, drill or verify: live and condemned indexes.
    All,
}

/// One frame of a cached pack.
#[derive(Debug, Clone, Copy)]
struct FrameLoc {
    offset: u64,
    stored_len: u32,
    raw_len: u32,
    /// Position of its first chunk in the pack's `chunks`.
    first: u32,
}

/// One pack index, as the cache holds it.
#[derive(Debug)]
pub(crate) struct CachedPack {
    /// The pack's name, as its index says (64 hex digits).
    pack: [u8; 32],
    live: bool,
    frames: Box<[FrameLoc]>,
    /// Every chunk of the pack, frame after frame: its id and its length in its frame.
    chunks: Box<[(ChunkId, u32)]>,
}

impl CachedPack {
    /// What the cache keeps of `idx` (not live until a refresh says so).
    pub fn of(idx: &PackIndex) -> Result<Self> {
        let mut pack = [0u8; 32];
        hex::decode_to_slice(&idx.pack, &mut pack)
            .map_err(|_| RepoError::Invalid(format!("pack name {:?} is not 64 hex", idx.pack)))?;
        let mut frames = Vec::with_capacity(idx.frames.len());
        let mut chunks = Vec::with_capacity(idx.chunk_count());
        for f in &idx.frames {
            frames.push(FrameLoc {
                offset: f.offset,
                stored_len: f.stored_len,
                raw_len: f.raw_len,
                first: chunks.len() as u32,
            });
            chunks.extend_from_slice(&f.chunks);
        }
        Ok(CachedPack {
            pack,
            live: false,
            frames: frames.into_boxed_slice(),
            chunks: chunks.into_boxed_slice(),
        })
    }

    /// Opens and parses a sealed index object (`object` names it in errors) straight into
    /// the form the cache keeps (not live until a refresh says so).
    fn decode(object: &str, sealed: &[u8], crypto: &Crypto) -> Result<Self> {
        struct Build {
            frames: Vec<FrameLoc>,
            chunks: Vec<(ChunkId, u32)>,
        }
        impl IndexSink for Build {
            fn frame(&mut self, f: FrameHead) {
                self.frames.push(FrameLoc {
                    offset: f.offset,
                    stored_len: f.stored_len,
                    raw_len: f.raw_len,
                    first: self.chunks.len() as u32,
                });
                self.chunks.reserve(f.chunks.min(1 << 16));
            }
            fn chunk(&mut self, id: ChunkId, len: u32) {
                self.chunks.push((id, len));
            }
        }
        // 36 bytes per chunk in the object, besides its header and frame heads.
        let mut b = Build {
            frames: Vec::new(),
            chunks: Vec::with_capacity(sealed.len() / 36),
        };
        let (pack, _) = format::decode_index_into(object, sealed, crypto, &mut b)?;
        Ok(CachedPack {
            pack,
            live: false,
            frames: b.frames.into_boxed_slice(),
            chunks: b.chunks.into_boxed_slice(),
        })
    }

    fn frame_chunks(&self, frame: usize) -> &[(ChunkId, u32)] {
        let lo = self.frames[frame].first as usize;
        let hi = self
            .frames
            .get(frame + 1)
            .map_or(self.chunks.len(), |f| f.first as usize);
        &self.chunks[lo..hi]
    }

    /// The frame that holds the chunk at `pos`.
    fn frame_of(&self, pos: u32) -> usize {
        self.frames.partition_point(|f| f.first <= pos) - 1
    }

    /// Offers every frame (all, or only `which`) to `l`, then ends the pack.
    fn offer(&self, l: &mut Locator<'_>, which: Option<&[u32]>) {
        let mut offer_frame = |i: usize| {
            let f = &self.frames[i];
            l.frame(f.offset, f.stored_len, f.raw_len, self.frame_chunks(i));
        };
        match which {
            None => (0..self.frames.len()).for_each(&mut offer_frame),
            Some(w) => w.iter().for_each(|i| offer_frame(*i as usize)),
        }
        l.end_pack(|| hex::encode(self.pack));
    }

    fn heap_bytes(&self) -> usize {
        self.frames.len() * std::mem::size_of::<FrameLoc>()
            + self.chunks.len() * std::mem::size_of::<(ChunkId, u32)>()
    }
}

/// A chunk id in the table: where one index holding it is (preferably a live one), and how
/// many held indexes hold it.
#[derive(Debug, Clone, Copy)]
struct Holder {
    slot: u32,
    pos: u32,
    /// Live indexes holding it.
    live: u32,
    /// Indexes holding it (live and condemned).
    all: u32,
}

fn hash_of(id: &ChunkId) -> u64 {
    u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes"))
}

type Slots = Vec<Option<CachedPack>>;

fn pack_at(packs: &Slots, slot: u32) -> &CachedPack {
    packs[slot as usize]
        .as_ref()
        .expect("a holder names a held pack")
}

fn key_of<'a>(packs: &'a Slots, h: &Holder) -> &'a ChunkId {
    &pack_at(packs, h.slot).chunks[h.pos as usize].0
}

#[derive(Default)]
struct State {
    /// Held indexes, by slot (a free slot is `None`).
    packs: Slots,
    free: Vec<u32>,
    /// Object name (the pack's name in `index/` and `condemned/`) → slot.
    by_name: HashMap<Box<str>, u32>,
    /// Chunk id → a holder; the id itself is read from the holder's pack (not stored twice).
    table: HashTable<Holder>,
    /// Whether `table` holds the chunks of every pack. A refresh that adds more chunks than
    /// the cache held (the first one of a handle) leaves it unbuilt: a restore that needs
    /// about everything scans the packs without it, and it is built when something first
    /// needs it ([`IndexCache::indexed`]). So a process that only restores once never builds
    /// it.
    indexed: bool,
    live_packs: usize,
    chunk_entries: usize,
}

impl State {
    fn find(&self, id: &ChunkId) -> Option<&Holder> {
        let packs = &self.packs;
        self.table.find(hash_of(id), |h| key_of(packs, h) == id)
    }

    fn alloc(&mut self, name: Box<str>, pack: CachedPack) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => {
                self.packs[s as usize] = Some(pack);
                s
            }
            None => {
                self.packs.push(Some(pack));
                (self.packs.len() - 1) as u32
            }
        };
        self.by_name.insert(name, slot);
        slot
    }

    /// Adds the chunks of the pack in `slot` to the table.
    fn index_chunks(&mut self, slot: u32, dying: &HashSet<u32>) {
        let State {
            packs,
            table,
            live_packs,
            chunk_entries,
            ..
        } = self;
        let p = pack_at(packs, slot);
        if p.live {
            *live_packs += 1;
        }
        *chunk_entries += p.chunks.len();
        for (pos, (id, _)) in p.chunks.iter().enumerate() {
            let entry = table.entry(
                hash_of(id),
                |h| key_of(packs, h) == id,
                |h| hash_of(key_of(packs, h)),
            );
            match entry {
                hashbrown::hash_table::Entry::Occupied(mut e) => {
                    let h = e.get_mut();
                    h.all += 1;
                    let gone = dying.contains(&h.slot);
                    if p.live {
                        h.live += 1;
                    }
                    if gone || (p.live && !pack_at(packs, h.slot).live) {
                        h.slot = slot;
                        h.pos = pos as u32;
                    }
                }
                hashbrown::hash_table::Entry::Vacant(e) => {
                    e.insert(Holder {
                        slot,
                        pos: pos as u32,
                        live: u32::from(p.live),
                        all: 1,
                    });
                }
            }
        }
    }

    /// Makes the pack in `slot` live or not; ids whose holder must move to another live
    /// pack go to `pending`.
    fn set_live(&mut self, slot: u32, live: bool, pending: &mut Vec<ChunkId>) {
        let p = self.packs[slot as usize].as_mut().expect("held");
        if p.live == live {
            return;
        }
        p.live = live;
        if live {
            self.live_packs += 1;
        } else {
            self.live_packs -= 1;
        }
        let State { packs, table, .. } = self;
        let p = pack_at(packs, slot);
        for (pos, (id, _)) in p.chunks.iter().enumerate() {
            let Some(h) = table.find_mut(hash_of(id), |h| key_of(packs, h) == id) else {
                continue;
            };
            if live {
                h.live += 1;
                if !pack_at(packs, h.slot).live {
                    h.slot = slot;
                    h.pos = pos as u32;
                }
            } else {
                h.live -= 1;
                if h.slot == slot && h.live > 0 {
                    pending.push(*id);
                }
            }
        }
    }

    /// Takes the chunks of the pack in `slot` out of the table (the pack itself stays until
    /// [`State::free_slot`]); ids still held elsewhere whose holder it was go to `pending`.
    fn unindex_chunks(&mut self, slot: u32, pending: &mut Vec<ChunkId>) {
        let State {
            packs,
            table,
            live_packs,
            chunk_entries,
            ..
        } = self;
        let p = pack_at(packs, slot);
        if p.live {
            *live_packs -= 1;
        }
        *chunk_entries -= p.chunks.len();
        for (id, _) in p.chunks.iter() {
            let Ok(mut e) = table.find_entry(hash_of(id), |h| key_of(packs, h) == id) else {
                continue;
            };
            let h = e.get_mut();
            h.all -= 1;
            if p.live {
                h.live -= 1;
            }
            if h.all == 0 {
                e.remove();
            } else if h.slot == slot {
                pending.push(*id);
            }
        }
    }

    /// Gives the ids in `pending` whose holder is leaving (`dying`), or is not live while a
    /// live index holds them, another holder: one pass over the held packs, live ones first.
    fn resolve(&mut self, mut pending: Vec<ChunkId>, dying: &HashSet<u32>) {
        let needs = |st: &State, h: &Holder| {
            dying.contains(&h.slot) || (h.live > 0 && !pack_at(&st.packs, h.slot).live)
        };
        pending.retain(|id| self.find(id).is_some_and(|h| needs(self, h)));
        if pending.is_empty() {
            return;
        }
        let mut want: IdSet = pending.into_iter().collect();
        let State { packs, table, .. } = self;
        for pass_live in [true, false] {
            for (slot, p) in packs.iter().enumerate() {
                let Some(p) = p else { continue };
                if p.live != pass_live || dying.contains(&(slot as u32)) {
                    continue;
                }
                for (pos, (id, _)) in p.chunks.iter().enumerate() {
                    if !want.contains(id) {
                        continue;
                    }
                    let Some(h) = table.find_mut(hash_of(id), |h| key_of(packs, h) == id) else {
                        continue;
                    };
                    if pass_live || h.live == 0 {
                        h.slot = slot as u32;
                        h.pos = pos as u32;
                        want.remove(id);
                    }
                }
                if want.is_empty() {
                    return;
                }
            }
        }
        // The counts say another index holds them, yet none does: should not happen. Start
        // the table again from the packs rather than keep a holder that is leaving.
        tracing::error!(
            ids = want.len(),
            "index cache: holders not found again; rebuilding its table"
        );
        self.rebuild(dying);
    }

    /// Builds the table again from the held packs (but those in `dying`).
    fn rebuild(&mut self, dying: &HashSet<u32>) {
        // At most one entry per chunk held.
        self.table = HashTable::with_capacity(self.chunk_entries);
        self.live_packs = 0;
        self.chunk_entries = 0;
        let slots: Vec<u32> = (0..self.packs.len() as u32)
            .filter(|s| self.packs[*s as usize].is_some() && !dying.contains(s))
            .collect();
        // Live ones first, so that they are the holders.
        let (live, rest): (Vec<u32>, Vec<u32>) = slots
            .into_iter()
            .partition(|s| pack_at(&self.packs, *s).live);
        for s in live.into_iter().chain(rest) {
            self.index_chunks(s, dying);
        }
    }

    fn free_slot(&mut self, name: &str, slot: u32) {
        self.by_name.remove(name);
        self.packs[slot as usize] = None;
        self.free.push(slot);
    }

    fn apply(&mut self, plan: Plan) {
        let added: usize = plan.add.iter().map(|(_, p)| p.chunks.len()).sum();
        if self.indexed && added >= DEFER_TABLE_FROM && added > self.chunk_entries {
            self.table = HashTable::new();
            self.indexed = false;
        }
        if !self.indexed {
            self.apply_to_packs(plan);
            return;
        }
        let mut pending = Vec::new();
        for slot in &plan.to_live {
            self.set_live(*slot, true, &mut pending);
        }
        for slot in &plan.to_condemned {
            self.set_live(*slot, false, &mut pending);
        }
        let dying: HashSet<u32> = plan.drop.iter().map(|(_, s)| *s).collect();
        for (_, slot) in &plan.drop {
            self.unindex_chunks(*slot, &mut pending);
        }
        // Live ones first: they become the holders of the chunks they share.
        let mut add = plan.add;
        add.sort_by_key(|(_, p)| !p.live);
        // One growth for all of them (at most: shared chunks take no new entry).
        let more: usize = add.iter().map(|(_, p)| p.chunks.len()).sum();
        let packs = &self.packs;
        self.table.reserve(more, |h| hash_of(key_of(packs, h)));
        for (name, pack) in add {
            let slot = self.alloc(name.into_boxed_str(), pack);
            self.index_chunks(slot, &dying);
        }
        self.resolve(pending, &dying);
        for (name, slot) in &plan.drop {
            self.free_slot(name, *slot);
        }
        // After a prune forgot many indexes, give the memory back.
        if self.table.capacity() > 4 * self.table.len() + 4096 {
            let packs = &self.packs;
            self.table.shrink_to_fit(|h| hash_of(key_of(packs, h)));
        }
    }

    /// [`State::apply`] while the table is not built: only the packs change.
    fn apply_to_packs(&mut self, plan: Plan) {
        for (slots, live) in [(&plan.to_live, true), (&plan.to_condemned, false)] {
            for slot in slots {
                let p = self.packs[*slot as usize].as_mut().expect("held");
                if p.live != live {
                    p.live = live;
                    if live {
                        self.live_packs += 1;
                    } else {
                        self.live_packs -= 1;
                    }
                }
            }
        }
        for (name, slot) in &plan.drop {
            let p = pack_at(&self.packs, *slot);
            self.live_packs -= usize::from(p.live);
            self.chunk_entries -= p.chunks.len();
            self.free_slot(name, *slot);
        }
        for (name, pack) in plan.add {
            self.live_packs += usize::from(pack.live);
            self.chunk_entries += pack.chunks.len();
            self.alloc(name.into_boxed_str(), pack);
        }
    }

    fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        self.table.allocation_size()
            + self.packs.capacity() * size_of::<Option<CachedPack>>()
            + self.free.capacity() * size_of::<u32>()
            + self
                .packs
                .iter()
                .flatten()
                .map(CachedPack::heap_bytes)
                .sum::<usize>()
            + self.by_name.capacity() * (size_of::<(Box<str>, u32)>() + 1)
            + self.by_name.keys().map(|k| k.len()).sum::<usize>()
    }
}

/// What one refresh changes.
#[derive(Default)]
struct Plan {
    /// Held indexes listed in `index/` that were not live.
    to_live: Vec<u32>,
    /// Held live indexes that moved to `condemned/`.
    to_condemned: Vec<u32>,
    /// Held indexes in neither listing: (name, slot).
    drop: Vec<(String, u32)>,
    /// Indexes read (or taken from this handle's writes): name, index (with `live` set).
    add: Vec<(String, CachedPack)>,
}

/// See the module docs.
#[derive(Default)]
pub(crate) struct IndexCache {
    /// Held for a whole refresh (list, read, apply), so that refreshes apply in the order of
    /// their listings. Lookups do not take it.
    refreshing: Mutex<()>,
    state: RwLock<State>,
    /// Indexes this handle wrote since a refresh last took them (pack name → index).
    written: Mutex<HashMap<String, CachedPack>>,
    refreshes: AtomicU64,
    condemned_listings: AtomicU64,
    indexes_read: AtomicU64,
    condemned_read: AtomicU64,
    from_own: AtomicU64,
    dropped: AtomicU64,
    condemned: AtomicU64,
    lookups: AtomicU64,
}

impl IndexCache {
    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn written(&self) -> std::sync::MutexGuard<'_, HashMap<String, CachedPack>> {
        self.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Brings the cache up to date (see the module docs). A backup calls it with
    /// [`Scope::Live`] only after its lock is written.
    pub fn refresh(&self, store: &Store, crypto: &Crypto, scope: Scope) -> Result<()> {
        let _one_at_a_time = self.refreshing.lock().unwrap_or_else(|e| e.into_inner());
        // Taken before listing: every index in it was completely written before the listing.
        let mut own = std::mem::take(&mut *self.written());
        let planned = self.plan(store, crypto, scope, &mut own);
        // What is left of `own` was not listed in index/ (condemned already): a refresh that
        // needs condemned indexes reads it. Unless this refresh failed: then it is kept.
        if planned.is_err() {
            let mut w = self.written();
            for (k, v) in own {
                w.entry(k).or_insert(v);
            }
        }
        let plan = planned?;
        let (dropped, condemned) = (plan.drop.len() as u64, plan.to_condemned.len() as u64);
        self.write_state().apply(plan);
        self.dropped.fetch_add(dropped, Ordering::Relaxed);
        self.condemned.fetch_add(condemned, Ordering::Relaxed);
        if dropped + condemned > 0 {
            tracing::debug!(
                dropped,
                condemned,
                "pack indexes left index/ since the last refresh"
            );
        }
        Ok(())
    }

    /// Lists and reads what a refresh needs, and says what it changes.
    fn plan(
        &self,
        store: &Store,
        crypto: &Crypto,
        scope: Scope,
        own: &mut HashMap<String, CachedPack>,
    ) -> Result<Plan> {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        let listed: HashSet<String> = store.list_names("index")?.into_iter().collect();
        let mut plan = Plan::default();
        let mut new: Vec<String> = Vec::new();
        // Held live indexes no longer in index/: (name, slot).
        let mut left: Vec<(String, u32)> = Vec::new();
        // Held condemned indexes: (name, slot).
        let mut held_condemned: Vec<(String, u32)> = Vec::new();
        {
            let st = self.read_state();
            for name in &listed {
                match st.by_name.get(name.as_str()) {
                    Some(&slot) if !pack_at(&st.packs, slot).live => plan.to_live.push(slot),
                    Some(_) => {}
                    None => new.push(name.clone()),
                }
            }
            for (name, &slot) in &st.by_name {
                if listed.contains(&**name) {
                    continue;
                }
                if pack_at(&st.packs, slot).live {
                    left.push((name.to_string(), slot));
                } else {
                    held_condemned.push((name.to_string(), slot));
                }
            }
        }
        let from_own = self.take_own(own, &mut new, true, &mut plan.add);
        // Listed, then gone when read: condemned in between (found below, as the walk did).
        let mut vanished: HashSet<String> = HashSet::new();
        let read = read_new(
            store,
            crypto,
            "index",
            &new,
            &mut plan.add,
            &mut vanished,
            true,
        )?;
        self.indexes_read.fetch_add(read, Ordering::Relaxed);
        self.from_own.fetch_add(from_own, Ordering::Relaxed);

        if scope == Scope::Live && left.is_empty() {
            // Nothing left index/: the condemned ones held stay as they are.
            return Ok(plan);
        }
        let condemned: HashSet<String> = store.list_names("condemned")?.into_iter().collect();
        self.condemned_listings.fetch_add(1, Ordering::Relaxed);
        for (name, slot) in left {
            if condemned.contains(&name) {
                plan.to_condemned.push(slot);
            } else {
                plan.drop.push((name, slot));
            }
        }
        for (name, slot) in held_condemned {
            if !condemned.contains(&name) {
                plan.drop.push((name, slot));
            }
        }
        if scope == Scope::All {
            let st = self.read_state();
            let mut new: Vec<String> = condemned
                .iter()
                .filter(|n| !listed.contains(*n) || vanished.contains(*n))
                .filter(|n| !st.by_name.contains_key(n.as_str()))
                .cloned()
                .collect();
            drop(st);
            let from_own = self.take_own(own, &mut new, false, &mut plan.add);
            let read = read_new(
                store,
                crypto,
                "condemned",
                &new,
                &mut plan.add,
                &mut HashSet::new(),
                false,
            )?;
            self.condemned_read.fetch_add(read, Ordering::Relaxed);
            self.from_own.fetch_add(from_own, Ordering::Relaxed);
        }
        Ok(plan)
    }

    /// Moves the indexes of `new` that this handle wrote from `own` to `add` (live or not).
    fn take_own(
        &self,
        own: &mut HashMap<String, CachedPack>,
        new: &mut Vec<String>,
        live: bool,
        add: &mut Vec<(String, CachedPack)>,
    ) -> u64 {
        let before = add.len();
        new.retain(|p| match own.remove(p) {
            Some(mut pack) => {
                pack.live = live;
                add.push((p.clone(), pack));
                false
            }
            None => true,
        });
        (add.len() - before) as u64
    }

    /// The state, with its table built (built now if it is not).
    fn indexed(&self) -> std::sync::RwLockReadGuard<'_, State> {
        loop {
            let st = self.read_state();
            if st.indexed {
                return st;
            }
            drop(st);
            let mut st = self.write_state();
            if !st.indexed {
                st.rebuild(&HashSet::new());
                st.indexed = true;
            }
        }
    }

    /// For each of `ids`, whether a live index held it at the last refresh.
    pub fn stored(&self, ids: &[ChunkId]) -> Vec<bool> {
        let st = self.indexed();
        ids.iter()
            .map(|id| st.find(id).is_some_and(|h| h.live > 0))
            .collect()
    }

    /// Finds a frame for every id in `needed` among the indexes held (a live one when a live
    /// index holds the chunk), as the full walk did among the indexes it read. Call it after
    /// a [`Scope::All`] refresh.
    ///
    /// A set that records itself what was found (a restore's positions) may be scanned by
    /// up to `threads` threads when it needs about everything the cache holds.
    pub fn locate(&self, needed: &dyn Needed, threads: usize) -> Located {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        let mut l = Locator::new(needed);
        let st = self.read_state();
        if needed.count().saturating_mul(4) >= st.chunk_entries {
            // Needs about as many chunks as the cache holds: offer every pack, as the walk
            // did (sequential, no lookup per chunk in the cache), live ones first.
            let live: Vec<&CachedPack> = st.packs.iter().flatten().filter(|p| p.live).collect();
            let parts = if needed.tracks_found() && st.chunk_entries >= PARALLEL_SCAN {
                threads.clamp(1, 4)
            } else {
                1
            };
            scan(&mut l, &live, parts);
            for p in st.packs.iter().flatten().filter(|p| !p.live) {
                p.offer(&mut l, None);
            }
        } else {
            drop(st);
            let st = self.indexed();
            // (live first, slot, frame) of the holder of each needed id.
            let mut hits: Vec<(bool, u32, u32)> = Vec::with_capacity(needed.count());
            for id in needed.each() {
                if let Some(h) = st.find(id) {
                    let p = pack_at(&st.packs, h.slot);
                    hits.push((!p.live, h.slot, p.frame_of(h.pos) as u32));
                }
            }
            hits.sort_unstable();
            hits.dedup();
            let mut frames: Vec<u32> = Vec::new();
            for (i, (_, slot, frame)) in hits.iter().enumerate() {
                frames.push(*frame);
                if hits.get(i + 1).is_none_or(|n| n.1 != *slot) {
                    pack_at(&st.packs, *slot).offer(&mut l, Some(&frames));
                    frames.clear();
                }
            }
        }
        l.finish()
    }

    /// Records an index this handle has just written (its pack and index objects are both
    /// stored): the next refresh that lists it takes it from here.
    pub fn wrote(&self, pack: String, index: CachedPack) {
        self.written().insert(pack, index);
    }

    /// What the cache holds (builds its table first if it is not built, so that `chunks`
    /// and `bytes` count it).
    pub fn stats(&self) -> IndexCacheStats {
        let st = self.indexed();
        IndexCacheStats {
            refreshes: self.refreshes.load(Ordering::Relaxed),
            condemned_listings: self.condemned_listings.load(Ordering::Relaxed),
            indexes_read: self.indexes_read.load(Ordering::Relaxed),
            condemned_read: self.condemned_read.load(Ordering::Relaxed),
            indexes_from_own_writes: self.from_own.load(Ordering::Relaxed),
            indexes_dropped: self.dropped.load(Ordering::Relaxed),
            indexes_condemned: self.condemned.load(Ordering::Relaxed),
            indexes: st.by_name.len() as u64,
            condemned: (st.by_name.len() - st.live_packs) as u64,
            chunks: st.table.len() as u64,
            chunk_entries: st.chunk_entries as u64,
            lookups: self.lookups.load(Ordering::Relaxed),
            bytes: st.heap_bytes() as u64,
        }
    }
}

/// A refresh that adds at least this many chunk entries, and more than the cache held,
/// leaves the table to be built when it is needed (see [`State::indexed`]).
const DEFER_TABLE_FROM: usize = 16 * 1024;

/// Chunk entries from which a restore's scan of every pack is shared between threads.
const PARALLEL_SCAN: usize = 32 * 1024;

/// Offers `packs` to `l`, split between `parts` threads (each with its own locator of the
/// same set, merged into `l`; the set records itself what was found, so each chunk is taken
/// once).
fn scan(l: &mut Locator<'_>, packs: &[&CachedPack], parts: usize) {
    if parts <= 1 {
        for p in packs {
            p.offer(l, None);
        }
        return;
    }
    let total: usize = packs.iter().map(|p| p.chunks.len()).sum();
    let per = total.div_ceil(parts).max(1);
    let mut groups: Vec<&[&CachedPack]> = Vec::with_capacity(parts);
    let (mut start, mut acc) = (0, 0);
    for (i, p) in packs.iter().enumerate() {
        acc += p.chunks.len();
        if acc >= per * (groups.len() + 1) && groups.len() + 1 < parts {
            groups.push(&packs[start..=i]);
            start = i + 1;
        }
    }
    groups.push(&packs[start..]);
    let needed = l.needed();
    let others: Vec<Locator<'_>> = std::thread::scope(|s| {
        let handles: Vec<_> = groups[1..]
            .iter()
            .map(|g| {
                s.spawn(move || {
                    let mut o = Locator::new(needed);
                    for p in g.iter() {
                        p.offer(&mut o, None);
                    }
                    o
                })
            })
            .collect();
        for p in groups[0] {
            p.offer(l, None);
        }
        handles
            .into_iter()
            .map(|h| h.join().expect("index scan panicked"))
            .collect()
    });
    for o in others {
        l.merge(o);
    }
}

/// Reads the objects `<prefix>/<name>` for `names` (a few at a time), into `add` with `live`
/// set as given; the names of objects gone meanwhile go to `vanished`. Returns how many were
/// read.
fn read_new(
    store: &Store,
    crypto: &Crypto,
    prefix: &str,
    names: &[String],
    add: &mut Vec<(String, CachedPack)>,
    vanished: &mut HashSet<String>,
    live: bool,
) -> Result<u64> {
    let key_of = if live {
        format::index_key
    } else {
        format::condemned_key
    };
    let keys: Vec<String> = names.iter().map(|n| key_of(n)).collect();
    let mut read = 0u64;
    for batch in keys.chunks(32) {
        for (key, bytes) in store.block_on(store.get_many(batch.to_vec()))? {
            let name = key
                .strip_prefix(prefix)
                .and_then(|k| k.strip_prefix('/'))
                .unwrap_or(&key)
                .to_string();
            let Some(bytes) = bytes else {
                vanished.insert(name);
                continue;
            };
            // A condemned object is the index behind 8 bytes of condemnation time.
            let index = if live {
                &bytes[..]
            } else if bytes.len() >= 8 {
                &bytes[8..]
            } else {
                return Err(RepoError::corrupt(&key, "truncated"));
            };
            let mut pack = CachedPack::decode(&key, index, crypto)?;
            read += 1;
            pack.live = live;
            add.push((name, pack));
        }
    }
    Ok(read)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::IndexFrame;
    use std::collections::BTreeMap;

    fn id(n: u32) -> ChunkId {
        ChunkId(*blake3::hash(&n.to_le_bytes()).as_bytes())
    }

    /// A pack index named by `n`, with frames of the given chunk numbers (100 bytes each).
    fn index(n: u32, frames: &[Vec<u32>]) -> PackIndex {
        let mut name = [0u8; 32];
        name[..4].copy_from_slice(&n.to_le_bytes());
        let mut offset = 8u64;
        let frames = frames
            .iter()
            .map(|ids| {
                let f = IndexFrame {
                    offset,
                    stored_len: 50 + ids.len() as u32,
                    raw_len: 100 * ids.len() as u32,
                    chunks: ids.iter().map(|i| (id(*i), 100)).collect(),
                };
                offset += u64::from(f.stored_len);
                f
            })
            .collect();
        PackIndex {
            pack: hex::encode(name),
            pack_len: offset,
            frames,
        }
    }

    fn cached(idx: &PackIndex, live: bool) -> CachedPack {
        let mut p = CachedPack::of(idx).unwrap();
        p.live = live;
        p
    }

    /// Every count and holder agrees with the packs held.
    fn check(st: &State) {
        let mut want: BTreeMap<ChunkId, (u32, u32)> = BTreeMap::new();
        let mut live_packs = 0;
        let mut entries = 0;
        for p in st.packs.iter().flatten() {
            live_packs += usize::from(p.live);
            entries += p.chunks.len();
            for (cid, _) in p.chunks.iter() {
                let e = want.entry(*cid).or_default();
                e.0 += u32::from(p.live);
                e.1 += 1;
            }
        }
        assert_eq!(st.live_packs, live_packs);
        assert_eq!(st.chunk_entries, entries);
        assert_eq!(st.table.len(), want.len());
        assert_eq!(st.by_name.len(), st.packs.iter().flatten().count());
        for (cid, (live, all)) in want {
            let h = st.find(&cid).expect("every held chunk is in the table");
            assert_eq!((h.live, h.all), (live, all), "{cid:?}");
            assert_eq!(key_of(&st.packs, h), &cid);
            if live > 0 {
                assert!(
                    pack_at(&st.packs, h.slot).live,
                    "{cid:?}: a live holder exists"
                );
            }
        }
    }

    /// What the full walk found: the Locator over the indexes, live ones first.
    fn walk(packs: &[(PackIndex, bool)], needed: &IdSet) -> Located {
        let mut l = Locator::new(needed);
        for live in [true, false] {
            for (idx, _) in packs.iter().filter(|(_, l)| *l == live) {
                l.add(idx);
            }
        }
        l.finish()
    }

    /// (chunk id, pack, frame offset, raw offset, length) of everything located, sorted.
    fn places(l: &Located) -> Vec<(ChunkId, String, u64, u32, u32)> {
        let mut v: Vec<_> = l
            .frames
            .iter()
            .flat_map(|f| {
                f.chunks.iter().map(move |(cid, off, len)| {
                    (*cid, l.packs[f.pack as usize].clone(), f.offset, *off, *len)
                })
            })
            .collect();
        v.sort();
        v
    }

    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn holders_follow_packs_that_come_go_and_change_state() {
        let cache = IndexCache::default();
        // (index, live) of what the cache should hold, by name.
        let mut model: BTreeMap<String, (PackIndex, bool)> = BTreeMap::new();
        let mut rng = Rng(0x9e3779b97f4a7c15);
        let mut next_pack = 0u32;
        for step in 0..400 {
            let mut plan = Plan::default();
            let names: Vec<String> = model.keys().cloned().collect();
            {
                let st = cache.read_state();
                for name in &names {
                    let slot = st.by_name[name.as_str()];
                    match rng.below(8) {
                        0 => plan.drop.push((name.clone(), slot)),
                        1 if model[name].1 => plan.to_condemned.push(slot),
                        2 if !model[name].1 => plan.to_live.push(slot),
                        _ => {}
                    }
                }
            }
            for _ in 0..rng.below(4) {
                next_pack += 1;
                // Chunk numbers from a small range: packs share chunks, and a pack may hold
                // one twice.
                let frames: Vec<Vec<u32>> = (0..1 + rng.below(3))
                    .map(|_| {
                        (0..1 + rng.below(5))
                            .map(|_| rng.below(40) as u32)
                            .collect()
                    })
                    .collect();
                let idx = index(next_pack, &frames);
                let live = rng.below(3) != 0;
                plan.add.push((idx.pack.clone(), cached(&idx, live)));
                model.insert(idx.pack.clone(), (idx, live));
            }
            for (name, _) in &plan.drop {
                model.remove(name);
            }
            {
                let st = cache.read_state();
                for (name, &slot) in &st.by_name {
                    if plan.to_condemned.contains(&slot) {
                        model.get_mut(&**name).unwrap().1 = false;
                    }
                    if plan.to_live.contains(&slot) {
                        model.get_mut(&**name).unwrap().1 = true;
                    }
                }
            }
            {
                let mut st = cache.write_state();
                // Now and then the table is not built (as after a handle's first refresh):
                // the refresh changes only the packs, and the table is built when needed.
                if rng.below(6) == 0 {
                    st.table = HashTable::new();
                    st.indexed = false;
                }
                st.apply(plan);
            }
            check(&cache.indexed());

            // Lookups agree with the walk over the same indexes, by either path.
            let needed: IdSet = (0..1 + rng.below(45))
                .map(|_| id(rng.below(45) as u32))
                .collect();
            let packs: Vec<(PackIndex, bool)> = model.values().cloned().collect();
            let want = walk(&packs, &needed);
            let got = cache.locate(&needed, 1);
            let mut m1 = want.missing.clone();
            let mut m2 = got.missing.clone();
            m1.sort();
            m2.sort();
            assert_eq!(m1, m2, "step {step}: missing");
            let (pw, pg) = (places(&want), places(&got));
            assert_eq!(pw.len(), pg.len(), "step {step}");
            let live_of: BTreeMap<&str, bool> =
                model.iter().map(|(n, (_, l))| (n.as_str(), *l)).collect();
            for (w, g) in pw.iter().zip(&pg) {
                assert_eq!(w.0, g.0, "step {step}");
                // The same pack, or another holding the same chunk (any is right), but live
                // whenever the walk's is.
                if w.1 == g.1 {
                    assert_eq!(w, g, "step {step}");
                }
                assert_eq!(live_of[w.1.as_str()], live_of[g.1.as_str()], "step {step}");
                assert_eq!((w.3 % 100, w.4), (0, 100), "step {step}");
            }
            let held: Vec<bool> = cache.stored(&needed.iter().copied().collect::<Vec<_>>());
            for (cid, s) in needed.iter().zip(held) {
                let live = model.values().any(|(idx, l)| {
                    *l && idx
                        .frames
                        .iter()
                        .any(|f| f.chunks.iter().any(|(c, _)| c == cid))
                });
                assert_eq!(s, live, "step {step}: stored");
            }
        }
        assert!(next_pack > 300);
    }

    #[test]
    fn locating_a_few_chunks_looks_them_up_and_many_offers_every_pack() {
        let cache = IndexCache::default();
        let mut plan = Plan::default();
        let mut packs = Vec::new();
        for p in 0..50u32 {
            let frames: Vec<Vec<u32>> = (0..4)
                .map(|f| (0..8).map(|c| p * 100 + f * 10 + c).collect())
                .collect();
            let idx = index(p, &frames);
            plan.add.push((idx.pack.clone(), cached(&idx, true)));
            packs.push((idx, true));
        }
        cache.write_state().apply(plan);
        for needed in [
            // A few (looked up one by one), with one that is nowhere.
            [3u32, 517, 1_206, 4_937, 99_999]
                .iter()
                .map(|n| id(*n))
                .collect::<IdSet>(),
            // Most of them (every pack offered).
            (0..5_000).map(id).collect::<IdSet>(),
        ] {
            let want = walk(&packs, &needed);
            let got = cache.locate(&needed, 1);
            assert_eq!(places(&want), places(&got));
            assert_eq!(want.missing.len(), got.missing.len());
            assert!(!got.missing.is_empty());
            // Frames sorted by pack and offset, each pack named once.
            let mut seen = got.packs.clone();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), got.packs.len());
            assert!(
                got.frames
                    .windows(2)
                    .all(|w| (w[0].pack, w[0].offset) < (w[1].pack, w[1].offset))
            );
        }
    }

    #[test]
    fn an_index_object_decodes_into_the_cache_as_the_index_does() {
        let idx = index(7, &[vec![1, 2, 3], vec![4], vec![5, 6, 7, 8, 1]]);
        for crypto in [
            Crypto::plain(),
            Crypto::encrypted(&crate::Key::from_bytes([9; 32])),
        ] {
            let sealed = idx.encode(&crypto).unwrap();
            let a = CachedPack::decode("index/x", &sealed, &crypto).unwrap();
            let b =
                CachedPack::of(&PackIndex::decode("index/x", &sealed, &crypto).unwrap()).unwrap();
            assert_eq!(format!("{a:?}"), format!("{b:?}"));
            assert_eq!(a.chunks.len(), 9);
            assert_eq!(a.frames.len(), 3);
            assert_eq!(hex::encode(a.pack), idx.pack);
            // Damage is named as the index's own decoding names it.
            let mut bad = sealed.clone();
            let at = bad.len() / 2;
            bad[at] ^= 1;
            let e = CachedPack::decode("index/x", &bad, &crypto).unwrap_err();
            assert!(matches!(e, RepoError::CorruptObject { .. }), "{e}");
        }
    }

    /// A set that records itself which ids were found, as a restore's positions do.
    struct Claims(HashMap<ChunkId, (u32, std::sync::atomic::AtomicBool)>);

    impl Needed for Claims {
        fn has(&self, id: &ChunkId) -> bool {
            self.0.contains_key(id)
        }
        fn count(&self) -> usize {
            self.0.len()
        }
        fn each(&self) -> Box<dyn Iterator<Item = &ChunkId> + '_> {
            Box::new(self.0.keys())
        }
        fn tracks_found(&self) -> bool {
            true
        }
        fn claim(&self, id: &ChunkId) -> Option<u32> {
            self.0
                .get(id)
                .filter(|(_, f)| !f.swap(true, Ordering::Relaxed))
                .map(|(at, _)| *at)
        }
        fn claimed(&self, id: &ChunkId) -> bool {
            self.0
                .get(id)
                .is_some_and(|(_, f)| f.load(Ordering::Relaxed))
        }
    }

    #[test]
    fn a_scan_shared_between_threads_takes_each_chunk_once_from_a_live_pack() {
        let cache = IndexCache::default();
        let mut plan = Plan::default();
        let mut packs = Vec::new();
        // 60 live packs of 1000 chunks, every chunk also in a second live pack and in a
        // condemned one; 2000 chunks only in condemned packs.
        for p in 0..60u32 {
            let frames: Vec<Vec<u32>> = (0..1000u32)
                .collect::<Vec<_>>()
                .chunks(32)
                .map(|c| c.iter().map(|i| (p / 2) * 1000 + i).collect())
                .collect();
            let idx = index(p, &frames);
            plan.add.push((idx.pack.clone(), cached(&idx, true)));
            packs.push((idx, true));
        }
        for p in 0..32u32 {
            let frames: Vec<Vec<u32>> = vec![(p * 1000..p * 1000 + 1000).collect()];
            let idx = index(1000 + p, &frames);
            plan.add.push((idx.pack.clone(), cached(&idx, false)));
            packs.push((idx, false));
        }
        cache.write_state().apply(plan);
        assert!(cache.stats().chunk_entries as usize >= PARALLEL_SCAN);
        let wanted: Vec<u32> = (0..32_000).chain([777_777]).collect();
        for threads in [1, 2, 3] {
            let claims = Claims(
                wanted
                    .iter()
                    .enumerate()
                    .map(|(at, n)| (id(*n), (at as u32, Default::default())))
                    .collect(),
            );
            let got = cache.locate(&claims, threads);
            assert_eq!(got.missing, vec![id(777_777)], "threads {threads}");
            let live: HashSet<String> = packs
                .iter()
                .filter(|(_, l)| *l)
                .map(|(i, _)| i.pack.clone())
                .collect();
            let mut seen = HashSet::new();
            for f in &got.frames {
                assert_eq!(f.chunks.len(), f.slots.len());
                for ((cid, _, _), slot) in f.chunks.iter().zip(&f.slots) {
                    assert!(seen.insert(*cid), "threads {threads}: {cid:?} taken twice");
                    assert_eq!(claims.0[cid].0, *slot);
                    let n = wanted[*slot as usize];
                    assert_eq!(
                        live.contains(&got.packs[f.pack as usize]),
                        n < 30_000,
                        "threads {threads}: chunk {n} from a live pack exactly when one holds it"
                    );
                }
            }
            assert_eq!(seen.len(), 32_000);
            assert!(
                got.frames
                    .windows(2)
                    .all(|w| (w[0].pack, w[0].offset) < (w[1].pack, w[1].offset))
            );
        }
    }

    #[test]
    fn bytes_per_chunk() {
        let cache = IndexCache::default();
        for (packs, chunks) in [(20u32, 10_000u32), (4_000, 50)] {
            let mut plan = Plan::default();
            for p in 0..packs {
                let frames: Vec<Vec<u32>> = (0..chunks.div_ceil(32))
                    .map(|f| {
                        (f * 32..((f + 1) * 32).min(chunks))
                            .map(|c| 1_000_000 * (p + 1) + c)
                            .collect()
                    })
                    .collect();
                let idx = index(p + 10_000 * chunks, &frames);
                plan.add.push((idx.pack.clone(), cached(&idx, true)));
            }
            cache.write_state().apply(plan);
        }
        let st = cache.stats();
        assert_eq!(st.chunk_entries, 400_000);
        let per_chunk = st.bytes as f64 / st.chunk_entries as f64;
        println!(
            "{} bytes for {} chunks: {per_chunk:.1} a chunk",
            st.bytes, st.chunk_entries
        );
        assert!(per_chunk < 80.0, "{per_chunk}");
    }
}
