//! A running master: the openraft node with its storage, network and
//! identity, plus what only the leader does (bootstrap of a new cluster,
//! session expiry, stamping the cluster id into the namespace).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mfs_proto::v1::admin_service_client::AdminServiceClient;
use mfs_proto::v1::raft_service_server::RaftServiceServer;
use openraft::async_runtime::watch::WatchReceiver;
use openraft::{ChangeMembers, Config, Instant as _, ReadPolicy, SnapshotPolicy};

use super::early::EarlyOpens;
use super::identity::Identity;
use super::network::Network;
use super::service::RaftGrpc;
use super::sm::{Shared, StateMachine};
use super::store::{LogStore, SyncPolicy};
use super::types::*;
use crate::config::{MasterConfig, Resolved};
use crate::fsm::{Op, Reply, Request, SessionId, Timespec};
use crate::store::DataDir;

/// Why a call could not be served here.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Not the leader; `leader` is the leader's address when known.
    #[error("not the leader (leader: {})", leader.as_deref().unwrap_or("unknown"))]
    NotLeader { leader: Option<String> },
    /// The group cannot serve now (no quorum, shutting down, ...).
    #[error("{0}")]
    Unavailable(String),
    /// The request itself is wrong (e.g. an unknown member id).
    #[error("{0}")]
    Invalid(String),
}

/// One master's own state, as `mfscli info` shows it.
#[derive(Debug, Clone, Default)]
pub struct NodeView {
    pub id: u64,
    pub address: String,
    /// "leader", "follower", "candidate", "learner", "uninitialized", "shutdown".
    pub role: &'static str,
    pub term: u64,
    pub last_log_index: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub snapshot_index: u64,
    pub leader_id: Option<u64>,
    pub leader_address: Option<String>,
    pub cluster_id: Option<String>,
    /// (id, address, voter, matched index) of each member.
    pub members: Vec<(u64, String, bool, u64)>,
}

pub struct MasterNode {
    pub id: u64,
    pub advertise: String,
    pub raft: Raft,
    pub shared: Arc<Shared>,
    pub ident: Arc<Identity>,
    read_policy: ReadPolicy,
    session_timeout: Duration,
    /// Last sign of life of each session, as this leader saw it (soft state:
    /// a new leader starts every session's clock afresh).
    seen: Mutex<HashMap<u64, Instant>>,
    /// The term in which this leader has applied an entry of its own; reads
    /// wait for one first (see [`MasterNode::linearize`]).
    barrier_term: AtomicU64,
    /// How long after a quorum acknowledged what this leader sent it may
    /// serve reads without asking anyone (the shortest election timeout:
    /// no other leader can be elected sooner).
    lease: Duration,
    /// Held shared while a write is handed to openraft, exclusively by an
    /// open answered before its commit (see `open_before_commit`): writes
    /// do not wait for each other, only for such an open.
    pub(super) submit_order: tokio::sync::RwLock<()>,
    /// Writes handed to openraft here and not yet applied (opens answered
    /// early are not counted).
    pending_writes: AtomicUsize,
    /// Opens answered before their entry was applied (see `early`).
    pub(super) early: Arc<EarlyOpens>,
}

type WriteResult = Result<ClientWriteResponse, ClientWriteError>;
pub(super) type WriteReceiver = tokio::sync::oneshot::Receiver<WriteResult>;
type RecvError = tokio::sync::oneshot::error::RecvError;

/// Counts one write as pending while it lives.
struct PendingWrite<'a>(&'a AtomicUsize);

impl<'a> PendingWrite<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        PendingWrite(count)
    }
}

impl Drop for PendingWrite<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The upper bound of the randomized election timeout: a third above the
/// lower. Measured with 20 leader kills under load: the stall went from a
/// median of 2.35 s (twice the lower bound) to that of the table in the
/// README; a third still leaves the two timers of a 3-master group hundreds
/// of milliseconds apart, far more than a vote takes.
pub fn election_timeout_max(min_ms: u64) -> u64 {
    min_ms + min_ms / 3
}

/// The leader's clock, stamped into each request it proposes.
pub fn now() -> Timespec {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timespec {
        sec: d.as_secs() as i64,
        nsec: d.subsec_nanos(),
    }
}

fn fresh_cluster_id() -> String {
    let r: u64 = rand::random();
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!("{t:x}-{r:016x}")
}

impl MasterNode {
    /// A watch that wakes at every change of this node's Raft state, for
    /// a caller that waits for something to be applied: made before it
    /// looks, so nothing applied after the look is missed.
    pub fn changes(&self) -> Changes {
        Changes(self.raft.metrics())
    }

    /// Opens the data dir, checks the peers, and starts the Raft node. The
    /// gRPC server is started by the caller with [`Self::raft_service`].
    pub async fn start(cfg: &MasterConfig, res: &Resolved) -> Result<Arc<MasterNode>, String> {
        let mut stage = Stages::new();
        let (datadir, db) =
            DataDir::open(&cfg.data_path, cfg.master_id).map_err(|e| e.to_string())?;
        let datadir = Arc::new(datadir);
        stage.done("data dir opened");
        check_duplicate_id(cfg.master_id, &res.advertise, &res.peers).await?;
        stage.done("peers checked for a duplicate id");

        let dd = datadir.clone();
        let ident = Arc::new(Identity::new(
            cfg.master_id,
            datadir.cluster_id(),
            cfg.cluster_secret.clone(),
            Box::new(move |id| dd.set_cluster_id(id).map_err(|e| e.to_string())),
        ));
        let log = LogStore::open(db, &datadir.log_dir(), SyncPolicy::Immediate).map_err(|e| {
            format!(
                "cannot open the Raft log in {}: {e}",
                cfg.data_path.display()
            )
        })?;
        stage.done("Raft log opened");
        let in_place = log.sync_in_place();
        let sm = StateMachine::open(cfg.data_path.join("snapshots"), cfg.snapshot_files.max(1))?;
        let shared = sm.shared.clone();
        stage.done("snapshot loaded");

        let config = Config {
            cluster_name: "rmfs".into(),
            heartbeat_interval: cfg.heartbeat_ms,
            election_timeout_min: cfg.election_timeout_ms,
            // openraft's followers refuse votes for election_timeout_max after
            // the last word from their leader (its lease), so an election
            // timer that fires before that is wasted: a narrow window makes
            // the second round, when the first is refused, come sooner.
            election_timeout_max: election_timeout_max(cfg.election_timeout_ms),
            install_snapshot_timeout: 60_000,
            // `snapshots::keep` asks for them.
            snapshot_policy: SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: cfg.snapshot_keep_entries,
            max_payload_entries: 1000,
            enable_pre_vote: Some(true),
            // Replicate an entry while it is being flushed here: the leader's and
            // the followers' fsyncs then overlap instead of running in series.
            broadcast_submitted_on_append: Some(true),
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
        let raft = Raft::new(cfg.master_id, config, net, log, sm)
            .await
            .map_err(|e| format!("cannot start Raft: {e}"))?;
        stage.done("Raft started");

        let node = Arc::new(MasterNode {
            id: cfg.master_id,
            advertise: res.advertise.clone(),
            raft,
            shared,
            ident,
            read_policy: if cfg.read_policy == "read_index" {
                ReadPolicy::ReadIndex
            } else {
                ReadPolicy::LeaseRead
            },
            session_timeout: Duration::from_secs(cfg.session_timeout),
            seen: Mutex::new(HashMap::new()),
            barrier_term: AtomicU64::new(0),
            lease: Duration::from_millis(cfg.election_timeout_ms),
            submit_order: tokio::sync::RwLock::new(()),
            pending_writes: AtomicUsize::new(0),
            early: Arc::default(),
        });
        tokio::spawn(follow_role(node.raft.server_metrics(), in_place));
        tokio::spawn(bootstrap(node.clone(), res.peers.clone()));
        tokio::spawn(leader_duties(node.clone()));
        tokio::spawn(super::snapshots::keep(
            node.raft.clone(),
            node.shared.clone(),
            super::snapshots::SnapshotRule {
                min_entries: cfg.snapshot_log_entries,
                entries_per_inode: cfg.snapshot_entries_per_inode,
            },
        ));
        Ok(node)
    }

    /// The gRPC service peers send Raft messages to.
    pub fn raft_service(&self) -> RaftServiceServer<RaftGrpc> {
        RaftServiceServer::new(RaftGrpc {
            raft: self.raft.clone(),
            ident: self.ident.clone(),
        })
        .max_decoding_message_size(64 << 20)
    }

    fn leader_address(&self, leader: Option<u64>) -> Option<String> {
        let id = leader?;
        let m = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        m.membership().get_node(&id).map(|n| n.addr.clone())
    }

    fn forward(&self, f: &ForwardToLeader) -> NodeError {
        NodeError::NotLeader {
            leader: f
                .leader_node
                .as_ref()
                .map(|n| n.addr.clone())
                .or_else(|| self.leader_address(f.leader_id)),
        }
    }

    /// Proposes a change and waits for its reply (after it is committed on a
    /// quorum and applied here).
    /// Opens answered early and still held are logged first, so that no
    /// write overtakes them (see `early`).
    pub async fn write(&self, req: Request) -> Result<Reply, NodeError> {
        let (rx, _pending) = {
            let order = self.submit_order.read().await;
            let _order = if self.early.holding() {
                drop(order);
                let exclusive = self.submit_order.write().await;
                self.log_held().await;
                exclusive.downgrade()
            } else {
                order
            };
            self.submit(req).await?
        };
        let r = self.unless_cut_off(rx).await?;
        self.outcome(r)
    }

    /// When this master leads but has heard from no quorum of masters for
    /// twice its lease: for how long, in words (None while it hears from
    /// one, or does not lead).
    fn quorum_silence(&self) -> Option<String> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        if m.state != ServerState::Leader {
            return None;
        }
        match m.last_quorum_acked.as_ref().map(|t| t.elapsed()) {
            Some(d) if d < 2 * self.lease => None,
            Some(d) => Some(format!("for {d:.1?}")),
            None => Some("ever since it was elected".into()),
        }
    }

    /// Waits for `f`, unless, after twice the lease, this master still
    /// leads but has heard from no quorum of masters for that long: then it
    /// is cut off from them (a partition that leaves it its clients), and
    /// what `f` waits for (a commit, a read barrier) cannot come until the
    /// network heals, while the other masters elect a leader of their own.
    /// The caller is told Unavailable, so a client asks another master at
    /// once instead of after its whole call timeout. A change given up here
    /// may still commit later: a client sends it again with its sequence
    /// number, and the session's reply cache answers it once.
    async fn unless_cut_off<T>(
        &self,
        f: impl std::future::Future<Output = T>,
    ) -> Result<T, NodeError> {
        tokio::pin!(f);
        let start = Instant::now();
        loop {
            match tokio::time::timeout(self.lease / 2, &mut f).await {
                Ok(v) => return Ok(v),
                Err(_) if start.elapsed() >= 2 * self.lease => {
                    if let Some(silent) = self.quorum_silence() {
                        return Err(NodeError::Unavailable(format!(
                            "master {} leads but has heard from no quorum of masters {silent} (cut off from them?): ask another",
                            self.id
                        )));
                    }
                }
                Err(_) => {}
            }
        }
    }

    /// Writes handed to openraft here and not yet applied.
    pub(super) fn writes_in_flight(&self) -> usize {
        self.pending_writes.load(Ordering::Acquire)
    }

    /// Hands `req` to openraft (which gives it the next log index) and
    /// returns where its result will come, with the mark that counts it
    /// as pending until then. The caller holds `submit_order` (shared or
    /// exclusive).
    async fn submit(&self, req: Request) -> Result<(WriteReceiver, PendingWrite<'_>), NodeError> {
        if req.session.0 != 0 {
            self.touch_session(req.session.0);
        }
        let pending = PendingWrite::new(&self.pending_writes);
        Ok((self.submit_unpaced(req).await?, pending))
    }

    /// Hands `req` to openraft without counting it as pending.
    pub(super) async fn submit_unpaced(&self, req: Request) -> Result<WriteReceiver, NodeError> {
        let (responder, rx) = openraft::impls::ProgressResponder::complete_only();
        self.raft
            .client_write_ff(req, Some(responder))
            .await
            .map_err(|e| NodeError::Unavailable(format!("raft: {e}")))?;
        Ok(rx)
    }

    fn outcome(&self, r: Result<WriteResult, RecvError>) -> Result<Reply, NodeError> {
        match r {
            Ok(Ok(r)) => Ok(r.data),
            Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(self.forward(&f)),
            Ok(Err(ClientWriteError::LogEntryDiscarded(f))) => Err(self.forward(&f)),
            Ok(Err(e)) => Err(NodeError::Unavailable(format!("raft: {e}"))),
            Err(_) => Err(NodeError::Unavailable(
                "raft: the write was dropped (shutting down?)".into(),
            )),
        }
    }

    /// The lease read without a trip through openraft's core: this node
    /// leads, has applied an entry of its own term, and a quorum
    /// acknowledged something it sent less than [`MasterNode::lease`] ago
    /// (openraft stamps acknowledgements with the time of sending). Then
    /// no other leader can exist, and every change acknowledged to a client
    /// is already applied here (replies are sent after apply), so reading
    /// the local namespace is linearizable. The metrics can only lag, which
    /// makes the check stricter, never looser.
    fn lease_holds(&self) -> bool {
        if self.read_policy != ReadPolicy::LeaseRead {
            return false;
        }
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.state == ServerState::Leader
            && m.current_leader == Some(self.id)
            && self.barrier_term.load(Ordering::Acquire) == m.current_term
            && m.last_quorum_acked
                .as_ref()
                .is_some_and(|t| t.elapsed() < self.lease)
    }

    /// Waits until a read here sees every change committed before the call.
    ///
    /// Besides openraft's read barrier, a leader first applies an entry of
    /// its own term (once per term): after a restart of every master the
    /// committed index a leader starts from may lag what a quorum had
    /// committed, and a read must not be served from before it.
    pub async fn linearize(&self) -> Result<(), NodeError> {
        if self.lease_holds() {
            return Ok(());
        }
        self.settle().await?;
        let first = self
            .unless_cut_off(self.raft.ensure_linearizable(self.read_policy.clone()))
            .await?;
        let res = match first {
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                return Err(self.forward(&f))
            }
            Err(_) if self.read_policy == ReadPolicy::LeaseRead => {
                self.unless_cut_off(self.raft.ensure_linearizable(ReadPolicy::ReadIndex))
                    .await?
            }
            other => other,
        };
        match res {
            Ok(_) => Ok(()),
            Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f))) => {
                Err(self.forward(&f))
            }
            Err(e) => Err(NodeError::Unavailable(format!("raft: {e}"))),
        }
    }

    /// Waits until this leader has applied an entry of its own term, so
    /// that everything earlier leaders committed is applied here (once per
    /// term; afterwards a look at the metrics). Enough before a change:
    /// what a handler reads to decide how to propose it (a session's
    /// rights) is then at least as new as anything acknowledged to the
    /// caller, and the change itself is ordered by the log. Not a read
    /// barrier: a deposed leader passes it (its proposal cannot commit).
    pub async fn settle(&self) -> Result<(), NodeError> {
        let (leads, leader, term) = {
            let m = self.raft.metrics();
            let m = m.borrow_watched();
            (
                m.state == ServerState::Leader,
                m.current_leader,
                m.current_term,
            )
        };
        if !leads {
            return Err(NodeError::NotLeader {
                leader: self.leader_address(leader),
            });
        }
        if self.barrier_term.load(Ordering::Acquire) == term {
            return Ok(());
        }
        match self.unless_cut_off(self.raft.write_blank()).await? {
            Ok(r) => {
                self.barrier_term
                    .fetch_max(r.log_id.leader_id.term, Ordering::AcqRel);
                Ok(())
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => Err(self.forward(&f)),
            Err(e) => Err(NodeError::Unavailable(format!("raft: {e}"))),
        }
    }

    /// Notes a sign of life of a session (heartbeat or request).
    pub fn touch_session(&self, id: u64) {
        if let Ok(mut s) = self.seen.lock() {
            s.insert(id, Instant::now());
        }
    }

    pub fn session_timeout(&self) -> Duration {
        self.session_timeout
    }

    pub fn is_leader(&self) -> bool {
        // Every client call asks this: read the metrics in place, no copy of
        // the membership and replication maps.
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.state == ServerState::Leader && m.current_leader == Some(self.id)
    }

    /// The current Raft term (cheap: no copy of the metrics).
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// Fails with a redirect unless this master leads.
    pub fn ensure_leader(&self) -> Result<(), NodeError> {
        if self.is_leader() {
            Ok(())
        } else {
            let leader = self.raft.metrics().borrow_watched().current_leader;
            Err(NodeError::NotLeader {
                leader: self.leader_address(leader),
            })
        }
    }

    pub fn view(&self) -> NodeView {
        let m = self.raft.metrics().borrow_watched().clone();
        let membership = m.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let replication = m.replication.clone().unwrap_or_default();
        let members = membership
            .nodes()
            .map(|(id, n)| {
                let matched = if *id == self.id {
                    m.last_log_index.unwrap_or(0)
                } else {
                    replication
                        .get(id)
                        .and_then(|l| l.as_ref())
                        .map(|l| l.index)
                        .unwrap_or(0)
                };
                (*id, n.addr.clone(), voters.contains(id), matched)
            })
            .collect();
        let initialized = m.membership_config.log_id().is_some() || !voters.is_empty();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower if !initialized => "uninitialized",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner if !initialized => "uninitialized",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        NodeView {
            id: self.id,
            address: self.advertise.clone(),
            role,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: m.local_committed.map(|l| l.index).unwrap_or(0),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            leader_id: m.current_leader,
            leader_address: self.leader_address(m.current_leader),
            cluster_id: self.ident.cluster_id(),
            members,
        }
    }

    fn membership_error(&self, e: RaftError<ClientWriteError>) -> NodeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => self.forward(&f),
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                NodeError::Invalid(e.to_string())
            }
            other => NodeError::Unavailable(format!("raft: {other}")),
        }
    }

    /// One membership change, committed.
    async fn change(&self, change: ChangeMembers<NodeId, Node>) -> Result<(), NodeError> {
        self.raft
            .change_membership(change, false)
            .await
            .map(drop)
            .map_err(|e| self.membership_error(e))
    }

    /// Adds a master: as a learner until it has caught up, then as a voter.
    pub async fn add_master(&self, id: u64, addr: String) -> Result<(), NodeError> {
        self.add_learner(id, addr.clone()).await?;
        self.wait_caught_up(id, &addr).await?;
        self.change(ChangeMembers::AddVoterIds([id].into_iter().collect()))
            .await?;
        Ok(())
    }

    /// Adds a non-voting member and waits until it has caught up.
    pub async fn add_learner(&self, id: u64, addr: String) -> Result<(), NodeError> {
        self.ensure_leader()?;
        if id == 0 || !addr.contains(':') {
            return Err(NodeError::Invalid(format!(
                "bad member: id {id}, address `{addr}` (need id > 0 and host:port)"
            )));
        }
        self.raft
            .add_learner(id, Node { addr }, true)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(())
    }

    /// Waits until member `id` holds the log up to the commit index of when
    /// the wait began; a voter that cannot keep up would only weaken the quorum.
    async fn wait_caught_up(&self, id: u64, addr: &str) -> Result<(), NodeError> {
        let target = self.view().commit_index;
        let start = Instant::now();
        loop {
            let v = self.view();
            if v.members.iter().any(|m| m.0 == id && m.3 >= target) {
                return Ok(());
            }
            if start.elapsed() > Duration::from_secs(30) {
                return Err(NodeError::Unavailable(format!(
                    "master {id} at {addr} has not caught up within 30 s (is it running and reachable?); \
                     it stays a learner: start it, then run add-master again, or remove-master {id}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Removes a member (voter or learner) from the cluster.
    pub async fn remove_member(&self, id: u64) -> Result<(), NodeError> {
        self.ensure_leader()?;
        let view = self.view();
        let Some(member) = view.members.iter().find(|m| m.0 == id) else {
            return Err(NodeError::Invalid(format!(
                "master {id} is not a member of this cluster"
            )));
        };
        if member.2 {
            let voters = view.members.iter().filter(|m| m.2).count();
            if voters <= 1 {
                return Err(NodeError::Invalid(format!(
                    "master {id} is the last voter; a cluster needs one"
                )));
            }
            self.change(ChangeMembers::RemoveVoters([id].into_iter().collect()))
                .await?;
        }
        self.change(ChangeMembers::RemoveNodes([id].into_iter().collect()))
            .await?;
        Ok(())
    }

    /// Makes a learner a voter.
    pub async fn promote(&self, id: u64) -> Result<(), NodeError> {
        self.ensure_leader()?;
        let Some(learner) = self.view().members.into_iter().find(|m| m.0 == id && !m.2) else {
            return Err(NodeError::Invalid(format!(
                "{id} is not a learner of this cluster"
            )));
        };
        super::learner::check_promotable(id, &learner.1).await?;
        self.change(ChangeMembers::AddVoterIds([id].into_iter().collect()))
            .await?;
        Ok(())
    }

    pub async fn trigger_snapshot(&self) -> Result<(), NodeError> {
        self.raft
            .trigger()
            .snapshot()
            .await
            .map_err(|e| NodeError::Unavailable(format!("raft: {e}")))
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft shutdown: {e}");
        }
    }
}

/// Refuses to start when another master already answers with our id.
/// The stages of a start, each logged with how long it took (a start that
/// stalls shows where).
struct Stages(Instant);

impl Stages {
    fn new() -> Self {
        tracing::info!("mfsmaster {} starting", env!("CARGO_PKG_VERSION"));
        Stages(Instant::now())
    }

    fn done(&mut self, what: &str) {
        let took = self.0.elapsed();
        if took >= Duration::from_secs(1) {
            tracing::warn!(?took, "start: {what}: slow");
        } else {
            tracing::info!(?took, "start: {what}");
        }
        self.0 = Instant::now();
    }
}

async fn check_duplicate_id(
    my_id: u64,
    my_addr: &str,
    peers: &BTreeMap<u64, String>,
) -> Result<(), String> {
    for (pid, addr) in peers {
        if addr == my_addr {
            continue;
        }
        if let Some(st) = probe(addr).await {
            if st.id == my_id {
                return Err(format!(
                    "the master at {addr} also has MASTER_ID {my_id}: every master needs its own id \
                     (MASTER_PEERS says {addr} is master {pid})"
                ));
            }
        }
    }
    Ok(())
}

async fn probe(addr: &str) -> Option<mfs_proto::v1::NodeStatusReply> {
    let ep = mfs_proto::tls::endpoint(addr)
        .ok()?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(1));
    // The whole probe has a time limit: a peer starting at the same time
    // has bound its port but serves nothing yet, and a TLS handshake with
    // it would wait for ever (as it waits for us).
    tokio::time::timeout(Duration::from_millis(1500), async {
        let ch = ep.connect().await.ok()?;
        AdminServiceClient::new(ch)
            .node_status(mfs_proto::v1::Empty {})
            .await
            .ok()
            .map(|r| r.into_inner())
    })
    .await
    .ok()
    .flatten()
}

async fn is_initialized(node: &MasterNode) -> bool {
    node.raft.is_initialized().await.unwrap_or(true)
}

/// First start of a fresh cluster: the master with the smallest id
/// initialises it, once every peer has answered and none belongs to a
/// cluster yet. Any other master waits to be contacted by the leader.
async fn bootstrap(node: Arc<MasterNode>, peers: BTreeMap<u64, String>) {
    if is_initialized(&node).await {
        return;
    }
    let mut members: BTreeMap<u64, Node> = peers
        .iter()
        .map(|(id, a)| (*id, Node { addr: a.clone() }))
        .collect();
    if members.is_empty() {
        members.insert(
            node.id,
            Node {
                addr: node.advertise.clone(),
            },
        );
    }
    if members.keys().next() != Some(&node.id) {
        tracing::info!("fresh master: waiting to be contacted by the cluster's leader");
        return;
    }
    let mut said = false;
    loop {
        if is_initialized(&node).await || node.ident.cluster_id().is_some() {
            return;
        }
        let mut all_fresh = true;
        let mut missing = Vec::new();
        for (id, n) in &members {
            if *id == node.id {
                continue;
            }
            match probe(&n.addr).await {
                Some(st) if !st.cluster_id.is_empty() => {
                    tracing::info!(
                        peer = id,
                        "peer already belongs to cluster {}; not initialising",
                        st.cluster_id
                    );
                    return;
                }
                Some(_) => {}
                None => {
                    all_fresh = false;
                    missing.push(format!("{id}={}", n.addr));
                }
            }
        }
        if all_fresh {
            break;
        }
        if !said {
            tracing::info!(
                "new cluster: waiting for every master to answer before initialising (missing: {})",
                missing.join(", ")
            );
            said = true;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let cid = fresh_cluster_id();
    if let Err(e) = node.ident.set_cluster_id(&cid) {
        tracing::error!("cannot record the new cluster id: {e}");
        return;
    }
    match node.raft.initialize(members).await {
        Ok(()) => tracing::info!(cluster_id = cid.as_str(), "initialised a new cluster"),
        Err(e) => tracing::warn!("initialise: {e}"),
    }
}

/// Files leaving the trash in one log entry at most.
const TRASH_PURGE_BATCH: usize = 4096;

/// What the leader does on its own: record the cluster id in the namespace
/// once, close sessions that stopped sending heartbeats, and empty the trash
/// of files whose trash time is over (every 5 s).
async fn leader_duties(node: Arc<MasterNode>) {
    let mut was_leader = false;
    let mut last_leader = None;
    let mut ticks: u64 = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        ticks += 1;
        if node.raft.metrics().borrow_watched().state == ServerState::Shutdown {
            return;
        }
        let known = node.raft.metrics().borrow_watched().current_leader;
        if known != last_leader {
            match known {
                Some(l) if l == node.id => {
                    tracing::info!(term = node.view().term, "this master is now the leader")
                }
                Some(l) => tracing::info!(leader = l, "following leader"),
                None => tracing::info!("no leader known (election)"),
            }
            last_leader = known;
        }
        let leader = node.is_leader();
        if !leader {
            was_leader = false;
            continue;
        }
        let sessions: Vec<u64> = node.shared.ns().sessions().iter().map(|s| s.id.0).collect();
        let now_i = Instant::now();
        if !was_leader {
            // A new leader gives every session a full timeout from now.
            if let Ok(mut seen) = node.seen.lock() {
                seen.clear();
                for id in &sessions {
                    seen.insert(*id, now_i);
                }
            }
            was_leader = true;
        }
        let ns_cluster = node.shared.ns().cluster_id().map(|s| s.to_string());
        if let (None, Some(cid)) = (ns_cluster, node.ident.cluster_id()) {
            let req = Request {
                session: SessionId(0),
                seq: 0,
                acked: 0,
                time: now(),
                op: Op::SetClusterId { id: cid },
            };
            if let Err(e) = node.write(req).await {
                tracing::debug!("recording the cluster id: {e}");
            }
        }
        let expired: Vec<SessionId> = {
            let Ok(mut seen) = node.seen.lock() else {
                continue;
            };
            let expired = sessions
                .iter()
                .filter(|id| {
                    let last = *seen.entry(**id).or_insert(now_i);
                    now_i.duration_since(last) > node.session_timeout
                })
                .map(|id| SessionId(*id))
                .collect();
            seen.retain(|id, _| sessions.contains(id));
            expired
        };
        if !expired.is_empty() {
            tracing::info!(sessions = ?expired, "closing sessions that sent no heartbeat");
            let req = Request {
                session: SessionId(0),
                seq: 0,
                acked: 0,
                time: now(),
                op: Op::ExpireSessions { ids: expired },
            };
            if let Err(e) = node.write(req).await {
                tracing::warn!("expiring sessions: {e}");
            }
        }
        if ticks.is_multiple_of(10) {
            purge_trash(&node).await;
        }
    }
}

/// Files whose trash time is over leave the trash (their chunks are then
/// deleted), a batch per entry until none is due.
async fn purge_trash(node: &MasterNode) {
    loop {
        let t = now();
        let due = node.shared.ns().expired_trash(t.sec, TRASH_PURGE_BATCH);
        if due.is_empty() {
            return;
        }
        let n = due.len();
        let req = Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: t,
            op: Op::PurgeTrash { inodes: due },
        };
        match node.write(req).await {
            Ok(_) => tracing::debug!(files = n, "trash time over: files removed for good"),
            Err(e) => {
                tracing::warn!("emptying the trash: {e}");
                return;
            }
        }
        if n < TRASH_PURGE_BATCH {
            return;
        }
    }
}

/// A watch on this node's Raft state (see [`MasterNode::changes`]).
pub struct Changes(
    openraft::type_config::alias::WatchReceiverOf<
        TypeConfig,
        openraft::metrics::RaftMetrics<TypeConfig>,
    >,
);

impl Changes {
    /// Waits for the next change (an entry applied, a new term, ...) after
    /// the watch was made or last woke, at most `max`.
    pub async fn next(&mut self, max: Duration) {
        let _ = tokio::time::timeout(max, self.0.changed()).await;
    }
}

/// Keeps the log's sync-in-place switch ([`LogStore::sync_in_place`]) on
/// while this node is not the leader.
async fn follow_role(
    mut server: openraft::type_config::alias::WatchReceiverOf<
        TypeConfig,
        openraft::metrics::RaftServerMetrics<TypeConfig>,
    >,
    in_place: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        let leading = server.borrow_watched().state == ServerState::Leader;
        in_place.store(!leading, Ordering::Relaxed);
        if server.changed().await.is_err() {
            return;
        }
    }
}
