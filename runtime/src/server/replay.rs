//! Replay: re-deliver a range of a binding's source to that binding alone.
//!
//! weir's queues and topics are logs, so a range `[from, to)` of the source is still there
//! (within retention). A replay appends a copy of each record of the range to the source, with
//! headers `weir-replayed-from: <source>@<offset>` and `weir-replay-for: <binding>`; every
//! other binding of the source acknowledges such a copy without running its plugin, so only
//! the named binding handles it again, with its own guarantee, ordering, retries and DLQ. A
//! copy's id is `replay:<run>:<offset>` and copies are appended with dedup, so repeating a
//! call with the same run id (a client retrying, or `weir replay` continuing in chunks) stores
//! nothing twice.

use crate::names::{BindingName, NameError, Offset};
use crate::storage::{Record, StorageError};

use super::Runtime;

/// Header naming where a replayed copy came from: `<source>@<offset>`.
pub const REPLAYED_FROM: &str = "weir-replayed-from";
/// Header naming the only binding that handles a replayed copy.
pub const REPLAY_FOR: &str = "weir-replay-for";
/// Records copied per call at most.
pub const MAX_REPLAY_CHUNK: u64 = 10_000;

/// What a replay call did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Replayed {
    /// The binding.
    pub binding: String,
    /// Its source, where the copies went.
    pub source: String,
    /// The run id (ids of the copies are `replay:<run>:<offset>`).
    pub run: String,
    /// First offset of the range.
    pub from: u64,
    /// End of the range (exclusive).
    pub to: u64,
    /// Where the next call of the same run continues (`to` when the range is done).
    pub next: u64,
    /// Copies this call stored (repeats of a run store none again).
    pub replayed: u64,
}

/// Why a replay was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The binding name is malformed.
    #[error(transparent)]
    InvalidName(#[from] NameError),
    /// No binding of that name.
    #[error("no binding named `{0}`")]
    UnknownBinding(String),
    /// The range or run id is not usable.
    #[error("{0}")]
    InvalidRange(String),
    /// The store failed.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
}

impl ReplayError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ReplayError::InvalidName(_) => "invalid_name",
            ReplayError::UnknownBinding(_) => "unknown_binding",
            ReplayError::InvalidRange(_) => "invalid_range",
            ReplayError::Storage(_) => "storage_error",
        }
    }
}

/// Whether a record is a replayed copy meant for another binding than `binding` (a partition
/// of a binding, `<binding>~p<n>` on NATS, takes the copies meant for the binding).
pub fn replayed_for_another(record: &Record, binding: &BindingName) -> bool {
    let base = binding.split_partition().map(|(b, _)| b);
    let name = base.as_ref().unwrap_or(binding);
    record
        .headers
        .iter()
        .any(|(k, v)| k == REPLAY_FOR && v != name.as_str())
}

impl Runtime {
    /// Replays up to `limit` records (at most [`MAX_REPLAY_CHUNK`]) of `[from, to)` of
    /// `binding`'s source to that binding; `to` defaults to the source's end now. Blocking
    /// (waits for fsyncs). `run` names the replay; calls with the same run store each copy once.
    pub fn replay(
        &self,
        binding: &str,
        from: Offset,
        to: Option<Offset>,
        limit: Option<u64>,
        run: &str,
    ) -> Result<Replayed, ReplayError> {
        let name = BindingName::new(binding)?;
        let b = self
            .config
            .bindings
            .iter()
            .find(|b| b.name == name)
            .ok_or_else(|| ReplayError::UnknownBinding(name.to_string()))?;
        if run.is_empty() || run.len() > 128 || !run.chars().all(|c| c.is_ascii_graphic()) {
            return Err(ReplayError::InvalidRange(format!(
                "run id must be 1 to 128 visible ASCII characters, found {run:?}"
            )));
        }
        let source = &b.source;
        if self.config.streams.contains_key(source) {
            return Err(ReplayError::InvalidRange(format!(
                "`{source}` is a stream store: events are appended to it only with expected revisions, so a replay cannot copy them into it"
            )));
        }
        let end = *self.storage.watch_end(source)?.borrow();
        let to = to.unwrap_or(end);
        if to > end {
            return Err(ReplayError::InvalidRange(format!(
                "`to` is {to}, past the end of `{source}` ({end})"
            )));
        }
        if from > to {
            return Err(ReplayError::InvalidRange(format!(
                "`from` ({from}) is after `to` ({to})"
            )));
        }
        let (first, _) = self.storage.usage(source)?;
        let mut next = from.max(first);
        let limit = limit.unwrap_or(MAX_REPLAY_CHUNK).min(MAX_REPLAY_CHUNK);
        let mut replayed = 0;
        let mut copied = 0;
        while next < to && copied < limit {
            let want = (to.0 - next.0).min(limit - copied).min(1000) as usize;
            let batch = self.storage.read(source, next, want)?;
            let Some(last) = batch.last() else { break };
            let after = last.offset.next();
            let copies: Vec<Record> = batch
                .iter()
                .filter(|s| s.offset < to)
                .map(|s| copy(&s.record, source.as_str(), s.offset, &name, run))
                .collect();
            copied += copies.len() as u64;
            if !copies.is_empty() {
                let stored = self.storage.append_dedup(source, copies)?;
                replayed += stored.iter().filter(|(_, dup)| !dup).count() as u64;
            }
            next = after.min(to);
        }
        if replayed > 0 {
            tracing::info!(binding = %name, source = %source, replayed, run, "replayed records");
        }
        Ok(Replayed {
            binding: name.to_string(),
            source: source.to_string(),
            run: run.to_owned(),
            from: from.0,
            to: to.0,
            next: next.max(from).0,
            replayed,
        })
    }
}

fn copy(r: &Record, source: &str, offset: Offset, binding: &BindingName, run: &str) -> Record {
    let mut headers: Vec<(String, String)> = r
        .headers
        .iter()
        .filter(|(k, _)| k != REPLAYED_FROM && k != REPLAY_FOR)
        .cloned()
        .collect();
    headers.push((REPLAYED_FROM.to_owned(), format!("{source}@{offset}")));
    headers.push((REPLAY_FOR.to_owned(), binding.to_string()));
    Record {
        id: format!("replay:{run}:{offset}"),
        key: r.key.clone(),
        headers,
        payload: r.payload.clone(),
        timestamp_ms: crate::ids::now_ms(),
        reply_to: None,
        correlation_id: None,
    }
}
