//! The kernel's idea of each regular file's length, and the generation the
//! mount gives each inode.
//!
//! With the writeback cache, Linux keeps the length of a regular file it
//! has an inode for as its own and never takes the master's again (its
//! `fuse_change_attributes` trusts `i_size`): a file another client cut or
//! lengthened would keep the old length here for as long as the kernel
//! keeps the inode, and reads would stop short or run into zeros. So the
//! mount notes the length the kernel has (what it was told in an entry,
//! what this mount's writes and truncations made it), and when a lookup
//! finds the master's length different, answers with a new generation for
//! the inode: the kernel then drops its inode (made stale) and takes a new
//! one with the master's attributes, so an open after another client's
//! close sees what that client wrote (close-to-open). Only when nothing of
//! the file is open here and no write of this mount waits for its commit:
//! the old inode then holds nothing the new one lacks, and no open file of
//! it fails. (With the file open here, the length the kernel keeps stays
//! until it is closed.) A listing (readdirplus) gives the generation the
//! inode has: the kernel would not act on a new one there, and would at a
//! later lookup, when the file may be open.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use mfs_proto::v1::{Attr, FileType};

/// Lengths kept at most (the oldest are not told apart: all are dropped,
/// and lengths are noted again from the next entries).
const MAX_SIZES: usize = 1 << 20;

#[derive(Debug, Default)]
pub(crate) struct KernelSizes {
    /// The length the kernel has for each regular file it was given.
    sizes: Mutex<HashMap<u64, u64>>,
    /// The generation of each inode given a new one (0 for the others).
    /// Kept when the kernel forgets the inode: the forget may be the old
    /// inode's, with the new one still in use.
    generations: Mutex<HashMap<u64, u64>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn regular(a: &Attr) -> bool {
    a.r#type == FileType::Regular as i32
}

impl KernelSizes {
    /// The generation to answer with an entry of `a` (what the master
    /// says of the inode now): a new one when the kernel has another
    /// length for it and `may_renew()` (nothing of it open here, no write
    /// waiting). Notes `a`'s length as the kernel's.
    pub(crate) fn entry(&self, a: &Attr, may_renew: impl FnOnce() -> bool) -> u64 {
        if !regular(a) {
            return self.generation(a.inode);
        }
        let stale = {
            let mut sizes = lock(&self.sizes);
            if sizes.len() >= MAX_SIZES && !sizes.contains_key(&a.inode) {
                sizes.clear();
            }
            sizes
                .insert(a.inode, a.size)
                .is_some_and(|had| had != a.size)
        };
        let mut gens = lock(&self.generations);
        if stale && may_renew() {
            let g = gens.entry(a.inode).or_insert(0);
            *g += 1;
            tracing::debug!(
                inode = a.inode,
                size = a.size,
                generation = *g,
                "changed by another client: a new inode for the kernel"
            );
            return *g;
        }
        gens.get(&a.inode).copied().unwrap_or(0)
    }

    /// The generation of `inode` (see [`KernelSizes::entry`]).
    pub(crate) fn generation(&self, inode: u64) -> u64 {
        lock(&self.generations).get(&inode).copied().unwrap_or(0)
    }

    /// The kernel made the length of `inode` `size` itself (a truncate).
    pub(crate) fn set(&self, inode: u64, size: u64) {
        if let Some(s) = lock(&self.sizes).get_mut(&inode) {
            *s = size;
        }
    }

    /// The kernel wrote `inode` up to `end` (its length is at least that).
    pub(crate) fn grow(&self, inode: u64, end: u64) {
        if let Some(s) = lock(&self.sizes).get_mut(&inode) {
            *s = (*s).max(end);
        }
    }

    /// The kernel forgot `inode`: the next entry starts afresh.
    pub(crate) fn forget(&self, inode: u64) {
        lock(&self.sizes).remove(&inode);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(inode: u64, size: u64) -> Attr {
        Attr {
            inode,
            size,
            r#type: FileType::Regular as i32,
            ..Default::default()
        }
    }

    #[test]
    fn a_length_changed_elsewhere_gives_a_new_generation_when_nothing_is_open() {
        let k = KernelSizes::default();
        assert_eq!(k.entry(&file(5, 100), || true), 0, "first entry");
        assert_eq!(k.entry(&file(5, 100), || true), 0, "same length");
        // This mount's own writes and truncations are the kernel's.
        k.grow(5, 300);
        assert_eq!(k.entry(&file(5, 300), || true), 0);
        k.set(5, 10);
        assert_eq!(k.entry(&file(5, 10), || true), 0);
        // Another client's change: kept while the file is open here.
        assert_eq!(k.entry(&file(5, 70), || false), 0);
        assert_eq!(k.entry(&file(5, 90), || true), 1);
        assert_eq!(k.entry(&file(5, 90), || true), 1, "stays");
        // A forget does not lose the generation.
        k.forget(5);
        assert_eq!(k.entry(&file(5, 1), || true), 1);
        assert_eq!(k.generation(5), 1);
        // Directories keep theirs.
        let dir = Attr {
            inode: 6,
            size: 4096,
            r#type: FileType::Directory as i32,
            ..Default::default()
        };
        assert_eq!(k.entry(&dir, || true), 0);
    }
}
