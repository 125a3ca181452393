//! Small writes to one chunk that come while another is on its way go
//! out together, in one request (`ChunkWriteRequest.more`).
//!
//! The kernel's writeback cache sends the dirty pages of a file as many
//! small writes at once (random 4 KiB writes: up to its 64 background
//! requests). Sent one request each, every write paid a request's whole
//! cost on the mount and on every copy, and the chunkserver wrote them one
//! after the other anyway (a chunk takes one write at a time). So a write
//! goes at once when none to its chunk is on its way; otherwise it waits in
//! the chunk's queue, and when the write on its way is answered, the first
//! one waiting sends everything waiting. Nothing is held back to wait for
//! company: an idle chunk's write goes out at once, as before.
//!
//! Each write still returns only once it is on every copy; a batch that
//! fails fails every write in it, and each goes through its own retry
//! (a new lease, another copy) as a write alone would.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::oneshot;
use tonic::codegen::Bytes;

use super::conn::Failure;
use super::lock;

/// Most bytes in one batch; what is left waits for the next.
pub(crate) const BATCH_BYTES: usize = 1 << 20;
/// Most writes in one batch.
const BATCH_WRITES: usize = 256;

/// A write's place in its chunk's queue: (chunk id, version).
pub(crate) type ChunkKey = (u64, u32);

/// One write: its offset in the chunk and its data.
pub(crate) type Range = (u64, Bytes);

/// The chunks of one file with a write on its way.
#[derive(Debug, Default)]
pub(crate) struct Batches {
    queues: Mutex<HashMap<ChunkKey, Queue>>,
}

#[derive(Debug, Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
}

#[derive(Debug)]
struct Waiting {
    range: Range,
    told: oneshot::Sender<Told>,
}

/// What a waiting write is told.
#[derive(Debug)]
enum Told {
    /// Sent in another's batch, with its result.
    Done(Result<(), Failure>),
    /// Its turn to send what waits (itself first).
    Lead,
}

/// Where a write stands after [`Batches::join`].
pub(crate) enum Turn<'a> {
    /// Send its own range and the others' after it in one request, then
    /// give the result to [`Lead::finish`].
    Send(Range, Vec<Range>, Lead<'a>),
    /// Another write's batch carried it: its result.
    Done(Result<(), Failure>),
}

/// The duty of a write that sends a batch: tell the others in it how it
/// went, and hand the chunk on. Dropped unfinished (the write stopped
/// mid-send), it tells them their batch failed.
pub(crate) struct Lead<'a> {
    batches: &'a Batches,
    key: ChunkKey,
    others: Vec<oneshot::Sender<Told>>,
    finished: bool,
}

impl Lead<'_> {
    pub(crate) fn finish(mut self, result: &Result<(), Failure>) {
        self.finished = true;
        self.batches
            .answer(self.key, std::mem::take(&mut self.others), result);
    }
}

impl Drop for Lead<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let stopped = Err(Failure::Copy(
                "the write that sent this batch stopped before its answer".into(),
            ));
            self.batches
                .answer(self.key, std::mem::take(&mut self.others), &stopped);
        }
    }
}

impl Batches {
    /// Enters a write of `range` to chunk `key`: the ranges to send now,
    /// or (having waited its turn) its result from another's batch.
    pub(crate) async fn join(&self, key: ChunkKey, range: Range) -> Turn<'_> {
        let rx = {
            let mut queues = lock(&self.queues);
            match queues.get_mut(&key) {
                // None on its way: go now, and mark the chunk busy.
                None => {
                    queues.insert(key, Queue::default());
                    return Turn::Send(range, Vec::new(), self.lead(key, Vec::new()));
                }
                Some(q) => {
                    let (told, rx) = oneshot::channel();
                    q.waiting.push_back(Waiting { range, told });
                    rx
                }
            }
        };
        match rx.await {
            Ok(Told::Done(result)) => Turn::Done(result),
            Ok(Told::Lead) => self.take(key),
            // Every sender is answered or handed on before it is dropped.
            Err(_) => Turn::Done(Err(Failure::Copy(
                "a batched write was dropped unanswered".into(),
            ))),
        }
    }

    fn lead(&self, key: ChunkKey, others: Vec<oneshot::Sender<Told>>) -> Lead<'_> {
        Lead {
            batches: self,
            key,
            others,
            finished: false,
        }
    }

    /// The batch of a write told to lead. Its own entry is still first in
    /// the queue (see [`Batches::answer`]), with a spent sender.
    fn take(&self, key: ChunkKey) -> Turn<'_> {
        let mut queues = lock(&self.queues);
        let Some(own) = queues.get_mut(&key).and_then(|q| q.waiting.pop_front()) else {
            // Not reached: the chunk stays in the map, its first entry
            // ours, until the lead is passed on.
            queues.remove(&key);
            return Turn::Done(Err(Failure::Copy(
                "a batched write lost its place in its chunk's queue".into(),
            )));
        };
        let mut rest = Vec::new();
        let mut others = Vec::new();
        let mut bytes = own.range.1.len();
        if let Some(q) = queues.get_mut(&key) {
            while let Some(w) = q.waiting.front() {
                let len = w.range.1.len();
                if bytes + len > BATCH_BYTES || rest.len() + 1 >= BATCH_WRITES {
                    break;
                }
                let Some(w) = q.waiting.pop_front() else {
                    break;
                };
                bytes += len;
                rest.push(w.range);
                others.push(w.told);
            }
        }
        Turn::Send(own.range, rest, self.lead(key, others))
    }

    /// Tells the others in a batch its `result`, and hands the chunk to
    /// the first write still waiting (or frees it).
    fn answer(
        &self,
        key: ChunkKey,
        others: Vec<oneshot::Sender<Told>>,
        result: &Result<(), Failure>,
    ) {
        for told in others {
            // A receiver gone stopped waiting; nothing to tell.
            let _ = told.send(Told::Done(result.clone()));
        }
        let mut queues = lock(&self.queues);
        let Some(q) = queues.get_mut(&key) else {
            return;
        };
        while let Some(first) = q.waiting.front_mut() {
            // Left first in the queue: the new leader takes its range there.
            let (spent, _) = oneshot::channel();
            let told = std::mem::replace(&mut first.told, spent);
            if told.send(Told::Lead).is_ok() {
                return;
            }
            // Stopped waiting (its write was dropped): the next leads.
            q.waiting.pop_front();
        }
        queues.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const KEY: ChunkKey = (7, 1);

    fn range(offset: u64) -> Range {
        (offset, Bytes::from(vec![offset as u8; 4096]))
    }

    /// A write through `b`: the offsets it sent (none if carried), and its
    /// result; a leader waits for `go` before answering with `answer`.
    async fn write(
        b: Arc<Batches>,
        offset: u64,
        go: Option<oneshot::Receiver<()>>,
        answer: Result<(), Failure>,
    ) -> (Vec<u64>, Result<(), Failure>) {
        match b.join(KEY, range(offset)).await {
            Turn::Done(r) => (Vec::new(), r),
            Turn::Send(own, rest, lead) => {
                if let Some(go) = go {
                    let _ = go.await;
                }
                lead.finish(&answer);
                let sent = std::iter::once(&own).chain(&rest).map(|r| r.0);
                (sent.collect(), answer)
            }
        }
    }

    fn copy_failed(r: &Result<(), Failure>) -> bool {
        matches!(r, Err(Failure::Copy(_)))
    }

    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn writes_that_come_while_one_is_out_go_together_and_share_its_answer() {
        let b = Arc::new(Batches::default());
        let (go, wait) = oneshot::channel();
        let first = tokio::spawn(write(b.clone(), 0, Some(wait), Ok(())));
        settle().await;
        let mut later = Vec::new();
        for off in [4096, 8192, 12288] {
            let fail = Err(Failure::Stale("stale".into()));
            later.push(tokio::spawn(write(b.clone(), off, None, fail)));
            settle().await;
        }
        go.send(()).unwrap();
        let (sent, r) = first.await.unwrap();
        assert_eq!(sent, vec![0], "the first goes alone, at once");
        assert!(r.is_ok());
        let mut results = Vec::new();
        for t in later {
            results.push(t.await.unwrap());
        }
        // The first waiting sent all three, in order; the others got its
        // answer.
        assert_eq!(results[0].0, vec![4096, 8192, 12288]);
        for (sent, r) in &results {
            assert!(matches!(r, Err(Failure::Stale(_))), "{r:?}");
            assert!(sent.is_empty() || sent.len() == 3);
        }
        // The chunk is free again: the next goes at once.
        let (sent, _) = write(b.clone(), 0, None, Ok(())).await;
        assert_eq!(sent, vec![0]);
        assert!(lock(&b.queues).is_empty());
    }

    #[tokio::test]
    async fn a_leader_that_stops_fails_its_batch_and_hands_the_chunk_on() {
        let b = Arc::new(Batches::default());
        let Turn::Send(_, _, lead) = b.join(KEY, range(0)).await else {
            panic!("an idle chunk's write goes at once");
        };
        let (_go, wait) = oneshot::channel();
        let leads_next = tokio::spawn(write(b.clone(), 4096, Some(wait), Ok(())));
        settle().await;
        let carried = tokio::spawn(write(b.clone(), 8192, None, Ok(())));
        settle().await;
        // Stopped before its answer: the first waiting leads, with the
        // second in its batch.
        drop(lead);
        settle().await;
        let after = tokio::spawn(write(b.clone(), 12288, None, Ok(())));
        settle().await;
        // That one stops too (its task is dropped mid-send): the write it
        // carried fails (and would retry on its own)...
        leads_next.abort();
        let (sent, r) = carried.await.unwrap();
        assert!(sent.is_empty() && copy_failed(&r), "{r:?}");
        // ... and the next waiting still gets its turn.
        let (sent, r) = after.await.unwrap();
        assert_eq!(sent, vec![12288]);
        assert!(r.is_ok());
        assert!(lock(&b.queues).is_empty());
    }

    #[tokio::test]
    async fn a_batch_stops_at_its_size() {
        let b = Arc::new(Batches::default());
        let Turn::Send(_, _, lead) = b.join(KEY, range(0)).await else {
            panic!("free");
        };
        let n = BATCH_BYTES / 4096 + 3;
        let mut waiting = Vec::new();
        for i in 1..=n as u64 {
            waiting.push(tokio::spawn(write(b.clone(), i * 4096, None, Ok(()))));
        }
        settle().await;
        lead.finish(&Ok(()));
        let mut batches: Vec<usize> = Vec::new();
        for t in waiting {
            let (sent, r) = t.await.unwrap();
            assert!(r.is_ok());
            if !sent.is_empty() {
                batches.push(sent.len());
            }
        }
        assert_eq!(batches, vec![BATCH_BYTES / 4096, 3]);
    }
}
