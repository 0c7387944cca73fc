//! Per-key reads: every record of one key (an event-sourced aggregate) without scanning the log.
//! Sealed segments are searched through their `<base>.keys` files, the active segment through
//! its in-memory key entries; every hash hit is confirmed by reading the record and comparing
//! the whole key, so colliding keys never mix.

use std::sync::atomic::Ordering;

use super::Log;
use super::error::LogError;
use super::read::{Entry, frame_at};
use super::shared::Shared;
use crate::names::Offset;

impl Log {
    /// Up to `max` acknowledged records whose key is `key`, at or after `from`, in offset order.
    /// Reads only those records (a binary search of each sealed segment's `.keys` file, and a
    /// pass over the active segment's key entries in memory). [`LogError::Removed`] if `from`
    /// is before the log's start.
    pub fn read_key(&self, key: &str, from: Offset, max: usize) -> Result<Vec<Entry>, LogError> {
        self.shared.read_key(key, from.0, max)
    }
}

impl Shared {
    fn read_key(&self, key: &str, from: u64, max: usize) -> Result<Vec<Entry>, LogError> {
        let committed = self.committed.load(Ordering::Acquire);
        let hash = self.opts.hash(key.as_bytes());
        let (sealed, active, hits) = {
            let s = self.read_segments();
            let start = s.start();
            if from < start {
                return Err(LogError::Removed {
                    requested: Offset(from),
                    start: Offset(start),
                });
            }
            let sealed: Vec<_> = s
                .sealed
                .iter()
                .filter(|x| x.summary.end > from)
                .cloned()
                .collect();
            let a = &s.active;
            let base = a.index.summary.base;
            let hits: Vec<(u64, u64)> = a
                .keys
                .iter()
                .filter(|e| e.hash == hash)
                .map(|e| (base + u64::from(e.relative_offset), u64::from(e.position)))
                .filter(|&(offset, _)| offset >= from)
                .collect();
            let active = (a.file.clone(), a.path.clone(), a.index.summary.len);
            (sealed, active, hits)
        };
        let mut out = Vec::new();
        let mut take = |file: &dyn super::io::SegmentFile,
                        path: &std::path::Path,
                        limit: u64,
                        offset: u64,
                        position: u64|
         -> Result<bool, LogError> {
            if offset >= committed || out.len() >= max {
                return Ok(false);
            }
            let f = frame_at(file, path, position, limit)?;
            if f.offset.0 == offset && f.record.key.as_deref() == Some(key) {
                out.push(Entry {
                    offset: f.offset,
                    record: f.record,
                });
            }
            Ok(true)
        };
        for seg in &sealed {
            let entries = seg
                .keys
                .lookup(hash)
                .map_err(|e| LogError::io(seg.keys.path(), e))?;
            for e in entries {
                let offset = seg.summary.base + u64::from(e.relative_offset);
                if offset < from {
                    continue;
                }
                let more = take(
                    &*seg.file,
                    &seg.path,
                    seg.summary.len,
                    offset,
                    e.position.into(),
                )?;
                if !more {
                    return Ok(out);
                }
            }
        }
        let (file, path, limit) = active;
        for (offset, position) in hits {
            if !take(&*file, &path, limit, offset, position)? {
                break;
            }
        }
        Ok(out)
    }
}
