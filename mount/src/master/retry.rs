//! The one retry loop every call to the master group goes through.
//!
//! An attempt goes to the master believed to lead. A redirect (UNAVAILABLE
//! with `mfs-leader`) is followed at once; anything that means "no answer
//! here" (UNAVAILABLE without a hint, a transport error, no reply within the
//! per-attempt timeout) moves on to the next master after a short backoff.
//! A real answer (an `mfs-errno`, INVALID_ARGUMENT, ...) ends the call. The
//! request is built once and cloned for each attempt, so a mutating call
//! keeps its RequestId across attempts and runs exactly once.

use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rand::Rng;
use tonic::{Code, Status};

use super::addr::leader_hint;
use super::queue::Scope;
use super::Inner;
use crate::error::{errno_of, from_status, status_text, ClientError};

/// First pause after a failed attempt.
const BACKOFF_START: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
const BACKOFF_CAP: Duration = Duration::from_millis(150);
/// A call stalled this long is logged (then again at each doubling).
const STALL_WARN: Duration = Duration::from_secs(5);

/// What to do after a failed attempt.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// Not the leader; the leader is at this address: go there now.
    Redirect(String),
    /// No answer from this master (or no leader known): try another.
    Retry(String),
    /// A real answer: give it to the caller.
    Final(ClientError),
}

/// Sorts a failed status into redirect, retry or final answer.
pub(crate) fn classify(status: &Status) -> Verdict {
    if errno_of(status).is_some() {
        return Verdict::Final(from_status(status));
    }
    match status.code() {
        Code::Unavailable => match leader_hint(status.metadata()) {
            Some(hint) => Verdict::Redirect(hint),
            None => Verdict::Retry(status_text(status)),
        },
        // What a dropped connection, a reset stream or a GOAWAY of a dying
        // master look like (tonic maps h2 and hyper errors to these).
        Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal
        | Code::Aborted => Verdict::Retry(status_text(status)),
        _ => Verdict::Final(from_status(status)),
    }
}

/// Exponential backoff with jitter: 50 ms, 100 ms, 150 ms, capped there (an
/// election takes about 1-1.5 s; a short cap keeps the stall close to it;
/// a try that fails costs a refused connection or a redirect), each
/// pause drawn from [half, full].
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff {
            next: BACKOFF_START,
        }
    }

    pub(crate) fn pause(&mut self) -> Duration {
        let full = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        let half = full / 2;
        let extra_ns = rand::rng().random_range(0..=half.as_nanos() as u64);
        half + Duration::from_nanos(extra_ns)
    }
}

impl Inner {
    /// [`Inner::call_with_limit`] with the client's overall timeout.
    pub(crate) async fn call<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        req: Req,
        f: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(super::Conn, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.call_in(method, Scope::All, req, f).await
    }

    /// [`Inner::call`] waiting only for the queued ops `scope` depends on.
    pub(crate) async fn call_in<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        scope: Scope<'_>,
        req: Req,
        f: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(super::Conn, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.call_with_limit(method, scope, req, self.opts.overall_timeout, f)
            .await
    }

    /// Runs `f` (one RPC on a channel) against the leader until it answers,
    /// following redirects and failing over, for at most `limit` (None: for
    /// ever). Each attempt gets a clone of `req` and at most the per-attempt
    /// timeout.
    pub(crate) async fn call_with_limit<Req, Resp, F, Fut>(
        &self,
        method: &'static str,
        scope: Scope<'_>,
        req: Req,
        limit: Option<Duration>,
        f: F,
    ) -> Result<Resp, ClientError>
    where
        Req: Clone,
        F: Fn(super::Conn, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        if super::queue::waits_for_queue(method) {
            self.queue.barrier_in(scope).await;
        }
        let start = Instant::now();
        let deadline = limit.map(|l| start + l);
        // `rr` walks the list round-robin from the believed leader; `idx` is
        // where the next attempt goes (rr, or where a hint pointed).
        let mut rr = self.leader.load(Ordering::Relaxed);
        let mut idx = rr;
        // Masters that gave no answer in this round: a stale hint pointing
        // at one of them is not followed (the round goes on instead, so a
        // follower that still names the dead leader cannot trap the call).
        let mut failed: HashSet<usize> = HashSet::new();
        let mut backoff = Backoff::new();
        let mut attempts = 0u32;
        let mut hops_in_a_row = 0usize;
        let mut last_error = String::from("no attempt made");
        let mut next_warn = STALL_WARN;
        let mut renewed = false;
        loop {
            let (at, master) = self.master_at(idx);
            let attempt_limit = match deadline {
                Some(d) => d
                    .saturating_duration_since(Instant::now())
                    .min(self.opts.call_timeout),
                None => self.opts.call_timeout,
            };
            if attempt_limit.is_zero() {
                return Err(self.timeout_error(start, last_error));
            }
            attempts += 1;
            let attempt_start = Instant::now();
            let verdict = match tokio::time::timeout(
                attempt_limit,
                f(self.conn(self.channel_of(&master)), req.clone()),
            )
            .await
            {
                Ok(Ok(resp)) => {
                    self.answered_by(at);
                    if attempts > 1 {
                        let stall = start.elapsed();
                        self.stats.record_stall(stall);
                        if stall >= STALL_WARN {
                            tracing::info!(method, master = %master.addr, ?stall, "master answered again");
                        }
                    }
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => match classify(&status) {
                    // The call failed here, in the transport (a status with
                    // a source), on this FUSE thread's own connection: it
                    // may have died unseen (the master restarted while the
                    // thread was idle). Go again at once, with new
                    // connections on every thread. Not when the failure
                    // took a ping's timeout to come: that master is silent
                    // (its machine lost its network), a new connection to
                    // it would only wait for its connect timeout.
                    Verdict::Retry(_)
                        if std::error::Error::source(&status).is_some()
                            && crate::inline::inside()
                            && !renewed
                            && attempt_start.elapsed() < mfs_proto::PING_TIMEOUT =>
                    {
                        renewed = true;
                        master.broken.bump();
                        continue;
                    }
                    v => v,
                },
                Err(_) => Verdict::Retry(format!("no reply within {attempt_limit:.1?}")),
            };
            let (text, answered) = match verdict {
                Verdict::Final(e) => return Err(e),
                Verdict::Retry(text) => (text, false),
                Verdict::Redirect(hint) => {
                    self.stats.redirects.fetch_add(1, Ordering::Relaxed);
                    let to = self.index_for(&hint);
                    hops_in_a_row += 1;
                    // Stale hints point at a dead leader, or in a circle,
                    // while an election runs: follow at once only when
                    // neither is happening.
                    if to != at && !failed.contains(&to) && hops_in_a_row <= self.master_count() {
                        tracing::debug!(method, from = %master.addr, to = %hint, "following leader hint");
                        last_error =
                            format!("{}: not the leader, redirected to {hint}", master.addr);
                        idx = to;
                        continue;
                    }
                    (
                        format!("not the leader; its hint {hint} gave no answer"),
                        true,
                    )
                }
            };
            tracing::debug!(method, master = %master.addr, error = %text, "attempt failed, trying the next master");
            last_error = format!("{}: {text}", master.addr);
            hops_in_a_row = 0;
            if !answered {
                failed.insert(at);
            }
            if failed.len() >= self.master_count() {
                failed.clear(); // a new round: every master gets another chance
            }
            rr = self.master_at(rr).0 + 1;
            idx = rr;
            let pause = backoff.pause();
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            let elapsed = start.elapsed();
            if elapsed >= next_warn {
                tracing::warn!(method, ?elapsed, last_error = %last_error, "no master answered yet, still trying");
                next_warn *= 2;
            }
            let pause = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(self.timeout_error(start, last_error));
                    }
                    pause.min(left)
                }
                None => pause,
            };
            tokio::time::sleep(pause).await;
        }
    }

    /// One attempt on one given master, no redirects, no retries.
    pub(crate) async fn call_one<Req, Resp, F, Fut>(
        &self,
        addr: &str,
        req: Req,
        f: F,
    ) -> Result<Resp, ClientError>
    where
        F: FnOnce(super::Conn, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        let channel = self.channel_for(addr)?;
        let limit = self.opts.call_timeout;
        match tokio::time::timeout(limit, f(self.conn(channel), req)).await {
            Ok(Ok(resp)) => Ok(resp.into_inner()),
            Ok(Err(status)) => match classify(&status) {
                Verdict::Final(e) => Err(e),
                Verdict::Redirect(_) => Err(from_status(&status)),
                Verdict::Retry(message) => Err(ClientError::Unreachable {
                    addr: addr.to_string(),
                    message,
                }),
            },
            Err(_) => Err(ClientError::Unreachable {
                addr: addr.to_string(),
                message: format!("no reply within {limit:.1?}"),
            }),
        }
    }

    fn timeout_error(&self, start: Instant, last_error: String) -> ClientError {
        ClientError::Timeout {
            elapsed: start.elapsed(),
            masters: self.addresses().join(","),
            last_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataMap;

    fn status(code: Code, pairs: &[(&'static str, &str)]) -> Status {
        let mut md = MetadataMap::new();
        for (k, v) in pairs {
            md.insert(*k, v.parse().expect("ascii"));
        }
        Status::with_metadata(code, "msg", md)
    }

    #[test]
    fn classify_statuses() {
        let hint = status(
            Code::Unavailable,
            &[(mfs_proto::LEADER_KEY, "10.0.0.2:9421")],
        );
        assert!(matches!(classify(&hint), Verdict::Redirect(h) if h == "10.0.0.2:9421"));
        let election = status(Code::Unavailable, &[]);
        assert!(matches!(classify(&election), Verdict::Retry(_)));
        let empty_hint = status(Code::Unavailable, &[(mfs_proto::LEADER_KEY, "")]);
        assert!(matches!(classify(&empty_hint), Verdict::Retry(_)));
        for code in [
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
            Code::DeadlineExceeded,
        ] {
            assert!(
                matches!(classify(&status(code, &[])), Verdict::Retry(_)),
                "{code:?}"
            );
        }
        let errno = status(Code::NotFound, &[(mfs_proto::ERRNO_KEY, "2")]);
        assert!(matches!(
            classify(&errno),
            Verdict::Final(ClientError::Errno(2, _))
        ));
        // An errno is an answer even on a code that is otherwise retried.
        let errno = status(Code::Internal, &[(mfs_proto::ERRNO_KEY, "5")]);
        assert!(matches!(
            classify(&errno),
            Verdict::Final(ClientError::Errno(5, _))
        ));
        let bad = status(Code::InvalidArgument, &[]);
        assert!(matches!(
            classify(&bad),
            Verdict::Final(ClientError::InvalidArgument(_))
        ));
        let unimpl = status(Code::Unimplemented, &[]);
        assert!(matches!(
            classify(&unimpl),
            Verdict::Final(ClientError::Status { .. })
        ));
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new();
        let p = b.pause();
        assert!(
            p >= Duration::from_millis(25) && p <= Duration::from_millis(50),
            "{p:?}"
        );
        let p = b.pause();
        assert!(
            p >= Duration::from_millis(50) && p <= Duration::from_millis(100),
            "{p:?}"
        );
        for _ in 0..20 {
            let p = b.pause();
            assert!(p <= BACKOFF_CAP, "{p:?}");
        }
        assert!(b.pause() >= BACKOFF_CAP / 2);
    }
}
