//! The command path: a command for aggregate instance `id` goes to stream `<category>-<id>` of
//! the aggregate's stream store; the host loads the stream's state (a cached state, or a
//! snapshot, plus the events after it, folded with `evolve`), runs `decide`, and appends the
//! decided events with `exact(revision)` (or `no-stream`), retrying on a conflict a bounded
//! number of times.
//!
//! **Invariants.**
//! - A command's events are appended only against the revision its state was folded from:
//!   the append expects exactly that revision, checked in the store's commit order. A command
//!   never succeeds against a stale state.
//! - A command's events have ids `<command-id>.<index>`: a retried command (same id) is
//!   answered from the events stored the first time, and nothing is stored twice.
//! - A command that is rejected, or whose `decide` traps, times out or fails, appends nothing;
//!   the aggregate goes on serving other commands.
//! - A snapshot is used only when its component hash and state version are the running
//!   aggregate's: otherwise it is ignored and the state is folded from the events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::store::{StreamAppend, StreamError, StreamStore};
use super::{ExpectedRevision, NewEvent, RecordedEvent, StreamName};
use crate::host::{Aggregate, Command, Failure, Rejection};
use crate::names::PluginName;
use crate::storage::{Commit, Storage};

/// Events read from the store per page while folding.
const FOLD_PAGE: usize = 1000;
/// Streams whose states are kept in memory, per aggregate; beyond it the cache is cleared.
const CACHE_STREAMS: usize = 100_000;
/// Snapshot layout version (of the bytes around the state, not the state itself).
const SNAPSHOT_FORMAT: u8 = 1;

/// Streams a verified deploy folds through both versions, at most.
pub const DEPLOY_SAMPLE_STREAMS: usize = 100;
/// Events per sampled stream a verified deploy compares, at most.
const DEPLOY_SAMPLE_EVENTS: u64 = 10_000;

/// What a verified deploy did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AggregateDeployed {
    /// The aggregate.
    pub aggregate: String,
    /// SHA-256 of the component now running.
    pub hash: String,
    /// SHA-256 of the one it replaced.
    pub previous_hash: String,
    /// The state version now declared, and the one before.
    pub state_version: u32,
    /// The state version of the component replaced.
    pub previous_state_version: u32,
    /// Streams folded through both versions.
    pub streams_checked: u64,
    /// Events folded through both versions.
    pub events_checked: u64,
    /// Streams whose states differ (allowed only with a higher state version).
    pub streams_differing: u64,
    /// False when the same component was deployed again (nothing changed).
    pub swapped: bool,
}

/// Why a deploy was refused; the running version is left as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeployError {
    /// The new version's `evolve` folds a stream to another state, and it does not declare a
    /// higher state version.
    #[error("aggregate `{aggregate}`: the new version's evolve disagrees with the running one's on stream `{stream}` at revision {}; deploy it with a higher state-version (now {state_version}) if the state's meaning changed on purpose", revision.map_or("none (the initial state)".to_owned(), |r| r.to_string()))]
    Disagrees {
        /// The aggregate.
        aggregate: String,
        /// The first stream whose states differ.
        stream: String,
        /// The revision after which they first differ (`None`: the initial states differ).
        revision: Option<u64>,
        /// The state version both declare (or the new one's, lower).
        state_version: u32,
    },
    /// The new version failed on a stored event.
    #[error(
        "aggregate `{aggregate}`: the new version failed folding stream `{stream}` at revision {revision}: {failure}"
    )]
    Fails {
        /// The aggregate.
        aggregate: String,
        /// The stream.
        stream: String,
        /// The revision.
        revision: u64,
        /// What happened.
        failure: Failure,
    },
    /// The new version declares a lower state version than the running one.
    #[error(
        "aggregate `{aggregate}`: the new version declares state-version {new}, lower than the running {old}"
    )]
    Downgrade {
        /// The aggregate.
        aggregate: String,
        /// The running version's.
        old: u32,
        /// The new version's.
        new: u32,
    },
    /// The store could not be read.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

/// A command as a caller gives it.
#[derive(Debug, Clone)]
pub struct CommandRequest {
    /// The command's idempotency key; one is made when absent.
    pub command_id: Option<String>,
    /// What is asked.
    pub command_type: String,
    /// The body.
    pub payload: Vec<u8>,
    /// Application headers.
    pub headers: Vec<(String, String)>,
}

/// What a command did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandAnswer {
    /// The command's id.
    pub command_id: String,
    /// The aggregate instance's stream.
    pub stream: String,
    /// The stream's revision after the command (`None`: it still has no events).
    pub revision: Option<u64>,
    /// Revisions of the events the command appended (first, last); `None` when it decided
    /// nothing.
    pub appended: Option<(u64, u64)>,
    /// The answer `decide` gave, as text when it is UTF-8.
    #[serde(skip)]
    pub reply: Option<Vec<u8>>,
    /// True when the command had been handled before: its events were already stored.
    pub duplicate: bool,
    /// How many times `decide` ran (more than 1 after conflicts).
    pub attempts: u32,
}

/// Why a command did not go through; in every case nothing was appended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// `decide` refused the command (a business rule).
    #[error("command rejected: {0}")]
    Refused(String),
    /// `decide` found the command malformed.
    #[error("invalid command: {0}")]
    Invalid(String),
    /// The aggregate instance is in a terminal state.
    #[error("stream `{0}` is in a terminal state; it takes no more commands")]
    Terminal(String),
    /// The aggregate trapped, timed out or failed.
    #[error("aggregate `{aggregate}` failed: {failure}")]
    Failed {
        /// The aggregate.
        aggregate: String,
        /// What happened.
        failure: Failure,
    },
    /// Every attempt lost the race to another writer of the stream.
    #[error(
        "stream `{stream}` kept changing: {attempts} attempts each lost to a concurrent append; retry the command"
    )]
    Contended {
        /// The stream.
        stream: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The instance id or the command is malformed, or the store refused.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

impl CommandError {
    /// A stable code for the API.
    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Refused(_) => "command_rejected",
            CommandError::Invalid(_) => "invalid_command",
            CommandError::Terminal(_) => "aggregate_terminal",
            CommandError::Failed { .. } => "aggregate_failed",
            CommandError::Contended { .. } => "command_contended",
            CommandError::Stream(e) => e.code(),
        }
    }
}

#[derive(Debug, Clone)]
struct Cached {
    /// Revision the next event gets: how many events `state` has folded.
    next: u64,
    state: Vec<u8>,
    /// Value of `next` when the last snapshot was taken (or loaded).
    snapshot_at: u64,
}

/// Counters of the command path, for stats and the tests.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct AggregateStats {
    /// Commands that appended events or decided nothing.
    pub accepted: u64,
    /// Commands refused by `decide` (or by a terminal state).
    pub rejected: u64,
    /// Commands that failed (trap, timeout, contention, storage).
    pub failed: u64,
    /// Appends that lost a race and were decided again.
    pub conflicts: u64,
    /// Events folded with `evolve` while loading states.
    pub events_folded: u64,
    /// States loaded from a snapshot.
    pub snapshot_loads: u64,
    /// Snapshots written.
    pub snapshots_written: u64,
    /// Snapshots ignored (another component or state version).
    pub snapshots_ignored: u64,
}

/// One aggregate: its component, stream store and cached states.
#[derive(Debug)]
pub struct AggregateRunner {
    name: PluginName,
    category: String,
    store: Arc<StreamStore>,
    storage: Arc<dyn Storage>,
    aggregate: Mutex<Arc<Aggregate>>,
    snapshot_every: u64,
    conflict_retries: u32,
    cache: Mutex<HashMap<StreamName, Cached>>,
    stats: Mutex<AggregateStats>,
}

impl AggregateRunner {
    /// An aggregate over `store`, with streams `<category>-<id>`.
    pub fn new(
        aggregate: Aggregate,
        category: String,
        store: Arc<StreamStore>,
        storage: Arc<dyn Storage>,
        snapshot_every: u64,
        conflict_retries: u32,
    ) -> AggregateRunner {
        AggregateRunner {
            name: aggregate.name().clone(),
            category,
            store,
            storage,
            aggregate: Mutex::new(Arc::new(aggregate)),
            snapshot_every,
            conflict_retries,
            cache: Mutex::default(),
            stats: Mutex::default(),
        }
    }

    /// The aggregate's name.
    pub fn name(&self) -> &PluginName {
        &self.name
    }

    /// The stream store it appends to.
    pub fn store(&self) -> &Arc<StreamStore> {
        &self.store
    }

    /// The running component.
    pub fn aggregate(&self) -> Arc<Aggregate> {
        Arc::clone(
            &self
                .aggregate
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Its counters.
    pub fn stats(&self) -> AggregateStats {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn count(&self, f: impl FnOnce(&mut AggregateStats)) {
        f(&mut self.stats.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The stream of instance `id`.
    pub fn stream_of(&self, id: &str) -> Result<StreamName, StreamError> {
        Ok(StreamName::new(format!("{}-{id}", self.category))?)
    }

    /// Handles one command for instance `id`. The wasm calls run on a blocking thread.
    pub async fn command(
        self: &Arc<Self>,
        id: &str,
        request: CommandRequest,
    ) -> Result<CommandAnswer, CommandError> {
        let stream = self.stream_of(id)?;
        let command_id = request
            .command_id
            .clone()
            .unwrap_or_else(crate::ids::new_message_id);
        super::validate_event_id(&format!("{command_id}.0")).map_err(StreamError::from)?;
        if request.command_type.is_empty() || request.command_type.len() > 256 {
            return Err(CommandError::Invalid(
                "the command type must be 1 to 256 bytes".into(),
            ));
        }
        if let Some(answer) = self.handled_before(&stream, &command_id) {
            self.count(|s| s.accepted += 1);
            return Ok(answer);
        }
        let command = Command {
            seed: seed(&command_id),
            command_id,
            command_type: request.command_type,
            payload: request.payload,
            headers: request.headers,
            received_at_ms: crate::ids::now_ms(),
        };
        let result = self.decide_and_append(stream, command).await;
        match &result {
            Ok(_) => self.count(|s| s.accepted += 1),
            Err(
                CommandError::Refused(_) | CommandError::Invalid(_) | CommandError::Terminal(_),
            ) => self.count(|s| s.rejected += 1),
            Err(_) => self.count(|s| s.failed += 1),
        }
        result
    }

    /// The current state of instance `id` and the revision it was folded to.
    pub async fn state(self: &Arc<Self>, id: &str) -> Result<(Option<u64>, Vec<u8>), CommandError> {
        let this = Arc::clone(self);
        let id = id.to_owned();
        tokio::task::spawn_blocking(move || this.state_blocking(&id))
            .await
            .map_err(|e| CommandError::Invalid(format!("the state task failed: {e}")))?
    }

    /// [`AggregateRunner::state`] on the calling thread (it runs wasm: not on an async worker).
    pub fn state_blocking(&self, id: &str) -> Result<(Option<u64>, Vec<u8>), CommandError> {
        let stream = self.stream_of(id)?;
        let aggregate = self.aggregate();
        let c = self.load(&aggregate, &stream)?;
        Ok((c.next.checked_sub(1), c.state))
    }

    async fn decide_and_append(
        self: &Arc<Self>,
        stream: StreamName,
        command: Command,
    ) -> Result<CommandAnswer, CommandError> {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let this = Arc::clone(self);
            let (s, c) = (stream.clone(), command.clone());
            let decided = tokio::task::spawn_blocking(move || this.decide_blocking(&s, &c))
                .await
                .map_err(|e| CommandError::Invalid(format!("the command task failed: {e}")))??;
            let (revision, decision) = decided;
            if decision.events.is_empty() {
                return Ok(CommandAnswer {
                    command_id: command.command_id,
                    stream: stream.to_string(),
                    revision,
                    appended: None,
                    reply: decision.reply,
                    duplicate: false,
                    attempts,
                });
            }
            let events = decision
                .events
                .into_iter()
                .enumerate()
                .map(|(i, e)| NewEvent {
                    event_id: format!("{}.{i}", command.command_id),
                    event_type: e.event_type,
                    schema_version: e.schema_version,
                    headers: e.headers,
                    payload: e.payload,
                    correlation_id: None,
                    causation_id: Some(command.command_id.clone()),
                })
                .collect();
            let append = StreamAppend {
                stream: stream.clone(),
                expected: revision.map_or(ExpectedRevision::NoStream, ExpectedRevision::Exact),
                events,
            };
            let pending = match self.store.append(vec![append]) {
                Ok(p) => p,
                Err(StreamError::WrongExpectedRevision { .. }) => {
                    self.count(|s| s.conflicts += 1);
                    self.forget(&stream);
                    if attempts > self.conflict_retries {
                        return Err(CommandError::Contended {
                            stream: stream.to_string(),
                            attempts,
                        });
                    }
                    // The winner's events may not be durable (readable) yet: wait for them,
                    // so the next attempt decides against the state that beat this one.
                    self.store
                        .settle(&stream, std::time::Duration::from_secs(5))
                        .await;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let appended = pending.durable().await?;
            let a = &appended[0];
            return Ok(CommandAnswer {
                command_id: command.command_id,
                stream: stream.to_string(),
                revision: Some(a.last_revision),
                appended: Some((a.first_revision, a.last_revision)),
                reply: decision.reply,
                duplicate: a.duplicate,
                attempts,
            });
        }
    }

    /// Loads the state and runs `decide`: the revision decided against, and the decision.
    fn decide_blocking(
        &self,
        stream: &StreamName,
        command: &Command,
    ) -> Result<(Option<u64>, crate::host::Decision), CommandError> {
        let aggregate = self.aggregate();
        let failed = |failure: Failure| CommandError::Failed {
            aggregate: self.name.to_string(),
            failure,
        };
        let loaded = self.load(&aggregate, stream)?;
        let revision = loaded.next.checked_sub(1);
        if aggregate
            .is_terminal(loaded.state.clone())
            .map_err(failed)?
        {
            return Err(CommandError::Terminal(stream.to_string()));
        }
        match aggregate.decide(command, loaded.state).map_err(failed)? {
            Ok(decision) => Ok((revision, decision)),
            Err(Rejection::Refused(why)) => Err(CommandError::Refused(why)),
            Err(Rejection::Invalid(why)) => Err(CommandError::Invalid(why)),
        }
    }

    /// The stream's current state: from the cache or a snapshot, plus the events after it.
    fn load(&self, aggregate: &Aggregate, stream: &StreamName) -> Result<Cached, CommandError> {
        let failed = |failure: Failure| CommandError::Failed {
            aggregate: self.name.to_string(),
            failure,
        };
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(stream)
            .cloned();
        let mut current = match cached {
            Some(c) => c,
            None => match self.read_snapshot(aggregate, stream) {
                Some(c) => c,
                None => Cached {
                    next: 0,
                    state: aggregate.initial_state().map_err(failed)?,
                    snapshot_at: 0,
                },
            },
        };
        let mut folded = 0u64;
        loop {
            let page = match self
                .store
                .read_stream(stream, Some(current.next), false, FOLD_PAGE)
            {
                Ok(p) => p,
                Err(StreamError::NotFound(_)) => {
                    // No events (or soft-deleted since): the stream starts anew.
                    if current.next > 0 {
                        current = Cached {
                            next: 0,
                            state: aggregate.initial_state().map_err(failed)?,
                            snapshot_at: 0,
                        };
                    }
                    break;
                }
                Err(e) => return Err(e.into()),
            };
            let events: Vec<RecordedEvent> = page.events;
            if let Some(first) = events.first()
                && first.revision != current.next
            {
                // The stream was deleted and began again past what we folded: fold anew.
                if current.next == 0 {
                    // Events before `first` are gone (retention): fold what is kept.
                    current.next = first.revision;
                } else {
                    current = Cached {
                        next: 0,
                        state: aggregate.initial_state().map_err(failed)?,
                        snapshot_at: 0,
                    };
                    continue;
                }
            }
            if events.is_empty() {
                if page.last_revision + 1 < current.next {
                    // Fewer events than we folded: deleted and begun again.
                    current = Cached {
                        next: 0,
                        state: aggregate.initial_state().map_err(failed)?,
                        snapshot_at: 0,
                    };
                    continue;
                }
                break;
            }
            let n = events.len() as u64;
            current.state = aggregate.evolve(current.state, &events).map_err(failed)?;
            current.next += n;
            folded += n;
            if page.next.is_none() {
                break;
            }
        }
        if folded > 0 {
            self.count(|s| s.events_folded += folded);
        }
        if self.snapshot_every > 0 && current.next >= current.snapshot_at + self.snapshot_every {
            self.write_snapshot(aggregate, stream, &current);
            current.snapshot_at = current.next;
        }
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_STREAMS {
            cache.clear();
        }
        cache.insert(stream.clone(), current.clone());
        Ok(current)
    }

    fn forget(&self, stream: &StreamName) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(stream);
    }

    /// Deploys `new` after folding up to [`DEPLOY_SAMPLE_STREAMS`] streams of the category
    /// through both versions, event by event: a state that differs refuses the deploy unless
    /// `new` declares a higher state version (its snapshots are then rebuilt, as snapshots are
    /// keyed by component and state version). Commands in flight finish on the old version;
    /// their appends expect exact revisions, so none goes through against a stale state.
    pub fn deploy(&self, new: Aggregate) -> Result<AggregateDeployed, DeployError> {
        let old = self.aggregate();
        let mut report = AggregateDeployed {
            aggregate: self.name.to_string(),
            hash: new.hash().to_owned(),
            previous_hash: old.hash().to_owned(),
            state_version: new.state_version(),
            previous_state_version: old.state_version(),
            streams_checked: 0,
            events_checked: 0,
            streams_differing: 0,
            swapped: false,
        };
        if new.hash() == old.hash() {
            return Ok(report);
        }
        if new.state_version() < old.state_version() {
            return Err(DeployError::Downgrade {
                aggregate: self.name.to_string(),
                old: old.state_version(),
                new: new.state_version(),
            });
        }
        let raised = new.state_version() > old.state_version();
        let fails = |stream: &StreamName, revision: u64, failure: Failure| DeployError::Fails {
            aggregate: self.name.to_string(),
            stream: stream.to_string(),
            revision,
            failure,
        };
        for stream in self.sample_streams()? {
            report.streams_checked += 1;
            let (Ok(mut a), Ok(mut b)) = (old.initial_state(), new.initial_state()) else {
                continue;
            };
            let mut differs = (a != b).then_some(None);
            let mut from = None;
            'stream: while differs.is_none() {
                let page = match self.store.read_stream(&stream, from, false, FOLD_PAGE) {
                    Ok(p) => p,
                    Err(StreamError::NotFound(_) | StreamError::Tombstoned(_)) => break,
                    Err(e) => return Err(e.into()),
                };
                for e in &page.events {
                    if e.revision >= DEPLOY_SAMPLE_EVENTS {
                        break 'stream;
                    }
                    let one = std::slice::from_ref(e);
                    // A stream the running version cannot fold tells nothing: skip it.
                    let Ok(next_a) = old.evolve(a, one) else {
                        break 'stream;
                    };
                    a = next_a;
                    b = new
                        .evolve(b, one)
                        .map_err(|f| fails(&stream, e.revision, f))?;
                    report.events_checked += 1;
                    if a != b {
                        differs = Some(Some(e.revision));
                        break 'stream;
                    }
                }
                match page.next {
                    Some(n) => from = Some(n),
                    None => break,
                }
            }
            if let Some(revision) = differs {
                if !raised {
                    return Err(DeployError::Disagrees {
                        aggregate: self.name.to_string(),
                        stream: stream.to_string(),
                        revision,
                        state_version: new.state_version(),
                    });
                }
                report.streams_differing += 1;
            }
        }
        *self
            .aggregate
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(new);
        self.clear_cache();
        report.swapped = true;
        Ok(report)
    }

    /// Up to [`DEPLOY_SAMPLE_STREAMS`] streams of the aggregate's category, oldest first.
    fn sample_streams(&self) -> Result<Vec<StreamName>, StreamError> {
        let filter = super::Filter::Category(self.category.clone());
        let mut seen = std::collections::HashSet::new();
        let mut streams = Vec::new();
        let mut from = crate::names::Offset(0);
        loop {
            let page = self.store.read_all(from, &filter, FOLD_PAGE)?;
            for e in page.events {
                if seen.insert(e.stream.clone()) {
                    streams.push(e.stream);
                    if streams.len() == DEPLOY_SAMPLE_STREAMS {
                        return Ok(streams);
                    }
                }
            }
            if page.next >= page.end || page.next == from {
                return Ok(streams);
            }
            from = page.next;
        }
    }

    /// Drops every cached state (the component changed).
    pub fn clear_cache(&self) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    fn snapshot_key(stream: &StreamName) -> String {
        format!("snapshot/{stream}")
    }

    /// A snapshot: format byte, state version (u32 LE), component hash (64 hex bytes), next
    /// revision (u64 LE), state.
    fn read_snapshot(&self, aggregate: &Aggregate, stream: &StreamName) -> Option<Cached> {
        let bytes = self
            .storage
            .kv_get(&self.name, &Self::snapshot_key(stream))?;
        let usable = bytes.len() >= 77
            && bytes[0] == SNAPSHOT_FORMAT
            && bytes[1..5] == aggregate.state_version().to_le_bytes()
            && &bytes[5..69] == aggregate.hash().as_bytes();
        if !usable {
            self.count(|s| s.snapshots_ignored += 1);
            return None;
        }
        let next = u64::from_le_bytes(bytes[69..77].try_into().ok()?);
        // A snapshot of more events than the stream has is from before a delete.
        let actual = self.store.revision(stream).ok()?;
        if actual.is_none_or(|r| r + 1 < next) {
            self.count(|s| s.snapshots_ignored += 1);
            return None;
        }
        self.count(|s| s.snapshot_loads += 1);
        Some(Cached {
            next,
            state: bytes[77..].to_vec(),
            snapshot_at: next,
        })
    }

    fn write_snapshot(&self, aggregate: &Aggregate, stream: &StreamName, c: &Cached) {
        let mut bytes = Vec::with_capacity(77 + c.state.len());
        bytes.push(SNAPSHOT_FORMAT);
        bytes.extend_from_slice(&aggregate.state_version().to_le_bytes());
        bytes.extend_from_slice(aggregate.hash().as_bytes());
        bytes.extend_from_slice(&c.next.to_le_bytes());
        bytes.extend_from_slice(&c.state);
        let commit = Commit {
            kv: Some((
                self.name.clone(),
                vec![(Self::snapshot_key(stream), Some(bytes))],
            )),
            ..Commit::default()
        };
        // A snapshot is a cache: one that is not written is taken again later.
        match self.storage.submit(commit) {
            Ok(_) => self.count(|s| s.snapshots_written += 1),
            Err(e) => {
                tracing::warn!(aggregate = %self.name, %stream, "cannot write a snapshot: {e}")
            }
        }
    }

    /// Answers a command whose events are already stored.
    fn handled_before(&self, stream: &StreamName, command_id: &str) -> Option<CommandAnswer> {
        let (first_stream, first) = self.store.find_event(&format!("{command_id}.0"))?;
        let mut last = first;
        for i in 1.. {
            match self.store.find_event(&format!("{command_id}.{i}")) {
                Some((_, r)) => last = r,
                None => break,
            }
        }
        Some(CommandAnswer {
            command_id: command_id.to_owned(),
            stream: first_stream.clone(),
            revision: self.store.revision(stream).ok().flatten(),
            appended: Some((first, last)),
            reply: None,
            duplicate: true,
            attempts: 0,
        })
    }
}

/// A deterministic seed from the command id (the first 8 bytes of its SHA-256).
fn seed(command_id: &str) -> u64 {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(command_id.as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or_default())
}
