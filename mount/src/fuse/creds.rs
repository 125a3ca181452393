//! The credentials of a FUSE request: uid and gid from the kernel, the
//! supplementary groups from `/proc/PID/status` (`Groups:`), cached briefly
//! per process so a burst of calls reads the file once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mfs_proto::v1::Credentials;

/// How long the groups read for a pid are reused.
const GROUPS_TTL: Duration = Duration::from_secs(1);

/// Most entries kept before the cache is pruned.
const MAX_ENTRIES: usize = 4096;

/// A cache of the supplementary groups of the processes calling the mount.
#[derive(Debug, Default)]
pub struct GroupsCache {
    entries: Mutex<HashMap<u32, (Instant, Vec<u32>)>>,
}

/// The groups on the `Groups:` line of a `/proc/PID/status` text.
pub fn parse_groups(status: &str) -> Vec<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Groups:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|g| g.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl GroupsCache {
    /// The supplementary groups of process `pid` (empty when the process is
    /// gone or `pid` is 0, as for kernel-initiated requests).
    pub fn groups(&self, pid: u32) -> Vec<u32> {
        if pid == 0 {
            return Vec::new();
        }
        let now = Instant::now();
        {
            let map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, g)) = map.get(&pid) {
                if now.duration_since(*at) < GROUPS_TTL {
                    return g.clone();
                }
            }
        }
        let groups = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .map(|s| parse_groups(&s))
            .unwrap_or_default();
        let mut map = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, (at, _)| now.duration_since(*at) < GROUPS_TTL);
        }
        map.insert(pid, (now, groups.clone()));
        groups
    }

    /// The credentials of a request.
    pub fn credentials(&self, uid: u32, gid: u32, pid: u32) -> Credentials {
        Credentials {
            uid,
            gid,
            groups: self.groups(pid),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_groups_line() {
        let status = "Name:\tbash\nUid:\t0\t0\t0\t0\nGroups:\t4 24 27 1000 \nVmPeak:\t1 kB\n";
        assert_eq!(parse_groups(status), vec![4, 24, 27, 1000]);
        assert!(parse_groups("Groups:\t\n").is_empty());
        assert!(parse_groups("Name: x\n").is_empty());
    }

    #[test]
    fn reads_our_own_groups() {
        let cache = GroupsCache::default();
        let pid = std::process::id();
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        assert_eq!(cache.groups(pid), parse_groups(&text));
        assert!(cache.groups(0).is_empty());
    }
}
