//! `AdminService`: what mfscli asks and orders.

use std::sync::Arc;

use mfs_proto::v1 as pb;
use mfs_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use mfs_proto::ClusterSecret;

use crate::chunks::ChunkManager;
use crate::raft::MasterNode;

pub struct Admin {
    pub node: Arc<MasterNode>,
    /// The leader's chunkservers and chunk health.
    pub chunks: Arc<ChunkManager>,
    /// CLUSTER_SECRET: membership changes and snapshot orders need it.
    pub secret: ClusterSecret,
}

/// Trashed files counted between two yields to the master's other tasks.
const TRASH_PART: usize = 16_384;

/// What a caller refused for want of the secret is told to do.
const SECRET_FIX: &str = "membership changes and snapshot orders need the masters' CLUSTER_SECRET (mfscli: MFS_CLUSTER_SECRET or --cluster-secret; metaloggers: CLUSTER_SECRET)";

type R<T> = Result<Response<T>, Status>;

fn role(r: &str) -> pb::Role {
    match r {
        "leader" => pb::Role::Leader,
        "follower" => pb::Role::Follower,
        "candidate" => pb::Role::Candidate,
        "learner" => pb::Role::Learner,
        "uninitialized" => pb::Role::Uninitialized,
        "shutdown" => pb::Role::Shutdown,
        _ => pb::Role::Unspecified,
    }
}

impl Admin {
    fn membership_reply(&self) -> pb::MembershipReply {
        let v = self.node.view();
        pb::MembershipReply {
            voters: v.members.iter().filter(|m| m.2).map(|m| m.0).collect(),
            learners: v.members.iter().filter(|m| !m.2).map(|m| m.0).collect(),
        }
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    async fn node_status(&self, _req: Request<pb::Empty>) -> R<pb::NodeStatusReply> {
        let v = self.node.view();
        let inodes = self.node.shared.ns().inode_count();
        Ok(Response::new(pb::NodeStatusReply {
            id: v.id,
            address: v.address,
            role: role(v.role) as i32,
            term: v.term,
            last_log_index: v.last_log_index,
            commit_index: v.commit_index,
            applied_index: v.applied_index,
            snapshot_index: v.snapshot_index,
            leader_id: v.leader_id.unwrap_or(0),
            leader_address: v.leader_address.unwrap_or_default(),
            cluster_id: v.cluster_id.unwrap_or_default(),
            version: env!("CARGO_PKG_VERSION").into(),
            inodes,
        }))
    }

    async fn cluster_info(&self, _req: Request<pb::Empty>) -> R<pb::ClusterInfoReply> {
        self.node.ensure_leader()?;
        self.node.linearize().await?;
        let v = self.node.view();
        // (The namespace is read in a scope of its own: its guard must not
        // live across the health count's awaits.)
        let (sessions, inodes, sustained_files) = {
            let ns = self.node.shared.ns();
            let sessions: Vec<pb::SessionInfo> = ns
                .sessions()
                .iter()
                .map(|s| {
                    let rights = ns.session_rights(s.id);
                    pb::SessionInfo {
                        id: s.id.0,
                        info: s.info.clone(),
                        open_files: s.open_files as u64,
                        address: rights
                            .and_then(|r| r.from)
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                        root: rights.map_or(1, |r| r.root.0),
                        read_only: rights.is_some_and(|r| r.read_only),
                        meta: rights.is_some_and(|r| r.meta),
                        export_line: rights.map_or(0, |r| r.line),
                    }
                })
                .collect();
            let inodes = ns.inode_count();
            let sustained_files = ns.sustained().count() as u64;
            (sessions, inodes, sustained_files)
        };
        // The trash may hold millions of files: counted in parts, with
        // changes applied between them (the total is near, not exact, while
        // files come and go meanwhile).
        let (mut trash_files, mut trash_bytes, mut after) = (0, 0, None);
        loop {
            let (f, b, last) = self.node.shared.ns().trash_usage_after(after, TRASH_PART);
            trash_files += f;
            trash_bytes += b;
            match last {
                Some(l) => after = Some(l),
                None => break,
            }
            tokio::task::yield_now().await;
        }
        let copies = self.chunks.copies_per_server().await;
        let chunkservers = self
            .chunks
            .servers()
            .into_iter()
            .map(|(c, state)| pb::ChunkserverInfo {
                id: c.id,
                address: c.address,
                state: state.name().into(),
                total_bytes: c.disks.iter().map(|d| d.total).sum(),
                used_bytes: c.disks.iter().map(|d| d.used).sum(),
                chunks: copies.get(&c.id).copied().unwrap_or(0),
                disks: c.disks.len() as u32,
                labels: c.labels,
                last_seen_secs: c.last_seen.elapsed().as_secs(),
            })
            .collect();
        let h = self.chunks.health().await;
        let chunk_health = pb::ChunkHealth {
            chunks: h.chunks,
            missing: h.missing,
            undergoal: h.undergoal,
            overgoal: h.overgoal,
            stale: h.stale,
        };
        Ok(Response::new(pb::ClusterInfoReply {
            leader_id: v.id,
            term: v.term,
            commit_index: v.commit_index,
            members: v
                .members
                .iter()
                .map(|m| pb::MemberInfo {
                    id: m.0,
                    address: m.1.clone(),
                    voter: m.2,
                    matched_index: m.3,
                })
                .collect(),
            chunkservers,
            chunk_health: Some(chunk_health),
            sessions,
            cluster_id: v.cluster_id.unwrap_or_default(),
            inodes,
            trash_files,
            trash_bytes,
            sustained_files,
        }))
    }

    async fn add_master(&self, req: Request<pb::AddMasterRequest>) -> R<pb::MembershipReply> {
        self.secret.check(req.metadata(), SECRET_FIX)?;
        let r = req.into_inner();
        self.node.add_master(r.id, r.address).await?;
        Ok(Response::new(self.membership_reply()))
    }

    async fn remove_master(&self, req: Request<pb::RemoveMasterRequest>) -> R<pb::MembershipReply> {
        self.secret.check(req.metadata(), SECRET_FIX)?;
        self.node.remove_member(req.into_inner().id).await?;
        Ok(Response::new(self.membership_reply()))
    }

    async fn add_learner(&self, req: Request<pb::AddMasterRequest>) -> R<pb::MembershipReply> {
        self.secret.check(req.metadata(), SECRET_FIX)?;
        let r = req.into_inner();
        self.node.add_learner(r.id, r.address).await?;
        Ok(Response::new(self.membership_reply()))
    }

    async fn promote_learner(
        &self,
        req: Request<pb::RemoveMasterRequest>,
    ) -> R<pb::MembershipReply> {
        self.secret.check(req.metadata(), SECRET_FIX)?;
        self.node.promote(req.into_inner().id).await?;
        Ok(Response::new(self.membership_reply()))
    }

    async fn trigger_snapshot(&self, req: Request<pb::Empty>) -> R<pb::Empty> {
        self.secret.check(req.metadata(), SECRET_FIX)?;
        self.node.trigger_snapshot().await?;
        Ok(Response::new(pb::Empty {}))
    }
}
