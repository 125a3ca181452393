//! A Raft node that only learns: the metalogger's half of the master's Raft
//! code. It runs the same log store, state machine (with an
//! [`ApplyObserver`]), network and identity checks as a master, but it never
//! bootstraps a cluster, never campaigns and refuses vote requests: it joins
//! an existing cluster as a learner (the leader adds it with AddLearner) and
//! receives every committed entry.
//!
//! Also here: [`image_position`] (read a metadata image and its log
//! position without naming openraft types) and [`check_promotable`] (the
//! leader refuses to make a metalogger a voter).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mfs_proto::v1::admin_service_client::AdminServiceClient;
use mfs_proto::v1::raft_service_server::{RaftService, RaftServiceServer};
use mfs_proto::v1::{RaftPayload, SnapshotPiece};
use openraft::async_runtime::watch::WatchReceiver;
use openraft::vote::RaftLeaderId;
use openraft::{Config, SnapshotPolicy};
use tonic::{Request, Response, Status, Streaming};

use super::identity::Identity;
use super::network::Network;
use super::node::NodeError;
use super::observer::{ApplyObserver, LogPosition};
use super::service::{AppendReplies, RaftGrpc};
use super::sm::{parse_image, position, Shared, StateMachine};
use super::store::{LogStore, SyncPolicy};
use super::types::*;
use crate::fsm::Namespace;
use crate::store::DataDir;

/// How long a learner's log waits for more entries before a sync (see
/// [`SyncPolicy::Grouped`]): what it costs the masters and the disk drops
/// from one message and one fsync per entry to a few dozen a second, and
/// its acknowledgement, which no commit waits for, comes this much later.
pub const LEARNER_SYNC_WAIT: Duration = Duration::from_millis(20);

/// What a learner node needs to start.
#[derive(Debug, Clone)]
pub struct LearnerSettings {
    /// Its Raft node id (distinct from every master's).
    pub id: u64,
    /// Where its Raft log, vote and own snapshots live.
    pub raft_dir: PathBuf,
    /// `host:port` the leader reaches its RaftService at.
    pub advertise: String,
    /// The cluster secret (empty: none).
    pub cluster_secret: String,
    /// Build a snapshot of its own after this many entries (so its Raft log
    /// stays short).
    pub snapshot_log_entries: u64,
    /// And at least this many per inode of the namespace (see
    /// `raft::snapshots`).
    pub snapshot_entries_per_inode: u64,
    /// Own snapshot files kept.
    pub snapshot_files: usize,
}

/// A learner's state, for logs, metrics and status pages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LearnerStatus {
    /// "learner", "uninitialized" (not a member yet), "voter" (promoted by
    /// mistake: it still refuses votes), "shutdown".
    pub role: &'static str,
    pub term: u64,
    pub last_log_index: u64,
    /// The last entry applied (and handed to the observer).
    pub applied: Option<LogPosition>,
    pub leader_id: Option<u64>,
    pub cluster_id: Option<String>,
    /// Why the node stopped, when a storage or observer error stopped it.
    pub fatal: Option<String>,
}

/// A running learner.
pub struct LearnerNode {
    pub id: u64,
    pub advertise: String,
    raft: Raft,
    shared: Arc<Shared>,
    ident: Arc<Identity>,
    /// Keeps the data dir (and its lock) open.
    _datadir: Arc<DataDir>,
}

impl LearnerNode {
    /// Opens (or creates) the learner's Raft state in `s.raft_dir` and starts
    /// the node. The observer is first told where the state stands (so it
    /// can note a jump, e.g. when its own files are behind the snapshot the
    /// node starts from), then sees every entry applied from there on.
    /// Serve [`Self::raft_service`] so the leader can reach it.
    pub async fn start(
        s: &LearnerSettings,
        observer: Arc<dyn ApplyObserver>,
    ) -> Result<Arc<LearnerNode>, String> {
        if s.id == 0 {
            return Err("the learner's node id must be a positive number".into());
        }
        let (datadir, db) = DataDir::open(&s.raft_dir, s.id).map_err(|e| e.to_string())?;
        let datadir = Arc::new(datadir);
        let dd = datadir.clone();
        let ident = Arc::new(Identity::new(
            s.id,
            datadir.cluster_id(),
            s.cluster_secret.clone(),
            Box::new(move |id| dd.set_cluster_id(id).map_err(|e| e.to_string())),
        ));
        let log = LogStore::open(
            db,
            &datadir.log_dir(),
            SyncPolicy::Grouped(LEARNER_SYNC_WAIT),
        )
        .map_err(|e| format!("cannot open the Raft log in {}: {e}", s.raft_dir.display()))?;
        let sm = StateMachine::open(datadir.snapshot_dir(), s.snapshot_files.max(1))?;
        let shared = sm.shared.clone();
        let (meta, image) = shared
            .image()
            .map_err(|e| format!("cannot image the learner's state: {e}"))?;
        observer.state_replaced(meta.last_log_id.as_ref().map(position), &image)?;
        let sm = sm.with_observer(observer);

        let config = Config {
            cluster_name: "rmfs".into(),
            // A learner never campaigns: elections are the masters' business.
            enable_elect: false,
            install_snapshot_timeout: 60_000,
            // `snapshots::keep` asks for them.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: 0,
            max_payload_entries: 1000,
            ..Default::default()
        };
        let config = Arc::new(
            config
                .validate()
                .map_err(|e| format!("raft settings: {e}"))?,
        );
        let net = Network {
            ident: ident.clone(),
        };
        let raft = Raft::new(s.id, config, net, log, sm)
            .await
            .map_err(|e| format!("cannot start Raft: {e}"))?;
        tokio::spawn(super::snapshots::keep(
            raft.clone(),
            shared.clone(),
            super::snapshots::SnapshotRule {
                min_entries: s.snapshot_log_entries,
                entries_per_inode: s.snapshot_entries_per_inode,
            },
        ));
        Ok(Arc::new(LearnerNode {
            id: s.id,
            advertise: s.advertise.clone(),
            raft,
            shared,
            ident,
            _datadir: datadir,
        }))
    }

    /// The RaftService the leader sends entries and snapshots to. Vote
    /// requests are refused: a learner never votes.
    pub fn raft_service(&self) -> RaftServiceServer<LearnerRaftService> {
        RaftServiceServer::new(LearnerRaftService {
            inner: RaftGrpc {
                raft: self.raft.clone(),
                ident: self.ident.clone(),
            },
        })
        .max_decoding_message_size(64 << 20)
    }

    /// The cluster this learner belongs to (None until the leader first
    /// reached it).
    pub fn cluster_id(&self) -> Option<String> {
        self.ident.cluster_id()
    }

    pub fn status(&self) -> LearnerStatus {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership();
        let member = membership.get_node(&self.id).is_some();
        let voter = membership.voter_ids().any(|v| v == self.id);
        let role = match m.state {
            ServerState::Shutdown => "shutdown",
            _ if voter => "voter",
            _ if member => "learner",
            _ => "uninitialized",
        };
        LearnerStatus {
            role,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            applied: m.last_applied.as_ref().map(position),
            leader_id: m.current_leader,
            cluster_id: self.ident.cluster_id(),
            fatal: m.running_state.as_ref().err().map(|e| e.to_string()),
        }
    }

    /// The metadata image of the current state and where it stands.
    pub fn image(&self) -> Result<(Option<LogPosition>, Vec<u8>), String> {
        let (meta, image) = self
            .shared
            .image()
            .map_err(|e| format!("cannot image the namespace: {e}"))?;
        Ok((meta.last_log_id.as_ref().map(position), image))
    }

    /// Number of inodes in the namespace held here.
    pub fn inodes(&self) -> u64 {
        self.shared.ns().inode_count()
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}

/// The learner's RaftService: entries and snapshots go to openraft (after
/// the same identity checks as on a master), votes are refused.
pub struct LearnerRaftService {
    inner: RaftGrpc,
}

const NO_VOTE: &str = "this node is a metalogger (a Raft learner): it never votes; \
                       remove it from the voters with `mfscli remove-master ID`";

#[tonic::async_trait]
impl RaftService for LearnerRaftService {
    type AppendStreamStream = AppendReplies;

    async fn append_stream(
        &self,
        req: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<AppendReplies>, Status> {
        self.inner.append_stream(req).await
    }

    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.inner.append_entries(req).await
    }

    async fn vote(&self, _req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        Err(Status::failed_precondition(NO_VOTE))
    }

    async fn pre_vote(&self, _req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        Err(Status::failed_precondition(NO_VOTE))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<SnapshotPiece>>,
    ) -> Result<Response<RaftPayload>, Status> {
        self.inner.install_snapshot(req).await
    }
}

/// Reads a metadata image (checking its magic, version and CRC): the
/// namespace and the log position it stands at (`None`: the empty state
/// before the first entry).
pub fn image_position(bytes: &[u8]) -> Result<(Namespace, Option<LogPosition>), String> {
    let (ns, (last, _membership)) = parse_image(bytes)?;
    Ok((ns, last.as_ref().map(position)))
}

/// The metadata image of `ns` standing at log position `pos` (`None`: before
/// the first entry), with a membership of `voters` (id, `host:port`), all
/// voters. The log id's leader is the first voter (0 when there is none).
/// For a restored master's snapshot, and for tests of tools reading images.
pub fn make_image(
    ns: &Namespace,
    pos: Option<LogPosition>,
    voters: &[(u64, String)],
) -> Result<Vec<u8>, String> {
    let leader = voters.first().map(|v| v.0).unwrap_or(0);
    let log_id = pos.map(|p| LogId::new(LeaderId::new(p.term, leader).to_committed(), p.index));
    let nodes: std::collections::BTreeMap<NodeId, Node> = voters
        .iter()
        .map(|(id, addr)| (*id, Node { addr: addr.clone() }))
        .collect();
    let membership = if nodes.is_empty() {
        StoredMembership::default()
    } else {
        StoredMembership::new(log_id, Membership::from(nodes))
    };
    let extra = codec::encode(&(log_id, membership)).map_err(|e| format!("image: {e}"))?;
    ns.try_to_image(&extra)
        .map_err(|e| format!("cannot image the namespace: {e}"))
}

/// Refuses to make learner `id` at `addr` a voter unless it is a master: a
/// master serves AdminService, a metalogger does not (it keeps the
/// changelog and cannot serve clients). An unreachable learner is refused
/// too: a voter that does not answer only weakens the quorum.
pub async fn check_promotable(id: u64, addr: &str) -> Result<(), NodeError> {
    let ep = mfs_proto::tls::endpoint(addr)
        .map_err(|e| NodeError::Invalid(format!("learner {id} has a bad address `{addr}`: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(2));
    let unreachable = |e: String| {
        NodeError::Unavailable(format!(
            "cannot reach learner {id} at {addr} ({e}); start it, then promote it again"
        ))
    };
    // A time limit on the connection as a whole (a TLS handshake included).
    let ch = tokio::time::timeout(Duration::from_secs(3), ep.connect())
        .await
        .map_err(|_| unreachable("no answer within 3 s".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    match AdminServiceClient::new(ch)
        .node_status(mfs_proto::v1::Empty {})
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::Unimplemented => Err(NodeError::Invalid(format!(
            "learner {id} at {addr} is a metalogger: it keeps the changelog and cannot act as a \
             master, so it cannot become a voter; promotion is for masters started as learners \
             (mfsmaster added with add-learner). To turn a metalogger's data into a master, use \
             `mfsmetalogger restore`"
        ))),
        Err(s) => Err(NodeError::Unavailable(format!(
            "learner {id} at {addr} did not answer NodeStatus ({}); promote it once it runs",
            s.message()
        ))),
    }
}
