//! Random small writes through the kernel's writeback cache: the kernel
//! sends the dirty pages as many small writes at once, and the mount sends
//! those to one chunk that come while another is on its way in one request
//! (`ChunkWriteRequest.more`). Every byte must land, in order, on every
//! copy: checked against a model file kept on the local disk, read through
//! another mount (which has none of it cached).
//!
//! Needs root and /dev/fuse; without them the test says so and passes.

use std::os::unix::fs::FileExt;
use std::path::Path;

use mfs_tests::cluster::{free_port, Cluster};
use mfs_tests::mountpoint::Mount;
use rand::{Rng, SeedableRng};

use crate::tools::{fileinfo_chunks, ok};
use crate::util::{metric_at, open_rw, skip_without_fuse, step};

const PAGE: u64 = 4096;
/// Past the first chunk (64 MiB), so writes go to two chunks.
const FILE_BYTES: u64 = 68 << 20;
const WRITERS: u64 = 4;
const WRITES_EACH: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_small_writes_land_on_every_copy_in_order() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(1, &[]).await.unwrap();
    let mut metrics = Vec::new();
    for _ in 0..2 {
        let addr = format!("127.0.0.1:{}", free_port());
        c.spawn_chunkserver(1, &[("MFS_HTTP_LISTEN", &addr)])
            .unwrap();
        metrics.push(addr);
    }
    c.wait_chunkservers(2, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let a = Mount::start(&c, "a", &[]).unwrap();
    ok("mfssetgoal", &["2", &a.path().display().to_string()]);
    let model_dir = tempfile::tempdir().unwrap();
    let model = model_dir.path().join("model");
    let path = a.path().join("f");
    let seed: u64 = rand::rng().random();
    step(&format!(
        "{WRITERS} threads write {WRITES_EACH} random pieces each (seed {seed}) to the mount and the model"
    ));
    let counted = |what: &str| -> Vec<u64> {
        let series = format!("mfs_chunk_{what}");
        metrics.iter().map(|m| metric_at(m, &series)).collect()
    };
    let (requests0, ranges0) = (
        counted("ops_total{op=\"write\"}"),
        counted("write_ranges_total"),
    );
    std::thread::scope(|s| {
        for t in 0..WRITERS {
            let (path, model) = (&path, &model);
            s.spawn(move || writer(t, seed, path, model));
        }
    });
    // The same length on both (the last page may be written on neither).
    for p in [&path, &model] {
        let f = open_rw(p);
        if f.metadata().unwrap().len() < FILE_BYTES {
            f.set_len(FILE_BYTES).unwrap();
        }
        f.sync_all().unwrap();
    }
    step("another mount reads the file; it matches the model byte for byte");
    let b = Mount::start(&c, "b", &[]).unwrap();
    let got = std::fs::read(b.path().join("f")).unwrap();
    let want = std::fs::read(&model).unwrap();
    assert_eq!(got.len(), want.len(), "length");
    if let Some(at) = got.iter().zip(&want).position(|(x, y)| x != y) {
        panic!("the file differs from the model at byte {at} (seed {seed})");
    }
    let info = ok("mfsfileinfo", &[&path.display().to_string()]);
    let chunks = fileinfo_chunks(&info);
    assert_eq!(chunks.len(), 2, "{info}");
    for (chunk, copies) in chunks {
        assert_eq!(copies.len(), 2, "chunk {chunk}:\n{info}");
    }
    step("the chunkservers got several writes a request");
    let (requests, ranges) = (
        counted("ops_total{op=\"write\"}"),
        counted("write_ranges_total"),
    );
    let requests: u64 = requests.iter().zip(&requests0).map(|(a, b)| a - b).sum();
    let ranges: u64 = ranges.iter().zip(&ranges0).map(|(a, b)| a - b).sum();
    eprintln!("{ranges} ranges in {requests} write requests");
    assert!(
        ranges > requests,
        "{ranges} ranges in {requests} write requests: none batched"
    );
}

/// Writer `t`: pages `p` with `p % WRITERS == t` only (no two threads race
/// on a byte), pieces of a byte to a whole page inside one page, the
/// same on the mount and on the model.
fn writer(t: u64, seed: u64, path: &Path, model: &Path) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ t);
    let (f, m) = (open_rw(path), open_rw(model));
    let pages = FILE_BYTES / PAGE / WRITERS;
    for i in 0..WRITES_EACH {
        let page = rng.random_range(0..pages) * WRITERS + t;
        let (skip, len) = match i % 4 {
            // Most are whole pages (the random write benchmarks'), some
            // start inside one, some are bytes.
            0 | 1 => (0, PAGE),
            2 => (rng.random_range(0..PAGE), rng.random_range(1..PAGE)),
            _ => (rng.random_range(0..PAGE), 1),
        };
        // Within the writer's page (no byte another thread writes).
        let len = len.min(PAGE - skip);
        let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let at = page * PAGE + skip;
        f.write_all_at(&data, at).unwrap();
        m.write_all_at(&data, at).unwrap();
    }
}
