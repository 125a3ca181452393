//! fallocate(2): the default mode (the file grows to cover the range; the
//! range reads as zeros — space is not reserved ahead), KEEP_SIZE alone (no
//! change), PUNCH_HOLE and ZERO_RANGE (the range reads as zeros: whole
//! chunks become holes at the master, the parts of chunks at the edges are
//! written with zeros). Other modes: EOPNOTSUPP.

use fuser::{Errno, INodeNo, ReplyEmpty};
use mfs_proto::v1::{Credentials, PunchChunksRequest, SetAttrRequest};

use super::convert::errno;
use super::fs::Shared;
use crate::error::ClientError;

/// Size of a chunk (a file's byte `o` is in chunk `o / CHUNK`).
const CHUNK: u64 = 64 << 20;
/// Zeros written per request at the edges of a punched range.
const ZERO_PIECE: usize = 4 << 20;

/// Chunks `first..first + count` of a file.
type ChunkRun = (u32, u32);
/// Bytes `start..end` of a file.
type ByteRange = (u64, u64);

/// The chunks wholly inside `[start, end)`, and the parts of chunks left
/// at its edges.
fn split_range(start: u64, end: u64) -> (Option<ChunkRun>, Vec<ByteRange>) {
    if start >= end {
        return (None, Vec::new());
    }
    let first_whole = start.div_ceil(CHUNK);
    let end_whole = end / CHUNK;
    if first_whole >= end_whole {
        return (None, vec![(start, end)]);
    }
    let mut edges = Vec::new();
    if start < first_whole * CHUNK {
        edges.push((start, first_whole * CHUNK));
    }
    if end_whole * CHUNK < end {
        edges.push((end_whole * CHUNK, end));
    }
    let whole = (
        u32::try_from(first_whole).unwrap_or(u32::MAX),
        u32::try_from(end_whole - first_whole).unwrap_or(u32::MAX),
    );
    (Some(whole), edges)
}

impl Shared {
    pub(crate) async fn fallocate(
        &self,
        cred: Credentials,
        ino: INodeNo,
        (offset, length): (u64, u64),
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if self.settings.read_only {
            return reply.error(Errno::EROFS);
        }
        let inode = self.map.to_master(ino);
        let Some(end) = offset.checked_add(length).filter(|&e| e <= i64::MAX as u64) else {
            return reply.error(Errno::EFBIG);
        };
        if length == 0 {
            return reply.error(Errno::EINVAL);
        }
        self.wb.changed(&self.master, inode);
        let keep = mode & libc::FALLOC_FL_KEEP_SIZE != 0;
        let r = match mode & !libc::FALLOC_FL_KEEP_SIZE {
            0 if keep => Ok(()),
            0 => self.grow_to(&cred, inode, end).await,
            libc::FALLOC_FL_PUNCH_HOLE if keep => self.zero_range(&cred, inode, offset, end).await,
            libc::FALLOC_FL_ZERO_RANGE => match self.zero_range(&cred, inode, offset, end).await {
                Ok(()) if !keep => self.grow_to(&cred, inode, end).await,
                r => r,
            },
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    /// The file's length after committing what this mount wrote.
    async fn committed_size(&self, inode: u64) -> Result<u64, ClientError> {
        self.io.flush(inode).await?;
        Ok(self.master.getattr(inode).await?.size)
    }

    /// The file grows to `end` bytes (a SetAttr) unless it is as long.
    async fn grow_to(&self, cred: &Credentials, inode: u64, end: u64) -> Result<(), ClientError> {
        if self.committed_size(inode).await? >= end {
            return Ok(());
        }
        let req = SetAttrRequest {
            id: None,
            cred: Some(cred.clone()),
            inode,
            mode: None,
            uid: None,
            gid: None,
            size: Some(end),
            atime: None,
            mtime: None,
            atime_now: false,
            mtime_now: false,
        };
        let r = self.master.setattr(req).await.map(drop);
        self.io.invalidate(inode);
        r
    }

    /// `[start, end)` (cut at the file's length) reads as zeros.
    async fn zero_range(
        &self,
        cred: &Credentials,
        inode: u64,
        start: u64,
        end: u64,
    ) -> Result<(), ClientError> {
        let end = end.min(self.committed_size(inode).await?);
        let (whole, edges) = split_range(start, end);
        let zeros = vec![0u8; ZERO_PIECE];
        for (a, b) in edges {
            let mut pos = a;
            while pos < b {
                let n = usize::try_from(b - pos).map_or(zeros.len(), |n| n.min(zeros.len()));
                self.io.write(inode, pos, &zeros[..n]).await?;
                pos += n as u64;
            }
        }
        self.io.flush(inode).await?;
        if let Some((first, count)) = whole {
            let req = PunchChunksRequest {
                id: None,
                cred: Some(cred.clone()),
                inode,
                first,
                count,
            };
            let r = self.master.punch_chunks(req).await.map(drop);
            self.io.invalidate(inode);
            r?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_into_whole_chunks_and_edges() {
        assert_eq!(split_range(10, 10), (None, vec![]));
        assert_eq!(split_range(10, 100), (None, vec![(10, 100)]));
        assert_eq!(split_range(0, CHUNK), (Some((0, 1)), vec![]));
        assert_eq!(
            split_range(CHUNK - 5, 3 * CHUNK + 7),
            (
                Some((1, 2)),
                vec![(CHUNK - 5, CHUNK), (3 * CHUNK, 3 * CHUNK + 7)]
            )
        );
        assert_eq!(
            split_range(5, 2 * CHUNK - 5),
            (None, vec![(5, 2 * CHUNK - 5)])
        );
    }
}
