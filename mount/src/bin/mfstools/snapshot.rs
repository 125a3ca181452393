//! mfsmakesnapshot and mfsrmsnapshot: their operands are a source and a
//! destination, or trees to remove, rather than one path at a time.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use mfs_mount::ClientError;
use mfs_proto::v1::{FileType, ReaddirRequest, RmdirRequest, SnapshotRequest, UnlinkRequest};

use crate::ops::{Ctx, Target};

/// How often a long removal says how far it got.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// The directory holding `path` and the last name of `path`.
fn split(path: &str) -> Result<(String, Vec<u8>), String> {
    let p = Path::new(path);
    let name = p
        .file_name()
        .ok_or_else(|| format!("{path}: names no file (ends in / or ..)"))?;
    let dir = match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.display().to_string(),
        _ => ".".to_string(),
    };
    Ok((dir, name.as_bytes().to_vec()))
}

/// mfsmakesnapshot [-o] SRC... DST: a copy of each SRC, made at once and
/// sharing chunks. DST an existing directory: the copies go in it under
/// their own names; otherwise (one SRC) DST is the copy's new name. With
/// `overwrite`, what has the copy's name is removed first (as
/// mfsrmsnapshot would).
pub async fn make(ctx: &mut Ctx, paths: &[String], overwrite: bool) -> Result<bool, String> {
    let Some((dst, srcs)) = paths.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err("needs a SOURCE and a DESTINATION".into());
    };
    let into_dir = Path::new(dst).is_dir();
    if !into_dir && srcs.len() > 1 {
        return Err(format!(
            "{dst}: with several sources the destination must be an existing directory"
        ));
    }
    let mut ok = true;
    for src in srcs {
        if let Err(e) = make_one(ctx, src, dst, into_dir, overwrite).await {
            eprintln!("{src}: {e}");
            ok = false;
        }
    }
    Ok(ok)
}

async fn make_one(
    ctx: &mut Ctx,
    src: &str,
    dst: &str,
    into_dir: bool,
    overwrite: bool,
) -> Result<(), String> {
    let from = ctx.target(src).await?;
    let (parent, name) = if into_dir {
        (ctx.target(dst).await?, split(src)?.1)
    } else {
        let (dir, name) = split(dst)?;
        (ctx.target(&dir).await?, name)
    };
    if from.masters != parent.masters {
        return Err(format!(
            "{dst} is on another rmfs cluster (masters {}, not {}): a snapshot stays in its cluster",
            parent.masters, from.masters
        ));
    }
    if overwrite {
        match parent.client.lookup(&ctx.cred, parent.inode, &name).await {
            Ok(_) => {
                let shown = format!("{dst} (to overwrite)");
                remove_tree(ctx, &shown, &parent, name.clone())
                    .await
                    .map_err(|e| format!("removing {shown}: {e}"))?;
            }
            Err(ClientError::Errno(libc::ENOENT, _)) => {}
            Err(e) => return Err(format!("{dst}: {e}")),
        }
    }
    from.client
        .snapshot(SnapshotRequest {
            id: None,
            cred: Some(ctx.cred.clone()),
            src: from.inode,
            parent: parent.inode,
            name,
        })
        .await
        .map(drop)
        .map_err(|e| format!("snapshot to {dst}: {e}"))
}

/// mfsrmsnapshot PATH...: removes each tree (or file), deepest names first.
pub async fn remove(ctx: &mut Ctx, paths: &[String]) -> Result<bool, String> {
    let mut ok = true;
    for path in paths {
        let r = match split(path) {
            Ok((dir, name)) => match ctx.target(&dir).await {
                Ok(t) => remove_tree(ctx, path, &t, name)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            eprintln!("{path}: {e}");
            ok = false;
        }
    }
    Ok(ok)
}

async fn remove_tree(
    ctx: &Ctx,
    path: &str,
    dir: &Target,
    name: Vec<u8>,
) -> Result<(), ClientError> {
    let c = &dir.client;
    let cred = Some(ctx.cred.clone());
    let top = c.lookup(&ctx.cred, dir.inode, &name).await?;
    // (directory, name, inode of a directory, its contents already queued)
    let mut stack = vec![(dir.inode, name, top.inode, false)];
    let (started, mut last, mut removed) = (Instant::now(), Instant::now(), 0u64);
    if top.r#type != FileType::Directory as i32 {
        let (parent, name, _, _) = stack.remove(0);
        return c
            .unlink(UnlinkRequest {
                id: None,
                cred,
                parent,
                name,
            })
            .await;
    }
    while let Some((parent, name, inode, queued)) = stack.pop() {
        if queued {
            c.rmdir(RmdirRequest {
                id: None,
                cred: cred.clone(),
                parent,
                name,
            })
            .await?;
            removed += 1;
            continue;
        }
        stack.push((parent, name, inode, true));
        let mut after = Vec::new();
        let mut files = Vec::new();
        loop {
            let page = c
                .readdir(ReaddirRequest {
                    cred: cred.clone(),
                    inode,
                    after: after.clone(),
                    limit: 1000,
                    plus: false,
                })
                .await?;
            for e in &page.entries {
                if e.r#type == FileType::Directory as i32 {
                    stack.push((inode, e.name.clone(), e.inode, false));
                } else {
                    files.push(e.name.clone());
                }
            }
            match page.entries.last() {
                Some(l) if page.more => after = l.name.clone(),
                _ => break,
            }
        }
        for f in files {
            c.unlink(UnlinkRequest {
                id: None,
                cred: cred.clone(),
                parent: inode,
                name: f,
            })
            .await?;
            removed += 1;
            if last.elapsed() >= PROGRESS_EVERY {
                last = Instant::now();
                eprintln!(
                    "{path}: {removed} inodes removed in {:.0?}...",
                    started.elapsed()
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split;

    #[test]
    fn split_names_the_directory_and_the_last_name() {
        assert_eq!(split("/m/a/b"), Ok(("/m/a".into(), b"b".to_vec())));
        assert_eq!(split("b"), Ok((".".into(), b"b".to_vec())));
        assert!(split("/m/a/..").is_err());
    }
}
