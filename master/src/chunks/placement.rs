//! Where new copies go: distinct chunkservers that can take them (alive,
//! not in maintenance, with a disk neither marked, damaged nor full), the
//! most free space first, spread over labels (racks, zones) when given.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::state::Server;
use crate::fsm::CHUNK_SIZE;

impl Server {
    /// Whether a whole new chunk fits on one of its usable disks.
    pub fn can_take(&self) -> bool {
        self.disks
            .iter()
            .any(|d| !d.marked && !d.damaged && d.total.saturating_sub(d.used) >= CHUNK_SIZE)
    }

    /// Fraction of its space in use (0 with no space known).
    pub fn usage(&self) -> f64 {
        let (used, total) = self
            .disks
            .iter()
            .filter(|d| !d.damaged)
            .fold((0u64, 0u64), |(u, t), d| (u + d.used, t + d.total));
        if total == 0 {
            0.0
        } else {
            used as f64 / total as f64
        }
    }
}

/// Percent of the usable disks' space in use (100 with none).
fn usable_usage_pct(s: &Server) -> u64 {
    let (used, total) = s
        .disks
        .iter()
        .filter(|d| !d.marked && !d.damaged)
        .fold((0u64, 0u64), |(u, t), d| {
            (u + d.used.min(d.total), t + d.total)
        });
    if total == 0 {
        100
    } else {
        (used as u128 * 100 / total as u128) as u64
    }
}

/// Whether `s` may receive a new copy now.
pub fn is_target(s: &Server, now: Instant) -> bool {
    s.is_alive(now) && !s.maintenance && s.can_take()
}

/// Up to `count` distinct servers for new copies, best first: never one of
/// `exclude` (they already hold the chunk); among the rest, those sharing
/// the fewest labels with the servers already chosen or in `exclude`, then
/// the lowest usage of their usable disks (in whole percent), then at random
/// (so that servers alike, e.g. on one file system, share new chunks rather
/// than one taking them all between two heartbeats).
pub fn choose(
    servers: &BTreeMap<u64, Server>,
    now: Instant,
    count: usize,
    exclude: &[u64],
) -> Vec<u64> {
    let mut used: BTreeSet<&str> = exclude
        .iter()
        .filter_map(|id| servers.get(id))
        .flat_map(|s| s.labels.iter().map(String::as_str))
        .collect();
    let mut candidates: Vec<&Server> = servers
        .values()
        .filter(|s| !exclude.contains(&s.id) && is_target(s, now))
        .collect();
    {
        use rand::seq::SliceRandom;
        candidates.shuffle(&mut rand::rng());
    }
    candidates.sort_by_key(|s| usable_usage_pct(s));
    let mut out = Vec::with_capacity(count);
    while out.len() < count && !candidates.is_empty() {
        let overlap = |s: &Server| {
            s.labels
                .iter()
                .filter(|l| used.contains(l.as_str()))
                .count()
        };
        let mut best = 0;
        for (i, s) in candidates.iter().enumerate() {
            if overlap(s) < overlap(candidates[best]) {
                best = i;
            }
        }
        let s = candidates.remove(best);
        used.extend(s.labels.iter().map(String::as_str));
        out.push(s.id);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::state::Disk;
    use super::*;

    pub(crate) fn server(id: u64, free_gib: u64, labels: &[&str]) -> Server {
        Server {
            id,
            address: format!("cs{id}:9422"),
            labels: labels.iter().map(|s| s.to_string()).collect(),
            disks: vec![Disk {
                path: "/d".into(),
                total: 100 << 30,
                used: (100 - free_gib) << 30,
                chunks: 0,
                marked: false,
                damaged: false,
            }],
            maintenance: false,
            load: 0,
            last_seen: Instant::now(),
            reported: true,
        }
    }

    fn map(v: Vec<Server>) -> BTreeMap<u64, Server> {
        v.into_iter().map(|s| (s.id, s)).collect()
    }

    #[test]
    fn most_free_first_and_distinct() {
        let m = map(vec![
            server(1, 10, &[]),
            server(2, 50, &[]),
            server(3, 30, &[]),
        ]);
        let now = Instant::now();
        assert_eq!(choose(&m, now, 2, &[]), vec![2, 3]);
        assert_eq!(choose(&m, now, 5, &[]), vec![2, 3, 1], "no server twice");
        assert_eq!(choose(&m, now, 2, &[2]), vec![3, 1]);
    }

    #[test]
    fn servers_alike_share_new_chunks() {
        let m = map(vec![
            server(1, 50, &[]),
            server(2, 50, &[]),
            server(3, 50, &[]),
        ]);
        let now = Instant::now();
        let mut hits = [0u32; 4];
        for _ in 0..300 {
            let c = choose(&m, now, 1, &[]);
            hits[c[0] as usize] += 1;
        }
        for id in 1..=3 {
            assert!(
                hits[id] > 40,
                "server {id} got {} of 300: {hits:?}",
                hits[id]
            );
        }
    }

    #[test]
    fn skips_full_marked_damaged_maintenance_and_lost() {
        let mut full = server(1, 0, &[]);
        full.disks[0].used = full.disks[0].total - (CHUNK_SIZE - 1);
        let mut marked = server(2, 90, &[]);
        marked.disks[0].marked = true;
        let mut damaged = server(3, 90, &[]);
        damaged.disks[0].damaged = true;
        let mut maint = server(4, 90, &[]);
        maint.maintenance = true;
        let mut lost = server(5, 90, &[]);
        let now = Instant::now();
        lost.last_seen = now - super::super::state::LOST_AFTER - std::time::Duration::from_secs(1);
        let ok = server(6, 1, &[]);
        let m = map(vec![full, marked, damaged, maint, lost, ok]);
        assert_eq!(choose(&m, now, 3, &[]), vec![6]);
    }

    #[test]
    fn spreads_over_labels() {
        let m = map(vec![
            server(1, 90, &["rack:a"]),
            server(2, 80, &["rack:a"]),
            server(3, 10, &["rack:b"]),
            server(4, 5, &["rack:c"]),
        ]);
        let now = Instant::now();
        assert_eq!(choose(&m, now, 3, &[]), vec![1, 3, 4]);
        assert_eq!(choose(&m, now, 4, &[]), vec![1, 3, 4, 2]);
        // A copy already on rack b: the new one goes to another rack.
        assert_eq!(choose(&m, now, 1, &[3]), vec![1]);
        assert_eq!(choose(&m, now, 2, &[1]), vec![3, 4]);
    }
}
