//! Writes arbitrary bytes as segment files of a log directory, opens it with
//! `Recovery::Repair`, reads everything back, appends one record and reopens it: nothing may
//! panic. Opening may fail (errors are fine); once it succeeds, the log must hold what it says.
//!
//! Input: a control byte, then the files.
//! - `SEALED` clear: the rest is `00000000000000000000.log`, the only (active) segment.
//! - `SEALED` set: `u16` sealed length, `u16` index length, `u16` base of the active segment
//!   (all little-endian), then the bytes of `00000000000000000000.log` (a sealed segment), of
//!   its `00000000000000000000.index` (left out when empty), and of the active segment.
//!
//! Random bytes almost never carry a valid CRC-32C, so `FIX_CHECKSUMS` walks the frames of each
//! segment by their length fields and recomputes their checksums (and the index's), and
//! `RENUMBER` writes the offsets the scan expects into those frames first.
//!
//! Invariants checked when no index file was given (an index with a valid checksum is trusted,
//! so a crafted one may make reads fail; they still must not panic):
//! - every offset from `start` to `end` reads back, in order;
//! - an append after the repair is acknowledged and reads back;
//! - the closed log reopens with `Recovery::Strict`, no damage, the same end.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use weir::names::Offset;
use weir::storage::Record;
use weir::storage::log::{Durability, Log, LogOptions, Recovery};

const FIX_CHECKSUMS: u8 = 1;
const SEALED: u8 = 2;
const RENUMBER: u8 = 4;

/// Bytes of crc (4) and body length (4) before the body.
const FRAME_HEADER: usize = 8;
/// The smallest and largest body the format allows.
const MIN_BODY: usize = 25;
const MAX_BODY: usize = 64 << 20;
/// Bytes of an index header; its CRC-32C sits at 52..56.
const INDEX_HEADER: usize = 56;

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a temp dir (set TMPDIR to a writable directory)");
    let mut has_index = false;
    if control & SEALED == 0 {
        let mut active = rest.to_vec();
        fix_segment(&mut active, 0, control);
        write(dir.path(), 0, "log", &active);
    } else {
        let Some((
            Split {
                sealed_len,
                index_len,
                active_base,
            },
            rest,
        )) = split(rest)
        else {
            return;
        };
        let (sealed, rest) = rest.split_at(sealed_len.min(rest.len()));
        let (index, active) = rest.split_at(index_len.min(rest.len()));
        let mut sealed = sealed.to_vec();
        let ends = fix_segment(&mut sealed, 0, control);
        write(dir.path(), 0, "log", &sealed);
        if !index.is_empty() {
            let mut index = index.to_vec();
            if control & FIX_CHECKSUMS != 0 && index.len() >= INDEX_HEADER {
                let mut crc = crc32c::crc32c(&index[..52]);
                crc = crc32c::crc32c_append(crc, &index[INDEX_HEADER..]);
                index[52..56].copy_from_slice(&crc.to_le_bytes());
            }
            write(dir.path(), 0, "index", &index);
            has_index = true;
        }
        // With `RENUMBER`, the active segment starts where the sealed one ends, as it should.
        let active_base = if control & RENUMBER != 0 {
            ends
        } else {
            active_base
        };
        let mut active = active.to_vec();
        fix_segment(&mut active, active_base, control);
        write(dir.path(), active_base, "log", &active);
    }
    open_and_read(dir.path(), !has_index);
});

fn options(recovery: Recovery) -> LogOptions {
    LogOptions::new()
        .recovery(recovery)
        .durability(Durability::Never)
        .segment_bytes(4096)
        .index_interval_bytes(256)
        .sync_threads(1)
}

fn open_and_read(dir: &Path, strict_checks: bool) {
    let Ok((log, _report)) = Log::open(dir, options(Recovery::Repair)) else {
        return;
    };
    let (start, end) = (log.start(), log.end());
    let read = read_all(&log, start);
    if strict_checks {
        assert_eq!(
            read,
            Ok(end.0),
            "records from {start:?} to {end:?} read back"
        );
    }
    let _ = log.offset_for_timestamp(0);
    let _ = log.offset_for_timestamp(u64::MAX);
    let record = Record {
        id: "fuzz".into(),
        key: None,
        headers: Vec::new(),
        payload: b"after repair".to_vec(),
        timestamp_ms: 1,
        reply_to: None,
        correlation_id: None,
    };
    let appended = log.append(&[record]).wait();
    if strict_checks {
        let appended = appended.expect("an append after repair is acknowledged");
        assert_eq!(appended.first, end, "the append takes the end offset");
        let back = log
            .read(end, 1, 1 << 20)
            .expect("the appended record reads back");
        assert_eq!(back.len(), 1, "the appended record reads back");
    }
    let end = log.end();
    let closed = log.close();
    if strict_checks {
        closed.expect("the repaired log closes");
        let (log, report) =
            Log::open(dir, options(Recovery::Strict)).expect("a repaired log reopens strictly");
        assert_eq!(report.torn_tail, None, "no torn tail after a clean close");
        assert_eq!(report.repaired, None, "no damage after a clean close");
        assert_eq!(log.end(), end, "the reopened log ends where it was closed");
    }
}

/// Reads from `from` to the end; the offset after the last record read, or the error.
fn read_all(log: &Log, from: Offset) -> Result<u64, String> {
    let mut next = from.0;
    loop {
        let entries = log
            .read(Offset(next), 1000, 1 << 20)
            .map_err(|e| e.to_string())?;
        let Some(last) = entries.last() else {
            return Ok(next);
        };
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(
                e.offset.0,
                next + i as u64,
                "reads return consecutive offsets"
            );
        }
        next = last.offset.0 + 1;
    }
}

/// How an input with `SEALED` is split: the lengths of the sealed segment and of its index, and
/// the active segment's base offset.
struct Split {
    sealed_len: usize,
    index_len: usize,
    active_base: u64,
}

/// The split in the three little-endian `u16`s at the start of `bytes`, and what follows them.
fn split(bytes: &[u8]) -> Option<(Split, &[u8])> {
    let (head, rest) = bytes.split_at_checked(6)?;
    let u16_at = |i: usize| u16::from_le_bytes([head[i], head[i + 1]]);
    let split = Split {
        sealed_len: u16_at(0) as usize,
        index_len: u16_at(2) as usize,
        active_base: u64::from(u16_at(4)),
    };
    Some((split, rest))
}

/// Walks the frames of `segment` by their length fields, renumbering them from `base` and
/// fixing their checksums as `control` asks. Returns the offset after the last whole frame.
fn fix_segment(segment: &mut [u8], base: u64, control: u8) -> u64 {
    let mut pos = 0;
    let mut offset = base;
    while let Some(header) = segment.get(pos..pos + FRAME_HEADER) {
        let body_len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let end = pos + FRAME_HEADER + body_len;
        if !(MIN_BODY..=MAX_BODY).contains(&body_len) || end > segment.len() {
            break;
        }
        if control & RENUMBER != 0 {
            segment[pos + 9..pos + 17].copy_from_slice(&offset.to_le_bytes());
        }
        if control & FIX_CHECKSUMS != 0 {
            let crc = crc32c::crc32c(&segment[pos + 4..end]);
            segment[pos..pos + 4].copy_from_slice(&crc.to_le_bytes());
        }
        offset += 1;
        pos = end;
    }
    offset
}

fn write(dir: &Path, base: u64, ext: &str, bytes: &[u8]) {
    std::fs::write(dir.join(format!("{base:020}.{ext}")), bytes).expect("write a segment file");
}
