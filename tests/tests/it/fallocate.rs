//! fallocate(2) on a real mount, step by step beside the same calls on a
//! local file: the default mode, KEEP_SIZE, PUNCH_HOLE (edges written
//! with zeros, a whole chunk dropped: its chunk file leaves the disk) and
//! ZERO_RANGE; sizes and bytes compared after every step.
//!
//! Needs root and /dev/fuse; without them it says so and passes.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::data::pattern;
use crate::util::{open_rw, step, wait_for};

const CHUNK: i64 = 64 << 20;

/// fallocate on both files: the same result (0 or the same errno).
fn both(files: &[&File; 2], mode: i32, offset: i64, len: i64) -> i32 {
    let mut results = Vec::new();
    for f in files {
        // SAFETY: fallocate on an open descriptor with plain integers.
        let rc = unsafe { libc::fallocate(f.as_raw_fd(), mode, offset, len) };
        results.push(if rc == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        });
    }
    assert_eq!(
        results[0], results[1],
        "fallocate mode {mode:#x} at {offset}+{len}: mount vs local"
    );
    results[0]
}

fn same(mnt: &Path, local: &Path, what: &str) {
    let (a, b) = (std::fs::read(mnt).unwrap(), std::fs::read(local).unwrap());
    assert_eq!(a.len(), b.len(), "{what}: sizes");
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("{what}: first difference at byte {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallocate_matches_a_local_file() {
    let Some((c, m)) = crate::util::mounted_cluster(1).await else {
        return;
    };
    let local_dir = c.root().join("local");
    std::fs::create_dir_all(&local_dir).unwrap();
    let (pm, pl) = (m.path().join("f"), local_dir.join("f"));
    let data = pattern(3, (2 * CHUNK as usize) + (2 << 20));
    std::fs::write(&pm, &data).unwrap();
    std::fs::write(&pl, &data).unwrap();
    let (fm, fl) = (open_rw(&pm), open_rw(&pl));
    let files = [&fm, &fl];
    wait_for(10, "three chunk files", || {
        c.chunk_files(1).unwrap().len() == 3
    });

    step("default mode past the end: the file grows, zeros after");
    let size = data.len() as i64;
    assert_eq!(both(&files, 0, size - 10, 1 << 20), 0);
    same(&pm, &pl, "after growing");
    step("KEEP_SIZE: no change");
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(both(&files, keep, 0, 5 << 20), 0);
    same(&pm, &pl, "after keep-size");

    step("PUNCH_HOLE inside a chunk, then over a whole chunk and two edges");
    let punch = libc::FALLOC_FL_PUNCH_HOLE | keep;
    assert_eq!(both(&files, punch, 1000, 5000), 0);
    same(&pm, &pl, "after a small punch");
    assert_eq!(both(&files, punch, CHUNK - 100, CHUNK + 200), 0);
    same(&pm, &pl, "after punching chunk 1");
    wait_for(30, "the punched chunk's file gone", || {
        c.chunk_files(1).unwrap().len() == 2
    });
    step("ZERO_RANGE over the end grows the file; bad modes and lengths");
    let zero = libc::FALLOC_FL_ZERO_RANGE;
    let size = std::fs::metadata(&pl).unwrap().len() as i64;
    assert_eq!(both(&files, zero, size - 4096, 1 << 20), 0);
    same(&pm, &pl, "after zero-range");
    assert_eq!(
        both(&files, libc::FALLOC_FL_PUNCH_HOLE, 0, 10),
        libc::EOPNOTSUPP
    );
    assert_eq!(both(&files, 0, 0, 0), libc::EINVAL);
    // Writes after a punch land in the hole.
    for p in [&pm, &pl] {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = open_rw(p);
        f.seek(SeekFrom::Start(CHUNK as u64 + 7)).unwrap();
        f.write_all(b"again").unwrap();
    }
    same(&pm, &pl, "after writing into the hole");
}
