//! Opening a log directory: find the segments, trust each sealed segment's persisted index (or
//! rebuild it by a scan), scan the active segment, cut a torn tail, and refuse or repair damage
//! anywhere else. What was done is returned as a [`RecoveryReport`].

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::LogError;
use super::index;
use super::io::Io;
use super::options::{LogOptions, Recovery};
use super::segment::{self, Damage};
use super::shared::{Active, Sealed, Segments};
use super::side::{self, SideEntries};
use crate::names::Offset;

/// What opening a log found and changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Segment files found.
    pub segments: usize,
    /// Bytes read by scans (the active segment, and sealed ones without a valid index).
    pub scanned_bytes: u64,
    /// Indexes rebuilt because they were missing or damaged.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// A torn tail cut off the last segment.
    pub torn_tail: Option<Cut>,
    /// Damage dropped by [`Recovery::Repair`].
    pub repaired: Option<Cut>,
    /// How long opening took.
    pub elapsed: Duration,
}

/// A part of the log removed on open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The file where the damage starts.
    pub path: PathBuf,
    /// Its byte position.
    pub position: u64,
    /// What was wrong there.
    pub reason: String,
    /// The first offset that is no longer in the log.
    pub first_dropped: Offset,
    /// Bytes removed, from that file and the later files.
    pub dropped_bytes: u64,
    /// Later segment files removed whole.
    pub removed_files: Vec<PathBuf>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |e| LogError::io(path, e)
}

/// Opens (creating if needed) the segments of the log in `dir`.
pub(crate) fn open(dir: &Path, opts: &LogOptions) -> Result<(Segments, RecoveryReport), LogError> {
    let started = Instant::now();
    let io = &*opts.io;
    io.create_dir_all(dir).map_err(io_err(dir))?;
    let mut bases = Vec::new();
    for path in io.list(dir).map_err(io_err(dir))? {
        if let Some(base) = segment::parse_name(&path, "log") {
            bases.push(base);
        } else if path.extension().is_some_and(|e| e == "tmp")
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.len() > 20 && n.as_bytes()[..20].iter().all(u8::is_ascii_digit))
        {
            io.remove(&path).map_err(io_err(&path))?;
        }
    }
    bases.sort_unstable();
    let mut report = RecoveryReport {
        segments: bases.len(),
        ..RecoveryReport::default()
    };
    if bases.is_empty() {
        bases.push(0);
    }
    let mut sealed: VecDeque<Sealed> = VecDeque::new();
    let mut expected_base = None;
    for (i, &base) in bases.iter().enumerate() {
        let path = segment::log_path(dir, base);
        let last = i + 1 == bases.len();
        let file = io.open(&path, true).map_err(io_err(&path))?;
        let len = file.len().map_err(io_err(&path))?;
        let index_path = segment::index_path(dir, base);
        if expected_base.is_some_and(|e| e != base) {
            let e = expected_base.unwrap_or_default();
            let damage = Damage {
                position: 0,
                offset: e,
                reason: format!("expected a segment starting at offset {e}, found {base}"),
                torn: false,
                partial_append: 0,
            };
            let Some(prev) = sealed.pop_back() else {
                return unreachable_gap();
            };
            let rest = &bases[i..];
            // The whole segment goes: `rest` starts with it, so its bytes are counted there.
            let cut = refuse_or_repair(io, dir, opts, &path, &damage, 0, rest)?;
            report.repaired = Some(cut);
            let _ = io.remove(&segment::index_path(dir, prev.summary.base));
            side::remove(opts, dir, prev.summary.base);
            return finish(sealed, reopen(prev, opts)?, report, started);
        }
        let trusted = (!last && !opts.verify_sealed)
            .then(|| index::load(io, &index_path, base, len))
            .flatten();
        if let Some((summary, index)) = trusted {
            let (sides, scanned) =
                side::load_or_rebuild(opts, dir, &summary, &*file, &mut report.rebuilt_indexes)?;
            report.scanned_bytes += scanned;
            expected_base = Some(summary.end);
            sealed.push_back(Sealed {
                path,
                file,
                index,
                summary,
                ids: sides.ids,
                keys: sides.keys,
            });
            continue;
        }
        let mut entries = SideEntries::default();
        let mut scan = segment::scan(
            &*file,
            base,
            len,
            opts.index_interval_bytes,
            &mut |f, pos| entries.observe(opts, base, f, pos),
        )
        .map_err(io_err(&path))?;
        report.scanned_bytes += len;
        let mut stop_here = false;
        if let Some(damage) = scan.damage.clone() {
            let damage = &damage;
            let dropped = len - damage.position;
            let cut = if last && damage.torn {
                cut_at(&path, damage, dropped, Vec::new())
            } else {
                refuse_or_repair(io, dir, opts, &path, damage, len, &bases[i + 1..])?
            };
            file.truncate(damage.position).map_err(io_err(&path))?;
            file.sync().map_err(io_err(&path))?;
            let rescan = damage.partial_append > 0;
            if last && damage.torn {
                report.torn_tail = Some(cut);
            } else {
                report.repaired = Some(cut);
            }
            stop_here = true;
            if rescan {
                // The frames of the cut append were indexed by the scan: index what is left.
                entries = SideEntries::default();
                scan = segment::scan(
                    &*file,
                    base,
                    damage.position,
                    opts.index_interval_bytes,
                    &mut |f, pos| entries.observe(opts, base, f, pos),
                )
                .map_err(io_err(&path))?;
            }
        }
        if last || stop_here {
            let _ = io.remove(&index_path);
            side::remove(opts, dir, base);
            let active = Active {
                path,
                file,
                index: scan.index,
                ids: entries.ids,
                keys: entries.keys,
            };
            return finish(sealed, active, report, started);
        }
        let summary = scan.index.summary;
        index::write(io, &index_path, &summary, &scan.index.entries)
            .map_err(io_err(&index_path))?;
        let (_, index) =
            index::load(io, &index_path, base, len).ok_or_else(|| LogError::Corrupt {
                path: index_path.clone(),
                position: 0,
                reason: "a rebuilt index does not read back".into(),
            })?;
        report.rebuilt_indexes.push(index_path);
        let sides =
            side::write(opts, dir, &summary, entries).map_err(|(p, e)| LogError::io(p, e))?;
        expected_base = Some(summary.end);
        sealed.push_back(Sealed {
            path,
            file,
            index,
            summary,
            ids: sides.ids,
            keys: sides.keys,
        });
    }
    unreachable_gap()
}

fn unreachable_gap<T>() -> Result<T, LogError> {
    Err(LogError::Corrupt {
        path: PathBuf::new(),
        position: 0,
        reason: "expected a last segment, found none".into(),
    })
}

fn finish(
    sealed: VecDeque<Sealed>,
    active: Active,
    mut report: RecoveryReport,
    started: Instant,
) -> Result<(Segments, RecoveryReport), LogError> {
    report.elapsed = started.elapsed();
    Ok((Segments { sealed, active }, report))
}

/// A sealed segment made active again (a repair removed the segments after it).
fn reopen(prev: Sealed, opts: &LogOptions) -> Result<Active, LogError> {
    let mut entries = SideEntries::default();
    let base = prev.summary.base;
    let scan = segment::scan(
        &*prev.file,
        base,
        prev.summary.len,
        opts.index_interval_bytes,
        &mut |f, pos| entries.observe(opts, base, f, pos),
    )
    .map_err(io_err(&prev.path))?;
    Ok(Active {
        path: prev.path,
        file: prev.file,
        index: scan.index,
        ids: entries.ids,
        keys: entries.keys,
    })
}

fn cut_at(path: &Path, d: &Damage, dropped_bytes: u64, removed_files: Vec<PathBuf>) -> Cut {
    Cut {
        path: path.to_path_buf(),
        position: d.position,
        reason: d.reason.clone(),
        first_dropped: Offset(d.offset),
        dropped_bytes,
        removed_files,
    }
}

/// Refuses to open (strict) or removes the segments after the damaged one (repair).
fn refuse_or_repair(
    io: &dyn Io,
    dir: &Path,
    opts: &LogOptions,
    path: &Path,
    damage: &Damage,
    len: u64,
    later: &[u64],
) -> Result<Cut, LogError> {
    if opts.recovery == Recovery::Strict {
        return Err(LogError::Corrupt {
            path: path.to_path_buf(),
            position: damage.position,
            reason: format!(
                "{} (open with repair to drop it and what follows)",
                damage.reason
            ),
        });
    }
    let mut dropped = len - damage.position;
    let mut removed = Vec::new();
    for &base in later {
        let later_path = segment::log_path(dir, base);
        dropped += io
            .open(&later_path, false)
            .and_then(|f| f.len())
            .unwrap_or(0);
        io.remove(&later_path).map_err(io_err(&later_path))?;
        let _ = io.remove(&segment::index_path(dir, base));
        side::remove(opts, dir, base);
        removed.push(later_path);
    }
    io.sync_dir(dir).map_err(io_err(dir))?;
    let cut = cut_at(path, damage, dropped, removed);
    tracing::warn!(?cut, "log repaired: dropped everything from the damage on");
    Ok(cut)
}
