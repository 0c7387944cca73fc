//! The durable log engine: one [`Log`] is one directory of segment files holding one queue,
//! topic or stream partition, with dense `u64` offsets, group commit, fail-stop on a failed write
//! or fsync, reads by offset and timestamp, tail following, recovery on open and retention.
//! The format on disk is `docs/storage-format.md`.
//!
//! **Invariant:** an append is acknowledged only after an `fdatasync` that started after its
//! batch was written returned (with [`Durability::Always`]); readers never see a record before it
//! is acknowledged.
//!
//! **Invariant:** after a failed write or fsync the log accepts nothing more; every append not
//! acknowledged by then fails with [`LogError::Stopped`].

mod compact;
mod dedup;
mod error;
mod faulty;
mod frame;
mod hash;
mod hashindex;
mod idmap;
mod index;
mod io;
mod keys;
mod options;
mod read;
mod recovery;
mod retention;
mod segment;
mod shared;
mod side;
mod ticket;
mod waiters;
mod writer;

#[cfg(test)]
mod compact_tests;
#[cfg(test)]
mod dedup_tests;
#[cfg(test)]
mod keys_tests;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;

use tokio::sync::watch;

pub use compact::Compacted;
pub use dedup::{DedupFuture, DedupTicket, Deduped};
pub use error::{DecodeError, LogError};
pub use faulty::FaultyIo;
pub use frame::{Frame, decode_frame};
pub use hashindex::{HashEntry, IndexError, Kind as HashIndexKind, decode as decode_hash_index};
pub use io::{FSYNCS, Io, SegmentFile, StdIo};
pub use options::{Durability, LogOptions, Recovery};
pub use read::Entry;
pub use recovery::{Cut, RecoveryReport};
pub use retention::Freed;
pub use ticket::{AppendFuture, AppendTicket, Appended};

use self::idmap::IdMap;
use self::shared::{Pending, Progress, Shared, SyncQueue, lock};
use crate::names::Offset;
use crate::storage::Record;

/// One durable append-only log. Cheap to share behind an `Arc`; every method takes `&self`.
/// Dropping it drains pending appends, fsyncs and stops its threads.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Log {
    /// Opens the log in `dir`, creating it if missing, after recovery (see [`RecoveryReport`]).
    pub fn open(
        dir: impl Into<PathBuf>,
        opts: LogOptions,
    ) -> Result<(Log, RecoveryReport), LogError> {
        let dir = dir.into();
        let (segments, report) = recovery::open(&dir, &opts)?;
        let end = segments.active.index.summary.end;
        let ids = opts.dedup.then(|| {
            let active = &segments.active;
            let mut ids = IdMap::new(active.index.summary.base);
            for e in &active.ids {
                ids.insert(
                    e.hash,
                    active.index.summary.base + u64::from(e.relative_offset),
                );
            }
            ids
        });
        let (end_tx, _) = watch::channel(Offset(end));
        let sync_threads = opts.sync_threads;
        let shared = Arc::new(Shared {
            dir,
            opts,
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                buf_first: end,
                next_offset: end,
                closed: false,
                stopped: None,
                hashes: Vec::new(),
                ids,
                space_waiters: 0,
            }),
            writer_cv: Condvar::new(),
            space_cv: Condvar::new(),
            segments: RwLock::new(segments),
            progress: Mutex::new(Progress {
                committed: end,
                stopped: None,
                waiters: Default::default(),
                written: end,
                written_waiters: Default::default(),
            }),
            committed: AtomicU64::new(end),
            end_tx,
            sync_queue: Mutex::new(SyncQueue::default()),
            sync_cv: Condvar::new(),
            maintenance: Mutex::new(()),
        });
        let mut threads = Vec::new();
        let dir = shared.dir.clone();
        let spawn = |name: &str, f: fn(Arc<Shared>), shared: Arc<Shared>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(shared))
                .map_err(|e| LogError::io(&dir, e))
        };
        threads.push(spawn(
            "weir-log-writer",
            writer::run_writer,
            shared.clone(),
        )?);
        for _ in 0..sync_threads {
            threads.push(spawn("weir-log-sync", writer::run_syncer, shared.clone())?);
        }
        Ok((Log { shared, threads }, report))
    }

    /// Appends `records` in order, one offset each. The records are encoded here, in the
    /// caller's thread; the returned ticket completes when they are acknowledged. Blocks only
    /// while `max_pending_bytes` of earlier appends wait for the writer (backpressure).
    pub fn append(&self, records: &[Record]) -> AppendTicket {
        let mut total = 0;
        for r in records {
            match frame::encoded_len(r) {
                Ok(len) => total += len,
                Err(e) => return AppendTicket::ready(Err(e)),
            }
        }
        let shared = &self.shared;
        // Hashed before taking the lock; on the stack for the common small append.
        let mut small = [[0; 2]; 4];
        let many: Vec<[u64; 2]>;
        let hashes = if records.len() <= small.len() {
            for (h, r) in small.iter_mut().zip(records) {
                *h = shared.hashes(r);
            }
            &small[..records.len()]
        } else {
            many = records.iter().map(|r| shared.hashes(r)).collect();
            &many[..]
        };
        let mut p = match shared.lock_for_append(total, records.len()) {
            Ok(p) => p,
            Err(e) => return AppendTicket::ready(Err(e)),
        };
        let (first, was_empty) = shared.push(&mut p, records.iter(), total, hashes);
        drop(p);
        let appended = Appended {
            first: Offset(first),
            count: records.len() as u64,
        };
        if records.is_empty() {
            return AppendTicket::ready(Ok(appended));
        }
        if was_empty {
            shared.writer_cv.notify_one();
        }
        AppendTicket::waiting(shared.clone(), appended)
    }

    /// The framed size of `record`, or why no log can store it (an id, key or header name
    /// over 65,535 bytes, too many headers, a body over 64 MiB).
    pub fn check_record(record: &Record) -> Result<usize, LogError> {
        frame::encoded_len(record)
    }

    /// A ticket for records appended earlier (part of one [`Log::append`]): it completes when
    /// they are acknowledged, like the append's own ticket.
    pub fn ticket_for(&self, appended: Appended) -> AppendTicket {
        AppendTicket::waiting(self.shared.clone(), appended)
    }

    /// Blocks until every record before `end` is acknowledged (durable, for
    /// `Durability::Always`), or fails if the log stopped first.
    pub fn wait_durable(&self, end: Offset) -> Result<(), LogError> {
        if end.0 == 0 {
            return Ok(());
        }
        let before = Appended {
            first: Offset(end.0 - 1),
            count: 1,
        };
        AppendTicket::waiting(self.shared.clone(), before)
            .wait()
            .map(|_| ())
    }

    /// Reads up to `max_records` acknowledged records from `from` (stopping once about
    /// `max_bytes` of frames were read, but returning at least one record if there is one).
    /// Empty at the end of the log; [`LogError::Removed`] before its start.
    pub fn read(
        &self,
        from: Offset,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        self.shared.read(from, max_records, max_bytes)
    }

    /// The first acknowledged offset whose record's timestamp is at or after `ts_ms`, if any.
    pub fn offset_for_timestamp(&self, ts_ms: u64) -> Result<Option<Offset>, LogError> {
        self.shared.offset_for_timestamp(ts_ms)
    }

    /// A receiver of the end offset (the offset after the last acknowledged record), updated on
    /// every acknowledgement: wait on `changed()` to follow the tail without polling.
    pub fn watch_end(&self) -> watch::Receiver<Offset> {
        self.shared.end_tx.subscribe()
    }

    /// The offset after the last acknowledged record.
    pub fn end(&self) -> Offset {
        Offset(self.shared.committed.load(Ordering::Acquire))
    }

    /// The first offset still stored (0 until retention removes something).
    pub fn start(&self) -> Offset {
        Offset(self.shared.read_segments().start())
    }

    /// Bytes of all segment files.
    pub fn size_bytes(&self) -> u64 {
        self.shared.read_segments().bytes()
    }

    /// The error the log stopped with, if it stopped.
    pub fn stopped(&self) -> Option<LogError> {
        self.shared.stopped()
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Removes the sealed segments whose records all lie before `offset`.
    pub fn delete_before(&self, offset: Offset) -> Result<Freed, LogError> {
        self.shared.remove_front(|s, _| s.summary.end <= offset.0)
    }

    /// Removes the sealed segments whose newest record is older than `cutoff_ms` (milliseconds
    /// since the Unix epoch).
    pub fn delete_older_than(&self, cutoff_ms: u64) -> Result<Freed, LogError> {
        self.shared
            .remove_front(|s, _| s.summary.max_ts < cutoff_ms)
    }

    /// Removes the oldest sealed segments while the log holds more than `max_bytes`.
    pub fn delete_to_fit(&self, max_bytes: u64) -> Result<Freed, LogError> {
        self.shared.remove_front(|_, left| left > max_bytes)
    }

    /// Drains pending appends, fsyncs and stops the log's threads.
    pub fn close(self) -> Result<(), LogError> {
        let shared = self.shared.clone();
        drop(self);
        shared.stopped().map_or(Ok(()), Err)
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        lock(&self.shared.pending).closed = true;
        self.shared.writer_cv.notify_all();
        self.shared.space_cv.notify_all();
        if !self.threads.is_empty() {
            // The writer is the first thread; it drains and fsyncs before the others stop.
            let _ = self.threads.remove(0).join();
        }
        lock(&self.shared.sync_queue).closed = true;
        self.shared.sync_cv.notify_all();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
