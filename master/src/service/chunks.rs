//! `ChunkRegistry`: chunkservers announce themselves to the leader, report
//! their copies and send heartbeats. The state it feeds is the leader's soft
//! state (`crate::chunks`), never in Raft.

use std::sync::Arc;

use mfs_proto::v1 as pb;
use mfs_proto::v1::chunk_registry_server::ChunkRegistry;
use tonic::{Request, Response, Status};

use super::convert::{copy_from_pb, disk_from_pb};
use crate::chunks::state::{Beat, Registration};
use crate::chunks::ChunkManager;

/// Longest chunkserver address accepted.
const ADDRESS_MAX: usize = 255;
/// Most labels kept per chunkserver.
const LABELS_MAX: usize = 32;

pub struct Chunks {
    pub chunks: Arc<ChunkManager>,
}

impl Chunks {
    /// A chunkserver must show the cluster secret, when the masters have one.
    fn check<T>(&self, req: &Request<T>) -> Result<(), Status> {
        self.chunks.node.ident.secret().check(
            req.metadata(),
            "a chunkserver needs the masters' CLUSTER_SECRET (mfschunkserver.cfg)",
        )
    }
}

#[tonic::async_trait]
impl ChunkRegistry for Chunks {
    async fn register(
        &self,
        req: Request<pb::RegisterChunkserverRequest>,
    ) -> Result<Response<pb::RegisterChunkserverReply>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        if !r.address.contains(':') || r.address.len() > ADDRESS_MAX {
            return Err(Status::invalid_argument(format!(
                "chunkserver address `{}` is not host:port",
                r.address
            )));
        }
        let reg = Registration {
            address: r.address,
            previous_id: r.previous_id,
            labels: r.labels.into_iter().take(LABELS_MAX).collect(),
            disks: r.disks.iter().map(disk_from_pb).collect(),
            maintenance: r.maintenance,
        };
        let addr = reg.address.clone();
        let id = self.chunks.register(reg)?;
        tracing::info!(id, address = addr.as_str(), "chunkserver registered");
        Ok(Response::new(pb::RegisterChunkserverReply { id }))
    }

    async fn report_chunks(
        &self,
        req: Request<pb::ChunkReport>,
    ) -> Result<Response<pb::ChunkReportReply>, Status> {
        self.check(&req)?;
        let r = req.into_inner();
        let copies = r.chunks.iter().map(copy_from_pb).collect();
        let known = self.chunks.report(r.id, r.first, r.last, copies)?;
        Ok(Response::new(pb::ChunkReportReply { known }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::ChunkserverHeartbeat>,
    ) -> Result<Response<pb::ChunkserverHeartbeatReply>, Status> {
        self.check(&req)?;
        let h = req.into_inner();
        let beat = Beat {
            disks: h.disks.iter().map(disk_from_pb).collect(),
            load: h.load,
            maintenance: h.maintenance,
            added: h.added.iter().map(copy_from_pb).collect(),
            removed: h.removed.iter().map(copy_from_pb).collect(),
        };
        let known = self.chunks.heartbeat(h.id, beat)?;
        Ok(Response::new(pb::ChunkserverHeartbeatReply { known }))
    }
}
