//! The one error type of the storage layer.

use std::io;
use std::path::{Path, PathBuf};

use super::record::RecordError;

/// What can go wrong below the Raft layer. Each message names the path or
/// tree involved and, where the operator can act, what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{engine} storage engine: {source}")]
    Engine {
        engine: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },

    #[error("cannot open {engine} database at {}: {reason}", path.display())]
    Open {
        engine: &'static str,
        path: PathBuf,
        reason: String,
    },

    #[error(
        "data dir {} is locked by another process{} (another mfsmaster running with DATA_PATH={}?)",
        dir.display(),
        holder.as_deref().map(|h| format!(" ({h})")).unwrap_or_default(),
        dir.display()
    )]
    Locked {
        dir: PathBuf,
        /// What the LOCK file says about its holder ("pid 1234"), if readable.
        holder: Option<String>,
    },

    #[error(
        "data dir {} belongs to node {stored}, but this daemon is node {given}: \
         point DATA_PATH elsewhere or wipe it",
        dir.display()
    )]
    NodeIdMismatch {
        dir: PathBuf,
        stored: u64,
        given: u64,
    },

    #[error(
        "data dir {} was written by a newer rmfs (data version {found}), this build reads up to \
         {supported}: run a newer mfsmaster, or point DATA_PATH elsewhere",
        dir.display()
    )]
    DataTooNew {
        dir: PathBuf,
        found: u32,
        supported: u32,
    },

    #[error(
        "data dir {} has data version {found}, older than the minimum this build reads \
         ({min}): open it once with {upgrade_with} to upgrade it, or wipe it and let the \
         node resync from the leader",
        dir.display()
    )]
    DataTooOld {
        dir: PathBuf,
        found: u32,
        min: u32,
        upgrade_with: &'static str,
    },

    #[error(
        "data dir {} holds data but no data_version header: not an rmfs data dir, or damaged; \
         point DATA_PATH elsewhere or wipe it",
        dir.display()
    )]
    MissingHeader { dir: PathBuf },

    #[error(
        "data dir {} belongs to cluster {stored:?}, refusing to set cluster {given:?}: this node \
         was part of another cluster; point DATA_PATH elsewhere or wipe it",
        dir.display()
    )]
    ClusterIdMismatch {
        dir: PathBuf,
        stored: String,
        given: String,
    },

    #[error("corrupt record in tree {tree:?} at key {key}: {source}")]
    Corrupt {
        tree: String,
        /// The key, hex-encoded.
        key: String,
        #[source]
        source: RecordError,
    },

    #[error("cannot encode {what}: {msg}")]
    Encode { what: &'static str, msg: String },

    #[error(
        "Raft log segment {} is damaged at byte {offset}: {why}. The entries after it cannot be \
         read; wipe this master's data dir and let it catch up from the leader (mfscli member \
         remove, then add), or restore it from a metalogger",
        path.display()
    )]
    LogDamaged {
        path: PathBuf,
        offset: u64,
        why: String,
    },

    /// An append or truncation the log cannot take (a bug in the caller).
    #[error("Raft log: {0}")]
    LogMisuse(String),
}

impl StoreError {
    pub(crate) fn io(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        let path = path.to_path_buf();
        move |source| StoreError::Io { op, path, source }
    }

    pub(crate) fn corrupt(tree: &str, key: &[u8], source: RecordError) -> StoreError {
        StoreError::Corrupt {
            tree: tree.to_string(),
            key: hex(key),
            source,
        }
    }

    /// The `io::ErrorKind` this maps to (openraft's storage traits speak `io::Error`).
    pub fn kind(&self) -> io::ErrorKind {
        match self {
            StoreError::Io { source, .. } => source.kind(),
            StoreError::Engine { source, .. } => source
                .downcast_ref::<io::Error>()
                .map_or(io::ErrorKind::Other, io::Error::kind),
            StoreError::Corrupt { .. } | StoreError::LogDamaged { .. } => {
                io::ErrorKind::InvalidData
            }
            StoreError::LogMisuse(_) => io::ErrorKind::InvalidInput,
            StoreError::Encode { .. } => io::ErrorKind::InvalidInput,
            StoreError::Locked { .. } => io::ErrorKind::WouldBlock,
            _ => io::ErrorKind::Other,
        }
    }
}

impl From<StoreError> for io::Error {
    fn from(e: StoreError) -> io::Error {
        io::Error::new(e.kind(), e)
    }
}

/// Lowercase hex of `bytes`, for keys in messages.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}
