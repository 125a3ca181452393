//! The Raft log, vote and committed id on our storage engine.
//!
//! Trees: `raft_log` (key: index as 8 big-endian bytes, value: the entry) and
//! `raft_meta` (`vote`, `committed`, `purged`). Every value is a record with a
//! format version and a CRC (`crate::store::record`). Appends are group
//! committed: a single flusher makes each batch of appends durable with one
//! flush and only then tells openraft, so an entry is acknowledged only once it
//! is on disk.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::OptionalSend;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use super::types::*;
use crate::store::{record, Batch, MetaStore, Tree};

const LOG: &str = "raft_log";
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

fn key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// Reads the log (cheap to clone; openraft's replication tasks hold copies).
#[derive(Clone)]
pub struct LogReader {
    log: Tree,
    meta: Tree,
}

impl LogReader {
    fn entries(&self, lo: Bound<u64>, hi: Bound<u64>) -> Result<Vec<Entry>, io::Error> {
        let lo = match lo {
            Bound::Included(i) => Bound::Included(key(i).to_vec()),
            Bound::Excluded(i) => Bound::Excluded(key(i).to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let hi = match hi {
            Bound::Included(i) => Bound::Included(key(i).to_vec()),
            Bound::Excluded(i) => Bound::Excluded(key(i).to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        for kv in self.log.range::<Vec<u8>, _>((lo, hi)) {
            let (k, v) = kv.map_err(other)?;
            let e: Entry = dec("log entry", &v)?;
            if k.as_slice() != key(e.log_id.index) {
                return Err(other(format!(
                    "log entry stored under the wrong key (index {})",
                    e.log_id.index
                )));
            }
            out.push(e);
        }
        Ok(out)
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
        let (lo, hi) = (range.start_bound().cloned(), range.end_bound().cloned());
        let r = self.clone();
        tokio::task::spawn_blocking(move || r.entries(lo, hi))
            .await
            .map_err(other)?
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.meta_get("vote")
    }
}

/// Pending acknowledgements for the flusher.
type Ack = IOFlushed;

pub struct LogStore {
    reader: LogReader,
    db: Arc<dyn MetaStore>,
    flusher: mpsc::UnboundedSender<Ack>,
}

impl LogStore {
    /// Opens the log; a torn record at the tail (a crash mid-write) is dropped
    /// with a warning, damage anywhere else is an error.
    pub fn open(db: Arc<dyn MetaStore>) -> Result<LogStore, String> {
        let log = db.tree(LOG).map_err(|e| e.to_string())?;
        let meta = db.tree(META).map_err(|e| e.to_string())?;
        let reader = LogReader { log, meta };
        drop_torn_tail(&reader)?;
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(flusher(db.clone(), rx));
        Ok(LogStore {
            reader,
            db,
            flusher: tx,
        })
    }

    fn meta_put<T: Serialize>(&self, k: &str, v: &T) -> Result<(), io::Error> {
        self.reader.meta.insert(k, enc(v)?).map_err(other)
    }
}

fn drop_torn_tail(r: &LogReader) -> Result<(), String> {
    loop {
        let Some((k, v)) = r.log.last().map_err(|e| e.to_string())? else {
            return Ok(());
        };
        if dec::<Entry>("log entry", &v).is_ok() {
            return Ok(());
        }
        let idx = <[u8; 8]>::try_from(k.as_slice())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        tracing::warn!(
            index = idx,
            "torn Raft log record at the tail (crash mid-write): dropped; the leader resends it"
        );
        r.log.remove(&k).map_err(|e| e.to_string())?;
        r.log.flush().map_err(|e| e.to_string())?;
    }
}

/// Group commit: one flush for every append queued since the last one.
async fn flusher(db: Arc<dyn MetaStore>, mut rx: mpsc::UnboundedReceiver<Ack>) {
    while let Some(first) = rx.recv().await {
        let mut acks = vec![first];
        while let Ok(more) = rx.try_recv() {
            acks.push(more);
        }
        let started = std::time::Instant::now();
        let res = db.flush_async().await.map_err(other);
        metrics::counter!("mfs_raft_log_flushes_total").increment(1);
        metrics::histogram!("mfs_raft_log_flush_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("mfs_raft_log_flush_appends").record(acks.len() as f64);
        for a in acks {
            a.io_completed(match &res {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState, io::Error> {
        let purged: Option<LogId> = self.reader.meta_get("purged")?;
        let last = match self.reader.log.last().map_err(other)? {
            Some((_, v)) => Some(dec::<Entry>("log entry", &v)?.log_id),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
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
        let mut batch = Batch::new();
        for e in entries {
            batch.insert(key(e.log_id.index).to_vec(), enc(&e)?);
        }
        self.reader.log.apply_batch(batch).map_err(other)?;
        self.flusher
            .send(callback)
            .map_err(|_| other("the log flusher has stopped"))?;
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map(|l| l.index + 1).unwrap_or(0);
        self.reader
            .log
            .remove_range(key(from).to_vec()..)
            .map_err(other)?;
        self.db.flush_async().await.map_err(other)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.meta_put("purged", &log_id)?;
        self.db.flush_async().await.map_err(other)?;
        self.reader
            .log
            .remove_range(..=key(log_id.index).to_vec())
            .map_err(other)?;
        Ok(())
    }
}
