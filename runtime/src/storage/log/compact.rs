//! Per-key compaction: rewrite sealed segments keeping only the latest record of each key
//! (records without a key are kept, and so is each segment's last record, which carries the
//! segment's end). Offsets do not change: kept frames are copied as they are, the first one after
//! a removed run flagged "after a gap". Each segment is replaced atomically (new file written and
//! fsynced, renamed over the old one, then its index files rewritten); readers holding the old
//! file finish on it, new reads see the new one, and the old file's disk space is freed when
//! the last of them closes it. The active segment is never touched.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::Log;
use super::error::LogError;
use super::frame::{self, FLAG_AFTER_GAP, FLAG_MORE_IN_APPEND};
use super::hash::HashKeyed;
use super::index::{self, IndexBuilder};
use super::io::SegmentFile;
use super::read::frame_at;
use super::segment;
use super::shared::{Sealed, Shared, lock};
use super::side::{self, SideEntries};

/// What a compaction removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Compacted {
    /// Sealed segments rewritten.
    pub segments: usize,
    /// Records removed (superseded by a later record with the same key).
    pub records: u64,
    /// Bytes of segment and index files freed.
    pub bytes: u64,
}

impl Log {
    /// Rewrites the sealed segments keeping only the latest acknowledged record of each key
    /// (and every record without a key, and each segment's last record). Offsets of kept records
    /// do not change; reads skip the removed ones. Serialized with retention.
    pub fn compact(&self) -> Result<Compacted, LogError> {
        self.shared.compact()
    }
}

/// One frame of the segment being compacted.
struct Seen {
    offset: u64,
    key: Option<String>,
}

impl Shared {
    fn compact(&self) -> Result<Compacted, LogError> {
        let _maintenance = lock(&self.maintenance);
        let committed = self.committed.load(Ordering::Acquire);
        let (sealed, active) = {
            let s = self.read_segments();
            let a = &s.active;
            let base = a.index.summary.base;
            let mut keys: HashKeyed<Vec<(u64, u64)>> = HashKeyed::default();
            for e in &a.keys {
                let offset = base + u64::from(e.relative_offset);
                if offset < committed {
                    keys.entry(e.hash)
                        .or_default()
                        .push((offset, e.position.into()));
                }
            }
            let file = (a.file.clone(), a.path.clone(), a.index.summary.len);
            (s.sealed.iter().cloned().collect::<Vec<_>>(), (file, keys))
        };
        let mut done = Compacted::default();
        for (i, seg) in sealed.iter().enumerate() {
            let later = Later {
                sealed: &sealed[i + 1..],
                active: &active,
            };
            if let Some((records, bytes)) = self.compact_segment(seg, &later)? {
                done.segments += 1;
                done.records += records;
                done.bytes += bytes;
            }
        }
        Ok(done)
    }

    /// Rewrites one sealed segment if it holds superseded records: (records, bytes) freed.
    fn compact_segment(
        &self,
        seg: &Sealed,
        later: &Later<'_>,
    ) -> Result<Option<(u64, u64)>, LogError> {
        let base = seg.summary.base;
        let mut seen = Vec::new();
        let interval = self.opts.index_interval_bytes;
        let scan = segment::scan(&*seg.file, base, seg.summary.len, interval, &mut |f, _| {
            let key = frame::id_and_key(f)
                .and_then(|(_, k)| k)
                .map(|k| String::from_utf8_lossy(k).into_owned());
            let offset = u64::from_le_bytes(f[9..17].try_into().unwrap_or_default());
            seen.push(Seen { offset, key });
        })
        .map_err(|e| LogError::io(&seg.path, e))?;
        if let Some(d) = scan.damage {
            return Err(LogError::Corrupt {
                path: seg.path.clone(),
                position: d.position,
                reason: d.reason,
            });
        }
        // The last offset of each key in this segment, then whether a later segment has it.
        let mut last: HashMap<&str, u64> = HashMap::new();
        for s in &seen {
            if let Some(k) = &s.key {
                last.insert(k, s.offset);
            }
        }
        let mut superseded_later = HashMap::new();
        for &k in last.keys() {
            superseded_later.insert(k, self.has_later(k, later)?);
        }
        let last_offset = seen.last().map(|s| s.offset);
        let keep = |s: &Seen| match &s.key {
            None => true,
            _ if Some(s.offset) == last_offset => true,
            Some(k) => last.get(k.as_str()) == Some(&s.offset) && !superseded_later[k.as_str()],
        };
        let kept: Vec<bool> = seen.iter().map(keep).collect();
        let removed = kept.iter().filter(|k| !**k).count() as u64;
        if removed == 0 {
            return Ok(None);
        }
        self.rewrite(seg, &kept).map(|bytes| Some((removed, bytes)))
    }

    /// Whether a record after this segment, acknowledged, has key `key`.
    fn has_later(&self, key: &str, later: &Later<'_>) -> Result<bool, LogError> {
        let hash = self.opts.hash(key.as_bytes());
        let same = |file: &dyn SegmentFile, path: &Path, limit: u64, position: u64| {
            frame_at(file, path, position, limit).map(|f| f.record.key.as_deref() == Some(key))
        };
        for seg in later.sealed {
            let hits = seg
                .keys
                .lookup(hash)
                .map_err(|e| LogError::io(seg.keys.path(), e))?;
            for hit in hits.iter().rev() {
                if same(&*seg.file, &seg.path, seg.summary.len, hit.position.into())? {
                    return Ok(true);
                }
            }
        }
        let ((file, path, limit), keys) = later.active;
        for &(_, position) in keys.get(&hash).map(Vec::as_slice).unwrap_or_default() {
            if same(&**file, path, *limit, position)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Writes the kept frames of `seg` to a new file and its index files, swaps it in, and
    /// returns the bytes freed.
    fn rewrite(&self, seg: &Sealed, kept: &[bool]) -> Result<u64, LogError> {
        let io = &*self.opts.io;
        let base = seg.summary.base;
        let tmp = super::hashindex::tmp_path(&seg.path);
        let out = io.open(&tmp, true).map_err(|e| LogError::io(&tmp, e))?;
        out.truncate(0).map_err(|e| LogError::io(&tmp, e))?;
        let mut index = IndexBuilder::new(base, self.opts.index_interval_bytes);
        let mut sides = SideEntries::default();
        let mut buf = Vec::new();
        let mut written = 0u64;
        let mut next_expected = base;
        let mut i = 0;
        let mut failed = None;
        let interval = self.opts.index_interval_bytes;
        let mut copy = |f: &[u8], _pos: u64| {
            let keep = kept.get(i).copied().unwrap_or(true);
            i += 1;
            if !keep || failed.is_some() {
                return;
            }
            let start = buf.len();
            buf.extend_from_slice(f);
            let offset = u64::from_le_bytes(f[9..17].try_into().unwrap_or_default());
            // A kept record may be followed by removed ones of its append: compacted segments
            // are sealed, so no record says more of its append follow.
            if offset != next_expected || f[8] & FLAG_MORE_IN_APPEND != 0 {
                let frame = &mut buf[start..];
                if offset != next_expected {
                    frame[8] |= FLAG_AFTER_GAP;
                }
                frame[8] &= !FLAG_MORE_IN_APPEND;
                let crc = crc32c::crc32c(&frame[4..]);
                frame[..4].copy_from_slice(&crc.to_le_bytes());
            }
            next_expected = offset + 1;
            let position = written + start as u64;
            let ts = u64::from_le_bytes(f[17..25].try_into().unwrap_or_default());
            index.observe(offset, position, ts, f.len() as u64);
            sides.observe(&self.opts, base, &buf[start..], position);
            if buf.len() >= 1 << 20 {
                if let Err(e) = out.write_at(&buf, written) {
                    failed = Some(e);
                }
                written += buf.len() as u64;
                buf.clear();
            }
        };
        segment::scan(&*seg.file, base, seg.summary.len, interval, &mut copy)
            .map_err(|e| LogError::io(&seg.path, e))?;
        if let Some(e) = failed {
            return Err(LogError::io(&tmp, e));
        }
        out.write_at(&buf, written)
            .and_then(|()| out.sync())
            .map_err(|e| LogError::io(&tmp, e))?;
        io.rename(&tmp, &seg.path)
            .map_err(|e| LogError::io(&seg.path, e))?;
        io.sync_dir(&self.dir)
            .map_err(|e| LogError::io(&self.dir, e))?;
        let summary = index.summary;
        let index_path = segment::index_path(&self.dir, base);
        index::write(io, &index_path, &summary, &index.entries)
            .map_err(|e| LogError::io(&index_path, e))?;
        let (_, index_file) =
            index::load(io, &index_path, base, summary.len).ok_or_else(|| LogError::Corrupt {
                path: index_path.clone(),
                position: 0,
                reason: "a rewritten index does not read back".into(),
            })?;
        let files = side::write(&self.opts, &self.dir, &summary, sides)
            .map_err(|(p, e)| LogError::io(p, e))?;
        let file = io
            .open(&seg.path, false)
            .map_err(|e| LogError::io(&seg.path, e))?;
        let new = Sealed {
            path: seg.path.clone(),
            file,
            index: index_file,
            summary,
            ids: files.ids,
            keys: files.keys,
        };
        let freed = seg.file_bytes().saturating_sub(new.file_bytes());
        let mut s = self.write_segments();
        if let Some(slot) = s.sealed.iter_mut().find(|x| x.summary.base == base) {
            *slot = new;
        }
        Ok(freed)
    }
}

/// What lies after the segment being compacted: later sealed segments, and the active
/// segment's file with its acknowledged keyed records (hash to offsets and positions).
struct Later<'a> {
    sealed: &'a [Sealed],
    #[allow(clippy::type_complexity)]
    active: &'a (
        (std::sync::Arc<dyn SegmentFile>, std::path::PathBuf, u64),
        HashKeyed<Vec<(u64, u64)>>,
    ),
}
