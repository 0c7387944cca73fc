//! The sparse offset and timestamp index of a segment: one entry per `index_interval_bytes`,
//! built in memory for the active segment and persisted to `<base>.index` when the segment is
//! sealed, so a restart does not rescan sealed segments. Lookups in a sealed segment's index
//! binary-search the file with `pread`, so memory does not grow with the log.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::io::{Io, SegmentFile};

const MAGIC: &[u8; 8] = b"WEIRIDX1";
/// Bytes of the index file header.
pub const HEADER_LEN: usize = 56;
/// Bytes of one entry.
pub const ENTRY_LEN: usize = 16;

/// One index entry: a frame boundary in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// Offset of the record whose frame starts at `position`, minus the segment's base.
    pub relative_offset: u32,
    /// Byte position of that frame in the segment file.
    pub position: u32,
    /// The largest timestamp of the records before this one in the segment (0 if none).
    pub max_ts_before: u64,
}

/// What a segment holds, as recorded in its index header or found by a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Offset of the first record.
    pub base: u64,
    /// Offset after the last record.
    pub end: u64,
    /// Bytes of frames (the file's length once sealed).
    pub len: u64,
    /// Smallest record timestamp (`u64::MAX` if empty).
    pub min_ts: u64,
    /// Largest record timestamp (0 if empty).
    pub max_ts: u64,
}

impl Summary {
    /// An empty segment at `base`.
    pub fn empty(base: u64) -> Summary {
        Summary {
            base,
            end: base,
            len: 0,
            min_ts: u64::MAX,
            max_ts: 0,
        }
    }
}

/// Builds the index of a segment as frames are appended or scanned.
#[derive(Debug, Clone)]
pub struct IndexBuilder {
    /// The entries so far.
    pub entries: Vec<IndexEntry>,
    /// The segment summary so far.
    pub summary: Summary,
    interval: u64,
    last_entry_pos: Option<u64>,
}

impl IndexBuilder {
    /// An empty builder for the segment starting at `base`.
    pub fn new(base: u64, interval: u64) -> IndexBuilder {
        IndexBuilder {
            entries: Vec::new(),
            summary: Summary::empty(base),
            interval,
            last_entry_pos: None,
        }
    }

    /// Records the frame of `offset` with timestamp `ts`, `len` bytes at `position`.
    pub fn observe(&mut self, offset: u64, position: u64, ts: u64, len: u64) {
        if self
            .last_entry_pos
            .is_none_or(|p| position - p >= self.interval)
        {
            self.entries.push(IndexEntry {
                relative_offset: (offset - self.summary.base) as u32,
                position: position as u32,
                max_ts_before: self.summary.max_ts,
            });
            self.last_entry_pos = Some(position);
        }
        self.summary.end = offset + 1;
        self.summary.len = position + len;
        self.summary.min_ts = self.summary.min_ts.min(ts);
        self.summary.max_ts = self.summary.max_ts.max(ts);
    }
}

/// Binary search over entries fetched one by one: the index of the last entry for which
/// `before` holds (entries are ordered so that `before` is true for a prefix), or 0.
pub fn last_before(
    count: usize,
    mut get: impl FnMut(usize) -> io::Result<IndexEntry>,
    before: impl Fn(&IndexEntry) -> bool,
) -> io::Result<usize> {
    let (mut lo, mut hi) = (0, count);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if before(&get(mid)?) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Ok(lo.saturating_sub(1))
}

/// A persisted index, read with `pread`.
#[derive(Debug, Clone)]
pub struct IndexFile {
    file: Arc<dyn SegmentFile>,
    count: usize,
}

impl IndexFile {
    /// Number of entries.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.count
    }

    /// Entry `i`.
    pub fn get(&self, i: usize) -> io::Result<IndexEntry> {
        let mut b = [0; ENTRY_LEN];
        self.file
            .read_exact_at(&mut b, (HEADER_LEN + i * ENTRY_LEN) as u64)?;
        Ok(decode_entry(&b))
    }
}

fn decode_entry(b: &[u8]) -> IndexEntry {
    let u32_at = |at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default());
    IndexEntry {
        relative_offset: u32_at(0),
        position: u32_at(4),
        max_ts_before: u64::from_le_bytes(b[8..16].try_into().unwrap_or_default()),
    }
}

/// Writes the index of a sealed segment atomically (temporary file, fsync, rename).
pub fn write(
    io: &dyn Io,
    path: &Path,
    summary: &Summary,
    entries: &[IndexEntry],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN);
    buf.extend_from_slice(MAGIC);
    for v in [
        summary.base,
        summary.end,
        summary.len,
        summary.min_ts,
        summary.max_ts,
    ] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    for e in entries {
        buf.extend_from_slice(&e.relative_offset.to_le_bytes());
        buf.extend_from_slice(&e.position.to_le_bytes());
        buf.extend_from_slice(&e.max_ts_before.to_le_bytes());
    }
    let crc = crc32c::crc32c_append(crc32c::crc32c(&buf[..52]), &buf[HEADER_LEN..]);
    buf[52..56].copy_from_slice(&crc.to_le_bytes());
    let tmp = path.with_extension("index.tmp");
    let file = io.open(&tmp, true)?;
    file.truncate(0)?;
    file.write_at(&buf, 0)?;
    file.sync()?;
    io.rename(&tmp, path)
}

/// Loads and verifies an index; `None` if it is missing, damaged, or does not describe a
/// segment of `segment_len` bytes starting at `base` (the caller then rebuilds it by a scan).
pub fn load(io: &dyn Io, path: &Path, base: u64, segment_len: u64) -> Option<(Summary, IndexFile)> {
    let file = io.open(path, false).ok()?;
    let len = usize::try_from(file.len().ok()?).ok()?;
    if len < HEADER_LEN || !(len - HEADER_LEN).is_multiple_of(ENTRY_LEN) {
        return None;
    }
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, 0).ok()?;
    let u64_at = |at: usize| u64::from_le_bytes(buf[at..at + 8].try_into().unwrap_or_default());
    let summary = Summary {
        base: u64_at(8),
        end: u64_at(16),
        len: u64_at(24),
        min_ts: u64_at(32),
        max_ts: u64_at(40),
    };
    let count = u32::from_le_bytes(buf[48..52].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(buf[52..56].try_into().ok()?);
    let valid = &buf[..8] == MAGIC
        && count == (len - HEADER_LEN) / ENTRY_LEN
        && crc == crc32c::crc32c_append(crc32c::crc32c(&buf[..52]), &buf[HEADER_LEN..])
        && summary.base == base
        && summary.len == segment_len
        && summary.end >= base;
    valid.then_some((summary, IndexFile { file, count }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::log::io::StdIo;

    #[test]
    fn persisted_index_round_trips_and_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut b = IndexBuilder::new(10, 100);
        for i in 0..50u64 {
            b.observe(10 + i, i * 40, 1000 + i, 40);
        }
        write(&StdIo, &path, &b.summary, &b.entries).unwrap();
        let (summary, file) = load(&StdIo, &path, 10, 2000).unwrap();
        assert_eq!(summary, b.summary);
        assert_eq!(file.len(), b.entries.len());
        assert_eq!(file.get(3).unwrap(), b.entries[3]);
        let i = last_before(file.len(), |i| file.get(i), |e| e.relative_offset <= 17).unwrap();
        assert_eq!(b.entries[i].relative_offset, 15);
        assert!(
            load(&StdIo, &path, 10, 1999).is_none(),
            "length mismatch accepted"
        );
        std::fs::write(&path, b"WEIRIDX1 but short").unwrap();
        assert!(load(&StdIo, &path, 10, 2000).is_none());
    }
}
