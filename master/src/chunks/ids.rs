//! Chunk ids for new chunks and copy-on-write duplicates, handed out by the
//! leader from blocks reserved through the log (`ReserveChunkIds`, one
//! entry per [`BLOCK`] ids), so that a new chunk costs one log entry (its
//! `WriteNewChunk`) rather than two. Every reservation is committed before
//! its ids are used, so no two leaders ever hand out the same id; ids left
//! in a block are skipped for good.

use std::ops::Range;
use std::sync::Mutex;

use super::{ChunkError, ChunkManager};
use crate::fsm::{ChunkId, Errno, Op, Reply};

/// Ids reserved at once.
pub(crate) const BLOCK: u32 = 1024;

/// The ids reserved and not handed out yet.
#[derive(Debug, Default)]
pub(crate) struct ChunkIds {
    free: Mutex<Range<u64>>,
    /// One reservation at a time.
    refill: tokio::sync::Mutex<()>,
}

impl ChunkIds {
    fn take(&self) -> Option<ChunkId> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        free.next().map(ChunkId)
    }

    fn is_empty(&self) -> bool {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    fn put(&self, ids: Range<u64>) {
        *self.free.lock().unwrap_or_else(|p| p.into_inner()) = ids;
    }
}

impl ChunkManager {
    /// An id no chunk has had, from the current block (reserving the next
    /// block through the log when it is used up).
    pub(crate) async fn new_chunk_id(&self) -> Result<ChunkId, ChunkError> {
        loop {
            if let Some(id) = self.ids.take() {
                self.state().note_new_id(id, std::time::Instant::now());
                return Ok(id);
            }
            let _one = self.ids.refill.lock().await;
            if !self.ids.is_empty() {
                continue;
            }
            match self.internal(Op::ReserveChunkIds { count: BLOCK }).await? {
                Reply::Chunk { id, .. } => self.ids.put(id.0..id.0 + u64::from(BLOCK)),
                other => return Err(other.errno().unwrap_or(Errno::EIO).into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkIds;
    use crate::fsm::ChunkId;

    #[test]
    fn hands_out_each_id_once() {
        let ids = ChunkIds::default();
        assert!(ids.take().is_none());
        ids.put(5..8);
        let got: Vec<_> = std::iter::from_fn(|| ids.take()).collect();
        assert_eq!(got, vec![ChunkId(5), ChunkId(6), ChunkId(7)]);
        assert!(ids.is_empty());
    }
}
