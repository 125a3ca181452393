//! The cluster secret (`CLUSTER_SECRET`) daemons show each other: stamped
//! on a request's metadata by the sender, checked by the receiver. Masters
//! check it on Raft traffic and on chunkserver registration; chunkservers
//! check it on the chunk orders of the masters. Empty: no secret is sent
//! and none is asked for.

use std::sync::Arc;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Request, Status};

use crate::SECRET_KEY;

/// A cluster secret; cheap to clone.
#[derive(Clone, Default)]
pub struct ClusterSecret(Arc<str>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "none" } else { "(set)" })
    }
}

impl ClusterSecret {
    pub fn new(secret: &str) -> ClusterSecret {
        ClusterSecret(secret.into())
    }

    /// Whether a secret is set (and so asked for).
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    /// Adds the secret, if any, to outgoing metadata.
    pub fn stamp(&self, md: &mut MetadataMap) {
        if self.is_set() {
            if let Ok(v) = MetadataValue::try_from(&*self.0) {
                md.insert(SECRET_KEY, v);
            }
        }
    }

    /// `msg` as a request with the secret stamped on it.
    pub fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        self.stamp(req.metadata_mut());
        req
    }

    /// Checks incoming metadata: with a secret set, the request must carry
    /// the same one, else PERMISSION_DENIED with `fix` (what to set where)
    /// in the message.
    pub fn check(&self, md: &MetadataMap, fix: &str) -> Result<(), Status> {
        if !self.is_set() {
            return Ok(());
        }
        let got = md.get(SECRET_KEY).map(|v| v.as_bytes()).unwrap_or(b"");
        if same(got, self.0.as_bytes()) {
            Ok(())
        } else {
            Err(Status::permission_denied(format!(
                "wrong or missing cluster secret: {fix}"
            )))
        }
    }
}

/// Stamps the secret on every call of a client made with it
/// (`XClient::with_interceptor(channel, secret)`).
impl tonic::service::Interceptor for ClusterSecret {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        self.stamp(req.metadata_mut());
        Ok(req)
    }
}

/// Equality that takes as long whatever the first difference, so the
/// time of a refusal tells nothing of the secret.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// How long a chunk token is good for, in seconds.
pub const CHUNK_TOKEN_SECS: u64 = 15 * 60;

/// What a chunk token says is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkAccess {
    Read,
    Write,
}

/// When a chunk token (see [`ClusterSecret::chunk_token`]) expires, in
/// seconds since the epoch, as its holder can read it; `None` for no token
/// (a cluster without a secret: it never expires) or one not of that form.
pub fn token_expires(token: &[u8]) -> Option<u64> {
    let e: [u8; 8] = token.get(..8)?.try_into().ok()?;
    (token.len() == 41).then(|| u64::from_le_bytes(e))
}

impl ClusterSecret {
    /// A token letting its holder `access` chunk `chunk_id` at `version`
    /// until `expires` (seconds since the epoch): `[expires: u64 LE]
    /// [write: u8][HMAC-SHA256 of both with the chunk, keyed by the
    /// secret]`. Empty when no secret is set.
    pub fn chunk_token(
        &self,
        chunk_id: u64,
        version: u32,
        access: ChunkAccess,
        expires: u64,
    ) -> Vec<u8> {
        if !self.is_set() {
            return Vec::new();
        }
        let write = u8::from(access == ChunkAccess::Write);
        let mut out = Vec::with_capacity(41);
        out.extend_from_slice(&expires.to_le_bytes());
        out.push(write);
        out.extend_from_slice(&self.token_mac(chunk_id, version, write, expires));
        out
    }

    /// Whether `token` lets its holder `access` chunk `chunk_id` at
    /// `version` at `now` (seconds since the epoch); a write token also
    /// reads. Why not, when it does not.
    pub fn check_chunk_token(
        &self,
        token: &[u8],
        chunk_id: u64,
        version: u32,
        access: ChunkAccess,
        now: u64,
    ) -> Result<(), String> {
        if token.len() != 41 {
            return Err("no chunk token from the master".into());
        }
        let mut e = [0u8; 8];
        e.copy_from_slice(&token[..8]);
        let expires = u64::from_le_bytes(e);
        let write = token[8];
        if !same(
            &token[9..],
            &self.token_mac(chunk_id, version, write, expires),
        ) {
            return Err(format!(
                "the chunk token is not the master's for chunk {chunk_id:016X} version {version}"
            ));
        }
        if access == ChunkAccess::Write && write != 1 {
            return Err("a read token does not allow writing".into());
        }
        if now > expires {
            return Err("the chunk token has expired".into());
        }
        Ok(())
    }

    fn token_mac(&self, chunk_id: u64, version: u32, write: u8, expires: u64) -> [u8; 32] {
        let mut msg = Vec::with_capacity(48);
        msg.extend_from_slice(b"rmfs chunk token 1");
        msg.extend_from_slice(&chunk_id.to_le_bytes());
        msg.extend_from_slice(&version.to_le_bytes());
        msg.push(write);
        msg.extend_from_slice(&expires.to_le_bytes());
        hmac_sha256(self.0.as_bytes(), &msg)
    }
}

/// HMAC-SHA256 (RFC 2104) of `msg` with `key`.
fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |b: u8| k.map(|x| x ^ b);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(msg)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// MD5 of an export password (what `md5pass=` in mfsexports.cfg holds).
pub fn password_md5(password: &str) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(password.as_bytes()).into()
}

/// The answer to a password challenge: MD5(nonce || MD5(password)), given
/// the password's MD5 (see RegisterSessionRequest.password_digest).
pub fn challenge_answer(nonce: &[u8], password_md5: &[u8; 16]) -> [u8; 16] {
    use md5::Digest;
    let mut h = md5::Md5::new();
    h.update(nonce);
    h.update(password_md5);
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_passes_only_with_the_same_secret() {
        let fix = "set CLUSTER_SECRET";
        let ours = ClusterSecret::new("s3cret");
        let stamped = |s: &str| ClusterSecret::new(s).request(()).metadata().clone();
        assert!(ours.check(&stamped("s3cret"), fix).is_ok());
        for wrong in ["", "s3cre", "s3cret!", "S3cret"] {
            let e = ours.check(&stamped(wrong), fix).unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{wrong:?}");
            assert!(e.message().contains(fix), "{}", e.message());
        }
        // No secret set: nothing is sent, nothing asked.
        let none = ClusterSecret::default();
        assert!(none.request(()).metadata().get(SECRET_KEY).is_none());
        assert!(none.check(&MetadataMap::new(), fix).is_ok());
        assert!(none.check(&stamped("s3cret"), fix).is_ok());
    }

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // A key longer than the block is hashed first (RFC 4231 case 6).
        let mac = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn a_chunk_token_opens_its_chunk_version_and_access_until_it_expires() {
        let s = ClusterSecret::new("s3cret");
        let (id, v, at) = (0x1234, 7, 1_000);
        let read = s.chunk_token(id, v, ChunkAccess::Read, at + 60);
        let write = s.chunk_token(id, v, ChunkAccess::Write, at + 60);
        let ok = |t: &[u8], id, v, a| s.check_chunk_token(t, id, v, a, at);
        assert_eq!(ok(&read, id, v, ChunkAccess::Read), Ok(()));
        assert_eq!(ok(&write, id, v, ChunkAccess::Write), Ok(()));
        assert_eq!(ok(&write, id, v, ChunkAccess::Read), Ok(()));
        assert!(ok(&read, id, v, ChunkAccess::Write).is_err());
        assert!(ok(&read, id + 1, v, ChunkAccess::Read).is_err());
        assert!(ok(&read, id, v + 1, ChunkAccess::Read).is_err());
        assert!(ok(&[], id, v, ChunkAccess::Read).is_err());
        let later = s.check_chunk_token(&read, id, v, ChunkAccess::Read, at + 61);
        assert!(later.unwrap_err().contains("expired"));
        assert_eq!(token_expires(&read), Some(at + 60));
        assert_eq!(token_expires(&[]), None);
        assert_eq!(token_expires(&read[..9]), None);
        // Changing the expiry or the access breaks the MAC.
        let mut longer = read.clone();
        longer[..8].copy_from_slice(&(at + 10_000).to_le_bytes());
        assert!(ok(&longer, id, v, ChunkAccess::Read).is_err());
        let mut upgraded = read.clone();
        upgraded[8] = 1;
        assert!(ok(&upgraded, id, v, ChunkAccess::Write).is_err());
        // Another secret's token opens nothing.
        let other = ClusterSecret::new("guess").chunk_token(id, v, ChunkAccess::Read, at + 60);
        assert!(ok(&other, id, v, ChunkAccess::Read).is_err());
        // No secret: no token.
        assert!(ClusterSecret::default()
            .chunk_token(id, v, ChunkAccess::Read, at)
            .is_empty());
    }
}
