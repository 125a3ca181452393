//! The write-back queue: creates (and unlinks, rmdirs, renames, length
//! commits) a mount answered itself in directories delegated to its
//! session (see the master's `fsm::delegations`), sent to the master in
//! order, in batches (`Batch`: one log entry for many). An op may also
//! want an answer ([`Answered`]: the first write lease of a file made
//! here, given in the reply of the batch that carries its create).
//!
//! Every other call of this client waits for what was queued before it
//! started ([`Queue::barrier`] in `Inner::call_with_limit`), so the master
//! never sees a later call before the changes it may depend on (a write
//! to a file made here, its release, the return of its directory). A call
//! that names the inodes it reads or changes ([`Scope::Inodes`]: a
//! lookup, getattr, open, a chunk's lease...) waits only for the queued
//! ops on those inodes, and for every queued removal or rename (their
//! reach is wider than the names they carry): so overwriting file after
//! file does not wait for the length commit of the one before. A batch
//! goes at once when a call waits for it, else after at most [`LINGER`]
//! for more ops to join it.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use mfs_proto::v1::{
    batch_op, BatchOp, BatchRequest, ChunkLocation, DelegateReply, DelegateRequest,
};
use mfs_proto::v1::{HoldChunksRequest, Recall, RecallsRequest, ReturnDelegationRequest};
use tokio::sync::{oneshot, watch, Notify};

use super::{meta_client, MasterClient};
use crate::error::ClientError;

/// Ops one batch carries at most (the master takes 4096).
const BATCH: usize = 1024;
/// How long a batch may wait for more ops while no call waits for it
/// (fewer, larger log entries: the masters' CPU goes to more changes).
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// A queued op the master refused whose answer the mount keeps: what the
/// mount must undo.
#[derive(Debug, Clone, Copy)]
pub enum Refused<'a> {
    /// A create or mkdir: the name is not there, nor the inode.
    Made {
        parent: u64,
        name: &'a [u8],
        inode: u64,
    },
    /// A change of a held directory's attributes: they are the master's.
    DirAttrs { dir: u64 },
}

/// Called for a queued op the master refused (with the client that sent
/// it, and the errno).
pub type OnRefused = Box<dyn Fn(&MasterClient, Refused<'_>, i32) + Send + Sync>;

pub(crate) struct Queue {
    ops: Mutex<Pending>,
    /// Ops answered by the master (or given up), counted from the start.
    done: watch::Sender<u64>,
    wake: Notify,
    /// Calls waiting in [`Queue::barrier`] (the batch goes at once then),
    /// and their signal to the sender.
    waiters: std::sync::atomic::AtomicUsize,
    urgent: Notify,
    on_refused: Mutex<Option<OnRefused>>,
}

/// What a call may depend on among the queued ops.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scope<'a> {
    /// Everything queued before it.
    All,
    /// The ops on these inodes (and every op queued without its reach:
    /// a removal or rename queued with [`Queue::push`]).
    Inodes(&'a [u64]),
}

/// Entries of [`Pending::touched`] kept before the answered ones are
/// dropped.
const TOUCHED_KEPT: usize = 4096;

#[derive(Default)]
struct Pending {
    ops: VecDeque<BatchOp>,
    /// Ops queued, counted from the start.
    queued: u64,
    /// Of those, the ones that change what a listing or stat shows (all
    /// but releases).
    changes: u64,
    /// The ticket of the last op queued on each inode (see [`touches`]).
    touched: HashMap<u64, u64>,
    /// The ticket of the last op queued whose reach its inodes do not
    /// tell (every scoped call waits for it).
    wide: u64,
    /// Who waits for the answer of a queued op, by its ticket.
    answers: HashMap<u64, oneshot::Sender<Answer>>,
}

/// The master's answer to one queued op that has one (a `write`: its
/// lease), or its errno.
pub type Answer = Result<ChunkLocation, i32>;

/// A queued op's answer to come (see [`MasterClient::queue_op_answered`]).
pub struct Answered<'a> {
    queue: &'a Queue,
    rx: oneshot::Receiver<Answer>,
}

impl Answered<'_> {
    /// Waits for the answer (the batch goes at once: a call waits for it).
    pub async fn answer(self) -> Answer {
        let _waiting = Waiting::new(self.queue);
        self.rx.await.unwrap_or(Err(libc::EIO))
    }
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let p = self.lock();
        f.debug_struct("Queue")
            .field("queued", &p.queued)
            .field("done", &self.done())
            .finish()
    }
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            ops: Mutex::new(Pending::default()),
            done: watch::Sender::new(0),
            wake: Notify::new(),
            waiters: Default::default(),
            urgent: Notify::new(),
            on_refused: Mutex::new(None),
        }
    }
}

/// A call counted among the queue's waiters while it lives.
struct Waiting<'a>(&'a Queue);

impl<'a> Waiting<'a> {
    fn new(q: &'a Queue) -> Self {
        q.waiters.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        q.urgent.notify_one();
        Waiting(q)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0
            .waiters
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `op`; its ticket (done once `done() >= ticket`).
    pub(crate) fn push(&self, op: BatchOp) -> u64 {
        self.push_with(op, None, None)
    }

    /// Queues `op`, with the inodes it changes when the op does not tell
    /// them all (a removal's or rename's), and who waits for its answer
    /// (registered under the same lock, so the batch that takes the op
    /// takes the waiter too).
    fn push_with(
        &self,
        op: BatchOp,
        reach: Option<&[u64]>,
        answer: Option<oneshot::Sender<Answer>>,
    ) -> u64 {
        let done = self.done();
        let ticket = {
            let mut p = self.lock();
            p.queued += 1;
            if !matches!(op.op, Some(batch_op::Op::Release(_))) {
                p.changes += 1;
            }
            let ticket = p.queued;
            let told = touches(&op);
            match reach.or(told.as_ref().map(|t| &t[..])) {
                Some(inodes) => {
                    if p.touched.len() >= TOUCHED_KEPT {
                        p.touched.retain(|_, t| *t > done);
                    }
                    for &i in inodes.iter().filter(|&&i| i != 0) {
                        p.touched.insert(i, ticket);
                    }
                }
                None => p.wide = ticket,
            }
            p.ops.push_back(op);
            if let Some(tx) = answer {
                p.answers.insert(ticket, tx);
            }
            ticket
        };
        self.wake.notify_one();
        ticket
    }

    pub(crate) fn done(&self) -> u64 {
        *self.done.borrow()
    }

    /// Ops queued that change what a listing or stat shows, counted from
    /// the start.
    pub(crate) fn changes(&self) -> u64 {
        self.lock().changes
    }

    /// Queues `op`, whose answer the caller waits for.
    fn push_answered(&self, op: BatchOp) -> Answered<'_> {
        let (tx, rx) = oneshot::channel();
        self.push_with(op, None, Some(tx));
        Answered { queue: self, rx }
    }

    /// Waits until every op queued before this call was answered.
    pub(crate) async fn barrier(&self) {
        self.barrier_in(Scope::All).await
    }

    /// Waits until the ops queued before this call that `scope` depends on
    /// were answered.
    pub(crate) async fn barrier_in(&self, scope: Scope<'_>) {
        let target = {
            let p = self.lock();
            match scope {
                Scope::All => p.queued,
                Scope::Inodes(inodes) => inodes
                    .iter()
                    .filter_map(|i| p.touched.get(i))
                    .fold(p.wide, |a, &b| a.max(b)),
            }
        };
        if self.done() >= target {
            return;
        }
        let mut rx = self.done.subscribe();
        let _waiting = Waiting::new(self);
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|&d| d >= target).await;
    }

    /// Whether an op on `inode` is queued and not answered yet.
    pub(crate) fn waits_on(&self, inode: u64) -> bool {
        let last = self.lock().touched.get(&inode).copied().unwrap_or(0);
        last > self.done()
    }

    /// Whether a call waits for the queue.
    fn urgent(&self) -> bool {
        self.waiters.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    fn len(&self) -> usize {
        self.lock().ops.len()
    }

    /// The next batch, and who waits for the answers of its ops (by
    /// their place in it).
    fn take(&self) -> (Vec<BatchOp>, Vec<(usize, oneshot::Sender<Answer>)>) {
        let mut p = self.lock();
        let n = p.ops.len().min(BATCH);
        // Batches go one at a time, in order: the first op's ticket
        // follows the last answered.
        let first = p.queued - p.ops.len() as u64 + 1;
        let mut waiting = Vec::new();
        if !p.answers.is_empty() {
            for i in 0..n {
                if let Some(tx) = p.answers.remove(&(first + i as u64)) {
                    waiting.push((i, tx));
                }
            }
        }
        (p.ops.drain(..n).collect(), waiting)
    }
}

impl MasterClient {
    /// Queues a write-back op (see the module's text); its ticket.
    pub fn queue_op(&self, op: BatchOp) -> u64 {
        self.inner.queue.push(op)
    }

    /// Queues a removal or rename with every inode it changes (its
    /// directories, the inode it removes, moves or replaces): calls on
    /// other inodes need not wait for it.
    pub fn queue_op_reaching(&self, op: BatchOp, reach: &[u64]) -> u64 {
        self.inner.queue.push_with(op, Some(reach), None)
    }

    /// Queues a write-back op whose answer the caller waits for (a
    /// `write`: its lease).
    pub fn queue_op_answered(&self, op: BatchOp) -> Answered<'_> {
        self.inner.queue.push_answered(op)
    }

    /// How many queued ops the master answered so far.
    pub fn queue_done(&self) -> u64 {
        self.inner.queue.done()
    }

    /// Waits until everything queued so far was answered (fsync).
    pub async fn queue_barrier(&self) {
        self.inner.queue.barrier().await
    }

    /// What to do when the master refuses a queued create or directory
    /// attribute change.
    pub fn on_queued_refused(&self, f: OnRefused) {
        *self
            .inner
            .queue
            .on_refused
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(f);
    }

    /// Sends the queue, batch after batch, for ever (spawned once by the
    /// mount). A batch the master cannot be reached for within the
    /// client's overall timeout is given up (logged): the files it made
    /// are lost, as after a crash of this client.
    pub async fn run_queue(self) {
        let q = &self.inner.queue;
        loop {
            if q.len() == 0 {
                q.wake.notified().await;
                continue;
            }
            // Nobody waits: let more ops join this batch, until a call
            // waits (a wake-up with no waiter is one left over from a call
            // the last batch answered).
            let until = tokio::time::Instant::now() + LINGER;
            while !q.urgent() && q.len() < BATCH {
                if tokio::time::timeout_at(until, q.urgent.notified())
                    .await
                    .is_err()
                {
                    break;
                }
            }
            let (ops, mut waiting) = q.take();
            if ops.is_empty() {
                continue;
            }
            let n = ops.len() as u64;
            let req = BatchRequest {
                id: None,
                ops: ops.clone(),
            };
            let r = self
                .call_mut("Batch", req, |ch, r| async move {
                    meta_client(ch).batch(r).await
                })
                .await;
            match r {
                Ok(mut reply) => {
                    for (op, &e) in ops.iter().zip(reply.errnos.iter()) {
                        if e != 0 {
                            self.refused(op, e);
                        }
                    }
                    for (i, tx) in waiting.drain(..) {
                        let errno = reply.errnos.get(i).copied().unwrap_or(libc::EIO);
                        let answer = match reply.leases.remove(&(i as u32)) {
                            Some(loc) if errno == 0 => Ok(loc),
                            _ => Err(if errno == 0 { libc::EIO } else { errno }),
                        };
                        let _ = tx.send(answer);
                    }
                }
                Err(e) => {
                    tracing::error!(ops = n, error = %e, "the write-back queue could not be sent: files made here and not sent are lost");
                    for op in &ops {
                        self.refused(op, libc::EIO);
                    }
                }
            }
            // (Dropped senders answer EIO.)
            drop(waiting);
            q.done.send_modify(|d| *d += n);
        }
    }

    fn refused(&self, op: &BatchOp, errno: i32) {
        let (what, parent, name, inode) = match &op.op {
            Some(batch_op::Op::Create(c)) => ("file", c.parent, &c.name, c.inode),
            Some(batch_op::Op::Mkdir(c)) => ("directory", c.parent, &c.name, c.inode),
            Some(batch_op::Op::Attach(a)) => {
                // Its data is lost unless the writer's answer (awaited)
                // asks for a new lease and writes again.
                tracing::warn!(
                    inode = a.inode,
                    index = a.index,
                    chunk = a.chunk_id,
                    errno,
                    "the master refused a chunk written here"
                );
                return;
            }
            Some(batch_op::Op::Open(o)) => {
                // The file was readable here; the master does not count
                // this open (an unlink elsewhere may free the file while
                // it is read).
                tracing::warn!(
                    inode = o.inode,
                    errno,
                    "the master refused a read open this mount had answered"
                );
                return;
            }
            Some(batch_op::Op::WriteEnd(w)) => {
                tracing::warn!(
                    inode = w.inode,
                    index = w.index,
                    chunk = w.chunk_id,
                    errno,
                    "the master refused the length commit of a write made here"
                );
                return;
            }
            Some(batch_op::Op::Setattr(a)) => {
                // The mount answered that the change was made: the
                // directory's attributes are the master's again (it is
                // given back).
                tracing::warn!(
                    inode = a.inode,
                    errno,
                    "the master refused a change of a directory's attributes this mount had answered"
                );
                self.tell_refused(Refused::DirAttrs { dir: a.inode }, errno);
                return;
            }
            Some(batch_op::Op::Release(_) | batch_op::Op::Write(_)) | None => return,
            Some(other) => {
                // The mount answered it from what it holds; the master
                // found otherwise (another client's change it could not
                // foresee, such as a file's owner in a sticky directory).
                tracing::warn!(
                    ?other,
                    errno,
                    "the master refused a removal or rename this mount had answered"
                );
                return;
            }
        };
        tracing::warn!(
            parent,
            name = %String::from_utf8_lossy(name),
            inode,
            errno,
            "the master refused a create this mount had answered; the {what} is gone"
        );
        let made = Refused::Made {
            parent,
            name,
            inode,
        };
        self.tell_refused(made, errno);
    }

    fn tell_refused(&self, r: Refused<'_>, errno: i32) {
        let f = self.inner.queue.on_refused.lock();
        if let Some(f) = &*f.unwrap_or_else(|p| p.into_inner()) {
            f(self, r, errno);
        }
    }

    /// Holds `count` more chunk ids with chains of `goal` copies, giving
    /// back `give_back` (see the master's `HoldChunks`).
    pub async fn hold_chunks(
        &self,
        count: u32,
        goal: u32,
        give_back: Vec<u64>,
    ) -> Result<Vec<ChunkLocation>, ClientError> {
        let req = HoldChunksRequest {
            id: None,
            count,
            goal,
            give_back,
        };
        self.call_mut("HoldChunks", req, |ch, r| async move {
            meta_client(ch).hold_chunks(r).await
        })
        .await
        .map(|r| r.chunks)
    }

    /// Asks for directory `dir` (see the master's `Delegate`).
    pub async fn delegate(&self, dir: u64, inodes: u32) -> Result<DelegateReply, ClientError> {
        let req = DelegateRequest {
            id: None,
            dir,
            inodes,
        };
        self.call_mut("Delegate", req, |ch, r| async move {
            meta_client(ch).delegate(r).await
        })
        .await
    }

    /// Gives `dir` back, after the queue (the barrier of every call).
    pub async fn return_delegation(&self, dir: u64) -> Result<(), ClientError> {
        let req = ReturnDelegationRequest { id: None, dir };
        self.call_mut("ReturnDelegation", req, |ch, r| async move {
            meta_client(ch).return_delegation(r).await
        })
        .await
        .map(|_| ())
    }

    /// Opens this session's recall stream at the leader.
    pub async fn recalls(&self) -> Result<tonic::Streaming<Recall>, ClientError> {
        let req = RecallsRequest {
            session: self.session_id(),
        };
        self.inner
            .call("Recalls", req, |ch, r| async move {
                meta_client(ch).recalls(r).await
            })
            .await
    }
}

/// The inodes whose state `op` changes or depends on; None for a removal
/// or rename (it changes what a name leads to, and the inode it removes
/// or replaces is not in the op: queued with its reach, see
/// [`MasterClient::queue_op_reaching`], or wide).
fn touches(op: &BatchOp) -> Option<[u64; 2]> {
    use batch_op::Op;
    match op.op.as_ref()? {
        Op::Create(c) | Op::Mkdir(c) => Some([c.parent, c.inode]),
        Op::Release(inode) => Some([*inode, 0]),
        Op::WriteEnd(w) => Some([w.inode, 0]),
        Op::Write(w) => Some([w.inode, 0]),
        Op::Attach(a) => Some([a.inode, 0]),
        Op::Open(o) => Some([o.inode, 0]),
        Op::Setattr(a) => Some([a.inode, 0]),
        Op::Unlink(_) | Op::Rmdir(_) | Op::Rename(_) => None,
    }
}

/// Whether a call must wait for the queue first: all but the queue's own
/// and those that do not depend on it.
pub(crate) fn waits_for_queue(method: &str) -> bool {
    !matches!(
        method,
        "Batch"
            | "Delegate"
            | "HoldChunks"
            | "Recalls"
            | "Heartbeat"
            | "RegisterSession"
            | "Challenge"
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use mfs_proto::v1::{CreateAtOp, UnlinkRequest, WriteChunkEndRequest};

    use super::*;

    fn create(parent: u64, inode: u64) -> BatchOp {
        BatchOp {
            op: Some(batch_op::Op::Create(CreateAtOp {
                parent,
                inode,
                name: b"f".to_vec(),
                ..Default::default()
            })),
        }
    }

    fn write_end(inode: u64) -> BatchOp {
        BatchOp {
            op: Some(batch_op::Op::WriteEnd(WriteChunkEndRequest {
                inode,
                ..Default::default()
            })),
        }
    }

    /// Whether the barrier for `scope` is passed now (without an answer).
    async fn passes(q: &Queue, scope: Scope<'_>) -> bool {
        tokio::time::timeout(Duration::from_millis(20), q.barrier_in(scope))
            .await
            .is_ok()
    }

    fn answer(q: &Queue, n: u64) {
        q.lock().ops.drain(..n as usize);
        q.done.send_modify(|d| *d += n);
    }

    #[tokio::test]
    async fn a_scoped_call_waits_only_for_ops_on_its_inodes_and_for_removals() {
        let q = Queue::default();
        q.push(create(1, 10));
        q.push(write_end(10));
        // Another file, the directory, the file itself: only the first passes.
        assert!(passes(&q, Scope::Inodes(&[11])).await);
        assert!(!passes(&q, Scope::Inodes(&[1])).await);
        assert!(!passes(&q, Scope::Inodes(&[11, 10])).await);
        assert!(!passes(&q, Scope::All).await);
        assert!(q.waits_on(10) && !q.waits_on(11));
        // The create answered, not the length commit.
        answer(&q, 1);
        assert!(passes(&q, Scope::Inodes(&[1])).await);
        assert!(!passes(&q, Scope::Inodes(&[10])).await);
        // A removal holds back every call, whatever its inodes.
        q.push(BatchOp {
            op: Some(batch_op::Op::Unlink(UnlinkRequest {
                parent: 2,
                name: b"g".to_vec(),
                ..Default::default()
            })),
        });
        assert!(!passes(&q, Scope::Inodes(&[11])).await);
        answer(&q, 1);
        assert!(!passes(&q, Scope::Inodes(&[11])).await);
        answer(&q, 1);
        assert!(passes(&q, Scope::Inodes(&[11])).await);
        assert!(passes(&q, Scope::All).await);
        assert!(!q.waits_on(10));
    }

    #[tokio::test]
    async fn a_removal_queued_with_its_reach_holds_back_only_calls_on_it() {
        let q = Queue::default();
        let unlink = BatchOp {
            op: Some(batch_op::Op::Unlink(UnlinkRequest {
                parent: 2,
                name: b"g".to_vec(),
                ..Default::default()
            })),
        };
        q.push_with(unlink, Some(&[2, 20]), None);
        // Another directory, another file: not held back.
        assert!(passes(&q, Scope::Inodes(&[3])).await);
        assert!(passes(&q, Scope::Inodes(&[21])).await);
        // The directory, the file removed (other names may lead to it).
        assert!(!passes(&q, Scope::Inodes(&[2])).await);
        assert!(!passes(&q, Scope::Inodes(&[3, 20])).await);
        assert!(q.waits_on(20) && !q.waits_on(3));
        assert!(!passes(&q, Scope::All).await);
        answer(&q, 1);
        assert!(passes(&q, Scope::Inodes(&[2, 20])).await);
        assert!(!q.waits_on(20));
    }
}
