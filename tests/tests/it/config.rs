//! A master refuses bad configuration and foreign data dirs, and says why.

use std::process::Command;
use std::time::Duration;

use mfs_tests::cluster::{bin_dir, free_port, Cluster};

use crate::util::step;

fn run_master(args: &[&str]) -> (bool, String) {
    let out = Command::new(bin_dir().join("mfsmaster"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run mfsmaster");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

/// Unknown key and bad value are refused with the key and the line.
#[test]
fn bad_config_names_key_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mfsmaster.cfg");
    std::fs::write(&cfg, "# test\nDATA_PATH = /tmp/x\nNO_SUCH_KEY = 1\n").unwrap();
    let (ok, msg) = run_master(&["-c", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(msg.contains("NO_SUCH_KEY") && msg.contains(":3"), "{msg}");

    std::fs::write(&cfg, "LISTEN_PORT = lots\n").unwrap();
    let (ok, msg) = run_master(&["-c", cfg.to_str().unwrap()]);
    assert!(!ok);
    assert!(msg.contains("LISTEN_PORT") && msg.contains(":1"), "{msg}");

    let (ok, msg) = run_master(&["--peers", "1=127.0.0.1:1,1=127.0.0.1:2"]);
    assert!(!ok);
    assert!(msg.contains("twice"), "{msg}");
}

/// `--print-config` shows the MooseFS-style keys with the file's values.
#[test]
fn print_config_merges_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mfsmaster.cfg");
    std::fs::write(&cfg, "MATOCL_LISTEN_PORT = 9999\n").unwrap();
    let (ok, msg) = run_master(&["-c", cfg.to_str().unwrap(), "--print-config"]);
    assert!(ok, "{msg}");
    assert!(msg.contains("LISTEN_PORT = 9999"), "{msg}");
    assert!(msg.contains("SESSION_TIMEOUT = 60"), "{msg}");
}

/// A data dir written by master 1 is refused by a master started as 2; a
/// second master with an id already running in the cluster is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_data_dir_and_duplicate_id_refused() {
    step("a one-master cluster");
    let mut c = Cluster::start(1, &[]).await.unwrap();
    let data = c.master(1).unwrap().dir.join("data");
    c.stop(1).unwrap();

    step("its data dir opened as master 2");
    let p = free_port().to_string();
    let (ok, msg) = run_master(&[
        "--id",
        "2",
        "--listen-host",
        "127.0.0.1",
        "-p",
        &p,
        "--http-listen",
        "",
        "-d",
        data.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        msg.contains('1') && msg.contains('2') && msg.to_lowercase().contains("master"),
        "{msg}"
    );

    step("a second master claiming id 1 while master 1 runs");
    c.restart(1).unwrap();
    c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let p = free_port().to_string();
    let peers = format!("1={},2=127.0.0.1:{p}", c.master(1).unwrap().addr());
    let (ok, msg) = run_master(&[
        "--id",
        "2",
        "--listen-host",
        "127.0.0.1",
        "-p",
        &c.master(1).unwrap().port.to_string(),
        "--http-listen",
        "",
        "-d",
        other.path().to_str().unwrap(),
        "--peers",
        &peers,
    ]);
    assert!(!ok, "{msg}");
    let (ok2, msg2) = run_master(&[
        "--id",
        "1",
        "--listen-host",
        "127.0.0.1",
        "-p",
        &p,
        "--http-listen",
        "",
        "-d",
        other.path().to_str().unwrap(),
        "--peers",
        &format!("1=127.0.0.1:{p},2={}", c.master(1).unwrap().addr()),
    ]);
    assert!(!ok2);
    assert!(msg2.contains("also has MASTER_ID 1"), "{msg2}");
}
