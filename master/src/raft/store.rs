//! The Raft log in segment files ([`crate::store::wal`]); the vote, committed
//! id and purge point in the storage engine.
//!
//! Every log record's body is a record of the store's codec (format version
//! and CRC, `crate::store::record`) of the entry; the segment frame adds its
//! own CRC. Meta tree `raft_meta`: `vote`, `committed`, `purged`.
//!
//! Appends are group committed: one flusher thread `fdatasync`s the segment
//! for every batch of appends queued since its last sync and only then tells
//! openraft, so an entry is acknowledged only once it is on disk. A
//! follower syncs on the caller's thread instead (see
//! [`LogStore::sync_in_place`]).
//!
//! A data dir written before the log had files of its own keeps its entries
//! in the engine's `raft_log` tree; the first open moves them over.

use std::collections::VecDeque;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::*;
use crate::store::wal::{Wal, Written};
use crate::store::{record, MetaStore, Tree};

/// The engine tree older data dirs kept the log in.
const OLD_LOG: &str = "raft_log";
const META: &str = "raft_meta";
/// Format version of the records this file writes.
const REC: u8 = 1;

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn enc<T: Serialize>(v: &T) -> Result<Vec<u8>, io::Error> {
    let bytes = bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(other)?;
    Ok(record::encode(REC, &bytes))
}

fn dec<T: DeserializeOwned>(what: &str, raw: &[u8]) -> Result<T, io::Error> {
    let (ver, payload) = record::decode(raw).map_err(|e| other(format!("{what}: {e}")))?;
    if ver != REC {
        return Err(other(format!(
            "{what}: record format {ver}, this build reads {REC}"
        )));
    }
    let (v, _) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|e| other(format!("{what}: {e}")))?;
    Ok(v)
}

fn decode_entry(index: u64, raw: &[u8]) -> Result<Entry, io::Error> {
    let e: Entry = dec("log entry", raw)?;
    if e.log_id.index != index {
        return Err(other(format!(
            "log entry {} stored as record {index}",
            e.log_id.index
        )));
    }
    Ok(e)
}

/// Entries most recently appended, kept decoded: replication to each peer
/// and the apply read what was just appended, and cloning an entry costs
/// less than reading and decoding it again.
const RECENT_ENTRIES: usize = 4096;

/// The newest appended entries, with consecutive indexes from `first`.
#[derive(Default)]
struct Recent {
    first: u64,
    entries: VecDeque<Entry>,
}

impl Recent {
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    fn push(&mut self, e: Entry) {
        if self.entries.is_empty() || e.log_id.index != self.end() {
            self.entries.clear();
            self.first = e.log_id.index;
        }
        self.entries.push_back(e);
        if self.entries.len() > RECENT_ENTRIES {
            self.entries.pop_front();
            self.first += 1;
        }
    }

    /// Forgets the entries from `index` on.
    fn cut_from(&mut self, index: u64) {
        let keep = index.saturating_sub(self.first) as usize;
        self.entries.truncate(keep);
    }

    /// Forgets the entries up to `index`.
    fn drop_through(&mut self, index: u64) {
        while self.first <= index && self.entries.pop_front().is_some() {
            self.first += 1;
        }
    }

    /// The entries `lo..hi`, if all are here.
    fn get(&self, lo: u64, hi: u64) -> Option<Vec<Entry>> {
        if lo < self.first || hi > self.end() {
            return None;
        }
        let (a, b) = ((lo - self.first) as usize, (hi - self.first) as usize);
        Some(self.entries.range(a..b).cloned().collect())
    }
}

/// Reads the log (cheap to clone; openraft's replication tasks hold copies).
#[derive(Clone)]
pub struct LogReader {
    wal: Wal,
    meta: Tree,
    recent: Arc<Mutex<Recent>>,
}

impl LogReader {
    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn entries(&self, lo: Bound<u64>, hi: Bound<u64>) -> Result<Vec<Entry>, io::Error> {
        let lo = match lo {
            Bound::Included(i) => i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let hi = match hi {
            Bound::Included(i) => i.saturating_add(1),
            Bound::Excluded(i) => i,
            Bound::Unbounded => u64::MAX,
        };
        if lo >= hi {
            return Ok(Vec::new());
        }
        if let Some(v) = self.recent().get(lo, hi) {
            return Ok(v);
        }
        self.wal
            .read(lo, hi)?
            .iter()
            .map(|(i, raw)| decode_entry(*i, raw))
            .collect()
    }

    fn meta_get<T: DeserializeOwned>(&self, k: &str) -> Result<Option<T>, io::Error> {
        match self.meta.get(k).map_err(other)? {
            Some(v) => Ok(Some(dec(k, &v)?)),
            None => Ok(None),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        // Read in place: the entries replication asks for are the newest ones,
        // in the page cache; a thread hop per batch cost more than the read.
        self.entries(range.start_bound().cloned(), range.end_bound().cloned())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.meta_get("vote")
    }
}

/// An append waiting for its sync: the segment written, openraft's
/// callback and how many entries it carried.
struct Ack {
    written: Written,
    callback: IOFlushed,
    entries: usize,
}

/// When appends are made durable, and so acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// At once, grouping only the appends that queued during the last
    /// sync: a voter, whose acknowledgement commits entries.
    Immediate,
    /// After waiting up to this long for more appends to share the sync,
    /// or at once when [`GROUPED_SYNC_ENTRIES`] are waiting: a learner
    /// (the metalogger), whose acknowledgement nobody waits for. The leader
    /// sends a peer its next entries once it acknowledged the last ones, so
    /// this also turns many small messages into a few large ones.
    Grouped(Duration),
}

/// Entries waiting that make a [`SyncPolicy::Grouped`] log sync at once
/// (a learner catching up is not slowed down).
pub const GROUPED_SYNC_ENTRIES: usize = 256;

pub struct LogStore {
    reader: LogReader,
    db: Arc<dyn MetaStore>,
    flusher: mpsc::Sender<Ack>,
    /// Appends handed to the flusher and not yet acknowledged.
    queued: Arc<AtomicUsize>,
    /// Set while this node follows: see [`LogStore::sync_in_place`].
    in_place: Arc<AtomicBool>,
    /// The last entry's id (None: empty log; then the purge point counts).
    last: Option<LogId>,
}

impl LogStore {
    /// Opens the log in `dir` (segment files) with its meta in `db`; a torn
    /// record at the tail (a crash mid-write) is dropped with a warning,
    /// damage anywhere else is an error.
    pub fn open(
        db: Arc<dyn MetaStore>,
        dir: &Path,
        policy: SyncPolicy,
    ) -> Result<LogStore, String> {
        let meta = db.tree(META).map_err(|e| e.to_string())?;
        let purged: Option<LogId> = match meta.get("purged").map_err(|e| e.to_string())? {
            Some(v) => Some(dec("purged", &v).map_err(|e| e.to_string())?),
            None => None,
        };
        let wal = Wal::open(dir, purged.map(|p| p.index)).map_err(|e| e.to_string())?;
        migrate_old_log(&db, &wal)?;
        let reader = LogReader {
            wal,
            meta,
            recent: Arc::default(),
        };
        let last = match reader.wal.last().map_err(|e| e.to_string())? {
            Some((i, raw)) => Some(decode_entry(i, &raw).map_err(|e| e.to_string())?.log_id),
            None => None,
        };
        let (tx, rx) = mpsc::channel();
        let wal = reader.wal.clone();
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        std::thread::Builder::new()
            .name("raft-log-flush".into())
            .spawn(move || flusher(wal, rx, policy, q))
            .map_err(|e| format!("cannot start the log flusher thread: {e}"))?;
        Ok(LogStore {
            reader,
            db,
            flusher: tx,
            queued,
            in_place: Arc::default(),
            last,
        })
    }

    /// The switch that makes appends sync on the caller's thread rather than
    /// the flusher's: `true` while this node follows.
    ///
    /// A follower appends what one request from its leader carries and
    /// answers once that is on disk, with nothing else to overlap the sync
    /// with, so the two thread hand-offs around the flusher (wake it, be
    /// woken by it) are pure delay on every write's path. A leader keeps the
    /// flusher: its own sync runs while its followers write theirs.
    pub fn sync_in_place(&self) -> Arc<AtomicBool> {
        self.in_place.clone()
    }

    fn meta_put<T: Serialize>(&self, k: &str, v: &T) -> Result<(), io::Error> {
        self.reader.meta.insert(k, enc(v)?).map_err(other)
    }
}

/// Moves a log kept in the engine (data dirs from before the segment files)
/// into the segment files, durably, then empties the tree.
fn migrate_old_log(db: &Arc<dyn MetaStore>, wal: &Wal) -> Result<(), String> {
    let old = db.tree(OLD_LOG).map_err(|e| e.to_string())?;
    let mut records = Vec::new();
    for kv in old.range::<Vec<u8>, _>(..) {
        let (k, v) = kv.map_err(|e| e.to_string())?;
        let index = <[u8; 8]>::try_from(k.as_slice())
            .map(u64::from_be_bytes)
            .map_err(|_| format!("bad key in the old log tree: {} bytes", k.len()))?;
        match dec::<Entry>("log entry", &v) {
            Ok(_) => records.push((index, v)),
            // The old store dropped a torn record at its tail too.
            Err(e) => {
                tracing::warn!(index, "old log: record dropped ({e})");
                break;
            }
        }
    }
    if records.is_empty() {
        return Ok(());
    }
    if wal.bounds().is_none() {
        let first = records.first().map_or(0, |r| r.0);
        let last = records.last().map_or(0, |r| r.0);
        if let Some(w) = wal.append(&records).map_err(|e| e.to_string())? {
            wal.sync(&w).map_err(|e| e.to_string())?;
        }
        tracing::info!(
            first,
            last,
            "Raft log moved from the storage engine into segment files"
        );
    }
    // The segment files hold the log (just written and synced, or by an
    // earlier open that stopped before this): the tree goes.
    old.remove_range::<Vec<u8>, _>(..)
        .map_err(|e| e.to_string())?;
    db.flush().map_err(|e| e.to_string())
}

/// Group commit: one sync for every append queued since the last one (and,
/// with [`SyncPolicy::Grouped`], for those that come while it waits).
///
/// A thread of its own, blocking on `fdatasync`: no task hop or thread-pool
/// wake-up between an append and its sync. It ends when the log store is
/// dropped (the channel closes).
fn flusher(wal: Wal, rx: mpsc::Receiver<Ack>, policy: SyncPolicy, queued: Arc<AtomicUsize>) {
    while let Ok(first) = rx.recv() {
        let mut entries = first.entries;
        let mut acks = vec![first];
        if let SyncPolicy::Grouped(wait) = policy {
            let until = Instant::now() + wait;
            while entries < GROUPED_SYNC_ENTRIES {
                let left = until.saturating_duration_since(Instant::now());
                match rx.recv_timeout(left) {
                    Ok(more) => {
                        entries += more.entries;
                        acks.push(more);
                    }
                    Err(_) => break,
                }
            }
        }
        while let Ok(more) = rx.try_recv() {
            acks.push(more);
        }
        let started = Instant::now();
        let mut res: Result<(), io::Error> = Ok(());
        let mut synced: Vec<&Written> = Vec::new();
        for a in &acks {
            if res.is_ok() && !synced.iter().any(|s| s.same(&a.written)) {
                res = wal.sync(&a.written).map_err(io::Error::from);
                synced.push(&a.written);
            }
        }
        metrics::counter!("mfs_raft_log_flushes_total").increment(1);
        metrics::histogram!("mfs_raft_log_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("mfs_raft_log_flush_appends").record(acks.len() as f64);
        if let Err(e) = &res {
            tracing::error!("cannot make the Raft log durable: {e}");
        }
        let n = acks.len();
        for a in acks {
            a.callback.io_completed(match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        queued.fetch_sub(n, Ordering::AcqRel);
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState, io::Error> {
        let purged: Option<LogId> = self.reader.meta_get("purged")?;
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: self.last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.meta_put("vote", vote)?;
        self.db.flush_async().await.map_err(other)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        // Durable with the next flush; losing it only means re-applying less
        // at start, which openraft then catches up on.
        self.meta_put("committed", &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self
            .reader
            .meta_get::<Option<LogId>>("committed")?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: IOFlushed) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        let mut kept = Vec::new();
        for e in entries {
            records.push((e.log_id.index, enc(&e)?));
            kept.push(e);
        }
        let Some(written) = self.reader.wal.append(&records)? else {
            callback.io_completed(Ok(()));
            return Ok(());
        };
        self.last = kept.last().map(|e| e.log_id);
        let mut recent = self.reader.recent();
        for e in kept {
            recent.push(e);
        }
        drop(recent);
        // In place only with nothing queued, so acknowledgements stay in order.
        if self.in_place.load(Ordering::Relaxed) && self.queued.load(Ordering::Acquire) == 0 {
            let started = Instant::now();
            let res = self.reader.wal.sync(&written).map_err(io::Error::from);
            metrics::counter!("mfs_raft_log_flushes_total").increment(1);
            metrics::histogram!("mfs_raft_log_flush_seconds")
                .record(started.elapsed().as_secs_f64());
            metrics::histogram!("mfs_raft_log_flush_appends").record(1.0);
            if let Err(e) = &res {
                tracing::error!("cannot make the Raft log durable: {e}");
            }
            callback.io_completed(res);
            return Ok(());
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        self.flusher
            .send(Ack {
                written,
                callback,
                entries: records.len(),
            })
            .map_err(|_| other("the log flusher has stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map(|l| l.index + 1).unwrap_or(0);
        self.reader.recent().cut_from(from);
        self.reader.wal.truncate_from(from)?;
        self.last = match self.reader.wal.last()? {
            Some((i, raw)) => Some(decode_entry(i, &raw)?.log_id),
            None => None,
        };
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // The purge point is durable before any segment goes.
        self.meta_put("purged", &log_id)?;
        self.db.flush_async().await.map_err(other)?;
        self.reader.recent().drop_through(log_id.index);
        self.reader.wal.purge(log_id.index)?;
        if self.last.is_some_and(|l| l.index <= log_id.index) {
            self.last = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod recent_tests {
    use super::*;

    fn ent(i: u64) -> Entry {
        openraft::testing::blank_ent::<TypeConfig>(1, 1, i)
    }

    fn indexes(v: Option<Vec<Entry>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    /// The cache answers only ranges it holds whole, and follows appends,
    /// truncations, purges and a log that starts over elsewhere.
    #[test]
    fn recent_entries_answer_only_what_they_hold() {
        let mut r = Recent::default();
        assert_eq!(indexes(r.get(0, 1)), None);
        for i in 5..10 {
            r.push(ent(i));
        }
        assert_eq!(indexes(r.get(6, 9)), Some(vec![6, 7, 8]));
        assert_eq!(indexes(r.get(4, 6)), None);
        assert_eq!(indexes(r.get(8, 11)), None);
        r.cut_from(8);
        assert_eq!(indexes(r.get(5, 8)), Some(vec![5, 6, 7]));
        assert_eq!(indexes(r.get(7, 9)), None);
        r.drop_through(5);
        assert_eq!(indexes(r.get(5, 7)), None);
        assert_eq!(indexes(r.get(6, 8)), Some(vec![6, 7]));
        // Not following on (a snapshot installed, say): starts afresh.
        r.push(ent(100));
        assert_eq!(indexes(r.get(6, 8)), None);
        assert_eq!(indexes(r.get(100, 101)), Some(vec![100]));
        for i in 101..(101 + RECENT_ENTRIES as u64) {
            r.push(ent(i));
        }
        assert_eq!(r.entries.len(), RECENT_ENTRIES);
        assert_eq!(indexes(r.get(100, 102)), None);
        assert_eq!(indexes(r.get(101, 102)), Some(vec![101]));
    }
}
