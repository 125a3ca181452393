//! `mfsexports.cfg`: which address may mount which directory, read-only or
//! not, with which password, as whom; enforced by every master (the rights
//! are kept with the session, so they hold after the leader dies).

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use mfs_proto::v1 as pb;
use mfs_proto::v1::meta_service_client::MetaServiceClient;
use mfs_tests::cluster::Cluster;
use mfs_tests::mountpoint::Mount;
use tonic::transport::{Channel, Endpoint};
use tonic::Code;

use crate::tools::tool_env;
use crate::util::{root_cred, skip_without_fuse, step};

const EXPORTS: &str = "\
# read-only view of /ro
127.0.0.1      /ro        ro
# a team's tree: a password, root squashed to 1234, at most 2 copies
127.0.0.1      /team      rw,alldirs,password=pw,maproot=1234:1234,maxgoal=2
# nobody here is in 10/8
10.0.0.0/8     /elsewhere rw
# the administrator's mount of the root (and the test's own client)
127.0.0.1      /          rw,admin,maproot=0:0
# the trash, read-only
127.0.0.1      .          ro
";

/// A channel to `addr` whose connections come from `from`.
async fn channel_from(addr: &str, from: &str) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .local_address(Some(from.parse::<IpAddr>().unwrap()))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {addr} from {from}: {e}"))
}

/// A raw session: its id and root, as RegisterSession answers.
async fn register(
    ch: &Channel,
    path: &str,
    password: &str,
) -> Result<pb::RegisterSessionReply, tonic::Status> {
    MetaServiceClient::new(ch.clone())
        .register_session(pb::RegisterSessionRequest {
            info: "exports test".into(),
            path: path.into(),
            password: password.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

/// `msg` as a call of `session` (the `mfs-session` metadata).
fn as_session<T>(session: u64, msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert(mfs_proto::SESSION_KEY, session.to_string().parse().unwrap());
    r
}

fn errno(s: &tonic::Status) -> Option<i32> {
    s.metadata()
        .get(mfs_proto::ERRNO_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn getattr(ch: &Channel, session: u64, inode: u64) -> Result<pb::Attr, tonic::Status> {
    MetaServiceClient::new(ch.clone())
        .get_attr(as_session(session, pb::GetAttrRequest { inode }))
        .await
        .map(|r| r.into_inner().attr.unwrap_or_default())
}

async fn mkdir(ch: &Channel, session: u64, seq: u64, parent: u64) -> Result<(), tonic::Status> {
    let req = pb::MkdirRequest {
        id: Some(pb::RequestId {
            session,
            seq,
            acked: 0,
        }),
        cred: Some(root_cred()),
        parent,
        name: format!("d{seq}").into_bytes(),
        mode: 0o755,
        umask: 0,
    };
    MetaServiceClient::new(ch.clone())
        .mkdir(req)
        .await
        .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_decide_who_mounts_what_and_every_master_enforces_it() {
    if skip_without_fuse() {
        return;
    }
    let conf = tempfile::tempdir().unwrap();
    let exports = conf.path().join("mfsexports.cfg");
    std::fs::write(&exports, EXPORTS).unwrap();
    let exports_path = exports.display().to_string();
    let mut c = Cluster::start(3, &[("MFS_EXPORTS_FILENAME", &exports_path)])
        .await
        .unwrap();
    c.add_chunkservers(2, 1).await.unwrap();

    step("the administrator's mount of / makes the trees");
    let admin = Mount::start(&c, "admin", &[]).unwrap();
    let a = admin.path();
    for d in ["ro", "team", "secret", "elsewhere"] {
        std::fs::create_dir(a.join(d)).unwrap();
    }
    std::fs::write(a.join("ro/readme"), b"read me").unwrap();
    // The team's root, as which the team mount's root runs, owns its tree.
    std::os::unix::fs::chown(a.join("team"), Some(1234), Some(1234)).unwrap();
    std::fs::write(a.join("secret/key"), b"k").unwrap();
    let secret_inode = std::fs::metadata(a.join("secret/key")).unwrap().ino();

    step("an address no line names, and a directory no line gives: refused, saying why");
    let e = Mount::start(&c, "nothere", &["-S", "/elsewhere"])
        .err()
        .expect("mounting /elsewhere from 127.0.0.1 must fail");
    let text = format!("{e:#}");
    assert!(
        text.contains("no line of mfsexports.cfg lets 127.0.0.1 mount /elsewhere"),
        "{text}"
    );
    let e = Mount::start(&c, "sub", &["-S", "/secret"])
        .err()
        .expect("mounting /secret must fail");
    assert!(format!("{e:#}").contains("mount /secret"), "{e:#}");

    step("/ro: read-only; the kernel and the master both refuse changes");
    let ro = Mount::start(&c, "ro", &["-S", "/ro"]).unwrap();
    assert_eq!(std::fs::read(ro.path().join("readme")).unwrap(), b"read me");
    let e = std::fs::write(ro.path().join("new"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    let leader = c.wait_leader(Duration::from_secs(30)).await.unwrap();
    let ch = channel_from(&c.master(leader).unwrap().addr(), "127.0.0.1").await;
    let ro_session = register(&ch, "/ro", "").await.unwrap();
    assert!(ro_session.read_only);
    let e = mkdir(&ch, ro_session.session, 1, ro_session.root)
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(libc::EROFS), "{e:?}");

    step("/team needs its password; with it, root's files belong to 1234");
    let e = Mount::start(&c, "team-nopw", &["-S", "/team"])
        .err()
        .expect("mounting /team without the password must fail");
    assert!(format!("{e:#}").contains("with a password only"), "{e:#}");
    let e = Mount::start(
        &c,
        "team-badpw",
        &["-S", "/team", "-o", "mfspassword=guess"],
    )
    .err()
    .expect("mounting /team with a wrong password must fail");
    assert!(format!("{e:#}").contains("wrong"), "{e:#}");
    let team = Mount::start(&c, "team", &["-S", "/team", "-o", "mfspassword=pw"]).unwrap();
    let f = team.path().join("f");
    std::fs::write(&f, b"team data").unwrap();
    let md = std::fs::metadata(&f).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 1234));
    assert_eq!(std::fs::read(a.join("team/f")).unwrap(), b"team data");
    std::fs::create_dir_all(team.path().join("sub/deeper")).unwrap();
    let deep = Mount::start(
        &c,
        "deep",
        // The password as its MD5, as MooseFS's mfsmd5pass.
        &[
            "-S",
            "/team/sub",
            "-o",
            "mfsmd5pass=8fe4c11451281c094a6578e6ddbf5eed",
        ],
    )
    .unwrap();
    assert!(
        deep.path().join("deeper").is_dir(),
        "alldirs mounts below /team"
    );

    step("the tools get the mount's rights: goal 2 yes, 3 no (maxgoal=2)");
    let fp = f.display().to_string();
    let pw = [("MFS_PASSWORD", "pw")];
    let (code, out, err) = tool_env("mfssetgoal", &["2", &fp], &pw);
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = tool_env("mfssetgoal", &["3", &fp], &pw);
    assert_ne!(code, 0, "goal 3 past maxgoal=2 was set: {out}");
    assert!(
        format!("{out}{err}").contains("maxgoal") || err.contains("outside"),
        "{out}{err}"
    );

    step("a challenge answered once registers; the same answer again is ESTALE");
    let nonce = MetaServiceClient::new(ch.clone())
        .challenge(pb::ChallengeRequest {})
        .await
        .unwrap()
        .into_inner()
        .nonce;
    let answer = pb::RegisterSessionRequest {
        info: "challenged".into(),
        path: "/team".into(),
        password_digest: mfs_proto::challenge_answer(&nonce, &mfs_proto::password_md5("pw"))
            .to_vec(),
        nonce,
        ..Default::default()
    };
    let mut meta_client = MetaServiceClient::new(ch.clone());
    let first = meta_client.register_session(answer.clone()).await.unwrap();
    assert_ne!(first.into_inner().session, 0);
    let e = meta_client.register_session(answer).await.unwrap_err();
    assert_eq!(errno(&e), Some(libc::ESTALE), "{e:?}");

    step("a team session sees nothing outside /team, and its root is its own parent");
    let team_session = register(&ch, "/team", "pw").await.unwrap();
    let e = getattr(&ch, team_session.session, secret_inode)
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(libc::EACCES), "{e:?}");
    assert_eq!(e.code(), Code::PermissionDenied);
    let up = MetaServiceClient::new(ch.clone())
        .lookup(as_session(
            team_session.session,
            pb::LookupRequest {
                cred: Some(root_cred()),
                parent: team_session.root,
                name: b"..".to_vec(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(up.attr.unwrap().inode, team_session.root);
    let e = mkdir(&ch, team_session.session, 1, 1).await.unwrap_err();
    assert_eq!(
        errno(&e),
        Some(libc::EACCES),
        "mkdir in / by a team session: {e:?}"
    );

    step("quotas: set by the admin mount; a team session lists only its own");
    for d in ["team", "secret"] {
        crate::tools::ok(
            "mfssetquota",
            &["-I", "100", &a.join(d).display().to_string()],
        );
    }
    let listed = MetaServiceClient::new(ch.clone())
        .list_quotas(as_session(team_session.session, pb::ListQuotasRequest {}))
        .await
        .unwrap()
        .into_inner()
        .quotas;
    let paths: Vec<String> = listed
        .iter()
        .map(|q| String::from_utf8_lossy(&q.path).into_owned())
        .collect();
    assert_eq!(paths, vec!["team".to_string()]);

    step("the session's id used from another address: refused");
    let other = channel_from(&c.master(leader).unwrap().addr(), "127.0.0.2").await;
    let e = getattr(&other, team_session.session, team_session.root)
        .await
        .unwrap_err();
    assert!(e.message().contains("registered from 127.0.0.1"), "{e:?}");
    // Nor may it take the session's recalls (its write-back directories).
    let e = MetaServiceClient::new(other.clone())
        .recalls(pb::RecallsRequest {
            session: team_session.session,
        })
        .await
        .map(drop)
        .unwrap_err();
    assert!(e.message().contains("registered from 127.0.0.1"), "{e:?}");
    let e = MetaServiceClient::new(ch.clone())
        .recalls(pb::RecallsRequest { session: 999_999 })
        .await
        .map(drop)
        .unwrap_err();
    assert_eq!(errno(&e), Some(libc::EBADF), "{e:?}");

    step("the meta mount shows the trash; a meta session changes nothing else");
    crate::tools::ok(
        "mfssettrashtime",
        &["3600", &a.join("secret/key").display().to_string()],
    );
    std::fs::remove_file(a.join("secret/key")).unwrap();
    let meta = Mount::start(&c, "meta", &["-m"]).unwrap();
    let trash: Vec<String> = std::fs::read_dir(meta.path().join("trash"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        trash.iter().any(|n| n.contains("key")),
        "trash lists {trash:?}"
    );
    let meta_session = MetaServiceClient::new(ch.clone())
        .register_session(pb::RegisterSessionRequest {
            info: "meta".into(),
            meta: true,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let e = mkdir(&ch, meta_session.session, 1, 1).await.unwrap_err();
    assert_eq!(
        errno(&e),
        Some(libc::EPERM),
        "mkdir by a meta session: {e:?}"
    );
    drop(meta);

    step("mfscli sessions shows each session's address, directory, access and line");
    let out = std::process::Command::new(mfs_tests::cluster::bin_dir().join("mfscli"))
        .args(["-H", &c.addrs().join(","), "sessions"])
        .output()
        .expect("running mfscli");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |info: &str| {
        text.lines()
            .find(|l| l.ends_with(info))
            .unwrap_or_else(|| panic!("no session {info:?} in:\n{text}"))
            .split('\t')
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    // A mount's info ends with its mount point.
    let ro_row = row("/ro");
    assert_eq!(
        (ro_row[2].as_str(), ro_row[4].as_str(), ro_row[5].as_str()),
        ("127.0.0.1", "ro", "2"),
        "{text}"
    );
    let team_row = row("/team");
    assert_eq!(
        (team_row[4].as_str(), team_row[5].as_str()),
        ("rw", "4"),
        "{text}"
    );

    step("the leader dies: the next one keeps every session's rights");
    c.kill(leader).unwrap();
    // The first leader seen may still lose an election running meanwhile:
    // ask until a leader answers.
    let until = std::time::Instant::now() + Duration::from_secs(30);
    let (ch, e) = loop {
        let next = c.wait_leader(Duration::from_secs(30)).await.unwrap();
        let ch = channel_from(&c.master(next).unwrap().addr(), "127.0.0.1").await;
        let e = getattr(&ch, team_session.session, secret_inode)
            .await
            .unwrap_err();
        if e.code() != Code::Unavailable || std::time::Instant::now() > until {
            break (ch, e);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(errno(&e), Some(libc::EACCES), "{e:?}");
    let e = mkdir(&ch, ro_session.session, 2, ro_session.root)
        .await
        .unwrap_err();
    assert_eq!(errno(&e), Some(libc::EROFS), "{e:?}");
    std::fs::write(team.path().join("after"), b"still writes").unwrap();
    let e = std::fs::write(ro.path().join("after"), b"x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
    assert_eq!(
        std::fs::read(a.join("team/after")).unwrap(),
        b"still writes"
    );
    drop((deep, team, ro, admin));
    c.restart(leader).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_exports_file_stops_the_master_naming_the_line() {
    let conf = tempfile::tempdir().unwrap();
    let exports = conf.path().join("mfsexports.cfg");
    std::fs::write(&exports, "* / rw\n10.0.0.0/40 / ro\n").unwrap();
    let path = exports.display().to_string();
    let mut c = Cluster::spawn_all(1, &[("MFS_EXPORTS_FILENAME", &path)]).unwrap();
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while c.is_running(1) {
        assert!(
            std::time::Instant::now() < until,
            "the master runs with a bad exports file"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = c.log(1);
    assert!(
        log.contains("EXPORTS_FILENAME") && log.contains("line 2") && log.contains("prefix length"),
        "{log}"
    );
}
