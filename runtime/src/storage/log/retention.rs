//! Retention primitives: remove whole sealed segments from the front of a log, by offset, by
//! age (record timestamps) or by total size, with their index, `.ids` and `.keys` files. Files
//! are really removed, so disk is freed (a reader still holding a removed segment open finishes
//! its read).

use super::error::LogError;
use super::segment;
use super::shared::{Sealed, Shared};
use crate::names::Offset;

/// What a retention call removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Freed {
    /// Segments removed.
    pub segments: usize,
    /// Records removed.
    pub records: u64,
    /// Bytes of segment and index files removed.
    pub bytes: u64,
    /// The first offset the log holds now.
    pub start: Offset,
}

impl Shared {
    /// Removes sealed segments from the front while `drop(segment, bytes of the log left)`.
    pub(crate) fn remove_front(
        &self,
        mut drop: impl FnMut(&Sealed, u64) -> bool,
    ) -> Result<Freed, LogError> {
        let _maintenance = super::shared::lock(&self.maintenance);
        let (removed, start) = {
            let mut segments = self.write_segments();
            let mut left = segments.bytes();
            let mut removed = Vec::new();
            while let Some(front) = segments.sealed.front() {
                if !drop(front, left) {
                    break;
                }
                left -= front.summary.len;
                removed.extend(segments.sealed.pop_front());
            }
            (removed, segments.start())
        };
        let io = &*self.opts.io;
        let mut freed = Freed {
            start: Offset(start),
            ..Freed::default()
        };
        for s in &removed {
            let index = segment::index_path(&self.dir, s.summary.base);
            io.remove(&index).map_err(|e| LogError::io(&index, e))?;
            for side in s.ids.iter().chain([&s.keys]) {
                io.remove(side.path())
                    .map_err(|e| LogError::io(side.path(), e))?;
            }
            io.remove(&s.path).map_err(|e| LogError::io(&s.path, e))?;
            freed.segments += 1;
            freed.records += s.summary.end - s.summary.base;
            freed.bytes += s.file_bytes();
        }
        if !removed.is_empty() {
            io.sync_dir(&self.dir)
                .map_err(|e| LogError::io(&self.dir, e))?;
        }
        Ok(freed)
    }
}
