//! The read path: chunk locations (cached), failover between copies, holes,
//! and the end of the file.

use std::sync::Arc;
use std::time::Instant;

use futures::stream::{self, StreamExt, TryStreamExt};
use mfs_proto::v1::{ChunkLocation, ChunkReadRequest};
use tonic::codegen::Bytes;

use super::blocks::{self, ChunkAt, BLOCK};
use super::conn::Failure;
use super::split::{split, Piece, CHUNK_SIZE};
use super::{lock, Inner, Retry};
use crate::error::ClientError;

/// A read from a chunkserver that failed sooner than this is tried once
/// more on a new connection (see `Conns::renew`).
const RENEW_WITHIN: std::time::Duration = std::time::Duration::from_millis(200);

/// A ReadChunk answer and when it came.
#[derive(Debug, Clone)]
pub(crate) struct CachedLocation {
    pub(crate) loc: Arc<ChunkLocation>,
    pub(crate) fetched: Instant,
    /// Came with the Open of the file and not used yet: as good as a
    /// ReadChunk answer asked for now (its length is the file's at the open).
    pub(crate) from_open: bool,
}

impl Inner {
    /// Where chunk `index` of `inode` is: the write lease's chain when this
    /// client holds one (it knows the newest version), else the cached
    /// ReadChunk answer if younger than the TTL and `fresh` is not asked,
    /// else a new one. The flag says whether the answer came from a cache.
    pub(crate) async fn location(
        &self,
        inode: u64,
        index: u32,
        fresh: bool,
    ) -> Result<(Arc<ChunkLocation>, bool), ClientError> {
        if let Some(loc) = self.lease_location(inode, index) {
            return Ok((loc, false));
        }
        if !fresh {
            if let Some(c) = lock(&self.locations).get_mut(&(inode, index)) {
                if c.fetched.elapsed() < self.opts.location_ttl {
                    let cached = !std::mem::take(&mut c.from_open);
                    return Ok((Arc::clone(&c.loc), cached));
                }
            }
        }
        // EAGAIN: the leader knows no copy yet (it has just been elected and
        // the chunkservers are reporting, or the slot is being written):
        // ask again, within the read's time limit.
        let mut retry = super::Retry::new("read", inode, index, self.time_limit());
        let loc = loop {
            match self.master.read_chunk(inode, index).await {
                Ok(l) => break Arc::new(l),
                Err(e) if e.errno() == libc::EAGAIN => retry.failed(e.to_string()).await?,
                Err(e) => return Err(e),
            }
        };
        self.cache_location(inode, index, Arc::clone(&loc), false);
        Ok((loc, false))
    }

    /// Caches a location the master gave some other way (Open's first
    /// chunk). A write lease of this client wins over it, as over any.
    pub(crate) fn note_location(&self, inode: u64, index: u32, loc: ChunkLocation) {
        self.cache_location(inode, index, Arc::new(loc), true);
    }

    fn cache_location(&self, inode: u64, index: u32, loc: Arc<ChunkLocation>, from_open: bool) {
        let fetched = Instant::now();
        let c = CachedLocation {
            loc,
            fetched,
            from_open,
        };
        lock(&self.locations).insert((inode, index), c);
    }

    /// Drops the cached location of one chunk.
    pub(crate) fn forget_location(&self, inode: u64, index: u32) {
        lock(&self.locations).remove(&(inode, index));
    }

    /// Drops every cached location of `inode`.
    pub(crate) fn forget_locations(&self, inode: u64) {
        let mut map = lock(&self.locations);
        let keys: Vec<(u64, u32)> = map
            .range((inode, 0)..=(inode, u32::MAX))
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            map.remove(&k);
        }
    }

    /// The length reads stop at: the master's (as of `loc`) or the end of
    /// this client's uncommitted writes, whichever is larger.
    fn readable_length(&self, inode: u64, loc: &ChunkLocation) -> u64 {
        loc.file_length.max(self.local_length(inode).unwrap_or(0))
    }

    /// Reads up to `size` bytes at `offset` (see [`super::FileIo::read`]).
    /// A read served by one piece is the slice of the reply's receive buffer
    /// that holds it (no copy); pieces of a longer read are copied once into
    /// one buffer.
    pub(crate) async fn read(
        &self,
        inode: u64,
        offset: u64,
        size: u32,
    ) -> Result<Bytes, ClientError> {
        if size == 0 {
            return Ok(Bytes::new());
        }
        // The first chunk's location also tells the file's length. A read
        // that the cached length would cut short asks again, so a file that
        // another client has grown is read to its real end.
        let first = u32::try_from(offset / CHUNK_SIZE).unwrap_or(u32::MAX);
        let (mut loc, cached) = self.location(inode, first, false).await?;
        let want_end = offset.saturating_add(u64::from(size));
        if cached && self.readable_length(inode, &loc) < want_end {
            loc = self.location(inode, first, true).await?.0;
        }
        let end = want_end.min(self.readable_length(inode, &loc));
        if end <= offset {
            return Ok(Bytes::new());
        }
        let pieces = split(offset, end - offset, self.opts.max_request)?;
        if let [piece] = pieces[..] {
            return self.read_piece(inode, piece).await;
        }
        let total = (end - offset) as usize;
        let mut out = vec![0u8; total];
        let mut parts = stream::iter(pieces)
            .map(|p| async move { self.read_piece(inode, p).await.map(|d| (p, d)) })
            .buffer_unordered(self.opts.parallelism);
        while let Some((p, data)) = parts.try_next().await? {
            out[p.buf_range()].copy_from_slice(&data);
        }
        Ok(Bytes::from(out))
    }

    /// Reads one piece: exactly `piece.len` bytes (zeros for a hole), as
    /// the slice of the reply's receive buffer that holds them.
    async fn read_piece(&self, inode: u64, piece: Piece) -> Result<Bytes, ClientError> {
        let mut retry = Retry::new("read", inode, piece.index, self.time_limit());
        let mut fresh = false;
        loop {
            let (loc, _) = self.location(inode, piece.index, fresh).await?;
            if loc.chunk_id == 0 {
                return Ok(Bytes::from(vec![0u8; piece.len as usize]));
            }
            let at = ChunkAt {
                inode,
                index: piece.index,
                chunk_id: loc.chunk_id,
                version: loc.version,
            };
            let wide = self.block_around(inode, &loc, piece);
            if wide.is_some() {
                if let Some(d) = self.blocks.get(at, piece.chunk_offset, piece.len) {
                    return Ok(d);
                }
            }
            let mut error = format!(
                "chunk {:016X}_{:08X} has no valid copy (missing chunk)",
                loc.chunk_id, loc.version
            );
            let fetch = wide.map_or(piece, |(w, _)| w);
            for server in self.conns.by_silence(&loc.servers, |s| &s.address) {
                let asked = Instant::now();
                let mut answer = self.read_from(&server.address, &loc, fetch).await;
                // A connection that died unseen fails at once; a server
                // that does not answer is not asked twice, and is asked
                // last by the next reads.
                if matches!(answer, Err(Failure::Copy(_))) {
                    if asked.elapsed() < RENEW_WITHIN && self.conns.renew(&server.address) {
                        answer = self.read_from(&server.address, &loc, fetch).await;
                    } else {
                        self.conns.note_silence(&server.address, true);
                    }
                }
                if answer.is_ok() {
                    self.conns.note_silence(&server.address, false);
                }
                match answer {
                    Ok(data) => {
                        let Some((w, epoch)) = wide else {
                            return Ok(data);
                        };
                        let from = (piece.chunk_offset - w.chunk_offset) as usize;
                        let part = data.slice(from..from + piece.len as usize);
                        if let Some(sink) = self.pages.get() {
                            sink.offer(super::Fetched {
                                inode,
                                offset: u64::from(piece.index) * CHUNK_SIZE
                                    + u64::from(w.chunk_offset),
                                data: data.clone(),
                                until: self.location_until(inode, piece.index),
                                blocks: self.blocks.clone(),
                                epoch,
                            });
                        }
                        self.blocks.insert(at, w.chunk_offset, data, epoch);
                        return Ok(part);
                    }
                    Err(Failure::Final(e)) => return Err(e),
                    Err(Failure::Stale(text)) => {
                        error = text;
                        break;
                    }
                    Err(Failure::Copy(text)) => error = text,
                }
            }
            // Every copy failed or the version moved on: ask the master.
            self.forget_location(inode, piece.index);
            fresh = true;
            retry.failed(error).await?;
        }
    }

    /// When the cached location of chunk `index` goes stale (now + the
    /// location time when none is cached: a lease's, or just asked).
    fn location_until(&self, inode: u64, index: u32) -> Instant {
        let fetched = lock(&self.locations)
            .get(&(inode, index))
            .map(|c| c.fetched);
        fetched.unwrap_or_else(Instant::now) + self.opts.location_ttl
    }

    /// For a read smaller than a block and inside one, of a chunk no other
    /// session is writing: the whole block around it (cut at the end of
    /// the file) to fetch and keep, with the inode's epoch now. `None`:
    /// read just the piece, past the cache.
    fn block_around(
        &self,
        inode: u64,
        loc: &ChunkLocation,
        piece: Piece,
    ) -> Option<(Piece, blocks::Epoch)> {
        let end = piece.chunk_offset + piece.len;
        if !self.blocks.enabled()
            || loc.written_by_others
            || piece.len >= BLOCK
            || piece.chunk_offset / BLOCK != (end - 1) / BLOCK
        {
            return None;
        }
        let epoch = self.blocks.epoch(inode);
        let start = piece.chunk_offset - piece.chunk_offset % BLOCK;
        let base = u64::from(piece.index) * CHUNK_SIZE;
        let in_chunk = self.readable_length(inode, loc).saturating_sub(base);
        let block_end = u64::from(start + BLOCK).min(in_chunk);
        if block_end < u64::from(end) {
            return None;
        }
        let wide = Piece {
            index: piece.index,
            chunk_offset: start,
            len: block_end as u32 - start,
            buf_offset: 0,
        };
        Some((wide, epoch))
    }

    /// One Read call to one chunkserver.
    async fn read_from(
        &self,
        addr: &str,
        loc: &ChunkLocation,
        piece: Piece,
    ) -> Result<Bytes, Failure> {
        let mut client = self.conns.client(addr)?;
        let req = ChunkReadRequest {
            chunk_id: loc.chunk_id,
            version: loc.version,
            offset: u64::from(piece.chunk_offset),
            size: piece.len,
            missing_is_hole: loc.create,
            token: loc.token.clone(),
        };
        let limit = self.opts.chunk_call_timeout;
        let data = match tokio::time::timeout(limit, client.read(req)).await {
            Ok(Ok(r)) => r.into_inner().data,
            Ok(Err(status)) => return Err(super::conn::classify(addr, &status)),
            Err(_) => {
                return Err(Failure::Copy(format!(
                    "chunkserver {addr}: no reply within {limit:.1?}"
                )))
            }
        };
        if data.len() != piece.len as usize {
            return Err(Failure::Copy(format!(
                "chunkserver {addr} answered {} bytes for a read of {} (a chunkserver bug)",
                data.len(),
                piece.len
            )));
        }
        Ok(data)
    }
}
