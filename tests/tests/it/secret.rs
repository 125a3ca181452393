//! The cluster secret between masters and chunkservers: a chunkserver
//! registers only with the masters' secret, and takes chunk orders only
//! with its own.

use std::time::Duration;

use mfs_proto::v1 as pb;
use mfs_proto::v1::chunk_service_client::ChunkServiceClient;
use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;

use crate::tools::ok;
use crate::util::{skip_without_fuse, step, wait_for};

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
