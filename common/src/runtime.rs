//! The async runtime of a daemon: how many worker threads it runs, and
//! whether its threads give way to the ones they wake.
//!
//! Both are measured choices for a metadata server whose work is many short
//! steps handed between tasks and processes (a request, its Raft append on
//! every master, the replies): on a machine where masters, chunkservers
//! and clients share few cores, one worker thread per master and
//! `SCHED_BATCH` cut the context switches per request (see ARCHITECTURE.md,
//! "Threads").

use std::io;

/// Builds the tokio runtime: with one worker, a current-thread runtime (the
/// calling thread runs every task and waits on the I/O driver itself, with
/// no worker to hand work to and park); else a multi-thread runtime with
/// `workers` worker threads (0: one per CPU). With `batch`, the calling
/// thread is first moved to Linux's `SCHED_BATCH` policy, which every
/// thread it starts afterwards (the runtime's, and those the daemon
/// spawns) inherits: a thread woken by another does not preempt it, so a
/// task that sends a message runs on to its next step instead of being
/// switched out for the receiver at once. Where the policy cannot be set
/// (a sandbox that forbids it), a warning says so and the daemon runs
/// without it. Call it before starting any other thread.
pub fn build(workers: usize, batch: bool) -> io::Result<tokio::runtime::Runtime> {
    if batch {
        batch_policy_or_warn();
    }
    let mut b = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    if workers > 1 {
        b.worker_threads(workers);
    }
    b.enable_all().build()
}

/// [`set_batch_policy`], with a warning instead of an error: the policy
/// only makes things faster.
pub fn batch_policy_or_warn() {
    if let Err(e) = set_batch_policy() {
        tracing::warn!("{e}; running without it");
    }
}

/// Moves the calling thread to `SCHED_BATCH` (priority 0: no privilege
/// needed); the threads it starts afterwards inherit the policy.
fn set_batch_policy() -> io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param
    // that outlives the call.
    let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
    if rc != 0 {
        return Err(io::Error::other(format!(
            "cannot set the SCHED_BATCH CPU policy: {} (turn the SCHED_BATCH setting off, mfsschedbatch=0 for a mount, to run without it and without this warning)",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_of(tid: libc::pid_t) -> i32 {
        // SAFETY: sched_getscheduler only reads the policy of `tid`.
        unsafe { libc::sched_getscheduler(tid) }
    }

    #[test]
    fn batch_policy_reaches_the_runtime_threads() {
        // A thread of its own, so the test harness's threads keep theirs.
        let before = policy_of(0);
        std::thread::spawn(|| {
            for workers in [1, 2] {
                let rt = build(workers, true).unwrap();
                let worker = rt.block_on(async {
                    tokio::spawn(async {
                        // SAFETY: gettid has no preconditions.
                        let tid = unsafe { libc::gettid() };
                        policy_of(tid)
                    })
                    .await
                    .unwrap()
                });
                assert_eq!(worker, libc::SCHED_BATCH, "{workers} workers");
                assert_eq!(policy_of(0), libc::SCHED_BATCH);
            }
        })
        .join()
        .unwrap();
        assert_eq!(policy_of(0), before);
    }
}
