//! A cluster of real `mfsmaster` processes for tests and benchmarks.
//!
//! Each master gets free ports on 127.0.0.1 and its own dir under a temp dir
//! (config-free: everything through flags and `MFS_*` env). Logs are kept
//! when a test fails: the dir is not removed and its path is printed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::netlab::Netlab;
use anyhow::{anyhow, bail, Context, Result};
use mfs_mount::master::{ClientOptions, MasterClient};
use mfs_proto::v1::{NodeStatusReply, Role};

/// Directory holding the built binaries (`MFS_BIN_DIR`, else the workspace's
/// `target/debug`, built on first use).
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Before any mount of this process exists (see `spawner`).
        crate::spawner::init();
        if let Ok(d) = std::env::var("MFS_BIN_DIR") {
            return PathBuf::from(d);
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .current_dir(&root)
            .args(["build", "--bins", "--quiet"])
            .status();
        match st {
            Ok(s) if s.success() => {}
            other => panic!("building the binaries failed: {other:?}"),
        }
        std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target"))
            .join("debug")
    })
    .clone()
}

/// A free TCP port on 127.0.0.1.
/// Ports handed out are taken from here: below Linux's ephemeral range
/// (32768-60999), where the source ports of the tests' own outgoing
/// connections come from, so a connection never takes a port between the
/// pick and the bind.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A port on 127.0.0.1 that nothing listens on, never the same twice in
/// this process (two servers started together cannot be given one port).
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    for _ in 0..PORTS.len() {
        let port = rand::random_range(PORTS);
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    // Every port of the range tried: let the OS choose.
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

pub struct Master {
    pub id: u64,
    /// The address it listens on: 127.0.0.1, or its own in a [`Netlab`].
    pub host: String,
    /// The network namespace it runs in (a [`Netlab`] host), if any.
    pub netns: Option<String>,
    pub port: u16,
    pub http_port: u16,
    pub dir: PathBuf,
    pub child: Option<crate::spawner::Proc>,
}

impl Master {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
}

pub struct Cluster {
    pub root: Option<tempfile::TempDir>,
    pub masters: Vec<Master>,
    /// Extra `MFS_*` settings for every master.
    pub env: Vec<(String, String)>,
    /// Chunkservers started with [`Cluster::add_chunkservers`].
    pub chunkservers: Vec<crate::chunkservers::Chunkserver>,
    /// Metaloggers started with [`Cluster::add_metalogger`].
    pub metaloggers: Vec<crate::metaloggers::Metalogger>,
    /// The network the masters run in ([`Cluster::start_in_netlab`]);
    /// dropped after them.
    pub netlab: Option<Netlab>,
}

impl Cluster {
    /// Starts `n` masters forming one new cluster and waits for a leader.
    pub async fn start(n: usize, env: &[(&str, &str)]) -> Result<Cluster> {
        let c = Cluster::spawn_all(n, env)?;
        c.wait_leader(Duration::from_secs(30)).await?;
        Ok(c)
    }

    /// Starts `n` masters forming one new cluster, without waiting for
    /// anything (for clusters this process cannot ask, such as one serving
    /// TLS: see `mfscli wait-leader`).
    pub fn spawn_all(n: usize, env: &[(&str, &str)]) -> Result<Cluster> {
        Cluster::spawn_all_in(n, env, None)
    }

    /// Starts `n` masters, each a host of a [`Netlab`] of its own (so a
    /// test can cut one off the network), and waits for a leader.
    pub async fn start_in_netlab(n: usize, env: &[(&str, &str)]) -> Result<Cluster> {
        let lab = Netlab::new(n)?;
        let c = Cluster::spawn_all_in(n, env, Some(lab))?;
        c.wait_leader(Duration::from_secs(30)).await?;
        Ok(c)
    }

    /// Starts `n` masters on the bridge of a [`Netlab`] of `hosts` hosts
    /// (so that its hosts reach them) and waits for a leader; chunkservers
    /// added then run in the hosts, chunkserver `j` in host `j`, for tests
    /// that cut a chunkserver off.
    pub async fn start_for_chunkserver_cuts(
        n: usize,
        hosts: usize,
        env: &[(&str, &str)],
    ) -> Result<Cluster> {
        let lab = Netlab::new(hosts)?;
        let gateway = lab.gateway();
        let mut c = Cluster::spawn_all_in(0, env, Some(lab))?;
        for _ in 0..n {
            let id = c.add_master_slot()?;
            c.master_mut(id)?.host = gateway.clone();
        }
        for id in 1..=n as u64 {
            c.spawn(id, &c.peers())?;
        }
        c.wait_leader(Duration::from_secs(30)).await?;
        Ok(c)
    }

    fn spawn_all_in(n: usize, env: &[(&str, &str)], lab: Option<Netlab>) -> Result<Cluster> {
        let root = tempfile::Builder::new().prefix("mfs-it-").tempdir()?;
        let mut masters = Vec::new();
        for i in 0..n {
            let id = i as u64 + 1;
            let dir = root.path().join(format!("master{id}"));
            std::fs::create_dir_all(&dir)?;
            let (host, netns) = match &lab {
                Some(l) => (l.addr(i + 1), Some(l.netns(i + 1).to_string())),
                None => ("127.0.0.1".to_string(), None),
            };
            masters.push(Master {
                id,
                host,
                netns,
                port: free_port(),
                http_port: free_port(),
                dir,
                child: None,
            });
        }
        let mut c = Cluster {
            root: Some(root),
            masters,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            chunkservers: Vec::new(),
            metaloggers: Vec::new(),
            netlab: lab,
        };
        for id in 1..=n as u64 {
            c.spawn(id, &c.peers())?;
        }
        Ok(c)
    }

    pub fn root(&self) -> &Path {
        self.root
            .as_ref()
            .map(|r| r.path())
            .unwrap_or(Path::new("/"))
    }

    /// `1=127.0.0.1:p1,...` of the masters the cluster was started with.
    pub fn peers(&self) -> String {
        self.masters
            .iter()
            .map(|m| format!("{}={}", m.id, m.addr()))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn addrs(&self) -> Vec<String> {
        self.masters.iter().map(|m| m.addr()).collect()
    }

    pub fn master(&self, id: u64) -> Result<&Master> {
        self.masters
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| anyhow!("no master {id}"))
    }

    fn master_mut(&mut self, id: u64) -> Result<&mut Master> {
        self.masters
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(|| anyhow!("no master {id}"))
    }

    /// Adds the description of a new master (not started, not a member).
    pub fn add_master_slot(&mut self) -> Result<u64> {
        let id = self.masters.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let dir = self.root().join(format!("master{id}"));
        std::fs::create_dir_all(&dir)?;
        self.masters.push(Master {
            id,
            host: "127.0.0.1".into(),
            netns: None,
            port: free_port(),
            http_port: free_port(),
            dir,
            child: None,
        });
        Ok(id)
    }

    /// Starts master `id` with the given MASTER_PEERS.
    pub fn spawn(&mut self, id: u64, peers: &str) -> Result<()> {
        let bin = bin_dir().join("mfsmaster");
        let env = self.env.clone();
        let m = self.master_mut(id)?;
        let (program, mut args) = crate::spawner::in_netns(m.netns.as_deref(), &bin)?;
        args.extend([
            "--id".into(),
            id.to_string(),
            "--listen-host".into(),
            m.host.clone(),
            "--listen-port".into(),
            m.port.to_string(),
            "--http-listen".into(),
            format!("{}:{}", m.host, m.http_port),
            "--data-path".into(),
            crate::spawner::path_arg(&m.dir.join("data"))?,
            "--peers".into(),
            peers.to_string(),
            "-c".into(),
            crate::spawner::path_arg(&m.dir.join("none.cfg"))?,
        ]);
        let mut all_env = vec![("RUST_LOG".to_string(), "info,openraft=error".to_string())];
        all_env.extend(env);
        // `-c` names a file that does not exist: refused. Use an empty one.
        std::fs::write(m.dir.join("none.cfg"), "")?;
        // When the test started it, beside the master's own first line (a
        // start that stalls shows as the gap between the two).
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let (secs, ms) = (since.as_secs() % 86_400, since.subsec_millis());
        let mut note = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.dir.join("log"))?;
        use std::io::Write as _;
        writeln!(
            note,
            "(test harness: spawned at {:02}:{:02}:{:02}.{ms:03} UTC)",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )?;
        let log = m.dir.join("log");
        let spec = crate::spawner::Spec {
            program: &program,
            args,
            env: all_env,
            log: &log,
        };
        let child =
            crate::spawner::spawn(&spec).with_context(|| format!("starting {}", bin.display()))?;
        m.child = Some(child);
        Ok(())
    }

    /// Restarts a stopped master with the cluster's peers.
    pub fn restart(&mut self, id: u64) -> Result<()> {
        let peers = self.peers();
        self.spawn(id, &peers)
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        let m = self.master_mut(id)?;
        if let Some(mut c) = m.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// SIGTERM, and wait for the exit.
    pub fn stop(&mut self, id: u64) -> Result<()> {
        let m = self.master_mut(id)?;
        if let Some(mut c) = m.child.take() {
            c.signal(libc::SIGTERM);
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// Removes a master's data dir (it must be stopped).
    pub fn wipe(&mut self, id: u64) -> Result<()> {
        let m = self.master(id)?;
        if m.child.is_some() {
            bail!("wipe of running master {id}");
        }
        let _ = std::fs::remove_dir_all(m.dir.join("data"));
        Ok(())
    }

    pub fn is_running(&mut self, id: u64) -> bool {
        match self.master_mut(id).ok().and_then(|m| m.child.as_mut()) {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// A client of the whole group (no session).
    pub async fn admin(&self) -> Result<MasterClient> {
        let opts = ClientOptions {
            overall_timeout: Some(Duration::from_secs(30)),
            ..Default::default()
        };
        Ok(MasterClient::connect(&self.addrs(), opts).await?)
    }

    /// A client with a session, as a mount would have.
    pub async fn client(&self, info: &str) -> Result<MasterClient> {
        let opts = ClientOptions {
            overall_timeout: Some(Duration::from_secs(60)),
            register_session: true,
            session_info: info.into(),
            ..Default::default()
        };
        Ok(MasterClient::connect(&self.addrs(), opts).await?)
    }

    /// NodeStatus of one master (None when it does not answer).
    pub async fn status(&self, id: u64) -> Option<NodeStatusReply> {
        self.status_or_error(id).await.ok()
    }

    /// NodeStatus of master `id`, or what went wrong asking (for failure
    /// reports).
    pub async fn status_or_error(&self, id: u64) -> Result<NodeStatusReply, String> {
        let m = self.master(id).map_err(|e| e.to_string())?;
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", m.addr()))
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        mfs_proto::v1::admin_service_client::AdminServiceClient::new(ch)
            .node_status(mfs_proto::v1::Empty {})
            .await
            .map(|r| r.into_inner())
            .map_err(|s| format!("NodeStatus: {:?} {}", s.code(), s.message()))
    }

    /// Waits until exactly one running master says it leads and the others
    /// that run agree; returns its id. On a timeout the error tells, for
    /// every master, its process state, what it last answered (or why it
    /// did not) and its log's tail.
    pub async fn wait_leader(&self, timeout: Duration) -> Result<u64> {
        let t = Instant::now();
        let mut seen: std::collections::BTreeMap<u64, String> = Default::default();
        loop {
            let mut leaders = Vec::new();
            for m in &self.masters {
                if m.child.is_none() {
                    seen.insert(m.id, "not running (stopped by the test)".into());
                    continue;
                }
                let at = t.elapsed();
                match self.status_or_error(m.id).await {
                    Ok(st) => {
                        if st.role == Role::Leader as i32 {
                            leaders.push(st.id);
                        }
                        seen.insert(
                            m.id,
                            format!(
                                "at {at:.1?}: role {:?} term {} leader {} applied {}",
                                Role::try_from(st.role).unwrap_or(Role::Unspecified),
                                st.term,
                                st.leader_id,
                                st.applied_index
                            ),
                        );
                    }
                    Err(e) => {
                        seen.insert(m.id, format!("at {at:.1?}: {e}"));
                    }
                }
            }
            if leaders.len() == 1 {
                return Ok(leaders[0]);
            }
            if t.elapsed() > timeout {
                let mut report = String::new();
                for m in &self.masters {
                    let log = self.log(m.id);
                    let lines: Vec<&str> = log.lines().collect();
                    let from = lines.len().saturating_sub(10);
                    let pid = m.child.as_ref().map(|c| c.id());
                    report.push_str(&format!(
                        "\n--- master{} ({}); last seen {}; log:\n{}",
                        m.id,
                        crate::chunkservers::process_state(pid),
                        seen.get(&m.id).map_or("never", |s| s.as_str()),
                        lines[from..].join("\n")
                    ));
                }
                bail!("no single leader after {timeout:?} (leaders: {leaders:?}){report}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until master `id` has applied at least `index`.
    pub async fn wait_applied(
        &self,
        id: u64,
        index: u64,
        timeout: Duration,
    ) -> Result<NodeStatusReply> {
        let t = Instant::now();
        loop {
            if let Some(st) = self.status(id).await {
                if st.applied_index >= index {
                    return Ok(st);
                }
            }
            if t.elapsed() > timeout {
                bail!("master {id} did not apply up to {index} within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log(&self, id: u64) -> String {
        self.master(id)
            .ok()
            .and_then(|m| std::fs::read_to_string(m.dir.join("log")).ok())
            .unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for ml in &mut self.metaloggers {
            if let Some(mut c) = ml.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for cs in &mut self.chunkservers {
            if let Some(mut c) = cs.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for m in &mut self.masters {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            if let Some(root) = self.root.take() {
                let p = root.keep();
                eprintln!("test failed: cluster dir kept at {}", p.display());
            }
        }
    }
}
