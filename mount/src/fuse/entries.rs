//! Names the kernel may keep long: those looked up in a directory this
//! mount holds.
//!
//! The kernel asks again for a name it has cached once the entry time
//! given with it has passed (`mfsentrycacheto`, 1 s by default): a LOOKUP
//! before the next rename, unlink or open of the name. In a directory the
//! mount holds (`writeback`), nobody else changes a name before the
//! master has recalled the directory from this mount, so a lookup
//! answered there gives the kernel a long entry time ([`HELD_ENTRY_TTL`]),
//! and the directory notes the name. When the mount stops holding the
//! directory (a recall, a give-back, the recall stream down), the names
//! noted are dropped from the kernel (FUSE_NOTIFY_INVAL_ENTRY) before the
//! master hears that the directory is back: the next use of one asks
//! again, with the usual entry time. A noted name that a rename moves to
//! a directory not held here is dropped once the rename is done.
//!
//! The drops run on a thread of their own. The kernel takes the
//! directory's lock for a drop, which a call in flight in that directory
//! holds until a FUSE thread answers it; no FUSE thread waits for this
//! thread. A drop cannot come too early either: a lookup answered just
//! before its directory was given back is either installed by the kernel
//! under the directory's lock (the drop waits for it) or revalidates a
//! name the drop unhashes (the kernel's next walk asks again).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::OnceLock;
use std::time::Duration;

use fuser::Notifier;

use super::convert::InodeMap;
use super::Kernel;

/// The entry time of a name looked up in a directory held here.
pub const HELD_ENTRY_TTL: Duration = Duration::from_secs(60);

/// Names to drop: (master inode of the directory, name).
pub type Names = Vec<(u64, Vec<u8>)>;

struct Job {
    names: Names,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

/// The thread that drops names from the kernel.
pub struct Entries {
    tx: Sender<Job>,
    notifier: Kernel,
}

impl std::fmt::Debug for Entries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entries")
            .field("ready", &self.ready())
            .finish()
    }
}

impl Entries {
    /// Starts the thread; `map` turns master inodes into the kernel's.
    /// Nothing may be given a long entry time before `kernel` holds the
    /// session's notifier ([`Entries::ready`]).
    pub fn start(map: InodeMap, kernel: Kernel) -> std::io::Result<Entries> {
        let (tx, rx) = channel();
        let n = kernel.clone();
        std::thread::Builder::new()
            .name("mfs-entries".into())
            .spawn(move || drop_loop(&n, map, rx))?;
        Ok(Entries {
            tx,
            notifier: kernel,
        })
    }

    /// Whether names can be dropped (and so given a long entry time).
    pub fn ready(&self) -> bool {
        self.notifier.get().is_some()
    }

    /// Drops `names` from the kernel; the answer comes once they are
    /// dropped (at once when there are none).
    pub fn drop_names(&self, names: Names) -> tokio::sync::oneshot::Receiver<()> {
        let (done, rx) = tokio::sync::oneshot::channel();
        if names.is_empty() {
            let _ = done.send(());
        } else {
            // A thread gone (it never panics) leaves the sender dropped:
            // the receiver ends too, and nothing waits for ever.
            let _ = self.tx.send(Job {
                names,
                done: Some(done),
            });
        }
        rx
    }

    /// [`Entries::drop_names`] with no one waiting.
    pub fn drop_later(&self, names: Names) {
        if !names.is_empty() {
            let _ = self.tx.send(Job { names, done: None });
        }
    }
}

fn drop_loop(notifier: &OnceLock<Notifier>, map: InodeMap, rx: Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        if let Some(n) = notifier.get() {
            for (dir, name) in &job.names {
                // ENOENT: the kernel has no such name cached (any more).
                if let Err(e) = n.inval_entry(map.to_kernel(*dir), OsStr::from_bytes(name)) {
                    if e.raw_os_error() != Some(libc::ENOENT) {
                        tracing::debug!(dir, error = %e, "dropping a name from the kernel");
                    }
                }
            }
        }
        if let Some(done) = job.done {
            let _ = done.send(());
        }
    }
}
