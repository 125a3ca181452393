//! A chunkserver disk that fills up: writes fail with ENOSPC, files keep
//! what was written before (no garbage, no lost data), and space freed by
//! `rm` is used again.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::tools::ok;
use crate::util::{skip_without_fuse, step};

const MIB: usize = 1 << 20;

/// A tmpfs mounted on a directory for the test's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("running mount");
        assert!(st.success(), "mount -t tmpfs on {}: {st}", dir.display());
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[0] ^ seed)
        .collect()
}

/// Writes `data` to a new file at `p` in 1 MiB writes, then fsync and
/// close; the first error and how many bytes the writes took before it.
fn write_file(p: &Path, data: &[u8]) -> (Option<std::io::Error>, usize) {
    let mut f = std::fs::File::create(p).unwrap();
    let mut done = 0;
    for piece in data.chunks(MIB) {
        if let Err(e) = f.write_all(piece) {
            return (Some(e), done);
        }
        done += piece.len();
    }
    if let Err(e) = f.sync_all() {
        return (Some(e), done);
    }
    (None, done)
}

fn read_all(p: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    std::fs::File::open(p)
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_fails_writes_with_enospc_and_keeps_files_whole() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(1, &[]).await.unwrap();
    // The harness puts chunkserver 1's disk here: 160 MiB, 8 MiB kept
    // free. The master gives a new chunk to a disk with 64 MiB free, so
    // the third chunk's writes meet the chunkserver's ENOSPC.
    let _disk = Tmpfs::mount(&c.root().join("chunk1").join("disk1"), "160m");
    // A chunk scrubbed every second: a block a failed write left torn
    // would be found, and the copy (the only one) condemned.
    let env = [
        ("MFS_HDD_LEAVE_SPACE_DEFAULT", "8MiB"),
        ("MFS_HDD_TEST_FREQ", "1"),
    ];
    c.spawn_chunkserver(1, &env).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while c.cluster_info().await.map_or(0, |i| i.chunkservers.len()) < 1 {
        assert!(Instant::now() < until, "the chunkserver did not register");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let m = Mount::start(&c, "mnt", &[]).unwrap();
    let root = m.path().display().to_string();
    ok("mfssetgoal", &["-r", "1", &root]);
    ok("mfssettrashtime", &["-r", "0", &root]);

    step("a 24 MiB file fits and reads back");
    let a = m.path().join("a");
    let a_data = pattern(1, 24 * MIB);
    let (err, _) = write_file(&a, &a_data);
    assert!(err.is_none(), "writing 24 MiB: {err:?}");
    assert!(read_all(&a) == a_data, "a reads back wrong");

    step("a 200 MiB file does not: ENOSPC at a write or at fsync");
    let b = m.path().join("b");
    let b_data = pattern(2, 200 * MIB);
    let (err, took) = write_file(&b, &b_data);
    let err = err.expect("200 MiB fitted on a 160 MiB disk");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");

    step("the file keeps what was written before the failure, no zeros; the first file is whole");
    // Through another mount: what the master committed (the writer's
    // kernel keeps the length its writes gave it, as with NFS).
    let other = Mount::start(&c, "other", &[]).unwrap();
    let kept = read_all(&other.path().join("b"));
    assert!(
        kept.len() >= 64 * MIB && kept.len() <= took,
        "b keeps {} bytes; {took} were written before the error",
        kept.len()
    );
    assert!(
        kept == b_data[..kept.len()],
        "b's {} bytes differ from what was written",
        kept.len()
    );
    assert!(read_all(&other.path().join("a")) == a_data, "a changed");
    drop(other);

    step("rm frees the space: a new 24 MiB file fits again");
    std::fs::remove_file(&b).unwrap();
    std::fs::remove_file(&a).unwrap();
    let d = m.path().join("d");
    let d_data = pattern(3, 24 * MIB);
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        match write_file(&d, &d_data) {
            (None, _) => break,
            (Some(e), _) if e.raw_os_error() == Some(libc::ENOSPC) && Instant::now() < until => {
                // The chunks of the removed files are deleted in the background.
                let _ = std::fs::remove_file(&d);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            (Some(e), _) => panic!("writing d after rm: {e}"),
        }
    }
    assert!(read_all(&d) == d_data, "d reads back wrong");
    drop(m);
}
