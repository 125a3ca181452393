//! Running a short call on the thread that received it.
//!
//! A FUSE request handed to the shared tokio runtime crosses threads
//! several times: the FUSE reader wakes a runtime worker, the worker hands
//! the request to the channel's own tasks, and the reply comes back the same
//! way. On a small machine those wake-ups cost more than the master's work.
//! [`run_caught`] instead drives the call to its end on the calling thread, with a
//! runtime of that thread's own; gRPC channels made while it runs
//! ([`channel`]) belong to that thread too, so a round trip is one write
//! and one wait on the socket.
//!
//! Only calls that end without help from another FUSE request may run so
//! (not a lock wait): the thread reads no other request until it is done.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

/// This thread's channels: (kind, address) -> the channel and what is
/// known of it.
type Channels = HashMap<(&'static str, String), Held>;

/// One of this thread's channels.
#[derive(Debug, Clone)]
struct Held {
    /// The generation of its server when it was made.
    made: u64,
    /// When a call last took it.
    used: Instant,
    channel: Channel,
}

/// A channel of a FUSE thread not taken for this long is dropped (its
/// connection closes), so a mount does not keep a connection per thread to
/// every chunkserver it once read from.
const IDLE: Duration = Duration::from_secs(120);

thread_local! {
    static RUNTIME: OnceCell<Option<tokio::runtime::Runtime>> = const { OnceCell::new() };
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    static CHANNELS: RefCell<Channels> = RefCell::new(HashMap::new());
    static PRUNED: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `fut` to its end on this thread. Gives the future back when this
/// thread cannot (it already runs one, or is a runtime's own thread, or
/// no runtime could be made): the caller then spawns it as usual.
///
/// A panic of the call ends the call only, as it would end a task: it is
/// logged, and the FUSE reply it held, dropped unsent, answers EIO.
pub(crate) fn run_caught<F: Future<Output = ()>>(fut: F) -> Result<(), F> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || run(fut))) {
        Ok(r) => r,
        Err(_) => {
            tracing::error!("a FUSE call panicked; it was answered with EIO");
            Ok(())
        }
    }
}

/// [`run_caught`] without the catch.
fn run<F: Future>(fut: F) -> Result<F::Output, F> {
    if INSIDE.get() || tokio::runtime::Handle::try_current().is_ok() {
        return Err(fut);
    }
    RUNTIME.with(|rt| {
        let rt = rt.get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| tracing::warn!(error = %e, "no runtime of its own for a FUSE thread"))
                .ok()
        });
        let Some(rt) = rt else {
            return Err(fut);
        };
        INSIDE.set(true);
        let _inside = Inside;
        Ok(rt.block_on(fut))
    })
}

/// Clears the mark of a call running here when it ends, also by a panic
/// (which [`run_caught`] stops).
struct Inside;

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.set(false);
    }
}

/// This thread's channel to the `kind` of server ("master", "chunk") at
/// `addr` while [`run_caught`] drives a call here, else `None`: use the
/// shared one. The channel is made by `make` on first use, and again when
/// the server's `generation` has grown since (a call found its connections
/// broken: see [`Generation`]); neither is asked for outside such a call.
///
/// Such a channel's connection is looked after only while a call runs on
/// this thread: make it without HTTP/2 keep-alive pings, whose answer could
/// wait unread past their timeout (TCP keep-alive still finds a dead peer).
pub(crate) fn channel(
    kind: &'static str,
    addr: &str,
    generation: impl FnOnce() -> u64,
    make: impl FnOnce() -> Option<Channel>,
) -> Option<Channel> {
    if !INSIDE.get() {
        return None;
    }
    let generation = generation();
    let now = Instant::now();
    CHANNELS.with(|map| {
        let mut map = map.borrow_mut();
        if PRUNED
            .get()
            .is_none_or(|t| now.duration_since(t) >= IDLE / 2)
        {
            PRUNED.set(Some(now));
            prune(&mut map, now, IDLE);
        }
        let key = (kind, addr.to_string());
        if let Some(h) = map.get_mut(&key) {
            if h.made >= generation {
                h.used = now;
                return Some(h.channel.clone());
            }
        }
        let channel = make()?;
        let held = Held {
            made: generation,
            used: now,
            channel: channel.clone(),
        };
        map.insert(key, held);
        Some(channel)
    })
}

/// Drops the channels not taken for `idle`.
fn prune(map: &mut Channels, now: Instant, idle: Duration) {
    map.retain(|_, h| now.duration_since(h.used) < idle);
}

/// Whether a call runs here under [`run_caught`] (its channels are this
/// thread's).
pub(crate) fn inside() -> bool {
    INSIDE.get()
}

/// How many times calls found the connections to one server broken. Each
/// FUSE thread has its own connection to a server, and a server that
/// restarted left each of them dead; the first call to find that out bumps
/// this, so that the other threads connect anew before their next call
/// instead of each failing once and backing off.
#[derive(Debug, Default)]
pub(crate) struct Generation(std::sync::atomic::AtomicU64);

impl Generation {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks every thread's connection made before now as broken.
    pub(crate) fn bump(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell as Counter;

    fn lazy(addr: &str) -> Option<Channel> {
        mfs_proto::tls::endpoint(addr)
            .ok()
            .map(|e| e.connect_lazy())
    }

    #[test]
    fn calls_run_here_with_channels_of_this_thread() {
        let made = Counter::new(0);
        let make = || {
            made.set(made.get() + 1);
            lazy("127.0.0.1:1")
        };
        assert!(
            channel("master", "127.0.0.1:1", || 0, make).is_none(),
            "outside run"
        );
        let out = run(async {
            assert!(inside());
            // A nested call is handed back, to be spawned.
            assert!(run(async {}).is_err());
            let a = channel("master", "127.0.0.1:1", || 0, make).is_some();
            let b = channel("master", "127.0.0.1:1", || 0, make).is_some();
            let other_kind = channel("chunk", "127.0.0.1:1", || 0, make).is_some();
            a && b && other_kind
        });
        assert_eq!(out.ok(), Some(true));
        assert_eq!(made.get(), 2, "one channel per kind and address");
        assert!(!inside());

        let out = run(async {
            // Broken since: made anew, once.
            channel("master", "127.0.0.1:1", || 1, make);
            channel("master", "127.0.0.1:1", || 1, make);
        });
        assert!(out.is_ok());
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn idle_channels_are_dropped() {
        let out = run(async {
            let mut map = Channels::new();
            let t0 = Instant::now();
            for (addr, used) in [("127.0.0.1:1", t0), ("127.0.0.1:2", t0 + IDLE)] {
                let channel = lazy(addr)?;
                map.insert(
                    ("chunk", addr.to_string()),
                    Held {
                        made: 0,
                        used,
                        channel,
                    },
                );
            }
            prune(&mut map, t0 + IDLE, IDLE);
            Some(map.keys().map(|(_, a)| a.clone()).collect::<Vec<_>>())
        });
        assert_eq!(out.ok().flatten(), Some(vec!["127.0.0.1:2".to_string()]));
    }

    #[test]
    fn a_panic_ends_the_call_not_the_thread() {
        assert!(run_caught(async { panic!("boom") }).is_ok());
        assert!(!inside());
        assert_eq!(run(async { 7 }).ok(), Some(7));
    }

    #[tokio::test]
    async fn a_runtime_thread_spawns_instead() {
        assert!(run(async {}).is_err());
    }
}
