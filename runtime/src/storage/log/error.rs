//! The errors of the log engine: [`LogError`] for operations on a log, [`DecodeError`] for bytes
//! that are not a valid frame.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::names::Offset;

/// Why bytes could not be decoded as a frame (see `docs/storage-format.md`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the frame needs: a frame header, or the length it declares.
    #[error("truncated frame: expected {expected} bytes, found {found}")]
    Truncated {
        /// Bytes the frame needs.
        expected: usize,
        /// Bytes there are.
        found: usize,
    },
    /// The declared body length is outside what any frame can have.
    #[error("bad frame length: expected {min}..={max} bytes, found {found}")]
    BadLength {
        /// Smallest valid body length.
        min: usize,
        /// Largest valid body length.
        max: usize,
        /// The declared length.
        found: usize,
    },
    /// The checksum does not match the bytes.
    #[error("checksum mismatch: expected crc32c {expected:#010x}, found {found:#010x}")]
    Checksum {
        /// The checksum stored in the frame.
        expected: u32,
        /// The checksum of the bytes.
        found: u32,
    },
    /// The checksum matches but the body does not parse (a bug, or a forged frame).
    #[error("malformed frame body: {0}")]
    Malformed(&'static str),
}

/// Why a log operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// An I/O error outside the write path (open, read, index, retention).
    #[error("i/o error on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: Arc<io::Error>,
    },
    /// The log refuses writes after a failed write or fsync (fail-stop).
    #[error("the log is stopped after a failed {op} of {path}: {source}")]
    Stopped {
        /// `write` or `fsync`.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error the operating system returned.
        source: Arc<io::Error>,
    },
    /// Bytes on disk that are not valid where valid data was expected.
    #[error("corrupt log: {path} at byte {position}: {reason}")]
    Corrupt {
        /// The segment or index file.
        path: PathBuf,
        /// Byte position in that file.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// A record is too large for a frame.
    #[error("record `{id}` too large: {field} is {found} bytes, at most {max} allowed")]
    TooLarge {
        /// The record's id (cut to 64 bytes).
        id: String,
        /// Which field.
        field: &'static str,
        /// Its size.
        found: usize,
        /// The limit.
        max: usize,
    },
    /// A read asked for an offset that retention already removed.
    #[error("offset {requested} was removed by retention: the log starts at {start}")]
    Removed {
        /// The offset asked for.
        requested: Offset,
        /// The first offset still stored.
        start: Offset,
    },
    /// The log was closed.
    #[error("the log is closed")]
    Closed,
    /// `append_dedup` on a log opened without dedup.
    #[error("expected a log opened with dedup for append_dedup, found dedup off")]
    DedupOff,
}

impl LogError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> LogError {
        LogError::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }
}
