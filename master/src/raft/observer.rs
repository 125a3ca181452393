//! The apply hook: something outside the state machine (the metalogger's
//! changelog) sees every committed entry as it is applied, in log order, and
//! every jump of the state (a snapshot installed instead of entries).
//!
//! The hook is optional; a master runs without one. No openraft types cross
//! this boundary: positions are plain (index, term) pairs.

use crate::fsm::Request;

/// Where an entry (or an image) stands in the Raft log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct LogPosition {
    pub index: u64,
    pub term: u64,
}

/// What an applied log entry carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change<'a> {
    /// A namespace change (the only kind that alters the namespace).
    Request(&'a Request),
    /// An empty entry (a new leader's first entry, read barriers).
    Blank,
    /// A membership change: (id, address) of the voters and of the learners.
    Membership {
        voters: Vec<(u64, String)>,
        learners: Vec<(u64, String)>,
    },
}

/// Sees the state machine's progress. Called from the state machine task:
/// keep each call short (buffered writes, no network).
///
/// An error stops the Raft node (openraft treats it as a storage failure):
/// return one only when going on would lose or corrupt what the observer
/// keeps, and make the message say what to fix.
pub trait ApplyObserver: Send + Sync + 'static {
    /// Entry `pos` was applied (entries come in log order; after a restart
    /// entries already seen before may come again).
    fn applied(&self, pos: LogPosition, change: &Change<'_>) -> Result<(), String>;

    /// The end of a batch of [`ApplyObserver::applied`] calls: a good moment
    /// to hand buffered data to the OS.
    fn batch_done(&self) -> Result<(), String>;

    /// The state now stands at `pos` without the entries before it having
    /// been applied here one by one: a snapshot from the leader was
    /// installed, or the node started from its own snapshot. `image` is the
    /// metadata image of that state (as [`crate::raft::sm::parse_image`]
    /// reads it); `pos` is `None` for the empty state of a new node.
    fn state_replaced(&self, pos: Option<LogPosition>, image: &[u8]) -> Result<(), String>;
}
