//! [`FaultyIo`]: an [`Io`] over the real file system that counts writes and fsyncs and fails
//! them on command, for fault-injection tests of the engine and of the stores built on it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::io::{Io, SegmentFile, StdIo};

/// Counters and switches shared by a [`FaultyIo`] and every file it opened.
#[derive(Debug, Default)]
struct Faults {
    writes: AtomicU64,
    syncs: AtomicU64,
    /// Fail the write whose 1-based number is this (0: never).
    fail_write_at: AtomicU64,
    /// Fail the fsync whose 1-based number is this (0: never).
    fail_sync_at: AtomicU64,
}

/// A file system that fails the n-th write or fsync, and counts both.
///
/// Only the failing call fails: like Linux after a failed `fsync`, later calls may succeed,
/// which is exactly what the engine must not trust.
#[derive(Debug, Default, Clone)]
pub struct FaultyIo {
    faults: Arc<Faults>,
}

impl FaultyIo {
    /// A file system that fails nothing until told.
    pub fn new() -> FaultyIo {
        FaultyIo::default()
    }

    /// Writes done so far, to segment and index files alike.
    pub fn writes(&self) -> u64 {
        self.faults.writes.load(Ordering::SeqCst)
    }

    /// Fsyncs of files done so far (directory fsyncs are not counted).
    pub fn syncs(&self) -> u64 {
        self.faults.syncs.load(Ordering::SeqCst)
    }

    /// Fails the next write call.
    pub fn fail_next_write(&self) {
        let next = self.writes() + 1;
        self.faults.fail_write_at.store(next, Ordering::SeqCst);
    }

    /// Fails the next fsync call.
    pub fn fail_next_sync(&self) {
        let next = self.syncs() + 1;
        self.faults.fail_sync_at.store(next, Ordering::SeqCst);
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Arc<dyn SegmentFile>,
    faults: Arc<Faults>,
    path: PathBuf,
}

fn injected(what: &str, path: &Path) -> io::Error {
    io::Error::other(format!("injected {what} failure on {}", path.display()))
}

impl SegmentFile for FaultyFile {
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        let n = self.faults.writes.fetch_add(1, Ordering::SeqCst) + 1;
        if self.faults.fail_write_at.load(Ordering::SeqCst) == n {
            // A failed write may still have written a part: write half, like a torn write.
            let _ = self.inner.write_at(&buf[..buf.len() / 2], pos);
            return Err(injected("write", &self.path));
        }
        self.inner.write_at(buf, pos)
    }

    fn sync(&self) -> io::Result<()> {
        let n = self.faults.syncs.fetch_add(1, Ordering::SeqCst) + 1;
        if self.faults.fail_sync_at.load(Ordering::SeqCst) == n {
            return Err(injected("fsync", &self.path));
        }
        self.inner.sync()
    }

    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        self.inner.read_at(buf, pos)
    }

    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len)
    }
}

impl Io for FaultyIo {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn SegmentFile>> {
        Ok(Arc::new(FaultyFile {
            inner: StdIo.open(path, create)?,
            faults: self.faults.clone(),
            path: path.to_path_buf(),
        }))
    }

    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdIo.create_dir_all(dir)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        StdIo.list(dir)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        StdIo.remove(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdIo.rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdIo.sync_dir(dir)
    }
}
