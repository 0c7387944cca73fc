//! The state one log shares between its handle, its appenders, the writer thread, the sync
//! threads and readers, and the two transitions every one of them relies on: `commit` (records
//! become acknowledged and visible) and `stop` (fail-stop after a failed write or fsync).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use tokio::sync::watch;

use super::error::LogError;
use super::frame;
use super::hashindex::{HashEntry, HashFile};
use super::idmap::IdMap;
use super::index::{IndexBuilder, IndexFile, Summary};
use super::io::SegmentFile;
use super::options::LogOptions;
use super::waiters::Waiters;
use crate::names::Offset;
use crate::storage::Record;

/// Frames encoded by appenders, waiting for the writer to take them as one batch.
#[derive(Debug)]
pub(crate) struct Pending {
    pub buf: Vec<u8>,
    /// Offset of the first frame in `buf`.
    pub buf_first: u64,
    /// Offset the next appended record gets.
    pub next_offset: u64,
    pub closed: bool,
    pub stopped: Option<LogError>,
    /// Per frame in `buf`, in order: the hash of its id (0 without dedup) and of its key (0
    /// without a key), for the writer to index.
    pub hashes: Vec<[u64; 2]>,
    /// The ids of the active segment and of unwritten records (`None` without dedup).
    pub ids: Option<IdMap>,
    /// Appenders waiting on `space_cv` for room: the writer wakes them only when there are
    /// some (a condvar's notify is a futex call even when nobody waits).
    pub space_waiters: usize,
}

/// What has been acknowledged, and whether the log stopped.
#[derive(Debug)]
pub(crate) struct Progress {
    pub committed: u64,
    pub stopped: Option<LogError>,
    pub waiters: Waiters,
    /// End of what the writer has handed to the OS (at least `committed`): safe from a crash
    /// of the process, not yet from one of the machine.
    pub written: u64,
    pub written_waiters: Waiters,
}

/// A sealed segment: immutable, with a persisted index.
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub path: PathBuf,
    pub file: Arc<dyn SegmentFile>,
    pub index: IndexFile,
    pub summary: Summary,
    /// `<base>.ids` (logs with dedup).
    pub ids: Option<HashFile>,
    /// `<base>.keys`.
    pub keys: HashFile,
}

impl Sealed {
    /// Bytes of the segment and its index files.
    pub fn file_bytes(&self) -> u64 {
        self.summary.len
            + (self.index.len() * super::index::ENTRY_LEN + super::index::HEADER_LEN) as u64
            + self.ids.as_ref().map_or(0, HashFile::bytes)
            + self.keys.bytes()
    }
}

/// The segment being appended to; its index lives in memory until it is sealed.
#[derive(Debug)]
pub(crate) struct Active {
    pub path: PathBuf,
    pub file: Arc<dyn SegmentFile>,
    pub index: IndexBuilder,
    /// Id hashes of the written records (logs with dedup), in offset order.
    pub ids: Vec<HashEntry>,
    /// Key hashes of the written records that have a key, in offset order.
    pub keys: Vec<HashEntry>,
}

/// The segments of a log, oldest first.
#[derive(Debug)]
pub(crate) struct Segments {
    pub sealed: VecDeque<Sealed>,
    pub active: Active,
}

impl Segments {
    /// The first offset still stored.
    pub fn start(&self) -> u64 {
        self.sealed
            .front()
            .map_or(self.active.index.summary.base, |s| s.summary.base)
    }

    /// Bytes of all segments.
    pub fn bytes(&self) -> u64 {
        self.sealed.iter().map(|s| s.summary.len).sum::<u64>() + self.active.index.summary.len
    }
}

/// A request to fsync the active segment up to `end` (the newest request replaces older ones).
#[derive(Debug, Clone)]
pub(crate) struct SyncJob {
    pub path: PathBuf,
    pub end: u64,
}

#[derive(Debug, Default)]
pub(crate) struct SyncQueue {
    pub latest: Option<SyncJob>,
    pub closed: bool,
    /// Sync threads waiting on `sync_cv`: the writer wakes one only when one waits (the
    /// others take `latest` when their fsync returns).
    pub idle: usize,
    /// The highest end an fsync has started for.
    pub started: u64,
    /// A sync thread is holding its fsync back for more writes (see `run_syncer`): the others
    /// leave `latest` to it.
    pub gathering: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub dir: PathBuf,
    pub opts: LogOptions,
    pub pending: Mutex<Pending>,
    /// Wakes the writer when `pending` gets frames or is closed.
    pub writer_cv: Condvar,
    /// Wakes appenders waiting for room in `pending`.
    pub space_cv: Condvar,
    pub segments: RwLock<Segments>,
    pub progress: Mutex<Progress>,
    /// `progress.committed`, readable without the lock.
    pub committed: AtomicU64,
    pub end_tx: watch::Sender<Offset>,
    pub sync_queue: Mutex<SyncQueue>,
    pub sync_cv: Condvar,
    /// Serializes compaction and retention (each replaces or removes sealed segment files).
    pub maintenance: Mutex<()>,
}

/// Locks a mutex; a panic in another holder does not make the engine's state invalid (every
/// critical section leaves it consistent), so the poison flag is ignored.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Acknowledges every record before `end` and makes it visible to readers.
    pub fn commit(&self, end: u64) {
        let mut progress = lock(&self.progress);
        if end > progress.committed {
            progress.committed = end;
            self.committed.store(end, Ordering::Release);
            progress.waiters.wake_until(end);
            self.end_tx.send_replace(Offset(end));
        }
    }

    /// Records that everything before `end` was written to the OS.
    pub fn written(&self, end: u64) {
        let mut progress = lock(&self.progress);
        if end > progress.written {
            progress.written = end;
            progress.written_waiters.wake_until(end);
        }
    }

    /// Stops the log: the error is what every unacknowledged and later append fails with.
    pub fn stop(&self, error: LogError) {
        tracing::error!(dir = %self.dir.display(), %error, "log stopped");
        lock(&self.pending)
            .stopped
            .get_or_insert_with(|| error.clone());
        self.space_cv.notify_all();
        self.writer_cv.notify_all();
        let mut progress = lock(&self.progress);
        progress.stopped.get_or_insert(error);
        progress.waiters.wake_all();
        progress.written_waiters.wake_all();
        drop(progress);
        self.end_tx.send_modify(|_| {});
        lock(&self.sync_queue).closed = true;
        self.sync_cv.notify_all();
    }

    /// The error the log stopped with, if it did.
    pub fn stopped(&self) -> Option<LogError> {
        lock(&self.progress).stopped.clone()
    }

    /// Locks the pending buffer once it has room for `bytes` more bytes and `records` more
    /// records (an empty buffer always has room), or fails if the log stopped or closed.
    pub fn lock_for_append(
        &self,
        bytes: usize,
        records: usize,
    ) -> Result<MutexGuard<'_, Pending>, LogError> {
        let max_records = self.opts.max_pending_records();
        let mut p = lock(&self.pending);
        loop {
            if let Some(e) = &p.stopped {
                return Err(e.clone());
            }
            if p.closed {
                return Err(LogError::Closed);
            }
            let queued = p.next_offset - p.buf_first;
            if p.buf.is_empty()
                || (p.buf.len() + bytes <= self.opts.max_pending_bytes
                    && queued + records as u64 <= max_records)
            {
                return Ok(p);
            }
            p.space_waiters += 1;
            p = self
                .space_cv
                .wait(p)
                .unwrap_or_else(PoisonError::into_inner);
            p.space_waiters -= 1;
        }
    }

    /// The id hash (0 without dedup) and key hash (0 without a key) of `record`, as `push`
    /// takes them.
    pub fn hashes(&self, record: &Record) -> [u64; 2] {
        let id = if self.opts.dedup {
            self.opts.hash(record.id.as_bytes())
        } else {
            0
        };
        [
            id,
            record
                .key
                .as_ref()
                .map_or(0, |k| self.opts.hash(k.as_bytes())),
        ]
    }

    /// Encodes `records` (whose lengths were checked) into the locked pending buffer at the next
    /// offsets, with their `hashes` (from [`Shared::hashes`]), and puts their ids in the id map.
    /// Returns the first offset and whether the buffer was empty.
    pub fn push<'r>(
        &self,
        p: &mut Pending,
        records: impl Iterator<Item = &'r Record>,
        total_bytes: usize,
        hashes: &[[u64; 2]],
    ) -> (u64, bool) {
        let first = p.next_offset;
        let was_empty = p.buf.is_empty();
        p.buf.reserve(total_bytes);
        p.hashes.extend_from_slice(hashes);
        let mut offset = first;
        let count = hashes.len();
        for (i, r) in records.enumerate() {
            frame::encode(&mut p.buf, offset, was_empty && i == 0, i + 1 < count, r);
            offset += 1;
        }
        if let Some(ids) = p.ids.as_mut() {
            for (i, h) in hashes.iter().enumerate() {
                ids.insert(h[0], first + i as u64);
            }
        }
        p.next_offset = offset;
        (first, was_empty)
    }

    pub fn read_segments(&self) -> std::sync::RwLockReadGuard<'_, Segments> {
        self.segments.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn write_segments(&self) -> std::sync::RwLockWriteGuard<'_, Segments> {
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}
