//! The data path end to end: real masters and chunkservers, the client I/O
//! library, real kills, bytes flipped on disk. Contents are checked against
//! a generated pattern, never against what the code under test believes.

use std::time::{Duration, Instant};

use mfs_mount::io::{FileIo, IoOptions};
use mfs_mount::master::MasterClient;
use mfs_proto::v1::chunk_service_client::ChunkServiceClient;
use mfs_proto::v1::{
    ChunkLocation, ChunkReadRequest, ChunkWriteRequest, MkdirRequest, OpenMode, OpenRequest,
    SetAttrRequest, SetGoalRequest, WriteChunkEndRequest, WriteChunkRequest,
};
use mfs_tests::cluster::Cluster;

use crate::util::{create_req, root_cred, step};

pub(crate) const MIB: u64 = 1 << 20;
const CHUNK: u64 = 64 * MIB;

/// Deterministic bytes for file `seed` (xorshift; cheap enough for 200 MiB).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Makes directory `name` in the root with goal `goal`; returns its inode.
pub(crate) async fn goal_dir(cl: &MasterClient, name: &str, goal: u32) -> u64 {
    let d = cl
        .mkdir(MkdirRequest {
            id: None,
            cred: Some(root_cred()),
            parent: 1,
            name: name.as_bytes().to_vec(),
            mode: 0o755,
            umask: 0,
        })
        .await
        .unwrap();
    cl.set_goal(SetGoalRequest {
        id: None,
        cred: Some(root_cred()),
        inode: d.inode,
        goal,
        recursive: false,
    })
    .await
    .unwrap();
    d.inode
}

/// Creates `name` in `dir` and writes `data` to it in `piece`-byte writes;
/// returns the inode once the data is flushed (acknowledged).
pub(crate) async fn write_file(
    io: &FileIo,
    cl: &MasterClient,
    dir: u64,
    name: &str,
    data: &[u8],
) -> u64 {
    let inode = new_file(cl, dir, name).await;
    write_at(io, inode, 0, data).await;
    inode
}

async fn write_at(io: &FileIo, inode: u64, offset: u64, data: &[u8]) {
    for (i, piece) in data.chunks(4 * MIB as usize).enumerate() {
        io.write(inode, offset + i as u64 * 4 * MIB, piece)
            .await
            .unwrap_or_else(|e| panic!("write of inode {inode} at piece {i}: {e}"));
    }
    io.flush(inode).await.unwrap();
    io.fsync(inode).await.unwrap();
}

/// An Open of `inode` for reading, as root.
fn open_to_read(inode: u64) -> OpenRequest {
    OpenRequest {
        id: None,
        cred: Some(root_cred()),
        inode,
        mode: OpenMode::Read as i32,
        truncate: false,
        lease_first_chunk: false,
    }
}

/// Reads the whole file through a fresh client (no cached locations) and
/// compares it with `want`.
pub(crate) async fn check_file(c: &Cluster, inode: u64, want: &[u8]) {
    let cl = c.client("reader").await.unwrap();
    let io = FileIo::new(cl.clone(), IoOptions::default());
    let a = cl.open(open_to_read(inode)).await.unwrap();
    assert_eq!(a.size, want.len() as u64, "length of inode {inode}");
    let mut off = 0usize;
    while off < want.len() {
        let n = (8 * MIB as usize).min(want.len() - off);
        let got = io.read(inode, off as u64, n as u32).await.unwrap();
        assert_eq!(got.len(), n, "short read of inode {inode} at {off}");
        if got[..] != want[off..off + n] {
            let first = got
                .iter()
                .zip(&want[off..off + n])
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            panic!("inode {inode}: content differs at byte {}", off + first);
        }
        off += n;
    }
    // Reading past the end gives nothing.
    let past = io.read(inode, want.len() as u64, 4096).await.unwrap();
    assert!(past.is_empty(), "read past EOF of inode {inode} gave data");
    let _ = cl.close_session().await;
}

/// Reads every copy of every chunk of `inode` straight from the
/// chunkservers that the leader lists, and compares each with `want`;
/// the number of copies seen, or what went wrong.
pub(crate) async fn read_every_copy(
    cl: &MasterClient,
    inode: u64,
    want: &[u8],
) -> Result<usize, String> {
    let mut copies = 0;
    let chunks = (want.len() as u64).div_ceil(CHUNK);
    for index in 0..chunks {
        let loc = cl
            .read_chunk(inode, index as u32)
            .await
            .map_err(|e| format!("ReadChunk {index}: {e}"))?;
        let start = (index * CHUNK) as usize;
        let end = (start + CHUNK as usize).min(want.len());
        for s in &loc.servers {
            let mut cs = ChunkServiceClient::connect(format!("http://{}", s.address))
                .await
                .map_err(|e| format!("connect {}: {e}", s.address))?
                .max_decoding_message_size(64 << 20);
            let mut off = 0usize;
            while start + off < end {
                let n = (8 * MIB as usize).min(end - start - off);
                let r = cs
                    .read(ChunkReadRequest {
                        chunk_id: loc.chunk_id,
                        version: loc.version,
                        offset: off as u64,
                        size: n as u32,
                        missing_is_hole: false,
                        token: Vec::new(),
                    })
                    .await
                    .map_err(|e| format!("copy on {} of chunk {index}: {e}", s.address))?
                    .into_inner();
                if r.data[..] != want[start + off..start + off + n] {
                    return Err(format!("copy on {} of chunk {index} differs", s.address));
                }
                off += n;
            }
            copies += 1;
        }
    }
    Ok(copies)
}

/// Waits (the leader's view of copies trails the chunkservers' by a
/// heartbeat) until every listed copy reads right and there are `expect`.
pub(crate) async fn check_every_copy(cl: &MasterClient, inode: u64, want: &[u8], expect: usize) {
    eventually(Duration::from_secs(30), || async {
        match read_every_copy(cl, inode, want).await {
            Ok(n) if n == expect => Ok(()),
            r => Err(format!("copies of inode {inode}: {r:?}, want {expect}")),
        }
    })
    .await;
}

/// Polls `check` every 500 ms until it passes; panics with its last
/// complaint after `within`. Returns how long it took.
pub(crate) async fn eventually<F, Fut>(within: Duration, mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let t = Instant::now();
    loop {
        match check().await {
            Ok(()) => return t.elapsed(),
            Err(why) => assert!(t.elapsed() < within, "{why}"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) async fn cluster(masters: usize, chunkservers: usize, disks: usize) -> Cluster {
    let mut c = Cluster::start(masters, &[]).await.unwrap();
    c.add_chunkservers(chunkservers, disks).await.unwrap();
    c
}

fn total_chunk_files(c: &Cluster) -> usize {
    (1..=c.chunkservers.len())
        .map(|n| c.chunk_files(n).unwrap().len())
        .sum()
}

/// Files of 0 B, 1 B, 64 KiB ± 1, 64 MiB ± 1 and 200 MiB with goal 2 read
/// back byte for byte, and every chunk has its two copies on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_round_trip_with_goal_2() {
    step("1 master, 3 chunkservers");
    let c = cluster(1, 3, 1).await;
    let cl = c.client("writer").await.unwrap();
    let io = FileIo::new(cl.clone(), IoOptions::default());
    let dir = goal_dir(&cl, "g2", 2).await;
    let sizes: [u64; 9] = [
        0,
        1,
        65535,
        65536,
        65537,
        CHUNK - 1,
        CHUNK,
        CHUNK + 1,
        200 * MIB,
    ];
    let mut files = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        step(&format!("write {size} bytes"));
        let data = pattern(i as u64, *size as usize);
        let ino = write_file(&io, &cl, dir, &format!("f{i}"), &data).await;
        files.push((ino, i as u64, *size));
    }
    step("read back through a fresh client");
    for (ino, seed, size) in &files {
        check_file(&c, *ino, &pattern(*seed, *size as usize)).await;
    }
    step("every chunk has 2 copies, and the copies agree");
    c.wait_chunks_at_goal(Duration::from_secs(30))
        .await
        .unwrap();
    let mut chunks = 0;
    for (ino, seed, size) in &files {
        let n = size.div_ceil(CHUNK) as usize;
        check_every_copy(&cl, *ino, &pattern(*seed, *size as usize), 2 * n).await;
        chunks += n;
    }
    assert_eq!(total_chunk_files(&c), 2 * chunks, "chunk files on disk");
}

/// ReadChunk tells a reader when another session holds the chunk's write
/// lease (its data may change under the same version, so the reader's
/// block cache keeps none of it), and stops saying so once the write is
/// committed (at a new version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_location_says_when_another_session_writes() {
    let c = cluster(1, 2, 1).await;
    let w = c.client("writer").await.unwrap();
    let io = FileIo::new(w.clone(), IoOptions::default());
    let dir = goal_dir(&w, "d", 2).await;
    let inode = write_file(&io, &w, dir, "f", &pattern(1, 100_000)).await;
    let r = c.client("reader").await.unwrap();
    r.open(open_to_read(inode)).await.unwrap();
    let before = r.read_chunk(inode, 0).await.unwrap();
    assert!(!before.written_by_others, "nobody writes yet");

    step("the writer holds the lease");
    io.write(inode, 0, b"new").await.unwrap();
    let during = r.read_chunk(inode, 0).await.unwrap();
    assert!(during.written_by_others, "{during:?}");
    assert!(
        !w.read_chunk(inode, 0).await.unwrap().written_by_others,
        "the writer's own session is not another"
    );

    step("the write is committed");
    io.flush(inode).await.unwrap();
    let after = r.read_chunk(inode, 0).await.unwrap();
    assert!(!after.written_by_others, "{after:?}");
    assert!(after.version > before.version);
}

/// A new file's inode, made in `dir`.
pub(crate) async fn new_file(cl: &MasterClient, dir: u64, name: &str) -> u64 {
    let mut req = create_req(name);
    req.parent = dir;
    cl.create(req).await.unwrap().inode
}

/// WriteChunk of chunk 0 of `inode`, as root.
pub(crate) fn lease_of(inode: u64, renew: bool) -> WriteChunkRequest {
    WriteChunkRequest {
        id: None,
        cred: Some(root_cred()),
        inode,
        index: 0,
        renew,
        lease_servers: Vec::new(),
    }
}

/// SetAttr of `inode`'s size, as root.
fn resize(inode: u64, size: u64) -> SetAttrRequest {
    SetAttrRequest {
        id: None,
        cred: Some(root_cred()),
        inode,
        size: Some(size),
        ..Default::default()
    }
}

/// Writes `data` at `offset` of the chunk of `loc` along its chain,
/// straight to the chunkservers (`create`: the lease's writes make it).
pub(crate) async fn write_on_chain(
    loc: &ChunkLocation,
    create: bool,
    offset: u64,
    data: Vec<u8>,
) -> Result<(), tonic::Status> {
    let (head, rest) = loc.servers.split_first().unwrap();
    let mut cs = ChunkServiceClient::connect(format!("http://{}", head.address))
        .await
        .unwrap();
    cs.write(ChunkWriteRequest {
        chunk_id: loc.chunk_id,
        version: loc.version,
        offset,
        data: data.into(),
        chain: rest.iter().map(|s| s.address.clone()).collect(),
        create,
        token: Vec::new(),
        more: Vec::new(),
    })
    .await
    .map(|_| ())
}

/// A write of the (old) lease `loc` that may make its chunk is refused by
/// each of its servers on its own (ESTALE).
async fn old_lease_makes_nothing(loc: &ChunkLocation) {
    for s in &loc.servers {
        let mut only = loc.clone();
        only.servers = vec![s.clone()];
        let e = write_on_chain(&only, true, 0, vec![9; 10])
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    }
}

/// A new chunk is made on its chain by the first write that reaches it
/// (the lease says `create`), not by an order before the lease: no file
/// on the chunkservers before that write. A lease renewed before the leader
/// heard of the copies keeps what was written under the old one, and a
/// write of the old lease that comes late can make nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_chunk_is_made_by_its_first_write() {
    let c = cluster(1, 3, 1).await;
    let w = c.client("writer").await.unwrap();
    let dir = goal_dir(&w, "d", 2).await;
    let files = || total_chunk_files(&c);

    step("the lease of a new chunk: two servers, nothing on them yet");
    let inode = new_file(&w, dir, "f").await;
    let first = w.write_chunk(lease_of(inode, false)).await.unwrap();
    assert!(first.create, "{first:?}");
    assert_eq!((first.version, first.servers.len()), (1, 2), "{first:?}");
    assert_eq!(files(), 0, "a chunk file before any write");

    step("the first write makes it on the chain");
    let a = pattern(1, 4096);
    write_on_chain(&first, true, 0, a.clone()).await.unwrap();
    assert_eq!(files(), 2);

    step("renewed at once: the chain's copies take the new version");
    let second = w.write_chunk(lease_of(inode, true)).await.unwrap();
    // Above the first (a leadership's first change of a chunk skips the
    // versions earlier leaders may have used unlogged).
    assert!(second.version > first.version, "{second:?}");
    assert!(!second.create, "{second:?}");
    let ids = |l: &ChunkLocation| {
        let mut v: Vec<_> = l.servers.iter().map(|s| s.id).collect();
        v.sort();
        v
    };
    assert_eq!(
        ids(&second),
        ids(&first),
        "the servers the first write reached"
    );
    let b = pattern(2, 4096);
    write_on_chain(&second, false, 4096, b.clone())
        .await
        .unwrap();

    step("a late write of the first lease is refused everywhere");
    old_lease_makes_nothing(&first).await;
    // A client's own time is for a batch of a directory it holds only.
    let timed = w
        .write_chunk_end(WriteChunkEndRequest {
            inode,
            index: 0,
            chunk_id: second.chunk_id,
            file_length: 8192,
            time: Some(mfs_proto::v1::Timespec { sec: 1, nsec: 0 }),
            ..Default::default()
        })
        .await;
    let refused = format!("{:?}", timed.expect_err("a commit with the client's time"));
    assert!(refused.contains("only for a Batch"), "{refused}");
    w.write_chunk_end(WriteChunkEndRequest {
        id: None,
        inode,
        index: 0,
        chunk_id: second.chunk_id,
        file_length: 8192,
        created: false,
        ..Default::default()
    })
    .await
    .unwrap();
    let want = [a, b].concat();
    check_file(&c, inode, &want).await;
    check_every_copy(&w, inode, &want, 2).await;

    step("renewed before any write: made anew, an old write makes nothing");
    let inode = new_file(&w, dir, "g").await;
    let first = w.write_chunk(lease_of(inode, false)).await.unwrap();
    assert!(first.create);
    let before = files();
    let second = w.write_chunk(lease_of(inode, true)).await.unwrap();
    assert!(second.version > first.version, "{second:?}");
    assert_eq!(files(), before + 2, "made by orders at the new version");
    old_lease_makes_nothing(&first).await;
    assert_eq!(files(), before + 2, "a write of the old lease made a copy");

    step("a reader of a new chunk nothing was written to yet gets zeros");
    let inode = new_file(&w, dir, "sparse").await;
    w.setattr(resize(inode, MIB)).await.unwrap();
    let held = w.write_chunk(lease_of(inode, false)).await.unwrap();
    assert!(held.create, "{held:?}");
    let r = c.client("reader").await.unwrap();
    r.open(open_to_read(inode)).await.unwrap();
    let loc = r.read_chunk(inode, 0).await.unwrap();
    assert!(loc.create, "the chain stands for copies: {loc:?}");
    assert_eq!(loc.servers.len(), 2, "{loc:?}");
    let rio = FileIo::new(r.clone(), IoOptions::default());
    let got = rio.read(inode, 4096, 8192).await.unwrap();
    assert_eq!(&got[..], &[0u8; 8192][..]);

    step("cut while its first write is not ended: the tail reads as zeros");
    let inode = new_file(&w, dir, "cut").await;
    let held = w.write_chunk(lease_of(inode, false)).await.unwrap();
    assert!(held.create, "{held:?}");
    let data = pattern(4, 8192);
    write_on_chain(&held, true, 0, data.clone()).await.unwrap();
    w.setattr(resize(inode, 8192)).await.unwrap();
    w.setattr(resize(inode, 1000)).await.unwrap();
    w.setattr(resize(inode, 8192)).await.unwrap();
    let mut want = data[..1000].to_vec();
    want.resize(8192, 0);
    check_file(&c, inode, &want).await;

    step("through the client: the copies are known when the write ends");
    let io = FileIo::new(w.clone(), IoOptions::default());
    let data = pattern(3, 100_000);
    let inode = write_file(&io, &w, dir, "h", &data).await;
    let loc = w.read_chunk(inode, 0).await.unwrap();
    assert_eq!(loc.servers.len(), 2, "{loc:?}");
    assert_eq!(read_every_copy(&w, inode, &data).await, Ok(2));
}

/// kill -9 of a chunkserver: files still read right, chunks are back at goal
/// on the others within a minute; when it returns, the extras go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunkserver_loss_and_return() {
    let mut c = cluster(1, 3, 1).await;
    let cl = c.client("writer").await.unwrap();
    let io = FileIo::new(cl.clone(), IoOptions::default());
    let dir = goal_dir(&cl, "g2", 2).await;
    let sizes = [
        MIB as usize,
        (CHUNK + 3 * MIB) as usize,
        5 * MIB as usize + 7,
    ];
    let mut files = Vec::new();
    for (i, size) in sizes.iter().enumerate() {
        let data = pattern(100 + i as u64, *size);
        files.push((
            write_file(&io, &cl, dir, &format!("f{i}"), &data).await,
            data,
        ));
    }
    let chunks: usize = sizes
        .iter()
        .map(|s| (*s as u64).div_ceil(CHUNK) as usize)
        .sum();
    c.wait_chunks_at_goal(Duration::from_secs(30))
        .await
        .unwrap();

    step("kill -9 chunkserver 1");
    c.kill_chunkserver(1).unwrap();
    for (ino, data) in &files {
        check_file(&c, *ino, data).await;
    }
    step("back at goal on the two others within a minute");
    let took = eventually(Duration::from_secs(60), || async {
        let on_others = c.chunk_files(2).unwrap().len() + c.chunk_files(3).unwrap().len();
        if on_others == 2 * chunks {
            Ok(())
        } else {
            Err(format!(
                "{on_others} copies on the live chunkservers, want {}",
                2 * chunks
            ))
        }
    })
    .await;
    eprintln!("re-replicated in {took:?}");
    c.wait_chunks_at_goal(Duration::from_secs(30))
        .await
        .unwrap();
    for (ino, data) in &files {
        check_file(&c, *ino, data).await;
    }

    step("chunkserver 1 returns: the extra copies are removed");
    c.start_chunkserver(1).unwrap();
    c.wait_chunkservers(3, Duration::from_secs(30))
        .await
        .unwrap();
    eventually(Duration::from_secs(60), || async {
        match total_chunk_files(&c) {
            n if n == 2 * chunks => Ok(()),
            n => Err(format!("{n} copies on disk, want {}", 2 * chunks)),
        }
    })
    .await;
    c.wait_chunks_at_goal(Duration::from_secs(30))
        .await
        .unwrap();
    for (ino, data) in &files {
        check_file(&c, *ino, data).await;
        let n = (data.len() as u64).div_ceil(CHUNK) as usize;
        check_every_copy(&cl, *ino, data, 2 * n).await;
    }
}

/// A byte flipped in a chunk file: reads stay right, the bad copy is
/// replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flipped_byte_is_repaired() {
    let c = cluster(1, 3, 1).await;
    let cl = c.client("writer").await.unwrap();
    let io = FileIo::new(cl.clone(), IoOptions::default());
    let dir = goal_dir(&cl, "g2", 2).await;
    let data = pattern(7, 3 * MIB as usize);
    let ino = write_file(&io, &cl, dir, "f", &data).await;
    c.wait_chunks_at_goal(Duration::from_secs(30))
        .await
        .unwrap();

    step("flip a byte in the data area of one copy");
    let victim = (1..=3)
        .find_map(|n| c.chunk_files(n).unwrap().into_iter().next())
        .expect("a chunk file");
    let mut bytes = std::fs::read(&victim).unwrap();
    let at = bytes.len() - 1000; // well inside the data, past any header
    bytes[at] ^= 0x5a;
    std::fs::write(&victim, &bytes).unwrap();

    step("reads stay right (a bad copy is never served)");
    for _ in 0..6 {
        check_file(&c, ino, &data).await;
    }
    step("the bad copy is dropped and replaced");
    eventually(Duration::from_secs(60), || async {
        let flipped_still_there =
            std::fs::read(&victim).is_ok_and(|b| b.get(at) == Some(&bytes[at]));
        if !flipped_still_there && c.wait_chunks_at_goal(Duration::from_secs(1)).await.is_ok() {
            Ok(())
        } else {
            Err("bad copy not repaired".into())
        }
    })
    .await;
    check_every_copy(&cl, ino, &data, 2).await;
}

/// A chunkserver that missed a write comes back with an old copy: it is
/// stale, never served, and replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_copy_is_never_served() {
    let mut c = cluster(1, 2, 1).await;
    let cl = c.client("writer").await.unwrap();
    let io = FileIo::new(cl.clone(), IoOptions::default());
    let dir = goal_dir(&cl, "g2", 2).await;
    let old = pattern(1, 2 * MIB as usize);
    let ino = write_file(&io, &cl, dir, "f", &old).await;
    c.wait_chunks_at_goal(Duration::from_secs(30))
        .await
        .unwrap();

    step("chunkserver 1 down; the file is rewritten on chunkserver 2 alone");
    c.kill_chunkserver(1).unwrap();
    let new = pattern(2, 2 * MIB as usize);
    write_at(&io, ino, 0, &new).await;
    step("chunkserver 1 returns with the old copy");
    c.start_chunkserver(1).unwrap();
    c.wait_chunkservers(2, Duration::from_secs(30))
        .await
        .unwrap();
    for _ in 0..10 {
        check_file(&c, ino, &new).await;
    }
    c.wait_chunks_at_goal(Duration::from_secs(60))
        .await
        .unwrap();
    check_every_copy(&cl, ino, &new, 2).await;
}

/// A disk marked `*` in mfshdd.cfg is drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marked_disk_is_drained() {
    let mut c = cluster(1, 3, 2).await;
    let cl = c.client("writer").await.unwrap();
    let io = FileIo::new(cl.clone(), IoOptions::default());
    let dir = goal_dir(&cl, "g1", 1).await;
    let mut files = Vec::new();
    for i in 0..12u64 {
        let data = pattern(50 + i, MIB as usize / 2);
        files.push((
            write_file(&io, &cl, dir, &format!("f{i}"), &data).await,
            data,
        ));
    }
    let disk = c.chunkserver(1).unwrap().disks[0].clone();
    let on_disk = |c: &Cluster| {
        c.chunk_files(1)
            .unwrap()
            .iter()
            .filter(|p| p.starts_with(&disk))
            .count()
    };
    // Make sure the disk has something to drain.
    if on_disk(&c) == 0 {
        for i in 12..40u64 {
            let data = pattern(50 + i, 4096);
            files.push((
                write_file(&io, &cl, dir, &format!("f{i}"), &data).await,
                data,
            ));
        }
    }
    assert!(on_disk(&c) > 0, "no chunk landed on the disk to drain");

    step("mark disk 1 of chunkserver 1 for removal");
    c.mark_disk_for_removal(1, 0).await.unwrap();
    eventually(Duration::from_secs(90), || async {
        match on_disk(&c) {
            0 => Ok(()),
            n => Err(format!("{n} chunks still on the marked disk")),
        }
    })
    .await;
    c.wait_chunks_at_goal(Duration::from_secs(30))
        .await
        .unwrap();
    for (ino, data) in &files {
        check_file(&c, *ino, data).await;
    }
}

/// kill -9 of a chunkserver while new files are written (their chunks are
/// made by the writes): every write completes without an error, on the
/// servers left, and every file reads back right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunkserver_killed_during_new_file_writes() {
    let mut c = cluster(1, 3, 1).await;
    let cl = c.client("writer").await.unwrap();
    let io = FileIo::new(cl.clone(), IoOptions::default());
    let dir = goal_dir(&cl, "g2", 2).await;
    let writer = {
        let (io, cl) = (io.clone(), cl.clone());
        tokio::spawn(async move {
            let mut files = Vec::new();
            for i in 0..80u64 {
                let data = pattern(500 + i, 50_000 + i as usize * 997);
                let ino = new_file(&cl, dir, &format!("f{i}")).await;
                io.write(ino, 0, &data).await?;
                io.flush(ino).await?;
                files.push((ino, data));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<_, mfs_mount::ClientError>(files)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    step("kill -9 chunkserver 1 while files are written");
    c.kill_chunkserver(1).unwrap();
    let killed = Instant::now();
    let files = writer
        .await
        .unwrap()
        .expect("every write completes on the chunkservers left");
    eprintln!("the writes ended {:?} after the kill", killed.elapsed());
    for (ino, data) in &files {
        check_file(&c, *ino, data).await;
    }
}

/// kill -9 of the leader during a long write: every call completes (the
/// client waits for the new leader) and every acknowledged byte is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_write() {
    let mut c = cluster(3, 3, 1).await;
    let cl = c.client("writer").await.unwrap();
    let io = FileIo::new(cl.clone(), IoOptions::default());
    let dir = goal_dir(&cl, "g2", 2).await;
    let data = pattern(9, 96 * MIB as usize);
    let ino = new_file(&cl, dir, "big").await;

    let writer = {
        let io = io.clone();
        let data = data.clone();
        tokio::spawn(async move {
            let step = 8 * MIB as usize;
            for (i, piece) in data.chunks(step).enumerate() {
                io.write(ino, (i * step) as u64, piece).await?;
                io.flush(ino).await?;
            }
            io.fsync(ino).await
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = c.wait_leader(Duration::from_secs(10)).await.unwrap();
    step(&format!("kill -9 leader master{leader} during the write"));
    c.kill(leader).unwrap();
    writer
        .await
        .unwrap()
        .expect("the write must complete across the leader change");
    c.restart(leader).unwrap();
    check_file(&c, ino, &data).await;
    c.wait_chunks_at_goal(Duration::from_secs(60))
        .await
        .unwrap();
    check_every_copy(&cl, ino, &data, 4).await;
}
