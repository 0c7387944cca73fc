//! Group commit: the one writer thread that takes every pending frame as one batch and writes it
//! with one positional write, and the sync threads that `fdatasync` written batches.
//!
//! With [`Durability::Always`] a batch is acknowledged only when an `fdatasync` that started
//! after its write returned. The writer does not wait for that fsync: it hands the batch's end to
//! the sync threads (the newest request replaces an older one not yet started) and writes the
//! next batch, so a batch's fsync overlaps the next batch's write and, on file systems that
//! merge concurrent journal commits, other fsyncs. Each sync thread has its own file handle, so
//! a write-back error reaches every fsync caller that could have covered the lost pages.

use std::mem;
use std::sync::Arc;
use std::time::Instant;

use super::error::LogError;
use super::frame::FLAG_KEY;
use super::hashindex::HashEntry;
use super::index;
use super::io::SegmentFile;
use super::options::Durability;
use super::segment;
use super::shared::{Active, Sealed, Shared, SyncJob, lock};
use super::side::{self, SideEntries};

/// Runs the writer until the log is closed (after draining) or stopped.
pub(crate) fn run_writer(shared: Arc<Shared>) {
    let mut batch = Vec::new();
    let mut hashes = Vec::new();
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    loop {
        let (first, end, wake_space) = {
            let mut pending = lock(&shared.pending);
            loop {
                if pending.stopped.is_some() {
                    return;
                }
                if !pending.buf.is_empty() {
                    break;
                }
                if pending.closed {
                    drop(pending);
                    let _ = sync_active(&shared);
                    return;
                }
                match shared.opts.durability {
                    Durability::Interval(every) if unsynced => {
                        let wait = every.saturating_sub(last_sync.elapsed());
                        if wait.is_zero() {
                            break;
                        }
                        pending = shared
                            .writer_cv
                            .wait_timeout(pending, wait)
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .0;
                    }
                    _ => {
                        pending = shared
                            .writer_cv
                            .wait(pending)
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                }
            }
            mem::swap(&mut pending.buf, &mut batch);
            mem::swap(&mut pending.hashes, &mut hashes);
            let first = pending.buf_first;
            pending.buf_first = pending.next_offset;
            (first, pending.next_offset, pending.space_waiters > 0)
        };
        if wake_space {
            shared.space_cv.notify_all();
        }
        if !batch.is_empty() {
            if write_batch(&shared, &batch, &hashes, first).is_err() {
                return;
            }
            shared.written(end);
        }
        batch.clear();
        hashes.clear();
        match shared.opts.durability {
            Durability::Always => {
                let path = shared.read_segments().active.path.clone();
                let (idle, gathering) = {
                    let mut q = lock(&shared.sync_queue);
                    q.latest = Some(SyncJob { path, end });
                    (q.idle > 0, q.gathering)
                };
                if gathering {
                    shared.sync_cv.notify_all();
                } else if idle {
                    shared.sync_cv.notify_one();
                }
            }
            Durability::Interval(every) => {
                shared.commit(end);
                unsynced = true;
                if last_sync.elapsed() >= every {
                    if sync_active(&shared).is_err() {
                        return;
                    }
                    last_sync = Instant::now();
                    unsynced = false;
                }
            }
            Durability::Never => shared.commit(end),
        }
    }
}

/// Writes one batch to the active segment (rolling first if it is full) and indexes it;
/// `hashes` holds the id and key hash of each frame.
fn write_batch(shared: &Shared, batch: &[u8], hashes: &[[u64; 2]], first: u64) -> Result<(), ()> {
    let (file, path, pos) = {
        let segments = shared.read_segments();
        let a = &segments.active;
        let summary = &a.index.summary;
        let full = summary.len >= shared.opts.segment_bytes
            || summary.end - summary.base >= shared.opts.segment_records;
        (!full).then(|| (a.file.clone(), a.path.clone(), a.index.summary.len))
    }
    .map_or_else(|| roll(shared, first), Ok)?;
    let started = Instant::now();
    let written = file.write_at(batch, pos);
    crate::metrics::STORAGE.write.observe(started.elapsed());
    if let Err(e) = written {
        shared.stop(stopped("write", path, e));
        return Err(());
    }
    let dedup = shared.opts.dedup;
    let mut segments = shared.write_segments();
    let active = &mut segments.active;
    let base = active.index.summary.base;
    let mut at = 0;
    let mut i = 0;
    while at + 25 <= batch.len() {
        let f = &batch[at..];
        let len = 8 + u32::from_le_bytes([f[4], f[5], f[6], f[7]]) as usize;
        let offset = u64::from_le_bytes(f[9..17].try_into().unwrap_or_default());
        let ts = u64::from_le_bytes(f[17..25].try_into().unwrap_or_default());
        let position = pos + at as u64;
        active.index.observe(offset, position, ts, len as u64);
        let [id_hash, key_hash] = hashes.get(i).copied().unwrap_or_default();
        let entry = |hash| HashEntry {
            hash,
            relative_offset: (offset - base) as u32,
            position: position as u32,
        };
        if dedup {
            active.ids.push(entry(id_hash));
        }
        if f[8] & FLAG_KEY != 0 {
            active.keys.push(entry(key_hash));
        }
        at += len;
        i += 1;
    }
    Ok(())
}

fn stopped(op: &'static str, path: std::path::PathBuf, e: std::io::Error) -> LogError {
    LogError::Stopped {
        op,
        path,
        source: Arc::new(e),
    }
}

/// Fsyncs the active segment with the writer's handle and acknowledges everything written.
fn sync_active(shared: &Shared) -> Result<(), ()> {
    let (file, path, end) = {
        let s = shared.read_segments();
        (
            s.active.file.clone(),
            s.active.path.clone(),
            s.active.index.summary.end,
        )
    };
    let started = Instant::now();
    let synced = file.sync();
    crate::metrics::STORAGE.fsync.observe(started.elapsed());
    match synced {
        Ok(()) => {
            shared.commit(end);
            Ok(())
        }
        Err(e) => {
            shared.stop(stopped("fsync", path, e));
            Err(())
        }
    }
}

/// Seals the active segment (fsync, persisted index) and starts a new one at `base`.
fn roll(shared: &Shared, base: u64) -> Result<(Arc<dyn SegmentFile>, std::path::PathBuf, u64), ()> {
    sync_active(shared)?;
    let io = &*shared.opts.io;
    let dir = &shared.dir;
    let (summary, entries, old_path, old_file, sides) = {
        let s = shared.read_segments();
        let a = &s.active;
        let sides = SideEntries {
            ids: a.ids.clone(),
            keys: a.keys.clone(),
        };
        (
            a.index.summary,
            a.index.entries.clone(),
            a.path.clone(),
            a.file.clone(),
            sides,
        )
    };
    let pruned: Vec<(u64, u64)> = sides
        .ids
        .iter()
        .map(|e| (e.hash, summary.base + u64::from(e.relative_offset)))
        .collect();
    let index_path = segment::index_path(dir, summary.base);
    let new_path = segment::log_path(dir, base);
    let result = index::write(io, &index_path, &summary, &entries)
        .map_err(|e| stopped("write", index_path.clone(), e))
        .and_then(|()| {
            index::load(io, &index_path, summary.base, summary.len).ok_or_else(|| {
                stopped(
                    "write",
                    index_path.clone(),
                    std::io::Error::other("index reads back wrong"),
                )
            })
        })
        .and_then(|(_, index)| {
            let files = side::write(&shared.opts, dir, &summary, sides)
                .map_err(|(p, e)| stopped("write", p, e))?;
            Ok((index, files))
        })
        .and_then(|(index, files)| {
            let file = io
                .open(&new_path, true)
                .map_err(|e| stopped("write", new_path.clone(), e))?;
            io.sync_dir(dir)
                .map_err(|e| stopped("fsync", dir.clone(), e))?;
            Ok((index, files, file))
        });
    let (index, files, file) = result.map_err(|e| shared.stop(e))?;
    {
        let mut s = shared.write_segments();
        s.sealed.push_back(Sealed {
            path: old_path,
            file: old_file,
            index,
            summary,
            ids: files.ids,
            keys: files.keys,
        });
        s.active = Active {
            path: new_path.clone(),
            file: file.clone(),
            index: index::IndexBuilder::new(base, shared.opts.index_interval_bytes),
            ids: Vec::new(),
            keys: Vec::new(),
        };
    }
    prune_ids(shared, summary.end, &pruned);
    Ok((file, new_path, 0))
}

/// Forgets the ids of a segment just sealed (its `.ids` file is visible now), a chunk at a time
/// so appenders are not held behind the whole segment's worth.
fn prune_ids(shared: &Shared, sealed_end: u64, ids: &[(u64, u64)]) {
    if !shared.opts.dedup {
        return;
    }
    if let Some(map) = lock(&shared.pending).ids.as_mut() {
        map.pruned_below = map.pruned_below.max(sealed_end);
    }
    for chunk in ids.chunks(4096) {
        let mut pending = lock(&shared.pending);
        let Some(map) = pending.ids.as_mut() else {
            return;
        };
        for &(hash, offset) in chunk {
            map.remove(hash, offset);
        }
    }
}

/// A commit delay applies while at least this many records wait for durability (fewer: too
/// few writers in flight for waiting to gather more)...
const GATHER_SIBLINGS: u64 = 8;
/// ...and to an fsync that would cover fewer than this many (a batch this large already
/// shares its fsync well).
const GATHER_FULL: u64 = 64;

/// Runs one sync thread until the log is closed or stopped.
pub(crate) fn run_syncer(shared: Arc<Shared>) {
    let mut handle: Option<(std::path::PathBuf, Arc<dyn SegmentFile>)> = None;
    loop {
        let job = {
            let mut q = lock(&shared.sync_queue);
            let mut job = loop {
                if !q.gathering
                    && let Some(job) = q.latest.take()
                {
                    break job;
                }
                if q.closed {
                    return;
                }
                q.idle += 1;
                q = shared
                    .sync_cv
                    .wait(q)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                q.idle -= 1;
            };
            // Commit delay (PostgreSQL's `commit_delay` with `commit_siblings`): an fsync that
            // would cover only a few records while several are in flight waits a moment for
            // more writes, so concurrent single-record publishers share fsyncs. Never for a
            // lone writer (no siblings) nor for a batch already large.
            let delay = shared.opts.commit_delay;
            let in_flight = job
                .end
                .saturating_sub(shared.committed.load(std::sync::atomic::Ordering::Acquire));
            if !delay.is_zero()
                && in_flight >= GATHER_SIBLINGS
                && job.end.saturating_sub(q.started) < GATHER_FULL
            {
                let deadline = Instant::now() + delay;
                q.gathering = true;
                loop {
                    if let Some(newer) = q.latest.take() {
                        job = newer;
                    }
                    let now = Instant::now();
                    if q.closed
                        || job.end.saturating_sub(q.started) >= GATHER_FULL
                        || now >= deadline
                    {
                        break;
                    }
                    q = shared
                        .sync_cv
                        .wait_timeout(q, deadline - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                }
                q.gathering = false;
                if q.latest.is_some() && q.idle > 0 {
                    shared.sync_cv.notify_one();
                }
            }
            q.started = q.started.max(job.end);
            job
        };
        if handle.as_ref().is_none_or(|(p, _)| *p != job.path) {
            match shared.opts.io.open(&job.path, false) {
                Ok(file) => handle = Some((job.path.clone(), file)),
                // Sealed and fsynced by a roll since, then removed by retention.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return shared.stop(stopped("fsync", job.path, e)),
            }
        }
        let Some((_, file)) = &handle else { return };
        let started = Instant::now();
        let synced = file.sync();
        crate::metrics::STORAGE.fsync.observe(started.elapsed());
        match synced {
            Ok(()) => shared.commit(job.end),
            Err(e) => return shared.stop(stopped("fsync", job.path, e)),
        }
    }
}
