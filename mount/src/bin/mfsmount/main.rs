//! mfsmount: mounts an rmfs file system with FUSE.
//!
//! Usage as MooseFS's: `mfsmount MOUNTPOINT [-H masters] [-P port]
//! [-S subfolder] [-o opts] [-c mfsmount.cfg] [-f]`. Also the mount(8)
//! helper form `mount.mfs SPEC DIR [-sfnv] [-o opts]` (install with
//! `ln -s /usr/bin/mfsmount /sbin/mount.mfs`; fstab line:
//! `m1:9421,m2:9421 /mnt/mfs mfs defaults,_netdev 0 0`, or with a
//! subfolder `m1:9421:/projects /mnt/p mfs defaults,_netdev 0 0`).
//!
//! Without `-f` it runs in the background once the mount answers: the
//! foreground process starts a copy of itself and relays its messages until
//! that copy reports the file system mounted (or fails), so errors reach
//! the terminal.

mod daemon;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

use mfs_mount::fuse::{MountConfig, Overrides};

/// Mount an rmfs file system (FUSE).
///
/// Settings come from built-in defaults, then the config file (`KEY = VALUE`
/// lines with the option names below), then `MFS_*` environment variables
/// (MFS_MASTERS for the masters), then the command line.
#[derive(Parser, Debug)]
#[command(
    name = "mfsmount",
    version,
    after_help = "Mount options (-o, comma separated; also as KEY = VALUE in the config file):\n  \
        mfsmaster=H:P[,H:P...]   masters (alias: master; -H)\n  \
        mfsport=PORT             port for masters given without one (-P; default 9421)\n  \
        mfssubfolder=PATH        directory to mount as the root (-S; default /)\n  \
        mfsattrcacheto=SECS      attribute cache time (default 1)\n  \
        mfsentrycacheto=SECS     lookup cache time (default 1)\n  \
        mfsdirentrycacheto=SECS  readdir entry cache time (default 1)\n  \
        mfsiotimeout=SECS        fail a call with EIO after this long without a master (0 = never; default)\n  \
        mfswritebackcache=0|1    kernel writeback cache (default 1)\n  \
        mfsschedbatch=0|1        SCHED_BATCH CPU policy: woken threads do not preempt (default 1)\n  \
        mfspagestore=0|1         blocks fetched for small reads go to the kernel's page cache too (default 1)\n  \
        mfswritebackcreates=0|1  answer creates in a directory delegated to this mount itself (default 1)\n  \
        mfsworkers=N             FUSE reader threads (default 16)\n  \
        mfsreadcachesize=MIB     64 KiB blocks kept for small reads (default 128; 0 = off)\n  \
        mfsdirtylimit=MIB        written pages the kernel may hold before writers wait (default 256; 0 = the kernel's)\n  \
        mfstlsca=PATH            PEM CA of a cluster serving TLS: dial masters and chunkservers with TLS\n  \
        mfspassword=PASS         the password of the master's mfsexports.cfg line for this mount\n  \
        mfsmd5pass=HEX           the same given as the MD5 of the password (32 hex digits)\n  \
        allow_other, default_permissions, ro\n  \
        mount(8)'s generic options (defaults, _netdev, noatime, ...) are accepted and ignored.\n\n\
        Examples:\n  \
        mfsmount /mnt/mfs -H m1:9421,m2:9421,m3:9421\n  \
        mfsmount /mnt/proj -S /projects -o mfsattrcacheto=5,allow_other\n  \
        mount -t mfs m1:9421:/ /mnt/mfs -o _netdev   (with /sbin/mount.mfs -> mfsmount)"
)]
pub struct Args {
    /// MOUNTPOINT, or SPEC MOUNTPOINT as mount(8) passes them (SPEC: the
    /// masters, optionally followed by `:/subfolder`; `mfs` or `none` for
    /// none).
    #[arg(required = true, num_args = 1..=2, value_name = "[SPEC] MOUNTPOINT")]
    pub positional: Vec<String>,
    /// Masters, host:port,host:port,... (or a name resolving to several).
    #[arg(short = 'H', long = "masters")]
    pub masters: Option<String>,
    /// Port for the masters given without one.
    #[arg(short = 'P', long = "port")]
    pub port: Option<u16>,
    /// Subfolder of the file system to mount as the root.
    #[arg(short = 'S', long = "subfolder")]
    pub subfolder: Option<String>,
    /// Mount options (repeatable), see below.
    #[arg(short = 'o', value_name = "OPTS", action = clap::ArgAction::Append)]
    pub options: Vec<String>,
    /// Config file (default /etc/mfs/mfsmount.cfg, used only if present).
    #[arg(short = 'c', long = "config")]
    pub config: Option<PathBuf>,
    /// Stay in the foreground (logs on stderr).
    #[arg(short = 'f', long = "foreground")]
    pub foreground: bool,
    /// Log debugging detail.
    #[arg(short = 'd', long = "debug")]
    pub debug: bool,
    /// Mount the meta file system instead: trash/ (deleted files, named
    /// INODE|path; rm removes one for good, mv into trash/undel/ puts it
    /// back) and sustained/ (deleted while open). Root only.
    #[arg(short = 'm', long = "meta")]
    pub meta: bool,
    /// Print the effective settings and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Internal: this process is the background copy; report readiness on
    /// stderr, then detach from it.
    #[arg(long, hide = true)]
    pub daemon_child: bool,
}

/// Names mount(8) may be given as SPEC that name no master.
const PLACEHOLDER_SPECS: &[&str] = &["mfs", "mfsmount", "rmfs", "none", "fuse"];

/// The args of a `mount.mfs SPEC DIR [-sfnv] [-N ns] [-o opts] [-t type]`
/// call turned into mfsmount's, or None for `-f` (mount(8)'s "fake": do
/// nothing).
fn from_helper_args(args: Vec<String>) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    if let Some(argv0) = it.next() {
        out.push(argv0);
    }
    while let Some(a) = it.next() {
        match a.as_str() {
            "-f" => return None,
            "-s" | "-n" | "-v" => {}
            "-N" | "-t" => {
                it.next();
            }
            _ => out.push(a),
        }
    }
    Some(out)
}

/// Splits a SPEC into masters and subfolder.
fn parse_spec(spec: &str) -> (Option<String>, Option<String>) {
    let spec = spec.strip_prefix("mfs#").unwrap_or(spec);
    let (hosts, sub) = match spec.find(":/") {
        Some(p) => (&spec[..p], Some(spec[p + 1..].to_string())),
        None if spec.starts_with('/') => ("", Some(spec.to_string())),
        None => (spec, None),
    };
    let hosts = hosts.trim();
    let masters =
        (!hosts.is_empty() && !PLACEHOLDER_SPECS.contains(&hosts)).then(|| hosts.to_string());
    (masters, sub)
}

fn main() -> ExitCode {
    mfs_mount::io::tune_allocator();
    let raw: Vec<String> = std::env::args().collect();
    let helper = raw
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("mount."));
    let argv = if helper {
        match from_helper_args(raw) {
            Some(a) => a,
            None => return ExitCode::SUCCESS,
        }
    } else {
        raw
    };
    let args = Args::parse_from(&argv);
    match load(&args) {
        Ok((cfg, mountpoint)) => {
            if args.print_config {
                println!("{cfg:#?}");
                return ExitCode::SUCCESS;
            }
            if !args.foreground && !args.daemon_child {
                return daemon::run_in_background(&argv[1..]);
            }
            run::run(&args, cfg, mountpoint)
        }
        Err(e) => {
            eprintln!("mfsmount: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The settings and the mount point from the command line, the config file
/// and the environment.
fn load(args: &Args) -> anyhow::Result<(MountConfig, PathBuf)> {
    let mut o = Overrides::default();
    let (spec, mountpoint) = match args.positional.as_slice() {
        [dir] => (None, dir.clone()),
        [spec, dir] => (Some(spec.as_str()), dir.clone()),
        _ => anyhow::bail!("give the mount point (and optionally a SPEC before it)"),
    };
    if let Some(spec) = spec {
        let (m, s) = parse_spec(spec);
        o.mfsmaster = m;
        o.mfssubfolder = s;
    }
    for list in &args.options {
        o.add_o(list).map_err(|e| anyhow::anyhow!(e))?;
    }
    if let Some(m) = &args.masters {
        o.mfsmaster = Some(m.clone());
    }
    if let Some(p) = args.port {
        o.mfsport = Some(p);
    }
    if let Some(s) = &args.subfolder {
        o.mfssubfolder = Some(s.clone());
    }
    let (file, required) =
        mfs_common::config::config_file(args.config.as_deref(), "/etc/mfs/mfsmount.cfg");
    let cfg: MountConfig =
        mfs_common::config::load(Some(&file), required, mfs_mount::fuse::options::ALIASES, &o)
            .map_err(|e| anyhow::anyhow!("{e} (fix the configuration)"))?;
    cfg.resolve()
        .map_err(|e| anyhow::anyhow!("bad mount option: {e}"))?;
    Ok((cfg, PathBuf::from(mountpoint)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(parse_spec("mfs"), (None, None));
        assert_eq!(
            parse_spec("m1:9421,m2:9421:/sub/dir"),
            (Some("m1:9421,m2:9421".into()), Some("/sub/dir".into()))
        );
        assert_eq!(parse_spec("mfs#host:1"), (Some("host:1".into()), None));
        assert_eq!(parse_spec("mfsmount:/x"), (None, Some("/x".into())));
    }

    #[test]
    fn helper_args() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(from_helper_args(a(&["mount.mfs", "s", "/m", "-f"])), None);
        let got = from_helper_args(a(&["mount.mfs", "s", "/m", "-n", "-o", "ro", "-t", "mfs"]));
        assert_eq!(got, Some(a(&["mount.mfs", "s", "/m", "-o", "ro"])));
    }
}
