//! Segment files: their names (`<base offset, 20 digits>.log` and `.index`), and the scan that
//! walks a segment's frames on open, verifying each checksum and offset, building its index and
//! telling a torn tail (damage confined to the last write) from corruption.

use std::io;
use std::path::{Path, PathBuf};

use super::error::DecodeError;
use super::frame::{self, FLAG_FIRST_IN_WRITE, MIN_FRAME};
use super::index::IndexBuilder;
use super::io::SegmentFile;

/// The path of the segment starting at `base`.
pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}

/// The path of the index of the segment starting at `base`.
pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}

/// The path of the file with extension `ext` (`ids`, `keys`) beside the segment at `base`.
pub fn side_path(dir: &Path, base: u64, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// The base offset named by a segment or index path with extension `ext`.
pub fn parse_name(path: &Path, ext: &str) -> Option<u64> {
    if path.extension()? != ext {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Where a scan stopped before the end of the file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    /// Byte position of the first frame that is not valid.
    pub position: u64,
    /// The offset that frame should have had.
    pub offset: u64,
    /// What was wrong.
    pub reason: String,
    /// Whether the damage is confined to the last write of the file (a torn tail).
    pub torn: bool,
    /// The valid frames before `position` that are the start of an append whose last record is
    /// missing (a torn tail only; 0 otherwise). Recovery cuts them too, so an append of several
    /// records survives whole or not at all.
    pub partial_append: u64,
}

/// The result of scanning a segment: its valid prefix and the damage after it, if any.
#[derive(Debug, Clone)]
pub struct Scan {
    /// Index and summary of the valid prefix.
    pub index: IndexBuilder,
    /// Damage after the valid prefix.
    pub damage: Option<Damage>,
}

const CHUNK: usize = 1 << 20;

/// Scans the segment `file` of `len` bytes whose first record has offset `base`, calling
/// `visit(frame, position)` with every valid frame.
pub fn scan(
    file: &dyn SegmentFile,
    base: u64,
    len: u64,
    interval: u64,
    visit: &mut dyn FnMut(&[u8], u64),
) -> io::Result<Scan> {
    let mut index = IndexBuilder::new(base, interval);
    let mut buf = Vec::new();
    let mut buf_start = 0u64;
    let mut pos = 0u64;
    let mut expected = base;
    // The first frame of the append the last valid frame belongs to, while it says more follow.
    let mut open_append: Option<(u64, u64)> = None;
    while pos < len {
        let at = (pos - buf_start) as usize;
        let result = frame::peek(buf.get(at..).unwrap_or_default());
        let need = match result {
            Err(DecodeError::Truncated { expected, .. }) => Some(expected),
            _ => None,
        };
        let buf_end = buf_start + buf.len() as u64;
        if let Some(need) = need.filter(|_| buf_end < len) {
            // Refill the window from `pos`, large enough for the frame it needs.
            let size = (len - pos).min(need.max(CHUNK) as u64) as usize;
            buf.resize(size, 0);
            file.read_exact_at(&mut buf, pos)?;
            buf_start = pos;
            continue;
        }
        // Recovery keeps exactly what reads can decode: a frame whose checksum holds but whose
        // body does not decode is damage too (found by the segment_scan fuzz target).
        let result =
            result.and_then(|h| frame::decode_verified(&buf[at..at + h.len], h).map(|_| h));
        let reason = match result {
            Ok(h)
                if h.offset == expected
                    || (h.offset > expected && h.flags & frame::FLAG_AFTER_GAP != 0) =>
            {
                if h.flags & frame::FLAG_MORE_IN_APPEND == 0 {
                    open_append = None;
                } else if open_append.is_none() {
                    open_append = Some((pos, h.offset));
                }
                visit(&buf[at..at + h.len], pos);
                index.observe(h.offset, pos, h.timestamp_ms, h.len as u64);
                pos += h.len as u64;
                expected = h.offset + 1;
                continue;
            }
            Ok(h) => {
                let reason = format!("expected offset {expected}, found {}", h.offset);
                let damage = Damage {
                    position: pos,
                    offset: expected,
                    reason,
                    torn: false,
                    partial_append: 0,
                };
                return Ok(Scan {
                    index,
                    damage: Some(damage),
                });
            }
            Err(e) => e.to_string(),
        };
        let torn = !later_write_after(file, pos, len, expected)?;
        let mut damage = Damage {
            position: pos,
            offset: expected,
            reason,
            torn,
            partial_append: 0,
        };
        if let Some((start, first)) = open_append.filter(|_| torn) {
            damage.partial_append = expected - first;
            damage.position = start;
            damage.offset = first;
        }
        return Ok(Scan {
            index,
            damage: Some(damage),
        });
    }
    // The file ends inside an append: its last records were never written.
    let damage = open_append.map(|(start, first)| Damage {
        position: start,
        offset: first,
        reason: format!("the append starting at offset {first} ends before its last record"),
        torn: true,
        partial_append: expected - first,
    });
    Ok(Scan { index, damage })
}

/// Whether a valid frame that starts a later write lies after the damage at `damaged` (then the
/// damage is not confined to the last write). Tries every byte position; the offset field must
/// be plausible before the checksum is computed, so garbage and zeros are passed over cheaply.
fn later_write_after(
    file: &dyn SegmentFile,
    damaged: u64,
    len: u64,
    expected: u64,
) -> io::Result<bool> {
    let max_offset = expected + (len - damaged) / MIN_FRAME as u64;
    let mut window = vec![0; CHUNK + MIN_FRAME];
    let mut pos = damaged + 1;
    while pos + MIN_FRAME as u64 <= len {
        let n = ((len - pos) as usize).min(window.len());
        file.read_exact_at(&mut window[..n], pos)?;
        let mut i = 0;
        while i + MIN_FRAME <= n && i < CHUNK {
            let w = &window[i..];
            let body_len = u32::from_le_bytes([w[4], w[5], w[6], w[7]]) as u64;
            let offset = u64::from_le_bytes(w[9..17].try_into().unwrap_or_default());
            let frame_len = 8 + body_len;
            let plausible = (expected..=max_offset).contains(&offset)
                && frame_len >= MIN_FRAME as u64
                && pos + i as u64 + frame_len <= len;
            if plausible {
                let mut candidate = vec![0; frame_len as usize];
                file.read_exact_at(&mut candidate, pos + i as u64)?;
                if let Ok(h) = frame::peek(&candidate) {
                    if h.flags & FLAG_FIRST_IN_WRITE != 0 {
                        return Ok(true);
                    }
                    i += h.len;
                    continue;
                }
            }
            i += 1;
        }
        pos += i as u64;
    }
    Ok(false)
}
