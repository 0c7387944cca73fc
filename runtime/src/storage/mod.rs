//! The storage seam: logs (one per queue, topic and stream store), binding cursors and
//! per-plugin key-value state, behind the [`Storage`] trait. The broker, the delivery engine and
//! the API see only this trait; an engine lives behind it: [`EmbeddedStorage`] (the durable
//! default), [`NatsStorage`] (a NATS JetStream cluster several hosts share), [`MemoryStorage`]
//! (tests).
//!
//! **Invariant:** a [`Commit`] is applied whole or not at all: the key-value writes, the
//! published records and the cursor advance of one invocation become visible together.

mod embedded;
pub mod log;
mod memory;
mod nats;
mod outbox;
mod state;

use std::collections::BTreeMap;
use std::sync::Arc;

pub use embedded::{EmbeddedOptions, EmbeddedStorage};
pub use memory::MemoryStorage;
pub use nats::{NatsStorage, PartitionId, observe as nats_observe};
use tokio::sync::watch;

use crate::config::Retention;
use crate::names::{BindingName, DestinationName, Offset, PluginName};

/// One message as stored in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Idempotency key, unique within the log.
    pub id: String,
    /// Ordering key.
    pub key: Option<String>,
    /// Application headers, in order.
    pub headers: Vec<(String, String)>,
    /// Message body.
    pub payload: Vec<u8>,
    /// Publish time, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// Where replies go, for requests.
    pub reply_to: Option<String>,
    /// Correlates a reply with its request.
    pub correlation_id: Option<String>,
}

/// A record with its position.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Position in its log.
    pub offset: Offset,
    /// The record, shared (reads hand out the same allocation).
    pub record: Arc<Record>,
}

/// Key-value writes of one plugin: `None` deletes.
pub type KvWrites = (PluginName, Vec<(String, Option<Vec<u8>>)>);

/// Everything one invocation (or a batch of them) changes, applied atomically by
/// [`Storage::commit`].
#[derive(Debug, Default)]
pub struct Commit {
    /// Key-value writes of a plugin, applied in order: `None` deletes.
    pub kv: Option<KvWrites>,
    /// Records to append, in order.
    pub publishes: Vec<(DestinationName, Record)>,
    /// Append the publishes with dedup: a record whose id is already stored in its log is not
    /// stored again. For commits of publishes alone; a commit with key-value writes or
    /// acknowledgements needs none: in the durable store its publishes go through the outbox
    /// (appended only once the commit's journal record is durable), so a message delivered
    /// again never finds its own earlier output.
    pub dedup: bool,
    /// Acknowledge these offsets of the bindings' sources: the bindings are done with them. A
    /// binding's cursor (the first offset not yet acknowledged) advances over every offset
    /// acknowledged in a row.
    pub acks: Vec<(BindingName, Offset)>,
}

/// A commit applied and visible (its key-value writes are read by later invocations) but not
/// yet known durable: [`CommitTicket::wait`] or `.durable().await` says when it is.
#[must_use = "a commit is durable only when its ticket says so"]
#[derive(Debug)]
pub struct CommitTicket {
    /// Offsets of the published records, in order (the original's for a dedup duplicate), when
    /// known at submit: empty for a commit whose publishes go through the outbox (they are
    /// appended once its journal record is durable; `wait` and `durable` return them).
    pub offsets: Vec<Offset>,
    pending: Vec<log::AppendTicket>,
    outbox: Option<Arc<outbox::Slot>>,
    /// Resolved by a store whose writes finish elsewhere (a NATS task).
    remote: Option<tokio::sync::oneshot::Receiver<Result<Vec<Offset>, StorageError>>>,
}

impl CommitTicket {
    /// A commit that is already durable.
    pub fn done(offsets: Vec<Offset>) -> CommitTicket {
        CommitTicket {
            offsets,
            pending: Vec::new(),
            outbox: None,
            remote: None,
        }
    }

    /// A commit that is durable when `done` says so.
    pub(crate) fn remote(
        done: tokio::sync::oneshot::Receiver<Result<Vec<Offset>, StorageError>>,
    ) -> CommitTicket {
        CommitTicket {
            offsets: Vec::new(),
            pending: Vec::new(),
            outbox: None,
            remote: Some(done),
        }
    }

    pub(crate) fn new(offsets: Vec<Offset>, pending: Vec<log::AppendTicket>) -> CommitTicket {
        CommitTicket {
            offsets,
            pending,
            outbox: None,
            remote: None,
        }
    }

    /// A commit whose publishes are appended by the outbox once its journal record is durable.
    pub(crate) fn outboxed(journal: log::AppendTicket, slot: Arc<outbox::Slot>) -> CommitTicket {
        CommitTicket {
            offsets: Vec::new(),
            pending: vec![journal],
            outbox: Some(slot),
            remote: None,
        }
    }

    /// Blocks until the commit is durable (its published records too); returns the offsets of
    /// its published records.
    pub fn wait(self) -> Result<Vec<Offset>, StorageError> {
        if let Some(done) = self.remote {
            return nats::wait(done);
        }
        for t in self.pending {
            t.wait()?;
        }
        let Some(slot) = self.outbox else {
            return Ok(self.offsets);
        };
        let (offsets, tickets) = slot.wait()?;
        for t in tickets {
            t.wait()?;
        }
        Ok(offsets)
    }

    /// Resolves when the commit is durable (its published records too); returns the offsets of
    /// its published records.
    pub async fn durable(self) -> Result<Vec<Offset>, StorageError> {
        if let Some(done) = self.remote {
            return done.await.unwrap_or_else(|_| Err(nats::gone()));
        }
        for t in self.pending {
            t.await?;
        }
        let Some(slot) = self.outbox else {
            return Ok(self.offsets);
        };
        let (offsets, tickets) = std::future::poll_fn(|cx| slot.poll(cx)).await?;
        for t in tickets {
            t.await?;
        }
        Ok(offsets)
    }
}

/// What retention removed from a log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Records removed.
    pub records: u64,
    /// Bytes of files removed.
    pub bytes: u64,
}

/// Why a storage operation failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// No log of that name exists.
    #[error("no queue or topic named `{0}`")]
    UnknownLog(DestinationName),
    /// The durable log failed (I/O error, stopped after a failed fsync, corrupt on disk, ...).
    #[error(transparent)]
    Log(#[from] log::LogError),
    /// Another process has the store open.
    #[error("the store in {} is in use by another weir process", .0.display())]
    Locked(std::path::PathBuf),
    /// The store's own state is damaged on disk.
    #[error("{0}")]
    Corrupt(String),
    /// The NATS cluster failed the operation (unreachable, refused, timed out).
    #[error("nats: {0}")]
    Remote(String),
    /// This host no longer owns the partition: another host took it over, and its commit
    /// record's compare-and-set refused this one.
    #[error("partition `{0}` was taken over by another host; this host's commit was refused")]
    Fenced(BindingName),
    /// The store cannot do this.
    #[error("{0}")]
    Unsupported(String),
}

/// A store of logs, cursors and key-value state.
pub trait Storage: Send + Sync + std::fmt::Debug + 'static {
    /// Opens the log of a destination, creating it empty if it does not exist yet. Calling it
    /// again for an open log does nothing.
    fn open_log(&self, name: &DestinationName) -> Result<(), StorageError>;

    /// Whether a log of that name exists.
    fn has_log(&self, name: &DestinationName) -> bool;

    /// Appends records to one log, returning their offsets.
    fn append(
        &self,
        log: &DestinationName,
        records: Vec<Record>,
    ) -> Result<Vec<Offset>, StorageError> {
        let publishes = records.into_iter().map(|r| (log.clone(), r)).collect();
        self.commit(Commit {
            publishes,
            ..Commit::default()
        })
    }

    /// Appends records to one log, except those whose id is already stored there (publish
    /// dedup, for as long as the original is retained): for each record, its offset (the
    /// original's, for a duplicate) and whether it was a duplicate. Returns once the new records
    /// are durable.
    fn append_dedup(
        &self,
        log: &DestinationName,
        records: Vec<Record>,
    ) -> Result<Vec<(Offset, bool)>, StorageError>;

    /// Reads up to `max` records with `key`, starting at `from`, without scanning the records of
    /// other keys.
    fn read_key(
        &self,
        log: &DestinationName,
        key: &str,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Stored>, StorageError>;

    /// The first offset of a log whose record was published at or after `timestamp_ms` (the
    /// log's end if none was).
    fn offset_at_time(
        &self,
        log: &DestinationName,
        timestamp_ms: u64,
    ) -> Result<Offset, StorageError>;

    /// Reads up to `max` records starting at `from`.
    fn read(
        &self,
        log: &DestinationName,
        from: Offset,
        max: usize,
    ) -> Result<Vec<Stored>, StorageError>;

    /// A receiver of the log's end offset (the offset the next record will get), updated on every
    /// append. Consumers wait on it instead of polling.
    fn watch_end(&self, log: &DestinationName) -> Result<watch::Receiver<Offset>, StorageError>;

    /// The first offset the binding has not acknowledged (0 for a new binding). Every offset
    /// below it is acknowledged.
    fn cursor(&self, binding: &BindingName) -> Offset;

    /// Whether the binding has acknowledged `offset` (below the cursor, or out of order above it).
    fn is_acked(&self, binding: &BindingName, offset: Offset) -> bool;

    /// Moves a cursor forward to `to` (a cursor already at or past it stays), durable when it
    /// returns. For cursors weir keeps for itself over a contiguous run of offsets, such as a
    /// dead-letter redrive position ([`BindingName::redrive_cursor`]); a binding's own cursor
    /// moves only by acknowledgements ([`Commit::ack`]).
    fn advance_cursor(&self, cursor: &BindingName, to: Offset) -> Result<(), StorageError>;

    /// Records that `offset` is being delivered to the binding (again) and returns how many
    /// times it has been, this time included. Durable when it returns, so a message whose
    /// handling crashes the host is not delivered more often than the binding allows.
    fn begin_delivery(&self, binding: &BindingName, offset: Offset) -> Result<u32, StorageError>;

    /// Records that `offsets` are being delivered to the binding (again), all in one step, and
    /// returns how many times each has been, this time included. Returns once the record
    /// survives a crash of the process (a message whose handling kills the host is not
    /// delivered more often than the binding allows); a crash of the machine may lose the last
    /// counts.
    fn begin_deliveries(
        &self,
        binding: &BindingName,
        offsets: &[Offset],
    ) -> Result<Vec<u32>, StorageError>;

    /// Sets the delivery counts of offsets recorded by [`Storage::begin_deliveries`] but not
    /// run after all (0 forgets the count). Does not wait: after a crash a count may stay one
    /// too high.
    fn set_deliveries(
        &self,
        binding: &BindingName,
        counts: &[(Offset, u32)],
    ) -> Result<(), StorageError>;

    /// Not used by the delivery engine (which counts deliveries with
    /// [`Storage::begin_deliveries`]): a seam for pull consumers with visibility timeouts, kept
    /// and tested in both stores, not reachable from the API yet.
    ///
    /// Delivers `offset` to the binding under a lease: records the delivery like
    /// [`Storage::begin_delivery`] (returning the count) and holds the message for
    /// `visibility`, after which, if still unacknowledged, it is listed by
    /// [`Storage::expired_leases`] for redelivery. Leases are not durable: a restart voids them
    /// all, so every unacknowledged message is due again at once.
    fn lease(
        &self,
        binding: &BindingName,
        offset: Offset,
        visibility: std::time::Duration,
    ) -> Result<u32, StorageError>;

    /// Offsets of the binding whose lease expired before `now_ms` without an acknowledgement.
    fn expired_leases(&self, binding: &BindingName, now_ms: u64) -> Vec<Offset>;

    /// Reads a plugin's key-value entry.
    fn kv_get(&self, plugin: &PluginName, key: &str) -> Option<Vec<u8>>;

    /// Lists a plugin's keys with `prefix`, after `start_after`, at most `limit`, in byte order.
    fn kv_list(
        &self,
        plugin: &PluginName,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> Vec<String>;

    /// The first offset a log still holds, and its size on disk in bytes.
    fn usage(&self, log: &DestinationName) -> Result<(Offset, u64), StorageError>;

    /// Removes the oldest whole segments of a log beyond `retention` and says what was freed.
    /// Stores without segments (in memory) keep everything.
    fn enforce_retention(
        &self,
        log: &DestinationName,
        retention: &Retention,
    ) -> Result<Reclaimed, StorageError> {
        let _ = (log, retention);
        Ok(Reclaimed::default())
    }

    /// Why a commit publishing `publishes` would be refused whatever else it holds (a
    /// destination that does not exist, a record no log frame can hold), checked without
    /// writing anything. [`Storage::submit`] refuses such a commit whole; the delivery engine
    /// checks each message's outputs first, so that one message whose outcome cannot be stored
    /// is dead-lettered instead of failing the commit it would have shared with others.
    fn check_publishes(&self, publishes: &[(DestinationName, Record)]) -> Result<(), StorageError>;

    /// Applies a commit atomically and makes it visible at once (to reads of key-value state
    /// and cursors; published records become readable when durable); the ticket says when it
    /// is durable. Commits become durable in the order they were submitted: a crash keeps a
    /// prefix of them.
    fn submit(&self, commit: Commit) -> Result<CommitTicket, StorageError>;

    /// Applies a commit atomically and waits until it is durable; returns the offsets of its
    /// published records, in order.
    fn commit(&self, commit: Commit) -> Result<Vec<Offset>, StorageError> {
        self.submit(commit)?.wait()
    }
}

/// Keys of `map` starting with `prefix`, strictly after `start_after`, at most `limit`, in order.
pub(crate) fn list_keys(
    map: &BTreeMap<String, Vec<u8>>,
    prefix: &str,
    start_after: Option<&str>,
    limit: usize,
) -> Vec<String> {
    let from = match start_after {
        Some(after) if after >= prefix => std::ops::Bound::Excluded(after.to_owned()),
        _ => std::ops::Bound::Included(prefix.to_owned()),
    };
    map.range((from, std::ops::Bound::Unbounded))
        .map(|(k, _)| k)
        .take_while(|k| k.starts_with(prefix))
        .take(limit)
        .cloned()
        .collect()
}
