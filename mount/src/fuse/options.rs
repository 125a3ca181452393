//! mfsmount settings: defaults < `mfsmount.cfg` < `MFS_*` env < `-o`/flags.
//!
//! The option names are MooseFS's (`mfsmaster`, `mfsattrcacheto`, ...), with
//! short aliases (`attrcacheto`, `master`, ...). The same names work in the
//! config file (`KEY = VALUE`), as `MFS_KEY` in the environment and in `-o`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Alternative names accepted for the settings (lowercase), mapped to ours.
pub const ALIASES: &[(&str, &str)] = &[
    ("masters", "mfsmaster"),
    ("master", "mfsmaster"),
    ("port", "mfsport"),
    ("subfolder", "mfssubfolder"),
    ("attrcacheto", "mfsattrcacheto"),
    ("entrycacheto", "mfsentrycacheto"),
    ("direntrycacheto", "mfsdirentrycacheto"),
    ("iotimeout", "mfsiotimeout"),
    ("writebackcache", "mfswritebackcache"),
    ("workers", "mfsworkers"),
    ("readcachesize", "mfsreadcachesize"),
    ("dirtylimit", "mfsdirtylimit"),
    ("schedbatch", "mfsschedbatch"),
    ("pagestore", "mfspagestore"),
    ("writebackcreates", "mfswritebackcreates"),
    ("tlsca", "mfstlsca"),
    ("password", "mfspassword"),
    ("md5pass", "mfsmd5pass"),
];

/// Largest read block cache (MiB).
const MAX_READ_CACHE_MIB: u64 = 1 << 20;

/// Largest dirty page limit (MiB).
const MAX_DIRTY_MIB: u64 = 1 << 20;

/// Every setting of mfsmount.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MountConfig {
    /// The masters, `host[:port],host[:port],...` (a name resolving to
    /// several addresses counts as several masters). Empty: `MFS_MASTERS`,
    /// else 127.0.0.1.
    pub mfsmaster: String,
    /// Port for the masters listed without one (MooseFS `-P`).
    pub mfsport: u16,
    /// The directory of the file system to mount as the root (MooseFS `-S`).
    pub mfssubfolder: String,
    /// Seconds the kernel may cache attributes (MooseFS default 1).
    pub mfsattrcacheto: f64,
    /// Seconds the kernel may cache a name found by lookup (default 1, as
    /// JuiceFS: a path walk does not ask the master for every component; a
    /// rename by another client shows within this time. 0 asks every time,
    /// as MooseFS does).
    pub mfsentrycacheto: f64,
    /// Seconds the kernel may cache names and attributes listed by readdir
    /// (readdirplus; MooseFS default 1).
    pub mfsdirentrycacheto: f64,
    /// Seconds a file system call may wait for the master group (failover
    /// included) before it fails with EIO; 0 waits for ever (NFS `hard`).
    pub mfsiotimeout: u64,
    /// Use the kernel's writeback cache (writes coalesced into large
    /// requests; sizes of files changed by other clients show only after
    /// the file is reopened).
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub mfswritebackcache: bool,
    /// FUSE worker threads reading requests from the kernel. A short call
    /// runs on the thread that read it, so this is also how many of them
    /// can wait for the master at once (calls that may wait long run as
    /// tasks).
    pub mfsworkers: usize,
    /// MiB of 64 KiB data blocks kept for small reads (each small read
    /// fetches its whole block; the next reads of the block are answered
    /// here while the chunk's location, asked again every 3 s, shows the
    /// same version and no other writer). 0: off.
    pub mfsreadcachesize: u64,
    /// MiB of written pages the kernel may hold for this mount before it
    /// makes writers wait (the mount's `max_bytes` in /sys/class/bdi). The
    /// kernel allows a FUSE mount 1% of its dirty page limit, ~45 MiB on a
    /// 24 GiB machine, which throttles a sequential write below what the
    /// chunkservers take. 0: the kernel's own limit.
    pub mfsdirtylimit: u64,
    /// Run under Linux's SCHED_BATCH CPU policy: a thread the mount wakes
    /// (a FUSE thread, a reply's reader) does not preempt the one that
    /// woke it, which saves context switches on a machine the mount shares
    /// with busy processes.
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub mfsschedbatch: bool,
    /// Store the whole block a small read fetched in the kernel's page
    /// cache too (see `fuse::pages`): later reads of the block never leave
    /// the kernel. Needs `mfsreadcachesize` above 0.
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub mfspagestore: bool,
    /// Answer creates in a directory this mount makes many files in
    /// itself, once the master delegated the directory to it; they reach
    /// the master in batches, before any later call of this mount (see
    /// `fuse::writeback`).
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub mfswritebackcreates: bool,
    /// PEM CA certificate(s) of a cluster serving TLS: masters and
    /// chunkservers are dialed with TLS and must show a certificate it
    /// signed for the address dialed. Empty (the default): plain.
    pub mfstlsca: String,
    /// The password of the master's exports line (`password=` or
    /// `md5pass=` in mfsexports.cfg). Empty: none.
    pub mfspassword: String,
    /// The same given as its MD5 (32 hex digits), as MooseFS's
    /// `mfsmd5pass`; not with `mfspassword`.
    pub mfsmd5pass: String,
    /// Let users other than the one mounting use the mount.
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub allow_other: bool,
    /// Let the kernel check permissions from the mode bits (the master
    /// checks them anyway).
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub default_permissions: bool,
    /// Mount read-only.
    #[serde(deserialize_with = "mfs_common::config::flexible_bool")]
    pub ro: bool,
    /// Default log filter when RUST_LOG is unset.
    pub log_level: String,
}

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            mfsmaster: String::new(),
            mfsport: crate::master::DEFAULT_PORT,
            mfssubfolder: "/".into(),
            mfsattrcacheto: 1.0,
            mfsentrycacheto: 1.0,
            mfsdirentrycacheto: 1.0,
            mfsiotimeout: 0,
            mfswritebackcache: true,
            mfsworkers: 16,
            mfsreadcachesize: 128,
            mfsdirtylimit: 256,
            mfsschedbatch: true,
            mfspagestore: true,
            mfswritebackcreates: true,
            mfstlsca: String::new(),
            mfspassword: String::new(),
            mfsmd5pass: String::new(),
            allow_other: false,
            default_permissions: false,
            ro: false,
            log_level: "info".into(),
        }
    }
}

/// Settings given on the command line (`-o`, `-H`, `-P`, `-S`), only those
/// present; they override the file and the environment. Each field is the
/// [`MountConfig`] setting of the same name.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsmaster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsport: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfssubfolder: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsattrcacheto: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsentrycacheto: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsdirentrycacheto: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsiotimeout: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfswritebackcache: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsworkers: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsreadcachesize: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsdirtylimit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsschedbatch: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfspagestore: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfswritebackcreates: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfstlsca: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfspassword: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfsmd5pass: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_other: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_permissions: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ro: Option<bool>,
}

/// Options mount(8) passes to helpers that mean nothing to a FUSE mount or
/// are the kernel's defaults anyway; accepted and ignored.
const IGNORED: &[&str] = &[
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "rw",
    "async",
    "dev",
    "suid",
    "exec",
    "atime",
    "relatime",
    "nodev",
    "nosuid",
    "noexec",
    "noatime",
    "nodiratime",
    "diratime",
    "x-systemd.automount",
    "fsname",
    "subtype",
];

fn secs(key: &str, v: &str) -> Result<f64, String> {
    match v.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s >= 0.0 => Ok(s),
        _ => Err(format!(
            "-o {key}={v}: expected a number of seconds (e.g. 1 or 0.5)"
        )),
    }
}

fn flag(key: &str, v: Option<&str>) -> Result<bool, String> {
    match v.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
        None | Some("1") | Some("yes") | Some("true") | Some("on") => Ok(true),
        Some("0") | Some("no") | Some("false") | Some("off") => Ok(false),
        Some(other) => Err(format!("-o {key}={other}: expected 0 or 1")),
    }
}

fn need<'a>(key: &str, v: Option<&'a str>) -> Result<&'a str, String> {
    v.ok_or_else(|| format!("-o {key} needs a value ({key}=...)"))
}

/// A whole number in `range`; the error says what was expected (`unit`).
fn ranged<T>(
    key: &str,
    v: Option<&str>,
    range: std::ops::RangeInclusive<T>,
    unit: &str,
) -> Result<T, String>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let v = need(key, v)?;
    v.trim()
        .parse()
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            format!(
                "-o {key}={v}: expected {} to {} {unit}",
                range.start(),
                range.end()
            )
        })
}

impl Overrides {
    /// Adds the comma-separated options of one `-o` argument. Unknown
    /// options are refused with their name; the mount(8) generic ones
    /// (`defaults`, `_netdev`, `noatime`, ...) are accepted and ignored.
    pub fn add_o(&mut self, list: &str) -> Result<(), String> {
        let mut in_master_list = false;
        for item in list.split(',') {
            let item = item.trim();
            if item.is_empty() {
                continue;
            }
            // `mfsmaster=h1:p,h2:p`: the items after the first that look
            // like addresses belong to the list.
            if in_master_list && !item.contains('=') && (item.contains(':') || item.contains('.')) {
                if let Some(m) = &mut self.mfsmaster {
                    m.push(',');
                    m.push_str(item);
                }
                continue;
            }
            in_master_list = false;
            let (key, value) = match item.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v)),
                None => (item, None),
            };
            let lower = key.to_ascii_lowercase();
            let canon = ALIASES
                .iter()
                .find(|(a, _)| *a == lower)
                .map(|(_, n)| *n)
                .unwrap_or(lower.as_str());
            match canon {
                "mfsmaster" => {
                    self.mfsmaster = Some(need(key, value)?.to_string());
                    in_master_list = true;
                }
                "mfsport" => {
                    let v = need(key, value)?;
                    self.mfsport =
                        Some(v.trim().parse().map_err(|_| {
                            format!("-o {key}={v}: expected a port number (1-65535)")
                        })?);
                }
                "mfssubfolder" => self.mfssubfolder = Some(need(key, value)?.to_string()),
                "mfsattrcacheto" => self.mfsattrcacheto = Some(secs(key, need(key, value)?)?),
                "mfsentrycacheto" => self.mfsentrycacheto = Some(secs(key, need(key, value)?)?),
                "mfsdirentrycacheto" => {
                    self.mfsdirentrycacheto = Some(secs(key, need(key, value)?)?)
                }
                "mfsiotimeout" => {
                    let v = need(key, value)?;
                    self.mfsiotimeout = Some(v.trim().parse().map_err(|_| {
                        format!("-o {key}={v}: expected whole seconds (0 = wait for ever)")
                    })?);
                }
                "mfswritebackcache" => self.mfswritebackcache = Some(flag(key, value)?),
                "mfsschedbatch" => self.mfsschedbatch = Some(flag(key, value)?),
                "mfspagestore" => self.mfspagestore = Some(flag(key, value)?),
                "mfswritebackcreates" => self.mfswritebackcreates = Some(flag(key, value)?),
                "mfstlsca" => self.mfstlsca = Some(need(key, value)?.to_string()),
                "mfspassword" => self.mfspassword = Some(need(key, value)?.to_string()),
                "mfsmd5pass" => self.mfsmd5pass = Some(need(key, value)?.to_string()),
                "mfsworkers" => self.mfsworkers = Some(ranged(key, value, 1..=64, "threads")?),
                "mfsreadcachesize" => {
                    self.mfsreadcachesize = Some(ranged(key, value, 0..=MAX_READ_CACHE_MIB, "MiB")?)
                }
                "mfsdirtylimit" => {
                    self.mfsdirtylimit = Some(ranged(key, value, 0..=MAX_DIRTY_MIB, "MiB")?)
                }
                "allow_other" => self.allow_other = Some(flag(key, value)?),
                "default_permissions" => self.default_permissions = Some(flag(key, value)?),
                "ro" => self.ro = Some(flag(key, value)?),
                k if IGNORED.contains(&k) => {}
                _ => {
                    return Err(format!(
                        "unknown mount option `{item}` (see mfsmount --help for the options)"
                    ))
                }
            }
        }
        Ok(())
    }
}

/// The checked settings the file system runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// Master addresses, `host:port`.
    pub masters: Vec<String>,
    /// Path components of the subfolder to mount (empty: the root).
    pub subfolder: Vec<Vec<u8>>,
    /// Attribute cache time.
    pub attr_ttl: Duration,
    /// Entry (lookup) cache time.
    pub entry_ttl: Duration,
    /// Readdirplus entry cache time.
    pub direntry_ttl: Duration,
    /// Overall timeout of a call to the masters (None: wait for ever).
    pub io_timeout: Option<Duration>,
    /// Bytes of the read block cache.
    pub read_cache: usize,
    /// MD5 of the exports password (`mfspassword` or `mfsmd5pass`).
    pub password_md5: Option<[u8; 16]>,
}

/// 32 hexadecimal digits as 16 bytes (`mfsmd5pass`).
fn md5_hex(hex: &str) -> Result<[u8; 16], String> {
    let bad = || format!("MFSMD5PASS `{hex}`: the MD5 of the password, 32 hexadecimal digits");
    if hex.len() != 32 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl MountConfig {
    /// Checks the settings; the error names the option and what is wrong.
    pub fn resolve(&self) -> Result<Resolved, String> {
        let list = if self.mfsmaster.trim().is_empty() {
            std::env::var(crate::master::MASTERS_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| "127.0.0.1".into())
        } else {
            self.mfsmaster.clone()
        };
        if self.mfsport == 0 {
            return Err("MFSPORT must be a port number (1-65535)".into());
        }
        // Items without a port get MFSPORT.
        let with_ports: Vec<String> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                let has_port = if let Some(rest) = s.strip_prefix('[') {
                    rest.contains("]:")
                } else {
                    s.matches(':').count() == 1
                };
                if has_port {
                    s.to_string()
                } else if s.contains(':') && !s.starts_with('[') {
                    format!("[{s}]:{}", self.mfsport)
                } else {
                    format!("{s}:{}", self.mfsport)
                }
            })
            .collect();
        let masters = crate::master::parse_masters(&with_ports.join(","))
            .map_err(|e| format!("MFSMASTER `{list}`: {e}"))?;
        let mut subfolder = Vec::new();
        for part in self.mfssubfolder.split('/') {
            match part {
                "" | "." => {}
                ".." => {
                    return Err(format!(
                        "MFSSUBFOLDER `{}`: `..` is not allowed",
                        self.mfssubfolder
                    ))
                }
                p if p.len() > 255 => {
                    return Err(format!(
                        "MFSSUBFOLDER `{}`: a component is longer than 255 bytes",
                        self.mfssubfolder
                    ))
                }
                p => subfolder.push(p.as_bytes().to_vec()),
            }
        }
        let ttl = |name: &str, v: f64| {
            if v.is_finite() && (0.0..=86400.0).contains(&v) {
                Ok(Duration::from_secs_f64(v))
            } else {
                Err(format!("{name} = {v}: expected 0 to 86400 seconds"))
            }
        };
        if self.mfsreadcachesize > MAX_READ_CACHE_MIB {
            return Err(format!(
                "MFSREADCACHESIZE = {}: expected 0 to {MAX_READ_CACHE_MIB} MiB",
                self.mfsreadcachesize
            ));
        }
        if self.mfsdirtylimit > MAX_DIRTY_MIB {
            return Err(format!(
                "MFSDIRTYLIMIT = {}: expected 0 to {MAX_DIRTY_MIB} MiB",
                self.mfsdirtylimit
            ));
        }
        if self.mfsworkers == 0 || self.mfsworkers > 64 {
            return Err(format!(
                "MFSWORKERS = {}: expected 1 to 64 threads",
                self.mfsworkers
            ));
        }
        let password_md5 = match (self.mfspassword.is_empty(), self.mfsmd5pass.trim()) {
            (true, "") => None,
            (false, "") => Some(mfs_proto::password_md5(&self.mfspassword)),
            (true, hex) => Some(md5_hex(hex)?),
            (false, _) => {
                return Err(
                    "MFSPASSWORD and MFSMD5PASS are both given: give the password one way".into(),
                )
            }
        };
        Ok(Resolved {
            password_md5,
            masters,
            subfolder,
            attr_ttl: ttl("MFSATTRCACHETO", self.mfsattrcacheto)?,
            entry_ttl: ttl("MFSENTRYCACHETO", self.mfsentrycacheto)?,
            direntry_ttl: ttl("MFSDIRENTRYCACHETO", self.mfsdirentrycacheto)?,
            io_timeout: (self.mfsiotimeout > 0).then(|| Duration::from_secs(self.mfsiotimeout)),
            read_cache: (self.mfsreadcachesize << 20) as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn o_options_with_aliases_and_ignored_generic_ones() {
        let mut o = Overrides::default();
        o.add_o("rw,_netdev,mfsmaster=a:1,b.example:2,attrcacheto=2.5,mfsentrycacheto=0")
            .unwrap_or_else(|e| panic!("{e}"));
        o.add_o("allow_other,ro=0,noatime,schedbatch=0,pagestore=0,dirtylimit=64")
            .unwrap_or_else(|e| panic!("{e}"));
        // An address after `mfsmaster=...,` continues the master list.
        assert_eq!(o.mfsmaster.as_deref(), Some("a:1,b.example:2"));
        assert_eq!(o.mfsattrcacheto, Some(2.5));
        assert_eq!(o.mfsentrycacheto, Some(0.0));
        assert_eq!(o.allow_other, Some(true));
        assert_eq!(o.ro, Some(false));
        assert_eq!(o.mfsschedbatch, Some(false));
        assert_eq!(o.mfspagestore, Some(false));
        assert_eq!(o.mfsdirtylimit, Some(64));
        assert_eq!(MountConfig::default().mfsdirtylimit, 256);
    }

    #[test]
    fn bad_o_options_name_the_option() {
        for (opt, want) in [
            ("mfsattrcacheto=abc", "mfsattrcacheto"),
            ("mfsport=70000", "mfsport"),
            ("bogus", "bogus"),
            ("mfsmaster", "mfsmaster"),
            ("mfsworkers=0", "mfsworkers"),
            ("mfsdirtylimit=-1", "mfsdirtylimit"),
            ("mfsdirtylimit=2000000", "mfsdirtylimit"),
        ] {
            let err = Overrides::default().add_o(opt).err();
            assert!(
                err.as_deref().is_some_and(|e| e.contains(want)),
                "{opt}: {err:?}"
            );
        }
    }

    #[test]
    fn resolve_adds_port_and_splits_subfolder() {
        let cfg = MountConfig {
            mfsmaster: "10.0.0.1,10.0.0.2:9999".into(),
            mfsport: 1234,
            mfssubfolder: "/a//b/./c/".into(),
            ..Default::default()
        };
        let r = cfg.resolve().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.masters, vec!["10.0.0.1:1234", "10.0.0.2:9999"]);
        assert_eq!(
            r.subfolder,
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(r.io_timeout, None);
        let bad = MountConfig {
            mfssubfolder: "/a/../b".into(),
            ..cfg.clone()
        };
        assert!(bad.resolve().is_err());
        let bad = MountConfig {
            mfsattrcacheto: -1.0,
            ..cfg
        };
        assert!(bad.resolve().unwrap_err().contains("MFSATTRCACHETO"));
    }

    #[test]
    fn the_password_is_given_plain_or_as_its_md5_not_both() {
        let with = |pw: &str, md5: &str| {
            MountConfig {
                mfspassword: pw.into(),
                mfsmd5pass: md5.into(),
                ..Default::default()
            }
            .resolve()
            .map(|r| r.password_md5)
        };
        let secret = mfs_proto::password_md5("secret");
        assert_eq!(with("", ""), Ok(None));
        assert_eq!(with("secret", ""), Ok(Some(secret)));
        assert_eq!(
            with("", "5ebe2294ecd0e0f08eab7690d2a6ee69"),
            Ok(Some(secret))
        );
        assert_eq!(
            with("", "5EBE2294ECD0E0F08EAB7690D2A6EE69"),
            Ok(Some(secret))
        );
        assert!(with("", "5ebe").unwrap_err().contains("MFSMD5PASS"));
        assert!(with("", "zzbe2294ecd0e0f08eab7690d2a6ee69").is_err());
        assert!(with("secret", "5ebe2294ecd0e0f08eab7690d2a6ee69")
            .unwrap_err()
            .contains("both"));
        let mut o = Overrides::default();
        o.add_o("md5pass=5ebe2294ecd0e0f08eab7690d2a6ee69,password=x")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(o.mfspassword.as_deref(), Some("x"));
        assert!(o.mfsmd5pass.is_some());
    }

    #[test]
    fn config_file_and_overrides() {
        let dir = std::env::temp_dir().join(format!("mfsmount-cfg-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("mfsmount.cfg");
        std::fs::write(
            &path,
            "# test\nMFSMASTER = m1:9421\nattrcacheto = 3\nmfsentrycacheto = 2\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut o = Overrides::default();
        o.add_o("mfsentrycacheto=5")
            .unwrap_or_else(|e| panic!("{e}"));
        let cfg: MountConfig = mfs_common::config::load(Some(&path), true, ALIASES, &o)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.mfsmaster, "m1:9421");
        assert_eq!(cfg.mfsattrcacheto, 3.0);
        assert_eq!(cfg.mfsentrycacheto, 5.0);
        assert!(cfg.mfsschedbatch, "on unless turned off");
        assert!(cfg.mfspagestore, "on unless turned off");
        std::fs::write(&path, "MFSMASTER = m1\nnosuchkey = 1\n").unwrap_or_else(|e| panic!("{e}"));
        let err = mfs_common::config::load::<MountConfig, _>(Some(&path), true, ALIASES, &o)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("NOSUCHKEY") && err.contains(":2"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
