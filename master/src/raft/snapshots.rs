//! When a node writes a metadata snapshot (after which its log is purged).
//!
//! A snapshot costs in proportion to the namespace (every inode is
//! encoded and written), the log it replaces in proportion to the entries
//! since the last one. A fixed count of entries between snapshots makes a
//! big namespace snapshot over and over: every 20,000 entries, with 16
//! clients making files here, a 47 MB image every 2 s. So a node waits
//! for `SNAPSHOT_LOG_ENTRIES` entries, and also for
//! `SNAPSHOT_ENTRIES_PER_INODE` entries per inode the namespace holds:
//! each entry then pays for a bounded share of the snapshots (about one
//! inode's encoding), and the log kept between two snapshots, which a
//! restart replays, stays about the size of the namespace.

use std::sync::Arc;
use std::time::Duration;

use openraft::async_runtime::watch::WatchReceiver;

use super::sm::Shared;
use super::types::Raft;

/// How often, at most, the rule is checked (on the applies' progress).
const CHECK_EVERY: Duration = Duration::from_millis(50);

/// The snapshot rule's two settings.
#[derive(Debug, Clone, Copy)]
pub struct SnapshotRule {
    /// At least this many entries since the last snapshot (at least 10).
    pub min_entries: u64,
    /// And at least this many entries per inode of the namespace (0: the
    /// count alone decides).
    pub entries_per_inode: u64,
}

impl SnapshotRule {
    /// Entries after the last snapshot that call for the next one, with
    /// `inodes` in the namespace.
    pub fn due_after(&self, inodes: u64) -> u64 {
        self.min_entries
            .max(10)
            .max(inodes.saturating_mul(self.entries_per_inode))
    }
}

/// Watches `raft`'s applies and asks for a snapshot when `rule` says one
/// is due. Ends when the node shuts down.
pub async fn keep(raft: Raft, shared: Arc<Shared>, rule: SnapshotRule) {
    let mut metrics = raft.data_metrics();
    loop {
        if metrics.changed().await.is_err() {
            return;
        }
        let (applied, snapshot) = {
            let m = metrics.borrow_and_update();
            (
                m.last_applied.as_ref().map_or(0, |l| l.index),
                m.snapshot.as_ref().map_or(0, |l| l.index),
            )
        };
        let since = applied.saturating_sub(snapshot);
        if since >= rule.min_entries.max(10) {
            let due = rule.due_after(shared.ns().inode_count());
            // Ignored by openraft while a snapshot is being built.
            if since >= due && raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
        tokio::time::sleep(CHECK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::SnapshotRule;

    #[test]
    fn the_larger_of_the_count_and_the_namespace_decides() {
        let r = SnapshotRule {
            min_entries: 20_000,
            entries_per_inode: 1,
        };
        assert_eq!(r.due_after(500), 20_000);
        assert_eq!(r.due_after(1_000_000), 1_000_000);
        let count_only = SnapshotRule {
            min_entries: 100,
            entries_per_inode: 0,
        };
        assert_eq!(count_only.due_after(1_000_000), 100);
        let tiny = SnapshotRule {
            min_entries: 0,
            entries_per_inode: 0,
        };
        assert_eq!(tiny.due_after(0), 10);
        let huge = SnapshotRule {
            min_entries: 1,
            entries_per_inode: u64::MAX,
        };
        assert_eq!(huge.due_after(2), u64::MAX);
    }
}
