//! Directory quotas on a real mount: mfssetquota / mfsgetquota /
//! mfsdelquota, EDQUOT at the hard limits of inodes and length (writes
//! stop at the limit, checked in the master's usage), a limit below the
//! usage, a soft limit turning hard after its grace period, and
//! `mfscli quota`.
//!
//! Needs root and /dev/fuse; without them it says so and passes.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

use mfs_tests::cluster::bin_dir;

use crate::tools::{ok, tool};
use crate::util::step;

/// The (current, soft, hard) cells of row `name` of mfsgetquota's output.
fn row(out: &str, name: &str) -> (String, String, String) {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(name))
        .unwrap_or_else(|| panic!("no {name} row in:\n{out}"));
    let cells: Vec<String> = line
        .split('|')
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    (cells[1].clone(), cells[2].clone(), cells[3].clone())
}

fn errno_of<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("should fail").raw_os_error().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_refuse_creates_and_writes_at_the_hard_limit() {
    let Some((c, m)) = crate::util::mounted_cluster(2).await else {
        return;
    };
    let q = m.path().join("q");
    std::fs::create_dir(&q).unwrap();
    let qp = q.display().to_string();

    step("mfssetquota -I 5 -L 10M: shown by mfsgetquota");
    let out = ok("mfssetquota", &["-I", "5", "-L", "10M", &qp]);
    assert_eq!(row(&out, "inodes"), ("0".into(), "-".into(), "5".into()));
    assert_eq!(
        row(&out, "length"),
        ("0".into(), "-".into(), "10000000".into())
    );
    assert!(out.contains("grace period: default"), "{out}");

    step("five files fit, the sixth gets EDQUOT");
    for i in 0..5 {
        std::fs::write(q.join(format!("f{i}")), b"x").unwrap();
    }
    assert_eq!(errno_of(std::fs::write(q.join("f5"), b"x")), libc::EDQUOT);
    assert_eq!(errno_of(std::fs::create_dir(q.join("d"))), libc::EDQUOT);
    let out = ok("mfsgetquota", &[&qp]);
    assert_eq!(row(&out, "inodes").0, "5");
    assert_eq!(row(&out, "length").0, "5");

    step("30 MB into a file: EDQUOT, the master's length stays within 10 MB");
    std::fs::remove_file(q.join("f4")).unwrap();
    let mut f = std::fs::File::create(q.join("big")).unwrap();
    let block = vec![7u8; 1 << 20];
    let mut failed = None;
    for _ in 0..30 {
        if let Err(e) = f.write_all(&block) {
            failed = Some(e);
            break;
        }
    }
    let failed = failed.or_else(|| f.sync_all().err());
    drop(f);
    let e = failed.expect("a write or the fsync must fail");
    assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
    let out = ok("mfsgetquota", &[&qp]);
    let length: u64 = row(&out, "length").0.parse().unwrap();
    assert!(
        (8_000_000..=10_000_000).contains(&length),
        "length {length} after writing up to the limit:\n{out}"
    );

    step("mfsdelquota -L: the write goes through");
    ok("mfsdelquota", &["-L", &qp]);
    std::fs::write(q.join("big"), vec![1u8; 12 << 20]).unwrap();
    let out = ok("mfsgetquota", &[&qp]);
    assert_eq!(row(&out, "length").2, "-");

    step("a limit below the usage is allowed; writes that grow are refused");
    ok("mfssetquota", &["-L", "1k", &qp]);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(q.join("f0"))
        .unwrap();
    let grown = f.write_all(&block).and_then(|_| f.sync_all());
    assert_eq!(errno_of(grown), libc::EDQUOT);
    drop(f);

    step("soft inode limit with a 2 s grace period");
    ok("mfsdelquota", &["-a", &qp]);
    assert!(ok("mfsgetquota", &[&qp]).contains("no quota"));
    ok("mfssetquota", &["-i", "6", "-p", "2", &qp]);
    std::fs::write(q.join("s1"), b"x").unwrap(); // 6 inodes: at the limit
    std::fs::write(q.join("s2"), b"x").unwrap(); // 7 > 6: the clock starts
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(errno_of(std::fs::write(q.join("s3"), b"x")), libc::EDQUOT);
    assert!(
        ok("mfsgetquota", &[&qp]).contains("soft quota exceeded"),
        "mfsgetquota says the soft limit is exceeded"
    );

    step("mfscli quota lists it; bad input is refused");
    let out = Command::new(bin_dir().join("mfscli"))
        .args(["-H", &c.addrs().join(","), "quota"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.lines().any(|l| l.starts_with("/q\t7/6/-\t")), "{text}");
    let (code, _, err) = tool("mfssetquota", &["-I", "lots", &qp]);
    assert_ne!(code, 0);
    assert!(err.contains("not a number"), "{err}");
    let (code, _, err) = tool(
        "mfssetquota",
        &["-I", "5", &q.join("f0").display().to_string()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("ENOTDIR"), "{err}");
}
