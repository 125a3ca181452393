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
