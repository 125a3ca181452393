//! Peers that went silent: a call to them waited for a ping's or a
//! connect's timeout (their machine lost its network or power). Callers ask
//! such a peer last, or not at all, for a while, instead of waiting on it
//! again at every call.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// When each peer (by address) last went silent; forgotten after `keep`.
#[derive(Debug)]
pub struct Silence {
    at: RwLock<HashMap<String, Instant>>,
    keep: Duration,
}

impl Silence {
    pub fn new(keep: Duration) -> Silence {
        Silence {
            at: RwLock::new(HashMap::new()),
            keep,
        }
    }

    /// Notes that `addr` went silent now (`silent`), or that it answered
    /// (it is trusted again at once).
    pub fn note(&self, addr: &str, silent: bool) {
        let known = self
            .at
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(addr);
        if silent || known {
            let mut m = self.at.write().unwrap_or_else(|p| p.into_inner());
            if silent {
                m.insert(addr.to_string(), Instant::now());
            } else {
                m.remove(addr);
            }
        }
    }

    /// How long ago `addr` went silent, if within the time kept.
    pub fn since(&self, addr: &str) -> Option<Duration> {
        self.at
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(addr)
            .map(Instant::elapsed)
            .filter(|d| *d < self.keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_is_remembered_until_it_answers_or_the_time_is_over() {
        let s = Silence::new(Duration::from_secs(30));
        assert_eq!(s.since("a:1"), None);
        s.note("a:1", true);
        assert!(s.since("a:1").is_some());
        assert_eq!(s.since("b:1"), None);
        s.note("a:1", false);
        assert_eq!(s.since("a:1"), None);
        let short = Silence::new(Duration::ZERO);
        short.note("a:1", true);
        assert_eq!(short.since("a:1"), None, "kept for no time");
    }
}
