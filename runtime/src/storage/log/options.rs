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
    pub(crate) verify_sealed: bool,
    pub(crate) io: Arc<dyn Io>,
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
            verify_sealed: false,
            io: Arc::new(StdIo),
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

    /// Scan and verify every sealed segment on open instead of trusting its index. Default: off
    /// (only the active segment is scanned; a sealed segment's damage surfaces on read).
    #[must_use]
    pub fn verify_sealed(mut self, verify: bool) -> LogOptions {
        self.verify_sealed = verify;
        self
    }

    /// The file system underneath. Default: [`StdIo`].
    #[must_use]
    pub fn io(mut self, io: Arc<dyn Io>) -> LogOptions {
        self.io = io;
        self
    }
}
