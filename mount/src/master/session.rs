//! The client's session: request ids for exactly-once execution, the
//! heartbeat task, and registering anew when the master forgot the session.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use mfs_proto::v1::{HeartbeatRequest, RequestId};

use super::queue::Scope;
use super::{meta_client, Inner};
use crate::error::ClientError;

/// Sequence numbers of one session: which were issued, which are in flight.
#[derive(Debug)]
pub(crate) struct SeqState {
    /// The session id (0: no session registered).
    pub(crate) session: u64,
    seqs: Mutex<Seqs>,
}

#[derive(Debug, Default)]
struct Seqs {
    /// Last sequence number issued (the first is 1).
    last: u64,
    /// Issued and not yet completed.
    in_flight: BTreeSet<u64>,
}

impl SeqState {
    pub(crate) fn new(session: u64) -> Self {
        SeqState {
            session,
            seqs: Mutex::new(Seqs::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seqs> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every update is a single insert or remove): keep going.
        self.seqs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Issues the next request id. The number is taken under the same lock
    /// as the in-flight set, so a concurrently issued lower number can never
    /// be missing from the set when `acked` is computed.
    pub(crate) fn issue(self: &Arc<Self>) -> PendingRequest {
        let mut s = self.lock();
        s.last += 1;
        let seq = s.last;
        s.in_flight.insert(seq);
        let acked = acked_of(&s);
        drop(s);
        PendingRequest {
            state: Arc::clone(self),
            id: RequestId {
                session: self.session,
                seq,
                acked,
            },
        }
    }

    /// The highest seq such that every seq up to it has completed.
    pub(crate) fn acked(&self) -> u64 {
        acked_of(&self.lock())
    }

    fn complete(&self, seq: u64) {
        self.lock().in_flight.remove(&seq);
    }
}

fn acked_of(s: &Seqs) -> u64 {
    match s.in_flight.first() {
        Some(lowest) => lowest - 1,
        None => s.last,
    }
}

/// A request id taken for one mutating call. Every attempt of that call
/// carries the same id; dropping this (the call finished, failed for good, or
/// was abandoned) marks the sequence number completed, so later requests can
/// acknowledge it.
#[derive(Debug)]
pub struct PendingRequest {
    state: Arc<SeqState>,
    id: RequestId,
}

impl PendingRequest {
    /// The id to put in the request.
    pub fn id(&self) -> RequestId {
        self.id
    }
}

impl Drop for PendingRequest {
    fn drop(&mut self) {
        self.state.complete(self.id.seq);
    }
}

/// Registers a new session after `lost` (a session id) turned out unknown to
/// the master. Concurrent callers that saw the same lost session register
/// once between them.
pub(crate) async fn renew(inner: &Arc<Inner>, lost: u64) -> Result<(), ClientError> {
    let _one_at_a_time = inner.renew_lock.lock().await;
    if inner.current_session().session != lost {
        return Ok(()); // someone else already did
    }
    tracing::warn!(
        session = lost,
        "master lost our session, registering a new one"
    );
    inner.register().await?;
    inner.new_leader_epoch();
    tracing::warn!(
        old = lost,
        new = inner.current_session().session,
        "new session registered; replies of requests under the old session are not deduplicated"
    );
    Ok(())
}

/// One heartbeat for `session`, following the leader, trying for at most
/// `limit`.
pub(crate) async fn heartbeat_once(
    inner: &Inner,
    session: u64,
    limit: Duration,
) -> Result<(), ClientError> {
    inner
        .call_with_limit(
            "Heartbeat",
            Scope::All,
            HeartbeatRequest { session },
            Some(limit),
            |ch, r| async move { meta_client(ch).heartbeat(r).await },
        )
        .await
        .map(|_| ())
}

/// The heartbeat interval for a session timeout: a third of it, at least
/// 100 ms (timeout_secs 0 is read as the MooseFS default of 60 s).
pub(crate) fn interval_for(timeout_secs: u32) -> Duration {
    let t = if timeout_secs == 0 { 60 } else { timeout_secs };
    (Duration::from_secs(u64::from(t)) / 3).max(Duration::from_millis(100))
}

/// Sends heartbeats until the client is dropped or the session closed.
pub(crate) async fn heartbeat_loop(weak: Weak<Inner>) {
    loop {
        let interval = match weak.upgrade() {
            Some(inner) => inner.heartbeat_interval(),
            None => return,
        };
        tokio::time::sleep(interval).await;
        let Some(inner) = weak.upgrade() else { return };
        let session = inner.current_session().session;
        if session == 0 {
            return; // closed
        }
        match heartbeat_once(&inner, session, interval).await {
            Ok(()) => {}
            Err(e) if e.is_session_unknown() => {
                if let Err(e) = renew(&inner, session).await {
                    tracing::warn!(session, error = %e, "could not register a new session; will retry");
                }
            }
            Err(e) => tracing::debug!(session, error = %e, "heartbeat failed; will retry"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acked_follows_lowest_in_flight() {
        let st = Arc::new(SeqState::new(7));
        assert_eq!(st.acked(), 0);
        let r1 = st.issue();
        let r2 = st.issue();
        let r3 = st.issue();
        assert_eq!((r1.id().seq, r2.id().seq, r3.id().seq), (1, 2, 3));
        assert_eq!((r1.id().acked, r2.id().acked, r3.id().acked), (0, 0, 0));
        assert_eq!(r1.id().session, 7);
        drop(r2);
        assert_eq!(st.acked(), 0, "1 is still in flight");
        drop(r1);
        assert_eq!(st.acked(), 2, "3 is in flight");
        let r4 = st.issue();
        assert_eq!((r4.id().seq, r4.id().acked), (4, 2));
        drop(r3);
        let r5 = st.issue();
        assert_eq!((r5.id().seq, r5.id().acked), (5, 3));
        drop(r4);
        drop(r5);
        assert_eq!(st.acked(), 5, "none in flight: the last issued");
        let r6 = st.issue();
        assert_eq!((r6.id().seq, r6.id().acked), (6, 5));
    }

    #[test]
    fn acked_is_always_below_own_seq_under_concurrency() {
        let st = Arc::new(SeqState::new(1));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let st = Arc::clone(&st);
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for i in 0..500 {
                        let r = st.issue();
                        assert!(r.id().acked < r.id().seq);
                        if i % 3 == 0 {
                            held.push(r);
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        assert_eq!(st.acked(), 4000);
    }

    #[test]
    fn heartbeat_interval() {
        assert_eq!(interval_for(30), Duration::from_secs(10));
        assert_eq!(interval_for(0), Duration::from_secs(20));
        assert_eq!(
            interval_for(1),
            Duration::from_millis(333) + Duration::from_nanos(333_333)
        );
    }
}
