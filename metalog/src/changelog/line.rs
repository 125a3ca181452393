//! One changelog line: one committed Raft entry, as readable text.
//!
//! ```text
//! INDEX|TERM|TIME|CRC|KIND|PAYLOAD
//! 1042|7|1767225600|5A0C33F1|REQ|{"session":3,"seq":12,"acked":11,"time":{"sec":1767225600,"nsec":5},"op":{"Mkdir":{...}}}
//! ```
//!
//! - `INDEX`, `TERM`: the entry's Raft log position (decimal).
//! - `TIME`: Unix seconds: the leader's clock stamped in the request for
//!   `REQ`, the metalogger's clock when it wrote the line otherwise.
//! - `CRC`: CRC32 (8 upper-case hex digits) of the line without this field
//!   and its `|`, i.e. of `INDEX|TERM|TIME|KIND|PAYLOAD`, newline excluded.
//! - `KIND` and `PAYLOAD`:
//!   - `REQ`: a namespace change; the payload is the JSON (serde_json) of
//!     the master's `fsm::Request` (names are byte arrays), parsed back by
//!     restore;
//!   - `NOP`: an empty entry (a new leader's first entry), payload `{}`;
//!   - `MEMBERS`: a membership change, payload
//!     `{"voters":[[id,"host:port"],...],"learners":[...]}`;
//!   - `IMAGE`: not an entry but a jump: the metalogger's state moved to
//!     INDEX without the entries before it (a snapshot from the leader, or
//!     its own restart from a snapshot ahead of its changelog); the state at
//!     INDEX was written as `metadata_ml.mfs`. Payload
//!     `{"file":"metadata_ml.mfs","reason":"..."}`.
//!
//! JSON never holds a raw newline, so a line is one line. The payload may
//! contain `|`: it is everything after the fifth `|`.

use mfs_master::fsm::Request;
use serde::{Deserialize, Serialize};

/// What a line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Req,
    Nop,
    Members,
    Image,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Req => "REQ",
            Kind::Nop => "NOP",
            Kind::Members => "MEMBERS",
            Kind::Image => "IMAGE",
        }
    }

    fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "REQ" => Kind::Req,
            "NOP" => Kind::Nop,
            "MEMBERS" => Kind::Members,
            "IMAGE" => Kind::Image,
            _ => return None,
        })
    }
}

/// Why a line cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("expected 6 fields INDEX|TERM|TIME|CRC|KIND|PAYLOAD, found {0}")]
    Fields(usize),
    #[error("field {field} `{value}` is not a number")]
    Number { field: &'static str, value: String },
    #[error(
        "CRC mismatch (line says {stored}, contents give {computed:08X}): the line is damaged"
    )]
    Crc { stored: String, computed: u32 },
    #[error("unknown kind `{0}` (expected REQ, NOP, MEMBERS or IMAGE)")]
    Kind(String),
    #[error("payload is not a valid {what}: {error}")]
    Payload { what: &'static str, error: String },
}

/// Payload of a `MEMBERS` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub voters: Vec<(u64, String)>,
    pub learners: Vec<(u64, String)>,
}

/// Payload of an `IMAGE` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMark {
    pub file: String,
    pub reason: String,
}

/// One changelog line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub index: u64,
    pub term: u64,
    pub time: i64,
    pub kind: Kind,
    /// JSON text (see the module doc).
    pub payload: String,
}

fn json<T: Serialize>(v: &T) -> String {
    // These types serialize to JSON without fail (no maps with non-string
    // keys, no floats); should one ever fail, the payload reads back as an
    // error at restore rather than as a wrong change.
    serde_json::to_string(v).unwrap_or_else(|e| format!("\"unencodable: {e}\""))
}

impl Line {
    /// A `REQ` line.
    pub fn request(index: u64, term: u64, req: &Request) -> Line {
        Line {
            index,
            term,
            time: req.time.sec,
            kind: Kind::Req,
            payload: json(req),
        }
    }

    /// A `NOP` line.
    pub fn nop(index: u64, term: u64, time: i64) -> Line {
        Line {
            index,
            term,
            time,
            kind: Kind::Nop,
            payload: "{}".into(),
        }
    }

    /// A `MEMBERS` line.
    pub fn members(index: u64, term: u64, time: i64, m: &Members) -> Line {
        Line {
            index,
            term,
            time,
            kind: Kind::Members,
            payload: json(m),
        }
    }

    /// An `IMAGE` line.
    pub fn image(index: u64, term: u64, time: i64, mark: &ImageMark) -> Line {
        Line {
            index,
            term,
            time,
            kind: Kind::Image,
            payload: json(mark),
        }
    }

    fn body(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}",
            self.index,
            self.term,
            self.time,
            self.kind.as_str(),
            self.payload
        )
    }

    /// The line as written, newline included.
    pub fn to_text(&self) -> String {
        let crc = crc32fast::hash(self.body().as_bytes());
        format!(
            "{}|{}|{}|{crc:08X}|{}|{}\n",
            self.index,
            self.term,
            self.time,
            self.kind.as_str(),
            self.payload
        )
    }

    /// Parses one line (without its newline), checking the CRC.
    pub fn parse(text: &str) -> Result<Line, LineError> {
        let f: Vec<&str> = text.splitn(6, '|').collect();
        if f.len() != 6 {
            return Err(LineError::Fields(f.len()));
        }
        let num = |field: &'static str, v: &str| {
            v.parse::<u64>().map_err(|_| LineError::Number {
                field,
                value: v.chars().take(40).collect(),
            })
        };
        let index = num("INDEX", f[0])?;
        let term = num("TERM", f[1])?;
        let time: i64 = f[2].parse().map_err(|_| LineError::Number {
            field: "TIME",
            value: f[2].chars().take(40).collect(),
        })?;
        let computed =
            crc32fast::hash(format!("{}|{}|{}|{}|{}", f[0], f[1], f[2], f[4], f[5]).as_bytes());
        if f[3].len() != 8 || u32::from_str_radix(f[3], 16).ok() != Some(computed) {
            return Err(LineError::Crc {
                stored: f[3].chars().take(40).collect(),
                computed,
            });
        }
        let kind =
            Kind::parse(f[4]).ok_or_else(|| LineError::Kind(f[4].chars().take(40).collect()))?;
        Ok(Line {
            index,
            term,
            time,
            kind,
            payload: f[5].to_string(),
        })
    }

    /// The leading INDEX field of a line that may be damaged elsewhere.
    pub fn index_of(text: &str) -> Option<u64> {
        text.split('|').next()?.parse().ok()
    }

    /// The request of a `REQ` line.
    pub fn decode_request(&self) -> Result<Request, LineError> {
        serde_json::from_str(&self.payload).map_err(|e| LineError::Payload {
            what: "request",
            error: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mfs_master::fsm::Inode;
    use mfs_master::fsm::{Cred, Op, SessionId, Timespec};

    fn mkdir(name: &[u8]) -> Request {
        Request {
            session: SessionId(3),
            seq: 12,
            acked: 11,
            time: Timespec {
                sec: 1_767_225_600,
                nsec: 5,
            },
            op: Op::Mkdir {
                cred: Cred {
                    uid: 0,
                    gid: 0,
                    groups: vec![5, 6],
                },
                parent: Inode(1),
                name: name.to_vec(),
                mode: 0o755,
                umask: 0o022,
            },
        }
    }

    #[test]
    fn request_round_trips_through_text() {
        // A name with a newline and a `|` must stay on one line and parse back.
        let req = mkdir(b"a|b\nc");
        let line = Line::request(1042, 7, &req);
        let text = line.to_text();
        assert!(text.ends_with('\n'));
        assert_eq!(text.matches('\n').count(), 1, "{text}");
        let back = Line::parse(text.trim_end_matches('\n')).unwrap();
        assert_eq!(back, line);
        assert_eq!(back.kind, Kind::Req);
        assert_eq!(back.time, 1_767_225_600);
        assert_eq!(back.decode_request().unwrap(), req);
    }

    #[test]
    fn other_kinds_round_trip() {
        let m = Members {
            voters: vec![(1, "127.0.0.1:9421".into())],
            learners: vec![(1000, "127.0.0.1:9419".into())],
        };
        for line in [
            Line::nop(5, 2, 99),
            Line::members(6, 2, 99, &m),
            Line::image(
                7,
                3,
                100,
                &ImageMark {
                    file: "metadata_ml.mfs".into(),
                    reason: "snapshot".into(),
                },
            ),
        ] {
            let text = line.to_text();
            assert_eq!(Line::parse(text.trim_end()).unwrap(), line);
        }
        let text = Line::members(6, 2, 99, &m).to_text();
        let back: Members =
            serde_json::from_str(&Line::parse(text.trim_end()).unwrap().payload).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn any_changed_byte_fails_the_crc() {
        let text = Line::request(9, 1, &mkdir(b"x")).to_text();
        let text = text.trim_end();
        for i in 0..text.len() {
            let mut b = text.as_bytes().to_vec();
            b[i] ^= 0x01;
            let Ok(s) = String::from_utf8(b) else {
                continue;
            };
            assert!(
                Line::parse(&s).is_err(),
                "byte {i} flipped still parses: {s}"
            );
        }
    }

    #[test]
    fn malformed_lines_say_what_is_wrong() {
        assert_eq!(Line::parse("1|2|3"), Err(LineError::Fields(3)));
        assert!(matches!(
            Line::parse("x|2|3|00000000|NOP|{}"),
            Err(LineError::Number { field: "INDEX", .. })
        ));
        let good = Line::nop(1, 1, 1).to_text();
        let bad_kind = good.trim_end().replace("NOP", "FOO");
        // The CRC covers the kind: the error is the CRC.
        assert!(matches!(Line::parse(&bad_kind), Err(LineError::Crc { .. })));
        let body = "1|1|1|FOO|{}";
        let forged = format!("1|1|1|{:08X}|FOO|{{}}", crc32fast::hash(body.as_bytes()));
        assert_eq!(Line::parse(&forged), Err(LineError::Kind("FOO".into())));
        assert_eq!(Line::index_of("77|garbage"), Some(77));
        assert_eq!(Line::index_of("garbage"), None);
    }
}
