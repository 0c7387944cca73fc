//! Dead letters of a binding: listing those not yet redriven, showing one, and redriving them
//! back to the binding's source.
//!
//! A binding's dead-letter queue keeps every dead letter it ever got (until its retention
//! removes them); a redrive cursor ([`BindingName::redrive_cursor`], durable in the store) says
//! how far the queue has been redriven. Records of other bindings (a `dead_letter` queue may be
//! shared) and records published to the queue by hand are skipped.
//!
//! A redrive reads a batch of dead letters from the cursor, appends their original records
//! (the `weir-dlq-*` headers removed, `weir-redriven-from: <queue>@<offset>` added) to the
//! source with publish dedup, waits until they are durable, then advances the cursor past the
//! batch. Each copy's id is derived from its place in the queue (`redrive:<queue>@<offset>`), so
//! a crash between the two steps makes the next redrive find the copies already stored and
//! append nothing twice.
//!
//! **Invariant:** a dead letter is redriven exactly once: the cursor moves past it only after
//! its copy is durable in the source, and a copy is never stored twice (dedup on its derived
//! id, for as long as the source keeps it).

use crate::config::BindingConfig;
use crate::names::{BindingName, DestinationName, NameError, Offset};
use crate::storage::{Record, Storage, StorageError, Stored};

use super::Runtime;

/// Prefix of the headers a dead letter gets (see the delivery loop).
const DLQ_HEADER_PREFIX: &str = "weir-dlq-";
/// Header naming where a redriven message came from: `<dead-letter queue>@<offset>`.
pub const REDRIVEN_FROM: &str = "weir-redriven-from";
/// Records read from the dead-letter queue at a time.
const BATCH: usize = 256;
/// Most records of the dead-letter queue one listing reads (a shared queue may hold many dead
/// letters of other bindings); the page's `next` says where to go on.
const MAX_SCAN: usize = 10_000;

/// One dead letter, as listed and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its offset in the dead-letter queue.
    pub offset: Offset,
    /// The offset of the original message in the binding's source.
    pub source_offset: Option<u64>,
    /// Attempts made before it was dead-lettered.
    pub attempts: Option<u32>,
    /// Why: a failure class (`handler-error`, `trap`, `timeout`, ...), `dead-letter` (the
    /// handler asked), `retries-exhausted` or `interrupted`.
    pub class: String,
    /// The failure message.
    pub reason: String,
    /// The message id.
    pub id: String,
    /// Its key.
    pub key: Option<String>,
    /// Its headers, without the `weir-dlq-*` ones.
    pub headers: Vec<(String, String)>,
    /// When it was dead-lettered (ms since the Unix epoch).
    pub timestamp_ms: u64,
    /// Its payload.
    pub payload: Vec<u8>,
    /// Whether it was already redriven (its offset is below the redrive cursor).
    pub redriven: bool,
}

/// A page of dead letters not yet redriven.
#[derive(Debug, Clone)]
pub struct DeadLetterPage {
    /// The dead-letter queue.
    pub dead_letter_queue: DestinationName,
    /// The first offset not yet redriven.
    pub redrive_cursor: Offset,
    /// Where to list on from (after the last record read).
    pub next: Offset,
    /// The queue's end offset when listed.
    pub end: Offset,
    /// The dead letters, in queue order.
    pub dead_letters: Vec<DeadLetter>,
}

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redriven {
    /// The binding's source, where they went.
    pub source: DestinationName,
    /// Dead letters sent back to the source.
    pub redriven: u64,
    /// The redrive cursor afterwards.
    pub redrive_cursor: Offset,
}

/// Why a dead-letter request failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum DlqError {
    /// The binding name is malformed.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// No binding of that name.
    #[error("no binding named `{0}`")]
    UnknownBinding(String),
    /// No dead letter of the binding at that offset.
    #[error("no dead letter of binding `{binding}` at offset {offset} of `{queue}`")]
    NotFound {
        /// The binding.
        binding: BindingName,
        /// Its dead-letter queue.
        queue: DestinationName,
        /// The offset asked for.
        offset: Offset,
    },
    /// The binding consumes a stream store, which takes events only with expected revisions:
    /// its dead letters cannot go back into it.
    #[error(
        "binding `{0}` consumes a stream store; its dead letters cannot be appended back to the store (fix the plugin and replay the store to a new binding instead)"
    )]
    StreamSource(String),
    /// The store failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl DlqError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            DlqError::InvalidName(_) => "invalid_name",
            DlqError::UnknownBinding(_) => "unknown_binding",
            DlqError::NotFound { .. } => "dead_letter_not_found",
            DlqError::StreamSource(_) => "stream_source",
            DlqError::Storage(_) => "storage_error",
        }
    }
}

impl Runtime {
    /// Lists up to `limit` dead letters of `binding` not yet redriven, from the redrive cursor
    /// (or `from`, if later).
    pub fn dead_letters(
        &self,
        binding: &str,
        from: Option<Offset>,
        limit: usize,
    ) -> Result<DeadLetterPage, DlqError> {
        let b = self.binding(binding)?;
        Ok(list(&*self.storage, b, from, limit)?)
    }

    /// The dead letter of `binding` at `offset` of its dead-letter queue.
    pub fn dead_letter(&self, binding: &str, offset: Offset) -> Result<DeadLetter, DlqError> {
        show(&*self.storage, self.binding(binding)?, offset)
    }

    /// Redrives up to `limit` (default: all) dead letters of `binding` to its source. Blocking
    /// (waits for fsyncs); one redrive per binding runs at a time.
    pub fn redrive(&self, binding: &str, limit: Option<u64>) -> Result<Redriven, DlqError> {
        let b = self.binding(binding)?;
        if self.config.streams.contains_key(&b.source) {
            return Err(DlqError::StreamSource(b.name.to_string()));
        }
        let _one_at_a_time = self.redrives[&b.name]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let done = redrive(&*self.storage, b, limit)?;
        if done.redriven > 0 {
            tracing::info!(binding = %b.name, redriven = done.redriven, "redrove dead letters");
        }
        Ok(done)
    }

    pub(super) fn binding(&self, name: &str) -> Result<&BindingConfig, DlqError> {
        let name = BindingName::new(name)?;
        self.config
            .bindings
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| DlqError::UnknownBinding(name.to_string()))
    }
}

/// Lists up to `limit` dead letters of `binding` from its redrive cursor (or `from`, if later).
pub fn list(
    storage: &dyn Storage,
    binding: &BindingConfig,
    from: Option<Offset>,
    limit: usize,
) -> Result<DeadLetterPage, StorageError> {
    let queue = &binding.dead_letter;
    let cursor = storage.cursor(&binding.name.redrive_cursor(queue));
    let end = *storage.watch_end(queue)?.borrow();
    let mut next = from.map_or(cursor, |f| f.max(cursor));
    let mut dead_letters = Vec::new();
    let mut scanned = 0;
    'scan: while dead_letters.len() < limit && next < end && scanned < MAX_SCAN {
        let batch = storage.read(queue, next, BATCH)?;
        if batch.is_empty() {
            break;
        }
        for stored in batch {
            if dead_letters.len() >= limit || stored.offset >= end {
                break 'scan;
            }
            scanned += 1;
            next = stored.offset.next();
            if belongs(&stored.record, &binding.name) {
                dead_letters.push(dead_letter(&stored, false));
            }
        }
    }
    Ok(DeadLetterPage {
        dead_letter_queue: queue.clone(),
        redrive_cursor: cursor,
        next,
        end,
        dead_letters,
    })
}

/// The dead letter of `binding` at `offset`, redriven or not.
pub fn show(
    storage: &dyn Storage,
    binding: &BindingConfig,
    offset: Offset,
) -> Result<DeadLetter, DlqError> {
    let queue = &binding.dead_letter;
    let not_found = || DlqError::NotFound {
        binding: binding.name.clone(),
        queue: queue.clone(),
        offset,
    };
    let stored = storage.read(queue, offset, 1)?;
    let stored = stored
        .first()
        .filter(|s| s.offset == offset && belongs(&s.record, &binding.name))
        .ok_or_else(not_found)?;
    let cursor = storage.cursor(&binding.name.redrive_cursor(queue));
    Ok(dead_letter(stored, offset < cursor))
}

/// Redrives up to `limit` (default: all) dead letters of `binding`, up to the queue's end when
/// called: messages dead-lettered again meanwhile wait for the next redrive, so a message that
/// keeps failing cannot make a redrive run forever. Callers run one redrive per binding at a time.
pub fn redrive(
    storage: &dyn Storage,
    binding: &BindingConfig,
    limit: Option<u64>,
) -> Result<Redriven, StorageError> {
    let queue = &binding.dead_letter;
    let cursor_name = binding.name.redrive_cursor(queue);
    let end = *storage.watch_end(queue)?.borrow();
    let limit = limit.unwrap_or(u64::MAX);
    let mut cursor = storage.cursor(&cursor_name);
    let mut redriven = 0;
    while cursor < end && redriven < limit {
        let batch = storage.read(queue, cursor, BATCH)?;
        if batch.is_empty() {
            break;
        }
        let mut copies = Vec::new();
        let mut next = cursor;
        for stored in &batch {
            if stored.offset >= end || redriven + copies.len() as u64 >= limit {
                break;
            }
            if belongs(&stored.record, &binding.name) {
                copies.push(redriven_copy(queue, stored));
            }
            next = stored.offset.next();
        }
        if next == cursor {
            break;
        }
        redriven += copies.len() as u64;
        if !copies.is_empty() {
            // Durable before the cursor moves; a copy stored by a redrive that crashed before
            // moving the cursor is found by its id and not stored again.
            storage.append_dedup(&binding.source, copies)?;
        }
        storage.advance_cursor(&cursor_name, next)?;
        cursor = next;
    }
    Ok(Redriven {
        source: binding.source.clone(),
        redriven,
        redrive_cursor: cursor,
    })
}

/// Whether a record of the dead-letter queue is a dead letter of `binding`.
fn belongs(record: &Record, binding: &BindingName) -> bool {
    header(record, "weir-dlq-binding") == Some(binding.as_str())
}

fn header<'r>(record: &'r Record, name: &str) -> Option<&'r str> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn dead_letter(stored: &Stored, redriven: bool) -> DeadLetter {
    let r = &stored.record;
    let dlq = |name: &str| header(r, &format!("{DLQ_HEADER_PREFIX}{name}"));
    DeadLetter {
        offset: stored.offset,
        source_offset: dlq("offset").and_then(|v| v.parse().ok()),
        attempts: dlq("attempts").and_then(|v| v.parse().ok()),
        class: dlq("class").unwrap_or_default().to_owned(),
        reason: dlq("reason").unwrap_or_default().to_owned(),
        id: r.id.clone(),
        key: r.key.clone(),
        headers: r
            .headers
            .iter()
            .filter(|(k, _)| !k.starts_with(DLQ_HEADER_PREFIX))
            .cloned()
            .collect(),
        timestamp_ms: r.timestamp_ms,
        payload: r.payload.clone(),
        redriven,
    }
}

/// The original record of a dead letter, as redriven: `weir-dlq-*` headers (and an earlier
/// `weir-redriven-from`) removed, `weir-redriven-from` added, an id derived from the dead
/// letter's place.
fn redriven_copy(queue: &DestinationName, stored: &Stored) -> Record {
    let r = &stored.record;
    let from = format!("{queue}@{}", stored.offset);
    let mut headers: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with(DLQ_HEADER_PREFIX) && k != REDRIVEN_FROM)
        .cloned()
        .collect();
    headers.push((REDRIVEN_FROM.to_owned(), from.clone()));
    Record {
        id: format!("redrive:{from}"),
        key: r.key.clone(),
        headers,
        payload: r.payload.clone(),
        timestamp_ms: crate::ids::now_ms(),
        reply_to: r.reply_to.clone(),
        correlation_id: r.correlation_id.clone(),
    }
}

#[cfg(test)]
mod tests;
