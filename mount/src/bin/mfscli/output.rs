//! How mfscli prints: aligned tables on a terminal, tab-separated lines
//! (first field: the record kind) when piped, numbers human or raw.

use mfs_mount::info::ClusterView;
use mfs_proto::v1::MembershipReply;

/// Where the output goes and how numbers look.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    /// Aligned tables with headings (a terminal) or plain tab-separated lines.
    pub table: bool,
    /// Sizes as "1.5 GiB" instead of bytes.
    pub human: bool,
}

/// A size in bytes, human ("1.5 GiB") or raw ("1610612736").
pub fn bytes(n: u64, human: bool) -> String {
    if !human {
        return n.to_string();
    }
    const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

fn percent(used: u64, total: u64) -> String {
    if total == 0 {
        "-".into()
    } else {
        format!("{:.1}%", used as f64 * 100.0 / total as f64)
    }
}

fn opt<T: ToString>(v: Option<T>) -> String {
    v.map_or_else(|| "-".to_string(), |v| v.to_string())
}

/// Rows under a heading: drawn aligned, or as `kind\tfield\tfield` lines.
struct Table {
    title: &'static str,
    kind: &'static str,
    header: &'static [&'static str],
    rows: Vec<Vec<String>>,
}

impl Table {
    fn render(&self, style: Style, out: &mut String) {
        if !style.table {
            for row in &self.rows {
                out.push_str(self.kind);
                for cell in row {
                    out.push('\t');
                    // Keep one record per line and one field per column.
                    out.push_str(&cell.replace(['\t', '\n'], " "));
                }
                out.push('\n');
            }
            return;
        }
        out.push('\n');
        out.push_str(self.title);
        out.push('\n');
        if self.rows.is_empty() {
            out.push_str("  (none)\n");
            return;
        }
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(cell.chars().count());
                }
            }
        }
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::from(" ");
            for (i, cell) in row.iter().enumerate() {
                let w = widths.get(i).copied().unwrap_or(0);
                line.push(' ');
                line.push_str(cell);
                line.extend(std::iter::repeat_n(
                    ' ',
                    w.saturating_sub(cell.chars().count()) + 1,
                ));
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
}

/// The whole `mfscli info` report.
pub fn info(v: &ClusterView, style: Style) -> String {
    let mut out = String::new();
    let leader = match (&v.leader, &v.leader_address) {
        (Some(id), Some(a)) => format!("{id} ({a})"),
        (Some(id), None) => id.to_string(),
        _ => "none".into(),
    };
    if style.table {
        let cid = if v.cluster_id.is_empty() {
            "-"
        } else {
            &v.cluster_id
        };
        out.push_str(&format!(
            "cluster {cid}  term {}  leader {leader}  sessions {}  inodes {}  trash {} files ({} bytes)  sustained {}\n",
            v.term, v.sessions, v.inodes, v.trash_files, v.trash_bytes, v.sustained_files
        ));
    } else {
        out.push_str(&format!(
            "cluster\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            v.cluster_id,
            v.term,
            opt(v.leader),
            opt(v.leader_address.as_ref()),
            v.sessions,
            v.inodes,
            v.trash_files,
            v.trash_bytes,
            v.sustained_files
        ));
    }
    let masters = Table {
        title: "MASTERS",
        kind: "master",
        header: &[
            "ID", "ADDRESS", "ROLE", "TERM", "LAST LOG", "COMMIT", "APPLIED", "SNAPSHOT", "LEADER",
            "ERROR",
        ],
        rows: v
            .masters
            .iter()
            .map(|m| {
                let n = |x: u64| {
                    if m.reachable {
                        x.to_string()
                    } else {
                        "-".into()
                    }
                };
                vec![
                    opt(m.id),
                    m.address.clone(),
                    if m.reachable {
                        m.role.clone()
                    } else {
                        "unreachable".into()
                    },
                    n(m.term),
                    n(m.last_log_index),
                    n(m.commit_index),
                    n(m.applied_index),
                    n(m.snapshot_index),
                    opt(m.leader_id),
                    m.error.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect(),
    };
    let metaloggers = Table {
        title: "METALOGGERS",
        kind: "metalogger",
        header: &["ID", "ADDRESS", "MATCHED"],
        rows: v
            .metaloggers
            .iter()
            .map(|m| {
                vec![
                    m.id.to_string(),
                    m.address.clone(),
                    m.matched_index.to_string(),
                ]
            })
            .collect(),
    };
    let chunkservers = Table {
        title: "CHUNKSERVERS",
        kind: "chunkserver",
        header: &[
            "ID", "ADDRESS", "STATE", "DISKS", "USED", "TOTAL", "USE%", "CHUNKS", "LABELS", "SEEN",
        ],
        rows: v
            .chunkservers
            .iter()
            .map(|c| {
                vec![
                    c.id.to_string(),
                    c.address.clone(),
                    c.state.clone(),
                    c.disks.to_string(),
                    bytes(c.used_bytes, style.human),
                    bytes(c.total_bytes, style.human),
                    percent(c.used_bytes, c.total_bytes),
                    c.chunks.to_string(),
                    if c.labels.is_empty() {
                        "-".into()
                    } else {
                        c.labels.join(",")
                    },
                    if style.table {
                        format!("{}s ago", c.last_seen_secs)
                    } else {
                        c.last_seen_secs.to_string()
                    },
                ]
            })
            .collect(),
    };
    let h = &v.chunk_health;
    let health = Table {
        title: "CHUNK HEALTH",
        kind: "chunk_health",
        header: &["CHUNKS", "MISSING", "UNDERGOAL", "OVERGOAL", "STALE"],
        rows: if v.leader.is_some() {
            vec![[h.chunks, h.missing, h.undergoal, h.overgoal, h.stale]
                .iter()
                .map(u64::to_string)
                .collect()]
        } else {
            Vec::new()
        },
    };
    for t in [masters, metaloggers, chunkservers, health] {
        t.render(style, &mut out);
    }
    out
}

/// Voters and learners after a membership change.
pub fn membership(r: &MembershipReply) -> String {
    let ids = |v: &[u64]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.iter().map(u64::to_string).collect::<Vec<_>>().join(" ")
        }
    };
    format!(
        "voters: {}\nlearners: {}\n",
        ids(&r.voters),
        ids(&r.learners)
    )
}

/// `mfscli sessions`: one line per session, tab-separated with a header
/// ("-": no exports line gave the session rights, or any address).
pub fn sessions(list: &[mfs_proto::v1::SessionInfo]) -> String {
    let mut out = String::from(
        "ID	OPEN_FILES	ADDRESS	ROOT	ACCESS	EXPORT_LINE	INFO
",
    );
    for s in list {
        let line = (s.export_line != 0).then(|| s.export_line.to_string());
        let access = match (line.is_some(), s.meta, s.read_only) {
            (false, _, _) => "rw",
            (true, true, true) => "meta,ro",
            (true, true, false) => "meta,rw",
            (true, false, true) => "ro",
            (true, false, false) => "rw",
        };
        out.push_str(&format!(
            "{}\t{}\t{}\t{}\t{access}\t{}\t{}\n",
            s.id,
            s.open_files,
            if s.address.is_empty() {
                "-"
            } else {
                &s.address
            },
            s.root,
            line.as_deref().unwrap_or("-"),
            s.info
        ));
    }
    out
}

/// `mfscli sessions --json`: a list of objects (null: not given).
pub fn sessions_json(list: &[mfs_proto::v1::SessionInfo]) -> serde_json::Value {
    serde_json::Value::Array(
        list.iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id,
                    "info": s.info,
                    "open_files": s.open_files,
                    "address": (!s.address.is_empty()).then_some(&s.address),
                    "root": s.root,
                    "read_only": s.read_only,
                    "meta": s.meta,
                    "export_line": (s.export_line != 0).then_some(s.export_line),
                })
            })
            .collect(),
    )
}

/// `mfscli quota`: one line per quota directory, "usage/soft/hard" per
/// kind ("-": no limit), tab-separated with a header.
pub fn quotas(list: &[mfs_proto::v1::QuotaInfo]) -> String {
    let mut out =
        String::from("PATH\tINODES\tLENGTH\tSIZE\tREALSIZE\tGRACE\tSOFT_EXCEEDED_SINCE\n");
    let lim = |l: Option<u64>| l.map_or_else(|| "-".to_string(), |v| v.to_string());
    for q in list {
        let u = q.usage.unwrap_or_default();
        let (s, h) = (q.soft.unwrap_or_default(), q.hard.unwrap_or_default());
        let cell =
            |cur: u64, s: Option<u64>, h: Option<u64>| format!("{cur}/{}/{}", lim(s), lim(h));
        out.push_str(&format!(
            "/{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            String::from_utf8_lossy(&q.path),
            cell(u.inodes, s.inodes, h.inodes),
            cell(u.length, s.length, h.length),
            cell(u.size, s.size, h.size),
            cell(u.realsize, s.realsize, h.realsize),
            q.grace_secs,
            if q.soft_exceeded_since == 0 {
                "-".to_string()
            } else {
                q.soft_exceeded_since.to_string()
            }
        ));
    }
    out
}

/// `mfscli quota --json`: a list of objects (null: no limit).
pub fn quotas_json(list: &[mfs_proto::v1::QuotaInfo]) -> serde_json::Value {
    let limits = |l: Option<mfs_proto::v1::QuotaLimits>| {
        let l = l.unwrap_or_default();
        serde_json::json!({"inodes": l.inodes, "length": l.length, "size": l.size, "realsize": l.realsize})
    };
    serde_json::Value::Array(
        list.iter()
            .map(|q| {
                let u = q.usage.unwrap_or_default();
                serde_json::json!({
                    "path": format!("/{}", String::from_utf8_lossy(&q.path)),
                    "inode": q.inode,
                    "usage": {"inodes": u.inodes, "length": u.length, "size": u.size, "realsize": u.realsize},
                    "soft": limits(q.soft),
                    "hard": limits(q.hard),
                    "grace_secs": q.grace_secs,
                    "soft_exceeded_since": (q.soft_exceeded_since != 0).then_some(q.soft_exceeded_since),
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfs_mount::info::{ChunkserverView, MasterView};

    #[test]
    fn human_bytes() {
        assert_eq!(bytes(0, true), "0 B");
        assert_eq!(bytes(1023, true), "1023 B");
        assert_eq!(bytes(1536, true), "1.5 KiB");
        assert_eq!(bytes(100 << 30, true), "100 GiB");
        assert_eq!(bytes(u64::MAX, true), "16 EiB");
        assert_eq!(bytes(1536, false), "1536");
    }

    fn view() -> ClusterView {
        ClusterView {
            leader: Some(1),
            leader_address: Some("127.0.0.1:9421".into()),
            term: 3,
            cluster_id: "c1".into(),
            masters: vec![
                MasterView {
                    id: Some(1),
                    address: "127.0.0.1:9421".into(),
                    reachable: true,
                    role: "leader".into(),
                    term: 3,
                    last_log_index: 1234,
                    leader_id: Some(1),
                    ..MasterView::default()
                },
                MasterView {
                    address: "127.0.0.1:9431".into(),
                    error: Some("connection refused".into()),
                    role: "unknown".into(),
                    ..MasterView::default()
                },
            ],
            chunkservers: vec![ChunkserverView {
                id: 5,
                address: "127.0.0.1:9422".into(),
                state: "ok".into(),
                disks: 2,
                total_bytes: 4 << 30,
                used_bytes: 1 << 30,
                chunks: 17,
                labels: vec![],
                last_seen_secs: 4,
            }],
            ..ClusterView::default()
        }
    }

    #[test]
    fn plain_lines_are_tab_separated_records() {
        let s = info(
            &view(),
            Style {
                table: false,
                human: false,
            },
        );
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "cluster\tc1\t3\t1\t127.0.0.1:9421\t0\t0\t0\t0\t0");
        assert_eq!(
            lines[1],
            "master\t1\t127.0.0.1:9421\tleader\t3\t1234\t0\t0\t0\t1\t-"
        );
        assert!(lines[2].starts_with("master\t-\t127.0.0.1:9431\tunreachable\t-"));
        assert!(lines[2].ends_with("\tconnection refused"));
        assert_eq!(
            lines[3],
            "chunkserver\t5\t127.0.0.1:9422\tok\t2\t1073741824\t4294967296\t25.0%\t17\t-\t4"
        );
        assert_eq!(lines[4], "chunk_health\t0\t0\t0\t0\t0");
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn table_columns_align() {
        let s = info(
            &view(),
            Style {
                table: true,
                human: true,
            },
        );
        assert!(
            s.starts_with("cluster c1  term 3  leader 1 (127.0.0.1:9421)"),
            "{s}"
        );
        let lines: Vec<&str> = s.lines().collect();
        let head = lines
            .iter()
            .position(|l| l.trim_start().starts_with("ID  ADDRESS"))
            .unwrap_or(0);
        let col = |l: &str| {
            l.find("ROLE")
                .or_else(|| l.find("leader"))
                .or_else(|| l.find("unreachable"))
        };
        assert_eq!(col(lines[head]), col(lines[head + 1]));
        assert_eq!(col(lines[head]), col(lines[head + 2]));
        assert!(s.contains("1.0 GiB") && s.contains("4.0 GiB"), "{s}");
        assert!(s.contains("METALOGGERS\n  (none)"), "{s}");
    }

    #[test]
    fn membership_text() {
        let r = MembershipReply {
            voters: vec![1, 2],
            learners: vec![],
        };
        assert_eq!(membership(&r), "voters: 1 2\nlearners: -\n");
    }

    #[test]
    fn quota_lines_show_usage_soft_and_hard() {
        let q = mfs_proto::v1::QuotaInfo {
            inode: 5,
            path: b"projects".to_vec(),
            soft: Some(mfs_proto::v1::QuotaLimits {
                inodes: Some(6),
                ..Default::default()
            }),
            hard: Some(mfs_proto::v1::QuotaLimits {
                length: Some(1000),
                ..Default::default()
            }),
            grace_secs: 60,
            usage: Some(mfs_proto::v1::QuotaUsage {
                inodes: 7,
                length: 10,
                size: 512,
                realsize: 1024,
            }),
            soft_exceeded_since: 0,
        };
        let text = quotas(std::slice::from_ref(&q));
        assert_eq!(
            text.lines().nth(1),
            Some("/projects\t7/6/-\t10/-/1000\t512/-/-\t1024/-/-\t60\t-")
        );
        let j = quotas_json(&[q]);
        assert_eq!(j[0]["hard"]["length"], 1000);
        assert_eq!(j[0]["soft"]["length"], serde_json::Value::Null);
    }
}
