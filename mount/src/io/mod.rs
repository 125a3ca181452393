//! [`FileIo`]: reading and writing file data, the client half of the data
//! path.
//!
//! Metadata goes to the master group through [`MasterClient`]; data goes
//! straight to the chunkservers. A request is cut at chunk edges (64 MiB)
//! and into pieces of at most [`IoOptions::max_request`] bytes, and the
//! pieces run in parallel (at most [`IoOptions::parallelism`] at a time).
//!
//! - Reads ([`read`](FileIo::read)) ask the master where a chunk is
//!   (ReadChunk; cached per chunk for [`IoOptions::location_ttl`]), read from
//!   the first copy, fail over to the next, ask the master again after a
//!   stale version or when every copy failed, and keep trying with backoff
//!   until the time limit. Holes read as zeros; reads stop at the end of the
//!   file, counting what this client wrote and has not committed yet.
//! - Writes ([`write`](FileIo::write)) take the chunk's write lease
//!   (WriteChunk, kept while writing), send each piece to the first server of
//!   the chain, which forwards it along the rest; on a failure the lease is
//!   renewed (WriteChunk with `renew`) and the piece sent again. The new file
//!   length is committed (WriteChunkEnd, which also releases the lease) by
//!   [`flush`](FileIo::flush), [`fsync`](FileIo::fsync), or by a background
//!   task once the file has seen no write for [`IoOptions::idle_flush`].
//!
//! ```no_run
//! # async fn demo(master: mfs_mount::MasterClient, inode: u64) -> Result<(), mfs_mount::ClientError> {
//! use mfs_mount::io::{FileIo, IoOptions};
//! let io = FileIo::new(master, IoOptions::default());
//! io.write(inode, 0, b"hello").await?;
//! io.flush(inode).await?;
//! assert_eq!(io.read(inode, 0, 100).await?, b"hello");
//! # Ok(()) }
//! ```

mod batch;
mod blocks;
mod conn;
mod read;
mod split;
mod write;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mfs_proto::v1::{ChunkLocation, Credentials, WriteChunkEndRequest, WriteChunkRequest};
use rand::Rng;

use crate::error::ClientError;
use crate::master::queue::Answered;
use crate::master::MasterClient;

pub use split::{CHUNK_SIZE, MAX_FILE_SIZE};
/// The buffer type of [`FileIo::write_bytes`] and [`FileIo::read_bytes`]
/// (the `bytes` crate's `Bytes`, as re-exported by tonic).
pub use tonic::codegen::Bytes;
pub use write::Deferred;

/// First pause before a data request is retried (the first retry after a
/// stale version or a failed copy goes at once).
const BACKOFF_START: Duration = Duration::from_millis(50);
/// Longest pause between retries of a data request.
const BACKOFF_CAP: Duration = Duration::from_secs(1);
/// A data request stalled this long is logged (then at each doubling).
const STALL_WARN: Duration = Duration::from_secs(5);

/// How a [`FileIo`] behaves.
#[derive(Debug, Clone)]
pub struct IoOptions {
    /// Largest piece sent to a chunkserver in one call (bytes; at most
    /// 16 MiB, the chunkserver's limit). Requests are cut at multiples of it.
    pub max_request: u32,
    /// Pieces of one request in flight at once (across chunks too).
    pub parallelism: usize,
    /// How long a chunk's location (ReadChunk answer) is reused.
    pub location_ttl: Duration,
    /// A file with uncommitted writes and no new write for this long has its
    /// lengths committed and its write leases released, so that other
    /// sessions can write to it.
    pub idle_flush: Duration,
    /// Time one call to a chunkserver may take before it counts as failed.
    pub chunk_call_timeout: Duration,
    /// Time to open a connection to a chunkserver.
    pub connect_timeout: Duration,
    /// Time a read or write may keep retrying before it fails with
    /// [`ClientError::Data`]. `None`: the master client's overall timeout
    /// (and when that is `None` too, retry for ever, like NFS `hard`).
    pub timeout: Option<Duration>,
    /// Credentials sent with WriteChunk for inodes that
    /// [`FileIo::set_credentials`] was not called for.
    pub credentials: Credentials,
    /// Bytes of 64 KiB blocks kept for small reads (0: none kept; see
    /// `io/blocks.rs`).
    pub block_cache: usize,
}

impl Default for IoOptions {
    fn default() -> Self {
        IoOptions {
            max_request: 4 << 20,
            parallelism: 8,
            location_ttl: Duration::from_secs(3),
            idle_flush: Duration::from_secs(1),
            chunk_call_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            timeout: None,
            credentials: Credentials {
                uid: 0,
                gid: 0,
                groups: Vec::new(),
            },
            block_cache: 128 << 20,
        }
    }
}

/// Reads and writes file data. Cheap to clone: clones share the caches, the
/// leases and the connections.
#[derive(Debug, Clone)]
pub struct FileIo {
    inner: Arc<Inner>,
}

/// The state shared by the clones of a [`FileIo`].
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) master: MasterClient,
    pub(crate) opts: IoOptions,
    pub(crate) conns: conn::Conns,
    /// Chunk locations for reading, per (inode, chunk index).
    pub(crate) locations: Mutex<BTreeMap<(u64, u32), read::CachedLocation>>,
    /// Write state (leases, uncommitted length) per inode being written.
    pub(crate) files: Mutex<HashMap<u64, Arc<write::FileWrites>>>,
    /// Credentials for WriteChunk, per inode.
    pub(crate) creds: Mutex<HashMap<u64, Credentials>>,
    /// Blocks kept for small reads.
    pub(crate) blocks: Arc<blocks::Blocks>,
    pub(crate) flusher: Mutex<Option<tokio::task::AbortHandle>>,
    /// Where a lease or a length commit may go instead of to the master.
    pub(crate) queued: Plug<dyn WriteQueue>,
    /// Where blocks fetched for small reads are offered too.
    pub(crate) pages: Plug<dyn PageSink>,
}

/// A block fetched for a small read, offered to a [`PageSink`]: the data
/// of `inode` at `offset`, as the chunkservers had it.
#[derive(Debug)]
pub struct Fetched {
    pub inode: u64,
    /// Its offset in the file.
    pub offset: u64,
    pub data: Bytes,
    /// When what this client knows of the chunk (its location, asked
    /// again after `IoOptions::location_ttl`) goes stale: another client's
    /// write may show only after it.
    pub until: Instant,
    blocks: Arc<blocks::Blocks>,
    epoch: blocks::Epoch,
}

impl Fetched {
    /// Whether nothing of the file changed here since the block was asked
    /// for (no write, truncate or fresh open of it: see `blocks`), so it
    /// is still what this client may read.
    pub fn is_current(&self) -> bool {
        self.blocks.epoch(self.inode) == self.epoch
    }
}

/// Takes the blocks this client fetches for small reads (the FUSE layer
/// gives them to the kernel's page cache). Called on the reading task: it
/// must not wait.
pub trait PageSink: Send + Sync {
    fn offer(&self, block: Fetched);
}

/// Something the layer above plugs in once ([`FileIo::queue_with`],
/// [`FileIo::pages_with`]).
pub(crate) struct Plug<T: ?Sized>(std::sync::OnceLock<Box<T>>);

impl<T: ?Sized> Plug<T> {
    pub(crate) fn get(&self) -> Option<&T> {
        self.0.get().map(|t| &**t)
    }

    /// Plugs `t` in; later calls are ignored.
    fn set(&self, t: Box<T>) {
        let _ = self.0.set(t);
    }
}

impl<T: ?Sized> Default for Plug<T> {
    fn default() -> Self {
        Plug(std::sync::OnceLock::new())
    }
}

impl<T: ?Sized> std::fmt::Debug for Plug<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Plug(set)"
        } else {
            "Plug"
        })
    }
}

/// Where a write's calls to the master may go instead: the client's
/// write-back queue, for files nobody else can name until it is sent (the
/// mount's files made in a directory it holds). See [`FileIo::queue_with`].
pub trait WriteQueue: Send + Sync {
    /// Takes the length commit `req` of the writes under lease `loc`
    /// (true), or leaves it to be sent now (false); `ctime`: the kernel's
    /// for them, if it gave one. A commit taken counts as done; the data
    /// is on every copy by then.
    fn commit(
        &self,
        req: &WriteChunkEndRequest,
        loc: &ChunkLocation,
        ctime: Option<mfs_proto::v1::Timespec>,
    ) -> bool;
    /// Kept attribute changes of `inode` are about to be sent to the
    /// master in a SetAttr of their own (no write to commit them with).
    fn attrs_sent(&self, inode: u64);
    /// The lease `req` from the queue (see [`QueuedLease`]), or `None`:
    /// ask the master.
    fn lease(&self, req: &WriteChunkRequest) -> Option<QueuedLease<'_>>;
}

/// A lease as the client's write-back queue gives it.
pub enum QueuedLease<'a> {
    /// A chunk the session holds: write it on its chain (`create`) now;
    /// the queue names it before the length commit.
    Held(ChunkLocation),
    /// Asked in the queue: the answer to wait for.
    Asked(Answered<'a>),
    /// Wait for this (the queue names the chunk the lease was for), then
    /// ask the master.
    First(Answered<'a>),
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = self.flusher.get_mut().ok().and_then(|h| h.take()) {
            h.abort();
        }
    }
}

impl FileIo {
    /// Makes the I/O layer on top of `master` (which should hold a session:
    /// [`crate::ClientOptions::register_session`]). Starts the background
    /// task that commits idle writes when called inside a tokio runtime
    /// (without one, lengths are committed only by flush/fsync).
    pub fn new(master: MasterClient, mut opts: IoOptions) -> FileIo {
        opts.max_request = opts.max_request.clamp(64 << 10, 16 << 20);
        opts.parallelism = opts.parallelism.max(1);
        let inner = Arc::new(Inner {
            conns: conn::Conns::new(opts.connect_timeout),
            blocks: Arc::new(blocks::Blocks::new(opts.block_cache)),
            pages: Plug::default(),
            master,
            opts,
            locations: Mutex::new(BTreeMap::new()),
            files: Mutex::new(HashMap::new()),
            creds: Mutex::new(HashMap::new()),
            flusher: Mutex::new(None),
            queued: Plug::default(),
        });
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                let task = rt.spawn(write::idle_flush_loop(Arc::downgrade(&inner)));
                *lock(&inner.flusher) = Some(task.abort_handle());
            }
            Err(_) => tracing::warn!(
                "FileIo made outside a tokio runtime: idle writes are committed only by flush/fsync"
            ),
        }
        FileIo { inner }
    }

    /// Lets `q` take new-chunk leases (WriteChunk) and length commits
    /// (WriteChunkEnd) for the client's write-back queue (see
    /// [`WriteQueue`]). Set once; later calls are ignored.
    pub fn queue_with(&self, q: Box<dyn WriteQueue>) {
        self.inner.queued.set(q);
    }

    /// Offers every block fetched for a small read to `sink` too (set
    /// once; later calls are ignored).
    pub fn pages_with(&self, sink: Box<dyn PageSink>) {
        self.inner.pages.set(sink);
    }

    /// The options in force.
    pub fn options(&self) -> &IoOptions {
        &self.inner.opts
    }

    /// The master client underneath.
    pub fn master(&self) -> &MasterClient {
        &self.inner.master
    }

    /// Reads up to `size` bytes at `offset`: short only at the end of the
    /// file (its length at the master, or the end of what this client wrote
    /// and has not committed yet, whichever is larger); holes read as zeros.
    ///
    /// The data is copied once into the result (or not at all when the
    /// buffer it arrived in can be taken over);
    /// [`read_bytes`](FileIo::read_bytes) avoids that copy.
    pub async fn read(&self, inode: u64, offset: u64, size: u32) -> Result<Vec<u8>, ClientError> {
        Ok(Vec::from(self.inner.read(inode, offset, size).await?))
    }

    /// [`read`](FileIo::read) without the copy into a `Vec`: a read that one
    /// chunkserver call serves (inside one chunk and one
    /// [`IoOptions::max_request`] window) is the slice of the reply's
    /// receive buffer that holds it; a longer one is assembled with one copy.
    pub async fn read_bytes(
        &self,
        inode: u64,
        offset: u64,
        size: u32,
    ) -> Result<Bytes, ClientError> {
        self.inner.read(inode, offset, size).await
    }

    /// Writes `data` at `offset`. Returns when every copy of the chunks it
    /// touches has it; the new length is committed to the master at
    /// [`flush`](FileIo::flush)/[`fsync`](FileIo::fsync) or once the file
    /// has been idle for [`IoOptions::idle_flush`].
    ///
    /// `data` is copied once; a caller that owns its buffer can hand it over
    /// without a copy with [`write_bytes`](FileIo::write_bytes).
    pub async fn write(&self, inode: u64, offset: u64, data: &[u8]) -> Result<(), ClientError> {
        if data.is_empty() {
            return Ok(());
        }
        self.inner
            .write(inode, offset, Bytes::copy_from_slice(data))
            .await
    }

    /// [`write`](FileIo::write) of a buffer the caller hands over (e.g.
    /// `Bytes::from(vec)`, which takes a `Vec<u8>` without copying it): the
    /// pieces sent to the chunkservers are slices of it, never copies.
    pub async fn write_bytes(
        &self,
        inode: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<(), ClientError> {
        self.inner.write(inode, offset, data).await
    }

    /// Commits the length of everything written to `inode` (WriteChunkEnd for
    /// every chunk with a lease) and releases the leases. Waits for writes to
    /// `inode` in flight. Call it before truncating a file this client wrote.
    pub async fn flush(&self, inode: u64) -> Result<(), ClientError> {
        self.inner.flush(inode, false).await
    }

    /// [`flush`](FileIo::flush), after making every chunk written since the
    /// last fsync durable on every copy (ChunkService.Sync), as fsync(2).
    pub async fn fsync(&self, inode: u64) -> Result<(), ClientError> {
        self.inner.flush(inode, true).await
    }

    /// The length of `inode` counting writes not committed yet: `Some` while
    /// this client has uncommitted writes to it (the end of the furthest
    /// one), `None` otherwise (the master's length is right).
    pub fn local_length(&self, inode: u64) -> Option<u64> {
        self.inner.local_length(inode)
    }

    /// Keeps the attribute changes `change` to be committed with the
    /// writes of `inode` (in the same log entry as their WriteChunkEnd),
    /// or in one SetAttr at the next flush when nothing else waits,
    /// instead of a SetAttr of their own now: the kernel's writeback cache
    /// sends the time of a write just before the flush that commits it,
    /// and tar sets a file's times and mode before closing it. Possible
    /// while `inode` has writes not committed yet or a holder
    /// ([`hold`](FileIo::hold)); false otherwise. The caller checks that
    /// the master would accept the change. Other clients see it once
    /// committed (at the latest when the file has been idle for
    /// [`IoOptions::idle_flush`]); [`deferred`](FileIo::deferred) gives it
    /// to this client's own answers meanwhile.
    pub async fn defer_attrs(&self, inode: u64, change: Deferred) -> bool {
        self.inner.defer_attrs(inode, change).await
    }

    /// Whether [`defer_attrs`](FileIo::defer_attrs) may keep a change of
    /// `inode` now.
    pub fn may_defer(&self, inode: u64) -> bool {
        self.inner.may_defer(inode)
    }

    /// Whether `inode` is held ([`hold`](FileIo::hold)) and nothing of it
    /// was committed since: the master's attributes of it are still the
    /// ones its create answered, and the changes since are this client's.
    pub fn pristine(&self, inode: u64) -> bool {
        self.inner.pristine(inode)
    }

    /// [`local_length`](FileIo::local_length) and
    /// [`deferred`](FileIo::deferred) in one look, for answers that show
    /// both.
    pub fn local_view(&self, inode: u64) -> (Option<u64>, Option<Deferred>) {
        self.inner.local_view(inode)
    }

    /// Whether this client has neither a length nor an attribute change
    /// of `inode` still to send (its attributes are the master's).
    pub fn settled(&self, inode: u64) -> bool {
        self.local_view(inode) == (None, None)
    }

    /// The attribute changes of `inode` kept and not committed yet.
    pub fn deferred(&self, inode: u64) -> Option<Deferred> {
        self.inner.deferred(inode)
    }

    /// `inode` is open here through a handle that made the file: until
    /// [`unhold`](FileIo::unhold), its attribute changes may be kept for
    /// the commit of its writes before any write reached this layer.
    pub fn hold(&self, inode: u64) {
        self.inner.hold(inode);
    }

    /// Ends one [`hold`](FileIo::hold) (after the handle's last flush).
    pub fn unhold(&self, inode: u64) {
        self.inner.unhold(inode);
    }

    /// Keeps `loc` as where chunk `index` of `inode` is, as if ReadChunk
    /// had just answered it (Open's first chunk).
    pub fn note_location(&self, inode: u64, index: u32, loc: ChunkLocation) {
        self.inner.note_location(inode, index, loc);
    }

    /// Takes `loc` as this client's write lease on chunk `index` of `inode`
    /// (a truncating open's new first chunk, `OpenReply.first_chunk`), as
    /// if WriteChunk had just answered it.
    pub fn adopt_lease(&self, inode: u64, index: u32, loc: ChunkLocation) {
        self.inner.adopt_lease(inode, index, loc);
    }

    /// Forgets the cached chunk locations and data blocks of `inode` (after
    /// a truncate, or when its data may have moved or changed).
    pub fn invalidate(&self, inode: u64) {
        self.inner.forget_locations(inode);
        self.inner.blocks.forget(inode);
    }

    /// Credentials to send with WriteChunk for `inode` (the opener's); the
    /// default is [`IoOptions::credentials`]. Dropped by
    /// [`forget`](FileIo::forget).
    pub fn set_credentials(&self, inode: u64, cred: Credentials) {
        lock(&self.inner.creds).insert(inode, cred);
    }

    /// Drops what is cached about `inode` (locations, credentials, and its
    /// write state when nothing is left to commit), e.g. when the kernel
    /// forgets it. Its data blocks stay (the next open that is not
    /// answered here drops them; the cache's size bounds them).
    pub fn forget(&self, inode: u64) {
        self.inner.forget_locations(inode);
        lock(&self.inner.creds).remove(&inode);
        self.inner.drop_idle_file(inode);
    }
}

/// Tunes glibc malloc for the data path's large buffers (pieces of up to
/// 16 MiB): they stay on the heap, and freed heap memory is kept instead of
/// being handed back to the kernel after every request, which would make
/// every piece pay a page fault and a kernel zeroing per 4 KiB. A process
/// setting: call it once at the start of a binary that moves file data
/// (before its threads start), never from a library.
pub fn tune_allocator() {
    // SAFETY: mallopt only changes allocator parameters; it takes the
    // allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 512 << 20);
    }
}

/// Locks a std mutex, going on after a panic elsewhere (every critical
/// section here leaves the data consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Inner {
    /// The time limit of one read or write.
    pub(crate) fn time_limit(&self) -> Option<Duration> {
        self.opts.timeout.or(self.master.options().overall_timeout)
    }

    pub(crate) fn credentials(&self, inode: u64) -> Credentials {
        lock(&self.creds)
            .get(&inode)
            .cloned()
            .unwrap_or_else(|| self.opts.credentials.clone())
    }
}

/// The retries of one piece of a read or write: backoff with jitter, the
/// time limit, and the last error for the final message.
#[derive(Debug)]
pub(crate) struct Retry {
    op: &'static str,
    inode: u64,
    index: u32,
    start: Instant,
    limit: Option<Duration>,
    next: Duration,
    failures: u32,
    next_warn: Duration,
    last_error: String,
}

impl Retry {
    pub(crate) fn new(op: &'static str, inode: u64, index: u32, limit: Option<Duration>) -> Self {
        Retry {
            op,
            inode,
            index,
            start: Instant::now(),
            limit,
            next: BACKOFF_START,
            failures: 0,
            next_warn: STALL_WARN,
            last_error: String::new(),
        }
    }

    /// Records a failed attempt and waits before the next one (the first
    /// retry goes at once). Fails when the time limit has passed.
    pub(crate) async fn failed(&mut self, error: String) -> Result<(), ClientError> {
        self.failures += 1;
        self.last_error = error;
        let elapsed = self.start.elapsed();
        let left = match self.limit {
            Some(l) if elapsed >= l => return Err(self.give_up()),
            Some(l) => Some(l - elapsed),
            None => None,
        };
        if elapsed >= self.next_warn {
            tracing::warn!(op = self.op, inode = self.inode, index = self.index, ?elapsed,
                last_error = %self.last_error, "chunk I/O still failing, retrying");
            self.next_warn *= 2;
        } else {
            tracing::debug!(op = self.op, inode = self.inode, index = self.index,
                error = %self.last_error, "chunk I/O failed, retrying");
        }
        if self.failures == 1 {
            return Ok(());
        }
        let full = self.next;
        self.next = (self.next * 2).min(BACKOFF_CAP);
        let half = full / 2;
        let jitter = rand::rng().random_range(0..=half.as_nanos() as u64);
        let mut pause = half + Duration::from_nanos(jitter);
        if let Some(left) = left {
            pause = pause.min(left);
        }
        tokio::time::sleep(pause).await;
        Ok(())
    }

    /// The error to return when giving up now.
    pub(crate) fn give_up(&self) -> ClientError {
        ClientError::Data {
            op: self.op,
            inode: self.inode,
            index: self.index,
            elapsed: self.start.elapsed(),
            last_error: self.last_error.clone(),
        }
    }
}
