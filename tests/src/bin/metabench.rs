//! mfs-metabench: metadata operations per second through gRPC.
//!
//! For each cluster size (1 and 3 masters, started here from the binaries in
//! MFS_BIN_DIR, default target/release) and each number of concurrent
//! clients (1, 4, 16), every client gets its own session and directory and
//! runs `--ops` creates, then getattrs, renames and unlinks of those files.
//! Prints ops/s and p50/p99/max latency per operation. `-H` runs against an
//! existing cluster instead.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use mfs_mount::master::{ClientOptions, MasterClient};
use mfs_proto::v1::{CreateRequest, Credentials, MkdirRequest, RenameRequest, UnlinkRequest};
use mfs_tests::cluster::Cluster;

#[derive(Parser)]
#[command(name = "mfs-metabench")]
struct Args {
    /// Use this running cluster (host:port,...) instead of starting clusters.
    #[arg(short = 'H', long)]
    masters: Option<String>,
    /// Cluster sizes to start.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    sizes: Vec<usize>,
    /// Concurrent clients.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    clients: Vec<usize>,
    /// Operations of each kind in total, per run (split across the clients).
    #[arg(long, default_value_t = 8000)]
    ops: usize,
}

fn cred() -> Credentials {
    Credentials {
        uid: 0,
        gid: 0,
        groups: vec![],
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

struct Phase {
    name: &'static str,
    lat: Vec<Duration>,
    wall: Duration,
}

async fn run(addrs: &[String], clients: usize, ops: usize, tag: &str) -> Result<Vec<Phase>> {
    let per = (ops / clients).max(1);
    let mut cls = Vec::new();
    for i in 0..clients {
        let opts = ClientOptions {
            register_session: true,
            session_info: format!("metabench {tag} {i}"),
            overall_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let c = MasterClient::connect(addrs, opts).await?;
        let dir = c
            .mkdir(MkdirRequest {
                id: None,
                cred: Some(cred()),
                parent: 1,
                name: format!("{tag}-c{i}").into_bytes(),
                mode: 0o755,
                umask: 0,
            })
            .await
            .context("mkdir")?;
        cls.push((c, dir.inode));
    }
    let mut phases = Vec::new();
    for name in ["create", "getattr", "rename", "unlink"] {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for (c, dir) in &cls {
            let (c, dir) = (c.clone(), *dir);
            tasks.push(tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per);
                let mut inodes = Vec::new();
                for k in 0..per {
                    let t = Instant::now();
                    match name {
                        "create" => {
                            let a = c
                                .create(CreateRequest {
                                    id: None,
                                    cred: Some(cred()),
                                    parent: dir,
                                    name: format!("f{k}").into_bytes(),
                                    mode: 0o644,
                                    umask: 0,
                                    exclusive: true,
                                })
                                .await?;
                            inodes.push(a.inode);
                        }
                        "getattr" => {
                            c.lookup(&cred(), dir, format!("f{k}").as_bytes()).await?;
                        }
                        "rename" => {
                            c.rename(RenameRequest {
                                id: None,
                                cred: Some(cred()),
                                parent: dir,
                                name: format!("f{k}").into_bytes(),
                                new_parent: dir,
                                new_name: format!("g{k}").into_bytes(),
                                noreplace: false,
                                exchange: false,
                            })
                            .await?;
                        }
                        _ => {
                            c.unlink(UnlinkRequest {
                                id: None,
                                cred: Some(cred()),
                                parent: dir,
                                name: format!("g{k}").into_bytes(),
                            })
                            .await?;
                        }
                    }
                    lat.push(t.elapsed());
                }
                Ok::<_, anyhow::Error>(lat)
            }));
        }
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await??);
        }
        phases.push(Phase {
            name,
            lat,
            wall: start.elapsed(),
        });
    }
    for (c, _) in &cls {
        let _ = c.close_session().await;
    }
    Ok(phases)
}

fn print(label: &str, clients: usize, phases: &mut [Phase]) {
    for p in phases {
        let n = p.lat.len();
        let rate = n as f64 / p.wall.as_secs_f64();
        let p50 = pct(&mut p.lat, 0.5);
        let p99 = pct(&mut p.lat, 0.99);
        let max = pct(&mut p.lat, 1.0);
        println!(
            "{label:<10} {clients:>7} {:<8} {n:>7} {rate:>10.0} {:>9.2} {:>9.2} {:>9.2}",
            p.name,
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            max.as_secs_f64() * 1e3
        );
    }
}

// The clients run on one thread: a reply then wakes its caller on the same
// thread instead of another worker (one client's creates on 3 masters:
// p50 0.48 -> 0.45 ms here), and the other core is left to the cluster.
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args = Args::parse();
    if std::env::var("MFS_BIN_DIR").is_err() {
        let rel = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release");
        std::env::set_var("MFS_BIN_DIR", rel);
    }
    println!(
        "ops per run: {} of each kind; MFS_BIN_DIR={}",
        args.ops,
        std::env::var("MFS_BIN_DIR").unwrap_or_default()
    );
    println!(
        "{:<10} {:>7} {:<8} {:>7} {:>10} {:>9} {:>9} {:>9}",
        "cluster", "clients", "op", "count", "ops/s", "p50 ms", "p99 ms", "max ms"
    );
    if let Some(m) = &args.masters {
        let addrs = mfs_mount::master::parse_masters(m)?;
        for &n in &args.clients {
            let mut ph = run(&addrs, n, args.ops, &format!("b{n}-{}", std::process::id())).await?;
            print("given", n, &mut ph);
        }
        return Ok(());
    }
    for &size in &args.sizes {
        let cluster = Cluster::start(size, &[("RUST_LOG", "warn")]).await?;
        for &n in &args.clients {
            let mut ph = run(&cluster.addrs(), n, args.ops, &format!("b{n}")).await?;
            print(
                &format!("{size} master{}", if size > 1 { "s" } else { "" }),
                n,
                &mut ph,
            );
        }
        drop(cluster);
    }
    Ok(())
}
