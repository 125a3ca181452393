//! MasterClient and mfscli against in-process fake masters.

mod fake;

use std::time::Duration;

use fake::{dead, Failure, Fake};
use mfs_mount::info::ClusterView;
use mfs_mount::{ClientError, ClientOptions, MasterClient};
use mfs_proto::v1::{CreateRequest, Credentials, MkdirRequest, UnlinkRequest};
use tonic::Code;

fn opts(register: bool) -> ClientOptions {
    ClientOptions {
        connect_timeout: Duration::from_millis(500),
        call_timeout: Duration::from_millis(500),
        overall_timeout: Some(Duration::from_secs(10)),
        session_info: "it".into(),
        register_session: register,
        ..Default::default()
    }
}

fn mkdir_req(name: &str) -> MkdirRequest {
    MkdirRequest {
        cred: Some(Credentials::default()),
        parent: 1,
        name: name.as_bytes().to_vec(),
        mode: 0o755,
        ..MkdirRequest::default()
    }
}

/// A redirects to B; B fails the first Mkdir like a reset stream, then
/// answers. Both attempts that reach B carry the same RequestId.
#[tokio::test]
async fn redirect_then_reset_keeps_the_request_id() {
    let a = Fake::start(1, 60).await;
    let b = Fake::start(2, 60).await;
    a.redirect_to(Some(&b.addr));
    b.fail_first("Mkdir", Failure::Code(Code::Internal));

    let client = MasterClient::connect(std::slice::from_ref(&a.addr), opts(true))
        .await
        .unwrap();
    // RegisterSession went A -> B.
    assert_eq!(client.session_id(), 1);
    assert!(client.masters().contains(&b.addr), "{:?}", client.masters());
    assert_eq!(client.current_master(), b.addr);

    let attr = client.mkdir(mkdir_req("d")).await.unwrap();
    assert_eq!(attr.inode, 100);
    let seen = b.state.seen("Mkdir");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].id, seen[1].id);
    let id = seen[0].id.unwrap();
    assert_eq!((id.session, id.seq, id.acked), (1, 1, 0));

    // The next call acknowledges the first.
    client
        .unlink(UnlinkRequest {
            cred: Some(Credentials::default()),
            parent: 1,
            name: b"d".to_vec(),
            ..UnlinkRequest::default()
        })
        .await
        .unwrap();
    let id2 = b.state.seen("Unlink")[0].id.unwrap();
    assert_eq!((id2.session, id2.seq, id2.acked), (1, 2, 1));
    assert_eq!(client.acked(), 2);

    let stats = client.stats();
    assert!(stats.redirects >= 1, "{stats:?}");
    assert!(stats.retries >= 1, "{stats:?}");
    assert!(client.longest_stall() > Duration::ZERO);
}

/// An attempt that gets no reply within the call timeout is repeated, after
/// a tour of the other masters, with the same RequestId.
#[tokio::test]
async fn hung_attempt_is_retried_with_the_same_id() {
    let a = Fake::start(1, 60).await;
    let b = Fake::start(2, 60).await;
    a.redirect_to(Some(&b.addr));
    b.fail_first("Create", Failure::Hang(Duration::from_secs(3)));
    let masters = vec![b.addr.clone(), a.addr.clone()];
    let client = MasterClient::connect(&masters, opts(true)).await.unwrap();
    let req = CreateRequest {
        cred: Some(Credentials::default()),
        parent: 1,
        name: b"f".to_vec(),
        mode: 0o644,
        ..CreateRequest::default()
    };
    let attr = client.create(req).await.unwrap();
    assert_eq!(attr.inode, 101);
    let seen = b.state.seen("Create");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert_eq!(seen[0].id, seen[1].id);
    assert!(
        !a.state.seen("Create").is_empty(),
        "the other master was tried"
    );
    assert!(client.longest_stall() >= Duration::from_millis(500));
}

/// A POSIX answer is final: no retry, errno preserved.
#[tokio::test]
async fn errno_is_returned_at_once() {
    let b = Fake::start(2, 60).await;
    let client = MasterClient::connect(std::slice::from_ref(&b.addr), opts(false))
        .await
        .unwrap();
    let e = client
        .lookup(&Credentials::default(), 1, b"nope")
        .await
        .unwrap_err();
    assert!(matches!(&e, ClientError::Errno(2, _)), "{e:?}");
    assert_eq!(e.errno(), 2);
    assert_eq!(b.state.seen("Lookup").len(), 1);
    assert_eq!(client.stats().retries, 0);
}

/// A dead master first in the list: the call fails over to the live one.
#[tokio::test]
async fn dead_master_is_skipped() {
    let b = Fake::start(2, 60).await;
    let d = dead();
    let masters = vec![d.addr.clone(), b.addr.clone()];
    let client = MasterClient::connect(&masters, opts(false)).await.unwrap();
    let attr = client.getattr(1).await.unwrap();
    assert_eq!(attr.inode, 1);
    assert!(client.stats().retries >= 1);
    assert_eq!(client.current_master(), b.addr);
}

/// The old leader is dead and a follower still names it: the stale hint
/// must not trap the call between the two; the round goes on to the new
/// leader.
#[tokio::test]
async fn stale_hint_to_a_dead_leader_is_not_followed_in_circles() {
    let dead_port = dead();
    let dead = dead_port.addr.clone();
    let follower = Fake::start(1, 60).await;
    let leader = Fake::start(2, 60).await;
    follower.redirect_to(Some(&dead));
    let masters = vec![dead.clone(), follower.addr.clone(), leader.addr.clone()];
    let mut o = opts(false);
    o.overall_timeout = Some(Duration::from_secs(3));
    let client = MasterClient::connect(&masters, o).await.unwrap();
    let attr = client.getattr(1).await.unwrap();
    assert_eq!(attr.inode, 1);
    assert_eq!(client.current_master(), leader.addr);
    assert_eq!(follower.state.seen("GetAttr").len(), 1);
}

/// No master at all: a soft timeout with a message naming what was tried.
#[tokio::test]
async fn no_master_times_out_with_a_clear_message() {
    let (d1, d2) = (dead(), dead());
    let masters = vec![d1.addr.clone(), d2.addr.clone()];
    let mut o = opts(false);
    o.overall_timeout = Some(Duration::from_millis(600));
    let client = MasterClient::connect(&masters, o).await.unwrap();
    let started = std::time::Instant::now();
    let e = client.getattr(1).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert!(matches!(e, ClientError::Timeout { .. }), "{e:?}");
    assert_eq!(e.errno(), 5);
    let msg = e.to_string();
    assert!(
        msg.starts_with(&format!(
            "no master answered at {},{} for",
            masters[0], masters[1]
        )),
        "{msg}"
    );
    assert!(msg.to_lowercase().contains("refused"), "{msg}");
}

/// The heartbeat learns that the master forgot the session and registers a
/// new one.
#[tokio::test]
async fn lost_session_is_registered_again_by_the_heartbeat() {
    let b = Fake::start(2, 1).await; // heartbeat every 333 ms
    let client = MasterClient::connect(std::slice::from_ref(&b.addr), opts(true))
        .await
        .unwrap();
    assert_eq!(client.session_id(), 1);
    b.lose_session(1);
    for _ in 0..50 {
        if client.session_id() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(client.session_id(), 2);
    assert!(!b.state.seen("Heartbeat").is_empty());
}

/// A mutating call under a forgotten session: confirmed by a heartbeat, a
/// new session is registered and the call runs under it.
#[tokio::test]
async fn mutating_call_survives_a_lost_session() {
    let b = Fake::start(2, 600).await;
    let client = MasterClient::connect(std::slice::from_ref(&b.addr), opts(true))
        .await
        .unwrap();
    b.lose_session(1);
    client.mkdir(mkdir_req("x")).await.unwrap();
    assert_eq!(client.session_id(), 2);
    let seen = b.state.seen("Mkdir");
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].id.unwrap().session, 1);
    let id = seen[1].id.unwrap();
    assert_eq!((id.session, id.seq, id.acked), (2, 1, 0));
}

/// close_session sends CloseSession with a request id and forgets the
/// session.
#[tokio::test]
async fn close_session() {
    let b = Fake::start(2, 600).await;
    let client = MasterClient::connect(std::slice::from_ref(&b.addr), opts(true))
        .await
        .unwrap();
    client.close_session().await.unwrap();
    assert_eq!(client.session_id(), 0);
    let id = b.state.seen("CloseSession")[0].id.unwrap();
    assert_eq!(id.session, 1);
}

/// info::gather: NodeStatus everywhere (one master dead), ClusterInfo via
/// the redirect to the leader.
#[tokio::test]
async fn gather_cluster_view() {
    let a = Fake::start(1, 60).await;
    let b = Fake::start(2, 60).await;
    a.redirect_to(Some(&b.addr));
    let dead_port = dead();
    let dead = dead_port.addr.clone();
    let masters = vec![a.addr.clone(), dead.clone(), b.addr.clone()];
    let client = MasterClient::connect(&masters, opts(false)).await.unwrap();
    let (view, err) = mfs_mount::info::gather(&client).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(view.leader, Some(2));
    assert_eq!(view.leader_address.as_deref(), Some(b.addr.as_str()));
    assert_eq!(view.masters.len(), 3);
    assert_eq!(view.masters[0].role, "follower");
    assert!(!view.masters[1].reachable);
    assert!(view.masters[1].error.is_some());
    assert_eq!(view.masters[2].role, "leader");
    assert_eq!(view.metaloggers.len(), 1);
    assert_eq!(view.chunk_health.undergoal, 1);
    assert_eq!((view.sessions, view.inodes), (1, 5));
    assert_eq!(
        (view.trash_files, view.trash_bytes, view.sustained_files),
        (2, 4096, 1)
    );
}

async fn mfscli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mfscli"))
        .args(args)
        .env_remove("MFS_MASTERS")
        .output()
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn mfscli_info_json_and_plain() {
    let a = Fake::start(1, 60).await;
    let b = Fake::start(2, 60).await;
    a.redirect_to(Some(&b.addr));
    let dead_port = dead();
    let dead = dead_port.addr.clone();
    let list = format!("{},{},{}", a.addr, b.addr, dead);

    let (code, out, err) = mfscli(&["-H", &list, "info", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let view: ClusterView = serde_json::from_str(&out).unwrap();
    assert_eq!(view.leader, Some(2));
    assert_eq!(view.masters.len(), 3);
    assert!(!view.masters[2].reachable);
    let raw: serde_json::Value = serde_json::from_str(&out).unwrap();
    for key in [
        "leader",
        "leader_address",
        "term",
        "cluster_id",
        "masters",
        "members",
        "metaloggers",
    ] {
        assert!(raw.get(key).is_some(), "{key} missing in {out}");
    }

    let (code, out, err) = mfscli(&["-H", &list, "info"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&format!("master\t2\t{}\tleader\t", b.addr))),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("chunkserver\t1\t127.0.0.1:9422\tok\t1\t1048576\t")),
        "{out}"
    );
}

#[tokio::test]
async fn mfscli_info_fails_when_no_master_answers() {
    let dead_port = dead();
    let dead = dead_port.addr.clone();
    let (code, out, err) = mfscli(&["-H", &dead, "--timeout", "0.5", "info", "--json"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("no master answered"), "{err}");
    let view: ClusterView = serde_json::from_str(&out).unwrap();
    assert_eq!(view.leader, None);
}

#[tokio::test]
async fn mfscli_admin_commands() {
    let a = Fake::start(1, 60).await;
    let b = Fake::start(2, 60).await;
    a.redirect_to(Some(&b.addr));

    let (code, out, err) = mfscli(&["-H", &a.addr, "wait-leader", "--timeout", "5"]).await;
    assert_eq!((code, out.trim()), (0, "2"), "{err}");

    let (code, out, err) = mfscli(&["-H", &a.addr, "add-master", "3", "127.0.0.1:9999"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "voters: 2 3\nlearners: -\n");

    let (code, _, err) = mfscli(&["-H", &a.addr, "remove-master", "2"]).await;
    assert_ne!(code, 0);
    assert!(
        err.contains("removing master 2") && err.contains("EBUSY"),
        "{err}"
    );

    let (code, out, _) = mfscli(&["-H", &b.addr, "snapshot"]).await;
    assert_eq!((code, out.as_str()), (0, "snapshot triggered\n"));

    let dead_port = dead();
    let dead = dead_port.addr.clone();
    let (code, _, err) = mfscli(&["-H", &dead, "wait-leader", "--timeout", "0.5"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("no leader at"), "{err}");

    let (code, _, err) = mfscli(&["-H", "host:notaport", "info"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("bad master address"), "{err}");
}
