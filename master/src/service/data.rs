//! MetaService's data-path calls: where a chunk is to read it, its write
//! lease, the end of a write, punched chunks (the chunk side is in
//! `crate::chunks`).

use std::sync::Arc;

use mfs_proto::v1 as pb;
use mfs_proto::{ChunkAccess, CHUNK_TOKEN_SECS};
use tonic::{Request, Response, Status};

use super::access::{Caller, Need};
use super::convert::*;
use super::error::invalid;
use super::meta::{given_time, req_id, rid, Meta, R};
use crate::chunks::datapath::{EndChange, Location};
use crate::fsm::{ChunkId, Inode, Op, SessionId, Timespec};
use crate::raft::node::now;

/// A WriteChunkEnd's mtime and attribute change, checked.
pub(super) fn end_args(
    c: &Caller,
    r: &pb::WriteChunkEndRequest,
) -> Result<(Option<Timespec>, Option<EndChange>), Status> {
    let mtime = given_time(r.mtime, "WriteChunkEnd: mtime")?;
    let atime = given_time(r.atime, "WriteChunkEnd: atime")?;
    if r.mode.is_some_and(|m| m > 0o7777) {
        return Err(invalid("WriteChunkEnd: mode has bits above 0o7777"));
    }
    let change = match (r.mode, atime) {
        (None, None) => None,
        (mode, atime) => {
            if r.cred.is_none() {
                return Err(invalid(
                    "WriteChunkEnd: an attribute change (mode, atime) needs cred",
                ));
            }
            Some(EndChange {
                cred: c.cred(r.cred.clone()),
                mode,
                atime,
            })
        }
    };
    Ok((mtime, change))
}

impl Meta {
    /// `loc` with the chunkservers' token for `access` (empty without a
    /// cluster secret, or for a hole).
    pub(super) fn with_token(
        &self,
        mut loc: pb::ChunkLocation,
        access: ChunkAccess,
    ) -> pb::ChunkLocation {
        if loc.chunk_id != 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            loc.token =
                self.secret
                    .chunk_token(loc.chunk_id, loc.version, access, now + CHUNK_TOKEN_SECS);
        }
        loc
    }

    pub(super) async fn chunk_to_read(
        &self,
        req: Request<pb::ReadChunkRequest>,
    ) -> R<pb::ChunkLocation> {
        let (_, r) = self
            .admit(req, Need::Read, |r| vec![Inode(r.inode)])
            .await?;
        let loc = self
            .chunks
            .read_chunk(SessionId(r.session), Inode(r.inode), r.index)
            .await?;
        Ok(Response::new(
            self.with_token(location_to_pb(loc), ChunkAccess::Read),
        ))
    }

    pub(super) async fn chunk_to_write(
        &self,
        req: Request<pb::WriteChunkRequest>,
    ) -> R<pb::ChunkLocation> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.inode)])
            .await?;
        let id = rid(r.id)?;
        // Run to its end even when the client gives up waiting: the version
        // protocol (bump the copies, commit, answer) must not stop between
        // its steps. The client's retry, with the same sequence number, is
        // answered from the reply cache once it has committed.
        let chunks = Arc::clone(&self.chunks);
        let (cred, inode, index) = (c.cred(r.cred), Inode(r.inode), r.index);
        let renewal = r.renew.then_some(r.lease_servers);
        let loc = tokio::spawn(async move {
            chunks
                .write_chunk(req_id(&id), cred, inode, index, renewal.as_deref())
                .await
        })
        .await
        .map_err(|e| Status::internal(format!("WriteChunk: {e}")))??;
        Ok(Response::new(self.write_location(loc, Inode(r.inode))))
    }

    /// The answer to a write lease on a chunk of `inode`: with the
    /// chunkservers' write token and the room left under its quotas.
    pub(super) fn write_location(&self, loc: Location, inode: Inode) -> pb::ChunkLocation {
        let room = self.node.shared.ns().quota_room(inode, now().sec);
        let mut loc = self.with_token(location_to_pb(loc), ChunkAccess::Write);
        loc.quota_room = room;
        loc
    }

    pub(super) async fn end_write(
        &self,
        req: Request<pb::WriteChunkEndRequest>,
    ) -> R<pb::AttrReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.inode)])
            .await?;
        let id = rid(r.id)?;
        if r.time.is_some() {
            return Err(invalid(
                "WriteChunkEnd: `time` is only for a Batch's write_end (a file made in a delegated directory)",
            ));
        }
        let (mtime, change) = end_args(&c, &r)?;
        let a = self
            .chunks
            .write_chunk_end(
                req_id(&id),
                (Inode(r.inode), r.index),
                (ChunkId(r.chunk_id), r.created),
                (r.file_length, mtime),
                change,
            )
            .await?;
        Ok(Response::new(pb::AttrReply {
            attr: Some(self.attr_now(&a)),
        }))
    }

    pub(super) async fn punch(&self, req: Request<pb::PunchChunksRequest>) -> R<pb::AttrReply> {
        let (c, r) = self
            .admit(req, Need::Write, |r| vec![Inode(r.inode)])
            .await?;
        let op = Op::PunchChunks {
            cred: c.cred(r.cred),
            inode: Inode(r.inode),
            first: r.first,
            count: r.count,
        };
        self.attr_response(self.mutate(r.id, op).await?)
    }
}
