//! Releases of closed files, sent to the master in batches.
//!
//! The kernel does not wait for a release (close(2) returns after the
//! flush), but each one sent alone is a log entry that the next create or
//! open queues behind. So a release is noted here, answered at once, and a
//! background task sends whatever gathered within [`WINDOW`] in one call
//! (one log entry). Until then the master counts the file as still open by
//! this session: an unlinked file is freed a moment later, nothing else
//! changes (locks are let go by the mount itself at close).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mfs_proto::v1::ReleaseRequest;
use tokio::sync::Notify;

use crate::master::MasterClient;

/// How long releases gather before they are sent.
pub(crate) const WINDOW: Duration = Duration::from_millis(100);

/// Inodes sent in one call at most (the master takes up to 4096).
const BATCH: usize = 1024;

/// The releases not sent yet.
#[derive(Debug, Default)]
pub(crate) struct Releases {
    pending: Mutex<Vec<u64>>,
    wake: Notify,
}

impl Releases {
    /// Notes one release of `inode` (one open of it ends).
    pub(crate) fn push(&self, inode: u64) {
        let first = {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.push(inode);
            p.len() == 1
        };
        if first {
            self.wake.notify_one();
        }
    }

    fn take(&self, max: usize) -> Vec<u64> {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let n = p.len().min(max);
        p.drain(..n).collect()
    }

    /// Sends every release noted so far (the background task, and the
    /// unmount). A failure is logged: the master drops the session's opens
    /// when the session ends anyway.
    pub(crate) async fn send(&self, master: &MasterClient) {
        loop {
            let batch = self.take(BATCH);
            let Some((&inode, more)) = batch.split_first() else {
                return;
            };
            let req = ReleaseRequest {
                id: None,
                inode,
                more: more.to_vec(),
            };
            if let Err(e) = master.release(req).await {
                tracing::warn!(count = batch.len(), error = %e, "releasing closed files at the master failed");
            }
        }
    }

    /// The background task: waits for a release, lets more gather, sends.
    pub(crate) async fn run(self: Arc<Self>, master: MasterClient) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(WINDOW).await;
            self.send(&master).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_in_order_and_at_most_max() {
        let r = Releases::default();
        for i in 1..=5 {
            r.push(i);
        }
        assert_eq!(r.take(3), vec![1, 2, 3]);
        assert_eq!(r.take(3), vec![4, 5]);
        assert!(r.take(3).is_empty());
    }
}
