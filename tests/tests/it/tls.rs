//! A cluster serving TLS on every gRPC link: masters (Raft among them, the
//! client API), chunkservers (registration, orders, the data path), a
//! metalogger and a mount, with certificates of a CA made here; a client
//! without the CA gets nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mfs_tests::cluster::{bin_dir, Cluster};
use mfs_tests::mountpoint::Mount;

use crate::util::{skip_without_fuse, step, wait_for};

/// A CA, and a server certificate it signed for 127.0.0.1 and localhost:
/// the paths of (CA, certificate, key) in `dir`.
fn make_certs(dir: &Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "rmfs test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut server =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    server
        .distinguished_name
        .push(DnType::CommonName, "rmfs test server");
    let key = KeyPair::generate().unwrap();
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    let write = |name: &str, pem: String| -> String {
        let p: PathBuf = dir.join(name);
        std::fs::write(&p, pem).unwrap();
        p.display().to_string()
    };
    (
        write("ca.pem", ca_cert.pem()),
        write("cert.pem", cert.pem()),
        write("key.pem", key.serialize_pem()),
    )
}

fn mfscli(args: &[&str]) -> Output {
    Command::new(bin_dir().join("mfscli"))
        .args(args)
        .env_remove("MFS_TLS_CA_FILE")
        .output()
        .expect("running mfscli")
}

/// `mfscli info --json` over TLS.
fn info(masters: &str, ca: &str) -> Option<serde_json::Value> {
    let out = mfscli(&["-H", masters, "--tls-ca", ca, "info", "--json"]);
    serde_json::from_slice(&out.stdout).ok()
}

/// An mfstools tool over TLS; panics unless it succeeds.
fn tool(name: &str, args: &[&str], ca: &str) {
    let (code, out, err) = crate::tools::tool_env(name, args, &[("MFS_TLS_CA_FILE", ca)]);
    assert_eq!(code, 0, "{name} {args:?}: {out}{err}");
}

/// Waits up to 60 s until `cond` holds of `mfscli info --json` over TLS;
/// panics with `what` and `log` (a log file's text) after.
async fn wait_info(
    masters: &str,
    ca: &str,
    what: &str,
    log: impl Fn() -> String,
    cond: impl Fn(&serde_json::Value) -> bool,
) {
    let t = Instant::now();
    while !info(masters, ca).is_some_and(|i| cond(&i)) {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "{what} not within 60 s; log:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_link_can_run_over_tls() {
    if skip_without_fuse() {
        return;
    }
    let certs = tempfile::tempdir().unwrap();
    let (ca, cert, key) = make_certs(certs.path());
    let env = [
        ("MFS_TLS_CERT_FILE", cert.as_str()),
        ("MFS_TLS_KEY_FILE", key.as_str()),
        ("MFS_TLS_CA_FILE", ca.as_str()),
    ];

    step("3 masters elect a leader over TLS");
    let mut c = Cluster::spawn_all(3, &env).unwrap();
    let masters = c.addrs().join(",");
    let out = mfscli(&[
        "-H",
        &masters,
        "--tls-ca",
        &ca,
        "wait-leader",
        "--timeout",
        "60",
    ]);
    assert!(
        out.status.success(),
        "no leader over TLS: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    step("a client without the CA gets nothing from them");
    let out = mfscli(&["-H", &masters, "--timeout", "2", "info"]);
    assert!(!out.status.success(), "a plain client was answered");

    step("two chunkservers register over TLS");
    c.spawn_chunkserver(1, &[]).unwrap();
    c.spawn_chunkserver(1, &[]).unwrap();
    let cs1_log = c.chunkserver(1).unwrap().dir.join("log");
    wait_info(
        &masters,
        &ca,
        "two chunkservers registered over TLS",
        || std::fs::read_to_string(&cs1_log).unwrap_or_default(),
        |i| {
            i["chunkservers"]
                .as_array()
                .is_some_and(|v| v.iter().filter(|s| s["state"] == "ok").count() == 2)
        },
    )
    .await;

    step("a metalogger joins over TLS and follows the log");
    c.spawn_metalogger(
        100,
        &[
            ("TLS_CERT_FILE", cert.as_str()),
            ("TLS_KEY_FILE", key.as_str()),
            ("TLS_CA_FILE", ca.as_str()),
        ],
    )
    .unwrap();
    wait_info(
        &masters,
        &ca,
        "the metalogger following the log over TLS",
        || c.metalogger(1).unwrap().log(),
        |i| i["metaloggers"][0]["matched_index"].as_u64().unwrap_or(0) > 0,
    )
    .await;

    step("a mount with the CA writes and reads a file of goal 2 (data through the chain)");
    let tlsca = format!("mfstlsca={ca}");
    let m = Mount::start(&c, "mnt", &["-o", &tlsca]).unwrap();
    let root = m.path().display().to_string();
    tool("mfssetgoal", &["2", &root], &ca);
    let f = m.path().join("f");
    let data: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 253) as u8).collect();
    std::fs::write(&f, &data).unwrap();
    assert_eq!(std::fs::read(&f).unwrap(), data);
    let on = |n: usize| c.chunk_files(n).unwrap().len();
    wait_for(20, "a copy on each chunkserver", || {
        on(1) == 1 && on(2) == 1
    });

    step("rm with trash time 0: the masters' delete orders go over TLS");
    tool("mfssettrashtime", &["0", &f.display().to_string()], &ca);
    std::fs::remove_file(&f).unwrap();
    wait_for(30, "both copies deleted", || on(1) == 0 && on(2) == 0);
}
