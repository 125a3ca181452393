//! Master addresses: the `host:port,host:port` lists users give (`-H`,
//! `MFS_MASTERS`), name resolution (a name with several IPs is several
//! masters) and the `mfs-leader` hint of a redirect.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tonic::metadata::MetadataMap;

use crate::error::ClientError;

/// The port a master listens on when an address names none (MooseFS's
/// MATOCL_LISTEN_PORT).
pub const DEFAULT_PORT: u16 = 9421;

/// Environment variable holding the master list, as `-H` takes it.
pub const MASTERS_ENV: &str = "MFS_MASTERS";

/// The list used when neither an argument nor `MFS_MASTERS` gives one.
pub const DEFAULT_MASTERS: &str = "127.0.0.1:9421";

/// Parses a comma-separated master list, e.g. `"h1:9421,h2:9421"`.
///
/// Blanks around items are ignored, as are empty items; a host without a
/// port gets [`DEFAULT_PORT`]; IPv6 literals are written `[::1]:9421` (a bare
/// `::1` is accepted too). Duplicates are dropped, order is kept.
pub fn parse_masters(list: &str) -> Result<Vec<String>, ClientError> {
    let mut out: Vec<String> = Vec::new();
    for item in list.split(',') {
        let item = item.trim();
        if item.is_empty() {
            continue;
        }
        let addr = normalize_addr(item)?;
        if !out.contains(&addr) {
            out.push(addr);
        }
    }
    if out.is_empty() {
        return Err(ClientError::InvalidArgument(format!(
            "no master address in {list:?} (expected host:port,host:port,...)"
        )));
    }
    Ok(out)
}

/// The master list from `arg` when given, else from `MFS_MASTERS`, else
/// [`DEFAULT_MASTERS`].
pub fn masters_from_arg_or_env(arg: Option<&str>) -> Result<Vec<String>, ClientError> {
    match arg {
        Some(a) => parse_masters(a),
        None => match std::env::var(MASTERS_ENV) {
            Ok(v) if !v.trim().is_empty() => parse_masters(&v),
            _ => parse_masters(DEFAULT_MASTERS),
        },
    }
}

/// One address in canonical `host:port` form (`[v6]:port` for IPv6).
pub fn normalize_addr(item: &str) -> Result<String, ClientError> {
    let bad =
        |why: &str| ClientError::InvalidArgument(format!("bad master address {item:?}: {why}"));
    let s = item.trim();
    let s = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
    if s.is_empty() {
        return Err(bad("empty"));
    }
    let (host, port) = if let Some(rest) = s.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(|| bad("missing ']'"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("expected ':' after ']'"))?,
            ),
        };
        (v6.to_string(), port)
    } else if s.matches(':').count() > 1 {
        // A bare IPv6 literal, without a port.
        (s.to_string(), None)
    } else {
        match s.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (s.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
        return Err(bad("not a host name"));
    }
    let port = match port {
        None => DEFAULT_PORT,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err(bad("port must be 1..65535")),
            Ok(n) => n,
        },
    };
    if host.contains(':') {
        let ip: IpAddr = host.parse().map_err(|_| bad("not an IPv6 address"))?;
        return Ok(SocketAddr::new(ip, port).to_string());
    }
    Ok(format!("{host}:{port}"))
}

/// The leader address of a redirect (`mfs-leader` trailing metadata), if the
/// master gave one (it gives none while an election runs).
pub fn leader_hint(md: &MetadataMap) -> Option<String> {
    let raw = md.get(mfs_proto::LEADER_KEY)?.to_str().ok()?.trim();
    if raw.is_empty() {
        return None;
    }
    normalize_addr(raw).ok()
}

/// Expands names that resolve to several IPs into one address per IP
/// (`"ip:port"`); a name with one IP, an IP literal, or a name that does not
/// resolve (yet) is kept as given, the channel resolves it when connecting.
/// Returns each address with the socket addresses it is known by.
pub async fn expand(addrs: &[String], limit: Duration) -> Vec<(String, Vec<SocketAddr>)> {
    fn push(out: &mut Vec<(String, Vec<SocketAddr>)>, a: String, socks: Vec<SocketAddr>) {
        if !out.iter().any(|(o, _)| *o == a) {
            out.push((a, socks));
        }
    }
    let mut out: Vec<(String, Vec<SocketAddr>)> = Vec::new();
    for a in addrs {
        if let Ok(sock) = a.parse::<SocketAddr>() {
            push(&mut out, a.clone(), vec![sock]);
            continue;
        }
        let resolved = tokio::time::timeout(limit, tokio::net::lookup_host(a.as_str())).await;
        let mut socks: Vec<SocketAddr> = match resolved {
            Ok(Ok(it)) => it.collect(),
            _ => Vec::new(),
        };
        let mut seen = Vec::new();
        socks.retain(|s| {
            let new = !seen.contains(s);
            seen.push(*s);
            new
        });
        if socks.len() > 1 {
            for s in socks {
                push(&mut out, s.to_string(), vec![s]);
            }
        } else {
            push(&mut out, a.clone(), socks);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_list() {
        assert_eq!(
            parse_masters("h1:9421,h2:9422").ok(),
            Some(vec!["h1:9421".to_string(), "h2:9422".to_string()])
        );
        assert_eq!(
            parse_masters(" h1 , ,h2:1,h1:9421 ").ok(),
            Some(vec!["h1:9421".to_string(), "h2:1".to_string()])
        );
        assert_eq!(
            parse_masters("[::1]:9500,::1,[fe80::1],http://10.0.0.1:9421/").ok(),
            Some(vec![
                "[::1]:9500".to_string(),
                "[::1]:9421".to_string(),
                "[fe80::1]:9421".to_string(),
                "10.0.0.1:9421".to_string()
            ])
        );
    }

    #[test]
    fn parse_list_errors() {
        for bad in [
            "",
            " , ",
            "h1:",
            "h1:0",
            "h1:70000",
            "h1:x",
            ":9421",
            "[::1",
            "[::1]9421",
            "a b:1",
            "[zz::]:1",
        ] {
            let e = parse_masters(bad);
            assert!(
                matches!(e, Err(ClientError::InvalidArgument(_))),
                "{bad:?} gave {e:?}"
            );
        }
        let msg = parse_masters("h1:x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(msg.contains("\"h1:x\"") && msg.contains("port"), "{msg}");
    }

    #[test]
    fn arg_wins_over_env() {
        assert_eq!(
            masters_from_arg_or_env(Some("a:1")).ok(),
            Some(vec!["a:1".to_string()])
        );
    }

    #[test]
    fn leader_hint_parsing() {
        let mut md = MetadataMap::new();
        assert_eq!(leader_hint(&md), None);
        md.insert(mfs_proto::LEADER_KEY, "".parse().expect("ascii"));
        assert_eq!(leader_hint(&md), None);
        md.insert(
            mfs_proto::LEADER_KEY,
            " 127.0.0.1:9422 ".parse().expect("ascii"),
        );
        assert_eq!(leader_hint(&md).as_deref(), Some("127.0.0.1:9422"));
        md.insert(mfs_proto::LEADER_KEY, "m2".parse().expect("ascii"));
        assert_eq!(leader_hint(&md).as_deref(), Some("m2:9421"));
        md.insert(mfs_proto::LEADER_KEY, "m2:bad".parse().expect("ascii"));
        assert_eq!(leader_hint(&md), None);
    }

    #[tokio::test]
    async fn expand_keeps_literals_and_unresolvable() {
        let given = vec![
            "127.0.0.1:9421".to_string(),
            "no-such-host.invalid:9421".to_string(),
        ];
        let out = expand(&given, Duration::from_secs(2)).await;
        let names: Vec<&str> = out.iter().map(|(a, _)| a.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:9421", "no-such-host.invalid:9421"]);
        assert_eq!(
            out[0].1,
            vec!["127.0.0.1:9421".parse::<SocketAddr>().expect("literal")]
        );
    }
}
