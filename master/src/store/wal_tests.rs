use std::fs;
use std::path::Path;

use super::*;

fn body(i: u64) -> Vec<u8> {
    format!("record {i} {}", "x".repeat((i % 50) as usize)).into_bytes()
}

fn append_range(w: &Wal, lo: u64, hi: u64) {
    let recs: Vec<(u64, Vec<u8>)> = (lo..hi).map(|i| (i, body(i))).collect();
    let written = w.append(&recs).unwrap().unwrap();
    w.sync(&written).unwrap();
}

fn indexes(w: &Wal, lo: u64, hi: u64) -> Vec<u64> {
    let got = w.read(lo, hi).unwrap();
    for (i, b) in &got {
        assert_eq!(b, &body(*i), "body of record {i}");
    }
    got.into_iter().map(|(i, _)| i).collect()
}

/// A log in `dir` with 200-byte segments, holding records 1..=`last`
/// (appended two at a time).
fn filled(dir: &Path, last: u64) -> Wal {
    let w = Wal::open_sized(dir, None, 200).unwrap();
    for lo in (1..last).step_by(2) {
        append_range(&w, lo, lo + 2);
    }
    w
}

fn segments(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Where the records of segment `path` (first index `first`) end.
fn records_end(path: &Path, first: u64) -> u64 {
    let (_, end, how) = scan(path, first).unwrap();
    assert!(
        matches!(how, ScanEnd::Clean),
        "{} does not end cleanly",
        path.display()
    );
    end
}

#[test]
fn segments_grow_ahead_of_their_records_and_zeros_end_them() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Wal::open(tmp.path(), None).unwrap();
    append_range(&w, 1, 11);
    let seg = tmp.path().join(segment_name(1));
    let end = records_end(&seg, 1);
    let len = fs::metadata(&seg).unwrap().len();
    assert!(
        len >= end + PREALLOC_BYTES,
        "file {len} bytes, records end at {end}"
    );
    drop(w);
    // Reopened: the zeros are not a torn write; appends go on at the end
    // of the records, inside the grown file.
    let w = Wal::open(tmp.path(), None).unwrap();
    assert_eq!(w.bounds(), Some((1, 11)));
    append_range(&w, 11, 13);
    assert_eq!(fs::metadata(&seg).unwrap().len(), len);
    drop(w);
    let w = Wal::open(tmp.path(), None).unwrap();
    assert_eq!(indexes(&w, 0, 100), (1..13).collect::<Vec<_>>());
    drop(w);
    // Fewer zeros than a frame header (the file grown to just past the
    // records) end them too.
    let end = records_end(&seg, 1);
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(end + 5)
        .unwrap();
    let w = Wal::open(tmp.path(), None).unwrap();
    assert_eq!(w.bounds(), Some((1, 13)));
}

#[test]
fn a_segment_is_cut_to_its_records_when_the_next_starts() {
    let tmp = tempfile::tempdir().unwrap();
    let w = filled(tmp.path(), 40);
    let names = segments(tmp.path());
    assert!(names.len() >= 3, "{names:?}");
    for n in &names[..names.len() - 1] {
        let path = tmp.path().join(n);
        let first: u64 = n.trim_end_matches(".log").parse().unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            records_end(&path, first),
            "{n}"
        );
    }
    drop(w);
    // A crash before the cut reached the disk leaves zeros after the
    // records of a segment that is not the last: still a clean end.
    let first = tmp.path().join(&names[0]);
    let len = fs::metadata(&first).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len + 300)
        .unwrap();
    let w = Wal::open_sized(tmp.path(), None, 200).unwrap();
    assert_eq!(indexes(&w, 0, 100), (1..41).collect::<Vec<_>>());
}

#[test]
fn records_survive_reopen_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Wal::open_sized(tmp.path(), None, 300).unwrap();
    assert_eq!(w.bounds(), None);
    for lo in (1..100).step_by(3) {
        append_range(&w, lo, lo + 3);
    }
    assert!(w.segment_count() > 3, "{} segments", w.segment_count());
    assert_eq!(w.bounds(), Some((1, 100)));
    drop(w);
    let w = Wal::open_sized(tmp.path(), None, 300).unwrap();
    assert_eq!(w.bounds(), Some((1, 100)));
    assert_eq!(indexes(&w, 0, 1000), (1..100).collect::<Vec<_>>());
    assert_eq!(indexes(&w, 40, 45), vec![40, 41, 42, 43, 44]);
    assert_eq!(w.last().unwrap().map(|r| r.0), Some(99));
    // Appending goes on where it stopped.
    append_range(&w, 100, 103);
    assert_eq!(w.bounds(), Some((1, 103)));
}

#[test]
fn an_append_that_does_not_follow_on_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Wal::open(tmp.path(), None).unwrap();
    append_range(&w, 5, 8);
    let err = w.append(&[(9, body(9))]).err().unwrap();
    assert!(err.to_string().contains("next index is 8"), "{err}");
    let err = w.append(&[(8, body(8)), (10, body(10))]).err().unwrap();
    assert!(matches!(err, StoreError::LogMisuse(_)), "{err}");
    assert_eq!(w.bounds(), Some((5, 8)));
}

#[test]
fn a_torn_tail_is_dropped_and_the_rest_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let w = Wal::open(tmp.path(), None).unwrap();
    append_range(&w, 1, 11);
    drop(w);
    let seg = tmp.path().join(segment_name(1));
    let len = records_end(&seg, 1);
    // Cut the last frame in the middle of its body.
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let w = Wal::open(tmp.path(), None).unwrap();
    assert_eq!(w.bounds(), Some((1, 10)));
    append_range(&w, 10, 12);
    drop(w);
    // A flipped byte in the last frame's body: a bad CRC at the tail.
    let len = records_end(&seg, 1);
    let f = fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(b"\xff", len - 1).unwrap();
    drop(f);
    let w = Wal::open(tmp.path(), None).unwrap();
    assert_eq!(w.bounds(), Some((1, 11)));
    assert_eq!(indexes(&w, 1, 20), (1..11).collect::<Vec<_>>());
}

#[test]
fn damage_before_the_last_segment_refuses_to_open() {
    let tmp = tempfile::tempdir().unwrap();
    let w = filled(tmp.path(), 40);
    drop(w);
    let first = tmp.path().join(segment_name(1));
    let f = fs::OpenOptions::new().write(true).open(&first).unwrap();
    f.write_all_at(b"\x00\x01", HEADER + FRAME_HEAD as u64 + 2)
        .unwrap();
    drop(f);
    let err = Wal::open_sized(tmp.path(), None, 200).err().unwrap();
    let msg = err.to_string();
    assert!(matches!(err, StoreError::LogDamaged { .. }), "{msg}");
    assert!(msg.contains(&first.display().to_string()), "{msg}");
    assert!(msg.contains("bad CRC"), "{msg}");

    // A segment from another program, or a newer format, is refused too.
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join(segment_name(1)), b"NOTALOG\0\x01\0\0\0").unwrap();
    let err = Wal::open(tmp.path(), None).err().unwrap();
    assert!(err.to_string().contains("bad magic"), "{err}");
    let mut newer = MAGIC.to_vec();
    newer.extend_from_slice(&9u32.to_le_bytes());
    fs::write(tmp.path().join(segment_name(1)), newer).unwrap();
    let err = Wal::open(tmp.path(), None).err().unwrap();
    assert!(err.to_string().contains("segment format 9"), "{err}");
}

#[test]
fn a_missing_segment_is_a_gap_not_silence() {
    let tmp = tempfile::tempdir().unwrap();
    let w = filled(tmp.path(), 40);
    drop(w);
    let names = segments(tmp.path());
    assert!(names.len() >= 3, "{names:?}");
    fs::remove_file(tmp.path().join(&names[1])).unwrap();
    let err = Wal::open_sized(tmp.path(), None, 200).err().unwrap();
    assert!(err.to_string().contains("gap"), "{err}");
}

#[test]
fn truncation_is_durable_across_segments() {
    let tmp = tempfile::tempdir().unwrap();
    let w = filled(tmp.path(), 60);
    w.truncate_from(23).unwrap();
    assert_eq!(w.bounds(), Some((1, 23)));
    append_range(&w, 23, 25);
    drop(w);
    let w = Wal::open_sized(tmp.path(), None, 200).unwrap();
    assert_eq!(indexes(&w, 0, 100), (1..25).collect::<Vec<_>>());
    // Truncating everything leaves an empty log that starts anywhere.
    w.truncate_from(1).unwrap();
    assert_eq!(w.bounds(), None);
    append_range(&w, 7, 9);
    assert_eq!(indexes(&w, 0, 100), vec![7, 8]);
}

#[test]
fn purging_deletes_whole_segments_and_skips_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let w = filled(tmp.path(), 60);
    let before = w.segment_count();
    w.purge(30).unwrap();
    assert!(w.segment_count() < before);
    assert_eq!(w.bounds(), Some((31, 61)));
    assert_eq!(indexes(&w, 0, 33), vec![31, 32]);
    drop(w);
    let w = Wal::open_sized(tmp.path(), Some(30), 200).unwrap();
    assert_eq!(w.bounds(), Some((31, 61)));
    // Purged past the end (a snapshot installed): the log goes on anywhere
    // above it, and its old segments go.
    w.purge(500).unwrap();
    assert_eq!(w.bounds(), None);
    append_range(&w, 501, 503);
    assert_eq!(segments(tmp.path()), vec![segment_name(501)]);
    drop(w);
    let w = Wal::open_sized(tmp.path(), Some(500), 200).unwrap();
    assert_eq!(indexes(&w, 0, 1000), vec![501, 502]);
}

#[test]
fn segments_left_behind_by_a_purge_are_removed_at_open() {
    let tmp = tempfile::tempdir().unwrap();
    let w = filled(tmp.path(), 40);
    drop(w);
    let n = segments(tmp.path()).len();
    // The purge was recorded, then the process died before deleting.
    let w = Wal::open_sized(tmp.path(), Some(20), 200).unwrap();
    assert!(segments(tmp.path()).len() < n);
    assert_eq!(w.bounds(), Some((21, 41)));
    // Purged further than the log goes back: a hole, refused.
    drop(w);
    let err = Wal::open_sized(tmp.path(), Some(2), 200).err().unwrap();
    assert!(err.to_string().contains("missing"), "{err}");
}
