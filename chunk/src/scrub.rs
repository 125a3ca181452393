//! The background scrub: re-reads one chunk every HDD_TEST_FREQ seconds,
//! round robin over all chunks, and drops (and reports) a bad copy.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ChunkError;
use crate::store::Store;

/// Runs for ever, checking one chunk every `every`.
pub async fn run(store: Arc<Store>, every: Duration) {
    let mut next: u64 = 0;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let s = store.clone();
        let r = tokio::task::spawn_blocking(move || step(&s, next)).await;
        match r {
            Ok(Some(id)) => next = id.wrapping_add(1),
            Ok(None) => next = 0,
            Err(e) => tracing::warn!("scrub worker failed: {e}"),
        }
    }
}

/// Checks the first chunk with id >= `from` (wrapping to the smallest);
/// returns the id checked, if any.
pub fn step(store: &Store, from: u64) -> Option<u64> {
    let ids = store.ids();
    let id = ids
        .iter()
        .copied()
        .find(|&i| i >= from)
        .or_else(|| ids.first().copied())?;
    match store.verify(id) {
        Ok(()) => {
            metrics::counter!("mfs_chunk_scrubbed_total").increment(1);
        }
        Err(ChunkError::NotFound { .. }) => {}
        Err(e) => tracing::error!("scrub: chunk {id:016X}: {e}"),
    }
    Some(id)
}
