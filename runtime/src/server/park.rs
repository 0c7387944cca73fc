//! Parked keys of a binding, as the API and `weir stats` show them, and unparking them
//! (`weir binding unpark`, `POST /v1/bindings/{name}/unpark`): the keys' entries are removed
//! from the store ([`crate::delivery::park`]) and the binding's engine is told, which puts each
//! parked message back to run from its first attempt, its key's later messages following in
//! order.

use serde::{Deserialize, Serialize};

use super::Runtime;
use crate::config::BindingConfig;
use crate::delivery::{ParkedKey, park};
use crate::names::{BindingName, NameError};
use crate::storage::StorageError;

/// Parked keys listed per binding in stats (`parked_keys` counts them all).
pub(super) const LISTED: usize = 100;

/// A parked key, as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkedView {
    /// The message key.
    pub key: String,
    /// The offset in the binding's source of the message that failed for good (it runs again
    /// first when the key is unparked).
    pub offset: u64,
    /// Attempts it made.
    pub attempts: u32,
    /// Why: its last failure, `attempt N: class: message`.
    pub reason: String,
    /// Parked since, in ms since the Unix epoch.
    pub since_ms: u64,
    /// Parked since, RFC 3339 (UTC).
    pub since: String,
}

impl From<ParkedKey> for ParkedView {
    fn from(p: ParkedKey) -> ParkedView {
        ParkedView {
            since: crate::ids::rfc3339(p.since_ms),
            key: p.key,
            offset: p.offset.0,
            attempts: p.attempts,
            reason: p.reason,
            since_ms: p.since_ms,
        }
    }
}

/// Why an unpark failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum UnparkError {
    /// The binding name is malformed.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// No binding of that name.
    #[error("no binding named `{0}`")]
    UnknownBinding(String),
    /// The key is not parked.
    #[error("key `{key}` of binding `{binding}` is not parked{why}")]
    NotParked {
        /// The binding.
        binding: BindingName,
        /// The key asked for.
        key: String,
        /// More, when the binding does not park keys at all.
        why: &'static str,
    },
    /// The store failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl UnparkError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            UnparkError::InvalidName(_) => "invalid_name",
            UnparkError::UnknownBinding(_) => "unknown_binding",
            UnparkError::NotParked { .. } => "key_not_parked",
            UnparkError::Storage(_) => "storage_error",
        }
    }
}

impl Runtime {
    /// Unparks `key` of `binding`, or every parked key of it without one, and returns what was
    /// released: each key's parked message runs again from its first attempt, then its later
    /// messages in order. Durable when it returns (blocking: waits for the commit).
    pub fn unpark(&self, binding: &str, key: Option<&str>) -> Result<Vec<ParkedView>, UnparkError> {
        let name = BindingName::new(binding)?;
        let b = self
            .config
            .bindings
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| UnparkError::UnknownBinding(name.to_string()))?;
        // One at a time: a key is read and deleted by one unpark, never reset twice.
        let _one_at_a_time = self.unparking.lock().unwrap_or_else(|e| e.into_inner());
        let keys = match key {
            Some(key) => match park::parked_key(&*self.storage, &b.name, key) {
                Some(parked) => vec![parked],
                None => {
                    return Err(UnparkError::NotParked {
                        binding: b.name.clone(),
                        key: key.to_owned(),
                        why: if parks(b) {
                            ""
                        } else {
                            " (the binding does not park keys: that takes ordering = \"key\" and poison = \"park\")"
                        },
                    });
                }
            },
            None => park::parked(&*self.storage, &b.name, usize::MAX),
        };
        park::unpark(&*self.storage, &b.name, b.guarantee, &keys)?;
        if !keys.is_empty() {
            self.parking[&b.name].released();
            for k in &keys {
                tracing::info!(binding = %b.name, key = k.key, offset = %k.offset, "unparking a key");
            }
        }
        Ok(keys.into_iter().map(ParkedView::from).collect())
    }

    /// The first `limit` parked keys of a binding, in key order.
    pub(super) fn parked_views(&self, b: &BindingConfig, limit: usize) -> Vec<ParkedView> {
        park::parked(&*self.storage, &b.name, limit)
            .into_iter()
            .map(ParkedView::from)
            .collect()
    }
}

/// Whether the binding parks keys that fail for good.
fn parks(b: &BindingConfig) -> bool {
    b.ordering == crate::config::Ordering::Key && b.poison == crate::config::Poison::Park
}
