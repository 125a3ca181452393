//! Opens answered before their entry commits, and logged together.
//!
//! An open changes nothing a later read sees; what it changes (the file's
//! open count) matters only to requests logged after it, such as an unlink
//! that would otherwise free the file. So the leader answers such an open
//! from what its apply will answer. An open alone goes to openraft at once;
//! when opens come in a stream (another was answered less than [`STREAM`]
//! ago), it is held for up to [`HOLD`], and the opens of that time go in
//! one entry (`Op::Opens`): one log record, one flush and one replication
//! round for all of them, where each open used to cost an entry of its own
//! (about 0.3 ms of the leader's CPU and 0.1 ms of each other master's). A
//! write never overtakes a held open: before it is handed to openraft, the
//! opens held are (see [`MasterNode::write`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::node::{MasterNode, NodeError, WriteReceiver};
use crate::fsm::{Op, Reply, Request, SessionId};

/// Opens answered less than this apart are a stream: held, not logged
/// one by one.
const STREAM: Duration = Duration::from_millis(3);

/// How long an open of a stream waits for others to be logged with it in
/// one entry. The longer, the more opens share one entry's cost; but an
/// open still held when its leader dies is lost (the next leader does not
/// count it until the mount tells it what it holds open).
const HOLD: Duration = Duration::from_millis(20);

/// At most this many opens go in one entry (one more logs them at once).
const MAX_HELD: usize = 256;

/// The opens this leader answered before their apply.
#[derive(Debug, Default)]
pub(super) struct EarlyOpens {
    /// Answered and not yet applied, per (session, inode).
    answered: Mutex<HashMap<(u64, u64), u32>>,
    /// Answered and not yet handed to openraft, in the order answered,
    /// with their (session, inode).
    held: Mutex<Vec<(Key, Request)>>,
    /// `held` is not empty (a write looks before it takes any lock).
    holding: AtomicBool,
    /// A task will hand `held` to openraft.
    scheduled: AtomicBool,
    /// How many times `held` was handed over (a task whose round has
    /// passed when it wakes leaves the next round to its own task).
    round: AtomicU64,
    /// When the last open was answered early.
    last: Mutex<Option<Instant>>,
}

/// An open's (session, inode).
type Key = (u64, u64);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl EarlyOpens {
    /// Whether opens are held (a write must log them first).
    pub(super) fn holding(&self) -> bool {
        self.holding.load(Ordering::Acquire)
    }

    /// Whether an open was answered early less than [`STREAM`] ago (and
    /// notes this one).
    fn in_stream(&self, now: Instant) -> bool {
        let last = lock(&self.last).replace(now);
        last.is_some_and(|t| now.duration_since(t) < STREAM)
    }

    /// Waits (in a task) for the entry of the opens `keys` handed to
    /// openraft to be applied, and takes their marks down.
    fn await_logged(self: &Arc<Self>, keys: Vec<Key>, rx: WriteReceiver) {
        let early = Arc::clone(self);
        tokio::spawn(async move {
            let logged = matches!(rx.await, Ok(Ok(_)));
            for &key in &keys {
                // The mark goes only after the apply (see `opened_early`).
                early.unmark(key);
            }
            metrics::counter!("mfs_early_answers_total").increment(keys.len() as u64);
            if !logged {
                tracing::warn!(
                    opens = keys.len(),
                    "opens answered before their commit were not logged"
                );
            }
        });
    }

    fn unmark(&self, key: Key) {
        let mut answered = lock(&self.answered);
        if let Some(n) = answered.get_mut(&key) {
            *n -= 1;
            if *n == 0 {
                answered.remove(&key);
            }
        }
    }
}

impl MasterNode {
    /// Answers an open without truncation from `Namespace::preview_open`
    /// (what its apply will answer) and logs it at once, or with the
    /// opens of the next [`HOLD`] when they come in a stream, without
    /// waiting for the commit, when that is safe: this node leads with a
    /// valid lease or read index (everything committed is applied here)
    /// and no write submitted here is still unapplied, so the preview sees
    /// every entry ahead of it in the log but other opens answered so
    /// (which change nothing a preview reads); the submission lock keeps
    /// any write from coming between the preview and the hold, and every
    /// write logs the held opens before itself. An unlink logged after it
    /// then sees the file open. Otherwise, or when the preview declines
    /// (errors, retries, truncation, other requests), it is an ordinary
    /// [`Self::write`].
    ///
    /// If this leader dies before the entry commits, the open is not
    /// counted by the next leader.
    pub async fn open_before_commit(self: &Arc<Self>, req: Request) -> Result<Reply, NodeError> {
        let Op::Open {
            inode,
            truncate: false,
            ..
        } = req.op
        else {
            return self.write(req).await;
        };
        self.linearize().await?;
        let order = self.submit_order.write().await;
        let early = if self.writes_in_flight() == 0 {
            self.shared.ns().preview_open(&req)
        } else {
            None
        };
        let Some(attr) = early else {
            drop(order);
            return self.write(req).await;
        };
        if req.session.0 != 0 {
            self.touch_session(req.session.0);
        }
        let key = (req.session.0, inode.0);
        *lock(&self.early.answered).entry(key).or_default() += 1;
        // An open alone goes to the log at once: only a stream of them
        // (another answered within STREAM) waits, or one behind held opens.
        if !self.early.in_stream(Instant::now()) && !self.early.holding() {
            let logged = self.log_open(key, req).await;
            drop(order);
            let rx = logged?;
            metrics::histogram!("mfs_early_opens_per_batch").record(1.0);
            self.early.await_logged(vec![key], rx);
            return Ok(Reply::Attr(attr));
        }
        let full = {
            let mut held = lock(&self.early.held);
            held.push((key, req));
            held.len() >= MAX_HELD
        };
        self.early.holding.store(true, Ordering::Release);
        if full {
            self.log_held().await;
        } else if !self.early.scheduled.swap(true, Ordering::AcqRel) {
            let round = self.early.round.load(Ordering::Acquire);
            let node = Arc::clone(self);
            tokio::spawn(async move {
                tokio::time::sleep(HOLD).await;
                let _order = node.submit_order.write().await;
                if node.early.round.load(Ordering::Acquire) == round {
                    node.log_held().await;
                }
            });
        }
        drop(order);
        Ok(Reply::Attr(attr))
    }

    /// Hands the held opens to openraft, in the order they were answered,
    /// as one entry (`Op::Opens`). The caller holds the submission lock
    /// exclusively.
    pub(super) async fn log_held(&self) {
        let held = std::mem::take(&mut *lock(&self.early.held));
        self.early.holding.store(false, Ordering::Release);
        self.early.scheduled.store(false, Ordering::Release);
        self.early.round.fetch_add(1, Ordering::AcqRel);
        let Some(time) = held.last().map(|(_, r)| r.time) else {
            return;
        };
        metrics::histogram!("mfs_early_opens_per_batch").record(held.len() as f64);
        let (keys, opens): (Vec<Key>, Vec<Request>) = held.into_iter().unzip();
        let entry = Request {
            session: SessionId::NONE,
            seq: 0,
            acked: 0,
            time,
            op: Op::Opens { opens },
        };
        match self.submit_unpaced(entry).await {
            Ok(rx) => self.early.await_logged(keys, rx),
            Err(e) => {
                for key in keys {
                    self.early.unmark(key);
                }
                tracing::warn!(error = %e, "opens answered before their commit were not logged");
            }
        }
    }

    /// Hands the open `req` answered early to openraft; its mark goes if
    /// that fails.
    async fn log_open(&self, key: Key, req: Request) -> Result<WriteReceiver, NodeError> {
        let logged = self.submit_unpaced(req).await;
        if logged.is_err() {
            self.early.unmark(key);
        }
        logged
    }

    /// Whether `session` holds `inode` open by an open answered before its
    /// entry was applied (see [`Self::open_before_commit`]); calls that need
    /// the open (reading the file's chunks) count these too. Ask with the
    /// namespace's lock held after finding no open there: the mark goes
    /// only after the apply.
    pub fn opened_early(&self, session: u64, inode: u64) -> bool {
        lock(&self.early.answered).contains_key(&(session, inode))
    }
}
