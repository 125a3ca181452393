//! The mount itself: connect to the masters (saying so while none answers),
//! find the subfolder, mount, serve until unmounted or signalled, then
//! commit open files and close the session.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use fuser::{Config, MountOption, Session, SessionACL};
use mfs_mount::fuse::{self, FsSettings, MetaFs, MfsFs, MountConfig};
use mfs_mount::io::{FileIo, IoOptions};
use mfs_mount::master::{ClientOptions, MasterClient};

use crate::{daemon, Args};

/// Longest time the clean-up after unmount may take (commits, session
/// close) before mfsmount exits anyway.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(30);

pub fn run(args: &Args, cfg: MountConfig, mountpoint: PathBuf) -> ExitCode {
    let level = if args.debug {
        "debug"
    } else {
        cfg.log_level.as_str()
    };
    mfs_common::logging::init(level);
    match mount_and_serve(args, &cfg, &mountpoint) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("mfsmount: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Registers the session, waiting (and saying so) until a leader accepts
/// it, or for MFSIOTIMEOUT when set.
async fn connect(
    res: &fuse::Resolved,
    cfg: &MountConfig,
    meta: bool,
    mountpoint: &Path,
) -> anyhow::Result<MasterClient> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let opts = ClientOptions {
        overall_timeout: res.io_timeout,
        session_info: format!("mfsmount {}:{}", host.trim(), mountpoint.display()),
        register_session: false,
        mount_path: cfg.mfssubfolder.clone(),
        password_md5: res.password_md5,
        meta,
        ..Default::default()
    };
    let master = MasterClient::connect(&res.masters, opts)
        .await
        .context("cannot use the master list")?;
    // While no leader answers, the client logs "no master answered yet,
    // still trying" with the last error every few seconds.
    let id = master
        .register_session()
        .await
        .context("no master accepted a session")?;
    tracing::info!(session = id, master = %master.current_master(), "session registered");
    Ok(master)
}

fn mount_and_serve(args: &Args, cfg: &MountConfig, mountpoint: &Path) -> anyhow::Result<()> {
    let res = cfg
        .resolve()
        .map_err(|e| anyhow::anyhow!("bad mount option: {e}"))?;
    let meta = std::fs::metadata(mountpoint)
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    if !meta.is_dir() {
        anyhow::bail!("mount point {} is not a directory", mountpoint.display());
    }
    // Before mounting: afterwards the path leads into the mount itself.
    let canonical = mountpoint
        .canonicalize()
        .with_context(|| format!("mount point {}", mountpoint.display()))?;
    if cfg.mfsschedbatch {
        mfs_common::runtime::batch_policy_or_warn();
    }
    mfs_proto::tls::set(
        mfs_proto::tls::Tls::dialing("-o mfstlsca", &cfg.mfstlsca).map_err(anyhow::Error::msg)?,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .thread_name("mfsmount-io")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let master = rt.block_on(connect(&res, cfg, args.meta, mountpoint))?;
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::Subtype("mfs".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    config.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(cfg.mfsworkers);
    config.clone_fd = true;
    let mount = Mount {
        rt: &rt,
        master: &master,
        mountpoint,
        canonical,
        daemon_child: args.daemon_child,
        dirty_limit: cfg.mfsdirtylimit << 20,
    };
    if args.meta {
        // `mfsmeta#MASTERS`; root only (the kernel checks the modes).
        config.mount_options.push(MountOption::FSName(format!(
            "mfsmeta#{}",
            res.masters.join(",")
        )));
        config.mount_options.push(MountOption::DefaultPermissions);
        let fs = MetaFs::new(master.clone(), rt.handle().clone());
        let served = mount.serve(fs, &config, "meta file system", |_| {})?;
        let _ = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(5), master.close_session()).await
        });
        rt.shutdown_timeout(Duration::from_secs(1));
        return served.context("the FUSE session ended with an error");
    }
    let root = match master.session_root() {
        Some(root) => root,
        None => rt
            .block_on(fuse::resolve_root(&master, &res.subfolder))
            .with_context(|| format!("cannot mount subfolder {}", cfg.mfssubfolder))?,
    };
    let io = {
        let _guard = rt.enter();
        let opts = IoOptions {
            block_cache: res.read_cache,
            ..IoOptions::default()
        };
        FileIo::new(master.clone(), opts)
    };
    let settings = FsSettings {
        attr_ttl: res.attr_ttl,
        entry_ttl: res.entry_ttl,
        direntry_ttl: res.direntry_ttl,
        writeback_cache: cfg.mfswritebackcache,
        read_only: cfg.ro || master.exported_read_only(),
        kernel_permissions: cfg.default_permissions,
        write_back_creates: cfg.mfswritebackcreates,
        page_store: cfg.mfspagestore,
    };
    let fs = MfsFs::new(master.clone(), io, root, settings, rt.handle().clone());
    let fs_handle = fs.handle();

    // `mfs#MASTERS[:/subfolder]`: mfstools finds the cluster and the
    // subfolder's inode from this (the source column of /proc/mounts).
    let sub: Vec<String> = res
        .subfolder
        .iter()
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    let sub = if sub.is_empty() {
        String::new()
    } else {
        format!(":/{}", sub.join("/"))
    };
    let fsname = format!("mfs#{}{sub}", res.masters.join(","));
    config.mount_options.push(MountOption::FSName(fsname));
    if cfg.ro {
        config.mount_options.push(MountOption::RO);
    }
    if cfg.default_permissions {
        config.mount_options.push(MountOption::DefaultPermissions);
    }
    let notified = fs_handle.clone();
    let served = mount.serve(
        fs,
        &config,
        &format!("subfolder {}", cfg.mfssubfolder),
        move |n| notified.set_notifier(n),
    )?;
    tracing::info!("unmounted; committing open files and closing the session");
    let done =
        rt.block_on(async { tokio::time::timeout(SHUTDOWN_LIMIT, fs_handle.shutdown()).await });
    if done.is_err() {
        tracing::warn!("the masters did not answer at unmount; the session will expire on its own");
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    served.context("the FUSE session ended with an error")
}

/// What serving a mount needs besides the file system.
struct Mount<'a> {
    rt: &'a tokio::runtime::Runtime,
    master: &'a MasterClient,
    mountpoint: &'a Path,
    canonical: PathBuf,
    daemon_child: bool,
    /// Bytes of written pages the kernel may hold (0: its own limit).
    dirty_limit: u64,
}

impl Mount<'_> {
    /// Mounts `fs` and serves it until unmounted; the outer error is a
    /// failed mount, the inner one the session's end.
    fn serve<F: fuser::Filesystem + Send + Sync + 'static>(
        self,
        fs: F,
        config: &Config,
        what: &str,
        on_session: impl FnOnce(fuser::Notifier),
    ) -> anyhow::Result<std::io::Result<()>> {
        let mut session = match Session::new(fs, self.mountpoint, config) {
            Ok(s) => s,
            Err(e) => {
                let master = self.master;
                self.rt.block_on(async {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(5), master.close_session()).await;
                });
                return Err(e).with_context(|| {
                    format!(
                        "cannot mount on {} (is it an existing directory, not mounted already, and is /dev/fuse usable by this user?)",
                        self.mountpoint.display()
                    )
                });
            }
        };
        on_session(session.notifier());
        let unmounter = std::sync::Arc::new(std::sync::Mutex::new(session.unmount_callable()));
        self.rt
            .spawn(unmount_on_signal(unmounter, self.canonical.clone()));
        // Touching the mount point blocks until the session serves: do it
        // beside the session.
        let canonical = self.canonical.clone();
        let dirty_limit = self.dirty_limit;
        self.rt
            .spawn_blocking(move || tune_writeback(&canonical, dirty_limit));
        tracing::info!(
            mountpoint = %self.mountpoint.display(),
            masters = %self.master.masters().join(","),
            %what,
            "mounted"
        );
        if self.daemon_child {
            daemon::report_ready();
        }
        Ok(session.run())
    }
}

/// Unmounts at SIGTERM, SIGINT or SIGHUP: a plain unmount first, and a lazy
/// one (the mount disappears at once, open files finish) if it is busy.
async fn unmount_on_signal(
    unmounter: std::sync::Arc<std::sync::Mutex<fuser::SessionUnmounter>>,
    mountpoint: PathBuf,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot catch signals: unmount with `umount` or `fusermount3 -u`");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = hup.recv() => {}
    }
    tracing::info!(mountpoint = %mountpoint.display(), "signal received: unmounting");
    let result = unmounter
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unmount();
    if let Err(e) = result {
        tracing::warn!(error = %e, "unmount failed (busy?); detaching lazily");
        if let Ok(c) = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()) {
            // SAFETY: umount2(2) with a valid NUL-terminated path.
            let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            if rc != 0 {
                tracing::error!(
                    error = %std::io::Error::last_os_error(),
                    "lazy unmount failed too: unmount with `umount -l`"
                );
            }
        }
    }
}

/// Sets the mount's limits in /sys/class/bdi (root only; best effort):
/// read-ahead to 4 MiB (the kernel offers FUSE only 128 KiB at init), and
/// the written pages it may hold to `dirty_limit` bytes (the kernel gives a
/// FUSE mount 1% of its dirty page limit; 0 leaves it). A sequential write
/// of 1 GiB through 3 chunkservers (goal 2): 502-562 MB/s with the
/// kernel's ~45 MiB, 611 with 128 MiB, 618-678 with 256 MiB.
fn tune_writeback(mountpoint: &Path, dirty_limit: u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(mountpoint) else {
        return;
    };
    let dev = meta.dev();
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    let bdi = format!("/sys/class/bdi/{major}:{minor}");
    let mut settings = vec![("read_ahead_kb", "4096".to_string())];
    if dirty_limit > 0 {
        settings.push(("max_bytes", dirty_limit.to_string()));
    }
    for (name, value) in settings {
        let path = format!("{bdi}/{name}");
        match std::fs::write(&path, &value) {
            Ok(()) => tracing::debug!(%path, %value, "set"),
            Err(e) => tracing::info!(
                %path,
                %value,
                error = %e,
                "cannot set a limit of the mount (not root, or a kernel without it): the kernel's own is kept"
            ),
        }
    }
}
