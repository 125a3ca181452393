//! The metalogger: a learner that writes every committed change to its
//! changelog through leader kills and its own kill, and a cluster restored
//! from its directory alone.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mfs_mount::master::{ClientOptions, MasterClient};
use mfs_proto::v1::{FileType, MkdirRequest, ReaddirRequest, RenameRequest};
use mfs_tests::cluster::{bin_dir, free_port, Cluster};
use mfs_tests::metaloggers::start_restored_master;

use crate::util::{create_req, root_cred, step};

const ML_ID: u64 = 1000;

/// One changelog line, as the test reads it (the format is documented in
/// `mfs_metalog::changelog::line`).
#[derive(Debug)]
struct Rec {
    index: u64,
    kind: String,
    payload: serde_json::Value,
}

/// Every line of the changelog of `dir`, oldest file first.
fn read_changelog(dir: &Path) -> Vec<Rec> {
    let mut files: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let n = name
                .strip_prefix("changelog_ml.")?
                .strip_suffix(".mfs")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    let mut out = Vec::new();
    for (_, p) in files {
        let text = std::fs::read_to_string(&p).unwrap();
        for l in text.lines() {
            let f: Vec<&str> = l.splitn(6, '|').collect();
            assert_eq!(f.len(), 6, "malformed line in {}: {l}", p.display());
            out.push(Rec {
                index: f[0].parse().unwrap(),
                kind: f[4].to_string(),
                payload: serde_json::from_str(f[5]).unwrap(),
            });
        }
    }
    out
}

fn last_index(dir: &Path) -> Option<u64> {
    read_changelog(dir).last().map(|r| r.index)
}

/// (session, seq) of a REQ line whose op is `op` with `field` = `name`.
fn request_ids(recs: &[Rec], op: &str, field: &str, name: &str) -> BTreeSet<(u64, u64)> {
    let want: Vec<serde_json::Value> = name.bytes().map(|b| b.into()).collect();
    recs.iter()
        .filter(|r| r.kind == "REQ")
        .filter(|r| r.payload["op"][op][field].as_array() == Some(&want))
        .map(|r| {
            (
                r.payload["session"].as_u64().unwrap_or(0),
                r.payload["seq"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// path → (inode, type, mode, nlink, size) of everything under the root.
async fn tree(c: &MasterClient) -> BTreeMap<String, (u64, i32, u32, u32, u64)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![(String::new(), 1u64)];
    while let Some((path, inode)) = todo.pop() {
        let mut after = Vec::new();
        loop {
            let r = c
                .readdir(ReaddirRequest {
                    cred: Some(root_cred()),
                    inode,
                    after: after.clone(),
                    limit: 500,
                    plus: true,
                })
                .await
                .unwrap();
            for e in &r.entries {
                let p = format!("{path}/{}", String::from_utf8_lossy(&e.name));
                let a = e.attr.unwrap_or_default();
                out.insert(p.clone(), (e.inode, e.r#type, a.mode, a.nlink, a.size));
                if e.r#type == FileType::Directory as i32 {
                    todo.push((p, e.inode));
                }
            }
            match r.entries.last() {
                Some(last) if r.more => after = last.name.clone(),
                _ => break,
            }
        }
    }
    out
}

/// Per iteration: mkdir `{p}d{i}`, create `{p}f{i}`, rename it into the
/// directory as `g{i}`. Returns the acknowledged files and directories.
fn worker(
    c: MasterClient,
    p: String,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(Vec<String>, Vec<String>)> {
    tokio::spawn(async move {
        let (mut files, mut dirs) = (Vec::new(), Vec::new());
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let d = format!("{p}d{i}");
            let a = c
                .mkdir(MkdirRequest {
                    id: None,
                    cred: Some(root_cred()),
                    parent: 1,
                    name: d.clone().into_bytes(),
                    mode: 0o755,
                    umask: 0,
                })
                .await
                .unwrap_or_else(|e| panic!("mkdir {d}: {e}"));
            dirs.push(d.clone());
            let f = format!("{p}f{i}");
            c.create(create_req(&f))
                .await
                .unwrap_or_else(|e| panic!("create {f}: {e}"));
            files.push(f.clone());
            c.rename(RenameRequest {
                id: None,
                cred: Some(root_cred()),
                parent: 1,
                name: f.clone().into_bytes(),
                new_parent: a.inode,
                new_name: format!("g{i}").into_bytes(),
                noreplace: true,
                exchange: false,
            })
            .await
            .unwrap_or_else(|e| panic!("rename {f}: {e}"));
            i += 1;
        }
        (files, dirs)
    })
}

/// 3 masters and a metalogger; a stream of mkdirs, creates and renames while
/// the leader is killed twice and the metalogger once: the changelog holds
/// every committed entry once, in order, and every acknowledged change; the
/// cluster destroyed and restored from the metalogger's directory alone
/// serves the same tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelog_survives_kills_and_restores_the_cluster() {
    step("start 3 masters and a metalogger");
    let mut c = Cluster::start(3, &[]).await.unwrap();
    let ml = c
        .add_metalogger(
            ML_ID,
            &[
                ("META_DOWNLOAD_FREQ", "1"),
                ("CHANGELOG_ROTATE_ENTRIES", "150"),
                ("BACK_LOGS", "100"),
            ],
        )
        .await
        .unwrap();
    let ml_dir = c.metalogger(ml).unwrap().data_dir();

    step("a metalogger cannot be promoted to a voter");
    let admin = c.admin().await.unwrap();
    let e = admin.promote_learner(ML_ID).await.unwrap_err();
    assert!(e.to_string().contains("metalogger"), "{e}");

    step("stream of mkdir + create + rename from 2 clients");
    let stop = Arc::new(AtomicBool::new(false));
    let clients = [c.client("a").await.unwrap(), c.client("b").await.unwrap()];
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, cl)| worker(cl.clone(), format!("w{i}"), stop.clone()))
        .collect();
    for round in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
        step(&format!("round {round}: kill -9 leader master{leader}"));
        c.kill(leader).unwrap();
        c.wait_leader(Duration::from_secs(20)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        c.restart(leader).unwrap();
        if round == 0 {
            tokio::time::sleep(Duration::from_millis(800)).await;
            // Its first image (a few seconds after it started) comes before
            // its kill: the restore at the end then has changes to replay
            // after it.
            let image = ml_dir.join("metadata_ml.mfs");
            let t = Instant::now();
            while !image.exists() {
                assert!(
                    t.elapsed() < Duration::from_secs(30),
                    "no metadata image after 30 s; log:\n{}",
                    c.metalogger(ml).unwrap().log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            step("kill -9 the metalogger, restart it a moment later");
            c.kill_metalogger(ml).unwrap();
            tokio::time::sleep(Duration::from_millis(1000)).await;
            c.start_metalogger(ml).unwrap();
        }
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for t in tasks {
        let (f, d) = t.await.unwrap();
        files.extend(f);
        dirs.extend(d);
    }
    eprintln!("{} files, {} dirs acknowledged", files.len(), dirs.len());
    assert!(files.len() > 20, "too few changes went through");

    step("the metalogger catches up with the leader's applied index");
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let t = Instant::now();
    let applied = loop {
        let a = c.status(leader).await.unwrap().applied_index;
        if last_index(&ml_dir) == Some(a) {
            // Stable: nothing more was committed meanwhile.
            tokio::time::sleep(Duration::from_millis(500)).await;
            if c.status(leader).await.unwrap().applied_index == a && last_index(&ml_dir) == Some(a)
            {
                break a;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "metalogger at {:?}, leader at {a}; metalogger log:\n{}",
            last_index(&ml_dir),
            c.metalogger(ml).unwrap().log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    step("every committed entry is one line, in order; every acknowledged change is there");
    let recs = read_changelog(&ml_dir);
    let idx: Vec<u64> = recs.iter().map(|r| r.index).collect();
    assert_eq!(
        idx,
        (0..=applied).collect::<Vec<_>>(),
        "lines are not entries 0..={applied} once each"
    );
    assert!(
        recs.iter().all(|r| r.kind != "IMAGE"),
        "no snapshot was needed"
    );
    assert!(
        ml_dir.join("changelog_ml.1.mfs").exists(),
        "the changelog never rotated"
    );
    for f in &files {
        // A retry after a failover may put the same request (same session
        // and seq) in the log twice; the namespace applies it once.
        let ids = request_ids(&recs, "Create", "name", f);
        assert_eq!(ids.len(), 1, "create {f}: request ids {ids:?}");
    }
    for d in &dirs {
        let ids = request_ids(&recs, "Mkdir", "name", d);
        assert_eq!(ids.len(), 1, "mkdir {d}: request ids {ids:?}");
        let ids = request_ids(&recs, "Rename", "name", &d.replacen('d', "f", 1));
        assert!(ids.len() <= 1, "rename of {d}'s file: {ids:?}");
    }

    step("mfscli info --json lists the metalogger with its index");
    let out = std::process::Command::new(bin_dir().join("mfscli"))
        .arg("-H")
        .arg(c.addrs().join(","))
        .args(["info", "--json"])
        .output()
        .unwrap();
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "mfscli info --json: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let mls = info["metaloggers"].as_array().cloned().unwrap_or_default();
    assert_eq!(mls.len(), 1, "{info}");
    assert_eq!(mls[0]["id"], ML_ID);
    assert!(
        mls[0]["matched_index"].as_u64().unwrap_or(0) >= applied,
        "{info}"
    );

    step("the tree as the old cluster serves it");
    let before = tree(&clients[0]).await;
    for d in &dirs {
        assert!(before.contains_key(&format!("/{d}")), "{d} missing");
    }
    // The first image is written a few seconds after the first start; the
    // next not before an hour (META_DOWNLOAD_FREQ = 1): restore replays the
    // changelog after it.
    assert!(
        std::fs::read(ml_dir.join("metadata_ml.mfs")).is_ok(),
        "no metadata image written; log:\n{}",
        c.metalogger(ml).unwrap().log()
    );
    drop(clients);

    step("destroy the whole cluster (kill -9 everything), restore from the metalogger");
    let ids: Vec<u64> = c.masters.iter().map(|m| m.id).collect();
    for id in ids {
        c.kill(id).unwrap();
        c.wipe(id).unwrap();
    }
    c.kill_metalogger(ml).unwrap();
    let port = free_port();
    let restored = c.root().join("restored");
    let out = c.restore_from_metalogger(ml, &restored, 1, port).unwrap();
    eprintln!("{out}");
    // Entries may have been committed after the check above (a read
    // barrier, a session expiry): restore must reach the changelog's end.
    let end = last_index(&ml_dir).unwrap();
    assert!(end >= applied);
    assert!(
        out.contains(&format!("restored up to index {end} (")),
        "restore did not reach index {end}:\n{out}"
    );
    let changes: u64 = out
        .split(&format!("restored up to index {end} ("))
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        changes > 0,
        "the image was too recent to test replay:\n{out}"
    );

    step("the restored master serves the same tree and takes writes");
    let _m = start_restored_master(&restored, 1, port, &c.root().join("restored.log")).unwrap();
    let opts = ClientOptions {
        overall_timeout: Some(Duration::from_secs(30)),
        register_session: true,
        ..Default::default()
    };
    let cl = MasterClient::connect(&[format!("127.0.0.1:{port}")], opts)
        .await
        .unwrap();
    let after = tree(&cl).await;
    assert_eq!(before.len(), after.len());
    assert_eq!(before, after, "the restored tree differs");
    cl.create(create_req("after-restore")).await.unwrap();
    assert!(tree(&cl).await.contains_key("/after-restore"));
}

/// A metalogger that joins after the leader purged its log receives a
/// snapshot: it writes it as its image, notes the jump in the changelog, and
/// restore starts from that image.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_metalogger_starts_from_a_snapshot() {
    let env = [
        ("MFS_SNAPSHOT_LOG_ENTRIES", "100"),
        ("MFS_SNAPSHOT_ENTRIES_PER_INODE", "0"),
        ("MFS_SNAPSHOT_KEEP_ENTRIES", "10"),
    ];
    step("a cluster with 300 creates (its log purged behind snapshots)");
    let mut c = Cluster::start(3, &env).await.unwrap();
    let cl = c.client("early").await.unwrap();
    for i in 0..300 {
        cl.create(create_req(&format!("e{i}"))).await.unwrap();
    }

    step("a metalogger joins: its changelog starts with an IMAGE line");
    let ml = c
        .add_metalogger(ML_ID, &[("META_DOWNLOAD_FREQ", "1")])
        .await
        .unwrap();
    let ml_dir = c.metalogger(ml).unwrap().data_dir();
    for i in 0..50 {
        cl.create(create_req(&format!("l{i}"))).await.unwrap();
    }
    let leader = c.wait_leader(Duration::from_secs(20)).await.unwrap();
    let applied = c.status(leader).await.unwrap().applied_index;
    let t = Instant::now();
    while last_index(&ml_dir).unwrap_or(0) < applied {
        assert!(t.elapsed() < Duration::from_secs(30), "metalogger behind");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let recs = read_changelog(&ml_dir);
    assert_eq!(recs[0].kind, "IMAGE", "first line: {:?}", recs[0]);
    // Each line follows the one before, or is a later jump (a learner
    // that fell behind the purge again gets another snapshot, as on a
    // loaded machine): its IMAGE line marks it.
    for w in recs.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let ok = b.index == a.index + 1 || (b.kind == "IMAGE" && b.index > a.index);
        if !ok {
            let lines: Vec<(u64, &str)> = recs.iter().map(|r| (r.index, r.kind.as_str())).collect();
            panic!(
                "line {} after {} without an IMAGE line: {lines:?}",
                b.index, a.index
            );
        }
    }
    let before = tree(&cl).await;
    assert_eq!(before.len(), 350);

    step("restore from its directory alone");
    drop(cl);
    let ids: Vec<u64> = c.masters.iter().map(|m| m.id).collect();
    for id in ids {
        c.kill(id).unwrap();
    }
    c.kill_metalogger(ml).unwrap();
    let port = free_port();
    let restored = c.root().join("restored");
    let out = c.restore_from_metalogger(ml, &restored, 1, port).unwrap();
    eprintln!("{out}");
    let _m = start_restored_master(&restored, 1, port, &c.root().join("restored.log")).unwrap();
    let opts = ClientOptions {
        overall_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let cl = MasterClient::connect(&[format!("127.0.0.1:{port}")], opts)
        .await
        .unwrap();
    assert_eq!(tree(&cl).await, before);
}
