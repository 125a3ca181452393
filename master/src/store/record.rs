//! The record codec every stored value goes through.
//!
//! Layout: `[format version: u8][payload][CRC32 of version+payload: u32 LE]`.
//! The CRC is crc32fast's (IEEE polynomial). A torn or bit-flipped value
//! fails the CRC check; a value written by a newer build fails the version
//! check; neither is ever handed to the payload decoder.
//!
//! Format versions (bump [`FORMAT_VERSION`] only with a decoder for the old):
//! - 1 (2026-11): payload is bincode 2 serde, `config::standard()`.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Batch, Result, StoreError, Tree};

/// The format version this build writes.
pub const FORMAT_VERSION: u8 = 1;
/// The oldest format version this build reads.
pub const MIN_FORMAT_VERSION: u8 = 1;
/// Bytes a record adds around its payload.
pub const OVERHEAD: usize = 1 + CRC_LEN;
const CRC_LEN: usize = 4;

/// Why stored bytes are not a valid record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("empty record (torn write?)")]
    Empty,
    #[error("record too short: {len} bytes, a record has at least {OVERHEAD} (torn write?)")]
    TooShort { len: usize },
    #[error(
        "bad CRC: stored {stored:08x}, computed {computed:08x} (torn write or disk corruption)"
    )]
    BadCrc { stored: u32, computed: u32 },
    #[error(
        "unknown record format version {version}: this build reads versions \
         {MIN_FORMAT_VERSION}..={FORMAT_VERSION} (written by a newer rmfs?)"
    )]
    UnknownVersion { version: u8 },
    #[error("payload does not decode: {0}")]
    Payload(String),
}

/// CRC32 over the version byte and the payload.
pub fn checksum(version: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&[version]);
    h.update(payload);
    h.finalize()
}

/// Wraps `payload` as a record of format `version`.
pub fn encode(version: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
    out.push(version);
    out.extend_from_slice(payload);
    out.extend_from_slice(&checksum(version, payload).to_le_bytes());
    out
}

/// Checks a record and returns its format version and payload. The CRC is
/// checked before the version, so a flipped version byte reads as bad CRC.
pub fn decode(bytes: &[u8]) -> Result<(u8, &[u8]), RecordError> {
    if bytes.is_empty() {
        return Err(RecordError::Empty);
    }
    if bytes.len() < OVERHEAD {
        return Err(RecordError::TooShort { len: bytes.len() });
    }
    let (body, crc) = bytes.split_at(bytes.len() - CRC_LEN);
    let mut crc_bytes = [0u8; CRC_LEN];
    crc_bytes.copy_from_slice(crc);
    let stored = u32::from_le_bytes(crc_bytes);
    let (version, payload) = (body[0], &body[1..]);
    let computed = checksum(version, payload);
    if stored != computed {
        return Err(RecordError::BadCrc { stored, computed });
    }
    if !(MIN_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(RecordError::UnknownVersion { version });
    }
    Ok((version, payload))
}

/// Serializes `value` (bincode 2 serde, standard config) into a record.
pub fn to_record<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    let payload =
        bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| {
            StoreError::Encode {
                what: std::any::type_name::<T>(),
                msg: e.to_string(),
            }
        })?;
    Ok(encode(FORMAT_VERSION, &payload))
}

/// Checks a record and deserializes its payload; trailing bytes are an error.
pub fn from_record<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    let (_version, payload) = decode(bytes)?;
    let (value, used) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|e| RecordError::Payload(e.to_string()))?;
    if used != payload.len() {
        return Err(RecordError::Payload(format!(
            "{} trailing bytes after the value",
            payload.len() - used
        )));
    }
    Ok(value)
}

/// What [`Tree::scan_check`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ScanReport {
    /// Records whose envelope checked out.
    pub ok: u64,
    /// Keys whose values are not valid records, with why.
    pub bad: Vec<(Vec<u8>, RecordError)>,
}

impl Tree {
    /// Stores `value` as a record under `key`.
    pub fn put_record<T: Serialize + ?Sized>(
        &self,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<()> {
        self.insert(key, to_record(value)?)
    }

    /// Reads the record under `key`; a bad record is [`StoreError::Corrupt`]
    /// naming this tree and the key.
    pub fn get_record<T: DeserializeOwned>(&self, key: impl AsRef<[u8]>) -> Result<Option<T>> {
        let key = key.as_ref();
        match self.get(key)? {
            None => Ok(None),
            Some(bytes) => from_record(&bytes)
                .map(Some)
                .map_err(|e| StoreError::corrupt(self.name(), key, e)),
        }
    }

    /// Decodes a value read from this tree (e.g. from [`Tree::range`]),
    /// naming the tree and key if it is corrupt.
    pub fn decode_record<T: DeserializeOwned>(&self, key: &[u8], value: &[u8]) -> Result<T> {
        from_record(value).map_err(|e| StoreError::corrupt(self.name(), key, e))
    }

    /// Checks the record envelope (length, CRC, version) of every value.
    /// Reads the whole tree; meant for startup checks and tools.
    pub fn scan_check(&self) -> Result<ScanReport> {
        let mut report = ScanReport::default();
        for item in self.iter() {
            let (key, value) = item?;
            match decode(&value) {
                Ok(_) => report.ok += 1,
                Err(e) => report.bad.push((key, e)),
            }
        }
        Ok(report)
    }
}

impl Batch {
    /// Adds an insert of `value` as a record.
    pub fn put_record<T: Serialize + ?Sized>(
        &mut self,
        key: impl Into<Vec<u8>>,
        value: &T,
    ) -> Result<&mut Batch> {
        let bytes = to_record(value)?;
        Ok(self.insert(key, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let rec = encode(FORMAT_VERSION, b"hello");
        assert_eq!(rec.len(), 5 + OVERHEAD);
        assert_eq!(decode(&rec).unwrap(), (FORMAT_VERSION, &b"hello"[..]));
        // An empty payload is a valid record.
        let rec = encode(FORMAT_VERSION, b"");
        assert_eq!(decode(&rec).unwrap(), (FORMAT_VERSION, &b""[..]));
    }

    #[test]
    fn typed_round_trip() {
        let v = (7u64, String::from("x"), Some(vec![1u8, 2]));
        let rec = to_record(&v).unwrap();
        let back: (u64, String, Option<Vec<u8>>) = from_record(&rec).unwrap();
        assert_eq!(back, v);
    }

    #[test]
    fn bad_crc_on_any_flipped_bit() {
        let rec = encode(FORMAT_VERSION, b"payload bytes");
        for i in 0..rec.len() * 8 {
            let mut bad = rec.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(
                matches!(decode(&bad), Err(RecordError::BadCrc { .. })),
                "bit {i}: {:?}",
                decode(&bad)
            );
        }
    }

    #[test]
    fn truncated_is_an_error_not_a_panic() {
        let rec = encode(FORMAT_VERSION, b"payload bytes");
        assert_eq!(decode(&[]), Err(RecordError::Empty));
        for len in 1..OVERHEAD {
            assert_eq!(decode(&rec[..len]), Err(RecordError::TooShort { len }));
        }
        for len in OVERHEAD..rec.len() {
            assert!(matches!(
                decode(&rec[..len]),
                Err(RecordError::BadCrc { .. })
            ));
        }
        let typed = to_record(&123456789u64).unwrap();
        for len in 0..typed.len() {
            assert!(from_record::<u64>(&typed[..len]).is_err());
        }
    }

    #[test]
    fn unknown_version() {
        for v in [0u8, FORMAT_VERSION + 1, 255] {
            let rec = encode(v, b"x");
            assert_eq!(
                decode(&rec),
                Err(RecordError::UnknownVersion { version: v })
            );
            let msg = decode(&rec).unwrap_err().to_string();
            assert!(msg.contains(&format!("version {v}")), "{msg}");
        }
    }

    #[test]
    fn payload_type_mismatch_and_trailing_bytes() {
        let rec = encode(FORMAT_VERSION, &[0xff]);
        assert!(matches!(
            from_record::<String>(&rec),
            Err(RecordError::Payload(_))
        ));
        let rec = to_record(&(1u8, 2u8)).unwrap();
        assert!(matches!(
            from_record::<u8>(&rec),
            Err(RecordError::Payload(_))
        ));
    }
}
