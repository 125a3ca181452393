//! `mfstools` (mfsgetgoal, mfssetgoal, mfsgettrashtime, mfssettrashtime,
//! mfsgeteattr, mfsseteattr, mfsdeleattr, mfscheckfile, mfsfileinfo, mfsdirinfo):
//! the real binary on a real mount,
//! checked against what the test created and against the chunk files on the
//! chunkservers' disks.
//!
//! The mount tests need root and /dev/fuse; without them they say so and pass.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use mfs_tests::cluster::{bin_dir, Cluster};
use mfs_tests::mountpoint::Mount;

use crate::util::step;

fn tools_bin() -> std::path::PathBuf {
    bin_dir().join("mfstools")
}

/// Runs `mfstools TOOL ARGS` (without MFS_MASTERS, so the mount's own masters
/// are used); returns (exit code, stdout, stderr).
pub(crate) fn tool(name: &str, args: &[&str]) -> (i32, String, String) {
    tool_env(name, args, &[])
}

/// [`tool`] with more environment variables.
pub(crate) fn tool_env(name: &str, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(tools_bin())
        .arg(name)
        .args(args)
        .env_remove("MFS_MASTERS")
        .envs(env.iter().copied())
        .output()
        .expect("running mfstools");
    split(out)
}

fn split(out: Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs a tool that must succeed; returns its stdout.
pub(crate) fn ok(name: &str, args: &[&str]) -> String {
    let (code, out, err) = tool(name, args);
    assert_eq!(
        code, 0,
        "{name} {args:?} failed:\nstdout: {out}\nstderr: {err}"
    );
    out
}

/// The number at the end of the line of `text` that starts with `prefix`.
fn number_after(text: &str, prefix: &str) -> u64 {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{text}"));
    line.split_whitespace()
        .last()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number at the end of {line:?}"))
}

/// (chunk "ID_VERSION", copy addresses) for each chunk mfsfileinfo lists.
pub(crate) fn fileinfo_chunks(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    for l in text.lines() {
        if let Some(rest) = l.strip_prefix("\tchunk ") {
            let name = rest
                .split_whitespace()
                .nth(1)
                .unwrap_or_else(|| panic!("bad chunk line {l:?}"));
            out.push((name.to_string(), Vec::new()));
        } else if let Some(rest) = l.strip_prefix("\t\tcopy ") {
            let addr = rest.split_once(": ").map(|(_, a)| a.to_string());
            out.last_mut()
                .expect("a copy line before any chunk line")
                .1
                .push(addr.unwrap_or_else(|| panic!("bad copy line {l:?}")));
        }
    }
    out
}

/// Without a mount: argv[0] dispatch through a symlink, the tool list, a
/// path outside any rmfs mount, a goal out of range.
#[test]
fn dispatch_by_name_and_paths_outside_a_mount() {
    let tmp = tempfile::tempdir().unwrap();

    step("mfstools alone lists the tools");
    let (code, out, _) = split(Command::new(tools_bin()).output().unwrap());
    assert_eq!(code, 0);
    for t in [
        "mfsgetgoal",
        "mfssetgoal",
        "mfsfileinfo",
        "mfsdirinfo",
        "mfscheckfile",
    ] {
        assert!(out.contains(t), "{t} missing from:\n{out}");
    }

    step("a link named mfsgetgoal runs mfsgetgoal");
    let link = tmp.path().join("mfsgetgoal");
    std::os::unix::fs::symlink(tools_bin(), &link).unwrap();
    let (code, out, _) = split(Command::new(&link).arg("-h").output().unwrap());
    assert_eq!(code, 0);
    assert!(out.starts_with("usage: mfsgetgoal "), "{out}");

    step("a path outside an rmfs mount: a clear error and exit 1");
    let outside = tmp.path().display().to_string();
    let (code, out, err) = split(Command::new(&link).arg(&outside).output().unwrap());
    assert_eq!(code, 1, "stdout: {out}");
    assert_eq!(err.trim(), format!("{outside}: not on an rmfs mount"));
    let (code, _, err) = tool("mfsfileinfo", &[&outside, "/nonexistent/x"]);
    assert_eq!(code, 1);
    assert!(
        err.contains(&format!("{outside}: not on an rmfs mount")),
        "{err}"
    );
    assert!(err.contains("/nonexistent/x: "), "{err}");

    step("goals outside 1..9 are refused before anything is asked");
    for g in ["0", "10", "x"] {
        let (code, _, err) = tool("setgoal", &[g, &outside]);
        assert_eq!(code, 1, "goal {g}");
        assert!(err.starts_with("mfssetgoal: "), "{err}");
    }
}

/// setgoal -r changes a whole tree (getgoal, then mfsfileinfo, mfscheckfile
/// and the chunk files on disk show the copies the replication loop made);
/// trash time tools; mfsdirinfo against the tree the test made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goal_trash_and_info_tools_on_a_mount() {
    let Some((c, m)) = crate::util::mounted_cluster(3).await else {
        return;
    };
    let r = m.path();

    step("a small tree: d/a (100 KiB), d/sub/b (1000 B), d/sub/e (empty)");
    let d = r.join("d");
    std::fs::create_dir_all(d.join("sub")).unwrap();
    let a_data: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(d.join("a"), &a_data).unwrap();
    std::fs::write(d.join("sub/b"), vec![7u8; 1000]).unwrap();
    std::fs::write(d.join("sub/e"), b"").unwrap();
    let p = |rel: &str| d.join(rel).display().to_string();
    let (dp, ap, bp, ep) = (p(""), p("a"), p("sub/b"), p("sub/e"));
    let dp = dp.trim_end_matches('/').to_string();

    step("getgoal: PATH: GOAL (the default, 1)");
    assert_eq!(ok("mfsgetgoal", &[&ap]), format!("{ap}: 1\n"));

    step("setgoal -r 3 on the directory: every inode below changes");
    let out = ok("mfssetgoal", &["-r", "3", &dp]);
    assert!(out.starts_with(&format!("{dp}:\n")), "{out}");
    assert_eq!(number_after(&out, " inodes with goal changed:"), 5, "{out}");
    assert_eq!(number_after(&out, " inodes with goal not changed:"), 0);
    assert_eq!(number_after(&out, " inodes with permission denied:"), 0);
    for f in [&ap, &bp, &ep] {
        assert_eq!(ok("getgoal", &[f]), format!("{f}: 3\n"));
    }
    let out = ok("mfsgetgoal", &["-r", &dp]);
    assert_eq!(
        number_after(&out, " files with goal        3 :"),
        3,
        "{out}"
    );
    assert_eq!(
        number_after(&out, " directories with goal  3 :"),
        2,
        "{out}"
    );
    assert_eq!(out.lines().count(), 3, "only goal 3 is left:\n{out}");

    step("setgoal on one file, several paths at once");
    let out = ok("mfssetgoal", &["2", &bp, &ep]);
    assert_eq!(out, format!("{bp}: 2\n{ep}: 2\n"));
    let out = ok("mfsgetgoal", &["-r", &dp]);
    assert_eq!(
        number_after(&out, " files with goal        2 :"),
        2,
        "{out}"
    );
    assert_eq!(
        number_after(&out, " files with goal        3 :"),
        1,
        "{out}"
    );

    step("the replication loop makes 3 copies of d/a: checkfile, fileinfo, disks");
    let t = Instant::now();
    loop {
        let out = ok("mfscheckfile", &[&ap]);
        if out.contains(" chunks with 3 copies:") {
            assert_eq!(number_after(&out, " chunks with 3 copies:"), 1, "{out}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "d/a did not reach 3 copies:\n{out}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let info = ok("mfsfileinfo", &[&ap]);
    let chunks = fileinfo_chunks(&info);
    assert_eq!(chunks.len(), 1, "{info}");
    let (name, copies) = &chunks[0];
    let mut got = copies.clone();
    got.sort();
    let mut want: Vec<String> = (1..=3).map(|n| c.chunkserver(n).unwrap().addr()).collect();
    want.sort();
    assert_eq!(got, want, "one copy on each chunkserver:\n{info}");
    let file_name = format!("chunk_{name}.mfs");
    for n in 1..=3 {
        let files = c.chunk_files(n).unwrap();
        assert!(
            files
                .iter()
                .any(|f| f.file_name().and_then(|x| x.to_str()) == Some(file_name.as_str())),
            "chunkserver {n} has no {file_name}: {files:?}"
        );
    }
    assert!(info.contains(&format!(
        "/ (id:{} ver:",
        u64::from_str_radix(&name[..16], 16).unwrap()
    )));
    assert_eq!(
        ok("mfsfileinfo", &[&ep]),
        format!("{ep}:\n\tno chunks - empty file\n")
    );
    let dir_err = tool("mfsfileinfo", &[&dp]);
    assert_eq!(dir_err.0, 1, "fileinfo on a directory fails");

    step("trash time: set -r, get, get -r");
    let out = ok("mfssettrashtime", &["-r", "3600", &dp]);
    assert_eq!(
        number_after(&out, " inodes with trashtime changed:"),
        5,
        "{out}"
    );
    assert_eq!(ok("mfsgettrashtime", &[&bp]), format!("{bp}: 3600\n"));
    let out = ok("mfssettrashtime", &["60", &ap]);
    assert_eq!(out, format!("{ap}: 60\n"));
    let out = ok("mfsgettrashtime", &["-r", &dp]);
    assert_eq!(
        number_after(&out, " files with trashtime        3600 :"),
        2,
        "{out}"
    );
    assert_eq!(
        number_after(&out, " files with trashtime        60 :"),
        1,
        "{out}"
    );
    assert_eq!(
        number_after(&out, " directories with trashtime  3600 :"),
        2,
        "{out}"
    );

    step("dirinfo: counts and sizes of the tree made above");
    let out = ok("mfsdirinfo", &[&dp]);
    assert!(out.starts_with(&format!("{dp}:\n")), "{out}");
    assert_eq!(number_after(&out, " inodes:"), 5, "{out}");
    assert_eq!(number_after(&out, "  directories:"), 2, "{out}");
    assert_eq!(number_after(&out, "  files:"), 3, "{out}");
    assert_eq!(number_after(&out, " chunks:"), 2, "{out}");
    let len_a = a_data.len() as u64;
    assert_eq!(number_after(&out, " length:"), len_a + 1000, "{out}");
    let size_a = len_a.div_ceil(512) * 512;
    let size_b = 1000u64.div_ceil(512) * 512;
    assert_eq!(number_after(&out, " size:"), size_a + size_b, "{out}");
    assert_eq!(
        number_after(&out, " realsize:"),
        size_a * 3 + size_b * 2,
        "{out}"
    );

    step("a subfolder mount (-S /d): its root is d, the rest maps as is; -H is used");
    let sub = Mount::start(&c, "sub", &["-S", "/d"]).unwrap();
    let sroot = sub.path().display().to_string();
    assert_eq!(ok("mfsgetgoal", &[&sroot]), format!("{sroot}: 3\n"));
    assert_eq!(ok("mfsgettrashtime", &[&sroot]), format!("{sroot}: 3600\n"));
    let sb = sub.path().join("sub/b").display().to_string();
    let masters = c.addrs().join(",");
    assert_eq!(
        ok("mfsgetgoal", &["-H", &masters, &sb]),
        format!("{sb}: 2\n")
    );
    let out = ok("mfsdirinfo", &[&sroot]);
    assert_eq!(number_after(&out, " inodes:"), 5, "{out}");
    drop(sub);

    step("a file of the mount reads back what was written (tools changed no data)");
    assert_eq!(std::fs::read(Path::new(&ap)).unwrap(), a_data);
    drop(m);
}

/// mfsseteattr / mfsgeteattr / mfsdeleattr on a mount, each attribute
/// checked through ordinary system calls (as root: immutable and
/// appendonly bind root too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_attributes_are_enforced_on_a_mount() {
    use std::io::Write;
    let Some((_c, m)) = crate::util::mounted_cluster(1).await else {
        return;
    };
    let d = m.path().join("d");
    std::fs::create_dir(&d).unwrap();
    let f = d.join("f");
    std::fs::write(&f, b"first\n").unwrap();
    let (dp, fp) = (d.display().to_string(), f.display().to_string());
    let perm = |r: std::io::Result<()>, what: &str| {
        let e = r.expect_err(what);
        assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{what}: {e}");
    };

    step("geteattr of a plain file: -");
    assert_eq!(ok("mfsgeteattr", &[&fp]), format!("{fp}: -\n"));
    let (code, _, err) = tool("mfsseteattr", &["-f", "nosuch", &fp]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown extra attribute"), "{err}");

    step("immutable: no write, truncate, chmod, unlink, rename, link");
    assert_eq!(
        ok("mfsseteattr", &["-f", "immutable", &fp]),
        format!("{fp}: immutable\n")
    );
    perm(
        std::fs::OpenOptions::new().write(true).open(&f).map(drop),
        "open for writing",
    );
    perm(
        std::fs::set_permissions(&f, std::os::unix::fs::PermissionsExt::from_mode(0o600)),
        "chmod",
    );
    perm(std::fs::remove_file(&f), "unlink");
    perm(std::fs::rename(&f, d.join("g")), "rename");
    perm(std::fs::hard_link(&f, d.join("h")), "link");
    assert_eq!(std::fs::read(&f).unwrap(), b"first\n", "still readable");

    step("deleattr: everything works again");
    assert_eq!(
        ok("mfsdeleattr", &["-f", "immutable", &fp]),
        format!("{fp}: -\n")
    );
    std::fs::write(&f, b"second\n").unwrap();

    step("appendonly: appends only, no truncate, no removal");
    ok(
        "mfsseteattr",
        &["-f", "appendonly", "-f", "noattrcache", &fp],
    );
    assert_eq!(
        ok("mfsgeteattr", &[&fp]),
        format!("{fp}: noattrcache,appendonly\n")
    );
    perm(
        std::fs::OpenOptions::new().write(true).open(&f).map(drop),
        "write without O_APPEND",
    );
    perm(
        std::fs::OpenOptions::new()
            .append(true)
            .open(&f)
            .and_then(|h| h.set_len(0)),
        "truncate",
    );
    let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    h.write_all(b"third\n").unwrap();
    drop(h);
    assert_eq!(std::fs::read(&f).unwrap(), b"second\nthird\n");
    perm(std::fs::remove_file(&f), "unlink");

    step("undeletable -r on the directory: nothing below goes, writes do");
    ok("mfsdeleattr", &["-f", "appendonly", &fp]);
    let out = ok("mfsseteattr", &["-r", "-f", "undeletable", &dp]);
    assert_eq!(
        number_after(&out, " inodes with attributes changed:"),
        2,
        "{out}"
    );
    perm(std::fs::remove_file(&f), "unlink");
    std::fs::write(&f, b"fourth\n").unwrap();
    let out = ok("mfsgeteattr", &["-r", &dp]);
    assert_eq!(
        number_after(
            &out,
            " files with attributes        noattrcache,undeletable :"
        ),
        1,
        "{out}"
    );
    ok("mfsdeleattr", &["-r", "-f", "undeletable", &dp]);
    std::fs::remove_file(&f).unwrap();
    std::fs::remove_dir(&d).unwrap();
}

/// Bytes of a deterministic pattern for `seed`.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[1] ^ seed)
        .collect()
}

/// mfsmakesnapshot of a 100 MiB tree takes no new chunk on the disks; a
/// write or a cut on either side copies just the chunk it touches;
/// mfsrmsnapshot removes the copy (to the trash, as rm does); emptying the
/// trash frees the chunks only it held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_share_chunks_and_diverge() {
    use std::io::{Seek, SeekFrom, Write};
    let Some((c, m)) = crate::util::mounted_cluster(2).await else {
        return;
    };
    let r = m.path();
    let on_disk = |c: &Cluster| c.chunk_files(1).unwrap().len() + c.chunk_files(2).unwrap().len();
    let settle = |c: &Cluster, want: usize, what: &str| {
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let n = on_disk(c);
            if n == want {
                return;
            }
            assert!(
                Instant::now() < until,
                "{what}: {n} chunk files, want {want}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    step("a tree of 100 MiB: t/a (70 MiB, 2 chunks), t/sub/b (30 MiB, 1 chunk)");
    let (a, b) = (pattern(70 << 20, 1), pattern(30 << 20, 2));
    std::fs::create_dir_all(r.join("t/sub")).unwrap();
    std::fs::write(r.join("t/a"), &a).unwrap();
    std::fs::write(r.join("t/sub/b"), &b).unwrap();
    settle(&c, 3, "the tree");

    step("snapshot: the same bytes, no new chunk on the disks");
    let (t, s) = (r.join("t"), r.join("s"));
    ok(
        "mfsmakesnapshot",
        &[&t.display().to_string(), &s.display().to_string()],
    );
    assert_eq!(std::fs::read(s.join("a")).unwrap(), a);
    assert_eq!(std::fs::read(s.join("sub/b")).unwrap(), b);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(on_disk(&c), 3, "a snapshot takes no space");
    let whole = ok("mfsdirinfo", &[&r.display().to_string()]);
    let tree = ok("mfsdirinfo", &[&t.display().to_string()]);
    assert_eq!(number_after(&whole, " chunks:"), 3, "{whole}");
    assert_eq!(
        number_after(&whole, " realsize:"),
        number_after(&tree, " realsize:"),
        "shared chunks count once:\n{whole}\n{tree}"
    );
    assert_eq!(
        number_after(&whole, " length:"),
        2 * number_after(&tree, " length:")
    );
    let (code, _, err) = tool(
        "mfsmakesnapshot",
        &[
            &t.display().to_string(),
            &t.join("sub/x").display().to_string(),
        ],
    );
    assert_eq!(code, 1, "a snapshot into its own subtree fails");
    assert!(err.contains("EINVAL"), "{err}");

    step("a write to the copy copies one chunk; the original is unchanged");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(s.join("a"))
        .unwrap();
    f.seek(SeekFrom::Start(10 << 20)).unwrap();
    f.write_all(&[0xEE; 1 << 20]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut a2 = a.clone();
    a2[10 << 20..11 << 20].fill(0xEE);
    assert_eq!(std::fs::read(s.join("a")).unwrap(), a2);
    assert_eq!(std::fs::read(t.join("a")).unwrap(), a);
    settle(&c, 4, "after a write to the copy");

    step("a write to the original copies one chunk; the copy is unchanged");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(t.join("sub/b"))
        .unwrap();
    f.write_all(b"changed").unwrap();
    f.sync_all().unwrap();
    drop(f);
    let mut b2 = b.clone();
    b2[..7].copy_from_slice(b"changed");
    assert_eq!(std::fs::read(t.join("sub/b")).unwrap(), b2);
    assert_eq!(std::fs::read(s.join("sub/b")).unwrap(), b);
    settle(&c, 5, "after a write to the original");

    step("a cut inside a shared chunk copies it too");
    let cut = (64 << 20) + 1000;
    std::fs::OpenOptions::new()
        .write(true)
        .open(t.join("a"))
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    assert_eq!(std::fs::read(t.join("a")).unwrap(), a[..cut]);
    assert_eq!(std::fs::read(s.join("a")).unwrap(), a2);
    settle(&c, 6, "after a cut of the original");

    step("-o: a snapshot over an existing name replaces it");
    let tb = t.join("sub/b").display().to_string();
    let sb = s.join("sub/b").display().to_string();
    let (code, _, err) = tool("mfsmakesnapshot", &[&tb, &sb]);
    assert_ne!(code, 0, "an existing name without -o");
    assert!(err.contains("EEXIST"), "{err}");
    ok("mfsmakesnapshot", &["-o", &tb, &sb]);
    // The mount may show the old file for its entry cache time (1 s).
    crate::util::wait_for(5, "the replaced copy", || {
        std::fs::read(s.join("sub/b")).ok().as_deref() == Some(&b2[..])
    });
    assert_eq!(on_disk(&c), 6, "the new copy shares the original's chunk");

    step("rmsnapshot: the copy goes, with the chunks only it held");
    ok("mfsrmsnapshot", &[&s.display().to_string()]);
    // Removed through the master: the mount's entry cache (1 s) may still
    // show the name for a moment.
    let until = Instant::now() + Duration::from_secs(5);
    while s.exists() {
        assert!(Instant::now() < until, "{} still there", s.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read(t.join("sub/b")).unwrap(), b2);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(on_disk(&c), 6, "the copy's files wait in the trash");

    step("emptying the trash (meta mount): the chunks only the copy held go");
    let meta = Mount::start(&c, "meta", &["-m"]).unwrap();
    let trash = meta.path().join("trash");
    for e in std::fs::read_dir(&trash).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "undel" {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    settle(&c, 3, "after emptying the trash");
}
