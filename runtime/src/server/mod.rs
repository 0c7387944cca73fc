//! A running weir server: the [`Runtime`] (storage, loaded plugins, bindings, the reply inbox)
//! and [`run`], which serves the HTTP API and drives every binding until shutdown.

pub(crate) mod aggregates;
mod backpressure;
mod cluster;
mod dlq;
mod inbox;
mod metrics;
mod park;
mod publish;
mod rebuild;
mod replay;
mod request;

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use serde::Serialize;
use tokio::sync::watch;

pub use backpressure::RETRY_AFTER_SECS;
pub use dlq::{DeadLetter, DeadLetterPage, DlqError, REDRIVEN_FROM, Redriven};
pub use park::{ParkedView, UnparkError};
pub use publish::{MAX_HEADER_BYTES, MAX_HEADERS, PublishError, PublishRequest, Published};
pub use rebuild::{RebuildError, RebuildView};
pub use replay::{
    MAX_REPLAY_CHUNK, REPLAY_FOR, REPLAYED_FROM, ReplayError, Replayed, replayed_for_another,
};
pub use request::{DEFAULT_REQUEST_TIMEOUT, MAX_REQUEST_TIMEOUT, Replied, RequestError};

use crate::config::FsyncPolicy;
use crate::config::{BindingConfig, Config, DestinationKind, Retention};
use crate::delivery::{BindingSnapshot, BindingStats, Parking};
use crate::deploy::{Registry, Reloader};
use crate::host::{Host, HostOptions};
use crate::names::{BindingName, DestinationName};
use crate::storage::log::{Durability, Recovery};
use crate::storage::{Commit, EmbeddedOptions, EmbeddedStorage, Storage, StorageError};

/// Everything a running server holds.
#[derive(Debug)]
pub struct Runtime {
    /// The validated config.
    pub config: Config,
    /// The store.
    pub storage: Arc<dyn Storage>,
    /// The plugins: their active versions (in slots bindings invoke), stored versions and
    /// deploys.
    pub plugins: Arc<Registry>,
    /// Binding counters by name.
    pub bindings: BTreeMap<BindingName, Arc<BindingStats>>,
    /// What each binding's engine is told when its keys are unparked.
    parking: BTreeMap<BindingName, Arc<Parking>>,
    /// Held by an unpark: one at a time.
    unparking: std::sync::Mutex<()>,
    /// The stream stores, by name.
    pub streams: BTreeMap<DestinationName, Arc<crate::es::StreamStore>>,
    /// The aggregates (`[aggregates.<name>]`), each over a stream store.
    pub aggregates: BTreeMap<crate::names::PluginName, Arc<crate::es::AggregateRunner>>,
    inbox: inbox::Inbox,
    /// Depth limits of the destinations that have one.
    backpressure: backpressure::Limits,
    /// Held by a binding's dead-letter redrive: one at a time per binding.
    redrives: BTreeMap<BindingName, std::sync::Mutex<()>>,
    /// Metrics other modules register (rendered by `GET /metrics` with the server's own).
    pub metrics: Arc<crate::metrics::Registry>,
    /// Turns true when shutdown starts: intake stops, followers (long polls) answer.
    closing: watch::Sender<bool>,
    /// Open streaming-publish connections (WebSockets), which outlive the HTTP server's
    /// graceful shutdown: it waits for each to acknowledge what it stored and close.
    streaming: watch::Sender<usize>,
    /// Stops and starts each binding while the server runs (for shadow rebuilds).
    controls: BTreeMap<BindingName, Arc<rebuild::BindingControl>>,
    /// Shadow rebuilds, the latest per plugin.
    rebuilds: rebuild::Rebuilds,
    host: Arc<Host>,
    /// With `broker.kind = "nats"`: the shared store, which says which binding partitions this
    /// host runs.
    cluster: Option<Arc<crate::storage::NatsStorage>>,
}

/// An open streaming-publish connection, counted by [`Runtime::streaming_connection`].
#[derive(Debug)]
pub(crate) struct StreamingGuard(Arc<Runtime>);

impl Drop for StreamingGuard {
    fn drop(&mut self) {
        self.0.streaming.send_modify(|n| *n -= 1);
    }
}

/// A point-in-time view of the server, as served by `GET /v1/stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct StatsSnapshot {
    /// Per destination.
    pub destinations: BTreeMap<String, DestinationStats>,
    /// Per binding.
    pub bindings: BTreeMap<String, BindingStatsView>,
    /// Per plugin.
    pub plugins: BTreeMap<String, PluginInfo>,
    /// Requests waiting for a reply.
    #[serde(default)]
    pub requests_waiting: usize,
    /// Shadow rebuilds of this server's life, the latest per plugin.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rebuilds: BTreeMap<String, RebuildView>,
}

/// Counters of one destination.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct DestinationStats {
    /// `queue` or `topic`.
    pub kind: String,
    /// Messages ever stored (the end offset).
    pub messages: u64,
    /// The first offset still stored (after retention).
    pub first_offset: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Messages not yet acknowledged by the slowest binding consuming it (0 without bindings).
    pub depth: u64,
    /// Publishes are refused while `depth` is at this limit (`max_depth` in the config).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u64>,
}

/// Counters of one binding, with where it reads.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct BindingStatsView {
    /// The consumed source.
    pub source: String,
    /// The plugin.
    pub plugin: String,
    /// Its guarantee (`at-least-once`, ...).
    #[serde(default)]
    pub guarantee: String,
    /// Its ordering (`key`, `fifo`, `none`).
    #[serde(default)]
    pub ordering: String,
    /// The first offset it has not acknowledged (everything below is).
    pub cursor: u64,
    /// Messages not yet handled.
    pub lag: u64,
    /// Its counters.
    #[serde(flatten)]
    pub counters: BindingSnapshot,
    /// Its parked keys, in key order, with why and since when (the first 100; `parked_keys`
    /// counts them all).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parked: Vec<ParkedView>,
}

/// What is known about a loaded plugin.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct PluginInfo {
    /// The active version (`weir plugin list` shows them all).
    #[serde(default)]
    pub version: u64,
    /// The component file.
    pub path: String,
    /// SHA-256 of the file.
    pub sha256: String,
    /// `compiled` or `cache`.
    pub loaded_from: String,
    /// Time to load, in milliseconds.
    pub load_ms: f64,
}

impl Runtime {
    /// The wasm host (for loading aggregate versions).
    pub fn host(&self) -> &Arc<Host> {
        &self.host
    }

    /// Creates the store and its logs, and loads every plugin. Blocking (plugins compile here).
    /// `server.data_dir` is created with mode 0700; one its group or others can write is
    /// refused, since it holds precompiled components (native code weir runs).
    pub fn start(config: Config) -> anyhow::Result<Runtime> {
        crate::host::ensure_private_dir(&config.server.data_dir)
            .context("cannot use server.data_dir")?;
        if config.broker.nats().is_some() {
            let nats = Arc::new(
                crate::storage::NatsStorage::connect(&config)
                    .context("cannot use the NATS JetStream cluster of `broker.nats`")?,
            );
            let storage: Arc<dyn Storage> = Arc::clone(&nats) as Arc<dyn Storage>;
            let shared = nats
                .plugin_versions()
                .context("cannot use the plugin versions stored in the NATS JetStream cluster")?;
            let mut runtime = Runtime::start_on(config, storage, true, Some(shared))?;
            runtime.cluster = Some(nats);
            return Ok(runtime);
        }
        let storage: Arc<dyn Storage> = Arc::new(open_storage(&config)?);
        Runtime::start_on(config, storage, true, None)
    }

    /// Validates a config the way [`Runtime::start`] would, loading (type-checking) every plugin,
    /// without touching `server.data_dir`: an in-memory store, no precompiled cache.
    pub fn check(config: Config) -> anyhow::Result<Runtime> {
        Runtime::start_on(
            config,
            Arc::new(crate::storage::MemoryStorage::new()),
            false,
            None,
        )
    }

    /// `shared`: where the plugin versions of several hosts are kept, if they are.
    fn start_on(
        config: Config,
        storage: Arc<dyn Storage>,
        cache: bool,
        shared: Option<Arc<dyn crate::deploy::SharedVersions>>,
    ) -> anyhow::Result<Runtime> {
        for name in config.destinations.keys() {
            storage.open_log(name).with_context(|| {
                if config.server.repair || config.broker.nats().is_some() {
                    format!("cannot open the log of `{name}`")
                } else {
                    format!("cannot open the log of `{name}`; `weir run --repair` keeps everything before damage and reports what it dropped")
                }
            })?;
        }
        let mut streams = BTreeMap::new();
        for (name, store) in &config.streams {
            let opened = crate::es::StreamStore::open(
                name.clone(),
                Arc::clone(&storage),
                config.server.max_message_size as usize,
                store.max_count,
            )
            .with_context(|| format!("cannot open the stream store `{name}`"))?;
            streams.insert(name.clone(), Arc::new(opened));
        }
        let inbox = inbox::Inbox::new();
        storage
            .open_log(inbox.name())
            .with_context(|| format!("cannot open the reply inbox `{}`", inbox.name()))?;
        // Room for each plugin's instances three times over (the active version, the one it
        // replaced, finishing its invocations or kept for an automatic rollback, and one being
        // loaded): its warm ones, or as many as its bindings run at once if that is more (a
        // binding's `concurrency` above `instances` would otherwise exhaust the pool).
        let instances: u32 = config
            .plugins
            .iter()
            .map(|(name, p)| {
                let running: u32 = config
                    .bindings
                    .iter()
                    .filter(|b| &b.plugin == name)
                    .map(|b| b.concurrency)
                    .sum();
                (p.instances.max(running) + 2) * 3
            })
            .sum();
        let mut options = HostOptions::default()
            .max_instances(instances.max(16))
            .memory_cache_bytes(
                usize::try_from(config.server.compiled_cache_memory).unwrap_or(usize::MAX),
            );
        if cache {
            options = options.cache_dir(config.server.data_dir.join("cache"));
        }
        let host = Host::new(options)?;
        let mut aggregates = BTreeMap::new();
        for (name, a) in &config.aggregates {
            let data_dir = cache.then_some(config.server.data_dir.as_path());
            let spec = crate::host::AggregateSpec {
                name: name.clone(),
                path: aggregates::component_to_load(data_dir, name, &a.path),
                limits: a.limits,
            };
            let loaded = host
                .load_aggregate(spec, Arc::clone(&storage))
                .with_context(|| format!("cannot load the aggregate `{name}`"))?;
            let runner = crate::es::AggregateRunner::new(
                loaded,
                a.category.clone(),
                Arc::clone(&streams[&a.store]),
                Arc::clone(&storage),
                a.snapshot_every,
                a.conflict_retries,
            );
            aggregates.insert(name.clone(), Arc::new(runner));
        }
        let data_dir = cache.then_some(config.server.data_dir.as_path());
        let plugins = Arc::new(Registry::open(
            &config,
            Arc::clone(&host),
            Arc::clone(&storage),
            data_dir,
            shared,
        )?);
        for b in &config.bindings {
            let world = plugins.slot(&b.plugin).map(|s| s.plugin().world());
            if world == Some("projection") && !streams.contains_key(&b.source) {
                anyhow::bail!(
                    "binding `{}`: plugin `{}` is a projection (world weir:plugin/projection), which consumes only stream stores, and `{}` is not one (declare it as [streams.{}], or bind a message handler)",
                    b.name,
                    b.plugin,
                    b.source,
                    b.source
                );
            }
        }
        let bindings = config
            .bindings
            .iter()
            .map(|b| (b.name.clone(), Arc::default()))
            .collect();
        let redrives = config
            .bindings
            .iter()
            .map(|b| (b.name.clone(), std::sync::Mutex::default()))
            .collect();
        let controls = config
            .bindings
            .iter()
            .map(|b| (b.name.clone(), Arc::default()))
            .collect();
        let parking = config
            .bindings
            .iter()
            .map(|b| (b.name.clone(), Arc::default()))
            .collect();
        Ok(Runtime {
            backpressure: backpressure::Limits::new(&config),
            config,
            storage,
            plugins,
            bindings,
            parking,
            unparking: std::sync::Mutex::default(),
            streams,
            aggregates,
            inbox,
            redrives,
            metrics: Arc::default(),
            closing: watch::Sender::new(false),
            streaming: watch::Sender::new(0),
            controls,
            rebuilds: rebuild::Rebuilds::default(),
            host,
            cluster: None,
        })
    }

    /// Publishes one message to a queue or topic.
    pub fn publish(
        &self,
        destination: &str,
        request: PublishRequest,
    ) -> Result<Published, PublishError> {
        self.append(destination, request, None)
    }

    /// Publishes messages to one queue or topic, in order. All are validated before any is
    /// stored: one bad message refuses the whole batch. With any caller-given id, every message
    /// is appended with dedup (see [`Published::duplicate`]).
    pub fn publish_batch(
        &self,
        destination: &str,
        requests: Vec<PublishRequest>,
    ) -> Result<Vec<Published>, PublishError> {
        if self.is_closing() {
            return Err(PublishError::ShuttingDown);
        }
        let started = std::time::Instant::now();
        let limit = self.config.server.max_message_size as usize;
        let dedup = requests.iter().any(|r| r.id.is_some());
        let mut records = Vec::with_capacity(requests.len());
        let mut dest = None;
        for request in requests {
            let (d, record) = publish::validate(destination, request, limit)?;
            dest = Some(d);
            records.push(record);
        }
        let dest = match dest {
            Some(d) => self.check_destination(d.as_str())?,
            None => self.check_destination(destination)?,
        };
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // Each message counts towards the depth until the batch is stored.
        let mut admitted = Vec::with_capacity(records.len());
        for _ in &records {
            admitted.push(self.backpressure.admit(&*self.storage, &dest)?);
        }
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        let stored: Vec<(crate::names::Offset, bool)> = if dedup {
            self.storage.append_dedup(&dest, records)?
        } else {
            let offsets = self.storage.append(&dest, records)?;
            offsets.into_iter().map(|o| (o, false)).collect()
        };
        drop(admitted);
        crate::metrics::STORAGE.append.observe(started.elapsed());
        Ok(stored
            .into_iter()
            .zip(ids)
            .map(|((offset, duplicate), id)| publish::published(&dest, offset, id, duplicate))
            .collect())
    }

    /// Publishes one message without a client id, waiting for it to be durable without
    /// holding a thread: the append is handed to the log's group commit and its ticket awaited
    /// (an id weir generates is new by construction, so there is no dedup lookup, which can
    /// block). What the HTTP publish route uses for such messages.
    pub async fn publish_async(
        &self,
        destination: &str,
        request: PublishRequest,
    ) -> Result<Published, PublishError> {
        debug_assert!(request.id.is_none(), "a client id needs the dedup path");
        let started = std::time::Instant::now();
        let (dest, record) = self.prepare(destination, request, None)?;
        // Held until the record is stored: it counts towards the depth until then.
        let _admitted = self.backpressure.admit(&*self.storage, &dest)?;
        let id = record.id.clone();
        let ticket = self.storage.submit(Commit {
            publishes: vec![(dest.clone(), record)],
            ..Commit::default()
        })?;
        let offset = ticket.durable().await?[0];
        crate::metrics::STORAGE.append.observe(started.elapsed());
        Ok(publish::published(&dest, offset, id, false))
    }

    /// Publishes the messages a streaming publish read at once: each is checked on its own
    /// (one refused does not refuse the others), and those accepted are appended, in order, in
    /// one commit, submitted before this returns (so a connection's messages are stored in the
    /// order it sent them). The future gives each message's outcome, in order, once the
    /// accepted ones are durable; it holds no thread while it waits. Messages with a client id
    /// are appended with dedup, which can block: such a batch is stored before this returns.
    pub fn publish_many<'a>(
        &'a self,
        destination: &'a DestinationName,
        requests: Vec<Result<PublishRequest, PublishError>>,
    ) -> impl Future<Output = Vec<Result<Published, PublishError>>> + Send + 'a {
        let started = std::time::Instant::now();
        let n = requests.len();
        let mut results: Vec<Option<Result<Published, PublishError>>> = Vec::with_capacity(n);
        let mut records = Vec::with_capacity(n);
        let mut admitted = Vec::with_capacity(n);
        let mut dedup = false;
        for request in requests {
            let has_id = matches!(&request, Ok(r) if r.id.is_some());
            let prepared = request
                .and_then(|r| self.prepare(destination.as_str(), r, None))
                .and_then(|(dest, record)| {
                    let a = self.backpressure.admit(&*self.storage, &dest)?;
                    Ok((record, a))
                });
            match prepared {
                Ok((record, a)) => {
                    dedup |= has_id;
                    admitted.push(a);
                    records.push(record);
                    results.push(None);
                }
                Err(e) => results.push(Some(Err(e))),
            }
        }
        let ids: Vec<String> = records.iter().map(|r| r.id.clone()).collect();
        enum Stored {
            Nothing,
            Now(Result<Vec<(crate::names::Offset, bool)>, StorageError>),
            Later(Result<crate::storage::CommitTicket, StorageError>),
        }
        let stored = if records.is_empty() {
            Stored::Nothing
        } else if dedup {
            let dest = destination;
            Stored::Now(tokio::task::block_in_place(|| {
                self.storage.append_dedup(dest, records)
            }))
        } else {
            Stored::Later(
                self.storage.submit(Commit {
                    publishes: records
                        .into_iter()
                        .map(|r| (destination.clone(), r))
                        .collect(),
                    ..Commit::default()
                }),
            )
        };
        async move {
            let stored = match stored {
                Stored::Nothing => Ok(Vec::new()),
                Stored::Now(r) => r,
                Stored::Later(ticket) => match ticket {
                    Ok(t) => t
                        .durable()
                        .await
                        .map(|o| o.into_iter().map(|o| (o, false)).collect()),
                    Err(e) => Err(e),
                },
            };
            drop(admitted);
            if !ids.is_empty() {
                crate::metrics::STORAGE.append.observe(started.elapsed());
            }
            let mut landed = match stored {
                Ok(s) => s.into_iter().zip(ids).map(Ok).collect::<Vec<_>>(),
                Err(e) => ids.iter().map(|_| Err(e.clone())).collect(),
            }
            .into_iter();
            results
                .into_iter()
                .map(|r| match r {
                    Some(refused) => refused,
                    None => match landed.next().expect("one per accepted message") {
                        Ok(((offset, duplicate), id)) => {
                            Ok(publish::published(destination, offset, id, duplicate))
                        }
                        Err(e) => Err(PublishError::Storage(e)),
                    },
                })
                .collect()
        }
    }

    /// The queue or topic `name` names, or why messages cannot be published to it.
    pub fn check_destination(&self, name: &str) -> Result<DestinationName, PublishError> {
        let dest = DestinationName::new(name)?;
        if dest.is_reserved() {
            return Err(PublishError::Reserved(dest.to_string()));
        }
        match self.config.destinations.get(&dest) {
            None => Err(PublishError::UnknownDestination(dest.to_string())),
            Some(DestinationKind::Stream) => Err(PublishError::StreamStore(dest.to_string())),
            Some(_) => Ok(dest),
        }
    }

    /// Checks a message and its destination and turns it into a record; with a correlation
    /// id, as a request whose reply goes to the reply inbox.
    fn prepare(
        &self,
        destination: &str,
        request: PublishRequest,
        correlation_id: Option<String>,
    ) -> Result<(DestinationName, crate::storage::Record), PublishError> {
        if self.is_closing() {
            return Err(PublishError::ShuttingDown);
        }
        let limit = self.config.server.max_message_size as usize;
        let (dest, mut record) = publish::validate(destination, request, limit)?;
        let dest = self.check_destination(dest.as_str())?;
        if let Some(correlation_id) = correlation_id {
            record.reply_to = Some(self.inbox.name().to_string());
            record.correlation_id = Some(correlation_id);
        }
        Ok((dest, record))
    }

    /// Validates and stores a message; with a correlation id, as a request whose reply goes to
    /// the reply inbox.
    fn append(
        &self,
        destination: &str,
        request: PublishRequest,
        correlation_id: Option<String>,
    ) -> Result<Published, PublishError> {
        let started = std::time::Instant::now();
        // An id weir generates is new by construction: no dedup lookup (it costs a search of
        // every sealed segment's id index).
        let generated_id = request.id.is_none();
        let (dest, record) = self.prepare(destination, request, correlation_id)?;
        // Held until the record is stored: it counts towards the depth until then.
        let _admitted = self.backpressure.admit(&*self.storage, &dest)?;
        let id = record.id.clone();
        let (offset, duplicate) = if generated_id {
            (self.storage.append(&dest, vec![record])?[0], false)
        } else {
            self.storage.append_dedup(&dest, vec![record])?[0]
        };
        crate::metrics::STORAGE.append.observe(started.elapsed());
        Ok(publish::published(&dest, offset, id, duplicate))
    }

    /// Whether shutdown has started (intake is stopped).
    pub fn is_closing(&self) -> bool {
        *self.closing.borrow()
    }

    /// Completes when shutdown starts (at once if it has).
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|closing| *closing).await;
    }

    /// Counts a streaming-publish connection as open until the guard is dropped; shutdown
    /// waits (within `server.shutdown_grace`) until none is.
    pub(crate) fn streaming_connection(self: &Arc<Self>) -> StreamingGuard {
        self.streaming.send_modify(|n| *n += 1);
        StreamingGuard(Arc::clone(self))
    }

    /// Counters of one binding, as in [`Runtime::stats`] (`GET /v1/bindings/{name}`).
    pub fn binding_stats(&self, name: &str) -> Result<BindingStatsView, DlqError> {
        Ok(self.binding_view(self.binding(name)?))
    }

    fn binding_view(&self, b: &BindingConfig) -> BindingStatsView {
        let cursor = self.storage.cursor(&b.name).0;
        let end = self
            .storage
            .watch_end(&b.source)
            .map_or(0, |w| w.borrow().0);
        BindingStatsView {
            source: b.source.to_string(),
            plugin: b.plugin.to_string(),
            guarantee: b.guarantee.to_string(),
            ordering: b.ordering.to_string(),
            cursor,
            lag: end.saturating_sub(cursor),
            counters: self.bindings[&b.name].snapshot(),
            parked: self.parked_views(b, park::LISTED),
        }
    }

    /// Counters of everything.
    pub fn stats(&self) -> StatsSnapshot {
        let end = |d: &DestinationName| {
            self.storage
                .watch_end(d)
                .map(|w| *w.borrow())
                .unwrap_or_default()
                .0
        };
        let destinations = self
            .config
            .destinations
            .iter()
            .map(|(name, kind)| {
                let kind = kind.as_str();
                let (first, bytes) = self.storage.usage(name).unwrap_or_default();
                let consumers = backpressure::consumers(&self.config, name);
                let stats = DestinationStats {
                    kind: kind.to_owned(),
                    messages: end(name),
                    first_offset: first.0,
                    bytes,
                    depth: backpressure::depth(&*self.storage, name, &consumers),
                    max_depth: self.config.max_depth.get(name).copied(),
                };
                (name.to_string(), stats)
            })
            .collect();
        let bindings = self
            .config
            .bindings
            .iter()
            .map(|b| (b.name.to_string(), self.binding_view(b)))
            .collect();
        let plugins = self
            .plugins
            .names()
            .filter_map(|name| {
                let slot = self.plugins.slot(name)?;
                let p = slot.plugin();
                let info = PluginInfo {
                    version: slot.version(),
                    path: p.path().display().to_string(),
                    sha256: p.hash().to_owned(),
                    loaded_from: p.loaded_from().as_str().to_owned(),
                    load_ms: p.load_time().as_secs_f64() * 1e3,
                };
                Some((name.to_string(), info))
            })
            .collect();
        StatsSnapshot {
            destinations,
            bindings,
            plugins,
            requests_waiting: self.inbox.waiting(),
            rebuilds: self.rebuilds.views(),
        }
    }
}

/// Applies every destination's retention limits, and the reply inbox's (by age,
/// `broker.reply_retention`), every `broker.retention_interval` until stopped.
async fn enforce_retention(
    runtime: Arc<Runtime>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), StorageError> {
    let every = runtime.config.server.retention_interval;
    let inbox = Retention {
        max_age: Some(runtime.config.server.reply_retention),
        ..Retention::default()
    };
    let limits = runtime
        .config
        .retention
        .iter()
        .chain([(runtime.inbox.name(), &inbox)]);
    let limits: Vec<(DestinationName, Retention)> = limits.map(|(d, l)| (d.clone(), *l)).collect();
    loop {
        for (dest, limits) in &limits {
            let (rt, dest, limits) = (Arc::clone(&runtime), dest.clone(), *limits);
            let done = tokio::task::spawn_blocking(move || {
                rt.storage
                    .enforce_retention(&dest, &limits)
                    .map(|r| (dest, r))
            })
            .await;
            match done {
                Ok(Ok((dest, r))) if r.records > 0 => {
                    tracing::info!(destination = %dest, records = r.records, bytes = r.bytes, "retention removed old records");
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::error!("retention failed: {e}"),
                Err(e) => tracing::error!("retention task failed: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return Ok(()),
        }
    }
}

/// Opens the embedded store under `server.data_dir/store`.
fn open_storage(config: &Config) -> anyhow::Result<EmbeddedStorage> {
    let dir = config.server.data_dir.join("store");
    let options = EmbeddedOptions {
        durability: match config.server.fsync {
            FsyncPolicy::Always => Durability::Always,
            FsyncPolicy::Interval(every) => Durability::Interval(every),
            FsyncPolicy::Never => Durability::Never,
        },
        segment_bytes: config.server.segment_bytes,
        recovery: if config.server.repair {
            Recovery::Repair
        } else {
            Recovery::Strict
        },
        ..EmbeddedOptions::default()
    };
    EmbeddedStorage::open(&dir, options).with_context(|| {
        format!(
            "cannot open the store in {} (if a log is damaged, `weir run --repair` keeps everything before the damage and reports what it dropped)",
            dir.display()
        )
    })
}

/// Runs a server for `config` until `shutdown` completes: loads plugins, binds the HTTP API
/// (printing `weir listening on http://ADDR` on stdout once it accepts connections), drives
/// every binding, then stops intake and lets each binding finish its message in flight.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listen = config.server.listen;
    let runtime = tokio::task::spawn_blocking(move || Runtime::start(config)).await??;
    let runtime = Arc::new(runtime);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr: SocketAddr = listener.local_addr()?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(nats) = &runtime.cluster {
        let fut = cluster::run_partitions(Arc::clone(&runtime), Arc::clone(nats), stop_rx.clone());
        tasks.spawn(async move { ("binding partitions".to_owned(), fut.await) });
    }
    for b in runtime
        .config
        .bindings
        .iter()
        .filter(|_| runtime.cluster.is_none())
    {
        let plugin = Arc::clone(
            runtime
                .plugins
                .slot(&b.plugin)
                .expect("bindings name configured plugins"),
        );
        let stats = Arc::clone(&runtime.bindings[&b.name]);
        let fut = rebuild::supervise(
            b.clone(),
            plugin,
            Arc::clone(&runtime.storage),
            stats,
            Arc::clone(&runtime.parking[&b.name]),
            Arc::clone(&runtime.controls[&b.name]),
            stop_rx.clone(),
        );
        let task = format!("binding `{}`", b.name);
        tasks.spawn(async move { (task, fut.await) });
    }

    let retention = enforce_retention(Arc::clone(&runtime), stop_rx.clone());
    tasks.spawn(async move { ("retention".to_owned(), retention.await) });

    // Following from the inbox's end as of now, before the API takes any request.
    let follower = runtime.inbox.follow(Arc::clone(&runtime.storage))?;
    let (rt, stop) = (Arc::clone(&runtime), stop_rx.clone());
    tasks.spawn(async move {
        let done = follower.run(&rt.inbox, stop).await;
        ("reply inbox".to_owned(), done)
    });

    // Deploys changed plugin files and records automatic rollbacks until the server stops.
    let reloader = Reloader::start(Arc::clone(&runtime.plugins))?;

    println!("weir listening on http://{addr}");
    tracing::info!(%addr, "serving the HTTP API");
    let app = crate::api::router(Arc::clone(&runtime));
    let rt = Arc::clone(&runtime);
    let shutdown = async move {
        shutdown.await;
        tracing::info!(
            grace_s = rt.config.server.shutdown_grace.as_secs_f64(),
            "shutting down: intake stopped, finishing what is in flight"
        );
        // Publishes are refused from now on and followers answer; requests waiting for
        // replies answer now instead of holding shutdown up to their timeouts.
        rt.closing.send_replace(true);
        rt.inbox.close();
    };
    // TCP_NODELAY: a small write (acknowledgements, a close frame) goes out at once instead of
    // waiting (Nagle) for the peer to acknowledge the previous one. A connection closed with
    // input unread is reset, and the reset discards whatever was still held back: without it,
    // the acknowledgements and the 1009 close a streaming publish sends before closing over an
    // oversized message were lost.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("cannot set TCP_NODELAY: {e}");
        }
    });
    let stopping = async {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await?;
        drop(reloader);
        let _ = stop_tx.send(true);
        while let Some(done) = tasks.join_next().await {
            let (name, result) = done?;
            if let Err(e) = result {
                tracing::error!("{name} stopped: {e}");
            }
        }
        // Upgraded connections are not the HTTP server's: each streaming publish acknowledges
        // what it stored and closes (1001) on its own.
        let _ = runtime.streaming.subscribe().wait_for(|n| *n == 0).await;
        anyhow::Ok(())
    };
    let grace = runtime.config.server.shutdown_grace;
    let out_of_time = async {
        runtime.closed().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        done = stopping => done?,
        () = out_of_time => {
            // Nothing acknowledged is lost: what did not finish was not acknowledged and is
            // delivered again after a restart.
            tracing::warn!(
                grace_s = grace.as_secs_f64(),
                "shutdown grace period over; exiting with work unfinished (it is delivered again after a restart)"
            );
        }
    }
    tracing::info!("stopped");
    Ok(())
}
