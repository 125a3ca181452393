//! FileIo against in-process fake servers: failover, renewal, EAGAIN,
//! holes, the end of file, commits.

mod fake;

use std::sync::atomic::Ordering;
use std::time::Duration;

use fake::{FakeCluster, Mode};

use super::{Deferred, FileIo, IoOptions, CHUNK_SIZE};
use crate::error::ClientError;
use crate::master::{ClientOptions, MasterClient};

const INODE: u64 = 42;

async fn io_for(c: &FakeCluster, opts: IoOptions) -> FileIo {
    let copts = ClientOptions {
        register_session: true,
        overall_timeout: Some(Duration::from_secs(10)),
        call_timeout: Duration::from_secs(2),
        ..ClientOptions::default()
    };
    let master = match MasterClient::connect(std::slice::from_ref(&c.master_addr), copts).await {
        Ok(m) => m,
        Err(e) => panic!("connect to the fake master: {e}"),
    };
    FileIo::new(master, opts)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

async fn ok<T>(f: impl std::future::Future<Output = Result<T, ClientError>>) -> T {
    match f.await {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

#[tokio::test]
async fn write_flush_read_back_with_short_read_at_eof() {
    let c = FakeCluster::start(3, 2).await;
    let io = io_for(&c, IoOptions::default()).await;
    let data = pattern(300_000, 1);
    ok(io.write(INODE, 1000, &data)).await;
    assert_eq!(io.local_length(INODE), Some(301_000));
    // Before the commit, the master knows no length, but this client reads
    // what it wrote (and the hole before it as zeros).
    let got = ok(io.read(INODE, 0, 400_000)).await;
    assert_eq!(got.len(), 301_000);
    assert!(got[..1000].iter().all(|&b| b == 0));
    assert_eq!(&got[1000..], &data[..]);
    // Every copy has it: the chain was followed.
    let chunk = c.master.chunks.lock().map(|m| m[&(INODE, 0)].clone());
    let Ok(chunk) = chunk else { panic!("poisoned") };
    assert_eq!(chunk.copies, vec![0, 1]);
    for i in [0, 1] {
        let (v, d) = c.cs(i).data(chunk.id).unwrap_or_default();
        assert_eq!(v, chunk.version);
        assert_eq!(&d[1000..], &data[..]);
    }
    assert!(c.cs(2).data(chunk.id).is_none());

    ok(io.flush(INODE)).await;
    assert_eq!(io.local_length(INODE), None);
    let ends = c.master.write_chunk_end_calls();
    assert_eq!(ends.len(), 1);
    assert_eq!(
        (ends[0].index, ends[0].chunk_id, ends[0].file_length),
        (0, chunk.id, 301_000)
    );
    // A second flush has nothing to commit.
    ok(io.flush(INODE)).await;
    assert_eq!(c.master.write_chunk_end_calls().len(), 1);
    // Read after the commit: from the master's location, short at EOF.
    let got = ok(io.read(INODE, 300_000, 4096)).await;
    assert_eq!(got, data[299_000..]);
    assert!(ok(io.read(INODE, 301_000, 10)).await.is_empty());
    assert!(ok(io.read(INODE, 5 * CHUNK_SIZE, 10)).await.is_empty());
}

/// Attribute changes kept for the commit: only while the file has a
/// holder or uncommitted writes; carried by the first chunk's WriteChunkEnd
/// (with the caller's credentials), by one SetAttr when nothing was
/// written; gone once committed.
#[tokio::test]
async fn kept_attribute_changes_ride_on_the_commit() {
    use mfs_proto::v1::{Credentials, Timespec};
    let c = FakeCluster::start(2, 1).await;
    let io = io_for(&c, IoOptions::default()).await;
    let change = |mode| Deferred {
        mode: Some(mode),
        atime: None,
        mtime: Some(Timespec { sec: 7, nsec: 9 }),
        ctime: None,
        cred: Some(Credentials {
            uid: 5,
            gid: 5,
            groups: Vec::new(),
        }),
    };
    assert!(!io.may_defer(INODE));
    assert!(!io.defer_attrs(INODE, change(0o640)).await);
    io.hold(INODE);
    assert!(io.may_defer(INODE));
    assert!(io.pristine(INODE), "held, nothing committed");
    assert!(io.defer_attrs(INODE, change(0o640)).await);
    assert_eq!(io.deferred(INODE).and_then(|d| d.mode), Some(0o640));

    // Written across two chunks: the changes ride on the first one's end.
    ok(io.write(INODE, CHUNK_SIZE - 10, &[1u8; 20])).await;
    ok(io.flush(INODE)).await;
    let mut ends = c.master.write_chunk_end_calls();
    ends.sort_by_key(|r| r.index);
    let seen: Vec<_> = ends
        .iter()
        .map(|r| (r.index, r.mode, r.cred.as_ref().map(|c| c.uid), r.mtime))
        .collect();
    let t = Some(Timespec { sec: 7, nsec: 9 });
    assert_eq!(seen, vec![(0, Some(0o640), Some(5), t), (1, None, None, t)]);
    assert!(io.deferred(INODE).is_none());
    assert!(c.master.set_attr_calls().is_empty());
    assert!(!io.pristine(INODE), "a commit ran");

    // Nothing written: one SetAttr at the flush, then nothing is left.
    assert!(io.defer_attrs(INODE, change(0o600)).await);
    ok(io.flush(INODE)).await;
    let sets: Vec<_> = c
        .master
        .set_attr_calls()
        .iter()
        .map(|r| (r.mode, r.mtime, r.size))
        .collect();
    assert_eq!(sets, vec![(Some(0o600), t, None)]);
    assert!(io.deferred(INODE).is_none());
    ok(io.flush(INODE)).await;
    assert_eq!(c.master.set_attr_calls().len(), 1);
    io.unhold(INODE);
    assert!(!io.may_defer(INODE));
    assert!(!io.pristine(INODE));
    io.hold(INODE);
    assert!(io.pristine(INODE), "a new holder starts afresh");
    io.unhold(INODE);
}

/// Pieces of one chunk written at once go out in few requests, each with
/// several ranges; a chunkserver older than `more` (it writes the first
/// range only and counts none) gets the others one a request. Both ways
/// every copy holds every byte.
#[tokio::test]
async fn pieces_of_one_chunk_go_together_and_reach_older_servers_too() {
    for older in [false, true] {
        let c = FakeCluster::start(2, 2).await;
        for i in 0..2 {
            c.cs(i).ignores_more.store(older, Ordering::SeqCst);
        }
        let opts = IoOptions {
            max_request: 64 << 10,
            parallelism: 16,
            ..IoOptions::default()
        };
        let io = io_for(&c, opts).await;
        let data = pattern(16 << 16, 3);
        ok(io.write(INODE, 0, &data)).await;
        ok(io.flush(INODE)).await;
        for i in 0..2 {
            let chunks = c.cs(i).chunks.lock().unwrap().clone();
            let held: Vec<&Vec<u8>> = chunks.values().map(|(_, d)| d).collect();
            assert_eq!(held.len(), 1, "older {older}, copy {i}");
            assert!(*held[0] == data, "older {older}: copy {i} differs");
            let ranges = c.cs(i).writes.load(Ordering::SeqCst);
            let requests = c.cs(i).write_requests.load(Ordering::SeqCst);
            assert_eq!(ranges, 16, "older {older}, copy {i}");
            match older {
                false => assert!(requests < 16, "{requests} requests"),
                true => assert_eq!(requests, 16),
            }
        }
        let got = ok(io.read(INODE, 0, data.len() as u32)).await;
        assert!(got == data, "older {older}: read back differs");
    }
}

#[tokio::test]
async fn request_across_chunks_and_pieces_in_parallel() {
    let c = FakeCluster::start(2, 1).await;
    let opts = IoOptions {
        max_request: 64 << 10,
        parallelism: 4,
        ..IoOptions::default()
    };
    let io = io_for(&c, opts).await;
    let start = CHUNK_SIZE - 100_000;
    let data = pattern(250_000, 7);
    ok(io.write(INODE, start, &data)).await;
    // Two chunks, two leases; pieces of at most 64 KiB.
    let calls = c.master.write_chunk_calls();
    let mut indexes: Vec<u32> = calls.iter().map(|r| r.index).collect();
    indexes.sort();
    assert_eq!(indexes, vec![0, 1], "one lease per chunk");
    assert!(c.cs(0).writes.load(Ordering::SeqCst) >= 250_000 / 65_536);
    ok(io.flush(INODE)).await;
    let mut ends: Vec<(u32, u64)> = c
        .master
        .write_chunk_end_calls()
        .iter()
        .map(|r| (r.index, r.file_length))
        .collect();
    ends.sort();
    assert_eq!(ends, vec![(0, start + 250_000), (1, start + 250_000)]);
    let got = ok(io.read(INODE, start - 10, 250_010)).await;
    assert!(got[..10].iter().all(|&b| b == 0));
    assert_eq!(&got[10..], &data[..]);
    // A read inside chunk 0 that is a hole at the master reads zeros.
    let got = ok(io.read(INODE, 0, 1000)).await;
    assert_eq!(got, vec![0u8; 1000]);
}

#[tokio::test]
async fn hole_chunk_reads_as_zeros_without_chunkservers() {
    let c = FakeCluster::start(1, 1).await;
    let io = io_for(&c, IoOptions::default()).await;
    // Only chunk 1 exists; the file is 1.5 chunks long.
    ok(io.write(INODE, CHUNK_SIZE, b"tail")).await;
    ok(io.flush(INODE)).await;
    c.master
        .lengths
        .lock()
        .map(|mut l| l.insert(INODE, CHUNK_SIZE + CHUNK_SIZE / 2))
        .ok();
    let reads_before = c.cs(0).reads.load(Ordering::SeqCst);
    let got = ok(io.read(INODE, 10, 5000)).await;
    assert_eq!(got, vec![0u8; 5000]);
    assert_eq!(c.cs(0).reads.load(Ordering::SeqCst), reads_before);
    let got = ok(io.read(INODE, CHUNK_SIZE, 8)).await;
    assert_eq!(got, b"tail\0\0\0\0");
}

#[tokio::test]
async fn read_fails_over_to_the_second_copy_on_data_loss() {
    let c = FakeCluster::start(2, 2).await;
    let io = io_for(&c, IoOptions::default()).await;
    let data = pattern(10_000, 3);
    ok(io.write(INODE, 0, &data)).await;
    ok(io.flush(INODE)).await;
    // Read as another open would: not from what this client wrote.
    io.invalidate(INODE);
    c.cs(0).mode(Mode::BadReads);
    let rc_before = c.master.read_chunk_calls.load(Ordering::SeqCst);
    let got = ok(io.read(INODE, 0, 10_000)).await;
    assert_eq!(got, data);
    assert_eq!(c.cs(0).reads.load(Ordering::SeqCst), 1, "first copy tried");
    assert_eq!(
        c.cs(1).reads.load(Ordering::SeqCst),
        1,
        "second copy served"
    );
    assert_eq!(
        c.master.read_chunk_calls.load(Ordering::SeqCst) - rc_before,
        1,
        "no need to ask the master again"
    );
}

#[tokio::test]
async fn stale_version_asks_the_master_again() {
    let c = FakeCluster::start(2, 2).await;
    // Without the block cache, which would answer the second read itself.
    let opts = IoOptions {
        block_cache: 0,
        ..IoOptions::default()
    };
    let io = io_for(&c, opts).await;
    let data = pattern(5000, 9);
    ok(io.write(INODE, 0, &data)).await;
    ok(io.flush(INODE)).await;
    ok(io.read(INODE, 0, 100)).await; // caches the location
    let rc = c.master.read_chunk_calls.load(Ordering::SeqCst);
    // Another client's write moves the version on behind our back.
    c.master.set_version(INODE, 0, vec![0, 1]);
    let got = ok(io.read(INODE, 0, 5000)).await;
    assert_eq!(got, data);
    assert_eq!(
        c.master.read_chunk_calls.load(Ordering::SeqCst) - rc,
        1,
        "ESTALE made the client ask ReadChunk once more"
    );
}

#[tokio::test]
async fn small_reads_of_one_block_ask_a_chunkserver_once() {
    let c = FakeCluster::start(1, 1).await;
    let io = io_for(&c, IoOptions::default()).await;
    let mut data = pattern(200_000, 5);
    ok(io.write(INODE, 0, &data)).await;
    ok(io.flush(INODE)).await;
    let reads = || c.cs(0).reads.load(Ordering::SeqCst);
    let check = |got: Vec<u8>, data: &[u8], off: usize| {
        assert_eq!(got, data[off..off + got.len()].to_vec(), "at {off}");
    };
    let r0 = reads();
    for off in [0usize, 4096, 60_000, 8192] {
        check(ok(io.read(INODE, off as u64, 4096)).await, &data, off);
    }
    assert_eq!(reads() - r0, 1, "block 0 fetched once");
    check(ok(io.read(INODE, 70_000, 4096)).await, &data, 70_000);
    assert_eq!(reads() - r0, 2, "block 1 fetched");
    // The last block is short; a read past the end of the file stops there.
    check(ok(io.read(INODE, 196_608, 1000)).await, &data, 196_608);
    let tail = ok(io.read(INODE, 197_608, 4096)).await;
    assert_eq!(tail.len(), 200_000 - 197_608);
    check(tail, &data, 197_608);
    assert_eq!(reads() - r0, 3, "the short last block fetched once");
    // A read of a whole block or more is not kept.
    ok(io.read(INODE, 0, 65_536)).await;
    assert_eq!(reads() - r0, 4);

    // This client's write: the next read of the block sees it.
    ok(io.write(INODE, 100, b"new")).await;
    data[100..103].copy_from_slice(b"new");
    check(ok(io.read(INODE, 0, 4096)).await, &data, 0);
    ok(io.flush(INODE)).await;
    check(ok(io.read(INODE, 0, 4096)).await, &data, 0);
    // Another client's write under a new version: read afresh.
    let before = reads();
    c.master.set_version(INODE, 0, vec![0]);
    io.invalidate(INODE);
    check(ok(io.read(INODE, 4096, 4096)).await, &data, 4096);
    assert_eq!(reads() - before, 1, "asked the chunkserver again");
    // A chunk another session holds the write lease of: nothing kept.
    c.master.others_writing.store(true, Ordering::SeqCst);
    io.invalidate(INODE);
    let before = reads();
    for off in [0usize, 4096, 8192] {
        check(ok(io.read(INODE, off as u64, 4096)).await, &data, off);
    }
    assert_eq!(reads() - before, 3, "every read asked a chunkserver");
}

#[tokio::test]
async fn read_gives_up_after_the_time_limit_when_every_copy_is_bad() {
    let c = FakeCluster::start(2, 2).await;
    let opts = IoOptions {
        timeout: Some(Duration::from_millis(400)),
        ..IoOptions::default()
    };
    let io = io_for(&c, opts).await;
    ok(io.write(INODE, 0, b"abc")).await;
    ok(io.flush(INODE)).await;
    io.invalidate(INODE);
    c.cs(0).mode(Mode::BadReads);
    c.cs(1).mode(Mode::Down);
    match io.read(INODE, 0, 3).await {
        Err(e @ ClientError::Data { .. }) => {
            assert_eq!(e.errno(), crate::error::errno::EIO);
            assert!(e.to_string().contains("read of inode 42 chunk 0"), "{e}");
        }
        other => panic!("expected a data error, got {other:?}"),
    }
    assert!(
        c.master.read_chunk_calls.load(Ordering::SeqCst) >= 3,
        "asked again while retrying"
    );
}

#[tokio::test]
async fn small_writes_go_to_every_copy_at_once_large_ones_along_the_chain() {
    let c = FakeCluster::start(3, 3).await;
    let io = io_for(&c, IoOptions::default()).await;
    let forwarded = |c: &FakeCluster| {
        (0..3)
            .map(|i| c.cs(i).forwarded.load(Ordering::SeqCst))
            .sum::<u64>()
    };
    let small = pattern(4096, 1);
    ok(io.write(INODE, 0, &small)).await;
    ok(io.fsync(INODE)).await;
    for i in 0..3 {
        assert_eq!(c.cs(i).writes.load(Ordering::SeqCst), 1, "copy {i}");
        assert_eq!(c.cs(i).syncs.load(Ordering::SeqCst), 1, "copy {i}");
    }
    assert_eq!(forwarded(&c), 0, "nothing went along the chain");
    // Past FAN_OUT_MAX: to the chain's head, which passes it on twice.
    let large = pattern(1 << 20, 2);
    ok(io.write(INODE, 4096, &large)).await;
    assert_eq!(forwarded(&c), 2);
    ok(io.flush(INODE)).await;
    let mut all = small.clone();
    all.extend_from_slice(&large);
    for i in 0..3 {
        let (_, d) = c.cs(i).data(0x100).unwrap_or_default();
        assert!(d == all, "copy {i} holds what was written");
    }
}

#[tokio::test]
async fn write_whose_chain_head_is_down_renews_the_lease() {
    let c = FakeCluster::start(3, 3).await;
    let io = io_for(&c, IoOptions::default()).await;
    ok(io.write(INODE, 0, b"first")).await;
    c.cs(0).mode(Mode::Down);
    let data = pattern(100_000, 5);
    ok(io.write(INODE, 10, &data)).await;
    let calls = c.master.write_chunk_calls();
    assert_eq!(calls.len(), 2);
    assert!(!calls[0].renew && calls[1].renew, "{calls:?}");
    assert_ne!(calls[0].id, calls[1].id, "a renewal is a new request");
    let chunk = c.master.chunks.lock().map(|m| m[&(INODE, 0)].clone());
    let Ok(chunk) = chunk else { panic!("poisoned") };
    assert_eq!(chunk.copies, vec![1, 2]);
    for i in [1, 2] {
        let (v, d) = c.cs(i).data(chunk.id).unwrap_or_default();
        assert_eq!(v, chunk.version);
        assert_eq!(&d[..5], b"first");
        assert_eq!(&d[10..], &data[..]);
    }
    ok(io.fsync(INODE)).await;
    assert!(c.cs(1).syncs.load(Ordering::SeqCst) >= 1);
    assert!(
        c.cs(2).syncs.load(Ordering::SeqCst) >= 1,
        "sync sent to every copy"
    );
    let ends = c.master.write_chunk_end_calls();
    assert_eq!(ends.len(), 1);
    assert_eq!(ends[0].file_length, 100_010);
}

#[tokio::test]
async fn writes_past_the_quota_room_get_edquot() {
    let c = FakeCluster::start(1, 1).await;
    let io = io_for(&c, IoOptions::default()).await;
    *c.master
        .quota_room
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(10);
    ok(io.write(INODE, 0, b"0123456789")).await;
    match io.write(INODE, 10, b"x").await {
        Err(ClientError::Errno(122, _)) => {}
        other => panic!("a write past the room: {other:?}"),
    }
    // Inside what was allowed, overwrites still work.
    ok(io.write(INODE, 2, b"ab")).await;
    ok(io.flush(INODE)).await;
    assert_eq!(ok(io.read(INODE, 0, 100)).await, b"01ab456789");
}

#[tokio::test]
async fn eagain_from_write_chunk_is_retried() {
    let c = FakeCluster::start(1, 1).await;
    let io = io_for(&c, IoOptions::default()).await;
    c.master.eagain.store(2, Ordering::SeqCst);
    ok(io.write(INODE, 0, b"hello")).await;
    let calls = c.master.write_chunk_calls();
    assert_eq!(calls.len(), 3, "two EAGAIN answers, then the lease");
    ok(io.flush(INODE)).await;
    assert_eq!(ok(io.read(INODE, 0, 100)).await, b"hello");
}

#[tokio::test]
async fn eagain_gives_up_at_the_time_limit() {
    let c = FakeCluster::start(1, 1).await;
    let opts = IoOptions {
        timeout: Some(Duration::from_millis(300)),
        ..IoOptions::default()
    };
    let io = io_for(&c, opts).await;
    c.master.eagain.store(u32::MAX, Ordering::SeqCst);
    let r = io.write(INODE, 0, b"hello").await;
    assert!(
        matches!(&r, Err(ClientError::Data { op: "write", .. })),
        "{r:?}"
    );
    assert_eq!(io.local_length(INODE), None);
}

#[tokio::test]
async fn idle_writes_are_committed_in_the_background() {
    let c = FakeCluster::start(1, 1).await;
    let opts = IoOptions {
        idle_flush: Duration::from_millis(100),
        ..IoOptions::default()
    };
    let io = io_for(&c, opts).await;
    ok(io.write(INODE, 0, b"0123456789")).await;
    assert!(c.master.write_chunk_end_calls().is_empty());
    let mut waited = Duration::ZERO;
    // Until the commit is recorded by the master and its reply handled here.
    while (c.master.write_chunk_end_calls().is_empty() || io.local_length(INODE).is_some())
        && waited < Duration::from_secs(3)
    {
        tokio::time::sleep(Duration::from_millis(25)).await;
        waited += Duration::from_millis(25);
    }
    let ends = c.master.write_chunk_end_calls();
    assert_eq!(ends.len(), 1, "committed once the file was idle");
    assert_eq!(ends[0].file_length, 10);
    assert_eq!(io.local_length(INODE), None);
    // A later write takes a new lease.
    ok(io.write(INODE, 10, b"x")).await;
    assert_eq!(c.master.write_chunk_calls().len(), 2);
}

#[tokio::test]
async fn cached_length_is_refreshed_before_a_short_read() {
    let c = FakeCluster::start(1, 1).await;
    let io = io_for(&c, IoOptions::default()).await;
    let other = io_for(&c, IoOptions::default()).await;
    ok(io.write(INODE, 0, b"abc")).await;
    ok(io.flush(INODE)).await;
    assert_eq!(ok(other.read(INODE, 0, 100)).await, b"abc");
    // The file grows through another client; the reader's cached location
    // says 3 bytes, but a read past it asks the master.
    ok(io.write(INODE, 3, b"defg")).await;
    ok(io.flush(INODE)).await;
    assert_eq!(ok(other.read(INODE, 0, 100)).await, b"abcdefg");
}

#[tokio::test]
async fn write_bytes_sends_slices_of_the_buffer_across_chunks_and_retries() {
    let c = FakeCluster::start(3, 2).await;
    let opts = IoOptions {
        max_request: 64 << 10,
        parallelism: 3,
        ..IoOptions::default()
    };
    let io = io_for(&c, opts).await;
    ok(io.write(INODE, 0, b"x")).await;
    // The lease's chain head goes down: every piece is sent again (the
    // retry reuses the same slice) along the renewed chain.
    c.cs(0).mode(Mode::Down);
    // A buffer handed over as a slice of a bigger one, across a chunk edge.
    let whole = super::Bytes::from(pattern(400_000, 9));
    let part = whole.slice(50_000..350_000);
    let start = CHUNK_SIZE - 120_000;
    ok(io.write_bytes(INODE, start, part.clone())).await;
    assert_eq!(io.local_length(INODE), Some(start + 300_000));
    let got = ok(io.read(INODE, start, 300_000)).await;
    assert_eq!(got, part[..]);
    // The same through read_bytes: many pieces, then one piece (a slice of
    // the reply), then one past the end (short).
    assert_eq!(ok(io.read_bytes(INODE, start, 300_000)).await, part);
    let one = ok(io.read_bytes(INODE, CHUNK_SIZE + 1000, 5000)).await;
    assert_eq!(one, part[121_000..126_000]);
    let tail = ok(io.read_bytes(INODE, start + 299_000, 5000)).await;
    assert_eq!(tail, part[299_000..]);
    // Every copy of both chunks (the down server dropped) holds it.
    for (index, range) in [(0u32, 0..120_000usize), (1, 120_000..300_000)] {
        let chunk = c.master.chunks.lock().map(|m| m[&(INODE, index)].clone());
        let Ok(chunk) = chunk else { panic!("poisoned") };
        assert!(!chunk.copies.is_empty(), "{chunk:?}");
        assert!(!chunk.copies.contains(&0), "{chunk:?}");
        let at = ((start + range.start as u64) % CHUNK_SIZE) as usize;
        for &i in &chunk.copies {
            let (_, d) = c.cs(i).data(chunk.id).unwrap_or_default();
            assert_eq!(
                &d[at..at + range.len()],
                &part[range.clone()],
                "copy on {i}"
            );
        }
    }
    // An empty buffer writes nothing.
    ok(io.write_bytes(INODE, 0, super::Bytes::new())).await;
    assert_eq!(io.local_length(INODE), Some(start + 300_000));
}

#[tokio::test]
async fn a_small_write_is_read_back_from_what_this_client_wrote() {
    let c = FakeCluster::start(2, 2).await;
    let io = io_for(&c, IoOptions::default()).await;
    let data = pattern(4096, 9);
    ok(io.write(INODE, 0, &data)).await;
    ok(io.flush(INODE)).await;
    let reads = || c.cs(0).reads.load(Ordering::SeqCst) + c.cs(1).reads.load(Ordering::SeqCst);
    let before = reads();
    assert_eq!(ok(io.read(INODE, 0, 4096)).await, data);
    assert_eq!(ok(io.read(INODE, 100, 50)).await, data[100..150].to_vec());
    assert_eq!(reads(), before, "answered from what was written");
    // Not at a block's start: the block goes, the chunkserver answers.
    ok(io.write(INODE, 10, b"xyz")).await;
    ok(io.flush(INODE)).await;
    let mut want = data.clone();
    want[10..13].copy_from_slice(b"xyz");
    assert_eq!(ok(io.read(INODE, 0, 4096)).await, want);
    assert!(reads() > before, "read from a copy");
    // Another open with nothing open here drops it too.
    ok(io.write(INODE, 0, &data)).await;
    ok(io.flush(INODE)).await;
    io.invalidate(INODE);
    let before = reads();
    assert_eq!(ok(io.read(INODE, 0, 4096)).await, data);
    assert!(reads() > before);
}

/// Queued ops the master refuses reach the mount's handler by kind: a
/// create (its name and inode to undo) and a directory's attribute change
/// (the directory to give back), each with the master's errno.
#[tokio::test]
async fn refused_queued_ops_reach_the_handler_by_kind() {
    use crate::master::queue::Refused;
    use mfs_proto::v1::{batch_op, BatchOp, CreateAtOp, SetAttrAtOp};
    use std::sync::{Arc, Mutex};
    let c = FakeCluster::start(1, 1).await;
    let io = io_for(&c, IoOptions::default()).await;
    let master = io.master().clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    master.on_queued_refused(Box::new(move |_, r, errno| {
        let what = match r {
            Refused::Made {
                parent,
                name,
                inode,
            } => format!("made {parent} {} {inode}", String::from_utf8_lossy(name)),
            Refused::DirAttrs { dir } => format!("dir {dir}"),
        };
        log.lock().unwrap().push((what, errno));
    }));
    tokio::spawn(master.clone().run_queue());
    master.queue_op(BatchOp {
        op: Some(batch_op::Op::Create(CreateAtOp {
            parent: 5,
            name: b"f".to_vec(),
            inode: 77,
            ..Default::default()
        })),
    });
    master.queue_op(BatchOp {
        op: Some(batch_op::Op::Setattr(SetAttrAtOp {
            inode: 9,
            mode: Some(0o700),
            ..Default::default()
        })),
    });
    master.queue_barrier().await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            ("made 5 f 77".to_string(), libc::EEXIST),
            ("dir 9".to_string(), libc::EPERM),
        ]
    );
}
