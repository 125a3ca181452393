//! Restore from hand-made metalogger dirs: whole, damaged, with gaps.

use std::path::Path;

use mfs_master::fsm::{Cred, Inode, Namespace, Op, Request, SessionId, Timespec};
use mfs_master::raft::learner::make_image;
use mfs_master::raft::observer::LogPosition;
use mfs_master::raft::sm::StateMachine;

use super::*;
use crate::changelog::{file_name, ChangelogWriter, Line, WriterSettings};

fn root() -> Cred {
    Cred {
        uid: 0,
        gid: 0,
        groups: vec![],
    }
}

fn mkdir(name: &str) -> Request {
    Request {
        session: SessionId(0),
        seq: 0,
        acked: 0,
        time: Timespec { sec: 100, nsec: 0 },
        op: Op::Mkdir {
            cred: root(),
            parent: Inode(1),
            name: name.as_bytes().to_vec(),
            mode: 0o755,
            umask: 0,
        },
    }
}

fn has(ns: &Namespace, name: &str) -> bool {
    ns.lookup(&root(), Inode(1), name.as_bytes()).is_ok()
}

/// A metalogger dir: image at index 4 holding d0..d4 (lines 0..4 as REQ
/// too), then REQ lines 5..=9 (d5..d9), files of 3 lines.
fn make_dir(dir: &Path) {
    let mut ns = Namespace::new();
    let mut w = ChangelogWriter::open(WriterSettings {
        dir: dir.to_path_buf(),
        back_logs: 10,
        rotate_entries: 3,
        rotate_after: None,
    })
    .unwrap();
    for i in 0..10u64 {
        let req = mkdir(&format!("d{i}"));
        if i <= 4 {
            ns.apply(&req);
        }
        w.append(&Line::request(i, 1, &req)).unwrap();
    }
    drop(w);
    let img = make_image(&ns, Some(LogPosition { index: 4, term: 1 }), &[]).unwrap();
    crate::image::write(dir, &img).unwrap();
}

/// (file, 1-based line) holding index `index`.
fn find_line(dir: &Path, index: u64) -> (std::path::PathBuf, usize) {
    for (_, p) in files_oldest_first(dir).unwrap() {
        let text = std::fs::read_to_string(&p).unwrap();
        for (i, l) in text.lines().enumerate() {
            if Line::parse(l).map(|l| l.index) == Ok(index) {
                return (p, i + 1);
            }
        }
    }
    panic!("no line with index {index}");
}

fn edit_line(path: &Path, lineno: usize, f: impl Fn(&str) -> Option<String>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for (i, l) in text.lines().enumerate() {
        if i + 1 == lineno {
            if let Some(new) = f(l) {
                out.push_str(&new);
                out.push('\n');
            }
        } else {
            out.push_str(l);
            out.push('\n');
        }
    }
    std::fs::write(path, out).unwrap();
}

#[test]
fn whole_changelog_is_replayed_after_the_image() {
    let tmp = tempfile::tempdir().unwrap();
    make_dir(tmp.path());
    let r = replay(tmp.path()).unwrap();
    assert!(r.stop.is_none(), "{:?}", r.stop);
    assert_eq!(r.image_pos.map(|p| p.index), Some(4));
    assert_eq!(r.last.map(|p| p.index), Some(9));
    assert_eq!(r.changes, 5);
    for i in 0..10 {
        assert!(has(&r.ns, &format!("d{i}")), "d{i} missing");
    }
    assert!(
        r.summary().contains("restored up to index 9 (5 changes"),
        "{}",
        r.summary()
    );
}

#[test]
fn replay_stops_at_a_bad_crc_and_says_where() {
    let tmp = tempfile::tempdir().unwrap();
    make_dir(tmp.path());
    let (file, lineno) = find_line(tmp.path(), 7);
    edit_line(&file, lineno, |l| Some(l.replace("Mkdir", "Mkdyr")));
    let r = replay(tmp.path()).unwrap();
    match &r.stop {
        Some(Stop::Damaged {
            file: f,
            line,
            index,
            ..
        }) => {
            assert_eq!((f, *line, *index), (&file, lineno, Some(7)));
        }
        other => panic!("expected a damaged-line stop, got {other:?}"),
    }
    let msg = r.stop.as_ref().unwrap().to_string();
    assert!(
        msg.contains("CRC") && msg.contains(&file_name_of(&file)),
        "{msg}"
    );
    assert_eq!(r.last.map(|p| p.index), Some(6));
    assert!(has(&r.ns, "d6") && !has(&r.ns, "d7") && !has(&r.ns, "d8"));
}

fn file_name_of(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn replay_stops_at_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    make_dir(tmp.path());
    let (file, lineno) = find_line(tmp.path(), 7);
    edit_line(&file, lineno, |_| None);
    let r = replay(tmp.path()).unwrap();
    match &r.stop {
        Some(Stop::Gap {
            expected, found, ..
        }) => assert_eq!((*expected, *found), (7, 8)),
        other => panic!("expected a gap, got {other:?}"),
    }
    assert!(r
        .stop
        .unwrap()
        .to_string()
        .contains("index 7 expected, 8 found"));
}

#[test]
fn damage_below_the_image_and_an_unfinished_tail_do_not_stop_replay() {
    let tmp = tempfile::tempdir().unwrap();
    make_dir(tmp.path());
    let (file, lineno) = find_line(tmp.path(), 2);
    edit_line(&file, lineno, |l| Some(l.replace("Mkdir", "Mkdyr")));
    let p0 = tmp.path().join(file_name(0));
    let mut text = std::fs::read_to_string(&p0).unwrap();
    text.push_str("10|1|100|ABC");
    std::fs::write(&p0, text).unwrap();
    let r = replay(tmp.path()).unwrap();
    assert!(r.stop.is_none(), "{:?}", r.stop);
    assert_eq!(r.last.map(|p| p.index), Some(9));
    assert_eq!(r.notes.len(), 2, "{:?}", r.notes);
}

#[test]
fn damaged_newest_image_falls_back_to_the_previous_one() {
    let tmp = tempfile::tempdir().unwrap();
    make_dir(tmp.path());
    // The previous image: the state at index 2.
    let mut ns = Namespace::new();
    for i in 0..=2 {
        ns.apply(&mkdir(&format!("d{i}")));
    }
    let older = make_image(&ns, Some(LogPosition { index: 2, term: 1 }), &[]).unwrap();
    let newest = std::fs::read(tmp.path().join(IMAGE_FILE)).unwrap();
    crate::image::write(tmp.path(), &older).unwrap();
    crate::image::write(tmp.path(), &newest).unwrap();
    let mut bad = newest;
    let mid = bad.len() / 2;
    bad[mid] ^= 0x55;
    std::fs::write(tmp.path().join(IMAGE_FILE), bad).unwrap();
    let r = replay(tmp.path()).unwrap();
    assert_eq!(r.image_pos.map(|p| p.index), Some(2));
    assert_eq!(r.changes, 7);
    assert!(r.stop.is_none());
    assert!(has(&r.ns, "d9"));
    assert!(
        r.notes.iter().any(|n| n.contains(BACK_FILE)),
        "{:?}",
        r.notes
    );
}

#[test]
fn an_image_line_above_the_image_is_a_jump() {
    let tmp = tempfile::tempdir().unwrap();
    make_dir(tmp.path());
    let mut w = ChangelogWriter::open(WriterSettings {
        dir: tmp.path().to_path_buf(),
        back_logs: 10,
        rotate_entries: 0,
        rotate_after: None,
    })
    .unwrap();
    let mark = crate::changelog::ImageMark {
        file: IMAGE_FILE.into(),
        reason: "test".into(),
    };
    w.append(&Line::image(20, 2, 0, &mark)).unwrap();
    drop(w);
    let r = replay(tmp.path()).unwrap();
    assert!(
        matches!(r.stop, Some(Stop::Jump { index: 20, .. })),
        "{:?}",
        r.stop
    );
    assert_eq!(r.last.map(|p| p.index), Some(9));
}

#[tokio::test]
async fn restore_writes_a_master_dir_only_when_complete_or_partial_is_accepted() {
    let tmp = tempfile::tempdir().unwrap();
    let ml = tmp.path().join("ml");
    std::fs::create_dir_all(&ml).unwrap();
    make_dir(&ml);
    let (file, lineno) = find_line(&ml, 8);
    edit_line(&file, lineno, |l| Some(l.replace("REQ", "NOP")));
    let mut o = RestoreOptions {
        from: ml.clone(),
        to: tmp.path().join("master"),
        master_id: 1,
        advertise: "127.0.0.1:9421".into(),
        partial: false,
    };
    let e = restore(&o).await.err().unwrap().to_string();
    assert!(
        e.contains("--partial") && e.contains("restored up to index 7"),
        "{e}"
    );
    assert!(!o.to.exists(), "nothing may be written without --partial");

    o.partial = true;
    let (r, dir) = restore(&o).await.unwrap();
    assert_eq!(r.last.map(|p| p.index), Some(7));
    assert!(!dir.cluster_id.is_empty());
    {
        let sm = StateMachine::open(o.to.join("snapshots"), 3).unwrap();
        let ns = sm.shared.ns();
        assert!(has(&ns, "d7") && !has(&ns, "d8"));
        let (last, membership) = sm.shared.applied();
        assert_eq!(last.map(|l| l.index), Some(7));
        assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![1]);
    }

    let again = restore(&o).await.err().unwrap().to_string();
    assert!(again.contains("not empty"), "{again}");
}
