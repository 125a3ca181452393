//! Small helpers shared by the tests.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mfs_mount::master::MasterClient;
use mfs_proto::v1::{CreateRequest, Credentials, ReaddirRequest};

pub fn root_cred() -> Credentials {
    Credentials {
        uid: 0,
        gid: 0,
        groups: vec![],
    }
}

pub fn step(s: &str) {
    eprintln!("=== {s}");
}

/// Creates `name` in the root directory, exclusively (a create applied twice
/// would answer EEXIST).
pub fn create_req(name: &str) -> CreateRequest {
    CreateRequest {
        id: None,
        cred: Some(root_cred()),
        parent: 1,
        name: name.as_bytes().to_vec(),
        mode: 0o644,
        umask: 0o022,
        exclusive: true,
    }
}

/// Runs exclusive creates of `p-0`, `p-1`, ... until `stop`; returns the
/// names whose create was acknowledged. Any error fails the test: the client
/// must ride through failovers.
pub fn creator(
    c: MasterClient,
    prefix: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    creator_timed(c, prefix, stop, Arc::default())
}

/// [`creator`] that also notes in `acks` when each create was acknowledged.
pub fn creator_timed(
    c: MasterClient,
    prefix: String,
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Instant>>>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut done = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let name = format!("{prefix}-{i}");
            match c.create(create_req(&name)).await {
                Ok(_) => {
                    done.push(name);
                    acks.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Instant::now());
                }
                Err(e) => panic!("create {name} failed: {e} (errno {})", e.errno()),
            }
            i += 1;
        }
        done
    })
}

/// System calls that took over 50 ms: (start, duration), for stall figures.
pub type Slow = Arc<Mutex<Vec<(Instant, std::time::Duration)>>>;

/// Runs `f`, noting it in `slow` when it took over 50 ms.
pub fn timed<T>(slow: &Slow, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
    let t = Instant::now();
    let r = f();
    let d = t.elapsed();
    if d > std::time::Duration::from_millis(50) {
        slow.lock().unwrap_or_else(|p| p.into_inner()).push((t, d));
    }
    r
}

/// Joins [`creator`] tasks; the names they had acknowledged (none twice).
pub async fn acknowledged(tasks: Vec<tokio::task::JoinHandle<Vec<String>>>) -> BTreeSet<String> {
    let mut acked = BTreeSet::new();
    for t in tasks {
        for n in t.await.unwrap() {
            assert!(acked.insert(n.clone()), "{n} acknowledged twice");
        }
    }
    acked
}

/// Checks that the root directory holds every create in `acked` exactly
/// once, and besides them (and the names in `others`) at most one per
/// client: a create that was applied but whose reply was lost, the last
/// one that client was doing. Returns the listing.
pub async fn check_creates(
    c: &MasterClient,
    acked: &BTreeSet<String>,
    clients: usize,
    others: &[&str],
) -> Vec<(String, u64)> {
    let listing = list_dir(c, 1).await.unwrap();
    let names: BTreeSet<String> = listing.iter().map(|(n, _)| n.clone()).collect();
    assert_eq!(
        names.len(),
        listing.len(),
        "duplicate names in the directory"
    );
    for n in acked {
        assert!(names.contains(n), "acknowledged create {n} is missing");
    }
    let extra: Vec<_> = names
        .difference(acked)
        .filter(|n| !others.contains(&n.as_str()))
        .collect();
    assert!(extra.len() <= clients, "unexpected files: {extra:?}");
    listing
}

/// Every (name, inode) in a directory, through all pages.
pub async fn list_dir(c: &MasterClient, inode: u64) -> anyhow::Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut after = Vec::new();
    loop {
        let r = c
            .readdir(ReaddirRequest {
                cred: Some(root_cred()),
                inode,
                after: after.clone(),
                limit: 500,
                plus: false,
            })
            .await?;
        for e in &r.entries {
            out.push((String::from_utf8_lossy(&e.name).into_owned(), e.inode));
        }
        match r.entries.last() {
            Some(last) if r.more => after = last.name.clone(),
            _ => break,
        }
    }
    Ok(out)
}

/// True (after saying so) when the mount tests cannot run here: they need
/// root and /dev/fuse.
pub fn skip_without_fuse() -> bool {
    if mfs_tests::mountpoint::fuse_available() {
        return false;
    }
    eprintln!("skipped: mounting needs root and /dev/fuse");
    true
}

/// One master, `servers` chunkservers (one disk each) and a mount at
/// `ROOT/mnt`; `None` (said why) when mounting is not possible here.
pub async fn mounted_cluster(
    servers: usize,
) -> Option<(mfs_tests::cluster::Cluster, mfs_tests::mountpoint::Mount)> {
    if skip_without_fuse() {
        return None;
    }
    let mut c = mfs_tests::cluster::Cluster::start(1, &[]).await.unwrap();
    c.add_chunkservers(servers, 1).await.unwrap();
    let m = mfs_tests::mountpoint::Mount::start(&c, "mnt", &[]).unwrap();
    Some((c, m))
}

/// Waits up to `secs` for `cond`, panicking with `what` after.
pub fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !cond() {
        assert!(
            std::time::Instant::now() < until,
            "{what}: not within {secs} s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// Opens (creating if needed) `p` for reading and writing.
pub fn open_rw(p: &std::path::Path) -> std::fs::File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(p)
        .unwrap_or_else(|e| panic!("open {}: {e}", p.display()))
}

/// The master's count of `method` calls (`mfs_rpc_requests_total`, from
/// its Prometheus `/metrics`); 0 before the first call.
pub fn rpc_count(master: &mfs_tests::cluster::Master, method: &str) -> u64 {
    metric(
        master,
        &format!("mfs_rpc_requests_total{{method=\"{method}\"}}"),
    )
}

/// The value of the series `series` (name and labels) in the master's
/// Prometheus `/metrics`; 0 when absent.
pub fn metric(master: &mfs_tests::cluster::Master, series: &str) -> u64 {
    metric_at(&format!("127.0.0.1:{}", master.http_port), series)
}

/// The value of the series `series` in the Prometheus `/metrics` served
/// at `addr`; 0 when absent.
pub fn metric_at(addr: &str, series: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("metrics at {addr}: {e}"));
    // HTTP/1.0: one response, no chunked encoding, then the server closes.
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let series = format!("{series} ");
    text.lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(|v| {
            v.trim()
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("{series}{v}: {e}")) as u64
        })
        .unwrap_or(0)
}

/// Runs `script` with sh as uid/gid `id` (no supplementary groups) in
/// `dir`; whether it succeeded.
pub fn as_user(id: u32, dir: &std::path::Path, script: &str) -> bool {
    use std::os::unix::process::CommandExt;
    std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .uid(id)
        .gid(id)
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
