//! Process-level tests of the chunkserver: real gRPC servers on
//! 127.0.0.1:0 in this process (data service, chains, replication, the
//! master link against a fake registry), and the binary's start-up errors.

mod link;

use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Instant;

use mfs_chunk::hdd::DiskSpec;
use mfs_chunk::store::{Store, StoreOptions};
use mfs_proto::v1 as pb;
use mfs_proto::v1::chunk_service_client::ChunkServiceClient;
use tonic::transport::Channel;
use tonic::Code;

/// One chunkserver's data service running in this process.
pub struct Server {
    pub addr: String,
    pub store: Arc<Store>,
    _dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

/// A store with one disk at `path` and no space kept free.
pub fn store_on(path: &std::path::Path) -> Arc<Store> {
    Arc::new(
        Store::open(
            &[DiskSpec {
                path: path.to_owned(),
                marked: false,
                limit: None,
            }],
            StoreOptions {
                reserve: 0,
                ..Default::default()
            },
        )
        .unwrap(),
    )
}

/// A write of `data` at offset 0 of chunk (`id`, `version`), no chain.
fn write_at_0(id: u64, version: u32, data: Vec<u8>) -> pb::ChunkWriteRequest {
    pb::ChunkWriteRequest {
        chunk_id: id,
        version,
        offset: 0,
        data: data.into(),
        chain: vec![],
        create: false,
        token: Vec::new(),
        more: Vec::new(),
    }
}

pub async fn start() -> Server {
    start_with(mfs_proto::ClusterSecret::default()).await
}

/// A server that takes only orders carrying `secret` (when set).
pub async fn start_with(secret: mfs_proto::ClusterSecret) -> Server {
    // MFS_BENCH_DIR: where the throughput figures put their disks.
    let dir = match std::env::var_os("MFS_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let store = store_on(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = store.clone();
    tokio::spawn(async move {
        let _ = mfs_chunk::server::serve_grpc(s, secret, listener, async {
            let _ = rx.await;
        })
        .await;
    });
    Server {
        addr,
        store,
        _dir: dir,
        stop: Some(tx),
    }
}

pub async fn client(addr: &str) -> ChunkServiceClient<Channel> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .tcp_nodelay(true)
        .initial_stream_window_size(Some(8 << 20))
        .initial_connection_window_size(Some(32 << 20))
        .max_frame_size(Some(1 << 20))
        .connect()
        .await
        .unwrap();
    ChunkServiceClient::new(ch)
        .max_decoding_message_size(24 << 20)
        .max_encoding_message_size(24 << 20)
}

fn order(id: u64, version: u32) -> pb::ChunkOrder {
    pb::ChunkOrder {
        chunk_id: id,
        version,
        ..Default::default()
    }
}

fn errno(s: &tonic::Status) -> Option<i32> {
    s.metadata()
        .get(mfs_proto::ERRNO_KEY)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

async fn read(
    c: &mut ChunkServiceClient<Channel>,
    id: u64,
    v: u32,
    off: u64,
    size: u32,
) -> Result<Vec<u8>, tonic::Status> {
    c.read(pb::ChunkReadRequest {
        chunk_id: id,
        version: v,
        offset: off,
        size,
        missing_is_hole: false,
        token: Vec::new(),
    })
    .await
    .map(|r| r.into_inner().data.to_vec())
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

#[tokio::test]
async fn write_with_a_chain_lands_on_every_copy() {
    let (a, b, c) = (start().await, start().await, start().await);
    let mut ca = client(&a.addr).await;
    for s in [&a, &b, &c] {
        client(&s.addr)
            .await
            .create_chunk(order(1, 1))
            .await
            .unwrap();
    }
    let data = pattern(3 << 20, 1);
    let r = ca
        .write(pb::ChunkWriteRequest {
            chunk_id: 1,
            version: 1,
            offset: 12345,
            data: data.clone().into(),
            chain: vec![b.addr.clone(), c.addr.clone()],
            create: false,
            token: Vec::new(),
            more: Vec::new(),
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().length, 12345 + data.len() as u64);
    for s in [&a, &b, &c] {
        let got = read(&mut client(&s.addr).await, 1, 1, 12345, data.len() as u32)
            .await
            .unwrap();
        assert!(got == data, "copy on {} differs", s.addr);
    }
    // Sync down the chain.
    ca.sync(pb::ChunkSyncRequest {
        chunk_id: 1,
        version: 1,
        chain: vec![b.addr.clone(), c.addr.clone()],
        token: Vec::new(),
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn ranges_of_one_write_land_in_order_on_every_copy() {
    let (a, b) = (start().await, start().await);
    for s in [&a, &b] {
        client(&s.addr)
            .await
            .create_chunk(order(11, 1))
            .await
            .unwrap();
    }
    let mut ca = client(&a.addr).await;
    // A model of the chunk: ranges written in order, the later wins, some
    // inside one CRC block, some across blocks, one in a block past the
    // length (and a first write that leaves an old block to be read).
    let mut model = pattern(200_000, 3);
    ca.write(pb::ChunkWriteRequest {
        chain: vec![b.addr.clone()],
        ..write_at_0(11, 1, model.clone())
    })
    .await
    .unwrap();
    let ranges: Vec<(u64, Vec<u8>)> = vec![
        (70_000, pattern(4096, 5)),
        (1_000, pattern(100, 6)),
        (69_000, pattern(3000, 7)),
        (300_000, pattern(10, 8)),
        (199_990, pattern(20, 9)),
    ];
    for (off, d) in &ranges {
        let (off, end) = (*off as usize, *off as usize + d.len());
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off..end].copy_from_slice(d);
    }
    let (first, rest) = ranges.split_first().unwrap();
    let r = ca
        .write(pb::ChunkWriteRequest {
            offset: first.0,
            chain: vec![b.addr.clone()],
            more: rest
                .iter()
                .map(|(offset, d)| pb::ChunkWriteRange {
                    offset: *offset,
                    data: d.clone().into(),
                })
                .collect(),
            ..write_at_0(11, 1, first.1.clone())
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().length, model.len() as u64);
    for s in [&a, &b] {
        let got = read(&mut client(&s.addr).await, 11, 1, 0, model.len() as u32)
            .await
            .unwrap();
        assert!(got == model, "copy on {} differs from the model", s.addr);
    }
    // A range out of bounds anywhere: refused, nothing written anywhere.
    let e = ca
        .write(pb::ChunkWriteRequest {
            chain: vec![b.addr.clone()],
            more: vec![pb::ChunkWriteRange {
                offset: (64 << 20) - 1,
                data: vec![2; 2].into(),
            }],
            ..write_at_0(11, 1, vec![1; 10])
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    for s in [&a, &b] {
        let got = read(&mut client(&s.addr).await, 11, 1, 0, 10)
            .await
            .unwrap();
        assert_eq!(got, model[..10], "copy on {} changed", s.addr);
    }
}

#[tokio::test]
async fn chain_failure_names_the_failing_server() {
    let (a, b) = (start().await, start().await);
    let mut ca = client(&a.addr).await;
    ca.create_chunk(order(2, 1)).await.unwrap();
    // b lacks the chunk.
    let e = ca
        .write(pb::ChunkWriteRequest {
            chunk_id: 2,
            version: 1,
            offset: 0,
            data: vec![1; 10].into(),
            chain: vec![b.addr.clone()],
            create: false,
            token: Vec::new(),
            more: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert_eq!(errno(&e), Some(2));
    assert!(e.message().contains(&b.addr), "{}", e.message());
    // A dead chain member.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = ca
        .write(pb::ChunkWriteRequest {
            chunk_id: 2,
            version: 1,
            offset: 0,
            data: vec![1; 10].into(),
            chain: vec![dead.clone()],
            create: false,
            token: Vec::new(),
            more: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(e.message().contains(&dead), "{}", e.message());
}

#[tokio::test]
async fn bad_requests_get_clear_errors_and_write_nothing() {
    let a = start().await;
    let mut c = client(&a.addr).await;
    c.create_chunk(order(3, 5)).await.unwrap();
    let e = read(&mut c, 4, 1, 0, 10).await.unwrap_err();
    assert_eq!((e.code(), errno(&e)), (Code::NotFound, Some(2)));
    let e = read(&mut c, 3, 4, 0, 10).await.unwrap_err();
    assert_eq!((e.code(), errno(&e)), (Code::FailedPrecondition, Some(116)));
    let e = read(&mut c, 3, 5, (64 << 20) - 5, 10).await.unwrap_err();
    assert_eq!((e.code(), errno(&e)), (Code::InvalidArgument, Some(22)));
    let e = c
        .write(pb::ChunkWriteRequest {
            chunk_id: 3,
            version: 5,
            offset: 64 << 20,
            data: vec![1].into(),
            chain: vec![],
            create: false,
            token: Vec::new(),
            more: Vec::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    let st = c
        .chunk_status(pb::ChunkStatusRequest { chunk_id: 3 })
        .await
        .unwrap()
        .into_inner();
    assert!(st.present);
    assert_eq!((st.version, st.length), (5, 0), "nothing written");
}

#[tokio::test]
async fn flipped_byte_reads_as_data_loss_and_the_copy_is_dropped() {
    let a = start().await;
    let mut c = client(&a.addr).await;
    c.create_chunk(order(7, 1)).await.unwrap();
    c.write(pb::ChunkWriteRequest {
        chunk_id: 7,
        version: 1,
        offset: 0,
        data: pattern(200_000, 3).into(),
        chain: vec![],
        create: false,
        token: Vec::new(),
        more: Vec::new(),
    })
    .await
    .unwrap();
    let path = c
        .chunk_status(pb::ChunkStatusRequest { chunk_id: 7 })
        .await
        .unwrap()
        .into_inner()
        .path;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let off = mfs_chunk::format::HEADER_SIZE + 150_000;
    let mut b = [0u8];
    f.read_exact_at(&mut b, off).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], off).unwrap();
    let e = read(&mut c, 7, 1, 140_000, 20_000).await.unwrap_err();
    assert_eq!(e.code(), Code::DataLoss, "{e:?}");
    assert_eq!(errno(&e), Some(5));
    let st = c
        .chunk_status(pb::ChunkStatusRequest { chunk_id: 7 })
        .await
        .unwrap()
        .into_inner();
    assert!(!st.present, "the copy was dropped");
    let changes = a.store.take_changes();
    assert_eq!(
        changes.get(&7),
        Some(&mfs_chunk::store::Change::Removed { version: 1 })
    );
}

#[tokio::test]
async fn replicate_copies_from_a_peer() {
    let (a, b) = (start().await, start().await);
    let mut ca = client(&a.addr).await;
    ca.create_chunk(order(9, 3)).await.unwrap();
    // 20 MiB: three 8 MiB pieces, the last short.
    let data = pattern(20 << 20, 9);
    for (i, piece) in data.chunks(10 << 20).enumerate() {
        ca.write(pb::ChunkWriteRequest {
            chunk_id: 9,
            version: 3,
            offset: (i * (10 << 20)) as u64,
            data: piece.to_vec().into(),
            chain: vec![],
            create: false,
            token: Vec::new(),
            more: Vec::new(),
        })
        .await
        .unwrap();
    }
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let mut cb = client(&b.addr).await;
    cb.replicate(pb::ChunkOrder {
        chunk_id: 9,
        version: 3,
        sources: vec![dead, a.addr.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    let st = cb
        .chunk_status(pb::ChunkStatusRequest { chunk_id: 9 })
        .await
        .unwrap()
        .into_inner();
    assert!(st.present);
    assert_eq!((st.version, st.length), (3, 20 << 20));
    for off in [0u64, 8 << 20, 16 << 20] {
        let got = read(&mut cb, 9, 3, off, 4 << 20).await.unwrap();
        assert!(
            got == data[off as usize..off as usize + (4 << 20)],
            "at {off}"
        );
    }
    assert!(b.store.take_changes().contains_key(&9), "reported added");
    // A wrong version at the source is refused.
    let e = cb
        .replicate(pb::ChunkOrder {
            chunk_id: 9,
            version: 4,
            sources: vec![a.addr.clone()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(116), "{e:?}");
}

#[tokio::test]
async fn orders_over_grpc() {
    let a = start().await;
    let mut c = client(&a.addr).await;
    c.create_chunk(order(1, 1)).await.unwrap();
    let e = c.create_chunk(order(1, 1)).await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists);
    c.write(write_at_0(1, 1, vec![4; 1000])).await.unwrap();
    c.set_version(pb::ChunkOrder {
        chunk_id: 1,
        version: 1,
        new_version: 2,
        ..Default::default()
    })
    .await
    .unwrap();
    c.truncate(pb::ChunkOrder {
        chunk_id: 1,
        version: 2,
        new_version: 3,
        length: 10,
        ..Default::default()
    })
    .await
    .unwrap();
    c.duplicate(pb::ChunkOrder {
        chunk_id: 1,
        version: 3,
        new_chunk_id: 2,
        new_version: 1,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        read(&mut c, 2, 1, 5, 10).await.unwrap(),
        [4, 4, 4, 4, 4, 0, 0, 0, 0, 0]
    );
    c.delete_chunk(order(1, 0)).await.unwrap();
    let e = c.delete_chunk(order(1, 0)).await.unwrap_err();
    assert_eq!(errno(&e), Some(2));
}

/// With a cluster secret, every order without it is refused and changes
/// nothing; with it, orders go through; reads and writes (the clients')
/// need the master's token for the chunk, or the secret (other
/// chunkservers).
#[tokio::test]
async fn orders_need_the_cluster_secret() {
    let secret = mfs_proto::ClusterSecret::new("s3cret");
    let a = start_with(secret.clone()).await;
    let mut c = client(&a.addr).await;
    a.store.create(1, 1).unwrap();
    let denied = |r: Result<tonic::Response<pb::Empty>, tonic::Status>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.code(), Code::PermissionDenied, "{what}: {e:?}");
        assert!(
            e.message().contains("CLUSTER_SECRET"),
            "{what}: {}",
            e.message()
        );
    };
    for wrong in [
        mfs_proto::ClusterSecret::default(),
        mfs_proto::ClusterSecret::new("guess"),
    ] {
        denied(c.create_chunk(wrong.request(order(2, 1))).await, "create");
        denied(c.delete_chunk(wrong.request(order(1, 0))).await, "delete");
        let bump = pb::ChunkOrder {
            new_version: 2,
            ..order(1, 1)
        };
        denied(
            c.set_version(wrong.request(bump.clone())).await,
            "set version",
        );
        denied(c.truncate(wrong.request(bump)).await, "truncate");
        let dup = pb::ChunkOrder {
            new_chunk_id: 3,
            new_version: 1,
            ..order(1, 1)
        };
        denied(c.duplicate(wrong.request(dup)).await, "duplicate");
        let rep = pb::ChunkOrder {
            sources: vec![a.addr.clone()],
            ..order(4, 1)
        };
        denied(c.replicate(wrong.request(rep)).await, "replicate");
    }
    let held: Vec<(u64, u32)> = a
        .store
        .inventory()
        .iter()
        .map(|c| (c.id, c.version))
        .collect();
    assert_eq!(held, vec![(1, 1)], "a refused order changed something");

    // A client's write or read needs the master's token for the chunk.
    let stale = |r: tonic::Status, what: &str| {
        assert_eq!(r.code(), Code::FailedPrecondition, "{what}: {r:?}");
        assert!(r.message().contains("token"), "{what}: {}", r.message());
    };
    stale(
        c.write(write_at_0(1, 1, vec![7; 10])).await.unwrap_err(),
        "a write without a token",
    );
    stale(
        read(&mut c, 1, 1, 0, 10).await.unwrap_err(),
        "a read without a token",
    );
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 60;
    let token = |access| secret.chunk_token(1, 1, access, until);
    let read_only = pb::ChunkWriteRequest {
        token: token(mfs_proto::ChunkAccess::Read),
        ..write_at_0(1, 1, vec![7; 10])
    };
    stale(
        c.write(read_only).await.unwrap_err(),
        "a write with a read token",
    );
    let writing = pb::ChunkWriteRequest {
        token: token(mfs_proto::ChunkAccess::Write),
        ..write_at_0(1, 1, vec![7; 10])
    };
    c.write(writing)
        .await
        .expect("a write with the master's token");
    let with_token = pb::ChunkReadRequest {
        chunk_id: 1,
        version: 1,
        offset: 0,
        size: 10,
        missing_is_hole: false,
        token: token(mfs_proto::ChunkAccess::Read),
    };
    let got = c
        .read(with_token)
        .await
        .expect("a read with the master's token");
    assert_eq!(got.into_inner().data.to_vec(), [7; 10]);
    // Other chunkservers show the secret instead.
    let got = c
        .read(secret.request(pb::ChunkReadRequest {
            chunk_id: 1,
            version: 1,
            offset: 0,
            size: 10,
            missing_is_hole: false,
            token: Vec::new(),
        }))
        .await
        .expect("a read with the secret");
    assert_eq!(got.into_inner().data.to_vec(), [7; 10]);
    c.create_chunk(secret.request(order(2, 1)))
        .await
        .expect("an order with the secret");
    c.delete_chunk(secret.request(order(1, 0)))
        .await
        .expect("an order with the secret");
    let held: Vec<u64> = a.store.inventory().iter().map(|c| c.id).collect();
    assert_eq!(held, vec![2]);
}

/// Prints throughput figures (not a pass/fail test): run with
/// `cargo test -p mfs-chunk --release --test it throughput -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn throughput() {
    // As the binary does.
    mfs_chunk::server::tune_malloc();
    let (a, b) = (start().await, start().await);
    let mut ca = client(&a.addr).await;
    let chunks = 8u64;
    for id in 0..chunks {
        ca.create_chunk(order(id, 1)).await.unwrap();
        client(&b.addr)
            .await
            .create_chunk(order(id, 1))
            .await
            .unwrap();
    }
    let piece = vec![7u8; 4 << 20];
    // The store alone, for comparison.
    let t = Instant::now();
    let (st, p) = (a.store.clone(), piece.clone());
    tokio::task::spawn_blocking(move || {
        st.create(1000, 1).unwrap();
        for k in 0..16u64 {
            st.write(1000, 1, k * (4 << 20), &p).unwrap();
        }
    })
    .await
    .unwrap();
    println!(
        "store write (one thread): {:.0} MB/s",
        64.0 * 1.048576 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let st = a.store.clone();
    tokio::task::spawn_blocking(move || {
        for k in 0..16u64 {
            st.read(1000, 1, k * (4 << 20), 4 << 20).unwrap();
        }
    })
    .await
    .unwrap();
    println!(
        "store read (one thread): {:.0} MB/s",
        64.0 * 1.048576 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..chunks {
        let (mut c, p, chain) = (client(&a.addr).await, piece.clone(), vec![b.addr.clone()]);
        tasks.push(tokio::spawn(async move {
            for k in 0..16u64 {
                c.write(pb::ChunkWriteRequest {
                    chunk_id: id,
                    version: 1,
                    offset: k * (4 << 20),
                    data: p.clone().into(),
                    chain: chain.clone(),
                    create: false,
                    token: Vec::new(),
                    more: Vec::new(),
                })
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mb = (chunks * 64) as f64;
    println!(
        "goal-2 write: {:.0} MB/s",
        mb * 1.048576 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    for id in 0..chunks {
        let mut c = client(&a.addr).await;
        tasks.push(tokio::spawn(async move {
            for k in 0..16u64 {
                let d = read(&mut c, id, 1, k * (4 << 20), 4 << 20).await.unwrap();
                assert_eq!(d.len(), 4 << 20);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "read: {:.0} MB/s",
        mb * 1.048576 / t.elapsed().as_secs_f64()
    );
}

#[test]
fn binary_refuses_to_start_without_disks_naming_the_file() {
    let d = tempfile::tempdir().unwrap();
    let cfg = d.path().join("mfschunkserver.cfg");
    let hdd = d.path().join("my-hdd.cfg");
    std::fs::write(
        &cfg,
        format!(
            "MASTER_HOST = 127.0.0.1:1\nDATA_PATH = {}\nHDD_CONF_FILENAME = {}\nCSSERV_LISTEN_HOST = 127.0.0.1\nCSSERV_LISTEN_PORT = 0\nHTTP_LISTEN = \"\"\n",
            d.path().join("data").display(),
            hdd.display()
        ),
    )
    .unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mfschunkserver"))
            .arg("-c")
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = run();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("my-hdd.cfg"), "{err}");
    std::fs::write(&hdd, "# no disks yet\n").unwrap();
    let err = String::from_utf8_lossy(&run().stderr).to_string();
    assert!(err.contains("lists no disk"), "{err}");
    std::fs::write(&hdd, format!("{}\n/no/such/disk\n", d.path().display())).unwrap();
    let err = String::from_utf8_lossy(&run().stderr).to_string();
    assert!(
        err.contains("my-hdd.cfg:2:") && err.contains("/no/such/disk"),
        "{err}"
    );
    // An unknown key in the config names it and its line.
    std::fs::write(&cfg, "BOGUS = 1\n").unwrap();
    let err = String::from_utf8_lossy(&run().stderr).to_string();
    assert!(err.contains("BOGUS") && err.contains(":1:"), "{err}");
}

#[test]
fn print_config_shows_defaults_and_flags() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mfschunkserver"))
        .args(["--print-config", "-c", "/nonexistent/none.cfg"])
        .output()
        .unwrap();
    // A named config file must exist.
    assert!(!out.status.success());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mfschunkserver"))
        .args([
            "--print-config",
            "--master",
            "m1:1,m2",
            "--listen",
            "127.0.0.1:9999",
        ])
        .env_remove("MFS_MASTER_HOST")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("MASTER_HOST = m1:1,m2"), "{text}");
    assert!(text.contains("CSSERV_LISTEN_PORT = 9999"), "{text}");
    assert!(text.contains("HDD_TEST_FREQ = 10"), "{text}");
}

#[tokio::test]
async fn binary_serves_and_stops_cleanly_on_sigterm() {
    let d = tempfile::tempdir().unwrap();
    let disk = d.path().join("disk1");
    std::fs::create_dir(&disk).unwrap();
    let hdd = d.path().join("mfshdd.cfg");
    std::fs::write(&hdd, format!("# test disk\n{}\n", disk.display())).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let master = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let cfg = d.path().join("mfschunkserver.cfg");
    std::fs::write(
        &cfg,
        format!(
            "MASTER_HOST = {master},{master}\nDATA_PATH = {}\nHDD_CONF_FILENAME = {}\nCSSERV_LISTEN_HOST = 127.0.0.1\nCSSERV_LISTEN_PORT = {port}\nHTTP_LISTEN = \"\"\nHDD_LEAVE_SPACE_DEFAULT = 0\n",
            d.path().join("data").display(),
            hdd.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_mfschunkserver"))
        .arg("-c")
        .arg(&cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{port}");
    let mut c = None;
    for _ in 0..100 {
        if let Ok(ep) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
            if let Ok(ch) = ep.connect().await {
                c = Some(ChunkServiceClient::new(ch));
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let Some(mut c) = c else {
        let _ = child.kill();
        panic!("mfschunkserver did not start listening on {addr}");
    };
    c.create_chunk(order(0x1234, 1)).await.unwrap();
    c.write(pb::ChunkWriteRequest {
        chunk_id: 0x1234,
        version: 1,
        offset: 5,
        data: b"hello".to_vec().into(),
        chain: vec![],
        create: false,
        token: Vec::new(),
        more: Vec::new(),
    })
    .await
    .unwrap();
    assert_eq!(
        read(&mut c, 0x1234, 1, 0, 12).await.unwrap(),
        b"\0\0\0\0\0hello\0\0"
    );
    assert!(disk
        .join("34")
        .join("chunk_0000000000001234_00000001.mfs")
        .exists());
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
}
