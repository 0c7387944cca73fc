//! Message ids and wall-clock time.

use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh message id: a UUIDv7, so ids sort by creation time.
pub fn new_message_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
