//! A real `mfsmount -f` process on a directory under a [`Cluster`]'s temp
//! dir. Dropping a [`Mount`] always leaves no mount behind: SIGTERM first,
//! then `fusermount3 -u -z` / `umount -l`, then SIGKILL.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cluster::{bin_dir, Cluster};

/// Can this process mount FUSE file systems (root and a /dev/fuse)?
pub fn fuse_available() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Path::new("/dev/fuse").exists()
}

/// Is `dir` a mount point of a FUSE file system now?
pub fn is_fuse_mounted(dir: &Path) -> bool {
    // Canonicalize the parent only: the mount point itself may be a dead
    // mount, where every access fails.
    let want = match (dir.parent(), dir.file_name()) {
        (Some(p), Some(n)) => p
            .canonicalize()
            .map(|p| p.join(n))
            .unwrap_or_else(|_| dir.to_path_buf()),
        _ => dir.to_path_buf(),
    };
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    text.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        // mountinfo: id parent maj:min root mountpoint opts ... - fstype src
        let fstype = f
            .iter()
            .position(|x| *x == "-")
            .and_then(|i| f.get(i + 1))
            .copied()
            .unwrap_or("");
        f.get(4)
            .is_some_and(|mp| Path::new(&mfs_mount::tools::locate::unescape(mp)) == want)
            && fstype.starts_with("fuse")
    })
}

/// One running mfsmount.
pub struct Mount {
    /// The mount point.
    pub dir: PathBuf,
    /// Its log (stderr of mfsmount).
    pub log: PathBuf,
    child: Option<Child>,
}

impl Mount {
    /// Mounts the cluster's file system at `ROOT/NAME` with `mfsmount -f`
    /// and the extra arguments `args` (e.g. `["-o", "mfsattrcacheto=0"]`);
    /// returns once the mount answers.
    pub fn start(cluster: &Cluster, name: &str, args: &[&str]) -> Result<Mount> {
        Mount::start_with(cluster.root(), &cluster.addrs(), name, args)
    }

    /// [`Mount::start`] given the masters' addresses and the dir to mount
    /// under (`root/name`, log in `root/name.log`).
    pub fn start_with(root: &Path, masters: &[String], name: &str, args: &[&str]) -> Result<Mount> {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        let log = root.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        let bin = bin_dir().join("mfsmount");
        let child = Command::new(&bin)
            .arg(&dir)
            .arg("-f")
            .arg("-H")
            .arg(masters.join(","))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut m = Mount {
            dir,
            log,
            child: Some(child),
        };
        m.wait_mounted(Duration::from_secs(30))?;
        Ok(m)
    }

    fn wait_mounted(&mut self, timeout: Duration) -> Result<()> {
        let t = Instant::now();
        loop {
            if is_fuse_mounted(&self.dir) && std::fs::metadata(&self.dir).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    bail!(
                        "mfsmount exited with {st} before mounting:\n{}",
                        self.log_text()
                    );
                }
            }
            if t.elapsed() > timeout {
                bail!(
                    "mfsmount did not mount within {timeout:?}:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The mount point.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// mfsmount's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// What mfsmount logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (up to `timeout`) for mfsmount to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Result<ExitStatus> {
        let Some(mut c) = self.child.take() else {
            bail!("mfsmount is not running");
        };
        // SAFETY: kill(2) on the pid of a child we own and have not reaped.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(st) = c.try_wait()? {
                return Ok(st);
            }
            if t.elapsed() > timeout {
                let _ = c.kill();
                let _ = c.wait();
                bail!(
                    "mfsmount did not exit within {timeout:?} of SIGTERM:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn force_unmount(&self) {
        if !is_fuse_mounted(&self.dir) {
            return;
        }
        for (cmd, args) in [("fusermount3", &["-u", "-z"][..]), ("umount", &["-l"][..])] {
            let _ = Command::new(cmd)
                .args(args)
                .arg(&self.dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if !is_fuse_mounted(&self.dir) {
                return;
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() && self.terminate(Duration::from_secs(10)).is_err() {
            self.force_unmount();
        }
        self.force_unmount();
        if std::thread::panicking() {
            eprintln!(
                "--- mfsmount log {}:\n{}",
                self.log.display(),
                tail(&self.log_text(), 30)
            );
        }
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
