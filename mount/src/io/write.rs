//! The write path: write leases per chunk, pieces sent to every copy (small
//! ones at once, large ones along the chain),
//! renewal after a failure, committing lengths (flush), Sync (fsync), and the
//! background task that commits idle files.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use mfs_proto::v1::chunk_service_client::ChunkServiceClient;
use mfs_proto::v1::{
    ChunkLocation, ChunkSyncRequest, ChunkWriteRange, ChunkWriteRequest, Credentials,
    SetAttrRequest, Timespec, WriteChunkEndRequest, WriteChunkRequest,
};
use tonic::codegen::Bytes;
use tonic::transport::Channel;

use super::batch::{Batches, Turn};
use super::blocks;
use super::conn::{classify, Failure};
use super::split::{split, Piece};
use super::{lock, Inner, QueuedLease, Retry};
use crate::error::{errno, ClientError};

/// Pieces up to this size are sent to every copy at once; larger ones
/// along the chain (see [`Inner::send_along_chain`]).
const FAN_OUT_MAX: usize = 256 << 10;

/// Files idle this long with nothing to commit are dropped from the table.
const FORGET_IDLE: Duration = Duration::from_secs(60);
/// The idle-flush look at the files waits this many times its own length
/// before the next, at least (it takes at most 1/20 of a core).
const SCAN_PAUSE_PER_WORK: u32 = 20;

/// What this client is writing to one inode.
#[derive(Debug)]
pub(crate) struct FileWrites {
    /// Writes hold it shared; flush and fsync exclusively (so a commit sees
    /// every write that returned, and no write runs under a released lease).
    gate: tokio::sync::RwLock<()>,
    /// Serializes WriteChunk calls for this inode (one lease per chunk even
    /// when several pieces need it at once).
    lease_lock: tokio::sync::Mutex<()>,
    /// Small writes waiting for one on its way to the same chunk.
    batches: Batches,
    state: Mutex<WriteState>,
}

#[derive(Debug)]
struct WriteState {
    /// The write lease of each chunk being written: its location (chain).
    leases: BTreeMap<u32, Arc<ChunkLocation>>,
    /// The end of the furthest write not committed yet (`None`: all
    /// committed).
    uncommitted_end: Option<u64>,
    /// Byte ranges of writes that failed (ENOSPC, ...) and that no later
    /// write covered: the length committed stops at the first, so the file
    /// keeps what was written before it, as a local file system does, and
    /// never a range of zeros where data failed to land.
    failed: Vec<(u64, u64)>,
    /// Chunks written since the last fsync, with where they were written.
    unsynced: BTreeMap<u32, Arc<ChunkLocation>>,
    /// Leases given with `create` (the writes make the new chunk on the
    /// chain) under which a write went through the whole chain: the
    /// chunk's (id, version), told to the master at WriteChunkEnd.
    made: BTreeMap<u32, (u64, u32)>,
    /// When the last write to this inode finished (or the last change
    /// was kept in `deferred`).
    last_write: Instant,
    /// Attribute changes to commit with the writes (see
    /// `FileIo::defer_attrs`); no mtime: the master's time.
    deferred: Deferred,
    /// Open handles of this client that made the file (`FileIo::hold`):
    /// while there are any, attribute changes may be kept in `deferred`
    /// even before a write reached this layer.
    holders: u32,
    /// A commit ran since the first holder came (the master's attributes
    /// are no longer the ones the create answered).
    committed_since_hold: bool,
}

/// Attribute changes of a file being written, kept by this client and
/// committed with its writes (WriteChunkEnd) or, with none to commit, in
/// one SetAttr: at flush, fsync, close, or once the file is idle.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deferred {
    /// New permission bits (never SUID/SGID: see the caller's rules).
    pub mode: Option<u32>,
    pub atime: Option<Timespec>,
    pub mtime: Option<Timespec>,
    /// Whose changes they are (the last caller's).
    pub cred: Option<Credentials>,
    /// The ctime the kernel gave with them (its writeback cache keeps
    /// one): the time of a commit the write-back queue takes.
    pub ctime: Option<Timespec>,
}

impl Deferred {
    pub fn is_empty(&self) -> bool {
        self.mode.is_none() && self.atime.is_none() && self.mtime.is_none()
    }

    /// `later` on top of these.
    fn merge(&mut self, later: Deferred) {
        self.mode = later.mode.or(self.mode);
        self.atime = later.atime.or(self.atime);
        self.mtime = later.mtime.or(self.mtime);
        self.cred = later.cred.or(self.cred.take());
        self.ctime = later.ctime.or(self.ctime);
    }
}

impl WriteState {
    /// Everything up to now is committed: the length, the kept changes.
    fn committed(&mut self) {
        self.uncommitted_end = None;
        self.failed.clear();
        self.deferred = Deferred::default();
        self.committed_since_hold = true;
    }

    /// A write of `from..to` went through: no longer failed there.
    fn written(&mut self, from: u64, to: u64) {
        self.uncommitted_end = Some(self.uncommitted_end.map_or(to, |e| e.max(to)));
        let mut left = Vec::with_capacity(self.failed.len());
        for (a, b) in self.failed.drain(..) {
            if b <= from || a >= to {
                left.push((a, b));
                continue;
            }
            if a < from {
                left.push((a, from));
            }
            if b > to {
                left.push((to, b));
            }
        }
        self.failed = left;
    }

    /// The length to commit: the furthest write's end, or the start of the
    /// first failed range if that comes first.
    fn commit_end(&self) -> Option<u64> {
        let end = self.uncommitted_end?;
        Some(self.failed.iter().map(|r| r.0).fold(end, u64::min))
    }
}

impl FileWrites {
    fn new() -> Self {
        FileWrites {
            gate: tokio::sync::RwLock::new(()),
            lease_lock: tokio::sync::Mutex::new(()),
            batches: Batches::default(),
            state: Mutex::new(WriteState {
                leases: BTreeMap::new(),
                uncommitted_end: None,
                failed: Vec::new(),
                unsynced: BTreeMap::new(),
                made: BTreeMap::new(),
                last_write: Instant::now(),
                deferred: Deferred::default(),
                holders: 0,
                committed_since_hold: false,
            }),
        }
    }

    fn lease(&self, index: u32) -> Option<Arc<ChunkLocation>> {
        lock(&self.state).leases.get(&index).cloned()
    }

    /// True when there is nothing to commit. (Chunks not synced yet are
    /// not kept for a later fsync once the file is forgotten: the
    /// chunkservers write them back on their own.)
    fn is_clean(&self) -> bool {
        let s = lock(&self.state);
        s.leases.is_empty()
            && s.uncommitted_end.is_none()
            && s.deferred.is_empty()
            && s.holders == 0
    }
}

impl Inner {
    fn file(&self, inode: u64) -> Arc<FileWrites> {
        Arc::clone(
            lock(&self.files)
                .entry(inode)
                .or_insert_with(|| Arc::new(FileWrites::new())),
        )
    }

    fn existing_file(&self, inode: u64) -> Option<Arc<FileWrites>> {
        lock(&self.files).get(&inode).cloned()
    }

    /// See [`super::FileIo::adopt_lease`]; a lease with no chunk or no
    /// chain is left (the first write asks with WriteChunk).
    pub(crate) fn adopt_lease(&self, inode: u64, index: u32, loc: ChunkLocation) {
        if loc.chunk_id == 0 || loc.servers.is_empty() {
            return;
        }
        let file = self.file(inode);
        lock(&file.state).leases.insert(index, Arc::new(loc));
        self.forget_location(inode, index);
    }

    /// The chain of the write lease this client holds on a chunk, if any.
    pub(crate) fn lease_location(&self, inode: u64, index: u32) -> Option<Arc<ChunkLocation>> {
        self.existing_file(inode)?.lease(index)
    }

    pub(crate) fn local_length(&self, inode: u64) -> Option<u64> {
        lock(&self.existing_file(inode)?.state).uncommitted_end
    }

    /// Keeps `change` for the next commit of `inode` if it has writes not
    /// committed yet or a holder (no commit runs meanwhile); false if
    /// neither.
    pub(crate) async fn defer_attrs(&self, inode: u64, change: Deferred) -> bool {
        let Some(file) = self.existing_file(inode) else {
            return false;
        };
        let _shared = file.gate.read().await;
        let mut s = lock(&file.state);
        if s.uncommitted_end.is_none() && s.holders == 0 {
            return false;
        }
        s.deferred.merge(change);
        s.last_write = Instant::now();
        true
    }

    /// Whether `defer_attrs` may keep a change of `inode` now.
    pub(crate) fn may_defer(&self, inode: u64) -> bool {
        self.existing_file(inode).is_some_and(|f| {
            let s = lock(&f.state);
            s.uncommitted_end.is_some() || s.holders > 0
        })
    }

    /// Whether `inode` is held and nothing of it was committed since.
    pub(crate) fn pristine(&self, inode: u64) -> bool {
        self.existing_file(inode).is_some_and(|f| {
            let s = lock(&f.state);
            s.holders > 0 && !s.committed_since_hold
        })
    }

    /// The changes of `inode` kept and not committed yet.
    pub(crate) fn deferred(&self, inode: u64) -> Option<Deferred> {
        let file = self.existing_file(inode)?;
        let s = lock(&file.state);
        (!s.deferred.is_empty()).then(|| s.deferred.clone())
    }

    /// What this client adds to the master's attributes of `inode`: the
    /// end of its uncommitted writes and its kept changes (one look).
    pub(crate) fn local_view(&self, inode: u64) -> (Option<u64>, Option<Deferred>) {
        let Some(file) = self.existing_file(inode) else {
            return (None, None);
        };
        let s = lock(&file.state);
        let kept = (!s.deferred.is_empty()).then(|| s.deferred.clone());
        (s.uncommitted_end, kept)
    }

    /// One more holder of `inode`.
    pub(crate) fn hold(&self, inode: u64) {
        let file = self.file(inode);
        let mut s = lock(&file.state);
        if s.holders == 0 {
            s.committed_since_hold = false;
        }
        s.holders += 1;
    }

    /// One holder of `inode` less.
    pub(crate) fn unhold(&self, inode: u64) {
        if let Some(file) = self.existing_file(inode) {
            let mut s = lock(&file.state);
            s.holders = s.holders.saturating_sub(1);
        }
    }

    /// Drops the write state of `inode` if nothing is left to commit and no
    /// one else is using it.
    pub(crate) fn drop_idle_file(&self, inode: u64) {
        let mut files = lock(&self.files);
        if let Some(f) = files.get(&inode) {
            // Under the table lock nobody can take a new reference: a count
            // of one means no write or flush is running.
            if Arc::strong_count(f) == 1 && f.is_clean() {
                files.remove(&inode);
            }
        }
    }

    /// Writes `data` at `offset`: each piece sent is a slice of `data` (no
    /// copy), shared by its retries.
    pub(crate) async fn write(
        &self,
        inode: u64,
        offset: u64,
        data: Bytes,
    ) -> Result<(), ClientError> {
        if data.is_empty() {
            return Ok(());
        }
        let pieces = split(offset, data.len() as u64, self.opts.max_request)?;
        // Before and after: a block read while the write lands is not kept.
        let drop_blocks = || {
            for p in &pieces {
                let (index, start) = (p.index, p.chunk_offset);
                self.blocks.changing(inode, index, start, start + p.len);
            }
        };
        drop_blocks();
        let epoch = self.blocks.epoch(inode);
        let file = self.file(inode);
        let _shared = file.gate.read().await;
        let file = &file;
        let data = &data;
        let sent = stream::iter(pieces.iter().copied())
            .map(|p| async move {
                self.write_piece(file, inode, p, data.slice(p.buf_range()))
                    .await
            })
            .buffer_unordered(self.opts.parallelism)
            .try_collect::<()>()
            .await;
        // A small write at a block's start (a small file's data) stays
        // readable here, under the lease it was written with.
        let written = match (&sent, pieces.as_slice()) {
            (Ok(()), [p]) => file.lease(p.index).map(|loc| (p, loc)),
            _ => None,
        };
        match written {
            Some((p, loc)) => {
                let at = blocks::ChunkAt {
                    inode,
                    index: p.index,
                    chunk_id: loc.chunk_id,
                    version: loc.version,
                };
                self.blocks
                    .wrote(at, p.chunk_offset, data.slice(p.buf_range()), epoch);
            }
            None => drop_blocks(),
        }
        let end = offset + data.len() as u64;
        let mut s = lock(&file.state);
        match &sent {
            Ok(()) => s.written(offset, end),
            Err(_) => s.failed.push((offset, end)),
        }
        s.last_write = Instant::now();
        sent
    }

    /// Writes one piece on every copy of its chunk, renewing the lease and
    /// sending again after a failure.
    async fn write_piece(
        &self,
        file: &FileWrites,
        inode: u64,
        piece: Piece,
        data: Bytes,
    ) -> Result<(), ClientError> {
        let mut retry = Retry::new("write", inode, piece.index, self.time_limit());
        let mut failed: Option<u32> = None;
        loop {
            let loc = self.lease(file, inode, piece.index, failed.take()).await?;
            if let Some(room) = loc.quota_room {
                let end = piece.file_offset() + u64::from(piece.len);
                if end > loc.file_length.saturating_add(room) {
                    return Err(ClientError::Errno(
                        errno::EDQUOT,
                        format!(
                            "inode {inode}: a write to byte {end} passes a directory quota (room {room} bytes past length {})",
                            loc.file_length
                        ),
                    ));
                }
            }
            let offset = u64::from(piece.chunk_offset);
            let batches = loc
                .servers
                .iter()
                .all(|s| self.conns.takes_batches(&s.address));
            let sent = if data.len() <= FAN_OUT_MAX && batches {
                self.send_batched(file, &loc, offset, data.clone()).await
            } else {
                let req = write_request(&loc, offset, data.clone(), Vec::new());
                self.send_along_chain(&loc, req, ChunkCall::Write).await
            };
            match sent {
                Ok(()) => {
                    let mut s = lock(&file.state);
                    if loc.create {
                        s.made.insert(piece.index, (loc.chunk_id, loc.version));
                    }
                    s.unsynced.insert(piece.index, loc);
                    return Ok(());
                }
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Stale(text)) | Err(Failure::Copy(text)) => {
                    failed = Some(loc.version);
                    retry.failed(text).await?;
                }
            }
        }
    }

    /// The write lease of chunk `index`: the one held, or a new one from the
    /// master. With `renew_from` (the version a write just failed with), a
    /// lease still at that version is renewed (WriteChunk with `renew`).
    /// EAGAIN (another session writes the chunk) is retried with backoff.
    async fn lease(
        &self,
        file: &FileWrites,
        inode: u64,
        index: u32,
        renew_from: Option<u32>,
    ) -> Result<Arc<ChunkLocation>, ClientError> {
        let usable = |l: &Arc<ChunkLocation>| renew_from != Some(l.version);
        if let Some(l) = file.lease(index).filter(usable) {
            return Ok(l);
        }
        let _one = file.lease_lock.lock().await;
        let held = file.lease(index);
        if let Some(l) = held.clone().filter(usable) {
            return Ok(l); // another piece renewed it meanwhile
        }
        let req = |held: &Option<Arc<ChunkLocation>>| WriteChunkRequest {
            id: None,
            cred: Some(self.credentials(inode)),
            inode,
            index,
            renew: held.is_some(),
            // The chain the failed write went to: tells a new leader
            // whether any write under this lease went through.
            lease_servers: held
                .iter()
                .flat_map(|l| l.servers.iter().map(|s| s.address.clone()))
                .collect(),
        };
        let take = |loc: ChunkLocation| {
            if loc.chunk_id == 0 || loc.servers.is_empty() {
                return Err(ClientError::BadReply(format!(
                    "WriteChunk for inode {inode} chunk {index} gave chunk {} with {} servers",
                    loc.chunk_id,
                    loc.servers.len()
                )));
            }
            let loc = Arc::new(loc);
            lock(&file.state).leases.insert(index, Arc::clone(&loc));
            // The version moved on: a cached read location is stale.
            self.forget_location(inode, index);
            Ok(loc)
        };
        match self.queued.get().and_then(|q| q.lease(&req(&held))) {
            Some(QueuedLease::Held(loc)) => return take(loc),
            Some(QueuedLease::Asked(answered)) => match answered.answer().await {
                Ok(loc) => return take(loc),
                Err(errno) => tracing::debug!(
                    inode,
                    index,
                    errno,
                    "a queued lease was not given; asking with WriteChunk"
                ),
            },
            Some(QueuedLease::First(answered)) => {
                if let Err(errno) = answered.answer().await {
                    tracing::warn!(
                        inode,
                        index,
                        errno,
                        "the master did not take a chunk written here; asking for a new lease"
                    );
                }
            }
            None => {}
        }
        let mut retry = Retry::new("write", inode, index, self.time_limit());
        loop {
            match self.master.write_chunk(req(&held)).await {
                Ok(loc) => return take(loc),
                Err(ClientError::Errno(errno::EAGAIN, text)) => {
                    retry
                        .failed(format!("write lease held by another session: {text}"))
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a Write or Sync to every copy of the chunk: a small piece (at
    /// most [`FAN_OUT_MAX`]) and a Sync to each copy at once, so a write
    /// costs one round trip to the slowest copy instead of one after
    /// another along the chain; a larger piece to the chain's first
    /// server, with the rest of the chain for it to forward to (the
    /// client's link carries it once).
    async fn send_along_chain(
        &self,
        loc: &ChunkLocation,
        req: ChunkWriteRequest,
        call: ChunkCall,
    ) -> Result<(), Failure> {
        let Some((head, rest)) = loc.servers.split_first() else {
            return Err(Failure::Copy(format!(
                "chunk {:016X}_{:08X} has no chunkserver to write to",
                loc.chunk_id, loc.version
            )));
        };
        let small = matches!(call, ChunkCall::Sync) || req.data.len() <= FAN_OUT_MAX;
        if rest.is_empty() || !small {
            let chain = rest.iter().map(|s| s.address.clone()).collect();
            return self.send_to(&head.address, chain, loc, req, call).await;
        }
        let sends = loc
            .servers
            .iter()
            .map(|s| self.send_to(&s.address, Vec::new(), loc, req.clone(), call));
        let mut worst = Ok(());
        for r in futures::future::join_all(sends).await {
            // A final error wins over one that a new lease may cure.
            match (&worst, r) {
                (_, Ok(())) | (Err(Failure::Final(_)), _) => {}
                (_, Err(e @ Failure::Final(_))) => worst = Err(e),
                (Ok(()), Err(e)) => worst = Err(e),
                (Err(_), Err(_)) => {}
            }
        }
        worst
    }

    /// Sends a small write of `data` at `offset` under lease `loc`, with
    /// the others to its chunk that wait for a write on its way (see
    /// [`super::batch`]).
    async fn send_batched(
        &self,
        file: &FileWrites,
        loc: &ChunkLocation,
        offset: u64,
        data: Bytes,
    ) -> Result<(), Failure> {
        let key = (loc.chunk_id, loc.version);
        let ((offset, data), rest, lead) = match file.batches.join(key, (offset, data)).await {
            Turn::Done(result) => return result,
            Turn::Send(first, rest, lead) => (first, rest, lead),
        };
        let more = rest
            .into_iter()
            .map(|(offset, data)| ChunkWriteRange { offset, data })
            .collect();
        let req = write_request(loc, offset, data, more);
        let result = self.send_along_chain(loc, req, ChunkCall::Write).await;
        lead.finish(&result);
        result
    }

    /// Sends a Write or Sync to the chunkserver `addr`, which forwards it
    /// along `chain`.
    async fn send_to(
        &self,
        addr: &str,
        chain: Vec<String>,
        loc: &ChunkLocation,
        mut req: ChunkWriteRequest,
        call: ChunkCall,
    ) -> Result<(), Failure> {
        let mut client = self.conns.client(addr)?;
        let limit = self.opts.chunk_call_timeout;
        let result = match call {
            ChunkCall::Write => {
                req.chain = chain;
                // Kept for a server older than `more` (see `one_by_one`).
                let more = std::mem::take(&mut req.more);
                let first = (!more.is_empty()).then(|| req.clone());
                req.more = more.clone();
                let sent = tokio::time::timeout(limit, client.write(req)).await;
                match (sent, first) {
                    (Ok(Ok(reply)), Some(first))
                        if (reply.get_ref().ranges as usize) < 1 + more.len() =>
                    {
                        tracing::info!(
                            addr,
                            "chunkserver older than batched writes: sending it one write a request"
                        );
                        self.conns.note_old(addr);
                        Self::one_by_one(&mut client, limit, first, more).await
                    }
                    (other, _) => other.map(|r| r.map(|_| ())),
                }
            }
            ChunkCall::Sync => {
                let sync = ChunkSyncRequest {
                    chunk_id: loc.chunk_id,
                    version: loc.version,
                    chain,
                    token: loc.token.clone(),
                };
                tokio::time::timeout(limit, client.sync(sync))
                    .await
                    .map(|r| r.map(|_| ()))
            }
        };
        match result {
            Ok(Ok(())) => Ok(()),
            Ok(Err(status)) => Err(classify(addr, &status)),
            Err(_) => Err(Failure::Copy(format!(
                "chunkserver {addr}: no reply within {limit:.1?}"
            ))),
        }
    }

    /// Sends `more`, the ranges after the first write `req` made, one a
    /// request, in order: for a chunkserver that wrote the first only
    /// (older than `more`).
    async fn one_by_one(
        client: &mut ChunkServiceClient<Channel>,
        limit: Duration,
        mut req: ChunkWriteRequest,
        more: Vec<ChunkWriteRange>,
    ) -> Result<Result<(), tonic::Status>, tokio::time::error::Elapsed> {
        for m in more {
            req.offset = m.offset;
            req.data = m.data;
            if let Err(e) = tokio::time::timeout(limit, client.write(req.clone())).await? {
                return Ok(Err(e));
            }
        }
        Ok(Ok(()))
    }

    /// Commits what was written to `inode` (and with `sync`, first makes it
    /// durable on every copy).
    pub(crate) async fn flush(&self, inode: u64, sync: bool) -> Result<(), ClientError> {
        let Some(file) = self.existing_file(inode) else {
            return Ok(());
        };
        let _exclusive = file.gate.write().await;
        if sync {
            self.sync_chunks(&file, inode).await?;
        }
        self.commit(&file, inode).await
    }

    /// WriteChunkEnd for every chunk with a lease, with the furthest end
    /// written as the file length and the kept attribute changes (on the
    /// first chunk's; a SetAttr of their own when no chunk has a lease).
    /// Leases committed are dropped; on an error the rest stay for the
    /// next flush.
    async fn commit(&self, file: &FileWrites, inode: u64) -> Result<(), ClientError> {
        let (leases, end, deferred) = {
            let s = lock(&file.state);
            // Each lease with whether its writes made the chunk on the chain.
            let leases: Vec<(u32, Arc<ChunkLocation>, bool)> = s
                .leases
                .iter()
                .map(|(&index, loc)| {
                    let made = s.made.get(&index) == Some(&(loc.chunk_id, loc.version));
                    (index, Arc::clone(loc), loc.create && made)
                })
                .collect();
            (leases, s.commit_end().unwrap_or(0), s.deferred.clone())
        };
        // Under the exclusive gate: nothing is written or kept meanwhile.
        if leases.is_empty() {
            if deferred.is_empty() {
                lock(&file.state).uncommitted_end = None;
            } else {
                self.commit_attrs(inode, &deferred).await?;
                lock(&file.state).committed();
            }
            return Ok(());
        }
        let first = leases.first().map(|l| l.0);
        let deferred = &deferred;
        let results = stream::iter(leases)
            .map(|(index, loc, created)| async move {
                let with = Some(index) == first;
                let req = WriteChunkEndRequest {
                    id: None,
                    inode,
                    index,
                    chunk_id: loc.chunk_id,
                    file_length: end,
                    mtime: deferred.mtime,
                    mode: deferred.mode.filter(|_| with),
                    atime: deferred.atime.filter(|_| with),
                    cred: deferred.cred.clone().filter(|_| with),
                    created,
                    time: None,
                };
                let ctime = deferred.ctime;
                if self
                    .queued
                    .get()
                    .is_some_and(|q| q.commit(&req, &loc, ctime))
                {
                    return (index, Ok(Default::default()));
                }
                (index, self.master.write_chunk_end(req).await)
            })
            .buffer_unordered(self.opts.parallelism)
            .collect::<Vec<_>>()
            .await;
        let mut first_error = None;
        let mut s = lock(&file.state);
        for (index, r) in results {
            match r {
                Ok(_) => {
                    s.leases.remove(&index);
                    s.made.remove(&index);
                    // Reads of this chunk go to the master again.
                    self.forget_location(inode, index);
                }
                Err(e) => {
                    tracing::warn!(inode, index, error = %e, "committing a write failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => {
                s.committed();
                Ok(())
            }
        }
    }

    /// SetAttr of the kept changes `d` of `inode`, which has nothing else
    /// to commit. A change the master refuses now (say the file became
    /// immutable meanwhile) is dropped with a warning, as what it answered
    /// says; any other error is returned and the changes kept.
    async fn commit_attrs(&self, inode: u64, d: &Deferred) -> Result<(), ClientError> {
        if let Some(q) = self.queued.get() {
            q.attrs_sent(inode);
        }
        let req = SetAttrRequest {
            id: None,
            cred: d.cred.clone(),
            inode,
            mode: d.mode,
            atime: d.atime,
            mtime: d.mtime,
            ..Default::default()
        };
        match self.master.setattr(req).await {
            Ok(_) => Ok(()),
            Err(ClientError::Errno(e, text)) => {
                tracing::warn!(
                    inode,
                    errno = e,
                    "attribute changes kept for the commit were refused: {text}"
                );
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Sync on every copy of every chunk written since the last fsync.
    async fn sync_chunks(&self, file: &FileWrites, inode: u64) -> Result<(), ClientError> {
        let unsynced = lock(&file.state).unsynced.clone();
        stream::iter(unsynced)
            .map(|(index, loc)| async move { self.sync_chunk(file, inode, index, loc).await })
            .buffer_unordered(self.opts.parallelism)
            .try_collect::<()>()
            .await
    }

    async fn sync_chunk(
        &self,
        file: &FileWrites,
        inode: u64,
        index: u32,
        mut loc: Arc<ChunkLocation>,
    ) -> Result<(), ClientError> {
        let mut retry = Retry::new("sync", inode, index, self.time_limit());
        loop {
            let req = ChunkWriteRequest::default();
            match self.send_along_chain(&loc, req, ChunkCall::Sync).await {
                Ok(()) => {
                    let mut s = lock(&file.state);
                    if s.unsynced.get(&index).is_some_and(|l| Arc::ptr_eq(l, &loc)) {
                        s.unsynced.remove(&index);
                    }
                    return Ok(());
                }
                Err(Failure::Final(e)) => return Err(e),
                Err(Failure::Stale(text)) | Err(Failure::Copy(text)) => {
                    retry.failed(text).await?;
                    // Where the chunk is now: the lease if we hold one, else
                    // the master's answer (the copies that are still valid
                    // have every write that was acknowledged).
                    loc = match file.lease(index).filter(|l| l.version != loc.version) {
                        Some(l) => l,
                        None => Arc::new(self.master.read_chunk(inode, index).await?),
                    };
                    if loc.chunk_id == 0 {
                        return Ok(()); // truncated away meanwhile
                    }
                }
            }
        }
    }
}

/// A Write of `data` at `offset` (and `more` after) under lease `loc`.
fn write_request(
    loc: &ChunkLocation,
    offset: u64,
    data: Bytes,
    more: Vec<ChunkWriteRange>,
) -> ChunkWriteRequest {
    ChunkWriteRequest {
        chunk_id: loc.chunk_id,
        version: loc.version,
        offset,
        data,
        chain: Vec::new(),
        create: loc.create,
        token: loc.token.clone(),
        more,
    }
}

/// Which chunkserver call [`Inner::send_along_chain`] makes.
#[derive(Debug, Clone, Copy)]
enum ChunkCall {
    Write,
    Sync,
}

/// Commits files that have seen no write for [`super::IoOptions::idle_flush`]
/// (releasing their leases for other sessions), and forgets files long
/// idle with nothing left to commit. Runs until the [`Inner`] is dropped.
///
/// Every file written in the last minute is looked at; the look waits at
/// least [`SCAN_PAUSE_PER_WORK`] times its own length before the next, so
/// a mount that wrote many files lately (an unpacked tree of a million)
/// does not spend a core looking at them every tick.
pub(crate) async fn idle_flush_loop(weak: Weak<Inner>) {
    let mut scan = Duration::ZERO;
    loop {
        let tick = match weak.upgrade() {
            Some(inner) => (inner.opts.idle_flush / 4).max(Duration::from_millis(20)),
            None => return,
        };
        tokio::time::sleep(tick.max(scan * SCAN_PAUSE_PER_WORK)).await;
        let Some(inner) = weak.upgrade() else { return };
        let idle = inner.opts.idle_flush;
        let started = Instant::now();
        let files: Vec<(u64, Arc<FileWrites>)> = lock(&inner.files)
            .iter()
            .map(|(i, f)| (*i, Arc::clone(f)))
            .collect();
        let mut due = Vec::new();
        let mut forget = Vec::new();
        for (inode, file) in files {
            let (pending, since) = {
                let s = lock(&file.state);
                let pending = !s.leases.is_empty() || !s.deferred.is_empty();
                (pending, s.last_write.elapsed())
            };
            if pending && since >= idle {
                due.push((inode, file));
            } else if !pending && since >= FORGET_IDLE {
                forget.push(inode);
            }
        }
        scan = started.elapsed();
        for inode in forget {
            inner.drop_idle_file(inode);
        }
        for (inode, file) in due {
            // A write or flush running now will be followed by another
            // look at the next tick.
            let Ok(_exclusive) = file.gate.try_write() else {
                continue;
            };
            if let Err(e) = inner.commit(&file, inode).await {
                tracing::warn!(inode, error = %e, "committing idle writes failed; will retry");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_length_committed_stops_at_the_first_write_that_failed() {
        let f = FileWrites::new();
        let mut s = lock(&f.state);
        s.written(0, 10);
        s.failed.push((10, 20));
        s.written(20, 30);
        assert_eq!(s.commit_end(), Some(10));
        // A later write over part of the failed range moves the cut on.
        s.written(10, 15);
        assert_eq!(s.commit_end(), Some(15));
        assert_eq!(s.failed, vec![(15, 20)]);
        s.written(12, 25);
        assert_eq!(s.commit_end(), Some(30));
        assert!(s.failed.is_empty());
        // Failed ranges split by a write inside them keep both ends.
        s.failed.push((40, 60));
        s.written(45, 50);
        assert_eq!(s.failed, vec![(40, 45), (50, 60)]);
        assert_eq!(s.commit_end(), Some(40));
        s.committed();
        assert_eq!((s.commit_end(), s.failed.len()), (None, 0));
    }
}
