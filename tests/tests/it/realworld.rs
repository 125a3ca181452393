//! The shared real-workload script (`realworld.sh`: tar, diff, git,
//! sqlite in WAL and rollback modes with concurrent processes, rsync,
//! flock, fcntl locks) on a real mount of a 3-master cluster with goal 2:
//! every step must say OK.
//!
//! The script is found at `$RMFS_REALWORLD_SH`, else at
//! `../shared/tools/realworld.sh` beside the repository; without it (or
//! without root and /dev/fuse) the test says so and passes. Sources are
//! `$RW_INCLUDE_SRC` and `$RW_DOC_SRC` (defaults: /usr/include/linux and
//! /usr/share/doc/git, small enough for a debug build in CI; the script's
//! own defaults, all of /usr/include and /usr/share/doc, suit a release
//! build).

use std::path::PathBuf;
use std::process::Command;

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::tools::ok;
use crate::util::{skip_without_fuse, step};

fn script() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("RMFS_REALWORLD_SH") {
        return Some(PathBuf::from(p));
    }
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/realworld.sh");
    beside.exists().then_some(beside)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realworld_workloads_pass_on_a_mount() {
    if skip_without_fuse() {
        return;
    }
    let Some(script) = script() else {
        eprintln!("skipped: realworld.sh not found (set RMFS_REALWORLD_SH)");
        return;
    };
    let mut c = Cluster::start(3, &[]).await.unwrap();
    c.add_chunkservers(2, 1).await.unwrap();
    let m = Mount::start(&c, "mnt", &[]).unwrap();
    ok("mfssetgoal", &["2", &m.path().display().to_string()]);
    step(&format!("{} on the mount", script.display()));
    let src = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.into());
    let out = Command::new("bash")
        .arg(&script)
        .arg(m.path())
        .env(
            "RW_INCLUDE_SRC",
            src("RW_INCLUDE_SRC", "/usr/include/linux"),
        )
        .env("RW_DOC_SRC", src("RW_DOC_SRC", "/usr/share/doc/git"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    if out.status.code() == Some(2) {
        eprintln!("skipped: realworld.sh could not set up (a missing command?)");
        return;
    }
    assert!(out.status.success(), "realworld.sh failed:\n{text}");
    assert!(
        !text.lines().any(|l| l.contains("FAIL")),
        "a step failed:\n{text}"
    );
}
