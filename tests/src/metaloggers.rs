//! Real `mfsmetalogger` processes beside a [`Cluster`]'s masters, and the
//! restore of a master from a metalogger's data.
//!
//! Each metalogger gets a free port, a dir with its config and log, and its
//! DATA_PATH in `DIR/data` (changelog_ml.N.mfs, metadata_ml.mfs, raft/).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::cluster::{bin_dir, free_port, Cluster};

pub struct Metalogger {
    /// 1-based number in the cluster helper.
    pub num: usize,
    /// Its Raft node id (METALOGGER_ID).
    pub id: u64,
    pub port: u16,
    pub dir: PathBuf,
    /// Extra settings (`KEY = VALUE` lines of its config).
    pub settings: Vec<(String, String)>,
    pub child: Option<crate::spawner::Proc>,
}

impl Metalogger {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
    /// Its DATA_PATH.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
    fn write_config(&self, masters: &str) -> Result<PathBuf> {
        let mut cfg = format!(
            "MASTER_HOST = {masters}\nDATA_PATH = {}\nMETALOGGER_ID = {}\nLISTEN_HOST = 127.0.0.1\n\
             LISTEN_PORT = {}\nHTTP_LISTEN =\n",
            self.data_dir().display(),
            self.id,
            self.port
        );
        for (k, v) in &self.settings {
            cfg.push_str(&format!("{k} = {v}\n"));
        }
        let path = self.dir.join("mfsmetalogger.cfg");
        std::fs::write(&path, cfg)?;
        Ok(path)
    }
}

/// A process killed (SIGKILL) and reaped when dropped.
pub struct Spawned(pub crate::spawner::Proc);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Cluster {
    /// Adds and starts a metalogger with node id `id` and extra config
    /// `settings`; waits until the leader lists it as a learner. Returns its
    /// number.
    pub async fn add_metalogger(&mut self, id: u64, settings: &[(&str, &str)]) -> Result<usize> {
        let num = self.spawn_metalogger(id, settings)?;
        let t = Instant::now();
        loop {
            if let Ok(info) = self.cluster_info().await {
                if info.members.iter().any(|m| m.id == id && !m.voter) {
                    return Ok(num);
                }
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!(
                    "metalogger {num} did not join within 30 s; its log:\n{}",
                    self.metalogger(num)?.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Adds and starts a metalogger as [`Cluster::add_metalogger`] does,
    /// without waiting for it to join; returns its number.
    pub fn spawn_metalogger(&mut self, id: u64, settings: &[(&str, &str)]) -> Result<usize> {
        let num = self.metaloggers.len() + 1;
        let dir = self.root().join(format!("metalogger{num}"));
        std::fs::create_dir_all(&dir)?;
        self.metaloggers.push(Metalogger {
            num,
            id,
            port: free_port(),
            dir,
            settings: settings
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        });
        self.start_metalogger(num)?;
        Ok(num)
    }

    pub fn metalogger(&self, num: usize) -> Result<&Metalogger> {
        self.metaloggers
            .get(num.wrapping_sub(1))
            .ok_or_else(|| anyhow!("no metalogger {num}"))
    }

    fn metalogger_mut(&mut self, num: usize) -> Result<&mut Metalogger> {
        self.metaloggers
            .get_mut(num.wrapping_sub(1))
            .ok_or_else(|| anyhow!("no metalogger {num}"))
    }

    /// Starts (or restarts) metalogger `num` in the foreground.
    pub fn start_metalogger(&mut self, num: usize) -> Result<()> {
        let masters = self.addrs().join(",");
        let bin = bin_dir().join("mfsmetalogger");
        let ml = self.metalogger_mut(num)?;
        if ml.child.is_some() {
            bail!("metalogger {num} runs already");
        }
        let cfg = ml.write_config(&masters)?;
        let log = ml.dir.join("log");
        let spec = crate::spawner::Spec {
            program: &bin,
            args: vec!["-c".into(), crate::spawner::path_arg(&cfg)?],
            env: vec![("RUST_LOG".into(), "info,openraft=error".into())],
            log: &log,
        };
        let child =
            crate::spawner::spawn(&spec).with_context(|| format!("starting {}", bin.display()))?;
        ml.child = Some(child);
        Ok(())
    }

    /// SIGKILL metalogger `num`, and reap it.
    pub fn kill_metalogger(&mut self, num: usize) -> Result<()> {
        let ml = self.metalogger_mut(num)?;
        if let Some(mut c) = ml.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        Ok(())
    }

    /// Runs `mfsmetalogger restore` from metalogger `num`'s data into `to`,
    /// for a master `id` at `127.0.0.1:port`; returns its standard output.
    pub fn restore_from_metalogger(
        &self,
        num: usize,
        to: &Path,
        id: u64,
        port: u16,
    ) -> Result<String> {
        restore(&self.metalogger(num)?.data_dir(), to, id, port)
    }
}

/// Runs `mfsmetalogger restore --from FROM --to TO`; returns its output or
/// fails with it.
pub fn restore(from: &Path, to: &Path, id: u64, port: u16) -> Result<String> {
    let out = Command::new(bin_dir().join("mfsmetalogger"))
        .arg("restore")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(to)
        .arg("--id")
        .arg(id.to_string())
        .arg("--advertise")
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .context("running mfsmetalogger restore")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("mfsmetalogger restore failed ({}):\n{text}", out.status);
    }
    Ok(text)
}

/// Starts `mfsmaster` on a restored data dir `dir` as master `id` on
/// 127.0.0.1:`port` (no peers: the dir says who the members are); its log
/// goes to `log`.
pub fn start_restored_master(dir: &Path, id: u64, port: u16, log: &Path) -> Result<Spawned> {
    let cfg = dir.with_extension("cfg");
    std::fs::write(&cfg, "")?;
    let spec = crate::spawner::Spec {
        program: &bin_dir().join("mfsmaster"),
        args: vec![
            "-c".into(),
            crate::spawner::path_arg(&cfg)?,
            "--id".into(),
            id.to_string(),
            "--listen-host".into(),
            "127.0.0.1".into(),
            "--listen-port".into(),
            port.to_string(),
            "--http-listen".into(),
            String::new(),
            "--data-path".into(),
            crate::spawner::path_arg(dir)?,
        ],
        env: vec![("RUST_LOG".into(), "info,openraft=error".into())],
        log,
    };
    let child = crate::spawner::spawn(&spec).context("starting mfsmaster on the restored dir")?;
    Ok(Spawned(child))
}
