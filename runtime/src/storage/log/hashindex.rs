//! Hash index files of a sealed segment: `<base>.ids` (the hash of every record's id) and
//! `<base>.keys` (the hash of every keyed record's key), each a sorted array of
//! (hash, relative offset, position) entries behind a checksummed header. They let publish dedup
//! and per-key reads find a record in a sealed segment with a binary search of `pread`s instead
//! of a scan, without holding the segment's ids or keys in memory. `docs/storage-format.md`
//! describes the layout byte by byte.
//!
//! [`decode`] is safe on untrusted bytes: it checks lengths before reading, the checksum before
//! trusting anything, and never allocates more than the input holds.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::io::{Io, SegmentFile};

/// Bytes of the header.
pub const HEADER_LEN: usize = 40;
/// Bytes of one entry.
pub const ENTRY_LEN: usize = 16;

/// Which hash index a file is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `<base>.ids`: every record, by the hash of its id.
    Ids,
    /// `<base>.keys`: every record with a key, by the hash of its key.
    Keys,
}

impl Kind {
    fn magic(self) -> &'static [u8; 8] {
        match self {
            Kind::Ids => b"WEIRIDS1",
            Kind::Keys => b"WEIRKEY1",
        }
    }

    /// The file extension.
    pub fn ext(self) -> &'static str {
        match self {
            Kind::Ids => "ids",
            Kind::Keys => "keys",
        }
    }
}

/// One entry: a record of the segment whose id or key has `hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HashEntry {
    /// The hash of the id or key.
    pub hash: u64,
    /// The record's offset minus the segment's base.
    pub relative_offset: u32,
    /// Byte position of the record's frame in the segment.
    pub position: u32,
}

/// The header of a hash index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The segment's first offset.
    pub base: u64,
    /// The offset after the segment's last record.
    pub end: u64,
    /// The segment file's length in bytes.
    pub segment_len: u64,
    /// Number of entries.
    pub count: u32,
}

/// Why bytes are not a valid hash index file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// Fewer bytes than the header or its entries need.
    #[error("truncated hash index: expected {expected} bytes, found {found}")]
    Truncated {
        /// Bytes needed.
        expected: usize,
        /// Bytes there are.
        found: usize,
    },
    /// The file does not start with the magic of its kind.
    #[error("bad hash index magic: expected {expected:?}, found {found:?}")]
    Magic {
        /// The magic of the kind asked for.
        expected: &'static str,
        /// The first bytes found (lossy UTF-8).
        found: String,
    },
    /// The checksum does not match the bytes.
    #[error("hash index checksum mismatch: expected crc32c {expected:#010x}, found {found:#010x}")]
    Checksum {
        /// The stored checksum.
        expected: u32,
        /// The checksum of the bytes.
        found: u32,
    },
    /// The checksum matches but an entry is inconsistent (a bug, or forged bytes).
    #[error("malformed hash index entry {entry}: {reason}")]
    Malformed {
        /// Which entry.
        entry: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// A valid file that describes another segment than the one it sits next to.
    #[error("hash index describes {field} {found}, expected {expected}")]
    Mismatch {
        /// `base` or `segment length`.
        field: &'static str,
        /// What the segment has.
        expected: u64,
        /// What the file says.
        found: u64,
    },
}

/// Encodes a hash index file; `entries` must be sorted.
pub fn encode(kind: Kind, header: &Header, entries: &[HashEntry]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN);
    buf.extend_from_slice(kind.magic());
    for v in [header.base, header.end, header.segment_len] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    for e in entries {
        put_entry(&mut buf, e);
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[..36]), &buf[HEADER_LEN..]);
    buf[36..40].copy_from_slice(&crc.to_le_bytes());
    buf
}

fn put_entry(buf: &mut Vec<u8>, e: &HashEntry) {
    buf.extend_from_slice(&e.hash.to_le_bytes());
    buf.extend_from_slice(&e.relative_offset.to_le_bytes());
    buf.extend_from_slice(&e.position.to_le_bytes());
}

fn entry_at(b: &[u8]) -> HashEntry {
    let mut h = [0; 8];
    h.copy_from_slice(&b[..8]);
    HashEntry {
        hash: u64::from_le_bytes(h),
        relative_offset: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        position: u32::from_le_bytes([b[12], b[13], b[14], b[15]]),
    }
}

/// Decodes and checks the header alone (magic, and that `file_len` holds its entries).
pub fn decode_header(kind: Kind, bytes: &[u8], file_len: u64) -> Result<Header, IndexError> {
    let b = bytes.get(..HEADER_LEN).ok_or(IndexError::Truncated {
        expected: HEADER_LEN,
        found: bytes.len(),
    })?;
    if &b[..8] != kind.magic() {
        return Err(IndexError::Magic {
            expected: std::str::from_utf8(kind.magic()).unwrap_or_default(),
            found: String::from_utf8_lossy(&b[..8]).into_owned(),
        });
    }
    let u64_at = |at: usize| {
        let mut a = [0; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    };
    let header = Header {
        base: u64_at(8),
        end: u64_at(16),
        segment_len: u64_at(24),
        count: u32::from_le_bytes([b[32], b[33], b[34], b[35]]),
    };
    let expected = HEADER_LEN as u64 + u64::from(header.count) * ENTRY_LEN as u64;
    if file_len != expected {
        return Err(IndexError::Truncated {
            expected: usize::try_from(expected).unwrap_or(usize::MAX),
            found: usize::try_from(file_len).unwrap_or(usize::MAX),
        });
    }
    Ok(header)
}

/// Decodes and checks a whole file: header, length, checksum, entry order, and that every entry
/// lies inside the segment the header describes.
pub fn decode(kind: Kind, bytes: &[u8]) -> Result<(Header, Vec<HashEntry>), IndexError> {
    let header = decode_header(kind, bytes, bytes.len() as u64)?;
    let expected = u32::from_le_bytes([bytes[36], bytes[37], bytes[38], bytes[39]]);
    let found = crc32c::crc32c_append(crc32c::crc32c(&bytes[..36]), &bytes[HEADER_LEN..]);
    if expected != found {
        return Err(IndexError::Checksum { expected, found });
    }
    let records = header
        .end
        .checked_sub(header.base)
        .ok_or(IndexError::Malformed {
            entry: 0,
            reason: "the header's end is before its base",
        })?;
    let mut entries = Vec::with_capacity(header.count as usize);
    let mut prev: Option<HashEntry> = None;
    for (i, chunk) in bytes[HEADER_LEN..].chunks_exact(ENTRY_LEN).enumerate() {
        let e = entry_at(chunk);
        let malformed = |reason| IndexError::Malformed { entry: i, reason };
        if prev.is_some_and(|p| p >= e) {
            return Err(malformed("entries are not sorted by hash and offset"));
        }
        if u64::from(e.relative_offset) >= records {
            return Err(malformed("relative offset beyond the segment's end"));
        }
        if u64::from(e.position) >= header.segment_len {
            return Err(malformed("position beyond the segment's length"));
        }
        prev = Some(e);
        entries.push(e);
    }
    Ok((header, entries))
}

/// A verified hash index file, searched with `pread`.
#[derive(Debug, Clone)]
pub struct HashFile {
    path: PathBuf,
    file: Arc<dyn SegmentFile>,
    count: usize,
}

impl HashFile {
    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes of the file.
    pub fn bytes(&self) -> u64 {
        (HEADER_LEN + self.count * ENTRY_LEN) as u64
    }

    fn get(&self, i: usize) -> io::Result<HashEntry> {
        let mut b = [0; ENTRY_LEN];
        self.file
            .read_exact_at(&mut b, (HEADER_LEN + i * ENTRY_LEN) as u64)?;
        Ok(entry_at(&b))
    }

    /// Every entry with `hash`, in offset order: a binary search for the first, then a forward
    /// read of the run.
    pub fn lookup(&self, hash: u64) -> io::Result<Vec<HashEntry>> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.get(mid)?.hash < hash {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let mut out = Vec::new();
        let mut buf = vec![0; 64 * ENTRY_LEN];
        while lo < self.count {
            let n = (self.count - lo).min(64);
            let chunk = &mut buf[..n * ENTRY_LEN];
            self.file
                .read_exact_at(chunk, (HEADER_LEN + lo * ENTRY_LEN) as u64)?;
            for b in chunk.chunks_exact(ENTRY_LEN) {
                let e = entry_at(b);
                if e.hash != hash {
                    return Ok(out);
                }
                out.push(e);
            }
            lo += n;
        }
        Ok(out)
    }
}

/// Writes a hash index file atomically (temporary file, fsync, rename); `entries` in any order.
pub fn write(
    io: &dyn Io,
    path: &Path,
    kind: Kind,
    header: &Header,
    mut entries: Vec<HashEntry>,
) -> io::Result<HashFile> {
    entries.sort_unstable();
    let buf = encode(kind, header, &entries);
    let tmp = tmp_path(path);
    let file = io.open(&tmp, true)?;
    file.truncate(0)?;
    file.write_at(&buf, 0)?;
    file.sync()?;
    io.rename(&tmp, path)?;
    Ok(HashFile {
        path: path.to_path_buf(),
        file,
        count: entries.len(),
    })
}

/// The temporary path a file is written to before it is renamed into place.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Loads and fully verifies the hash index at `path` for the segment starting at `base` whose
/// file is `segment_len` bytes.
pub fn load(
    io: &dyn Io,
    path: &Path,
    kind: Kind,
    base: u64,
    segment_len: u64,
) -> Result<HashFile, LoadError> {
    let file = io.open(path, false)?;
    let len = usize::try_from(file.len()?).map_err(|_| io::Error::other("file too large"))?;
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0)?;
    let (header, entries) = decode(kind, &buf)?;
    if header.base != base {
        return Err(IndexError::Mismatch {
            field: "base",
            expected: base,
            found: header.base,
        }
        .into());
    }
    if header.segment_len != segment_len {
        return Err(IndexError::Mismatch {
            field: "segment length",
            expected: segment_len,
            found: header.segment_len,
        }
        .into());
    }
    Ok(HashFile {
        path: path.to_path_buf(),
        file,
        count: entries.len(),
    })
}

/// Why a hash index could not be loaded (the caller rebuilds it by scanning the segment).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read (or is missing).
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The bytes are not a valid index for this segment.
    #[error(transparent)]
    Invalid(#[from] IndexError),
}

#[cfg(test)]
#[path = "hashindex_tests.rs"]
mod tests;
