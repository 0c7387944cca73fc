//! The state one log shares between its handle, its appenders, the writer thread, the sync
//! threads and readers, and the two transitions every one of them relies on: `commit` (records
//! become acknowledged and visible) and `stop` (fail-stop after a failed write or fsync).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};

use tokio::sync::watch;

use super::error::LogError;
use super::index::{IndexBuilder, IndexFile, Summary};
use super::io::SegmentFile;
use super::options::LogOptions;
use super::waiters::Waiters;
use crate::names::Offset;

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
}

/// What has been acknowledged, and whether the log stopped.
#[derive(Debug)]
pub(crate) struct Progress {
    pub committed: u64,
    pub stopped: Option<LogError>,
    pub waiters: Waiters,
}

/// A sealed segment: immutable, with a persisted index.
#[derive(Debug, Clone)]
pub(crate) struct Sealed {
    pub path: PathBuf,
    pub file: Arc<dyn SegmentFile>,
    pub index: IndexFile,
    pub summary: Summary,
}

/// The segment being appended to; its index lives in memory until it is sealed.
#[derive(Debug)]
pub(crate) struct Active {
    pub path: PathBuf,
    pub file: Arc<dyn SegmentFile>,
    pub index: IndexBuilder,
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
        drop(progress);
        self.end_tx.send_modify(|_| {});
        lock(&self.sync_queue).closed = true;
        self.sync_cv.notify_all();
    }

    /// The error the log stopped with, if it did.
    pub fn stopped(&self) -> Option<LogError> {
        lock(&self.progress).stopped.clone()
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
