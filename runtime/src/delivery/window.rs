//! The messages a binding has read and not finished, and which of them may run next under the
//! binding's ordering. Pure bookkeeping: no I/O, no clock of its own.
//!
//! **Invariant (ordering):** under `fifo`, a message is selected only when every earlier message
//! in the window has been handled (its commit submitted); under `key`, only when every earlier
//! message of its key has. A message that waits to retry or is running holds what comes after
//! it; a handled message whose commit is still becoming durable does not (its effects are
//! already visible to later invocations). A parked key has no message in the window at all:
//! every message of it read is left out until the key is unparked, when its parked message is
//! put back and the rest are read again.

use std::collections::{BTreeMap, HashMap, HashSet};

use tokio::time::Instant;

use crate::config::Ordering;
use crate::names::Offset;
use crate::storage::Stored;

/// Where a message in the window stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Read, not run yet (or skipped behind a failure of its key in the same batch).
    Waiting,
    /// Handed to an invocation lane.
    Running,
    /// Failed; runs again at the instant.
    RetryAt(Instant),
    /// Handled; its commit is becoming durable.
    Committing,
}

#[derive(Debug)]
pub(super) struct Entry {
    pub stored: Stored,
    pub phase: Phase,
    /// Times selected to run in this process.
    pub tries: u32,
    /// Failures so far, oldest first, as `class: reason` (the dead-letter history).
    pub failures: Vec<String>,
}

/// Failures kept per message for the dead-letter history.
const HISTORY: usize = 10;

#[derive(Debug)]
pub(super) struct Window {
    ordering: Ordering,
    entries: BTreeMap<Offset, Entry>,
    /// Parked keys and the offsets of their parked messages. No message of a parked key is
    /// kept in the window (so parked keys cannot fill it); they are read again when the key is
    /// unparked.
    parked: HashMap<String, Offset>,
}

impl Window {
    pub fn new(ordering: Ordering) -> Window {
        Window {
            ordering,
            entries: BTreeMap::new(),
            parked: HashMap::new(),
        }
    }

    /// Messages in the window (parked keys' messages are not in it).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Parked keys.
    pub fn parked_keys(&self) -> usize {
        self.parked.len()
    }

    /// The parked keys.
    pub fn parked(&self) -> impl Iterator<Item = &str> {
        self.parked.keys().map(String::as_str)
    }

    /// Adds a message read from the source, unless its key is parked or it is in the window
    /// already (read again after an unpark).
    pub fn push(&mut self, stored: Stored) {
        if let Some(key) = stored.record.key.as_deref()
            && self.parked.contains_key(key)
        {
            return;
        }
        if self.entries.contains_key(&stored.offset) {
            return;
        }
        self.entries.insert(
            stored.offset,
            Entry {
                stored,
                phase: Phase::Waiting,
                tries: 0,
                failures: Vec::new(),
            },
        );
    }

    pub fn get(&self, offset: Offset) -> Option<&Entry> {
        self.entries.get(&offset)
    }

    pub fn set(&mut self, offset: Offset, phase: Phase) {
        if let Some(e) = self.entries.get_mut(&offset) {
            e.phase = phase;
        }
    }

    /// Puts back a selected message that did not run.
    pub fn unselect(&mut self, offset: Offset) {
        if let Some(e) = self.entries.get_mut(&offset) {
            e.phase = Phase::Waiting;
            e.tries = e.tries.saturating_sub(1);
        }
    }

    /// Records a failure in the message's history (the oldest beyond [`HISTORY`] dropped).
    pub fn failed(&mut self, offset: Offset, what: String) {
        if let Some(e) = self.entries.get_mut(&offset) {
            if e.failures.len() == HISTORY {
                e.failures.remove(0);
            }
            e.failures.push(what);
        }
    }

    /// Parks the message's key: the message and the key's later messages leave the window.
    /// Returns the key (`None` for a message without one, or not in the window, which stays).
    pub fn park(&mut self, offset: Offset) -> Option<String> {
        let key = self.entries.get(&offset)?.stored.record.key.clone()?;
        self.park_key(key.clone(), offset);
        Some(key)
    }

    /// Parks `key` at the message at `offset` (also for a key found parked in the store): that
    /// message and the key's later ones leave the window (earlier ones are handled already).
    pub fn park_key(&mut self, key: String, offset: Offset) {
        self.entries
            .retain(|o, e| *o < offset || e.stored.record.key.as_deref() != Some(key.as_str()));
        self.parked.insert(key, offset);
    }

    /// Unparks a key; returns the offset of its parked message, to be read again with the
    /// key's later messages.
    pub fn unpark(&mut self, key: &str) -> Option<Offset> {
        self.parked.remove(key)
    }

    /// Removes a finished message.
    pub fn finish(&mut self, offset: Offset) {
        self.entries.remove(&offset);
    }

    /// The earliest retry instant.
    pub fn next_retry(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| match e.phase {
                Phase::RetryAt(at) => Some(at),
                _ => None,
            })
            .min()
    }

    /// Selects up to `max` messages that may run now, in source order, and marks them running.
    pub fn select(&mut self, now: Instant, max: usize) -> Vec<Offset> {
        let mut out = Vec::new();
        let mut held_keys: HashSet<&str> = HashSet::new();
        for (offset, e) in &self.entries {
            if out.len() >= max {
                break;
            }
            let holds = match e.phase {
                Phase::Running => true,
                Phase::RetryAt(at) => at > now,
                Phase::Waiting | Phase::Committing => false,
            };
            let runnable = match e.phase {
                Phase::Waiting => true,
                Phase::RetryAt(at) => at <= now,
                _ => false,
            };
            match self.ordering {
                Ordering::None => {}
                Ordering::Fifo => {
                    if holds {
                        break;
                    }
                }
                Ordering::Key => {
                    if let Some(key) = e.stored.record.key.as_deref() {
                        if held_keys.contains(key) {
                            continue;
                        }
                        if holds {
                            held_keys.insert(key);
                            continue;
                        }
                    }
                }
            }
            if runnable {
                out.push(*offset);
            }
        }
        for o in &out {
            if let Some(e) = self.entries.get_mut(o) {
                e.phase = Phase::Running;
                e.tries += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::storage::Record;

    fn stored(offset: u64, key: Option<&str>) -> Stored {
        Stored {
            offset: Offset(offset),
            record: Arc::new(Record {
                id: offset.to_string(),
                key: key.map(str::to_owned),
                headers: vec![],
                payload: vec![],
                timestamp_ms: 0,
                reply_to: None,
                correlation_id: None,
            }),
        }
    }

    fn window(ordering: Ordering, keys: &[Option<&str>]) -> Window {
        let mut w = Window::new(ordering);
        for (i, k) in keys.iter().enumerate() {
            w.push(stored(i as u64, *k));
        }
        w
    }

    fn offsets(v: &[u64]) -> Vec<Offset> {
        v.iter().map(|o| Offset(*o)).collect()
    }

    #[test]
    fn key_ordering_holds_a_retrying_key_and_lets_others_flow() {
        let now = Instant::now();
        let mut w = window(
            Ordering::Key,
            &[Some("a"), Some("b"), Some("a"), None, Some("b")],
        );
        assert_eq!(w.select(now, 100), offsets(&[0, 1, 2, 3, 4]));
        w.set(Offset(0), Phase::RetryAt(now + Duration::from_secs(1)));
        w.set(Offset(2), Phase::Waiting); // skipped behind it
        w.set(Offset(1), Phase::Committing);
        w.finish(Offset(3));
        w.set(Offset(4), Phase::Waiting);
        assert_eq!(w.select(now, 100), offsets(&[4]), "b flows, a waits");
        w.set(Offset(4), Phase::Committing);
        let later = now + Duration::from_secs(1);
        assert_eq!(w.select(later, 100), offsets(&[0, 2]), "a resumes in order");
    }

    #[test]
    fn fifo_stops_at_the_first_unhandled_message() {
        let now = Instant::now();
        let mut w = window(Ordering::Fifo, &[None, None, None]);
        assert_eq!(w.select(now, 2), offsets(&[0, 1]));
        assert!(
            w.select(now, 2).is_empty(),
            "running messages hold the rest"
        );
        w.set(Offset(0), Phase::Committing);
        w.set(Offset(1), Phase::RetryAt(now + Duration::from_millis(5)));
        assert!(w.select(now, 10).is_empty());
        assert_eq!(
            w.select(now + Duration::from_millis(5), 10),
            offsets(&[1, 2])
        );
    }

    #[test]
    fn none_runs_everything_that_is_due() {
        let now = Instant::now();
        let mut w = window(Ordering::None, &[Some("a"), Some("a")]);
        w.set(Offset(0), Phase::RetryAt(now + Duration::from_secs(1)));
        assert_eq!(w.select(now, 10), offsets(&[1]));
    }

    #[test]
    fn a_parked_key_keeps_its_messages_out_until_unparked() {
        let now = Instant::now();
        let mut w = window(Ordering::Key, &[Some("a"), Some("a"), Some("b")]);
        assert_eq!(w.select(now, 1), offsets(&[0]));
        assert_eq!(w.park(Offset(0)).as_deref(), Some("a"));
        w.push(stored(3, Some("a")));
        w.push(stored(4, Some("b")));
        assert_eq!(w.len(), 2, "b's two messages");
        assert_eq!(w.parked().collect::<Vec<_>>(), ["a"]);
        assert_eq!(w.select(now, 10), offsets(&[2, 4]));

        assert_eq!(w.unpark("a"), Some(Offset(0)));
        assert_eq!(w.unpark("a"), None);
        for o in [0, 1, 3] {
            w.push(stored(o, Some("a")));
        }
        w.push(stored(4, Some("b")));
        assert_eq!(w.len(), 5, "read again: a's three, b's two (not twice)");
        w.set(Offset(2), Phase::Committing);
        w.set(Offset(4), Phase::Committing);
        assert_eq!(w.select(now, 10), offsets(&[0, 1, 3]), "a resumes in order");
    }

    #[test]
    fn a_key_parked_in_the_store_leaves_the_window() {
        let now = Instant::now();
        let mut w = window(Ordering::Key, &[Some("a"), Some("b"), Some("a")]);
        w.park_key("a".to_owned(), Offset(0));
        assert_eq!(w.len(), 1);
        assert_eq!(w.parked_keys(), 1);
        assert_eq!(w.select(now, 10), offsets(&[1]));
        assert_eq!(w.park(Offset(9)), None, "not in the window");
    }
}
