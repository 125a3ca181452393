//! Chunk versions across leader changes (the version protocol: copies are
//! bumped on the chunkservers first, the version committed after). What a
//! leader killed between the two leaves behind is made here on purpose,
//! by orders sent straight to the chunkservers while no leader is up, and
//! the new leader is asked before its planner (5 s grace) would repair it.

use std::time::{Duration, Instant};

use mfs_mount::io::{FileIo, IoOptions};
use mfs_mount::master::MasterClient;
use mfs_proto::v1::chunk_service_client::ChunkServiceClient;
use mfs_proto::v1::{ChunkOrder, ChunkStatusRequest, WriteChunkEndRequest, WriteChunkRequest};
use mfs_tests::cluster::Cluster;

use crate::data::{
    check_every_copy, check_file, cluster, goal_dir, lease_of, new_file, pattern, write_file,
    write_on_chain,
};
use crate::util::step;

/// A dead leader's chunkserver registrations, counted per master.
fn registrations(c: &Cluster) -> Vec<usize> {
    (1..=c.masters.len() as u64)
        .map(|id| c.log(id).matches("chunkserver registered").count())
        .collect()
}

/// Waits for a new leader (not `old`) with which both chunkservers
/// registered since `before` (its log says so twice more), then starts
/// `old` again. Asked again until then: a master just started may call
/// itself the leader for a moment before it hears from the others.
async fn new_leader_after(c: &mut Cluster, old: u64, before: &[usize]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let new = loop {
        let new = c.wait_leader(Duration::from_secs(30)).await.unwrap();
        if new != old && registrations(c)[new as usize - 1] >= before[new as usize - 1] + 2 {
            break new;
        }
        assert!(
            Instant::now() < deadline,
            "chunkservers did not register with a new leader (master{new} leads; registrations per master before {before:?}, now {:?})",
            registrations(c)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Their full reports follow the registration at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    c.restart(old).unwrap();
    new
}

/// Kills the leader of `c` and returns the new one once both chunkservers
/// registered with it.
async fn new_leader_with_reports(c: &mut Cluster) -> u64 {
    let old = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let before = registrations(c);
    c.kill(old).unwrap();
    new_leader_after(c, old, &before).await
}

/// Kills the leader, and before another is up moves chunk `chunk`'s
/// copies on `servers` from `from` to `to`, as a leader that bumped them
/// and died before its commit would have; returns the new leader once it
/// has their reports.
async fn leader_dies_after_bump(
    c: &mut Cluster,
    servers: &[String],
    chunk: u64,
    from: u32,
    to: u32,
) -> u64 {
    let old = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let before = registrations(c);
    c.kill(old).unwrap();
    for s in servers {
        let mut cs = ChunkServiceClient::connect(format!("http://{s}"))
            .await
            .unwrap();
        cs.set_version(ChunkOrder {
            chunk_id: chunk,
            version: from,
            new_version: to,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("set version {from} -> {to} on {s}: {e}"));
        let st = cs
            .chunk_status(ChunkStatusRequest { chunk_id: chunk })
            .await
            .unwrap()
            .into_inner();
        assert!(st.present && st.version == to, "{s}: {st:?}");
    }
    new_leader_after(c, old, &before).await
}

/// WriteChunkEnd of chunk 0 (`chunk`) of `inode`, the file `length` long.
async fn end_write(cl: &MasterClient, inode: u64, chunk: u64, length: u64) {
    cl.write_chunk_end(WriteChunkEndRequest {
        id: None,
        inode,
        index: 0,
        chunk_id: chunk,
        file_length: length,
        created: false,
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Copies bumped above the committed version by leaders that died before
/// committing (twice in a row: two versions above) are not lost: a read
/// waits (EAGAIN, retried) until the new leader's planner sets them back
/// and then gets the file; a write lease takes them on, to the version
/// after the highest, and the write lands on both copies. Both once ended
/// in EIO (seen in CI: committed 6, both copies at 7). A copy moved up
/// alone is left behind by the next lease, which goes above its version:
/// at the same version it would pass for a copy the lease wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_bumped_by_dead_leaders_are_read_and_written_on() {
    let mut c = cluster(3, 2, 1).await;
    let cl = c.client("writer").await.unwrap();
    let io = FileIo::new(cl.clone(), IoOptions::default());
    let dir = goal_dir(&cl, "g2", 2).await;
    let mut data = pattern(3, 300_000);
    let ino = write_file(&io, &cl, dir, "f", &data).await;
    let loc = cl.read_chunk(ino, 0).await.unwrap();
    let servers: Vec<String> = loc.servers.iter().map(|s| s.address.clone()).collect();
    let (chunk, v) = (loc.chunk_id, loc.version);
    assert_eq!(servers.len(), 2, "{loc:?}");

    step(&format!(
        "copies of chunk {chunk} moved {v} -> {} by a dying leader: read",
        v + 1
    ));
    leader_dies_after_bump(&mut c, &servers, chunk, v, v + 1).await;
    let t = Instant::now();
    check_file(&c, ino, &data).await;
    eprintln!("read after {:?}", t.elapsed());

    step(&format!(
        "moved {v} -> {} and on to {} by two dying leaders: a write lease takes them on",
        v + 1,
        v + 2
    ));
    leader_dies_after_bump(&mut c, &servers, chunk, v, v + 1).await;
    leader_dies_after_bump(&mut c, &servers, chunk, v + 1, v + 2).await;
    let lease = cl.write_chunk(lease_of(ino, false)).await.unwrap();
    assert_eq!(lease.chunk_id, chunk, "{lease:?}");
    // Above the copies' version (at or above the one leaders logged as
    // ordered, which may be higher).
    assert!(lease.version > v + 2, "{lease:?}");
    assert_eq!(lease.servers.len(), 2, "{lease:?}");
    let piece = pattern(4, 4096);
    write_on_chain(&lease, false, 8192, piece.clone())
        .await
        .unwrap();
    end_write(&cl, ino, chunk, data.len() as u64).await;
    data[8192..8192 + 4096].copy_from_slice(&piece);
    check_file(&c, ino, &data).await;
    check_every_copy(&cl, ino, &data, 2).await;

    let v = lease.version;
    step(&format!(
        "one copy moved {v} -> {}: the next lease goes above it, on the other copy",
        v + 1
    ));
    leader_dies_after_bump(&mut c, &servers[..1], chunk, v, v + 1).await;
    let lease = cl.write_chunk(lease_of(ino, false)).await.unwrap();
    assert!(lease.version > v + 1, "{lease:?}");
    let chain: Vec<&str> = lease.servers.iter().map(|s| s.address.as_str()).collect();
    assert_eq!(chain, vec![servers[1].as_str()], "{lease:?}");
    let piece = pattern(5, 4096);
    write_on_chain(&lease, false, 0, piece.clone())
        .await
        .unwrap();
    end_write(&cl, ino, chunk, data.len() as u64).await;
    data[..4096].copy_from_slice(&piece);
    check_file(&c, ino, &data).await;
    // The copy left at the version in between is stale, never served as
    // one of the written copies; the planner replaces it.
    check_every_copy(&cl, ino, &data, 2).await;
}

/// A new leader that knows no copy of a fresh chunk (a lease was given,
/// nothing written) waits for reports through its grace period (EAGAIN),
/// unless the writer tells it no write went through: a renewal naming the
/// renewed lease's servers (one has reported without the chunk), or a
/// first lease asked by the file's only opener. Leaders replaced every few
/// seconds once kept a writer waiting until they stopped (60 s in the
/// failover test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_makes_a_fresh_chunk_anew_when_no_write_went_through() {
    let mut c = cluster(3, 2, 1).await;
    let w = c.client("writer").await.unwrap();
    let dir = goal_dir(&w, "d", 2).await;
    let f = new_file(&w, dir, "f").await;
    let g = new_file(&w, dir, "g").await;
    let first_f = w.write_chunk(lease_of(f, false)).await.unwrap();
    let first_g = w.write_chunk(lease_of(g, false)).await.unwrap();
    assert!(first_f.create && first_g.create);

    step("the leader dies before any write; the new one has the reports");
    new_leader_with_reports(&mut c).await;

    step("a renewal that does not name its servers waits (EAGAIN)");
    let err = w.write_chunk(lease_of(f, true)).await.unwrap_err();
    assert_eq!(err.errno(), libc::EAGAIN, "{err}");

    step("one that names them is made anew at once, and writes land");
    let named = WriteChunkRequest {
        lease_servers: first_f.servers.iter().map(|s| s.address.clone()).collect(),
        ..lease_of(f, true)
    };
    let second = w.write_chunk(named).await.unwrap();
    assert!(second.version > first_f.version, "{second:?}");
    let data = pattern(7, 4096);
    write_on_chain(&second, second.create, 0, data.clone())
        .await
        .unwrap();
    w.write_chunk_end(WriteChunkEndRequest {
        id: None,
        inode: f,
        index: 0,
        chunk_id: second.chunk_id,
        file_length: 4096,
        created: second.create,
        ..Default::default()
    })
    .await
    .unwrap();
    check_file(&c, f, &data).await;

    step("a first lease asked by the file's only opener is given at once");
    let lease = w.write_chunk(lease_of(g, false)).await.unwrap();
    assert_eq!(lease.chunk_id, first_g.chunk_id, "{lease:?}");
}
