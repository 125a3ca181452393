//! The cluster overview that `mfscli info` prints.
//!
//! [`ClusterView`] is also the JSON contract of `mfscli info --json`: scripts
//! and the cross-process tests read it (they can deserialize it with these
//! very types). Field names and meanings are stable; see [`ClusterView`].

use futures::future::join_all;
use mfs_proto::v1::{ClusterInfoReply, NodeStatusReply, Role};
use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::master::MasterClient;

/// What `mfscli info --json` prints:
///
/// ```json
/// {"leader": 1, "leader_address": "127.0.0.1:9421", "term": 3, "cluster_id": "c0ffee",
///  "masters": [{"id": 1, "address": "127.0.0.1:9421", "reachable": true, "error": null,
///               "role": "leader", "term": 3, "last_log_index": 42, "commit_index": 42,
///               "applied_index": 42, "snapshot_index": 0, "leader_id": 1}],
///  "members": [{"id": 1, "address": "127.0.0.1:9421", "voter": true, "matched_index": 42}],
///  "metaloggers": [{"id": 10, "address": "127.0.0.1:9419", "matched_index": 42}],
///  "chunkservers": [{"id": 1, "address": "127.0.0.1:9422", "state": "ok", "disks": 1,
///                    "total_bytes": 1000, "used_bytes": 10, "chunks": 3, "labels": [],
///                    "last_seen_secs": 1}],
///  "chunk_health": {"chunks": 3, "missing": 0, "undergoal": 0, "overgoal": 0, "stale": 0},
///  "sessions": 1, "inodes": 7, "trash_files": 2, "trash_bytes": 4096,
///  "sustained_files": 0}
/// ```
///
/// - `masters`: one entry per listed master (`-H`, names expanded to their
///   IPs), in order, then voters of the membership that were not listed.
///   An unreachable one has `"reachable": false`, `error` set, `id` and
///   `leader_id` null, `role` "unknown" and zero indexes. `role` is one of
///   "leader", "follower", "candidate", "learner", "uninitialized",
///   "shutdown", "unknown". `leader_id` is the leader that master knows (null:
///   none).
/// - `leader`, `leader_address`, `members`, `metaloggers` (the learners among
///   the members), `chunkservers`, `chunk_health`, `sessions`, `inodes`, `trash_files`,
///   `trash_bytes`, `sustained_files`: as
///   the leader answered ClusterInfo. When no leader answered, `leader` and
///   `leader_address` are null, the lists empty and the counts 0; `term` and
///   `cluster_id` then come from the masters that answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterView {
    pub leader: Option<u64>,
    pub leader_address: Option<String>,
    pub term: u64,
    pub cluster_id: String,
    pub masters: Vec<MasterView>,
    pub members: Vec<MemberView>,
    pub metaloggers: Vec<MetaloggerView>,
    pub chunkservers: Vec<ChunkserverView>,
    pub chunk_health: ChunkHealthView,
    pub sessions: u64,
    pub inodes: u64,
    #[serde(default)]
    pub trash_files: u64,
    #[serde(default)]
    pub trash_bytes: u64,
    #[serde(default)]
    pub sustained_files: u64,
}

/// One master's own view (its NodeStatus).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MasterView {
    pub id: Option<u64>,
    pub address: String,
    pub reachable: bool,
    pub error: Option<String>,
    pub role: String,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub leader_id: Option<u64>,
}

/// A member of the Raft membership, as the leader sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberView {
    pub id: u64,
    pub address: String,
    pub voter: bool,
    pub matched_index: u64,
}

/// A learner member (a metalogger).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaloggerView {
    pub id: u64,
    pub address: String,
    pub matched_index: u64,
}

/// A chunkserver registered with the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkserverView {
    pub id: u64,
    pub address: String,
    pub state: String,
    pub disks: u32,
    pub total_bytes: u64,
    pub used_bytes: u64,
    pub chunks: u64,
    pub labels: Vec<String>,
    /// Seconds since the leader last heard from it.
    #[serde(default)]
    pub last_seen_secs: u64,
}

/// Chunk counts by health.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkHealthView {
    pub chunks: u64,
    pub missing: u64,
    pub undergoal: u64,
    pub overgoal: u64,
    pub stale: u64,
}

impl ClusterView {
    /// True when at least one master answered NodeStatus.
    pub fn any_reachable(&self) -> bool {
        self.masters.iter().any(|m| m.reachable)
    }
}

/// The name of a Raft role as the JSON shows it.
pub fn role_name(role: i32) -> &'static str {
    match Role::try_from(role) {
        Ok(Role::Leader) => "leader",
        Ok(Role::Follower) => "follower",
        Ok(Role::Candidate) => "candidate",
        Ok(Role::Learner) => "learner",
        Ok(Role::Uninitialized) => "uninitialized",
        Ok(Role::Shutdown) => "shutdown",
        Ok(Role::Unspecified) | Err(_) => "unknown",
    }
}

fn nonzero(n: u64) -> Option<u64> {
    (n != 0).then_some(n)
}

/// A master entry from its NodeStatus answer (or failure).
pub fn master_view(address: &str, status: Result<&NodeStatusReply, &ClientError>) -> MasterView {
    match status {
        Ok(s) => MasterView {
            id: Some(s.id),
            address: address.to_string(),
            reachable: true,
            error: None,
            role: role_name(s.role).to_string(),
            term: s.term,
            last_log_index: s.last_log_index,
            commit_index: s.commit_index,
            applied_index: s.applied_index,
            snapshot_index: s.snapshot_index,
            leader_id: nonzero(s.leader_id),
        },
        Err(e) => MasterView {
            address: address.to_string(),
            // The address is in its own field already.
            error: Some(match e {
                ClientError::Unreachable { message, .. } => message.clone(),
                e => e.to_string(),
            }),
            role: "unknown".to_string(),
            ..MasterView::default()
        },
    }
}

/// Builds the view from the NodeStatus answers (address, answer) and the
/// leader's ClusterInfo (if it answered).
pub fn build_view(
    statuses: &[(String, Result<NodeStatusReply, ClientError>)],
    cluster: Option<&ClusterInfoReply>,
) -> ClusterView {
    let masters: Vec<MasterView> = statuses
        .iter()
        .map(|(a, s)| master_view(a, s.as_ref()))
        .collect();
    let answered = || statuses.iter().filter_map(|(_, s)| s.as_ref().ok());
    let Some(ci) = cluster else {
        return ClusterView {
            term: answered().map(|s| s.term).max().unwrap_or(0),
            cluster_id: answered()
                .map(|s| s.cluster_id.clone())
                .find(|c| !c.is_empty())
                .unwrap_or_default(),
            masters,
            ..ClusterView::default()
        };
    };
    let leader = nonzero(ci.leader_id);
    let leader_address = leader.and_then(|l| {
        let from_members = ci
            .members
            .iter()
            .find(|m| m.id == l)
            .map(|m| m.address.clone());
        let from_status = || {
            statuses
                .iter()
                .find_map(|(a, s)| s.as_ref().ok().filter(|s| s.id == l).map(|_| a.clone()))
        };
        from_members.filter(|a| !a.is_empty()).or_else(from_status)
    });
    let h = ci.chunk_health.unwrap_or_default();
    ClusterView {
        leader,
        leader_address,
        term: ci.term,
        cluster_id: ci.cluster_id.clone(),
        masters,
        members: ci
            .members
            .iter()
            .map(|m| MemberView {
                id: m.id,
                address: m.address.clone(),
                voter: m.voter,
                matched_index: m.matched_index,
            })
            .collect(),
        metaloggers: ci
            .members
            .iter()
            .filter(|m| !m.voter)
            .map(|m| MetaloggerView {
                id: m.id,
                address: m.address.clone(),
                matched_index: m.matched_index,
            })
            .collect(),
        chunkservers: ci
            .chunkservers
            .iter()
            .map(|c| ChunkserverView {
                id: c.id,
                address: c.address.clone(),
                state: c.state.clone(),
                disks: c.disks,
                total_bytes: c.total_bytes,
                used_bytes: c.used_bytes,
                chunks: c.chunks,
                labels: c.labels.clone(),
                last_seen_secs: c.last_seen_secs,
            })
            .collect(),
        chunk_health: ChunkHealthView {
            chunks: h.chunks,
            missing: h.missing,
            undergoal: h.undergoal,
            overgoal: h.overgoal,
            stale: h.stale,
        },
        sessions: ci.sessions.len() as u64,
        inodes: ci.inodes,
        trash_files: ci.trash_files,
        trash_bytes: ci.trash_bytes,
        sustained_files: ci.sustained_files,
    }
}

/// Asks every master for its NodeStatus (in parallel, each within the
/// client's per-attempt timeout) and the leader for ClusterInfo (within the
/// client's overall timeout), then the voters that were not listed. Returns
/// the view, and the ClusterInfo error when no leader answered.
pub async fn gather(client: &MasterClient) -> (ClusterView, Option<ClientError>) {
    let listed = client.masters();
    let statuses = join_all(listed.iter().map(|a| client.node_status(a)));
    let (statuses, cluster) = tokio::join!(statuses, client.cluster_info());
    let mut statuses: Vec<(String, Result<NodeStatusReply, ClientError>)> =
        listed.into_iter().zip(statuses).collect();
    if let Ok(ci) = &cluster {
        let known_ids: Vec<u64> = statuses
            .iter()
            .filter_map(|(_, s)| s.as_ref().ok().map(|s| s.id))
            .collect();
        let extra: Vec<String> = ci
            .members
            .iter()
            .filter(|m| m.voter && !m.address.is_empty() && !known_ids.contains(&m.id))
            .map(|m| m.address.clone())
            .filter(|a| !statuses.iter().any(|(l, _)| l == a))
            .collect();
        let answers = join_all(extra.iter().map(|a| client.node_status(a))).await;
        statuses.extend(extra.into_iter().zip(answers));
    }
    let view = build_view(&statuses, cluster.as_ref().ok());
    (view, cluster.err())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfs_proto::v1::{ChunkHealth, ChunkserverInfo, MemberInfo, SessionInfo};

    fn node(id: u64, role: Role, leader: u64) -> NodeStatusReply {
        NodeStatusReply {
            id,
            role: role as i32,
            term: 4,
            last_log_index: 10,
            commit_index: 9,
            applied_index: 8,
            leader_id: leader,
            cluster_id: "cid".into(),
            ..NodeStatusReply::default()
        }
    }

    #[test]
    fn view_without_leader() {
        let statuses = vec![
            ("a:1".to_string(), Ok(node(1, Role::Candidate, 0))),
            (
                "b:1".to_string(),
                Err(ClientError::NoMaster("refused".into())),
            ),
        ];
        let v = build_view(&statuses, None);
        assert_eq!(v.leader, None);
        assert_eq!(v.term, 4);
        assert_eq!(v.cluster_id, "cid");
        assert!(v.any_reachable());
        assert_eq!(v.masters[0].role, "candidate");
        assert_eq!(v.masters[0].leader_id, None);
        assert!(!v.masters[1].reachable);
        assert_eq!(v.masters[1].role, "unknown");
        assert!(v.masters[1]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("refused")));
        let json = serde_json::to_value(&v).unwrap_or_default();
        assert_eq!(json["leader"], serde_json::Value::Null);
        assert_eq!(json["masters"][1]["id"], serde_json::Value::Null);
        assert_eq!(json["masters"][0]["last_log_index"], 10);
        assert_eq!(json["chunk_health"]["missing"], 0);
    }

    #[test]
    fn view_with_leader() {
        let statuses = vec![
            ("a:1".to_string(), Ok(node(1, Role::Leader, 1))),
            ("b:1".to_string(), Ok(node(2, Role::Follower, 1))),
        ];
        let ci = ClusterInfoReply {
            leader_id: 1,
            term: 5,
            members: vec![
                MemberInfo {
                    id: 1,
                    address: "a:1".into(),
                    voter: true,
                    matched_index: 10,
                },
                MemberInfo {
                    id: 2,
                    address: "b:1".into(),
                    voter: true,
                    matched_index: 9,
                },
                MemberInfo {
                    id: 9,
                    address: "m:1".into(),
                    voter: false,
                    matched_index: 7,
                },
            ],
            chunkservers: vec![ChunkserverInfo {
                id: 3,
                address: "c:1".into(),
                state: "ok".into(),
                total_bytes: 100,
                used_bytes: 40,
                chunks: 2,
                disks: 1,
                labels: vec!["rack1".into()],
                last_seen_secs: 1,
            }],
            chunk_health: Some(ChunkHealth {
                chunks: 2,
                missing: 1,
                undergoal: 0,
                overgoal: 0,
                stale: 0,
            }),
            sessions: vec![SessionInfo::default(), SessionInfo::default()],
            cluster_id: "cid".into(),
            inodes: 12,
            ..ClusterInfoReply::default()
        };
        let v = build_view(&statuses, Some(&ci));
        assert_eq!(v.leader, Some(1));
        assert_eq!(v.leader_address.as_deref(), Some("a:1"));
        assert_eq!(v.term, 5);
        assert_eq!(v.members.len(), 3);
        assert_eq!(
            v.metaloggers,
            vec![MetaloggerView {
                id: 9,
                address: "m:1".into(),
                matched_index: 7
            }]
        );
        assert_eq!(v.chunkservers[0].labels, vec!["rack1".to_string()]);
        assert_eq!(v.chunkservers[0].last_seen_secs, 1);
        assert_eq!(v.chunk_health.missing, 1);
        assert_eq!(v.sessions, 2);
        assert_eq!(v.inodes, 12);
        let back: ClusterView =
            serde_json::from_str(&serde_json::to_string(&v).unwrap_or_default())
                .unwrap_or_default();
        assert_eq!(back, v);
    }

    #[test]
    fn role_names() {
        assert_eq!(role_name(Role::Leader as i32), "leader");
        assert_eq!(role_name(Role::Uninitialized as i32), "uninitialized");
        assert_eq!(role_name(0), "unknown");
        assert_eq!(role_name(99), "unknown");
    }
}
