//! Reads: records from an offset, and the first offset at or after a timestamp. A read holds the
//! segment lock only to find its file and index position; the file I/O is positional reads
//! without any lock, so reads and appends do not wait for each other's I/O.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::error::{DecodeError, LogError};
use super::frame::{self, FrameHeader};
use super::index::{IndexEntry, last_before};
use super::io::SegmentFile;
use super::shared::Shared;
use crate::names::Offset;
use crate::storage::Record;

/// A record read from a log, with its offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The record's offset.
    pub offset: Offset,
    /// The record.
    pub record: Record,
}

/// Where to start reading in one segment.
struct Place {
    path: PathBuf,
    file: Arc<dyn SegmentFile>,
    /// Byte position of an indexed frame at or before the wanted one.
    position: u64,
    /// Bytes of the segment that hold written frames.
    limit: u64,
}

const CHUNK: u64 = 256 << 10;
/// The first read of a walk.
const FIRST_CHUNK: u64 = 16 << 10;

impl Shared {
    /// Finds the segment holding `offset` and the indexed position at or before it, where the
    /// index entry is the last one for which `before` holds.
    fn place(
        &self,
        offset: u64,
        before: impl Fn(&IndexEntry, u64) -> bool,
    ) -> Result<Place, LogError> {
        let segments = self.read_segments();
        let start = segments.start();
        if offset < start {
            return Err(LogError::Removed {
                requested: Offset(offset),
                start: Offset(start),
            });
        }
        let active = &segments.active;
        if offset >= active.index.summary.base {
            let entries = &active.index.entries;
            let base = active.index.summary.base;
            let i = last_before(entries.len(), |i| Ok(entries[i]), |e| before(e, base))
                .unwrap_or_default();
            return Ok(Place {
                path: active.path.clone(),
                file: active.file.clone(),
                position: entries.get(i).map_or(0, |e| e.position as u64),
                limit: active.index.summary.len,
            });
        }
        let at = segments
            .sealed
            .partition_point(|s| s.summary.base <= offset)
            .saturating_sub(1);
        let s = segments.sealed[at].clone();
        drop(segments);
        let base = s.summary.base;
        let i = last_before(s.index.len(), |i| s.index.get(i), |e| before(e, base))
            .map_err(|e| LogError::io(&s.path, e))?;
        let position = match s.index.len() {
            0 => 0,
            _ => {
                s.index
                    .get(i)
                    .map_err(|e| LogError::io(&s.path, e))?
                    .position as u64
            }
        };
        Ok(Place {
            path: s.path,
            file: s.file,
            position,
            limit: s.summary.len,
        })
    }

    /// Reads up to `max_records` records (and about `max_bytes` bytes of frames, at least one
    /// record) from `from`, only acknowledged ones.
    pub(crate) fn read(
        &self,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        let committed = self.committed.load(Ordering::Acquire);
        let mut out = Vec::new();
        let mut next = from.0;
        let mut bytes = 0;
        while next < committed && out.len() < max_records && (bytes < max_bytes || out.is_empty()) {
            let place = self.place(next, |e, base| base + e.relative_offset as u64 <= next)?;
            let before = out.len();
            let stop = |offset: u64, out: &Vec<Entry>, bytes: usize| {
                offset >= committed
                    || out.len() >= max_records
                    || (bytes >= max_bytes && !out.is_empty())
            };
            walk(&place, |frame_bytes, h, position| {
                if h.offset < next {
                    return Ok(true);
                }
                if stop(h.offset, &out, bytes) {
                    return Ok(false);
                }
                let f = frame::decode_verified(frame_bytes, h)
                    .map_err(|e| corrupt(&place.path, position, e))?;
                bytes += h.len;
                next = h.offset + 1;
                out.push(Entry {
                    offset: f.offset,
                    record: f.record,
                });
                Ok(true)
            })?;
            if out.len() == before {
                break;
            }
        }
        Ok(out)
    }

    /// The first acknowledged offset whose record has a timestamp at or after `ts_ms`.
    pub(crate) fn offset_for_timestamp(&self, ts_ms: u64) -> Result<Option<Offset>, LogError> {
        let committed = self.committed.load(Ordering::Acquire);
        let first = {
            let s = self.read_segments();
            let sealed = s.sealed.iter().map(|s| &s.summary);
            let mut all = sealed.chain(std::iter::once(&s.active.index.summary));
            all.find(|summary| summary.max_ts >= ts_ms && summary.base < summary.end)
                .map(|summary| summary.base)
        };
        let Some(base) = first else { return Ok(None) };
        let place = self.place(base, |e, _| e.max_ts_before < ts_ms)?;
        let mut found = None;
        walk(&place, |_, h, _| {
            if h.offset >= committed {
                return Ok(false);
            }
            if h.timestamp_ms >= ts_ms {
                found = Some(Offset(h.offset));
                return Ok(false);
            }
            Ok(true)
        })?;
        Ok(found)
    }
}

/// Reads the one frame at `position` of a segment file whose written bytes end at `limit`.
pub(crate) fn frame_at(
    file: &dyn SegmentFile,
    path: &std::path::Path,
    position: u64,
    limit: u64,
) -> Result<frame::Frame, LogError> {
    let mut buf = vec![0; (limit.saturating_sub(position)).min(4096) as usize];
    file.read_exact_at(&mut buf, position)
        .map_err(|e| LogError::io(path, e))?;
    let header = match frame::peek(&buf) {
        Err(DecodeError::Truncated { expected, .. })
            if buf.len() < expected && position + expected as u64 <= limit =>
        {
            buf.resize(expected, 0);
            file.read_exact_at(&mut buf, position)
                .map_err(|e| LogError::io(path, e))?;
            frame::peek(&buf)
        }
        other => other,
    }
    .map_err(|e| corrupt(path, position, e))?;
    frame::decode_verified(&buf, header).map_err(|e| corrupt(path, position, e))
}

fn corrupt(path: &std::path::Path, position: u64, e: DecodeError) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        position,
        reason: e.to_string(),
    }
}

/// Calls `visit(frame bytes, header, position)` for each frame, checksum verified, from
/// `place.position` until it returns false or the segment's written bytes end.
fn walk(
    place: &Place,
    visit: impl FnMut(&[u8], FrameHeader, u64) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    thread_local! {
        /// The read buffer, kept per thread: a fresh one per walk was allocated, zeroed and
        /// faulted in each time.
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| match b.try_borrow_mut() {
        Ok(mut buf) => walk_with(place, &mut buf, visit),
        Err(_) => walk_with(place, &mut Vec::new(), visit), // a walk inside a walk
    })
}

fn walk_with(
    place: &Place,
    buf: &mut Vec<u8>,
    mut visit: impl FnMut(&[u8], FrameHeader, u64) -> Result<bool, LogError>,
) -> Result<(), LogError> {
    let mut pos = place.position;
    // Reads start small and double: a reader that wants a few records (a consumer at the tail)
    // does not copy a whole chunk each time.
    let mut chunk = FIRST_CHUNK;
    while pos < place.limit {
        let want = (place.limit - pos).min(chunk) as usize;
        chunk = (chunk * 2).min(CHUNK);
        buf.resize(want, 0);
        place
            .file
            .read_exact_at(buf, pos)
            .map_err(|e| LogError::io(&place.path, e))?;
        let mut at = 0;
        while at < buf.len() {
            let rest = &buf[at..];
            match frame::peek(rest) {
                Ok(h) => {
                    if !visit(&rest[..h.len], h, pos + at as u64)? {
                        return Ok(());
                    }
                    at += h.len;
                }
                Err(DecodeError::Truncated { expected, .. })
                    if pos + (at + expected) as u64 <= place.limit =>
                {
                    if at == 0 {
                        // A frame larger than the chunk: read exactly it.
                        buf.resize(expected, 0);
                        place
                            .file
                            .read_exact_at(buf, pos)
                            .map_err(|e| LogError::io(&place.path, e))?;
                        continue;
                    }
                    break;
                }
                Err(e) => return Err(corrupt(&place.path, pos + at as u64, e)),
            }
        }
        pos += at as u64;
    }
    Ok(())
}
