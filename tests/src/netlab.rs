//! A small network of our own for partition tests: every host a network
//! namespace joined to a bridge in the test's namespace by a veth pair, so
//! that a host can be cut off from everyone (its link taken down: packets
//! vanish, no connection is refused or reset, as when a machine loses its
//! network) and joined again. Needs root and `ip` (iproute2).
//!
//! Layout for lab `k` of process `p`: bridge `mfb<p><k>` with 10.<a>.<b>.1/24
//! in the test's own namespace (so the test, chunkservers and mounts reach
//! every host), host `j` (1-based) in namespace `mfs-<p>-<k>-<j>` with
//! 10.<a>.<b>.<10+j> on its `eth0`.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

static LABS: AtomicU32 = AtomicU32::new(0);

pub struct Netlab {
    bridge: String,
    prefix: String,
    hosts: Vec<Host>,
}

struct Host {
    ns: String,
    veth: String,
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl Netlab {
    /// Makes the bridge and `n` hosts, every link up.
    pub fn new(n: usize) -> Result<Netlab> {
        let pid = std::process::id() % 100_000;
        let k = LABS.fetch_add(1, Ordering::Relaxed);
        let (a, b) = (100 + pid % 150, (pid / 150 * 7 + k) % 250);
        let mut lab = Netlab {
            bridge: format!("mfb{pid}x{k}"),
            prefix: format!("10.{a}.{b}"),
            hosts: Vec::new(),
        };
        let _ = ip(&["link", "del", &lab.bridge]);
        ip(&["link", "add", &lab.bridge, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", lab.prefix),
            "dev",
            &lab.bridge,
        ])?;
        ip(&["link", "set", &lab.bridge, "up"])?;
        for j in 1..=n {
            let h = Host {
                ns: format!("mfs-{pid}-{k}-{j}"),
                veth: format!("mfv{pid}x{k}x{j}"),
            };
            let _ = ip(&["netns", "del", &h.ns]);
            ip(&["netns", "add", &h.ns])?;
            let inner = format!("mfi{pid}x{k}x{j}");
            ip(&[
                "link", "add", &h.veth, "type", "veth", "peer", "name", &inner,
            ])?;
            ip(&["link", "set", &inner, "netns", &h.ns])?;
            ip(&["link", "set", &h.veth, "master", &lab.bridge])?;
            ip(&["link", "set", &h.veth, "up"])?;
            let ns = ["netns", "exec", h.ns.as_str(), "ip"];
            let in_ns = |rest: &[&str]| -> Result<()> {
                let mut v = ns.to_vec();
                v.extend_from_slice(rest);
                ip(&v)
            };
            in_ns(&["link", "set", &inner, "name", "eth0"])?;
            in_ns(&[
                "addr",
                "add",
                &format!("{}.{}/24", lab.prefix, 10 + j),
                "dev",
                "eth0",
            ])?;
            in_ns(&["link", "set", "eth0", "up"])?;
            in_ns(&["link", "set", "lo", "up"])?;
            lab.hosts.push(h);
        }
        Ok(lab)
    }

    /// Host `j`'s address (1-based).
    pub fn addr(&self, j: usize) -> String {
        format!("{}.{}", self.prefix, 10 + j)
    }

    /// The test's own address on the bridge (reachable from every host).
    pub fn gateway(&self) -> String {
        format!("{}.1", self.prefix)
    }

    /// Host `j`'s namespace, for `ip netns exec`.
    pub fn netns(&self, j: usize) -> &str {
        &self.hosts[j - 1].ns
    }

    /// Cuts host `j` off from everyone: its link goes down, what is sent to
    /// or from it is lost.
    pub fn cut(&self, j: usize) -> Result<()> {
        ip(&["link", "set", &self.hosts[j - 1].veth, "down"])
    }

    /// Joins host `j` again (after [`Netlab::cut`] or
    /// [`Netlab::cut_from_hosts`]).
    pub fn heal(&self, j: usize) -> Result<()> {
        ip(&["link", "set", &self.hosts[j - 1].veth, "up"])?;
        for k in 1..=self.hosts.len() {
            if k != j {
                let _ = self.in_ns(j, &["route", "del", "blackhole", &self.addr(k)]);
            }
        }
        Ok(())
    }

    /// Cuts host `j` off from the other hosts only: what it sends them is
    /// dropped (blackhole routes in its namespace), so no connection between
    /// them works, while the test's namespace (clients, mounts) still
    /// reaches it and is answered.
    pub fn cut_from_hosts(&self, j: usize) -> Result<()> {
        for k in 1..=self.hosts.len() {
            if k != j {
                self.in_ns(j, &["route", "add", "blackhole", &self.addr(k)])?;
            }
        }
        Ok(())
    }

    fn in_ns(&self, j: usize, rest: &[&str]) -> Result<()> {
        let mut v = vec!["netns", "exec", self.hosts[j - 1].ns.as_str(), "ip"];
        v.extend_from_slice(rest);
        ip(&v)
    }
}

impl Drop for Netlab {
    fn drop(&mut self) {
        for h in &self.hosts {
            let _ = ip(&["link", "del", &h.veth]);
            let _ = ip(&["netns", "del", &h.ns]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}
