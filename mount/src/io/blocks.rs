//! The block cache: 64 KiB blocks of file data read from chunkservers, so a
//! run of small reads (random 4 KiB reads, a database's pages) asks a
//! chunkserver once per block instead of once per read.
//!
//! A read smaller than a block fetches the whole block around it (the
//! chunkserver reads and checks the whole block for its CRC anyway), keeps
//! it here and answers from it while it is valid:
//! - for the chunk id and version it was read at, as the chunk's location
//!   says (asked again every
//!   [`IoOptions::location_ttl`](super::IoOptions::location_ttl)): a write
//!   lease taken by any client, a snapshot's copy-on-write, a new chunk all
//!   change them. A chunk whose location says another session holds its
//!   write lease (its data may change under the same version) is never
//!   kept nor answered from here. So another client's write shows within
//!   the location time, as a length change does;
//! - until this client writes to the block, truncates or punches the file,
//!   or opens it while nothing of it is open here (close-to-open: what
//!   others wrote is read afresh). A write of at most a block at a block's
//!   start keeps what it wrote instead (`wrote`), under the chunk version
//!   of its lease: a small file is read back from here, also after the
//!   kernel dropped its pages.
//!
//! A read in flight when one of those happens does not keep what it read
//! (each inode has an epoch, bumped by every change; a block is kept only
//! if the epoch it was fetched under is still the current one).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tonic::codegen::Bytes;

/// Bytes in a block (the chunkserver's CRC block).
pub(crate) const BLOCK: u32 = 64 << 10;

/// Inodes with an epoch, at most; past it every epoch and block goes.
const MAX_EPOCHS: usize = 1 << 16;

/// (inode, chunk index, block index in the chunk).
type Key = (u64, u32, u32);

#[derive(Debug)]
struct Block {
    chunk_id: u64,
    version: u32,
    data: Bytes,
    /// Its place in `lru`.
    tick: u64,
}

#[derive(Debug, Default)]
struct State {
    blocks: BTreeMap<Key, Block>,
    /// Least recently used first: tick -> key.
    lru: BTreeMap<u64, Key>,
    tick: u64,
    bytes: usize,
    /// Per inode: the epoch of its last change (absent: 0).
    epochs: HashMap<u64, u64>,
    /// Source of epochs.
    changes: u64,
    /// Times `epochs` was emptied (part of every epoch a read takes).
    resets: u64,
}

/// What a read takes before fetching, to give back with the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Epoch(u64, u64);

/// Which chunk of which file, as read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkAt {
    pub(crate) inode: u64,
    /// Chunk number in the file.
    pub(crate) index: u32,
    pub(crate) chunk_id: u64,
    pub(crate) version: u32,
}

impl ChunkAt {
    fn key(&self, start: u32) -> Key {
        (self.inode, self.index, start / BLOCK)
    }
}

/// The cache; `capacity` 0 turns it off.
#[derive(Debug)]
pub(crate) struct Blocks {
    state: Mutex<State>,
    capacity: usize,
}

/// The blocks of chunk `index` covering `[start, end)` of it.
fn block_range(inode: u64, index: u32, start: u32, end: u32) -> std::ops::RangeInclusive<Key> {
    let last = end.saturating_sub(1).max(start) / BLOCK;
    (inode, index, start / BLOCK)..=(inode, index, last)
}

impl State {
    fn remove(&mut self, key: &Key) {
        if let Some(b) = self.blocks.remove(key) {
            self.lru.remove(&b.tick);
            self.bytes -= b.data.len();
        }
    }

    fn remove_range(&mut self, range: std::ops::RangeInclusive<Key>) {
        let keys: Vec<Key> = self.blocks.range(range).map(|(k, _)| *k).collect();
        for k in keys {
            self.remove(&k);
        }
    }

    /// Keeps `data` as block `key` of chunk `at`, the most recently used;
    /// the least recently used go while the cache holds more than
    /// `capacity` bytes.
    fn put(&mut self, key: Key, at: ChunkAt, data: Bytes, capacity: usize) {
        self.tick += 1;
        let tick = self.tick;
        self.bytes += data.len();
        self.lru.insert(tick, key);
        self.blocks.insert(
            key,
            Block {
                chunk_id: at.chunk_id,
                version: at.version,
                data,
                tick,
            },
        );
        while self.bytes > capacity {
            let Some((_, oldest)) = self.lru.pop_first() else {
                break;
            };
            if let Some(b) = self.blocks.remove(&oldest) {
                self.bytes -= b.data.len();
            }
        }
    }

    fn bump(&mut self, inode: u64) {
        if self.epochs.len() >= MAX_EPOCHS && !self.epochs.contains_key(&inode) {
            self.epochs.clear();
            self.blocks.clear();
            self.lru.clear();
            self.bytes = 0;
            self.resets += 1;
        }
        self.changes += 1;
        self.epochs.insert(inode, self.changes);
    }

    fn epoch(&self, inode: u64) -> Epoch {
        Epoch(self.resets, self.epochs.get(&inode).copied().unwrap_or(0))
    }
}

impl Blocks {
    pub(crate) fn new(capacity: usize) -> Self {
        Blocks {
            state: Mutex::default(),
            capacity,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Bytes `[start, start + len)` of the chunk `at` if one valid block
    /// holds them all.
    pub(crate) fn get(&self, at: ChunkAt, start: u32, len: u32) -> Option<Bytes> {
        let key = at.key(start);
        let mut st = self.state();
        let b = st.blocks.get(&key)?;
        if b.chunk_id != at.chunk_id || b.version != at.version {
            st.remove(&key);
            return None;
        }
        let from = (start % BLOCK) as usize;
        let to = from + len as usize;
        if to > b.data.len() {
            return None;
        }
        let data = b.data.slice(from..to);
        let old = b.tick;
        st.tick += 1;
        let tick = st.tick;
        st.lru.remove(&old);
        st.lru.insert(tick, key);
        if let Some(b) = st.blocks.get_mut(&key) {
            b.tick = tick;
        }
        Some(data)
    }

    /// The epoch of `inode` now: take it before fetching a block.
    pub(crate) fn epoch(&self, inode: u64) -> Epoch {
        self.state().epoch(inode)
    }

    /// Keeps a block of the chunk `at` (starting at a multiple of
    /// [`BLOCK`]) fetched under `epoch`, unless the file changed since.
    pub(crate) fn insert(&self, at: ChunkAt, start: u32, data: Bytes, epoch: Epoch) {
        if data.is_empty() || data.len() > self.capacity {
            return;
        }
        let mut st = self.state();
        if st.epoch(at.inode) != epoch {
            return;
        }
        let key = at.key(start);
        st.remove(&key);
        st.put(key, at, data, self.capacity);
    }

    /// This client wrote `data` at `start` of chunk `at` (on every copy,
    /// under the lease `at` names): as [`Blocks::changing`] after the
    /// write, except that a write of at most a block at a block's start,
    /// with nothing else changed in the file since `epoch` (taken after
    /// the write's first `changing`), leaves the block holding just those
    /// bytes (reads inside them are answered here; others fetch).
    pub(crate) fn wrote(&self, at: ChunkAt, start: u32, data: Bytes, epoch: Epoch) {
        let mut st = self.state();
        let keep = st.epoch(at.inode) == epoch
            && start.is_multiple_of(BLOCK)
            && !data.is_empty()
            && data.len() <= (BLOCK as usize).min(self.capacity);
        let end = start.saturating_add(data.len() as u32);
        st.remove_range(block_range(at.inode, at.index, start, end));
        st.bump(at.inode);
        if keep {
            st.put(at.key(start), at, data, self.capacity);
        }
    }

    /// This client is about to change bytes `[start, end)` of chunk `index`.
    pub(crate) fn changing(&self, inode: u64, index: u32, start: u32, end: u32) {
        let mut st = self.state();
        st.bump(inode);
        st.remove_range(block_range(inode, index, start, end));
    }

    /// Drops every block of `inode`; reads in flight keep nothing.
    pub(crate) fn forget(&self, inode: u64) {
        let mut st = self.state();
        st.bump(inode);
        st.remove_range((inode, 0, 0)..=(inode, u32::MAX, u32::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(fill: u8, len: usize) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    fn at(inode: u64, index: u32, chunk_id: u64, version: u32) -> ChunkAt {
        ChunkAt {
            inode,
            index,
            chunk_id,
            version,
        }
    }

    /// Blocks `0..n` of chunk 0 (id 1, version 1) of `inode`, whole.
    fn fill(c: &Blocks, inode: u64, n: u32) {
        for b in 0..n {
            let data = block(b as u8, BLOCK as usize);
            c.insert(at(inode, 0, 1, 1), b * BLOCK, data, c.epoch(inode));
        }
    }

    fn blocks(capacity: usize) -> Blocks {
        Blocks::new(capacity)
    }

    #[test]
    fn a_block_answers_reads_inside_it_for_its_version_only() {
        let c = blocks(1 << 20);
        let e = c.epoch(7);
        c.insert(at(7, 0, 100, 1), 0, block(5, BLOCK as usize), e);
        assert_eq!(c.get(at(7, 0, 100, 1), 4096, 4096), Some(block(5, 4096)));
        assert_eq!(c.get(at(7, 0, 100, 1), BLOCK - 10, 10), Some(block(5, 10)));
        // Another version, another chunk id, another block: not here.
        assert_eq!(c.get(at(7, 0, 100, 2), 4096, 4096), None);
        assert_eq!(
            c.get(at(7, 0, 100, 1), 0, 16),
            None,
            "the stale version dropped it"
        );
        c.insert(at(7, 0, 100, 1), 0, block(5, BLOCK as usize), c.epoch(7));
        assert_eq!(c.get(at(7, 0, 101, 1), 0, 16), None);
        assert_eq!(c.get(at(7, 0, 100, 1), BLOCK, 16), None);
    }

    #[test]
    fn what_this_client_wrote_at_a_block_start_answers_reads_inside_it() {
        let c = blocks(1 << 20);
        // A read fetched the whole block while the write was on its way.
        let e = c.epoch(4);
        c.insert(at(4, 0, 8, 2), 0, block(1, BLOCK as usize), e);
        c.changing(4, 0, 0, 4096);
        let e = c.epoch(4);
        c.wrote(at(4, 0, 8, 2), 0, block(7, 4096), e);
        assert_eq!(c.get(at(4, 0, 8, 2), 0, 4096), Some(block(7, 4096)));
        assert_eq!(c.get(at(4, 0, 8, 2), 100, 50), Some(block(7, 50)));
        assert_eq!(
            c.get(at(4, 0, 8, 2), 0, 4097),
            None,
            "past what was written"
        );
        assert_eq!(
            c.get(at(4, 0, 8, 2), 4096, 10),
            None,
            "the old block is gone"
        );
        // A read that started before keeps nothing.
        c.insert(at(4, 0, 8, 2), 0, block(1, BLOCK as usize), e);
        assert_eq!(c.get(at(4, 0, 8, 2), 0, 4096), Some(block(7, 4096)));
        // Another change meanwhile, or not at a block start: not kept.
        let e = c.epoch(4);
        c.changing(4, 0, 0, 10);
        c.wrote(at(4, 0, 8, 2), 0, block(3, 4096), e);
        assert_eq!(c.get(at(4, 0, 8, 2), 0, 10), None);
        c.wrote(at(4, 0, 8, 2), 100, block(3, 10), c.epoch(4));
        assert_eq!(c.get(at(4, 0, 8, 2), 100, 10), None);
        // Under another version (a later lease): not answered.
        c.wrote(at(4, 0, 8, 3), 0, block(3, 4096), c.epoch(4));
        assert_eq!(c.get(at(4, 0, 8, 2), 0, 10), None);
    }

    #[test]
    fn a_short_block_does_not_answer_past_its_end() {
        let c = blocks(1 << 20);
        c.insert(at(1, 2, 9, 1), BLOCK * 3, block(1, 5000), c.epoch(1));
        assert_eq!(
            c.get(at(1, 2, 9, 1), BLOCK * 3 + 4096, 904),
            Some(block(1, 904))
        );
        assert_eq!(c.get(at(1, 2, 9, 1), BLOCK * 3 + 4096, 4096), None);
    }

    #[test]
    fn a_change_drops_the_blocks_it_touches_and_what_reads_in_flight_bring() {
        let c = blocks(1 << 20);
        fill(&c, 3, 4);
        let before = c.epoch(3);
        c.changing(3, 0, BLOCK + 100, 2 * BLOCK + 1);
        assert!(c.get(at(3, 0, 1, 1), 0, 10).is_some());
        assert!(c.get(at(3, 0, 1, 1), BLOCK, 10).is_none());
        assert!(c.get(at(3, 0, 1, 1), 2 * BLOCK, 10).is_none());
        assert!(c.get(at(3, 0, 1, 1), 3 * BLOCK, 10).is_some());
        // A read that took its epoch before the change keeps nothing.
        c.insert(at(3, 0, 1, 1), BLOCK, block(9, BLOCK as usize), before);
        assert!(c.get(at(3, 0, 1, 1), BLOCK, 10).is_none());
        c.forget(3);
        assert!(c.get(at(3, 0, 1, 1), 0, 10).is_none());
        assert!(c.get(at(3, 0, 1, 1), 3 * BLOCK, 10).is_none());
    }

    #[test]
    fn the_least_recently_used_block_goes_first() {
        let c = blocks(3 * BLOCK as usize);
        fill(&c, 1, 3);
        assert!(c.get(at(1, 0, 1, 1), 0, 1).is_some());
        c.insert(
            at(1, 0, 1, 1),
            3 * BLOCK,
            block(3, BLOCK as usize),
            c.epoch(1),
        );
        assert!(c.get(at(1, 0, 1, 1), 0, 1).is_some(), "used last: kept");
        assert!(
            c.get(at(1, 0, 1, 1), BLOCK, 1).is_none(),
            "least recently used: gone"
        );
        assert!(c.get(at(1, 0, 1, 1), 2 * BLOCK, 1).is_some());
        assert!(c.get(at(1, 0, 1, 1), 3 * BLOCK, 1).is_some());
        assert!(c.state().bytes <= 3 * BLOCK as usize);
    }
}
