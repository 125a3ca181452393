//! Identifier newtypes shared by every role.
//!
//! Bare `u64`s are easy to mix up (an inode number passed where a chunk id is
//! wanted compiles fine); these wrappers make the compiler catch it. Each one
//! is `Copy`, ordered, hashable and serde-serializable, and displays the way
//! MooseFS prints it, so logs and tools read as MooseFS users expect.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! id_newtype {
    ($(#[$meta:meta])* $name:ident($inner:ty)) => {
        $(#[$meta])*
        #[derive(
            Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl $name {
            /// The raw number.
            pub const fn get(self) -> $inner {
                self.0
            }
        }

        impl From<$inner> for $name {
            fn from(v: $inner) -> Self {
                $name(v)
            }
        }

        impl From<$name> for $inner {
            fn from(v: $name) -> Self {
                v.0
            }
        }
    };
}

id_newtype!(
    /// An inode number. Inode 1 is the root directory; 0 is never used.
    Inode(u64)
);
id_newtype!(
    /// A client session, allocated by the state machine. 0 means "no session".
    SessionId(u64)
);
id_newtype!(
    /// A chunk identifier, unique in the cluster for ever.
    ChunkId(u64)
);
id_newtype!(
    /// A chunk's version; bumped each time a chunk is modified under a new lease.
    ChunkVersion(u32)
);
id_newtype!(
    /// A node (master, metalogger or chunkserver) in the cluster.
    NodeId(u64)
);
id_newtype!(
    /// A replication goal: how many copies of each chunk a file should have.
    Goal(u8)
);

impl Inode {
    /// The root directory.
    pub const ROOT: Inode = Inode(1);
}

impl SessionId {
    /// "No session": internal operations issued by the leader itself.
    pub const NONE: SessionId = SessionId(0);
}

impl fmt::Display for Inode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for ChunkId {
    /// As MooseFS prints a chunk id: 16 upper-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl fmt::Display for ChunkVersion {
    /// As MooseFS prints a chunk version: 8 upper-case hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08X}", self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Goal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// One version of one chunk: what a chunk file on a chunkserver holds.
///
/// Displays as MooseFS names chunk files, `%016X_%08X` (id, version), e.g.
/// `00000000000A1B2C_00000001`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChunkKey {
    pub id: ChunkId,
    pub version: ChunkVersion,
}

impl ChunkKey {
    pub const fn new(id: ChunkId, version: ChunkVersion) -> Self {
        ChunkKey { id, version }
    }
}

impl fmt::Display for ChunkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}_{}", self.id, self.version)
    }
}

/// The MooseFS name of a chunk version, `%016X_%08X`.
pub fn chunk_name(id: ChunkId, version: ChunkVersion) -> String {
    ChunkKey::new(id, version).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_as_moosefs() {
        assert_eq!(Inode::ROOT.to_string(), "1");
        assert_eq!(Inode(12345).to_string(), "12345");
        assert_eq!(
            chunk_name(ChunkId(0xA1B2C), ChunkVersion(1)),
            "00000000000A1B2C_00000001"
        );
        assert_eq!(
            ChunkKey::new(ChunkId(u64::MAX), ChunkVersion(0xdeadbeef)).to_string(),
            "FFFFFFFFFFFFFFFF_DEADBEEF"
        );
        assert_eq!(Goal(2).to_string(), "2");
    }

    #[test]
    fn ordering_and_conversion() {
        assert!(Inode(1) < Inode(2));
        assert_eq!(u64::from(SessionId(7)), 7);
        assert_eq!(ChunkId::from(9).get(), 9);
        assert_eq!(SessionId::NONE, SessionId(0));
    }
}
