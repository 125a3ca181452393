//! Daemons (masters, chunkservers, metaloggers) are started by a helper
//! process, not by the test process.
//!
//! A test process holds files open on its mounts. A child forked from it
//! inherits those descriptors, and its `exec` closes them (they are
//! close-on-exec): each close is a FUSE flush, which the mount answers only
//! once the cluster commits the file's writes. A master started to give
//! the cluster its quorum back would wait in its own `exec` for the quorum
//! it is to restore, and the test with it (seen as a restarted master that
//! logs nothing at all, and a test process that `ps` cannot read).
//!
//! The helper is a shell started before the process makes any mount (from
//! [`crate::cluster::bin_dir`], which every cluster and mount calls first),
//! so it holds no file on a mount; it starts each daemon as its own child.
//! A [`Proc`] follows the daemon by a pidfd (it is not the test's child).
//! (Chunkservers and metaloggers would not stall so, their restarts gate
//! no flush, but one way to start a daemon is simpler than two.)

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};

struct Helper {
    // Kept so the shell lives as long as the process (it ends at EOF).
    _shell: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

static HELPER: OnceLock<Mutex<Option<Helper>>> = OnceLock::new();

/// Starts the helper (once; call before any mount exists).
pub(crate) fn init() {
    HELPER.get_or_init(|| {
        let helper = start_helper()
            .map_err(|e| eprintln!("daemons start as this process's children: {e:#}"))
            .ok();
        Mutex::new(helper)
    });
}

fn start_helper() -> Result<Helper> {
    // Each line is a command to run in the background; the answer is its
    // pid (the command `exec`s, so the pid is the program's).
    let script = "while IFS= read -r line; do eval \"$line\" & echo $!; done";
    let mut shell = Command::new("bash")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the helper shell that starts daemons")?;
    let (Some(to), Some(from)) = (shell.stdin.take(), shell.stdout.take()) else {
        bail!("the helper shell has no pipes");
    };
    Ok(Helper {
        _shell: shell,
        to,
        from: BufReader::new(from),
    })
}

/// `p` as an argument (UTF-8, as every path the harness makes).
pub(crate) fn path_arg(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// The program and first arguments that run `bin` in network namespace
/// `netns` (`ip netns exec`), or `bin` itself without one.
pub(crate) fn in_netns(netns: Option<&str>, bin: &Path) -> Result<(PathBuf, Vec<String>)> {
    Ok(match netns {
        Some(ns) => (
            PathBuf::from("ip"),
            vec!["netns".into(), "exec".into(), ns.into(), path_arg(bin)?],
        ),
        None => (bin.to_owned(), Vec::new()),
    })
}

/// `s` as one shell word.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// What to start: the program, its arguments, extra environment, and the
/// file its output is appended to.
pub struct Spec<'a> {
    pub program: &'a Path,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub log: &'a Path,
}

/// Starts `spec` through the helper (or, without one, as the test's own
/// child, as before).
pub fn spawn(spec: &Spec<'_>) -> Result<Proc> {
    init();
    let helper = HELPER.get_or_init(|| Mutex::new(None));
    let mut guard = helper.lock().unwrap_or_else(|p| p.into_inner());
    let Some(h) = guard.as_mut() else {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.log)?;
        let child = Command::new(spec.program)
            .args(&spec.args)
            .envs(spec.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", spec.program.display()))?;
        return Ok(Proc::Child(child));
    };
    let mut line = String::from("exec env");
    for (k, v) in &spec.env {
        line.push(' ');
        line.push_str(&quote(&format!("{k}={v}")));
    }
    line.push(' ');
    line.push_str(&quote(&path_arg(spec.program)?));
    for a in &spec.args {
        line.push(' ');
        line.push_str(&quote(a));
    }
    line.push_str(&format!(
        " </dev/null >>{} 2>&1\n",
        quote(&path_arg(spec.log)?)
    ));
    h.to.write_all(line.as_bytes())?;
    h.to.flush()?;
    let mut answer = String::new();
    h.from.read_line(&mut answer)?;
    let pid: i32 = answer
        .trim()
        .parse()
        .with_context(|| format!("the helper shell answered {answer:?}"))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        bail!("pidfd_open({pid}): {}", std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor that nothing else owns.
    let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    Ok(Proc::Helped { pid, pidfd })
}

/// A started daemon.
#[derive(Debug)]
pub enum Proc {
    /// The test process's own child (no helper).
    Child(Child),
    /// The helper's child, followed by its pidfd.
    Helped { pid: i32, pidfd: OwnedFd },
}

impl Proc {
    pub fn id(&self) -> u32 {
        match self {
            Proc::Child(c) => c.id(),
            Proc::Helped { pid, .. } => *pid as u32,
        }
    }

    /// Sends `signal`.
    pub fn signal(&self, signal: i32) {
        // SAFETY: plain kill(2) on a pid this handle started (its pidfd
        // keeps the pid from being reused while it is held).
        unsafe { libc::kill(self.id() as i32, signal) };
    }

    /// SIGKILL.
    pub fn kill(&mut self) -> std::io::Result<()> {
        match self {
            Proc::Child(c) => c.kill(),
            Proc::Helped { .. } => {
                self.signal(libc::SIGKILL);
                Ok(())
            }
        }
    }

    /// Whether it exited, waiting at most `wait`.
    fn exited_within(&mut self, wait: Duration) -> std::io::Result<bool> {
        match self {
            Proc::Child(c) => {
                let t = std::time::Instant::now();
                loop {
                    if c.try_wait()?.is_some() {
                        return Ok(true);
                    }
                    if t.elapsed() >= wait {
                        return Ok(false);
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            Proc::Helped { pidfd, .. } => {
                let mut p = libc::pollfd {
                    fd: pidfd.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
                // SAFETY: one valid pollfd; a pidfd is readable once the
                // process has exited.
                let n = unsafe { libc::poll(&mut p, 1, ms) };
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(n > 0)
            }
        }
    }

    /// Some(()) once it exited.
    pub fn try_wait(&mut self) -> std::io::Result<Option<()>> {
        Ok(self.exited_within(Duration::ZERO)?.then_some(()))
    }

    /// Waits for the exit.
    pub fn wait(&mut self) -> std::io::Result<()> {
        while !self.exited_within(Duration::from_secs(1))? {}
        Ok(())
    }
}
