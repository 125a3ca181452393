//! Tests of the store: orders, reads and writes, damage handling.

use super::*;
use crate::format::{BLOCK_SIZE, HEADER_SIZE};
use std::os::unix::fs::FileExt;

fn spec(p: &std::path::Path, marked: bool) -> DiskSpec {
    DiskSpec {
        path: p.to_owned(),
        marked,
        limit: None,
    }
}

fn opts() -> StoreOptions {
    StoreOptions {
        reserve: 0,
        fsync_before_close: false,
        open_files: 4,
        direct_writes: true,
        spare_files: 64,
    }
}

fn store(dirs: &[&tempfile::TempDir]) -> Store {
    let specs: Vec<DiskSpec> = dirs.iter().map(|d| spec(d.path(), false)).collect();
    Store::open(&specs, opts()).unwrap()
}

fn flip(path: &std::path::Path, data_offset: u64) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, HEADER_SIZE + data_offset).unwrap();
    b[0] ^= 1;
    f.write_all_at(&b, HEADER_SIZE + data_offset).unwrap();
}

#[test]
fn orders_and_io_round_trip_and_report_changes() {
    let d = tempfile::tempdir().unwrap();
    let s = store(&[&d]);
    s.create(10, 1).unwrap();
    assert!(matches!(s.create(10, 1), Err(ChunkError::Exists { .. })));
    assert_eq!(s.write(10, 1, 100, b"abc").unwrap(), 103);
    assert!(matches!(
        s.write(10, 2, 0, b"x"),
        Err(ChunkError::Stale {
            have: 1,
            want: 2,
            ..
        })
    ));
    assert!(matches!(
        s.read(11, 1, 0, 1),
        Err(ChunkError::NotFound { id: 11 })
    ));
    assert!(matches!(
        s.read(10, 1, CHUNK_SIZE - 1, 2),
        Err(ChunkError::Invalid(_))
    ));
    assert!(matches!(
        s.write(10, 1, 0, &vec![0u8; (MAX_IO + 1) as usize]),
        Err(ChunkError::Invalid(_))
    ));
    let ch = s.take_changes();
    assert_eq!(
        ch.get(&10),
        Some(&Change::Added {
            version: 1,
            marked: false
        })
    );

    s.set_version(10, 1, 2).unwrap();
    assert_eq!(s.read(10, 2, 99, 5).unwrap(), b"\0abc\0");
    // The same bump asked again (its commit did not follow the first):
    // the copy already is at 2; a bump from another version is refused.
    s.set_version(10, 1, 2).unwrap();
    assert!(matches!(
        s.set_version(10, 1, 3),
        Err(ChunkError::Stale {
            have: 2,
            want: 1,
            ..
        })
    ));
    assert!(matches!(s.read(10, 1, 0, 1), Err(ChunkError::Stale { .. })));
    s.truncate(10, 2, 3, 101).unwrap();
    let st = s.status(10).unwrap();
    assert_eq!((st.version, st.length), (3, 101));
    assert!(st.path.ends_with("0A/chunk_000000000000000A_00000003.mfs"));
    assert_eq!(s.read(10, 3, 99, 5).unwrap(), b"\0a\0\0\0");

    s.duplicate(10, 3, 20, 1).unwrap();
    assert_eq!(s.read(20, 1, 99, 5).unwrap(), b"\0a\0\0\0");
    s.write(20, 1, 99, b"zz").unwrap();
    assert_eq!(
        s.read(10, 3, 99, 2).unwrap(),
        b"\0a",
        "the copy is independent"
    );

    assert!(matches!(s.delete(10, 2), Err(ChunkError::Stale { .. })));
    s.delete(10, 0).unwrap();
    assert!(s.status(10).is_none());
    assert!(!st.path.exists());
    let ch = s.take_changes();
    assert_eq!(ch.get(&10), Some(&Change::Removed { version: 3 }));
    assert_eq!(
        ch.get(&20),
        Some(&Change::Added {
            version: 1,
            marked: false
        })
    );

    // A restart finds what is left.
    drop(s);
    let s = store(&[&d]);
    assert_eq!(s.ids(), vec![20]);
    assert_eq!(s.read(20, 1, 99, 3).unwrap(), b"zz\0");
}

#[test]
fn failed_heartbeat_changes_are_kept_and_newer_win() {
    let d = tempfile::tempdir().unwrap();
    let s = store(&[&d]);
    s.create(1, 1).unwrap();
    s.create(2, 1).unwrap();
    let taken = s.take_changes();
    s.delete(2, 1).unwrap();
    s.return_changes(taken);
    let ch = s.take_changes();
    assert_eq!(
        ch.get(&1),
        Some(&Change::Added {
            version: 1,
            marked: false
        })
    );
    assert_eq!(ch.get(&2), Some(&Change::Removed { version: 1 }));
}

#[test]
fn bad_block_on_read_drops_and_reports_the_copy() {
    let d = tempfile::tempdir().unwrap();
    let s = store(&[&d]);
    s.create(5, 7).unwrap();
    s.write(5, 7, 0, &vec![3u8; 2 * BLOCK_SIZE]).unwrap();
    let path = s.status(5).unwrap().path;
    let _ = s.take_changes();
    flip(&path, BLOCK_SIZE as u64 + 9);
    assert!(s.read(5, 7, 0, 10).is_ok(), "block 0 is fine");
    let e = s.read(5, 7, 0, 2 * BLOCK_SIZE as u64).unwrap_err();
    assert!(matches!(e, ChunkError::Corrupt { id: 5, .. }), "{e}");
    assert_eq!(e.errno(), 5);
    assert!(s.status(5).is_none(), "dropped");
    assert!(matches!(
        s.read(5, 7, 0, 1),
        Err(ChunkError::NotFound { .. })
    ));
    assert_eq!(
        s.take_changes().get(&5),
        Some(&Change::Removed { version: 7 })
    );
    assert!(!path.exists());
    let mut bad = path.into_os_string();
    bad.push(".bad");
    assert!(std::path::Path::new(&bad).exists(), "quarantined");
}

#[test]
fn scrub_finds_a_bad_copy() {
    let d = tempfile::tempdir().unwrap();
    let s = store(&[&d]);
    for id in [1u64, 2, 3] {
        s.create(id, 1).unwrap();
        s.write(id, 1, 0, &vec![id as u8; 3 * BLOCK_SIZE]).unwrap();
    }
    flip(&s.status(2).unwrap().path, 2 * BLOCK_SIZE as u64 + 1);
    let _ = s.take_changes();
    let mut next = 0;
    for _ in 0..3 {
        next = crate::scrub::step(&s, next).unwrap() + 1;
    }
    assert_eq!(s.ids(), vec![1, 3]);
    assert_eq!(
        s.take_changes().get(&2),
        Some(&Change::Removed { version: 1 })
    );
    // Round robin wraps.
    assert_eq!(crate::scrub::step(&s, 4), Some(1));
}

#[test]
fn reserve_and_marked_disks_get_no_new_chunks() {
    let d = tempfile::tempdir().unwrap();
    let m = tempfile::tempdir().unwrap();
    let s = Store::open(&[spec(m.path(), true), spec(d.path(), false)], opts()).unwrap();
    for id in 0..8 {
        s.create(id, 1).unwrap();
        assert!(s.status(id).unwrap().path.starts_with(d.path()));
    }
    let full = Store::open(
        &[spec(tempfile::tempdir().unwrap().path(), false)],
        StoreOptions {
            reserve: u64::MAX / 2,
            ..opts()
        },
    )
    .unwrap();
    let e = full.create(1, 1).unwrap_err();
    assert!(matches!(e, ChunkError::NoSpace(_)), "{e}");
    assert_eq!(e.to_status().code(), tonic::Code::ResourceExhausted);
}

#[test]
fn writes_past_the_space_get_enospc_and_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let capped = DiskSpec {
        path: d.path().to_owned(),
        marked: false,
        limit: Some(1 << 20),
    };
    let s = Store::open(&[capped], opts()).unwrap();
    s.create(1, 1).unwrap();
    s.write(1, 1, 0, &[7u8; 100]).unwrap();
    let e = s.write(1, 1, 1000, &vec![1u8; 2 << 20]).unwrap_err();
    assert!(matches!(e, ChunkError::NoSpace(_)), "{e}");
    assert_eq!(s.status(1).unwrap().length, 100, "nothing written");
    assert_eq!(s.read(1, 1, 1000, 4).unwrap(), [0u8; 4]);
    // Overwriting inside the written length needs no space.
    s.write(1, 1, 0, &[9u8; 50]).unwrap();
    assert_eq!(s.read(1, 1, 48, 4).unwrap(), [9, 9, 7, 7]);
}

#[test]
fn damaged_disk_reports_its_chunks_and_others_serve() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let s = store(&[&a, &b]);
    for id in 0..6 {
        s.create(id, 1).unwrap();
    }
    let _ = s.take_changes();
    let on_a: Vec<u64> = (0..6)
        .filter(|id| s.status(*id).unwrap().path.starts_with(a.path()))
        .collect();
    s.damage_disk(0);
    assert!(s.disks()[0].is_damaged());
    let ch = s.take_changes();
    for id in 0..6 {
        if on_a.contains(&id) {
            assert!(s.status(id).is_none());
            assert_eq!(ch.get(&id), Some(&Change::Removed { version: 1 }));
        } else {
            s.write(id, 1, 0, b"ok").unwrap();
        }
    }
    // New chunks go to the healthy disk.
    s.create(100, 1).unwrap();
    assert!(s.status(100).unwrap().path.starts_with(b.path()));
}

#[test]
fn concurrent_writes_to_one_chunk_all_land() {
    let d = tempfile::tempdir().unwrap();
    let s = Arc::new(store(&[&d]));
    s.create(1, 1).unwrap();
    let piece = 10_000usize;
    std::thread::scope(|sc| {
        for t in 0..8u8 {
            let s = s.clone();
            sc.spawn(move || {
                for k in 0..4usize {
                    let off = ((k * 8 + t as usize) * piece) as u64;
                    s.write(1, 1, off, &vec![t + 1; piece]).unwrap();
                }
            });
        }
    });
    let all = s.read(1, 1, 0, (32 * piece) as u64).unwrap();
    for (i, c) in all.chunks(piece).enumerate() {
        let want = (i % 8) as u8 + 1;
        assert!(c.iter().all(|&b| b == want), "piece {i}");
    }
}

#[test]
fn replica_is_renamed_in_only_when_finished() {
    let d = tempfile::tempdir().unwrap();
    let s = store(&[&d]);
    let mut w = s.begin_replica(9, 4, 200_000).unwrap().unwrap();
    w.write(0, &vec![5u8; 100_000]).unwrap();
    assert!(s.status(9).is_none(), "not visible while receiving");
    drop(w);
    assert!(
        std::fs::read_dir(d.path().join("09"))
            .unwrap()
            .next()
            .is_none(),
        "temp removed"
    );
    let mut w = s.begin_replica(9, 4, 200_000).unwrap().unwrap();
    w.write(0, &vec![5u8; 100_000]).unwrap();
    w.set_length(200_000).unwrap();
    s.finish_replica(w).unwrap();
    let st = s.status(9).unwrap();
    assert_eq!((st.version, st.length), (4, 200_000));
    assert!(
        s.begin_replica(9, 4, 200_000).unwrap().is_none(),
        "already here"
    );
    // A newer version replaces the old copy.
    let mut w = s.begin_replica(9, 5, 10).unwrap().unwrap();
    w.write(0, b"0123456789").unwrap();
    s.finish_replica(w).unwrap();
    assert_eq!(s.read(9, 5, 0, 10).unwrap(), b"0123456789");
    assert!(!st.path.exists());
    assert_eq!(s.disks()[0].chunk_count(), 1);
}

#[test]
fn open_file_cache_is_bounded() {
    let d = tempfile::tempdir().unwrap();
    let s = store(&[&d]);
    for id in 0..20 {
        s.create(id, 1).unwrap();
        s.write(id, 1, 0, b"x").unwrap();
    }
    for id in 0..20 {
        assert_eq!(s.read(id, 1, 0, 1).unwrap(), b"x");
    }
    assert!(s.open_count.load(Ordering::Relaxed) <= 4);
}

#[test]
fn a_write_may_make_its_chunk_unless_a_later_version_was_asked_for() {
    let d = tempfile::tempdir().unwrap();
    let s = store(&[&d]);
    s.create_missing(20, 1).unwrap();
    assert_eq!(s.write(20, 1, 0, b"abc").unwrap(), 3);
    // Here already: kept as it is (a second piece of the same lease).
    s.create_missing(20, 1).unwrap();
    assert_eq!(&s.read(20, 1, 0, 3).unwrap()[..], b"abc");
    // Another version here: the write itself says it is stale.
    s.create_missing(20, 3).unwrap();
    assert!(matches!(
        s.write(20, 3, 0, b"x"),
        Err(ChunkError::Stale {
            have: 1,
            want: 3,
            ..
        })
    ));
    // The leader asked for version 2 of chunk 21, which is not here: a
    // write of an older lease must not make it at version 1 afterwards.
    assert!(matches!(
        s.set_version(21, 1, 2),
        Err(ChunkError::NotFound { id: 21 })
    ));
    assert!(matches!(
        s.create_missing(21, 1),
        Err(ChunkError::Stale {
            have: 2,
            want: 1,
            ..
        })
    ));
    assert!(s.read(21, 1, 0, 1).is_err(), "nothing was made");
    // The new version itself may still be made.
    s.create_missing(21, 2).unwrap();
    assert_eq!(s.write(21, 2, 0, b"new").unwrap(), 3);
}

#[test]
fn a_deleted_chunk_file_is_kept_and_made_into_the_next_new_chunk() {
    let d = tempfile::tempdir().unwrap();
    let s = store(&[&d]);
    let spares = || s.disks[0].spares.count();
    s.create(30, 1).unwrap();
    assert_eq!(s.write(30, 1, 0, &[7u8; 100_000]).unwrap(), 100_000);
    let old = s.disks[0].chunk_path(30, 1);
    s.delete(30, 1).unwrap();
    assert!(!old.exists());
    assert_eq!(spares(), 1, "the file is kept as a spare");

    s.create(31, 2).unwrap();
    assert_eq!(spares(), 0, "the new chunk took it");
    let new = s.disks[0].chunk_path(31, 2);
    assert_eq!(
        std::fs::metadata(&new).unwrap().len(),
        HEADER_SIZE,
        "nothing of the old chunk is left in it"
    );
    assert_eq!(&s.read(31, 2, 0, 10).unwrap()[..], &[0u8; 10][..]);
    assert_eq!(s.write(31, 2, 5, b"abc").unwrap(), 8);
    drop(s);
    // A restart finds the chunk (its header names it) and no spare.
    let s = store(&[&d]);
    assert_eq!(&s.read(31, 2, 0, 8).unwrap()[..], b"\0\0\0\0\0abc");
    assert_eq!(s.disks[0].spares.count(), 0);
    // Without spares a new chunk is a new file.
    s.create(32, 1).unwrap();
    assert!(s.disks[0].chunk_path(32, 1).exists());
}

#[tokio::test]
async fn spares_are_made_ahead_on_disks_that_take_new_chunks() {
    let (taking, marked) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let specs = [spec(taking.path(), false), spec(marked.path(), true)];
    let s = Arc::new(Store::open(&specs, opts()).unwrap());
    let task = tokio::spawn(crate::spare::run(s.clone()));
    let spares = |i: usize| s.disks[i].spares.count();
    let t = std::time::Instant::now();
    while spares(0) < opts().spare_files {
        assert!(
            t.elapsed().as_secs() < 30,
            "{} spares made in 30 s",
            spares(0)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let on_disk = std::fs::read_dir(taking.path().join(crate::spare::SPARE_DIR))
        .unwrap()
        .count();
    assert_eq!(on_disk, opts().spare_files);
    assert_eq!(spares(1), 0, "a disk being drained gets none");

    // A new chunk takes one, and the task makes another.
    s.create(40, 1).unwrap();
    assert_eq!(s.write(40, 1, 0, b"abc").unwrap(), 3);
    assert!(s.disks[0].chunk_path(40, 1).exists());
    assert!(spares(0) < opts().spare_files);
    while spares(0) < opts().spare_files {
        assert!(
            t.elapsed().as_secs() < 30,
            "the spare taken was not made again"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    task.abort();
    let _ = task.await;
    drop(s);
    // A restart finds them, and the chunk.
    let s = Store::open(&specs, opts()).unwrap();
    assert_eq!(s.disks[0].spares.count(), opts().spare_files);
    assert_eq!(&s.read(40, 1, 0, 3).unwrap()[..], b"abc");
}

#[test]
fn writes_in_place_only_on_a_free_open_chunk() {
    let d = tempfile::tempdir().unwrap();
    let s = store(&[&d]);
    s.create(20, 1).unwrap();
    assert_eq!(
        s.write_if_free(20, 1, &[(0, b"abc")]).map(|r| r.ok()),
        Some(Some(3))
    );
    // Errors are answered as the blocking write would.
    assert!(matches!(
        s.write_if_free(20, 2, &[(BLOCK_SIZE as u64, b"x")]),
        Some(Err(ChunkError::Stale { .. }))
    ));
    assert!(matches!(
        s.write_if_free(21, 1, &[(0, b"x")]),
        Some(Err(ChunkError::NotFound { id: 21 }))
    ));
    // Held by another write or a sync: not done, nothing changed.
    let slot = s.slot(20).unwrap();
    let held = slot.state.write().unwrap();
    assert!(s.write_if_free(20, 1, &[(3, b"def")]).is_none());
    drop(held);
    // Closed (opening reads the header from the disk): left to the pool.
    s.close_all();
    assert!(s.write_if_free(20, 1, &[(3, b"def")]).is_none());
    assert_eq!(s.read(20, 1, 0, 6).unwrap(), b"abc\0\0\0");
    assert_eq!(s.write(20, 1, 3, b"def").unwrap(), 6);
    // A block filled partly below the written length is read first (it
    // may come from the disk): left to the pool.
    assert!(s.write_if_free(20, 1, &[(6, b"g")]).is_none());
    // Whole blocks, or blocks past the length, are not read.
    let whole = vec![7u8; BLOCK_SIZE];
    let end = 2 * BLOCK_SIZE as u64;
    assert_eq!(
        s.write_if_free(20, 1, &[(BLOCK_SIZE as u64, &whole)])
            .map(|r| r.ok()),
        Some(Some(end))
    );
    assert_eq!(
        s.write_if_free(20, 1, &[(0, &whole)]).map(|r| r.ok()),
        Some(Some(end))
    );
    assert_eq!(
        s.write_if_free(20, 1, &[(end + 5, b"h")]).map(|r| r.ok()),
        Some(Some(end + 6))
    );
    assert_eq!(s.read(20, 1, end + 4, 2).unwrap(), b"\0h");
    assert_eq!(s.read(20, 1, 0, 2).unwrap(), vec![7u8; 2]);
}

#[test]
fn ranges_of_one_write_land_in_order_or_not_at_all() {
    let d = tempfile::tempdir().unwrap();
    let s = store(&[&d]);
    s.create(30, 1).unwrap();
    let far = 3 * BLOCK_SIZE as u64 + 10;
    // In order: a later range over an earlier one wins; the length is the
    // furthest end.
    let ranges: [(u64, &[u8]); 3] = [(0, b"aaaa"), (far, b"zz"), (2, b"bb")];
    assert_eq!(s.write_ranges(30, 1, &ranges).unwrap(), far + 2);
    assert_eq!(s.read(30, 1, 0, 5).unwrap(), b"aabb\0");
    assert_eq!(s.read(30, 1, far - 1, 3).unwrap(), b"\0zz");
    // One range out of bounds: refused before anything is written.
    let bad: [(u64, &[u8]); 2] = [(0, b"xx"), (CHUNK_SIZE - 1, b"yy")];
    assert!(matches!(
        s.write_ranges(30, 1, &bad),
        Err(ChunkError::Invalid(_))
    ));
    assert!(matches!(
        s.write_if_free(30, 1, &bad),
        Some(Err(ChunkError::Invalid(_)))
    ));
    assert_eq!(s.read(30, 1, 0, 2).unwrap(), b"aa");
    // In place only when no range must read a block it fills partly.
    let one_reads: [(u64, &[u8]); 2] = [(far + 2, b"c"), (5, b"d")];
    assert!(s.write_if_free(30, 1, &one_reads).is_none());
    // Blocks past the length are not read, unless a range before fills
    // them partly.
    let (b4, b6) = (4 * BLOCK_SIZE as u64, 6 * BLOCK_SIZE as u64);
    let grows: [(u64, &[u8]); 2] = [(b4, b"c"), (b4 + 1, b"d")];
    assert!(s.write_if_free(30, 1, &grows).is_none());
    let none_read: [(u64, &[u8]); 2] = [(b4, b"c"), (b6, b"d")];
    assert_eq!(
        s.write_if_free(30, 1, &none_read).map(|r| r.ok()),
        Some(Some(b6 + 1))
    );
    assert_eq!(s.read(30, 1, b4, 2).unwrap(), b"c\0");
    assert_eq!(s.read(30, 1, b6 - 1, 2).unwrap(), b"\0d");
}
