//! The memory tier of the precompiled cache: the components this host loaded lately, compiled
//! and already checked against the linker, kept in memory (least recently used out first, up to
//! a budget of compiled-code bytes and at most 64) so that loading one again (a swap back to a
//! recent version, a rollback, a redeploy of known bytes) skips reading, verifying and
//! deserializing its precompiled file. On the 2-core machine under load that file path takes
//! 0.3-2 ms for a small plugin; a hit here takes microseconds, and the load is then the first
//! instance.
//!
//! An entry is put only once the component passed every check and instantiated, so a hit needs
//! no check again: the linker and the granted imports do not change while the host lives.

use std::collections::VecDeque;
use std::sync::Mutex;

use super::bindings::Pre as HandlerPre;

/// Most components kept, whatever their size (a lookup scans them).
const MAX_ENTRIES: usize = 64;

/// Recently loaded components, ready to instantiate.
pub(super) struct Recent {
    budget: usize,
    /// Least recently used first.
    entries: Mutex<VecDeque<Entry>>,
}

struct Entry {
    metered: bool,
    hash: String,
    size: usize,
    pre: HandlerPre,
}

impl Recent {
    /// Keeps up to `budget` bytes of compiled code; 0 keeps nothing.
    pub fn new(budget: usize) -> Recent {
        Recent {
            budget,
            entries: Mutex::new(VecDeque::new()),
        }
    }

    /// The component of content `hash` for the engine with or without fuel, if kept.
    pub fn get(&self, metered: bool, hash: &str) -> Option<HandlerPre> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let i = entries
            .iter()
            .position(|e| e.metered == metered && e.hash == hash)?;
        let entry = entries.remove(i)?;
        let pre = entry.pre.clone();
        entries.push_back(entry);
        Some(pre)
    }

    /// Keeps a component that loaded and instantiated, dropping the least recently used ones
    /// over the budget. One larger than the whole budget is not kept.
    pub fn put(&self, metered: bool, hash: &str, pre: &HandlerPre) {
        let range = pre.instance_pre().component().image_range();
        let size = (range.end as usize).saturating_sub(range.start as usize);
        if size > self.budget {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|e| !(e.metered == metered && e.hash == hash));
        entries.push_back(Entry {
            metered,
            hash: hash.to_owned(),
            size,
            pre: pre.clone(),
        });
        let mut total: usize = entries.iter().map(|e| e.size).sum();
        while total > self.budget || entries.len() > MAX_ENTRIES {
            let Some(old) = entries.pop_front() else {
                break;
            };
            total -= old.size;
        }
    }
}
