//! Blocks fetched for small reads go to the kernel's page cache too
//! (`mfspagestore`, mount `fuse::pages`): checked with `mincore` on a
//! mapping of the file, against a mount with the store turned off; and
//! reads racing writes on one mount never bring back old data (a store
//! must never land over pages written and not sent yet).
//!
//! Needs root and /dev/fuse; without them each test says so and passes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use mfs_tests::mountpoint::Mount;
use rand::{Rng, SeedableRng};

use crate::util::{mounted_cluster, open_rw, step};

const PAGE: usize = 4096;
const BLOCK: usize = 64 << 10;

/// Which of the first `pages` pages of `f` the kernel holds.
fn resident(f: &File, pages: usize) -> Vec<bool> {
    let len = pages * PAGE;
    // SAFETY: a read-only shared mapping of an open file, unmapped below;
    // mincore only reads the page table state into `vec`.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        let mut vec = vec![0u8; pages];
        let rc = libc::mincore(p, len, vec.as_mut_ptr());
        libc::munmap(p, len);
        assert_eq!(rc, 0, "mincore");
        vec.iter().map(|b| b & 1 == 1).collect()
    }
}

/// Opens `p` for random reads (no read-ahead), reads one page at `at`.
fn read_one_page(p: &Path, at: usize) -> File {
    let f = File::open(p).unwrap();
    // SAFETY: plain calls on an open descriptor.
    unsafe {
        assert_eq!(
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED),
            0
        );
        assert_eq!(
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM),
            0
        );
    }
    let mut b = vec![0u8; PAGE];
    f.read_exact_at(&mut b, at as u64).unwrap();
    f
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i / 7) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_read_stores_its_whole_block_in_the_kernel() {
    let Some((c, w)) = mounted_cluster(1).await else {
        return;
    };
    let on = Mount::start(&c, "on", &[]).unwrap();
    let off = Mount::start(&c, "off", &["-o", "mfspagestore=0"]).unwrap();
    let body = data(4 * BLOCK, 1);
    std::fs::write(w.path().join("f"), &body).unwrap();
    step("one page read in the second block: the store puts the whole block in the kernel");
    let f = read_one_page(&on.path().join("f"), BLOCK + 3 * PAGE);
    let pages = 4 * BLOCK / PAGE;
    let second = BLOCK / PAGE..2 * BLOCK / PAGE;
    let until = Instant::now() + Duration::from_secs(5);
    let held = loop {
        let held = resident(&f, pages);
        if held[second.clone()].iter().all(|&r| r) || Instant::now() > until {
            break held;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let shown: String = held.iter().map(|&r| if r { '#' } else { '.' }).collect();
    assert!(
        held[second.clone()].iter().all(|&r| r),
        "pages held: {shown}"
    );
    assert!(
        !held[..BLOCK / PAGE].iter().any(|&r| r) && !held[2 * BLOCK / PAGE..].iter().any(|&r| r),
        "only the block read is stored: {shown}"
    );
    // What the kernel holds is the file's content.
    let mut got = vec![0u8; BLOCK];
    f.read_exact_at(&mut got, BLOCK as u64).unwrap();
    assert!(got[..] == body[BLOCK..2 * BLOCK], "stored pages differ");
    step("with mfspagestore=0 only the page read is held");
    let g = read_one_page(&off.path().join("f"), BLOCK + 3 * PAGE);
    std::thread::sleep(Duration::from_millis(300));
    let held = resident(&g, pages);
    let shown: String = held.iter().map(|&r| if r { '#' } else { '.' }).collect();
    assert_eq!(
        held.iter().filter(|&&r| r).count(),
        1,
        "pages held: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_racing_writes_on_one_mount_see_every_write() {
    let Some((c, m)) = mounted_cluster(1).await else {
        return;
    };
    let other = Mount::start(&c, "other", &[]).unwrap();
    const LEN: usize = 8 << 20;
    let path = m.path().join("f");
    std::fs::write(&path, data(LEN, 2)).unwrap();
    let model_dir = tempfile::tempdir().unwrap();
    let model = model_dir.path().join("model");
    std::fs::write(&model, data(LEN, 2)).unwrap();
    let seed: u64 = rand::rng().random();
    step(&format!(
        "readers read random pages while a writer opens, writes and closes (seed {seed})"
    ));
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for r in 0..2u64 {
            let (path, stop) = (&path, &stop);
            s.spawn(move || {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (r + 100));
                let mut b = vec![0u8; PAGE];
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let f = File::open(path).unwrap();
                    for _ in 0..200 {
                        let at = rng.random_range(0..LEN / PAGE) * PAGE;
                        f.read_exact_at(&mut b, at as u64).unwrap();
                    }
                }
            });
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mdl = open_rw(&model);
        for round in 0..30 {
            let f = open_rw(&path);
            for _ in 0..40 {
                let at = rng.random_range(0..LEN / PAGE) * PAGE + rng.random_range(0..PAGE);
                let n = rng.random_range(1..2 * PAGE);
                let n = n.min(LEN - at);
                let d: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                f.write_all_at(&d, at as u64).unwrap();
                mdl.write_all_at(&d, at as u64).unwrap();
            }
            drop(f);
            // Every write is readable here at once, whatever the readers
            // brought in meanwhile.
            let got = std::fs::read(&path).unwrap();
            let want = std::fs::read(&model).unwrap();
            if let Some(at) = got.iter().zip(&want).position(|(a, b)| a != b) {
                stop.store(true, std::sync::atomic::Ordering::Relaxed);
                panic!("round {round}: byte {at} differs from the model (seed {seed})");
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    step("another mount reads the same");
    let got = std::fs::read(other.path().join("f")).unwrap();
    let want = std::fs::read(&model).unwrap();
    assert!(got == want, "the other mount differs from the model");
}
