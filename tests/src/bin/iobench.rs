//! mfs-iobench: data throughput through the client library (`FileIo`),
//! against a running cluster.
//!
//! Makes a fresh directory under the root, sets its goal, creates one file
//! in it, writes `--size-mib` sequentially in `--block-kib` requests with
//! `--depth` in flight, commits (flush + fsync), reads it back sequentially
//! (a new `FileIo`, so no cached locations) checking each block's CRC32,
//! then makes `--random-reads` 4 KiB reads at random offsets with
//! `--concurrency` in flight, checking their content too. Prints MB/s,
//! ops/s and p50/p99 latency. A benchmark that prints figures, not a test.
//!
//! ```text
//! deploy/local-cluster.sh up --dir /tmp/c
//! mfs-iobench -H "$(cat /tmp/c/masters)" --size-mib 1024 --goal 2 --random-reads 10000
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use futures::stream::{self, StreamExt, TryStreamExt};
use mfs_mount::io::{Bytes, FileIo, IoOptions};
use mfs_mount::master::{ClientOptions, MasterClient};
use mfs_proto::v1::{
    CreateRequest, Credentials, MkdirRequest, ReleaseRequest, SetGoalRequest, UnlinkRequest,
};

#[derive(Parser)]
#[command(
    name = "mfs-iobench",
    about = "Sequential and random I/O through the rmfs client library"
)]
struct Args {
    /// Masters (host:port,...); default: $MFS_MASTERS, else 127.0.0.1:9421.
    #[arg(short = 'H', long)]
    masters: Option<String>,
    /// Bytes to write and read back, in MiB.
    #[arg(long, default_value_t = 1024)]
    size_mib: u64,
    /// Goal (copies) of the test directory.
    #[arg(long, default_value_t = 2)]
    goal: u32,
    /// Size of each sequential request, in KiB.
    #[arg(long, default_value_t = 4096)]
    block_kib: u64,
    /// Sequential requests in flight.
    #[arg(long, default_value_t = 4)]
    depth: usize,
    /// Largest piece the library sends to a chunkserver, in KiB.
    #[arg(long, default_value_t = 4096)]
    max_request_kib: u32,
    /// Pieces of one request in flight inside the library.
    #[arg(long, default_value_t = 8)]
    parallelism: usize,
    /// Random 4 KiB reads after the sequential pass.
    #[arg(long, default_value_t = 10_000)]
    random_reads: usize,
    /// Random reads in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Keep the file and directory afterwards.
    #[arg(long)]
    keep: bool,
}

fn root() -> Credentials {
    Credentials {
        uid: 0,
        gid: 0,
        groups: vec![],
    }
}

/// The content of every block: one of a few pseudo-random patterns, with
/// the block number stamped in its first 8 bytes (so a block read from the
/// wrong place does not pass the check).
struct Content {
    patterns: Vec<Arc<Vec<u8>>>,
    block: usize,
}

impl Content {
    fn new(block: usize) -> Content {
        let patterns = (0..4u64)
            .map(|seed| {
                let mut x =
                    0x9E37_79B9_7F4A_7C15u64 ^ (seed + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
                let mut v = Vec::with_capacity(block + 8);
                while v.len() < block {
                    // xorshift64*
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
                }
                v.truncate(block);
                Arc::new(v)
            })
            .collect();
        Content { patterns, block }
    }

    fn block(&self, n: u64) -> Vec<u8> {
        let mut b = self.patterns[(n % self.patterns.len() as u64) as usize].to_vec();
        let stamp = n.to_le_bytes();
        let k = stamp.len().min(b.len());
        b[..k].copy_from_slice(&stamp[..k]);
        b
    }

    /// The expected bytes at [offset, offset + len) of the file.
    fn range(&self, offset: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut at = offset;
        while out.len() < len {
            let n = at / self.block as u64;
            let inside = (at % self.block as u64) as usize;
            // The block's pattern with its stamp, without copying the
            // whole block (a random read checks 4 KiB of a 4 MiB block).
            let pattern = &self.patterns[(n % self.patterns.len() as u64) as usize];
            let take = (self.block - inside).min(len - out.len());
            let from = out.len();
            out.extend_from_slice(&pattern[inside..inside + take]);
            let stamp = n.to_le_bytes();
            for (i, byte) in stamp.iter().enumerate().take(self.block) {
                if (inside..inside + take).contains(&i) {
                    out[from + i - inside] = *byte;
                }
            }
            at += take as u64;
        }
        out
    }
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn mbps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn io_options(a: &Args) -> IoOptions {
    IoOptions {
        max_request: a.max_request_kib.saturating_mul(1024),
        parallelism: a.parallelism,
        ..IoOptions::default()
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    // As mfsmount does: large buffers stay on the heap between requests.
    mfs_mount::io::tune_allocator();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(a))
}

async fn run(a: Args) -> Result<()> {
    if a.size_mib == 0 || a.block_kib == 0 || a.depth == 0 || a.concurrency == 0 {
        bail!("--size-mib, --block-kib, --depth and --concurrency must be at least 1");
    }
    let block = (a.block_kib * 1024) as usize;
    let size = a.size_mib << 20;
    let blocks = size.div_ceil(block as u64);
    let masters = mfs_mount::master::masters_from_arg_or_env(a.masters.as_deref())?;
    let copts = ClientOptions {
        register_session: true,
        session_info: format!("mfs-iobench pid {}", std::process::id()),
        overall_timeout: Some(Duration::from_secs(60)),
        ..ClientOptions::default()
    };
    let master = MasterClient::connect(&masters, copts)
        .await
        .context("connecting to the masters")?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let dir_name = format!("iobench-{}-{}", now.as_secs(), std::process::id());
    let dir = master
        .mkdir(MkdirRequest {
            id: None,
            cred: Some(root()),
            parent: 1,
            name: dir_name.clone().into_bytes(),
            mode: 0o755,
            umask: 0,
        })
        .await
        .context("mkdir of the test directory")?;
    master
        .set_goal(SetGoalRequest {
            id: None,
            cred: Some(root()),
            inode: dir.inode,
            goal: a.goal,
            recursive: false,
        })
        .await
        .context("SetGoal on the test directory")?;
    let file = master
        .create(CreateRequest {
            id: None,
            cred: Some(root()),
            parent: dir.inode,
            name: b"data".to_vec(),
            mode: 0o644,
            umask: 0,
            exclusive: true,
        })
        .await
        .context("create of the test file")?;
    let inode = file.inode;
    println!(
        "masters {}  dir /{dir_name} (goal {})  inode {inode}  size {} MiB  block {} KiB  depth {}  \
         max request {} KiB  parallelism {}",
        masters.join(","),
        a.goal,
        a.size_mib,
        a.block_kib,
        a.depth,
        a.max_request_kib,
        a.parallelism
    );
    let content = Arc::new(Content::new(block));
    let crcs: Vec<u32> = (0..blocks)
        .map(|n| {
            let len = (size - n * block as u64).min(block as u64) as usize;
            crc32fast::hash(&content.block(n)[..len])
        })
        .collect();

    // ---- sequential write ----
    let io = FileIo::new(master.clone(), io_options(&a));
    let mut lat = Vec::with_capacity(blocks as usize);
    let start = Instant::now();
    let mut writes = stream::iter(0..blocks)
        .map(|n| {
            let (io, content) = (io.clone(), Arc::clone(&content));
            async move {
                let off = n * block as u64;
                let len = (size - off).min(block as u64) as usize;
                // Handed over as it is: the library sends slices of it.
                let data = Bytes::from(content.block(n)).slice(..len);
                let t = Instant::now();
                io.write_bytes(inode, off, data)
                    .await
                    .with_context(|| format!("write at {off}"))?;
                Ok::<_, anyhow::Error>(t.elapsed())
            }
        })
        .buffer_unordered(a.depth);
    while let Some(d) = writes.try_next().await? {
        lat.push(d);
    }
    drop(writes);
    let wrote = start.elapsed();
    let t = Instant::now();
    io.fsync(inode).await.context("fsync")?;
    let synced = t.elapsed();
    let total = start.elapsed();
    println!(
        "write   {:>8.1} MB/s  ({} MiB in {:.2?}; fsync+commit {:.2?}; with it {:.1} MB/s)  \
         request p50 {:.1} ms p99 {:.1} ms",
        mbps(size, wrote),
        a.size_mib,
        wrote,
        synced,
        mbps(size, total),
        pct(&mut lat, 0.5).as_secs_f64() * 1e3,
        pct(&mut lat, 0.99).as_secs_f64() * 1e3
    );
    drop(io);

    // ---- sequential read ----
    let io = FileIo::new(master.clone(), io_options(&a));
    let mut lat = Vec::with_capacity(blocks as usize);
    let start = Instant::now();
    let crcs = Arc::new(crcs);
    let mut reads = stream::iter(0..blocks)
        .map(|n| {
            let (io, crcs) = (io.clone(), Arc::clone(&crcs));
            async move {
                let off = n * block as u64;
                let len = (size - off).min(block as u64);
                let t = Instant::now();
                let data = io
                    .read(inode, off, len as u32)
                    .await
                    .with_context(|| format!("read at {off}"))?;
                let d = t.elapsed();
                if data.len() as u64 != len {
                    bail!("short read at {off}: {} bytes of {len}", data.len());
                }
                let crc = crc32fast::hash(&data);
                if crc != crcs[n as usize] {
                    bail!(
                        "block {n} at offset {off} reads back wrong (crc32 {crc:08x}, wrote {:08x})",
                        crcs[n as usize]
                    );
                }
                Ok::<_, anyhow::Error>(d)
            }
        })
        .buffer_unordered(a.depth);
    while let Some(d) = reads.try_next().await? {
        lat.push(d);
    }
    drop(reads);
    let read = start.elapsed();
    println!(
        "read    {:>8.1} MB/s  ({} MiB in {:.2?}, every block's crc32 checked)  \
         request p50 {:.1} ms p99 {:.1} ms",
        mbps(size, read),
        a.size_mib,
        read,
        pct(&mut lat, 0.5).as_secs_f64() * 1e3,
        pct(&mut lat, 0.99).as_secs_f64() * 1e3
    );

    // ---- random 4 KiB reads ----
    if a.random_reads > 0 {
        const RANDOM: u64 = 4096;
        let max_off = size.saturating_sub(RANDOM);
        let offsets: Vec<u64> = (0..a.random_reads)
            .map(|_| rand::random_range(0..=max_off / RANDOM) * RANDOM)
            .collect();
        let start = Instant::now();
        let mut lat: Vec<Duration> = stream::iter(offsets)
            .map(|off| {
                let (io, content) = (io.clone(), Arc::clone(&content));
                async move {
                    let t = Instant::now();
                    let data = io
                        .read(inode, off, RANDOM as u32)
                        .await
                        .with_context(|| format!("random read at {off}"))?;
                    let d = t.elapsed();
                    let want_len = (size - off).min(RANDOM) as usize;
                    if data != content.range(off, want_len) {
                        bail!("random read at {off} returned wrong data");
                    }
                    Ok::<_, anyhow::Error>(d)
                }
            })
            .buffer_unordered(a.concurrency)
            .try_collect()
            .await?;
        let took = start.elapsed();
        println!(
            "random  {:>8.0} ops/s ({} reads of 4 KiB, {} in flight, {:.2?})  p50 {:.2} ms p99 {:.2} ms",
            a.random_reads as f64 / took.as_secs_f64().max(1e-9),
            a.random_reads,
            a.concurrency,
            took,
            pct(&mut lat, 0.5).as_secs_f64() * 1e3,
            pct(&mut lat, 0.99).as_secs_f64() * 1e3
        );
    }

    // ---- clean up ----
    let release = master
        .release(ReleaseRequest {
            id: None,
            inode,
            ..Default::default()
        })
        .await;
    if let Err(e) = release {
        eprintln!("release of the test file failed: {e}");
    }
    if !a.keep {
        let unlink = master
            .unlink(UnlinkRequest {
                id: None,
                cred: Some(root()),
                parent: dir.inode,
                name: b"data".to_vec(),
            })
            .await;
        let rmdir = master
            .rmdir(mfs_proto::v1::RmdirRequest {
                id: None,
                cred: Some(root()),
                parent: 1,
                name: dir_name.into_bytes(),
            })
            .await;
        if let Err(e) = unlink.and(rmdir) {
            eprintln!("removing the test file and directory failed: {e}");
        }
    }
    let _ = master.close_session().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Content;

    /// `range` gives the bytes of the whole blocks, stamps included, at
    /// any offset and length (across block edges too).
    #[test]
    fn range_matches_whole_blocks() {
        let c = Content::new(64);
        let mut file = Vec::new();
        for n in 0..5 {
            file.extend_from_slice(&c.block(n));
        }
        for (off, len) in [(0, 64), (3, 10), (60, 20), (64, 8), (100, 150), (0, 320)] {
            assert_eq!(
                c.range(off as u64, len),
                file[off..off + len],
                "at {off}+{len}"
            );
        }
    }
}
