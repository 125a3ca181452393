//! Storage engine behind our own trait.
//!
//! Shaped like Garage's db layer: a [`MetaStore`] hands out named [`Tree`]s,
//! each an ordered map from key bytes to value bytes. The Raft layer keeps its
//! vote, committed id and small metadata records here, and its log in
//! segment files of its own ([`wal`]); the engine is sled
//! ([`sled_engine`]) in production and a `BTreeMap` ([`mem_engine`]) in tests.
//! Both pass the one suite in `suite.rs`.
//!
//! Architecture invariants:
//! - The API is synchronous (except [`Tree::flush_async`]); async callers wrap
//!   calls in `tokio::task::spawn_blocking`.
//! - A write is durable only after [`Tree::flush`] (or `flush_async`) returns.
//!   Inserts, removes and batches are only ordered and atomic before that.
//! - Every value written through [`Tree::put_record`] / [`record::to_record`]
//!   carries a format version and a CRC ([`record`]), so a torn or rotten
//!   value is reported as [`StoreError::Corrupt`], never decoded as garbage.
//! - Nothing in here knows openraft; `raft/` maps its types to keys and values.

pub mod datadir;
mod error;
pub mod mem_engine;
pub mod record;
pub mod sled_engine;
pub mod snapfile;
#[cfg(test)]
mod suite;
pub mod wal;

use std::future::Future;
use std::ops::{Bound, RangeBounds};
use std::pin::Pin;
use std::sync::Arc;

pub use datadir::{DataDir, DataVersion};
pub use error::StoreError;
pub use mem_engine::MemStore;
pub use record::RecordError;
pub use sled_engine::SledStore;

/// Result of every storage call.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A key/value pair as stored.
pub type KeyValue = (Vec<u8>, Vec<u8>);

/// What [`Tree::flush_async`] returns: resolves once the data is on disk.
pub type FlushFuture = Pin<Box<dyn Future<Output = Result<()>> + Send + 'static>>;

/// A storage engine: a set of named, ordered trees.
///
/// Held as `Arc<dyn MetaStore>`; every method may block on disk I/O.
pub trait MetaStore: Send + Sync + 'static {
    /// Short engine name for logs and errors ("sled", "mem").
    fn engine(&self) -> &'static str;

    /// Opens (creating if missing) the tree `name`. Cheap to call again; the
    /// handle is cheap to clone.
    fn tree(&self, name: &str) -> Result<Tree>;

    /// Names of the trees that exist, sorted.
    fn tree_names(&self) -> Result<Vec<String>>;

    /// Returns once every write made so far, in every tree, is on disk.
    fn flush(&self) -> Result<()>;

    /// [`MetaStore::flush`] without blocking the calling async task.
    fn flush_async(&self) -> FlushFuture;
}

/// The engine side of a [`Tree`]; one impl per engine.
pub(crate) trait TreeEngine: Send + Sync + 'static {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    fn insert(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Returns whether the key was present.
    fn remove(&self, key: &[u8]) -> Result<bool>;
    /// Bounds are never an empty or inverted range (checked by [`Tree`]).
    fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> Iter;
    /// Applies all ops or none; later ops on the same key win.
    fn apply_batch(&self, batch: Batch) -> Result<()>;
    fn flush(&self) -> Result<()>;
    fn flush_async(&self) -> FlushFuture;
}

/// A named ordered map of bytes to bytes. Cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct Tree {
    name: Arc<str>,
    engine: Arc<dyn TreeEngine>,
}

impl std::fmt::Debug for Tree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tree").field("name", &self.name).finish()
    }
}

impl Tree {
    pub(crate) fn new(name: &str, engine: Arc<dyn TreeEngine>) -> Tree {
        Tree {
            name: name.into(),
            engine,
        }
    }

    /// The tree's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The value stored under `key`.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Vec<u8>>> {
        self.engine.get(key.as_ref())
    }

    /// Whether `key` has a value.
    pub fn contains_key(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Stores `value` under `key`, replacing any previous value.
    pub fn insert(&self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.engine.insert(key.as_ref(), value.as_ref())
    }

    /// Removes `key`; returns whether it was present.
    pub fn remove(&self, key: impl AsRef<[u8]>) -> Result<bool> {
        self.engine.remove(key.as_ref())
    }

    /// Entries whose keys fall in `range`, ascending by key bytes; `.rev()`
    /// walks it descending. Errors come per item.
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Iter {
        let (lo, hi) = owned_bounds(&range);
        if range_is_empty(&lo, &hi) {
            return Iter::empty();
        }
        self.engine.range(lo, hi)
    }

    /// All entries, ascending.
    pub fn iter(&self) -> Iter {
        self.engine.range(Bound::Unbounded, Bound::Unbounded)
    }

    /// Entries with key >= `start`, ascending.
    pub fn iter_from(&self, start: impl AsRef<[u8]>) -> Iter {
        self.engine
            .range(Bound::Included(start.as_ref().to_vec()), Bound::Unbounded)
    }

    /// The entry with the smallest key.
    pub fn first(&self) -> Result<Option<KeyValue>> {
        self.iter().next().transpose()
    }

    /// The entry with the largest key.
    pub fn last(&self) -> Result<Option<KeyValue>> {
        self.iter().next_back().transpose()
    }

    /// Removes every entry whose key falls in `range`, atomically (one batch);
    /// returns how many were removed. Costs one key scan of the range.
    pub fn remove_range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<usize> {
        let mut batch = Batch::new();
        for item in self.range(range) {
            let (key, _) = item?;
            batch.remove(key);
        }
        let n = batch.len();
        if n > 0 {
            self.engine.apply_batch(batch)?;
        }
        Ok(n)
    }

    /// Removes every entry, atomically.
    pub fn clear(&self) -> Result<()> {
        self.remove_range::<&[u8], _>(..).map(drop)
    }

    /// Applies all the batch's inserts and removes, or none of them.
    pub fn apply_batch(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.engine.apply_batch(batch)
    }

    /// Number of entries. O(n) on sled: use for tests and tools, not hot paths.
    pub fn len(&self) -> Result<usize> {
        let mut n = 0;
        for item in self.iter() {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Whether the tree has no entries. Cheap.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.first()?.is_none())
    }

    /// Returns once every write made so far is on disk (the whole store, not
    /// only this tree: the engines share one log).
    pub fn flush(&self) -> Result<()> {
        self.engine.flush()
    }

    /// [`Tree::flush`] for async callers; does not block the runtime thread.
    pub fn flush_async(&self) -> FlushFuture {
        self.engine.flush_async()
    }
}

fn owned_bounds<K: AsRef<[u8]>, R: RangeBounds<K>>(range: &R) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let own = |b: Bound<&K>| match b {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    };
    (own(range.start_bound()), own(range.end_bound()))
}

/// True when no key can satisfy both bounds (`BTreeMap::range` would panic).
pub(crate) fn range_is_empty(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    match (lo, hi) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a), Bound::Excluded(b)) | (Bound::Excluded(a), Bound::Included(b)) => {
            a >= b
        }
        (Bound::Excluded(a), Bound::Excluded(b)) => a >= b,
        _ => false,
    }
}

/// Ordered key/value iterator; items fail one by one (a disk error mid-scan).
pub struct Iter(Box<dyn DoubleEndedIterator<Item = Result<KeyValue>> + Send + 'static>);

impl Iter {
    pub(crate) fn new(
        inner: impl DoubleEndedIterator<Item = Result<KeyValue>> + Send + 'static,
    ) -> Iter {
        Iter(Box::new(inner))
    }

    /// An iterator that yields nothing.
    pub fn empty() -> Iter {
        Iter::new(std::iter::empty())
    }

    /// Only the keys.
    pub fn keys(self) -> impl DoubleEndedIterator<Item = Result<Vec<u8>>> + Send {
        self.map(|item| item.map(|(k, _)| k))
    }
}

impl Iterator for Iter {
    type Item = Result<KeyValue>;
    fn next(&mut self) -> Option<Self::Item> {
        self.0.next()
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back()
    }
}

/// One write in a [`Batch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchOp {
    Insert(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
}

/// Inserts and removes applied atomically to one tree by [`Tree::apply_batch`].
/// Ops apply in order: a later op on the same key wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<BatchOp>,
}

impl Batch {
    pub fn new() -> Batch {
        Batch::default()
    }

    pub fn insert(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Batch {
        self.ops.push(BatchOp::Insert(key.into(), value.into()));
        self
    }

    pub fn remove(&mut self, key: impl Into<Vec<u8>>) -> &mut Batch {
        self.ops.push(BatchOp::Remove(key.into()));
        self
    }

    /// Number of ops (not distinct keys).
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn ops(&self) -> &[BatchOp] {
        &self.ops
    }

    pub(crate) fn into_ops(self) -> Vec<BatchOp> {
        self.ops
    }
}
