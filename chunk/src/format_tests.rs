//! Tests of the chunk file format.

use super::*;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn new_chunk(dir: &Path) -> ChunkFile {
    ChunkFile::create(&dir.join(file_name(7, 1)), 7, 1).unwrap()
}

/// Flips one byte of the data area on disk.
fn flip_byte(path: &Path, data_offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, HEADER_SIZE + data_offset).unwrap();
    b[0] ^= 0x40;
    f.write_all_at(&b, HEADER_SIZE + data_offset).unwrap();
}

#[test]
fn names_round_trip() {
    let n = file_name(0xABCDEF, 0x12);
    assert_eq!(n, "chunk_0000000000ABCDEF_00000012.mfs");
    assert_eq!(parse_file_name(&n), Some((0xABCDEF, 0x12)));
    assert_eq!(subdir_name(0x1234), "34");
    assert_eq!(parse_file_name("chunk_12_34.mfs"), None);
    assert_eq!(parse_file_name("chunk_000000000000000G_00000001.mfs"), None);
    assert_eq!(
        parse_file_name("chunk_0000000000000001_00000001.mfs.tmp"),
        None
    );
}

#[test]
fn write_read_across_block_edges_and_partial_blocks() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    // A model of the chunk's bytes.
    let mut model = vec![0u8; 4 * BLOCK_SIZE];
    let writes = [
        (BLOCK_SIZE as u64 - 100, 300usize, 1u8), // straddles blocks 0/1
        (10, 50, 2),                              // inside block 0
        (2 * BLOCK_SIZE as u64, BLOCK_SIZE, 3),   // exactly block 2
        (BLOCK_SIZE as u64 + 5, 2 * BLOCK_SIZE, 4), // blocks 1..3, partial ends
    ];
    for (off, len, seed) in writes {
        let data = pattern(len, seed);
        let l = c.write(off, &data).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&data);
        assert!(l >= off + len as u64);
    }
    let len = c.length();
    assert_eq!(len, BLOCK_SIZE as u64 * 3 + 5);
    // Reopen from disk: the table and length were persisted.
    let c = ChunkFile::open(c.path(), 7, 1).unwrap();
    assert_eq!(c.length(), len);
    for (off, size) in [(0u64, 4 * BLOCK_SIZE), (BLOCK_SIZE as u64 - 7, 20), (3, 1)] {
        let (got, repairs) = c.read(off, size).unwrap();
        assert!(repairs.is_empty());
        let mut want = model[off as usize..off as usize + size].to_vec();
        // Past the written length: zeros.
        for (i, b) in want.iter_mut().enumerate() {
            if off + i as u64 >= len {
                *b = 0;
            }
        }
        assert_eq!(got, want, "read at {off} size {size}");
    }
}

#[test]
fn read_past_length_and_holes_are_zeros() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    // Write only block 5: blocks 0..5 are holes.
    c.write(5 * BLOCK_SIZE as u64 + 10, &[9u8; 10]).unwrap();
    let (got, _) = c.read(0, 5 * BLOCK_SIZE + 30).unwrap();
    assert!(got[..5 * BLOCK_SIZE + 10].iter().all(|&b| b == 0));
    assert_eq!(&got[5 * BLOCK_SIZE + 10..5 * BLOCK_SIZE + 20], &[9u8; 10]);
    assert!(got[5 * BLOCK_SIZE + 20..].iter().all(|&b| b == 0));
    // Entirely past the length.
    let (got, _) = c.read(CHUNK_SIZE - 100, 100).unwrap();
    assert_eq!(got, vec![0u8; 100]);
}

#[test]
fn flipped_byte_is_a_bad_block() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    c.write(0, &pattern(3 * BLOCK_SIZE, 5)).unwrap();
    flip_byte(c.path(), BLOCK_SIZE as u64 + 77);
    // Block 0 still reads; any read touching block 1 fails.
    assert!(c.read(0, 100).is_ok());
    match c.read(BLOCK_SIZE as u64 * 2 - 1, 2) {
        Err(FormatError::BadBlock { block: 1 }) => {}
        other => panic!("expected bad block 1, got {other:?}"),
    }
    assert!(matches!(
        c.verify(),
        Err(FormatError::BadBlock { block: 1 })
    ));
    // A partial write into the bad block is refused too (it must not
    // bless damaged bytes with a fresh CRC).
    assert!(matches!(
        c.write(BLOCK_SIZE as u64 + 10, &[1, 2, 3]),
        Err(FormatError::BadBlock { block: 1 })
    ));
}

#[test]
fn torn_write_table_only_reads_old_block_and_repairs() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    let old = pattern(BLOCK_SIZE, 1);
    c.write(0, &old).unwrap();
    // The crash: slots written, data not.
    let new = pattern(BLOCK_SIZE, 2);
    let slots = c.plan_write(0, &new).unwrap();
    c.commit_table(0, new.len(), &slots).unwrap();
    drop(c);
    let mut c = ChunkFile::open(&d.path().join(file_name(7, 1)), 7, 1).unwrap();
    let (got, repairs) = c.read(0, BLOCK_SIZE).unwrap();
    assert_eq!(got, old, "the old block is served");
    assert_eq!(repairs, vec![0]);
    c.repair(&repairs).unwrap();
    let c = ChunkFile::open(c.path(), 7, 1).unwrap();
    let (got, repairs) = c.read(0, BLOCK_SIZE).unwrap();
    assert_eq!(got, old);
    assert!(repairs.is_empty(), "the table was repaired on disk");
}

#[test]
fn torn_append_reads_zeros() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    c.write(0, &[1u8; 100]).unwrap();
    let new = pattern(2 * BLOCK_SIZE, 3);
    let slots = c.plan_write(BLOCK_SIZE as u64, &new).unwrap();
    c.commit_table(BLOCK_SIZE as u64, new.len(), &slots)
        .unwrap();
    let c = ChunkFile::open(c.path(), 7, 1).unwrap();
    let (got, repairs) = c.read(0, 3 * BLOCK_SIZE).unwrap();
    assert_eq!(&got[..100], &[1u8; 100]);
    assert!(got[100..].iter().all(|&b| b == 0));
    assert_eq!(repairs, vec![1, 2]);
}

#[test]
fn torn_write_half_a_block_is_detected() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    c.write(0, &pattern(BLOCK_SIZE, 1)).unwrap();
    let new = pattern(BLOCK_SIZE, 2);
    let slots = c.plan_write(0, &new).unwrap();
    c.commit_table(0, new.len(), &slots).unwrap();
    // Only half of the data made it.
    c.file
        .write_all_at(&new[..BLOCK_SIZE / 2], HEADER_SIZE)
        .unwrap();
    let c = ChunkFile::open(c.path(), 7, 1).unwrap();
    assert!(matches!(
        c.read(0, 10),
        Err(FormatError::BadBlock { block: 0 })
    ));
}

#[test]
fn a_write_that_fails_midway_leaves_the_copy_readable() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    let old = pattern(BLOCK_SIZE + 100, 1);
    c.write(0, &old).unwrap();
    // The disk fills up during a write that extends the chunk: the slots
    // are written, one block's worth of the data lands, the write fails.
    let new = pattern(3 * BLOCK_SIZE, 2);
    let at = 50u64;
    let slots = c.plan_write(at, &new).unwrap();
    c.commit_table(at, new.len(), &slots).unwrap();
    c.file
        .write_all_at(&new[..BLOCK_SIZE], HEADER_SIZE + at)
        .unwrap();
    c.settle_failed_write(at, new.len(), old.len() as u64)
        .unwrap();
    assert_eq!(c.length(), old.len() as u64, "the length before the write");
    let mut c = ChunkFile::open(c.path(), 7, 1).unwrap();
    let (got, repairs) = c.read(0, 4 * BLOCK_SIZE).unwrap();
    assert!(repairs.is_empty(), "{repairs:?}");
    let (end, landed) = (old.len(), 50 + BLOCK_SIZE);
    assert!(got[..50] == old[..50], "before the write: as it was");
    assert!(got[50..landed] == new[..BLOCK_SIZE], "what the write left");
    assert!(got[landed..end] == old[landed..], "what it did not reach");
    assert!(got[end..].iter().all(|&b| b == 0), "past the length: zeros");
    assert!(c.verify().unwrap().is_empty(), "a scrub finds nothing");
    // The copy takes writes again.
    c.write(10, &pattern(100, 9)).unwrap();
    let (got, _) = c.read(10, 100).unwrap();
    assert_eq!(got, pattern(100, 9));
}

#[test]
fn version_change_renames_and_rewrites_header() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    c.write(0, b"hello").unwrap();
    let new_path = d.path().join(file_name(7, 2));
    c.set_version(2, &new_path).unwrap();
    assert!(!d.path().join(file_name(7, 1)).exists());
    let h = read_header(&new_path).unwrap();
    assert_eq!((h.id, h.version, h.length), (7, 2, 5));
    // Opening under the old version is refused.
    assert!(matches!(
        ChunkFile::open(&new_path, 7, 1),
        Err(FormatError::BadHeader(_))
    ));
    let c = ChunkFile::open(&new_path, 7, 2).unwrap();
    assert_eq!(c.read(0, 5).unwrap().0, b"hello");
}

#[test]
fn truncate_then_extend_reads_zeros() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    let data = pattern(3 * BLOCK_SIZE, 8);
    c.write(0, &data).unwrap();
    let cut = BLOCK_SIZE as u64 + 1000;
    c.truncate(cut).unwrap();
    assert_eq!(c.length(), cut);
    let flen = std::fs::metadata(c.path()).unwrap().len();
    assert_eq!(flen, HEADER_SIZE + cut, "the file was shortened");
    // Extend by truncate, then by a write further on.
    c.truncate(2 * BLOCK_SIZE as u64).unwrap();
    c.write(3 * BLOCK_SIZE as u64, &[5u8; 10]).unwrap();
    let c = ChunkFile::open(c.path(), 7, 1).unwrap();
    let (got, repairs) = c.read(0, 4 * BLOCK_SIZE).unwrap();
    assert!(repairs.is_empty());
    assert_eq!(&got[..cut as usize], &data[..cut as usize]);
    assert!(got[cut as usize..3 * BLOCK_SIZE].iter().all(|&b| b == 0));
    assert_eq!(&got[3 * BLOCK_SIZE..3 * BLOCK_SIZE + 10], &[5u8; 10]);
    c.verify().unwrap();
}

#[test]
fn bad_headers_are_refused() {
    let d = tempfile::tempdir().unwrap();
    // Wrong magic.
    let p = d.path().join(file_name(1, 1));
    std::fs::write(&p, vec![0u8; HEADER_SIZE as usize]).unwrap();
    assert!(matches!(
        ChunkFile::open(&p, 1, 1),
        Err(FormatError::BadHeader(m)) if m.contains("magic")
    ));
    // Too short.
    let p = d.path().join(file_name(2, 1));
    std::fs::write(&p, b"RMFSCHNK").unwrap();
    assert!(matches!(
        ChunkFile::open(&p, 2, 1),
        Err(FormatError::BadHeader(_))
    ));
    // A good file whose name does not match its header.
    let good = d.path().join(file_name(3, 1));
    ChunkFile::create(&good, 3, 1).unwrap();
    let renamed = d.path().join(file_name(4, 1));
    std::fs::rename(&good, &renamed).unwrap();
    let h = read_header(&renamed).unwrap();
    assert!(check_header_matches(&h, 4, 1).is_err());
    assert!(matches!(
        ChunkFile::open(&renamed, 4, 1),
        Err(FormatError::BadHeader(_))
    ));
    // A damaged header field (CRC).
    let p = d.path().join(file_name(5, 1));
    ChunkFile::create(&p, 5, 1).unwrap();
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&[0xFF], 13).unwrap();
    assert!(matches!(read_header(&p), Err(FormatError::BadHeader(m)) if m.contains("CRC")));
}

/// With direct writes allowed, aligned writes (whole pages, several bounce
/// buffers long) and unaligned ones mix on one file: every read, through
/// the page cache, from the same handle and after a reopen, matches a model.
#[test]
fn direct_and_buffered_writes_mix() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    c.allow_direct();
    let mut model = vec![0u8; 40 * BLOCK_SIZE];
    let writes = [
        (0u64, 3 * DIRECT_PIECE / 2, 1u8), // aligned, 1.5 bounce buffers
        (4096 * 3, 4096 * 5, 2),           // aligned but small: buffered
        (1000, 5000, 3),                   // unaligned: buffered
        (0, BLOCK_SIZE, 4),                // direct over the buffered pages
        (20 * BLOCK_SIZE as u64, 16 * BLOCK_SIZE, 5),
    ];
    for (off, len, seed) in writes {
        let data = pattern(len, seed);
        c.write(off, &data).unwrap();
        model[off as usize..off as usize + len].copy_from_slice(&data);
        let (got, repairs) = c.read(0, model.len()).unwrap();
        assert!(repairs.is_empty());
        let len = c.length() as usize;
        assert_eq!(&got[..len], &model[..len], "after the write at {off}");
    }
    if !matches!(c.direct, Direct::Open(_)) {
        eprintln!(
            "O_DIRECT is not supported in {:?}: only buffered writes were tested",
            d.path()
        );
    }
    let c = ChunkFile::open(c.path(), 7, 1).unwrap();
    assert!(c.verify().unwrap().is_empty(), "every block's CRC matches");
    let (got, _) = c.read(0, model.len()).unwrap();
    assert_eq!(&got[..c.length() as usize], &model[..c.length() as usize]);
}

/// A read from the page cache only gives what a blocking read gives (past
/// the written length too), and gives up rather than wait for the disk.
#[test]
fn a_cached_read_agrees_with_a_blocking_read_or_gives_up() {
    let d = tempfile::tempdir().unwrap();
    let mut c = new_chunk(d.path());
    let data = pattern(BLOCK_SIZE + 5000, 9);
    c.write(0, &data).unwrap();
    if c.read_cached(0, 4096).unwrap().is_none() {
        // tmpfs, for one, takes no RWF_NOWAIT read: every read blocks.
        eprintln!("no page-cache-only reads on this file system; nothing more to check");
        return;
    }
    for (off, size) in [
        (0u64, 4096usize),
        (BLOCK_SIZE as u64 + 100, 8192),
        (3, BLOCK_SIZE * 2),
    ] {
        let want = c.read(off, size).unwrap();
        let got = c.read_cached(off, size).unwrap();
        assert_eq!(
            got,
            Some(want),
            "at {off}, {size} bytes, just written (cached)"
        );
    }
    // Evicted from the page cache (synced first: only clean pages go).
    c.sync().unwrap();
    // SAFETY: advice on a descriptor the chunk file owns.
    unsafe {
        libc::posix_fadvise(c.file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    assert_eq!(
        c.read_cached(0, 4096).unwrap(),
        None,
        "a read of evicted blocks did not give up"
    );
}
