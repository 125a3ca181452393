//! Blocks fetched for small reads go to the kernel's page cache too.
//!
//! A small read fetches the whole 64 KiB block around it (the unit a
//! chunkserver checks its CRC on: it reads the whole block anyway) and
//! keeps it in the mount's block cache (`io::blocks`, bounded by
//! `mfsreadcachesize`). The kernel asked for a page or two of it; the
//! next read of another page of the same block came back to the mount as
//! a FUSE request. Here the whole block is also stored in the kernel's
//! page cache (FUSE_NOTIFY_STORE), as its own read-ahead would: later
//! reads of the block are page cache hits. The pages follow the rules of
//! the pages the kernel read itself (kept at an open only when the file
//! did not change elsewhere: `Handles::may_keep_cache`).
//!
//! But the kernel keeps a page of a file it caches (writeback cache) until
//! the file is opened again after a change elsewhere, or until it needs
//! the memory: a reader that keeps the file open would read another
//! client's write in a page stored here only much later, where the
//! mount's own block cache shows it within its location time (3 s). So
//! every stored block is dropped from the kernel again when the location
//! it was read under goes stale (FUSE_NOTIFY_INVAL_INODE at
//! [`Fetched::until`](crate::io::Fetched)); the next read of it comes back
//! to the mount, which asks the location again.
//!
//! The kernel stores over whatever the pages hold, also pages this mount
//! has written and not sent yet (dirty in the writeback cache). So no
//! block goes while a writable handle of its file is open here or a
//! truncate runs ([`Pages::writer_in`], which also waits for a store
//! under way), nor after the file changed here since the block was asked
//! for ([`Fetched::is_current`]). An open that has the kernel drop
//! the file's pages (it changed elsewhere) holds the gate too, so no
//! block read before it lands after. The stores run on a thread of their
//! own: a store waits for pages the kernel holds locked for reads in
//! flight, which the FUSE threads answer; a FUSE thread never waits for
//! the store thread (a block that finds its queue full is dropped).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use fuser::INodeNo;

use super::convert::InodeMap;
use super::Kernel;
use crate::io::{Fetched, PageSink};

/// Blocks waiting for the store thread; more are dropped.
const QUEUE: usize = 64;
/// A block with less time than this left before its location goes stale
/// is not stored.
const MIN_LEFT: Duration = Duration::from_millis(100);

/// What may store into the kernel's page cache, and when not.
pub struct Pages {
    tx: SyncSender<Fetched>,
    state: Arc<State>,
}

struct State {
    notifier: Kernel,
    gates: Mutex<HashMap<u64, Gate>>,
    /// Signalled when a store ends.
    stored: Condvar,
}

/// One file's writers here and stores under way.
#[derive(Debug, Default)]
struct Gate {
    writers: u32,
    storing: u32,
}

impl std::fmt::Debug for Pages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let on = self.state.notifier.get().is_some();
        f.debug_struct("Pages").field("storing", &on).finish()
    }
}

impl State {
    fn gates(&self) -> MutexGuard<'_, HashMap<u64, Gate>> {
        self.gates.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `change` to `inode`'s gate; forgets the gate once it has
    /// neither writers nor stores.
    fn ease(&self, inode: u64, change: impl FnOnce(&mut Gate)) {
        let mut gates = self.gates();
        if let Some(g) = gates.get_mut(&inode) {
            change(g);
            if g.writers == 0 && g.storing == 0 {
                gates.remove(&inode);
            }
        }
    }
}

impl Pages {
    /// Starts the store thread; `map` turns master inodes into the
    /// kernel's. Nothing is stored until `kernel` holds the session's
    /// notifier.
    pub fn start(map: InodeMap, kernel: Kernel) -> std::io::Result<Arc<Pages>> {
        let (tx, rx) = sync_channel(QUEUE);
        let state = Arc::new(State {
            notifier: kernel,
            gates: Mutex::new(HashMap::new()),
            stored: Condvar::new(),
        });
        let st = state.clone();
        std::thread::Builder::new()
            .name("mfs-pages".into())
            .spawn(move || store_loop(&st, map, rx))?;
        Ok(Arc::new(Pages { tx, state }))
    }

    /// A writer of `inode` comes (a writable handle opens, a truncate
    /// starts): no store of the file from now on, and none under way
    /// when this returns.
    pub fn writer_in(&self, inode: u64) {
        let mut gates = self.state.gates();
        gates.entry(inode).or_default().writers += 1;
        while gates.get(&inode).is_some_and(|g| g.storing > 0) {
            gates = self
                .state
                .stored
                .wait(gates)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The writer of a [`Pages::writer_in`] is gone.
    pub fn writer_out(&self, inode: u64) {
        self.state
            .ease(inode, |g| g.writers = g.writers.saturating_sub(1));
    }

    /// [`Pages::writer_in`] until the guard is dropped.
    pub fn writer(&self, inode: u64) -> Writer<'_> {
        self.writer_in(inode);
        Writer { pages: self, inode }
    }

    /// The sink for `FileIo::pages_with`.
    pub fn sink(self: &Arc<Self>) -> Box<dyn PageSink> {
        Box::new(Sink(self.clone()))
    }
}

/// A writer of one file while it lives (see [`Pages::writer`]).
pub struct Writer<'a> {
    pages: &'a Pages,
    inode: u64,
}

impl Drop for Writer<'_> {
    fn drop(&mut self) {
        self.pages.writer_out(self.inode);
    }
}

struct Sink(Arc<Pages>);

impl PageSink for Sink {
    fn offer(&self, block: Fetched) {
        let st = &self.0.state;
        if st.notifier.get().is_none()
            || st.gates().get(&block.inode).is_some_and(|g| g.writers > 0)
        {
            return;
        }
        match self.0.tx.try_send(block) {
            Ok(()) | Err(TrySendError::Full(_)) => {}
            Err(TrySendError::Disconnected(_)) => {
                tracing::debug!("the page store thread is gone");
            }
        }
    }
}

/// A stored range, and when to drop it from the kernel.
type Stored = Reverse<(Instant, u64, u64, u64)>;

/// Stores each block unless a writer came, and drops it from the kernel
/// when its location goes stale; ends when [`Pages`] is dropped.
fn store_loop(st: &State, map: InodeMap, rx: Receiver<Fetched>) {
    let mut stored: BinaryHeap<Stored> = BinaryHeap::new();
    loop {
        let next = stored.peek().map(|Reverse((until, ..))| *until);
        let wait = next.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(block) => {
                if let Some(range) = store(st, map, block) {
                    stored.push(Reverse(range));
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while let Some(Reverse((until, inode, offset, len))) = stored.peek().copied() {
            if until > now {
                break;
            }
            stored.pop();
            if let Some(n) = st.notifier.get() {
                let (offset, len) = (offset as i64, len as i64);
                if let Err(e) = n.inval_inode(map.to_kernel(inode), offset, len) {
                    tracing::trace!(inode, error = %e, "dropping stored pages refused");
                }
            }
        }
    }
}

/// Stores one block unless a writer came, the file changed or its
/// location is about to go stale: the range stored, with its deadline.
fn store(st: &State, map: InodeMap, block: Fetched) -> Option<(Instant, u64, u64, u64)> {
    {
        let mut gates = st.gates();
        let gate = gates.entry(block.inode).or_default();
        if gate.writers > 0 {
            return None;
        }
        gate.storing += 1;
    }
    let mut done = None;
    let fresh = block.until > Instant::now() + MIN_LEFT;
    if let (Some(n), true, true) = (st.notifier.get(), fresh, block.is_current()) {
        let ino: INodeNo = map.to_kernel(block.inode);
        // ENOENT: the kernel forgot the inode; nothing to keep.
        match n.store(ino, block.offset, &block.data) {
            Ok(()) => {
                let len = block.data.len() as u64;
                done = Some((block.until, block.inode, block.offset, len));
            }
            Err(e) => tracing::trace!(inode = block.inode, error = %e, "page store refused"),
        }
    }
    st.ease(block.inode, |g| g.storing = g.storing.saturating_sub(1));
    st.stored.notify_all();
    done
}
