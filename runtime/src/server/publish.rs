//! Validation of messages published from outside (HTTP, CLI): names, sizes, headers.

use crate::names::{DestinationName, NameError, Offset};
use crate::storage::{Record, StorageError};
use crate::validate::{self, Invalid};

pub use crate::validate::{MAX_HEADER_BYTES, MAX_HEADERS};

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
    validate::check(req.key.as_deref(), &req.headers, req.payload.len(), limit).map_err(
        |e| match e {
            Invalid::PayloadTooLarge { size, limit } => PublishError::TooLarge { size, limit },
            e => PublishError::Invalid(e.to_string()),
        },
    )?;
    let id = match req.id {
        Some(id) => {
            validate::check_id(&id).map_err(|e| PublishError::Invalid(e.to_string()))?;
            id
        }
        None => crate::ids::new_message_id(),
    };
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
