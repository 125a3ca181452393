//! How a byte range of a file maps onto chunks and onto the pieces sent to
//! chunkservers.
//!
//! A file is a row of chunks of [`CHUNK_SIZE`] bytes: chunk `i` holds bytes
//! `[i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE)`. A request is cut at chunk edges
//! and at multiples of the piece size (counted from the start of the file,
//! so pieces of sequential requests line up with the chunkserver's 64 KiB
//! blocks whenever the piece size is a multiple of 64 KiB).

use crate::error::ClientError;

/// Bytes in a chunk (64 MiB, as in MooseFS).
pub const CHUNK_SIZE: u64 = 64 << 20;

/// Largest file offset + 1 this client handles: chunk indexes are `u32`.
pub const MAX_FILE_SIZE: u64 = CHUNK_SIZE * (u32::MAX as u64 + 1);

/// One piece of a request: a range inside one chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Chunk number in the file.
    pub(crate) index: u32,
    /// Offset inside the chunk.
    pub(crate) chunk_offset: u32,
    /// Length in bytes (> 0).
    pub(crate) len: u32,
    /// Where the piece starts in the request's buffer.
    pub(crate) buf_offset: usize,
}

impl Piece {
    /// The piece's offset in the file.
    pub(crate) fn file_offset(&self) -> u64 {
        u64::from(self.index) * CHUNK_SIZE + u64::from(self.chunk_offset)
    }

    /// The piece's range in the request's buffer.
    pub(crate) fn buf_range(&self) -> std::ops::Range<usize> {
        self.buf_offset..self.buf_offset + self.len as usize
    }
}

/// Cuts `[offset, offset + len)` into pieces no larger than `max_piece`
/// (clamped to `[4 KiB, CHUNK_SIZE]`), never crossing a chunk edge or a
/// multiple of `max_piece`. An empty range gives no pieces; a range past the
/// largest file is EFBIG.
pub(crate) fn split(offset: u64, len: u64, max_piece: u32) -> Result<Vec<Piece>, ClientError> {
    let end = offset.checked_add(len).filter(|&e| e <= MAX_FILE_SIZE);
    let Some(end) = end else {
        return Err(ClientError::Errno(
            crate::error::errno::EFBIG,
            format!(
                "range at offset {offset} of {len} bytes goes past the largest file size ({MAX_FILE_SIZE} bytes)"
            ),
        ));
    };
    let step = u64::from(max_piece).clamp(4096, CHUNK_SIZE);
    let mut pieces = Vec::with_capacity(len.div_ceil(step) as usize + 1);
    let mut at = offset;
    while at < end {
        let chunk_end = (at / CHUNK_SIZE + 1) * CHUNK_SIZE;
        let step_end = (at / step + 1) * step;
        let piece_end = end.min(chunk_end).min(step_end);
        // Every value fits: index < 2^32 since end <= MAX_FILE_SIZE, the
        // in-chunk offset and the length are below CHUNK_SIZE.
        pieces.push(Piece {
            index: (at / CHUNK_SIZE) as u32,
            chunk_offset: (at % CHUNK_SIZE) as u32,
            len: (piece_end - at) as u32,
            buf_offset: (at - offset) as usize,
        });
        at = piece_end;
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// The pieces tile the range exactly, in order, each inside one chunk
    /// and one piece-sized window.
    fn check_tiling(offset: u64, len: u64, max: u32) -> Vec<Piece> {
        let ps = split(offset, len, max).unwrap_or_default();
        let max = max.clamp(4096, CHUNK_SIZE as u32);
        let mut at = offset;
        let mut buf = 0usize;
        for p in &ps {
            assert!(p.len > 0);
            assert_eq!(p.file_offset(), at, "{ps:?}");
            assert_eq!(p.buf_offset, buf);
            assert!(u64::from(p.chunk_offset) + u64::from(p.len) <= CHUNK_SIZE);
            assert!(p.len <= max);
            let first = p.file_offset() / u64::from(max);
            let last = (p.file_offset() + u64::from(p.len) - 1) / u64::from(max);
            assert_eq!(first, last, "piece crosses a window: {p:?}");
            at += u64::from(p.len);
            buf += p.len as usize;
        }
        assert_eq!(at, offset + len);
        ps
    }

    #[test]
    fn aligned_request_is_one_piece() {
        let ps = check_tiling(8 * MIB, 4 * MIB, 4 << 20);
        assert_eq!(ps.len(), 1);
        assert_eq!((ps[0].index, ps[0].chunk_offset), (0, 8 << 20));
    }

    #[test]
    fn unaligned_request_splits_at_window_edges() {
        // 1 MiB + 5 bytes into the file, 9 MiB long: windows of 4 MiB.
        let ps = check_tiling(MIB + 5, 9 * MIB, 4 << 20);
        let lens: Vec<u64> = ps.iter().map(|p| u64::from(p.len)).collect();
        assert_eq!(lens, vec![3 * MIB - 5, 4 * MIB, 2 * MIB + 5]);
    }

    #[test]
    fn request_across_a_chunk_edge() {
        let start = CHUNK_SIZE - 3000;
        let ps = check_tiling(start, 10_000, 4 << 20);
        assert_eq!(ps.len(), 2);
        assert_eq!(
            (ps[0].index, ps[0].chunk_offset, ps[0].len),
            (0, (CHUNK_SIZE - 3000) as u32, 3000)
        );
        assert_eq!((ps[1].index, ps[1].chunk_offset, ps[1].len), (1, 0, 7000));
        assert_eq!(ps[1].buf_range(), 3000..10_000);
    }

    #[test]
    fn piece_size_that_does_not_divide_the_chunk() {
        // 3 MiB windows: the chunk edge cuts too.
        let ps = check_tiling(60 * MIB, 10 * MIB, 3 << 20);
        assert!(ps.iter().any(|p| p.index == 1 && p.chunk_offset == 0));
        // Tiny or huge piece sizes are clamped.
        check_tiling(0, 100_000, 1);
        let ps = check_tiling(0, 2 * CHUNK_SIZE, u32::MAX);
        assert_eq!(ps.len(), 2);
    }

    #[test]
    fn empty_and_too_far() {
        assert_eq!(split(123, 0, 4 << 20).map(|p| p.len()).ok(), Some(0));
        let e = split(MAX_FILE_SIZE - 10, 11, 4 << 20);
        assert!(matches!(e, Err(ClientError::Errno(27, _))));
        assert!(split(u64::MAX, 2, 4 << 20).is_err());
        let ps = check_tiling(MAX_FILE_SIZE - 10, 10, 4 << 20);
        assert_eq!(ps[0].index, u32::MAX);
    }
}
