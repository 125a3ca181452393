//! Who is calling and what they may do: the exports file (`mfsexports.cfg`)
//! of this master, the rights a session registered with (kept in the
//! namespace, so every master enforces them after a failover), the
//! checks every `MetaService` call makes before it reads or changes
//! anything (`Meta::admit`, `Meta::enter`), and RegisterSession, which
//! gives a session its rights (`Meta::register`).
//!
//! A call's session is the one in its RequestId (mutating calls) or the
//! `mfs-session` metadata key (reads). A session with rights may call only
//! from the address it registered from (unless its line says `dynamicip`),
//! sees only inodes in its directory (or held open), writes only when its
//! line says `rw`, and runs as what `maproot`/`mapall` make of its
//! credentials. With an exports file, a call with no session (or a session
//! registered before the file was given) gets the rights of the first line
//! that lets its address mount `/` with no password; none: refused.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mfs_proto::v1 as pb;
use mfs_proto::SESSION_KEY;
use parking_lot::RwLock;
use tonic::{Request, Response, Status};

use super::convert::cred_from_pb;
use super::error::{errno_status, errno_status_with, invalid};
use super::meta::{Meta, R};
use crate::exports::{Exports, Grant, Proof};
use crate::fsm::{self, Cred, Errno, Inode, Namespace, Op, Reply, Rights, SessionId};
use crate::raft::node::now;

/// This master's exports file and what it says now, and the password
/// challenges it gave.
#[derive(Debug, Default)]
pub struct ExportsFile {
    path: Option<PathBuf>,
    current: RwLock<Option<Arc<Exports>>>,
    /// Nonces given by Challenge and not used yet, with when.
    nonces: parking_lot::Mutex<HashMap<[u8; NONCE_BYTES], Instant>>,
}

/// Bytes of a challenge's nonce.
const NONCE_BYTES: usize = 32;
/// How long a challenge may be answered.
const NONCE_LIFE: Duration = Duration::from_secs(60);
/// Challenges kept at most (the oldest go first when more are asked for).
const MAX_NONCES: usize = 10_000;

impl ExportsFile {
    /// Reads `path` (None: no file; every client may mount everything).
    pub fn load(path: Option<PathBuf>) -> Result<ExportsFile, String> {
        let current = match &path {
            Some(p) => Some(Arc::new(Exports::load(p)?)),
            None => None,
        };
        Ok(ExportsFile {
            path,
            current: RwLock::new(current),
            nonces: Default::default(),
        })
    }

    /// A new challenge's nonce, good once for [`NONCE_LIFE`].
    pub(super) fn challenge(&self) -> [u8; NONCE_BYTES] {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let mut all = self.nonces.lock();
        let now = Instant::now();
        all.retain(|_, at| now.duration_since(*at) < NONCE_LIFE);
        if all.len() >= MAX_NONCES {
            if let Some(oldest) = all.iter().min_by_key(|(_, at)| **at).map(|(n, _)| *n) {
                all.remove(&oldest);
            }
        }
        all.insert(nonce, now);
        nonce
    }

    /// What a registration shows of a password: a challenge's digest (its
    /// nonce taken: ESTALE when unknown here, used or expired), the
    /// password itself, or nothing.
    fn proof(&self, nonce: Vec<u8>, digest: Vec<u8>, password: String) -> Result<Proof, Status> {
        if !nonce.is_empty() {
            if !self.take_nonce(&nonce) {
                return Err(errno_status_with(
                    Errno::ESTALE,
                    "the challenge's nonce is unknown to this master, used, or older than a minute: ask for another".into(),
                ));
            }
            return Ok(Proof::Digest { nonce, digest });
        }
        Ok(match password.is_empty() {
            true => Proof::None,
            false => Proof::Plain(password),
        })
    }

    /// Takes `nonce` if this master gave it less than [`NONCE_LIFE`] ago
    /// and it was not taken yet.
    fn take_nonce(&self, nonce: &[u8]) -> bool {
        let Ok(key) = <[u8; NONCE_BYTES]>::try_from(nonce) else {
            return false;
        };
        self.nonces
            .lock()
            .remove(&key)
            .is_some_and(|at| at.elapsed() < NONCE_LIFE)
    }

    /// Reads the file again (SIGHUP); on an error the rules in force stay
    /// and the error is returned. New sessions get the new rules; sessions
    /// registered earlier keep their rights.
    pub fn reload(&self) -> Result<usize, String> {
        let Some(p) = &self.path else {
            return Ok(0);
        };
        let fresh = Exports::load(p)?;
        let n = fresh.len();
        *self.current.write() = Some(Arc::new(fresh));
        Ok(n)
    }

    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    pub fn rules(&self) -> Option<Arc<Exports>> {
        self.current.read().clone()
    }
}

/// What a call needs besides seeing its inodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    Read,
    /// Changes the file system: refused (EROFS) to read-only sessions.
    Write,
    /// Quotas: `admin` in the session's line.
    Admin,
    /// The trash and sustained files: a meta session (`.` line); with
    /// `true`, a change (refused to a read-only one).
    Meta(bool),
}

/// The caller's address and the session named in the call's metadata,
/// taken before the request is consumed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Who {
    header_session: u64,
    ip: IpAddr,
}

pub(super) fn who<T>(req: &Request<T>) -> Who {
    let header_session = req
        .metadata()
        .get(SESSION_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let ip = req
        .remote_addr()
        .map(|a| a.ip().to_canonical())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    Who { header_session, ip }
}

impl Who {
    pub(super) fn ip(&self) -> IpAddr {
        self.ip
    }
}

/// A call's session and rights (None: no exports file and none kept: all).
#[derive(Debug, Clone)]
pub(super) struct Caller {
    pub session: SessionId,
    pub rights: Option<Rights>,
}

impl Caller {
    /// The call's credentials as they apply: mapped by maproot/mapall.
    pub fn cred(&self, c: Option<pb::Credentials>) -> Cred {
        let c = cred_from_pb(c);
        match &self.rights {
            Some(r) => r.map(c),
            None => c,
        }
    }

    /// EPERM unless `goal` is within the line's mingoal..maxgoal.
    pub fn goal(&self, goal: u8) -> Result<(), Status> {
        self.within("goal", u32::from(goal), |r| {
            (u32::from(r.goal.0), u32::from(r.goal.1))
        })
    }

    /// EPERM unless `secs` is within the line's trash time bounds.
    pub fn trash_time(&self, secs: u32) -> Result<(), Status> {
        self.within("trash time (s)", secs, |r| r.trash_time)
    }

    fn within(
        &self,
        what: &str,
        v: u32,
        bounds: impl Fn(&Rights) -> (u32, u32),
    ) -> Result<(), Status> {
        let Some(r) = &self.rights else {
            return Ok(());
        };
        let (min, max) = bounds(r);
        if (min..=max).contains(&v) {
            return Ok(());
        }
        Err(errno_status_with(
            Errno::EPERM,
            format!(
                "{what} {v} is outside {min}..{max} allowed by mfsexports.cfg line {}",
                r.line
            ),
        ))
    }

    /// EACCES unless every inode in `inodes` is in the session's directory.
    pub fn sees(&self, ns: &Namespace, inodes: &[Inode]) -> Result<(), Status> {
        let Some(r) = self.rights.as_ref().filter(|r| r.root != Inode::ROOT) else {
            return Ok(());
        };
        for &ino in inodes {
            match ns.is_within(r.root, ino, self.session) {
                Ok(true) => {}
                // An unknown inode: the call itself answers ENOENT.
                Err(_) => {}
                Ok(false) => {
                    return Err(errno_status_with(
                        Errno::EACCES,
                        format!(
                            "inode {ino} is outside the directory this session mounted (inode {})",
                            r.root
                        ),
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The rights a grant gives once its directory is `root`, bound to `ip`
/// unless the line says `dynamicip`.
pub(super) fn rights_of(g: &Grant, root: Inode, ip: IpAddr) -> Rights {
    Rights {
        root,
        read_only: g.read_only,
        admin: g.admin,
        meta: g.meta,
        maproot: g.maproot,
        mapall: g.mapall,
        from: (!g.dynamic_ip).then_some(ip),
        goal: g.goal,
        trash_time: g.trash_time,
        line: g.line as u32,
    }
}

/// The caller of a call: its session (`body`, from the message, else the
/// metadata's), its rights, checked against what the call needs and the
/// inodes it names.
pub(super) fn caller(
    exports: &ExportsFile,
    ns: &Namespace,
    who: &Who,
    body: u64,
    need: Need,
    inodes: &[Inode],
) -> Result<Caller, Status> {
    let session = SessionId(if body != 0 { body } else { who.header_session });
    let kept = ns.session_rights(session).cloned();
    let rights = match (kept, exports.rules()) {
        (Some(r), _) => {
            if let Some(from) = r.from.filter(|f| f.to_canonical() != who.ip) {
                return Err(errno_status_with(
                    Errno::EACCES,
                    format!(
                        "session {session} was registered from {from}; calls from {} are refused (dynamicip in mfsexports.cfg allows it)",
                        who.ip
                    ),
                ));
            }
            Some(r)
        }
        (None, None) => None,
        (None, Some(rules)) => match rules.check(who.ip, &[], false, &Proof::None) {
            Ok(g) => Some(rights_of(&g, Inode::ROOT, who.ip)),
            Err(e) => {
                return Err(errno_status_with(
                    Errno::EACCES,
                    format!("{e} (a call without a registered session counts as mounting / with no password)"),
                ))
            }
        },
    };
    let c = Caller { session, rights };
    if let Some(r) = &c.rights {
        let meta_only = "a meta session (mfsmount -m) changes the trash only";
        match need {
            Need::Write | Need::Admin if r.meta => {
                return Err(errno_status_with(Errno::EPERM, meta_only.into()))
            }
            Need::Read => {}
            Need::Write | Need::Meta(true) if r.read_only => {
                return Err(errno_status_with(
                    Errno::EROFS,
                    format!(
                        "read-only: mfsexports.cfg line {} gives this session ro",
                        r.line
                    ),
                ))
            }
            Need::Write => {}
            Need::Admin if !r.admin => {
                return Err(errno_status_with(
                    Errno::EPERM,
                    format!(
                        "quotas need `admin` in the mfsexports.cfg line of the session (line {})",
                        r.line
                    ),
                ))
            }
            Need::Admin => {}
            Need::Meta(_) if !r.meta => {
                return Err(errno_status_with(
                    Errno::EPERM,
                    "the trash needs a meta session (mfsmount -m, a `.` line in mfsexports.cfg)"
                        .into(),
                ))
            }
            Need::Meta(_) => {}
        }
    }
    c.sees(ns, inodes)?;
    Ok(c)
}

impl Meta {
    /// The caller of a call (see `access`): its session and rights, checked
    /// against what the call needs and the inodes it names, once this
    /// leader has applied an entry of its term (so the rights of a session
    /// registered through any earlier leader are known; `MasterNode::settle`).
    /// A reading handler still passes its own read barrier (`Meta::read`);
    /// a change is ordered by the log.
    async fn enter(
        &self,
        who: &Who,
        body: u64,
        need: Need,
        inodes: &[Inode],
    ) -> Result<Caller, Status> {
        self.node.settle().await?;
        let ns = self.node.shared.ns();
        caller(&self.exports, &ns, who, body, need, inodes)
    }

    /// [`Meta::enter`] for a request: its caller (the session of its
    /// RequestId or metadata) checked for `need` and the inodes `inodes`
    /// names, and the message; directories among them delegated to
    /// another session are recalled first (`writeback`).
    pub(super) async fn admit<T: Identified>(
        &self,
        req: Request<T>,
        need: Need,
        inodes: impl FnOnce(&T) -> Vec<Inode>,
    ) -> Result<(Caller, T), Status> {
        let (c, r, inodes) = self.admit_with(req, need, inodes).await?;
        self.recall_from_others(c.session, &inodes).await?;
        Ok((c, r))
    }

    /// [`Meta::admit`] without recalls (`Delegate`, which is refused
    /// instead, and the holder's own calls).
    pub(super) async fn admit_holding<T: Identified>(
        &self,
        req: Request<T>,
        need: Need,
        inodes: impl FnOnce(&T) -> Vec<Inode>,
    ) -> Result<(Caller, T), Status> {
        let (c, r, _) = self.admit_with(req, need, inodes).await?;
        Ok((c, r))
    }

    async fn admit_with<T: Identified>(
        &self,
        req: Request<T>,
        need: Need,
        inodes: impl FnOnce(&T) -> Vec<Inode>,
    ) -> Result<(Caller, T, Vec<Inode>), Status> {
        let who = who(&req);
        let r = req.into_inner();
        let inodes = inodes(&r);
        let c = self.enter(&who, r.session(), need, &inodes).await?;
        Ok((c, r, inodes))
    }

    /// RegisterSession: the directory asked for resolved, the exports
    /// file's rights for the caller's address and password (refused with
    /// the reason), one log entry that keeps them with the session.
    pub(super) async fn register(
        &self,
        req: Request<pb::RegisterSessionRequest>,
    ) -> R<pb::RegisterSessionReply> {
        let who = who(&req);
        let r = req.into_inner();
        let info: String = r.info.chars().take(256).collect();
        let path = crate::exports::components(&r.path).map_err(invalid)?;
        self.node.linearize().await?;
        let proof = self.exports.proof(r.nonce, r.password_digest, r.password)?;
        let root = if r.meta {
            Inode::ROOT
        } else {
            let mut at = Inode::ROOT;
            for c in &path {
                // A directory another session holds may have names that
                // session made and not sent yet (a mkdir its mount
                // answered): recalled first, as any call naming it.
                self.recall_from_others(SessionId::NONE, &[at]).await?;
                let ns = self.node.shared.ns();
                let a = ns
                    .lookup(&fsm::Cred::root(), at, c.as_bytes())
                    .map_err(|e| {
                        errno_status_with(e, format!("cannot mount /{}: {c}: {e}", path.join("/")))
                    })?;
                at = a.inode;
            }
            if !self
                .node
                .shared
                .ns()
                .getattr(at)
                .is_ok_and(|a| a.ftype == fsm::FileType::Directory)
            {
                return Err(errno_status_with(
                    Errno::ENOTDIR,
                    format!("cannot mount /{}: not a directory", path.join("/")),
                ));
            }
            at
        };
        let (op, rights) = match self.exports.rules() {
            None => (Op::RegisterSession { info: info.clone() }, None),
            Some(rules) => {
                let grant = rules
                    .check(who.ip(), &path, r.meta, &proof)
                    .map_err(|e| errno_status_with(Errno::EACCES, e.to_string()))?;
                let rights = rights_of(&grant, root, who.ip());
                let op = Op::RegisterSessionWith {
                    info: info.clone(),
                    rights: rights.clone(),
                };
                (op, Some(rights))
            }
        };
        let r = fsm::Request {
            session: SessionId(0),
            seq: 0,
            acked: 0,
            time: now(),
            op,
        };
        match self.node.write(r).await? {
            Reply::Session { id, .. } => {
                self.node.touch_session(id.0);
                if let Some(g) = &rights {
                    tracing::info!(
                        session = id.0,
                        from = %who.ip(),
                        path = %format!("/{}", path.join("/")),
                        meta = g.meta,
                        read_only = g.read_only,
                        line = g.line,
                        %info,
                        "session registered through mfsexports.cfg"
                    );
                }
                Ok(Response::new(pb::RegisterSessionReply {
                    session: id.0,
                    timeout_secs: self.node.session_timeout().as_secs() as u32,
                    commits_attributes: true,
                    queues_attributes: true,
                    root: root.0,
                    read_only: rights.as_ref().is_some_and(|g| g.read_only),
                }))
            }
            Reply::Err(e) => Err(errno_status(e)),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }
}

/// A request that may name its session: in a RequestId (mutating calls)
/// or a `session` field.
pub(super) trait Identified {
    /// The session it names (0: none; the metadata's then counts).
    fn session(&self) -> u64;
}

macro_rules! identified {
    (with id: $($t:ident),*; with session: $($s:ident),*; without: $($u:ident),*) => {
        $(impl Identified for pb::$t {
            fn session(&self) -> u64 {
                self.id.as_ref().map_or(0, |id| id.session)
            }
        })*
        $(impl Identified for pb::$s {
            fn session(&self) -> u64 {
                self.session
            }
        })*
        $(impl Identified for pb::$u {
            fn session(&self) -> u64 {
                0
            }
        })*
    };
}

identified!(
    with id: SetAttrRequest, MkdirRequest, MknodRequest, CreateRequest, OpenRequest,
        ReleaseRequest, AssertOpensRequest, UnlinkRequest, RmdirRequest, RenameRequest,
        LinkRequest, SymlinkRequest, SetXattrRequest, RemoveXattrRequest, WriteChunkRequest,
        WriteChunkEndRequest, PunchChunksRequest, SetGoalRequest, SetTrashTimeRequest,
        SetEattrRequest, SnapshotRequest, SetLockRequest, TrashFileRequest,
        SetTrashPathRequest, SetQuotaRequest, CloseSessionRequest, DelegateRequest,
        ReturnDelegationRequest, BatchRequest, HoldChunksRequest;
    with session: ReadChunkRequest, GetLockRequest, RecallsRequest;
    without: GetAttrRequest, ReadlinkRequest, GetQuotaRequest, DirInfoRequest,
        ListRemovedRequest, ListQuotasRequest, StatfsRequest, LookupRequest, ReaddirRequest, GetXattrRequest, ListXattrRequest, AccessRequest
);
