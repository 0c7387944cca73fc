//! Validation of messages published from outside (HTTP, CLI): names, sizes, headers.

use crate::names::{DestinationName, NameError, Offset};
use crate::storage::{Record, StorageError};

/// Longest message key, in bytes.
pub const MAX_KEY: usize = 1024;
/// Longest message id, in bytes.
pub const MAX_ID: usize = 256;
/// Most headers per message.
pub const MAX_HEADERS: usize = 64;
/// Most bytes of header names and values per message.
pub const MAX_HEADER_BYTES: usize = 16 << 10;

/// A message to publish.
#[derive(Debug, Clone, Default)]
pub struct PublishRequest {
    /// The body.
    pub payload: Vec<u8>,
    /// Ordering key.
    pub key: Option<String>,
    /// Idempotency key; a fresh one is assigned when absent.
    pub id: Option<String>,
    /// Application headers.
    pub headers: Vec<(String, String)>,
}

/// Where a published message landed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Published {
    /// The destination.
    pub destination: String,
    /// Its offset there.
    pub offset: u64,
    /// Its id.
    pub id: String,
    /// Whether a message with this id was already stored there, so nothing new was stored and
    /// `offset` is the original's.
    pub duplicate: bool,
}

/// Why a publish was refused. Nothing is stored when it is.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The destination name is malformed.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// No queue or topic of that name.
    #[error("no queue or topic named `{0}`")]
    UnknownDestination(String),
    /// The name is a stream store, which takes events only through the stream API.
    #[error(
        "`{0}` is a stream store: append events to it with `POST /v1/streams/{0}/...` (expected revisions), not as messages"
    )]
    StreamStore(String),
    /// The name is weir's own (the reply inbox), which takes only replies from handlers.
    #[error("`{0}` is weir's reply inbox; only replies to requests are appended to it")]
    Reserved(String),
    /// The payload is larger than `server.max_message_size`.
    #[error("payload is {size} bytes; the limit is {limit} (server.max_message_size)")]
    TooLarge {
        /// Payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// A key, id or header is malformed or too large.
    #[error("{0}")]
    Invalid(String),
    /// The destination is at its `max_depth`: its slowest consumer has to catch up first.
    #[error(
        "`{destination}` is full: {depth} messages not yet consumed, max_depth is {max_depth}; retry later"
    )]
    Backpressure {
        /// The destination.
        destination: String,
        /// Its depth (messages stored or being stored, not yet acknowledged by its slowest
        /// binding).
        depth: u64,
        /// Its limit.
        max_depth: u64,
    },
    /// The server is shutting down and takes no new messages.
    #[error("weir is shutting down and takes no new messages; retry against the restarted server")]
    ShuttingDown,
    /// The store refused the write.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl PublishError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            PublishError::InvalidName(_) => "invalid_name",
            PublishError::UnknownDestination(_) => "unknown_destination",
            PublishError::Reserved(_) => "reserved_destination",
            PublishError::StreamStore(_) => "stream_store",
            PublishError::TooLarge { .. } => "payload_too_large",
            PublishError::Invalid(_) => "invalid_message",
            PublishError::Backpressure { .. } => "backpressure",
            PublishError::ShuttingDown => "shutting_down",
            PublishError::Storage(_) => "storage_error",
        }
    }
}

/// Checks a request and turns it into a record.
pub(super) fn validate(
    dest: &str,
    req: PublishRequest,
    limit: usize,
) -> Result<(DestinationName, Record), PublishError> {
    let dest = DestinationName::new(dest)?;
    if req.payload.len() > limit {
        return Err(PublishError::TooLarge {
            size: req.payload.len(),
            limit,
        });
    }
    if let Some(key) = req.key.as_ref().filter(|k| k.len() > MAX_KEY) {
        return Err(PublishError::Invalid(format!(
            "key is {} bytes; the limit is {MAX_KEY}",
            key.len()
        )));
    }
    let id = match req.id {
        Some(id) if id.is_empty() || id.len() > MAX_ID || id.chars().any(char::is_control) => {
            return Err(PublishError::Invalid(format!(
                "message id must be 1 to {MAX_ID} bytes without control characters, found {} bytes",
                id.len()
            )));
        }
        Some(id) => id,
        None => crate::ids::new_message_id(),
    };
    if req.headers.len() > MAX_HEADERS {
        return Err(PublishError::Invalid(format!(
            "{} headers; the limit is {MAX_HEADERS}",
            req.headers.len()
        )));
    }
    let header_bytes: usize = req.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Err(PublishError::Invalid(format!(
            "headers are {header_bytes} bytes; the limit is {MAX_HEADER_BYTES}"
        )));
    }
    for (k, _) in &req.headers {
        let ok = !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(PublishError::Invalid(format!(
                "header name {k:?} must be non-empty and use letters, digits, `-`, `_` and `.`"
            )));
        }
    }
    let record = Record {
        id,
        key: req.key,
        headers: req.headers,
        payload: req.payload,
        timestamp_ms: crate::ids::now_ms(),
        reply_to: None,
        correlation_id: None,
    };
    Ok((dest, record))
}

/// The published-message summary.
pub(super) fn published(
    dest: &DestinationName,
    offset: Offset,
    id: String,
    duplicate: bool,
) -> Published {
    Published {
        destination: dest.to_string(),
        offset: offset.0,
        id,
        duplicate,
    }
}
