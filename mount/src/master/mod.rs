//! [`MasterClient`]: the connection to the master group that every client
//! (the FUSE mount, mfscli, the tools, tests, benchmarks) uses.
//!
//! It keeps one lazily connected gRPC channel per master, remembers which one
//! leads, follows `mfs-leader` redirects, fails over when a master stops
//! answering, and retries every call with the same request (so a mutating
//! call keeps its RequestId and runs exactly once). With
//! [`ClientOptions::register_session`] it also holds a session: registered on
//! connect, kept alive by a heartbeat task, registered anew when the master
//! forgets it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mfs_mount::ClientError> {
//! use mfs_mount::master::{parse_masters, ClientOptions, MasterClient};
//! let masters = parse_masters("127.0.0.1:9421,127.0.0.1:9422")?;
//! let client = MasterClient::connect(&masters, ClientOptions::default()).await?;
//! let root = client.getattr(1).await?;
//! # let _ = root; Ok(()) }
//! ```

mod addr;
mod meta;
pub mod queue;
mod retry;
mod session;
mod trash_quota;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mfs_proto::v1::admin_service_client::AdminServiceClient;
use mfs_proto::v1::meta_service_client::MetaServiceClient;
use mfs_proto::v1::{
    AddMasterRequest, ChallengeRequest, ClusterInfoReply, Empty, MembershipReply, NodeStatusReply,
    RegisterSessionRequest, RemoveMasterRequest,
};
use mfs_proto::ClusterSecret;
use tonic::transport::{Channel, Endpoint};

pub use addr::{
    leader_hint, masters_from_arg_or_env, normalize_addr, parse_masters, DEFAULT_MASTERS,
    DEFAULT_PORT, MASTERS_ENV,
};
pub use session::PendingRequest;

use crate::error::ClientError;
use session::SeqState;

/// Largest reply accepted (a readdir page with attributes, a big ClusterInfo).
const MAX_REPLY_BYTES: usize = 64 << 20;

/// How a [`MasterClient`] behaves.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time to open a TCP connection to one master.
    pub connect_timeout: Duration,
    /// Time one attempt of a call may take before the next master is tried.
    pub call_timeout: Duration,
    /// Time a call may keep retrying before it fails with
    /// [`ClientError::Timeout`]. `None` waits for ever (like NFS `hard`):
    /// applications see a pause, not an error. `Some` is NFS `soft`.
    pub overall_timeout: Option<Duration>,
    /// Free text the master shows for the session (host, mount point, tool).
    pub session_info: String,
    /// Register a session on connect and keep it alive. Needed for mutating
    /// calls; read-only tools can do without.
    pub register_session: bool,
    /// The directory the session is for (mfsmount -S; empty: "/"), the
    /// MD5 of the password of the master's exports line for it
    /// ([`mfs_proto::password_md5`]; it answers the master's challenge),
    /// and whether it is a meta session (mfsmount -m): see
    /// RegisterSessionRequest.
    pub mount_path: String,
    pub password_md5: Option<[u8; 16]>,
    pub meta: bool,
    /// The masters' CLUSTER_SECRET, stamped on every call: membership
    /// changes and snapshots ordered through the admin service need it
    /// when the masters have one (mfscli, metaloggers joining).
    pub cluster_secret: String,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            call_timeout: Duration::from_secs(10),
            overall_timeout: None,
            session_info: String::new(),
            register_session: false,
            mount_path: String::new(),
            password_md5: None,
            meta: false,
            cluster_secret: String::new(),
        }
    }
}

/// Counters of what the retry loop had to do, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Attempts repeated after a failed one (backoff, then another master).
    pub retries: u64,
    /// Redirects followed (`mfs-leader` hints).
    pub redirects: u64,
    /// Longest time from the first attempt of a call to its success, among
    /// calls that needed more than one attempt.
    pub longest_stall: Duration,
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) retries: AtomicU64,
    pub(crate) redirects: AtomicU64,
    longest_stall_ns: AtomicU64,
}

impl Stats {
    pub(crate) fn record_stall(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.longest_stall_ns.fetch_max(ns, Ordering::Relaxed);
    }
}

/// One master: its address and channel.
#[derive(Debug)]
pub(crate) struct Master {
    pub(crate) addr: String,
    /// The socket addresses it is known by (to match leader hints given as
    /// IPs to a master listed by name).
    socks: Vec<SocketAddr>,
    pub(crate) channel: Channel,
    /// Bumped when the FUSE threads' own connections to it are found
    /// broken (see `crate::inline::Generation`).
    pub(crate) broken: crate::inline::Generation,
}

/// The state shared by the clones of one [`MasterClient`].
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) opts: ClientOptions,
    masters: RwLock<Vec<Arc<Master>>>,
    /// Index in `masters` of the one believed to lead.
    pub(crate) leader: AtomicUsize,
    session: RwLock<Arc<SeqState>>,
    session_timeout_secs: AtomicU32,
    /// The master that registered the session applies attribute changes
    /// carried by WriteChunkEnd.
    commits_attributes: AtomicBool,
    /// ... and takes changes of held directories' attributes in a batch.
    queues_attributes: AtomicBool,
    /// The session's root inode as the master resolved `mount_path` (0:
    /// an older master that does not say).
    session_root: AtomicU64,
    /// The master refuses this session's changes (an `ro` exports line).
    read_only: AtomicBool,
    /// [`ClientOptions::cluster_secret`], ready to stamp.
    secret: ClusterSecret,
    pub(crate) renew_lock: tokio::sync::Mutex<()>,
    heartbeat: Mutex<Option<tokio::task::AbortHandle>>,
    /// The runtime the client was made on: the heartbeat task runs there
    /// even when a session is renewed by a call run on a FUSE thread
    /// (`crate::inline`).
    rt: tokio::runtime::Handle,
    pub(crate) stats: Stats,
    /// Bumped when calls start being answered by another master (a new
    /// leader) or the session is registered anew: what the session held
    /// open may have been lost (see [`MasterClient::leader_changes`]).
    pub(crate) leader_epoch: tokio::sync::watch::Sender<u64>,
    /// Write-back creates not sent yet (see `queue`).
    pub(crate) queue: queue::Queue,
    /// Changing calls started or ended, counted from the start (see
    /// [`MasterClient::changes`]).
    pub(crate) changing_calls: AtomicU64,
}

impl Inner {
    /// Calls are answered by the master at index `at` now.
    pub(crate) fn answered_by(&self, at: usize) {
        if self.leader.swap(at, Ordering::Relaxed) != at {
            self.new_leader_epoch();
        }
    }

    pub(crate) fn new_leader_epoch(&self) {
        self.leader_epoch.send_modify(|e| *e += 1);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = self.heartbeat.get_mut().ok().and_then(|h| h.take()) {
            h.abort();
        }
    }
}

fn make_channel(addr: &str, opts: &ClientOptions) -> Result<Channel, ClientError> {
    Ok(mfs_proto::watched(endpoint(addr, opts)?, true).connect_lazy())
}

/// A channel for calls run on a FUSE thread (see `crate::inline::channel`).
fn make_thread_channel(addr: &str, opts: &ClientOptions) -> Result<Channel, ClientError> {
    Ok(mfs_proto::watched(endpoint(addr, opts)?, false)
        .tcp_keepalive(Some(Duration::from_secs(10)))
        .connect_lazy())
}

fn endpoint(addr: &str, opts: &ClientOptions) -> Result<Endpoint, ClientError> {
    Ok(mfs_proto::tls::endpoint(addr)
        .map_err(|e| ClientError::InvalidArgument(format!("bad master address {addr:?}: {e}")))?
        .connect_timeout(opts.connect_timeout)
        .tcp_nodelay(true))
}

/// A channel to a master for one call, with the session the call is made
/// under: stamped on the call as `mfs-session` (the master applies the
/// session's rights to reads too, which carry no RequestId).
#[derive(Debug, Clone)]
pub(crate) struct Conn {
    pub(crate) channel: Channel,
    pub(crate) session: u64,
    pub(crate) secret: ClusterSecret,
}

/// Stamps the session and the cluster secret (when set) on each call made
/// through a client.
#[derive(Debug, Clone)]
pub(crate) struct StampSession(u64, ClusterSecret);

impl tonic::service::Interceptor for StampSession {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if self.0 != 0 {
            if let Ok(v) = tonic::metadata::MetadataValue::try_from(self.0.to_string()) {
                req.metadata_mut().insert(mfs_proto::SESSION_KEY, v);
            }
        }
        self.1.stamp(req.metadata_mut());
        Ok(req)
    }
}

type Stamped = tonic::service::interceptor::InterceptedService<Channel, StampSession>;

pub(crate) fn meta_client(c: Conn) -> MetaServiceClient<Stamped> {
    MetaServiceClient::with_interceptor(c.channel, StampSession(c.session, c.secret))
        .max_decoding_message_size(MAX_REPLY_BYTES)
}

pub(crate) fn admin_client(c: Conn) -> AdminServiceClient<Stamped> {
    AdminServiceClient::with_interceptor(c.channel, StampSession(c.session, c.secret))
        .max_decoding_message_size(MAX_REPLY_BYTES)
}

impl Inner {
    fn read_masters(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<Master>>> {
        self.masters.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn master_count(&self) -> usize {
        self.read_masters().len()
    }

    pub(crate) fn addresses(&self) -> Vec<String> {
        self.read_masters().iter().map(|m| m.addr.clone()).collect()
    }

    /// The master at `idx` (taken modulo the list length) and that index.
    pub(crate) fn master_at(&self, idx: usize) -> (usize, Arc<Master>) {
        let list = self.read_masters();
        // The list is never empty: connect refuses an empty one and entries
        // are only ever added.
        let at = idx % list.len().max(1);
        (at, Arc::clone(&list[at]))
    }

    fn find(list: &[Arc<Master>], addr: &str) -> Option<usize> {
        let sock = addr.parse::<SocketAddr>().ok();
        list.iter()
            .position(|m| m.addr == addr || sock.is_some_and(|s| m.socks.contains(&s)))
    }

    /// The index of the master at `addr`, added to the list if new. An
    /// address no channel can be made for maps to the current leader guess.
    pub(crate) fn index_for(&self, addr: &str) -> usize {
        if let Some(i) = Self::find(&self.read_masters(), addr) {
            return i;
        }
        let mut list = self.masters.write().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = Self::find(&list, addr) {
            return i;
        }
        match make_channel(addr, &self.opts) {
            Ok(channel) => {
                tracing::info!(
                    master = addr,
                    "leader hint names a master not in the list; adding it"
                );
                let socks = addr.parse::<SocketAddr>().into_iter().collect();
                list.push(Arc::new(Master {
                    addr: addr.to_string(),
                    socks,
                    channel,
                    broken: Default::default(),
                }));
                list.len() - 1
            }
            Err(e) => {
                tracing::warn!(master = addr, error = %e, "ignoring unusable leader hint");
                self.leader.load(Ordering::Relaxed)
            }
        }
    }

    /// The channel to use for `master`: this thread's own while
    /// [`crate::inline::run_caught`] drives a call here, else the shared
    /// one.
    pub(crate) fn channel_of(&self, master: &Master) -> Channel {
        let generation = || master.broken.get();
        crate::inline::channel("master", &master.addr, generation, || {
            make_thread_channel(&master.addr, &self.opts).ok()
        })
        .unwrap_or_else(|| master.channel.clone())
    }

    /// A channel to `addr`: the list's own when listed, else a new one.
    pub(crate) fn channel_for(&self, addr: &str) -> Result<Channel, ClientError> {
        let addr = normalize_addr(addr)?;
        if let Some(i) = Self::find(&self.read_masters(), &addr) {
            return Ok(self.master_at(i).1.channel.clone());
        }
        make_channel(&addr, &self.opts)
    }

    /// `channel` with the current session, for a call.
    pub(crate) fn conn(&self, channel: Channel) -> Conn {
        Conn {
            channel,
            session: self.current_session().session,
            secret: self.secret.clone(),
        }
    }

    pub(crate) fn current_session(&self) -> Arc<SeqState> {
        Arc::clone(&self.session.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn set_session(&self, st: SeqState) {
        *self.session.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(st);
    }

    pub(crate) fn heartbeat_interval(&self) -> Duration {
        session::interval_for(self.session_timeout_secs.load(Ordering::Relaxed))
    }

    /// Registers a new session and makes it current.
    pub(crate) async fn register(&self) -> Result<u64, ClientError> {
        // With a password: answer a challenge of the leader (the password
        // never crosses the network). A challenge answered by another
        // master (the leader changed in between) is ESTALE: ask again.
        let mut tries = 0;
        let reply = loop {
            let mut req = RegisterSessionRequest {
                info: self.opts.session_info.clone(),
                path: self.opts.mount_path.clone(),
                meta: self.opts.meta,
                ..Default::default()
            };
            let password = self.opts.password_md5;
            if let Some(md5) = &password {
                let challenge = self
                    .call("Challenge", ChallengeRequest {}, |ch, r| async move {
                        meta_client(ch).challenge(r).await
                    })
                    .await?;
                req.password_digest = mfs_proto::challenge_answer(&challenge.nonce, md5).to_vec();
                req.nonce = challenge.nonce;
            }
            let r = self
                .call("RegisterSession", req, |ch, r| async move {
                    meta_client(ch).register_session(r).await
                })
                .await;
            match r {
                Err(ClientError::Errno(libc::ESTALE, _)) if password.is_some() && tries < 5 => {
                    tries += 1;
                }
                r => break r?,
            }
        };
        if reply.session == 0 {
            return Err(ClientError::BadReply(
                "RegisterSession returned session 0".into(),
            ));
        }
        self.session_timeout_secs
            .store(reply.timeout_secs, Ordering::Relaxed);
        self.commits_attributes
            .store(reply.commits_attributes, Ordering::Relaxed);
        self.queues_attributes
            .store(reply.queues_attributes, Ordering::Relaxed);
        self.session_root.store(reply.root, Ordering::Relaxed);
        self.read_only.store(reply.read_only, Ordering::Relaxed);
        self.set_session(SeqState::new(reply.session));
        Ok(reply.session)
    }
}

/// The connection to the master group. Cheap to clone: clones share the
/// channels, the leader guess, the session and the statistics.
#[derive(Debug, Clone)]
pub struct MasterClient {
    inner: Arc<Inner>,
}

impl MasterClient {
    /// Sets up channels to the masters at `addrs` ("host:port"; a name that
    /// resolves to several IPs counts as several masters). Channels connect
    /// lazily; with `opts.register_session` a session is registered (waiting
    /// for a leader as any call does) and heartbeats start.
    pub async fn connect(
        addrs: &[String],
        opts: ClientOptions,
    ) -> Result<MasterClient, ClientError> {
        let mut normalized = Vec::with_capacity(addrs.len());
        for a in addrs {
            normalized.push(normalize_addr(a)?);
        }
        if normalized.is_empty() {
            return Err(ClientError::NoMaster("the master list is empty".into()));
        }
        let mut masters = Vec::new();
        for (addr, socks) in addr::expand(&normalized, opts.connect_timeout).await {
            let channel = make_channel(&addr, &opts)?;
            masters.push(Arc::new(Master {
                addr,
                socks,
                channel,
                broken: Default::default(),
            }));
        }
        let register = opts.register_session;
        let secret = ClusterSecret::new(&opts.cluster_secret);
        let client = MasterClient {
            inner: Arc::new(Inner {
                opts,
                masters: RwLock::new(masters),
                leader: AtomicUsize::new(0),
                session: RwLock::new(Arc::new(SeqState::new(0))),
                session_timeout_secs: AtomicU32::new(0),
                commits_attributes: AtomicBool::new(false),
                queues_attributes: AtomicBool::new(false),
                session_root: AtomicU64::new(0),
                secret,
                read_only: AtomicBool::new(false),
                renew_lock: tokio::sync::Mutex::new(()),
                heartbeat: Mutex::new(None),
                rt: tokio::runtime::Handle::current(),
                stats: Stats::default(),
                leader_epoch: tokio::sync::watch::Sender::new(0),
                queue: Default::default(),
                changing_calls: AtomicU64::new(0),
            }),
        };
        if register {
            client.register_session().await?;
        }
        Ok(client)
    }

    /// Changes each time calls start being answered by another master, or
    /// the session is registered anew. A leader that died may have answered
    /// opens it never logged, and a new session holds nothing: the owner of
    /// the open files tells the master what it holds
    /// ([`assert_opens`](MasterClient::assert_opens)) at each change.
    pub fn leader_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.leader_epoch.subscribe()
    }

    /// The options this client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.opts
    }

    /// The masters' addresses, in order (names expanded to IPs, masters
    /// learnt from redirects appended).
    pub fn masters(&self) -> Vec<String> {
        self.inner.addresses()
    }

    /// The address of the master believed to lead (the last that answered).
    pub fn current_master(&self) -> String {
        let idx = self.inner.leader.load(Ordering::Relaxed);
        self.inner.master_at(idx).1.addr.clone()
    }

    /// What the retry loop had to do so far.
    pub fn stats(&self) -> ClientStats {
        let s = &self.inner.stats;
        ClientStats {
            retries: s.retries.load(Ordering::Relaxed),
            redirects: s.redirects.load(Ordering::Relaxed),
            longest_stall: Duration::from_nanos(s.longest_stall_ns.load(Ordering::Relaxed)),
        }
    }

    /// Longest time a call waited for a leader before succeeding.
    pub fn longest_stall(&self) -> Duration {
        self.stats().longest_stall
    }

    /// Whether the master that registered the session applies the
    /// attribute changes a WriteChunkEnd carries (see
    /// `FileIo::defer_attrs`).
    pub fn commits_attributes(&self) -> bool {
        self.inner.commits_attributes.load(Ordering::Relaxed)
    }

    /// Whether the master that registered the session takes changes of
    /// a held directory's attributes in the write-back queue.
    pub fn queues_attributes(&self) -> bool {
        self.inner.queues_attributes.load(Ordering::Relaxed)
    }

    /// The inode of the directory the session was registered for (see
    /// [`ClientOptions::mount_path`]); None when the master did not say.
    pub fn session_root(&self) -> Option<u64> {
        Some(self.inner.session_root.load(Ordering::Relaxed)).filter(|&r| r != 0)
    }

    /// The master gave the session read-only rights (exports line `ro`).
    pub fn exported_read_only(&self) -> bool {
        self.inner.read_only.load(Ordering::Relaxed)
    }

    /// The current session id (0: none).
    pub fn session_id(&self) -> u64 {
        self.inner.current_session().session
    }

    /// The highest sequence number of the current session up to which every
    /// mutating call has completed (what the next request will acknowledge,
    /// unless calls are in flight).
    pub fn acked(&self) -> u64 {
        self.inner.current_session().acked()
    }

    /// Counts this client's changes: it moves when a changing call starts
    /// or ends and when a change is queued (releases aside: they change
    /// nothing a listing shows). Equal counts taken before and after some
    /// work: this client changed nothing meanwhile.
    pub fn changes(&self) -> u64 {
        self.inner.changing_calls.load(Ordering::Acquire) + self.inner.queue.changes()
    }

    /// Takes the next request id of the current session for one mutating
    /// call. Keep the returned value alive until the call is over (all its
    /// attempts); dropping it marks the sequence number completed. The typed
    /// wrappers do this themselves.
    pub fn next_request_id(&self) -> PendingRequest {
        self.inner.current_session().issue()
    }

    /// Registers a new session (info: [`ClientOptions::session_info`]), makes
    /// it current and starts the heartbeat task if it is not running.
    /// Returns the session id.
    pub async fn register_session(&self) -> Result<u64, ClientError> {
        let id = self.inner.register().await?;
        let mut hb = self
            .inner
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if hb.as_ref().is_none_or(|h| h.is_finished()) {
            let weak = Arc::downgrade(&self.inner);
            *hb = Some(
                self.inner
                    .rt
                    .spawn(session::heartbeat_loop(weak))
                    .abort_handle(),
            );
        }
        Ok(id)
    }

    /// Closes the current session at the master and stops the heartbeats.
    /// Mutating calls made afterwards carry session 0 (the master refuses
    /// them) until [`MasterClient::register_session`] is called again.
    pub async fn close_session(&self) -> Result<(), ClientError> {
        if let Some(h) = self
            .inner
            .heartbeat
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            h.abort();
        }
        if self.session_id() == 0 {
            return Ok(());
        }
        let req = mfs_proto::v1::CloseSessionRequest::default();
        let result = self
            .call_mut("CloseSession", req, |ch, r| async move {
                meta_client(ch).close_session(r).await
            })
            .await;
        self.inner.set_session(SeqState::new(0));
        result.map(|_| ())
    }

    // ---- AdminService ----

    /// NodeStatus of the one master at `addr`: no redirect, no retry, at most
    /// the per-attempt timeout.
    pub async fn node_status(&self, addr: &str) -> Result<NodeStatusReply, ClientError> {
        self.inner
            .call_one(addr, Empty {}, |ch, r| async move {
                admin_client(ch).node_status(r).await
            })
            .await
    }

    /// The cluster as the leader sees it.
    pub async fn cluster_info(&self) -> Result<ClusterInfoReply, ClientError> {
        self.inner
            .call("ClusterInfo", Empty {}, |ch, r| async move {
                admin_client(ch).cluster_info(r).await
            })
            .await
    }

    /// Adds master `id` at `address` (a learner first, then a voter).
    pub async fn add_master(&self, id: u64, address: &str) -> Result<MembershipReply, ClientError> {
        let req = AddMasterRequest {
            id,
            address: address.to_string(),
        };
        self.inner
            .call("AddMaster", req, |ch, r| async move {
                admin_client(ch).add_master(r).await
            })
            .await
    }

    /// Removes master `id` from the cluster.
    pub async fn remove_master(&self, id: u64) -> Result<MembershipReply, ClientError> {
        self.inner
            .call(
                "RemoveMaster",
                RemoveMasterRequest { id },
                |ch, r| async move { admin_client(ch).remove_master(r).await },
            )
            .await
    }

    /// Adds a learner (a metalogger, or a master to promote later).
    pub async fn add_learner(
        &self,
        id: u64,
        address: &str,
    ) -> Result<MembershipReply, ClientError> {
        let req = AddMasterRequest {
            id,
            address: address.to_string(),
        };
        self.inner
            .call("AddLearner", req, |ch, r| async move {
                admin_client(ch).add_learner(r).await
            })
            .await
    }

    /// Makes learner `id` a voter.
    pub async fn promote_learner(&self, id: u64) -> Result<MembershipReply, ClientError> {
        self.inner
            .call(
                "PromoteLearner",
                RemoveMasterRequest { id },
                |ch, r| async move { admin_client(ch).promote_learner(r).await },
            )
            .await
    }

    /// Makes the leader build a metadata snapshot now.
    pub async fn trigger_snapshot(&self) -> Result<(), ClientError> {
        self.inner
            .call("TriggerSnapshot", Empty {}, |ch, r| async move {
                admin_client(ch).trigger_snapshot(r).await
            })
            .await
            .map(|_| ())
    }
}
