//! The copies of one chunk that the leader knows of: server id → copy.
//!
//! A leader keeps one of these per chunk, and the replication loop reads
//! every one of them each pass. Most chunks have one to three copies, so
//! they are kept inline, sorted by server id, in the chunk's entry of the
//! copy table: no allocation of their own (a tree map took one node of
//! about 200 bytes per chunk), and one memory access fewer per chunk in a
//! pass.

use std::ops::Index;

use smallvec::SmallVec;

use super::state::CopyInfo;

/// The copies of one chunk, by server id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Holders(SmallVec<[(u64, CopyInfo); 3]>);

impl Holders {
    fn find(&self, server: u64) -> Result<usize, usize> {
        self.0.binary_search_by_key(&server, |h| h.0)
    }

    /// Sets the copy on `server`; returns the one it replaced.
    pub fn insert(&mut self, server: u64, copy: CopyInfo) -> Option<CopyInfo> {
        match self.find(server) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, copy)),
            Err(i) => {
                self.0.insert(i, (server, copy));
                None
            }
        }
    }

    pub fn get(&self, server: &u64) -> Option<&CopyInfo> {
        self.find(*server).ok().map(|i| &self.0[i].1)
    }

    pub fn contains_key(&self, server: &u64) -> bool {
        self.find(*server).is_ok()
    }

    pub fn remove(&mut self, server: &u64) -> Option<CopyInfo> {
        self.find(*server).ok().map(|i| self.0.remove(i).1)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// (server, copy), in server id order.
    pub fn iter(&self) -> Iter<'_> {
        self.0.iter().map(|(s, c)| (s, c))
    }

    pub fn keys(&self) -> impl Iterator<Item = &u64> + '_ {
        self.0.iter().map(|(s, _)| s)
    }

    pub fn values(&self) -> impl Iterator<Item = &CopyInfo> + '_ {
        self.0.iter().map(|(_, c)| c)
    }
}

type Iter<'a> = std::iter::Map<
    std::slice::Iter<'a, (u64, CopyInfo)>,
    fn(&'a (u64, CopyInfo)) -> (&'a u64, &'a CopyInfo),
>;

impl<'a> IntoIterator for &'a Holders {
    type Item = (&'a u64, &'a CopyInfo);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl Index<&u64> for Holders {
    type Output = CopyInfo;

    /// Panics when `server` holds no copy (tests only).
    fn index(&self, server: &u64) -> &CopyInfo {
        match self.get(server) {
            Some(c) => c,
            None => panic!("no copy on server {server}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Random inserts and removes agree with a tree map.
    #[test]
    fn holders_agree_with_a_map() {
        let mut h = Holders::default();
        let mut model = BTreeMap::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..10_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let server = x % 7;
            let copy = CopyInfo {
                version: step,
                marked: x & 8 == 0,
            };
            if x & 1 == 0 {
                assert_eq!(h.insert(server, copy), model.insert(server, copy));
            } else {
                assert_eq!(h.remove(&server), model.remove(&server));
            }
            assert_eq!(h.get(&server), model.get(&server));
            assert_eq!(h.len(), model.len());
            assert!(h.iter().eq(model.iter()), "step {step}");
        }
    }
}
