//! [`LogOptions`]: how a log is opened (durability, recovery, segment and index sizes, the file
//! system underneath).

use std::sync::Arc;
use std::time::Duration;

use super::io::{Io, StdIo};

/// When an append is acknowledged relative to `fdatasync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Acknowledge only after the batch holding the record is fsynced. Nothing acknowledged is
    /// lost on a crash or power loss.
    Always,
    /// Acknowledge after the write; fsync at least every interval. A power loss (not a process
    /// crash) can lose what was acknowledged in the last interval plus the batch being written.
    Interval(Duration),
    /// Acknowledge after the write; never fsync except when a segment is sealed and on close. A
    /// power loss can lose everything since the last sealed segment.
    Never,
}

/// What open does with damage that is not a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recovery {
    /// Refuse to open, naming the file and byte position (the default).
    #[default]
    Strict,
    /// Keep everything before the damage, drop the rest (of that segment and every later one)
    /// and say what was dropped in the [`super::RecoveryReport`].
    Repair,
}

/// Options for [`super::Log::open`]. Every default is written next to its setter.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub(crate) durability: Durability,
    pub(crate) recovery: Recovery,
    pub(crate) segment_bytes: u64,
    pub(crate) index_interval_bytes: u64,
    pub(crate) max_pending_bytes: usize,
    pub(crate) sync_threads: usize,
    pub(crate) commit_delay: Duration,
    pub(crate) verify_sealed: bool,
    pub(crate) dedup: bool,
    pub(crate) segment_records: u64,
    pub(crate) io: Arc<dyn Io>,
    /// Tests force hash collisions by masking the id and key hashes.
    pub(crate) hash_mask: u64,
}

impl Default for LogOptions {
    fn default() -> LogOptions {
        LogOptions {
            durability: Durability::Always,
            recovery: Recovery::Strict,
            segment_bytes: 256 << 20,
            index_interval_bytes: 4096,
            max_pending_bytes: 64 << 20,
            sync_threads: 4,
            commit_delay: Duration::from_micros(300),
            verify_sealed: false,
            dedup: true,
            segment_records: 1 << 18,
            io: Arc::new(StdIo),
            hash_mask: u64::MAX,
        }
    }
}

impl LogOptions {
    /// Options with every default.
    pub fn new() -> LogOptions {
        LogOptions::default()
    }

    /// When appends are acknowledged. Default: [`Durability::Always`].
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> LogOptions {
        self.durability = durability;
        self
    }

    /// What to do with mid-log damage. Default: [`Recovery::Strict`].
    #[must_use]
    pub fn recovery(mut self, recovery: Recovery) -> LogOptions {
        self.recovery = recovery;
        self
    }

    /// Seal the active segment and start a new one once it holds this many bytes (a segment
    /// exceeds it by at most one batch). Default: 256 MiB; clamped to 1 KiB..=2 GiB.
    #[must_use]
    pub fn segment_bytes(mut self, bytes: u64) -> LogOptions {
        self.segment_bytes = bytes.clamp(1024, 2 << 30);
        self
    }

    /// Bytes between two entries of the sparse offset/timestamp index. Default: 4 KiB.
    #[must_use]
    pub fn index_interval_bytes(mut self, bytes: u64) -> LogOptions {
        self.index_interval_bytes = bytes.max(1);
        self
    }

    /// Encoded bytes waiting for the writer before appenders block. Default: 64 MiB.
    #[must_use]
    pub fn max_pending_bytes(mut self, bytes: usize) -> LogOptions {
        self.max_pending_bytes = bytes.max(1);
        self
    }

    /// Threads that run `fdatasync` for written batches, so a batch's write is not held behind
    /// the previous batch's fsync. Default: 4; at least 1.
    #[must_use]
    pub fn sync_threads(mut self, threads: usize) -> LogOptions {
        self.sync_threads = threads.max(1);
        self
    }

    /// How long an fsync that would cover only a few records, while at least 8 wait for
    /// durability, waits for more writes first (PostgreSQL's `commit_delay` with
    /// `commit_siblings`): concurrent single-record publishers then share fsyncs. A lone writer
    /// and a batch of 64 records or more never wait. Default: 300 µs; zero turns it off.
    #[must_use]
    pub fn commit_delay(mut self, delay: Duration) -> LogOptions {
        self.commit_delay = delay;
        self
    }

    /// Scan and verify every sealed segment on open instead of trusting its index. Default: off
    /// (only the active segment is scanned; a sealed segment's damage surfaces on read).
    #[must_use]
    pub fn verify_sealed(mut self, verify: bool) -> LogOptions {
        self.verify_sealed = verify;
        self
    }

    /// Keep an index of record ids so [`super::Log::append_dedup`] can find a record already
    /// stored with the same id (see `docs/storage-format.md`, "Publish dedup"). Every record of a
    /// log with dedup pays for hashing its id; a log without it refuses `append_dedup`.
    /// Default: on.
    #[must_use]
    pub fn dedup(mut self, dedup: bool) -> LogOptions {
        self.dedup = dedup;
        self
    }

    /// Seal the active segment once it holds this many records, whatever its size. This bounds
    /// the memory of the active segment's id and key indexes. Default: 262,144; at least 16.
    #[must_use]
    pub fn segment_records(mut self, records: u64) -> LogOptions {
        self.segment_records = records.clamp(16, u64::from(u32::MAX));
        self
    }

    /// The file system underneath. Default: [`StdIo`].
    #[must_use]
    pub fn io(mut self, io: Arc<dyn Io>) -> LogOptions {
        self.io = io;
        self
    }

    /// Keeps only the bits of `mask` of every id and key hash, so tests can force collisions.
    #[cfg(test)]
    #[must_use]
    pub(crate) fn hash_mask(mut self, mask: u64) -> LogOptions {
        self.hash_mask = mask;
        self
    }

    /// The hash of an id or key as this log indexes it.
    pub(crate) fn hash(&self, bytes: &[u8]) -> u64 {
        super::hash::hash64(bytes) & self.hash_mask
    }

    /// Records the pending buffer may hold before appenders wait (a quarter of a segment's).
    pub(crate) fn max_pending_records(&self) -> u64 {
        (self.segment_records / 4).max(1)
    }
}
