//! The cluster secret between masters and chunkservers: a chunkserver
//! registers only with the masters' secret, and takes chunk orders only
//! with its own.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use mfs_proto::v1 as pb;
use mfs_proto::v1::chunk_service_client::ChunkServiceClient;
use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::tools::ok;
use crate::util::{skip_without_fuse, step, wait_for};

/// The version in a chunk file's name (`chunk_<id>_<version>.mfs`).
fn chunk_version(path: &std::path::Path) -> u32 {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let hex = name
        .split('_')
        .nth(2)
        .and_then(|v| v.split('.').next())
        .unwrap_or_else(|| panic!("{name}"));
    u32::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The chunk id in a chunk file's name (`chunk_<id>_<version>.mfs`).
fn chunk_id(path: &std::path::Path) -> u64 {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let hex = name.split('_').nth(1).unwrap_or_else(|| panic!("{name}"));
    u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunkservers_need_the_cluster_secret() {
    if skip_without_fuse() {
        return;
    }
    let mut c = Cluster::start(1, &[("MFS_CLUSTER_SECRET", "s3cret")])
        .await
        .unwrap();

    step("two chunkservers with the masters' secret register");
    c.add_chunkservers(2, 1).await.unwrap();

    step("mfscli changes nothing without the secret: snapshot refused, then ordered with it");
    let mfscli = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(mfs_tests::cluster::bin_dir().join("mfscli"))
            .args(["-H", &c.addrs().join(","), "snapshot"])
            .env_remove("MFS_CLUSTER_SECRET")
            .envs(env.iter().copied())
            .output()
            .expect("running mfscli");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (done, err) = mfscli(&[]);
    assert!(!done, "a snapshot was ordered without the secret");
    assert!(err.contains("CLUSTER_SECRET"), "{err}");
    let (done, err) = mfscli(&[("MFS_CLUSTER_SECRET", "guess")]);
    assert!(!done && err.contains("CLUSTER_SECRET"), "{err}");
    let (done, err) = mfscli(&[("MFS_CLUSTER_SECRET", "s3cret")]);
    assert!(done, "with the secret: {err}");

    step("a metalogger with the secret joins (its AddLearner carries it)");
    c.add_metalogger(9, &[("CLUSTER_SECRET", "s3cret")])
        .await
        .unwrap();

    step("one with another secret is refused and says why in its log");
    let bad = c
        .spawn_chunkserver(1, &[("MFS_CLUSTER_SECRET", "guess")])
        .unwrap();
    let log = c.chunkserver(bad).unwrap().dir.join("log");
    wait_for(20, "the refusal in the chunkserver's log", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("CLUSTER_SECRET"))
    });
    let info = c.cluster_info().await.unwrap();
    assert_eq!(info.chunkservers.len(), 2, "{:?}", info.chunkservers);

    step("a file with goal 2 lands on the two and reads back");
    let m = Mount::start(&c, "mnt", &[]).unwrap();
    ok("mfssetgoal", &["2", &m.path().display().to_string()]);
    let f = m.path().join("f");
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    std::fs::write(&f, &data).unwrap();
    ok("mfssettrashtime", &["0", &f.display().to_string()]);
    assert_eq!(std::fs::read(&f).unwrap(), data);
    let on = |n: usize| c.chunk_files(n).unwrap();
    wait_for(20, "a copy on each of the two", || {
        on(1).len() == 1 && on(2).len() == 1
    });
    assert!(on(bad).is_empty(), "the refused chunkserver got a copy");

    step("a client's read straight to a chunkserver needs the master's token for it");
    let copy = on(1)[0].clone();
    let (id, version) = (chunk_id(&copy), chunk_version(&copy));
    let mut cs =
        ChunkServiceClient::connect(format!("http://{}", c.chunkserver(1).unwrap().addr()))
            .await
            .unwrap();
    let read = |token: Vec<u8>| pb::ChunkReadRequest {
        chunk_id: id,
        version,
        offset: 0,
        size: 4096,
        missing_is_hole: false,
        token,
    };
    let e = cs.read(read(Vec::new())).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert!(e.message().contains("token"), "{}", e.message());
    let client = c.client("token test").await.unwrap();
    let ino = std::fs::metadata(&f).unwrap().ino();
    client
        .open(pb::OpenRequest {
            cred: Some(crate::util::root_cred()),
            inode: ino,
            mode: pb::OpenMode::Read as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    let loc = client.read_chunk(ino, 0).await.unwrap();
    assert_eq!((loc.chunk_id, loc.version), (id, version));
    assert!(!loc.token.is_empty(), "no token in the location");
    let got = cs.read(read(loc.token.clone())).await.unwrap().into_inner();
    assert_eq!(&got.data[..], &data[..4096]);
    // A token for another chunk, or a read token for a write: refused.
    let mut other = read(loc.token.clone());
    other.chunk_id += 1;
    assert!(cs.read(other).await.is_err());
    let write = pb::ChunkWriteRequest {
        chunk_id: id,
        version,
        offset: 0,
        data: vec![0u8; 4096].into(),
        token: loc.token.clone(),
        more: Vec::new(),
        ..Default::default()
    };
    let e = cs.write(write).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
    assert_eq!(
        std::fs::read(&f).unwrap(),
        data,
        "the refused write changed the file"
    );
    // Other chunkservers (replication) show the secret instead.
    let peer = mfs_proto::ClusterSecret::new("s3cret").request(read(Vec::new()));
    assert_eq!(
        &cs.read(peer).await.unwrap().into_inner().data[..],
        &data[..4096]
    );
    // The session held the file open: closed, so rm frees it below.
    client.close_session().await.unwrap();

    step("an order without the secret, straight to a chunkserver: refused, the copy stays");
    let id = chunk_id(&on(1)[0]);
    let mut cs =
        ChunkServiceClient::connect(format!("http://{}", c.chunkserver(1).unwrap().addr()))
            .await
            .unwrap();
    let order = pb::ChunkOrder {
        chunk_id: id,
        ..Default::default()
    };
    let e = cs.delete_chunk(order).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("CLUSTER_SECRET"), "{}", e.message());
    assert_eq!(on(1).len(), 1);

    step("rm: the masters' delete orders carry the secret, both copies go");
    std::fs::remove_file(&f).unwrap();
    wait_for(30, "both copies deleted", || {
        on(1).is_empty() && on(2).is_empty()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
}
