//! The hash index files beside a segment (`<base>.ids` and `<base>.keys`) over a segment's
//! life: collecting their entries from frames (as the writer writes them, or as a scan reads
//! them), writing them when the segment is sealed, and loading them on open, rebuilt by a scan
//! of the segment when one is missing or damaged.

use std::path::{Path, PathBuf};

use super::error::LogError;
use super::frame;
use super::hashindex::{self, HashEntry, HashFile, Header, Kind};
use super::index::Summary;
use super::io::SegmentFile;
use super::options::LogOptions;
use super::segment;

/// The entries of a segment's id and key indexes.
#[derive(Debug, Default)]
pub(crate) struct SideEntries {
    pub ids: Vec<HashEntry>,
    pub keys: Vec<HashEntry>,
}

impl SideEntries {
    /// Adds the checksum-verified `frame` at `position` of the segment starting at `base`.
    pub fn observe(&mut self, opts: &LogOptions, base: u64, frame: &[u8], position: u64) {
        let Some((id, key)) = frame::id_and_key(frame) else {
            return;
        };
        let offset = u64::from_le_bytes(frame[9..17].try_into().unwrap_or_default());
        let entry = |hash| HashEntry {
            hash,
            relative_offset: (offset - base) as u32,
            position: position as u32,
        };
        if opts.dedup {
            self.ids.push(entry(opts.hash(id)));
        }
        if let Some(key) = key {
            self.keys.push(entry(opts.hash(key)));
        }
    }
}

/// The sealed segment's side files, as written or loaded.
#[derive(Debug)]
pub(crate) struct SideFiles {
    pub ids: Option<HashFile>,
    pub keys: HashFile,
}

fn header(summary: &Summary) -> Header {
    Header {
        base: summary.base,
        end: summary.end,
        segment_len: summary.len,
        count: 0,
    }
}

/// Writes the side files of the segment `summary` describes.
pub(crate) fn write(
    opts: &LogOptions,
    dir: &Path,
    summary: &Summary,
    entries: SideEntries,
) -> Result<SideFiles, (PathBuf, std::io::Error)> {
    let io = &*opts.io;
    let header = header(summary);
    let ids = if opts.dedup {
        let path = segment::side_path(dir, summary.base, Kind::Ids.ext());
        let f =
            hashindex::write(io, &path, Kind::Ids, &header, entries.ids).map_err(|e| (path, e))?;
        Some(f)
    } else {
        None
    };
    let path = segment::side_path(dir, summary.base, Kind::Keys.ext());
    let keys =
        hashindex::write(io, &path, Kind::Keys, &header, entries.keys).map_err(|e| (path, e))?;
    Ok(SideFiles { ids, keys })
}

/// Loads the side files of a sealed segment, rebuilding (by a scan of `file`) the ones that are
/// missing or damaged; the paths rebuilt are pushed to `rebuilt`. Returns the bytes scanned.
pub(crate) fn load_or_rebuild(
    opts: &LogOptions,
    dir: &Path,
    summary: &Summary,
    file: &dyn SegmentFile,
    rebuilt: &mut Vec<PathBuf>,
) -> Result<(SideFiles, u64), LogError> {
    let io = &*opts.io;
    let load = |kind: Kind| {
        let path = segment::side_path(dir, summary.base, kind.ext());
        hashindex::load(io, &path, kind, summary.base, summary.len)
    };
    let ids = opts.dedup.then(|| load(Kind::Ids));
    let keys = load(Kind::Keys);
    let ids_ok = ids.as_ref().is_none_or(Result::is_ok);
    if let (true, Ok(keys)) = (ids_ok, &keys) {
        let ids = ids.and_then(Result::ok);
        return Ok((
            SideFiles {
                ids,
                keys: keys.clone(),
            },
            0,
        ));
    }
    let entries = scan_entries(opts, summary, file, dir)?;
    let written = write(opts, dir, summary, entries).map_err(|(p, e)| LogError::io(p, e))?;
    if let (false, Some(f)) = (ids_ok, &written.ids) {
        rebuilt.push(f.path().to_path_buf());
    }
    if keys.is_err() {
        rebuilt.push(written.keys.path().to_path_buf());
    }
    Ok((written, summary.len))
}

/// Collects the side entries of a segment by reading every frame.
pub(crate) fn scan_entries(
    opts: &LogOptions,
    summary: &Summary,
    file: &dyn SegmentFile,
    dir: &Path,
) -> Result<SideEntries, LogError> {
    let mut entries = SideEntries::default();
    let base = summary.base;
    let scan = segment::scan(
        file,
        base,
        summary.len,
        opts.index_interval_bytes,
        &mut |f, pos| entries.observe(opts, base, f, pos),
    )
    .map_err(|e| LogError::io(segment::log_path(dir, base), e))?;
    if let Some(d) = scan.damage {
        return Err(LogError::Corrupt {
            path: segment::log_path(dir, base),
            position: d.position,
            reason: d.reason,
        });
    }
    Ok(entries)
}

/// Removes the side files of the segment at `base` (missing ones are fine).
pub(crate) fn remove(opts: &LogOptions, dir: &Path, base: u64) {
    for kind in [Kind::Ids, Kind::Keys] {
        let _ = opts.io.remove(&segment::side_path(dir, base, kind.ext()));
    }
}
