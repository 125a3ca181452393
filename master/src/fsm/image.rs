//! The metadata image: the whole namespace as bytes (Raft snapshots, the
//! metalogger's `metadata.mfs`), plus an opaque blob of the caller's (the Raft
//! layer keeps its last applied log id and membership there).
//!
//! Layout, integers little-endian:
//!
//! ```text
//! "MFSIMG01"  u32 format version  u64 n  n bytes: Namespace (bincode 2, serde, standard)
//! u64 m  m bytes: extra  u32 CRC32 (crc32fast) of everything before it
//! ```

use super::namespace::Namespace;
use thiserror::Error;

pub const IMAGE_MAGIC: &[u8; 8] = b"MFSIMG01";
/// Version of the image format (and of the serialized `Namespace`).
/// 1: first version.
/// 2: the data path: chunk ids counter, fresh chunks, chunk and tree replies.
/// 3: file locks.
/// 4: extra attributes (eattr) of inodes.
/// 5: the trash, the paths of sustained files, quotas.
/// 6: the rights of sessions registered through an export.
/// 7: directories delegated to sessions, inode numbers they hold.
/// 8: chunk ids sessions hold.
/// 9: versions ordered above the committed ones.
pub const IMAGE_VERSION: u32 = 9;
/// Oldest format this build reads.
pub const IMAGE_VERSION_MIN: u32 = 4;

/// What an image of format `v` lacks at the end of its namespace: the
/// fields added since, each an empty map, which bincode writes as one zero
/// byte (its length). Appending them reads an older image as the current
/// format.
fn missing_tail(v: u32) -> &'static [u8] {
    match v {
        4 => &[0, 0, 0, 0, 0, 0, 0, 0],
        5 => &[0, 0, 0, 0, 0],
        6 => &[0, 0, 0, 0],
        7 => &[0, 0],
        8 => &[0],
        _ => &[],
    }
}

const HEADER_LEN: usize = 8 + 4;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ImageError {
    #[error("not a metadata image (bad magic)")]
    BadMagic,
    #[error(
        "metadata image format version {found} is not supported (this build reads {IMAGE_VERSION_MIN} to {IMAGE_VERSION})"
    )]
    Version { found: u32 },
    #[error("metadata image is truncated")]
    Truncated,
    #[error("metadata image checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum { stored: u32, computed: u32 },
    #[error("metadata image has {0} unexpected bytes at its end")]
    Trailing(usize),
    #[error("metadata image cannot be decoded: {0}")]
    Decode(String),
    #[error("metadata image cannot be encoded: {0}")]
    Encode(String),
    #[error("metadata image is inconsistent: {0}")]
    Inconsistent(String),
}

fn encode_ns(ns: &Namespace) -> Result<Vec<u8>, ImageError> {
    bincode::serde::encode_to_vec(ns, bincode::config::standard())
        .map_err(|e| ImageError::Encode(e.to_string()))
}

/// Read `n` bytes at `*pos`, advancing it.
fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], ImageError> {
    let end = pos.checked_add(n).ok_or(ImageError::Truncated)?;
    let s = bytes.get(*pos..end).ok_or(ImageError::Truncated)?;
    *pos = end;
    Ok(s)
}

fn take_u64(bytes: &[u8], pos: &mut usize) -> Result<u64, ImageError> {
    let s = take(bytes, pos, 8)?;
    let mut b = [0u8; 8];
    b.copy_from_slice(s);
    Ok(u64::from_le_bytes(b))
}

/// An image's format version, namespace bytes and extra blob, after its
/// magic, version, lengths and checksum are checked.
fn frame(bytes: &[u8]) -> Result<(u32, &[u8], &[u8]), ImageError> {
    if bytes.len() < IMAGE_MAGIC.len() {
        return Err(ImageError::Truncated);
    }
    if &bytes[..IMAGE_MAGIC.len()] != IMAGE_MAGIC {
        return Err(ImageError::BadMagic);
    }
    let mut pos = IMAGE_MAGIC.len();
    let mut v = [0u8; 4];
    v.copy_from_slice(take(bytes, &mut pos, 4)?);
    let found = u32::from_le_bytes(v);
    if !(IMAGE_VERSION_MIN..=IMAGE_VERSION).contains(&found) {
        return Err(ImageError::Version { found });
    }
    if bytes.len() < HEADER_LEN + 8 + 8 + 4 {
        return Err(ImageError::Truncated);
    }
    let body_end = bytes.len() - 4;
    let mut c = [0u8; 4];
    c.copy_from_slice(&bytes[body_end..]);
    let stored = u32::from_le_bytes(c);
    let body = &bytes[..body_end];
    let n = usize::try_from(take_u64(body, &mut pos)?).map_err(|_| ImageError::Truncated)?;
    let payload = take(body, &mut pos, n)?;
    let m = usize::try_from(take_u64(body, &mut pos)?).map_err(|_| ImageError::Truncated)?;
    let extra = take(body, &mut pos, m)?;
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(ImageError::Checksum { stored, computed });
    }
    if pos != body.len() {
        return Err(ImageError::Trailing(body.len() - pos));
    }
    Ok((found, payload, extra))
}

impl Namespace {
    /// The image of this namespace with `extra` carried along.
    ///
    /// Encoding cannot fail for these types (every sequence has a known
    /// length); should it ever, the result is empty, which `from_image`
    /// refuses (`Truncated`) rather than loading something wrong. Use
    /// [`Namespace::try_to_image`] to see the error.
    pub fn to_image(&self, extra: &[u8]) -> Vec<u8> {
        self.try_to_image(extra).unwrap_or_default()
    }

    /// The image of this namespace with `extra` carried along. The
    /// namespace is encoded in place, after the header (no copy).
    pub fn try_to_image(&self, extra: &[u8]) -> Result<Vec<u8>, ImageError> {
        let mut out = Vec::with_capacity(self.image_size_hint() + extra.len());
        out.extend_from_slice(IMAGE_MAGIC);
        out.extend_from_slice(&IMAGE_VERSION.to_le_bytes());
        out.extend_from_slice(&0u64.to_le_bytes());
        bincode::serde::encode_into_std_write(self, &mut out, bincode::config::standard())
            .map_err(|e| ImageError::Encode(e.to_string()))?;
        let n = (out.len() - HEADER_LEN - 8) as u64;
        out[HEADER_LEN..HEADER_LEN + 8].copy_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(extra.len() as u64).to_le_bytes());
        out.extend_from_slice(extra);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// A guess of the encoded size (about 200 bytes a node), so that
    /// encoding a big namespace does not copy its image over and over
    /// while the buffer grows.
    pub fn image_size_hint(&self) -> usize {
        HEADER_LEN + 8 + 4096 + self.nodes.len().saturating_mul(200)
    }

    /// Checks an image's framing and checksum without decoding it (an
    /// image that came from elsewhere: a child process, a file).
    pub fn verify_image(bytes: &[u8]) -> Result<(), ImageError> {
        frame(bytes).map(|_| ())
    }

    /// Load an image: the namespace and the extra blob. Checks magic,
    /// version, length and CRC before decoding, and the namespace's
    /// invariants after.
    pub fn from_image(bytes: &[u8]) -> Result<(Namespace, Vec<u8>), ImageError> {
        let (found, payload, extra) = frame(bytes)?;
        let tail = missing_tail(found);
        let upgraded;
        let payload = if tail.is_empty() {
            payload
        } else {
            upgraded = [payload, tail].concat();
            &upgraded[..]
        };
        let (mut ns, read): (Namespace, usize) =
            bincode::serde::decode_from_slice(payload, bincode::config::standard())
                .map_err(|e| ImageError::Decode(e.to_string()))?;
        if read != payload.len() {
            return Err(ImageError::Decode(format!(
                "{} bytes left after the namespace",
                payload.len() - read
            )));
        }
        ns.rebuild_file_parents();
        ns.check().map_err(ImageError::Inconsistent)?;
        Ok((ns, extra.to_vec()))
    }

    /// A 64-bit FNV-1a hash of the serialized namespace: equal states give
    /// equal hashes on every replica and every build of the same format.
    pub fn image_hash(&self) -> u64 {
        let bytes = encode_ns(self).unwrap_or_default();
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }
}
