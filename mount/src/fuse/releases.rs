//! What the master counts open for this mount: releases of closed files,
//! sent in batches, and the count of everything held, told again to each
//! new leader.
//!
//! The kernel does not wait for a release (close(2) returns after the
//! flush), but each one sent alone is a log entry that the next create or
//! open queues behind. So a release is noted here, answered at once, and a
//! background task sends whatever gathered within [`WINDOW`] in one call
//! (one log entry). Until then the master counts the file as still open by
//! this session: an unlinked file is freed a moment later, nothing else
//! changes (locks are let go by the mount itself at close).
//!
//! A leader answers an open before it is logged (`raft/early.rs` in the
//! master); when it dies right then, the next leader does not count that
//! open, and would free the file at an unlink by anyone, or refuse the
//! holder's locks (EBADF). So at every change of leader (and after a new
//! session) [`assert_opens_loop`] tells the master how many times this
//! mount holds each inode: its open handles and the releases not sent yet.
//! The master raises its counts to that, never lowers them (releases on
//! their way take the rest). Releases and these counts go to the master
//! one at a time, in the order they were read ([`Releases::order`]): a
//! count read while a file was open must not land after that file's
//! release.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mfs_proto::v1::ReleaseRequest;
use tokio::sync::{watch, Notify};

use super::fs::Shared;
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
    /// Held while releases are taken and sent, and while open counts are
    /// read and sent.
    order: tokio::sync::Mutex<()>,
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

    /// The releases noted and not taken for sending, per inode.
    fn pending_counts(&self) -> HashMap<u64, u32> {
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for &inode in self
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            *counts.entry(inode).or_default() += 1;
        }
        counts
    }

    fn take(&self, max: usize) -> Vec<u64> {
        let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let n = p.len().min(max);
        p.drain(..n).collect()
    }

    /// Sends every release noted so far (the background task, and the
    /// unmount); those noted meanwhile wait for the next round, so that a
    /// steady stream of closes is still sent a window at a time (each call
    /// waits for the write-back queue, which then goes at once). A failure
    /// is logged: the master drops the session's opens when the session
    /// ends anyway.
    pub(crate) async fn send(&self, master: &MasterClient) {
        let _in_order = self.order.lock().await;
        let mut left = self.pending.lock().unwrap_or_else(|p| p.into_inner()).len();
        while left > 0 {
            let batch = self.take(BATCH.min(left));
            left = left.saturating_sub(batch.len());
            let Some((&inode, more)) = batch.split_first() else {
                return;
            };
            let req = ReleaseRequest {
                id: None,
                inode,
                more: more.to_vec(),
            };
            if let Err(e) = master.release(req).await {
                tracing::warn!(count = batch.len(), inode, error = %e, "releasing closed files at the master failed");
            }
        }
    }

    /// The background task: waits for a release, lets more gather, sends.
    pub(crate) async fn run(self: Arc<Self>, master: MasterClient) {
        loop {
            // (Releases noted during the last round are sent in the next.)
            if self
                .pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
            {
                self.wake.notified().await;
            }
            tokio::time::sleep(WINDOW).await;
            self.send(&master).await;
        }
    }
}

impl Shared {
    /// How many times the master should count each inode open for this
    /// mount, at least (`only`: that inode alone): releases noted and not
    /// sent, then open handles. Read in that order, a handle closing
    /// meanwhile is counted once at most (it leaves the table before its
    /// release is noted).
    pub(crate) fn open_counts(&self, only: Option<u64>) -> Vec<(u64, u32)> {
        let mut counts = self.releases.pending_counts();
        for (inode, n) in self.handles.open_counts() {
            *counts.entry(inode).or_default() += n;
        }
        let mut v: Vec<(u64, u32)> = counts
            .into_iter()
            .filter(|(inode, _)| only.is_none_or(|o| o == *inode))
            .collect();
        v.sort_unstable();
        v
    }

    /// Tells the master what this mount holds open (see the module's
    /// text); errors are logged and returned.
    pub(crate) async fn assert_opens(&self, only: Option<u64>) -> Result<(), crate::ClientError> {
        let _in_order = self.releases.order.lock().await;
        let counts = self.open_counts(only);
        for batch in counts.chunks(BATCH) {
            if let Err(e) = self.master.assert_opens(batch.to_vec()).await {
                tracing::warn!(count = batch.len(), error = %e, "telling the master which files are open failed");
                return Err(e);
            }
        }
        if !counts.is_empty() {
            tracing::info!(
                files = counts.len(),
                "told the master which files are open here"
            );
        }
        Ok(())
    }
}

/// At every change of leader or session, [`Shared::assert_opens`]. Ends
/// when the file system is dropped.
pub(crate) async fn assert_opens_loop(shared: Weak<Shared>, mut changes: watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {
        let Some(s) = shared.upgrade() else { return };
        // A failure is logged; the next change, or a lock refused with
        // EBADF, tells again.
        let _ = s.assert_opens(None).await;
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
