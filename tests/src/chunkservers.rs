//! Real `mfschunkserver` processes beside a [`Cluster`]'s masters.
//!
//! Each chunkserver gets a free port, a dir with its config, its `mfshdd.cfg`
//! and its disks (plain directories under the cluster's temp dir).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use mfs_proto::v1::ClusterInfoReply;

use crate::cluster::{bin_dir, free_port, Cluster};

pub struct Chunkserver {
    /// 1-based number in the cluster helper (not the id the leader gives).
    pub num: usize,
    /// The address it listens on: 127.0.0.1, or its own in the cluster's
    /// [`crate::netlab::Netlab`].
    pub host: String,
    /// The network namespace it runs in, if any.
    pub netns: Option<String>,
    pub port: u16,
    pub dir: PathBuf,
    /// Disk dirs; a disk whose path starts with `*` in `mfshdd.cfg` is
    /// marked for removal (see [`Cluster::mark_disk_for_removal`]).
    pub disks: Vec<PathBuf>,
    pub marked: Vec<bool>,
    pub child: Option<crate::spawner::Proc>,
    /// `MFS_*` settings of this chunkserver alone, over the cluster's
    /// [`Cluster::env`] (which every chunkserver gets too).
    pub env: Vec<(String, String)>,
}

impl Chunkserver {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }
    fn write_config(&self, masters: &str) -> Result<PathBuf> {
        let hdd: String = self
            .disks
            .iter()
            .zip(&self.marked)
            .map(|(d, m)| format!("{}{}\n", if *m { "*" } else { "" }, d.display()))
            .collect();
        let hdd_path = self.dir.join("mfshdd.cfg");
        std::fs::write(&hdd_path, hdd)?;
        let cfg = format!(
            "MASTER_HOST = {masters}\nDATA_PATH = {}\nHDD_CONF_FILENAME = {}\n\
             CSSERV_LISTEN_HOST = {}\nCSSERV_LISTEN_PORT = {}\nHTTP_LISTEN =\n\
             HDD_TEST_FREQ = 1\n",
            self.dir.join("data").display(),
            hdd_path.display(),
            self.host,
            self.port
        );
        let path = self.dir.join("mfschunkserver.cfg");
        std::fs::write(&path, cfg)?;
        Ok(path)
    }
}

impl Cluster {
    /// Adds and starts `n` chunkservers with `disks` disks each, and waits
    /// until the leader lists all of the cluster's chunkservers.
    pub async fn add_chunkservers(&mut self, n: usize, disks: usize) -> Result<()> {
        for _ in 0..n {
            self.spawn_chunkserver(disks, &[])?;
        }
        let want = self.chunkservers.len();
        // Generous: a loaded 2-core machine runs many tests at once.
        self.wait_chunkservers(want, Duration::from_secs(60)).await
    }

    /// Adds and starts one chunkserver with `disks` disks and settings
    /// `env` of its own, without waiting for it to register; returns its
    /// number.
    pub fn spawn_chunkserver(&mut self, disks: usize, env: &[(&str, &str)]) -> Result<usize> {
        let num = self.chunkservers.len() + 1;
        let dir = self.root().join(format!("chunk{num}"));
        let mut ds = Vec::new();
        for d in 0..disks {
            let p = dir.join(format!("disk{}", d + 1));
            std::fs::create_dir_all(&p)?;
            ds.push(p);
        }
        std::fs::create_dir_all(dir.join("data"))?;
        // In a netlab, chunkserver `num` is host `num`.
        let (host, netns) = match &self.netlab {
            Some(l) if self.masters.iter().all(|m| m.netns.is_none()) => {
                (l.addr(num), Some(l.netns(num).to_string()))
            }
            _ => ("127.0.0.1".to_string(), None),
        };
        self.chunkservers.push(Chunkserver {
            num,
            host,
            netns,
            port: free_port(),
            dir,
            marked: vec![false; ds.len()],
            disks: ds,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        });
        self.start_chunkserver(num)?;
        Ok(num)
    }

    pub fn chunkserver(&self, num: usize) -> Result<&Chunkserver> {
        self.chunkservers
            .get(num.wrapping_sub(1))
            .ok_or_else(|| anyhow!("no chunkserver {num}"))
    }

    fn chunkserver_mut(&mut self, num: usize) -> Result<&mut Chunkserver> {
        self.chunkservers
            .get_mut(num.wrapping_sub(1))
            .ok_or_else(|| anyhow!("no chunkserver {num}"))
    }

    /// Starts (or restarts) chunkserver `num` in the foreground.
    pub fn start_chunkserver(&mut self, num: usize) -> Result<()> {
        let masters = self.addrs().join(",");
        let bin = bin_dir().join("mfschunkserver");
        let cluster_env = self.env.clone();
        let cs = self.chunkserver_mut(num)?;
        if cs.child.is_some() {
            bail!("chunkserver {num} runs already");
        }
        let cfg = cs.write_config(&masters)?;
        let (program, mut args) = crate::spawner::in_netns(cs.netns.as_deref(), &bin)?;
        args.extend(["-c".into(), crate::spawner::path_arg(&cfg)?]);
        let mut env = vec![("RUST_LOG".to_string(), "info".to_string())];
        env.extend(cluster_env.iter().chain(&cs.env).cloned());
        let log = cs.dir.join("log");
        let spec = crate::spawner::Spec {
            program: &program,
            args,
            env,
            log: &log,
        };
        let child =
            crate::spawner::spawn(&spec).with_context(|| format!("starting {}", bin.display()))?;
        cs.child = Some(child);
        Ok(())
    }

    /// SIGKILL chunkserver `num`, and reap it.
    pub fn kill_chunkserver(&mut self, num: usize) -> Result<()> {
        let cs = self.chunkserver_mut(num)?;
        if let Some(mut c) = cs.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// Marks disk `disk` (0-based) of chunkserver `num` with `*` in its
    /// `mfshdd.cfg` and restarts the chunkserver so it reads it.
    pub async fn mark_disk_for_removal(&mut self, num: usize, disk: usize) -> Result<()> {
        self.kill_chunkserver(num)?;
        let cs = self.chunkserver_mut(num)?;
        let m = cs
            .marked
            .get_mut(disk)
            .ok_or_else(|| anyhow!("chunkserver {num} has no disk {disk}"))?;
        *m = true;
        self.start_chunkserver(num)
    }

    /// Waits until the leader lists `n` chunkservers in state "ok".
    pub async fn wait_chunkservers(&self, n: usize, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            if let Ok(info) = self.cluster_info().await {
                let ok = info.chunkservers.iter().filter(|c| c.state == "ok").count();
                if ok >= n {
                    return Ok(());
                }
            }
            if t.elapsed() > timeout {
                let logs: String = self
                    .chunkservers
                    .iter()
                    .map(|c| {
                        format!(
                            "\n--- chunk{} ({}) log:\n{}",
                            c.num,
                            process_state(c.pid()),
                            tail(&c.dir.join("log"))
                        )
                    })
                    .collect();
                bail!("{n} chunkservers did not register within {timeout:?}{logs}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// ClusterInfo from the leader.
    pub async fn cluster_info(&self) -> Result<ClusterInfoReply> {
        Ok(self.admin().await?.cluster_info().await?)
    }

    /// Waits until the leader reports no missing, undergoal, overgoal or
    /// stale chunk; returns the last health seen on timeout as an error.
    pub async fn wait_chunks_at_goal(&self, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        let mut last = None;
        loop {
            if let Ok(info) = self.cluster_info().await {
                if let Some(h) = &info.chunk_health {
                    if h.missing == 0 && h.undergoal == 0 && h.overgoal == 0 && h.stale == 0 {
                        return Ok(());
                    }
                }
                last = info.chunk_health;
            }
            if t.elapsed() > timeout {
                bail!("chunks not at goal within {timeout:?}: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Paths of every chunk file of chunkserver `num` (all its disks).
    pub fn chunk_files(&self, num: usize) -> Result<Vec<PathBuf>> {
        let cs = self.chunkserver(num)?;
        let mut out = Vec::new();
        for d in &cs.disks {
            walk_chunk_files(d, &mut out);
        }
        out.sort();
        Ok(out)
    }
}

fn walk_chunk_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk_chunk_files(&p, out);
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("chunk_") && n.ends_with(".mfs"))
        {
            out.push(p);
        }
    }
}

fn tail(path: &std::path::Path) -> String {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// What the kernel says of process `pid` ("State: S (sleeping)"), for
/// failure reports.
pub fn process_state(pid: Option<u32>) -> String {
    let Some(pid) = pid else {
        return "not started".into();
    };
    match std::fs::read_to_string(format!("/proc/{pid}/status")) {
        Ok(s) => {
            let state = s
                .lines()
                .find(|l| l.starts_with("State:"))
                .map(|l| format!("pid {pid}, {}", l.trim()))
                .unwrap_or_else(|| format!("pid {pid}"));
            format!("{state}, {}", where_threads_wait(pid))
        }
        Err(_) => format!("pid {pid} exited"),
    }
}

/// Where each thread of `pid` waits in the kernel (`wchan`, with the
/// thread's name) and the first thread's kernel stack: for a process that
/// answers nothing, whether it waits on a lock, a disk or the network.
fn where_threads_wait(pid: u32) -> String {
    let mut waits = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let dir = t.path();
            let read = |f: &str| {
                std::fs::read_to_string(dir.join(f))
                    .unwrap_or_default()
                    .trim()
                    .to_string()
            };
            waits.push(format!("{}:{}", read("comm"), read("wchan")));
        }
    }
    waits.sort();
    let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
    let stack: Vec<&str> = stack.lines().take(6).collect();
    format!(
        "{} threads waiting in [{}]; stack: {}{}",
        waits.len(),
        waits.join(" "),
        stack.join(" <- "),
        user_stacks(pid)
    )
}

/// Every thread's stack as gdb shows it, when gdb is there (a few lines
/// each; nothing otherwise).
fn user_stacks(pid: u32) -> String {
    let out = std::process::Command::new("timeout")
        .args(["20", "gdb", "-batch", "-nx", "-p"])
        .arg(pid.to_string())
        .args(["-ex", "thread apply all bt 8"])
        .stdin(std::process::Stdio::null())
        .output();
    let Ok(out) = out else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let frames: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with('#') || l.starts_with("Thread "))
        .take(80)
        .collect();
    if frames.is_empty() {
        String::new()
    } else {
        format!("\n{}", frames.join("\n"))
    }
}
