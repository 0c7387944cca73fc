//! Parked keys, durable in the store. Under `ordering = "key"` with `poison = "park"`, a message
//! that fails for good parks its key: the engine keeps the key's messages out of its window
//! until an operator unparks it. Each parked key is one key-value entry in the binding's
//! internal namespace ([`BindingName::parked_namespace`], `<binding>~parked`): the entry's key
//! is the message key, its value a JSON object naming the parked message (its offset), the
//! failure that parked it and since when. The engine writes an entry when a key parks and
//! reads them all when it starts, so a parked key stays parked across restarts without its
//! message running again; an unpark deletes entries and tells the engine through [`Parking`].
//!
//! **Invariant (parking):** a parked key's messages do not run until the key is unparked; its
//! entry is submitted when the key parks and read before the engine reads its source, so a
//! restart neither runs the parked message again nor lets a later message of its key overtake
//! it. An unpark resets the parked message's delivery count before its entry is deleted (both
//! in the state journal, in that order), so the message runs again from its first attempt.

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Guarantee;
use crate::names::{BindingName, Offset};
use crate::storage::{Commit, Storage, StorageError};

/// Entries listed from the store at a time.
const PAGE: usize = 1000;

/// One parked key, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedKey {
    /// The message key.
    pub key: String,
    /// The offset, in the binding's source, of the message that failed for good; it runs again
    /// when the key is unparked, then the key's later messages follow in order.
    pub offset: Offset,
    /// Attempts it had made.
    pub attempts: u32,
    /// Its last failure, `attempt N: class: message`.
    pub reason: String,
    /// When the key parked, in ms since the Unix epoch.
    pub since_ms: u64,
}

/// The stored value of a parked key's entry.
#[derive(Debug, Serialize, Deserialize)]
struct Value {
    offset: u64,
    attempts: u32,
    reason: String,
    since_ms: u64,
}

impl ParkedKey {
    fn encode(&self) -> Vec<u8> {
        let value = Value {
            offset: self.offset.0,
            attempts: self.attempts,
            reason: self.reason.clone(),
            since_ms: self.since_ms,
        };
        serde_json::to_vec(&value).expect("a parked key encodes")
    }

    fn decode(binding: &BindingName, key: String, bytes: &[u8]) -> Option<ParkedKey> {
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => Some(ParkedKey {
                key,
                offset: Offset(v.offset),
                attempts: v.attempts,
                reason: v.reason,
                since_ms: v.since_ms,
            }),
            Err(e) => {
                tracing::error!(binding = %binding, key, "ignoring a damaged parked-key entry: {e}");
                None
            }
        }
    }
}

/// The commit that parks a key.
pub(super) fn park(binding: &BindingName, parked: &ParkedKey) -> Commit {
    Commit {
        kv: Some((
            binding.parked_namespace(),
            vec![(parked.key.clone(), Some(parked.encode()))],
        )),
        ..Commit::default()
    }
}

/// The binding's parked keys in key order, at most `limit`.
pub fn parked(storage: &dyn Storage, binding: &BindingName, limit: usize) -> Vec<ParkedKey> {
    let ns = binding.parked_namespace();
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    while out.len() < limit {
        let keys = storage.kv_list(&ns, "", after.as_deref(), PAGE.min(limit - out.len()));
        let Some(last) = keys.last().cloned() else {
            break;
        };
        for key in keys {
            if let Some(bytes) = storage.kv_get(&ns, &key) {
                out.extend(ParkedKey::decode(binding, key, &bytes));
            }
        }
        after = Some(last);
    }
    out
}

/// One parked key, if it is parked.
pub fn parked_key(storage: &dyn Storage, binding: &BindingName, key: &str) -> Option<ParkedKey> {
    let bytes = storage.kv_get(&binding.parked_namespace(), key)?;
    ParkedKey::decode(binding, key.to_owned(), &bytes)
}

/// Unparks keys in the store, durably: their messages' delivery counts are reset (so each runs
/// again from its first attempt), then their entries are deleted in one commit. The running
/// engine releases them once told through [`Parking::released`].
pub fn unpark(
    storage: &dyn Storage,
    binding: &BindingName,
    guarantee: Guarantee,
    keys: &[ParkedKey],
) -> Result<(), StorageError> {
    if keys.is_empty() {
        return Ok(());
    }
    if guarantee != Guarantee::AtMostOnce {
        // In the journal before the deletes, so durable when they are.
        let counts: Vec<(Offset, u32)> = keys.iter().map(|k| (k.offset, 0)).collect();
        storage.set_deliveries(binding, &counts)?;
    }
    let deletes = keys.iter().map(|k| (k.key.clone(), None)).collect();
    storage.commit(Commit {
        kv: Some((binding.parked_namespace(), deletes)),
        ..Commit::default()
    })?;
    Ok(())
}

/// What a server shares with one binding's engine about parked keys: the signal that keys were
/// unparked in the store (the engine then releases every key it holds that is no longer
/// stored as parked).
#[derive(Debug)]
pub struct Parking {
    released: watch::Sender<u64>,
}

impl Default for Parking {
    fn default() -> Parking {
        Parking {
            released: watch::Sender::new(0),
        }
    }
}

impl Parking {
    /// Tells the engine that keys were unparked in the store ([`unpark`]).
    pub fn released(&self) {
        self.released.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A receiver that sees every later [`Parking::released`].
    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.released.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn parked_at(key: &str, offset: u64) -> ParkedKey {
        ParkedKey {
            key: key.to_owned(),
            offset: Offset(offset),
            attempts: 3,
            reason: "attempt 3: trap: boom".to_owned(),
            since_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn parked_keys_are_stored_listed_and_unparked() {
        let storage = MemoryStorage::new();
        let b = BindingName::new("q.p").unwrap();
        let other = BindingName::new("q.other").unwrap();
        for (key, offset) in [("b", 7), ("a", 3), ("c", 9)] {
            storage.commit(park(&b, &parked_at(key, offset))).unwrap();
        }
        let keys: Vec<String> = parked(&storage, &b, 100)
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, ["a", "b", "c"]);
        assert_eq!(parked(&storage, &b, 2).len(), 2);
        assert!(parked(&storage, &other, 100).is_empty());
        assert_eq!(parked_key(&storage, &b, "b"), Some(parked_at("b", 7)));
        assert_eq!(parked_key(&storage, &b, "zz"), None);

        storage.begin_deliveries(&b, &[Offset(3)]).unwrap();
        let a = parked_key(&storage, &b, "a").unwrap();
        unpark(&storage, &b, Guarantee::AtLeastOnce, &[a]).unwrap();
        let keys: Vec<String> = parked(&storage, &b, 100)
            .into_iter()
            .map(|p| p.key)
            .collect();
        assert_eq!(keys, ["b", "c"]);
        assert_eq!(
            storage.begin_deliveries(&b, &[Offset(3)]).unwrap(),
            [1],
            "the unparked message starts from its first attempt"
        );
    }

    #[test]
    fn a_damaged_entry_is_skipped() {
        let storage = MemoryStorage::new();
        let b = BindingName::new("q.p").unwrap();
        storage.commit(park(&b, &parked_at("a", 1))).unwrap();
        storage
            .commit(Commit {
                kv: Some((
                    b.parked_namespace(),
                    vec![("b".into(), Some(b"{".to_vec()))],
                )),
                ..Commit::default()
            })
            .unwrap();
        assert_eq!(parked(&storage, &b, 100), [parked_at("a", 1)]);
    }
}
