//! In-memory engine: a `BTreeMap` per tree behind a mutex. For tests; nothing
//! survives the process, and `flush` does nothing.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{Batch, BatchOp, FlushFuture, Iter, KeyValue, MetaStore, Result, Tree, TreeEngine};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// The in-memory [`MetaStore`].
#[derive(Default)]
pub struct MemStore {
    trees: Mutex<BTreeMap<String, Arc<MemTree>>>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    /// A fresh store as the handle the Raft layer holds.
    pub fn new_arc() -> Arc<dyn MetaStore> {
        Arc::new(MemStore::new())
    }
}

/// Poisoning only means another thread panicked mid-call; every call leaves
/// the map consistent, so keep going.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MetaStore for MemStore {
    fn engine(&self) -> &'static str {
        "mem"
    }

    fn tree(&self, name: &str) -> Result<Tree> {
        let t = lock(&self.trees)
            .entry(name.to_string())
            .or_default()
            .clone();
        Ok(Tree::new(name, t))
    }

    fn tree_names(&self) -> Result<Vec<String>> {
        Ok(lock(&self.trees).keys().cloned().collect())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn flush_async(&self) -> FlushFuture {
        Box::pin(std::future::ready(Ok(())))
    }
}

#[derive(Default)]
struct MemTree {
    map: Arc<Mutex<Map>>,
}

impl TreeEngine for MemTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(lock(&self.map).get(key).cloned())
    }

    fn insert(&self, key: &[u8], value: &[u8]) -> Result<()> {
        lock(&self.map).insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn remove(&self, key: &[u8]) -> Result<bool> {
        Ok(lock(&self.map).remove(key).is_some())
    }

    fn range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> Iter {
        Iter::new(MemIter {
            map: self.map.clone(),
            lo,
            hi,
        })
    }

    fn apply_batch(&self, batch: Batch) -> Result<()> {
        let mut map = lock(&self.map);
        for op in batch.into_ops() {
            match op {
                BatchOp::Insert(k, v) => {
                    map.insert(k, v);
                }
                BatchOp::Remove(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn flush_async(&self) -> FlushFuture {
        Box::pin(std::future::ready(Ok(())))
    }
}

/// Walks the map without holding the lock between items: each step re-seeks
/// past the last key returned from that end (like sled's iterator, it sees
/// writes made while it runs).
struct MemIter {
    map: Arc<Mutex<Map>>,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
}

impl MemIter {
    fn step(&mut self, forward: bool) -> Option<Result<KeyValue>> {
        if super::range_is_empty(&self.lo, &self.hi) {
            return None;
        }
        let map = lock(&self.map);
        let mut range = map.range::<Vec<u8>, _>((self.lo.as_ref(), self.hi.as_ref()));
        let (k, v) = if forward {
            range.next()?
        } else {
            range.next_back()?
        };
        let item = (k.clone(), v.clone());
        drop(map);
        if forward {
            self.lo = Bound::Excluded(item.0.clone());
        } else {
            self.hi = Bound::Excluded(item.0.clone());
        }
        Some(Ok(item))
    }
}

impl Iterator for MemIter {
    type Item = Result<KeyValue>;
    fn next(&mut self) -> Option<Self::Item> {
        self.step(true)
    }
}

impl DoubleEndedIterator for MemIter {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.step(false)
    }
}
