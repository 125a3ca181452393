//! The trash and the meta mount (`mfsmount -m`): a deleted file waits in
//! `trash/` with its chunks; `mv` into `trash/undel/` puts it back
//! byte-identical (making the directories again); a path written into it
//! changes where it goes; `rm` removes it for good; the master empties the
//! trash when the trash time is over; `sustained/` lists files deleted
//! while open. Checked against the chunk files on the chunkservers' disks.
//!
//! Needs root and /dev/fuse; without them it says so and passes.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::data::pattern;
use crate::tools::{ok, tool};
use crate::util::{step, wait_for};

/// The names in directory `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trash_undel_and_expiry_through_the_meta_mount() {
    let Some((c, m)) = crate::util::mounted_cluster(2).await else {
        return;
    };
    let meta = Mount::start(&c, "meta", &["-m"]).unwrap();
    let r = m.path();
    let trash = meta.path().join("trash");
    let undel = trash.join("undel");
    let on_disk = |c: &Cluster| c.chunk_files(1).unwrap().len() + c.chunk_files(2).unwrap().len();
    assert_eq!(names(meta.path()), vec!["sustained", "trash"]);
    assert_eq!(names(&trash), vec!["undel"]);

    step("a file of 3 MiB at d/sub/f; the trash time is 24 h by default");
    let data = pattern(7, (3 << 20) + 12345);
    std::fs::create_dir_all(r.join("d/sub")).unwrap();
    let f = r.join("d/sub/f");
    std::fs::write(&f, &data).unwrap();
    let out = ok("mfsgettrashtime", &[&f.display().to_string()]);
    assert!(out.trim_end().ends_with(": 86400"), "{out}");
    let ino = std::fs::metadata(&f).unwrap().ino();
    wait_for(10, "the chunk on disk", || on_disk(&c) == 1);

    step("rm, and rm of its directories: listed as INODE|d|sub|f, reading it gives the path");
    std::fs::remove_file(&f).unwrap();
    std::fs::remove_dir(r.join("d/sub")).unwrap();
    std::fs::remove_dir(r.join("d")).unwrap();
    let name = format!("{ino:08X}|d|sub|f");
    assert_eq!(names(&trash), vec![name.clone(), "undel".to_string()]);
    assert_eq!(std::fs::read(trash.join(&name)).unwrap(), b"d/sub/f\n");
    assert_eq!(
        std::fs::metadata(trash.join(&name)).unwrap().len(),
        data.len() as u64
    );
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(on_disk(&c), 1, "a trashed file keeps its chunk");

    step("mv into trash/undel/: back at d/sub/f, byte-identical");
    std::fs::rename(trash.join(&name), undel.join(&name)).unwrap();
    wait_for(5, "d/sub/f back", || f.exists());
    assert_eq!(std::fs::read(&f).unwrap(), data);
    assert_eq!(names(&trash), vec!["undel"]);

    step("a taken name: EEXIST; then a new path written into the file");
    std::fs::remove_file(&f).unwrap();
    std::fs::write(&f, b"another file").unwrap();
    let err = std::fs::rename(trash.join(&name), undel.join(&name)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EEXIST), "{err}");
    std::fs::write(trash.join(&name), b"d/restored\n").unwrap();
    let renamed = format!("{ino:08X}|d|restored");
    assert!(names(&trash).contains(&renamed), "{:?}", names(&trash));
    std::fs::rename(trash.join(&renamed), undel.join(&renamed)).unwrap();
    wait_for(5, "d/restored", || r.join("d/restored").exists());
    assert_eq!(std::fs::read(r.join("d/restored")).unwrap(), data);

    step("rm in trash/: removed for good, its chunk leaves the disks");
    std::fs::remove_file(&f).unwrap();
    std::fs::remove_file(r.join("d/restored")).unwrap();
    wait_for(10, "two files in the trash", || names(&trash).len() == 3);
    assert_eq!(on_disk(&c), 2);
    std::fs::remove_file(trash.join(&renamed)).unwrap();
    wait_for(30, "one chunk file left", || on_disk(&c) == 1);

    step("trash time 2 s: the master empties the trash on its own");
    let d = r.join("d").display().to_string();
    ok("mfssettrashtime", &["-r", "2", &d]);
    std::fs::write(r.join("d/short"), &data[..1 << 20]).unwrap();
    wait_for(10, "its chunk", || on_disk(&c) == 2);
    std::fs::remove_file(r.join("d/short")).unwrap();
    // The file trashed before the change keeps its own time (24 h).
    wait_for(30, "the short-lived file purged", || {
        names(&trash).len() == 2 && on_disk(&c) == 1
    });

    step("trash time 0: a file deleted while open is sustained until closed");
    ok("mfssettrashtime", &["0", &d]);
    let held = r.join("d/held");
    std::fs::write(&held, b"held").unwrap();
    let hino = std::fs::metadata(&held).unwrap().ino();
    let h = std::fs::File::open(&held).unwrap();
    std::fs::remove_file(&held).unwrap();
    let sustained = meta.path().join("sustained");
    assert_eq!(names(&sustained), vec![format!("{hino:08X}|d|held")]);
    drop(h);
    wait_for(10, "sustained/ empty", || names(&sustained).is_empty());

    step("bad input: a path outside the trash, a bad path written");
    let (code, _, _) = tool("mfsgettrashtime", &[&trash.display().to_string()]);
    assert_ne!(code, 0, "a tool on the meta mount must fail");
    let left = names(&trash)
        .into_iter()
        .find(|n| n != "undel")
        .expect("the file trashed for 24 h");
    let err = std::fs::write(trash.join(&left), b"a/../b").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
}
