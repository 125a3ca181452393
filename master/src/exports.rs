//! `mfsexports.cfg`: which clients may register a session, on which
//! directory, with which rights. MooseFS's format, read as it is:
//!
//! ```text
//! # ADDRESS      DIRECTORY  [OPTIONS]
//! *              /          rw,alldirs,admin,maproot=0:0
//! 10.1.0.0/16    /projects  rw,alldirs,password=secret
//! 10.2.0.1-10.2.0.9 /       ro
//! *              .          rw
//! ```
//!
//! ADDRESS: `*`, an IPv4 address, `A.B.C.D/BITS`, `A.B.C.D/MASK` or a range
//! `FROM-TO` (a client connecting over IPv6 matches `*` only, or the IPv4
//! lines when it is a mapped IPv4 address). DIRECTORY: a path in the file
//! system, or `.` for the meta file system (`mfsmount -m`: trash and
//! sustained files). OPTIONS, comma separated (none given: `ro`,
//! `maproot=999:999`, as MooseFS):
//!
//! - `ro`/`readonly`, `rw`/`readwrite`;
//! - `alldirs`: any directory below DIRECTORY may be mounted (`-S`);
//! - `maproot=USER[:GROUP]`: calls made as root run as USER:GROUP (names
//!   or numbers; a name without a group takes its primary group);
//!   `mapall=USER[:GROUP]`: every caller runs as USER:GROUP;
//! - `password=PASS`, `md5pass=HEX` (the MD5 of the password): the client
//!   must give it (`mfsmount -o mfspassword=PASS`);
//! - `admin`: may set quotas and change the masters (`mfscli`);
//! - `mingoal=N`, `maxgoal=N`, `mintrashtime=T`, `maxtrashtime=T` (seconds,
//!   or with suffixes `w`, `d`, `h`, `m`, `s` as in `1d12h`): bounds of what
//!   `mfssetgoal`/`mfssettrashtime` may set;
//! - `dynamicip`: the session may be used from another address than the one
//!   it registered from (by default a call of a session from another
//!   address is refused);
//! - `ignoregid`, `minversion=V`, `nonrootmeta`: accepted for MooseFS files,
//!   no effect (the master is given every group of the caller).
//!
//! The first line, in file order, whose address, directory and password
//! match a client's registration gives its rights.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use mfs_proto::{challenge_answer, password_md5};

/// The uid and gid MooseFS maps root to when a line says nothing of it.
pub const NOBODY: (u32, u32) = (999, 999);

/// Addresses a line accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Addresses {
    Any,
    /// Inclusive range of IPv4 addresses as numbers.
    V4(u32, u32),
}

/// What a line exports.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// The meta file system (`.`).
    Meta,
    /// A directory, as path components below the root.
    Dir(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Password {
    Plain(String),
    Md5([u8; 16]),
}

/// The rights one line gives, before its directory is resolved to an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The line of the file that gave them (1-based).
    pub line: usize,
    pub read_only: bool,
    pub admin: bool,
    /// Meta file system (`.`) rather than a directory.
    pub meta: bool,
    pub maproot: Option<(u32, u32)>,
    pub mapall: Option<(u32, u32)>,
    pub dynamic_ip: bool,
    pub goal: (u8, u8),
    pub trash_time: (u32, u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    addresses: Addresses,
    target: Target,
    alldirs: bool,
    password: Option<Password>,
    grant: Grant,
}

/// A parsed exports file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exports {
    lines: Vec<Line>,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("no line of mfsexports.cfg lets {ip} mount {what}")]
    NoExport { ip: IpAddr, what: String },
    #[error("mfsexports.cfg line {line} lets {ip} mount {what} with a password only, and {given}")]
    Password {
        ip: IpAddr,
        what: String,
        line: usize,
        given: &'static str,
    },
}

/// A path as the components a line is matched against: `/a//b/` is
/// `["a", "b"]`; `.` and `..` components are refused.
pub fn components(path: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err(format!("path {path:?}: `.` and `..` are not allowed"));
        }
        out.push(c.to_string());
    }
    Ok(out)
}

impl Exports {
    /// Reads and parses the file at `path`.
    pub fn load(path: &Path) -> Result<Exports, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the exports file {}: {e}", path.display()))?;
        let users = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
        Exports::parse(&text, &Names::new(&users, &groups))
            .map_err(|e| format!("exports file {}: {e}", path.display()))
    }

    /// Parses the text of an exports file; an error names the line.
    pub fn parse(text: &str, names: &Names) -> Result<Exports, String> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let no = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            if content.is_empty() {
                continue;
            }
            let line = parse_line(no, content, names).map_err(|e| format!("line {no}: {e}"))?;
            lines.push(line);
        }
        Ok(Exports { lines })
    }

    /// Number of export lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// The rights of a client at `ip` asking for the directory `path`
    /// (components, see [`components`]) or, with `meta`, for the meta file
    /// system, showing `proof` of a password.
    pub fn check(
        &self,
        ip: IpAddr,
        path: &[String],
        meta: bool,
        proof: &Proof,
    ) -> Result<Grant, Refusal> {
        let what = if meta {
            "the meta file system".to_string()
        } else {
            format!("/{}", path.join("/"))
        };
        let mut wrong: Option<usize> = None;
        for l in &self.lines {
            if !l.addresses.contains(ip) || !l.target_matches(path, meta) {
                continue;
            }
            match &l.password {
                None => return Ok(l.grant.clone()),
                Some(p) if p.accepts(proof) => return Ok(l.grant.clone()),
                Some(_) => {
                    wrong.get_or_insert(l.grant.line);
                }
            }
        }
        match wrong {
            Some(line) => Err(Refusal::Password {
                ip,
                what,
                line,
                given: if *proof == Proof::None {
                    "none was given (mfsmount -o mfspassword=...)"
                } else {
                    "the one given is wrong"
                },
            }),
            None => Err(Refusal::NoExport { ip, what }),
        }
    }
}

impl Line {
    fn target_matches(&self, path: &[String], meta: bool) -> bool {
        match (&self.target, meta) {
            (Target::Meta, true) => true,
            (Target::Dir(dir), false) => {
                path == dir.as_slice() || (self.alldirs && path.starts_with(dir))
            }
            _ => false,
        }
    }
}

impl Addresses {
    fn contains(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V4(a) => Some(a),
            IpAddr::V6(a) => a.to_ipv4_mapped(),
        };
        match (self, v4) {
            (Addresses::Any, _) => true,
            (Addresses::V4(from, to), Some(a)) => (*from..=*to).contains(&u32::from(a)),
            (Addresses::V4(..), None) => false,
        }
    }
}

/// What a client shows of a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    None,
    /// The password itself.
    Plain(String),
    /// MD5(nonce || MD5(password)) for a nonce this master gave it.
    Digest {
        nonce: Vec<u8>,
        digest: Vec<u8>,
    },
}

impl Password {
    fn accepts(&self, proof: &Proof) -> bool {
        let md5 = match self {
            Password::Plain(p) => password_md5(p),
            Password::Md5(h) => *h,
        };
        match proof {
            Proof::None => false,
            Proof::Plain(given) => constant_time_eq(&md5, &password_md5(given)),
            Proof::Digest { nonce, digest } => {
                constant_time_eq(&challenge_answer(nonce, &md5), digest)
            }
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn parse_line(no: usize, content: &str, names: &Names) -> Result<Line, String> {
    let mut fields = content.split_whitespace();
    let (Some(addr), Some(dir)) = (fields.next(), fields.next()) else {
        return Err(format!(
            "`{content}`: expected ADDRESS DIRECTORY [OPTIONS], e.g. `* / rw,alldirs`"
        ));
    };
    let opts = fields.next().unwrap_or("");
    if let Some(extra) = fields.next() {
        return Err(format!(
            "unexpected `{extra}` after the options (options are one comma-separated word)"
        ));
    }
    let addresses = parse_addresses(addr)?;
    let target = if dir == "." {
        Target::Meta
    } else if dir.starts_with('/') {
        Target::Dir(components(dir)?)
    } else {
        return Err(format!(
            "directory `{dir}`: a path starting with `/`, or `.` for the meta file system"
        ));
    };
    let mut line = Line {
        addresses,
        target,
        alldirs: false,
        password: None,
        grant: Grant {
            line: no,
            read_only: true,
            admin: false,
            meta: false,
            maproot: Some(NOBODY),
            mapall: None,
            dynamic_ip: false,
            goal: (1, crate::fsm::MAX_GOAL),
            trash_time: (0, u32::MAX),
        },
    };
    line.grant.meta = line.target == Target::Meta;
    for opt in opts.split(',').filter(|o| !o.is_empty()) {
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let need = value
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("option `{key}` needs a value (`{key}=...`)"));
        let g = &mut line.grant;
        match key.to_ascii_lowercase().as_str() {
            "ro" | "readonly" => g.read_only = true,
            "rw" | "readwrite" => g.read_only = false,
            "alldirs" => line.alldirs = true,
            "admin" => g.admin = true,
            "dynamicip" => g.dynamic_ip = true,
            "ignoregid" | "nonrootmeta" | "minversion" => {}
            "maproot" => g.maproot = Some(names.user_group(need.clone()?)?),
            "mapall" => g.mapall = Some(names.user_group(need.clone()?)?),
            "password" => line.password = Some(Password::Plain(need.clone()?.to_string())),
            "md5pass" => line.password = Some(Password::Md5(parse_md5(need.clone()?)?)),
            "mingoal" => g.goal.0 = parse_goal(key, need.clone()?)?,
            "maxgoal" => g.goal.1 = parse_goal(key, need.clone()?)?,
            "mintrashtime" => g.trash_time.0 = parse_duration(key, need.clone()?)?,
            "maxtrashtime" => g.trash_time.1 = parse_duration(key, need.clone()?)?,
            _ => {
                return Err(format!(
                    "unknown option `{opt}` (known: ro, rw, alldirs, admin, maproot=, mapall=, password=, md5pass=, mingoal=, maxgoal=, mintrashtime=, maxtrashtime=, dynamicip, ignoregid, minversion=, nonrootmeta)"
                ))
            }
        }
    }
    let g = &line.grant;
    if g.goal.0 > g.goal.1 {
        return Err(format!(
            "mingoal {} is above maxgoal {}",
            g.goal.0, g.goal.1
        ));
    }
    if g.trash_time.0 > g.trash_time.1 {
        return Err(format!(
            "mintrashtime {} is above maxtrashtime {}",
            g.trash_time.0, g.trash_time.1
        ));
    }
    Ok(line)
}

fn parse_addresses(s: &str) -> Result<Addresses, String> {
    let ip = |t: &str| {
        t.parse::<Ipv4Addr>()
            .map(u32::from)
            .map_err(|_| format!("address `{s}`: `{t}` is not an IPv4 address"))
    };
    if s == "*" {
        return Ok(Addresses::Any);
    }
    if let Some((from, to)) = s.split_once('-') {
        let (from, to) = (ip(from)?, ip(to)?);
        if from > to {
            return Err(format!("address range `{s}` ends before it starts"));
        }
        return Ok(Addresses::V4(from, to));
    }
    if let Some((net, mask)) = s.split_once('/') {
        let base = ip(net)?;
        let mask = if mask.contains('.') {
            let m = ip(mask)?;
            if m.leading_ones() + m.trailing_zeros() != 32 {
                return Err(format!("address `{s}`: `{mask}` is not a network mask"));
            }
            m
        } else {
            let bits: u32 = mask
                .parse()
                .ok()
                .filter(|b| *b <= 32)
                .ok_or_else(|| format!("address `{s}`: prefix length `{mask}` is not 0..32"))?;
            u32::MAX.checked_shl(32 - bits).unwrap_or(0)
        };
        let low = base & mask;
        return Ok(Addresses::V4(low, low | !mask));
    }
    let one = ip(s)?;
    Ok(Addresses::V4(one, one))
}

fn parse_md5(s: &str) -> Result<[u8; 16], String> {
    if s.len() != 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("md5pass `{s}`: 32 hexadecimal digits expected"));
    }
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("md5pass `{s}`: not hexadecimal"))?;
    }
    Ok(out)
}

fn parse_goal(key: &str, v: &str) -> Result<u8, String> {
    v.parse::<u8>()
        .ok()
        .filter(|g| (1..=crate::fsm::MAX_GOAL).contains(g))
        .ok_or_else(|| format!("{key}={v}: a goal is 1..{}", crate::fsm::MAX_GOAL))
}

/// Seconds, plain (`3600`) or with unit suffixes (`1d12h`, `30m`).
fn parse_duration(key: &str, v: &str) -> Result<u32, String> {
    let bad = || format!("{key}={v}: seconds, or a time like 1w2d3h4m5s");
    if let Ok(n) = v.parse::<u32>() {
        return Ok(n);
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in v.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit: u64 = match c.to_ascii_lowercase() {
            'w' => 7 * 86400,
            'd' => 86400,
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = total.saturating_add(n.saturating_mul(unit));
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    u32::try_from(total).map_err(|_| format!("{key}={v}: too long"))
}

/// User and group names of the master's machine (`/etc/passwd`,
/// `/etc/group`), for `maproot`/`mapall` given by name.
#[derive(Debug, Default)]
pub struct Names {
    /// name → (uid, primary gid)
    users: Vec<(String, u32, u32)>,
    groups: Vec<(String, u32)>,
}

impl Names {
    pub fn new(passwd: &str, group: &str) -> Names {
        let mut users = Vec::new();
        for l in passwd.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if let (Some(n), Some(u), Some(g)) = (f.first(), f.get(2), f.get(3)) {
                if let (Ok(u), Ok(g)) = (u.parse(), g.parse()) {
                    users.push((n.to_string(), u, g));
                }
            }
        }
        let mut groups = Vec::new();
        for l in group.lines() {
            let f: Vec<&str> = l.split(':').collect();
            if let (Some(n), Some(g)) = (f.first(), f.get(2)) {
                if let Ok(g) = g.parse() {
                    groups.push((n.to_string(), g));
                }
            }
        }
        Names { users, groups }
    }

    /// `USER[:GROUP]`, names or numbers.
    fn user_group(&self, s: &str) -> Result<(u32, u32), String> {
        let (user, group) = match s.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (s, None),
        };
        let (uid, primary) = match user.parse::<u32>() {
            Ok(n) => (n, self.users.iter().find(|u| u.1 == n).map(|u| u.2)),
            Err(_) => match self.users.iter().find(|u| u.0 == user) {
                Some(u) => (u.1, Some(u.2)),
                None => return Err(format!("`{s}`: no user `{user}` on this machine")),
            },
        };
        let gid = match group {
            Some(g) => match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => match self.groups.iter().find(|x| x.0 == g) {
                    Some(x) => x.1,
                    None => return Err(format!("`{s}`: no group `{g}` on this machine")),
                },
            },
            // A number that is nobody's uid: the same number as its group.
            None => primary.unwrap_or(uid),
        };
        Ok((uid, gid))
    }
}

#[cfg(test)]
mod tests;
