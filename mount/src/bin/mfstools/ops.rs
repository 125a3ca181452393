//! The tools themselves: find each path's cluster and inode, ask the master,
//! print what MooseFS prints. A failing path is reported on stderr as
//! `PATH: why` and makes the exit status 1; the other paths still run.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use fuser::INodeNo;
use mfs_common::eattr;
use mfs_mount::fuse::convert::InodeMap;
use mfs_mount::master::{parse_masters, ClientOptions, MasterClient, MASTERS_ENV};

/// The password of the masters' exports line for the mount a path is on.
const PASSWORD_ENV: &str = "MFS_PASSWORD";
use mfs_mount::tools::locate::{locate, Located};
use mfs_mount::tools::report::{self, ChunkSlot, ValueCounts};
use mfs_mount::ClientError;
use mfs_proto::v1::{
    Attr, Credentials, FileType, OpenMode, OpenRequest, ReaddirRequest, ReleaseRequest,
    SetEattrRequest, SetGoalRequest, SetTrashTimeRequest,
};

use crate::Args;

/// Most copies a goal may ask for.
const MAX_GOAL: u32 = 9;
/// How often a long walk says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// How long a chunk the master does not know a copy of yet (EAGAIN) is
/// asked again before it counts as having none.
const EAGAIN_PATIENCE: Duration = Duration::from_secs(5);

/// A path resolved to the master's inode.
pub(crate) struct Target {
    pub(crate) client: MasterClient,
    pub(crate) inode: u64,
    /// The masters asked for it (as given: -H, MFS_MASTERS or the mount's).
    pub(crate) masters: String,
}

/// State shared by the paths of one run: a client per master list, the
/// master inode of each mounted subfolder, the caller's credentials.
pub(crate) struct Ctx {
    tool: &'static str,
    masters_override: Option<String>,
    needs_session: bool,
    clients: HashMap<String, MasterClient>,
    roots: HashMap<(String, String), u64>,
    pub(crate) cred: Credentials,
}

/// The caller's effective uid, gid and supplementary groups.
fn caller_credentials() -> Credentials {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let mut groups = vec![0 as libc::gid_t; 256];
    // SAFETY: the buffer holds `groups.len()` gid_t values.
    let n = unsafe { libc::getgroups(groups.len() as libc::c_int, groups.as_mut_ptr()) };
    groups.truncate(usize::try_from(n).unwrap_or(0));
    Credentials { uid, gid, groups }
}

impl Ctx {
    /// A context for `tool`; `needs_session` for tools that change things
    /// (or open files).
    pub(crate) fn new(tool: &'static str, masters: Option<String>, needs_session: bool) -> Ctx {
        Ctx {
            tool,
            masters_override: masters,
            needs_session,
            clients: HashMap::new(),
            roots: HashMap::new(),
            cred: caller_credentials(),
        }
    }

    /// Closes the sessions the run opened.
    pub(crate) async fn close(&self) {
        for c in self.clients.values() {
            if c.session_id() != 0 {
                let _ = c.close_session().await;
            }
        }
    }

    /// A client of `masters` for paths of a mount of `subfolder`: with a
    /// session registered for that directory (and the password in
    /// MFS_PASSWORD) when the tool changes things, the mount has a
    /// subfolder or a password is given, so the masters' exports file
    /// gives the tool the rights it gives the mount.
    async fn client(
        &mut self,
        masters: &str,
        subfolder: Option<&str>,
    ) -> Result<MasterClient, String> {
        let key = format!("{masters} {}", subfolder.unwrap_or("/"));
        if let Some(c) = self.clients.get(&key) {
            return Ok(c.clone());
        }
        let password = std::env::var(PASSWORD_ENV).unwrap_or_default();
        let addrs = parse_masters(masters).map_err(|e| format!("masters {masters:?}: {e}"))?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let opts = ClientOptions {
            overall_timeout: Some(Duration::from_secs(60)),
            session_info: format!("{} on {}", self.tool, host.trim()),
            register_session: self.needs_session || subfolder.is_some() || !password.is_empty(),
            mount_path: subfolder.unwrap_or_default().to_string(),
            password_md5: (!password.is_empty()).then(|| mfs_proto::password_md5(&password)),
            ..ClientOptions::default()
        };
        let c = MasterClient::connect(&addrs, opts)
            .await
            .map_err(|e| format!("cannot reach the masters {masters}: {e}"))?;
        self.clients.insert(key, c.clone());
        Ok(c)
    }

    /// The masters to ask for a path on `loc`: -H, else MFS_MASTERS, else
    /// the mount's own.
    fn masters_for(&self, loc: &Located) -> String {
        if let Some(m) = &self.masters_override {
            return m.clone();
        }
        match std::env::var(MASTERS_ENV) {
            Ok(v) if !v.trim().is_empty() => v,
            _ => loc.source.masters.clone(),
        }
    }

    pub(crate) async fn target(&mut self, path: &str) -> Result<Target, String> {
        let loc = locate(Path::new(path)).map_err(|e| e.to_string())?;
        let masters = self.masters_for(&loc);
        let client = self
            .client(&masters, loc.source.subfolder.as_deref())
            .await?;
        let root = match (&loc.source.subfolder, client.session_root()) {
            (None, _) => 1,
            (Some(_), Some(root)) => root,
            (Some(sub), None) => {
                let key = (masters.clone(), sub.clone());
                match self.roots.get(&key) {
                    Some(r) => *r,
                    None => {
                        let parts: Vec<Vec<u8>> = sub
                            .split('/')
                            .filter(|p| !p.is_empty() && *p != ".")
                            .map(|p| p.as_bytes().to_vec())
                            .collect();
                        let r = mfs_mount::fuse::resolve_root(&client, &parts)
                            .await
                            .map_err(|e| {
                                format!("{path}: cannot find the mounted subfolder: {e}")
                            })?;
                        self.roots.insert(key, r);
                        r
                    }
                }
            }
        };
        let inode = InodeMap::new(root).to_master(INodeNo(loc.kernel_inode));
        Ok(Target {
            client,
            inode,
            masters,
        })
    }

    /// Calls `f` on the attributes of `t`'s inode and, when it is a
    /// directory, of everything below it (readdir pages with attributes),
    /// printing a progress line to stderr every 2 s.
    async fn walk(
        &self,
        path: &str,
        t: &Target,
        mut f: impl FnMut(&Attr),
    ) -> Result<(), ClientError> {
        let top = t.client.getattr(t.inode).await?;
        f(&top);
        if top.r#type != FileType::Directory as i32 {
            return Ok(());
        }
        let mut stack = vec![t.inode];
        let (started, mut last, mut seen) = (Instant::now(), Instant::now(), 1u64);
        while let Some(dir) = stack.pop() {
            let mut after = Vec::new();
            loop {
                let page = t
                    .client
                    .readdir(ReaddirRequest {
                        cred: Some(self.cred.clone()),
                        inode: dir,
                        after: after.clone(),
                        limit: 1000,
                        plus: true,
                    })
                    .await?;
                let next = match page.entries.last() {
                    Some(l) if page.more => Some(l.name.clone()),
                    _ => None,
                };
                for e in page.entries {
                    let attr = match e.attr {
                        Some(a) => a,
                        None => t.client.getattr(e.inode).await?,
                    };
                    f(&attr);
                    seen += 1;
                    if attr.r#type == FileType::Directory as i32 {
                        stack.push(e.inode);
                    }
                }
                if last.elapsed() >= PROGRESS_EVERY {
                    last = Instant::now();
                    eprintln!(
                        "{path}: {seen} inodes scanned in {:.0?}...",
                        started.elapsed()
                    );
                }
                match next {
                    Some(name) => after = name,
                    None => break,
                }
            }
        }
        Ok(())
    }

    /// Every chunk slot of a file, read under the session with the file
    /// open read-only (released whatever happens).
    async fn chunk_slots(&self, t: &Target) -> Result<Vec<ChunkSlot>, String> {
        let attr = t
            .client
            .open(OpenRequest {
                id: None,
                cred: Some(self.cred.clone()),
                inode: t.inode,
                mode: OpenMode::Read as i32,
                truncate: false,
                lease_first_chunk: false,
            })
            .await
            .map_err(|e| e.to_string())?;
        if attr.r#type != FileType::Regular as i32 {
            let _ = self.release(t).await;
            return Err("not a regular file".into());
        }
        let result = self.read_slots(t, attr.size).await;
        let released = self.release(t).await;
        let slots = result?;
        released?;
        Ok(slots)
    }

    async fn release(&self, t: &Target) -> Result<(), String> {
        t.client
            .release(ReleaseRequest {
                id: None,
                inode: t.inode,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("release: {e}"))
    }

    async fn read_slots(&self, t: &Target, size: u64) -> Result<Vec<ChunkSlot>, String> {
        let mut slots = Vec::new();
        let mut index: u32 = 0;
        let mut length = size;
        while u64::from(index) < report::chunk_count(length) {
            let started = Instant::now();
            let slot = loop {
                match t.client.read_chunk(t.inode, index).await {
                    Ok(loc) => {
                        length = loc.file_length;
                        break if loc.chunk_id == 0 {
                            ChunkSlot::Hole
                        } else {
                            ChunkSlot::Chunk {
                                id: loc.chunk_id,
                                version: loc.version,
                                copies: loc.servers.into_iter().map(|s| s.address).collect(),
                            }
                        };
                    }
                    // No copy known: the leader may still learn of one.
                    Err(ClientError::Errno(libc::EAGAIN, _))
                        if started.elapsed() < EAGAIN_PATIENCE =>
                    {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                    }
                    // No copy at all (or none yet): a chunk with 0 copies.
                    Err(ClientError::Errno(libc::EIO | libc::EAGAIN, _)) => break ChunkSlot::Lost,
                    Err(e) => return Err(format!("chunk {index}: {e}")),
                }
            };
            slots.push(slot);
            index = index
                .checked_add(1)
                .ok_or_else(|| "more chunks than a file can have".to_string())?;
        }
        Ok(slots)
    }

    /// A warning when `goal` is more than the chunkservers that can hold a
    /// copy (the chunks will stay undergoal).
    async fn warn_undergoal(&self, client: &MasterClient, goal: u32) {
        match client.cluster_info().await {
            Ok(info) => {
                let n = info
                    .chunkservers
                    .iter()
                    .filter(|c| c.state != "lost")
                    .count();
                if goal as usize > n {
                    eprintln!(
                        "{}: warning: goal {goal} is more than the {n} chunkserver(s) connected: \
                         chunks will stay undergoal until more chunkservers join",
                        self.tool
                    );
                }
            }
            Err(e) => eprintln!(
                "{}: warning: cannot check the number of chunkservers: {e}",
                self.tool
            ),
        }
    }
}

/// Prints a path's output, or its error on stderr (prefixed with the path
/// unless it starts with it); false for an error.
pub(crate) fn print_outcome(path: &str, result: Result<String, String>) -> bool {
    match result {
        Ok(text) => {
            print!("{text}");
            true
        }
        Err(e) => {
            if e.starts_with(path) {
                eprintln!("{e}");
            } else {
                eprintln!("{path}: {e}");
            }
            false
        }
    }
}

fn parse_number(what: &str, s: &str) -> anyhow::Result<u32> {
    s.parse::<u32>()
        .with_context(|| format!("{what} {s:?} is not a number"))
}

/// Runs tool `tool` on `args`. `Ok(false)`: some path failed (reported).
/// `Err`: the command line itself is wrong.
pub async fn run(tool: &'static str, args: Args) -> anyhow::Result<bool> {
    let needs_value = matches!(tool, "mfssetgoal" | "mfssettrashtime");
    let mut rest = args.rest.into_iter();
    let value = if needs_value {
        let what = if tool == "mfssetgoal" {
            "goal"
        } else {
            "trash time"
        };
        let v = rest.next().with_context(|| format!("missing the {what}"))?;
        let v = parse_number(what, &v)?;
        if tool == "mfssetgoal" && !(1..=MAX_GOAL).contains(&v) {
            bail!("goal {v} is outside 1..{MAX_GOAL}");
        }
        v
    } else {
        0
    };
    let paths: Vec<String> = rest.collect();
    if paths.is_empty() {
        bail!("missing PATH");
    }
    let mut bits = 0u8;
    for f in &args.flags {
        bits |= eattr::bit(f).with_context(|| {
            let known: Vec<&str> = eattr::NAMES.iter().map(|(n, _)| *n).collect();
            format!(
                "unknown extra attribute {f:?} (known: {})",
                known.join(", ")
            )
        })?;
    }
    if matches!(tool, "mfsseteattr" | "mfsdeleattr") && bits == 0 {
        bail!("missing -f ATTR");
    }
    let value = if bits != 0 { u32::from(bits) } else { value };
    let needs_session = matches!(
        tool,
        "mfssetgoal"
            | "mfssettrashtime"
            | "mfsseteattr"
            | "mfsdeleattr"
            | "mfsmakesnapshot"
            | "mfsrmsnapshot"
            | "mfscheckfile"
            | "mfsfileinfo"
    );
    let mut ctx = Ctx::new(tool, args.masters, needs_session);
    let snapshots = match tool {
        "mfsmakesnapshot" => Some(crate::snapshot::make(&mut ctx, &paths, args.overwrite).await),
        "mfsrmsnapshot" => Some(crate::snapshot::remove(&mut ctx, &paths).await),
        _ => None,
    };
    if let Some(result) = snapshots {
        for c in ctx.clients.values() {
            let _ = c.close_session().await;
        }
        return result.map_err(anyhow::Error::msg);
    }
    let mut ok = true;
    let mut warned = false;
    for path in &paths {
        let result = match ctx.target(path).await {
            Err(e) => Err(e),
            Ok(t) => {
                if tool == "mfssetgoal" && !warned {
                    warned = true;
                    ctx.warn_undergoal(&t.client, value).await;
                }
                one_path(&ctx, tool, path, &t, args.recursive, value).await
            }
        };
        ok &= print_outcome(path, result);
    }
    ctx.close().await;
    Ok(ok)
}

async fn one_path(
    ctx: &Ctx,
    tool: &str,
    path: &str,
    t: &Target,
    recursive: bool,
    value: u32,
) -> Result<String, String> {
    let err = |e: ClientError| e.to_string();
    match tool {
        "mfsgetgoal" | "mfsgettrashtime" => {
            let goal = tool == "mfsgetgoal";
            let pick = |a: &Attr| if goal { a.goal } else { a.trash_time };
            if !recursive {
                let a = t.client.getattr(t.inode).await.map_err(err)?;
                return Ok(format!("{path}: {}\n", pick(&a)));
            }
            let mut counts = ValueCounts::default();
            ctx.walk(path, t, |a| counts.add(a.r#type, pick(a)))
                .await
                .map_err(err)?;
            let what = if goal { "goal" } else { "trashtime" };
            Ok(report::value_counts(path, what, &counts))
        }
        "mfssetgoal" | "mfssettrashtime" => {
            let goal = tool == "mfssetgoal";
            let r = if goal {
                t.client
                    .set_goal(SetGoalRequest {
                        id: None,
                        cred: Some(ctx.cred.clone()),
                        inode: t.inode,
                        goal: value,
                        recursive,
                    })
                    .await
            } else {
                t.client
                    .set_trash_time(SetTrashTimeRequest {
                        id: None,
                        cred: Some(ctx.cred.clone()),
                        inode: t.inode,
                        trash_time: value,
                        recursive,
                    })
                    .await
            }
            .map_err(err)?;
            let what = if goal { "goal" } else { "trashtime" };
            match tree_outcome(path, what, recursive, &r)? {
                Some(report) => Ok(report),
                None => Ok(format!("{path}: {value}\n")),
            }
        }
        "mfsgeteattr" => {
            if !recursive {
                let a = t.client.getattr(t.inode).await.map_err(err)?;
                return Ok(format!("{path}: {}\n", eattr::names(eattr_of(&a))));
            }
            let mut counts = ValueCounts::default();
            ctx.walk(path, t, |a| counts.add(a.r#type, u32::from(eattr_of(a))))
                .await
                .map_err(err)?;
            Ok(report::eattr_counts(path, &counts))
        }
        "mfsseteattr" | "mfsdeleattr" => {
            let bits = u8::try_from(value).unwrap_or(0);
            let (set, clear) = if tool == "mfsseteattr" {
                (bits, 0)
            } else {
                (0, bits)
            };
            let r = t
                .client
                .set_eattr(SetEattrRequest {
                    id: None,
                    cred: Some(ctx.cred.clone()),
                    inode: t.inode,
                    set: u32::from(set),
                    clear: u32::from(clear),
                    recursive,
                })
                .await
                .map_err(err)?;
            match tree_outcome(path, "attributes", recursive, &r)? {
                Some(report) => Ok(report),
                None => {
                    let a = t.client.getattr(t.inode).await.map_err(err)?;
                    Ok(format!("{path}: {}\n", eattr::names(eattr_of(&a))))
                }
            }
        }
        "mfscheckfile" => Ok(report::check_file(path, &ctx.chunk_slots(t).await?)),
        "mfsfileinfo" => Ok(report::file_info(path, &ctx.chunk_slots(t).await?)),
        "mfsdirinfo" => {
            let r = t.client.dir_info(t.inode).await.map_err(err)?;
            Ok(report::dir_info(path, &r))
        }
        other => Err(format!("{other} is not a tool of mfstools")),
    }
}

/// The extra attribute bits of `a` (a value past 8 bits shows every name).
fn eattr_of(a: &Attr) -> u8 {
    u8::try_from(a.eattr).unwrap_or(u8::MAX)
}

/// What a set tool prints for its answer `r`: the tree counts with `-r`
/// (`Some`), an error when the caller may not change the inode, else
/// `None` (the tool prints the new value).
fn tree_outcome(
    path: &str,
    what: &str,
    recursive: bool,
    r: &mfs_proto::v1::SetTreeReply,
) -> Result<Option<String>, String> {
    if recursive {
        Ok(Some(report::set_tree(path, what, r)))
    } else if r.not_permitted > 0 {
        Err("permission denied (only the owner or root may change it)".into())
    } else {
        Ok(None)
    }
}
