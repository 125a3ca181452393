//! Running a short call on the thread that received it.
//!
//! A FUSE request handed to the shared tokio runtime crosses threads
//! several times: the FUSE reader wakes a runtime worker, the worker hands
//! the request to the channel's own tasks, and the reply comes back the same
//! way. On a small machine those wake-ups cost more than the master's work.
//! [`run`] instead drives the call to its end on the calling thread, with a
//! runtime of that thread's own; gRPC channels made while it runs
//! ([`channel`]) belong to that thread too, so a round trip is one write
//! and one wait on the socket.
//!
//! Only calls that end without help from another FUSE request may run so
//! (not a lock wait): the thread reads no other request until it is done.

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::future::Future;

use tonic::transport::Channel;

thread_local! {
    static RUNTIME: OnceCell<Option<tokio::runtime::Runtime>> = const { OnceCell::new() };
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    static CHANNELS: RefCell<HashMap<(&'static str, String), Channel>> = RefCell::new(HashMap::new());
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
/// (which goes on to the FUSE thread, as a task's would end the task).
struct Inside;

impl Drop for Inside {
    fn drop(&mut self) {
        INSIDE.set(false);
    }
}

/// This thread's channel to the `kind` of server ("master", "chunk") at
/// `addr` while [`run`] drives a call here (made by `make` on first use),
/// else `None`: use the shared one.
///
/// Such a channel's connection is looked after only while a call runs on
/// this thread: make it without HTTP/2 keep-alive pings, whose answer could
/// wait unread past their timeout (TCP keep-alive still finds a dead peer).
pub(crate) fn channel(
    kind: &'static str,
    addr: &str,
    make: impl FnOnce() -> Option<Channel>,
) -> Option<Channel> {
    if !INSIDE.get() {
        return None;
    }
    CHANNELS.with(|map| {
        let key = (kind, addr.to_string());
        if let Some(ch) = map.borrow().get(&key) {
            return Some(ch.clone());
        }
        let ch = make()?;
        map.borrow_mut().insert(key, ch.clone());
        Some(ch)
    })
}
