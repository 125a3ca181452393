//! The one error type of the metalogger library.

use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, with the file or setting concerned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file operation failed.
    #[error("cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A setting is wrong; the message names the key.
    #[error("bad configuration: {0}")]
    Config(String),
    /// The Raft side (learner node, joining the cluster) failed.
    #[error("{0}")]
    Raft(String),
    /// A changelog or image cannot be used as it is.
    #[error("{0}")]
    Data(String),
}

impl Error {
    /// A closure turning an `io::Error` into [`Error::Io`] about `path`.
    pub fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
        move |source| Error::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
