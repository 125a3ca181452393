//! Going to the background only once the mount answers: the foreground
//! process runs a copy of itself with `--daemon-child` in a new session,
//! relays what the copy writes to stderr, and exits when the copy says the
//! file system is mounted (0) or ends (its exit code). The copy then points
//! its standard streams at /dev/null.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitCode, Stdio};

/// The line the background copy writes when the mount is up.
pub const READY: &str = "mfsmount: ready";

/// Runs the background copy with `args` (the command line without argv[0],
/// already in mfsmount's own form) and waits for its verdict.
pub fn run_in_background(args: &[String]) -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "mfsmount: cannot find its own executable to go to the background ({e}); use -f"
            );
            return ExitCode::from(1);
        }
    };
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .arg("--daemon-child")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: setsid(2) is async-signal-safe and touches no memory; it
    // detaches the copy from the terminal and its process group.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mfsmount: cannot start the background process: {e}; use -f");
            return ExitCode::from(1);
        }
    };
    if let Some(err) = child.stderr.take() {
        let mut stderr = std::io::stderr();
        for line in BufReader::new(err).lines() {
            let Ok(line) = line else { break };
            if line.trim_end().ends_with(READY) {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(stderr, "{line}");
        }
    }
    match child.wait() {
        Ok(st) if st.success() => ExitCode::SUCCESS,
        Ok(st) => ExitCode::from(st.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1)),
        Err(e) => {
            eprintln!("mfsmount: lost the background process: {e}");
            ExitCode::from(1)
        }
    }
}

/// In the background copy: tells the waiting parent the mount is up, then
/// points stdin, stdout and stderr at /dev/null (the parent stops reading).
pub fn report_ready() {
    let mut err = std::io::stderr();
    let _ = writeln!(err, "{READY}");
    let _ = err.flush();
    // SAFETY: plain open(2)/dup2(2)/close(2) on descriptors this process owns.
    unsafe {
        let fd = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            libc::dup2(fd, 0);
            libc::dup2(fd, 1);
            libc::dup2(fd, 2);
            if fd > 2 {
                libc::close(fd);
            }
        }
    }
}
