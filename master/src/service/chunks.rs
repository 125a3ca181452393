//! `ChunkRegistry`: chunkservers announce themselves to the leader and report
//! their disks. This is soft state, never in Raft: a new leader learns it
//! again from the chunkservers' next registration (as MooseFS does).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mfs_proto::v1 as pb;
use mfs_proto::v1::chunk_registry_server::ChunkRegistry;
use tonic::{Request, Response, Status};

use crate::raft::MasterNode;

/// Seconds without a heartbeat after which a chunkserver counts as lost.
pub const LOST_AFTER_SECS: u64 = 30;

#[derive(Debug, Clone)]
pub struct Chunkserver {
    pub id: u64,
    pub address: String,
    pub labels: Vec<String>,
    pub disks: Vec<pb::DiskInfo>,
    pub last_seen: Instant,
}

/// The chunkservers this leader knows.
#[derive(Default)]
pub struct Registry {
    servers: Mutex<BTreeMap<u64, Chunkserver>>,
}

impl Registry {
    pub fn list(&self) -> Vec<Chunkserver> {
        self.servers
            .lock()
            .map(|s| s.values().cloned().collect())
            .unwrap_or_default()
    }

    fn register(&self, r: pb::RegisterChunkserverRequest) -> u64 {
        let Ok(mut s) = self.servers.lock() else {
            return 0;
        };
        let by_addr = s.values().find(|c| c.address == r.address).map(|c| c.id);
        let id = match by_addr {
            Some(id) => id,
            None if r.previous_id != 0 && !s.contains_key(&r.previous_id) => r.previous_id,
            None => s.keys().next_back().map(|k| k + 1).unwrap_or(1),
        };
        s.insert(
            id,
            Chunkserver {
                id,
                address: r.address,
                labels: r.labels,
                disks: r.disks,
                last_seen: Instant::now(),
            },
        );
        id
    }

    fn heartbeat(&self, h: pb::ChunkserverHeartbeat) -> bool {
        let Ok(mut s) = self.servers.lock() else {
            return false;
        };
        match s.get_mut(&h.id) {
            Some(c) => {
                c.disks = h.disks;
                c.last_seen = Instant::now();
                true
            }
            None => false,
        }
    }
}

pub struct Chunks {
    pub node: Arc<MasterNode>,
    pub registry: Arc<Registry>,
}

#[tonic::async_trait]
impl ChunkRegistry for Chunks {
    async fn register(
        &self,
        req: Request<pb::RegisterChunkserverRequest>,
    ) -> Result<Response<pb::RegisterChunkserverReply>, Status> {
        self.node.ensure_leader()?;
        let r = req.into_inner();
        if !r.address.contains(':') || r.address.len() > 255 {
            return Err(Status::invalid_argument(format!(
                "chunkserver address `{}` is not host:port",
                r.address
            )));
        }
        let id = self.registry.register(r);
        Ok(Response::new(pb::RegisterChunkserverReply { id }))
    }

    async fn report_chunks(
        &self,
        _req: Request<pb::ChunkReport>,
    ) -> Result<Response<pb::ChunkReportReply>, Status> {
        Err(Status::unimplemented(
            "ReportChunks: the data path is being built",
        ))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::ChunkserverHeartbeat>,
    ) -> Result<Response<pb::ChunkserverHeartbeatReply>, Status> {
        self.node.ensure_leader()?;
        let known = self.registry.heartbeat(req.into_inner());
        Ok(Response::new(pb::ChunkserverHeartbeatReply { known }))
    }
}
