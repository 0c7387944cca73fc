//! The stream store: many event-sourced streams in one durable log.
//!
//! Every event of a store is one record of the store's log (the log of the `[streams.<name>]`
//! destination): its id is the event id, its key the stream name, and weir's own headers
//! ([`TYPE`], [`REVISION`], [`SCHEMA`], [`CAUSATION`]) carry what the log has no field for. The
//! log offset is the event's *position*: gapless and in commit order across the store, so the
//! log is the store's `$all`. A soft or hard delete is a marker record ([`MARKER`]) in the same
//! log.
//!
//! An in-memory index, rebuilt by one scan of the log when the store opens, maps each stream to
//! the positions of its revisions, each category and event type to its positions, and each event
//! id to where it is stored.
//!
//! **Invariants.**
//! - An append checks its expectations and hands its records to the log under one lock, and
//!   the log makes appends durable in the order they were handed over (a crash keeps a prefix
//!   of them). So no two appends can both succeed against the same expected revision, and
//!   revisions are gapless and never reused, across crashes too.
//! - One append (several events, several streams) is one log append, which survives a crash
//!   whole or not at all (the log's recovery cuts an append whose last record is missing).
//! - An append is answered only once durable; reads see only durable events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{EsNameError, ExpectedRevision, NewEvent, RecordedEvent, StreamName};
use crate::names::{DestinationName, Offset};
use crate::storage::{Commit, CommitTicket, Record, Storage, StorageError, Stored};

/// Header: the event type.
pub const TYPE: &str = "weir-es-type";
/// Header: the event's revision in its stream.
pub const REVISION: &str = "weir-es-revision";
/// Header: the payload's schema version.
pub const SCHEMA: &str = "weir-es-schema";
/// Header: what caused the event.
pub const CAUSATION: &str = "weir-es-causation";
/// Header of a delete marker: `deleted` (soft) or `tombstone` (hard). Its [`REVISION`] is the
/// revision the stream's next event gets.
pub const MARKER: &str = "weir-es-marker";

pub use crate::validate::is_reserved;

/// Most events in one append.
pub const MAX_EVENTS_PER_APPEND: usize = 1000;

/// Events of one stream in an append, with what the append expects of the stream.
#[derive(Debug, Clone)]
pub struct StreamAppend {
    /// The stream.
    pub stream: StreamName,
    /// What the stream must look like for the append to go ahead.
    pub expected: ExpectedRevision,
    /// The events, in order.
    pub events: Vec<NewEvent>,
}

/// What an append stored in one stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Appended {
    /// The stream.
    pub stream: String,
    /// Revision of its first event in this append.
    pub first_revision: u64,
    /// Revision of its last event: the stream's revision after the append.
    pub last_revision: u64,
    /// Position of the first event in the store.
    pub first_position: u64,
    /// Position of the last event in the store.
    pub last_position: u64,
    /// True when every event was already stored (a retried append): nothing was stored again.
    pub duplicate: bool,
}

/// Why an append, a read or a delete was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// A stream name, event type or event id is malformed.
    #[error(transparent)]
    Name(#[from] EsNameError),
    /// Something else about the request is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The stream does not meet the append's (or delete's) expectation; nothing was stored.
    #[error("stream `{stream}` expected revision {expected} but is at {}", actual.map_or("no stream".to_owned(), |r| format!("revision {r}")))]
    WrongExpectedRevision {
        /// The stream.
        stream: String,
        /// What the append expected.
        expected: ExpectedRevision,
        /// The stream's revision (`None`: it has no events).
        actual: Option<u64>,
    },
    /// The stream was hard-deleted: it takes no more events.
    #[error("stream `{0}` is deleted for good (tombstoned); it takes no more events")]
    Tombstoned(String),
    /// The stream has no events (never had, or was soft-deleted).
    #[error("stream `{0}` not found")]
    NotFound(String),
    /// An event id is already stored in another stream, or an append repeats some of an
    /// earlier append's events but not all.
    #[error("{0}")]
    IdConflict(String),
    /// An event is larger than `server.max_message_size`.
    #[error(
        "event `{id}` has a {size}-byte payload; the limit is {limit} (server.max_message_size)"
    )]
    TooLarge {
        /// The event id.
        id: String,
        /// Payload size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The log refused the write or the read.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The store's log holds a record that is not a valid event of it.
    #[error("stream store `{store}`: {message}")]
    Corrupt {
        /// The store.
        store: String,
        /// What is wrong.
        message: String,
    },
}

impl StreamError {
    /// A stable code for API answers.
    pub fn code(&self) -> &'static str {
        match self {
            StreamError::Name(_) => "invalid_name",
            StreamError::Invalid(_) => "invalid_request",
            StreamError::WrongExpectedRevision { .. } => "wrong_expected_revision",
            StreamError::Tombstoned(_) => "stream_deleted",
            StreamError::NotFound(_) => "stream_not_found",
            StreamError::IdConflict(_) => "event_id_conflict",
            StreamError::TooLarge { .. } => "payload_too_large",
            StreamError::Storage(_) => "storage",
            StreamError::Corrupt { .. } => "corrupt",
        }
    }
}

/// One stream in the index.
#[derive(Debug)]
struct Entry {
    name: StreamName,
    /// Revision of `positions[0]` (above 0 once retention removed the oldest events).
    first: u64,
    /// Position of every revision from `first` on.
    positions: Vec<Offset>,
    /// First revision reads see (a soft delete moves it past the last event).
    live_from: u64,
    tombstoned: bool,
}

impl Entry {
    fn new(name: StreamName, first: u64) -> Entry {
        Entry {
            name,
            first,
            positions: Vec::new(),
            live_from: 0,
            tombstoned: false,
        }
    }

    /// The revision the next event gets.
    fn next(&self) -> u64 {
        self.first + self.positions.len() as u64
    }

    /// The revision of the last event reads see; `None` when there is none (no stream).
    fn actual(&self) -> Option<u64> {
        let next = self.next();
        (next > self.live_from.max(self.first)).then(|| next - 1)
    }

    fn position(&self, revision: u64) -> Option<Offset> {
        let i = revision.checked_sub(self.first)?;
        self.positions.get(usize::try_from(i).ok()?).copied()
    }

    fn revision_at(&self, position: Offset) -> Option<u64> {
        self.positions
            .binary_search(&position)
            .ok()
            .map(|i| self.first + i as u64)
    }
}

#[derive(Debug, Default)]
struct Index {
    by_name: HashMap<StreamName, u32>,
    streams: Vec<Entry>,
    /// 128 bits of SHA-256 of each event id → its position and stream.
    ids: HashMap<u128, (Offset, u32)>,
    categories: HashMap<String, Vec<Offset>>,
    types: HashMap<String, Vec<Offset>>,
}

impl Index {
    fn entry_mut(&mut self, name: &StreamName, first: u64) -> (u32, &mut Entry) {
        let i = match self.by_name.get(name) {
            Some(i) => *i,
            None => {
                let i = self.streams.len() as u32;
                self.streams.push(Entry::new(name.clone(), first));
                self.by_name.insert(name.clone(), i);
                i
            }
        };
        (i, &mut self.streams[i as usize])
    }

    fn get(&self, name: &StreamName) -> Option<&Entry> {
        self.by_name.get(name).map(|i| &self.streams[*i as usize])
    }

    fn add_event(&mut self, stream: u32, event_id: &str, event_type: &str, position: Offset) {
        let entry = &mut self.streams[stream as usize];
        entry.positions.push(position);
        let category = entry.name.category().to_owned();
        self.ids.insert(id_hash(event_id), (position, stream));
        self.categories.entry(category).or_default().push(position);
        self.types
            .entry(event_type.to_owned())
            .or_default()
            .push(position);
    }
}

fn id_hash(id: &str) -> u128 {
    let digest = Sha256::digest(id.as_bytes());
    let mut bytes = [0; 16];
    bytes.copy_from_slice(&digest[..16]);
    u128::from_le_bytes(bytes)
}

/// Which events a store-wide read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Filter {
    /// Every event (`$all`).
    #[default]
    All,
    /// Events of streams in one category.
    Category(String),
    /// Events of one type.
    EventType(String),
}

/// A page of one stream.
#[derive(Debug, Clone)]
pub struct StreamPage {
    /// The events, in the order asked for.
    pub events: Vec<RecordedEvent>,
    /// The stream's revision now.
    pub last_revision: u64,
    /// The revision to continue from, when there are more.
    pub next: Option<u64>,
}

/// A page of a store-wide read.
#[derive(Debug, Clone)]
pub struct AllPage {
    /// The events, in position order.
    pub events: Vec<RecordedEvent>,
    /// The position to continue from.
    pub next: Offset,
    /// The store's durable end when the page was read: `next == end` means caught up.
    pub end: Offset,
}

/// A stream store.
#[derive(Debug)]
pub struct StreamStore {
    name: DestinationName,
    storage: Arc<dyn Storage>,
    max_payload: usize,
    max_count: Option<u64>,
    end: watch::Receiver<Offset>,
    index: Mutex<Index>,
}

/// An append handed to the log, not yet durable.
#[must_use = "an append is stored only once durable"]
#[derive(Debug)]
pub struct PendingAppend {
    appended: Vec<Appended>,
    durable: Durable,
}

#[derive(Debug)]
enum Durable {
    /// The log's ticket for this append.
    Ticket(CommitTicket),
    /// A retried append: durable once the store's durable end passes this position.
    After(watch::Receiver<Offset>, u64),
}

/// How long a retried append waits for its original events to become durable.
const ORIGINAL_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl PendingAppend {
    /// Resolves when the append is durable.
    pub async fn durable(self) -> Result<Vec<Appended>, StreamError> {
        match self.durable {
            Durable::Ticket(t) => {
                t.durable().await?;
            }
            Durable::After(mut end, last) => {
                let waited = tokio::time::timeout(ORIGINAL_WAIT, end.wait_for(|e| e.0 > last));
                if !matches!(waited.await, Ok(Ok(_))) {
                    return Err(StreamError::Invalid(
                        "the original events of this retried append did not become durable; retry"
                            .into(),
                    ));
                }
            }
        }
        Ok(self.appended)
    }

    /// What the append stored (or, retried, had stored), before it is durable.
    pub fn appended(&self) -> &[Appended] {
        &self.appended
    }
}

fn check_headers(headers: &[(String, String)]) -> Result<(), StreamError> {
    crate::validate::check_headers(headers).map_err(|e| StreamError::Invalid(e.to_string()))
}

impl StreamStore {
    /// Opens the store over its (already opened) log and rebuilds its index by reading the log
    /// once.
    pub fn open(
        name: DestinationName,
        storage: Arc<dyn Storage>,
        max_payload: usize,
        max_count: Option<u64>,
    ) -> Result<StreamStore, StreamError> {
        let end = storage.watch_end(&name)?;
        let store = StreamStore {
            name,
            storage,
            max_payload,
            max_count,
            end,
            index: Mutex::default(),
        };
        store.rebuild()?;
        Ok(store)
    }

    /// The store's name.
    pub fn name(&self) -> &DestinationName {
        &self.name
    }

    /// How many streams the store has ever had (deleted ones included).
    pub fn stream_count(&self) -> usize {
        self.lock().streams.len()
    }

    fn lock(&self) -> MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn corrupt(&self, message: String) -> StreamError {
        StreamError::Corrupt {
            store: self.name.to_string(),
            message,
        }
    }

    fn rebuild(&self) -> Result<(), StreamError> {
        let (first, _) = self.storage.usage(&self.name)?;
        let end = *self.end.borrow();
        let mut index = self.lock();
        let mut at = first;
        while at < end {
            let batch = self.storage.read(&self.name, at, 4096)?;
            if batch.is_empty() {
                break;
            }
            for s in &batch {
                self.index_record(&mut index, s)?;
                at = s.offset.next();
            }
        }
        Ok(())
    }

    fn index_record(&self, index: &mut Index, s: &Stored) -> Result<(), StreamError> {
        let r = &s.record;
        let bad =
            |what: &str| self.corrupt(format!("the record at position {} {what}", s.offset.0));
        let stream = r
            .key
            .as_deref()
            .and_then(|k| StreamName::new(k).ok())
            .ok_or_else(|| bad("has no valid stream name"))?;
        let header = |name: &str| {
            r.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        let revision: u64 = header(REVISION)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("has no revision"))?;
        let (i, entry) = index.entry_mut(&stream, revision);
        if entry.positions.is_empty() && entry.first < revision {
            // Retention removed this stream's older events (or a marker came first).
            entry.first = revision;
        }
        match header(MARKER) {
            Some("deleted") => {
                entry.live_from = revision;
                return Ok(());
            }
            Some("tombstone") => {
                entry.live_from = revision;
                entry.tombstoned = true;
                return Ok(());
            }
            Some(other) => return Err(bad(&format!("has an unknown marker `{other}`"))),
            None => {}
        }
        if entry.next() != revision {
            return Err(bad(&format!(
                "is revision {revision} of `{stream}`, whose next revision is {}",
                entry.next()
            )));
        }
        let event_type = header(TYPE).ok_or_else(|| bad("has no event type"))?;
        index.add_event(i, &r.id, event_type, s.offset);
        Ok(())
    }

    /// Validates and stores an append of events to one or more streams, all or nothing: each
    /// stream's expectation is checked in the store's commit order. Returns once the events
    /// are handed to the log; [`PendingAppend::durable`] says when they are stored.
    pub fn append(&self, mut appends: Vec<StreamAppend>) -> Result<PendingAppend, StreamError> {
        self.validate(&appends)?;
        let now = crate::ids::now_ms();
        let mut index = self.lock();

        // 1. A retried append: every event id is already stored, each in its stream.
        let mut seen = 0;
        let total: usize = appends.iter().map(|a| a.events.len()).sum();
        let mut originals = Vec::with_capacity(appends.len());
        for a in &appends {
            let mut found: Vec<(Offset, u64)> = Vec::new();
            for e in &a.events {
                if let Some(&(position, stream)) = index.ids.get(&id_hash(&e.event_id)) {
                    let entry = &index.streams[stream as usize];
                    if entry.name != a.stream {
                        return Err(StreamError::IdConflict(format!(
                            "event id `{}` is already stored in stream `{}`; event ids are unique in a store",
                            e.event_id, entry.name
                        )));
                    }
                    let revision = entry.revision_at(position).unwrap_or(0);
                    found.push((position, revision));
                    seen += 1;
                }
            }
            originals.push(found);
        }
        if seen > 0 {
            if seen != total {
                return Err(StreamError::IdConflict(format!(
                    "{seen} of this append's {total} events are already stored (by event id) and the others are not; retry an append with exactly its original events, or use new ids"
                )));
            }
            let appended: Vec<Appended> = appends
                .iter()
                .zip(originals)
                .map(|(a, found)| {
                    let (first_position, first_revision) = found[0];
                    let (last_position, last_revision) = found[found.len() - 1];
                    Appended {
                        stream: a.stream.to_string(),
                        first_revision,
                        last_revision,
                        first_position: first_position.0,
                        last_position: last_position.0,
                        duplicate: true,
                    }
                })
                .collect();
            drop(index);
            // The originals may not be durable yet: answer once they are.
            let last = appended
                .iter()
                .map(|a: &Appended| a.last_position)
                .max()
                .unwrap_or(0);
            return Ok(PendingAppend {
                appended,
                durable: Durable::After(self.end.clone(), last),
            });
        }

        // 2. Every expectation, before anything is stored.
        for a in &appends {
            let entry = index.get(&a.stream);
            if entry.is_some_and(|e| e.tombstoned) {
                return Err(StreamError::Tombstoned(a.stream.to_string()));
            }
            let actual = entry.and_then(Entry::actual);
            if !a.expected.admits(actual) {
                return Err(StreamError::WrongExpectedRevision {
                    stream: a.stream.to_string(),
                    expected: a.expected,
                    actual,
                });
            }
        }

        // 3. One log append with every event, then the index.
        let mut publishes = Vec::with_capacity(total);
        for a in &mut appends {
            let next = index.get(&a.stream).map_or(0, Entry::next);
            for (i, e) in a.events.iter_mut().enumerate() {
                // The payload moves into the record: the index needs only ids and types.
                let payload = std::mem::take(&mut e.payload);
                publishes.push((
                    self.name.clone(),
                    record(&a.stream, next + i as u64, e, payload, now),
                ));
            }
        }
        let ticket = self.storage.submit(Commit {
            publishes,
            ..Commit::default()
        })?;
        let mut offsets = ticket.offsets.iter().copied();
        let mut appended = Vec::with_capacity(appends.len());
        for a in &appends {
            let (i, entry) = index.entry_mut(&a.stream, 0);
            let first_revision = entry.next();
            let mut first_position = None;
            let mut last_position = Offset(0);
            for e in &a.events {
                let position = offsets.next().unwrap_or_default();
                first_position.get_or_insert(position);
                last_position = position;
                index.add_event(i, &e.event_id, &e.event_type, position);
            }
            appended.push(Appended {
                stream: a.stream.to_string(),
                first_revision,
                last_revision: first_revision + a.events.len() as u64 - 1,
                first_position: first_position.unwrap_or_default().0,
                last_position: last_position.0,
                duplicate: false,
            });
        }
        Ok(PendingAppend {
            appended,
            durable: Durable::Ticket(ticket),
        })
    }

    fn validate(&self, appends: &[StreamAppend]) -> Result<(), StreamError> {
        if appends.is_empty() {
            return Err(StreamError::Invalid(
                "an append needs at least one stream".into(),
            ));
        }
        let total: usize = appends.iter().map(|a| a.events.len()).sum();
        if total > MAX_EVENTS_PER_APPEND {
            return Err(StreamError::Invalid(format!(
                "{total} events; one append holds at most {MAX_EVENTS_PER_APPEND}"
            )));
        }
        let mut streams = std::collections::HashSet::new();
        let mut ids = std::collections::HashSet::new();
        for a in appends {
            if !streams.insert(&a.stream) {
                return Err(StreamError::Invalid(format!(
                    "stream `{}` appears twice in one append; put its events together",
                    a.stream
                )));
            }
            if a.events.is_empty() {
                return Err(StreamError::Invalid(format!(
                    "the append to `{}` has no events",
                    a.stream
                )));
            }
            for e in &a.events {
                super::validate_event_id(&e.event_id)?;
                super::validate_event_type(&e.event_type)?;
                if !ids.insert(e.event_id.as_str()) {
                    return Err(StreamError::Invalid(format!(
                        "event id `{}` appears twice in one append",
                        e.event_id
                    )));
                }
                if e.payload.len() > self.max_payload {
                    return Err(StreamError::TooLarge {
                        id: e.event_id.clone(),
                        size: e.payload.len(),
                        limit: self.max_payload,
                    });
                }
                check_headers(&e.headers)?;
                for id in [&e.correlation_id, &e.causation_id].into_iter().flatten() {
                    if id.is_empty() || id.len() > super::MAX_EVENT_LABEL_LEN {
                        return Err(StreamError::Invalid(format!(
                            "a correlation or causation id is 1 to {} bytes long, found {}",
                            super::MAX_EVENT_LABEL_LEN,
                            id.len()
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Deletes a stream: soft (it reads as not found and its name can be used again; revisions
    /// go on from where they were) or hard (a tombstone: no more appends, ever). The stream must
    /// meet `expected`. Returns the position of the marker.
    pub fn delete(
        &self,
        stream: &StreamName,
        expected: ExpectedRevision,
        hard: bool,
    ) -> Result<PendingAppend, StreamError> {
        let mut index = self.lock();
        let entry = index.get(stream);
        if entry.is_some_and(|e| e.tombstoned) {
            return Err(StreamError::Tombstoned(stream.to_string()));
        }
        let actual = entry.and_then(Entry::actual);
        if actual.is_none() && !hard {
            return Err(StreamError::NotFound(stream.to_string()));
        }
        if !expected.admits(actual) {
            return Err(StreamError::WrongExpectedRevision {
                stream: stream.to_string(),
                expected,
                actual,
            });
        }
        let next = entry.map_or(0, Entry::next);
        let kind = if hard { "tombstone" } else { "deleted" };
        let marker = Record {
            id: format!("$marker:{kind}:{stream}:{next}"),
            key: Some(stream.to_string()),
            headers: vec![
                (MARKER.to_owned(), kind.to_owned()),
                (REVISION.to_owned(), next.to_string()),
            ],
            payload: Vec::new(),
            timestamp_ms: crate::ids::now_ms(),
            reply_to: None,
            correlation_id: None,
        };
        let ticket = self.storage.submit(Commit {
            publishes: vec![(self.name.clone(), marker)],
            ..Commit::default()
        })?;
        let position = ticket.offsets.first().copied().unwrap_or_default();
        let (_, entry) = index.entry_mut(stream, next);
        entry.live_from = next;
        entry.tombstoned |= hard;
        Ok(PendingAppend {
            appended: vec![Appended {
                stream: stream.to_string(),
                first_revision: next,
                last_revision: actual.unwrap_or(next),
                first_position: position.0,
                last_position: position.0,
                duplicate: false,
            }],
            durable: Durable::Ticket(ticket),
        })
    }

    /// The revision of a stream's last event, `None` when it has none. Errors for a tombstoned
    /// stream.
    pub fn revision(&self, stream: &StreamName) -> Result<Option<u64>, StreamError> {
        let index = self.lock();
        match index.get(stream) {
            Some(e) if e.tombstoned => Err(StreamError::Tombstoned(stream.to_string())),
            Some(e) => Ok(e.actual()),
            None => Ok(None),
        }
    }

    /// Waits (at most `limit`) until every event of `stream` handed to the log so far is
    /// durable, so reads see the revision appends are checked against.
    pub async fn settle(&self, stream: &StreamName, limit: std::time::Duration) {
        let last = {
            let index = self.lock();
            index.get(stream).and_then(|e| e.positions.last().copied())
        };
        if let Some(last) = last {
            let mut end = self.end.clone();
            let _ = tokio::time::timeout(limit, end.wait_for(|e| *e > last)).await;
        }
    }

    /// Where the durable event with this id is stored: its stream and revision.
    pub fn find_event(&self, event_id: &str) -> Option<(String, u64)> {
        let end = *self.end.borrow();
        let index = self.lock();
        let (position, i) = *index.ids.get(&id_hash(event_id))?;
        if position >= end {
            return None;
        }
        let entry = &index.streams[i as usize];
        let revision = entry.revision_at(position)?;
        Some((entry.name.to_string(), revision))
    }

    /// Reads up to `max` events of one stream from revision `from` (forwards), or down from
    /// `from` (backwards; `None`: from the end or the start).
    pub fn read_stream(
        &self,
        stream: &StreamName,
        from: Option<u64>,
        backwards: bool,
        max: usize,
    ) -> Result<StreamPage, StreamError> {
        let end = *self.end.borrow();
        let (positions, last_revision, next) = {
            let index = self.lock();
            let entry = match index.get(stream) {
                Some(e) if e.tombstoned => {
                    return Err(StreamError::Tombstoned(stream.to_string()));
                }
                Some(e) => e,
                None => return Err(StreamError::NotFound(stream.to_string())),
            };
            // Only durable events: the revisions whose position is below the durable end.
            let durable = entry.positions.partition_point(|p| *p < end) as u64;
            let Some(last) = (entry.first + durable)
                .checked_sub(1)
                .filter(|l| *l >= entry.live_from.max(entry.first))
            else {
                return Err(StreamError::NotFound(stream.to_string()));
            };
            let mut lowest = entry.live_from.max(entry.first);
            if let Some(max_count) = self.max_count {
                lowest = lowest.max((last + 1).saturating_sub(max_count));
            }
            let revisions: Vec<u64> = if backwards {
                let start = from.unwrap_or(last).min(last);
                if start < lowest {
                    Vec::new()
                } else {
                    (lowest..=start).rev().take(max).collect()
                }
            } else {
                let start = from.unwrap_or(lowest).max(lowest);
                (start..=last).take(max).collect()
            };
            let next = match (backwards, revisions.last()) {
                (false, Some(&r)) if r < last => Some(r + 1),
                (true, Some(&r)) if r > lowest => Some(r - 1),
                _ => None,
            };
            let positions: Vec<Offset> = revisions
                .iter()
                .filter_map(|r| entry.position(*r))
                .collect();
            (positions, last, next)
        };
        let events = self.read_positions(&positions)?;
        Ok(StreamPage {
            events,
            last_revision,
            next,
        })
    }

    /// Reads up to `max` events of the whole store, a category or an event type, from position
    /// `from` on, in position order.
    pub fn read_all(
        &self,
        from: Offset,
        filter: &Filter,
        max: usize,
    ) -> Result<AllPage, StreamError> {
        let end = *self.end.borrow();
        match filter {
            Filter::All => {
                let mut events = Vec::new();
                let mut next = from;
                let mut from = from;
                while events.len() < max && from < end {
                    let batch =
                        self.storage
                            .read(&self.name, from, (max - events.len()).min(1000))?;
                    if batch.is_empty() {
                        break;
                    }
                    for s in &batch {
                        next = s.offset.next();
                        from = next;
                        if let Some(e) = self.event(s)? {
                            events.push(e);
                        }
                    }
                }
                next = next.max(from);
                Ok(AllPage { events, next, end })
            }
            Filter::Category(name) | Filter::EventType(name) => {
                let positions: Vec<Offset> = {
                    let index = self.lock();
                    let list = match filter {
                        Filter::Category(_) => index.categories.get(name),
                        _ => index.types.get(name),
                    };
                    list.map(|l| {
                        let start = l.partition_point(|p| *p < from);
                        l[start..]
                            .iter()
                            .take_while(|p| **p < end)
                            .take(max)
                            .copied()
                            .collect()
                    })
                    .unwrap_or_default()
                };
                let next = if positions.len() < max {
                    end.max(from)
                } else {
                    positions.last().map_or(end, |p| p.next())
                };
                let events = self.read_positions(&positions)?;
                Ok(AllPage { events, next, end })
            }
        }
    }

    /// Reads the events at `positions` (ascending or descending), skipping any retention
    /// removed.
    fn read_positions(&self, positions: &[Offset]) -> Result<Vec<RecordedEvent>, StreamError> {
        let mut out = Vec::with_capacity(positions.len());
        let mut i = 0;
        while i < positions.len() {
            // A run of consecutive positions is one read.
            let start = positions[i];
            let mut j = i + 1;
            let ascending = positions.get(j).is_none_or(|p| *p > start);
            while j < positions.len() && j - i < 1000 {
                let expect = if ascending {
                    start.0 + (j - i) as u64
                } else {
                    start.0.wrapping_sub((j - i) as u64)
                };
                if positions[j].0 != expect {
                    break;
                }
                j += 1;
            }
            let (low, n) = if ascending {
                (start, j - i)
            } else {
                (positions[j - 1], j - i)
            };
            let batch = self.storage.read(&self.name, low, n)?;
            let mut run: Vec<RecordedEvent> = Vec::with_capacity(n);
            for s in &batch {
                let inside = s.offset.0 >= low.0 && s.offset.0 < low.0 + n as u64;
                if let Some(e) = inside.then(|| self.event(s)).transpose()?.flatten() {
                    run.push(e);
                }
            }
            if !ascending {
                run.reverse();
            }
            out.extend(run);
            i = j;
        }
        Ok(out)
    }

    /// The event a stored record holds; `None` for a delete marker.
    fn event(&self, s: &Stored) -> Result<Option<RecordedEvent>, StreamError> {
        let r = &s.record;
        let mut revision = None;
        let mut event_type = None;
        let mut schema_version = 1;
        let mut causation_id = None;
        let mut headers = Vec::with_capacity(r.headers.len());
        for (name, value) in &r.headers {
            match name.as_str() {
                MARKER => return Ok(None),
                REVISION => revision = value.parse().ok(),
                TYPE => event_type = Some(value.clone()),
                SCHEMA => schema_version = value.parse().unwrap_or(1),
                CAUSATION => causation_id = Some(value.clone()),
                _ => headers.push((name.clone(), value.clone())),
            }
        }
        let bad =
            |what: &str| self.corrupt(format!("the record at position {} {what}", s.offset.0));
        let stream = r
            .key
            .as_deref()
            .and_then(|k| StreamName::new(k).ok())
            .ok_or_else(|| bad("has no valid stream name"))?;
        Ok(Some(RecordedEvent {
            stream,
            revision: revision.ok_or_else(|| bad("has no revision"))?,
            position: s.offset,
            event_id: r.id.clone(),
            event_type: event_type.ok_or_else(|| bad("has no event type"))?,
            schema_version,
            headers,
            payload: r.payload.clone(),
            timestamp_ms: r.timestamp_ms,
            correlation_id: r.correlation_id.clone(),
            causation_id,
        }))
    }
}

/// The log record of an event.
fn record(stream: &StreamName, revision: u64, e: &NewEvent, payload: Vec<u8>, now: u64) -> Record {
    let mut headers = Vec::with_capacity(e.headers.len() + 4);
    headers.push((TYPE.to_owned(), e.event_type.clone()));
    headers.push((REVISION.to_owned(), revision.to_string()));
    if e.schema_version != 1 {
        headers.push((SCHEMA.to_owned(), e.schema_version.to_string()));
    }
    if let Some(c) = &e.causation_id {
        headers.push((CAUSATION.to_owned(), c.clone()));
    }
    headers.extend(e.headers.iter().cloned());
    Record {
        id: e.event_id.clone(),
        key: Some(stream.to_string()),
        headers,
        payload,
        timestamp_ms: now,
        reply_to: None,
        correlation_id: e.correlation_id.clone(),
    }
}
