//! The chunk file: one file per copy of a chunk.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! 0       magic "RMFSCHNK"
//! 8       format version (u32) = 1
//! 12      chunk id (u64)
//! 20      chunk version (u32)
//! 24      written length (u64): the highest byte ever written (or the
//!         length set by truncate); bytes past it read as zeros
//! 32      CRC32 of bytes 0..32
//! 4096    block table: 1024 slots of (crc: u32, prev: u32), one per 64 KiB
//!         block, covering the whole block (bytes past the end of the file
//!         count as zeros)
//! 16384   data: block i at 16384 + i * 65536 (page-aligned)
//! ```
//!
//! A block never written has `crc = prev = CRC(64 KiB of zeros)`: it reads as
//! zeros and passes the check without a "never written" mark.
//!
//! **Crash rule.** A write first updates the slots of the blocks it touches
//! (`prev := the crc the block had, crc := the new one`) and the length, then
//! writes the data. After a crash each block's data either matches `crc`
//! (the write landed), matches `prev` (it did not: the block is the old one,
//! served as such and the slot repaired), or matches neither (a torn block:
//! reported as a bad block, the copy is dropped). Truncate follows the same
//! order: slots and length first, then the file is shortened. This holds for
//! a process crash at any point; for a power loss it holds for data that a
//! Sync (or `HDD_FSYNC_BEFORE_CLOSE`) made durable.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Bytes in a block, the unit of CRC checking.
pub const BLOCK_SIZE: usize = 64 * 1024;
/// Blocks in a chunk.
pub const BLOCKS: usize = 1024;
/// Largest chunk: 64 MiB.
pub const CHUNK_SIZE: u64 = (BLOCK_SIZE * BLOCKS) as u64;
/// Bytes before the data area.
pub const HEADER_SIZE: u64 = 16 * 1024;
/// Where the block table starts.
const TABLE_OFFSET: u64 = 4096;
/// Bytes of the fixed header fields (with their CRC).
const META_LEN: usize = 36;
const MAGIC: &[u8; 8] = b"RMFSCHNK";
const FORMAT_VERSION: u32 = 1;

/// The CRC of a block of zeros (a hole, or a block never written).
pub fn zero_block_crc() -> u32 {
    static CRC: OnceLock<u32> = OnceLock::new();
    *CRC.get_or_init(|| crc32fast::hash(&vec![0u8; BLOCK_SIZE]))
}

/// The file name of a copy: `chunk_{id:016X}_{version:08X}.mfs`.
pub fn file_name(id: u64, version: u32) -> String {
    format!("chunk_{id:016X}_{version:08X}.mfs")
}

/// The subfolder of a disk a chunk lives in: `{id & 0xFF:02X}`.
pub fn subdir_name(id: u64) -> String {
    format!("{:02X}", id & 0xFF)
}

/// Parses a chunk file name back into (id, version).
pub fn parse_file_name(name: &str) -> Option<(u64, u32)> {
    let rest = name.strip_prefix("chunk_")?.strip_suffix(".mfs")?;
    let (id, ver) = rest.split_once('_')?;
    if id.len() != 16 || ver.len() != 8 {
        return None;
    }
    Some((
        u64::from_str_radix(id, 16).ok()?,
        u32::from_str_radix(ver, 16).ok()?,
    ))
}

/// A problem with a chunk file.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The header is not a chunk header, or does not match the file's name.
    #[error("bad header: {0}")]
    BadHeader(String),
    /// A block's data matches neither its CRC nor the previous one.
    #[error("bad block {block} (CRC mismatch)")]
    BadBlock {
        /// Block index within the chunk.
        block: u32,
    },
    /// The OS failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The fixed header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Chunk id.
    pub id: u64,
    /// Chunk version.
    pub version: u32,
    /// Written length.
    pub length: u64,
}

impl Header {
    fn encode(&self) -> [u8; META_LEN] {
        let mut b = [0u8; META_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..20].copy_from_slice(&self.id.to_le_bytes());
        b[20..24].copy_from_slice(&self.version.to_le_bytes());
        b[24..32].copy_from_slice(&self.length.to_le_bytes());
        let crc = crc32fast::hash(&b[0..32]);
        b[32..36].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Result<Header, FormatError> {
        if b.len() < META_LEN {
            return Err(FormatError::BadHeader("file shorter than a header".into()));
        }
        if &b[0..8] != MAGIC {
            return Err(FormatError::BadHeader(
                "not a chunk file (bad magic)".into(),
            ));
        }
        let le32 = |r: std::ops::Range<usize>| {
            let mut a = [0u8; 4];
            a.copy_from_slice(&b[r]);
            u32::from_le_bytes(a)
        };
        let le64 = |r: std::ops::Range<usize>| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[r]);
            u64::from_le_bytes(a)
        };
        if le32(32..36) != crc32fast::hash(&b[0..32]) {
            return Err(FormatError::BadHeader("header CRC mismatch".into()));
        }
        let fv = le32(8..12);
        if fv != FORMAT_VERSION {
            return Err(FormatError::BadHeader(format!(
                "format version {fv}, this chunkserver reads version {FORMAT_VERSION}"
            )));
        }
        let h = Header {
            id: le64(12..20),
            version: le32(20..24),
            length: le64(24..32),
        };
        if h.length > CHUNK_SIZE {
            return Err(FormatError::BadHeader(format!(
                "length {} is over the chunk size",
                h.length
            )));
        }
        Ok(h)
    }
}

/// Reads only the fixed header of a chunk file (for the start-up scan).
pub fn read_header(path: &Path) -> Result<Header, FormatError> {
    let f = File::open(path)?;
    let mut b = [0u8; META_LEN];
    let n = read_full_at(&f, &mut b, 0)?;
    Header::decode(&b[..n])
}

/// Checks that a header matches the (id, version) of the file's name.
pub fn check_header_matches(h: &Header, id: u64, version: u32) -> Result<(), FormatError> {
    if h.id != id || h.version != version {
        return Err(FormatError::BadHeader(format!(
            "header says chunk {:016X} version {:08X}, the file name says {id:016X} version {version:08X}",
            h.id, h.version
        )));
    }
    Ok(())
}

/// One block's CRCs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    crc: u32,
    prev: u32,
}

/// An open chunk file with its block table in memory.
#[derive(Debug)]
pub struct ChunkFile {
    file: File,
    path: PathBuf,
    header: Header,
    table: Vec<Slot>,
    direct: Direct,
    /// Where the last read ended (to spot sequential readers).
    read_end: std::sync::atomic::AtomicU64,
}

/// Writes of whole pages, 64 KiB or more, may go to disk with `O_DIRECT`: no copy into the
/// page cache (the most expensive part of a buffered write here: 1 GiB
/// buffered + fdatasync ran at 380 MB/s on this project's machine, direct
/// at 1.4-2 GB/s), and a later fsync has little left to do. The header,
/// the block table and partial pages stay buffered; Linux keeps the two
/// views coherent (a direct write flushes and drops cached pages of its
/// range).
#[derive(Debug)]
enum Direct {
    /// Buffered writes only.
    Off,
    /// Allowed; the second descriptor is opened at the first aligned write.
    Untried,
    Open(File),
    /// The file system refused `O_DIRECT` (tmpfs, some network file systems).
    Unsupported,
}

/// Alignment of direct writes (offset, length and buffer).
const DIRECT_ALIGN: usize = 4096;
/// Smaller writes stay buffered: a direct write waits for the device (a
/// 4 KiB one took ~0.12 ms here against ~0.01 ms into the page cache), and
/// small random writes are where the page cache pays.
const DIRECT_MIN: usize = BLOCK_SIZE;
/// Bytes a direct write goes down in: the size of each thread's bounce buffer.
const DIRECT_PIECE: usize = 1 << 20;

thread_local! {
    /// Page-aligned bounce buffer for direct writes (the data arrives in
    /// buffers of any alignment), one per I/O thread, allocated once.
    static BOUNCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Writes `data` (length a multiple of [`DIRECT_ALIGN`]) at `pos` (aligned)
/// through the `O_DIRECT` descriptor `f`.
fn write_direct(f: &File, data: &[u8], pos: u64) -> io::Result<()> {
    BOUNCE.with(|cell| {
        let mut v = cell.borrow_mut();
        if v.len() < DIRECT_PIECE + DIRECT_ALIGN {
            v.resize(DIRECT_PIECE + DIRECT_ALIGN, 0);
        }
        let start = v.as_ptr().align_offset(DIRECT_ALIGN);
        let buf = &mut v[start..start + DIRECT_PIECE];
        let mut done = 0;
        while done < data.len() {
            let n = (data.len() - done).min(DIRECT_PIECE);
            buf[..n].copy_from_slice(&data[done..done + n]);
            f.write_all_at(&buf[..n], pos + done as u64)?;
            done += n;
        }
        Ok(())
    })
}

/// A block range covering `[offset, end)`.
fn blocks_of(offset: u64, end: u64) -> (usize, usize) {
    let bs = BLOCK_SIZE as u64;
    ((offset / bs) as usize, end.div_ceil(bs) as usize)
}

/// Reads as much of `buf` as the file holds from `off` (short at EOF).
/// What a read gives: the data, and the blocks found in their state from
/// before an interrupted write (to repair).
pub type Read = (Vec<u8>, Vec<usize>);

fn read_full_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// [`read_full_at`] from the page cache only (`preadv2` with
/// `RWF_NOWAIT`): `None` when some of the range would have to come from
/// the disk.
fn read_cached_at(f: &File, buf: &mut [u8], off: u64) -> io::Result<Option<usize>> {
    let mut n = 0;
    while n < buf.len() {
        let rest = &mut buf[n..];
        let iov = libc::iovec {
            iov_base: rest.as_mut_ptr().cast(),
            iov_len: rest.len(),
        };
        let Ok(at) = libc::off_t::try_from(off + n as u64) else {
            return Ok(None);
        };
        // SAFETY: one iovec over a live, exclusively borrowed buffer, on a
        // descriptor this file owns.
        let k = unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, at, libc::RWF_NOWAIT) };
        match k {
            0 => break,
            k if k > 0 => n += k as usize,
            _ => {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EINTR) => continue,
                    // Not cached, or no RWF_NOWAIT here: the blocking path.
                    Some(libc::EAGAIN) | Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) => {
                        return Ok(None)
                    }
                    _ => return Err(e),
                }
            }
        }
    }
    Ok(Some(n))
}

impl ChunkFile {
    /// Creates a new, empty chunk file at `path` (which must not exist).
    pub fn create(path: &Path, id: u64, version: u32) -> io::Result<ChunkFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Self::init(file, path, id, version)
    }

    /// Makes the empty file `spare` (see `crate::spare`) a new, empty chunk
    /// file at `path` (which must not exist): its header is written, then
    /// it is renamed into place. On an error `spare` is still a spare.
    pub fn create_from_spare(
        spare: &Path,
        path: &Path,
        id: u64,
        version: u32,
    ) -> io::Result<ChunkFile> {
        let file = OpenOptions::new().read(true).write(true).open(spare)?;
        let f = Self::init(file, spare, id, version)?;
        crate::spare::rename_noreplace(spare, path)?;
        Ok(ChunkFile {
            path: path.to_owned(),
            ..f
        })
    }

    /// Writes the header of an empty chunk (id, version) into `file`.
    fn init(file: File, path: &Path, id: u64, version: u32) -> io::Result<ChunkFile> {
        let header = Header {
            id,
            version,
            length: 0,
        };
        let z = zero_block_crc();
        let table = vec![Slot { crc: z, prev: z }; BLOCKS];
        let mut head = vec![0u8; HEADER_SIZE as usize];
        head[..META_LEN].copy_from_slice(&header.encode());
        head[TABLE_OFFSET as usize..TABLE_OFFSET as usize + BLOCKS * 8]
            .copy_from_slice(&encode_slots(&table));
        file.write_all_at(&head, 0)?;
        Ok(ChunkFile {
            file,
            path: path.to_owned(),
            header,
            table,
            direct: Direct::Off,
            read_end: std::sync::atomic::AtomicU64::new(u64::MAX),
        })
    }

    /// Opens an existing chunk file and checks its header against the
    /// (id, version) it is expected to hold.
    pub fn open(path: &Path, id: u64, version: u32) -> Result<ChunkFile, FormatError> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let mut head = vec![0u8; HEADER_SIZE as usize];
        let n = read_full_at(&file, &mut head, 0)?;
        if n < TABLE_OFFSET as usize + BLOCKS * 8 {
            return Err(FormatError::BadHeader(format!(
                "file is {n} bytes, shorter than a chunk header"
            )));
        }
        let header = Header::decode(&head)?;
        check_header_matches(&header, id, version)?;
        let t = &head[TABLE_OFFSET as usize..TABLE_OFFSET as usize + BLOCKS * 8];
        let table = t
            .chunks_exact(8)
            .map(|s| Slot {
                crc: u32::from_le_bytes([s[0], s[1], s[2], s[3]]),
                prev: u32::from_le_bytes([s[4], s[5], s[6], s[7]]),
            })
            .collect();
        Ok(ChunkFile {
            file,
            path: path.to_owned(),
            header,
            table,
            direct: Direct::Off,
            read_end: std::sync::atomic::AtomicU64::new(u64::MAX),
        })
    }

    /// Lets whole pages of data go to disk with `O_DIRECT` (see [`Direct`]).
    pub fn allow_direct(&mut self) {
        if matches!(self.direct, Direct::Off) {
            self.direct = Direct::Untried;
        }
    }

    /// Writes data bytes at `pos` in the file: directly when allowed and
    /// aligned, else through the page cache.
    fn write_data(&mut self, data: &[u8], pos: u64) -> io::Result<()> {
        let aligned = data.len() >= DIRECT_MIN
            && pos.is_multiple_of(DIRECT_ALIGN as u64)
            && data.len().is_multiple_of(DIRECT_ALIGN);
        if aligned && matches!(self.direct, Direct::Untried) {
            self.direct = match OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(&self.path)
            {
                Ok(f) => Direct::Open(f),
                Err(e) => {
                    tracing::debug!(
                        "O_DIRECT refused for {} ({e}); writing through the page cache",
                        self.path.display()
                    );
                    Direct::Unsupported
                }
            };
        }
        if let (true, Direct::Open(f)) = (aligned, &self.direct) {
            match write_direct(f, data, pos) {
                Ok(()) => return Ok(()),
                // An alignment the device does not take: buffered from now on.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::debug!(
                        "O_DIRECT write refused for {} ({e}); writing through the page cache",
                        self.path.display()
                    );
                    self.direct = Direct::Unsupported;
                }
                Err(e) => return Err(e),
            }
        }
        self.file.write_all_at(data, pos)
    }

    /// The header as it is now.
    pub fn header(&self) -> Header {
        self.header
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Written length.
    pub fn length(&self) -> u64 {
        self.header.length
    }

    /// Reads `[offset, offset + size)` (the caller checked the range),
    /// checking the CRC of every block it touches below the written length.
    /// Returns the data and the blocks found in their previous state (an
    /// interrupted write): pass them to [`ChunkFile::repair`].
    pub fn read(&self, offset: u64, size: usize) -> Result<Read, FormatError> {
        match self.read_with(offset, size, false)? {
            Some(r) => Ok(r),
            None => Err(FormatError::Io(io::Error::other("a blocking read gave up"))),
        }
    }

    /// [`ChunkFile::read`] when every block is in the page cache; `None`
    /// when the disk would have to be read (never blocks on it).
    pub fn read_cached(&self, offset: u64, size: usize) -> Result<Option<Read>, FormatError> {
        self.read_with(offset, size, true)
    }

    fn read_with(
        &self,
        offset: u64,
        size: usize,
        cached_only: bool,
    ) -> Result<Option<Read>, FormatError> {
        let end = offset + size as u64;
        let data_end = end.min(self.header.length);
        if offset >= data_end {
            return Ok(Some((vec![0u8; size], Vec::new())));
        }
        let (b0, b1) = blocks_of(offset, data_end);
        let mut buf = vec![0u8; (b1 - b0) * BLOCK_SIZE];
        let at = HEADER_SIZE + (b0 * BLOCK_SIZE) as u64;
        if cached_only {
            if read_cached_at(&self.file, &mut buf, at)?.is_none() {
                return Ok(None);
            }
            self.prefetch_after(offset, data_end);
        } else {
            self.prefetch_after(offset, data_end);
            read_full_at(&self.file, &mut buf, at)?;
        }
        let mut repairs = Vec::new();
        for (i, block) in buf.chunks_exact(BLOCK_SIZE).enumerate() {
            let b = b0 + i;
            let slot = self.table[b];
            let crc = crc32fast::hash(block);
            if crc == slot.crc {
                continue;
            }
            if crc == slot.prev {
                repairs.push(b);
                continue;
            }
            return Err(FormatError::BadBlock { block: b as u32 });
        }
        let start = (offset - (b0 * BLOCK_SIZE) as u64) as usize;
        let valid = (data_end - offset) as usize;
        if start > 0 {
            buf.copy_within(start..start + valid, 0);
        }
        buf.truncate(valid);
        // Past the written length: zeros (the block buffer already holds
        // zeros there, but the tail may extend past the last block read).
        buf.resize(size, 0);
        Ok(Some((buf, repairs)))
    }

    /// A sequential reader (this read starts at 0 or where the last one
    /// ended) gets the next piece of the same size read ahead by the kernel
    /// while this one is checked and sent: the disk stays busy between
    /// requests. Only a hint; failures are ignored.
    fn prefetch_after(&self, offset: u64, end: u64) {
        let last = self
            .read_end
            .swap(end, std::sync::atomic::Ordering::Relaxed);
        if offset != 0 && offset != last {
            return;
        }
        let next_end = (end + (end - offset)).min(self.header.length);
        if next_end <= end {
            return;
        }
        let (from, len) = (HEADER_SIZE + end, next_end - end);
        if let (Ok(from), Ok(len)) = (libc::off_t::try_from(from), libc::off_t::try_from(len)) {
            // SAFETY: a plain syscall on a descriptor this struct owns.
            unsafe {
                libc::posix_fadvise(self.file.as_raw_fd(), from, len, libc::POSIX_FADV_WILLNEED);
            }
        }
    }

    /// Checks every block below the written length (the scrub); returns the
    /// blocks found in their previous state, to repair.
    pub fn verify(&self) -> Result<Vec<usize>, FormatError> {
        let (_, b1) = blocks_of(0, self.header.length);
        let mut repairs = Vec::new();
        let mut buf = vec![0u8; BLOCK_SIZE * 16];
        let mut b = 0;
        while b < b1 {
            let n = (b1 - b).min(16);
            let part = &mut buf[..n * BLOCK_SIZE];
            part.fill(0);
            read_full_at(&self.file, part, HEADER_SIZE + (b * BLOCK_SIZE) as u64)?;
            for (i, block) in part.chunks_exact(BLOCK_SIZE).enumerate() {
                let slot = self.table[b + i];
                let crc = crc32fast::hash(block);
                if crc == slot.crc {
                    continue;
                }
                if crc == slot.prev {
                    repairs.push(b + i);
                    continue;
                }
                return Err(FormatError::BadBlock {
                    block: (b + i) as u32,
                });
            }
            b += n;
        }
        Ok(repairs)
    }

    /// Makes the slots of blocks found in their previous state say so
    /// (`crc := prev`), after a read found them.
    pub fn repair(&mut self, blocks: &[usize]) -> io::Result<()> {
        for &b in blocks {
            let s = &mut self.table[b];
            if s.crc != s.prev {
                s.crc = s.prev;
                self.write_slots(b, b + 1)?;
            }
        }
        Ok(())
    }

    /// Reads one whole block and checks it; returns its data and the CRC it
    /// matched (the current or the previous one).
    fn read_block_checked(&self, b: usize) -> Result<(Vec<u8>, u32), FormatError> {
        let mut buf = vec![0u8; BLOCK_SIZE];
        if ((b * BLOCK_SIZE) as u64) < self.header.length {
            read_full_at(&self.file, &mut buf, HEADER_SIZE + (b * BLOCK_SIZE) as u64)?;
        }
        let crc = crc32fast::hash(&buf);
        let slot = self.table[b];
        if crc == slot.crc || crc == slot.prev {
            Ok((buf, crc))
        } else {
            Err(FormatError::BadBlock { block: b as u32 })
        }
    }

    /// Works out the new slots of a write of `data` at `offset` (checking
    /// the old content of partially written blocks) without changing
    /// anything. Step one of [`ChunkFile::write`].
    fn plan_write(&self, offset: u64, data: &[u8]) -> Result<Vec<Slot>, FormatError> {
        let end = offset + data.len() as u64;
        let (b0, b1) = blocks_of(offset, end);
        let mut slots = Vec::with_capacity(b1 - b0);
        for b in b0..b1 {
            let bs = (b * BLOCK_SIZE) as u64;
            let be = bs + BLOCK_SIZE as u64;
            let (ws, we) = (offset.max(bs), end.min(be));
            let slot = self.table[b];
            let src = &data[(ws - offset) as usize..(we - offset) as usize];
            if ws == bs && we == be {
                slots.push(Slot {
                    crc: crc32fast::hash(src),
                    prev: slot.crc,
                });
            } else {
                let (mut block, old) = self.read_block_checked(b)?;
                block[(ws - bs) as usize..(we - bs) as usize].copy_from_slice(src);
                slots.push(Slot {
                    crc: crc32fast::hash(&block),
                    prev: old,
                });
            }
        }
        Ok(slots)
    }

    /// Step two of a write: the new slots and length go to the file (and
    /// memory) before the data.
    fn commit_table(&mut self, offset: u64, len: usize, slots: &[Slot]) -> io::Result<()> {
        let end = offset + len as u64;
        let (b0, b1) = blocks_of(offset, end);
        self.table[b0..b1].copy_from_slice(slots);
        self.write_slots(b0, b1)?;
        if end > self.header.length {
            self.header.length = end;
            self.write_meta()?;
        }
        Ok(())
    }

    /// Whether writes of `(offset, len)`, one after the other, read nothing
    /// of the file: every block each fills only partly starts at or past
    /// the written length the ones before it leave (its old content is
    /// zeros, not read).
    pub fn ranges_without_reading(&self, ranges: impl IntoIterator<Item = (u64, u64)>) -> bool {
        let mut length = self.header.length;
        for (offset, len) in ranges {
            if !Self::no_reads_at(length, offset, len) {
                return false;
            }
            length = length.max(offset + len);
        }
        true
    }

    fn no_reads_at(length: u64, offset: u64, len: u64) -> bool {
        let end = offset + len;
        let (b0, b1) = blocks_of(offset, end);
        let reads = |b: usize| {
            let bs = (b * BLOCK_SIZE) as u64;
            let whole = offset <= bs && end >= bs + BLOCK_SIZE as u64;
            !whole && bs < length
        };
        b0 >= b1 || !(reads(b0) || reads(b1 - 1))
    }

    /// Writes `data` at `offset` (the caller checked the range): partial
    /// blocks are read (and checked), merged and re-summed. Returns the
    /// written length after the write.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<u64, FormatError> {
        if data.is_empty() {
            return Ok(self.header.length);
        }
        let slots = self.plan_write(offset, data)?;
        let length = self.header.length;
        self.commit_table(offset, data.len(), &slots)?;
        if let Err(e) = self.write_data(data, HEADER_SIZE + offset) {
            // Part of the data may be on the disk (one that filled up
            // midway): its blocks would match neither sum, and the copy
            // would be condemned whole at its next read or scrub.
            if let Err(e2) = self.settle_failed_write(offset, data.len(), length) {
                tracing::warn!(
                    "{}: cannot re-sum the blocks of a failed write: {e2}",
                    self.path.display()
                );
            }
            return Err(e.into());
        }
        Ok(self.header.length)
    }

    /// After a failed data write at `offset`: the blocks it touched are
    /// summed as they are on the disk now (the sum before the write kept
    /// as the previous one) and the written length goes back to `length`,
    /// so the copy stays readable; what the write left in its range is
    /// undefined, as a failed write(2) leaves it.
    fn settle_failed_write(&mut self, offset: u64, len: usize, length: u64) -> io::Result<()> {
        let (b0, b1) = blocks_of(offset, offset + len as u64);
        let mut block = vec![0u8; BLOCK_SIZE];
        for b in b0..b1 {
            block.fill(0);
            read_full_at(
                &self.file,
                &mut block,
                HEADER_SIZE + (b * BLOCK_SIZE) as u64,
            )?;
            self.table[b].crc = crc32fast::hash(&block);
        }
        self.write_slots(b0, b1)?;
        if self.header.length != length {
            self.header.length = length;
            self.write_meta()?;
        }
        Ok(())
    }

    /// Sets the written length: a shorter one zeroes the tail (the file is
    /// shortened), a longer one only extends the zeros read past the data.
    pub fn truncate(&mut self, length: u64) -> Result<(), FormatError> {
        let old = self.header.length;
        if length >= old {
            self.header.length = length;
            return Ok(self.write_meta()?);
        }
        let z = zero_block_crc();
        let (_, old_end) = blocks_of(0, old);
        let first = (length / BLOCK_SIZE as u64) as usize;
        let cut = (length % BLOCK_SIZE as u64) as usize;
        let mut slots = Vec::with_capacity(old_end - first);
        for b in first..old_end {
            if b == first && cut != 0 {
                let (mut block, old_crc) = self.read_block_checked(b)?;
                block[cut..].fill(0);
                slots.push(Slot {
                    crc: crc32fast::hash(&block),
                    prev: old_crc,
                });
            } else {
                slots.push(Slot {
                    crc: z,
                    prev: self.table[b].crc,
                });
            }
        }
        self.table[first..old_end].copy_from_slice(&slots);
        self.write_slots(first, old_end)?;
        self.header.length = length;
        self.write_meta()?;
        self.file.set_len(HEADER_SIZE + length)?;
        Ok(())
    }

    /// Changes the version: header first, then the rename to `new_path`.
    pub fn set_version(&mut self, version: u32, new_path: &Path) -> io::Result<()> {
        let old = self.header.version;
        self.header.version = version;
        if let Err(e) = self.write_meta() {
            self.header.version = old;
            return Err(e);
        }
        if let Err(e) = std::fs::rename(&self.path, new_path) {
            self.header.version = old;
            let _ = self.write_meta();
            return Err(e);
        }
        self.path = new_path.to_owned();
        Ok(())
    }

    /// Rewrites the header as another chunk (id, version): used on a fresh
    /// copy made by Duplicate, before it is renamed in.
    pub fn relabel(&mut self, id: u64, version: u32) -> io::Result<()> {
        self.header.id = id;
        self.header.version = version;
        self.write_meta()
    }

    /// Makes the data and header durable.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Moves the file (used to rename a finished temp file in).
    pub fn rename(&mut self, to: &Path) -> io::Result<()> {
        std::fs::rename(&self.path, to)?;
        self.path = to.to_owned();
        Ok(())
    }

    fn write_meta(&self) -> io::Result<()> {
        self.file.write_all_at(&self.header.encode(), 0)
    }

    fn write_slots(&self, b0: usize, b1: usize) -> io::Result<()> {
        self.file.write_all_at(
            &encode_slots(&self.table[b0..b1]),
            TABLE_OFFSET + (b0 * 8) as u64,
        )
    }
}

fn encode_slots(slots: &[Slot]) -> Vec<u8> {
    let mut out = Vec::with_capacity(slots.len() * 8);
    for s in slots {
        out.extend_from_slice(&s.crc.to_le_bytes());
        out.extend_from_slice(&s.prev.to_le_bytes());
    }
    out
}

#[cfg(test)]
#[path = "format_tests.rs"]
mod tests;
